"""A GGUF file's tensor table checked against the file before any tensor is viewed.

The ``gguf`` package's reader takes each tensor's type, shape and offset on trust: a type code it
does not know raises an error that names no tensor, and a type that disagrees with the data (a
Q8_0 matrix recorded as Q4_0 or F16, say) gives a view of the wrong bytes — a model that loads and
answers garbage. llama.cpp refuses such files (``gguf_init_from_file``): tensor ``i`` must start
exactly where tensor ``i - 1`` ends, padded to ``general.alignment``. We check the same, plus that
no whole alignment unit of bytes follows the last tensor, which is the only trace a wrong type
or shape on the last tensor leaves. Every error names the file and the tensor.

    reader = checked_reader(Path("model.gguf"))      # a gguf.GGUFReader, or GGUFLayoutError
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import gguf

__all__ = ["GGUFLayoutError", "checked_reader"]

# ggml tensors have at most four dimensions (GGML_MAX_DIMS).
_MAX_DIMS = 4


class GGUFLayoutError(ValueError):
    """The tensor table contradicts the file; the message names the file and the tensor."""


def checked_reader(path: Path) -> "gguf.GGUFReader":
    """``gguf.GGUFReader(path)`` whose tensor table is checked (see the module docstring) before
    the reader makes its views; raises :class:`GGUFLayoutError` or the reader's own errors."""
    import gguf

    class _CheckedReader(gguf.GGUFReader):
        # The reader's last step, after the metadata and alignment are read: the table is checked
        # here so that none of the reader's views is made over bytes that are not the tensor's.
        def _build_tensors(self, start_offs: int, fields: List[Any]) -> None:
            _check_table(path, fields, int(start_offs), int(self.alignment), len(self.data))
            super()._build_tensors(start_offs, fields)

    return _CheckedReader(path, "r")


def _check_table(path: Path, fields: Sequence[Any], data_start: int, alignment: int,
                 size: int) -> None:
    import gguf

    known = {t.value: t for t in gguf.GGMLQuantizationType}
    expected = 0  # where the next tensor must start, relative to data_start
    previous = None
    for field in fields:
        # The parts of a tensor-info entry, as GGUFReader._build_tensors itself unpacks them.
        _, name_data, _, dims, raw_type, raw_offset = field.parts
        name = bytes(name_data).decode("utf-8", errors="replace")
        where = f"{path}: tensor {name!r}"
        shape = [int(n) for n in dims]
        code = int(raw_type[0])
        if code not in known:
            raise GGUFLayoutError(f"{where} has GGML type {code}, which is no known type (a "
                                  "corrupt file, or one from a newer llama.cpp)")
        qtype = known[code]
        if not 1 <= len(shape) <= _MAX_DIMS:
            raise GGUFLayoutError(f"{where} has {len(shape)} dimensions; GGUF tensors have 1 "
                                  f"to {_MAX_DIMS}")
        block, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
        if shape[0] % block:
            raise GGUFLayoutError(f"{where} has rows of {shape[0]} values (ne {shape}), not a "
                                  f"whole number of {qtype.name} blocks of {block}")
        count = 1
        for n in shape:
            count *= n
        nbytes = count // block * block_bytes
        offset = int(raw_offset[0])
        if offset != expected:
            before = (f"the tensor before it, {previous}, ends at {expected} (padded to "
                      f"{alignment})" if previous else "the first tensor must start at 0")
            raise GGUFLayoutError(
                f"{where} starts at data byte {offset}, but {before}: the type or shape recorded "
                "for one of them does not match its data (or the tensors overlap)")
        end = data_start + offset + nbytes
        if end > size:
            raise GGUFLayoutError(f"{where} ({qtype.name}, ne {shape}) ends at byte {end} but the "
                                  f"file has {size} bytes (truncated?)")
        previous = f"{name!r} ({qtype.name}, ne {shape}: {nbytes} bytes)"
        expected = offset + (nbytes + alignment - 1) // alignment * alignment
        last_end = end
    if previous is not None and size - last_end >= alignment:
        raise GGUFLayoutError(
            f"{path}: {size - last_end} bytes after the last tensor, {previous}, belong to no "
            "tensor: the type or shape recorded for it does not match its data")
