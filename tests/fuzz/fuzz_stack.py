"""Fuzz target: the native transformer stack of the forecasters (``_core.TransformerStack``)
through its bindings: configs bent field by field (sizes, rope and mlp names, flags of the wrong
type, xPos bases), tensors swapped for arrays of any kind, and forward calls with arrays of every
dtype, shape and layout as x, key_bias and group, over caches of bent sizes, repeated and
continued past their capacity.

The first byte of an input picks the call (CALLS), the rest are its arguments. A call must return
a right answer or raise ValueError or TypeError (MemoryError only for a dim of billions); a stack
that is built must run a forward of the right shape, and one x row in one group must not depend
on the others.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List

import numpy as np

import _harness
from _arrays import draw_array, pick
from _harness import Finding

with _harness.instrumented("infermode"):
    from infermode import _core

from fuzz_core_boundary import FLOATS, INTS, REFUSED, THREADS, attempt

HIDDEN, HEADS, HEAD_DIM, INTER = 8, 2, 4, 12
ROPES = ["none", "half_split", "interleaved_xpos", "", "xpos", 3]
MLPS = ["swiglu", "relu", "gelu", None]


def block(causal: bool = True, group: bool = False, time: bool = True, rope: str = "half_split",
          mlp: str = "swiglu") -> Dict[str, Any]:
    return {"time_attention": time, "group_attention": group, "causal": causal, "scaled": True,
            "attention_bias": True, "rope": rope, "rope_theta": 10000.0,
            "xpos_scale_base": 512.0, "mlp": mlp, "mlp_bias": True}


def config(blocks: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {"hidden": HIDDEN, "heads": HEADS, "head_dim": HEAD_DIM, "intermediate": INTER,
            "norm_eps": 1e-6, "final_norm": True, "blocks": blocks}


def tensors_for(cfg: Dict[str, Any], seed: int) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.normal(0, 0.3, shape).astype(np.float32)
            for name, shape in _core.TransformerStack.tensor_names(cfg)}


# A causal stack (RoPE, then xPos), and a bidirectional one with group attention and a ReLU MLP.
CAUSAL = config([block(rope="half_split"), block(rope="interleaved_xpos"),
                 block(group=True, time=False, rope="none")])
GROUPED = config([block(causal=False, group=True, mlp="relu"), block(causal=False, rope="none")])
STACKS = {name: _core.TransformerStack(cfg, tensors_for(cfg, i))
          for i, (name, cfg) in enumerate((("causal", CAUSAL), ("grouped", GROUPED)))}


def call_init(fdp) -> None:
    """A stack from a bent config and swapped tensors; one that is built must run."""
    cfg = {**(CAUSAL if fdp.ConsumeBool() else GROUPED)}
    cfg["blocks"] = [dict(b) for b in cfg["blocks"]]
    tensors = tensors_for(cfg, 7)
    for _ in range(pick(fdp, [0, 1, 2])):
        key = pick(fdp, ["hidden", "heads", "head_dim", "intermediate"])
        cfg[key] = pick(fdp, INTS + [1, 3, 4, 16])
    if fdp.ConsumeProbability() < 0.2:
        cfg["norm_eps"] = pick(fdp, FLOATS)
    for b in cfg["blocks"]:
        if fdp.ConsumeProbability() < 0.3:
            b["rope"] = pick(fdp, ROPES)
        if fdp.ConsumeProbability() < 0.2:
            b["mlp"] = pick(fdp, MLPS)
        if fdp.ConsumeProbability() < 0.2:
            b[pick(fdp, ["xpos_scale_base", "rope_theta"])] = pick(fdp, FLOATS)
        if fdp.ConsumeProbability() < 0.2:
            key = pick(fdp, ["time_attention", "group_attention", "causal", "mlp_bias"])
            b[key] = pick(fdp, [True, False, 1, "yes", None])
    if fdp.ConsumeProbability() < 0.1:
        cfg["blocks"] = pick(fdp, [[], None, [1], "blocks"])
    for _ in range(pick(fdp, [0, 0, 1, 2])):
        name = pick(fdp, sorted(tensors))
        tensors[name] = draw_array(fdp, tensors[name].shape if fdp.ConsumeBool() else None)
    if fdp.ConsumeProbability() < 0.1:
        tensors["blocks.9.extra.weight"] = np.zeros(3, np.float32)
    stack = attempt(lambda: _core.TransformerStack(cfg, tensors), *tensors.values())
    if stack is REFUSED:
        return
    x = np.ones((2, 3, cfg["hidden"]), np.float32)
    group = np.zeros(2, np.int64)
    out = stack.forward(x, None, 1, None, group)
    if out.shape != x.shape:
        raise Finding(f"a stack built from {cfg} gave {out.shape} for x {x.shape}")


def call_forward(fdp) -> None:
    """forward with arrays of any kind as x, key_bias and group."""
    name = pick(fdp, sorted(STACKS))
    stack = STACKS[name]
    sequences, tokens = pick(fdp, [0, 1, 2, 3]), pick(fdp, [0, 1, 2, 5])
    x = draw_array(fdp, (sequences, tokens, HIDDEN) if fdp.ConsumeBool() else None)
    key_bias = None
    if fdp.ConsumeBool():
        key_bias = draw_array(fdp, (sequences, tokens) if fdp.ConsumeBool() else None)
    group = None
    if fdp.ConsumeProbability() < 0.8:
        group = draw_array(fdp, (sequences,) if fdp.ConsumeBool() else None,
                           np.int64 if fdp.ConsumeBool() else None)
    threads = pick(fdp, THREADS)
    got = attempt(lambda: stack.forward(x, None, threads, key_bias, group), x, key_bias, group)
    if got is REFUSED:
        return
    if got.shape != x.shape or got.dtype != np.float32:
        raise Finding(f"forward gave {got.dtype} {got.shape} for x {x.dtype} {x.shape}")
    # Sequences of other groups never change a sequence's result: each alone gives the same.
    if x.ndim == 3 and x.shape[0] > 1 and np.isfinite(x).all() and group is not None \
            and key_bias is None and len(np.unique(np.asarray(group))) == x.shape[0]:
        alone = stack.forward(np.ascontiguousarray(x[:1]), None, 1, None,
                              np.ascontiguousarray(np.asarray(group)[:1]))
        if not np.allclose(alone, got[:1], rtol=1e-4, atol=1e-4, equal_nan=True):
            raise Finding("a sequence alone in its group changed with the other sequences")


def allocated(make: Callable[[], Any]) -> Any:
    """A cache from ``make()``, or REFUSED when it was refused as it should be: a ValueError (the
    sizes make no sense or overflow), or the allocator's out-of-memory for sizes that fit 64 bits
    but not this machine."""
    try:
        return make()
    except ValueError:
        return REFUSED
    except (MemoryError, RuntimeError) as exc:
        if isinstance(exc, MemoryError) or "out of memory" in str(exc):
            return REFUSED
        raise Finding(f"making a cache raised {type(exc).__name__}: {exc}") from exc


def call_cache(fdp) -> None:
    """Caches of bent sizes, repeated, and forwards that continue them (past their capacity)."""
    stack = STACKS["causal"]
    sequences, capacity = pick(fdp, INTS + [1, 2, 3]), pick(fdp, INTS + [1, 4, 6])
    cache = allocated(lambda: stack.new_cache(sequences, capacity))
    if cache is REFUSED:
        return
    if fdp.ConsumeBool():
        times = pick(fdp, INTS + [2, 3])
        repeated = allocated(lambda: cache.repeat(times))
        if repeated is not REFUSED:
            cache = repeated
    for _ in range(pick(fdp, [1, 2, 3])):
        tokens = pick(fdp, [0, 1, 2, 3, 7])
        x = draw_array(fdp, (cache.sequences, tokens, HIDDEN) if fdp.ConsumeBool() else None)
        group = np.zeros(cache.sequences, np.int64) if fdp.ConsumeProbability() < 0.9 else None
        before = cache.length
        got = attempt(lambda: stack.forward(x, cache, 1, None, group), x)
        if got is REFUSED:
            if cache.length != before:
                raise Finding("a refused forward moved the cache's length")
            continue
        if cache.length != before + x.shape[1]:
            raise Finding(f"the cache's length went {before} -> {cache.length} for "
                          f"{x.shape[1]} tokens")
    if cache.length > cache.capacity:
        raise Finding(f"a cache holds {cache.length} positions, over its capacity "
                      f"{cache.capacity}")


def call_other_stack_cache(fdp) -> None:
    """A cache made by one stack, handed to another, or an object that is not a cache."""
    cache = pick(fdp, [STACKS["causal"].new_cache(1, 4), "cache", 3, np.zeros(3)])
    stack = pick(fdp, [STACKS["grouped"], STACKS["causal"]])
    x = np.zeros((1, 1, HIDDEN), np.float32)
    attempt(lambda: stack.forward(x, cache, 1, None, np.zeros(1, np.int64)))


CALLS: List[Callable[[Any], None]] = [call_init, call_forward, call_cache, call_other_stack_cache]


test_one_input = _harness.dispatch(CALLS)


if __name__ == "__main__":
    np.seterr(all="ignore")
    _harness.fuzz(test_one_input)
