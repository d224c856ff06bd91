"""Backward kernels against central finite differences of the float64 reference forward.

Each test builds a scalar loss ``L = Σ w·forward(x)`` (or the layer's own loss), differentiates
the float64 reference numerically, and compares with what the float32 backward kernel returns.
darknet deltas are NEGATIVE gradients; where darknet's rule is not the exact gradient the test
states the exact relation (e.g. the SSE delta is half the gradient).
"""

from __future__ import annotations

import numpy as np
import pytest

from dnupdate.engine.backends.cpu import activations as act
from dnupdate.engine.backends.cpu import batchnorm as bn
from dnupdate.engine.backends.cpu import dropout as drop
from dnupdate.engine.backends.cpu import softmax as sm
from tests.reference import activations as act_ref
from tests.reference import batchnorm as bn_ref
from tests.reference import softmax as sm_ref

H = 1e-6


def numeric_grad(f, x, h=H):
    """Central differences of the scalar function ``f`` at float64 ``x``."""
    x = np.asarray(x, np.float64).copy()
    grad = np.empty_like(x)
    flat, out = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        keep = flat[i]
        flat[i] = keep + h
        up = f(x)
        flat[i] = keep - h
        down = f(x)
        flat[i] = keep
        out[i] = (up - down) / (2 * h)
    return grad


KINKS = {
    "relu": [0],
    "leaky": [0],
    "relie": [0],
    "ramp": [0],
    "elu": [0],
    "selu": [0],
    "plse": [-4, 4],
    "hardtan": [-1, 1],
    "lhtan": [0, 1],
    "stair": list(range(-8, 9)),
}


def away_from_kinks(name, size, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-6, 6, size)
    for kink in KINKS.get(name, []):
        x = np.where(np.abs(x - kink) < 0.05, x + 0.1, x)
    return x.astype(np.float32)


