"""NumPy transcriptions of Caffe's CPU code for LRN, Power, Softmax, Eltwise and the two
regression losses (``src/caffe/layers/*_layer.cpp``), in the dtype of their inputs: float32
for kernel comparisons, float64 for finite differences. Loops over channels as Caffe's, each
``caffe_axpy``/``caffe_mul`` vectorised over the H·W plane."""

from __future__ import annotations

import numpy as np


def lrn_across_forward(x, size, alpha, beta, k):
    """``CrossChannelForward_cpu`` on ``(N, C, HW)``: returns ``(y, scale)``."""
    n_, c_, hw = x.shape
    dt = x.dtype.type
    pre_pad = (size - 1) // 2
    aos = dt(dt(alpha) / dt(size))
    scale = np.empty_like(x)
    for n in range(n_):
        padded = np.zeros((c_ + size - 1, hw), x.dtype)
        padded[pre_pad : pre_pad + c_] = x[n] * x[n]
        scale[n, 0] = dt(k)
        for c in range(size):
            scale[n, 0] = scale[n, 0] + aos * padded[c]
        for c in range(1, c_):
            scale[n, c] = scale[n, c - 1] + aos * padded[c + size - 1]
            scale[n, c] = scale[n, c] + (-aos) * padded[c - 1]
    y = scale ** dt(-beta) * x
    return y, scale


def lrn_across_backward(x, y, scale, dy, size, alpha, beta):
    """``CrossChannelBackward_cpu``: the bottom diff."""
    n_, c_, hw = x.shape
    dt = x.dtype.type
    inverse_pre_pad = size - (size + 1) // 2
    cache = dt(2.0 * alpha * beta / size)
    dx = dy * scale ** dt(-beta)
    for n in range(n_):
        ratio = np.zeros((c_ + size - 1, hw), x.dtype)
        ratio[inverse_pre_pad : inverse_pre_pad + c_] = (dy[n] * y[n]) / scale[n]
        accum = np.zeros(hw, x.dtype)
        for c in range(size - 1):
            accum = accum + ratio[c]
        for c in range(c_):
            accum = accum + ratio[c + size - 1]
            dx[n, c] = dx[n, c] + (-cache) * (x[n, c] * accum)
            accum = accum + (-ratio[c])
    return dx


def ave_pool_same(x, size):
    """Caffe AVE pooling, kernel ``size``, stride 1, pad (size−1)/2, padded cells counted."""
    pad = (size - 1) // 2
    n_, c_, h, w = x.shape
    padded = np.zeros((n_, c_, h + 2 * pad, w + 2 * pad), x.dtype)
    padded[:, :, pad : pad + h, pad : pad + w] = x
    out = np.zeros_like(x)
    for i in range(size):
        for j in range(size):
            out = out + padded[:, :, i : i + h, j : j + w]
    # pool_size counts the window clipped to [-pad, size + pad): the full window here
    return out / x.dtype.type(size * size)


def lrn_within_forward(x, size, alpha, beta):
    """WITHIN_CHANNEL: ``x·(1 + alpha·avg(x²))^-beta`` (Caffe's composition; no ``k``)."""
    dt = x.dtype.type
    return x * (dt(1) + dt(alpha) * ave_pool_same(x * x, size)) ** dt(-beta)


def power_forward(x, power, scale, shift):
    """``PowerLayer::Forward_cpu``."""
    dt = x.dtype.type
    if power * scale == 0:
        return np.full_like(x, 1.0 if power == 0 else dt(shift) ** dt(power))
    return (dt(shift) + dt(scale) * x) ** dt(power) if power != 1 else dt(shift) + dt(scale) * x


def softmax_forward(x):
    """``SoftmaxLayer::Forward_cpu`` over axis 1."""
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_backward(y, dy):
    """``SoftmaxLayer::Backward_cpu``."""
    return (dy - (dy * y).sum(axis=1, keepdims=True)) * y


def eltwise_max(bottoms):
    """``Eltwise`` MAX forward: ``(top, mask)`` with Caffe's tie rule."""
    a, b = bottoms[0], bottoms[1]
    top = np.where(a > b, a, b)
    mask = np.where(a > b, 0, 1)
    for index, value in enumerate(bottoms[2:], start=2):
        mask = np.where(value > top, index, mask)
        top = np.where(value > top, value, top)
    return top, mask


def sigmoid_cross_entropy(x, t, normalization="batch_size", ignore=None):
    """Forward loss and bottom diff (loss weight 1), Caffe's loop in element order."""
    dt = x.dtype.type
    loss, valid = dt(0), 0
    flat_x, flat_t = x.reshape(-1), t.reshape(-1)
    for xi, ti in zip(flat_x, flat_t, strict=True):
        if ignore is not None and int(ti) == ignore:
            continue
        pos = dt(1) if xi >= 0 else dt(0)
        loss = loss - (xi * (ti - pos) - np.log(dt(1) + np.exp(xi - dt(2) * xi * pos)))
        valid += 1
    count = {"full": x.size, "valid": valid, "batch_size": x.shape[0], "none": 1}
    normalizer = dt(max(1.0, count[normalization]))
    diff = dt(1) / (dt(1) + np.exp(-x)) - t
    if ignore is not None:
        diff = np.where(t.astype(int) == ignore, dt(0), diff)
    return loss / normalizer, diff * (dt(1) / normalizer)


def euclidean(a, b):
    """``EuclideanLossLayer``: loss ``Σ(a−b)²/N/2`` and the diff of ``a`` (``b``'s is minus)."""
    dt = a.dtype.type
    d = a - b
    n = dt(a.shape[0])
    return dt(np.dot(d.reshape(-1), d.reshape(-1))) / n / dt(2), d * (dt(1) / n)


def concat_forward(bottoms, axis):
    """``ConcatLayer::Forward_cpu`` on N-d arrays: ``num_concats = count(0, axis)``,
    ``concat_input_size = count(axis + 1)``; bottom ``i``'s ``n``-th chunk of
    ``bottom_axis·input_size`` values goes to ``top + (n·top_axis + offset)·input_size``."""
    shape = list(bottoms[0].shape)
    shape[axis] = sum(b.shape[axis] for b in bottoms)
    top = np.zeros(int(np.prod(shape)), dtype=bottoms[0].dtype)
    num_concats = int(np.prod(shape[:axis]))
    input_size = int(np.prod(shape[axis + 1 :]))
    offset = 0
    for bottom in bottoms:
        flat, size = bottom.reshape(-1), bottom.shape[axis]
        for n in range(num_concats):
            start = (n * shape[axis] + offset) * input_size
            top[start : start + size * input_size] = flat[
                n * size * input_size : (n + 1) * size * input_size
            ]
        offset += size
    return top.reshape(shape)


def concat_backward(top_diff, bottom_shapes, axis):
    """``ConcatLayer::Backward_cpu``: each bottom's diff is copied back from its chunks."""
    num_concats = int(np.prod(top_diff.shape[:axis]))
    input_size = int(np.prod(top_diff.shape[axis + 1 :]))
    top_axis, flat = top_diff.shape[axis], top_diff.reshape(-1)
    diffs, offset = [], 0
    for shape in bottom_shapes:
        size = shape[axis]
        diff = np.zeros(int(np.prod(shape)), dtype=top_diff.dtype)
        for n in range(num_concats):
            start = (n * top_axis + offset) * input_size
            diff[n * size * input_size : (n + 1) * size * input_size] = flat[
                start : start + size * input_size
            ]
        diffs.append(diff.reshape(shape))
        offset += size
    return diffs
