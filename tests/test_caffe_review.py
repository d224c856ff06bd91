"""Findings of the Caffe fidelity review: small exact cases derived from BVLC/caffe's source.

Each test names the Caffe file and function it transcribes (``src/caffe/...`` of
BVLC/caffe master); the expected values are computed here from that source's arithmetic, not
by the code under test.
"""

from __future__ import annotations

import math

import numpy as np

from dnupdate.engine.model.shapes import pool_geometry
from dnupdate.engine.spec import PoolSpec

F32 = np.float32


# --------------------------------------------------------------------------------------------
# pooling_layer.cpp: PoolingLayer::Reshape — the clip rule is guarded by `pad_h_ || pad_w_`
# --------------------------------------------------------------------------------------------


def _caffe_pooled(size: int, kernel: int, stride: int, pad: int, any_pad: bool) -> int:
    """PoolingLayer::Reshape (CEIL): ``ceil(float(in + 2p − k)/s) + 1``, then
    ``if (pad_h_ || pad_w_) { if ((pooled − 1)·s >= in + p) --pooled; }`` for BOTH axes."""
    pooled = math.ceil(float(F32(size + 2 * pad - kernel) / F32(stride))) + 1
    if any_pad and (pooled - 1) * stride >= size + pad:
        pooled -= 1
    return pooled


def test_pool_clip_rule_applies_to_both_axes_when_either_is_padded():
    # pad_h = 1, pad_w = 0, kernel 2, stride 3 over 6×6: the width's last window would start
    # at 6 = W + pad_w (an empty window: AVE would divide by a zero pool_size). Caffe drops it
    # because pad_h is nonzero, although pad_w is 0.
    spec = PoolSpec(
        name="p", method="ave", kernel_h=2, kernel_w=2, stride_h=3, stride_w=3, pad_h=1, pad_w=0
    )
    _, _, _, _, out_h, out_w = pool_geometry(spec, 1, 6, 6)
    assert (out_h, out_w) == (_caffe_pooled(6, 2, 3, 1, True), _caffe_pooled(6, 2, 3, 0, True))
    assert (out_h, out_w) == (3, 2)


def test_pool_without_any_padding_keeps_the_ceil_overhang():
    # No padding on either axis: no clip, the ceil rule alone (Caffe keeps an empty last window).
    spec = PoolSpec(name="p", method="max", kernel_h=2, kernel_w=2, stride_h=3, stride_w=3)
    _, _, _, _, out_h, out_w = pool_geometry(spec, 1, 6, 6)
    assert (out_h, out_w) == (_caffe_pooled(6, 2, 3, 0, False),) * 2 == (3, 3)


# --------------------------------------------------------------------------------------------
# layer.hpp: Layer::Forward — loss += caffe_cpu_dot(count, top_data, loss_weights) (float);
# net.cpp: Net::ForwardFromTo — Dtype loss += layer_loss (float)
# --------------------------------------------------------------------------------------------


def _two_loss_net(weights: tuple[float, float]):
    from dnupdate.engine.backends.cpu import CpuBackend
    from dnupdate.engine.model.network import Network
    from dnupdate.engine.spec import ConnectedSpec, InputSpec, NetSpec, SoftmaxLossSpec

    spec = NetSpec(
        "c",
        InputSpec(3, 1, 1),
        (
            ConnectedSpec(name="ip", outputs=5, param_order="caffe", activation="linear"),
            SoftmaxLossSpec(name="loss_a", loss_weight=weights[0]),
            SoftmaxLossSpec(name="loss_b", loss_weight=weights[1], normalization="none"),
        ),
    )
    net = Network(spec, CpuBackend(), 4, "caffe")
    rng = np.random.default_rng(3)
    view = net.blob("ip", 0)
    view[...] = rng.standard_normal(view.shape).astype(F32)
    return net, rng.standard_normal((4, 3, 1, 1)).astype(F32)


def test_caffe_loss_weight_and_loss_sum_are_float32():
    from dnupdate.engine.backends.cpu.softmax import caffe_softmax_loss_forward

    weights = (0.1, 0.3)
    net, x = _two_loss_net(weights)
    labels = np.array([0, 2, 4, 1])
    net.set_truth(labels)
    logits = np.ascontiguousarray(net.forward(x, train=True).reshape(4, 5, 1))
    prob = np.zeros_like(logits)
    raw_a = F32(caffe_softmax_loss_forward(logits, labels, prob, "valid"))
    raw_b = F32(caffe_softmax_loss_forward(logits, labels, prob, "none"))
    # top value × float loss_weight (a one-element sdot), summed into a float
    weighted = [F32(raw * F32(w)) for raw, w in zip((raw_a, raw_b), weights, strict=True)]
    want = F32(F32(F32(0) + weighted[0]) + weighted[1])
    assert [layer.loss for layer in net.layers[1:]] == [float(v) for v in weighted]
    assert net.loss == float(want)


