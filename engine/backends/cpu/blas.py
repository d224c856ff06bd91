"""GEMM into preallocated outputs: OpenBLAS ``sgemm`` on one thread per tile, tiles shared
out to the backend's threads.

The CPU backend keeps OpenBLAS itself single-threaded (:mod:`engine.backends.cpu.threads`):
the per-image convolution calls ``sgemm`` from every thread at once, and OpenBLAS's own
workers spin for a while after each threaded GEMM, fighting those threads for the cores. So a
large GEMM here is split into row or column tiles, one ``sgemm`` call each (through ctypes,
which releases the GIL), shared out to the threads (``engine.backends.cpu.share``). The tiles
depend on the shape only (:func:`tile_count`), never on the thread count: OpenBLAS picks its
kernel by each call's shape (small-matrix and matrix-vector kernels sum in other orders than
the general one), so tiles cut by thread count would change results with ``--threads``.
Operands may be transposed views (``.T``, ``.swapaxes``): they go to BLAS as ``Trans`` with
their own leading dimension, uncopied. Where NumPy has no OpenBLAS (MKL, Accelerate),
``np.matmul`` does the work instead.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from dnupdate.engine.backends.cpu.sgemm import (
    AVAILABLE,
    NO_TRANS,
    ROW_MAJOR,
    TRANS,
    sgemm_from_python,
)
from dnupdate.engine.backends.cpu.share import share_out

_F32 = 4
#: a GEMM below this many multiply-adds runs as one call (a parallel launch costs more)
TILE_MIN_WORK = 1 << 20
#: the most tiles one GEMM is cut into (enough for 8 threads)
MAX_TILES = 8
#: tile edges fall on multiples of this (OpenBLAS's register blocking)
TILE_ALIGN = 16


def _edge(j: int, tiles: int, extent: int) -> int:
    """Start of tile ``j`` of ``tiles`` over ``extent``, on a :data:`TILE_ALIGN` boundary."""
    if j >= tiles:
        return extent
    return min(extent, (j * extent // tiles + TILE_ALIGN // 2) // TILE_ALIGN * TILE_ALIGN)


def _run_calls(first: int, end: int, calls: list[tuple]) -> None:
    for call in calls[first:end]:
        sgemm_from_python(*call)


def _tile_calls(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, tiles, split_rows):
    """The ``sgemm`` argument tuples of one matrix product split into ``tiles`` row or column
    tiles (addresses in bytes)."""
    calls = []
    for j in range(tiles):
        if split_rows:
            lo, hi = _edge(j, tiles, m), _edge(j + 1, tiles, m)
            if hi > lo:
                a_off = lo * lda if ta == NO_TRANS else lo
                calls.append((ROW_MAJOR, ta, tb, hi - lo, n, k, alpha, a + a_off * _F32, lda,
                              b, ldb, beta, c + lo * ldc * _F32, ldc))  # fmt: skip
        else:
            lo, hi = _edge(j, tiles, n), _edge(j + 1, tiles, n)
            if hi > lo:
                b_off = lo if tb == NO_TRANS else lo * ldb
                calls.append((ROW_MAJOR, ta, tb, m, hi - lo, k, alpha, a, lda,
                              b + b_off * _F32, ldb, beta, c + lo * _F32, ldc))  # fmt: skip
    return calls


def tile_count(m: int, n: int, k: int) -> int:
    """How many row (``m ≥ n``) or column tiles an ``m×k · k×n`` product is cut into: a
    function of the shape only, so that results do not depend on the thread count."""
    if m * n * k < TILE_MIN_WORK:
        return 1
    return max(1, min(MAX_TILES, max(m, n) // TILE_ALIGN))


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
    split_rows = m >= n
    tiles = tile_count(m, n, k)
    calls = []
    steps = (_stack_step(a), _stack_step(b), _stack_step(out))
    for s in range(stack):
        a_s, b_s, c_s = (
            x.ctypes.data + s * step * _F32 for x, step in zip((a2, b2, c2), steps, strict=True)
        )
        calls += _tile_calls(la[0], lb[0], m, n, k, alpha, a_s, la[1], b_s, lb[1], beta, c_s,
                             lc[1], tiles, split_rows)  # fmt: skip
    share_out(_run_calls, len(calls), calls)
    return True


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
