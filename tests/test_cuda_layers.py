"""Layers on both backends: small networks, one per layer variant, run forward and backward on
the CPU and the CUDA backend from the same parameters; outputs, deltas and gradients agree to
1e-5 relative (tiny shapes: run under the numba-cuda simulator in CI)."""

from __future__ import annotations

import numpy as np
import pytest

from dnupdate.engine.model.network import Network
from dnupdate.engine.spec import (
    AccuracySpec,
    ActivationSpec,
    BatchNormSpec,
    ConnectedSpec,
    ConvSpec,
    CostSpec,
    CropSpec,
    DropoutSpec,
    InputSpec,
    NetSpec,
    PoolSpec,
    ReorgSpec,
    RouteSpec,
    ScaleSpec,
    ShortcutSpec,
    SoftmaxLossSpec,
    SoftmaxSpec,
)
from tests.test_cuda_support import backends, requires_cuda

pytestmark = requires_cuda

DARKNET = "darknet"


def dn_conv(name, **kw) -> ConvSpec:
    return ConvSpec(name=name, param_order=DARKNET, **kw)


VARIANTS = {
    "darknet conv groups stride 2 + maxpool + softmax": (
        InputSpec(4, 7, 7),
        (
            dn_conv("0", filters=4, kernel_h=3, kernel_w=3, stride_h=2, stride_w=2, pad_h=1,
                    pad_w=1, groups=2, activation="leaky"),
            PoolSpec(name="1", method="max", kernel_h=2, kernel_w=2, stride_h=1, stride_w=1,
                     size_rule=DARKNET),
            ConnectedSpec(name="2", outputs=3, param_order=DARKNET),
            SoftmaxSpec(name="3", groups=1, temperature=0.7),
        ),
    ),
    "darknet dilated conv + bn + 1x1 shortcut quirk + cost": (
        InputSpec(2, 6, 6),
        (
            dn_conv("0", filters=3, kernel_h=3, kernel_w=3, pad_h=2, pad_w=2, dilation=2,
                    batch_normalize=True, activation="tanh"),
            dn_conv("1", filters=2, kernel_h=1, kernel_w=1, stride_h=2, stride_w=2,
                    darknet_1x1_shortcut=True, activation="logistic"),
            DropoutSpec(name="2", probability=0.3, style=DARKNET),
            PoolSpec(name="3", method="ave", global_pooling=True),
            ConnectedSpec(name="4", outputs=3, param_order=DARKNET, batch_normalize=True,
                          activation="relu"),
            CostSpec(name="5", cost_type="smooth", scale=0.5),
        ),
    ),
    "caffe conv + BatchNorm + Scale + activations + AVE pool + dropout + loss": (
        InputSpec(2, 5, 5),
        (
            ConvSpec(name="conv", filters=3, kernel_h=3, kernel_w=3, pad_h=1, pad_w=1),
            BatchNormSpec(name="bn", moving_average_fraction=0.9),
            ScaleSpec(name="scale", bias_term=True),
            ActivationSpec(name="relu", activation="relu", negative_slope=0.1),
            PoolSpec(name="pool", method="ave", kernel_h=3, kernel_w=3, stride_h=2, stride_w=2,
                     pad_h=1, pad_w=1),
            ActivationSpec(name="sig", activation="logistic"),
            DropoutSpec(name="drop", probability=0.25),
            ConnectedSpec(name="ip", outputs=3),
            ActivationSpec(name="tanh", activation="tanh"),
            SoftmaxLossSpec(name="loss", normalization="full"),
            AccuracySpec(name="acc", top_k=2),
        ),
    ),
    "darknet residual graph: shortcuts across sizes, 1x1 clobber, route": (
        InputSpec(2, 6, 6),
        (
            dn_conv("0", filters=3, kernel_h=3, kernel_w=3, pad_h=1, pad_w=1,
                    batch_normalize=True, activation="leaky"),
            dn_conv("1", filters=3, kernel_h=1, kernel_w=1, darknet_1x1_shortcut=True,
                    activation="leaky"),
            ShortcutSpec(name="2", source="0", alpha=0.5, beta=1.5, activation="leaky"),
            dn_conv("3", filters=4, kernel_h=3, kernel_w=3, stride_h=2, stride_w=2, pad_h=1,
                    pad_w=1, activation="relu"),
            ShortcutSpec(name="4", source="2"),
            RouteSpec(name="5", sources=("4", "3")),
            PoolSpec(name="6", method="ave", global_pooling=True),
            ConnectedSpec(name="7", outputs=3, param_order=DARKNET),
            SoftmaxSpec(name="8"),
        ),
    ),
    "darknet crop (flip, recolour) + reorg modes": (
        InputSpec(3, 6, 6),
        (
            CropSpec(name="0", crop_height=4, crop_width=4, flip=True, saturation=1.5,
                     exposure=1.4),
            dn_conv("1", filters=8, kernel_h=3, kernel_w=3, pad_h=1, pad_w=1, activation="leaky"),
            ReorgSpec(name="2", stride=2),
            ReorgSpec(name="3", stride=2, reverse=True),
            ReorgSpec(name="4", mode="flatten"),
            ReorgSpec(name="5", mode="extra", extra=2),
            ConnectedSpec(name="6", outputs=3, param_order=DARKNET),
            SoftmaxSpec(name="7"),
        ),
    ),
}  # fmt: skip


