"""GEMM into preallocated outputs: OpenBLAS ``sgemm`` on one thread per tile, tiles shared
out to the backend's threads.

The CPU backend keeps OpenBLAS itself single-threaded (:mod:`engine.backends.cpu.threads`):
the per-image convolution calls ``sgemm`` from every thread at once, and OpenBLAS's own
workers spin for a while after each threaded GEMM, fighting those threads for the cores. So a
large GEMM here is split into row or column tiles, one ``sgemm`` call each (from a Numba
kernel, :data:`sgemm.cblas_sgemm`), one tile per thread (``engine.backends.cpu.share``).

Bit-identity across thread counts: OpenBLAS picks its kernel by each call's shape, and its
small-matrix kernel (``M·N·K ≤ 100³`` on SkylakeX), its direct AVX-512 sgemm (row-major,
no transposes, ``M·N·K < 28·512²`` with one BLAS thread) and its GEMV path (a dimension of 1)
sum in other orders than the general kernel. The general kernel itself blocks ``K`` by the
shape alone and sums each element of ``C`` in the same order wherever a row or column tile
starts (checked on 500 random shapes, both transposes, ``alpha``/``beta`` of either kind:
:func:`tile_count`'s tiles always gave the one call's bits, and ``tests/test_kernels_gemm``
keeps checking). So a GEMM is tiled only when every tile stays well inside the general
kernel (:data:`TILE_MIN_WORK` multiply-adds and :data:`TILE_MIN_EXTENT` rows or columns,
the other dimension at least :data:`TILE_ALIGN`); then the tiles follow the thread count
(one per thread: 2 tiles instead of 8 made the MLP's GEMMs 25-30 % faster on 2 cores, each
tile re-packing the shared operand), and the results do not. A GEMM too small for that runs
as one call, whatever the threads. Operands may be transposed views (``.T``,
``.swapaxes``): they go to BLAS as ``Trans`` with their own leading dimension, uncopied.
Where NumPy has no OpenBLAS (MKL, Accelerate), ``np.matmul`` does the work instead.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from dnupdate.engine.backends.cpu.sgemm import (
    AVAILABLE,
    BLAS_NAME,
    NO_TRANS,
    ROW_MAJOR,
    TRANS,
    cblas_sgemm,
)
from dnupdate.engine.backends.cpu.share import share_out, share_start, thread_count

_F32 = 4
#: the least multiply-adds of one tile: above OpenBLAS's small-matrix kernel (100³) and its
#: direct sgemm (28·512² ≈ 7.3M), whose summation orders differ from the general kernel's
TILE_MIN_WORK = 1 << 23
#: the least rows (row tiles) or columns (column tiles) of one tile
TILE_MIN_EXTENT = 128
#: tile edges fall on multiples of this (OpenBLAS's register blocking); a GEMM whose other
#: dimension is smaller is never tiled (GEMV and the small kernels are near)
TILE_ALIGN = 16
#: tiles per GEMM under Intel MKL (``DNUPDATE_BLAS=mkl``), whatever the threads: the general-
#: kernel argument above is OpenBLAS's; MKL's tiles depend on the shape only
MKL_TILES = 8


def _edge(j: int, tiles: int, extent: int) -> int:
    """Start of tile ``j`` of ``tiles`` over ``extent``, on a :data:`TILE_ALIGN` boundary."""
    if j >= tiles:
        return extent
    return min(extent, (j * extent // tiles + TILE_ALIGN // 2) // TILE_ALIGN * TILE_ALIGN)


@njit(cache=True, nogil=True)
def _run_tiles(first, end, tiles, alpha, beta):
    """``sgemm`` calls ``[first, end)`` of a tile table (:func:`_tile_rows`), each
    ``C = alpha·op(A)·op(B) + beta·C``."""
    for i in range(first, end):
        row = tiles[i]
        cblas_sgemm(ROW_MAJOR, np.int32(row[0]), np.int32(row[1]), row[2], row[3], row[4],
                    alpha, row[8], row[5], row[9], row[6], beta, row[10], row[7])  # fmt: skip


@njit(parallel=True, cache=True)
def _run_tiles_shared(threads, count, tiles, alpha, beta):
    """:func:`_run_tiles`, one share of the tiles per thread (``engine.backends.cpu.share``)."""
    for t in prange(threads):
        _run_tiles(share_start(t, count, threads), share_start(t + 1, count, threads), tiles,
                   alpha, beta)  # fmt: skip


def _tile_rows(ta, tb, m, n, k, a, lda, b, ldb, c, ldc, tiles, split_rows):
    """The tile table rows of one matrix product split into ``tiles`` row or column tiles:
    ``(trans_a, trans_b, m, n, k, lda, ldb, ldc, a, b, c)``, addresses in bytes."""
    rows = []
    for j in range(tiles):
        if split_rows:
            lo, hi = _edge(j, tiles, m), _edge(j + 1, tiles, m)
            if hi > lo:
                a_off = lo * lda if ta == NO_TRANS else lo
                rows.append((ta, tb, hi - lo, n, k, lda, ldb, ldc, a + a_off * _F32, b,
                             c + lo * ldc * _F32))  # fmt: skip
        else:
            lo, hi = _edge(j, tiles, n), _edge(j + 1, tiles, n)
            if hi > lo:
                b_off = lo if tb == NO_TRANS else lo * ldb
                rows.append((ta, tb, m, hi - lo, k, lda, ldb, ldc, a, b + b_off * _F32,
                             c + lo * _F32))  # fmt: skip
    return rows


def tile_count(m: int, n: int, k: int, threads: int) -> int:
    """How many row (``m ≥ n``) or column tiles an ``m×k · k×n`` product is cut into on
    ``threads`` threads: one per thread where every tile stays in OpenBLAS's general kernel
    (module docstring), so the result is the one call's whatever the count; else 1."""
    if min(m, n) < TILE_ALIGN:
        return 1
    most = min(max(m, n) // TILE_MIN_EXTENT, m * n * k // TILE_MIN_WORK)
    return max(1, min(threads, most))


def _layout(matrix: np.ndarray) -> tuple[int, int] | None:
    """``(trans, leading dimension)`` of a 2-D float32 view for row-major ``sgemm``, or None
    when neither axis is contiguous."""
    rows, cols = matrix.shape
    row_stride, col_stride = (stride // _F32 for stride in matrix.strides)
    if min(matrix.strides) < 0 or (rows > 1 and row_stride == 0) or (cols > 1 and col_stride == 0):
        return None
    if col_stride == 1 or cols == 1:
        return NO_TRANS, max(row_stride if rows > 1 else cols, cols, 1)
    if row_stride == 1 or rows == 1:
        return TRANS, max(col_stride if cols > 1 else rows, rows, 1)
    return None


def _stack_step(array: np.ndarray) -> int:
    return array.strides[0] // _F32 if array.ndim == 3 and array.shape[0] > 1 else 0


def _gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray, alpha: float, beta: float) -> bool:
    """``out = alpha·(a @ b) + beta·out`` as row or column tiles shared out to the threads;
    False (nothing done)
    where the operands do not suit BLAS (no OpenBLAS, strides, dtype)."""
    if not AVAILABLE or out.dtype != np.float32 or a.dtype != np.float32:
        return False
    if b.dtype != np.float32 or a.ndim != out.ndim or b.ndim != out.ndim or out.ndim not in (2, 3):
        return False
    stack = out.shape[0] if out.ndim == 3 else 1
    a2, b2, c2 = (x[0] if x.ndim == 3 else x for x in (a, b, out))
    la, lb, lc = _layout(a2), _layout(b2), _layout(c2)
    if la is None or lb is None or lc is None or lc[0] != NO_TRANS:
        return False
    if out.ndim == 3 and (a.shape[0] != stack or b.shape[0] != stack):
        return False
    m, k = a2.shape
    n = b2.shape[1]
    if m == 0 or n == 0:
        return True
    if k == 0:  # an empty product: C = beta·C (0 where beta is 0, whatever C held)
        if beta == 0.0:
            out.fill(0.0)
        else:
            out *= np.float32(beta)
        return True
    tiles = tile_count(m, n, k, thread_count() if BLAS_NAME == "openblas" else MKL_TILES)
    steps = (_stack_step(a), _stack_step(b), _stack_step(out))
    addresses = (a2.ctypes.data, b2.ctypes.data, c2.ctypes.data)
    key = (la, lb, lc, m, n, k, stack, steps, addresses, tiles)
    table = _TABLES.get(key)
    if table is None:
        table = _tile_table(la, lb, lc, m, n, k, stack, steps, addresses, tiles)
        if len(_TABLES) >= _TABLES_KEPT:
            _TABLES.clear()
        _TABLES[key] = table
    share_out(_run_tiles_shared, _run_tiles, len(table), table, np.float32(alpha),
              np.float32(beta))  # fmt: skip
    return True


#: tile tables by product (layouts, sizes, addresses, tiles): a network's GEMMs run on the
#: same buffers every step, and building a table in Python cost ~10 µs a call
_TABLES: dict[tuple, np.ndarray] = {}
_TABLES_KEPT = 512


def _tile_table(la, lb, lc, m, n, k, stack, steps, addresses, tiles) -> np.ndarray:
    """The ``sgemm`` calls of one (stacked) product as :func:`_tile_rows` rows, int64."""
    split_rows = m >= n
    rows = []
    for s in range(stack):
        a_s, b_s, c_s = (
            base + s * step * _F32 for base, step in zip(addresses, steps, strict=True)
        )
        rows += _tile_rows(la[0], lb[0], m, n, k, a_s, la[1], b_s, lb[1], c_s, lc[1], tiles,
                           split_rows)  # fmt: skip
    table = np.array(rows, dtype=np.int64)
    table.setflags(write=False)
    return table


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``out = a @ b`` (beta = 0), 2-D or stacked 3-D."""
    if not _gemm(a, b, out, 1.0, 0.0):
        np.matmul(a, b, out=out)


def accumulate(out: np.ndarray, value: np.ndarray, alpha: float) -> None:
    """``out += alpha · value`` (``value`` is not modified)."""
    if alpha == 1.0:
        np.add(out, value, out=out)
    elif alpha == -1.0:
        np.subtract(out, value, out=out)
    else:
        _axpy(alpha, value, out)


def matmul_add(
    a: np.ndarray, b: np.ndarray, out: np.ndarray, scratch: np.ndarray, alpha: float = 1.0
) -> None:
    """``out += alpha · (a @ b)`` (beta = 1 GEMM, as darknet's and Caffe's weight-gradient
    GEMMs); ``scratch`` has ``out``'s shape (used only where BLAS is not reached directly)."""
    if not _gemm(a, b, out, alpha, 1.0):
        np.matmul(a, b, out=scratch)
        accumulate(out, scratch, alpha)


def sum_leading_add(stack: np.ndarray, out: np.ndarray, scratch: np.ndarray, alpha: float) -> None:
    """``out += alpha · Σ_i stack[i]`` (per-image weight gradients reduced over the batch);
    ``scratch`` has ``out``'s shape."""
    np.sum(stack, axis=0, out=scratch)
    accumulate(out, scratch, alpha)


@njit(cache=True)
def _axpy(alpha, x, y):
    a = np.float32(alpha)
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    for i in range(yf.size):
        yf[i] += a * xf[i]


def axpy(alpha: float, x: np.ndarray, y: np.ndarray) -> None:
    """``y += alpha·x`` with two float32 roundings (product, then sum: darknet's ``axpy_cpu``
    without FMA); ``x`` is not modified."""
    _axpy(alpha, x, y)
