"""Fuzz target: the Python -> C++ boundary. Arrays of every dtype, shape and memory layout
(_arrays.py), with extreme scalars, go to the core's ops (through infermode.ops and through
_core directly), the quantized kernels, the decoder's forward and generate (bad token ids,
capture points, sampling settings), LoRA adapters built for it, decoders built from bent configs,
and CausalLM's public forward and generate.

The first byte of an input picks the call (CALLS), the rest are its arguments, read with
atheris.FuzzedDataProvider. A call must return a right answer or raise ValueError or TypeError;
MemoryError only when an argument really asks for more memory than there is (a dim of billions).
Results are checked against NumPy (and gguf-py's quantizer) where they are exact enough to.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List

import numpy as np

import _harness
from _arrays import HUGE_DIMS, MAX_ELEMENTS, draw_array, pick
from _harness import TINY_LLAMA, Finding, unexpected

with _harness.instrumented("infermode"):
    import infermode
    from infermode import _core, ops

try:
    import torch
except ImportError:  # the torch extra is optional: the ops are then fuzzed with NumPy arrays only
    torch = None

import gguf

MODEL = infermode.CausalLM.from_pretrained(TINY_LLAMA, threads=1)
DECODER = MODEL._model
CONFIG = MODEL.config
FORMATS = list(ops.QUANTIZED_FORMATS)
THREADS = [0, 1, 2, 3, 64, 1024, 1025, 200_000, 2**31 - 1, -1]
INTS = [0, 1, 2, 5, -1, -(2**31), 2**31 - 1, 2**31, 2**32 + 1, 2**62, 2**63 - 1, -(2**63)]
FLOATS = [0.0, 1e-6, 0.5, 1.0, 2.0, -1.0, math.nan, math.inf, -math.inf, 1e30, 3.5e38]


class _Stop(Exception):
    """Raised by a token callback: generate must stop and hand it back unchanged."""


def check_error(exc: BaseException, huge: bool) -> None:
    """Accepts ``exc`` as a call's refusal of its arguments, or raises :class:`Finding`:
    ValueError or TypeError; MemoryError when an argument is ``huge``; a token callback's own
    exception, which generate must hand back unchanged."""
    if isinstance(exc, (ValueError, TypeError)) and not isinstance(exc, UnicodeError):
        return
    if isinstance(exc, MemoryError) and huge or isinstance(exc, _Stop):
        return
    raise unexpected(exc, f"unexpected {type(exc).__name__}") from exc


#: What :func:`attempt` returns for a call that refused its arguments as it should.
REFUSED = object()


def attempt(call: Callable[[], Any], *arrays: Any) -> Any:
    """``call()``'s result, or REFUSED when it raised an accepted error (see check_error;
    ``arrays`` are its array arguments, which decide whether MemoryError is accepted)."""
    try:
        return call()
    except BaseException as exc:  # noqa: BLE001 - check_error decides; the rest are findings
        check_error(exc, is_huge(*arrays))
        return REFUSED


def is_huge(*arrays: Any) -> bool:
    """Whether an array has a dim of billions: then an output shaped after it may not fit
    (a [2**31, 64, 0] input has no elements, a [2**31, 64, 1] output has 2**37)."""
    return any(isinstance(a, np.ndarray) and any(n >= min(HUGE_DIMS) for n in a.shape)
               for a in arrays)


def honest_float32(*arrays: Any) -> bool:
    """Native float32 arrays, small enough to compute NumPy's answer for, whose values are finite
    and small enough that float32 squares and sums of them cannot overflow (the core accumulates
    in float32, NumPy's reference in float64): where the result must equal NumPy's."""
    return all(isinstance(a, np.ndarray) and a.dtype == np.dtype("<f4")
               and a.size <= MAX_ELEMENTS and np.isfinite(a).all()
               and (a.size == 0 or np.abs(a).max() <= 1e15) for a in arrays)


def maybe_torch(fdp, array: np.ndarray) -> Any:
    """The array as a CPU torch tensor sometimes (ops take both), when torch can hold it."""
    if torch is None or not isinstance(array, np.ndarray) or fdp.ConsumeProbability() > 0.2:
        return array
    if not array.flags.writeable or array.dtype.kind == "u" and array.dtype.itemsize > 1:
        return array
    try:
        return torch.from_numpy(array)
    except (ValueError, TypeError):  # torch cannot hold it (negative strides, byte order)
        return array


def as_numpy(x: Any) -> Any:
    return x.numpy() if torch is not None and isinstance(x, torch.Tensor) else x


def expect_close(got: Any, want: np.ndarray, what: str, rtol: float = 1e-5,
                 atol: float = 1e-5) -> None:
    got = np.asarray(as_numpy(got), dtype=np.float64)
    if got.shape != want.shape or not np.allclose(got, want, rtol=rtol, atol=atol,
                                                  equal_nan=True):
        raise Finding(f"{what}: got {got!r}, NumPy gives {want!r}")


def maybe_out(fdp, shape) -> Any:
    if fdp.ConsumeProbability() > 0.3:
        return None
    return draw_array(fdp, shape if fdp.ConsumeBool() else None)


# ---------------------------------------------------------------------------------- the ops


def call_rms_norm(fdp) -> None:
    x = draw_array(fdp)
    w = draw_array(fdp, x.shape[-1:] if x.ndim and fdp.ConsumeBool() else None)
    eps, out, threads = pick(fdp, FLOATS), maybe_out(fdp, x.shape), pick(fdp, THREADS)
    if fdp.ConsumeBool():
        got = attempt(lambda: _core.rms_norm(x, w, eps, out, threads), x, w, out)
    else:
        xt, wt = maybe_torch(fdp, x), maybe_torch(fdp, w)
        got = attempt(lambda: ops.rms_norm(xt, wt, eps, out=out, threads=threads or None),
                      x, w, out)
    if got is REFUSED:
        return
    if honest_float32(x, w) and math.isfinite(eps) and eps > 0 and x.ndim:
        x64 = x.astype(np.float64)
        want = x64 / np.sqrt((x64 ** 2).mean(-1, keepdims=True) + eps) * w
        expect_close(got, want, "rms_norm", rtol=1e-4, atol=1e-4)


def call_matmul(fdp) -> None:
    a = draw_array(fdp)
    # b as bfloat16 bits (uint16, any values: NaN and infinities included) a fifth of the time.
    bfloat16 = fdp.ConsumeProbability() < 0.2
    b_dtype = np.uint16 if bfloat16 and fdp.ConsumeProbability() < 0.9 else None
    if fdp.ConsumeBool() and a.ndim:
        b = draw_array(fdp, (a.shape[-1], pick(fdp, [0, 1, 3, 8, 33])), b_dtype)
    else:
        b = draw_array(fdp, dtype=b_dtype)
    out = maybe_out(fdp, a.shape[:-1] + b.shape[-1:] if a.ndim and b.ndim else ())
    threads = pick(fdp, THREADS)
    if fdp.ConsumeBool() or bfloat16:
        got = attempt(lambda: _core.matmul(a, b, out, threads, bfloat16), a, b, out)
    else:
        at, bt = maybe_torch(fdp, a), maybe_torch(fdp, b)
        got = attempt(lambda: ops.matmul(at, bt, out=out, threads=threads or None), a, b, out)
    if got is REFUSED:
        return
    b_values = (b.astype(np.uint32) << 16).view(np.float32) \
        if bfloat16 and b.size <= MAX_ELEMENTS else b
    if honest_float32(a, b_values) and b.ndim == 2 and a.ndim >= 1:
        expect_close(got, a.astype(np.float64) @ b_values.astype(np.float64), "matmul")


def call_sum(fdp) -> None:
    x = draw_array(fdp)
    threads = pick(fdp, THREADS)
    xt = maybe_torch(fdp, x) if fdp.ConsumeBool() else None
    got = attempt(lambda: _core.sum(x, threads) if xt is None
                  else ops.sum(xt, threads=threads or None), x)
    if got is not REFUSED and honest_float32(x):
        expect_close(np.float64(got), np.float64(x.astype(np.float64).sum()), "sum")


def call_quantize(fdp) -> None:
    rows = pick(fdp, [0, 1, 3])
    w = draw_array(fdp, (rows, pick(fdp, [0, 32, 64, 33, 8])) if fdp.ConsumeBool() else None)
    fmt = pick(fdp, FORMATS + ["q8_1", "Q8_0", ""])
    if is_huge(w) and w.dtype.kind == "f" and w.ndim == 2 and w.shape[1] % 32 == 0:
        return  # a float matrix of billions of values: gigabytes of work asked for, not an error
    wt = maybe_torch(fdp, w)
    got = attempt(lambda: ops.quantize(wt, fmt), w)
    if got is REFUSED:
        return
    if w.dtype.kind != "f":
        raise Finding(f"quantize took a {w.dtype} array; it quantizes float matrices")
    if not np.isfinite(w).all():
        # No right answer to compare with: the reference quantizers disagree on NaN (llama.cpp's
        # MAX() skips one, NumPy's max() keeps it) and so on every value of its block.
        return
    want = gguf.quants.quantize(np.asarray(w, dtype=np.float32),
                                gguf.GGMLQuantizationType[fmt.upper()])
    if not np.array_equal(got, want):
        raise Finding(f"quantize({fmt}) differs from gguf-py's reference quantizer")


def draw_blocks(fdp, fmt: str) -> np.ndarray:
    """GGUF blocks of ``fmt``: random bytes (any scale, NaN included) of a whole number of
    blocks per row, or an array of some other kind."""
    if fdp.ConsumeProbability() < 0.3:
        return draw_array(fdp)
    block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[fmt.upper()]][1]
    rows, per_row = pick(fdp, [0, 1, 2, 5]), pick(fdp, [1, 2, 3])
    raw = np.frombuffer(fdp.ConsumeBytes(rows * per_row * block).ljust(rows * per_row * block,
                                                                       b"\0"), np.uint8)
    return draw_array(fdp, (rows, per_row * block), np.uint8) if fdp.ConsumeProbability() < 0.2 \
        else raw.reshape(rows, per_row * block).copy()


def call_dequantize(fdp) -> None:
    fmt = pick(fdp, FORMATS)
    blocks = draw_blocks(fdp, fmt)
    got = attempt(lambda: ops.dequantize(blocks, fmt), blocks)
    if got is REFUSED:
        return
    with np.errstate(all="ignore"):
        want = gguf.quants.dequantize(np.asarray(blocks), gguf.GGMLQuantizationType[fmt.upper()])
    if not np.array_equal(got, want.reshape(got.shape), equal_nan=True):
        raise Finding(f"dequantize({fmt}) differs from gguf-py's reference")


def call_quantized_matmul(fdp) -> None:
    fmt = pick(fdp, FORMATS)
    blocks = draw_blocks(fdp, fmt)
    matrix = attempt(lambda: ops.QuantizedMatrix(blocks, fmt), blocks)
    if matrix is REFUSED:
        return
    x = draw_array(fdp, (pick(fdp, [0, 1, 3]), matrix.cols) if fdp.ConsumeBool() else None)
    out = maybe_out(fdp, x.shape[:-1] + (matrix.rows,) if x.ndim else ())
    xt, threads = maybe_torch(fdp, x), pick(fdp, [None, 1, 2, 1025, 200_000])
    got = attempt(lambda: matrix.matmul(xt, out=out, threads=threads), x, out)
    if got is REFUSED:
        return
    if tuple(got.shape) != x.shape[:-1] + (matrix.rows,):
        raise Finding(f"QuantizedMatrix.matmul gave shape {tuple(got.shape)} for x {x.shape}")


# ------------------------------------------------------------------------------- the decoder


def draw_ids(fdp) -> List[int]:
    count = pick(fdp, [0, 1, 2, 3, 5])
    return [pick(fdp, INTS + [3, 7, CONFIG.vocab_size - 1, CONFIG.vocab_size])
            for _ in range(count)]


def call_decoder_forward(fdp) -> None:
    if fdp.ConsumeBool():
        ids = draw_array(fdp, dtype=np.int32 if fdp.ConsumeBool() else None)
        if ids.dtype.kind in "iu" and ids.size and ids.size < min(HUGE_DIMS):
            with np.errstate(all="ignore"):
                ids = ids.astype(np.int64) % (CONFIG.vocab_size + 2) \
                    if fdp.ConsumeBool() else ids
    else:
        ids = np.array([draw_ids(fdp)], dtype=np.int64).astype(np.int32)
    adapter = foreign_adapter() if fdp.ConsumeProbability() < 0.05 else None
    last_only, threads = fdp.ConsumeBool(), pick(fdp, THREADS)
    logits = attempt(lambda: DECODER.forward(ids, threads, last_only, adapter=adapter), ids)
    if logits is REFUSED:
        return
    expected = (ids.shape[0], 1 if last_only else ids.shape[1], CONFIG.vocab_size)
    if logits.shape != expected:
        raise Finding(f"forward gave logits {logits.shape}, expected {expected}")


_FOREIGN: Dict[str, Any] = {}


def foreign_adapter() -> Any:
    """A LoRA adapter built for another Decoder: using it on DECODER must be refused."""
    if "adapter" not in _FOREIGN:
        other = infermode.CausalLM.from_pretrained(TINY_LLAMA, threads=1)._model
        name = "model.layers.0.self_attn.q_proj.weight"
        q = MODEL._checkpoint.weights[name]
        _FOREIGN["model"] = other
        _FOREIGN["adapter"] = _core.LoraAdapter(
            other, {name: (np.ones((1, q.shape[1]), np.float32),
                           np.ones((q.shape[0], 1), np.float32), 1.0)})
    return _FOREIGN["adapter"]


def call_decoder_generate(fdp) -> None:
    prompts = [draw_ids(fdp) for _ in range(pick(fdp, [0, 1, 1, 2, 3]))]
    max_new = pick(fdp, [1, 2, 3, 0, -1, CONFIG.max_position_embeddings, 2**31 - 1, 10**8])
    capture = [pick(fdp, [0, 1, 2, 3, -1, 2**31 - 1]) for _ in range(pick(fdp, [0, 0, 1, 2]))]
    positions = pick(fdp, ["generated", "all", "prompt_mean", "", "ALL"])
    stop = [pick(fdp, INTS) for _ in range(pick(fdp, [0, 1, 2]))]
    calls: List[int] = []
    stop_at = pick(fdp, [None, 0, 1])

    def on_token(sequence: int, token: int) -> None:
        calls.append(token)
        if stop_at is not None and len(calls) > stop_at:
            raise _Stop()

    kwargs = dict(temperature=pick(fdp, FLOATS), top_k=pick(fdp, [0, 1, 5, -1, 2**40]),
                  top_p=pick(fdp, FLOATS), seed=pick(fdp, [0, 1, 2**64 - 1]),
                  first_stream=pick(fdp, [0, 3, 2**63]), stop_ids=stop,
                  capture_points=capture, capture_positions=positions,
                  threads=pick(fdp, THREADS),
                  on_token=on_token if fdp.ConsumeBool() else None)
    result = attempt(lambda: DECODER.generate(prompts, max_new, **kwargs))
    if result is REFUSED:
        return
    tokens, captured = result
    if len(tokens) != len(prompts) or any(len(t) > max_new for t in tokens) or any(
            not 0 <= t < CONFIG.vocab_size for seq in tokens for t in seq):
        raise Finding(f"generate gave tokens {tokens} for {len(prompts)} prompts, "
                      f"max_new_tokens={max_new}, vocabulary {CONFIG.vocab_size}")


def call_lora_adapter(fdp) -> None:
    """LoraAdapter(model, updates, biases) with names real and made up, and arrays of any kind;
    one that is built must then run."""
    names = list(MODEL._checkpoint.weights) + [
        "lm_head.weight", "model.layers.1.self_attn.q_proj.weight",
        "model.layers.0.self_attn.q_proj.bias", "model.layers.-1.mlp.up_proj.weight",
        "model.layers.99999999999999999999.self_attn.k_proj.bias", "model.layers.0.",
        "model.layers..x", ""]
    shapes = dict(infermode.checkpoints.hf.weight_names(CONFIG))
    updates, biases = {}, {}
    for _ in range(pick(fdp, [0, 1, 2])):
        name = pick(fdp, names)
        # A vector's "factors" are drawn as if it were a (n, 1) matrix: refused either way.
        out_dim, in_dim = (shapes.get(name, (3, 5)) + (1,))[:2]
        rank = pick(fdp, [1, 2, 0])
        fit = fdp.ConsumeBool()
        a = draw_array(fdp, (rank, in_dim) if fit else None)
        b = draw_array(fdp, (out_dim, rank) if fit else None)
        updates[name] = (a, b, pick(fdp, FLOATS))
    for _ in range(pick(fdp, [0, 0, 1])):
        name = pick(fdp, names)
        biases[name] = draw_array(fdp, shapes.get(name) if fdp.ConsumeBool() else None)
    arrays = [x for t in updates.values() for x in t[:2]] + list(biases.values())
    adapter = attempt(lambda: _core.LoraAdapter(DECODER, updates, biases), *arrays)
    if adapter is REFUSED:
        return
    logits = DECODER.forward(np.zeros((1, 2), np.int32), 1, False, adapter=adapter)
    if logits.shape != (1, 2, CONFIG.vocab_size):
        raise Finding(f"forward with an adapter gave logits {logits.shape}")


def call_decoder_init(fdp) -> None:
    """A Decoder from the tiny model's config with fields bent (zero, negative, past int32 and
    int64) and its tensors swapped for arrays of other kinds; one that is built must run."""
    config = infermode.llm._core_config(CONFIG)
    for _ in range(pick(fdp, [0, 1, 2])):
        key = pick(fdp, [k for k, v in config.items() if isinstance(v, int) and
                         not isinstance(v, bool)])
        config[key] = pick(fdp, INTS + [2**62 + 2, 3, 4, 6])
    for key in ("rms_norm_eps", "rope_theta"):
        if fdp.ConsumeProbability() < 0.1:
            config[key] = pick(fdp, FLOATS)
    tensors = {n: np.ascontiguousarray(a, dtype=np.float32)
               for n, a in MODEL._checkpoint.weights.items()}
    for _ in range(pick(fdp, [0, 0, 1, 2])):
        name = pick(fdp, sorted(tensors))
        tensors[name] = draw_array(fdp, tensors[name].shape if fdp.ConsumeBool() else None)
    bfloat16 = [pick(fdp, sorted(tensors)) for _ in range(pick(fdp, [0, 0, 1]))]
    quantized = {pick(fdp, sorted(tensors)): pick(fdp, FORMATS + ["q5_0"])
                 for _ in range(pick(fdp, [0, 0, 1]))}
    stack = fdp.ConsumeBool()
    decoder = attempt(lambda: _core.Decoder(config, tensors, bfloat16, quantized, stack),
                      *tensors.values())
    if decoder is REFUSED:
        return
    decoder.forward(np.zeros((1, 1), np.int32), 1, False)


# ---------------------------------------------------------------------------- the public API


def call_causal_lm(fdp) -> None:
    """CausalLM.forward / generate with ids as a caller may pass them: lists, nested lists,
    arrays of any dtype and shape, torch tensors, out-of-range and huge ids."""
    kind = pick(fdp, ["list", "nested", "array", "torch", "text"])
    if kind == "list":
        ids: Any = draw_ids(fdp)
    elif kind == "nested":
        ids = [draw_ids(fdp) for _ in range(pick(fdp, [0, 1, 2]))]
    elif kind == "text":
        ids = [pick(fdp, ["", "hello", "w5 w6", "\udcff"]) for _ in range(pick(fdp, [1, 2]))]
    else:
        ids = draw_array(fdp)
        if ids.ndim > 1 and int(np.prod(ids.shape[:-1], dtype=object)) > MAX_ELEMENTS:
            return  # billions of prompts: work asked for, not an error to refuse
        ids = maybe_torch(fdp, ids) if kind == "torch" else ids
    if fdp.ConsumeBool():
        last_only = fdp.ConsumeBool()
        attempt(lambda: MODEL.forward(ids, last_only=last_only), as_numpy(ids))
    else:
        max_new = pick(fdp, [1, 2, 0, 10**9])
        capture = [pick(fdp, [0, "embed", "final_norm", 5, -1])] if fdp.ConsumeBool() else None
        attempt(lambda: MODEL.generate(ids, max_new_tokens=max_new, capture=capture),
                as_numpy(ids))


CALLS: List[Callable[[Any], None]] = [
    call_rms_norm, call_matmul, call_sum, call_quantize, call_dequantize, call_quantized_matmul,
    call_decoder_forward, call_decoder_generate, call_lora_adapter, call_decoder_init,
    call_causal_lm,
]


test_one_input = _harness.dispatch(CALLS)


if __name__ == "__main__":
    np.seterr(all="ignore")
    _harness.fuzz(test_one_input)
