#!/usr/bin/env python3
"""Decoder LLM speed: infermode's CausalLM against transformers eager, Qwen2.5-0.5B shape.

    python benchmarks/decode.py                          # ~5 min on 2 threads, both dtypes
    python benchmarks/decode.py --dtypes float32         # one dtype
    python benchmarks/decode.py --quick                  # smoke run: a 4-layer model, < 1 min

The model: Qwen2.5-0.5B's shape (hidden 896, 24 layers, 14 heads, 2 KV heads, intermediate 4864,
vocab 151936, tied embeddings, rope_theta 1e6) with random weights, built once by transformers
and saved with `save_pretrained` under <out>/models/ (a float32 copy, and the same weights rounded
to bfloat16); later runs reuse it. Both engines load the same directory: infermode with
`CausalLM.from_pretrained(dir, dtype=..., threads=...)`, transformers with
`Qwen2ForCausalLM.from_pretrained(dir, dtype=..., attn_implementation="eager")` and run under
`torch.inference_mode()` with `torch.set_num_threads(threads)`.

What is measured, per dtype:
* Decode tokens/s at batch 1 and batch 8 (prompts of 16 random tokens, greedy, every sequence
  generating exactly N = --new-tokens tokens: `stop=[]` for infermode, `min_new_tokens=N` for
  transformers). Each engine's generate is timed with N new tokens and with 1, back to back; the
  difference is the N-1 decode steps alone, so prefill, the first token and the per-call setup
  cancel out: decode tok/s = batch * (N - 1) / (t(N) - t(1)).
* Prefill tokens/s at 512 tokens, batch 1: one forward pass that ends with the logits of the last
  position, as a generation's prefill needs (`model.forward(ids, last_only=True)` against
  `model(ids, logits_to_keep=1)`): the same work for both, and without the LM head over every
  position, which would add a quarter to the FLOPs at this shape for logits nobody reads.
* The read bandwidth of the machine, measured in the same run (`im.ops.sum` over a float32
  buffer of 1 GiB, which no cache holds) before and after every timed series, and the decode
  roofline it implies: bandwidth / weight bytes read per token. Each decode series is held to
  the mean of the two probes around it: the bandwidth this shared machine gives swings between
  ~33 and ~57 GB/s from one minute to the next, so a probe taken elsewhere in the repetition can
  put a decode rate above 100% of "its" roofline. The weight bytes are every parameter at the
  dtype's size, the tied embedding counted once (decode reads it whole as the LM head), plus the
  one embedding row the lookup reads. The KV cache (~1 MB at these lengths) is left out. Batch 8
  reads the weights once per step for all 8 sequences, so its roofline is 8x batch 1's.
* The cost of capturing three layers while decoding (blocks 5, 11 and 23 at full size), infermode
  only: the same batch-1 decode with `capture=[...]`, as the % its decode step time grows. Each
  repetition's pair runs back to back, so the cost is the median of the per-repetition ratios.
* A diagnostic: the time of one forward pass over a single token (no KV cache, no loop), which
  separates the engine's per-token work from its generation loop.
* A check, after the timing: infermode's greedy tokens at batch 1 against transformers computing
  in float32 on the same weights (see `token_agreement` for why float32 also for bfloat16).

How it runs: one process, same threads for both engines, warm (every call runs once untimed
first). The dtypes run one after another (only one dtype's models are in memory at a time: ~5 GB
resident in float32, both engines mapping the weight file). Within a dtype, each of --repeats repetitions runs every case in turn, and inside a
case the engines in an order rotated every repetition, so a disturbance from another process lands
on all of them alike. Reported: medians, min-max over the repetitions (a wide min-max means the
machine was busy: it is shown, not hidden), infermode / transformers ratios, and the targets of
issue 10, each marked met or MISSED (reported, never asserted).

infermode dtypes it does not support yet are skipped with the reason it gives (a ValueError
saying "not supported"); transformers still runs them, so its figures are there to compare later.

Writes decode.json (machine, settings, every timing) and decode.png to --out (decode-quick.* for
--quick, so a smoke run never overwrites real results).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

import infermode as im
from _machine import RESULTS, machine_info

GIB = 1024**3
CAPTURE = ["blocks.5.resid_post", "blocks.11.resid_post", "blocks.23.resid_post"]
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

# Issue 10's "Performance to reach", per dtype: (metric, comparison, threshold). Reported only.
TARGETS = {
    "float32": [("decode_b1", "of_roofline", 0.90), ("decode_b1", "vs_transformers", 1.10),
                ("decode_b8", "vs_transformers", 1.50), ("prefill", "vs_transformers", 1.15)],
    "bfloat16": [("decode_b1", "of_roofline", 0.85), ("decode_b1", "vs_transformers", 2.00),
                 ("decode_b8", "vs_transformers", 1.50), ("prefill", "vs_transformers", 1.50)],
}
TARGET_CAPTURE_COST = 0.03  # capturing 3 layers may slow batch-1 decode by at most this fraction


@dataclass(frozen=True)
class Shape:
    """The model and the workload: Qwen2.5-0.5B's shape, or a small one for --quick."""

    name: str
    layers: int
    vocab: int
    new_tokens: int
    prompt_len: int
    prefill_len: int
    batch: int
    read_bytes: int

    def config(self):
        from transformers import Qwen2Config

        return Qwen2Config(
            hidden_size=896, num_hidden_layers=self.layers, num_attention_heads=14,
            num_key_value_heads=2, intermediate_size=4864, vocab_size=self.vocab,
            tie_word_embeddings=True, max_position_embeddings=32768, rope_theta=1e6,
            rms_norm_eps=1e-6)


