"""A bounded fuzzing run: every target of tests/fuzz for about ten seconds through scripts/fuzz
(about a minute in all), each in its own process, with zero crashes. Longer runs:
``scripts/fuzz --seconds N`` or ``--runs N`` (see tests/fuzz/run.py)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris", reason="atheris is in the dev extra: pip install -e '.[dev]'")

REPO = Path(__file__).resolve().parents[2]
TARGETS = sorted(p.stem[len("fuzz_"):] for p in (REPO / "tests" / "fuzz").glob("fuzz_*.py"))
SECONDS = 10
# A row of scripts/fuzz's report: target, inputs, seconds, exec/s, new units, crashes.
ROW = re.compile(r"^(\w+)\s+([\d,]+)\s+\d+\s+\d+\s+[\d,]+\s+(\d+)$", re.MULTILINE)


def test_every_target_is_run():
    assert TARGETS == ["core_boundary", "gguf", "hf_checkpoint", "peft_adapter", "stack",
                       "tokenizer"]


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_target_runs_without_crashes(target, tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "tests" / "fuzz" / "run.py"), "--seconds", str(SECONDS),
         "--out", str(tmp_path), target],
        capture_output=True, text=True, timeout=SECONDS + 300)
    log = tmp_path / target / "log.txt"
    detail = done.stdout + done.stderr + (log.read_text()[-6000:] if log.exists() else "")
    assert done.returncode == 0, detail
    rows = {name: (int(inputs.replace(",", "")), int(crashes))
            for name, inputs, crashes in ROW.findall(done.stdout)}
    inputs, crashes = rows[target]
    assert crashes == 0, detail
    # More than the seed corpus: the fuzzer really mutated inputs.
    seeds = len(list((REPO / "tests" / "fuzz" / "corpus" / target).iterdir()))
    assert inputs > seeds, detail
