#!/usr/bin/env python3
"""Memory over a long session: RSS across many short generations, and what loading a large
float32 checkpoint costs before and after its pages are touched.

    python benchmarks/soak.py                      # 10,000 generations + a ~2 GB checkpoint
    python benchmarks/soak.py --generations 2000 --no-big
    python benchmarks/soak.py --quick              # 300 generations, a ~0.9 GB checkpoint

Part 1, the soak: the bundled SmolLM2-135M (Q4_1) runs --generations short generations (a few
prompts in turn, --new-tokens each) in this process, greedy and sampled alternately, every tenth
capturing two activations, as a notebook or a service would over a day. RSS is sampled every
--every generations. The first --warmup generations grow the arenas, the KV caches and the
allocator's pools; after them memory should stay flat. Reported, for RSS and for its anonymous
part (what a leak grows: the rest is the mapped model and libraries, which the kernel may drop
when another process needs the memory): the value after warm-up, at the end, the growth between
them, the smallest and largest, and the slope of a line fitted to the samples after warm-up
(bytes per generation: a leak shows as a steady slope, noise as none).

Part 2, the mmap load: a random Llama-shaped float32 checkpoint of about --big-gb GB (hidden 2048,
ffn 5632, vocab 32000; written once, streamed, under --big-dir) is loaded in a fresh process with
dtype="float32", which maps the file instead of copying it: RSS after the load should stay far
under the file size until a forward pass reads every weight, after which the file's pages count
as resident (file-backed, shared with the page cache, not anonymous memory); a one-token forward
reads every matrix but the embedding, of which it reads one row. Reported: RSS (and its anonymous
and file-backed parts) before the load, after it, after a one-token forward, and the peak,
against the file size.

Part 1b, forecasts: then --forecasts forecasts (default 1,000) in the same process, through the
three wrappers in turn on small random-weight models built with the upstream packages:
Chronos-2 (``predict`` of 4 series), Toto (``forecast`` with 8 sample paths over 3 variates) and
Kronos (``predict``, 12 steps). RSS is sampled and summarised the same way, warm-up included.

RSS comes from psutil when it is installed, else /proc/self/statm; the anonymous / file-backed
split from /proc/self/status (Linux). Writes soak.json and soak.png to --out (soak-quick.* for
--quick).
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

import infermode as im

PROMPTS = ["The capital of France is", "Write a haiku about the sea.",
           "def fibonacci(n):", "Once upon a time, in a small village,",
           "List three prime numbers:", "Translate to French: good morning"]
CAPTURE = ["blocks.3.resid_post", "final_norm"]
MIB = 2 ** 20


# ------------------------------------------------------------------------------------ memory


def rss_bytes() -> int:
    """This process's resident set size."""
    try:
        import psutil
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return psutil.Process().memory_info().rss


def rss_parts() -> Dict[str, int]:
    """RSS and, on Linux, its anonymous and file-backed parts and the peak, in bytes."""
    out = {"rss": rss_bytes()}
    try:
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return out
    for key, name in (("RssAnon", "anon"), ("RssFile", "file"), ("VmHWM", "peak")):
        if key in fields:
            out[name] = int(fields[key].split()[0]) * 1024
    return out


# ------------------------------------------------------------------------------------ the soak


def rss_sample(count: int, started: float) -> List[float]:
    """[runs so far, RSS, its anonymous part, seconds], after a garbage collection."""
    gc.collect()
    parts = rss_parts()
    return [count, parts["rss"], parts.get("anon", parts["rss"]), time.perf_counter() - started]