FULL = Shape("qwen2_05b_random", layers=24, vocab=151936, new_tokens=32, prompt_len=16,
             prefill_len=512, batch=8, read_bytes=GIB)
# The smoke model has 4 blocks: it captures three of them, as the full run captures 5, 11 and 23.
QUICK = Shape("qwen2_quick_random", layers=4, vocab=8192, new_tokens=8, prompt_len=16,
              prefill_len=128, batch=8, read_bytes=GIB // 4)
QUICK_CAPTURE = ["blocks.0.resid_post", "blocks.2.resid_post", "blocks.3.resid_post"]


# --------------------------------------------------------------------------------------------
# The model on disk


def ensure_models(root: Path, shape: Shape, dtypes: List[str]) -> Dict[str, Path]:
    """The checkpoint directory of each dtype, built once with a fixed seed and then reused.

    Every dtype is the same random model (bfloat16 is float32 rounded), so both dtypes generate
    from the same weights. A directory is written under a temporary name and renamed when
    complete: an interrupted build is never mistaken for a model.
    """
    dirs = {d: root / f"{shape.name}_{d}" for d in dtypes}
    missing = [d for d in TORCH_DTYPES if d in dtypes and not (dirs[d] / "config.json").exists()]
    if not missing:
        return dirs
    from transformers import Qwen2ForCausalLM

    print(f"building {shape.name} ({', '.join(missing)}) under {root} — once; later runs reuse "
          "it", file=sys.stderr, flush=True)
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(shape.config()).eval()
    for dtype in missing:  # float32 first: bfloat16 is a rounding of it, made in place
        model.to(TORCH_DTYPES[dtype])
        tmp = dirs[dtype].with_name(dirs[dtype].name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        shutil.rmtree(dirs[dtype], ignore_errors=True)  # a leftover without config.json
        os.replace(tmp, dirs[dtype])
    del model
    gc.collect()
    # The fresh files are still dirty in the page cache: write them back now, not while timing.
    os.sync()
    return dirs


# --------------------------------------------------------------------------------------------
# Engines: the two models of one dtype behind the same three calls


class InfermodeEngine:
    name = "infermode"

    def __init__(self, path: Path, dtype: str, threads: int) -> None:
        self.model = im.CausalLM.from_pretrained(path, dtype=dtype, threads=threads)

    def generate(self, prompts: np.ndarray, n: int, capture: Optional[List[str]] = None):
        out = self.model.generate(prompts.tolist(), max_new_tokens=n, temperature=0.0, stop=[],
                                  capture=capture)
        return out.token_ids

    def forward(self, ids: np.ndarray, last_only: bool = False):
        return self.model.forward(ids, last_only=last_only)


class TransformersEngine:
    name = "transformers"

    def __init__(self, path: Path, dtype: str) -> None:
        from transformers import Qwen2ForCausalLM

        self.model = Qwen2ForCausalLM.from_pretrained(
            path, dtype=TORCH_DTYPES[dtype], attn_implementation="eager").eval()

    def generate(self, prompts: np.ndarray, n: int, capture=None):
        ids = torch.from_numpy(prompts.astype(np.int64))
        with torch.inference_mode():
            # The random model has no end-of-sequence token; min_new_tokens makes sure no
            # sequence stops early anyway, so every run does exactly n steps.
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                      max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                      pad_token_id=0)
        return out[:, ids.shape[1]:].tolist()

    def forward(self, ids: np.ndarray, last_only: bool = False):
        with torch.inference_mode():
            return self.model(torch.from_numpy(ids.astype(np.int64)),
                              logits_to_keep=1 if last_only else 0).logits

    def weight_bytes_per_token(self) -> int:
        """Every parameter once (parameters() yields the tied embedding once) plus the embedding
        row the lookup reads."""
        params = list(self.model.parameters())
        size = params[0].element_size()
        return sum(p.numel() for p in params) * size + self.model.config.hidden_size * size


# --------------------------------------------------------------------------------------------
# Timed calls


@dataclass
class Series:
    """One engine on one case: named calls, run back to back once per repetition and timed."""

    engine: str
    calls: Dict[str, Callable[[], object]]
    iters: int = 1                                        # a call repeated this many times per run
    seconds: Dict[str, List[float]] = field(default_factory=dict)  # per-call time, per repetition
    read_gbps: List[float] = field(default_factory=list)  # bandwidth around each run (ReadProbe)

    def run(self) -> None:
        for name, fn in self.calls.items():
            start = time.perf_counter()
            for _ in range(self.iters):
                fn()
            self.seconds.setdefault(name, []).append((time.perf_counter() - start) / self.iters)


@dataclass
class Case:
    label: str
    series: List[Series]


class ReadProbe:
    """The machine's DRAM read bandwidth now: `im.ops.sum` over a buffer no cache holds."""

    def __init__(self, nbytes: int, threads: int, iters: int = 3) -> None:
        # np.ones writes every page: a never-touched (calloc'd) buffer would read the shared
        # zero page, which every cache holds.
        self.buf = np.ones(nbytes // 4, dtype=np.float32)
        self.threads = threads
        self.iters = iters
        self.gbps: List[float] = []   # every probe of the run, in order

    def __call__(self) -> float:
        start = time.perf_counter()
        for _ in range(self.iters):
            im.ops.sum(self.buf, threads=self.threads)
        gbps = self.iters * self.buf.nbytes / (time.perf_counter() - start) / 1e9
        self.gbps.append(gbps)
        return gbps


def build_cases(engines: Dict[str, object], shape: Shape, capture: List[str]) -> List[Case]:
    """Every case of one dtype, in the order a repetition runs them."""
    rng = np.random.default_rng(0)
    vocab = shape.vocab
    one = rng.integers(0, vocab, size=(1, shape.prompt_len), dtype=np.int32)
    batch = rng.integers(0, vocab, size=(shape.batch, shape.prompt_len), dtype=np.int32)
    long = rng.integers(0, vocab, size=(1, shape.prefill_len), dtype=np.int32)
    token = rng.integers(0, vocab, size=(1, 1), dtype=np.int32)
    n = shape.new_tokens

    def decode(engine, prompts, cap=None) -> Dict[str, Callable[[], object]]:
        return {"n": lambda: engine.generate(prompts, n, cap),
                "one": lambda: engine.generate(prompts, 1, cap)}

    b1 = Case("decode_b1", [])
    b8 = Case("decode_b8", [])
    prefill = Case("prefill", [])
    forward1 = Case("forward_1", [])
    for name, engine in engines.items():
        b1.series.append(Series(name, decode(engine, one)))
        if name == "infermode":
            # Right beside the plain decode, so each repetition gives a paired comparison.
            b1.series.append(Series("infermode+capture", decode(engine, one, capture)))
        b8.series.append(Series(name, decode(engine, batch)))
        prefill.series.append(Series(name, {"forward": lambda e=engine: e.forward(long, True)}))
        forward1.series.append(Series(name, {"forward": lambda e=engine: e.forward(token)},
                                      iters=3))
    return [b1, b8, prefill, forward1]


def warm(cases: List[Case]) -> None:
    """One untimed run of every call: page faults on the mapped weights, first allocations."""
    for case in cases:
        for series in case.series:
            for fn in series.calls.values():
                fn()


def measure(cases: List[Case], repeats: int, dtype: str, probe: ReadProbe) -> None:
    """`repeats` repetitions; inside each, every case's engines in turn (rotated order), with a
    bandwidth probe between every two series (~0.1 s each)."""
    for rep in range(repeats):
        gc.collect()
        gc.disable()  # a collection in the middle of a run would be charged to whoever runs
        try:
            before = probe()
            for case in cases:
                shift = rep % len(case.series)
                for series in case.series[shift:] + case.series[:shift]:
                    series.run()
                    after = probe()
                    series.read_gbps.append((before + after) / 2)
                    before = after
        finally:
            gc.enable()
        print(f"  {dtype}: repetition {rep + 1}/{repeats} done", file=sys.stderr, flush=True)


def token_agreement(engines: Dict[str, object], shape: Shape, path: Path,
                    dtype: str) -> Optional[dict]:
    """Greedy tokens of infermode and of transformers on the batch-1 prompt: a fast wrong engine
    must not look like a win.

    The reference computes in float32 whatever the weights: transformers in bfloat16 rounds every
    activation to bfloat16, and the random weights give near-tied logits (top-2 gap ~0.005 against
    errors of ~0.05), so its tokens part from any float32-accumulating engine at the first one.
    For bfloat16 the reference is therefore transformers in float32 on the same rounded weights.
    """
    if "infermode" not in engines:
        return None
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, shape.vocab, size=(1, shape.prompt_len), dtype=np.int32)
    ours = engines["infermode"].generate(prompt, shape.new_tokens)[0]
    reference = engines["transformers"] if dtype == "float32" else TransformersEngine(path,
                                                                                      "float32")
    theirs = reference.generate(prompt, shape.new_tokens)[0]
    del reference
    same = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), len(ours))
    return {"identical": ours == theirs, "first_difference_at": None if ours == theirs else same,
            "reference": f"transformers float32 on the {dtype} weights",
            "infermode": ours, "transformers": theirs}


