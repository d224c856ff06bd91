"""Plain-NumPy (float64) references for darknet's in-layer batch norm and Caffe BatchNorm/Scale.

Arrays are ``(B, C, S)`` (S = spatial positions). These are the formulas of spec/darknet.md 7.3
and spec/caffe.md 7.9 in float64, without darknet's float32 accumulation order; kernels are
compared with them at float32 tolerances.
"""

from __future__ import annotations

import numpy as np


def _d(a):
    return np.asarray(a, dtype=np.float64)


def _bc(v):
    return _d(v)[None, :, None]


def darknet_statistics(x):
    """Per-channel mean and UNBIASED variance over batch and space."""
    x = _d(x)
    mean = x.mean(axis=(0, 2))
    m = x.shape[0] * x.shape[2]
    var = ((x - _bc(mean)) ** 2).sum(axis=(0, 2)) / (m - 1)
    return mean, var


def darknet_normalize(x, mean, var):
    """``(x − mean)/(sqrt(var) + 1e-6)`` (darknet's float32 ``.000001f``), as float32."""
    eps = float(np.float32(1e-6))
    return ((_d(x) - _bc(mean)) / (np.sqrt(_bc(var)) + eps)).astype(np.float32)


def darknet_forward_train(x, scales, biases, rolling_mean, rolling_var):
    """Returns (output, x_norm, mean, var, rolling_mean, rolling_var), float64."""
    mean, var = darknet_statistics(x)
    eps = float(np.float32(1e-6))
    x_norm = (_d(x) - _bc(mean)) / (np.sqrt(_bc(var)) + eps)
    out = x_norm * _bc(scales) + _bc(biases)
    rm = 0.99 * _d(rolling_mean) + 0.01 * mean
    rv = 0.99 * _d(rolling_var) + 0.01 * var
    return out, x_norm, mean, var, rm, rv


def darknet_forward_infer(x, rolling_mean, rolling_var, scales, biases):
    eps = float(np.float32(1e-6))
    x_norm = (_d(x) - _bc(rolling_mean)) / (np.sqrt(_bc(rolling_var)) + eps)
    return x_norm * _bc(scales) + _bc(biases)


def darknet_backward(delta, x, x_norm, mean, var, scales):
    """darknet's backward with its quirks. Returns (delta_in, bias_grad, scale_grad)."""
    delta = _d(delta)
    x = _d(x)
    m = x.shape[0] * x.shape[2]
    bias_grad = delta.sum(axis=(0, 2))
    scale_grad = (delta * _d(x_norm)).sum(axis=(0, 2))
    d = delta * _bc(scales)
    v = _bc(np.float32(np.asarray(var, np.float32) + np.float32(1e-5)))
    mean_delta = d.sum(axis=(0, 2), keepdims=True) * (-1.0 / np.sqrt(v))
    variance_delta = (d * (x - _bc(mean))).sum(axis=(0, 2), keepdims=True) * (-0.5 * v**-1.5)
    out = d / np.sqrt(v) + variance_delta * 2.0 * (x - _bc(mean)) / m + mean_delta / m
    return out, bias_grad, scale_grad


def caffe_forward_train(x, mean_sum, var_sum, s, fraction, eps):
    """Returns (y, mean, std, mean_sum, var_sum, s), float64."""
    x = _d(x)
    m = x.shape[0] * x.shape[2]
    mean = x.mean(axis=(0, 2))
    var = ((x - _bc(mean)) ** 2).mean(axis=(0, 2))
    std = np.sqrt(var + eps)
    y = (x - _bc(mean)) / _bc(std)
    correction = m / (m - 1) if m > 1 else 1.0
    return (
        y,
        mean,
        std,
        fraction * _d(mean_sum) + mean,
        fraction * _d(var_sum) + correction * var,
        fraction * s + 1.0,
    )


def caffe_forward_global(x, mean_sum, var_sum, s, eps):
    f = 0.0 if s == 0 else 1.0 / s
    mean = f * _d(mean_sum)
    std = np.sqrt(f * _d(var_sum) + eps)
    return (_d(x) - _bc(mean)) / _bc(std), mean, std


def caffe_backward(y, dy, std):
    """``(dy − mean(dy) − mean(dy·y)·y)/std``."""
    y = _d(y)
    dy = _d(dy)
    mean_dy = dy.mean(axis=(0, 2), keepdims=True)
    mean_dyy = (dy * y).mean(axis=(0, 2), keepdims=True)
    return (dy - mean_dy - mean_dyy * y) / _bc(std)


def caffe_batchnorm_math(x, eps):
    """Caffe BN forward (training statistics) as a function of x, for finite differences."""
    y, *_ = caffe_forward_train(x, np.zeros(x.shape[1]), np.zeros(x.shape[1]), 0.0, 0.0, eps)
    return y


def caffe_scale(x, gamma, beta=None):
    y = _d(x) * _bc(gamma)
    return y if beta is None else y + _bc(beta)


def darknet_layer_data(shape, seed: int, key: str = "out", offset: float = 0.3) -> dict:
    """Random float32 inputs of a darknet batch-norm layer of ``shape`` ``(B, C, …)``: the
    layer's values under ``key`` (``N(offset, 2²)``), ``delta``, ``scales``, ``biases``, the
    rolling statistics and ``updates`` (per channel), drawn in that order from ``seed``."""
    rng = np.random.default_rng(seed)
    channels = shape[1]
    return {
        key: (rng.normal(size=shape) * 2.0 + offset).astype(np.float32),
        "delta": rng.normal(size=shape).astype(np.float32),
        "scales": rng.uniform(0.5, 1.5, channels).astype(np.float32),
        "biases": rng.normal(size=channels).astype(np.float32),
        "rolling_mean": rng.normal(size=channels).astype(np.float32),
        "rolling_variance": rng.uniform(0.5, 2.0, channels).astype(np.float32),
        "updates": rng.normal(size=channels).astype(np.float32),
    }
