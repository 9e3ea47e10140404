"""Fuzz target: a Hugging Face checkpoint directory (config.json, model.safetensors or an index
and two shards, generation_config.json) loaded with CausalLM.from_pretrained, then run.

The input holds the directory's files (see _harness.HF_FILES). A bad directory must be refused
with a named error that names it; an accepted one must run, in other dtypes too.
"""
import _harness
from _harness import HF_FILES, Scratch, exercise, exercise_other_dtypes, load_or_refuse, split_files

with _harness.instrumented("infermode"):
    import infermode

scratch = Scratch("checkpoint")


def test_one_input(data: bytes) -> None:
    path = scratch.write(split_files(data, HF_FILES))
    model = load_or_refuse(lambda: infermode.CausalLM.from_pretrained(path, threads=1), path,
                           scratch)
    if model is not None:
        exercise(model)
        exercise_other_dtypes(data, path, ("bfloat16", "auto"))


if __name__ == "__main__":
    _harness.fuzz(test_one_input)
