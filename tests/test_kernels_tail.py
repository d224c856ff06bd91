"""darknet's per-image tail (``engine.backends.cpu.tail``), used by the per-image convolution:
bit-identical to the separate ``add_bias``/``activate_array`` and
``gradient_array``/``backward_bias`` kernels."""

from __future__ import annotations

import numpy as np
import pytest

from dnupdate.engine.backends.cpu import activations, conv, tail

CODES = ["leaky", "relu", "linear", "logistic", "elu", "tanh", "ramp"]
SHAPES = [(5, 70, 1), (3, 13, 1), (4, 6, 25), (2, 65, 9)]
NO_BIAS = np.empty(0, dtype=np.float32)


def arrays(shape, seed):
    rng = np.random.default_rng(seed)
    y = (3 * rng.standard_normal(shape)).astype(np.float32)
    bias = rng.standard_normal(shape[1]).astype(np.float32)
    delta = rng.standard_normal(shape).astype(np.float32)
    return y, bias, delta


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", CODES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_forward_equals_bias_add_then_activate(shape, name, with_bias):
    code = activations.activation_code(name)
    y, bias, _ = arrays(shape, sum(shape))
    separate = y.copy()
    if with_bias:
        conv.bias_add(separate, bias)
    activations.activate(separate, code)
    for image in y:
        tail.image_forward(image, bias if with_bias else NO_BIAS, code)
    assert np.array_equal(y, separate, equal_nan=True)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", CODES)
def test_backward_equals_gradient_then_bias_sums(shape, name):
    code = activations.activation_code(name)
    y, _, delta = arrays(shape, 7 + sum(shape))
    activations.activate(y, code)  # y is an activation output, as darknet keeps it
    d_sep = delta.copy()
    activations.gradient(y, code, d_sep)
    sums = np.full(shape[1], np.nan, dtype=np.float32)
    expected = np.zeros(shape[1], dtype=np.float32)
    for b, (y_image, d_image) in enumerate(zip(y, delta, strict=True)):
        tail.image_backward(y_image, d_image, sums, code, b == 0)
        expected += d_sep[b].sum(axis=1, dtype=np.float32) if shape[2] > 1 else d_sep[b, :, 0]
    assert np.array_equal(delta, d_sep)
    np.testing.assert_allclose(sums, expected, rtol=1e-5, atol=1e-5)


def test_backward_sums_each_plane_then_adds_in_image_order():
    """darknet's ``backward_bias``: ``bias_updates[c] += sum_array(plane)`` image by image."""
    y, _, delta = arrays((3, 4, 10), 2)
    sums = np.empty(4, dtype=np.float32)
    for b in range(3):
        tail.image_backward(y[b], delta[b], sums, activations.LINEAR, b == 0)
    for c in range(4):
        total = np.float32(0.0)
        for b in range(3):
            plane = np.float32(0.0)
            for value in delta[b, c]:
                plane = np.float32(plane + value)
            total = np.float32(total + plane)
        assert sums[c] == total


def test_backward_without_bias_only_scales_delta():
    y, _, delta = arrays((3, 10, 4), 1)
    expected = delta.copy()
    code = activations.activation_code("leaky")
    activations.gradient(y, code, expected)
    for b in range(3):
        tail.image_backward(y[b], delta[b], NO_BIAS, code, b == 0)
    assert np.array_equal(delta, expected)


ROW_SHAPES = [(5, 70, 1), (3, 13, 1), (4, 200, 1), (1, 64, 1)]


@pytest.mark.parametrize("shape", ROW_SHAPES)
@pytest.mark.parametrize("name", CODES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_the_connected_tail_in_one_pass_is_the_separate_kernels(shape, name, with_bias):
    """A connected layer's tail (``(B, C, 1)``), forward and backward each one pass on the CPU
    backend: the bits of ``add_bias`` + ``activate_array`` and ``gradient_array`` +
    ``backward_bias`` (the base backend's two calls), with and without a bias, alpha ±1."""
    from dnupdate.engine.backends.base import Backend
    from dnupdate.engine.backends.cpu import CpuBackend

    backend = CpuBackend()
    code = activations.activation_code(name)
    y, bias, delta = arrays(shape, 11 + sum(shape))
    separate = y.copy()
    Backend.darknet_tail_forward(backend, separate, bias if with_bias else None, code)
    backend.darknet_tail_forward(y, bias if with_bias else None, code)
    assert np.array_equal(y, separate, equal_nan=True)
    for alpha in (1.0, -1.0):
        start = np.random.default_rng(3).standard_normal(shape[1]).astype(np.float32)
        d_sep, db_sep = delta.copy(), start.copy()
        Backend.darknet_tail_backward(backend, y, d_sep, db_sep if with_bias else None, code,
                                      alpha)  # fmt: skip
        d_one, db_one = delta.copy(), start.copy()
        backend.darknet_tail_backward(y, d_one, db_one if with_bias else None, code, alpha)
        assert np.array_equal(d_one, d_sep, equal_nan=True)
        assert np.array_equal(db_one, db_sep, equal_nan=True)
