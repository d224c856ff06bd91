"""Thread counts of the CPU backend: Numba's parallel kernels and NumPy's BLAS.

Small networks run faster on one thread: a parallel launch (Numba) or a threaded GEMM
(OpenBLAS) costs more than a small layer takes, and the two pools compete for the same cores.
Numba's count is set per calling thread; BLAS's is process-wide and set through the OpenBLAS
bundled with NumPy when its ``*_set_num_threads`` entry point can be found (otherwise left
alone: ``OPENBLAS_NUM_THREADS`` still works).
"""

from __future__ import annotations

import ctypes
import glob
import os
from functools import lru_cache

import numba
import numpy as np

_SETTERS = (
    "scipy_openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
)


@lru_cache(maxsize=1)
def _blas_setter():
    """The bundled OpenBLAS's thread-count setter, or None."""
    folder = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for path in sorted(glob.glob(os.path.join(folder, "*openblas*.so*"))):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _SETTERS:
            setter = getattr(library, name, None)
            if setter is not None:
                setter.argtypes = [ctypes.c_int]
                setter.restype = None
                return setter
    return None


_blas_threads: list[int | None] = [None]


def set_threads(count: int, blas: int | None = None) -> None:
    """Use ``count`` threads for Numba kernels (this thread) and ``blas`` (default ``count``)
    for BLAS (the process)."""
    numba.set_num_threads(max(1, min(count, numba.config.NUMBA_NUM_THREADS)))
    blas = count if blas is None else blas
    if _blas_threads[0] != blas:
        setter = _blas_setter()
        if setter is not None:
            setter(max(1, blas))
        _blas_threads[0] = blas


def max_threads() -> int:
    """The most threads the parallel kernels may use."""
    return numba.config.NUMBA_NUM_THREADS
