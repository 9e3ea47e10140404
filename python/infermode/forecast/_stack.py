"""The native transformer stack over an upstream PyTorch model's own parameters.

The upstream module keeps its weights; the stack borrows them as NumPy views and packs each
matrix once into the panels its GEMM reads, a copy the size of the transformer's weights (the
price of not re-packing them on every call, which cost as much as the multiplications at a
batch of one). What the stack derives from the parameters (the packing, Toto's re-laid q/k/v,
the fused output-after-value matrices of group attention) is made again when a parameter
changes in place or is replaced, so a wrapper follows the model it wraps.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence

import numpy as np

from infermode._ext import _core

log = logging.getLogger("infermode.forecast")


def _borrowed(tensor: Any, name: str) -> np.ndarray:
    tensor = tensor.detach()
    if tensor.device.type != "cpu" or str(tensor.dtype) != "torch.float32":
        raise ValueError(
            f"parameter {name!r} is {tensor.dtype} on {tensor.device}; the native stack reads "
            "float32 parameters on the CPU (the wrapper falls back to PyTorch otherwise)"
        )
    return tensor.contiguous().numpy()


def block_config(*, causal: bool, scaled: bool = True, attention_bias: bool = False,
                 rope: str = "half_split", rope_theta: float = 10000.0, mlp: str = "swiglu",
                 mlp_bias: bool = False, time_attention: bool = True,
                 group_attention: bool = False,
                 xpos_scale_base: float = 512.0) -> Dict[str, Any]:
    """One block's settings, as ``_core.TransformerStack`` reads them."""
    return {"time_attention": time_attention, "group_attention": group_attention,
            "causal": causal, "scaled": scaled, "attention_bias": attention_bias, "rope": rope,
            "rope_theta": rope_theta, "xpos_scale_base": xpos_scale_base, "mlp": mlp,
            "mlp_bias": mlp_bias}


class NativeStack:
    """A ``_core.TransformerStack`` built from named upstream parameters.

    ``tensors`` returns a mapping from the stack's names (``blocks.{i}.attention.q.weight``, ...;
    see ``_core.TransformerStack.tensor_names``) to ``torch`` tensors: the upstream parameters or
    views of them. ``parameters`` are the upstream parameters those come from: when one of them
    changes (an in-place update bumps its version; a replaced ``.data`` moves it), the stack is
    built again from ``tensors()`` before the next call.
    """

    def __init__(self, *, hidden: int, heads: int, intermediate: int, norm_eps: float,
                 blocks: Sequence[Dict[str, Any]], tensors: Callable[[], Mapping[str, Any]],
                 parameters: Iterable[Any], final_norm: bool = False,
                 threads: Optional[int] = None, head_dim: Optional[int] = None):
        self.config = {"hidden": hidden, "heads": heads, "head_dim": head_dim or hidden // heads,
                       "intermediate": intermediate, "norm_eps": float(norm_eps),
                       "final_norm": final_norm, "blocks": list(blocks)}
        self._tensors = tensors
        self._parameters = tuple(parameters)
        self.threads = threads or 0
        self._build()

    def _stamp(self) -> tuple:
        return tuple((p._version, p.data_ptr()) for p in self._parameters)

    def _build(self) -> None:
        arrays = {name: _borrowed(t, name) for name, t in self._tensors().items()}
        self._stack = _core.TransformerStack(self.config, arrays)
        self._built = self._stamp()

    @property
    def stack(self) -> Any:
        """The core stack, built again first if the upstream parameters changed since."""
        if self._stamp() != self._built:
            log.info("upstream parameters changed since the native stack was built: rebuilding")
            self._build()
        return self._stack

    def __call__(self, x: np.ndarray, cache: Any = None, *, key_bias: Optional[np.ndarray] = None,
                 group: Optional[np.ndarray] = None) -> np.ndarray:
        """The blocks over ``x`` (float32 [sequences, tokens, hidden]), continuing ``cache``.

        ``key_bias`` (float32 [sequences, tokens], ``-inf`` hides a padded token) masks keys in
        bidirectional and group attention; ``group`` (int64 [sequences]) says which sequences
        attend to each other in group attention.
        """
        if key_bias is not None:
            key_bias = np.ascontiguousarray(key_bias, dtype=np.float32)
        if group is not None:
            group = np.ascontiguousarray(group, dtype=np.int64)
        return self.stack.forward(np.ascontiguousarray(x, dtype=np.float32), cache,
                                   threads=self.threads, key_bias=key_bias, group=group)

    def new_cache(self, sequences: int, capacity: int) -> Any:
        return self.stack.new_cache(sequences, capacity)
