"""Layer semantics through small networks: dropout (darknet in place, Caffe), darknet softmax
and cost, Caffe SoftmaxWithLoss/Accuracy, Caffe BatchNorm + Scale, stop_backward, the gradient
sign and reduction conventions."""

from __future__ import annotations

import numpy as np
import pytest

from dnupdate.engine.backends.cpu import CpuBackend
from dnupdate.engine.model.network import Network, NetworkError
from dnupdate.engine.spec import (
    AccuracySpec,
    ActivationSpec,
    BatchNormSpec,
    ConnectedSpec,
    CostSpec,
    DropoutSpec,
    InputSpec,
    NetSpec,
    ScaleSpec,
    SoftmaxLossSpec,
    SoftmaxSpec,
)

BACKEND = CpuBackend()


def fc(name, outputs, order="darknet", activation="linear", **kw):
    return ConnectedSpec(name=name, outputs=outputs, param_order=order, activation=activation, **kw)


def randomise(net: Network, seed: int) -> np.random.Generator:
    rng = np.random.default_rng(seed)
    for segment in net.segments:
        view = net.blob(segment.layer, segment.index)
        if segment.learnable:
            view[...] = rng.standard_normal(view.shape).astype(np.float32) * 0.5
    return rng


class FixedUniforms:
    """A uniform source that records what it handed out."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.drawn: list[np.ndarray] = []

    def __call__(self, n: int) -> np.ndarray:
        draws = self.rng.random(n, dtype=np.float32)
        self.drawn.append(draws)
        return draws


def test_darknet_dropout_works_in_place_on_the_previous_output():
    spec = NetSpec(
        "d",
        InputSpec(6, 1, 1),
        (fc("0", 8, activation="leaky"), DropoutSpec(name="1", probability=0.4, style="darknet")),
    )
    source = FixedUniforms(1)
    net = Network(spec, BACKEND, 3, "darknet", uniforms=source)
    rng = randomise(net, 2)
    assert net.layers[1].output is net.layers[0].output  # darknet quirk: aliased buffers
    assert net.layers[1].delta is net.layers[0].delta
    x = rng.standard_normal((3, 6, 1, 1)).astype(np.float32)
    net.forward(x, train=False)
    clean = net.layers[0].output.copy()
    out = net.forward(x, train=True).copy()
    r = source.drawn[-1].reshape(out.shape)
    scale = np.float32(1.0) / np.float32(1.0 - np.float32(0.4))
    np.testing.assert_array_equal(out, np.where(r < np.float32(0.4), 0, clean * scale))
    dy = rng.standard_normal(out.shape).astype(np.float32)
    net.layers[1].delta[...] = dy
    net.backward()
    # leaky gradient from the dropped output: zeros are "≤ 0" → .1 (darknet quirk kept)
    masked = np.where(r < np.float32(0.4), 0, dy * scale)
    slope = np.where(out > 0, 1.0, 0.1).astype(np.float32)
    np.testing.assert_allclose(net.layers[0].delta, masked * slope, rtol=1e-6)
    assert len(source.drawn) == 1  # inference draws nothing


def test_caffe_dropout_keeps_where_draw_exceeds_p_and_is_identity_at_test():
    spec = NetSpec(
        "c",
        InputSpec(5, 1, 1),
        (fc("ip", 7, order="caffe"), DropoutSpec(name="drop", probability=0.5, style="caffe")),
    )
    source = FixedUniforms(3)
    net = Network(spec, BACKEND, 4, "caffe", uniforms=source)
    rng = randomise(net, 4)
    x = rng.standard_normal((4, 5, 1, 1)).astype(np.float32)
    out = net.forward(x, train=True).copy()
    clean = net.layers[0].output
    keep = source.drawn[-1].reshape(out.shape) > np.float32(0.5)
    np.testing.assert_allclose(out, np.where(keep, clean * 2, 0), rtol=1e-6)
    dy = rng.standard_normal(out.shape).astype(np.float32)
    net.layers[1].delta[...] = dy
    net.backward()
    np.testing.assert_allclose(net.layers[0].delta, np.where(keep, dy * 2, 0), rtol=1e-6)
    np.testing.assert_array_equal(net.forward(x, train=False), net.layers[0].output)


def softmax_net(with_cost: bool) -> NetSpec:
    layers = [fc("0", 4), SoftmaxSpec(name="1")]
    if with_cost:
        layers.append(CostSpec(name="2", cost_type="sse"))
    return NetSpec("s", InputSpec(3, 1, 1), tuple(layers))


def test_darknet_softmax_delta_cost_and_output():
    net = Network(softmax_net(False), BACKEND, 2, "darknet")
    rng = randomise(net, 5)
    x = rng.standard_normal((2, 3, 1, 1)).astype(np.float32)
    labels = np.array([1, 3])
    net.set_truth(labels)
    p = net.forward(x, train=True).reshape(2, 4).astype(np.float64)
    logits = net.layers[0].output.reshape(2, 4).astype(np.float64)
    want = np.exp(logits - logits.max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    np.testing.assert_allclose(p, want, rtol=1e-6)
    onehot = np.eye(4)[labels]
    assert net.loss == pytest.approx(-np.log(want[[0, 1], labels]).sum(), rel=1e-6)
    net.backward()
    np.testing.assert_allclose(net.layers[0].delta.reshape(2, 4), onehot - want, atol=1e-6)
    # darknet semantics: grads = Σ delta ⊗ input (the negative gradient, summed)
    np.testing.assert_allclose(
        net.grad("0", 1), (onehot - want).T @ x.reshape(2, 3), rtol=1e-5, atol=1e-6
    )


def test_darknet_softmax_then_sse_cost_doubles_the_logit_delta():
    net = Network(softmax_net(True), BACKEND, 2, "darknet")
    rng = randomise(net, 6)
    x = rng.standard_normal((2, 3, 1, 1)).astype(np.float32)
    net.set_truth(np.array([0, 2]))
    p = net.forward(x, train=True).reshape(2, 4).astype(np.float64)
    assert net.output is net.layers[1].output  # darknet: net->output skips [cost]
    t = np.eye(4)[[0, 2]]
    ce = -np.log(p[[0, 1], [0, 2]]).sum()
    sse = ((t - p) ** 2).sum()
    assert net.loss == pytest.approx((ce + sse) / 2, rel=1e-5)
    net.backward()
    np.testing.assert_allclose(net.layers[0].delta.reshape(2, 4), 2 * (t - p), atol=1e-6)


def caffe_classifier(normalization="valid", ignore_label=None, loss_weight=1.0) -> NetSpec:
    return NetSpec(
        "c",
        InputSpec(3, 1, 1),
        (
            fc("ip", 5, order="caffe"),
            SoftmaxLossSpec(
                name="loss",
                normalization=normalization,
                ignore_label=ignore_label,
                loss_weight=loss_weight,
            ),
            AccuracySpec(name="acc"),
        ),
    )


@pytest.mark.parametrize(
    "normalization,ignore,weight,divisor",
    [("valid", None, 1.0, 4), ("batch_size", None, 2.0, 4), ("none", None, 1.0, 1),
     ("valid", 2, 1.0, 3), ("full", 2, 0.5, 4)],
)  # fmt: skip
def test_caffe_softmax_with_loss_and_accuracy(normalization, ignore, weight, divisor):
    net = Network(caffe_classifier(normalization, ignore, weight), BACKEND, 4, "caffe")
    rng = randomise(net, 7)
    x = rng.standard_normal((4, 3, 1, 1)).astype(np.float32)
    labels = np.array([0, 2, 4, 1])
    net.set_truth(labels)
    logits = net.forward(x, train=True).reshape(4, 5).astype(np.float64)
    assert net.output is net.layers[0].output  # Caffe: the last non-loss blob
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    keep = labels != ignore if ignore is not None else np.ones(4, bool)
    nll = -np.log(p[np.arange(4), labels])[keep].sum()
    assert net.loss == pytest.approx(weight * nll / divisor, rel=1e-5)
    want_acc = np.mean(logits.argmax(1)[keep] == labels[keep])
    assert net.scalars["acc"] == pytest.approx(want_acc)
    net.backward()
    grad = (p - np.eye(5)[labels]) * weight / divisor
    grad[~keep] = 0
    np.testing.assert_allclose(net.layers[0].delta.reshape(4, 5), grad, atol=1e-6)
    np.testing.assert_allclose(net.grad("ip", 0), grad.T @ x.reshape(4, 3), atol=1e-5)


def test_caffe_batchnorm_statistics_and_test_phase_sharing():
    spec = NetSpec(
        "bn",
        InputSpec(2, 3, 3),
        (
            BatchNormSpec(name="bn", moving_average_fraction=0.9),
            ScaleSpec(name="scale", bias_term=True),
        ),
    )
    train = Network(spec, BACKEND, 4, "caffe")
    test = Network(spec, BACKEND, 4, "caffe", phase="test", share_params_with=train)
    assert test.params is train.params
    train.blob("scale", 0)[...] = [2.0, 0.5]
    train.blob("scale", 1)[...] = [1.0, -1.0]
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((4, 2, 3, 3)) * 3 + 1).astype(np.float32)
    y = train.forward(x, train=True).astype(np.float64)
    mu = x.astype(np.float64).mean(axis=(0, 2, 3))
    var = x.astype(np.float64).var(axis=(0, 2, 3))
    norm = (x - mu[None, :, None, None]) / np.sqrt(var + 1e-5)[None, :, None, None]
    want = (
        norm * np.array([2.0, 0.5])[None, :, None, None]
        + np.array([1.0, -1.0])[None, :, None, None]
    )
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    assert train.blob("bn", 2)[0] == pytest.approx(1.0)  # s ← 0.9·0 + 1
    np.testing.assert_allclose(train.blob("bn", 0), mu, rtol=1e-5)
    np.testing.assert_allclose(train.blob("bn", 1), var * 36 / 35, rtol=1e-5)
    assert set(train.state_arrays()) == {"bn/0", "bn/1", "bn/2"}
    out = test.forward(x, train=False).astype(np.float64)
    g_norm = (x - mu[None, :, None, None]) / np.sqrt(var * 36 / 35 + 1e-5)[None, :, None, None]
    want = (
        g_norm * np.array([2.0, 0.5])[None, :, None, None]
        + np.array([1.0, -1.0])[None, :, None, None]
    )
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    assert train.blob("bn", 2)[0] == pytest.approx(1.0)  # global stats: no update


def test_stop_backward_leaves_earlier_layers_without_gradient():
    spec = NetSpec(
        "sb",
        InputSpec(3, 1, 1),
        (fc("0", 4), fc("1", 4, stop_backward=True), fc("2", 2), SoftmaxSpec(name="3")),
    )
    net = Network(spec, BACKEND, 2, "darknet")
    rng = randomise(net, 9)
    net.set_truth(np.array([0, 1]))
    net.forward(rng.standard_normal((2, 3, 1, 1)).astype(np.float32), train=True)
    net.backward()
    assert net.grad("2", 1).any()
    assert not net.grad("1", 1).any() and not net.grad("0", 1).any()


@pytest.mark.parametrize("batch_normalize", [False, True])
def test_cross_semantics_rescales_gradients(batch_normalize):
    """A darknet net under Caffe rules: grads = +∂(mean loss)/∂θ = −(1/B)·darknet's sum
    (with batch norm the bias/scale updates go through the backend's scratch path)."""
    spec = NetSpec(
        "x",
        InputSpec(3, 1, 1),
        (fc("0", 4, batch_normalize=batch_normalize), SoftmaxSpec(name="1")),
    )
    grads = {}
    for semantics in ("darknet", "caffe"):
        net = Network(spec, BACKEND, 2, semantics)
        rng = randomise(net, 10)
        net.set_truth(np.array([2, 1]))
        net.forward(rng.standard_normal((2, 3, 1, 1)).astype(np.float32), train=True)
        net.backward()
        grads[semantics] = net.grads.copy()
    np.testing.assert_allclose(grads["caffe"], -grads["darknet"] / 2, rtol=1e-6)


def test_bad_input_and_truth_are_clear_errors():
    net = Network(softmax_net(False), BACKEND, 2, "darknet")
    with pytest.raises(NetworkError, match="expected 2×3×1×1"):
        net.forward(np.zeros((3, 3), np.float32), train=False)
    with pytest.raises(NetworkError, match="labels must lie in"):
        net.set_truth(np.array([0, 7]))
    darknet_bn = NetSpec("b", InputSpec(2, 2, 2), (BatchNormSpec(name="0", style="darknet"),))
    with pytest.raises(NetworkError, match="unusable on darknet's CPU path"):
        Network(darknet_bn, BACKEND, 1, "darknet")
    first_dropout = NetSpec("f", InputSpec(2, 2, 2), (DropoutSpec(name="0", style="darknet"),))
    with pytest.raises(NetworkError, match="cannot be the first layer"):
        Network(first_dropout, BACKEND, 1, "darknet")


@pytest.mark.parametrize(
    "activation,slope", [("relu", 0.0), ("relu", 0.2), ("logistic", 0.0), ("tanh", 0.0)]
)
def test_caffe_activation_layers(activation, slope):
    spec = NetSpec(
        "a",
        InputSpec(4, 1, 1),
        (
            fc("ip", 6, order="caffe"),
            ActivationSpec(name="act", activation=activation, negative_slope=slope),
        ),
    )
    net = Network(spec, BACKEND, 3, "caffe")
    rng = randomise(net, 11)
    x = rng.standard_normal((3, 4, 1, 1)).astype(np.float32)
    y = net.forward(x, train=True).astype(np.float64)
    z = net.layers[0].output.astype(np.float64)
    if activation == "relu":
        want, local = np.maximum(z, 0) + slope * np.minimum(z, 0), np.where(z > 0, 1, slope)
    elif activation == "logistic":
        want = 1 / (1 + np.exp(-z))
        local = want * (1 - want)
    else:
        want = np.tanh(z)
        local = 1 - want**2
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    net.layers[1].delta[...] = dy
    net.backward()
    np.testing.assert_allclose(net.layers[0].delta, dy * local, rtol=1e-5, atol=1e-6)
