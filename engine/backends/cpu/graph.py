"""Kernels of the graph layers (CPU, Numba): darknet's shortcut add and the route copy.

``shortcut`` is darknet's ``shortcut_cpu`` (``blas.c``): between ``add`` ``(B, C1, H1, W1)``
and ``out`` ``(B, C2, H2, W2)``, ``stride = max(1, W1/W2)``, ``sample = max(1, W2/W1)`` (C
integer division), and over the overlap ``min(C) × min(H) × min(W)``::

    out[b, k, j·sample, i·sample] = s1·out[…] + s2·add[b, k, j·stride, i·stride]

(each product rounded to float32, then the sum). The forward pass calls it with
``(s1, s2) = (alpha, beta)``, the backward pass with the roles of the arrays swapped and
``(1, beta)``: the same index map read the other way round.

Shortcuts between arrays of the same shape (every residual block but the downsampling ones)
take a flat path: :func:`shortcut_forward` computes ``out = act(s1·x + s2·add)`` and
:func:`shortcut_backward` ``delta ← delta·g(out)``, ``dx += alpha·delta``, ``da = 1·da +
beta·delta`` each in one pass over blocks of :data:`BLOCK` floats, instead of darknet's three
(``copy_cpu``, ``shortcut_cpu``, ``activate_array``; ``gradient_array``, ``axpy_cpu``,
``shortcut_cpu``). Every element sees the same float32 operations in the same order (the
activation loops are :mod:`~engine.backends.cpu.activations`' own, run on each block while it
is in cache), so the result is bit-identical to the separate passes, whatever the threads;
``dx`` and ``da`` may be one array (``from=-1``): each element's ``dx`` update still comes
before its ``da`` update.

The route copies each source's flat per-image output into a column range of its own output
and, backward, adds that range back into the source's delta (``copy_cpu``/``axpy_cpu`` with
``alpha = 1``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from dnupdate.engine.backends.cpu.activations import LINEAR, _activate_array, _gradient_array

#: floats per parallel block of the flat shortcut passes (256 KiB: in cache for the activation)
BLOCK = 1 << 16
_EMPTY = np.zeros(0, dtype=np.float32)


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


@njit(cache=True, parallel=True)
def _shortcut_forward_flat(x, add, out, s1, s2, code):  # pragma: no cover - compiled
    n = out.size
    for block in prange((n + BLOCK - 1) // BLOCK):
        lo = block * BLOCK
        hi = min(n, lo + BLOCK)
        for i in range(lo, hi):
            out[i] = s1 * x[i] + s2 * add[i]
        if code != LINEAR:
            _activate_array(out[lo:hi], code)


@njit(cache=True)
def _axpy_block(dx, delta, alpha):  # pragma: no cover - compiled
    for i in range(dx.size):
        dx[i] += alpha * delta[i]


@njit(cache=True)
def _axpy_zeroed_block(dx, delta, alpha):  # pragma: no cover - compiled
    """:func:`_axpy_block` into a delta darknet would have zeroed: ``0 + alpha·delta`` (the
    addition kept: it turns a −0 product into +0, as the add into a zeroed array does)."""
    zero = np.float32(0.0)
    for i in range(dx.size):
        dx[i] = zero + alpha * delta[i]


@njit(cache=True)
def _shortcut_add_block(da, delta, beta):  # pragma: no cover - compiled
    one = np.float32(1.0)
    for i in range(da.size):
        da[i] = one * da[i] + beta * delta[i]


@njit(cache=True)
def _shortcut_add_zeroed_block(da, delta, beta):  # pragma: no cover - compiled
    """:func:`_shortcut_add_block` into a zeroed ``da``: ``1·0 + beta·delta = 0 + beta·delta``."""
    zero = np.float32(0.0)
    for i in range(da.size):
        da[i] = zero + beta * delta[i]


@njit(cache=True, parallel=True)
def _shortcut_backward_flat(
    out, delta, dx, da, alpha, beta, code, dx_zeroed, da_zeroed
):  # pragma: no cover - compiled
    n = delta.size
    for block in prange((n + BLOCK - 1) // BLOCK):
        lo = block * BLOCK
        hi = min(n, lo + BLOCK)
        if code != LINEAR:
            _gradient_array(out[lo:hi], code, delta[lo:hi])
        if dx.size > 0:
            if dx_zeroed:
                _axpy_zeroed_block(dx[lo:hi], delta[lo:hi], alpha)
            else:
                _axpy_block(dx[lo:hi], delta[lo:hi], alpha)
        if da.size > 0:
            if da_zeroed:
                _shortcut_add_zeroed_block(da[lo:hi], delta[lo:hi], beta)
            else:
                _shortcut_add_block(da[lo:hi], delta[lo:hi], beta)


def _flat(array: np.ndarray) -> np.ndarray:
    return array.reshape(-1)


def shortcut_forward(
    x: np.ndarray, add: np.ndarray, out: np.ndarray, s1: float, s2: float, code: int
) -> None:
    """darknet's ``forward_shortcut_layer``: ``out = x``, ``shortcut_cpu(add → out, s1, s2)``,
    then ``activate_array(out, code)`` (``code`` LINEAR: none). One fused pass where ``add``
    and ``out`` have the same shape (see the module docstring), else the three passes."""
    if add.shape == out.shape and x.shape == out.shape:
        _shortcut_forward_flat(_flat(x), _flat(add), _flat(out), np.float32(s1), np.float32(s2),
                               code)  # fmt: skip
        return
    np.copyto(out, x)
    shortcut(add, out, s1, s2)
    if code != LINEAR:
        _activate_array(_flat(out), code)


def shortcut_backward(
    out: np.ndarray,
    delta: np.ndarray,
    dx: np.ndarray | None,
    da: np.ndarray | None,
    alpha: float,
    beta: float,
    code: int,
    assign_dx: bool = False,
    assign_da: bool = False,
) -> None:
    """darknet's ``backward_shortcut_layer``: ``delta ← delta·g(out)``; ``dx += alpha·delta``
    (``axpy_cpu`` over the whole output); ``shortcut_cpu(delta → da, 1, beta)``. None skips
    ``dx`` or ``da``. One fused pass where ``delta`` and ``da`` have the same shape.
    ``assign_dx``/``assign_da``: that delta was not zeroed (this pass is the first to write
    it, ``Layer.assign_dx``): it gets ``0 + alpha·delta`` / ``0 + beta·delta``, the same bits
    as adding into zeros (``assign_da`` needs ``da`` of ``delta``'s shape, and ``dx`` and
    ``da`` distinct arrays)."""
    if assign_da and (da is None or da.shape != delta.shape or da is dx):
        raise ValueError("shortcut_backward: assign_da needs a distinct da of delta's shape")
    no_dx = _EMPTY if dx is None else _flat(dx)
    if da is None or da.shape == delta.shape:
        _shortcut_backward_flat(
            _flat(out), _flat(delta), no_dx, _EMPTY if da is None else _flat(da),
            np.float32(alpha), np.float32(beta), code, assign_dx, assign_da,
        )  # fmt: skip
        return
    if code != LINEAR:
        _gradient_array(_flat(out), code, _flat(delta))
    if dx is not None:
        _shortcut_backward_flat(_flat(out), _flat(delta), no_dx, _EMPTY, np.float32(alpha),
                                np.float32(beta), LINEAR, assign_dx, False)  # fmt: skip
    shortcut(delta, da, 1.0, beta)


def route_copy(
    src: np.ndarray, out: np.ndarray, offset: int, group: int = 0, groups: int = 1
) -> None:
    """``out[b, offset : offset + n] = src[b, group·n : (group+1)·n]`` per image (flat
    per-image views, ``n`` = src's count / ``groups``; AlexeyAB's ``forward_route_layer``)."""
    batch = src.shape[0]
    flat = src.reshape(batch, -1)
    n = flat.shape[1] // groups
    np.copyto(out.reshape(batch, -1)[:, offset : offset + n], flat[:, group * n : (group + 1) * n])


def route_add(
    delta: np.ndarray, dx: np.ndarray, offset: int, group: int = 0, groups: int = 1
) -> None:
    """``dx[b, group·n : (group+1)·n] += delta[b, offset : offset + n]`` per image (``axpy``
    with alpha 1, ``n`` = dx's count / ``groups``; AlexeyAB's ``backward_route_layer``)."""
    batch = dx.shape[0]
    flat = dx.reshape(batch, -1)
    n = flat.shape[1] // groups
    part = flat[:, group * n : (group + 1) * n]
    np.add(part, delta.reshape(batch, -1)[:, offset : offset + n], out=part)
