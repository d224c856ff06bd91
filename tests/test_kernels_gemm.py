"""The tiled OpenBLAS GEMM (``engine.backends.cpu.blas``) against NumPy's ``matmul``."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from engine.backends.cpu import blas, sgemm

pytestmark = pytest.mark.skipif(not sgemm.AVAILABLE, reason="NumPy has no OpenBLAS sgemm")


def operand(rng, rows, cols, transposed):
    """A ``rows × cols`` float32 matrix, as a C-contiguous array or a transposed view."""
    if transposed:
        return rng.standard_normal((cols, rows), dtype=np.float32).T
    return rng.standard_normal((rows, cols), dtype=np.float32)


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("shape", [(3, 5, 7), (64, 200, 33), (300, 17, 129), (1, 1, 1)])
def test_matmul_matches_numpy(ta, tb, shape):
    m, k, n = shape
    rng = np.random.default_rng(m * 100 + n)
    a, b = operand(rng, m, k, ta), operand(rng, k, n, tb)
    out = np.full((m, n), np.nan, dtype=np.float32)
    blas.matmul(a, b, out)
    expected = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4 * np.sqrt(k))


@pytest.mark.parametrize("alpha", [1.0, -1.0])
def test_matmul_add_accumulates_with_sign(alpha):
    rng = np.random.default_rng(3)
    a, b = operand(rng, 40, 50, True), operand(rng, 50, 60, False)
    start = rng.standard_normal((40, 60), dtype=np.float32)
    out = start.copy()
    blas.matmul_add(a, b, out, np.empty_like(out), alpha)
    expected = start + alpha * (a.astype(np.float64) @ b.astype(np.float64))
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_stacked_groups_with_transposed_views():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((3, 20, 30), dtype=np.float32)
    b = rng.standard_normal((3, 40, 30), dtype=np.float32).swapaxes(1, 2)
    out = np.empty((3, 20, 40), dtype=np.float32)
    blas.matmul(a, b, out)
    np.testing.assert_allclose(out, np.matmul(a, b), rtol=1e-5, atol=1e-5)


def test_tiles_change_no_bit():
    """Tiling splits M or N, never K: every element is the same single-call dot product."""
    rng = np.random.default_rng(7)
    shapes = [((256, 300), (300, 96)), ((40, 500), (500, 700))]  # split rows / split columns
    for sa, sb in shapes:
        a = rng.standard_normal(sa, dtype=np.float32)
        b = rng.standard_normal(sb, dtype=np.float32)
        results = []
        for threads in (1, 2, 3):
            blas.set_gemm_threads(threads)
            out = np.empty((sa[0], sb[1]), dtype=np.float32)
            blas.matmul(a, b, out)
            results.append(out)
        blas.set_gemm_threads(numba.config.NUMBA_NUM_THREADS)
        for other in results[1:]:
            assert np.array_equal(results[0], other)


def test_unsuitable_operands_fall_back_to_numpy():
    rng = np.random.default_rng(9)
    a = rng.standard_normal((8, 12), dtype=np.float32)[:, ::2]  # no contiguous axis
    b = rng.standard_normal((6, 5), dtype=np.float32)
    out = np.empty((8, 5), dtype=np.float32)
    blas.matmul(a, b, out)
    np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-5)
