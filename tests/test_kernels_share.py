"""Work shared out to Python threads (``engine.backends.cpu.share``) and the per-image
convolution's argument checks."""

from __future__ import annotations

import multiprocessing
import threading
import time

import numpy as np
import pytest

from dnupdate.engine.backends.cpu import conv_images, share


def _record(first, end, seen):
    seen.extend(range(first, end))


def test_every_index_runs_once_whatever_the_thread_count():
    for threads in (1, 2, 3, 7):
        seen: list[int] = []
        share.share_out(_record, 10, seen, threads=threads)
        assert sorted(seen) == list(range(10))


def test_an_error_waits_for_the_other_shares():
    done = threading.Event()

    def kernel(first, end):
        if first == 0:
            raise RuntimeError("first share failed")
        time.sleep(0.2)
        done.set()

    with pytest.raises(RuntimeError, match="first share failed"):
        share.share_out(kernel, 2, threads=2)
    assert done.is_set()  # the helper's share had finished before the error came out


def _child_shares(queue):
    seen: list[int] = []
    share.share_out(_record, 4, seen, threads=2)
    queue.put(sorted(seen))


def test_a_forked_child_gets_threads_of_its_own():
    share.share_out(_record, 4, [], threads=2)  # the parent's pool exists
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_shares, args=(queue,))
    child.start()
    child.join(timeout=30)
    if child.is_alive():
        child.kill()
        pytest.fail("share_out hung in a forked child")
    assert queue.get(timeout=5) == [0, 1, 2, 3]


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