@pytest.mark.parametrize("name", sorted(act.DARKNET_ACTIVATIONS))
def test_darknet_activation_gradients(name):
    x = away_from_kinks(name, 60)
    w = np.random.default_rng(1).normal(size=x.size)
    y = x.copy()
    act.activate(y, act.activation_code(name))
    delta = w.astype(np.float32)
    act.gradient(y, act.activation_code(name), delta)  # g computed from the OUTPUT
    numeric = numeric_grad(lambda v: np.sum(w * act_ref.darknet_activate_math(v, name)), x)
    np.testing.assert_allclose(delta, numeric, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("slope", [0.0, 0.25])
def test_caffe_activation_gradients(slope):
    x = away_from_kinks("relu", 50, 2)
    w = np.random.default_rng(3).normal(size=x.size)
    dy = w.astype(np.float32)
    dx = np.empty_like(x)
    y = np.empty_like(x)
    act.caffe_relu_backward(x, dy, dx, slope)
    relu = lambda v: np.sum(w * (np.maximum(v, 0) + slope * np.minimum(v, 0)))  # noqa: E731
    np.testing.assert_allclose(dx, numeric_grad(relu, x), rtol=1e-5, atol=1e-6)
    act.caffe_sigmoid_forward(x, y)
    act.caffe_sigmoid_backward(y, dy, dx)
    sigmoid = lambda v: np.sum(w / (1 + np.exp(-v)))  # noqa: E731
    np.testing.assert_allclose(dx, numeric_grad(sigmoid, x), rtol=1e-4, atol=1e-6)
    act.caffe_tanh_forward(x, y)
    act.caffe_tanh_backward(y, dy, dx)
    np.testing.assert_allclose(
        dx, numeric_grad(lambda v: np.sum(w * np.tanh(v)), x), rtol=1e-4, atol=1e-6
    )


def _bn_loss_darknet(x64, w, scales, biases):
    """Σ w·(scale·(x − μ)/sqrt(biased var + 1e-5) + bias), the function whose exact gradient
    darknet's backward formula is when it is handed the biased variance."""
    mean = x64.mean(axis=(0, 2), keepdims=True)
    var = ((x64 - mean) ** 2).mean(axis=(0, 2), keepdims=True)
    out = (x64 - mean) / np.sqrt(var + float(np.float32(1e-5)))
    return np.sum(w * (out * scales[None, :, None] + biases[None, :, None]))


@pytest.mark.parametrize("shape", [(4, 3, 5), (2, 2, 1), (3, 1, 7)])
def test_darknet_batchnorm_backward_formula(shape):
    rng = np.random.default_rng(sum(shape))
    x = (rng.normal(size=shape) * 1.5 + 0.3).astype(np.float32)
    w = rng.normal(size=shape)
    scales = rng.uniform(0.5, 1.5, shape[1]).astype(np.float32)
    biases = rng.normal(size=shape[1]).astype(np.float32)
    mean = x.astype(np.float64).mean(axis=(0, 2)).astype(np.float32)
    biased_var = x.astype(np.float64).var(axis=(0, 2)).astype(np.float32)
    unbiased_var = x.astype(np.float64).var(axis=(0, 2), ddof=1).astype(np.float32)
    x_norm = bn_ref.darknet_normalize(x, mean, unbiased_var)
    delta = w.astype(np.float32)
    bias_updates = np.zeros(shape[1], np.float32)
    scale_updates = np.zeros(shape[1], np.float32)
    scratch = [np.empty(shape[1], np.float32) for _ in range(2)]
    # darknet's delta formula with the biased variance plugged in is the exact gradient
    bn.darknet_batchnorm_backward(
        delta, x, x_norm, mean, biased_var, scales, bias_updates, scale_updates, *scratch
    )
    numeric = numeric_grad(lambda v: _bn_loss_darknet(v, w, scales, biases), x)
    np.testing.assert_allclose(delta, numeric, rtol=1e-3, atol=2e-4)
    # bias/scale accumulators are exact gradients of Σ w·(x_norm·scale + bias)
    norm64 = x_norm.astype(np.float64)
    bias_numeric = numeric_grad(
        lambda b: np.sum(w * (norm64 * scales[None, :, None] + b[None, :, None])), biases
    )
    scale_numeric = numeric_grad(
        lambda s: np.sum(w * (norm64 * s[None, :, None] + biases[None, :, None])), scales
    )
    np.testing.assert_allclose(bias_updates, bias_numeric, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scale_updates, scale_numeric, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(4, 3, 5), (2, 2, 1), (3, 1, 7)])
def test_caffe_batchnorm_backward(shape):
    rng = np.random.default_rng(len(shape) + shape[0])
    x = (rng.normal(size=shape) * 1.5 + 0.3).astype(np.float32)
    w = rng.normal(size=shape)
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
    dx = np.empty_like(x)
    bn.caffe_batchnorm_backward(y, w.astype(np.float32), dx, std)
    numeric = numeric_grad(lambda v: np.sum(w * bn_ref.caffe_batchnorm_math(v, 1e-5)), x)
    np.testing.assert_allclose(dx, numeric, rtol=1e-3, atol=2e-4)


