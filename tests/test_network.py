"""Network construction: flat buffers and segment table, views, helpers, phases, outputs."""

from __future__ import annotations

import numpy as np
import pytest

from dnupdate.engine.backends.cpu import CpuBackend
from dnupdate.engine.model.network import Network, NetworkError, native_framework
from dnupdate.engine.model.shapes import infer_shapes
from dnupdate.engine.spec import (
    AccuracySpec,
    ConnectedSpec,
    ConvSpec,
    DropoutSpec,
    InputSpec,
    NetSpec,
    ParamMult,
    PoolSpec,
    SoftmaxLossSpec,
    SoftmaxSpec,
)

BACKEND = CpuBackend()


def darknet_net() -> NetSpec:
    return NetSpec(
        "dn",
        InputSpec(3, 8, 8),
        (
            ConvSpec(
                name="0", filters=4, kernel_h=3, kernel_w=3, pad_h=1, pad_w=1,
                param_order="darknet", batch_normalize=True, activation="leaky",
                params=(ParamMult(1, 0), ParamMult(1, 0), ParamMult(0, 0), ParamMult(0, 0),
                        ParamMult(1, 1)),
            ),
            PoolSpec(name="1", method="max", kernel_h=2, kernel_w=2, stride_h=2, stride_w=2,
                     pad_h=1, pad_w=1, size_rule="darknet"),
            ConnectedSpec(name="2", outputs=5, param_order="darknet",
                          params=(ParamMult(2, 0), ParamMult(2, 1))),
            SoftmaxSpec(name="3"),
        ),
    )  # fmt: skip


def caffe_net(with_accuracy: bool) -> NetSpec:
    layers = [
        ConvSpec(name="conv1", filters=2, kernel_h=3, kernel_w=3),
        ConnectedSpec(name="ip1", outputs=3),
        SoftmaxLossSpec(name="loss", phases=frozenset({"train", "test"})),
    ]
    if with_accuracy:
        layers.append(AccuracySpec(name="accuracy", phases=frozenset({"test"})))
    return NetSpec("caffe", InputSpec(1, 5, 5), tuple(layers))


def test_segments_follow_infer_shapes_blob_order_and_tile_the_buffer():
    net = Network(darknet_net(), BACKEND, 2, "darknet")
    shapes = infer_shapes(darknet_net(), "train")
    expected = [(s.layer.name, b.name, b.shape) for s in shapes for b in s.blobs]
    assert [(g.layer, g.name, g.shape) for g in net.segments] == expected
    offset = 0
    for segment in net.segments:
        assert segment.offset == offset
        offset += segment.size
    assert offset == net.params.size == net.grads.size
    assert net.params.dtype == np.float32
    by_key = {s.key: s for s in net.segments}
    assert by_key["0/0"].name == "biases" and by_key["0/4"].name == "weights"
    assert (by_key["0/0"].decay_mult, by_key["0/4"].decay_mult) == (0, 1)
    assert not by_key["0/2"].learnable and not by_key["0/3"].learnable
    assert by_key["2/1"].lr_mult == 2


def test_views_alias_the_flat_buffers():
    net = Network(darknet_net(), BACKEND, 2, "darknet")
    segment = next(s for s in net.segments if s.key == "2/1")
    net.blob("2", 1)[...] = 7.0
    assert np.all(net.params[segment.offset : segment.offset + segment.size] == 7.0)
    net.grad("2", 1)[0, 0] = 3.0
    assert net.grads[segment.offset] == 3.0
    keys = [key for key, _ in net.named_blobs()]
    assert keys == [s.key for s in net.segments]
    assert set(net.state_arrays()) == {"0/2", "0/3"}
    with pytest.raises(NetworkError, match="no parameter blob 9/0"):
        net.blob("9", 0)


def test_layer_activations_are_preallocated_and_reused():
    net = Network(darknet_net(), BACKEND, 2, "darknet")
    buffers = [(layer.output, layer.delta) for layer in net.layers]
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    net.set_truth(np.array([1, 4]))
    first = net.forward(x, train=True)
    net.backward()
    assert first is net.forward(x, train=True)
    assert all(
        out is layer.output and delta is layer.delta
        for (out, delta), layer in zip(buffers, net.layers, strict=True)
    )
    assert [layer.output.shape for layer in net.layers] == [
        (2, 4, 8, 8),
        (2, 4, 4, 4),
        (2, 5, 1, 1),
        (2, 5, 1, 1),
    ]


def test_phases_and_shared_parameters():
    train = Network(caffe_net(True), BACKEND, 2, "caffe")
    test = Network(caffe_net(True), BACKEND, 2, "caffe", phase="test", share_params_with=train)
    assert [layer.name for layer in train.layers] == ["conv1", "ip1", "loss"]
    assert [layer.name for layer in test.layers] == ["conv1", "ip1", "loss", "accuracy"]
    assert test.params is train.params and test.grads is train.grads
    rng = np.random.default_rng(1)
    train.params[...] = rng.standard_normal(train.params.size).astype(np.float32)
    x = rng.standard_normal((2, 1, 5, 5)).astype(np.float32)
    test.set_truth(np.array([0, 2]))
    logits = test.forward(x, train=False)
    assert logits is test.layers[1].output
    assert set(test.scalars) == {"loss", "accuracy"}
    other = NetSpec("o", InputSpec(1, 5, 5), (ConvSpec(name="conv1", filters=3, kernel_h=3,
                                                       kernel_w=3),))  # fmt: skip
    with pytest.raises(NetworkError, match="cannot share weights"):
        Network(other, BACKEND, 2, "caffe", share_params_with=train)


