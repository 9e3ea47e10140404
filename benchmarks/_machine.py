"""What a benchmark's JSON records about the machine it ran on (shared by the scripts here)."""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

import infermode as im

#: benchmarks/results beside these scripts, whichever folder they are run from
RESULTS = Path(__file__).resolve().parent / "results"


def machine_info(threads: int, **extra: Any) -> Dict[str, Any]:
    """The CPU, the kernels infermode chose, the threads and library versions, the load average
    at the start (a busy machine explains a wide min–max), plus the caller's `extra` fields."""
    info = im.cpu_info()
    return {
        "brand": info["brand"], "vendor": info["vendor"], "features": info["features"],
        "isa": info["isa"], "isa_best": info["isa_best"], "isa_supported": info["isa_supported"],
        "kernels": info["kernels"], "physical_cores": info["physical_cores"],
        "infermode": info["version"], "build": info["build"], "threads": threads,
        "torch": torch.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "cpu_count": os.cpu_count(),
        "loadavg_at_start": list(os.getloadavg()), **extra,
    }


def write_report(out: Path, stem: str, benchmark: str, machine: Dict[str, Any],
                 argv: Optional[List[str]], **fields: Any) -> Path:
    """Writes <out>/<stem>.json: the benchmark's name, the date, the command that ran it, the
    machine, then the caller's `fields`; returns its path.

        write_report(RESULTS, "decode-quick", "decode", machine, argv,
                     settings={...}, results=[...])
    """
    command = [Path(sys.argv[0]).as_posix()] + (argv if argv is not None else sys.argv[1:])
    report = {"benchmark": benchmark,
              "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(command), "machine": machine, **fields}
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stem}.json"
    path.write_text(json.dumps(report, indent=1))
    return path


def add_report_arguments(parser: argparse.ArgumentParser, quick_help: str,
                         models: bool = False) -> None:
    """``--quick`` (a smoke run, reported as <stem>-quick so it never overwrites real results),
    ``--out`` (the folder for the JSON and the PNG) and, with ``models``, ``--models`` (where the
    random checkpoints a benchmark builds are cached), as the benchmarks here take them."""
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help="folder for the JSON and the PNG (default %(default)s)")
    if models:
        parser.add_argument("--models", type=Path, default=None,
                            help="where the random checkpoints are cached (default <out>/models)")
