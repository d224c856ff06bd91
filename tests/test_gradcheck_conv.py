"""Backward passes against finite differences.

1. The float64 NumPy references (conv, connected, pooling) against central differences of
   their own forward, so the references the kernels are compared with are right.
2. Whole networks (conv/pool/connected, darknet batch norm, activations) in float32: the
   network's parameter and input gradients against central differences of ``Σ r·y``.
"""

from __future__ import annotations

import numpy as np
import pytest

from dnupdate.engine.backends.cpu import CpuBackend
from dnupdate.engine.model.network import Network
from dnupdate.engine.spec import (
    ActivationSpec,
    BatchNormSpec,
    ConnectedSpec,
    ConvSpec,
    InputSpec,
    NetSpec,
    PoolSpec,
    ScaleSpec,
)
from tests.reference.connected import connected_backward, connected_forward
from tests.reference.conv import conv_backward, conv_forward
from tests.reference.pool import (
    avepool_backward,
    avepool_forward,
    maxpool_backward,
    maxpool_forward,
)


def numeric_grad(f, array, eps=1e-6):
    """Central differences of the scalar ``f()`` w.r.t. every element of ``array`` (float64)."""
    grad = np.zeros_like(array)
    for index in np.ndindex(*array.shape):
        keep = array[index]
        array[index] = keep + eps
        up = f()
        array[index] = keep - eps
        down = f()
        array[index] = keep
        grad[index] = (up - down) / (2 * eps)
    return grad


