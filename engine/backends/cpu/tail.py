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
from numba import njit

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
