"""Work shared out to Numba's threads (``engine.backends.cpu.share``) and the per-image
convolution's argument checks."""

from __future__ import annotations

import multiprocessing

import numba
import numpy as np
import pytest
from numba import njit, prange

from dnupdate.engine.backends.cpu import conv_images, share
from dnupdate.engine.backends.cpu.share import share_start


@njit(nogil=True)
def _count_runs(first, end, runs, owner, tag):
    for i in range(first, end):
        runs[i] += 1
        owner[i] = tag + first


@njit(parallel=True)
def _count_runs_shared(threads, count, runs, owner, tag):
    for t in prange(threads):
        _count_runs(share_start(t, count, threads), share_start(t + 1, count, threads), runs,
                    owner, tag)  # fmt: skip


def _shares(count: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
    runs = np.zeros(count, np.int64)
    owner = np.full(count, -1, np.int64)
    share.share_out(_count_runs_shared, _count_runs, count, runs, owner, 0, threads=threads)
    return runs, owner


def test_every_index_runs_once_in_equal_consecutive_shares_whatever_the_thread_count():
    for count in (1, 2, 5, 10):
        for threads in (1, 2, 3, 7):
            runs, owner = _shares(count, threads)
            assert runs.tolist() == [1] * count
            used = max(1, min(threads, count, numba.config.NUMBA_NUM_THREADS))
            starts = [t * count // used for t in range(used)]
            # each index was run by the share that starts at the last bound at or below it
            expected = [max(s for s in starts if s <= i) for i in range(count)]
            assert owner.tolist() == expected


def test_the_callers_numba_thread_count_is_put_back():
    before = numba.get_num_threads()
    _shares(8, 2)
    assert numba.get_num_threads() == before


def _child_shares(queue):
    runs, _ = _shares(4, 2)
    queue.put(runs.tolist())


def test_a_forked_child_runs_its_shares_serially_with_the_same_results():
    """GNU OpenMP cannot run a parallel region in a child forked after the parent used it:
    the child's shares run in the calling thread."""
    _shares(4, 2)  # the parent has used the threading layer
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_shares, args=(queue,))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("share_out hung in a forked child")
    assert child.exitcode == 0
    assert queue.get(timeout=5) == [1, 1, 1, 1]


def test_per_image_conv_refuses_non_contiguous_outputs():
    x = np.ones((2, 3, 6, 6), np.float32)
    weights = np.ones((1, 4, 27), np.float32)
    out = np.zeros((2, 4, 36, 2), np.float32)[..., 0]  # a strided view
    col = np.empty((2, 27, 36), np.float32)
    with pytest.raises(ValueError, match="out must be C-contiguous"):
        conv_images.conv_forward(x, weights, out, col, (3, 3), (1, 1), (1, 1), 1, (6, 6))


def test_large_copies_are_shared_out_and_exact():
    from dnupdate.engine.backends.cpu import CpuBackend

    backend = CpuBackend(threads=2)
    backend.configure(1 << 30)
    source = np.random.default_rng(0).random(3 * (1 << 20) + 7, dtype=np.float32)
    target = np.zeros_like(source)
    backend.copy(source, target)
    assert np.array_equal(source, target)
    strided = np.zeros((2, source.size), np.float32)[0, ::1]  # contiguous row view
    backend.copy(source, strided)
    assert np.array_equal(source, strided)
