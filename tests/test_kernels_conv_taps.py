"""The per-tap stride-1 convolution (engine.backends.cpu.conv_taps, through conv_images):
against the NumPy reference, against the im2col path (float rounding apart), bit for bit
between one and two threads, and the choice by shape."""

from __future__ import annotations

import numpy as np
import pytest

from dnupdate.engine.backends.cpu import CpuBackend, conv_images, conv_taps
from tests.reference.conv import conv_backward as reference_backward
from tests.reference.conv import conv_forward as reference_forward
from tests.reference.conv import stride1_case
from tests.reference.finite_difference import assert_gradient

# (batch, C, H, W, filters, kh, kw, ph, pw, groups, dilation)
CASES = [
    (2, 3, 7, 6, 4, 3, 3, 1, 1, 1, 1),
    (2, 4, 8, 8, 6, 3, 3, 0, 0, 2, 1),
    (3, 2, 9, 7, 3, 5, 3, 2, 1, 1, 1),
    (2, 2, 9, 8, 3, 3, 3, 2, 2, 1, 2),
    (5, 16, 8, 8, 16, 3, 3, 1, 1, 1, 1),
    (2, 3, 5, 5, 2, 1, 1, 1, 1, 1, 1),
    (2, 3, 6, 5, 4, 2, 4, 0, 2, 1, 1),
]


