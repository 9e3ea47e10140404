"""Fuzz target: a .gguf file (metadata, tensor table, tensor data, the tokenizer in its metadata)
loaded with CausalLM.from_pretrained, then run.

The input is the file. It is read by the gguf package's reader, which is instrumented too, so
coverage of the format's parser guides the fuzzer as well as infermode's checks. A bad file must
be refused with a named error that names it; an accepted one must run, in other dtypes too.
"""
import _harness
from _harness import Scratch, exercise, exercise_other_dtypes, load_or_refuse

with _harness.instrumented("infermode", "gguf"):
    import gguf  # noqa: F401 - imported here to be instrumented
    import infermode

# Alone in its directory: a tokenizer.json beside a .gguf file would be used instead of the one
# the metadata describes.
scratch = Scratch("gguf")


def test_one_input(data: bytes) -> None:
    path = scratch.write({"model.gguf": data}) / "model.gguf"
    model = load_or_refuse(lambda: infermode.CausalLM.from_pretrained(path, threads=1), path,
                           scratch)
    if model is not None:
        exercise(model)
        exercise_other_dtypes(data, path, ("float32", "bfloat16"))


if __name__ == "__main__":
    _harness.fuzz(test_one_input)
