"""Pooling kernels (through the layer) against the NumPy reference: darknet maxpool padding,
Caffe's ceil rule and pad, AVE divisor rule, global pooling."""

from __future__ import annotations

import numpy as np
import pytest

from engine.backends.cpu import CpuBackend
from engine.network import Network
from engine.shapes import pool_geometry
from engine.spec import ConvSpec, InputSpec, NetSpec, PoolSpec
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
