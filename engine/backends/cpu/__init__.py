"""The CPU backend: NumPy arrays, BLAS GEMM and Numba ``@njit(cache=True)`` kernels.

:class:`CpuBackend` gathers the kernels of this package behind the method names of
:class:`engine.backends.base.Backend`. Convolution, connected and pooling kernels live in
``conv.py``, ``pool.py`` and ``blas.py``; the element-wise, normalisation, dropout and loss
kernels in ``activations.py``, ``batchnorm.py``, ``dropout.py`` and ``softmax.py``.
"""

from __future__ import annotations

import numpy as np

from engine.backends.base import Backend, BackendError
from engine.backends.cpu import activations, blas, conv, pool


class CpuBackend(Backend):
    """NumPy/Numba implementation of :class:`~engine.backends.base.Backend` (deterministic:
    every parallel loop iteration owns its output slice)."""

    name = "cpu"

    # ---- memory ---------------------------------------------------------------------------
    def empty(self, shape, dtype=np.float32):
        return np.empty(shape, dtype=dtype)

    def zeros(self, shape, dtype=np.float32):
        return np.zeros(shape, dtype=dtype)

    def to_host(self, array):
        return np.array(array, copy=True)

    def copy_from_host(self, host, out):
        out[...] = host

    def fill(self, out, value):
        out.fill(value)

    def copy(self, src, out):
        np.copyto(out, src)

    # ---- dense algebra --------------------------------------------------------------------
    matmul = staticmethod(blas.matmul)
    matmul_add = staticmethod(blas.matmul_add)
    sum_leading_add = staticmethod(blas.sum_leading_add)
    accumulate = staticmethod(blas.accumulate)

    def scale(self, out, factor):
        out *= np.float32(factor)

    # ---- convolution and pooling ----------------------------------------------------------
    im2col = staticmethod(conv.im2col)
    col2im_add = staticmethod(conv.col2im_add)
    flat_as_col = staticmethod(conv.flat_as_col)
    flat_as_col_add = staticmethod(conv.flat_as_col_add)
    bias_add = staticmethod(conv.bias_add)
    bias_grad = staticmethod(conv.bias_grad)
    maxpool_forward = staticmethod(pool.maxpool_forward)
    maxpool_backward = staticmethod(pool.maxpool_backward)
    avepool_forward = staticmethod(pool.avepool_forward)
    avepool_backward = staticmethod(pool.avepool_backward)

    # ---- activations ----------------------------------------------------------------------
    def activation_code(self, activation):
        try:
            return activations.activation_code(activation)
        except ValueError as exc:
            raise BackendError(str(exc)) from exc

    activate = staticmethod(activations.activate)
    activation_gradient = staticmethod(activations.gradient)

    def caffe_activation_forward(self, x, y, activation, negative_slope):
        if activation == "relu":
            activations.caffe_relu_forward(x, y, negative_slope)
        elif activation == "logistic":
            activations.caffe_sigmoid_forward(x, y)
        elif activation == "tanh":
            activations.caffe_tanh_forward(x, y)
        else:
            raise BackendError(f"no Caffe activation {activation!r} (relu, logistic, tanh)")

    def caffe_activation_backward(self, x, y, dy, dx, activation, negative_slope):
        if activation == "relu":
            activations.caffe_relu_backward(x, dy, dx, negative_slope)
        elif activation == "logistic":
            activations.caffe_sigmoid_backward(y, dy, dx)
        elif activation == "tanh":
            activations.caffe_tanh_backward(y, dy, dx)
        else:
            raise BackendError(f"no Caffe activation {activation!r} (relu, logistic, tanh)")


def missing(what: str) -> BackendError:
    """The error raised when a kernel module of this backend is not available."""
    return BackendError(f"the CPU backend has no {what} kernel yet")


def _optional(module: str):
    """Import a kernel module of this package, or None while it does not exist yet."""
    import importlib

    try:
        return importlib.import_module(f"engine.backends.cpu.{module}")
    except ModuleNotFoundError as exc:
        if exc.name != f"engine.backends.cpu.{module}":
            raise
        return None
