"""The CPU's fused shortcut passes (``CpuBackend.shortcut_forward``/``shortcut_backward``)
against darknet's separate passes (``Backend``'s composition: copy, ``shortcut_cpu``,
``activate_array``; ``gradient_array``, ``axpy_cpu``, ``shortcut_cpu``), bit for bit, on one
and two threads, over several parallel blocks, for equal shapes (the fused path) and a
downsampling shortcut (the fallback), with ``dx`` and ``da`` separate, missing or one array."""

from __future__ import annotations

import numpy as np
import pytest

from dnupdate.engine.backends.base import Backend
from dnupdate.engine.backends.cpu import CpuBackend, graph
from tests.numba_threads import with_threads as _with_threads

BACKEND = CpuBackend()

# (x/out shape, add shape): one block, several blocks with a partial last one, option A
SHAPES = [
    ((2, 3, 5, 5), (2, 3, 5, 5)),
    ((2, 4, 96, 90), (2, 4, 96, 90)),
    ((2, 8, 4, 4), (2, 4, 8, 8)),
]
ACTIVATIONS = [None, "relu", "leaky", "logistic", "elu"]


def _code(name):
    return None if name is None else BACKEND.activation_code(name)


def _arrays(out_shape, add_shape, seed):
    rng = np.random.default_rng(seed)

    def normal(shape):
        return rng.normal(size=shape).astype(np.float32)

    return (
        normal(out_shape),
        normal(add_shape),
        normal(out_shape),
        normal(out_shape),
        normal(add_shape),
    )


@pytest.mark.parametrize(("out_shape", "add_shape"), SHAPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 1.0), (0.5, -1.5)])
@pytest.mark.parametrize("threads", [1, 2])
def test_fused_forward_is_the_separate_passes(out_shape, add_shape, activation, alpha, beta,
                                              threads):  # fmt: skip
    x, add, *_ = _arrays(out_shape, add_shape, 1)
    code = _code(activation)
    expected = np.empty_like(x)
    Backend.shortcut_forward(BACKEND, x, add, expected, alpha, beta, code)
    got = np.full_like(x, np.nan)
    _with_threads(threads, lambda: BACKEND.shortcut_forward(x, add, got, alpha, beta, code))
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(("out_shape", "add_shape"), SHAPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 1.0), (0.5, -1.5)])
@pytest.mark.parametrize("targets", ["both", "no_dx", "no_da", "same"])
@pytest.mark.parametrize("threads", [1, 2])
def test_fused_backward_is_the_separate_passes(out_shape, add_shape, activation, alpha, beta,
                                               targets, threads):  # fmt: skip
    if targets == "same" and out_shape != add_shape:
        pytest.skip("one array for dx and da needs equal shapes (from=-1)")
    x, add, delta, dx, da = _arrays(out_shape, add_shape, 2)
    code = _code(activation)
    out = x.copy()
    Backend.shortcut_forward(BACKEND, x, add, out, alpha, beta, code)

    def buffers():
        d, dxs, das = delta.copy(), dx.copy(), da.copy()
        if targets == "same":
            return d, dxs, dxs
        return d, None if targets == "no_dx" else dxs, None if targets == "no_da" else das

    ref_delta, ref_dx, ref_da = buffers()
    Backend.shortcut_backward(BACKEND, out, ref_delta, ref_dx, ref_da, alpha, beta, code)
    got_delta, got_dx, got_da = buffers()
    _with_threads(
        threads,
        lambda: BACKEND.shortcut_backward(out, got_delta, got_dx, got_da, alpha, beta, code),
    )
    np.testing.assert_array_equal(got_delta, ref_delta)
    for got, expected in ((got_dx, ref_dx), (got_da, ref_da)):
        if expected is not None:
            np.testing.assert_array_equal(got, expected)


