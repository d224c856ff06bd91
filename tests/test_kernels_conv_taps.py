"""The per-tap stride-1 convolution (engine.backends.cpu.conv_taps, through conv_images):
against the NumPy reference, against the im2col path (float rounding apart), bit for bit
between one and two threads, and the choice by shape."""

from __future__ import annotations

import numpy as np
import pytest

from engine.backends.cpu import CpuBackend, conv_images, conv_taps
from tests.reference.conv import conv_forward as reference_forward

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
    batch, c, h, w, f, kh, kw, ph, pw, g, d = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, c, h, w)).astype(np.float32)
    weights = rng.standard_normal((g, f // g, (c // g) * kh * kw)).astype(np.float32)
    oh, ow = h + 2 * ph - d * (kh - 1), w + 2 * pw - d * (kw - 1)
    geometry = ((kh, kw), (1, 1), (ph, pw), d, (oh, ow))
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
    from engine.model.network import Network
    from engine.spec import ConvSpec, InputSpec, NetSpec

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
