"""Activation kernels (engine.backends.cpu.activations) against the NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.backends.cpu import activations as act
from tests.reference import activations as ref

SHAPES = [(1,), (7,), (1, 3, 5, 5), (2, 4, 3, 1), (3, 17)]


def _inputs(shape, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 3.0, size=shape).astype(np.float32)
    flat = x.reshape(-1)
    specials = np.array([0.0, -0.0, 1.0, -1.0, 4.0, -4.0, 2.0, -3.0, 0.5, 400.0], np.float32)
    flat[: min(flat.size, specials.size)] = specials[: flat.size]
    return x


def _same(a, b):
    return np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("name", sorted(act.DARKNET_ACTIVATIONS))
@pytest.mark.parametrize("shape", SHAPES)
def test_darknet_activate_matches_reference(name, shape):
    x = _inputs(shape)
    expected = ref.darknet_activate(x, name)
    with np.errstate(all="ignore"):
        act.activate(x, act.activation_code(name))
    assert _same(x, expected), name


@pytest.mark.parametrize("name", sorted(act.DARKNET_ACTIVATIONS))
@pytest.mark.parametrize("shape", SHAPES)
def test_darknet_gradient_matches_reference(name, shape):
    y = ref.darknet_activate(_inputs(shape, 1), name)
    delta = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    expected = delta * ref.darknet_gradient(y, name)
    act.gradient(y, act.activation_code(name), delta)
    assert _same(delta, expected), name


def test_leaky_quirks():
    x = np.array([0.0, -2.0, 3.0], np.float32)
    act.activate(x, act.activation_code("leaky"))
    assert x[1] == np.float32(0.1 * -2.0)  # .1 is a double literal
    delta = np.ones(3, np.float32)
    act.gradient(x, act.activation_code("leaky"), delta)
    assert delta[0] == np.float32(0.1)  # gradient at exactly 0 is .1
    assert delta[2] == 1.0


def test_tanh_overflow_is_nan_as_darknet():
    x = np.array([400.0, -400.0], np.float32)
    with np.errstate(all="ignore"):
        act.activate(x, act.activation_code("tanh"))
    assert np.isnan(x[0]) and x[1] == -1.0


def test_unknown_activation_is_a_clear_error():
    with pytest.raises(act.UnknownActivationError, match="swish"):
        act.activation_code("swish")


def test_non_contiguous_array_is_refused():
    x = np.zeros((4, 4), np.float32)[:, ::2]
    with pytest.raises(act.KernelArgumentError, match="contiguous"):
        act.activate(x, act.RELU)
    with pytest.raises(act.KernelArgumentError, match="float32"):
        act.activate(np.zeros(3), act.RELU)


def test_gradient_size_mismatch_is_refused():
    with pytest.raises(act.KernelArgumentError):
        act.gradient(np.zeros(3, np.float32), act.RELU, np.zeros(4, np.float32))


@pytest.mark.parametrize("slope", [0.0, 0.1, -0.5])
@pytest.mark.parametrize("shape", SHAPES)
def test_caffe_relu(slope, shape):
    x = _inputs(shape)
    y = np.empty_like(x)
    act.caffe_relu_forward(x, y, slope)
    assert _same(y, ref.caffe_relu(x, slope))
    dy = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    dx = np.empty_like(x)
    act.caffe_relu_backward(x, dy, dx, slope)
    assert _same(dx, ref.caffe_relu_grad(x, dy, slope))
    if x.size > 1:
        assert dx.reshape(-1)[0] == np.float32(slope) * dy.reshape(-1)[0]  # x == 0


def test_caffe_relu_in_place():
    x = _inputs((2, 3, 4, 4))
    expected = ref.caffe_relu(x, 0.2)
    act.caffe_relu_forward(x, x, 0.2)
    assert _same(x, expected)


@pytest.mark.parametrize("shape", SHAPES)
def test_caffe_sigmoid_and_tanh(shape):
    x = _inputs(shape)
    dy = np.random.default_rng(4).normal(size=shape).astype(np.float32)
    y = np.empty_like(x)
    dx = np.empty_like(x)
    act.caffe_sigmoid_forward(x, y)
    assert _same(y, ref.caffe_sigmoid(x))
    act.caffe_sigmoid_backward(y, dy, dx)
    assert _same(dx, ref.caffe_sigmoid_grad(y, dy))
    act.caffe_tanh_forward(x, y)
    np.testing.assert_allclose(y, ref.caffe_tanh(x), rtol=0, atol=1.2e-7)
    act.caffe_tanh_backward(y, dy, dx)
    assert _same(dx, ref.caffe_tanh_grad(y, dy))


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(sorted(act.DARKNET_ACTIVATIONS)),
    values=st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=40),
)
def test_darknet_activations_property(name, values):
    """Forward and gradient equal the reference bit for bit on arbitrary float32 inputs."""
    x = np.array(values, np.float32)
    expected = ref.darknet_activate(x, name)
    with np.errstate(all="ignore"):
        act.activate(x, act.activation_code(name))
    assert _same(x, expected)
    delta = np.ones_like(x)
    act.gradient(x, act.activation_code(name), delta)
    assert _same(delta, ref.darknet_gradient(x, name))
