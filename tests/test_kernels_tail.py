"""darknet's fused bias + activation tail (``engine.backends.cpu.tail``): bit-identical to the
separate ``add_bias``/``activate_array`` and ``gradient_array``/``backward_bias`` kernels."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from engine.backends.cpu import activations, conv, tail

CODES = ["leaky", "relu", "linear", "logistic", "elu", "tanh", "ramp"]
SHAPES = [(5, 70, 1), (3, 130, 1), (4, 6, 25), (2, 65, 9)]


def arrays(shape, seed):
    rng = np.random.default_rng(seed)
    y = (3 * rng.standard_normal(shape)).astype(np.float32)
    bias = rng.standard_normal(shape[1]).astype(np.float32)
    delta = rng.standard_normal(shape).astype(np.float32)
    grad = rng.standard_normal(shape[1]).astype(np.float32)
    return y, bias, delta, grad


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", CODES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_forward_equals_bias_add_then_activate(shape, name, with_bias):
    code = activations.activation_code(name)
    y, bias, _, _ = arrays(shape, sum(shape))
    separate = y.copy()
    if with_bias:
        conv.bias_add(separate, bias)
    activations.activate(separate, code)
    tail.tail_forward(y, bias if with_bias else None, None if name == "linear" else code)
    assert np.array_equal(y, separate, equal_nan=True)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", CODES)
@pytest.mark.parametrize("alpha", [1.0, -1.0])
def test_backward_equals_gradient_then_bias_grad(shape, name, alpha):
    code = activations.activation_code(name)
    y, _, delta, grad = arrays(shape, 7 + sum(shape))
    tail.tail_forward(y, None, code)  # y is an activation output, as darknet keeps it
    d_sep, g_sep = delta.copy(), grad.copy()
    activations.gradient(y, code, d_sep)
    conv.bias_grad(d_sep, g_sep, alpha)
    tail.tail_backward(y, delta, grad, None if name == "linear" else code, alpha)
    assert np.array_equal(delta, d_sep)
    assert np.array_equal(grad, g_sep)


def test_backward_without_bias_leaves_no_gradient():
    y, _, delta, _ = arrays((3, 10, 4), 1)
    expected = delta.copy()
    activations.gradient(y, activations.activation_code("leaky"), expected)
    tail.tail_backward(y, delta, None, activations.activation_code("leaky"), 1.0)
    assert np.array_equal(delta, expected)


def test_thread_count_changes_no_bit():
    results = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        y, bias, delta, grad = arrays((6, 200, 3), 5)
        tail.tail_forward(y, bias, activations.activation_code("leaky"))
        tail.tail_backward(y, delta, grad, activations.activation_code("leaky"), -1.0)
        results.append((y, delta, grad))
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    for first, second in zip(*results, strict=True):
        assert np.array_equal(first, second)