# --------------------------------------------------------------------------------------------
# split_layer.cpp: SplitLayer::Backward_cpu — a blob read by several layers gets the SUM of
# their diffs (caffe_add of the first two tops, caffe_axpy for the rest); Net::Init inserts
# the split whenever two losses take the same bottom.
# --------------------------------------------------------------------------------------------


def test_two_caffe_losses_on_one_blob_sum_their_gradients():
    net, x = _two_loss_net((1.0, 0.5))
    labels = np.array([0, 2, 4, 1])
    net.set_truth(labels)
    logits = net.forward(x, train=True).reshape(4, 5)
    # softmax_loss_layer.cpp: SoftmaxWithLossLayer::Backward_cpu in float32: (p − onehot)·
    # (loss_weight / normalizer), with the net's own probabilities
    prob = net.layers[1].prob.reshape(4, 5)
    onehot = np.eye(5, dtype=F32)[labels]
    diff_a = (prob - onehot) * (F32(1.0) / F32(4))  # VALID: 4 labelled positions
    diff_b = (prob - onehot) * (F32(0.5) / F32(1))  # NONE
    assert np.isfinite(logits).all()
    net.zero_grads()
    net.backward()
    np.testing.assert_array_equal(net.layers[0].delta.reshape(4, 5), diff_a + diff_b)


# --------------------------------------------------------------------------------------------
# solver.cpp: Solver::Test — each output is Σ over the test_iter batches of its (float) value,
# accumulated in a float, then divided by test_iter; accuracy_layer.cpp: Forward_cpu gives
# each batch's value as the float quotient accuracy / count.
# --------------------------------------------------------------------------------------------


def _caffe_run(accuracy_top_k: int | None = None):
    from dnupdate.engine.spec import (
        AccuracySpec,
        ConnectedSpec,
        FillerSpec,
        InputSpec,
        NetSpec,
        RunSpec,
        ScheduleSpec,
        SoftmaxLossSpec,
        SolverSpec,
    )

    layers = [
        ConnectedSpec(name="ip", outputs=4, weight_filler=FillerSpec("gaussian", std=1.0)),
        SoftmaxLossSpec(name="loss"),
    ]
    if accuracy_top_k is not None:
        test_only = frozenset({"test"})
        layers.append(AccuracySpec(name="acc", top_k=accuracy_top_k, phases=test_only))
    net = NetSpec("linear", InputSpec(3, 1, 1), tuple(layers))
    solver = SolverSpec(semantics="caffe", optimizer="sgd", minibatch=3)
    schedule = ScheduleSpec(convention="caffe", policy="fixed", base_lr=0.1)
    return RunSpec("caffe", "linear.prototxt", net, solver, schedule)


def test_caffe_test_scores_are_float_means_of_per_batch_values():
    from dnupdate.engine.training.step import Trainer

    trainer = Trainer(_caffe_run(), seed=4)
    rng = np.random.default_rng(11)
    batches = [
        (rng.standard_normal((3, 3, 1, 1)).astype(F32), rng.integers(0, 4, size=3))
        for _ in range(7)
    ]
    loss_sum, acc_sum = F32(0), F32(0)
    net = trainer._eval_network(3)
    for x, y in batches:
        net.set_truth(y)
        net.forward(x, train=False)
        scores = net.output.reshape(3, 4)
        truth = scores[np.arange(3), y]
        correct = sum(int((scores[i] >= truth[i]).sum() - 1 < 1) for i in range(3))
        loss_sum = F32(loss_sum + F32(net.loss))
        acc_sum = F32(acc_sum + F32(F32(correct) / F32(3)))
    result = trainer.evaluate(batches)
    assert result.images == 21
    assert result.loss == float(F32(loss_sum / F32(7)))
    assert result.accuracy == float(F32(acc_sum / F32(7)))


def test_auxiliary_caffe_loss_adds_to_the_main_path_gradient():
    # ip1 → aux loss (a sink on ip1) → ip2 → loss: ip1's diff is the split's sum of ip2's
    # backward (dy·W) and the auxiliary loss's diff (SplitLayer::Backward_cpu).
    from dnupdate.engine.backends.cpu import CpuBackend
    from dnupdate.engine.model.network import Network
    from dnupdate.engine.spec import ConnectedSpec, InputSpec, NetSpec, SoftmaxLossSpec

    spec = NetSpec(
        "aux",
        InputSpec(3, 1, 1),
        (
            ConnectedSpec(name="ip1", outputs=4, param_order="caffe", activation="linear"),
            SoftmaxLossSpec(name="aux", loss_weight=0.3),
            ConnectedSpec(name="ip2", outputs=4, param_order="caffe", activation="linear"),
            SoftmaxLossSpec(name="loss"),
        ),
    )
    net = Network(spec, CpuBackend(), 2, "caffe")
    rng = np.random.default_rng(5)
    for layer in ("ip1", "ip2"):
        view = net.blob(layer, 0)
        view[...] = rng.standard_normal(view.shape).astype(F32)
    labels = np.array([1, 3])
    net.set_truth(labels)
    net.forward(rng.standard_normal((2, 3, 1, 1)).astype(F32), train=True)
    net.zero_grads()
    net.backward()
    onehot = np.eye(4, dtype=F32)[labels]
    aux = (net.layers[1].prob.reshape(2, 4) - onehot) * (F32(0.3) / F32(2))
    main = (net.layers[3].prob.reshape(2, 4) - onehot) * (F32(1.0) / F32(2))
    through_ip2 = main.astype(np.float64) @ net.blob("ip2", 0).astype(np.float64)
    np.testing.assert_allclose(
        net.layers[0].delta.reshape(2, 4), through_ip2 + aux, rtol=1e-6, atol=1e-7
    )


