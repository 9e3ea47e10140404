"""NumPy arrays of every kind a caller can hand the core, drawn from fuzzer bytes.

The kinds are what a C++ binding has to refuse or handle: dtypes it does not take (and float32 in
big-endian byte order, which has the right kind and size but other bytes), 0-d arrays and up to 7
dims (the core takes 6), empty dims, and memory layouts: Fortran order, transposed, strided,
reversed (negative strides), broadcast (zero strides), misaligned (not on an item boundary),
strides that are not a multiple of the item size, read-only, and dims of billions of elements
that take no memory (broadcast from one value).

Every array is legal NumPy: its memory is really there, so what the core does with it is the
core's responsibility.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

#: dtypes drawn for an array; float32 (native order) is drawn far more often than any other.
DTYPES = (np.dtype("<f4"), np.dtype(">f4"), np.dtype("<f8"), np.dtype("<f2"), np.dtype("<i4"),
          np.dtype("<i8"), np.dtype("i1"), np.dtype("u1"), np.dtype("<u2"), np.dtype("?"),
          np.dtype("<c8"), np.dtype("<u4"), np.dtype(">i4"))
LAYOUTS = ("contiguous", "fortran", "transposed", "strided", "reversed", "broadcast",
           "misaligned", "odd_strides", "readonly", "huge")
#: Sizes a dim is drawn from: small and odd ones, block multiples, and their neighbours.
DIM_SIZES = (0, 1, 1, 2, 3, 4, 5, 7, 8, 16, 31, 32, 33, 64)
#: Dims that take no memory when broadcast, around the int32 limit and far past it.
HUGE_DIMS = (2**31 - 1, 2**31 + 1, 2**32, 2**40, 2**62)
#: Elements at most in one drawn array (kept small: each input must run in milliseconds).
MAX_ELEMENTS = 4096


def pick(fdp, choices: Sequence):
    """One of ``choices``, chosen by the fuzzer."""
    return choices[fdp.ConsumeIntInRange(0, len(choices) - 1)]


def draw_shape(fdp, ndim: Optional[int] = None) -> Tuple[int, ...]:
    if ndim is None:
        ndim = pick(fdp, [0, 1, 2, 2, 2, 3, 4, 7])
    shape = [pick(fdp, DIM_SIZES) for _ in range(ndim)]
    while int(np.prod(shape)) > MAX_ELEMENTS:
        shape[int(np.argmax(shape))] //= 2
    return tuple(shape)


def draw_dtype(fdp) -> np.dtype:
    return np.dtype("<f4") if fdp.ConsumeProbability() < 0.6 else pick(fdp, DTYPES)


def draw_values(fdp, count: int, special: bool) -> np.ndarray:
    """Small multiples of 1/4 (sums and products stay exact enough to compare with NumPy), with
    NaN, infinities and large values mixed in when ``special``."""
    values = np.array(fdp.ConsumeIntListInRange(count, -8, 8), dtype=np.float64) / 4.0
    values = np.resize(values, count) if values.size != count else values
    if special and count:
        picks = fdp.ConsumeIntListInRange(min(count, 4), 0, count - 1)
        for i, value in zip(picks, (np.nan, np.inf, -np.inf, 3e38)):
            values[i] = value
    return values


def fill(array: np.ndarray, values: np.ndarray) -> None:
    with np.errstate(all="ignore"):
        if array.dtype.kind in "iub":
            values = np.nan_to_num(values, nan=0.0, posinf=1.0, neginf=-1.0)
        array[...] = values.reshape(array.shape).astype(array.dtype, casting="unsafe")


def draw_array(fdp, shape: Optional[Sequence[int]] = None,
               dtype: Optional[np.dtype] = None, layout: Optional[str] = None) -> np.ndarray:
    """An array of ``shape`` and ``dtype`` (drawn when None) in a drawn memory layout. Its values
    are finite unless the fuzzer asks for special ones."""
    shape = tuple(draw_shape(fdp) if shape is None else shape)
    dtype = draw_dtype(fdp) if dtype is None else np.dtype(dtype)
    if layout is None:
        layout = "contiguous" if fdp.ConsumeProbability() < 0.5 else pick(fdp, LAYOUTS)
    count = int(np.prod(np.array(shape, dtype=object)))
    values = draw_values(fdp, min(count, MAX_ELEMENTS), special=fdp.ConsumeProbability() < 0.1)
    if count > MAX_ELEMENTS:
        # A shape asked to match a huge one: it can only be a broadcast of one value too.
        return _broadcast(shape, dtype, values)
    return _laid_out(shape, dtype, layout, values, fdp)


def _broadcast(shape: Sequence[int], dtype: np.dtype, values: np.ndarray) -> np.ndarray:
    """One value seen at every index of ``shape``: any size, no memory. Shapes with more elements
    than NumPy can index give an empty array instead (no caller can hold those)."""
    base = np.zeros((1,) * len(shape), dtype)
    fill(base, values[:1] if values.size else np.zeros(1))
    try:
        return np.broadcast_to(base, tuple(shape))
    except ValueError:
        return np.zeros((0,) * len(shape), dtype)


def _laid_out(shape: Tuple[int, ...], dtype: np.dtype, layout: str, values: np.ndarray,
              fdp) -> np.ndarray:
    ndim = len(shape)
    if layout == "fortran" and ndim >= 2:
        array = np.empty(shape, dtype, order="F")
    elif layout == "transposed" and ndim >= 2:
        array = np.empty(shape[::-1], dtype).T
    elif layout == "strided" and ndim >= 1:
        step = pick(fdp, [2, 3])
        array = np.empty(shape[:-1] + (shape[-1] * step,), dtype)[..., ::step]
    elif layout == "reversed" and ndim >= 1:
        array = np.empty(shape, dtype)[..., ::-1]
    elif layout == "broadcast" and ndim >= 1:
        base = np.empty((1,) + shape[1:], dtype)
        fill(base, np.resize(values, base.size) if base.size else values[:0])
        return np.broadcast_to(base, shape)
    elif layout == "misaligned":
        raw = np.empty(count_bytes(shape, dtype) + 1, np.uint8)[1:]
        array = raw.view(dtype).reshape(shape)
    elif layout == "odd_strides" and ndim >= 1 and all(shape):
        # One byte more than an item between the elements of the last dim.
        strides = list(np.empty(shape, dtype).strides)
        strides[-1] = dtype.itemsize + 1
        span = sum((n - 1) * s for n, s in zip(shape, strides)) + dtype.itemsize
        return np.ndarray(shape, dtype=dtype, buffer=np.zeros(span, np.uint8),
                          strides=tuple(strides))
    elif layout == "huge" and ndim >= 1:
        huge = list(shape)
        huge[fdp.ConsumeIntInRange(0, ndim - 1)] = pick(fdp, HUGE_DIMS)
        return _broadcast(huge, dtype, values)
    else:
        array = np.empty(shape, dtype)
    fill(array, values if values.size == array.size else np.resize(values, array.size))
    if layout == "readonly":
        array.setflags(write=False)
    return array


def count_bytes(shape: Sequence[int], dtype: np.dtype) -> int:
    return int(np.prod(shape)) * dtype.itemsize
