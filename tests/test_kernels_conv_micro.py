"""The register-blocked micro-kernel (engine.backends.cpu.microkernel) and the stride-1
convolution on it (conv_direct, through conv_images): against the NumPy reference and finite
differences, bit for bit across tile shapes and thread counts, the choice by shape, and a
coarse guard that the tile compiles to vector fused multiply-adds."""

from __future__ import annotations

import re

import numpy as np
import pytest
from numba import njit

from dnupdate.engine.backends.cpu import CpuBackend, conv_direct, conv_images, microkernel
from tests.reference.conv import conv_backward as reference_backward
from tests.reference.conv import conv_forward as reference_forward
from tests.reference.conv import stride1_case, strided_case
from tests.reference.finite_difference import assert_gradient

pytestmark = pytest.mark.skipif(
    not microkernel.AVAILABLE, reason="the JIT target has no FMA + AVX-512F"
)

# (batch, C, H, W, filters, kh, kw, ph, pw, groups, dilation): rows of 16+ pixels, a partial
# last vector, groups, dilation, a non-square kernel
CASES = [
    (2, 8, 5, 17, 16, 3, 3, 1, 1, 1, 1),
    (2, 16, 4, 16, 32, 3, 3, 1, 1, 2, 1),
    (2, 8, 6, 20, 16, 3, 3, 2, 2, 1, 2),
    (2, 9, 5, 18, 32, 5, 3, 2, 1, 1, 1),
    (3, 8, 3, 33, 16, 3, 3, 1, 1, 1, 1),
    # rows of at most 16 pixels (segment tiles): two 8-pixel rows a vector with an odd row
    # count, LeNet's 5×5 20 → 50 (10-row tiles), 12- and 16-pixel rows, groups and dilation
    (2, 16, 7, 8, 16, 3, 3, 1, 1, 1, 1),
    (2, 20, 12, 12, 50, 5, 5, 0, 0, 1, 1),
    (2, 8, 5, 12, 12, 3, 3, 1, 1, 1, 1),
    (2, 16, 4, 16, 20, 3, 3, 1, 1, 2, 1),
    (2, 8, 8, 10, 8, 3, 3, 2, 1, 1, 2),
]
# the gradients only: partial tiles of rows in both, and each of the backward's paths
BACKWARD_CASES = [
    *CASES,
    (2, 9, 4, 17, 10, 3, 3, 1, 1, 1, 1),
    (2, 16, 3, 16, 20, 3, 3, 1, 1, 2, 1),
    # 8×8 maps: the weight gradient by the micro-kernel (tiles 8 × 3), the input
    # gradient by the segment tiles (16 → 16) or by im2col (8 → 24: outputs more than double)
    (2, 16, 8, 8, 16, 3, 3, 1, 1, 1, 1),
    (2, 8, 6, 8, 24, 3, 3, 1, 1, 1, 1),
    # the input gradient tap by tap (the flipped convolution would sum mostly zeros): padding,
    # groups, dilation
    (2, 8, 14, 14, 16, 7, 7, 1, 1, 1, 1),
    (2, 16, 12, 12, 20, 5, 5, 0, 0, 2, 1),
    (2, 8, 12, 12, 8, 3, 3, 0, 0, 1, 2),
    # few input channels where the dot tiles (conv_dot) do not fit (outputs or pixels not
    # whole tiles): the weight gradient by kernel rows (15, 10 and 7 floats a row, the last two
    # to a vector), groups
    (2, 3, 8, 7, 16, 5, 5, 2, 2, 1, 1),
    (2, 2, 9, 10, 8, 5, 5, 2, 2, 1, 1),
    (2, 1, 12, 12, 10, 7, 7, 0, 0, 1, 1),
    (2, 6, 8, 8, 20, 5, 5, 2, 2, 2, 1),
]

# forward only: fewer than 8 input channels per group take the micro-kernel's forward (16+
# products per output), not its backward
FORWARD_CASES = [
    *CASES,
    (2, 3, 4, 32, 16, 3, 3, 1, 1, 1, 1),
    (2, 4, 3, 18, 16, 3, 3, 1, 1, 1, 1),
    (2, 1, 28, 28, 20, 5, 5, 0, 0, 1, 1),  # LeNet's first layer: 10-row tiles on 24-pixel rows
    (2, 2, 5, 21, 30, 3, 3, 1, 1, 1, 1),  # 10-row tiles, a partial second vector
]


