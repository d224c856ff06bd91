"""The weight gradient of few input channels with the pixels in the vector lanes
(engine.backends.cpu.conv_dot on microkernel.make_dot_tile, through conv_images): against the
float64 reference, im2col + OpenBLAS and finite differences, bit for bit across thread counts,
the lane order of the tile, the windows it reads and the choice by shape."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from dnupdate.engine.backends.cpu import CpuBackend, conv_dot, conv_images, microkernel
from tests.reference.conv import conv_backward as reference_backward
from tests.reference.conv import conv_forward as reference_forward
from tests.reference.conv import stride1_case
from tests.reference.finite_difference import assert_gradient

pytestmark = pytest.mark.skipif(
    not microkernel.AVAILABLE, reason="the JIT target has no FMA + AVX-512F"
)

# (batch, C, H, W, filters, kh, kw, ph, pw, groups, dilation), each on the dot tiles: LeNet's
# first layer, a CIFAR first layer (3 channels, 27 taps: a short last group of taps), a
# non-square kernel with unequal padding, dilation, groups, padding wider than the kernel
# reaches (windows wholly in the padding)
CASES = [
    (3, 1, 28, 28, 20, 5, 5, 0, 0, 1, 1),
    (2, 3, 8, 16, 16, 3, 3, 1, 1, 1, 1),
    (2, 2, 8, 18, 8, 3, 5, 1, 2, 1, 1),
    (2, 1, 12, 12, 4, 3, 3, 2, 2, 1, 2),
    (2, 6, 8, 8, 16, 3, 3, 1, 1, 2, 1),
    (2, 1, 4, 4, 4, 3, 3, 3, 3, 1, 1),
]


def _weight_gradient(x, weights, geometry, delta, by_micro, chunks=3):
    """``dweights`` of one backward call without an input gradient (a first layer), from 0.5
    with alpha −1 (so ``+=`` shows); the scratch starts as NaN so that none of it leaks in."""
    groups, m, k = weights.shape
    floats = conv_images.col_floats(x.shape, weights.shape, *geometry)
    col = np.full((chunks, floats), np.nan, dtype=np.float32)
    dcol = np.full((chunks, floats), np.nan, dtype=np.float32)
    partial = np.full((chunks, groups, k, m), np.nan, dtype=np.float32)
    dweights = np.full_like(weights, 0.5)
    conv_images.conv_backward(
        x, weights, delta.copy(), dweights, None, col, dcol, partial, -1.0, *geometry,
        by_micro=by_micro,
    )  # fmt: skip
    return dweights


def _case(case, seed=3):
    x, weights, geometry = stride1_case(case, seed)
    groups, m, _ = weights.shape
    rng = np.random.default_rng(seed + 1)
    delta = rng.standard_normal((x.shape[0], groups * m, *geometry[4])).astype(np.float32)
    return x, weights, geometry, delta


def _takes_the_dots(x, weights, geometry) -> bool:
    kernel, stride, pad, dilation, out_hw = geometry
    col = np.empty((1, conv_images.col_floats(x.shape, weights.shape, *geometry)), np.float32)
    _, layout = conv_images._micro_dw(x, weights, col, kernel, stride, pad, dilation, out_hw, None)
    return layout == conv_images.DW_DOT


@pytest.mark.parametrize("case", CASES)
def test_the_weight_gradient_matches_the_reference_and_im2col(case):
    x, weights, geometry, delta = _case(case)
    assert _takes_the_dots(x, weights, geometry)
    (kh, kw), _, pad, dilation, _ = geometry
    groups, m, k = weights.shape
    w4 = weights.reshape(groups * m, k // (kh * kw), kh, kw)
    _, dw_want, _ = reference_backward(x, w4, delta, (1, 1), pad, groups, dilation)
    dw = _weight_gradient(x, weights, geometry, delta, by_micro=None)
    np.testing.assert_allclose(dw, 0.5 - dw_want.reshape(weights.shape), rtol=1e-4, atol=1e-4)
    old = _weight_gradient(x, weights, geometry, delta, by_micro=False)
    np.testing.assert_allclose(dw, old, rtol=1e-5, atol=1e-4)
    assert not np.array_equal(dw, old) or case[0] < 3  # another order than OpenBLAS's


@pytest.mark.parametrize(
    "case", [(12, 1, 28, 28, 20, 5, 5, 0, 0, 1, 1), (9, 3, 8, 16, 16, 3, 3, 1, 1, 1, 1)]
)
def test_the_weight_gradient_does_not_depend_on_the_thread_count(case):
    x, weights, geometry, delta = _case(case, seed=5)
    results = []
    for count in (1, 2, 3):
        CpuBackend(threads=count)
        results.append(_weight_gradient(x, weights, geometry, delta, by_micro=True, chunks=4))
    CpuBackend(threads=1)
    for other in results[1:]:
        assert np.array_equal(results[0], other)


def test_the_weight_gradient_passes_finite_differences():
    """``Σ r·conv(x, W)`` differentiated by central differences in float64 against the dot
    tiles' float32 weight gradient, for a few weights (first, last, a middle tap)."""
    case = (2, 3, 8, 16, 8, 3, 3, 1, 1, 1, 1)
    x, weights, geometry, r = _case(case, seed=8)
    (kh, kw), _, pad, dilation, _ = geometry
    assert _takes_the_dots(x, weights, geometry)

    def loss(wv):
        w4 = wv.reshape(8, 3, kh, kw)
        return float((reference_forward(x.astype(np.float64), w4, None, (1, 1), pad, 1,
                                        dilation) * r).sum())  # fmt: skip

    dw = 0.5 - _weight_gradient(x, weights, geometry, r, by_micro=True)  # alpha −1 from 0.5
    assert_gradient(loss, weights.astype(np.float64), dw, [(0, 0, 0), (0, 7, 26), (0, 3, 13)])


