#!/usr/bin/env python3
"""Data-parallel scaling: prompts/s of InferencePipeline on Ray with 1 and 2 workers of 1 thread.

    python benchmarks/scale.py                   # ~1-2 min on 2 cores
    python benchmarks/scale.py --quick           # smoke run: a tiny model, < 1 min (its batches
                                                 # take ~1 ms: it times overhead, not scaling)
    python benchmarks/scale.py --workers 1,2,4   # more workers (a machine with more cores)

The job is issue 7's: extract activations for many prompts. A random Llama (hidden 512, 8 blocks,
vocab 8192, ~25 M parameters, float32), built once by transformers under <out>/models/ and reused,
runs --prompts prompts of --prompt-len random tokens, --new-tokens new tokens each, --batch-size
per batch, capturing one block's output and writing it to a temporary activations_dir, as a real
run would. Configurations, each set up once and kept warm:
* ``local``: backend="local" with 1 thread, in this process: the reference without Ray;
* ``ray xN``: backend="ray", N workers of 1 thread (threads_per_worker=1) on a local Ray.
Every configuration runs once untimed (warm-up), then --repeats repetitions run each of them in
turn, the order rotated every repetition, so a disturbance from another process lands on all of
them alike. Reported: prompts/s, median [min-max]; the speed-up of N workers over 1 worker
(median of the per-repetition ratios: each repetition's runs are back to back), with issue 7's
target (>= 1.7x for 2 workers, reported, never asserted); and Ray's cost at 1 worker against the
local backend.

The local Ray is started here with as many CPUs as all Ray configurations hold together (1 + 2 =
3 for the default), because their workers stay alive between runs; only one configuration runs
at a time, so the machine's cores are never oversubscribed by running work.

Writes scale.json (machine, settings, every timing) and scale.png to --out (scale-quick.* for
--quick, so a smoke run never overwrites real results).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

import infermode as im
from _machine import add_report_arguments, machine_info, write_report

TARGET_SPEEDUP = 1.7  # issue 7: 2 workers of 1 thread against 1 worker


@dataclasses.dataclass(frozen=True)
class Shape:
    """The model and the workload: the benchmark's, or a tiny one for --quick."""

    name: str
    hidden: int
    layers: int
    vocab: int
    prompts: int
    prompt_len: int
    new_tokens: int
    batch_size: int
    capture: str


FULL = Shape("llama_h512_l8_random", hidden=512, layers=8, vocab=8192, prompts=48, prompt_len=64,
             new_tokens=16, batch_size=4, capture="blocks.5.resid_post")
QUICK = Shape("llama_h64_l2_random", hidden=64, layers=2, vocab=512, prompts=16, prompt_len=16,
              new_tokens=4, batch_size=2, capture="blocks.1.resid_post")


def ensure_model(root: Path, shape: Shape) -> Path:
    """The random checkpoint for ``shape`` under ``root`` (written once, then reused)."""
    path = root / shape.name
    if (path / "config.json").is_file():
        return path
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.hidden * 11 // 4,
        num_hidden_layers=shape.layers, num_attention_heads=8, num_key_value_heads=2,
        max_position_embeddings=512, initializer_range=0.05)
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    transformers.LlamaForCausalLM(config).save_pretrained(partial)
    partial.rename(path)
    return path


def build_pipelines(model: Path, shape: Shape, workers: List[int],
                    runs: Path) -> Dict[str, im.InferencePipeline]:
    common = dict(model_path=str(model), batch_size=shape.batch_size,
                  max_new_tokens=shape.new_tokens, extract_activations=True,
                  layers_to_extract=(shape.capture,))
    configs = {"local": im.InferenceConfig(**common, threads=1,
                                           activations_dir=str(runs / "local"))}
    for n in workers:
        configs[f"ray x{n}"] = im.InferenceConfig(
            **common, backend="ray", workers=n, threads_per_worker=1,
            activations_dir=str(runs / f"ray{n}"))
    return {name: im.InferencePipeline(cfg).setup() for name, cfg in configs.items()}


def measure(pipes: Dict[str, im.InferencePipeline], prompts: List[List[int]],
            repeats: int) -> Dict[str, List[float]]:
    """Seconds per run of every pipeline over ``prompts``, ``repeats`` times, interleaved."""
    names = list(pipes)
    for name in names:  # warm: pages mapped, arenas grown, workers' first batch done
        pipes[name].generate(prompts, overwrite=True, progress=False)
    times: Dict[str, List[float]] = {name: [] for name in names}
    for rep in range(repeats):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            started = time.perf_counter()
            pipes[name].generate(prompts, overwrite=True, progress=False)
            times[name].append(time.perf_counter() - started)
        print(f"  repetition {rep + 1}/{repeats}: " + ", ".join(
            f"{n} {len(prompts) / times[n][-1]:.1f}" for n in names) + " prompts/s",
            file=sys.stderr, flush=True)
    return times


def summarize(times: Dict[str, List[float]], count: int, workers: List[int]) -> Dict[str, dict]:
    rates = {n: [count / t for t in ts] for n, ts in times.items()}
    out: Dict[str, dict] = {n: {"prompts_per_s": {"median": statistics.median(r), "min": min(r),
                                                  "max": max(r), "all": r},
                                "seconds": times[n]} for n, r in rates.items()}
    base = rates[f"ray x{workers[0]}"]
    for n in workers[1:]:
        ratios = [b / a for a, b in zip(base, rates[f"ray x{n}"])]
        out[f"ray x{n}"]["speedup_vs_ray_x1"] = statistics.median(ratios)
    out[f"ray x{workers[0]}"]["vs_local"] = statistics.median(
        [r / l for r, l in zip(base, rates["local"])])
    return out


