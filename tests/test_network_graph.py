"""Networks as graphs: a layer reads several earlier outputs, backward adds every consumer's
delta into its producer's, and the optimisation that skips zeroing a delta its only consumer
overwrites stays off where a producer has several consumers. darknet's 1×1 convolution
overwrites its input delta (a quirk the network reproduces)."""

from __future__ import annotations

import numpy as np
import pytest

from dnupdate.engine.backends.cpu import CpuBackend
from dnupdate.engine.model.network import Network, NetworkError
from dnupdate.engine.spec import (
    ConnectedSpec,
    ConvSpec,
    InputSpec,
    NetSpec,
    PoolSpec,
    RouteSpec,
    ShortcutSpec,
    SoftmaxSpec,
)


def conv(name, filters, size=3, stride=1, **kw) -> ConvSpec:
    pad = size // 2
    return ConvSpec(name=name, param_order="darknet", filters=filters, kernel_h=size,
                    kernel_w=size, stride_h=stride, stride_w=stride, pad_h=pad, pad_w=pad,
                    darknet_1x1_shortcut=size == 1, **kw)  # fmt: skip


def residual_net(first_size: int = 3, plain_first: bool = False) -> NetSpec:
    """0 conv → 1 conv (size ``first_size``) → 2 conv → 3 shortcut(from 0) → 4 conv/2 →
    5 shortcut(from 3) → 6 route(5, 4) → avgpool → connected → softmax: layer 0 has two
    consumers (1 and 3), layer 3 two (4 and 5), layer 4 two (5 and 6). ``plain_first``:
    layer 0 linear without batch norm (its own backward leaves its delta as it is)."""
    first = {"activation": "linear"} if plain_first else {"batch_normalize": True,
                                                          "activation": "leaky"}  # fmt: skip
    return NetSpec(
        "res",
        InputSpec(3, 8, 8),
        (
            conv("0", 4, **first),
            conv("1", 4, size=first_size, activation="linear" if plain_first else "leaky"),
            conv("2", 4, activation="linear"),
            ShortcutSpec(name="3", source="0", activation="leaky", alpha=0.5, beta=1.5),
            conv("4", 6, stride=2, activation="relu"),
            ShortcutSpec(name="5", source="3"),
            RouteSpec(name="6", sources=("5", "4")),
            PoolSpec(name="7", method="ave", global_pooling=True, size_rule="floor"),
            ConnectedSpec(name="8", outputs=3, param_order="darknet"),
            SoftmaxSpec(name="9"),
        ),
    )


def run(spec: NetSpec, passes: int = 2) -> tuple[Network, np.ndarray]:
    rng = np.random.default_rng(3)
    net = Network(spec, CpuBackend(), 2, "darknet")
    values = rng.normal(0, 0.3, net.params.size).astype(np.float32)
    for segment in net.segments:
        if not segment.learnable:
            values[segment.offset : segment.offset + segment.size] = 1.0
    net.params[...] = values
    x = rng.random((2, 3, 8, 8), dtype=np.float32)
    net.set_truth(np.array([0, 2]))
    for _ in range(passes):
        net.zero_grads()
        net.forward(x, train=True)
        net.backward()
    return net, net.grads.copy()


def test_bottoms_follow_the_graph_and_shared_deltas_are_zeroed():
    net, _ = run(residual_net(), passes=1)
    assert net.bottoms[:7] == [(-1,), (0,), (1,), (2, 0), (3,), (4, 3), (5, 4)]
    # several consumers: zeroed in forward unless the one whose backward runs first (the
    # highest index) overwrites the whole delta: shortcut 3 writes layer 0's (same shape) and
    # layer 2's (its only consumer); shortcut 5 reads 3 downsampled and route 6 reads 4 as
    # its second source: those stay zeroed, and the chain consumers after them add
    assert not net._filled[0] and not net._filled[2]
    assert net.layers[3].assign_da and net.layers[3].assign_dx
    assert net._filled[3] and net._filled[4]
    assert not net.layers[5].assign_da
    assert net.layers[1].assign_dx is False and net.layers[4].assign_dx is False


