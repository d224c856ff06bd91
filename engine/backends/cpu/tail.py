"""darknet's layer tail without batch norm for one image, in one pass (CPU, Numba).

darknet's ``forward_convolutional_layer`` ends with ``add_bias`` then ``activate_array``; the
per-image convolution (:mod:`engine.backends.cpu.conv_images`) runs both on each image right
after its GEMM, while the image is in cache: ``y[c, j] = act(y[c, j] + bias[c])``, the same
float32 operations in the same order as the separate kernels, so bit-identical to them.

The activation loops are those of :mod:`engine.backends.cpu.activations` (``_activate_array``,
``_gradient_array``: serial kernels of their own, compiled once and shared; inlining a copy of
the 14-way activation dispatch into every parallel kernel cost seconds of compile time each).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from dnupdate.engine.backends.cpu.activations import LINEAR, _activate_array, _gradient_array


@njit(cache=True)
def image_forward(y, bias, code):
    """``y (C, N) ← act(y + bias[c])`` for one image (``bias`` empty: none; ``code`` LINEAR:
    no activation)."""
    channels, n = y.shape
    if bias.size > 0:
        for c in range(channels):
            row = y[c]
            v = bias[c]
            for j in range(n):
                row[j] += v
    if code != LINEAR:
        _activate_array(y.reshape(-1), code)


@njit(cache=True)
def image_backward(y, delta, sums, code, first):
    """darknet's backward tail for one image: ``delta ← delta·g(y)`` (``gradient_array``, from
    the output ``y``), then ``sums[c] (+)= Σ_j delta[c, j]`` (``backward_bias``: the image's
    plane summed first, then added; ``first`` starts the sums; ``sums`` empty: no bias)."""
    if code != LINEAR:
        _gradient_array(y.reshape(-1), code, delta.reshape(-1))
    if sums.size == 0:
        return
    for c in range(delta.shape[0]):
        row = delta[c]
        total = np.float32(0.0)
        for j in range(row.size):
            total += row[j]
        sums[c] = total if first else sums[c] + total


#: channels per task of :func:`_rows_backward` (as ``conv.BIAS_BLOCK``: the same sums)
ROW_BLOCK = 64


@njit(parallel=True, cache=True)
def _rows_forward(y, bias, code):
    """``y (B, C) ← act(y + bias)``, one image a task (each row's adds vectorise)."""
    for b in prange(y.shape[0]):
        row = y[b]
        if bias.size > 0:
            for c in range(row.size):
                row[c] += bias[c]
        if code != LINEAR:
            _activate_array(row, code)


@njit(parallel=True, cache=True)
def _rows_backward(y, delta, dbias, code, alpha):
    """``delta (B, C) ← delta·g(y)`` then ``dbias[c] += alpha·Σ_b delta[b, c]`` (``dbias``
    empty: none), per block of :data:`ROW_BLOCK` channels: each channel's float32 sum in
    image order from 0, then added (``conv._bias_grad``'s bits), the gradient applied to the
    block's row of each image just before it is summed."""
    batch, channels = delta.shape
    for block in prange((channels + ROW_BLOCK - 1) // ROW_BLOCK):
        c0 = block * ROW_BLOCK
        c1 = min(channels, c0 + ROW_BLOCK)
        totals = np.zeros(c1 - c0, dtype=np.float32)
        for b in range(batch):
            row = delta[b, c0:c1]
            if code != LINEAR:
                _gradient_array(y[b, c0:c1], code, row)
            if dbias.size > 0:
                for k in range(c1 - c0):
                    totals[k] += row[k]
        if dbias.size > 0:
            for k in range(c1 - c0):
                dbias[c0 + k] += alpha * totals[k]


_NO_BIAS = np.empty(0, dtype=np.float32)


def rows_forward(y, bias, code) -> None:
    """darknet's tail of a connected layer (``y`` ``(B, C, 1)``), ``y ← act(y + bias)`` in one
    pass: ``add_bias`` then ``activate_array`` element by element, the same float32 operations
    (``bias`` None: none; ``code`` None: linear)."""
    _rows_forward(y.reshape(y.shape[0], -1), _NO_BIAS if bias is None else bias,
                  LINEAR if code is None else code)  # fmt: skip


def rows_backward(y, delta, dbias, code, alpha) -> None:
    """darknet's backward tail of a connected layer in one pass: ``gradient_array`` then
    ``backward_bias`` (as ``conv.bias_grad``: per channel a float32 sum over the images, then
    ``dbias += alpha·sum``); None skips either."""
    rows = delta.shape[0]
    _rows_backward(y.reshape(rows, -1), delta.reshape(rows, -1),
                   _NO_BIAS if dbias is None else dbias, LINEAR if code is None else code,
                   np.float32(alpha))  # fmt: skip
