"""Kernels of the graph layers (CPU, Numba): darknet's shortcut add and the route copy.

``shortcut`` is darknet's ``shortcut_cpu`` (``blas.c``): between ``add`` ``(B, C1, H1, W1)``
and ``out`` ``(B, C2, H2, W2)``, ``stride = max(1, W1/W2)``, ``sample = max(1, W2/W1)`` (C
integer division), and over the overlap ``min(C) × min(H) × min(W)``::

    out[b, k, j·sample, i·sample] = s1·out[…] + s2·add[b, k, j·stride, i·stride]

(each product rounded to float32, then the sum). The forward pass calls it with
``(s1, s2) = (alpha, beta)``, the backward pass with the roles of the arrays swapped and
``(1, beta)``: the same index map read the other way round.

The route copies each source's flat per-image output into a column range of its own output
and, backward, adds that range back into the source's delta (``copy_cpu``/``axpy_cpu`` with
``alpha = 1``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def _shortcut(add, out, s1, s2):  # pragma: no cover - compiled
    batch, c1, h1, w1 = add.shape
    _, c2, h2, w2 = out.shape
    stride = max(1, w1 // w2)
    sample = max(1, w2 // w1)
    minc, minh, minw = min(c1, c2), min(h1, h2), min(w1, w2)
    for plane in prange(batch * minc):
        b = plane // minc
        k = plane % minc
        for j in range(minh):
            for i in range(minw):
                y = j * sample
                x = i * sample
                out[b, k, y, x] = s1 * out[b, k, y, x] + s2 * add[b, k, j * stride, i * stride]


def shortcut(add: np.ndarray, out: np.ndarray, s1: float, s2: float) -> None:
    """``shortcut_cpu(add → out, s1, s2)`` on ``(B, C, H, W)`` arrays; see the module
    docstring. darknet's ratio assertion is checked where the net is built
    (``engine.model.shapes.shortcut_geometry``)."""
    _shortcut(add, out, np.float32(s1), np.float32(s2))


def route_copy(src: np.ndarray, out: np.ndarray, offset: int) -> None:
    """``out[b, offset : offset + n] = src[b, :]`` per image (flat per-image views)."""
    batch = src.shape[0]
    flat = src.reshape(batch, -1)
    np.copyto(out.reshape(batch, -1)[:, offset : offset + flat.shape[1]], flat)


def route_add(delta: np.ndarray, dx: np.ndarray, offset: int) -> None:
    """``dx[b, :] += delta[b, offset : offset + n]`` per image (``axpy`` with alpha 1)."""
    batch = dx.shape[0]
    flat = dx.reshape(batch, -1)
    np.add(flat, delta.reshape(batch, -1)[:, offset : offset + flat.shape[1]], out=flat)
