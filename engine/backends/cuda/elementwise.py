"""Element-wise CUDA kernels: fill/copy/axpy, darknet and Caffe activations, bias add, dropout.

Every kernel is a grid-stride loop over flat (contiguous) device arrays, one element per
iteration, so results do not depend on the launch size. The activation math is the CPU
backend's own per-element functions (``engine.backends.cpu.activations``) compiled for the
device by :func:`engine.backends.cuda.compile.device_function`; the few formulas the CPU
backend writes inside its array loops (Caffe Sigmoid/TanH backward, dropout) are transcribed
here with the same float32/double rounding points.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from dnupdate.engine.backends.cpu import activations as cpu_act
from dnupdate.engine.backends.cuda.compile import device_function

_F1 = np.float32(1.0)
_F0 = np.float32(0.0)

darknet_activate = device_function(cpu_act.darknet_activate)
darknet_gradient = device_function(cpu_act.darknet_gradient)
caffe_relu_activate = device_function(cpu_act.caffe_relu_activate)
caffe_relu_gradient = device_function(cpu_act.caffe_relu_gradient)
caffe_sigmoid_activate = device_function(cpu_act.caffe_sigmoid_activate)
caffe_tanh_activate = device_function(cpu_act.caffe_tanh_activate)


@cuda.jit
def fill(out, value):
    """``out[i] = value``."""
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = value


@cuda.jit
def copy(src, out):
    """``out[i] = src[i]``."""
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = src[i]


@cuda.jit
def axpy(alpha, x, y):
    """``y[i] = y[i] + alpha·x[i]`` (product and sum each rounded to float32)."""
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        y[i] = y[i] + alpha * x[i]


@cuda.jit
def scale(out, factor):
    """``out[i] = out[i]·factor`` (float32)."""
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = out[i] * factor


@cuda.jit
def bias_add(y, bias, channels, spatial):
    """``y[b, c, j] += bias[c]`` over the flat ``(B, C, N)`` array."""
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        c = (i // spatial) % channels
        y[i] = y[i] + bias[c]


@cuda.jit
def activate(x, code):
    """darknet ``activate_array``: ``x[i] ← f(x[i])``."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        x[i] = darknet_activate(x[i], code)


@cuda.jit
def gradient(y, code, delta):
    """darknet ``gradient_array``: ``delta[i] ← delta[i]·g(y[i])`` from the output ``y``."""
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        delta[i] = delta[i] * darknet_gradient(y[i], code)


@cuda.jit
def caffe_relu_forward(x, y, negative_slope):
    """Caffe ReLU: ``y = max(x, 0) + slope·min(x, 0)``."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        y[i] = caffe_relu_activate(x[i], negative_slope)


@cuda.jit
def caffe_relu_backward(x, dy, dx, negative_slope):
    """Caffe ReLU backward from the input: ``dx = dy·([x > 0] + slope·[x ≤ 0])``."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        dx[i] = dy[i] * caffe_relu_gradient(x[i], negative_slope)


@cuda.jit
def caffe_sigmoid_forward(x, y):
    """Caffe Sigmoid ``0.5·tanh(0.5·x) + 0.5`` in double, rounded."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        y[i] = caffe_sigmoid_activate(x[i])


@cuda.jit
def caffe_sigmoid_backward(y, dy, dx):
    """``dx = float(dy·y)·(1. − y)`` in double, rounded (``sigmoid_layer.cpp``)."""
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        dx[i] = np.float32(np.float64(dy[i] * y[i]) * (1.0 - np.float64(y[i])))


@cuda.jit
def caffe_tanh_forward(x, y):
    """Caffe TanH ``tanhf(x)``."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        y[i] = caffe_tanh_activate(x[i])


@cuda.jit
def caffe_tanh_backward(y, dy, dx):
    """``dx = dy·(1 − y²)`` in float32."""
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        dx[i] = dy[i] * (_F1 - y[i] * y[i])


@cuda.jit
def darknet_dropout(values, draws, probability, keep_scale):
    """darknet dropout in place: ``0`` where ``draws < p``, else ``values·scale``."""
    for i in range(cuda.grid(1), values.size, cuda.gridsize(1)):
        if draws[i] < probability:
            values[i] = _F0
        else:
            values[i] = values[i] * keep_scale


@cuda.jit
def caffe_dropout_mask(draws, ratio, mask):
    """Caffe mask from float uniforms: ``mask = 1`` iff ``r > p``."""
    for i in range(cuda.grid(1), draws.size, cuda.gridsize(1)):
        mask[i] = 1 if draws[i] > ratio else 0


@cuda.jit
def caffe_apply_mask(source, mask, keep_scale, target):
    """``target = (source·mask)·scale`` (float32)."""
    for i in range(cuda.grid(1), source.size, cuda.gridsize(1)):
        target[i] = (source[i] * np.float32(mask[i])) * keep_scale
