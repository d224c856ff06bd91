"""Plain NumPy (float64) pooling, one window at a time.

Window ``(i, j)`` covers rows ``i·s − off … i·s − off + k − 1`` (darknet ``off = padding/2``,
Caffe ``off = pad``), clipped to the image. Max: the first maximum in row-major order wins, ties
included; cells outside never win. Caffe AVE: the divisor counts the window clipped to
``[−pad, size + pad)`` before clipping to the image.
"""

from __future__ import annotations

import numpy as np


def _windows(size: int, out: int, kernel: int, stride: int, offset: int):
    for i in range(out):
        start = i * stride - offset
        yield i, max(start, 0), min(start + kernel, size), start


def maxpool_forward(x, kernel, stride, offset, out_hw):
    """``(y, argmax)``: window maxima and their flat plane indices (−1 for empty windows)."""
    x = np.asarray(x, np.float64)
    batch, channels, height, width = x.shape
    y = np.full((batch, channels, *out_hw), -float(np.finfo(np.float32).max), dtype=np.float64)
    arg = np.full((batch, channels, *out_hw), -1, dtype=np.int64)
    for b in range(batch):
        for c in range(channels):
            for i, y0, y1, _ in _windows(height, out_hw[0], kernel[0], stride[0], offset[0]):
                for j, x0, x1, _ in _windows(width, out_hw[1], kernel[1], stride[1], offset[1]):
                    for iy in range(y0, y1):
                        for ix in range(x0, x1):
                            if x[b, c, iy, ix] > y[b, c, i, j]:
                                y[b, c, i, j] = x[b, c, iy, ix]
                                arg[b, c, i, j] = iy * width + ix
    return y, arg


def maxpool_backward(dy, arg, in_shape):
    """``dx[argmax] += dy``."""
    dx = np.zeros(in_shape)
    _batch, _channels, _height, width = in_shape
    for index in np.ndindex(*dy.shape):
        a = arg[index]
        if a >= 0:
            dx[index[0], index[1], a // width, a % width] += dy[index]
    return dx


def _ave_windows(size, out, kernel, stride, pad):
    for i in range(out):
        start = i * stride - pad
        end = min(start + kernel, size + pad)
        yield i, max(start, 0), min(end, size), end - start


def avepool_forward(x, kernel, stride, pad, out_hw):
    """Caffe AVE: ``Σ window / pool_size`` (``pool_size`` counts padded cells)."""
    x = np.asarray(x, np.float64)
    batch, channels, height, width = x.shape
    y = np.zeros((batch, channels, *out_hw))
    for i, y0, y1, nh in _ave_windows(height, out_hw[0], kernel[0], stride[0], pad[0]):
        for j, x0, x1, nw in _ave_windows(width, out_hw[1], kernel[1], stride[1], pad[1]):
            y[:, :, i, j] = x[:, :, y0:y1, x0:x1].sum(axis=(2, 3)) / (nh * nw)
    return y


def avepool_backward(dy, in_shape, kernel, stride, pad):
    """``dx[window] += dy / pool_size``."""
    dy = np.asarray(dy, np.float64)
    dx = np.zeros(in_shape)
    height, width = in_shape[2:]
    out_h, out_w = dy.shape[2:]
    for i, y0, y1, nh in _ave_windows(height, out_h, kernel[0], stride[0], pad[0]):
        for j, x0, x1, nw in _ave_windows(width, out_w, kernel[1], stride[1], pad[1]):
            dx[:, :, y0:y1, x0:x1] += (dy[:, :, i, j] / (nh * nw))[:, :, None, None]
    return dx
