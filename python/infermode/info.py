"""What this build and this CPU can do: :func:`cpu_info`."""
from __future__ import annotations

import os
from importlib import metadata
from typing import Any, Dict

from infermode._ext import _core


def cpu_info() -> Dict[str, Any]:
    """The CPU features found, the ISA path in use per kernel, and the thread count.

        >>> im.cpu_info()["isa"]
        'avx512'
    """
    features = _core.cpu_features()
    try:
        version = metadata.version("infermode")
    except metadata.PackageNotFoundError:  # pragma: no cover
        version = "0+unknown"
    return {
        "version": version,
        "build": _core.build_info(),
        "vendor": features["vendor"],
        "brand": features["brand"],
        "features": sorted(name for name, present in features["flags"].items() if present),
        "os_support": features["os"],
        "amx_note": features["amx_note"],
        "isa": _core.active_isa(),
        "isa_best": _core.best_isa(),
        "isa_supported": list(_core.supported_isas()),
        "isa_cap": os.environ.get("INFERMODE_ISA") or None,
        "kernels": dict(_core.kernel_isas()),
        "threads": _core.default_threads(),
        "physical_cores": _core.physical_cores(),
    }
