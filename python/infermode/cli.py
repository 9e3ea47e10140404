"""The ``infermode`` command line."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

DEVICE_TYPES = ("cpu", "cuda", "xpu", "mps", "xla")


def _print_info() -> int:
    from infermode.devices import _torch, select_mode
    from infermode.info import cpu_info

    info = cpu_info()
    rows = [
        ("version", info["version"]),
        ("build", info["build"]),
        ("cpu", f"{info['brand']} ({info['vendor']})"),
        ("features", " ".join(info["features"]) or "(baseline x86-64 only)"),
        ("isa paths", ", ".join(info["isa_supported"])),
        ("isa in use", info["isa"] + (f" (capped by INFERMODE_ISA={info['isa_cap']})"
                                      if info["isa_cap"] else "")),
        ("kernels", ", ".join(f"{k}={v}" for k, v in info["kernels"].items())),
        ("threads", f"{info['threads']} (physical cores: {info['physical_cores']})"),
    ]
    if info["amx_note"]:
        rows.append(("amx", info["amx_note"]))
    torch = _torch()
    rows.append(("torch", getattr(torch, "__version__", "not installed")))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print()
    print("inference mode per device:")
    choices = [("native (cpu)", select_mode("cpu", native=True))]
    choices += [(kind, select_mode(kind)) for kind in DEVICE_TYPES]
    width = max(len(k) for k, _ in choices)
    for kind, choice in choices:
        print(f"  {kind:<{width}}  {choice.name:<14}  {choice.reason}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infermode", description="Fast transformer inference on the CPU."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="version, build, CPU features, kernels in use, modes per device")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        if args.command == "info":
            return _print_info()
    except BrokenPipeError:
        # The reader went away (`infermode info | head`): not an error of ours. Point stdout at
        # /dev/null so Python's exit-time flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
