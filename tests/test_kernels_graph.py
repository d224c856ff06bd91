"""Graph-layer kernels (``shortcut``, ``route_copy``, ``route_add``) against the NumPy
transcriptions in ``tests/reference/graph.py``, and the layers' backward against central
finite differences of the float64 reference forward."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnupdate.engine.backends.cpu import CpuBackend, graph
from tests.reference import graph as ref
from tests.test_gradcheck_elementwise import numeric_grad

RNG = np.random.default_rng(11)

# (add shape C,H,W) → (out shape C,H,W): same size, downsample (stride 2), upsample
# (sample 2), channel mismatch both ways, non-integer ratio (5 → 3: stride 1, sample 1)
PAIRS = [
    ((3, 4, 4), (3, 4, 4)),
    ((2, 8, 8), (4, 4, 4)),
    ((4, 3, 3), (2, 6, 6)),
    ((5, 5, 5), (3, 3, 3)),
    ((2, 4, 6), (3, 2, 3)),
]


def normal(*shape) -> np.ndarray:
    return RNG.normal(size=shape).astype(np.float32)


@pytest.mark.parametrize(("add_shape", "out_shape"), PAIRS)
@pytest.mark.parametrize(("s1", "s2"), [(1.0, 1.0), (0.5, -2.0)])
def test_shortcut_matches_reference_bit_for_bit(add_shape, out_shape, s1, s2):
    add, out = normal(2, *add_shape), normal(2, *out_shape)
    expected = ref.shortcut_add(add, out, s1, s2)
    graph.shortcut(add, out, s1, s2)
    np.testing.assert_array_equal(out, expected)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    batch=st.integers(1, 3),
    c=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    size=st.integers(1, 6),
    factor=st.sampled_from([1, 2, 3]),
    down=st.booleans(),
)
def test_shortcut_any_integer_ratio(batch, c, size, factor, down):
    small, big = (size, size), (size * factor, size * factor)
    add_hw, out_hw = (big, small) if down else (small, big)
    add, out = normal(batch, c[0], *add_hw), normal(batch, c[1], *out_hw)
    expected = ref.shortcut_add(add, out, 0.75, 1.5)
    graph.shortcut(add, out, 0.75, 1.5)
    np.testing.assert_array_equal(out, expected)


def test_route_copy_and_add_place_each_source_in_its_columns():
    a, b = normal(3, 2, 2, 2), normal(3, 5, 1, 1)
    out = np.zeros((3, 13), np.float32)
    graph.route_copy(a, out, 0)
    graph.route_copy(b, out, 8)
    np.testing.assert_array_equal(out, ref.route_forward([a, b]))
    delta = normal(3, 13)
    da, db = normal(3, 2, 2, 2), normal(3, 5, 1, 1)
    want_a = da.reshape(3, -1) + delta[:, :8]
    want_b = db.reshape(3, -1) + delta[:, 8:]
    graph.route_add(delta, da, 0)
    graph.route_add(delta, db, 8)
    np.testing.assert_array_equal(da.reshape(3, -1), want_a)
    np.testing.assert_array_equal(db.reshape(3, -1), want_b)


def test_backend_methods_are_the_kernels():
    backend = CpuBackend()
    add, out = normal(1, 2, 4, 4), normal(1, 2, 2, 2)
    expected = ref.shortcut_add(add, out, 1.0, 1.0)
    backend.shortcut(add, out, 1.0, 1.0)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize(("add_shape", "out_shape"), PAIRS)
def test_shortcut_backward_is_the_gradient(add_shape, out_shape):
    """Loss ``L = Σ w·leaky(shortcut(a → x))``: darknet's backward (activation gradient,
    ``dx += alpha·delta``, ``da += beta·delta`` through the reversed index map) gives
    ``∂L/∂x`` and ``∂L/∂a`` — except darknet's quirk outside the overlap, where forward copies
    ``x`` unscaled but backward still multiplies by ``alpha`` (checked with alpha = 1 there)."""
    alpha, beta = 0.5, 1.5
    x, a = normal(2, *out_shape), normal(2, *add_shape)
    w = RNG.normal(size=x.shape)

    def leaky(v):
        return np.where(v > 0, v, 0.1 * v)

    def loss(xv, av, al=alpha):
        xv, av = np.asarray(xv, np.float64), np.asarray(av, np.float64)
        return float(np.sum(w * ref.shortcut_forward(xv, av, al, beta, leaky)))

    backend = CpuBackend()
    code = backend.activation_code("leaky")
    y = x.copy()
    backend.shortcut(a, y, alpha, beta)
    backend.activate(y, code)
    delta = w.astype(np.float32)
    backend.activation_gradient(y, code, delta)
    dx, da = np.zeros_like(x), np.zeros_like(a)
    backend.accumulate(dx, delta, alpha)
    backend.shortcut(delta, da, 1.0, beta)
    np.testing.assert_allclose(da, numeric_grad(lambda v: loss(x, v), a), rtol=1e-4, atol=1e-5)
    overlap = ref.shortcut_add(np.ones_like(a), np.zeros_like(x), 0.0, 1.0) != 0
    numeric_x = numeric_grad(lambda v: loss(v, a), x)
    np.testing.assert_allclose(dx[overlap], numeric_x[overlap], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dx[~overlap], alpha * numeric_x[~overlap], rtol=1e-4, atol=1e-5)