def _caller(shape):
    """A jitted ``call(packed, b, table, c, ldc, rows, cols, accumulate)`` of the tile of
    ``shape`` (an intrinsic is called from compiled code only)."""
    tile = microkernel.make_tile(*shape)

    @njit
    def call(packed, b, table, c, ldc, rows, cols, accumulate):
        tile(packed.ctypes.data, b.ctypes.data, table.ctypes.data, table.size, c.ctypes.data,
             ldc, rows, cols, accumulate)  # fmt: skip

    return call


_TILES = {shape: _caller(shape) for shape in [(16, 1), (8, 2), (5, 3), (1, 1)]}


_setup = stride1_case


def _forward(x, weights, geometry, by_micro, chunks=3):
    out = np.full((x.shape[0], weights.shape[0] * weights.shape[1], *geometry[4]), np.nan)
    out = out.astype(np.float32)
    floats = conv_images.col_floats(x.shape, weights.shape, *geometry)
    col = np.full((chunks, floats), np.nan, dtype=np.float32)  # scratch must not leak in
    conv_images.conv_forward(x, weights, out, col, *geometry, by_micro=by_micro)
    return out


def _backward(x, weights, geometry, delta, by_micro, chunks=3, assign=False):
    """``(dweights, dx)`` of one backward call; dx starts at 1 so ``+=`` and ``=`` differ."""
    groups, m, k = weights.shape
    out_hw = geometry[4]
    floats = conv_images.col_floats(x.shape, weights.shape, *geometry)
    col = np.full((chunks, floats), np.nan, dtype=np.float32)
    dcol = np.full((chunks, k * out_hw[0] * out_hw[1]), np.nan, dtype=np.float32)
    partial = np.full((chunks, groups, k, m), np.nan, dtype=np.float32)
    dweights = np.full_like(weights, 0.5)
    dx = np.ones_like(x)
    conv_images.conv_backward(
        x, weights, delta.copy(), dweights, dx, col, dcol, partial, -1.0, *geometry,
        assign_dx=assign, by_micro=by_micro,
    )  # fmt: skip
    return dweights, dx


