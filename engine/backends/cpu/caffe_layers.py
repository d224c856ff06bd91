"""CPU kernels (Numba) of Caffe's element-wise and normalisation layers: ``Eltwise`` PROD and
MAX, ``Power``, ``LRN`` across channels and ``Softmax``.

Every kernel works in float32 with the rounding points of Caffe's CPU code
(``eltwise_layer.cpp``, ``power_layer.cpp``, ``lrn_layer.cpp``, ``softmax_layer.cpp``); where
Caffe *writes* a bottom diff these kernels *add* into ``dx`` (the network zeroes deltas and
several consumers of one blob add up, as Caffe's Split does), so with one consumer the
result is the same float.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

F32 = np.float32


@njit(cache=True)
def _multiply(a, b, out):  # pragma: no cover - compiled
    for i in range(out.size):
        out[i] = a[i] * b[i]


def multiply(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``out = a·b`` element-wise (``caffe_mul``; ``out`` may be ``a`` or ``b``)."""
    _multiply(a.reshape(-1), b.reshape(-1), out.reshape(-1))


@njit(cache=True)
def _divide(a, b, out):  # pragma: no cover - compiled
    for i in range(out.size):
        out[i] = a[i] / b[i]


def divide(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``out = a/b`` element-wise (``caffe_div``)."""
    _divide(a.reshape(-1), b.reshape(-1), out.reshape(-1))


@njit(cache=True)
def _eltwise_max(x, out, mask, index):  # pragma: no cover - compiled
    for i in range(out.size):
        if index == 0:
            out[i] = x[i]
            mask[i] = 0
        elif index == 1:
            if not out[i] > x[i]:  # Caffe: a > b ? a : b (ties and NaN go to bottom 1)
                out[i] = x[i]
                mask[i] = 1
        elif x[i] > out[i]:
            out[i] = x[i]
            mask[i] = index


def eltwise_max(x: np.ndarray, out: np.ndarray, mask: np.ndarray, index: int) -> None:
    """Fold bottom ``index`` into Caffe's Eltwise MAX: bottom 0 initialises ``out``/``mask``;
    bottom 1 wins unless ``out > x``; later bottoms win when ``x > out``."""
    _eltwise_max(x.reshape(-1), out.reshape(-1), mask.reshape(-1), index)


@njit(cache=True)
def _eltwise_max_backward(delta, mask, index, dx):  # pragma: no cover - compiled
    for i in range(dx.size):
        if mask[i] == index:
            dx[i] = dx[i] + delta[i]


def eltwise_max_backward(delta: np.ndarray, mask: np.ndarray, index: int, dx: np.ndarray) -> None:
    """``dx += delta`` where bottom ``index`` held the maximum."""
    _eltwise_max_backward(delta.reshape(-1), mask.reshape(-1), index, dx.reshape(-1))


@njit(cache=True)
def power_value(x, power, scale, shift):  # pragma: no cover - compiled
    """One element of ``Power`` forward with Caffe's steps: scale, shift, then powx."""
    if power * scale == 0:
        return F32(1.0) if power == 0 else F32(shift**power)
    v = x
    if scale != 1:
        v = v * scale
    if shift != 0:
        v = v + shift
    if power != 1:
        v = v**power
    return v


@njit(cache=True)
def power_slope(x, y, power, scale, shift):  # pragma: no cover - compiled
    """``dy/dx`` of ``Power`` as ``PowerLayer::Backward_cpu`` computes it."""
    diff_scale = power * scale
    if diff_scale == 0 or power == 1:
        return diff_scale
    if power == 2:
        g = diff_scale * scale * x
        if shift != 0:
            g = g + diff_scale * shift
        return g
    if shift == 0:
        return (y / x) * power
    v = x
    if scale != 1:
        v = v * scale
    if shift != 0:
        v = v + shift
    g = y / v
    if diff_scale != 1:
        g = g * diff_scale
    return g


@njit(cache=True)
def _power_forward(x, y, power, scale, shift):  # pragma: no cover - compiled
    for i in range(y.size):
        y[i] = power_value(x[i], power, scale, shift)


@njit(cache=True)
def _power_backward(x, y, dy, dx, power, scale, shift):  # pragma: no cover - compiled
    zero = power * scale == 0
    for i in range(dx.size):
        if not zero:
            dx[i] = dx[i] + dy[i] * power_slope(x[i], y[i], power, scale, shift)


def power_forward(x, y, power: float, scale: float, shift: float) -> None:
    """``y = (shift + scale·x)^power`` (constant ``shift^power``, or 1, when
    ``power·scale == 0``)."""
    _power_forward(x.reshape(-1), y.reshape(-1), F32(power), F32(scale), F32(shift))


def power_backward(x, y, dy, dx, power: float, scale: float, shift: float) -> None:
    """``dx += dy·dy/dx`` with Caffe's special cases (power 2, shift 0, power 1)."""
    _power_backward(
        x.reshape(-1), y.reshape(-1), dy.reshape(-1), dx.reshape(-1), F32(power), F32(scale),
        F32(shift),
    )  # fmt: skip


@njit(cache=True, parallel=True)
def _lrn_forward(x, scale, y, size, alpha_over_size, beta, k):  # pragma: no cover - compiled
    batch, channels, hw = x.shape
    pre_pad = (size - 1) // 2
    for n in prange(batch):
        padded = np.zeros((channels + size - 1, hw), dtype=np.float32)
        for c in range(channels):
            for p in range(hw):
                padded[c + pre_pad, p] = x[n, c, p] * x[n, c, p]
        for p in range(hw):
            scale[n, 0, p] = k
        for c in range(size):
            for p in range(hw):
                scale[n, 0, p] = scale[n, 0, p] + alpha_over_size * padded[c, p]
        for c in range(1, channels):
            for p in range(hw):
                s = scale[n, c - 1, p] + alpha_over_size * padded[c + size - 1, p]
                scale[n, c, p] = s + (-alpha_over_size) * padded[c - 1, p]
        for c in range(channels):
            for p in range(hw):
                y[n, c, p] = scale[n, c, p] ** (-beta) * x[n, c, p]


def lrn_forward(x, scale, y, size: int, alpha: float, beta: float, k: float) -> None:
    """Caffe ``CrossChannelForward_cpu`` on ``(B, C, H·W)``: ``scale = k + alpha/size·Σ``
    of the squares over a sliding window of ``size`` channels (zero-padded, the running sum
    updated by adding the head and subtracting the tail), ``y = scale^-beta · x``."""
    alpha_over_size = F32(F32(alpha) / F32(size))
    _lrn_forward(x, scale, y, size, alpha_over_size, F32(beta), F32(k))


@njit(cache=True, parallel=True)
def _lrn_backward(x, y, scale, dy, dx, size, cache_ratio, beta):  # pragma: no cover
    batch, channels, hw = x.shape
    inverse_pre_pad = size - (size + 1) // 2
    for n in prange(batch):
        ratio = np.zeros((channels + size - 1, hw), dtype=np.float32)
        for c in range(channels):
            for p in range(hw):
                ratio[c + inverse_pre_pad, p] = (dy[n, c, p] * y[n, c, p]) / scale[n, c, p]
        accum = np.zeros(hw, dtype=np.float32)
        for c in range(size - 1):
            for p in range(hw):
                accum[p] = accum[p] + ratio[c, p]
        for c in range(channels):
            for p in range(hw):
                accum[p] = accum[p] + ratio[c + size - 1, p]
                first = dy[n, c, p] * scale[n, c, p] ** (-beta)
                grad = first + (-cache_ratio) * (x[n, c, p] * accum[p])
                dx[n, c, p] = dx[n, c, p] + grad
                accum[p] = accum[p] + (-ratio[c, p])


def lrn_backward(x, y, scale, dy, dx, size: int, alpha: float, beta: float) -> None:
    """Caffe ``CrossChannelBackward_cpu``: ``dx += dy·scale^-beta − 2·alpha·beta/size ·
    x · Σ_window dy·y/scale`` (the window sum kept as a running sum, as Caffe)."""
    cache_ratio = F32(2.0 * float(alpha) * float(beta) / size)  # Caffe: a double product
    _lrn_backward(x, y, scale, dy, dx, size, cache_ratio, F32(beta))


@njit(cache=True, parallel=True)
def _softmax_forward(x, y):  # pragma: no cover - compiled
    batch, channels, inner = x.shape
    for n in prange(batch):
        for p in range(inner):
            top = x[n, 0, p]
            for c in range(channels):
                top = max(top, x[n, c, p])
            for c in range(channels):
                y[n, c, p] = math.exp(x[n, c, p] - top)
            total = F32(0.0)
            for c in range(channels):
                total = total + y[n, c, p]
            for c in range(channels):
                y[n, c, p] = y[n, c, p] / total


def caffe_softmax_forward(x: np.ndarray, y: np.ndarray) -> None:
    """Caffe ``Softmax`` over axis 1 of ``(B, C, inner)``: subtract the max, exp, divide by
    the float32 sum (``SoftmaxLayer::Forward_cpu``)."""
    _softmax_forward(x, y)


@njit(cache=True, parallel=True)
def _softmax_backward(y, dy, dx):  # pragma: no cover - compiled
    batch, channels, inner = y.shape
    for n in prange(batch):
        for p in range(inner):
            dot = F32(0.0)
            for c in range(channels):
                dot = dot + dy[n, c, p] * y[n, c, p]
            for c in range(channels):
                dx[n, c, p] = dx[n, c, p] + (dy[n, c, p] - dot) * y[n, c, p]


def caffe_softmax_backward(y: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> None:
    """``dx += (dy − Σ_c dy·y)·y`` per position (``SoftmaxLayer::Backward_cpu``)."""
    _softmax_backward(y, dy, dx)
