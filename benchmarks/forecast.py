#!/usr/bin/env python3
"""Forecasting wrappers, native vs upstream PyTorch on the same CPU, random weights at the
published sizes.

    python benchmarks/forecast.py                        # every model (~40 min)
    python benchmarks/forecast.py --models chronos2 --quick

Kronos-small (d_model 512, 8 layers, 8 heads, ff 1024; tokenizer d_model 256, 4+4 layers,
10+10 bits): lookback 400, 120 new steps, max_context 512, top_k=1 (greedy, so both sides give
the same numbers: the largest difference is reported), sample_count 1. Upstream re-runs the
whole window every step; the wrapper keeps a KV cache until the window slides (the last 7 of the
120 steps here), then re-runs the window natively as upstream does.

Chronos-2 (d_model 768, 12 layers, 12 heads, d_kv 64, d_ff 3072, 21 quantiles): contexts 512
and 2048, horizon 64, batch 1 and 64 univariate series through ``predict``. Its work is GEMMs,
so the report adds each side's GFLOP/s over the encoder's matrix products and the float32 GEMM
peak measured in the same run (torch.mm of 2048 x 2048 matrices, same threads).

Toto-Open-Base-1.0 (embed 768, 12 layers, 12 heads, mlp 3072, patch 64, 24 components): context
512, horizon 128, seeded sampling (the same draws on both sides), 256 samples (64 per sampling
batch) and 8 samples at batch 1, 8 samples at batch 64. Upstream encodes the context again for
every sample path; the wrapper once per series.

Upstream and native run interleaved, --repeats times, in one process with the same threads
(torch.set_num_threads); the report gives the median seconds with min and max, and the ratio.
Writes forecast.json and forecast.png to --out (forecast-quick.* with --quick).
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


CHRONOS2_SIZE = dict(d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12)


def chronos2_pipeline() -> Any:
    """Chronos-2 at the published size, random weights at a scale where every layer counts."""
    from chronos import Chronos2Pipeline
    from chronos.chronos2 import Chronos2Model
    from chronos.chronos2.config import Chronos2CoreConfig

    quantiles = [0.01, 0.05] + [round(0.1 + 0.05 * i, 2) for i in range(17)] + [0.95, 0.99]
    config = Chronos2CoreConfig(
        **CHRONOS2_SIZE, dropout_rate=0.1, layer_norm_epsilon=1e-6, rope_theta=10000.0,
        feed_forward_proj="relu", vocab_size=2, reg_token_id=1, attn_implementation="sdpa",
        chronos_config=dict(context_length=8192, input_patch_size=16, input_patch_stride=16,
                            output_patch_size=16, max_output_patches=64, quantiles=quantiles,
                            use_reg_token=True, use_arcsinh=True, time_encoding_scale=8192))
    torch.manual_seed(0)
    model = Chronos2Model(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:
                p.normal_(0, 1.0 / p.shape[1] ** 0.5)
            else:
                p.normal_(1.0 if "layer_norm" in name else 0.0, 0.1)
    return Chronos2Pipeline(model)


def chronos2_encoder_flops(batch: int, context: int, horizon: int) -> float:
    """Multiply-adds x 2 of the encoder's matrix products (projections, MLP, time attention)."""
    d, inner, ff, layers = 768, 768, 3072, 12
    tokens = -(-context // 16) + 1 + -(-horizon // 16)
    per_token = 2 * (8 * d * inner + 2 * d * ff) + 4 * tokens * inner
    return float(batch * tokens * per_token * layers)


def chronos2_case(pipeline: Any, batch: int, context: int, horizon: int,
                  threads: int) -> Dict[str, Callable]:
    from infermode.forecast import Chronos2Wrapper

    wrapper = Chronos2Wrapper(pipeline, threads=threads)
    g = torch.Generator().manual_seed(2)
    series = torch.randn(batch, 1, context, generator=g).cumsum(-1)
    return {
        "upstream": lambda: torch.stack(pipeline.predict(series, prediction_length=horizon,
                                                         batch_size=max(batch, 1))),
        "native": lambda: torch.stack(wrapper.predict(series, prediction_length=horizon,
                                                      batch_size=max(batch, 1))),
    }


def toto_model() -> Any:
    """Toto-Open-Base-1.0's size (embed 768, 12 layers of which the last is space-wise, 12
    heads, mlp 3072, patch 64, 24 mixture components), random weights."""
    from toto.model.toto import Toto

    torch.manual_seed(0)
    model = Toto(patch_size=64, stride=64, embed_dim=768, num_layers=12, num_heads=12,
                 mlp_hidden_dim=3072, dropout=0.1, spacewise_every_n_layers=12,
                 spacewise_first=False,
                 scaler_cls="<class 'model.scaler.CausalPatchStdMeanScaler'>",
                 output_distribution_classes=[
                     "<class 'model.distribution.MixtureOfStudentTsOutput'>"],
                 output_distribution_kwargs={"k_components": 24},
                 use_memory_efficient_attention=False, stabilize_with_global=True,
                 scale_factor_exponent=10.0).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model


def toto_case(model: Any, batch: int, variates: int, context: int, horizon: int,
              samples: int, per_batch: int, threads: int) -> Dict[str, Callable]:
    """Seeded sampling on both sides: the same draws, so the paths can be compared."""
    from toto.data.util.dataset import MaskedTimeseries
    from toto.inference.forecaster import TotoForecaster

    from infermode.forecast import TotoWrapper

    wrapper = TotoWrapper(model, threads=threads)
    upstream = TotoForecaster(model.model)
    g = torch.Generator().manual_seed(3)
    series = torch.randn(batch, variates, context, generator=g).cumsum(-1)
    inputs = MaskedTimeseries(
        series=series, padding_mask=torch.ones_like(series, dtype=torch.bool),
        id_mask=torch.zeros_like(series, dtype=torch.int),
        timestamp_seconds=torch.zeros_like(series, dtype=torch.int),
        time_interval_seconds=torch.full((batch, variates), 60, dtype=torch.int))

    def run(forecaster: Any) -> Callable:
        def go() -> torch.Tensor:
            torch.manual_seed(11)
            return forecaster.forecast(inputs, horizon, num_samples=samples,
                                       samples_per_batch=per_batch).samples
        return go

    return {"upstream": run(upstream), "native": run(wrapper)}


def gemm_peak_gflops(threads: int, size: int = 2048, repeats: int = 5) -> float:
    """float32 GEMM rate of torch (MKL / oneDNN) on this CPU now: the compute roofline."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2.0 * size ** 3 / best / 1e9


def _timed(run: Callable) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


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
    diff = np.abs(outputs["native"] - outputs["upstream"])
    summary["max_abs_diff"] = float(diff.max())
    summary["max_rel_diff"] = float(diff.max() / max(1.0, np.abs(outputs["upstream"]).max()))
    return summary


def plot(results: List[Dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['model']}\n{r.get('case', '').rstrip(', ')}\nbatch {r['batch']}".replace(
        "\n\n", "\n") for r in results]
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


def report(name: str, summary: Dict[str, Any]) -> None:
    up, nat = summary["upstream"], summary["native"]
    print(f"{name}: upstream {up['median_s']:7.2f} s (min {up['min_s']:.2f}, max "
          f"{up['max_s']:.2f}), native {nat['median_s']:6.3f} s (min {nat['min_s']:.3f}, max "
          f"{nat['max_s']:.3f}): {summary['speedup']:.1f}x, max |diff| "
          f"{summary['max_abs_diff']:.1e} ({summary['max_rel_diff']:.1e} of the largest value)",
          flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["kronos", "chronos2", "toto"],
                        choices=["kronos", "chronos2", "toto"])
    parser.add_argument("--batches", type=int, nargs="+", default=None,
                        help="batch sizes (default: Kronos 1 16, Chronos-2 and Toto 1 64)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    add_report_arguments(parser, "shorter inputs, 2 repeats: a smoke run")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = 2 if args.quick else args.repeats
    peak = gemm_peak_gflops(args.threads)
    print(f"float32 GEMM peak now (torch.mm 2048^3, {args.threads} threads): {peak:.0f} GFLOP/s")
    results = []
    if "kronos" in args.models:
        lookback, pred_len = (100, 24) if args.quick else (400, 120)
        for batch in args.batches or [1, 16]:
            summary = measure(kronos_case(batch, lookback, pred_len, args.threads), repeats)
            results.append({"model": "Kronos-small", "batch": batch, "lookback": lookback,
                            "pred_len": pred_len, **summary})
            report(f"Kronos-small batch {batch:>3}", summary)
    if "chronos2" in args.models:
        pipeline = chronos2_pipeline()
        horizon = 64
        for context in (512,) if args.quick else (512, 2048):
            for batch in args.batches or ([1, 8] if args.quick else [1, 64]):
                summary = measure(chronos2_case(pipeline, batch, context, horizon, args.threads),
                                  repeats)
                flops = chronos2_encoder_flops(batch, context, horizon)
                for side in ("upstream", "native"):
                    summary[side]["gflops"] = flops / summary[side]["median_s"] / 1e9
                    summary[side]["fraction_of_peak"] = summary[side]["gflops"] / peak
                results.append({"model": "Chronos-2", "case": f"context {context}, ",
                                "batch": batch, "context": context, "horizon": horizon,
                                **summary})
                report(f"Chronos-2 context {context:>4} batch {batch:>3}", summary)
                # Upstream's encoder work over each side's whole forecast time. Native skips part
                # of it (group attention of a series alone in its group is o(v(x)): one product
                # instead of four), so its figure can pass the peak: it is upstream-equivalent.
                print(f"    encoder GFLOP/s (upstream's work / forecast time): upstream "
                      f"{summary['upstream']['gflops']:.0f} "
                      f"({summary['upstream']['fraction_of_peak']:.0%} of peak), native "
                      f"{summary['native']['gflops']:.0f} "
                      f"({summary['native']['fraction_of_peak']:.0%}, upstream-equivalent)",
                      flush=True)
    if "toto" in args.models:
        model = toto_model()
        context, horizon = (256, 64) if args.quick else (512, 128)
        cases = [(1, 256, 64), (1, 8, 8), (64, 8, 8)]  # (batch, samples, samples_per_batch)
        if args.quick:
            cases = [(1, 32, 16), (4, 8, 8)]
        for batch, samples, per_batch in cases:
            if args.batches and batch not in args.batches:
                continue
            summary = measure(toto_case(model, batch, 1, context, horizon, samples, per_batch,
                                        args.threads), repeats)
            results.append({"model": "Toto", "case": f"{samples} samples, ", "batch": batch,
                            "context": context, "horizon": horizon, "samples": samples,
                            "samples_per_batch": per_batch, **summary})
            report(f"Toto {samples:>3} samples (per batch {per_batch:>3}) batch {batch:>3}",
                   summary)
    machine = machine_info(args.threads, gemm_peak_gflops=peak)
    stem = "forecast-quick" if args.quick else "forecast"
    json_path = write_report(args.out, stem, "forecast", machine, argv,
                             settings={"repeats": repeats}, results=results)
    png_path = args.out / f"{stem}.png"
    plot(results, png_path, f"forecasting wrappers vs upstream — {machine['brand']}, "
                            f"{args.threads} threads")
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
