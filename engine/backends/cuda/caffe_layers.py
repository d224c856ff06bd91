"""CUDA kernels of Caffe's ``Eltwise`` PROD/MAX, ``Power``, ``LRN`` (across channels) and
``Softmax``: the CPU backend's formulas (:mod:`engine.backends.cpu.caffe_layers`) with the same
float32 rounding points. Element-wise kernels are grid-stride loops over flat arrays; LRN and
Softmax give one thread per ``(image, position)`` column, which walks the channels in the
CPU's order (the running window sum of LRN included), so the sums round identically.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from dnupdate.engine.backends.cpu import caffe_layers as cpu
from dnupdate.engine.backends.cuda.compile import device_function

power_value = device_function(cpu.power_value)
power_slope = device_function(cpu.power_slope)
_F0 = np.float32(0.0)


@cuda.jit
def multiply(a, b, out):
    """``out[i] = a[i]·b[i]``."""
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = a[i] * b[i]


@cuda.jit
def divide(a, b, out):
    """``out[i] = a[i]/b[i]``."""
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = a[i] / b[i]


@cuda.jit
def eltwise_max(x, out, mask, index):
    """Fold bottom ``index`` into the running maximum (Caffe's tie rule, see the CPU)."""
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        if index == 0:
            out[i] = x[i]
            mask[i] = 0
        elif index == 1:
            if not out[i] > x[i]:
                out[i] = x[i]
                mask[i] = 1
        elif x[i] > out[i]:
            out[i] = x[i]
            mask[i] = index


@cuda.jit
def eltwise_max_backward(delta, mask, index, dx):
    """``dx[i] += delta[i]`` where ``mask[i] == index``."""
    for i in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        if mask[i] == index:
            dx[i] = dx[i] + delta[i]


@cuda.jit
def power_forward(x, y, power, scale, shift):
    """``y[i] = (shift + scale·x[i])^power`` with Caffe's steps."""
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        y[i] = power_value(x[i], power, scale, shift)


@cuda.jit
def power_backward(x, y, dy, dx, power, scale, shift):
    """``dx[i] += dy[i]·slope`` (nothing when ``power·scale == 0``)."""
    zero = power * scale == 0
    for i in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        if not zero:
            dx[i] = dx[i] + dy[i] * power_slope(x[i], y[i], power, scale, shift)


@cuda.jit
def lrn_forward(x, scale, y, size, alpha_over_size, beta, k):
    """One ``(n, p)`` column of ``x (B, C, HW)`` per iteration: the running window sum over
    channels as the CPU's, then ``y = scale^-beta·x``."""
    batch, channels, hw = x.shape
    pre_pad = (size - 1) // 2
    for t in range(cuda.grid(1), batch * hw, cuda.gridsize(1)):
        n = t // hw
        p = t % hw
        s = k
        for c in range(size):
            j = c - pre_pad
            sq = x[n, j, p] * x[n, j, p] if 0 <= j < channels else _F0
            s = s + alpha_over_size * sq
        scale[n, 0, p] = s
        for c in range(1, channels):
            j = c + size - 1 - pre_pad
            head = x[n, j, p] * x[n, j, p] if j < channels else _F0
            j = c - 1 - pre_pad
            tail = x[n, j, p] * x[n, j, p] if j >= 0 else _F0
            s = scale[n, c - 1, p] + alpha_over_size * head
            scale[n, c, p] = s + (-alpha_over_size) * tail
        for c in range(channels):
            y[n, c, p] = scale[n, c, p] ** (-beta) * x[n, c, p]


@cuda.jit
def lrn_backward(x, y, scale, dy, dx, size, cache_ratio, beta):
    """One ``(n, p)`` column per iteration of the CPU's running-sum backward."""
    batch, channels, hw = x.shape
    inverse_pre_pad = size - (size + 1) // 2
    for t in range(cuda.grid(1), batch * hw, cuda.gridsize(1)):
        n = t // hw
        p = t % hw
        accum = _F0
        for c in range(size - 1):
            j = c - inverse_pre_pad
            if 0 <= j < channels:
                accum = accum + (dy[n, j, p] * y[n, j, p]) / scale[n, j, p]
        for c in range(channels):
            j = c + size - 1 - inverse_pre_pad
            if j < channels:
                accum = accum + (dy[n, j, p] * y[n, j, p]) / scale[n, j, p]
            first = dy[n, c, p] * scale[n, c, p] ** (-beta)
            dx[n, c, p] = dx[n, c, p] + (first + (-cache_ratio) * (x[n, c, p] * accum))
            j = c - inverse_pre_pad
            if j >= 0:
                accum = accum + (-((dy[n, j, p] * y[n, j, p]) / scale[n, j, p]))


@cuda.jit
def softmax_forward(x, y):
    """One ``(n, p)`` column per iteration: max, exp, float32 sum, divide."""
    batch, channels, inner = x.shape
    for t in range(cuda.grid(1), batch * inner, cuda.gridsize(1)):
        n = t // inner
        p = t % inner
        top = x[n, 0, p]
        for c in range(channels):
            top = max(top, x[n, c, p])
        total = _F0
        for c in range(channels):
            e = np.float32(np.exp(x[n, c, p] - top))
            y[n, c, p] = e
            total = total + e
        for c in range(channels):
            y[n, c, p] = y[n, c, p] / total


@cuda.jit
def softmax_backward(y, dy, dx):
    """``dx += (dy − Σ dy·y)·y`` per column."""
    batch, channels, inner = y.shape
    for t in range(cuda.grid(1), batch * inner, cuda.gridsize(1)):
        n = t // inner
        p = t % inner
        dot = _F0
        for c in range(channels):
            dot = dot + dy[n, c, p] * y[n, c, p]
        for c in range(channels):
            dx[n, c, p] = dx[n, c, p] + (dy[n, c, p] - dot) * y[n, c, p]
