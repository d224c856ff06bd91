"""Activation kernels (engine.backends.cpu.activations) against the NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnupdate.engine.backends.cpu import activations as act
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


def _check_sigmoid_and_tanh(x, dy, y, dx):
    """Caffe Sigmoid and TanH forward/backward against the references (``y``/``dx``: outputs)."""
    act.caffe_sigmoid_forward(x, y)
    assert _same(y, ref.caffe_sigmoid(x))
    act.caffe_sigmoid_backward(y, dy, dx)
    assert _same(dx, ref.caffe_sigmoid_grad(y, dy))
    act.caffe_tanh_forward(x, y)
    np.testing.assert_allclose(y, ref.caffe_tanh(x), rtol=0, atol=1.2e-7)
    act.caffe_tanh_backward(y, dy, dx)
    assert _same(dx, ref.caffe_tanh_grad(y, dy))


@pytest.mark.parametrize("shape", SHAPES)
def test_caffe_sigmoid_and_tanh(shape):
    x = _inputs(shape)
    dy = np.random.default_rng(4).normal(size=shape).astype(np.float32)
    y = np.empty_like(x)
    dx = np.empty_like(x)
    _check_sigmoid_and_tanh(x, dy, y, dx)


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


# ---- arrays spanning several parallel blocks (act.BLOCK floats each), ragged last block ----

BIG = 3 * act.BLOCK + 77


@pytest.fixture
def two_threads():
    """Run with (up to) two Numba threads, so arrays of more than one block take the
    block-parallel driver; the previous count is restored afterwards."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    yield
    numba.set_num_threads(before)


def _threads(count):
    import numba

    numba.set_num_threads(min(count, numba.config.NUMBA_NUM_THREADS))


@pytest.mark.parametrize("name", sorted(act.DARKNET_ACTIVATIONS))
def test_darknet_blocks_match_reference(name, two_threads):
    x = _inputs((BIG,), seed=5)
    expected = ref.darknet_activate(x, name)
    with np.errstate(all="ignore"):
        act.activate(x, act.activation_code(name))
    assert _same(x, expected), name
    delta = np.random.default_rng(6).normal(size=x.shape).astype(np.float32)
    want = delta * ref.darknet_gradient(x, name)
    act.gradient(x, act.activation_code(name), delta)
    assert _same(delta, want), name


@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_caffe_blocks_match_reference(slope, two_threads):
    x = _inputs((BIG,), seed=7)
    dy = np.random.default_rng(8).normal(size=x.shape).astype(np.float32)
    y, dx = np.empty_like(x), np.empty_like(x)
    act.caffe_relu_forward(x, y, slope)
    assert _same(y, ref.caffe_relu(x, slope))
    act.caffe_relu_backward(x, dy, dx, slope)
    assert _same(dx, ref.caffe_relu_grad(x, dy, slope))
    _check_sigmoid_and_tanh(x, dy, y, dx)
    in_place = x.copy()  # y aliasing x, and dx aliasing dy, across block boundaries
    act.caffe_relu_forward(in_place, in_place, slope)
    assert _same(in_place, ref.caffe_relu(x, slope))
    grad = dy.copy()
    act.caffe_relu_backward(x, grad, grad, slope)
    assert _same(grad, ref.caffe_relu_grad(x, dy, slope))


@pytest.mark.parametrize("name", ["leaky", "logistic", "stair", "selu"])
def test_results_do_not_depend_on_thread_count(name):
    """The serial loop (one thread) and the block-parallel driver agree bit for bit."""
    import numba

    before = numba.get_num_threads()
    x = _inputs((BIG,), seed=9)
    d = np.random.default_rng(10).normal(size=x.shape).astype(np.float32)
    results = []
    try:
        for count in (1, 2):
            _threads(count)
            y, delta = x.copy(), d.copy()
            with np.errstate(all="ignore"):
                act.activate(y, act.activation_code(name))
            act.gradient(y, act.activation_code(name), delta)
            out = np.empty_like(x)
            act.caffe_sigmoid_forward(x, out)
            results.append((y, delta, out))
    finally:
        numba.set_num_threads(before)
    for one, two in zip(results[0], results[1], strict=True):
        assert _same(one, two)


def test_block_driver_itself_matches_serial_loops():
    """``_blocks`` called directly (covered even where Numba has a single thread) equals
    the public functions on one thread, for every operation it dispatches."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        x = _inputs((BIG,), seed=11)
        dy = np.random.default_rng(12).normal(size=x.shape).astype(np.float32)
        slope = np.float32(0.1)
        for name in sorted(act.DARKNET_ACTIVATIONS):
            code = act.activation_code(name)
            want, got = x.copy(), x.copy()
            with np.errstate(all="ignore"):
                act.activate(want, code)
                act._blocks(act._ACTIVATE, code, got, got, got, slope)
            assert _same(got, want), name
            want_d, got_d = dy.copy(), dy.copy()
            act.gradient(want, code, want_d)
            act._blocks(act._GRADIENT, code, want, got_d, got_d, slope)
            assert _same(got_d, want_d), name
        forward = [
            (act._RELU_FORWARD, lambda o: act.caffe_relu_forward(x, o, slope)),
            (act._SIGMOID_FORWARD, lambda o: act.caffe_sigmoid_forward(x, o)),
            (act._TANH_FORWARD, lambda o: act.caffe_tanh_forward(x, o)),
        ]
        backward = [
            (act._RELU_BACKWARD, lambda o: act.caffe_relu_backward(x, dy, o, slope)),
            (act._SIGMOID_BACKWARD, lambda o: act.caffe_sigmoid_backward(x, dy, o)),
            (act._TANH_BACKWARD, lambda o: act.caffe_tanh_backward(x, dy, o)),
        ]
        for op, run in forward + backward:
            want, got = np.empty_like(x), np.empty_like(x)
            run(want)
            act._blocks(op, 0, x, got if (op, run) in forward else dy, got, slope)
            assert _same(got, want), op
    finally:
        numba.set_num_threads(before)
