"""Runs fuzz targets (tests/fuzz/fuzz_<target>.py) with their seed corpora and says, per target,
how many inputs ran and how many crashed. ``scripts/fuzz`` calls this:

    scripts/fuzz                          # every target, 60 s each
    scripts/fuzz --seconds 600 gguf       # one target, ten minutes
    scripts/fuzz --runs 1000000 --seconds 3600 --keep-going   # whichever comes first
    scripts/fuzz --update-corpus tokenizer

Each target runs in its own process under libFuzzer (through atheris), on a scratch copy of its
corpus in ``--out`` (default build/fuzz), so the committed corpus only changes with
``--update-corpus`` (then libFuzzer's merge adds the inputs that reach new code). A crash —
a signal, an uncaught or unexpected exception, a timeout, running out of memory — leaves its
input in ``<out>/<target>/artifacts/``; reproduce it with
``python tests/fuzz/fuzz_<target>.py <artifact>``. Without ``--keep-going`` a target stops at its
first crash; with it the target restarts (on the grown corpus) until its budget is spent.
Exit status: 0 when no target crashed, 1 otherwise.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
TARGETS = sorted(p.stem[len("fuzz_"):] for p in HERE.glob("fuzz_*.py"))
# Seconds a target may take to start (imports, loading the tiny base model) on a busy machine.
STARTUP_GRACE = 120
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)", re.MULTILINE)
_ARTIFACT = re.compile(r"Test unit written to (\S+)")


@dataclass
class Result:
    target: str
    inputs: int = 0
    seconds: float = 0.0
    new_units: int = 0
    crashes: List[Path] = field(default_factory=list)
    log: Optional[Path] = None

    @property
    def exec_per_sec(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/fuzz", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="*", metavar="target",
                        help=f"targets to run (default: all): {', '.join(TARGETS)}")
    parser.add_argument("--seconds", type=int,
                        help="fuzzing time per target (default 60 unless --runs is given)")
    parser.add_argument("--runs", type=int,
                        help="inputs per target (with --seconds: whichever comes first)")
    parser.add_argument("--max-len", type=int, help="longest input in bytes (default: "
                        "libFuzzer's: the largest seed, at least 4096)")
    parser.add_argument("--timeout", type=int, default=30,
                        help="seconds one input may take before it counts as a hang (30)")
    parser.add_argument("--rss-limit-mb", type=int, default=2048,
                        help="memory a target may hold before it counts as a crash (2048)")
    parser.add_argument("--keep-going", action="store_true",
                        help="restart a target after a crash until its budget is spent")
    parser.add_argument("--update-corpus", action="store_true",
                        help="merge the inputs that reached new code into tests/fuzz/corpus")
    parser.add_argument("--out", type=Path, default=HERE.parent.parent / "build" / "fuzz",
                        help="where scratch corpora, logs and crash inputs go (build/fuzz)")
    parser.add_argument("--seed", type=int, help="libFuzzer's random seed (default: random)")
    args = parser.parse_args(argv)
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; targets: {', '.join(TARGETS)}")
    if args.seconds is None and args.runs is None:
        args.seconds = 60
    for name in ("seconds", "runs", "max_len", "timeout", "rss_limit_mb"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    return args


def run_target(target: str, args: argparse.Namespace) -> Result:
    work = args.out / target
    if work.exists():
        shutil.rmtree(work)
    corpus, artifacts = work / "corpus", work / "artifacts"
    shutil.copytree(CORPUS / target, corpus)
    artifacts.mkdir()
    result = Result(target, log=work / "log.txt")
    deadline = time.monotonic() + args.seconds if args.seconds else None
    attempt = 0
    with open(result.log, "w") as log:
        while True:
            flags = [f"-timeout={args.timeout}", f"-rss_limit_mb={args.rss_limit_mb}",
                     f"-artifact_prefix={artifacts}/", "-print_final_stats=1"]
            if args.max_len:
                flags.append(f"-max_len={args.max_len}")
            if args.seed is not None:
                flags.append(f"-seed={args.seed + attempt}")
            limit: Optional[float] = None
            if deadline is not None:
                remaining = int(deadline - time.monotonic())
                if remaining < 1:
                    break
                flags.append(f"-max_total_time={remaining}")
                limit = remaining + STARTUP_GRACE + args.timeout
            if args.runs is not None:
                flags.append(f"-runs={args.runs - result.inputs}")
            log.write(f"\n=== attempt {attempt + 1}: {' '.join(flags)}\n")
            log.flush()
            started = time.monotonic()
            code, output = _run([sys.executable, str(HERE / f"fuzz_{target}.py"), str(corpus),
                                 *flags], limit)
            result.seconds += time.monotonic() - started
            log.write(output)
            stats = {k: int(v) for k, v in _STAT.findall(output)}
            result.inputs += stats.get("number_of_executed_units", 0)
            result.new_units += stats.get("new_units_added", 0)
            crash = _ARTIFACT.search(output)
            if code != 0 and crash is None:
                # Died without leaving an input (killed from outside, or failed to start).
                tail = "\n".join(output.splitlines()[-15:])
                raise SystemExit(f"fuzz target {target} exited with status {code} and left no "
                                 f"crash input; its log is {result.log}:\n{tail}")
            if crash is not None:
                artifact = Path(crash.group(1))
                result.crashes.append(artifact)
                # A corpus input that crashes would crash every restart: set it aside.
                for unit in corpus.iterdir():
                    if unit.read_bytes() == artifact.read_bytes():
                        unit.unlink()
            attempt += 1
            if code == 0 or not args.keep_going:
                break
            if args.runs is not None and result.inputs >= args.runs:
                break
    if args.update_corpus:
        merge(target, corpus, result.log)
    return result


def _run(command: List[str], limit: Optional[float]) -> "tuple[int, str]":
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, errors="replace", timeout=limit)
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode(
            errors="replace")
        return 124, output + f"\n[scripts/fuzz] killed after {limit:.0f} s\n"
    return done.returncode, done.stdout


def merge(target: str, scratch: Path, log_path: Path) -> None:
    """Adds to the committed corpus the scratch inputs that reach code it does not."""
    before = len(list((CORPUS / target).iterdir()))
    code, output = _run([sys.executable, str(HERE / f"fuzz_{target}.py"), "-merge=1",
                         str(CORPUS / target), str(scratch)], None)
    with open(log_path, "a") as log:
        log.write("\n=== merge\n" + output)
    if code != 0:
        raise SystemExit(f"merging the corpus of {target} failed; see {log_path}")
    after = len(list((CORPUS / target).iterdir()))
    print(f"{target}: corpus {before} -> {after} inputs")


def report(results: List[Result]) -> None:
    print(f"{'target':<16}{'inputs':>12}{'seconds':>10}{'exec/s':>10}{'new units':>11}"
          f"{'crashes':>9}")
    for r in results:
        print(f"{r.target:<16}{r.inputs:>12,}{r.seconds:>10.0f}{r.exec_per_sec:>10.0f}"
              f"{r.new_units:>11,}{len(r.crashes):>9}")
    for r in results:
        for crash in r.crashes:
            print(f"crash in {r.target}: {crash} (log: {r.log}); reproduce with "
                  f"python {HERE / f'fuzz_{r.target}.py'} {crash}")


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results: List[Result] = []
    for target in args.targets or TARGETS:
        budget = " or ".join(([f"{args.seconds} s"] if args.seconds else []) +
                             ([f"{args.runs:,} inputs"] if args.runs else []))
        print(f"[fuzz] {target}: {budget}", flush=True)
        results.append(run_target(target, args))
    report(results)
    return 1 if any(r.crashes for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
