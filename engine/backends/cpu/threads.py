"""Thread counts of the CPU backend: Numba's parallel kernels and NumPy's BLAS.

Small networks run faster on one thread: a parallel launch (Numba) or a threaded GEMM
(OpenBLAS) costs more than a small layer takes, and the two pools compete for the same cores.
Numba's count is set per calling thread; BLAS's is process-wide and set through the OpenBLAS
bundled with NumPy when its ``*_set_num_threads`` entry point can be found (otherwise left
alone: ``OPENBLAS_NUM_THREADS`` still works).
"""

from __future__ import annotations

import numba

from dnupdate.engine.backends.openblas import set_blas_threads

_blas_threads: list[int | None] = [None]


def set_threads(count: int, blas: int | None = None) -> None:
    """Use ``count`` threads for Numba kernels (this thread) and ``blas`` (default ``count``)
    for BLAS (the process)."""
    numba.set_num_threads(max(1, min(count, numba.config.NUMBA_NUM_THREADS)))
    blas = count if blas is None else blas
    if _blas_threads[0] != blas:
        set_blas_threads(blas)
        _blas_threads[0] = blas


def max_threads() -> int:
    """The most threads the parallel kernels may use."""
    return numba.config.NUMBA_NUM_THREADS
