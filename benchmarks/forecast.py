#!/usr/bin/env python3
"""Forecasting wrappers, native vs upstream PyTorch on the same CPU, random weights at the
published sizes.

    python benchmarks/forecast.py                 # Kronos-small, batch 1 and 16 (~15 min)
    python benchmarks/forecast.py --batches 1 --quick

Kronos-small (d_model 512, 8 layers, 8 heads, ff 1024; tokenizer d_model 256, 4+4 layers,
10+10 bits): lookback 400, 120 new steps, max_context 512, top_k=1 (greedy, so both sides give
the same numbers: the largest difference is reported), sample_count 1. Upstream re-runs the
whole window every step; the wrapper keeps a KV cache until the window slides (the last 7 of the
120 steps here), then re-runs the window natively as upstream does.

Upstream and native run interleaved, --repeats times, in one process with the same threads
(torch.set_num_threads); the report gives the median seconds with min and max, and the ratio.
Writes forecast.json and forecast.png to --out (forecast-quick.* with --quick).
Chronos-2 and Toto join this script with their wrappers.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np
import torch

from _machine import add_report_arguments, machine_info, write_report


def kronos_models() -> tuple:
    from model import Kronos, KronosTokenizer

    torch.manual_seed(0)
    tokenizer = KronosTokenizer(
        d_in=6, d_model=256, n_heads=4, ff_dim=512, n_enc_layers=4, n_dec_layers=4,
        ffn_dropout_p=0.0, attn_dropout_p=0.0, resid_dropout_p=0.0, s1_bits=10, s2_bits=10,
        beta=0.05, gamma0=1.0, gamma=1.1, zeta=0.05, group_size=4).eval()
    model = Kronos(s1_bits=10, s2_bits=10, n_layers=8, d_model=512, n_heads=8, ff_dim=1024,
                   ffn_dropout_p=0.0, attn_dropout_p=0.0, resid_dropout_p=0.0,
                   token_dropout_p=0.0, learn_te=True).eval()
    return model, tokenizer


def kronos_case(batch: int, lookback: int, pred_len: int, threads: int) -> Dict[str, Callable]:
    """The two sides of one Kronos case, each returning its forecast (mean path)."""
    from model import kronos as upstream

    from infermode.forecast import KronosWrapper

    model, tokenizer = kronos_models()
    wrapper = KronosWrapper(model, tokenizer, max_context=512, threads=threads)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, lookback, 6, generator=g)
    x_stamp = torch.randint(0, 5, (batch, lookback, 5), generator=g).float()
    y_stamp = torch.randint(0, 5, (batch, pred_len, 5), generator=g).float()
    return {
        "upstream": lambda: upstream.auto_regressive_inference(
            tokenizer, model, x, x_stamp, y_stamp, 512, pred_len, 5, 1.0, 1, 0.99, 1),
        "native": lambda: wrapper.auto_regressive_inference(
            x, x_stamp, y_stamp, pred_len, clip=5, T=1.0, top_k=1, top_p=0.99, sample_count=1),
    }


def measure(sides: Dict[str, Callable], repeats: int) -> Dict[str, Any]:
    seconds: Dict[str, List[float]] = {name: [] for name in sides}
    outputs: Dict[str, np.ndarray] = {}
    for _ in range(repeats):
        for name, run in sides.items():
            start = time.perf_counter()
            outputs[name] = np.asarray(run())
            seconds[name].append(time.perf_counter() - start)
    summary = {name: {"median_s": statistics.median(v), "min_s": min(v), "max_s": max(v)}
               for name, v in seconds.items()}
    summary["speedup"] = summary["upstream"]["median_s"] / summary["native"]["median_s"]
    summary["max_abs_diff"] = float(np.abs(outputs["native"] - outputs["upstream"]).max())
    return summary


def plot(results: List[Dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['model']}\nbatch {r['batch']}" for r in results]
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(results), 3.6))
    bars = ax.bar(labels, [r["speedup"] for r in results], color="tab:blue")
    for bar, r in zip(bars, results):
        ax.annotate(f"{r['speedup']:.1f}x\n{r['native']['median_s']:.2f} s vs "
                    f"{r['upstream']['median_s']:.2f} s", (bar.get_x() + bar.get_width() / 2,
                                                           bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("speed-up over upstream (median)")
    ax.set_title(title, fontsize=9)
    ax.margins(y=0.25)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    add_report_arguments(parser, "lookback 100, 24 steps, 2 repeats: a smoke run")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    lookback, pred_len = (100, 24) if args.quick else (400, 120)
    repeats = 2 if args.quick else args.repeats
    results = []
    for batch in args.batches:
        summary = measure(kronos_case(batch, lookback, pred_len, args.threads), repeats)
        results.append({"model": "Kronos-small", "batch": batch, "lookback": lookback,
                        "pred_len": pred_len, **summary})
        print(f"Kronos-small batch {batch:>3}: upstream {summary['upstream']['median_s']:7.2f} s"
              f" (min {summary['upstream']['min_s']:.2f}, max {summary['upstream']['max_s']:.2f})"
              f", native {summary['native']['median_s']:6.3f} s (min "
              f"{summary['native']['min_s']:.3f}, max {summary['native']['max_s']:.3f}): "
              f"{summary['speedup']:.1f}x, max |diff| {summary['max_abs_diff']:.1e}")
    machine = machine_info(args.threads)
    stem = "forecast-quick" if args.quick else "forecast"
    json_path = write_report(args.out, stem, "forecast", machine, argv,
                             settings={"repeats": repeats, "lookback": lookback,
                                       "pred_len": pred_len}, results=results)
    png_path = args.out / f"{stem}.png"
    plot(results, png_path, f"forecasting wrappers vs upstream — {machine['brand']}, "
                            f"{args.threads} threads")
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
