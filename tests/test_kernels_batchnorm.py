"""Batch-norm kernels (engine.backends.cpu.batchnorm) against the float64 NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest

from dnupdate.engine.backends.cpu import batchnorm as bn
from dnupdate.engine.backends.cpu.activations import KernelArgumentError
from tests.reference import batchnorm as ref

#: the last two have full blocks of ``bn.LANES`` channels (the unrolled parallel path)
SHAPES = [
    (4, 3, 5, 5),
    (1, 2, 3, 3),
    (5, 7),
    (3, 1, 2, 9),
    (2, 4, 1, 1),
    (3, 8, 4, 4),
    (2, 19, 3, 3),
]


def _data(shape, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=shape) * 2.0 + 0.7).astype(np.float32)
    channels = shape[1]
    scales = rng.uniform(0.5, 1.5, channels).astype(np.float32)
    biases = rng.normal(size=channels).astype(np.float32)
    return rng, x, scales, biases


def _bcs(a):
    return a.reshape(a.shape[0], a.shape[1], -1)


def _close(actual, expected, rtol=2e-6, atol=2e-6):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("shape", SHAPES)
def test_darknet_forward_train(shape):
    rng, x, scales, biases = _data(shape)
    channels = shape[1]
    rm = rng.normal(size=channels).astype(np.float32)
    rv = rng.uniform(0.5, 2.0, channels).astype(np.float32)
    out = x.copy()
    x_saved, x_norm = np.empty_like(x), np.empty_like(x)
    mean, var = np.empty(channels, np.float32), np.empty(channels, np.float32)
    our_rm, our_rv = rm.copy(), rv.copy()
    bn.darknet_batchnorm_forward_train(
        out, x_saved, x_norm, mean, var, our_rm, our_rv, scales, biases
    )
    e_out, e_norm, e_mean, e_var, e_rm, e_rv = ref.darknet_forward_train(
        _bcs(x), scales, biases, rm, rv
    )
    assert np.array_equal(x_saved, x)
    _close(mean, e_mean)
    _close(var, e_var, rtol=1e-5)
    _close(our_rm, e_rm)
    _close(our_rv, e_rv, rtol=1e-5)
    _close(_bcs(x_norm), e_norm, rtol=1e-5, atol=1e-5)
    _close(_bcs(out), e_out, rtol=1e-5, atol=1e-5)


def test_darknet_variance_is_unbiased_and_eps_outside_sqrt():
    x = np.array([[[1.0, 3.0]]], np.float32)  # one channel, m = 2: mean 2, unbiased var 2
    out = x.copy()
    buffers = [np.empty_like(x), np.empty_like(x)]
    mean, var = np.empty(1, np.float32), np.empty(1, np.float32)
    rm, rv = np.zeros(1, np.float32), np.zeros(1, np.float32)
    one, zero = np.ones(1, np.float32), np.zeros(1, np.float32)
    bn.darknet_batchnorm_forward_train(out, *buffers, mean, var, rm, rv, one, zero)
    assert var[0] == 2.0 and mean[0] == 2.0
    assert out[0, 0, 1] == np.float32(1.0 / (np.sqrt(2.0) + np.float32(1e-6)))
    assert rm[0] == np.float32(0.01) * np.float32(2.0)  # rolling stats start at 0


def test_darknet_single_sample_variance_is_nan():
    x = np.ones((1, 2), np.float32)
    out = x.copy()
    mean, var = np.empty(2, np.float32), np.empty(2, np.float32)
    rm, rv = np.zeros(2, np.float32), np.zeros(2, np.float32)
    bn.darknet_batchnorm_forward_train(
        out,
        np.empty_like(x),
        np.empty_like(x),
        mean,
        var,
        rm,
        rv,
        np.ones(2, np.float32),
        np.zeros(2, np.float32),
    )
    assert np.isnan(var).all()


@pytest.mark.parametrize("shape", SHAPES)
def test_darknet_forward_infer(shape):
    rng, x, scales, biases = _data(shape, 1)
    rm = rng.normal(size=shape[1]).astype(np.float32)
    rv = rng.uniform(0.5, 2.0, shape[1]).astype(np.float32)
    out = x.copy()
    bn.darknet_batchnorm_forward_infer(out, rm, rv, scales, biases)
    _close(_bcs(out), ref.darknet_forward_infer(_bcs(x), rm, rv, scales, biases), 1e-5, 1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_darknet_backward(shape):
    rng, x, scales, _ = _data(shape, 2)
    channels = shape[1]
    mean, var = (v.astype(np.float32) for v in ref.darknet_statistics(_bcs(x)))
    if not np.isfinite(var).all():
        pytest.skip("m = 1: darknet's variance is NaN")
    x_norm = ref.darknet_normalize(_bcs(x), mean, var).reshape(shape)
    delta = rng.normal(size=shape).astype(np.float32)
    bias_updates = rng.normal(size=channels).astype(np.float32)
    scale_updates = rng.normal(size=channels).astype(np.float32)
    e_delta, e_bias, e_scale = ref.darknet_backward(
        _bcs(delta), _bcs(x), _bcs(x_norm), mean, var, scales
    )
    ours = delta.copy()
    bu, su = bias_updates.copy(), scale_updates.copy()
    md, vd = np.empty(channels, np.float32), np.empty(channels, np.float32)
    bn.darknet_batchnorm_backward(ours, x, x_norm, mean, var, scales, bu, su, md, vd)
    _close(bu, bias_updates + e_bias, 1e-5, 1e-5)
    _close(su, scale_updates + e_scale, 1e-5, 1e-5)
    _close(_bcs(ours), e_delta, 1e-4, 1e-5)


def test_darknet_backward_keeps_the_quirks():
    """The quirky formula differs from the exact gradient of the forward pass."""
    rng, x, scales, _ = _data((6, 2, 3, 3), 3)
    mean, var = (v.astype(np.float32) for v in ref.darknet_statistics(_bcs(x)))
    x_norm = ref.darknet_normalize(_bcs(x), mean, var).reshape(x.shape)
    delta = rng.normal(size=x.shape).astype(np.float32)
    ours = delta.copy()
    scratch = [np.zeros(2, np.float32) for _ in range(4)]
    bn.darknet_batchnorm_backward(ours, x, x_norm, mean, var, scales, *scratch)
    quirky, _, _ = ref.darknet_backward(_bcs(delta), _bcs(x), _bcs(x_norm), mean, var, scales)
    _close(_bcs(ours), quirky, 1e-4, 1e-5)
    # the textbook gradient (biased var, full mean term) is clearly different
    m = 6 * 9
    d = _bcs(delta) * scales[None, :, None]
    xn = _bcs(x_norm).astype(np.float64)
    textbook = (
        d - d.mean(axis=(0, 2), keepdims=True) - xn * (d * xn).mean(axis=(0, 2), keepdims=True)
    ) / np.sqrt(var[None, :, None] * (m - 1) / m)
    assert np.max(np.abs(_bcs(ours) - textbook)) > 1e-3


@pytest.mark.parametrize("shape", SHAPES)
def test_caffe_batchnorm_train_and_global(shape):
    rng, x, _, _ = _data(shape, 4)
    channels = shape[1]
    mean_sum = rng.normal(size=channels).astype(np.float32)
    var_sum = rng.uniform(0.5, 2, channels).astype(np.float32)
    s = np.array([2.5], np.float32)
    y = np.empty_like(x)
    mean, std = np.empty(channels, np.float32), np.empty(channels, np.float32)
    ms, vs, sf = mean_sum.copy(), var_sum.copy(), s.copy()
    bn.caffe_batchnorm_forward_train(x, y, mean, std, ms, vs, sf, 0.9, 1e-5)
    e_y, e_mean, e_std, e_ms, e_vs, _ = ref.caffe_forward_train(
        _bcs(x), mean_sum, var_sum, 2.5, 0.9, 1e-5
    )
    _close(_bcs(y), e_y, 1e-5, 1e-5)
    _close(mean, e_mean)
    _close(std, e_std)
    _close(ms, e_ms)
    _close(vs, e_vs, 1e-5)
    assert sf[0] == np.float32(np.float32(2.5) * np.float32(0.9)) + np.float32(1)

    y2 = np.empty_like(x)
    bn.caffe_batchnorm_forward_global(x, y2, mean, std, ms, vs, sf, 1e-5)
    e_y2, _, e_std2 = ref.caffe_forward_global(_bcs(x), ms, vs, float(sf[0]), 1e-5)
    _close(_bcs(y2), e_y2, 1e-5, 1e-5)
    _close(std, e_std2)


def test_caffe_global_with_zero_scale_factor_uses_zero_statistics():
    x = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    y = np.empty_like(x)
    mean, std = np.empty(2, np.float32), np.empty(2, np.float32)
    bn.caffe_batchnorm_forward_global(
        x,
        y,
        mean,
        std,
        np.ones(2, np.float32),
        np.ones(2, np.float32),
        np.zeros(1, np.float32),
        1e-5,
    )
    assert np.all(mean == 0)
    _close(y, x / np.sqrt(np.float32(1e-5)))


def test_caffe_batchnorm_in_place():
    _, x, _, _ = _data((3, 2, 4), 5)
    expected = np.empty_like(x)

    def args():
        sizes = (2, 2, 2, 2, 1)
        return [np.zeros(n, np.float32) for n in sizes]

    bn.caffe_batchnorm_forward_train(x, expected, *args())
    bn.caffe_batchnorm_forward_train(x, x, *args())
    assert np.array_equal(x, expected)


@pytest.mark.parametrize("shape", SHAPES)
def test_caffe_batchnorm_backward(shape):
    rng, x, _, _ = _data(shape, 6)
    channels = shape[1]
    y = np.empty_like(x)
    mean, std = np.empty(channels, np.float32), np.empty(channels, np.float32)
    bn.caffe_batchnorm_forward_train(
        x,
        y,
        mean,
        std,
        np.zeros(channels, np.float32),
        np.zeros(channels, np.float32),
        np.zeros(1, np.float32),
    )
    dy = rng.normal(size=shape).astype(np.float32)
    dx = np.empty_like(x)
    bn.caffe_batchnorm_backward(y, dy, dx, std)
    _close(_bcs(dx), ref.caffe_backward(_bcs(y), _bcs(dy), std), 1e-4, 2e-5)
    bn.caffe_batchnorm_backward(y, dy, dx, std, use_global_stats=True)
    _close(_bcs(dx), _bcs(dy) / std[None, :, None], 1e-6, 1e-7)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_beta", [False, True])
def test_caffe_scale(shape, with_beta):
    rng, x, gamma, beta = _data(shape, 7)
    channels = shape[1]
    y = np.empty_like(x)
    bn.caffe_scale_forward(x, gamma, beta if with_beta else None, y)
    _close(_bcs(y), ref.caffe_scale(_bcs(x), gamma, beta if with_beta else None), 1e-6, 1e-6)
    dy = rng.normal(size=shape).astype(np.float32)
    dx = np.empty_like(x)
    old_gamma_diff = rng.normal(size=channels).astype(np.float32)
    old_beta_diff = rng.normal(size=channels).astype(np.float32)
    gd, bd = old_gamma_diff.copy(), old_beta_diff.copy()
    bn.caffe_scale_backward(x, dy, gamma, dx, gd, bd if with_beta else None)
    expected_gamma = (_bcs(dy).astype(np.float64) * _bcs(x)).sum(axis=(0, 2))
    batch, spatial = shape[0], _bcs(x).shape[2]
    if not bn.caffe_scale_overwrites_gamma_diff(batch, channels, spatial):
        expected_gamma = expected_gamma + old_gamma_diff
    _close(gd, expected_gamma, 1e-5, 1e-5)
    if with_beta:
        _close(bd, old_beta_diff + _bcs(dy).astype(np.float64).sum(axis=(0, 2)), 1e-5, 1e-5)
    _close(dx, dy * gamma.reshape((1, channels) + (1,) * (len(shape) - 2)), 1e-7, 1e-7)


def test_caffe_scale_batch_one_quirk():
    assert bn.caffe_scale_overwrites_gamma_diff(1, 3, 4)
    assert bn.caffe_scale_overwrites_gamma_diff(1, 3, 1)
    assert not bn.caffe_scale_overwrites_gamma_diff(1, 1, 4)
    assert not bn.caffe_scale_overwrites_gamma_diff(2, 3, 4)


def test_wrong_buffers_are_refused():
    x = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(KernelArgumentError, match="mean"):
        bn.darknet_batchnorm_forward_train(
            x, x.copy(), x.copy(), np.zeros(2, np.float32), *[np.zeros(3, np.float32)] * 5
        )
    with pytest.raises(KernelArgumentError, match="x_norm"):
        bn.darknet_batchnorm_forward_train(
            x, x.copy(), np.zeros((2, 3), np.float32), *[np.zeros(3, np.float32)] * 6
        )
