"""The native transformer stack's bindings, beyond what the forecasters' parity tests cover."""
from __future__ import annotations

import numpy as np

import infermode as im
from infermode._ext import _core
from infermode.forecast._stack import block_config

HIDDEN = 16


def _stack():
    config = {"hidden": HIDDEN, "heads": 2, "head_dim": 8, "intermediate": 32, "norm_eps": 1e-5,
              "final_norm": False, "blocks": [block_config(causal=True)] * 2}
    rng = np.random.default_rng(0)
    tensors = {name: (rng.standard_normal(shape) * 0.3 + ("norm" in name)).astype(np.float32)
               for name, shape in _core.TransformerStack.tensor_names(config)}
    return _core.TransformerStack(config, tensors)


def test_a_cache_made_inside_the_native_mode_outlives_it():
    """A cache the caller keeps must not live in the arena the native mode hands back."""
    stack = _stack()
    x = np.random.default_rng(1).standard_normal((1, 6, HIDDEN)).astype(np.float32)
    whole = stack.forward(x, None)
    with im.inference_mode():
        cache = stack.new_cache(1, 8)
        first = stack.forward(x[:, :3].copy(), cache)
        copies = cache.repeat(2)
    with im.inference_mode():  # the arena's memory used again, for something else
        stack.forward(np.ones((1, 6, HIDDEN), np.float32), None)
    rest = stack.forward(x[:, 3:].copy(), cache)
    np.testing.assert_allclose(np.concatenate([first, rest], 1), whole, atol=1e-5, rtol=0)
    rest2 = stack.forward(np.repeat(x[:, 3:], 2, axis=0), copies)
    np.testing.assert_allclose(rest2, np.repeat(whole[:, 3:], 2, axis=0), atol=1e-5, rtol=0)
