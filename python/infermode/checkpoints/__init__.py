"""Readers for model checkpoints on disk: Hugging Face directories (:mod:`infermode.checkpoints.hf`).

A reader parses metadata, maps the weight files without copying them and checks every name and
shape, so that the C++ core only ever sees buffers it can trust. Readers never write anything.
"""
