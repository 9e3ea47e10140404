"""Fuzz target: the tokenizer files of a checkpoint directory (tokenizer.json,
tokenizer_config.json with its special tokens and chat template, chat_template.jinja) beside the
config and weights of tests/fuzz/tiny-llama, loaded with CausalLM.from_pretrained; then text is
tokenized, generated from, decoded, and a conversation rendered with the template.

Bad files must be refused with a named error that names the directory; a chat template that
refuses a conversation must say so with a ValueError.
"""
import shutil

import _harness
from _harness import TINY_LLAMA, TOKENIZER_FILES, Scratch, exercise, load_or_refuse, split_files

with _harness.instrumented("infermode"):
    import infermode

WEIGHTS = ("config.json", "model.safetensors")
scratch = Scratch("tiny-llama")
for name in WEIGHTS:
    shutil.copyfile(TINY_LLAMA / name, scratch.path / name)


def test_one_input(data: bytes) -> None:
    path = scratch.write(split_files(data, TOKENIZER_FILES), keep=WEIGHTS)
    model = load_or_refuse(lambda: infermode.CausalLM.from_pretrained(path, threads=1), path,
                           scratch)
    if model is not None:
        exercise(model)


if __name__ == "__main__":
    _harness.fuzz(test_one_input)
