"""Batch-norm kernels (engine.backends.cpu.batchnorm) with full blocks of ``LANES`` channels and
a tail: against libdarknet's own ``blas.c``/``batchnorm_layer.c`` functions (in
``forward_batchnorm_layer``'s and ``backward_batchnorm_layer``'s order), and bit for bit between
one and two threads (the parallel loops own their channels and keep each channel's summation
order)."""

from __future__ import annotations

import ctypes
import functools

import numba
import numpy as np
import pytest

from dnupdate.engine.backends.cpu import batchnorm as bn
from tests.numba_threads import with_threads as _with_threads
from tests.reference.batchnorm import darknet_layer_data

#: full blocks only, full blocks and a tail, a tail only, a connected layer's (B, outputs)
SHAPES = [(4, 16, 5, 5), (3, 20, 3, 3), (2, 5, 4, 4), (6, 19)]

_F = ctypes.POINTER(ctypes.c_float)
_I = ctypes.c_int
_PROTOTYPES = {
    "mean_cpu": [_F, _I, _I, _I, _F],
    "variance_cpu": [_F, _F, _I, _I, _I, _F],
    "normalize_cpu": [_F, _F, _F, _I, _I, _I],
    "scale_bias": [_F, _F, _I, _I, _I],
    "add_bias": [_F, _F, _I, _I, _I],
    "scal_cpu": [_I, ctypes.c_float, _F, _I],
    "axpy_cpu": [_I, ctypes.c_float, _F, _I, _F, _I],
    "backward_bias": [_F, _F, _I, _I, _I],
    "backward_scale_cpu": [_F, _F, _I, _I, _I, _F],
    "mean_delta_cpu": [_F, _F, _I, _I, _I, _F],
    "variance_delta_cpu": [_F, _F, _F, _F, _I, _I, _I, _F],
    "normalize_delta_cpu": [_F, _F, _F, _F, _F, _I, _I, _I, _F],
}


@pytest.fixture(scope="module")
def blas(libdarknet):
    for name, argtypes in _PROTOTYPES.items():
        getattr(libdarknet, name).argtypes = argtypes
        getattr(libdarknet, name).restype = None
    return libdarknet


def _p(array: np.ndarray):
    assert array.dtype == np.float32 and array.flags.c_contiguous
    return array.ctypes.data_as(_F)


_data = functools.partial(darknet_layer_data, key="x", offset=0.7)


def _darknet_ours(d):
    """One training forward, one backward and one inference forward with our kernels."""
    shape, channels = d["x"].shape, d["x"].shape[1]
    out = d["x"].copy()
    x, x_norm = np.empty_like(out), np.empty_like(out)
    mean, variance = np.empty(channels, np.float32), np.empty(channels, np.float32)
    rm, rv = d["rolling_mean"].copy(), d["rolling_variance"].copy()
    bn.darknet_batchnorm_forward_train(
        out, x, x_norm, mean, variance, rm, rv, d["scales"], d["biases"]
    )
    delta = d["delta"].copy()
    bias_updates, scale_updates = d["updates"].copy(), d["updates"][::-1].copy()
    mean_delta, variance_delta = np.empty(channels, np.float32), np.empty(channels, np.float32)
    bn.darknet_batchnorm_backward(
        delta, x, x_norm, mean, variance, d["scales"], bias_updates, scale_updates,
        mean_delta, variance_delta,
    )  # fmt: skip
    infer = d["x"].copy()
    bn.darknet_batchnorm_forward_infer(infer, rm, rv, d["scales"], d["biases"])
    assert infer.shape == shape
    return dict(out=out, x=x, x_norm=x_norm, mean=mean, variance=variance, rm=rm, rv=rv,
                delta=delta, bias_updates=bias_updates, scale_updates=scale_updates,
                mean_delta=mean_delta, variance_delta=variance_delta, infer=infer)  # fmt: skip


def _darknet_theirs(lib, d):
    """The same with libdarknet's functions, in ``batchnorm_layer.c``'s order (CPU)."""
    b, c = d["x"].shape[:2]
    s = int(np.prod(d["x"].shape[2:], dtype=np.int64))
    out = d["x"].copy()
    x = out.copy()
    mean, variance = np.zeros(c, np.float32), np.zeros(c, np.float32)
    rm, rv = d["rolling_mean"].copy(), d["rolling_variance"].copy()
    lib.mean_cpu(_p(out), b, c, s, _p(mean))
    lib.variance_cpu(_p(out), _p(mean), b, c, s, _p(variance))
    lib.scal_cpu(c, 0.99, _p(rm), 1)
    lib.axpy_cpu(c, 0.01, _p(mean), 1, _p(rm), 1)
    lib.scal_cpu(c, 0.99, _p(rv), 1)
    lib.axpy_cpu(c, 0.01, _p(variance), 1, _p(rv), 1)
    lib.normalize_cpu(_p(out), _p(mean), _p(variance), b, c, s)
    x_norm = out.copy()
    lib.scale_bias(_p(out), _p(d["scales"]), b, c, s)
    lib.add_bias(_p(out), _p(d["biases"]), b, c, s)

    delta = d["delta"].copy()
    bias_updates, scale_updates = d["updates"].copy(), d["updates"][::-1].copy()
    mean_delta, variance_delta = np.zeros(c, np.float32), np.zeros(c, np.float32)
    lib.backward_bias(_p(bias_updates), _p(delta), b, c, s)
    lib.backward_scale_cpu(_p(x_norm), _p(delta), b, c, s, _p(scale_updates))
    lib.scale_bias(_p(delta), _p(d["scales"]), b, c, s)
    lib.mean_delta_cpu(_p(delta), _p(variance), b, c, s, _p(mean_delta))
    lib.variance_delta_cpu(_p(x), _p(delta), _p(mean), _p(variance), b, c, s, _p(variance_delta))
    lib.normalize_delta_cpu(_p(x), _p(mean), _p(variance), _p(mean_delta), _p(variance_delta),
                            b, c, s, _p(delta))  # fmt: skip

    infer = d["x"].copy()
    lib.normalize_cpu(_p(infer), _p(rm), _p(rv), b, c, s)
    lib.scale_bias(_p(infer), _p(d["scales"]), b, c, s)
    lib.add_bias(_p(infer), _p(d["biases"]), b, c, s)
    return dict(out=out, x=x, x_norm=x_norm, mean=mean, variance=variance, rm=rm, rv=rv,
                delta=delta, bias_updates=bias_updates, scale_updates=scale_updates,
                mean_delta=mean_delta, variance_delta=variance_delta, infer=infer)  # fmt: skip