def plot(results: Dict[str, dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a build machine
    import matplotlib.pyplot as plt

    names = list(results)
    stats = [results[n]["prompts_per_s"] for n in names]
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 4))
    ax.bar(range(len(names)), [s["median"] for s in stats], 0.6, color="tab:blue",
           edgecolor="k", linewidth=0.5, capsize=3,
           yerr=[[s["median"] - s["min"] for s in stats], [s["max"] - s["median"] for s in stats]])
    for x, n in enumerate(names):
        speedup = results[n].get("speedup_vs_ray_x1")
        if speedup is not None:
            ax.annotate(f"{speedup:.2f}x", (x, stats[x]["max"]), ha="center", va="bottom")
    ax.set_ylim(0, 1.15 * max(s["max"] for s in stats))  # room for the speed-up labels
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("prompts/s")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _counts(text: str) -> List[int]:
    """"2,4" -> [1, 2, 4]: the worker counts, with 1 (the speed-ups are against 1 worker)."""
    try:
        counts = {int(w) for w in text.split(",") if w.strip()}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of ints") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"needs worker counts >= 1, got {text!r}")
    return sorted(counts | {1})


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=_counts, default=[1, 2],
                        help="comma-separated worker counts, 1 thread each (default 1,2)")
    parser.add_argument("--repeats", type=_positive, default=None,
                        help="timed repetitions of every configuration (default 5; 2 with --quick)")
    parser.add_argument("--prompts", type=_positive, default=None,
                        help="prompts per run (default 48; 16 with --quick)")
    add_report_arguments(parser, "smoke run: a 2-block model with hidden 64, 16 prompts",
                         models=True)
    args = parser.parse_args(argv)
    workers = args.workers
    shape = QUICK if args.quick else FULL
    shape = dataclasses.replace(shape, prompts=args.prompts or shape.prompts)
    repeats = args.repeats or (2 if args.quick else 5)

    import ray

    machine = machine_info(1, ray=ray.__version__)
    print(f"{machine['brand']} | ISA {machine['isa']} | {machine['physical_cores']} physical "
          f"cores | Ray {ray.__version__} | {shape.name} | {shape.prompts} prompts of "
          f"{shape.prompt_len} tokens, {shape.new_tokens} new, batch {shape.batch_size} | "
          f"repeats {repeats}", flush=True)
    started = time.perf_counter()
    model = ensure_model(args.models or args.out / "models", shape)
    rng = np.random.default_rng(0)
    prompts = rng.integers(3, shape.vocab, size=(shape.prompts, shape.prompt_len)).tolist()
    # Workers of every configuration stay alive together; only one configuration runs at once.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway local cluster
    ray.init(num_cpus=sum(workers), include_dashboard=False, log_to_driver=False)
    runs = Path(tempfile.mkdtemp(prefix="infermode-scale-"))
    try:
        pipes = build_pipelines(model, shape, workers, runs)
        times = measure(pipes, prompts, repeats)
        for pipe in pipes.values():
            pipe.close()
    finally:
        ray.shutdown()
        shutil.rmtree(runs, ignore_errors=True)
    results = summarize(times, shape.prompts, workers)
    elapsed = time.perf_counter() - started

    print_results(results, repeats)
    targets = check_target(results)
    print(f"total {elapsed:.0f} s")
    settings = {"workers": workers, "threads_per_worker": 1, "repeats": repeats,
                "quick": args.quick, "shape": shape.__dict__, "model_dir": str(model),
                "elapsed_s": elapsed, "loadavg_at_end": list(os.getloadavg())}
    stem = "scale-quick" if args.quick else "scale"
    paths = [write_report(args.out, stem, "scale", machine, argv, settings=settings,
                          targets=targets, results=results),
             args.out / f"{stem}.png"]
    plot(results, paths[1], f"InferencePipeline on Ray, 1 thread per worker — {shape.name}, "
         f"{machine['brand']}, median of {repeats}")
    print("wrote", " and ".join(str(p) for p in paths))
    return 0


def print_results(results: Dict[str, dict], repeats: int) -> None:
    print(f"\nprompts/s, median [min–max] of {repeats} repetitions")
    for name, r in results.items():
        s = r["prompts_per_s"]
        extra = ""
        if "speedup_vs_ray_x1" in r:
            extra = f"   {r['speedup_vs_ray_x1']:.2f}x ray x1"
        if "vs_local" in r:
            extra = f"   {r['vs_local']:.2f}x local (Ray's cost)"
        print(f"  {name:8} {s['median']:8.2f} [{s['min']:.2f}–{s['max']:.2f}]{extra}")


def check_target(results: Dict[str, dict]) -> List[dict]:
    """Issue 7's target, when 2 workers ran: reported (printed and in the JSON), never asserted."""
    if "ray x2" not in results:
        return []
    speedup = results["ray x2"]["speedup_vs_ray_x1"]
    met = speedup >= TARGET_SPEEDUP
    print(f"\ntarget: 2 workers {speedup:.2f}x 1 worker, target >= {TARGET_SPEEDUP}x: "
          f"{'met' if met else 'MISSED'}")
    return [{"metric": "speedup ray x2 / ray x1", "value": speedup, "threshold": TARGET_SPEEDUP,
             "met": met}]


if __name__ == "__main__":
    sys.exit(main())