@pytest.mark.parametrize("case", FORWARD_CASES)
def test_the_forward_matches_the_reference_and_the_old_paths(case):
    x, weights, geometry = _setup(case)
    (kh, kw), _, pad, dilation, _ = geometry
    groups, m, k = weights.shape
    w4 = weights.reshape(groups * m, k // (kh * kw), kh, kw)
    want = reference_forward(x, w4, None, (1, 1), pad, groups, dilation)
    micro = _forward(x, weights, geometry, by_micro=True)
    np.testing.assert_allclose(micro, want, rtol=1e-5, atol=1e-4)
    old = _forward(x, weights, geometry, by_micro=False)
    np.testing.assert_allclose(micro, old, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("case", BACKWARD_CASES)
def test_the_backward_matches_the_reference_and_the_old_paths(case):
    x, weights, geometry = _setup(case, seed=3)
    (kh, kw), _, pad, dilation, out_hw = geometry
    groups, m, k = weights.shape
    delta = np.random.default_rng(4).standard_normal((x.shape[0], groups * m, *out_hw))
    delta = delta.astype(np.float32)
    w4 = weights.reshape(groups * m, k // (kh * kw), kh, kw)
    dx_want, dw_want, _ = reference_backward(x, w4, delta, (1, 1), pad, groups, dilation)
    dw, dx = _backward(x, weights, geometry, delta, by_micro=True)
    np.testing.assert_allclose(dx, 1.0 + dx_want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dw, 0.5 - dw_want.reshape(weights.shape), rtol=1e-4, atol=1e-4)
    _, dx_assigned = _backward(x, weights, geometry, delta, by_micro=True, assign=True)
    np.testing.assert_allclose(dx_assigned, dx_want, rtol=1e-4, atol=1e-4)
    dw_old, dx_old = _backward(x, weights, geometry, delta, by_micro=False)
    np.testing.assert_allclose(dw, dw_old, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(dx, dx_old, rtol=1e-5, atol=1e-4)


# strided convolutions: ((batch, C, H, W, filters, kh, kw, ph, pw, groups, dilation), stride):
# a CIFAR ResNet's downsampling 3×3 (even and odd sizes), a strided unpadded 1×1, groups, a
# stride along the rows only, dilation, rows too wide for the tap-by-tap input gradient
STRIDED_CASES = [
    ((2, 16, 8, 16, 32, 3, 3, 1, 1, 1, 1), (2, 2)),
    ((2, 8, 9, 19, 16, 3, 3, 1, 1, 1, 1), (2, 2)),
    ((2, 16, 8, 17, 16, 1, 1, 0, 0, 1, 1), (2, 2)),
    ((2, 16, 6, 16, 16, 3, 3, 1, 1, 2, 1), (2, 2)),
    ((2, 8, 5, 17, 16, 3, 3, 1, 1, 1, 1), (1, 2)),
    ((2, 8, 9, 20, 16, 3, 3, 2, 2, 1, 2), (2, 2)),
    ((2, 8, 4, 40, 16, 3, 3, 1, 1, 1, 1), (2, 2)),  # 20-pixel rows: the input gradient by im2col
]


@pytest.mark.parametrize(("case", "stride"), STRIDED_CASES)
def test_the_strided_forward_matches_the_reference_and_the_old_paths(case, stride):
    """The forward on the input's phase planes (``by_micro=True`` requires the micro-kernel),
    against the reference and im2col + GEMM, and on 3 threads."""
    x, weights, geometry = strided_case(case, stride)
    (kh, kw), _, pad, dilation, _ = geometry
    groups, m, k = weights.shape
    w4 = weights.reshape(groups * m, k // (kh * kw), kh, kw)
    want = reference_forward(x, w4, None, stride, pad, groups, dilation)
    micro = _forward(x, weights, geometry, by_micro=True)
    np.testing.assert_allclose(micro, want, rtol=1e-5, atol=1e-4)
    old = _forward(x, weights, geometry, by_micro=False)
    np.testing.assert_allclose(micro, old, rtol=1e-5, atol=1e-4)
    CpuBackend(threads=3)
    try:
        assert np.array_equal(_forward(x, weights, geometry, by_micro=True), micro)
    finally:
        CpuBackend(threads=1)


def test_strided_input_gradients_go_tap_by_tap_on_segment_rows():
    """The rule: output-gradient rows of 8–16 pixels (a CIFAR ResNet's stride-2 layers), not
    wider ones (im2col's then)."""
    assert conv_direct.taps_dx_applies((3, 3), (2, 2), (1, 1), 1, 16, 32, 16, (32, 32), (16, 16))
    assert conv_direct.taps_dx_applies((3, 3), (2, 2), (1, 1), 1, 32, 64, 8, (16, 16), (8, 8))
    assert not conv_direct.taps_dx_applies((3, 3), (2, 2), (1, 1), 1, 16, 32, 32, (64, 64),
                                           (32, 32))  # fmt: skip


def test_the_phase_planes_hold_the_padded_input():
    """:func:`conv_direct.phase_group` against slicing the zero-padded image, the slack zero,
    and :func:`conv_direct.phase_offsets` at stride 1 is :func:`conv_direct.offsets`."""
    rng = np.random.default_rng(0)
    x_b = rng.standard_normal((5, 7, 9)).astype(np.float32)
    for (ph, pw), (sh, sw) in [((1, 1), (2, 2)), ((2, 0), (3, 2)), ((0, 1), (1, 2))]:
        padded = np.pad(x_b[1:4], ((0, 0), (ph, ph), (pw, pw)))
        hq, wq = conv_direct.phase_hw(x_b.shape[1:], (ph, pw), (sh, sw))
        planes = 3 * sh * sw * hq * wq
        xq = np.full(planes + 5, np.nan, dtype=np.float32)
        conv_direct.phase_group(x_b, 1, 3, xq, ph, pw, sh, sw)
        grid = xq[:planes].reshape(3, sh, sw, hq, wq)
        for py in range(sh):
            for px in range(sw):
                want = np.zeros((3, hq, wq), np.float32)
                part = padded[:, py::sh, px::sw]
                want[:, : part.shape[1], : part.shape[2]] = part
                assert np.array_equal(grid[:, py, px], want)
        assert not xq[planes:].any()
    flat = conv_direct.offsets(3, (3, 2), 2, (8, 9))
    assert np.array_equal(conv_direct.phase_offsets(3, (3, 2), 2, (1, 1), (8, 9)), flat)


@pytest.mark.parametrize(("case", "stride"), STRIDED_CASES)
def test_the_strided_backward_matches_the_reference_and_the_old_paths(case, stride):
    """The weight gradient by the micro-kernel with a pixel table that steps over the input
    (``by_micro=True`` requires it), and the input gradient tap by tap into the padded
    gradient's phase planes where its rows suit the segment tiles (8–16 pixels), else
    im2col's; added and assigned."""
    x, weights, geometry = strided_case(case, stride, seed=3)
    (kh, kw), _, pad, dilation, out_hw = geometry
    groups, m, k = weights.shape
    delta = np.random.default_rng(4).standard_normal((x.shape[0], groups * m, *out_hw))
    delta = delta.astype(np.float32)
    w4 = weights.reshape(groups * m, k // (kh * kw), kh, kw)
    dx_want, dw_want, _ = reference_backward(x, w4, delta, stride, pad, groups, dilation)
    dw, dx = _backward(x, weights, geometry, delta, by_micro=True)
    np.testing.assert_allclose(dx, 1.0 + dx_want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dw, 0.5 - dw_want.reshape(weights.shape), rtol=1e-4, atol=1e-4)
    _, dx_assigned = _backward(x, weights, geometry, delta, by_micro=True, assign=True)
    np.testing.assert_allclose(dx_assigned, dx_want, rtol=1e-4, atol=1e-4)
    dw_old, dx_old = _backward(x, weights, geometry, delta, by_micro=False)
    np.testing.assert_allclose(dw, dw_old, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(dx, dx_old, rtol=1e-5, atol=1e-4)
    CpuBackend(threads=3)
    try:
        dw_3, dx_3 = _backward(x, weights, geometry, delta, by_micro=True)
    finally:
        CpuBackend(threads=1)
    assert np.array_equal(dw_3, dw) and np.array_equal(dx_3, dx)


@pytest.mark.parametrize(
    "case",
    [
        (12, 16, 6, 16, 16, 3, 3, 1, 1, 1, 1),  # 16-pixel rows
        (12, 20, 12, 12, 50, 5, 5, 0, 0, 1, 1),  # LeNet's second layer: pairs, dx tap by tap
        (12, 3, 7, 8, 16, 5, 5, 2, 2, 1, 1),  # few channels: the weight gradient by kernel rows
    ],
)
def test_the_micro_kernel_does_not_depend_on_the_thread_count(case):
    x, weights, geometry = _setup(case, seed=5)
    out_shape = (case[0], case[4], *geometry[4])
    delta = np.random.default_rng(7).standard_normal(out_shape).astype(np.float32)
    results = []
    for count in (1, 2, 3):
        CpuBackend(threads=count)
        out = _forward(x, weights, geometry, by_micro=True, chunks=4)
        results.append((out, *_backward(x, weights, geometry, delta, by_micro=True, chunks=4)))
    CpuBackend(threads=1)
    for other in results[1:]:
        for first, second in zip(results[0], other, strict=True):
            assert np.array_equal(first, second)


@pytest.mark.parametrize("stride", [(1, 1), (2, 2)])
def test_the_gradients_pass_finite_differences(stride):
    """``Σ r·conv(x, W)`` differentiated by central differences in float64 against the
    micro-kernel's float32 input and weight gradients, for a few entries of ``x`` and ``W``
    (strided: the weight gradient's pixel table steps over the input, the input gradient goes
    tap by tap into phase planes)."""
    x, weights, geometry = strided_case((2, 8, 4, 16, 8, 3, 3, 1, 1, 1, 1), stride, seed=8)
    (kh, kw), _, pad, dilation, out_hw = geometry
    r = np.random.default_rng(9).standard_normal((2, 8, *out_hw)).astype(np.float32)

    def loss(xv, wv):
        w4 = wv.reshape(8, 8, kh, kw)
        return float((reference_forward(xv, w4, None, stride, pad, 1, dilation) * r).sum())

    dw, dx = _backward(x, weights, geometry, r, by_micro=True, assign=True)
    dw = 0.5 - dw  # alpha = −1 from 0.5
    x64, w64 = x.astype(np.float64), weights.astype(np.float64)
    assert_gradient(lambda xv: loss(xv, w64), x64, dx, [(0, 0, 0, 0), (1, 7, 3, 15), (0, 3, 2, 9)])
    assert_gradient(lambda wv: loss(x64, wv), w64, dw, [(0, 0, 0), (0, 7, 71), (0, 3, 40)])


def _run_tiles(shape, a, b, table, c, accumulate):
    """``c (+)= a · B`` tile by tile with ``R × 16·J`` tiles of ``shape``."""
    rows_r, vectors_j = shape
    packed = microkernel.pack_rows(a, rows_r)
    width = microkernel.LANES * vectors_j
    for t in range(packed.shape[0]):
        for j in range(0, c.shape[1], width):
            rows = min(rows_r, a.shape[0] - t * rows_r)
            target = c[t * rows_r :, j:]
            _TILES[shape](packed[t], b[j:], table, target, c.shape[1], rows,
                          min(width, c.shape[1] - j), accumulate)  # fmt: skip


def test_every_tile_shape_gives_the_same_bits():
    """Each element is one FMA chain over ``k`` in order from 0: 16×1, 8×2, 5×3 and 1×1 tiles
    of the same product agree bit for bit, with ``C = acc`` and with ``C += acc``; only the
    tile's rows × columns are written."""
    rng = np.random.default_rng(11)
    a = rng.standard_normal((19, 37)).astype(np.float32)
    b = rng.standard_normal(37 * 50 + 64).astype(np.float32)
    table = (np.arange(37) * 50 + rng.integers(0, 3, 37)).astype(np.int64)  # shifted rows
    shifted = np.stack([b[table + j] for j in range(41)], axis=1).astype(np.float64)  # (K, 41)
    want = a.astype(np.float64) @ shifted
    results = []
    for shape in _TILES:
        c = np.full((19, 41), 2.0, dtype=np.float32)
        _run_tiles(shape, a, b, table, c, accumulate=True)
        assigned = np.full((19, 41), np.nan, dtype=np.float32)
        _run_tiles(shape, a, b, table, assigned, accumulate=False)
        results.append((c, assigned))
    np.testing.assert_allclose(results[0][1], want, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(results[0][0], np.float32(2.0) + results[0][1])
    for c, assigned in results[1:]:
        assert np.array_equal(c, results[0][0]) and np.array_equal(assigned, results[0][1])


def test_the_choice_is_the_shape_s():
    """Stride 1, rows of at least 16 pixels; the forward 3–64 input channels and whole tiles of
    16 outputs per group; the weight gradient 8–64 input channels, 8+ outputs and rows of 8+
    pixels; the input
    gradient 8–64 of each and ``d·(k − 1) ≥ p`` (its padding)."""
    assert conv_direct.applies((3, 3), (1, 1), (1, 1), 16, 16, 32)
    assert conv_direct.applies((3, 3), (1, 1), (1, 1), 64, 64, 16)
    assert conv_direct.applies((3, 3), (1, 1), (1, 1), 64, 64, 8)  # two rows a vector
    assert conv_direct.applies((5, 5), (1, 1), (0, 0), 20, 50, 8)  # rows of at most 16: 8+
    assert not conv_direct.applies((3, 3), (1, 1), (1, 1), 64, 64, 7)
    assert not conv_direct.applies((3, 3), (1, 1), (1, 1), 64, 4, 12)
    assert [conv_direct.tile_rows(m, 8) for m in (50, 64, 20, 12, 8)] == [10, 8, 10, 8, 8]
    assert conv_direct.tile_rows(64, 17) == conv_direct.ROWS
    assert conv_direct.applies((3, 3), (2, 2), (1, 1), 16, 32, 16)  # strided: phase planes
    assert conv_direct.applies((1, 1), (2, 2), (0, 0), 16, 16, 16)
    assert not conv_direct.applies((1, 1), (1, 1), (0, 0), 16, 16, 32)  # the GEMM on x itself
    assert conv_direct.dw_applies((3, 3), (2, 2), (1, 1), 16, 32, 16)
    assert conv_direct.dw_applies((1, 1), (2, 2), (0, 0), 16, 16, 16)
    assert not conv_direct.dw_applies((1, 1), (1, 1), (0, 0), 16, 16, 16)
    assert conv_direct.applies((3, 3), (1, 1), (1, 1), 3, 16, 32)  # a CIFAR net's first layer
    assert conv_direct.applies((3, 3), (1, 1), (1, 1), 2, 16, 32)  # 18 products per output
    assert not conv_direct.applies((3, 3), (1, 1), (1, 1), 1, 16, 32)  # 9: too short a sum
    assert conv_direct.applies((5, 5), (1, 1), (0, 0), 1, 20, 24)  # LeNet's first: 10-row tiles
    assert conv_direct.tile_rows(20, 24) == 10 and conv_direct.tile_rows(32, 24) == 16
    assert not conv_direct.applies((3, 3), (1, 1), (1, 1), 16, 8, 32)  # half a tile of rows
    assert not conv_direct.applies((3, 3), (1, 1), (1, 1), 128, 128, 32)
    assert not conv_direct.applies((1, 1), (1, 1), (0, 0), 16, 16, 32)
    assert conv_direct.dw_applies((3, 3), (1, 1), (1, 1), 8, 10, 32)
    assert not conv_direct.dw_applies((3, 3), (1, 1), (1, 1), 3, 16, 32)
    assert not conv_direct.dw_applies((3, 3), (1, 1), (1, 1), 16, 4, 32)
    assert conv_direct.dw_applies((3, 3), (1, 1), (1, 1), 64, 128, 8)  # any rows of 8+ pixels
    assert not conv_direct.dw_applies((3, 3), (1, 1), (1, 1), 64, 64, 4)
    # few channels: by kernel rows where a kernel row fits a vector and the sum is long
    assert conv_direct.dw_rows_applies((5, 5), (1, 1), (2, 2), 1, 3, 32)
    assert not conv_direct.dw_rows_applies((5, 5), (1, 1), (0, 0), 1, 1, 20)  # 25 products
    assert not conv_direct.dw_rows_applies((5, 5), (1, 1), (2, 2), 2, 3, 32)  # dilation
    assert not conv_direct.dw_rows_applies((7, 7), (1, 1), (3, 3), 1, 3, 32)  # 21 floats a row
    assert not conv_direct.dw_rows_applies((5, 5), (1, 1), (2, 2), 1, 3, 4)  # 4 outputs
    # the weight gradient's tile: the fewest padded rows, 8 × 3 on a tie
    tiles = conv_direct.DW_TILES
    assert [tiles[conv_direct.dw_choice(m)][0] for m in (16, 64, 50, 20, 24, 8, 9)] == [
        8, 8, 10, 10, 8, 8, 10,
    ]  # fmt: skip
    assert conv_direct.dx_applies((3, 3), (1, 1), (1, 1), 1, 8, 16, 32)
    assert not conv_direct.dx_applies((3, 3), (1, 1), (1, 1), 1, 4, 16, 32)  # 4 rows of 16
    assert not conv_direct.dx_applies((3, 3), (1, 1), (1, 1), 1, 16, 7, 32)
    assert not conv_direct.dx_applies((3, 3), (1, 1), (3, 3), 1, 16, 16, 32)
    # the input gradient tap by tap where the flipped convolution grows more than 1.5×
    assert conv_direct.dx_applies((5, 5), (1, 1), (0, 0), 1, 20, 50, 12)
    assert not conv_direct.dx_applies((5, 5), (1, 1), (0, 0), 1, 20, 50, 12, (12, 12), (8, 8))
    assert conv_direct.taps_dx_applies((5, 5), (1, 1), (0, 0), 1, 20, 50, 8, (12, 12), (8, 8))
    assert not conv_direct.taps_dx_applies((3, 3), (1, 1), (1, 1), 1, 64, 64, 8, (8, 8), (8, 8))
    assert not conv_direct.taps_dx_applies((5, 5), (1, 1), (0, 0), 1, 4, 50, 8, (12, 12), (8, 8))
    assert not conv_direct.taps_dx_applies((5, 5), (1, 1), (0, 0), 1, 20, 50, 6, (10, 10), (6, 6))
    x, weights, geometry = _setup((2, 8, 3, 6, 8, 3, 3, 1, 1, 1, 1))
    with pytest.raises(ValueError, match="micro-kernel"):
        _forward(x, weights, geometry, by_micro=True)


def _segment_caller(shape):
    """A jitted call of the segment tile of ``shape = (R, J, H)`` (as :func:`_caller`)."""
    tile = microkernel.make_segment_tile(*shape)

    @njit
    def call(packed, b, table, c, ldc, rows, cols, accumulate, width, b_pitch, c_pitch):
        tile(packed.ctypes.data, b.ctypes.data, table.ctypes.data, table.size, c.ctypes.data,
             ldc, rows, cols, accumulate, width, b_pitch, c_pitch)  # fmt: skip

    return call


@pytest.mark.parametrize("width", [5, 8, 12, 16])
def test_segment_tiles_give_the_contiguous_tile_s_bits(width):
    """Each segment (an image row of ``width`` pixels, read at a row pitch of the padded
    input, written at the output's) is the same FMA chain over ``k`` as the 16 × 1 tile on
    that row alone: 8 × 2 and 10 × 2 tiles, one row a vector and (rows of at most 8) two,
    ``C = acc`` and ``C += acc``, odd row counts; nothing outside the rows × segments."""
    rng = np.random.default_rng(12)
    m, depth, out_h, pitch = 19, 23, 7, width + 3
    a = rng.standard_normal((m, depth)).astype(np.float32)
    b = rng.standard_normal(depth * 5 + out_h * pitch + 16).astype(np.float32)
    table = (np.arange(depth) * 5).astype(np.int64)
    ldc = out_h * width
    want = np.full((m, ldc), 2.0, dtype=np.float32)
    packed16 = microkernel.pack_rows(a, 16)
    for t in range(packed16.shape[0]):
        for oy in range(out_h):
            _TILES[(16, 1)](packed16[t], b[oy * pitch :], table, want[t * 16 :, oy * width :],
                            ldc, min(16, m - t * 16), width, True)  # fmt: skip
    shapes = [(8, 2, 1), (10, 2, 1)] + ([(8, 2, 2), (10, 2, 2)] if width <= 8 else [])
    for rows_r, vectors_j, halves in shapes:
        call = _segment_caller((rows_r, vectors_j, halves))
        packed = microkernel.pack_rows(a, rows_r)
        per_call = vectors_j * halves
        for accumulate in (True, False):
            got = np.full((m + rows_r, ldc + 16), 2.0 if accumulate else np.nan, np.float32)
            for t in range(packed.shape[0]):
                for oy in range(0, out_h, per_call):
                    call(packed[t], b[oy * pitch :], table, got[t * rows_r :, oy * width :],
                         got.shape[1], min(rows_r, m - t * rows_r),
                         min(per_call, out_h - oy) * width, accumulate, width, pitch,
                         width)  # fmt: skip
            expected = want if accumulate else want - np.float32(2.0)
            if accumulate:
                assert np.array_equal(got[:m, :ldc], want)
            else:
                np.testing.assert_allclose(got[:m, :ldc], expected, rtol=1e-6, atol=1e-5)
            outside = got[m:].ravel().tolist() + got[:, ldc:].ravel().tolist()
            assert all(v == 2.0 for v in outside) or all(np.isnan(outside))


def test_the_tile_compiles_to_vector_fma():
    """Coarse guard: the tile's IR calls ``llvm.fma.v16f32`` (true FMA, not ``fmuladd``) and
    its machine code holds packed ``vfmadd`` on 512-bit registers."""
    call = _caller((16, 1))
    z = np.zeros(256, np.float32)
    call(z, z, np.zeros(4, np.int64), np.zeros((16, 16), np.float32), 16, 16, 16, False)
    llvm = "\n".join(call.inspect_llvm().values())
    assert "llvm.fma.v16f32" in llvm and "fmuladd" not in llvm
    asm = "\n".join(call.inspect_asm().values())
    assert re.search(r"vfmadd\d+ps\s+[^\n]*zmm", asm)


def test_the_micro_kernel_needs_fma_and_avx512_on_the_jit_target(monkeypatch):
    """The gate reads the JIT's target as ``precision.F16C`` does (an explicit
    ``NUMBA_CPU_FEATURES`` wins; a named CPU without features counts as lacking them); where
    it is off no convolution takes the micro-kernel."""
    from numba.core import config

    monkeypatch.setattr(config, "CPU_FEATURES", "+fma,+avx512f,+avx2")
    assert microkernel.jit_target_has("fma", "avx512f")
    monkeypatch.setattr(config, "CPU_FEATURES", "+fma,-avx512f,+avx2")
    assert not microkernel.jit_target_has("fma", "avx512f")
    monkeypatch.setattr(config, "CPU_FEATURES", None)
    monkeypatch.setattr(config, "CPU_NAME", "generic")
    assert not microkernel.jit_target_has("fma")
    monkeypatch.setattr(microkernel, "AVAILABLE", False)
    assert not conv_direct.applies((3, 3), (1, 1), (1, 1), 16, 16, 32)
    x, weights, geometry = _setup((2, 16, 4, 16, 16, 3, 3, 1, 1, 1, 1))
    with pytest.raises(ValueError, match="micro-kernel"):
        _forward(x, weights, geometry, by_micro=True)