# --------------------------------------------------------------------------------------------
# sgd_solver.cpp: SGDSolver::GetLearningRate — CHECK_GE(gamma, 0) in the step, exp, inv,
# multistep and sigmoid branches (fatal before the first update)
# --------------------------------------------------------------------------------------------

_NET = """name: "n"
layer { name: "d" type: "Data" top: "data" top: "label"
  data_param { source: "mnist" batch_size: 8 backend: LMDB } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 10 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def _load_solver(tmp_path, lines: str):
    from dnupdate.engine.config import load_config

    (tmp_path / "net.prototxt").write_text(_NET)
    path = tmp_path / "solver.prototxt"
    path.write_text('net: "net.prototxt"\nbase_lr: 0.1\n' + lines)
    return load_config(str(path))


def test_negative_gamma_is_fatal_for_every_policy_caffe_checks(tmp_path):
    import pytest

    from dnupdate.engine.spec import ConfigError

    for policy, extra in (
        ("exp", ""),
        ("inv", "power: 0.75\n"),
        ("multistep", "stepvalue: 5\n"),
        ("step", "stepsize: 5\n"),
    ):
        with pytest.raises(ConfigError) as info:
            _load_solver(tmp_path, f'lr_policy: "{policy}"\ngamma: -0.5\n{extra}')
        errors = [d for d in info.value.diagnostics if d.severity == "error"]
        assert [d.key for d in errors] == ["gamma"], policy
        assert errors[0].line == 4
    # poly and fixed do not check gamma
    assert _load_solver(tmp_path, 'lr_policy: "poly"\ngamma: -0.5\nmax_iter: 9\n').schedule


# --------------------------------------------------------------------------------------------
# upgrade_proto.cpp: UpgradeNetDataTransformation — a V1 data layer's data_param.scale (and
# mean_file, crop_size, mirror) is moved with transform_param->set_*: it REPLACES a value the
# layer's transform_param already had.
# --------------------------------------------------------------------------------------------


def test_v1_data_param_transform_fields_replace_transform_param(tmp_path):
    from dnupdate.engine.config import load_config

    net = """name: "n"
layers { name: "d" type: DATA top: "data" top: "label"
  transform_param { scale: 0.25 mirror: false }
  data_param { source: "mnist" batch_size: 8 backend: LMDB scale: 0.5 mirror: true } }
layers { name: "ip" type: INNER_PRODUCT bottom: "data" top: "ip"
  inner_product_param { num_output: 10 } }
layers { name: "loss" type: SOFTMAX_LOSS bottom: "ip" bottom: "label" }
"""
    (tmp_path / "net.prototxt").write_text(net)
    path = tmp_path / "solver.prototxt"
    path.write_text('net: "net.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\n')
    source = load_config(str(path)).data.train
    assert (source.scale, source.mirror) == (0.5, True)


def test_caffe_test_accuracy_is_the_nets_accuracy_layer_output():
    # Solver::Test reports the Accuracy layer's top (top_k: 2 here), not a top-1 of our own.
    from dnupdate.engine.training.step import Trainer

    trainer = Trainer(_caffe_run(accuracy_top_k=2), seed=4)
    rng = np.random.default_rng(12)
    batches = [
        (rng.standard_normal((3, 3, 1, 1)).astype(F32), rng.integers(0, 4, size=3))
        for _ in range(5)
    ]
    acc_sum = F32(0)
    net = trainer._eval_network(3)
    for x, y in batches:
        net.set_truth(y)
        net.forward(x, train=False)
        scores = net.output.reshape(3, 4)
        truth = scores[np.arange(3), y]
        correct = sum(int((scores[i] >= truth[i]).sum() - 1 < 2) for i in range(3))
        acc_sum = F32(acc_sum + F32(F32(correct) / F32(3)))
    assert trainer.evaluate(batches).accuracy == float(F32(acc_sum / F32(5)))
