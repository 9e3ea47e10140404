#!/usr/bin/env python3
"""f32 GEMM and GEMV: infermode's kernels on every ISA path this CPU runs, against torch.matmul.

    python benchmarks/matmul.py                      # ~1 min on 2 threads (AMD EPYC)
    python benchmarks/matmul.py --quick              # smoke run: smaller shapes, 3 repeats
    python benchmarks/matmul.py --threads 1 --out /tmp/bench

What is compared, and how:
* GEMM: 2048x2048x2048 with B stored [k, n], and the prefill shape of a Qwen2.5-0.5B MLP
  projection (M=512 tokens, K=896, N=4864) with the weight stored as nn.Linear does, W[n, k].
* GEMV (batch-1 decode, M=1): K=896 N=4864, K=4864 N=896 and the LM head K=896 N=151936, the
  weight stored W[n, k]; both engines compute x @ W.T from the same memory (`im.ops.matmul(x,
  W.T)` and `torch.matmul(tx, tW.t())`, no copies). A GEMV streams the whole weight once, so its
  speed is a bandwidth: weight bytes / time, shown next to the read bandwidth the machine gives
  in the same run, measured with `im.ops.sum` (i) on the weight itself, same bytes, same cache
  level, and (ii) on a 1 GiB buffer, which no cache holds (DRAM).
* GEMV "cold": the same shape as decode really sees it. A decoder reads every layer's weights
  once per token, so a weight is never in cache when its turn comes; here each call reads the
  next of enough copies (>= 512 MiB in all) that none is. The 17 MB weights of the warm rows fit
  the L3 cache, so warm rows measure the cache's bandwidth and cold rows the DRAM's.
* One process, the same thread count for everyone (`threads=` and `torch.set_num_threads`), warm
  (a calibration pass first), outputs preallocated for both engines so the kernels are timed and
  not the allocator. Within each repetition the engines of a shape run one after another, in an
  order rotated every repetition, so a disturbance from another process lands on all of them
  alike. A run is several back-to-back calls lasting ~--run-time seconds; the table gives the
  median of the runs and their min-max (a wide min-max means the machine was busy: it is shown,
  not hidden).
* ISA paths: `infermode._core.set_isa` switches the whole process between runs. A path whose
  single call would take longer than --max-call-s (the scalar reference on a big GEMM takes
  ~40 s) is skipped for that shape, with its estimated time recorded in the JSON.

Writes matmul.json (machine, settings, every repeat) and matmul.png to --out
(matmul-quick.* for --quick, so a smoke run never overwrites real results).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
import torch

import infermode as im
from _machine import RESULTS, machine_info
from infermode import _core

GIB = 1024**3
# The targets the closing note reports against; the benchmark reports them, it does not assert.
TARGET_GEMM_VS_TORCH = 0.90   # infermode GEMM at 2048^3, as a fraction of torch.matmul's speed
TARGET_GEMV_VS_READ = 0.85    # GEMV weight bytes/s, as a fraction of the same-size read bandwidth


@dataclass
class Engine:
    """One contender on one shape: a callable timed in runs of `iters` back-to-back calls."""

    name: str                    # "infermode/avx512", "torch", "read"
    isa: Optional[str]           # ISA cap set before each run (None: torch, which ignores it)
    fn: Callable[[], object]
    out: Optional[np.ndarray] = None   # the preallocated result, checked against torch's
    iters: int = 1
    seconds: List[float] = field(default_factory=list)  # per-call time of each run
    skipped: Optional[str] = None
    max_rel_err: Optional[float] = None


@dataclass
class Case:
    """One shape. kind: "gemm", "gemv" or "read" (a bandwidth probe on its own)."""

    label: str
    kind: str
    m: int
    k: int
    n: int
    layout: str                  # how B is stored: "B[k,n]" or "W[n,k] (x @ W.T)"
    nbytes: int                  # GEMV: weight bytes; read: buffer bytes; GEMM: B's bytes
    engines: List[Engine]
    a: Optional[np.ndarray] = None   # the operands, kept for the probe of slow paths
    b: Optional[np.ndarray] = None

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n


# --------------------------------------------------------------------------------------------
# Shapes and engines


def _shapes(quick: bool) -> dict:
    if quick:
        return {
            "gemm": [(512, 512, 512, False), (64, 896, 4864, True)],
            "gemv": [(896, 4864), (4864, 896), (896, 32768)],
            "dram_bytes": GIB // 4,
        }
    return {
        # (M, K, N, B stored as a Linear weight W[n, k])
        "gemm": [(2048, 2048, 2048, False), (512, 896, 4864, True)],
        # (K, N) at M = 1; the last is Qwen2.5-0.5B's LM head
        "gemv": [(896, 4864), (4864, 896), (896, 151936)],
        "dram_bytes": GIB,
    }


def _matmul_isas() -> List[str]:
    """ISA caps worth timing, best first: one per distinct matmul implementation.

    A cap with no matmul of its own (e.g. amx for f32) runs the next one down, which is already
    on the list.
    """
    seen, caps = set(), []
    for cap in reversed(list(_core.supported_isas())):
        impl = _core.kernel_isas(cap)["matmul_f32"]
        if impl not in seen:
            seen.add(impl)
            caps.append(cap)
    return caps


def _matmul_engines(a: np.ndarray, b: np.ndarray, isas: List[str], threads: int) -> List[Engine]:
    """infermode on each ISA and torch, all computing a @ b from the same memory."""
    m, n = a.shape[0], b.shape[1]
    engines = []
    for isa in isas:
        out = np.empty((m, n), dtype=np.float32)
        engines.append(Engine(
            f"infermode/{isa}", isa,
            lambda out=out: im.ops.matmul(a, b, out=out, threads=threads), out=out))
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    tout = torch.empty((m, n), dtype=torch.float32)
    engines.append(Engine("torch", None, lambda: torch.matmul(ta, tb, out=tout), out=tout.numpy()))
    return engines


def _read_engine(buf: np.ndarray, isa: str, threads: int) -> Engine:
    return Engine("read", isa, lambda: im.ops.sum(buf, threads=threads))


def _rotating(calls: List[Callable[[], object]]) -> Callable[[], object]:
    """One call of the next function in the list, round robin."""
    state = {"i": 0}

    def call() -> object:
        i = state["i"]
        state["i"] = (i + 1) % len(calls)
        return calls[i]()

    return call


def _cold_gemv_case(rng, x: np.ndarray, w: np.ndarray, total_bytes: int, isas: List[str],
                    threads: int) -> Case:
    """The same GEMV as in decode: each call reads a different copy of the weight, enough copies
    that none is still in cache when its turn comes again (a decoder's layers are too)."""
    copies = [w] + [rng.standard_normal(w.shape, dtype=np.float32)
                    for _ in range(max(1, -(-total_bytes // w.nbytes)) - 1)]
    n = w.shape[0]
    engines = []
    for isa in isas:
        out = np.empty((1, n), dtype=np.float32)
        engines.append(Engine(f"infermode/{isa}", isa, _rotating(
            [lambda c=c, out=out: im.ops.matmul(x, c.T, out=out, threads=threads) for c in copies])))
    tx, tout = torch.from_numpy(x), torch.empty((1, n), dtype=torch.float32)
    tcopies = [torch.from_numpy(c) for c in copies]
    engines.append(Engine("torch", None, _rotating(
        [lambda c=c: torch.matmul(tx, c.t(), out=tout) for c in tcopies])))
    flat = [c.reshape(-1) for c in copies]
    engines.append(Engine("read", isas[0], _rotating(
        [lambda c=c: im.ops.sum(c, threads=threads) for c in flat])))
    k = w.shape[1]
    return Case(f"GEMV M=1 K={k} N={n} cold", "gemv", 1, k, n,
                f"W[n,k] (x @ W.T), {len(copies)} copies in turn", w.nbytes, engines)


def build_cases(quick: bool, threads: int, isas: List[str]) -> List[Case]:
    rng = np.random.default_rng(0)
    shapes = _shapes(quick)
    best = isas[0]
    cases = []
    for m, k, n, linear in shapes["gemm"]:
        a = rng.standard_normal((m, k), dtype=np.float32)
        if linear:
            w = rng.standard_normal((n, k), dtype=np.float32)
            b, layout = w.T, "W[n,k] (x @ W.T)"
        else:
            b, layout = rng.standard_normal((k, n), dtype=np.float32), "B[k,n]"
        cases.append(Case(f"GEMM M={m} K={k} N={n}", "gemm", m, k, n, layout, b.nbytes,
                          _matmul_engines(a, b, isas, threads), a=a, b=b))
    for k, n in shapes["gemv"]:
        x = rng.standard_normal((1, k), dtype=np.float32)
        w = rng.standard_normal((n, k), dtype=np.float32)
        engines = _matmul_engines(x, w.T, isas, threads)
        # The weight itself, read flat: exactly the bytes the GEMV streams, from the same place.
        engines.append(_read_engine(w.reshape(-1), best, threads))
        cases.append(Case(f"GEMV M=1 K={k} N={n}", "gemv", 1, k, n, "W[n,k] (x @ W.T)",
                          w.nbytes, engines))
        if w.nbytes < shapes["dram_bytes"] // 2:
            cases.append(_cold_gemv_case(rng, x, w, shapes["dram_bytes"] // 2, isas, threads))
    # np.ones writes every page: a never-touched (calloc'd) buffer would read the shared zero page.
    dram = np.ones(shapes["dram_bytes"] // 4, dtype=np.float32)
    cases.append(Case(f"read {dram.nbytes / GIB:g} GiB (DRAM)", "read", 0, 0, 0, "", dram.nbytes,
                      [_read_engine(dram, best, threads)]))
    return cases


# --------------------------------------------------------------------------------------------
# Timing


def _time_run(engine: Engine, iters: int) -> float:
    """Seconds per call over `iters` back-to-back calls."""
    if engine.isa is not None:
        _core.set_isa(engine.isa)
    fn = engine.fn
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) / iters


def _probe_seconds(case: Case, engine: Engine, threads: int) -> float:
    """Estimated time of one call, without paying for a slow one: large-M GEMMs are timed on a
    slice of rows and scaled (the work is linear in M)."""
    if case.kind == "gemm" and engine.name != "torch" and case.m >= 64:
        rows = max(8, case.m // 64)
        a = case.a[:rows]
        out = np.empty((rows, case.n), dtype=np.float32)
        _core.set_isa(engine.isa)
        im.ops.matmul(a, case.b, out=out, threads=threads)  # warm
        start = time.perf_counter()
        im.ops.matmul(a, case.b, out=out, threads=threads)
        return (time.perf_counter() - start) * case.m / rows
    return _time_run(engine, 1)


def calibrate(cases: List[Case], threads: int, run_time: float, max_call_s: float) -> None:
    """Warm every engine, skip the ones too slow to time, and size each run to ~run_time."""
    for case in cases:
        for engine in case.engines:
            estimate = _probe_seconds(case, engine, threads)
            if estimate > max_call_s and engine.name.startswith("infermode/"):
                engine.skipped = (f"one call takes ~{estimate:.1f} s (> --max-call-s "
                                  f"{max_call_s:g}); not timed")
                continue
            per_call = _time_run(engine, 1)  # the first call may have paid page faults
            iters = 1
            while per_call * iters < run_time / 4 and iters < 1 << 20:
                iters *= 2
                per_call = _time_run(engine, iters)
            engine.iters = max(1, round(run_time / max(per_call, 1e-9)))
        _check_results(case)


def _check_results(case: Case) -> None:
    """Max |infermode - torch| / max |torch|: a fast wrong kernel must not look like a win."""
    ref = next((e.out for e in case.engines if e.name == "torch"), None)
    if ref is None:
        return
    scale = float(np.max(np.abs(ref))) or 1.0
    for engine in case.engines:
        if engine.out is not None and engine.name != "torch" and engine.skipped is None:
            engine.max_rel_err = float(np.max(np.abs(engine.out - ref))) / scale


def measure(cases: List[Case], repeats: int, progress: bool = True) -> None:
    """`repeats` repetitions; inside each, every shape's engines run in turn (rotated order)."""
    gc.collect()
    gc.disable()  # a collection in the middle of a run would be charged to whoever was running
    try:
        for rep in range(repeats):
            for case in cases:
                active = [e for e in case.engines if e.skipped is None]
                shift = rep % len(active)
                for engine in active[shift:] + active[:shift]:
                    engine.seconds.append(_time_run(engine, engine.iters))
            if progress:
                print(f"  repetition {rep + 1}/{repeats} done", file=sys.stderr, flush=True)
    finally:
        gc.enable()


# --------------------------------------------------------------------------------------------
# Results


def summarize(cases: List[Case]) -> List[dict]:
    """One row per (shape, engine), with the derived rates and the ratios the report needs."""
    dram = next(c for c in cases if c.kind == "read")
    dram_gbps = dram.nbytes / statistics.median(dram.engines[0].seconds) / 1e9
    rows = []
    for case in cases:
        medians = {e.name: statistics.median(e.seconds) for e in case.engines if e.seconds}
        read_gbps = case.nbytes / medians["read"] / 1e9 if "read" in medians else None
        for engine in case.engines:
            row = {
                "shape": case.label, "kind": case.kind, "m": case.m, "k": case.k, "n": case.n,
                "b_layout": case.layout, "bytes": case.nbytes, "engine": engine.name,
                "isa": engine.isa if engine.name != "torch" else None,
                "iters_per_run": engine.iters, "seconds": engine.seconds,
                "skipped": engine.skipped, "max_rel_err_vs_torch": engine.max_rel_err,
            }
            if engine.seconds:
                med = medians[engine.name]
                row.update(median_s=med, min_s=min(engine.seconds), max_s=max(engine.seconds))
                if case.kind in ("gemv", "read"):
                    row["gbps"] = case.nbytes / med / 1e9
                if engine.name != "read":
                    row["gflops"] = case.flops / med / 1e9
                    row["speed_vs_torch"] = medians["torch"] / med
                    if case.kind == "gemv":
                        row["frac_same_size_read"] = row["gbps"] / read_gbps
                        row["frac_dram_read"] = row["gbps"] / dram_gbps
            rows.append(row)
    return rows


def _cell(row: dict, key: str, kind: str) -> str:
    """A table cell: a rate, a ratio (×) or a percentage; "—" where it does not apply."""
    value = row.get(key)
    if value is None:
        return "—"
    if kind == "ratio":
        return f"{value:.2f}×"
    if kind == "percent":
        return f"{100 * value:.0f}%"
    return f"{value:.1f}"


def print_table(rows: List[dict]) -> None:
    header = (f"{'shape':26} {'engine':17} {'median ms':>10} {'min–max ms':>19} "
              f"{'GFLOP/s':>8} {'GB/s':>7} {'vs torch':>8} {'of read':>8} {'of DRAM':>8}")
    print(header)
    print("-" * len(header))
    last = None
    for r in rows:
        shape = r["shape"] if r["shape"] != last else ""
        last = r["shape"]
        if r["skipped"]:
            print(f"{shape:26} {r['engine']:17} skipped: {r['skipped']}")
            continue
        spread = f"{1e3 * r['min_s']:.3f}–{1e3 * r['max_s']:.3f}"
        print(f"{shape:26} {r['engine']:17} {1e3 * r['median_s']:10.3f} {spread:>19} "
              f"{_cell(r, 'gflops', 'rate'):>8} {_cell(r, 'gbps', 'rate'):>7} "
              f"{_cell(r, 'speed_vs_torch', 'ratio'):>8} "
              f"{_cell(r, 'frac_same_size_read', 'percent'):>8} "
              f"{_cell(r, 'frac_dram_read', 'percent'):>8}")
    print("vs torch = torch's median time / this engine's (1.00× = as fast as torch.matmul). "
          "GB/s = weight bytes / time.\nof read, of DRAM = that GB/s as a fraction of the read "
          "bandwidth, measured in this run, of the same bytes / of a buffer no cache holds.")


def targets(rows: List[dict], best_isa: str) -> List[str]:
    """The report's two targets, checked on the best ISA path (reported, not asserted)."""
    lines = []
    best = f"infermode/{best_isa}"
    for r in rows:
        if r["engine"] != best or "median_s" not in r:
            continue
        if r["kind"] == "gemm" and r["m"] == r["k"] == r["n"]:
            verdict = "met" if r["speed_vs_torch"] >= TARGET_GEMM_VS_TORCH else "MISSED"
            lines.append(f"{r['shape']}: {100 * r['speed_vs_torch']:.0f}% of torch.matmul "
                         f"(target ≥ {100 * TARGET_GEMM_VS_TORCH:.0f}%): {verdict}")
        elif r["kind"] == "gemv":
            verdict = "met" if r["frac_same_size_read"] >= TARGET_GEMV_VS_READ else "MISSED"
            lines.append(f"{r['shape']}: {100 * r['frac_same_size_read']:.0f}% of the same-size "
                         f"read bandwidth (target ≥ {100 * TARGET_GEMV_VS_READ:.0f}%): {verdict}")
    return lines


def plot(rows: List[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a build machine
    import matplotlib.pyplot as plt

    # Fixed order and colors, skipped engines included, so a slot left empty reads as "skipped".
    engines = list(dict.fromkeys(r["engine"] for r in rows if r["engine"] != "read"))
    palette = iter(["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown"])
    colors = {name: ("tab:red" if name == "torch" else next(palette)) for name in engines}
    colors["read"] = "0.6"
    fig, (ax_gemm, ax_gemv) = plt.subplots(1, 2, figsize=(14, 5.5))
    panels = [(ax_gemm, "gemm", "gflops", "GFLOP/s", "GEMM, f32 (label: speed vs torch)"),
              (ax_gemv, "gemv", "gbps", "weight GB/s",
               "GEMV M=1, f32 (label: fraction of the same-size read)")]
    for ax, kind, key, ylabel, subtitle in panels:
        shapes = list(dict.fromkeys(r["shape"] for r in rows if r["kind"] == kind))
        names = engines + (["read"] if kind == "gemv" else [])
        width = 0.8 / len(names)
        top = 0.0
        for j, name in enumerate(names):
            xs, vals, lo, hi, labels = [], [], [], [], []
            for i, shape in enumerate(shapes):
                r = next((r for r in rows if r["shape"] == shape and r["engine"] == name), None)
                x = i + (j - (len(names) - 1) / 2) * width
                if r is None:
                    continue
                if "median_s" not in r:
                    ax.text(x, 0, " skipped", rotation=90, ha="center", va="bottom", fontsize=7)
                    continue
                per_call = r[key] * r["median_s"]  # FLOPs or bytes per call: rate = per_call / t
                xs.append(x)
                vals.append(r[key])
                lo.append(r[key] - per_call / r["max_s"])
                hi.append(per_call / r["min_s"] - r[key])
                top = max(top, per_call / r["min_s"])
                frac = r.get("speed_vs_torch") if kind == "gemm" else r.get("frac_same_size_read")
                labels.append("" if name in ("torch", "read") or frac is None else
                              (f"{frac:.2f}×" if kind == "gemm" else f"{100 * frac:.0f}%"))
            label = "read, same bytes (im.ops.sum)" if name == "read" else name
            bars = ax.bar(xs, vals, width, yerr=[lo, hi], capsize=3, label=label,
                          color=colors[name])
            ax.bar_label(bars, labels=labels, fontsize=7, padding=2)
        if kind == "gemv":
            dram = next(r for r in rows if r["kind"] == "read")
            ax.axhline(dram["gbps"], color="k", linestyle="--", linewidth=1,
                       label=f"read, 1 GiB: DRAM ({dram['gbps']:.1f} GB/s)")
        # "GEMV M=1 K=896 N=4864 cold" -> "K=896 N=4864\ncold": five GEMV groups side by side.
        ticks = [s.split(" ", 1)[1].replace("M=1 ", "").replace(" cold", "\ncold (DRAM)")
                 for s in shapes]
        ax.set_xticks(range(len(shapes)), ticks, fontsize=8)
        ax.set_ylim(0, top * 1.3)  # headroom for the legend above the tallest whisker
        ax.set_ylabel(ylabel)
        ax.set_title(subtitle, fontsize=10)
        ax.legend(fontsize=7, loc="upper center", ncol=3)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=11)
    fig.text(0.5, 0.01, "bars: median of the runs; whiskers: min–max", ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------------------------


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=_core.physical_cores(),
                        help="threads for both engines (default: physical cores, %(default)s)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs per engine and shape (default 7; 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="smoke run: smaller shapes")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help="folder for the JSON and the PNG (default %(default)s)")
    parser.add_argument("--run-time", type=float, default=None,
                        help="seconds of back-to-back calls per run (default 0.2; 0.03 --quick)")
    parser.add_argument("--max-call-s", type=float, default=3.0,
                        help="skip an ISA path on a shape when one call takes longer "
                             "(default %(default)s)")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    repeats = args.repeats or (3 if args.quick else 7)
    run_time = args.run_time or (0.03 if args.quick else 0.2)

    torch.set_num_threads(args.threads)
    isas = _matmul_isas()
    initial_isa = _core.active_isa()
    machine = machine_info(args.threads, torch_mkl=torch.backends.mkl.is_available())
    print(f"{machine['brand']} | ISA paths {', '.join(isas)} | {args.threads} threads | "
          f"torch {torch.__version__} | repeats {repeats}", flush=True)

    started = time.perf_counter()
    print("preparing data and calibrating...", file=sys.stderr, flush=True)
    cases = build_cases(args.quick, args.threads, isas)
    try:
        calibrate(cases, args.threads, run_time, args.max_call_s)
        measure(cases, repeats)
    finally:
        _core.set_isa(initial_isa)
    elapsed = time.perf_counter() - started

    rows = summarize(cases)
    print()
    print_table(rows)
    target_lines = targets(rows, isas[0])
    print()
    for line in target_lines:
        print("target:", line)
    for r in rows:
        if r["max_rel_err_vs_torch"] is not None and r["max_rel_err_vs_torch"] > 1e-4:
            print(f"WARNING: {r['shape']} {r['engine']} differs from torch by "
                  f"{r['max_rel_err_vs_torch']:.2e} (relative to max |torch|)")
    print(f"\ntotal {elapsed:.0f} s")

    args.out.mkdir(parents=True, exist_ok=True)
    stem = "matmul-quick" if args.quick else "matmul"
    report = {
        "benchmark": "matmul",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "settings": {"threads": args.threads, "repeats": repeats, "quick": args.quick,
                     "run_time_s": run_time, "max_call_s": args.max_call_s,
                     "isas": isas, "elapsed_s": elapsed},
        "targets": {"gemm_vs_torch": TARGET_GEMM_VS_TORCH, "gemv_vs_read": TARGET_GEMV_VS_READ,
                    "report": target_lines},
        "measurements": rows,
    }
    json_path = args.out / f"{stem}.json"
    json_path.write_text(json.dumps(report, indent=1))
    png_path = args.out / f"{stem}.png"
    plot(rows, png_path, f"infermode vs torch.matmul — {machine['brand']}, "
                         f"{args.threads} threads, median of {repeats}")
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