def chained_blocks_net() -> NetSpec:
    """Three same-shape residual blocks, as a CIFAR ResNet's stage: each block's input (a
    shortcut's output, or conv 0's) is read by the block's first conv and by the block's
    shortcut, whose backward runs first; then a downsampling block."""
    layers = [conv("0", 4, batch_normalize=True, activation="relu")]
    block_input = "0"
    for block in range(3):
        first = str(len(layers))
        layers += [
            conv(first, 4, batch_normalize=True, activation="relu"),
            conv(str(len(layers) + 1), 4, batch_normalize=True, activation="linear"),
        ]
        layers.append(ShortcutSpec(name=str(len(layers)), source=block_input,
                                   activation="relu" if block != 1 else "leaky",
                                   alpha=1.0 if block else 0.5))  # fmt: skip
        block_input = layers[-1].name
    layers += [
        conv(str(len(layers)), 8, stride=2, batch_normalize=True, activation="relu"),
        conv(str(len(layers) + 1), 8, batch_normalize=True, activation="linear"),
    ]
    layers += [
        ShortcutSpec(name=str(len(layers)), source=block_input, activation="relu"),
        PoolSpec(name=str(len(layers) + 1), method="ave", global_pooling=True,
                 size_rule="floor"),
        ConnectedSpec(name=str(len(layers) + 2), outputs=3, param_order="darknet"),
        SoftmaxSpec(name=str(len(layers) + 3)),
    ]  # fmt: skip
    return NetSpec("blocks", InputSpec(3, 8, 8), tuple(layers))


def _deltas_after_passes(spec: NetSpec, passes: int = 2) -> tuple[Network, list[np.ndarray]]:
    net, grads = run(spec, passes)
    return net, [layer.delta.copy() for layer in net.layers] + [grads]


def test_chained_blocks_write_their_inputs_deltas_bit_for_bit(monkeypatch):
    """Every same-shape block input is written by its shortcut, not zeroed; the deltas and
    gradients after two passes are the bits of zeroing every delta (darknet's way)."""
    net, optimised = _deltas_after_passes(chained_blocks_net())
    zeroed = [index for index, zero in enumerate(net._filled) if zero]
    # still zeroed: 9 (read downsampled by shortcut 12), 12 (the average pool adds), and the
    # connected layer and softmax at the end (their readers add)
    assert zeroed == [9, 12, 14, 15]
    assert [index for index, layer in enumerate(net.layers) if getattr(layer, "assign_da", 0)] \
        == [3, 6, 9]  # fmt: skip
    monkeypatch.setattr(Network, "_deltas_to_zero", lambda self: [True] * len(self.layers))
    plain_net, plain = _deltas_after_passes(chained_blocks_net())
    assert all(plain_net._filled)
    assert not any(getattr(layer, "assign_da", False) for layer in plain_net.layers)
    for got, expected in zip(optimised, plain, strict=True):
        assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))


def test_shortcuts_run_in_their_producers_pass_with_the_same_bits(monkeypatch):
    """Each same-shape shortcut right after a batch-normalised convolution runs inside that
    convolution's normalising pass (CpuBackend's ``BN_CARRIES_SHORTCUT``), the downsampling
    one apart: outputs, deltas and gradients after two passes are the bits of running every
    shortcut on its own."""
    net, carried = _deltas_after_passes(chained_blocks_net())
    assert {producer: shortcut.name for producer, shortcut in net._carried.items()} == {
        2: "3",
        5: "6",
        8: "9",
    }
    outputs = [layer.output.copy() for layer in net.layers]
    monkeypatch.setattr(CpuBackend, "BN_CARRIES_SHORTCUT", False)
    plain_net, plain = _deltas_after_passes(chained_blocks_net())
    assert plain_net._carried == {}
    for got, expected in zip(
        carried + outputs, plain + [layer.output for layer in plain_net.layers], strict=True
    ):
        assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))