@pytest.mark.parametrize(
    "stride,pad,groups,dilation", [(1, 0, 1, 1), (2, 1, 2, 1), (1, 2, 1, 2), (3, 1, 1, 1)]
)
def test_reference_conv_backward(stride, pad, groups, dilation):
    rng = np.random.default_rng(stride + 3 * pad + groups)
    x = rng.standard_normal((2, 4, 6, 5))
    w = rng.standard_normal((4, 4 // groups, 3, 3))
    b = rng.standard_normal(4)
    args = ((stride, stride), (pad, pad), groups, dilation)
    r = rng.standard_normal(conv_forward(x, w, b, *args).shape)

    def loss():
        return float((conv_forward(x, w, b, *args) * r).sum())

    dx, dw, db = conv_backward(x, w, r, *args)
    np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dw, numeric_grad(loss, w), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(db, numeric_grad(loss, b), rtol=1e-6, atol=1e-7)


def test_reference_connected_backward():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2, 2, 2))
    w = rng.standard_normal((5, 8))
    b = rng.standard_normal(5)
    r = rng.standard_normal((3, 5))

    def loss():
        return float((connected_forward(x, w, b) * r).sum())

    dx, dw, db = connected_backward(x, w, r)
    np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dw, numeric_grad(loss, w), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(db, numeric_grad(loss, b), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kernel,stride,pad", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_reference_pool_backward(kernel, stride, pad):
    rng = np.random.default_rng(kernel + stride)
    x = rng.standard_normal((2, 2, 7, 6))  # distinct values: max is differentiable
    out = ((7 + 2 * pad - kernel) // stride + 1, (6 + 2 * pad - kernel) // stride + 1)
    args = ((kernel, kernel), (stride, stride), (pad, pad), out)
    y, arg = maxpool_forward(x, *args)
    r = rng.standard_normal(y.shape)

    def max_loss():
        return float((maxpool_forward(x, *args)[0] * r).sum())

    np.testing.assert_allclose(
        maxpool_backward(r, arg, x.shape), numeric_grad(max_loss, x), rtol=1e-6, atol=1e-7
    )

    def ave_loss():
        return float((avepool_forward(x, *args) * r).sum())

    np.testing.assert_allclose(
        avepool_backward(r, x.shape, args[0], args[1], args[2]),
        numeric_grad(ave_loss, x),
        rtol=1e-6,
        atol=1e-7,
    )


def small_net(order: str, activation: str, batch_normalize: bool) -> NetSpec:
    return NetSpec(
        "gradcheck",
        InputSpec(2, 7, 7),
        (
            ConvSpec(
                name="0",
                filters=3,
                kernel_h=3,
                kernel_w=3,
                stride_h=2,
                stride_w=2,
                pad_h=1,
                pad_w=1,
                param_order=order,
                activation=activation,
                batch_normalize=batch_normalize,
            ),
            PoolSpec(
                name="1",
                method="max",
                kernel_h=2,
                kernel_w=2,
                stride_h=1,
                stride_w=1,
                pad_h=1,
                pad_w=1,
                size_rule="darknet",
            ),
            ConvSpec(
                name="2",
                filters=4,
                kernel_h=3,
                kernel_w=3,
                pad_h=1,
                pad_w=1,
                groups=1,
                param_order=order,
                activation=activation,
                batch_normalize=batch_normalize,
            ),
            ConnectedSpec(
                name="3",
                outputs=3,
                param_order=order,
                activation=activation,
                batch_normalize=batch_normalize,
            ),
        ),
    )


def initialise(net: Network, rng) -> None:
    for segment in net.segments:
        view = net.blob(segment.layer, segment.index)
        if not segment.learnable:
            continue
        if segment.name in ("scales", "gamma"):
            view[...] = rng.uniform(0.5, 1.5, view.shape)
        else:
            view[...] = rng.standard_normal(view.shape) * 0.5


def caffe_net() -> NetSpec:
    return NetSpec(
        "gradcheck-caffe",
        InputSpec(2, 6, 6),
        (
            ConvSpec(name="conv", filters=3, kernel_h=3, kernel_w=3, pad_h=1, pad_w=1),
            BatchNormSpec(name="bn", use_global_stats=False),
            ScaleSpec(name="scale", bias_term=True),
            ActivationSpec(name="act", activation="tanh"),
            PoolSpec(name="pool", method="ave", kernel_h=3, kernel_w=3, stride_h=2, stride_w=2),
            ConnectedSpec(name="ip", outputs=3),
        ),
    )


@pytest.mark.parametrize(
    "spec,semantics",
    [
        (small_net("darknet", "linear", False), "darknet"),
        (small_net("darknet", "leaky", False), "darknet"),
        (small_net("darknet", "logistic", False), "darknet"),
        (caffe_net(), "caffe"),
    ],
    ids=["darknet-linear", "darknet-leaky", "darknet-logistic", "caffe-bn-scale-tanh-ave"],
)
def test_network_gradients_match_finite_differences(spec, semantics):
    """``grads`` against central differences of ``L = Σ r·y`` (float32, sampled coordinates).

    darknet: the loss delta fed in is ``r`` = darknet's ``−∂(−L)/∂y``, and darknet semantics
    store ``Σ −∂(−L)/∂θ = +∂L/∂θ``. Caffe: delta ``r = +∂L/∂y``, grads ``+∂L/∂θ``.
    (darknet's batch-norm backward is deliberately not the exact derivative — unbiased
    variance forward, ``/m`` backward — so it is checked against darknet itself instead.)
    """
    net = Network(spec, CpuBackend(), 3, semantics)
    rng = np.random.default_rng(5)
    initialise(net, rng)
    x = rng.standard_normal((3, *net.input_shape[1:])).astype(np.float32)
    r = rng.standard_normal(net.output.shape).astype(np.float32)

    def loss() -> float:
        return float((net.forward(x, train=True).astype(np.float64) * r).sum())

    loss()
    net.layers[-1].delta[...] = r
    net.backward()
    rng_pick = np.random.default_rng(0)
    for segment in net.segments:
        if not segment.learnable:
            continue
        view = net.blob(segment.layer, segment.index)
        grad = net.grad(segment.layer, segment.index).reshape(-1)
        flat = view.reshape(-1)
        for i in rng_pick.choice(flat.size, size=min(4, flat.size), replace=False):
            keep = flat[i]
            eps = 1e-2 * max(1.0, abs(float(keep)))
            flat[i] = keep + eps
            up = loss()
            flat[i] = keep - eps
            down = loss()
            flat[i] = keep
            numeric = (up - down) / (2 * eps)
            assert abs(numeric - grad[i]) <= 2e-2 * max(1.0, abs(numeric)), (
                segment.key,
                i,
                numeric,
                grad[i],
            )