# --------------------------------------------------------------------------------------------
# Results


def _stats(values: List[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "values": values}


def summarize(dtype: str, cases: List[Case], shape: Shape, weight_bytes: int,
              probes: List[float], skipped: Optional[str], agreement: Optional[dict]) -> dict:
    """Per-repetition rates, then medians: roofline fractions and the capture cost are computed
    within each repetition (paired measurements), the engine ratios from the medians."""
    by = {c.label: {s.engine: s for s in c.series} for c in cases}
    n = shape.new_tokens

    def roofline(series: Series, batch: int) -> List[float]:
        """tok/s the bandwidth around each run allows: weights are read once per step."""
        return [batch * gbps * 1e9 / weight_bytes for gbps in series.read_gbps]

    def decode_rates(series: Series, batch: int) -> List[float]:
        steps = [tn - t1 for tn, t1 in zip(series.seconds["n"], series.seconds["one"])]
        return [batch * (n - 1) / s if s > 0 else float("nan") for s in steps]

    out = {"dtype": dtype, "infermode_skipped": skipped, "weight_bytes_per_token": weight_bytes,
           "read_gbps": _stats(probes),
           "roofline_tok_s": _stats([g * 1e9 / weight_bytes for g in probes]),
           "token_agreement": agreement, "engines": {}}
    for engine in ("infermode", "transformers"):
        if engine not in by["decode_b1"]:
            continue
        e = {}
        for label, batch in (("decode_b1", 1), ("decode_b8", shape.batch)):
            series = by[label][engine]
            rates = decode_rates(series, batch)
            roof = roofline(series, batch)
            e[label] = {**_stats(rates), "unit": "tok/s",
                        "of_roofline": _stats([r / rf for r, rf in zip(rates, roof)]),
                        "roofline_tok_s": _stats(roof), "read_gbps": series.read_gbps,
                        "seconds": series.seconds}
        e["prefill"] = {**_stats([shape.prefill_len / t for t in
                                  by["prefill"][engine].seconds["forward"]]), "unit": "tok/s",
                        "seconds": by["prefill"][engine].seconds}
        e["forward_1"] = {**_stats(by["forward_1"][engine].seconds["forward"]), "unit": "s",
                          "seconds": by["forward_1"][engine].seconds}
        out["engines"][engine] = e
    if "infermode" in out["engines"]:
        plain = decode_rates(by["decode_b1"]["infermode"], 1)
        captured = decode_rates(by["decode_b1"]["infermode+capture"], 1)
        # Step time grows by rate_plain / rate_captured - 1.
        out["capture_cost"] = _stats([p / c - 1 for p, c in zip(plain, captured)])
        out["capture_cost"]["decode_b1_tok_s"] = _stats(captured)
        out["capture_cost"]["seconds"] = by["decode_b1"]["infermode+capture"].seconds
        ours, theirs = out["engines"]["infermode"], out["engines"]["transformers"]
        for label in ("decode_b1", "decode_b8", "prefill"):
            ours[label]["vs_transformers"] = ours[label]["median"] / theirs[label]["median"]
    return out


def check_targets(result: dict) -> List[dict]:
    """Issue 10's targets against this dtype's medians: met or MISSED, never an assertion."""
    dtype = result["dtype"]
    ours = result["engines"].get("infermode")
    lines = []
    for label, kind, threshold in TARGETS[dtype]:
        if ours is None:
            value, verdict = None, "not run"
        elif kind == "of_roofline":
            value = ours[label]["of_roofline"]["median"]
            verdict = "met" if value >= threshold else "MISSED"
        else:
            value = ours[label]["vs_transformers"]
            verdict = "met" if value >= threshold else "MISSED"
        lines.append({"dtype": dtype, "metric": label, "kind": kind, "target": threshold,
                      "value": value, "verdict": verdict})
    if ours is not None:
        cost = result["capture_cost"]["median"]
        lines.append({"dtype": dtype, "metric": "capture_3_layers", "kind": "cost",
                      "target": TARGET_CAPTURE_COST, "value": cost,
                      "verdict": "met" if cost <= TARGET_CAPTURE_COST else "MISSED"})
    return lines


def _target_text(t: dict) -> str:
    names = {"decode_b1": "decode batch 1", "decode_b8": "decode batch 8",
             "prefill": "prefill", "capture_3_layers": "capturing 3 layers"}
    name = f"{t['dtype']} {names[t['metric']]}"
    if t["kind"] == "of_roofline":
        want = f"≥ {100 * t['target']:.0f}% of roofline"
        got = "—" if t["value"] is None else f"{100 * t['value']:.0f}% of roofline"
    elif t["kind"] == "vs_transformers":
        want = f"≥ {t['target']:.2f}× transformers"
        got = "—" if t["value"] is None else f"{t['value']:.2f}× transformers"
    else:
        want = f"≤ {100 * t['target']:.0f}% slower decode"
        got = f"{100 * t['value']:+.1f}% decode step time"
    return f"{name}: {got} (target {want}): {t['verdict']}"


def _rate(s: Optional[dict], scale: float = 1.0, fmt: str = "{:.1f}") -> str:
    if s is None:
        return "—"
    f = lambda v: fmt.format(v * scale)  # noqa: E731 - local formatter
    return f"{f(s['median'])} [{f(s['min'])}–{f(s['max'])}]"


def print_dtype(result: dict, shape: Shape) -> None:
    dtype = result["dtype"]
    print(f"\n{dtype}: weights {result['weight_bytes_per_token'] / 1e9:.3f} GB read per token; "
          f"read bandwidth {_rate(result['read_gbps'])} GB/s → batch-1 decode roofline "
          f"{_rate(result['roofline_tok_s'])} tok/s")
    if result["infermode_skipped"]:
        print(f"  infermode skipped: {result['infermode_skipped']}")
    header = (f"  {'measure':22} {'infermode':>24} {'of roof':>8} {'transformers':>24} "
              f"{'of roof':>8} {'im / tf':>8}")
    print(header)
    print("  " + "-" * (len(header) - 2))
    ours = result["engines"].get("infermode")
    theirs = result["engines"]["transformers"]
    rows = [("decode_b1", "decode b1 tok/s", 1.0, "{:.1f}"),
            ("decode_b8", f"decode b{shape.batch} tok/s", 1.0, "{:.1f}"),
            ("prefill", f"prefill {shape.prefill_len} tok/s", 1.0, "{:.0f}"),
            ("forward_1", "forward 1 token ms", 1e3, "{:.1f}")]
    for label, title, scale, fmt in rows:
        a = ours[label] if ours else None
        b = theirs[label]
        roof_a = f"{100 * a['of_roofline']['median']:.0f}%" if a and "of_roofline" in a else ""
        roof_b = f"{100 * b['of_roofline']['median']:.0f}%" if "of_roofline" in b else ""
        ratio = a.get("vs_transformers") if a else None
        if ratio is None and a and label == "forward_1":
            ratio = b["median"] / a["median"]  # a time: the ratio is of speeds, as above
        print(f"  {title:22} {_rate(a, scale, fmt):>24} {roof_a:>8} {_rate(b, scale, fmt):>24} "
              f"{roof_b:>8} {'' if ratio is None else f'{ratio:.2f}×':>8}")
    if ours:
        cost = result["capture_cost"]
        print(f"  capture 3 layers (infermode, batch 1): decode step time "
              f"{100 * cost['median']:+.1f}% [{100 * cost['min']:+.1f}–{100 * cost['max']:+.1f}%]"
              f", {_rate(cost['decode_b1_tok_s'])} tok/s")
        # Where a decode step's time goes: the forward pass alone (no loop, no KV cache) and
        # the time the weights take to stream at the bandwidth measured around the decode runs.
        roof_ms = 1e3 / ours["decode_b1"]["roofline_tok_s"]["median"]
        step_ms = 1e3 / ours["decode_b1"]["median"]
        print(f"  infermode per token: decode step {step_ms:.1f} ms, one-token forward "
              f"{1e3 * ours['forward_1']['median']:.1f} ms, weight read at the bandwidth "
              f"around its runs {roof_ms:.1f} ms")
    agreement = result["token_agreement"]
    if agreement is not None:
        verdict = "identical" if agreement["identical"] else (
            f"differ from token {agreement['first_difference_at']} of {shape.new_tokens} on")
        print(f"  greedy tokens, batch 1, vs {agreement['reference']}: {verdict}")


def plot(results: List[dict], shape: Shape, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a build machine
    import matplotlib.pyplot as plt

    colors = {"infermode": "tab:blue", "transformers": "tab:red"}
    panels = [("decode_b1", "decode, batch 1 (tok/s)"),
              ("decode_b8", f"decode, batch {shape.batch} (tok/s)"),
              ("prefill", f"prefill {shape.prefill_len} tokens (tok/s)")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    dtypes = [r["dtype"] for r in results]
    width = 0.35
    for ax, (label, subtitle) in zip(axes, panels):
        top, roofed = 0.0, False
        for j, engine in enumerate(("infermode", "transformers")):
            for i, r in enumerate(results):
                x = i + (j - 0.5) * width
                s = r["engines"].get(engine, {}).get(label)
                if s is None:
                    ax.text(x, 0, " skipped", rotation=90, ha="center", va="bottom", fontsize=8)
                    continue
                ax.bar([x], [s["median"]], width, color=colors[engine],
                             yerr=[[s["median"] - s["min"]], [s["max"] - s["median"]]], capsize=3,
                             label=engine if i == 0 else None)
                text = []
                if "vs_transformers" in s:
                    text.append(f"{s['vs_transformers']:.2f}×")
                if "of_roofline" in s:
                    text.append(f"{100 * s['of_roofline']['median']:.0f}% roof")
                above = s["max"]
                if "roofline_tok_s" in s:
                    # Each bar's own roofline: the bandwidth measured around its runs.
                    roof = s["roofline_tok_s"]["median"]
                    ax.hlines(roof, x - width / 2, x + width / 2, colors="k", linestyles="--",
                              linewidth=1.2,
                              label="roofline (bandwidth around the runs)" if not roofed else None)
                    roofed = True
                    above = max(above, roof)
                ax.annotate(" · ".join(text), (x, above), xytext=(0, 3),
                            textcoords="offset points", ha="center", va="bottom", fontsize=7)
                top = max(top, above)
        ax.set_xticks(range(len(dtypes)), dtypes)
        ax.set_ylim(0, top * 1.3)  # headroom for the labels and the legend
        ax.set_title(subtitle, fontsize=10)
        ax.legend(fontsize=7, loc="upper right")
        ax.grid(axis="y", alpha=0.3)
    costs = [f"{r['dtype']} {100 * r['capture_cost']['median']:+.1f}%" for r in results
             if "capture_cost" in r]
    footer = "bars: median of the repetitions; whiskers: min–max; labels: infermode / " \
             "transformers, fraction of the roofline"
    if costs:
        footer += f"; capturing 3 layers (decode step time): {', '.join(costs)}"
    fig.suptitle(title, fontsize=11)
    fig.text(0.5, 0.01, footer, ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 0.96))
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------------------------


def run_dtype(dtype: str, path: Path, shape: Shape, threads: int, repeats: int,
              capture: List[str], probe: ReadProbe) -> dict:
    """Loads both engines of one dtype, measures, and frees them before the next dtype."""
    engines: Dict[str, object] = {}
    skipped = None
    try:
        engines["infermode"] = InfermodeEngine(path, dtype, threads)
    except ValueError as exc:
        if "not supported" not in str(exc):
            raise
        skipped = str(exc)
        print(f"{dtype}: infermode skipped ({skipped}); transformers still runs",
              file=sys.stderr, flush=True)
    engines["transformers"] = TransformersEngine(path, dtype)
    weight_bytes = engines["transformers"].weight_bytes_per_token()

    cases = build_cases(engines, shape, capture)
    print(f"  {dtype}: warming up", file=sys.stderr, flush=True)
    warm(cases)
    first = len(probe.gbps)
    measure(cases, repeats, dtype, probe)
    agreement = token_agreement(engines, shape, path, dtype)  # after: its extra model is not timed
    result = summarize(dtype, cases, shape, weight_bytes, probe.gbps[first:], skipped, agreement)
    del engines, cases
    gc.collect()
    return result


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=im.cpu_info()["physical_cores"],
                        help="threads for both engines (default: physical cores, %(default)s)")
    parser.add_argument("--dtypes", default="float32,bfloat16",
                        help="comma-separated weight dtypes (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="repetitions of every case (default 3; 2 with --quick)")
    parser.add_argument("--new-tokens", type=int, default=None,
                        help="tokens generated per decode run (default 32; 8 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: a 4-layer model with an 8192 vocabulary, fewer tokens")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help="folder for the JSON and the PNG (default %(default)s)")
    parser.add_argument("--models", type=Path, default=None,
                        help="where the random checkpoints are cached (default <out>/models)")
    args = parser.parse_args(argv)
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    bad = [d for d in dtypes if d not in TORCH_DTYPES]
    if bad or not dtypes:
        parser.error(f"--dtypes: unknown {bad}; choose from {', '.join(TORCH_DTYPES)}")
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    shape = QUICK if args.quick else FULL
    if args.new_tokens is not None:
        if args.new_tokens < 2:
            parser.error("--new-tokens must be at least 2 (decode = generate(N) - generate(1))")
        shape = Shape(**{**shape.__dict__, "new_tokens": args.new_tokens})
    repeats = args.repeats or (2 if args.quick else 3)
    capture = QUICK_CAPTURE if args.quick else CAPTURE

    import transformers

    transformers.logging.set_verbosity_error()  # generate()'s notes on the random model's config
    transformers.utils.logging.disable_progress_bar()  # per-load bars would bury the table
    torch.set_num_threads(args.threads)
    import transformers

    machine = machine_info(args.threads, transformers=transformers.__version__)
    print(f"{machine['brand']} | ISA {machine['isa']} | {args.threads} threads | "
          f"torch {torch.__version__} | transformers {machine['transformers']} | "
          f"{shape.name}, {shape.layers} layers | repeats {repeats}", flush=True)

    started = time.perf_counter()
    dirs = ensure_models(args.models or args.out / "models", shape, dtypes)
    probe = ReadProbe(shape.read_bytes, args.threads)
    results = [run_dtype(d, dirs[d], shape, args.threads, repeats, capture, probe)
               for d in dtypes]
    elapsed = time.perf_counter() - started

    print(f"\nmedian [min–max] of {repeats} repetitions; prompt {shape.prompt_len} tokens, "
          f"{shape.new_tokens} new; decode = batch × (N−1) / (t(generate N) − t(generate 1)); "
          "of roof = decode rate / (batch × read bandwidth measured around its runs / weight "
          "bytes per token)")
    for r in results:
        print_dtype(r, shape)
    target_lines = [t for r in results for t in check_targets(r)]
    print()
    for t in target_lines:
        print("target:", _target_text(t))
    print(f"\ntotal {elapsed:.0f} s")

    args.out.mkdir(parents=True, exist_ok=True)
    stem = "decode-quick" if args.quick else "decode"
    report = {
        "benchmark": "decode",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).as_posix()] + (argv if argv is not None
                                                              else sys.argv[1:])),
        "machine": machine,
        "settings": {"threads": args.threads, "repeats": repeats, "quick": args.quick,
                     "dtypes": dtypes, "model": shape.__dict__, "capture": capture,
                     "model_dirs": {d: str(p) for d, p in dirs.items()},
                     "read_buffer_bytes": probe.buf.nbytes, "elapsed_s": elapsed,
                     # Another process busy during the run shows here (2 threads: load ~2).
                     "loadavg_at_end": list(os.getloadavg())},
        "targets": [{**t, "text": _target_text(t)} for t in target_lines],
        "results": results,
    }
    json_path = args.out / f"{stem}.json"
    json_path.write_text(json.dumps(report, indent=1))
    png_path = args.out / f"{stem}.png"
    plot(results, shape, png_path,
         f"infermode vs transformers eager — {shape.name} ({shape.layers} layers), "
         f"{machine['brand']}, {args.threads} threads, median of {repeats}")
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
