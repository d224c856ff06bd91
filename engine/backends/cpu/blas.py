"""GEMM through NumPy's BLAS (``sgemm``) into preallocated outputs.

``np.matmul(a, b, out=c)`` on C-contiguous float32 operands (stacked or not) dispatches to the
BLAS ``sgemm`` of NumPy's build; transposed operands are passed as views (``.swapaxes``) so no
copy is made by us.
"""

from __future__ import annotations

import numpy as np
from numba import njit


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``out = a @ b`` (beta = 0), broadcasting over leading (stack) axes."""
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
    GEMMs); ``scratch`` has ``out``'s shape."""
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