def test_caffe_scale_backward():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(3, 4, 5)).astype(np.float32)
    w = rng.normal(size=x.shape)
    gamma = rng.uniform(0.5, 2, 4).astype(np.float32)
    beta = rng.normal(size=4).astype(np.float32)
    dx = np.empty_like(x)
    gamma_diff, beta_diff = np.zeros(4, np.float32), np.zeros(4, np.float32)
    bn.caffe_scale_backward(x, w.astype(np.float32), gamma, dx, gamma_diff, beta_diff)

    def loss(v, g, b):
        return np.sum(w * bn_ref.caffe_scale(v, g, b))

    np.testing.assert_allclose(dx, numeric_grad(lambda v: loss(v, gamma, beta), x), 1e-5, 1e-5)
    np.testing.assert_allclose(
        gamma_diff, numeric_grad(lambda g: loss(x, g, beta), gamma), 1e-5, 1e-5
    )
    np.testing.assert_allclose(
        beta_diff, numeric_grad(lambda b: loss(x, gamma, b), beta), 1e-5, 1e-5
    )


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_darknet_softmax_cross_entropy_delta(temperature):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 6)).astype(np.float32)
    truth = np.zeros_like(x)
    truth[np.arange(3), [1, 4, 0]] = 1
    p = np.empty_like(x)
    sm.darknet_softmax_forward(x, p, 1, temperature)
    delta, loss = np.empty_like(x), np.empty_like(x)
    sm.darknet_softmax_cross_entropy(p, truth, delta, loss)

    def cross_entropy(v):
        return -np.sum(truth * np.log(sm_ref.darknet_softmax(v, 1, temperature)))

    numeric = numeric_grad(cross_entropy, x)
    # delta = t − p is the negative logit gradient times T: darknet ignores the 1/T factor
    np.testing.assert_allclose(delta / temperature, -numeric, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cost_type", ["sse", "L1", "smooth"])
def test_darknet_cost_deltas(cost_type):
    rng = np.random.default_rng(6)
    pred = rng.normal(size=30).astype(np.float32)
    truth = (pred + rng.choice([-1, 1], 30) * rng.uniform(0.1, 2.5, 30)).astype(np.float32)
    truth = np.where(np.abs(np.abs(truth - pred) - 1) < 0.05, truth + 0.2, truth)
    truth = truth.astype(np.float32)
    delta, error = np.empty_like(pred), np.empty_like(pred)
    sm.darknet_cost_forward(pred.copy(), truth, delta, error, sm.cost_code(cost_type))
    numeric = numeric_grad(lambda v: np.sum(sm_ref.darknet_cost(v, truth, cost_type)[0]), pred)
    d = truth.astype(np.float64) - pred
    if cost_type == "L1":
        expected = -numeric  # delta = −∂L/∂p
    elif cost_type == "sse":
        expected = -numeric / 2  # half the gradient
    else:  # smooth-L1: half the gradient inside, and the sign quirk outside
        expected = np.where(np.abs(d) < 1, -numeric / 2, numeric / 2)
    np.testing.assert_allclose(delta, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("mode", "ignore"), [("valid", None), ("full", 2), ("batch_size", None)])
def test_caffe_softmax_loss_gradient(mode, ignore):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3, 4, 2)).astype(np.float32)
    labels = rng.integers(0, 4, size=(3, 2))
    if ignore is not None:
        labels[0, 1] = ignore
    prob = np.empty_like(x)
    sm.caffe_softmax_loss_forward(x, labels, prob, mode, ignore)
    dx = np.empty_like(x)
    sm.caffe_softmax_loss_backward(prob, labels, dx, 0.5, mode, ignore)
    numeric = numeric_grad(lambda v: sm_ref.caffe_softmax_loss_math(v, labels, mode, ignore), x)
    np.testing.assert_allclose(dx, 0.5 * numeric, rtol=1e-4, atol=1e-6)


def test_dropout_gradients():
    rng = np.random.default_rng(8)
    x = rng.normal(size=40).astype(np.float32)
    w = rng.normal(size=40)
    draws = rng.uniform(size=40).astype(np.float32)
    keep = (draws >= np.float32(0.3)).astype(np.float64)
    scale = float(drop.darknet_dropout_scale(0.3))
    delta = w.astype(np.float32)
    drop.darknet_dropout_backward(delta, draws, 0.3)
    numeric = numeric_grad(lambda v: np.sum(w * v * keep * scale), x)
    np.testing.assert_allclose(delta, numeric, rtol=1e-5, atol=1e-6)
    mask = keep.astype(np.uint32)
    dx = np.empty_like(x)
    drop.caffe_dropout_backward(w.astype(np.float32), mask, 0.3, dx)
    np.testing.assert_allclose(dx, numeric, rtol=1e-5, atol=1e-6)