def run_network(backend, spec: NetSpec, semantics: str, train: bool):
    rng = np.random.default_rng(5)
    net = Network(spec, backend, 2, semantics, uniforms=_uniforms())
    values = rng.normal(0, 0.4, net.params.size).astype(np.float32)
    for segment in net.segments:
        if not segment.learnable:  # running statistics: positive (variances), scale factor 1
            values[segment.offset : segment.offset + segment.size] = 1.0
    backend.copy_from_host(values, net.params)
    x = rng.random((2, *net.input_shape[1:]), dtype=np.float32)
    net.set_truth(rng.integers(0, 3, 2))
    for _ in range(2):  # the second pass sees what the first left (BN sums, darknet's grads)
        net.forward(x, train=train)
        if train:  # (no backward at inference: darknet's BN backward would use stale stats)
            net.backward()
    host = backend.to_host
    return {
        "params": host(net.params),
        "grads": host(net.grads),
        "loss": np.float64(net.loss),
        **{f"out {layer.name}": host(layer.output) for layer in net.layers},
        **{f"delta {layer.name}": host(layer.delta) for layer in net.layers},
    }


def _uniforms():
    generator = np.random.default_rng(9)
    return lambda n: generator.random(n, dtype=np.float32)


NAMES = list(VARIANTS)
CASES = [
    (NAMES[0], "darknet", True),
    (NAMES[1], "darknet", True),
    (NAMES[1], "darknet", False),
    (NAMES[2], "caffe", True),
    (NAMES[2], "caffe", False),
    (NAMES[2], "darknet", True),  # a Caffe net under darknet's gradient convention
    (NAMES[3], "darknet", True),
    (NAMES[4], "darknet", True),
    (NAMES[4], "darknet", False),
]


@pytest.mark.parametrize(("variant", "semantics", "train"), CASES)
def test_layers_agree_across_backends(variant, semantics, train):
    input_spec, layers = VARIANTS[variant]
    spec = NetSpec(variant, input_spec, layers)
    found = {name: run_network(b, spec, semantics, train) for name, b in backends().items()}
    for key, expected in found["cpu"].items():
        np.testing.assert_allclose(
            found["cuda"][key], expected, rtol=1e-5, atol=1e-6, err_msg=f"{variant}: {key}"
        )
    assert np.any(found["cuda"]["grads"] != 0) == train


def _caffe_graph_nets() -> dict[str, NetSpec]:
    from dnupdate.engine.spec import CaffeSoftmaxSpec, LRNSpec, PowerSpec
    from tests.test_caffe_layers import _graph_net

    lrn = NetSpec(
        "lrn across + power + softmax",
        InputSpec(5, 3, 3),
        (
            ConvSpec(name="c", filters=6, kernel_h=1, kernel_w=1, bottoms=("data",), tops=("c",)),
            LRNSpec(name="lrn", local_size=5, alpha=0.5, k=2.0, bottoms=("c",), tops=("n",)),
            PowerSpec(name="pw", power=2.0, scale=0.5, shift=1.0, bottoms=("n",), tops=("p",)),
            CaffeSoftmaxSpec(name="sm", bottoms=("p",), tops=("s",)),
            ConnectedSpec(name="ip", outputs=3, bottoms=("s",), tops=("ip",)),
            SoftmaxLossSpec(name="loss", bottoms=("ip", "label"), tops=("loss",)),
        ),
        input_tops=("data", "label"),
    )
    return {"graph": _graph_net(), "lrn": lrn}


@pytest.mark.parametrize("name", ["graph", "lrn"])
def test_caffe_graph_layers_agree_across_backends(name):
    spec = _caffe_graph_nets()[name]
    found = {key: run_network(b, spec, "caffe", True) for key, b in backends().items()}
    for key, expected in found["cpu"].items():
        np.testing.assert_allclose(
            found["cuda"][key], expected, rtol=1e-5, atol=1e-6, err_msg=f"{name}: {key}"
        )
    assert np.any(found["cuda"]["grads"] != 0)
