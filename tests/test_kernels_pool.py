"""Pooling kernels (through the layer) against the NumPy reference: darknet maxpool padding,
Caffe's ceil rule and pad, AVE divisor rule, global pooling."""

from __future__ import annotations

import numpy as np
import pytest

from dnupdate.engine.backends.cpu import CpuBackend
from dnupdate.engine.backends.cpu import pool as cpu_pool
from dnupdate.engine.model.network import Network
from dnupdate.engine.model.shapes import pool_geometry
from dnupdate.engine.spec import ConvSpec, InputSpec, NetSpec, PoolSpec
from tests.reference.pool import (
    avepool_backward,
    avepool_forward,
    maxpool_backward,
    maxpool_forward,
)

BACKEND = CpuBackend()


def pool_net(c, h, w, pool: PoolSpec) -> NetSpec:
    identity = ConvSpec(name="identity", filters=c, kernel_h=1, kernel_w=1, bias=False)
    return NetSpec("n", InputSpec(c, h, w), (identity, pool))


def run(pool: PoolSpec, batch, c, h, w, seed, ties=False):
    net = Network(pool_net(c, h, w, pool), BACKEND, batch, "caffe")
    net.blob("identity", 0)[...] = np.eye(c, dtype=np.float32)[:, :, None, None]
    rng = np.random.default_rng(seed)
    if ties:  # few distinct values, so the first-maximum rule matters
        x = rng.integers(-2, 2, size=(batch, c, h, w)).astype(np.float32)
    else:
        x = rng.standard_normal((batch, c, h, w)).astype(np.float32)
    y = net.forward(x, train=True).copy()
    dy = rng.standard_normal(y.shape).astype(np.float32)
    net.layers[-1].delta[...] = dy
    net.backward()
    return net, x, y, dy


MAX_CASES = [
    # (batch, c, h, w, k, stride, pad, rule)
    (1, 1, 5, 5, 2, 2, 1, "darknet"),
    (2, 3, 7, 6, 2, 2, 1, "darknet"),
    (2, 2, 6, 6, 3, 1, 2, "darknet"),
    (1, 2, 9, 7, 3, 2, 3, "darknet"),
    (2, 3, 7, 7, 3, 2, 0, "ceil"),
    (2, 2, 8, 6, 3, 2, 1, "ceil"),
    (1, 2, 7, 9, 2, 3, 0, "floor"),
    (3, 1, 5, 5, 3, 3, 1, "ceil"),
]


@pytest.mark.parametrize("case", MAX_CASES)
@pytest.mark.parametrize("ties", [False, True])
def test_maxpool_matches_reference(case, ties):
    batch, c, h, w, k, s, p, rule = case
    pool = PoolSpec(
        name="pool",
        method="max",
        kernel_h=k,
        kernel_w=k,
        stride_h=s,
        stride_w=s,
        pad_h=p,
        pad_w=p,
        size_rule=rule,
    )
    net, x, y, dy = run(pool, batch, c, h, w, seed=sum(case[:-1]), ties=ties)
    kh, kw, oh_off, ow_off, oh, ow = pool_geometry(pool, c, h, w)
    want, arg = maxpool_forward(x, (kh, kw), (s, s), (oh_off, ow_off), (oh, ow))
    np.testing.assert_array_equal(y, want.astype(np.float32))
    np.testing.assert_array_equal(net.layers[-1].argmax, arg)
    dx = maxpool_backward(dy.astype(np.float64), arg, x.shape)
    np.testing.assert_allclose(net.layers[0].delta, dx, rtol=1e-6, atol=1e-6)


AVE_CASES = [
    # (batch, c, h, w, k, stride, pad, rule)
    (2, 2, 7, 7, 3, 2, 0, "ceil"),  # ceil overhang without pad: clipped divisor
    (2, 3, 6, 6, 3, 2, 1, "ceil"),  # padded cells count in the divisor
    (1, 2, 8, 5, 2, 2, 1, "ceil"),
    (2, 1, 9, 9, 3, 3, 1, "floor"),
    (1, 1, 4, 4, 2, 1, 0, "ceil"),
]


