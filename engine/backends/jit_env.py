"""Process-wide Numba settings that must be chosen before Numba loads (``engine.backends``
applies them on import, before any backend imports Numba). Each one yields to a value the user
already set in the environment.

* ``NUMBA_THREADING_LAYER=workqueue``: Numba's own thread pool. TBB's and OpenMP's workers
  spin-wait after a parallel region, and OpenBLAS's workers spin after a GEMM; on a machine
  with as many threads as cores the two kinds of spinning workers fight for the cores
  (measured on 2 cores: LeNet training 5–7× slower with ``tbb``/``omp`` than with
  ``workqueue``, all other settings equal). Our kernels never nest parallel regions and one
  thread launches them, which is what ``workqueue`` supports.
* ``NUMBA_CACHE_DIR``: the JIT cache lives next to the sources (``__pycache__``) when that
  folder is writable; when the install directory is read-only it goes to the user cache
  folder (``platformdirs.user_cache_dir("dnupdate")/numba``), so a second run still starts
  warm. (Numba would fall back to its own per-user folder; naming ours keeps ``dnupdate``'s
  files together and makes the choice visible.)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, MutableMapping
from pathlib import Path

THREADING_LAYER = "workqueue"
BACKENDS_DIR = Path(__file__).resolve().parent


def user_jit_cache_dir() -> str:
    """``<user cache dir>/dnupdate/numba`` (platformdirs' per-user cache folder)."""
    from platformdirs import user_cache_dir

    return os.path.join(user_cache_dir("dnupdate"), "numba")


def _writable(folder: Path) -> bool:
    """Whether JIT cache files can be written in ``folder/__pycache__``."""
    cache = folder / "__pycache__"
    target = cache if cache.is_dir() else folder
    return os.access(target, os.W_OK)


def configure_numba_environment(
    environ: MutableMapping[str, str] | None = None,
    *,
    source_dir: Path = BACKENDS_DIR,
    writable: Callable[[Path], bool] = _writable,
) -> dict[str, str]:
    """Set the defaults of the module docstring in ``environ`` (default ``os.environ``) where
    the user has not; returns what was set. Does nothing once Numba is imported (its settings
    are read at import)."""
    env = os.environ if environ is None else environ
    chosen: dict[str, str] = {}
    if environ is None and "numba" in sys.modules:
        return chosen
    if "NUMBA_THREADING_LAYER" not in env:
        chosen["NUMBA_THREADING_LAYER"] = THREADING_LAYER
    if "NUMBA_CACHE_DIR" not in env and not all(
        writable(folder) for folder in (source_dir / "cpu", source_dir / "cuda") if folder.is_dir()
    ):
        chosen["NUMBA_CACHE_DIR"] = user_jit_cache_dir()
    env.update(chosen)
    return chosen
