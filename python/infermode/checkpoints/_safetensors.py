"""Zero-copy, read-only NumPy views of the tensors in a ``.safetensors`` file.

The format: an 8-byte little-endian header length N, N bytes of JSON mapping each tensor name to
``{"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}`` (offsets relative to the data
section; an optional ``"__metadata__"`` maps strings to strings), then the data section, tensors
back to back.

We parse the header ourselves because the ``safetensors`` library has no zero-copy NumPy view:
its NumPy API copies every tensor into a fresh array, which would double the memory of a large
model and cost a full read of the file before the first token. One ``np.memmap`` per file lets
the OS page weights in on first use and share them between processes. Because the header is data
from the internet, every offset is checked against the file before a view is made.
"""
from __future__ import annotations

import math
import os
import struct
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, NamedTuple, Tuple, Union

import numpy as np

from infermode.checkpoints._json import parse_json

PathLike = Union[str, "os.PathLike[str]"]

# The safetensors library refuses headers larger than this as well; a bigger length means the
# file is corrupt (or not a safetensors file at all), and reading it could exhaust memory.
MAX_HEADER_BYTES = 100_000_000

# safetensors dtype code → (little-endian NumPy storage dtype, the dtype's name). bfloat16 has no
# NumPy dtype: it is stored as its 16-bit pattern in uint16 and named "bfloat16".
_DTYPES: Dict[str, Tuple[str, str]] = {
    "F64": ("<f8", "float64"),
    "F32": ("<f4", "float32"),
    "F16": ("<f2", "float16"),
    "BF16": ("<u2", "bfloat16"),
    "I64": ("<i8", "int64"),
    "I32": ("<i4", "int32"),
    "I8": ("i1", "int8"),
    "U8": ("u1", "uint8"),
}


class _Entry(NamedTuple):
    name: str
    code: str
    shape: Tuple[int, ...]
    begin: int
    end: int


class SafetensorsFile(Mapping[str, np.ndarray]):
    """The tensors of one ``.safetensors`` file: name → read-only view into one memory map.

    ``dtypes`` names each tensor's real dtype ("float32", "bfloat16", ...); a bfloat16 tensor's
    array holds its bits as ``np.uint16``. ``metadata`` is the file's ``__metadata__`` (str → str).
    The views keep the mapping alive; nothing is copied and nothing can be written.

        >>> f = open_safetensors("model.safetensors")
        >>> f["model.norm.weight"].shape, f.dtypes["model.norm.weight"]
        ((576,), 'bfloat16')
    """

    def __init__(self, path: Path, tensors: Dict[str, np.ndarray], dtypes: Dict[str, str],
                 metadata: Dict[str, str]) -> None:
        self.path = path
        self.dtypes: Mapping[str, str] = dtypes
        self.metadata: Mapping[str, str] = metadata
        self._tensors = tensors

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self._tensors[name]
        except KeyError:
            raise KeyError(f"{self.path} has no tensor {name!r}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def __repr__(self) -> str:
        return f"SafetensorsFile({str(self.path)!r}, {len(self)} tensors)"


def open_safetensors(path: PathLike) -> SafetensorsFile:
    """Maps a ``.safetensors`` file read-only and returns views of its tensors, without copying.

    A corrupt or truncated file raises ValueError naming the file and what is wrong.

        >>> weights = open_safetensors("model.safetensors")
        >>> w = weights["lm_head.weight"]       # np.ndarray, w.flags.writeable is False
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"safetensors file {path} does not exist")
    size = path.stat().st_size
    if size < 8:
        raise ValueError(f"{path}: the file has {size} bytes, too few for a safetensors header "
                         "(an 8-byte length, then JSON)")
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len < 2 or header_len > MAX_HEADER_BYTES:
            raise ValueError(f"{path}: header length {header_len} is not plausible (a JSON header "
                             f"of 2 to {MAX_HEADER_BYTES} bytes); not a safetensors file?")
        if 8 + header_len > size:
            raise ValueError(f"{path}: the header says its JSON ends at byte {8 + header_len} but "
                             f"the file has {size} bytes (truncated?)")
        raw = f.read(header_len)
    header = parse_json(raw, f"{path}: the header")
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the header must be a JSON object, got {type(header).__name__}")

    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ValueError(f"{path}: '__metadata__' must map strings to strings")
    entries = [_parse_entry(path, name, info) for name, info in header.items()]
    data_start = 8 + header_len
    _check_layout(path, entries, data_start, size)

    mapping = np.memmap(path, dtype=np.uint8, mode="r") if entries else None
    tensors: Dict[str, np.ndarray] = {}
    dtypes: Dict[str, str] = {}
    for e in entries:
        storage, dtypes[e.name] = _DTYPES[e.code]
        # A plain ndarray over the mapping: base is the memmap, so the view keeps the file mapped,
        # and a read-only mapping makes it read-only.
        tensors[e.name] = np.ndarray(e.shape, dtype=storage, buffer=mapping,
                                     offset=data_start + e.begin)
    return SafetensorsFile(path, tensors, dtypes, dict(metadata))


def _parse_entry(path: Path, name: str, info: object) -> _Entry:
    """One header entry, checked on its own (sizes, types); the layout is checked afterwards."""
    where = f"{path}: tensor {name!r}"
    if not isinstance(info, dict):
        raise ValueError(f"{where}: header entry must be an object, got {info!r}")
    code, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(code, str) or code not in _DTYPES:
        raise ValueError(f"{where} has dtype {code!r}; supported: {', '.join(_DTYPES)}")
    if not isinstance(shape, list) or not all(_is_count(n) for n in shape):
        raise ValueError(f"{where}: shape must be a list of non-negative ints, got {shape!r}")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_is_count, offsets))
            or offsets[0] > offsets[1]):
        raise ValueError(f"{where}: data_offsets must be [begin, end] with 0 <= begin <= end, "
                         f"got {offsets!r}")
    begin, end = offsets
    itemsize = np.dtype(_DTYPES[code][0]).itemsize
    needed = math.prod(shape) * itemsize
    if end - begin != needed:
        raise ValueError(f"{where}: shape {tuple(shape)} of {code} needs {needed} bytes but "
                         f"data_offsets [{begin}, {end}] hold {end - begin}")
    return _Entry(name, code, tuple(shape), begin, end)


def _check_layout(path: Path, entries: List[_Entry], data_start: int, size: int) -> None:
    """Tensors must lie inside the file and tile the data section exactly, as the format says."""
    data_bytes = size - data_start
    for e in entries:
        if e.end > data_bytes:
            raise ValueError(f"{path}: the header says tensor {e.name!r} ends at byte "
                             f"{data_start + e.end} but the file has {size} bytes (truncated?)")
    position = 0
    for e in sorted(entries, key=lambda e: (e.begin, e.end)):
        if e.begin != position:
            what = "overlaps the tensor before it" if e.begin < position else "leaves a gap"
            raise ValueError(f"{path}: tensor {e.name!r} starts at data byte {e.begin}, "
                             f"expected {position}: it {what}")
        position = e.end
    if position != data_bytes:
        raise ValueError(f"{path}: the tensors end at byte {data_start + position} but the file "
                         f"has {size} bytes: {data_bytes - position} bytes belong to no tensor")


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def float32_values(array: np.ndarray, dtype: str) -> np.ndarray:
    """The values of a float tensor of ``dtype`` (named as :class:`SafetensorsFile` names them) as
    float32: bfloat16 bits are widened, float16/float64 cast; a float32 array comes back as is."""
    if dtype == "float32":
        return array
    if dtype == "bfloat16":
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array.astype(np.float32)