class _Storage:
    """Low-precision storage hooks that store nothing (``Network.storage``)."""

    def output(self, index, layer) -> None:
        pass

    def delta(self, index, layer) -> None:
        pass


def test_shortcuts_run_apart_in_test_passes_and_under_storage_hooks(monkeypatch):
    """A test pass, and a training pass under the low-precision storage simulation (which
    rounds the convolution's output before the shortcut reads it), run every shortcut's own
    forward."""
    from dnupdate.engine.model.layers import ShortcutLayer

    net, _ = run(chained_blocks_net(), passes=1)
    calls = []
    forward = ShortcutLayer.forward

    def counted(self, x, train):
        calls.append(self.name)
        forward(self, x, train)

    monkeypatch.setattr(ShortcutLayer, "forward", counted)
    x = np.random.default_rng(4).random((2, 3, 8, 8), dtype=np.float32)
    net.forward(x, train=True)
    assert calls == ["12"]
    calls.clear()
    net.forward(x, train=False)
    assert calls == ["3", "6", "9", "12"]
    calls.clear()
    net.storage = _Storage()
    net.forward(x, train=True)
    assert calls == ["3", "6", "9", "12"]


def test_skipped_zeroing_gives_the_same_gradients_as_zeroing_every_delta(monkeypatch):
    """Two passes each (the second sees the deltas the first left): the same gradients as a
    network that zeroes every delta, as darknet does."""
    _, optimised = run(residual_net())
    monkeypatch.setattr(Network, "_deltas_to_zero", lambda self: [True] * len(self.layers))
    net, plain = run(residual_net())
    assert all(net._filled)
    np.testing.assert_array_equal(optimised, plain)


def test_darknet_1x1_convolution_overwrites_a_shared_input_delta():
    """Layer 0 feeds the 1×1 conv 1 and the shortcut 3: darknet's 1×1 backward GEMM writes
    layer 0's delta with beta 0, so the shortcut's ``beta·delta`` is lost; layer 0's delta is
    exactly ``Wᵀ·delta₁``."""
    net, _ = run(residual_net(first_size=1, plain_first=True), passes=1)
    conv1 = net.layers[1]
    assert conv1.clear_dx
    weights = net.blob("1", 1).reshape(4, 4)
    expected = np.einsum("fc,bfn->bcn", weights, conv1.delta.reshape(2, 4, 64))
    got = net.layers[0].delta.reshape(2, 4, 64)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_shortcut_deltas_reach_both_producers():
    """With a 3×3 conv after layer 0, layer 0's delta is conv 1's input gradient PLUS the
    shortcut's ``beta·delta`` (same size: the whole array); the shortcut's chain producer
    (layer 2, linear, no batch norm) gets ``alpha·delta`` and nothing else."""
    net, _ = run(residual_net(plain_first=True), passes=1)
    shortcut = net.layers[3]
    np.testing.assert_array_equal(net.layers[2].delta, np.float32(0.5) * shortcut.delta)
    conv1 = net.layers[1]
    alone = np.zeros_like(net.layers[0].delta)
    conv1.backward(net.layers[0].output, alone)  # conv 1's input gradient by itself
    np.testing.assert_allclose(
        net.layers[0].delta, alone + np.float32(1.5) * shortcut.delta, rtol=1e-6, atol=1e-7
    )
    assert np.abs(alone).max() > 0 and np.abs(shortcut.delta).max() > 0


def test_flat_quirk_1x1_with_stride_cannot_read_a_shared_layer():
    spec = NetSpec(
        "q",
        InputSpec(2, 4, 4),
        (
            conv("0", 2),
            conv("1", 2, size=1, stride=2),
            conv("2", 2, stride=2),
            ShortcutSpec(name="3", source="0"),
            ConnectedSpec(name="4", outputs=2, param_order="darknet"),
            SoftmaxSpec(name="5"),
        ),
    )
    with pytest.raises(NetworkError, match="1x1 convolution with stride"):
        Network(spec, CpuBackend(), 1, "darknet")