def soak(model: im.CausalLM, generations: int, new_tokens: int, every: int) -> Dict[str, Any]:
    """Runs the generations; returns the RSS samples (generation count, bytes, seconds)."""
    prompts = [model.tokenizer.encode(p).ids for p in PROMPTS]
    samples: List[List[float]] = []
    started = time.perf_counter()
    for i in range(generations):
        sampled = i % 2 == 1
        model.generate(prompts[i % len(prompts)], max_new_tokens=new_tokens,
                       temperature=0.8 if sampled else 0.0, top_k=40 if sampled else 0, seed=i,
                       capture=CAPTURE if i % 10 == 0 else None)
        if (i + 1) % every == 0 or i + 1 == generations:
            samples.append(rss_sample(i + 1, started))
        if (i + 1) % max(every, generations // 20) == 0:
            print(f"  {i + 1}/{generations} generations, RSS {samples[-1][1] / MIB:.1f} MiB "
                  f"(anonymous {samples[-1][2] / MIB:.1f} MiB), "
                  f"{time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return {"samples": samples, "seconds": time.perf_counter() - started}


def forecasters() -> List[Any]:
    """One small forecast per wrapper (Chronos-2, Toto, Kronos), as callables."""
    import pandas as pd
    import torch
    from chronos import Chronos2Pipeline
    from chronos.chronos2 import Chronos2Model
    from chronos.chronos2.config import Chronos2CoreConfig
    from model import Kronos, KronosTokenizer
    from toto.data.util.dataset import MaskedTimeseries
    from toto.model.toto import Toto

    from infermode.forecast import Chronos2Wrapper, KronosWrapper, TotoWrapper

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    levels = [0.01, 0.05] + [round(0.1 + 0.05 * i, 2) for i in range(17)] + [0.95, 0.99]
    chronos = Chronos2Wrapper(Chronos2Pipeline(Chronos2Model(Chronos2CoreConfig(
        d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, feed_forward_proj="relu",
        vocab_size=2, reg_token_id=1, chronos_config=dict(
            context_length=256, input_patch_size=16, input_patch_stride=16, output_patch_size=16,
            max_output_patches=4, quantiles=levels, use_reg_token=True, use_arcsinh=True,
            time_encoding_scale=256))).eval()))
    series = torch.from_numpy(rng.normal(size=(4, 1, 120)).cumsum(-1).astype(np.float32))

    toto = TotoWrapper(Toto(
        patch_size=8, stride=8, embed_dim=32, num_layers=4, num_heads=4, mlp_hidden_dim=64,
        dropout=0.0, spacewise_every_n_layers=2, spacewise_first=False,
        scaler_cls="<class 'model.scaler.CausalPatchStdMeanScaler'>",
        output_distribution_classes=["<class 'model.distribution.MixtureOfStudentTsOutput'>"],
        output_distribution_kwargs={"k_components": 3}, use_memory_efficient_attention=False))
    values = torch.from_numpy(rng.normal(size=(3, 64)).cumsum(-1).astype(np.float32))
    masked = MaskedTimeseries(series=values, padding_mask=torch.ones_like(values, dtype=torch.bool),
                              id_mask=torch.zeros_like(values, dtype=torch.int),
                              timestamp_seconds=torch.zeros_like(values, dtype=torch.int),
                              time_interval_seconds=torch.full((3,), 60, dtype=torch.int))

    tokenizer = KronosTokenizer(d_in=6, d_model=32, n_heads=4, ff_dim=64, n_enc_layers=2,
                                n_dec_layers=2, ffn_dropout_p=0.0, attn_dropout_p=0.0,
                                resid_dropout_p=0.0, s1_bits=4, s2_bits=4, beta=0.05,
                                gamma0=1.0, gamma=1.1, zeta=0.05, group_size=4)
    kronos = KronosWrapper(Kronos(s1_bits=4, s2_bits=4, n_layers=2, d_model=32, n_heads=4,
                                  ff_dim=48, ffn_dropout_p=0.0, attn_dropout_p=0.0,
                                  resid_dropout_p=0.0, token_dropout_p=0.0, learn_te=True),
                           tokenizer, max_context=64)
    close = 100 + rng.normal(size=48).cumsum()
    candles = pd.DataFrame({"open": close, "high": close + 0.5, "low": close - 0.5,
                            "close": close, "volume": rng.uniform(1e3, 5e3, 48)})
    stamps = pd.Series(pd.date_range("2026-01-05 09:30", periods=48, freq="5min"))
    future = pd.Series(pd.date_range(stamps.iloc[-1] + pd.Timedelta("5min"), periods=12,
                                     freq="5min"))
    return [lambda: chronos.predict(series, prediction_length=32),
            lambda: toto.forecast(masked, prediction_length=16, num_samples=8,
                                  samples_per_batch=8),
            lambda: kronos.predict(candles, stamps, future, pred_len=12, sample_count=2)]


def soak_forecasts(forecasts: int, every: int) -> Dict[str, Any]:
    """Runs the forecasts, the wrappers in turn; returns RSS samples as soak() does."""
    runs = forecasters()
    samples: List[List[float]] = []
    started = time.perf_counter()
    for i in range(forecasts):
        runs[i % len(runs)]()
        if (i + 1) % every == 0 or i + 1 == forecasts:
            samples.append(rss_sample(i + 1, started))
    return {"samples": samples, "seconds": time.perf_counter() - started}


def print_summary(summary: Dict[str, Any], runs: int, unit: str) -> None:
    """One line for RSS and one for its anonymous part, from summarize_soak()."""
    for name, what in (("rss", "RSS"), ("anon", "anonymous RSS")):
        print(f"{what} after {summary['warmup_generations']} warm-up {unit}s: "
              f"{summary[name + '_after_warmup_mib']:.1f} MiB; after {runs}: "
              f"{summary[name + '_end_mib']:.1f} MiB; growth "
              f"{summary[name + '_growth_after_warmup_mib']:+.2f} MiB (min "
              f"{summary[name + '_min_after_warmup_mib']:.1f}, max "
              f"{summary[name + '_max_after_warmup_mib']:.1f} MiB, fitted slope "
              f"{summary[name + '_slope_bytes_per_generation']:+.1f} B/{unit})")


def summarize_soak(samples: List[List[float]], warmup: int) -> Dict[str, Any]:
    """RSS and its anonymous part (columns 1 and 2 of the samples) after warm-up and at the
    end. The anonymous part is what a leak grows; the rest is mapped files (the model, the
    libraries), which the kernel may drop and read again when memory is short elsewhere."""
    after = [s for s in samples if s[0] >= warmup]
    counts = np.array([s[0] for s in after], dtype=float)
    out: Dict[str, Any] = {"warmup_generations": int(after[0][0])}
    for column, name in ((1, "rss"), (2, "anon")):
        values = np.array([s[column] for s in after], dtype=float)
        out.update({f"{name}_after_warmup_mib": values[0] / MIB,
                    f"{name}_end_mib": values[-1] / MIB,
                    f"{name}_growth_after_warmup_mib": (values[-1] - values[0]) / MIB,
                    f"{name}_min_after_warmup_mib": float(values.min()) / MIB,
                    f"{name}_max_after_warmup_mib": float(values.max()) / MIB,
                    f"{name}_slope_bytes_per_generation":
                        float(np.polyfit(counts, values, 1)[0]) if len(after) > 2 else math.nan})
    return out


# ------------------------------------------------------------------------------- the big load


def write_big_checkpoint(directory: Path, gigabytes: float) -> Path:
    """A random float32 Llama-shaped checkpoint of about ``gigabytes`` GB (written once): its
    safetensors file is streamed tensor by tensor, so writing it needs no more memory than one
    chunk."""
    hidden, ffn, vocab, heads, kv_heads = 2048, 5632, 32000, 16, 4
    head_dim = hidden // heads
    per_block = 4 * (2 * hidden * hidden + 2 * hidden * kv_heads * head_dim
                     + 3 * hidden * ffn + 2 * hidden)
    layers = max(1, round((gigabytes * 1e9 - 4 * (2 * vocab * hidden + hidden)) / per_block))
    if (directory / "model.safetensors").is_file():
        return directory
    shapes: Dict[str, tuple] = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (hidden,),
                       p + "self_attn.q_proj.weight": (hidden, hidden),
                       p + "self_attn.k_proj.weight": (kv_heads * head_dim, hidden),
                       p + "self_attn.v_proj.weight": (kv_heads * head_dim, hidden),
                       p + "self_attn.o_proj.weight": (hidden, hidden),
                       p + "post_attention_layernorm.weight": (hidden,),
                       p + "mlp.gate_proj.weight": (ffn, hidden),
                       p + "mlp.up_proj.weight": (ffn, hidden),
                       p + "mlp.down_proj.weight": (hidden, ffn)})
    shapes.update({"model.norm.weight": (hidden,), "lm_head.weight": (vocab, hidden)})
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 4 * math.prod(shape)
        header[name] = {"dtype": "F32", "shape": list(shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with open(partial / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name, shape in shapes.items():
            left = math.prod(shape)
            while left:
                n = min(left, 1 << 24)
                values = (np.ones(n, np.float32) if name.endswith("norm.weight")
                          else rng.standard_normal(n, dtype=np.float32) * np.float32(0.02))
                f.write(values.tobytes())
                left -= n
    (partial / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": vocab,
        "hidden_size": hidden, "intermediate_size": ffn, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "head_dim": head_dim,
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": False, "hidden_act": "silu", "torch_dtype": "float32"}))
    partial.rename(directory)
    return directory


def big_load_child(directory: str, threads: int) -> None:
    """Run in a fresh process that imported only this module (no torch): prints the RSS at each
    step as JSON."""
    steps = {"before_load": rss_parts()}
    started = time.perf_counter()
    model = im.CausalLM.from_pretrained(directory, dtype="float32", threads=threads)
    steps["load_seconds"] = time.perf_counter() - started
    steps["after_load"] = rss_parts()
    started = time.perf_counter()
    model.forward([[1]], last_only=True)  # reads every weight once
    steps["forward_seconds"] = time.perf_counter() - started
    steps["after_forward"] = rss_parts()
    print(json.dumps(steps))


def big_load(directory: Path, threads: int) -> Dict[str, Any]:
    """Loads the big checkpoint in a fresh process, so that nothing this one holds counts."""
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import soak; "
            f"soak.big_load_child({str(directory)!r}, {threads})")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    steps = json.loads(run.stdout.strip().splitlines()[-1])
    file_bytes = (directory / "model.safetensors").stat().st_size
    load_growth = steps["after_load"]["rss"] - steps["before_load"]["rss"]
    return {"file_gib": file_bytes / 2**30, "file_bytes": file_bytes, "steps": steps,
            "rss_growth_at_load_mib": load_growth / MIB,
            "rss_growth_at_load_vs_file": load_growth / file_bytes,
            "rss_after_forward_vs_file": (steps["after_forward"]["rss"]
                                          - steps["before_load"]["rss"]) / file_bytes}


# ------------------------------------------------------------------------------------ report


def _rss_panel(ax: Any, samples: List[List[float]], warmup: int, what: str, title: str) -> None:
    ax.plot([s[0] for s in samples], [s[1] / MIB for s in samples], color="tab:blue", lw=1,
            label="RSS")
    ax.plot([s[0] for s in samples], [s[2] / MIB for s in samples], color="tab:orange", lw=1,
            label="anonymous part")
    ax.axvline(warmup, color="k", ls=":", lw=1, label="end of warm-up")
    ax.set_xlabel(what)
    ax.set_ylabel("RSS (MiB)")
    ax.grid(alpha=0.3)
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower right")
    ax.set_title(title, fontsize=9)


def plot(samples: List[List[float]], warmup: int, big: Optional[Dict[str, Any]], path: Path,
         title: str, forecasts: Optional[List[List[float]]] = None,
         forecast_warmup: int = 0) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a build machine
    import matplotlib.pyplot as plt

    panels = 1 + bool(forecasts) + bool(big)
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels + 1, 4), squeeze=False)
    _rss_panel(axes[0][0], samples, warmup, "generations", title)
    if forecasts:
        _rss_panel(axes[0][1], forecasts, forecast_warmup, "forecasts (Chronos-2, Toto, Kronos "
                   "in turn)", "RSS over the forecasts, same process")
    if big:
        ax = axes[0][-1]
        names = ["before_load", "after_load", "after_forward"]
        steps = big["steps"]
        anon = [steps[n].get("anon", 0) / 2**30 for n in names]
        file = [steps[n].get("file", steps[n]["rss"]) / 2**30 for n in names]
        ax.bar(range(3), anon, 0.6, label="anonymous", color="tab:orange")
        ax.bar(range(3), file, 0.6, bottom=anon, label="file-backed (mapped weights)",
               color="tab:blue")
        ax.axhline(big["file_gib"], color="k", ls="--", lw=1, label="checkpoint file size")
        ax.set_xticks(range(3), ["before load", "after load", "after a forward"])
        ax.set_ylabel("RSS (GiB)")
        ax.legend(fontsize=8)
        ax.set_title(f"float32 checkpoint of {big['file_gib']:.2f} GiB, loaded by mmap",
                     fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generations", type=int, default=None,
                        help="short generations in the soak (default 10000; 300 with --quick)")
    parser.add_argument("--new-tokens", type=int, default=8, help="new tokens per generation")
    parser.add_argument("--forecasts", type=int, default=None,
                        help="forecasts after the generations (default 1000; 60 with --quick; "
                             "0 skips them)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="generations before memory should be flat (default 5%%, >= 50)")
    parser.add_argument("--every", type=int, default=None,
                        help="sample RSS every this many generations (default N/500, >= 1)")
    # One thread by default: this measures memory, and on a shared, busy machine the spinning
    # barriers of two threads make a generation up to ~10x slower and the run's length erratic.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--big-gb", type=float, default=None,
                        help="size of the float32 checkpoint (default 2.0; 0.9 with --quick; "
                             "at least ~0.7: the embedding and the LM head)")
    parser.add_argument("--big-dir", type=Path, default=Path("/tmp/infermode-soak"),
                        help="where the big checkpoint is written, once (default %(default)s)")
    parser.add_argument("--no-big", action="store_true", help="skip the big checkpoint")
    parser.add_argument("--keep-big", action="store_true",
                        help="keep the big checkpoint for the next run (default: delete it)")
    # Imported here: _machine imports torch, which the big-load child (importing this module)
    # must not hold.
    from _machine import add_report_arguments, machine_info, write_report

    add_report_arguments(parser, "smoke run: 300 generations and a ~0.9 GB checkpoint")
    args = parser.parse_args(argv)
    generations = args.generations or (300 if args.quick else 10_000)
    warmup = args.warmup or max(50, generations // 20)
    every = args.every or max(1, generations // 500)
    big_gb = args.big_gb or (0.9 if args.quick else 2.0)

    machine = machine_info(args.threads)
    print(f"{machine['brand']} | ISA {machine['isa']} | {args.threads} thread(s) | "
          f"{generations} generations of {args.new_tokens} new tokens", flush=True)
    model = im.CausalLM.from_pretrained(threads=args.threads)
    run = soak(model, generations, args.new_tokens, every)
    summary = summarize_soak(run["samples"], warmup)
    print_summary(summary, generations, "generation")
    print(f"{generations} generations in {run['seconds']:.0f} s")

    forecasts = args.forecasts if args.forecasts is not None else (60 if args.quick else 1000)
    forecast_run, forecast_summary = None, None
    if forecasts:
        forecast_warmup = max(30, forecasts // 20)
        forecast_run = soak_forecasts(forecasts, max(1, forecasts // 200))
        forecast_summary = summarize_soak(forecast_run["samples"], forecast_warmup)
        print_summary(forecast_summary, forecasts, "forecast")
        print(f"{forecasts} forecasts in {forecast_run['seconds']:.0f} s")

    big = None
    if not args.no_big:
        directory = args.big_dir / f"llama_f32_{big_gb:g}gb"
        started = time.perf_counter()
        write_big_checkpoint(directory, big_gb)
        print(f"big checkpoint ready in {time.perf_counter() - started:.0f} s: {directory}")
        try:
            big = big_load(directory, args.threads)
        finally:
            if not args.keep_big:
                shutil.rmtree(directory, ignore_errors=True)
        steps = big["steps"]
        print(f"float32 checkpoint {big['file_gib']:.2f} GiB: RSS "
              f"{steps['before_load']['rss'] / MIB:.0f} MiB before the load, "
              f"{steps['after_load']['rss'] / MIB:.0f} MiB after it "
              f"({big['rss_growth_at_load_vs_file']:.1%} of the file), "
              f"{steps['after_forward']['rss'] / MIB:.0f} MiB after a forward "
              f"(anonymous {steps['after_forward'].get('anon', 0) / MIB:.0f} MiB, file-backed "
              f"{steps['after_forward'].get('file', 0) / MIB:.0f} MiB); peak "
              f"{steps['after_forward'].get('peak', 0) / MIB:.0f} MiB; load "
              f"{steps['load_seconds']:.2f} s, forward {steps['forward_seconds']:.2f} s")

    stem = "soak-quick" if args.quick else "soak"
    settings = {"generations": generations, "new_tokens": args.new_tokens, "warmup": warmup,
                "every": every, "threads": args.threads, "prompts": PROMPTS,
                "capture_every_10th": CAPTURE, "big_gb": None if args.no_big else big_gb,
                "rss_source": "psutil" if _has_psutil() else "/proc/self/statm",
                "loadavg_at_end": list(os.getloadavg()), "forecasts": forecasts}
    paths = [write_report(args.out, stem, "soak", machine, argv, settings=settings,
                          soak=summary, samples=run["samples"], seconds=run["seconds"],
                          forecast_soak=forecast_summary,
                          forecast_samples=forecast_run["samples"] if forecast_run else None,
                          big_load=big),
             args.out / f"{stem}.png"]
    plot(run["samples"], summary["warmup_generations"], big, paths[1],
         f"RSS over {generations} generations (bundled SmolLM2-135M Q4_1, {args.new_tokens} "
         f"new tokens, {args.threads} thread(s)) — {machine['brand']}",
         forecast_run["samples"] if forecast_run else None,
         forecast_summary["warmup_generations"] if forecast_summary else 0)
    print("wrote", " and ".join(str(p) for p in paths))
    return 0


def _has_psutil() -> bool:
    try:
        import psutil  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
