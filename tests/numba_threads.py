"""Run a kernel on a given number of Numba threads (the thread-count bit-identity tests)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numba

T = TypeVar("T")


def with_threads(count: int, run: Callable[[], T]) -> T:
    """``run()`` with Numba's thread count set to ``count`` (capped at the pool's size), the
    previous count restored afterwards."""
    before = numba.get_num_threads()
    numba.set_num_threads(min(count, numba.config.NUMBA_NUM_THREADS))
    try:
        return run()
    finally:
        numba.set_num_threads(before)