def test_fused_path_is_taken_for_equal_shapes(monkeypatch):
    """Equal shapes never reach the general ``shortcut_cpu`` index map (the point of the
    fusion); a downsampling shortcut does."""
    calls = []
    monkeypatch.setattr(graph, "shortcut", lambda *args: calls.append(args))
    x, add, delta, dx, da = _arrays((2, 3, 4, 4), (2, 3, 4, 4), 3)
    out = np.empty_like(x)
    BACKEND.shortcut_forward(x, add, out, 1.0, 1.0, None)
    BACKEND.shortcut_backward(out, delta, dx, da, 1.0, 1.0, None)
    assert calls == []
    x, add, delta, dx, da = _arrays((2, 8, 4, 4), (2, 4, 8, 8), 3)
    BACKEND.shortcut_forward(x, add, np.empty_like(x), 1.0, 1.0, None)
    assert len(calls) == 1


@pytest.mark.parametrize(("out_shape", "add_shape"), SHAPES)
@pytest.mark.parametrize("activation", [None, "relu", "leaky"])
@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 1.0), (0.5, -1.5)])
@pytest.mark.parametrize("assign", ["dx", "da", "both"])
@pytest.mark.parametrize("threads", [1, 2])
def test_assigning_is_adding_into_zeroed_deltas(out_shape, add_shape, activation, alpha, beta,
                                                assign, threads):  # fmt: skip
    """``assign_dx``/``assign_da`` (the network skipped the zeroing) give exactly the bits of
    darknet's zero-then-add, signed zeros included (``0 + (−0) = +0``), over stale
    contents; ``Backend``'s own composition (fill, then add) agrees."""
    if assign != "dx" and out_shape != add_shape:
        pytest.skip("assign_da needs da of delta's shape")
    x, add, delta, dx, da = _arrays(out_shape, add_shape, 4)
    delta.reshape(-1)[::7] = -0.0  # −0 products: the add into zeros makes them +0
    code = _code(activation)
    out = x.copy()
    Backend.shortcut_forward(BACKEND, x, add, out, alpha, beta, code)
    flags = {"assign_dx": assign != "da", "assign_da": assign != "dx"}
    ref_delta, ref_dx, ref_da = delta.copy(), dx.copy(), da.copy()
    if flags["assign_dx"]:
        ref_dx[...] = 0.0
    if flags["assign_da"]:
        ref_da[...] = 0.0
    Backend.shortcut_backward(BACKEND, out, ref_delta, ref_dx, ref_da, alpha, beta, code)
    fused = delta.copy(), dx.copy(), da.copy()
    _with_threads(threads, lambda: BACKEND.shortcut_backward(out, *fused, alpha, beta, code,
                                                              **flags))  # fmt: skip
    composed = delta.copy(), dx.copy(), da.copy()  # the composition other backends inherit
    Backend.shortcut_backward(BACKEND, out, *composed, alpha, beta, code, **flags)
    for got in (fused, composed):
        for array, expected in zip(got, (ref_delta, ref_dx, ref_da), strict=True):
            assert np.array_equal(array.view(np.uint32), expected.view(np.uint32))


def test_assigning_turns_negative_zero_products_into_positive_zeros():
    """The case the ``0 +`` is there for: a −0 product written as is would differ in sign
    from darknet's add into a zeroed delta."""
    shape = (1, 2, 3, 3)
    delta = np.full(shape, -0.0, dtype=np.float32)
    out = np.ones(shape, dtype=np.float32)
    dx = np.full(shape, 5.0, dtype=np.float32)
    da = np.full(shape, 5.0, dtype=np.float32)
    BACKEND.shortcut_backward(out, delta, dx, da, 1.0, 1.0, None, assign_dx=True, assign_da=True)
    assert not np.signbit(dx).any() and not np.signbit(da).any()
    assert not dx.any() and not da.any()


def test_assign_da_refuses_a_smaller_or_shared_da():
    x, _, delta, dx, da = _arrays((2, 8, 4, 4), (2, 4, 8, 8), 5)
    with pytest.raises(ValueError, match="assign_da"):
        BACKEND.shortcut_backward(x, delta, dx, da, 1.0, 1.0, None, assign_da=True)
    with pytest.raises(ValueError, match="assign_da"):
        BACKEND.shortcut_backward(x, delta, dx, dx, 1.0, 1.0, None, assign_da=True)
