"""Fuzz target: a PEFT LoRA adapter directory (adapter_config.json, adapter_model.safetensors)
put on the tiny Llama of tests/fuzz/tiny-llama three ways: kept apart (load_adapter), merged at
load (from_pretrained(base, adapter=...)), and sized from its header (the device policy's reader).

A refused adapter must be refused with a named error that names its directory, and leave the
model it was offered to as it was.
"""
import _harness
from _harness import (ADAPTER_FILES, TINY_LLAMA, Finding, Scratch, check_loader_error, exercise,
                      split_files)

with _harness.instrumented("infermode"):
    import infermode
    from infermode.checkpoints import _sizes

# The adapters record their base as "tiny-llama", this checkpoint's directory name, so the check
# of the base model's name passes and the fuzzer gets past it.
base = infermode.CausalLM.from_pretrained(TINY_LLAMA, threads=1)
scratch = Scratch("adapter")


def test_one_input(data: bytes) -> None:
    path = scratch.write(split_files(data, ADAPTER_FILES))
    try:
        base.load_adapter(path, "fuzzed")
    except Exception as exc:  # noqa: BLE001 - check_loader_error judges it
        check_loader_error(exc, path)
        if base.adapters or base.active_adapter is not None:
            raise Finding(f"a refused adapter left the model with adapters {base.adapters}, "
                          f"active {base.active_adapter!r}") from exc
    else:
        try:
            exercise(base)
        finally:
            base.delete_adapter("fuzzed")
    try:
        merged = infermode.CausalLM.from_pretrained(TINY_LLAMA, adapter=path, threads=1)
    except Exception as exc:  # noqa: BLE001
        check_loader_error(exc, path)
    else:
        exercise(merged)
    try:
        _sizes.largest_tensor_bytes(TINY_LLAMA, adapter=path)
    except Exception as exc:  # noqa: BLE001
        check_loader_error(exc, path)
    scratch.check_untouched()


if __name__ == "__main__":
    _harness.fuzz(test_one_input)
