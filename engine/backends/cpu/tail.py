"""darknet's layer tail without batch norm in one pass (CPU, Numba): bias, then activation.

darknet's ``forward_connected_layer`` and ``forward_convolutional_layer`` end with
``add_bias`` then ``activate_array``; backward starts with ``gradient_array`` then
``backward_bias``. Here each pair is one pass over the output instead of two, with the same
float32 operations in the same order, so results are bit-identical to the separate kernels
(:func:`engine.backends.cpu.conv.bias_add`, :func:`~engine.backends.cpu.activations.activate`,
:func:`~engine.backends.cpu.activations.gradient`, :func:`~engine.backends.cpu.conv.bias_grad`):

* forward ``y[b, c, j] = act(y[b, c, j] + bias[c])``, parallel over images;
* backward ``delta ← delta·g(y)`` and ``grad[c] += alpha·Σ_b Σ_j delta[b, c, j]`` with each
  channel's float32 sum in ``(b, j)`` order, parallel over blocks of channels (each owns its
  channels: thread-count free).

leaky, relu and linear get loops of their own (no per-element switch, so they vectorise); the
other activations go through darknet's dispatch by code.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from engine.backends.cpu.activations import (
    LEAKY,
    LINEAR,
    RELU,
    darknet_activate,
    darknet_gradient,
    leaky_activate,
    leaky_gradient,
    relu_activate,
    relu_gradient,
)

#: channels per parallel task of the backward pass
CHANNEL_BLOCK = 64


@njit(inline="always")
def _activate_row(row, code):
    if code == LEAKY:
        for j in range(row.size):
            row[j] = leaky_activate(row[j])
    elif code == RELU:
        for j in range(row.size):
            row[j] = relu_activate(row[j])
    elif code != LINEAR:
        for j in range(row.size):
            row[j] = darknet_activate(row[j], code)


@njit(parallel=True, cache=True)
def _forward(y, bias, code):
    batch, channels, n = y.shape
    for b in prange(batch):
        if n == 1:  # connected: the image's outputs are one row
            row = y[b, :, 0]
            if bias.size > 0:
                for c in range(channels):
                    row[c] += bias[c]
            _activate_row(row, code)
        else:
            for c in range(channels):
                row = y[b, c]
                if bias.size > 0:
                    v = bias[c]
                    for j in range(n):
                        row[j] += v
                _activate_row(row, code)


@njit(inline="always")
def _gradient(d, out, code):
    if code == LEAKY:
        return d * leaky_gradient(out)
    if code == RELU:
        return d * relu_gradient(out)
    if code == LINEAR:
        return d
    return d * darknet_gradient(out, code)


@njit(parallel=True, cache=True)
def _backward(y, delta, grad, code, alpha):
    batch, channels, n = y.shape
    a = np.float32(alpha)
    with_bias = grad.size > 0
    for block in prange((channels + CHANNEL_BLOCK - 1) // CHANNEL_BLOCK):
        c0 = block * CHANNEL_BLOCK
        c1 = min(channels, c0 + CHANNEL_BLOCK)
        totals = np.zeros(c1 - c0, dtype=np.float32)
        if n == 1:
            for b in range(batch):
                d_row = delta[b, c0:c1, 0]
                y_row = y[b, c0:c1, 0]
                for k in range(c1 - c0):
                    d = _gradient(d_row[k], y_row[k], code)
                    d_row[k] = d
                    totals[k] += d
        else:
            for k in range(c1 - c0):
                total = np.float32(0.0)
                for b in range(batch):
                    d_row = delta[b, c0 + k]
                    y_row = y[b, c0 + k]
                    for j in range(n):
                        d = _gradient(d_row[j], y_row[j], code)
                        d_row[j] = d
                        total += d
                totals[k] = total
        if with_bias:
            for k in range(c1 - c0):
                grad[c0 + k] += a * totals[k]


_NO_FLOATS = np.empty(0, dtype=np.float32)


def tail_forward(y: np.ndarray, bias: np.ndarray | None, code: int | None) -> None:
    """``y (B, C, N) ← act(y + bias[c])`` (``bias`` None: no bias; ``code`` None: linear)."""
    _forward(y, _NO_FLOATS if bias is None else bias, LINEAR if code is None else code)


def tail_backward(
    y: np.ndarray, delta: np.ndarray, grad: np.ndarray | None, code: int | None, alpha: float
) -> None:
    """``delta ← delta·g(y)`` then ``grad[c] += alpha·Σ delta[:, c]`` (``grad`` None: no bias;
    ``code`` None: linear), ``y``/``delta`` ``(B, C, N)``."""
    _backward(
        y, delta, _NO_FLOATS if grad is None else grad, LINEAR if code is None else code, alpha
    )