@pytest.mark.parametrize("case", AVE_CASES)
def test_avepool_matches_caffe_divisor_rule(case):
    batch, c, h, w, k, s, p, rule = case
    pool = PoolSpec(
        name="pool",
        method="ave",
        kernel_h=k,
        kernel_w=k,
        stride_h=s,
        stride_w=s,
        pad_h=p,
        pad_w=p,
        size_rule=rule,
    )
    net, x, y, dy = run(pool, batch, c, h, w, seed=sum(case[:-1]))
    kh, kw, _, _, oh, ow = pool_geometry(pool, c, h, w)
    want = avepool_forward(x, (kh, kw), (s, s), (p, p), (oh, ow))
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)
    dx = avepool_backward(dy, x.shape, (kh, kw), (s, s), (p, p))
    np.testing.assert_allclose(net.layers[0].delta, dx, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("rule", ["darknet", "ceil"])
@pytest.mark.parametrize("batch,c,h,w", [(1, 1, 1, 1), (2, 3, 5, 4), (3, 4, 7, 7)])
def test_global_average_pooling(rule, batch, c, h, w):
    """darknet ``[avgpool]`` and Caffe ``global_pooling``: mean over H×W, gradient / (H·W)."""
    pool = PoolSpec(name="pool", method="ave", global_pooling=True, size_rule=rule)
    net, x, y, dy = run(pool, batch, c, h, w, seed=batch * c + h)
    assert y.shape == (batch, c, 1, 1)
    np.testing.assert_allclose(y[:, :, 0, 0], x.astype(np.float64).mean(axis=(2, 3)), rtol=1e-6)
    want = np.broadcast_to(dy / (h * w), x.shape)
    np.testing.assert_allclose(net.layers[0].delta, want, rtol=1e-6)


def test_darknet_maxpool_padding_reaches_bottom_right():
    """size 2 stride 2 on an odd width: darknet's default padding 1 adds a cell at the right
    and bottom (offset 0), so the last window holds only the last column."""
    pool = PoolSpec(
        name="pool", method="max", kernel_h=2, kernel_w=2, stride_h=2, stride_w=2,
        pad_h=1, pad_w=1, size_rule="darknet",
    )  # fmt: skip
    _net, x, y, _ = run(pool, 1, 1, 5, 5, seed=0)
    assert y.shape == (1, 1, 3, 3)
    assert y[0, 0, 2, 2] == x[0, 0, 4, 4]
    assert y[0, 0, 0, 0] == x[0, 0, :2, :2].max()


# ---- the kernels directly: fast path (2x2 stride 2 windows inside the image) and border ----

FLT_MAX = np.float32(np.finfo(np.float32).max)

KERNEL_CASES = [
    # (batch, c, h, w, kernel, stride, offset, out_h, out_w)
    (2, 3, 8, 8, 2, 2, 0, 4, 4),  # every window inside: the fast path only
    (2, 3, 7, 9, 2, 2, 0, 4, 5),  # darknet padding on odd sizes: last row/column clipped
    (1, 2, 9, 8, 2, 2, 1, 5, 5),  # offset 1 (Caffe pad 1): first row/column clipped
    (1, 1, 4, 4, 2, 2, 0, 3, 3),  # a window row/column entirely outside: -FLT_MAX, -1
    (1, 2, 2, 2, 2, 2, 0, 1, 1),
    (1, 1, 1, 3, 2, 2, 0, 1, 2),  # no interior row
    (2, 2, 11, 10, 3, 2, 1, 6, 5),  # 3x3 stride 2 pad 1: the general path
    (1, 2, 9, 9, 2, 1, 0, 8, 8),  # stride 1: overlapping windows, general path
]


def _special_input(shape, seed):
    """Integers (ties), with NaN, ±inf and -FLT_MAX sprinkled in: strict ``>`` from
    -FLT_MAX skips NaN, -inf and -FLT_MAX itself."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 2, size=shape).astype(np.float32)
    flat = x.reshape(-1)
    picks = rng.choice(flat.size, size=max(1, flat.size // 8), replace=False)
    flat[picks] = rng.choice(np.array([np.nan, -np.inf, np.inf, -FLT_MAX], np.float32), picks.size)
    return x


def _set_threads(count):
    import numba

    numba.set_num_threads(min(count, numba.config.NUMBA_NUM_THREADS))


@pytest.mark.parametrize("case", KERNEL_CASES)
@pytest.mark.parametrize("special", [False, True])
def test_maxpool_kernel_fast_and_border_paths(case, special):
    import numba

    batch, c, h, w, k, s, off, oh, ow = case
    rng = np.random.default_rng(sum(case))
    if special:
        x = _special_input((batch, c, h, w), sum(case))
    else:
        x = rng.standard_normal((batch, c, h, w)).astype(np.float32)
    want, want_arg = maxpool_forward(x, (k, k), (s, s), (off, off), (oh, ow))
    before = numba.get_num_threads()
    try:
        for threads in (1, 2):  # the result does not depend on the thread count
            _set_threads(threads)
            y = np.full((batch, c, oh, ow), 7.0, np.float32)
            arg = np.full((batch, c, oh, ow), 7, np.int32)
            cpu_pool.maxpool_forward(x, y, arg, (k, k), (s, s), (off, off))
            np.testing.assert_array_equal(y, want.astype(np.float32))
            np.testing.assert_array_equal(arg, want_arg)
    finally:
        numba.set_num_threads(before)
    dy = rng.standard_normal((batch, c, oh, ow)).astype(np.float32)
    dx = np.zeros_like(x)
    cpu_pool.maxpool_backward(dy, arg, dx)
    np.testing.assert_allclose(
        dx, maxpool_backward(dy.astype(np.float64), arg, x.shape), 1e-6, 1e-6
    )
    # a non-contiguous dx (every other column of a wider buffer) gets the same sums
    wide = np.full((batch, c, h, 2 * w), 5.0, np.float32)
    strided = wide[..., ::2]
    strided[...] = 0.0
    cpu_pool.maxpool_backward(dy, arg, strided)
    np.testing.assert_array_equal(strided, dx)
    assert np.all(wide[..., 1::2] == 5.0)


def _ave_float32(x, kernel, stride, pad, out_hw):
    """Caffe AVE in float32 with the kernel's summation order (row-major over the clipped
    window, then one division), for a bit-exact comparison."""
    batch, channels, height, width = x.shape
    y = np.zeros((batch, channels, *out_hw), np.float32)
    for i in range(out_hw[0]):
        y0 = i * stride[0] - pad[0]
        y1 = min(y0 + kernel[0], height + pad[0])
        for j in range(out_hw[1]):
            x0 = j * stride[1] - pad[1]
            x1 = min(x0 + kernel[1], width + pad[1])
            total = np.zeros((batch, channels), np.float32)
            for iy in range(max(y0, 0), min(y1, height)):
                for ix in range(max(x0, 0), min(x1, width)):
                    total = total + x[:, :, iy, ix]
            y[:, :, i, j] = total / np.float32((y1 - y0) * (x1 - x0))
    return y


@pytest.mark.parametrize(
    "case",
    [
        # (batch, c, h, w, kernel, stride, pad, out_h, out_w)
        (2, 3, 7, 7, 3, 2, 1, 4, 4),
        (2, 2, 8, 8, 2, 2, 0, 4, 4),
        (3, 4, 5, 6, 5, 1, 0, 1, 2),
        (4, 10, 4, 4, 4, 1, 0, 1, 1),  # global average pooling, cifar-small's last pool
    ],
)
def test_avepool_kernel_sums_in_row_major_order(case):
    batch, c, h, w, k, s, p, oh, ow = case
    rng = np.random.default_rng(sum(case))
    x = (rng.standard_normal((batch, c, h, w)) * 100).astype(np.float32)
    y = np.empty((batch, c, oh, ow), np.float32)
    cpu_pool.avepool_forward(x, y, (k, k), (s, s), (p, p))
    np.testing.assert_array_equal(y, _ave_float32(x, (k, k), (s, s), (p, p), (oh, ow)))
    dy = rng.standard_normal((batch, c, oh, ow)).astype(np.float32)
    dx = np.zeros_like(x)
    cpu_pool.avepool_backward(dy, dx, (k, k), (s, s), (p, p))
    want = avepool_backward(dy, x.shape, (k, k), (s, s), (p, p))
    np.testing.assert_allclose(dx, want, rtol=1e-6, atol=1e-6)
