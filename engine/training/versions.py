"""The versions a run records (``run.json``, ``summary.json``, a sweep's ``sweep.json``).

A module of its own, importing nothing of the engine: a sweep writes them before any variant
runs, and importing :mod:`engine.training.session` for them would load the whole training
stack, Numba included (~0.4 s), in a process that never trains.
"""

from __future__ import annotations

import platform
from importlib import metadata


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages that decide the numbers."""
    out = {"python": platform.python_version()}
    for name in ("dnupdate", "numpy", "numba", "numba-cuda"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


__all__ = ["package_versions"]
