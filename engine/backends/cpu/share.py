"""Work shared out to the threads of Numba's threading layer (CPU backend).

The per-image convolution, the tiled GEMM and the block-wise reductions hand consecutive shares
of their chunks, tiles or blocks to one thread each: ``kernel(first, end, *args)`` is an
``@njit(nogil=True)`` kernel that owns the outputs of its share, and each call site also has a
**shared** wrapper, ``@njit(parallel=True)``, whose ``prange`` over the shares calls it::

    @njit(parallel=True, cache=True)
    def _blocks_shared(threads, count, a, b):
        for t in prange(threads):
            _blocks(share_start(t, count, threads), share_start(t + 1, count, threads), a, b)

:func:`share_out` runs the wrapper on the backend's thread count (:func:`set_threads`), or the
kernel itself where one share is all there is. Which thread runs a share changes no result:
every share owns its output, and the shares' bounds depend on ``count`` and ``threads`` only.

Why Numba's threads and not a pool of Python threads (the first design): handing a share to a
sleeping thread means waking it, and on a VM waking a thread on the other vCPU costs ~75 µs
(measured here on 2 vCPUs: a no-op share to a Python helper thread took 75–110 µs when the
helper sat on the other vCPU, 15 µs on the same one; an idle-priority spinner keeping that vCPU
busy still left 60 µs), and the caller waits as long again to be woken when the helper finishes
last. A training step hands out a few to a few dozen shares (MLP 5, LeNet 8, CIFAR ResNet 38),
besides Numba's own parallel kernels. GNU OpenMP's workers (Numba's ``omp`` layer, the default
where it loads: ``engine.backends.jit_env``) spin for a while after each parallel region, so
the next region starts in ~2–10 µs, but a spinning worker then competes for the core with any
other pool: every parallel share goes through the same layer. Python helper threads cannot
spin cheaply (the GIL), nor could a wrapper generated per kernel be cached by Numba, hence one
explicit wrapper per call site. Measured against the Python pool, 2 threads, same bits: MLP
9.8 → 8.1 ms per step, LeNet 10.6 → 9.0, CIFAR ResNet 299 → 272, CIFAR small BN 78.5 → 72.9.

Numba's thread count is per calling thread; :func:`share_out` raises it to the backend's count
for the wrapper's call (a small network runs its element-wise kernels on one thread while its
GEMMs and convolutions use them all) and puts it back.

A forked child: GNU OpenMP cannot run parallel regions in a child forked after the parent used
it (Numba terminates the child), so after a fork :func:`share_out` runs the kernels serially
(the same results). Numba's other parallel kernels still need the parent to have used TBB
(``NUMBA_THREADING_LAYER=tbb``) or the child to be started by ``spawn``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numba
from numba import get_num_threads, njit

#: the threads :func:`share_out` uses by default (None: Numba's count for the calling thread)
_threads: list[int | None] = [None]
#: set in a forked child (module docstring): shares run serially there
_forked: list[bool] = [False]


def _after_fork_in_child() -> None:
    _forked[0] = True


os.register_at_fork(after_in_child=_after_fork_in_child)


def set_threads(count: int | None) -> None:
    """Share work out to ``count`` threads from now on (the backend's thread count: large
    convolutions and GEMMs use every thread even where a small network's element-wise Numba
    kernels run on one); None: follow Numba's thread count."""
    _threads[0] = None if count is None else max(1, count)


def thread_count() -> int:
    """The threads :func:`share_out` uses by default: :func:`set_threads`'s count, else
    Numba's for the calling thread."""
    return get_num_threads() if _threads[0] is None else _threads[0]


@njit(inline="always")
def share_start(t, count, threads):
    """Start of share ``t`` of ``threads`` equal consecutive shares of ``[0, count)`` (share
    ``threads`` starts at ``count``)."""
    return t * count // threads


def share_out(
    shared: Callable[..., object],
    kernel: Callable[..., object],
    count: int,
    *args,
    threads: int | None = None,
) -> None:
    """Run ``kernel(first, end, *args)`` over ``[0, count)`` split into equal consecutive
    shares, one per thread (``threads``, default :func:`thread_count`), through ``shared``
    (``shared(threads, count, *args)``: the kernel's parallel wrapper, module docstring); one
    share, or a forked child, calls ``kernel(0, count, *args)`` directly."""
    if threads is None:
        threads = thread_count()
    threads = max(1, min(threads, count, numba.config.NUMBA_NUM_THREADS))
    if threads == 1 or _forked[0]:
        kernel(0, count, *args)
        return
    previous = get_num_threads()
    if previous != threads:
        numba.set_num_threads(threads)
    try:
        shared(threads, count, *args)
    finally:
        if previous != threads:
            numba.set_num_threads(previous)
