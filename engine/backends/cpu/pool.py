"""Pooling kernels (CPU, Numba): max with argmax, average with Caffe's divisor rule.

Window ``(i, j)`` of an output plane covers rows ``[i·s_h − off_h, i·s_h − off_h + k_h)`` and
columns likewise, clipped to the image. ``off`` is darknet's ``padding/2`` or Caffe's ``pad``
(``engine.shapes.pool_geometry``). Each parallel iteration owns one ``(image, channel)`` plane.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

FLT_MAX = np.float32(3.4028234663852886e38)


@njit(parallel=True, cache=True)
def _max_forward(x, y, argmax, kh, kw, sh, sw, oh_off, ow_off):
    batch, channels, height, width = x.shape
    out_h, out_w = y.shape[2], y.shape[3]
    for task in prange(batch * channels):
        b = task // channels
        c = task % channels
        for i in range(out_h):
            top = i * sh - oh_off
            first_row, end_row = max(0, -top), min(kh, height - top)  # window ∩ image
            for j in range(out_w):
                left = j * sw - ow_off
                best = -FLT_MAX
                arg = -1
                for n in range(first_row, end_row):
                    for m in range(max(0, -left), min(kw, width - left)):
                        v = x[b, c, top + n, left + m]
                        # strict: the first maximum in row-major order wins; a select, not a
                        # branch (random data mispredicts it half the time: 2x faster)
                        take = v > best
                        best = v if take else best
                        arg = (top + n) * width + left + m if take else arg
                y[b, c, i, j] = best
                argmax[b, c, i, j] = arg


@njit(parallel=True, cache=True)
def _max_backward(dy, argmax, dx):
    batch, channels, _, width = dx.shape
    out_h, out_w = dy.shape[2], dy.shape[3]
    for task in prange(batch * channels):
        b = task // channels
        c = task % channels
        for i in range(out_h):
            for j in range(out_w):
                arg = argmax[b, c, i, j]
                if arg >= 0:
                    dx[b, c, arg // width, arg % width] += dy[b, c, i, j]


@njit(cache=True, inline="always")
def _ave_window(i, stride, pad, k, size):
    start = i * stride - pad
    end = min(start + k, size + pad)
    count = end - start  # Caffe quirk: counted before clipping, so padded cells count
    return max(start, 0), min(end, size), count


@njit(parallel=True, cache=True)
def _ave_forward(x, y, kh, kw, sh, sw, ph, pw):
    batch, channels, height, width = x.shape
    out_h, out_w = y.shape[2], y.shape[3]
    for task in prange(batch * channels):
        b = task // channels
        c = task % channels
        for i in range(out_h):
            y0, y1, nh = _ave_window(i, sh, ph, kh, height)
            for j in range(out_w):
                x0, x1, nw = _ave_window(j, sw, pw, kw, width)
                total = np.float32(0.0)
                for iy in range(y0, y1):
                    for ix in range(x0, x1):
                        total += x[b, c, iy, ix]
                y[b, c, i, j] = total / np.float32(nh * nw)


@njit(parallel=True, cache=True)
def _ave_backward(dy, dx, kh, kw, sh, sw, ph, pw):
    batch, channels, height, width = dx.shape
    out_h, out_w = dy.shape[2], dy.shape[3]
    for task in prange(batch * channels):
        b = task // channels
        c = task % channels
        for i in range(out_h):
            y0, y1, nh = _ave_window(i, sh, ph, kh, height)
            for j in range(out_w):
                x0, x1, nw = _ave_window(j, sw, pw, kw, width)
                share = dy[b, c, i, j] / np.float32(nh * nw)
                for iy in range(y0, y1):
                    for ix in range(x0, x1):
                        dx[b, c, iy, ix] += share


def maxpool_forward(
    x: np.ndarray,
    y: np.ndarray,
    argmax: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    offset: tuple[int, int],
) -> None:
    """``y = max`` over each window (start ``−FLT_MAX``, strict ``>``: ties go to the first
    element in row-major order, as darknet and Caffe); ``argmax`` (int32, same shape as ``y``)
    gets the flat ``iy·W + ix`` index in the plane, −1 for a window entirely outside."""
    _max_forward(x, y, argmax, kernel[0], kernel[1], stride[0], stride[1], offset[0], offset[1])


def maxpool_backward(dy: np.ndarray, argmax: np.ndarray, dx: np.ndarray) -> None:
    """``dx[argmax] += dy`` (overlapping windows accumulate; darknet and Caffe)."""
    _max_backward(dy, argmax, dx)


def avepool_forward(
    x: np.ndarray,
    y: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pad: tuple[int, int],
) -> None:
    """Caffe AVE: ``y = Σ window / pool_size`` with ``pool_size`` counted over the window
    clipped to ``[−pad, size + pad)`` (padded cells count, ceil overhang does not). With the
    window equal to the image and no padding this is darknet's global ``[avgpool]``
    (``Σ / (h·w)``, float accumulation then divide)."""
    _ave_forward(x, y, kernel[0], kernel[1], stride[0], stride[1], pad[0], pad[1])


def avepool_backward(
    dy: np.ndarray,
    dx: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pad: tuple[int, int],
) -> None:
    """``dx[window] += dy / pool_size`` over the clipped window (Caffe; darknet avgpool)."""
    _ave_backward(dy, dx, kernel[0], kernel[1], stride[0], stride[1], pad[0], pad[1])
