"""The tiled OpenBLAS GEMM (``engine.backends.cpu.blas``) against NumPy's ``matmul``."""

from __future__ import annotations

import numpy as np
import pytest

from dnupdate.engine.backends.cpu import blas, sgemm, share

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


def _tiled_results(a, b, start, thread_counts):
    results = []
    for threads in thread_counts:
        share.set_threads(threads)
        out, added = np.empty(start.shape, dtype=np.float32), start.copy()
        blas.matmul(a, b, out)
        blas.matmul_add(a, b, added, np.empty_like(added), 1.0)
        results.append((out, added))
    share.set_threads(None)
    return results


@pytest.mark.parametrize(
    "shape", [(256, 300, 96), (40, 500, 700), (64, 500, 40), (500, 50, 50), (256, 4096, 1),
              (32, 1152, 64), (100, 2000, 8), (16, 4096, 17), (128, 784, 1024),
              (128, 1024, 1024), (1024, 128, 1024), (300, 1000, 17)],
)  # fmt: skip
@pytest.mark.parametrize("transposed", [False, True])
def test_thread_count_changes_no_bit(shape, transposed):
    """Tiles follow the thread count only where every tile stays in OpenBLAS's general
    kernel, whose sums do not depend on where a tile starts: the bits stay the one call's."""
    m, k, n = shape
    rng = np.random.default_rng(m + n)
    a, b = operand(rng, m, k, transposed), operand(rng, k, n, False)
    start = rng.standard_normal((m, n), dtype=np.float32)
    results = _tiled_results(a, b, start, (1, 2, 3, 8))
    for out, added in results[1:]:
        assert np.array_equal(results[0][0], out)
        assert np.array_equal(results[0][1], added)


def test_random_shapes_tiled_by_threads_give_the_one_call_bits():
    """Random shapes, both transposes: every tiling :func:`blas.tile_count` allows (2-6
    threads) gives the single call's result bit for bit."""
    rng = np.random.default_rng(2026)
    tiled = 0
    for _ in range(40):
        m, n = (int(v) for v in rng.integers(16, 1100, size=2))
        k = int(rng.integers(1, 1500))
        if blas.tile_count(m, n, k, 6) == 1:
            continue
        tiled += 1
        a = operand(rng, m, k, bool(rng.integers(2)))
        b = operand(rng, k, n, bool(rng.integers(2)))
        start = rng.standard_normal((m, n), dtype=np.float32)
        results = _tiled_results(a, b, start, (1, 2, 3, 6))
        for out, added in results[1:]:
            assert np.array_equal(results[0][0], out), (m, n, k)
            assert np.array_equal(results[0][1], added), (m, n, k)
    assert tiled >= 10


def test_tile_count_keeps_every_tile_in_the_general_kernel():
    assert blas.tile_count(8, 8, 8, 8) == 1  # far below TILE_MIN_WORK: one call
    assert blas.tile_count(128, 1024, 784, 2) == 2  # the MLP's first layer: a tile a thread
    assert blas.tile_count(128, 1024, 784, 8) == 8
    assert blas.tile_count(128, 1024, 784, 1) == 1
    assert blas.tile_count(128, 10, 1024, 8) == 1  # a 10-wide GEMM: never tiled
    assert blas.tile_count(20, 4096, 4096, 8) == 8
    assert blas.tile_count(4096, 1, 4096, 8) == 1  # GEMV-shaped
    assert blas.tile_count(256, 256, 200, 8) == 1  # 13M multiply-adds: tiles would be small
    for m, n, k in ((128, 1024, 784), (300, 1000, 170), (64, 500, 700)):
        tiles = blas.tile_count(m, n, k, 64)
        assert tiles > 1
        assert m * n * k // tiles >= blas.TILE_MIN_WORK
        assert max(m, n) // tiles >= blas.TILE_MIN_EXTENT


def test_empty_inner_dimension_gives_zeros_or_scales():
    a, b = np.empty((3, 0), np.float32), np.empty((0, 4), np.float32)
    out = np.full((3, 4), np.nan, np.float32)
    blas.matmul(a, b, out)
    assert not out.any()
    out = np.full((3, 4), 2.0, np.float32)
    blas.matmul_add(a, b, out, np.empty_like(out), 1.0)
    assert (out == 2.0).all()


def test_unsuitable_operands_fall_back_to_numpy():
    rng = np.random.default_rng(9)
    a = rng.standard_normal((8, 12), dtype=np.float32)[:, ::2]  # no contiguous axis
    b = rng.standard_normal((6, 5), dtype=np.float32)
    out = np.empty((8, 5), dtype=np.float32)
    blas.matmul(a, b, out)
    np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-5)


def test_a_product_s_tile_table_is_kept_for_its_buffers():
    """The second product on the same buffers reuses the first one's tile table; other
    buffers of the same shapes get their own (the table holds addresses); results exact."""
    rng = np.random.default_rng(8)
    a, b = operand(rng, 128, 784, False), operand(rng, 784, 1024, True)
    out, other = np.empty((128, 1024), np.float32), np.empty((128, 1024), np.float32)
    blas._TABLES.clear()
    blas.matmul(a, b, out)
    assert len(blas._TABLES) == 1
    (table,) = blas._TABLES.values()
    blas.matmul(a, b, out)
    assert len(blas._TABLES) == 1 and next(iter(blas._TABLES.values())) is table
    blas.matmul(a, b, other)
    assert len(blas._TABLES) == 2 and np.array_equal(out, other)
    assert not table.flags.writeable
