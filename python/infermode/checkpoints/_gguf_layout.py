"""A bounds check of a GGUF file's header, made before the ``gguf`` package's reader parses it.

The reader trusts the counts in the file: an array that claims 2**60 elements, or a tensor table
of 2**60 entries, has it read past the end of the file, where each element takes no bytes, and
loop until memory runs out (fuzzing found a 4 KB file that does this). llama.cpp's own reader
checks every count against the bytes left; this walk does the same, over the same layout:

    magic "GGUF", version (u32), tensor count (u64), metadata count (u64),
    metadata: key (string), value type (u32), value
    tensor infos: name (string), n_dims (u32), dims (u64 each), type (u32), data offset (u64)

where a string is a u64 length and that many bytes, and an array value is an element type (u32),
a count (u64) and the elements. Arrays of arrays are refused, as llama.cpp refuses them. Nothing
is allocated in proportion to a count before the bytes for it are known to be there.
"""
from __future__ import annotations

import mmap
import struct
from pathlib import Path

# GGUF value types (gguf.GGUFValueType) -> size in bytes, for the fixed-size ones.
_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
_VERSIONS = (2, 3)
# llama.cpp's GGML_MAX_DIMS.
_MAX_DIMS = 4
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
            raise ValueError(f"{self.path} is not a valid GGUF file (truncated or corrupt?): "
                             f"{what} at byte {self.offset} needs {count} bytes, the file has "
                             f"{self.left()} left")

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


def check_gguf_layout(path: Path) -> None:
    """Raises ValueError naming ``path`` (and the metadata key or tensor) when a count or length
    in its header reaches past the end of the file; returns quietly otherwise. Big-endian files
    are refused here too (the reader would misread every count)."""
    with open(path, "rb") as f:
        if path.stat().st_size == 0:
            raise ValueError(f"{path} is empty, not a GGUF file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            _walk(_Cursor(data, path))


def _walk(c: _Cursor) -> None:
    c.take("I", "the magic")
    version = c.take("I", "the version")
    if version not in _VERSIONS:
        if version & 0xFFFF == 0 and struct.unpack(">I", struct.pack("<I", version))[0] in \
                _VERSIONS:
            raise ValueError(f"{c.path} is a big-endian GGUF file; only little-endian files are "
                             "supported")
        raise ValueError(f"{c.path} has GGUF version {version}; supported: "
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
            raise ValueError(f"{c.path}: tensor {name!r} has {dims} dims; GGUF tensors have at "
                             f"most {_MAX_DIMS}")
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
            raise ValueError(f"{c.path}: {what} is an array of {kind}")
    else:
        raise ValueError(f"{c.path}: {what} has an unknown value type {value_type}")
