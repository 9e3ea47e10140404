"""Readers for model checkpoints on disk: Hugging Face directories (:mod:`infermode.checkpoints.hf`)
and GGUF files (:mod:`infermode.checkpoints.gguf`, llama.cpp's format).

A reader parses metadata, maps the weight files without copying them and checks every name and
shape, so that the C++ core only ever sees buffers it can trust. Both give the same
:class:`~infermode.checkpoints.hf.ModelConfig` and :class:`~infermode.checkpoints.hf.Checkpoint`
(tensors under their Hugging Face names) and a ``tokenizers.Tokenizer`` with its chat template.
Readers never write anything.
"""
