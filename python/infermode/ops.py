"""Native kernels on NumPy arrays and CPU torch tensors, without copying.

Each op borrows its inputs' memory (NumPy's buffer, or a torch CPU tensor's storage through
``Tensor.numpy()``), releases the GIL while the C++ kernel runs, and returns a new array that
owns its memory — a ``torch.Tensor`` view of it when any input was a torch tensor. The fastest
kernel this CPU supports is used (see :func:`infermode.cpu_info`).
"""
from __future__ import annotations

import sys
from typing import Any, Optional

import numpy as np

from infermode._ext import _core

__all__ = ["QUANTIZED_FORMATS", "QuantizedMatrix", "dequantize", "matmul", "quantize", "rms_norm",
           "sum"]

#: GGUF block formats the integer kernels take (32 values per block).
QUANTIZED_FORMATS = ("q8_0", "q4_0", "q4_1")


def _as_array(x: Any, name: str, bfloat16_ok: bool = False) -> tuple:
    """(NumPy view of x, whether x was a torch tensor); bfloat16 tensors, where the op takes
    them, as their uint16 bits (NumPy has no bfloat16)."""
    if isinstance(x, np.ndarray):
        return x, False
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        if x.device.type != "cpu":
            raise ValueError(
                f"{name} is on {x.device}; infermode's core runs on the CPU: pass {name}.cpu()"
            )
        if x.dtype == torch.bfloat16:
            if not bfloat16_ok:
                raise TypeError(f"{name} has dtype torch.bfloat16; this op takes float32")
            return x.detach().view(torch.int16).numpy().view(np.uint16), True
        return x.detach().numpy(), True
    raise TypeError(f"{name} must be a NumPy array or a torch tensor, got {type(x).__name__}")


def _threads(threads: Optional[int]) -> int:
    if threads is None:
        return 0
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    return threads


def _result(array: np.ndarray, out: Any, as_torch: bool) -> Any:
    if out is not None:
        return out
    if as_torch:
        import torch

        return torch.from_numpy(array)
    return array


def rms_norm(
    x: Any, weight: Any, eps: float = 1e-6, *, out: Any = None, threads: Optional[int] = None
) -> Any:
    """RMSNorm over the last dim: ``x * rsqrt(mean(x**2, -1) + eps) * weight`` (float32).

        y = im.ops.rms_norm(x, model.norm.weight, eps=1e-6)
    """
    xa, xt = _as_array(x, "x")
    wa, wt = _as_array(weight, "weight")
    oa = None if out is None else _as_array(out, "out")[0]
    result = _core.rms_norm(xa, wa, float(eps), oa, _threads(threads))
    return _result(result, out, xt or wt)


def matmul(a: Any, b: Any, *, out: Any = None, threads: Optional[int] = None) -> Any:
    """``a @ b`` in float32; ``b`` [k, n] may be row-major or a transposed [n, k] weight (``w.T``).

    ``b`` may also be a torch.bfloat16 tensor (a bfloat16 weight, read at half the bytes).

        y = im.ops.matmul(x, linear.weight.T)     # no copy of the weight
    """
    aa, at = _as_array(a, "a")
    ba, bt = _as_array(b, "b", bfloat16_ok=True)
    oa = None if out is None else _as_array(out, "out")[0]
    is_bf16 = bt and b.dtype == sys.modules["torch"].bfloat16
    result = _core.matmul(aa, ba, oa, _threads(threads), is_bf16)
    return _result(result, out, at or bt)


def sum(x: Any, *, threads: Optional[int] = None) -> float:  # noqa: A001 - mirrors numpy.sum
    """Sum of all elements of a contiguous float32 array (float32 blocks, float64 across them).

    It reads every byte once, so timing it measures the memory read bandwidth.
    """
    xa, _ = _as_array(x, "x")
    return float(_core.sum(xa, _threads(threads)))


def _format(format: str) -> str:
    if format not in QUANTIZED_FORMATS:
        raise ValueError(f"format must be one of {', '.join(QUANTIZED_FORMATS)}, got {format!r}")
    return format


def quantize(w: Any, format: str) -> np.ndarray:
    """Quantizes a float32 matrix ``(rows, cols)`` row by row into GGUF blocks, rounding as
    llama.cpp's reference quantizer does; ``cols`` must be a multiple of 32.

    Returns uint8 ``(rows, cols // 32 * block_bytes)``: the bytes a GGUF file stores.

        blocks = im.ops.quantize(linear.weight, "q8_0")
    """
    wa, _ = _as_array(w, "w")
    return _core.quantize(wa, _format(format))


def dequantize(blocks: np.ndarray, format: str) -> np.ndarray:
    """GGUF blocks (uint8 ``(rows, bytes per row)``) back to float32 ``(rows, cols)``."""
    return _core.dequantize(np.asarray(blocks), _format(format))


class QuantizedMatrix:
    """A quantized Linear weight (``rows`` output features x ``cols`` inputs), repacked once for
    the integer kernels; ``matrix @ x``-style products come from :meth:`matmul`.

        w = im.ops.QuantizedMatrix(im.ops.quantize(linear.weight, "q4_0"), "q4_0")
        y = w.matmul(x)       # x [..., cols] float32 -> [..., rows], like x @ weight.T
    """

    def __init__(self, blocks: np.ndarray, format: str) -> None:
        self._packed = _core.QuantizedMatrix(np.asarray(blocks), _format(format))

    rows = property(lambda self: self._packed.rows)
    cols = property(lambda self: self._packed.cols)
    format = property(lambda self: self._packed.format)
    #: bytes the kernels stream per product (the GGUF size plus alignment)
    nbytes = property(lambda self: self._packed.nbytes)

    def matmul(self, x: Any, *, out: Any = None, threads: Optional[int] = None) -> Any:
        xa, xt = _as_array(x, "x")
        oa = None if out is None else _as_array(out, "out")[0]
        return _result(self._packed.matmul(xa, oa, _threads(threads)), out, xt)

    def __repr__(self) -> str:
        return f"QuantizedMatrix({self.format}, rows={self.rows}, cols={self.cols})"