def test_gradient_conventions_are_named():
    dn = Network(darknet_net(), BACKEND, 2, "darknet")
    assert native_framework(darknet_net()) == "darknet"
    assert (dn.grad_sign, dn.delta_sign, dn.grad_alpha) == (-1, -1, 1.0)
    cf = Network(caffe_net(False), BACKEND, 4, "caffe")
    assert native_framework(caffe_net(False)) == "caffe"
    assert (cf.grad_sign, cf.delta_sign, cf.grad_alpha) == (1, 1, 1.0)
    cross = Network(caffe_net(False), BACKEND, 4, "darknet")
    assert cross.grad_alpha == -4.0


def test_inputs_of_other_layouts_are_copied_or_rejected():
    net = Network(darknet_net(), BACKEND, 2, "darknet")
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 8))
    a = net.forward(x, train=False).copy()  # float64: copied into the input buffer
    b = net.forward(x.astype(np.float32).reshape(2, -1), train=False)  # flat rows: a view
    np.testing.assert_array_equal(a, b)
    with pytest.raises(NetworkError, match="expected 2×3×8×8"):
        net.forward(np.zeros((1, 3, 8, 8), np.float32), train=False)
    with pytest.raises(NetworkError, match="backward\\(\\) before forward"):
        Network(darknet_net(), BACKEND, 2, "darknet").backward()
    with pytest.raises(NetworkError, match="batch must be positive"):
        Network(darknet_net(), BACKEND, 0, "darknet")


def test_deterministic_run_to_run():
    results = []
    for _ in range(2):
        net = Network(darknet_net(), CpuBackend(threads=2), 3, "darknet")
        rng = np.random.default_rng(3)
        for segment in net.segments:
            if segment.learnable:
                view = net.blob(segment.layer, segment.index)
                view[...] = rng.standard_normal(view.shape).astype(np.float32)
        x = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
        net.set_truth(np.array([0, 1, 2]))
        net.forward(x, train=True)
        net.backward()
        results.append((net.output.copy(), net.grads.copy(), net.loss))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    assert results[0][2] == results[1][2]


# ---- deltas a sole consumer overwrites (Layer.assign_dx) -----------------------------------


def assign_net() -> NetSpec:
    return NetSpec(
        "assign",
        InputSpec(3, 10, 10),
        (
            ConvSpec(name="c0", filters=4, kernel_h=3, kernel_w=3, pad_h=1, pad_w=1,
                     param_order="darknet", activation="leaky"),
            PoolSpec(name="p1", method="max", kernel_h=2, kernel_w=2, stride_h=2, stride_w=2,
                     pad_h=1, pad_w=1, size_rule="darknet"),
            ConvSpec(name="c2", filters=6, kernel_h=3, kernel_w=3, pad_h=1, pad_w=1,
                     param_order="darknet", batch_normalize=True, activation="relu",
                     params=(ParamMult(1, 0), ParamMult(1, 0), ParamMult(0, 0),
                             ParamMult(0, 0), ParamMult(1, 1))),
            ConvSpec(name="c3", filters=5, kernel_h=1, kernel_w=1, param_order="darknet",
                     activation="logistic"),
            DropoutSpec(name="d4", probability=0.3, style="darknet"),
            ConnectedSpec(name="f5", outputs=7, param_order="darknet", activation="leaky"),
            ConnectedSpec(name="f6", outputs=4, param_order="darknet"),
            SoftmaxSpec(name="s7"),
        ),
    )  # fmt: skip


class NoAssignBackend(CpuBackend):
    maxpool_assigns_dx = False


def _train_twice(net: Network, seed: int):
    rng = np.random.default_rng(seed)
    for _, view in net.named_blobs():
        view[...] = rng.uniform(0.1, 1, view.shape).astype(np.float32)
    truth = np.eye(4, dtype=np.float32)[rng.integers(0, 4, net.batch)]
    out = []
    for _ in range(2):
        x = rng.standard_normal(net.input_shape).astype(np.float32)
        net.set_truth(truth)
        net.forward(x, train=True)
        net.backward()
        out.append([layer.delta.copy() for layer in net.layers] + [net.grads.copy()])
    return out


def test_sole_consumers_overwrite_their_producers_delta_and_skip_the_zeroing():
    net = Network(assign_net(), BACKEND, batch=3, semantics="darknet")
    assigns = {layer.name: layer.assign_dx for layer in net.layers}
    # c0 reads the input (no dx); d4 aliases c3's delta, so neither d4 nor f5 may overwrite
    assert assigns == {"c0": False, "p1": True, "c2": True, "c3": True, "d4": False,
                       "f5": False, "f6": True, "s7": False}  # fmt: skip
    zeroed = dict(zip((layer.name for layer in net.layers), net._filled, strict=True))
    assert [name for name, zero in zeroed.items() if not zero] == ["c0", "p1", "c2", "f5"]


def test_overwriting_changes_no_bit(monkeypatch):
    """With every layer adding into zeroed deltas (darknet's way) the same bits come out."""
    assigned = _train_twice(Network(assign_net(), BACKEND, batch=3, semantics="darknet"), 4)
    monkeypatch.setattr(Network, "_deltas_to_zero", lambda self: [True] * len(self.layers))
    added = _train_twice(Network(assign_net(), NoAssignBackend(), batch=3, semantics="darknet"), 4)
    for step_a, step_b in zip(assigned, added, strict=True):
        for a, b in zip(step_a, step_b, strict=True):
            assert np.array_equal(a, b)


def test_two_consumers_keep_the_zeroing():
    net = Network(caffe_net(with_accuracy=True), BACKEND, batch=2, semantics="caffe")
    names = [layer.name for layer in net.layers]
    ip1 = names.index("ip1")
    assert net._filled[ip1]  # read by the loss and by accuracy
    assert net.layers[names.index("ip1")].assign_dx  # conv1's only consumer