_DOT = microkernel.make_dot_tile(conv_dot.ROWS, conv_dot.TAPS)


@njit
def _call_dot(a, lda, b, table, vectors, c, ldc, rows, taps, accumulate):
    _DOT(a.ctypes.data, lda, b.ctypes.data, table.ctypes.data, vectors, c.ctypes.data, ldc,
         rows, taps, accumulate)  # fmt: skip


def test_each_lane_is_a_chain_and_the_lanes_add_in_a_tree():
    """Lane ``l`` sums its pixels ``16·v + l`` in order (``2^25 + 1`` rounds to ``2^25``
    before ``−2^25`` cancels it: 0, where any regrouping of the chain keeps the 1), then the
    lanes add as ``(l, l + 8)``, ``(l, l + 4)``, ``(l, l + 2)``, ``(0, 1)`` (lane 0's ``2^25``
    meets lane 8's ``−2^25`` first: the 1 of lane 1 survives, where a left-to-right sum of
    the lanes loses it)."""
    a = np.ones((4, 48), dtype=np.float32)
    b = np.zeros(112, dtype=np.float32)
    big = np.float32(2.0**25)
    b[0], b[16], b[32] = big, 1.0, -big  # lane 0 of tap 0: one chain over three vectors
    b[64 + 1] = 1.0  # tap 1 (offset 64): lane 1 of its first vector …
    b[64 + 0], b[64 + 8] = big, -big  # … beside lanes 0 and 8 that cancel in the tree
    table = np.array([0, 64], dtype=np.int64)
    c = np.full((4, 2), np.nan, dtype=np.float32)
    _call_dot(a, 48, b, table, 3, c, 2, 4, 2, False)
    assert c[0, 0] == 0.0  # the chain: (2^25 + 1) − 2^25
    lanes = b[64:112].reshape(3, 16).sum(axis=0)  # tap 1's lane sums, exact here
    assert lanes[0] == big and lanes[8] == -big and lanes[1] == 1.0
    assert c[0, 1] == 1.0  # the tree: (lane 0 + lane 8) + … + lane 1
    assert np.float32(np.float32(big + 1.0) - big) == 0.0  # a sequential sum of lanes: 0


def test_the_tile_stores_its_live_rows_and_taps_and_adds_with_accumulate():
    """Integers: every order gives the exact sums, so this checks the offsets, the live rows
    and taps (nothing else written) and ``C += sum``."""
    rng = np.random.default_rng(2)
    a = rng.integers(-4, 5, (4, 32)).astype(np.float32)
    b = rng.integers(-4, 5, 200).astype(np.float32)
    table = np.array([0, 7, 50, 101, 150], dtype=np.int64)
    want = np.stack([a.astype(np.float64) @ b[t : t + 32] for t in table], axis=1)
    for rows, taps in ((4, 5), (3, 2), (1, 1), (4, 4)):
        c = np.full((4, 6), -1.0, dtype=np.float32)
        _call_dot(a, 32, b, table, 2, c, 6, rows, taps, False)
        np.testing.assert_array_equal(c[:rows, :taps], want[:rows, :taps])
        assert (c[rows:] == -1.0).all() and (c[:, taps:] == -1.0).all()
        _call_dot(a, 32, b, table, 2, c, 6, rows, taps, True)
        np.testing.assert_array_equal(c[:rows, :taps], 2 * want[:rows, :taps])


@pytest.mark.parametrize("pad", [(0, 0), (1, 2), (3, 3)])
def test_the_windows_are_the_padded_image_s_columns(pad):
    """``J[c, kx, y, x] = xp[c, y, x + kx·d]`` over every padded row (d = 1 and 2)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 5, 6)).astype(np.float32)
    for dilation in (1, 2):
        kw = 3
        xp = np.pad(x, ((0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
        out_w = xp.shape[2] - dilation * (kw - 1)
        windows = np.full(2 * kw * xp.shape[1] * out_w, np.nan, dtype=np.float32)
        conv_dot._windows(x, windows, 1, 2, kw, pad[0], pad[1], dilation, out_w)
        got = windows.reshape(2, kw, xp.shape[1], out_w)
        for kx in range(kw):
            shift = kx * dilation
            np.testing.assert_array_equal(got[:, kx], xp[1:3, :, shift : shift + out_w])


def test_the_choice_is_the_shape_s():
    """Stride 1, fewer than 8 input channels per group, whole tiles of 4 outputs and of 16
    pixels, not the unpadded 1×1."""
    applies = conv_dot.dw_dot_applies
    assert applies((5, 5), (1, 1), (0, 0), 1, 20, (24, 24))  # LeNet
    assert applies((3, 3), (1, 1), (1, 1), 3, 16, (32, 32))  # CIFAR
    assert applies((3, 3), (1, 1), (1, 1), 7, 4, (4, 4))  # any dilation
    assert not applies((3, 3), (2, 2), (1, 1), 3, 16, (16, 16))  # strided
    assert not applies((3, 3), (1, 1), (1, 1), 8, 16, (32, 32))  # the channel tiles' own
    assert not applies((3, 3), (1, 1), (1, 1), 3, 10, (32, 32))  # 10 outputs
    assert not applies((3, 3), (1, 1), (1, 1), 3, 16, (5, 5))  # 25 pixels
    assert not applies((1, 1), (1, 1), (0, 0), 3, 16, (32, 32))  # the input is its col
    assert applies((1, 1), (1, 1), (1, 1), 3, 16, (34, 34)) == (34 * 34 % 16 == 0)
