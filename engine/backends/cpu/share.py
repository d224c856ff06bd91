"""Work shared out to plain Python threads (CPU backend).

The per-image convolution and the tiled GEMM hand consecutive shares of their chunks or tiles
to one thread each, the calling thread taking the first share; the work itself runs in code
that releases the GIL (``@njit(nogil=True)`` kernels, OpenBLAS through ctypes). Numba's
``prange`` would do the same, but Numba compiles a parallel loop's body several times over
(seconds of cold compile per kernel), and here a share costs ~20 µs to hand out. Which thread
runs a share changes no result: every chunk or tile owns its output.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from numba import get_num_threads

#: ``(workers, pool)`` of the helper threads, made on first use (one fewer than the threads)
_pool: list[tuple[int, ThreadPoolExecutor]] = []
#: the threads :func:`share_out` uses by default (None: Numba's count for the calling thread)
_threads: list[int | None] = [None]


def set_threads(count: int | None) -> None:
    """Share work out to ``count`` threads from now on (the backend's thread count: large
    convolutions and GEMMs use every thread even where a small network's element-wise Numba
    kernels run on one); None: follow Numba's thread count."""
    _threads[0] = None if count is None else max(1, count)


# a forked child inherits the pool object but not its threads: start a new one there
os.register_at_fork(after_in_child=_pool.clear)


def _helpers(count: int) -> ThreadPoolExecutor:
    if not _pool or _pool[0][0] < count:
        pool = ThreadPoolExecutor(max_workers=count, thread_name_prefix="dnupdate")
        _pool[:] = [(count, pool)]
    return _pool[0][1]


def thread_count() -> int:
    """The threads :func:`share_out` uses by default: :func:`set_threads`'s count, else
    Numba's for the calling thread."""
    return get_num_threads() if _threads[0] is None else _threads[0]


def share_out(kernel: Callable[..., object], count: int, *args, threads: int | None = None):
    """Run ``kernel(first, end, *args)`` over ``[0, count)`` split into equal consecutive
    shares, one per thread (``threads``, default :func:`thread_count`)."""
    if threads is None:
        threads = thread_count()
    threads = max(1, min(threads, count))
    if threads == 1:
        kernel(0, count, *args)
        return
    pool = _helpers(threads - 1)
    bounds = [t * count // threads for t in range(threads + 1)]
    futures = [pool.submit(kernel, bounds[t], bounds[t + 1], *args) for t in range(1, threads)]
    try:
        kernel(bounds[0], bounds[1], *args)
    finally:  # never return (or raise) while a helper still writes into the outputs
        for future in futures:
            future.exception()
    for future in futures:
        future.result()