def _setup(case, seed=0):
    x, weights, geometry = stride1_case(case, seed)
    c, (h, w), (ph, pw), (oh, ow) = x.shape[1], x.shape[2:], geometry[2], geometry[4]
    g, m, _ = weights.shape
    (kh, kw), d, f = geometry[0], geometry[3], g * m
    floats = max(
        conv_images.col_floats(x.shape, weights.shape, *geometry),
        conv_taps.forward_floats(c // g, f // g, (kh, kw), (ph, pw), d, (h, w), (oh, ow)),
    )
    return x, weights, geometry, floats


def _forward(x, weights, geometry, floats, by_taps, chunks=3):
    out = np.full((x.shape[0], weights.shape[0] * weights.shape[1], *geometry[4]), np.nan)
    out = out.astype(np.float32)
    col = np.full((chunks, floats), np.nan, dtype=np.float32)  # scratch must not leak in
    conv_images.conv_forward(x, weights, out, col, *geometry, by_taps=by_taps)
    return out


@pytest.mark.parametrize("case", CASES)
def test_taps_match_the_reference_and_im2col(case):
    x, weights, geometry, floats = _setup(case)
    (kh, kw), _, pad, dilation, _ = geometry
    groups, m, k = weights.shape
    w4 = weights.reshape(groups * m, k // (kh * kw), kh, kw)
    want = reference_forward(x, w4, None, (1, 1), pad, groups, dilation)
    taps = _forward(x, weights, geometry, floats, by_taps=True)
    np.testing.assert_allclose(taps, want, rtol=1e-5, atol=1e-5)
    im2col = _forward(x, weights, geometry, floats, by_taps=False)
    np.testing.assert_allclose(taps, im2col, rtol=1e-5, atol=1e-5)


def test_taps_do_not_depend_on_the_thread_count():
    x, weights, geometry, floats = _setup((12, 16, 10, 9, 16, 3, 3, 1, 1, 1, 1), seed=5)
    results = []
    for count in (1, 2):
        CpuBackend(threads=count)
        results.append(_forward(x, weights, geometry, floats, by_taps=True, chunks=4))
    assert np.array_equal(results[0], results[1])


def test_taps_are_chosen_by_shape():
    """Stride 1, 8–64 input channels per group, not an unpadded 1×1; the default (None) takes
    them where they apply and the scratch is large enough."""
    assert conv_taps.applies((3, 3), (1, 1), (1, 1), 16)
    assert conv_taps.applies((3, 3), (1, 1), (1, 1), 64)
    assert not conv_taps.applies((3, 3), (2, 2), (1, 1), 16)
    assert not conv_taps.applies((3, 3), (1, 1), (1, 1), 3)
    assert not conv_taps.applies((3, 3), (1, 1), (1, 1), 128)
    assert not conv_taps.applies((1, 1), (1, 1), (0, 0), 16)
    x, weights, geometry, _ = _setup((2, 16, 6, 6, 8, 3, 3, 1, 1, 1, 1))
    need = conv_images.col_floats(x.shape, weights.shape, *geometry)
    taps = conv_taps.forward_floats(16, 8, (3, 3), (1, 1), 1, (6, 6), (6, 6))
    assert need == max(taps, 144 * 36)  # the backward's im2col still needs K·N
    with pytest.raises(ValueError, match="per-tap"):
        _forward(x, weights, ((3, 3), (2, 2), (1, 1), 1, (3, 3)), need, by_taps=True)


def test_the_layer_sizes_its_scratch_for_the_taps():
    """A 16-channel 3×3 layer gets the taps' scratch from the backend and gives the
    reference's output through them."""
    from dnupdate.engine.model.network import Network
    from dnupdate.engine.spec import ConvSpec, InputSpec, NetSpec

    layer = ConvSpec(name="conv", filters=16, kernel_h=3, kernel_w=3, pad_h=1, pad_w=1)
    net = Network(
        NetSpec("n", InputSpec(16, 8, 8), (layer,)), CpuBackend(), batch=3, semantics="caffe"
    )
    conv = net.layers[0]
    taps = conv_taps.forward_floats(16, 16, (3, 3), (1, 1), 1, (8, 8), (8, 8))
    assert conv.chunk_shapes[0][0] == max(taps, 144 * 64)
    rng = np.random.default_rng(2)
    for _, view in net.named_blobs():
        view[...] = rng.standard_normal(view.shape).astype(np.float32)
    x = rng.standard_normal((3, 16, 8, 8)).astype(np.float32)
    want = reference_forward(x, net.blob("conv", 0), net.blob("conv", 1), (1, 1), (1, 1))
    np.testing.assert_allclose(net.forward(x, train=True), want, rtol=1e-5, atol=1e-4)


def _backward(x, weights, geometry, delta, by_taps, chunks=3, assign=False, want_dx=True):
    """``(dweights, dx)`` of one backward call from fixed starting values (dx starts at 1 so
    that ``+=`` and ``=`` differ)."""
    groups, m, k = weights.shape
    (kh, kw), _, pad, dilation, out_hw = geometry
    x_hw = x.shape[2:]
    per_group = x.shape[1] // groups
    floats = max(
        k * out_hw[0] * out_hw[1],
        conv_taps.forward_floats(per_group, m, (kh, kw), pad, dilation, x_hw, out_hw),
    )
    dfloats = max(k * out_hw[0] * out_hw[1], 2 * per_group * (x_hw[0] + 6) * (x_hw[1] + 6))
    col = np.full((chunks, floats), np.nan, dtype=np.float32)
    dcol = np.full((chunks, dfloats), np.nan, dtype=np.float32)
    partial = np.full((chunks, groups, k, m), np.nan, dtype=np.float32)
    dweights = np.full_like(weights, 0.5)
    dx = np.ones_like(x) if want_dx else None
    conv_images.conv_backward(
        x, weights, delta.copy(), dweights, dx, col, dcol, partial, -1.0, *geometry,
        assign_dx=assign, by_taps=by_taps,
    )  # fmt: skip
    return dweights, dx


@pytest.mark.parametrize("case", CASES)
def test_taps_backward_matches_the_reference_and_im2col(case):
    x, weights, geometry, _ = _setup(case, seed=3)
    (kh, kw), _, pad, dilation, out_hw = geometry
    groups, m, k = weights.shape
    rng = np.random.default_rng(4)
    delta = rng.standard_normal((x.shape[0], groups * m, *out_hw)).astype(np.float32)
    w4 = weights.reshape(groups * m, k // (kh * kw), kh, kw)
    dx_want, dw_want, _ = reference_backward(x, w4, delta, (1, 1), pad, groups, dilation)
    dw, dx = _backward(x, weights, geometry, delta, by_taps=True)
    np.testing.assert_allclose(dw, 0.5 - dw_want.reshape(weights.shape), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx, 1.0 + dx_want, rtol=1e-4, atol=1e-4)
    dw_old, dx_old = _backward(x, weights, geometry, delta, by_taps=False)
    np.testing.assert_allclose(dw, dw_old, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(dx, dx_old, rtol=1e-5, atol=1e-4)
    _, dx_assigned = _backward(x, weights, geometry, delta, by_taps=True, assign=True)
    np.testing.assert_allclose(dx_assigned, dx_want, rtol=1e-4, atol=1e-4)
    dw_only, none = _backward(x, weights, geometry, delta, by_taps=True, want_dx=False)
    assert none is None and np.array_equal(dw_only, dw)


def test_taps_backward_does_not_depend_on_the_thread_count():
    x, weights, geometry, _ = _setup((12, 16, 10, 9, 16, 3, 3, 1, 1, 1, 1), seed=6)
    delta = np.random.default_rng(7).standard_normal((12, 16, 10, 9)).astype(np.float32)
    results = []
    for count in (1, 2):
        CpuBackend(threads=count)
        results.append(_backward(x, weights, geometry, delta, by_taps=True, chunks=4))
    for first, second in zip(*results, strict=True):
        assert np.array_equal(first, second)


def test_taps_backward_passes_finite_differences():
    """``Σ r·conv(x, W)`` differentiated by central differences in float64 against the taps'
    float32 gradients, for a few entries of ``x`` and ``W``."""
    case = (2, 8, 5, 6, 4, 3, 3, 1, 1, 1, 1)
    x, weights, geometry, _ = _setup(case, seed=8)
    (kh, kw), _, pad, dilation, out_hw = geometry
    r = np.random.default_rng(9).standard_normal((2, 4, *out_hw)).astype(np.float32)
    w4 = lambda w: w.reshape(4, 8, kh, kw)  # noqa: E731

    def loss(xv, wv):
        return float((reference_forward(xv, w4(wv), None, (1, 1), pad, 1, dilation) * r).sum())

    dw, dx = _backward(x, weights, geometry, r, by_taps=True, assign=True)
    dw = 0.5 - dw  # alpha = −1 from 0.5
    x64, w64 = x.astype(np.float64), weights.astype(np.float64)
    assert_gradient(lambda xv: loss(xv, w64), x64, dx, [(0, 0, 0, 0), (1, 7, 4, 5), (0, 3, 2, 1)])
    assert_gradient(lambda wv: loss(x64, wv), w64, dw, [(0, 0, 0), (0, 3, 71), (0, 2, 40)])


def test_the_backward_leaves_the_taps_where_outputs_double_a_small_kernel():
    """The backward's own rule (``conv_taps.backward_applies``): a kernel of at most 9 taps
    with at least twice as many outputs as inputs per group runs im2col (its one weight-
    gradient GEMM beats the per-tap ones); the default call then gives im2col's bits."""
    assert conv_taps.backward_applies((3, 3), (1, 1), (1, 1), 16, 16)
    assert conv_taps.backward_applies((3, 3), (1, 1), (1, 1), 32, 63)
    assert not conv_taps.backward_applies((3, 3), (1, 1), (1, 1), 32, 64)
    assert conv_taps.backward_applies((5, 5), (1, 1), (0, 0), 20, 50)  # LeNet's conv2
    assert not conv_taps.backward_applies((3, 3), (1, 1), (1, 1), 3, 64)  # no taps at all
    delta_rng = np.random.default_rng(8)
    for filters, by_rule in ((16, False), (8, True)):
        x, weights, geometry, _ = _setup((3, 8, 6, 6, filters, 3, 3, 1, 1, 1, 1), seed=9)
        delta = delta_rng.standard_normal((3, filters, 6, 6)).astype(np.float32)
        default = _backward(x, weights, geometry, delta, by_taps=None)
        chosen = _backward(x, weights, geometry, delta, by_taps=by_rule)
        for got, want in zip(default, chosen, strict=True):
            assert np.array_equal(got, want)
