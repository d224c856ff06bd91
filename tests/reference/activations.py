"""Plain-NumPy references for the activation kernels (darknet and Caffe).

Two flavours:

* ``darknet_activate``/``darknet_gradient`` and ``caffe_*``: transcriptions of the C sources with
  the same float32/double promotion points, vectorised, for comparison with the kernels;
* ``*_math``: the textbook functions in float64, used for finite-difference gradient checks.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32


def _d(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).astype(np.float64)


def darknet_activate(x: np.ndarray, name: str) -> np.ndarray:
    """``activations.h`` forward, float32 in and out, double where C promotes to double."""
    x = np.asarray(x, dtype=np.float32)
    xd = _d(x)
    with np.errstate(over="ignore", invalid="ignore"):
        if name == "linear":
            out = xd
        elif name == "logistic":
            out = 1.0 / (1.0 + np.exp(-xd))
        elif name == "loggy":
            out = 2.0 / (1.0 + np.exp(-xd)) - 1.0
        elif name == "relu":
            return (x * (x > 0).astype(np.float32)).astype(np.float32)
        elif name == "elu":
            e = np.exp(xd) - 1.0
            out = np.where(xd >= 0, xd + 0.0 * e, e)
        elif name == "selu":
            e = np.exp(xd) - 1.0
            out = np.where(xd >= 0, 1.0507 * xd + 0.0 * e, 1.0507 * 1.6732 * e)
        elif name == "relie":
            out = np.where(x > 0, xd, 0.01 * xd)
        elif name == "ramp":
            out = _d(x * (x > 0).astype(np.float32)) + 0.1 * xd
        elif name == "leaky":
            out = np.where(x > 0, xd, 0.1 * xd)
        elif name == "tanh":
            e = np.exp(_d(F32(2) * x))
            out = (e - 1.0) / (e + 1.0)
        elif name == "plse":
            out = np.where(
                x < -4,
                0.01 * _d(x + F32(4)),
                np.where(x > 4, 0.01 * _d(x - F32(4)) + 1.0, 0.125 * xd + 0.5),
            )
        elif name == "hardtan":
            out = np.clip(xd, -1.0, 1.0)
        elif name == "lhtan":
            out = np.where(x < 0, 0.001 * xd, np.where(x > 1, 0.001 * _d(x - F32(1)) + 1.0, xd))
        elif name == "stair":
            floored = np.floor(xd)
            n = floored.astype(np.int64)
            half = np.floor(xd / 2.0)
            odd = (n % 2) != 0
            out = np.where(odd, _d(x - n.astype(np.float32)) + half, half)
        else:
            raise ValueError(name)
    return out.astype(np.float32)


def darknet_gradient(y: np.ndarray, name: str) -> np.ndarray:
    """``activations.h`` gradient g(y), from the output y, float32."""
    y = np.asarray(y, dtype=np.float32)
    one = np.ones_like(y)
    if name == "linear":
        return one
    if name == "logistic":
        return (F32(1) - y) * y
    if name == "loggy":
        half = ((_d(y) + 1.0) / 2.0).astype(np.float32)
        return F32(2) * (F32(1) - half) * half
    if name == "relu":
        return (y > 0).astype(np.float32)
    if name == "elu":
        return np.where(y >= 0, one, y + F32(1)).astype(np.float32)
    if name == "selu":
        return np.where(y >= 0, 1.0507, _d(y) + 1.0507 * 1.6732).astype(np.float32)
    if name == "relie":
        return np.where(y > 0, one, F32(0.01)).astype(np.float32)
    if name == "ramp":
        return np.where(y > 0, F32(1.1), F32(0.1)).astype(np.float32)
    if name == "leaky":
        return np.where(y > 0, one, F32(0.1)).astype(np.float32)
    if name == "tanh":
        return F32(1) - y * y
    if name == "plse":
        return np.where((y < 0) | (y > 1), F32(0.01), F32(0.125)).astype(np.float32)
    if name == "stair":
        return np.where(np.floor(_d(y)) == _d(y), F32(0), F32(1)).astype(np.float32)
    if name == "hardtan":
        return ((y > -1) & (y < 1)).astype(np.float32)
    if name == "lhtan":
        return np.where((y > 0) & (y < 1), one, F32(0.001)).astype(np.float32)
    raise ValueError(name)


def darknet_activate_math(x: np.ndarray, name: str) -> np.ndarray:
    """The darknet activations as float64 mathematics (for finite differences)."""
    x = np.asarray(x, dtype=np.float64)
    if name == "linear":
        return x
    if name == "logistic":
        return 1.0 / (1.0 + np.exp(-x))
    if name == "loggy":
        return 2.0 / (1.0 + np.exp(-x)) - 1.0
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "elu":
        return np.where(x >= 0, x, np.expm1(np.minimum(x, 0.0)))
    if name == "selu":
        return np.where(x >= 0, 1.0507 * x, 1.0507 * 1.6732 * np.expm1(np.minimum(x, 0.0)))
    if name == "relie":
        return np.where(x > 0, x, 0.01 * x)
    if name == "ramp":
        return np.maximum(x, 0.0) + 0.1 * x
    if name == "leaky":
        return np.where(x > 0, x, 0.1 * x)
    if name == "tanh":
        return np.tanh(x)
    if name == "plse":
        return np.where(
            x < -4, 0.01 * (x + 4), np.where(x > 4, 0.01 * (x - 4) + 1, 0.125 * x + 0.5)
        )
    if name == "hardtan":
        return np.clip(x, -1.0, 1.0)
    if name == "lhtan":
        return np.where(x < 0, 0.001 * x, np.where(x > 1, 0.001 * (x - 1) + 1, x))
    if name == "stair":
        n = np.floor(x)
        return np.where(n % 2 == 0, np.floor(x / 2), (x - n) + np.floor(x / 2))
    raise ValueError(name)


def caffe_relu(x: np.ndarray, negative_slope: float) -> np.ndarray:
    """``max(x, 0) + ns·min(x, 0)`` in float32."""
    x = np.asarray(x, dtype=np.float32)
    return np.maximum(x, F32(0)) + F32(negative_slope) * np.minimum(x, F32(0))


def caffe_relu_grad(x: np.ndarray, dy: np.ndarray, negative_slope: float) -> np.ndarray:
    """``dy·([x > 0] + ns·[x ≤ 0])`` in float32."""
    x = np.asarray(x, dtype=np.float32)
    factor = (x > 0).astype(np.float32) + F32(negative_slope) * (x <= 0).astype(np.float32)
    return np.asarray(dy, dtype=np.float32) * factor


def caffe_sigmoid(x: np.ndarray) -> np.ndarray:
    """``0.5·tanh(0.5·x) + 0.5`` in double, rounded to float32."""
    return (0.5 * np.tanh(0.5 * _d(x)) + 0.5).astype(np.float32)


def caffe_sigmoid_grad(y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """``(dy·y)`` in float32 times ``(1 − y)`` in double."""
    y = np.asarray(y, dtype=np.float32)
    return (_d(np.asarray(dy, dtype=np.float32) * y) * (1.0 - _d(y))).astype(np.float32)


def caffe_tanh(x: np.ndarray) -> np.ndarray:
    """``tanh`` rounded to float32."""
    return np.tanh(np.asarray(x, dtype=np.float32))


def caffe_tanh_grad(y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """``dy·(1 − y²)`` in float32."""
    y = np.asarray(y, dtype=np.float32)
    return np.asarray(dy, dtype=np.float32) * (F32(1) - y * y)