def _bitwise(ours: dict, theirs: dict, skip=()) -> None:
    for key in theirs:
        if key not in skip:
            assert ours[key].tobytes() == theirs[key].tobytes(), key


#: libdarknet's (Debian's build) ``sum_array`` and ``normalize_delta_cpu`` round differently in
#: the last bits (its ``backward_bias`` sums are not the plain loop order); everything else of
#: the forward and backward pass, the statistics and ``mean_delta``/``variance_delta``
#: included, is bit for bit
_LAST_BITS = ("bias_updates", "scale_updates", "delta")


@pytest.fixture
def two_threads():
    """Run with two Numba threads (restored afterwards); the machine may have one core."""
    before = numba.get_num_threads()
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    yield
    numba.set_num_threads(before)


@pytest.mark.parametrize("shape", SHAPES)
def test_darknet_batchnorm_matches_libdarknet(blas, shape, two_threads):
    d = _data(shape, 1)
    ours, theirs = _darknet_ours(d), _darknet_theirs(blas, d)
    _bitwise(ours, theirs, skip=_LAST_BITS)
    for key in _LAST_BITS:
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("shape", SHAPES)
def test_darknet_batchnorm_does_not_depend_on_threads(shape):
    d = _data(shape, 2)
    _bitwise(_with_threads(2, lambda: _darknet_ours(d)), _with_threads(1, lambda: _darknet_ours(d)))


def _caffe_ours(d):
    shape, channels = d["x"].shape, d["x"].shape[1]
    x, dy = d["x"], d["delta"]
    y = np.empty_like(x)
    mean, std = np.empty(channels, np.float32), np.empty(channels, np.float32)
    mean_sum, variance_sum = d["rolling_mean"].copy(), d["rolling_variance"].copy()
    factor = np.array([2.5], np.float32)
    bn.caffe_batchnorm_forward_train(x, y, mean, std, mean_sum, variance_sum, factor, 0.9, 1e-5)
    dx = np.empty_like(x)
    bn.caffe_batchnorm_backward(y, dy, dx, std)
    dx_global = np.empty_like(x)
    bn.caffe_batchnorm_backward(y, dy, dx_global, std, use_global_stats=True)
    y_global = np.empty_like(x)
    mean_g, std_g = np.empty_like(mean), np.empty_like(std)
    bn.caffe_batchnorm_forward_global(x, y_global, mean_g, std_g, mean_sum, variance_sum, factor)
    scaled, shifted = np.empty_like(x), x.copy()
    bn.caffe_scale_forward(x, d["scales"], None, scaled)
    bn.caffe_scale_forward(shifted, d["scales"], d["biases"], shifted)  # in place
    scale_dx = np.empty_like(x)
    gamma_diff, beta_diff = d["updates"].copy(), d["updates"][::-1].copy()
    bn.caffe_scale_backward(x, dy, d["scales"], scale_dx, gamma_diff, beta_diff)
    assert y.shape == shape
    return dict(y=y, mean=mean, std=std, mean_sum=mean_sum, variance_sum=variance_sum, dx=dx,
                dx_global=dx_global, y_global=y_global, mean_g=mean_g, std_g=std_g,
                scaled=scaled, shifted=shifted, scale_dx=scale_dx, gamma_diff=gamma_diff,
                beta_diff=beta_diff)  # fmt: skip


@pytest.mark.parametrize("shape", SHAPES)
def test_caffe_batchnorm_and_scale_do_not_depend_on_threads(shape):
    d = _data(shape, 3)
    _bitwise(_with_threads(2, lambda: _caffe_ours(d)), _with_threads(1, lambda: _caffe_ours(d)))


@pytest.mark.parametrize("shape", SHAPES)
def test_caffe_per_channel_affine_passes_are_float32_elementwise(shape):
    """The shared per-plane kernel: each pass is the float32 expression of the old loops."""
    d = _data(shape, 4)
    x, gamma, beta = d["x"], d["scales"], d["biases"]
    c = (1, shape[1]) + (1,) * (len(shape) - 2)
    out = np.empty_like(x)
    bn.caffe_scale_forward(x, gamma, beta, out)
    assert out.tobytes() == (gamma.reshape(c) * x + beta.reshape(c)).tobytes()
    bn.caffe_scale_forward(x, gamma, None, out)
    assert out.tobytes() == (gamma.reshape(c) * x).tobytes()
    std = d["rolling_variance"]
    bn.caffe_batchnorm_backward(x, x, out, std, use_global_stats=True)
    assert out.tobytes() == (x / std.reshape(c)).tobytes()
