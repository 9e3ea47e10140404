"""Loads the native core, with instructions when it is missing."""
from __future__ import annotations

try:
    from infermode import _core
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        f"infermode's native core (infermode._core) could not be imported: {exc}\n"
        "It is a C++ extension built at install time. From a source checkout run\n"
        "    bash scripts/setup\n"
        "or `pip install .` (needs a C++17 compiler, CMake >= 3.24, Eigen3, fmt and OpenMP)."
    ) from exc

__all__ = ["_core"]
