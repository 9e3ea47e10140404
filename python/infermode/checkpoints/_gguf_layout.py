"""A GGUF file checked against itself before the ``gguf`` package's reader views any of it.

The reader takes the file on trust, in two ways, and both are checked here as llama.cpp's own
reader (``gguf_init_from_file``) checks them. Every error is a :class:`GGUFLayoutError` (a
ValueError) naming the file and the metadata key or tensor.

1. The header's counts. An array that claims 2**60 elements, or a tensor table of 2**60 entries,
   has the reader read past the end of the file, where each element takes no bytes, and loop until
   memory runs out (fuzzing found a 4 KB file that does this). The walk checks every count against
   the bytes left, over the layout

       magic "GGUF", version (u32), tensor count (u64), metadata count (u64),
       metadata: key (string), value type (u32), value
       tensor infos: name (string), n_dims (u32), dims (u64 each), type (u32), data offset (u64)

   where a string is a u64 length and that many bytes, and an array value is an element type
   (u32), a count (u64) and the elements. Arrays of arrays are refused, as llama.cpp refuses them.
   Nothing is allocated in proportion to a count before the bytes for it are known to be there.

2. The tensor table. A type code the reader does not know raises an error that names no tensor,
   and a type that disagrees with the data (a Q8_0 matrix recorded as Q4_0 or F16, say) gives a
   view of the wrong bytes: a model that loads and answers garbage. Tensor ``i`` must start exactly
   where tensor ``i - 1`` ends, padded to ``general.alignment``, and no whole alignment unit of
   bytes may follow the last tensor, which is the only trace a wrong type or shape on the last
   tensor leaves.

    reader = checked_reader(Path("model.gguf"))      # a gguf.GGUFReader, or GGUFLayoutError
"""
from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import gguf

__all__ = ["GGUFLayoutError", "checked_reader"]

# ggml tensors have at most four dimensions (GGML_MAX_DIMS).
_MAX_DIMS = 4


class GGUFLayoutError(ValueError):
    """The file contradicts itself; the message names the file and the key or tensor."""


def checked_reader(path: Path) -> "gguf.GGUFReader":
    """``gguf.GGUFReader(path)`` once the header's counts (1) and the tensor table (2) are
    checked; raises :class:`GGUFLayoutError` or the reader's own errors."""
    import gguf

    _check_header(path)

    class _CheckedReader(gguf.GGUFReader):
        # The reader's last step, after the metadata and alignment are read: the table is checked
        # here so that none of the reader's views is made over bytes that are not the tensor's.
        def _build_tensors(self, start_offs: int, fields: List[Any]) -> None:
            _check_table(path, fields, int(start_offs), int(self.alignment), len(self.data))
            super()._build_tensors(start_offs, fields)

    return _CheckedReader(path, "r")


# ------------------------------------------------------------------------------ 1. header counts

# GGUF value types (gguf.GGUFValueType) -> size in bytes, for the fixed-size ones.
_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
_VERSIONS = (2, 3)
# The fewest bytes one entry can take: a tensor info (empty name, no dims), a metadata entry
# (empty key, a u8 value), an array element of each kind.
_MIN_TENSOR_INFO = 8 + 4 + 4 + 8
_MIN_KV = 8 + 4 + 1


class _Cursor:
    """Reads little-endian values from ``data``, refusing any read past its end."""

    def __init__(self, data: mmap.mmap, path: Path) -> None:
        self.data, self.path, self.offset = data, path, 0

    def left(self) -> int:
        return len(self.data) - self.offset

    def need(self, count: int, what: str) -> None:
        if count > self.left():
            raise GGUFLayoutError(f"{self.path} is not a valid GGUF file (truncated or "
                                  f"corrupt?): {what} at byte {self.offset} needs {count} "
                                  f"bytes, the file has {self.left()} left")

    def take(self, fmt: str, what: str) -> int:
        size = struct.calcsize(fmt)
        self.need(size, what)
        (value,) = struct.unpack_from("<" + fmt, self.data, self.offset)
        self.offset += size
        return value

    def skip_string(self, what: str) -> None:
        length = self.take("Q", f"the length of {what}")
        self.need(length, what)
        self.offset += length

    def string(self, what: str) -> str:
        start = self.offset + 8
        self.skip_string(what)
        return bytes(self.data[start:self.offset]).decode("utf-8", errors="replace")


def _check_header(path: Path) -> None:
    """Raises GGUFLayoutError naming ``path`` (and the metadata key or tensor) when a count or
    length in its header reaches past the end of the file; returns quietly otherwise. Big-endian
    files are refused here too (the reader would misread every count)."""
    with open(path, "rb") as f:
        if path.stat().st_size == 0:
            raise GGUFLayoutError(f"{path} is empty, not a GGUF file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            _walk(_Cursor(data, path))


def _walk(c: _Cursor) -> None:
    c.take("I", "the magic")
    version = c.take("I", "the version")
    if version not in _VERSIONS:
        if version & 0xFFFF == 0 and struct.unpack(">I", struct.pack("<I", version))[0] in \
                _VERSIONS:
            raise GGUFLayoutError(f"{c.path} is a big-endian GGUF file; only little-endian "
                                  "files are supported")
        raise GGUFLayoutError(f"{c.path} has GGUF version {version}; supported: "
                              f"{', '.join(map(str, _VERSIONS))}")
    tensors = c.take("Q", "the tensor count")
    entries = c.take("Q", "the metadata count")
    c.need(entries * _MIN_KV, f"{entries} metadata entries")
    for i in range(entries):
        key = c.string(f"metadata key {i}")
        value_type = c.take("I", f"the type of metadata {key!r}")
        _skip_value(c, value_type, f"metadata {key!r}")
    c.need(tensors * _MIN_TENSOR_INFO, f"{tensors} tensor infos")
    for i in range(tensors):
        name = c.string(f"the name of tensor {i}")
        dims = c.take("I", f"the number of dims of tensor {name!r}")
        if dims > _MAX_DIMS:
            raise GGUFLayoutError(f"{c.path}: tensor {name!r} has {dims} dims; GGUF tensors "
                                  f"have at most {_MAX_DIMS}")
        c.need(8 * dims + 4 + 8, f"the shape, type and offset of tensor {name!r}")
        c.offset += 8 * dims + 4 + 8


def _skip_value(c: _Cursor, value_type: int, what: str) -> None:
    if value_type in _SCALAR_BYTES:
        c.need(_SCALAR_BYTES[value_type], what)
        c.offset += _SCALAR_BYTES[value_type]
    elif value_type == _STRING:
        c.skip_string(what)
    elif value_type == _ARRAY:
        item_type = c.take("I", f"the element type of {what}")
        count = c.take("Q", f"the length of {what}")
        if item_type in _SCALAR_BYTES:
            c.need(count * _SCALAR_BYTES[item_type], f"{count} elements of {what}")
            c.offset += count * _SCALAR_BYTES[item_type]
        elif item_type == _STRING:
            c.need(count * 8, f"{count} strings of {what}")
            for i in range(count):
                c.skip_string(f"element {i} of {what}")
        else:
            kind = "arrays (nested arrays are not supported)" if item_type == _ARRAY \
                else f"an unknown type {item_type}"
            raise GGUFLayoutError(f"{c.path}: {what} is an array of {kind}")
    else:
        raise GGUFLayoutError(f"{c.path}: {what} has an unknown value type {value_type}")


# -------------------------------------------------------------------------------- 2. tensor table

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
