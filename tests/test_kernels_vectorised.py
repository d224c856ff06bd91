"""The flat-buffer passes stay vectorised: their rows of ``LANES`` elements are element-wise
loops that LLVM's loop vectoriser turns into vector code (Numba leaves the SLP vectoriser
off; the earlier unrolled 8-lane loops compiled to scalar code only, 2.5-3.5x slower). This
checks that each row loop's compiled code holds vector stores and vector float64 sums at all,
not a time: a slowdown that keeps some vector code (a branch between two row calls inside one
loop once cost 2.7x) is for ``dnupdate bench`` and ``scripts/bench_profile.py`` to show."""

from __future__ import annotations

import re

import numpy as np
import pytest
from numba import njit

from dnupdate.engine.backends.cpu import batchnorm as bn
from dnupdate.engine.backends.cpu import reduce as red
from dnupdate.engine.backends.cpu import update as up

VECTOR_DOUBLES = re.compile(r"<\d+ x double>")
VECTOR_FLOAT_STORE = re.compile(r"store <\d+ x float>")


def _llvm(dispatcher) -> str:
    return "\n".join(dispatcher.inspect_llvm().values())


def _fresh(dispatcher):
    """The kernel compiled afresh, uncached (a kernel loaded from the JIT cache has no IR to
    inspect)."""
    return njit(nogil=True)(dispatcher.py_func)


def _buffers(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal(size).astype(np.float32) for _ in range(2))


@pytest.mark.parametrize("from_source", [False, True])
def test_the_darknet_sgd_rows_are_vector_code(from_source):
    """Each row loop is compiled apart (``_darknet_sgd_rows``, ``_darknet_sgd_rows_from``):
    its weights, momentum and carry are stored as vectors, its norms summed as vectors."""
    size = 3 * up.LANES + 5
    params, grads = _buffers(size, 1)
    scalars = (np.float32(0.01), np.float32(-0.001), np.float32(0.9), np.zeros((3, up.LANES)))
    if from_source:
        rows = _fresh(up._darknet_sgd_rows_from)
        rows(params.copy(), params, grads, grads.copy(), 0, size, *scalars)
    else:
        rows = _fresh(up._darknet_sgd_rows)
        rows(params, grads, grads.copy(), 0, size, *scalars)
    code = _llvm(rows)
    assert VECTOR_FLOAT_STORE.search(code), "the darknet update's rows store scalars"
    assert VECTOR_DOUBLES.search(code), "the darknet update's norms are scalar sums"


def _caffe_rows(params, grads, history, rate, decay, k, sums, clear):
    up._caffe_sgd_rows(params, grads, history, 0, params.size, rate, decay, True, k, sums, clear)


def test_the_caffe_sgd_rows_are_vector_code():
    size = 3 * up.LANES + 5
    params, grads = _buffers(size, 2)
    k = tuple(np.float32(v) for v in up.pack_coefficients(momentum=0.9))
    rows = njit(_caffe_rows)
    rows(params, grads, np.zeros(size, np.float32), np.float32(0.01), np.float32(5e-4), k,
         np.zeros((3, up.LANES)), True)  # fmt: skip  # (Δw)², w², g² lanes; the diffs cleared
    code = _llvm(rows)
    assert VECTOR_FLOAT_STORE.search(code), "the Caffe update's rows store scalars"
    assert VECTOR_DOUBLES.search(code), "the Caffe update's norms are scalar sums"


def test_the_segment_sums_are_vector_code():
    partial = np.zeros(1)
    block_sums = _fresh(red._block_sum_squares)
    starts, stops = np.zeros(1, np.int64), np.array([100], np.int64)
    block_sums(0, 1, np.ones(100, np.float32), starts, stops, partial)
    assert partial[0] == 100.0
    assert VECTOR_DOUBLES.search(_llvm(block_sums))


VECTOR_WIDENING = re.compile(r"fpext <\d+ x float> .* to <\d+ x double>")


def _variance_chains(x, means, squares, strip):
    bn._squares_block(x, 0, means, squares, strip)


def test_the_batchnorm_variance_chains_run_in_simd_lanes():
    """darknet's ``variance_cpu`` chains, one per channel, step over a transposed strip with
    the channels in vector lanes (float32 → double conversions of whole vectors), and each
    lane is still its channel's float32 chain in ``(b, s)`` order."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 16, 10)).astype(np.float32)
    means = rng.standard_normal(16).astype(np.float32)
    squares = np.zeros(16, np.float32)
    chains = njit(_variance_chains)
    chains(x, means, squares, np.empty(64, np.float32))  # strips of 4 positions
    expected = np.zeros(16, np.float32)
    for b in range(x.shape[0]):
        for s in range(x.shape[2]):
            diff = (x[b, :, s] - means).astype(np.float64)
            expected = (expected.astype(np.float64) + diff * diff).astype(np.float32)
    assert squares.tobytes() == expected.tobytes()
    assert VECTOR_WIDENING.search(_llvm(chains)), "the variance chains are scalar"
