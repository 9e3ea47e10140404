"""What a benchmark's JSON records about the machine it ran on (shared by the scripts here)."""
from __future__ import annotations

import os
import platform
from typing import Any, Dict

import numpy as np
import torch

import infermode as im


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
