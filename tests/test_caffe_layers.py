"""Caffe's graph and new layers: kernels against NumPy transcriptions of Caffe's CPU code
(``tests/reference/caffe_layers.py``), backward kernels against float64 finite differences,
and whole graph nets (named bottoms, in-place tops, implicit splits) against finite
differences of their loss and from prototxt."""

from __future__ import annotations

import numpy as np
import pytest

from dnupdate.engine.backends.cpu import CpuBackend
from dnupdate.engine.backends.cpu import caffe_layers as kernels
from dnupdate.engine.model.network import Network
from dnupdate.engine.spec import (
    ActivationSpec,
    ConcatSpec,
    ConnectedSpec,
    ConvSpec,
    EltwiseSpec,
    EuclideanLossSpec,
    FillerSpec,
    InputSpec,
    LRNSpec,
    NetSpec,
    PowerSpec,
    ReshapeSpec,
    SigmoidCrossEntropyLossSpec,
    SplitSpec,
)
from tests.reference import caffe_layers as ref
from tests.test_gradcheck_elementwise import numeric_grad

RNG = np.random.default_rng(7)


@pytest.mark.parametrize(("size", "channels"), [(3, 6), (5, 4), (5, 9)])
def test_lrn_across_channels_matches_caffe(size, channels):
    x = RNG.normal(size=(2, channels, 6)).astype(np.float32)
    dy = RNG.normal(size=x.shape).astype(np.float32)
    scale, y = np.zeros_like(x), np.zeros_like(x)
    kernels.lrn_forward(x, scale, y, size, 1e-2, 0.75, 2.0)
    want_y, want_scale = ref.lrn_across_forward(x, size, 1e-2, 0.75, 2.0)
    np.testing.assert_allclose(scale, want_scale, rtol=1e-6)
    np.testing.assert_allclose(y, want_y, rtol=2e-6)
    dx = np.zeros_like(x)
    kernels.lrn_backward(x, y, scale, dy, dx, size, 1e-2, 0.75)
    want = ref.lrn_across_backward(x, want_y, want_scale, dy, size, 1e-2, 0.75)
    np.testing.assert_allclose(dx, want, rtol=1e-5, atol=1e-7)


def test_lrn_across_gradient_is_the_derivative():
    x = RNG.normal(size=(1, 5, 3)).astype(np.float32)
    w = RNG.normal(size=x.shape)
    size, alpha, beta, k = 3, 0.5, 0.75, 1.0
    scale, y, dx = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
    kernels.lrn_forward(x, scale, y, size, alpha, beta, k)
    kernels.lrn_backward(x, y, scale, w.astype(np.float32), dx, size, alpha, beta)
    num = numeric_grad(lambda v: (w * ref.lrn_across_forward(v, size, alpha, beta, k)[0]).sum(), x)
    np.testing.assert_allclose(dx, num, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("power", "scale", "shift"), [(2.0, 0.5, 1.0), (-0.75, 0.2, 1.0), (3.0, 1.5, 0.0), (1.0, 2, 3)]
)
def test_power_matches_caffe_and_its_derivative(power, scale, shift):
    x = RNG.uniform(0.2, 2.0, size=(3, 4)).astype(np.float32)
    w = RNG.normal(size=x.shape)
    y, dx = np.zeros_like(x), np.zeros_like(x)
    kernels.power_forward(x, y, power, scale, shift)
    np.testing.assert_allclose(y, ref.power_forward(x, power, scale, shift), rtol=1e-6)
    kernels.power_backward(x, y, w.astype(np.float32), dx, power, scale, shift)
    num = numeric_grad(lambda v: (w * ref.power_forward(v, power, scale, shift)).sum(), x)
    np.testing.assert_allclose(dx, num, rtol=1e-4, atol=1e-5)


def test_softmax_layer_matches_caffe_and_its_derivative():
    x = RNG.normal(size=(2, 5, 3)).astype(np.float32) * 3
    w = RNG.normal(size=x.shape)
    y, dx = np.zeros_like(x), np.zeros_like(x)
    kernels.caffe_softmax_forward(x, y)
    np.testing.assert_allclose(y, ref.softmax_forward(x), rtol=1e-6)
    kernels.caffe_softmax_backward(y, w.astype(np.float32), dx)
    num = numeric_grad(lambda v: (w * ref.softmax_forward(v)).sum(), x)
    np.testing.assert_allclose(dx, num, rtol=1e-4, atol=1e-5)


def test_eltwise_max_breaks_ties_as_caffe():
    a = np.array([1, 2, 3, 2], np.float32)
    b = np.array([1, 1, 4, 2], np.float32)
    c = np.array([1, 2, 4, 5], np.float32)
    out, mask = np.zeros(4, np.float32), np.zeros(4, np.int32)
    for index, value in enumerate((a, b, c)):
        kernels.eltwise_max(value, out, mask, index)
    want_top, want_mask = ref.eltwise_max([a, b, c])
    np.testing.assert_array_equal(out, want_top)
    np.testing.assert_array_equal(mask, want_mask)
    assert list(mask) == [1, 0, 1, 2]  # a tie of bottoms 0 and 1 goes to 1, later ties stay


def _sce_net(normalization: str, ignore: int | None) -> Network:
    spec = NetSpec(
        "sce",
        InputSpec(6, 1, 1),
        (
            PowerSpec(name="id", bottoms=("data",), tops=("x",)),
            SigmoidCrossEntropyLossSpec(
                name="loss", bottoms=("x", "label"), tops=("l",), normalization=normalization,
                ignore_label=ignore, loss_weight=1.0,
            ),
        ),
        input_tops=("data", "label"),
    )  # fmt: skip
    return Network(spec, CpuBackend(), batch=3, semantics="caffe")


@pytest.mark.parametrize(
    ("normalization", "ignore"), [("batch_size", None), ("valid", 2), ("full", None)]
)
def test_sigmoid_cross_entropy_matches_caffe(normalization, ignore):
    net = _sce_net(normalization, ignore)
    x = (RNG.normal(size=(3, 6)) * 4).astype(np.float32)
    t = RNG.integers(0, 3, size=(3, 6)).astype(np.float32) / 2  # 0, 0.5, 1
    if ignore is not None:
        t[0, :2] = ignore
    net.set_truth(t)
    net.forward(x, train=True)
    want_loss, want_diff = ref.sigmoid_cross_entropy(x, t, normalization, ignore)
    assert net.loss == pytest.approx(float(want_loss), rel=1e-6)
    loss_layer = net.layers[1]
    np.testing.assert_allclose(loss_layer.grad, want_diff, rtol=1e-5, atol=1e-7)


def test_euclidean_loss_matches_caffe():
    a = RNG.normal(size=(4, 5)).astype(np.float32)
    b = RNG.normal(size=(4, 5)).astype(np.float32)
    spec = NetSpec(
        "l2",
        InputSpec(5, 1, 1),
        (
            PowerSpec(name="id", bottoms=("data",), tops=("x",)),
            EuclideanLossSpec(name="loss", bottoms=("x", "label"), tops=("l",)),
        ),
        input_tops=("data", "label"),
    )
    net = Network(spec, CpuBackend(), batch=4, semantics="caffe")
    net.set_truth(b)
    net.forward(a, train=True)
    loss, diff = ref.euclidean(a, b)
    assert net.loss == pytest.approx(float(loss), rel=1e-6)
    net.backward()
    np.testing.assert_allclose(net.layers[0].delta.reshape(diff.shape), diff, rtol=1e-6)


def gaussian(std: float = 0.5) -> FillerSpec:
    return FillerSpec(type="gaussian", std=std)


def _graph_net() -> NetSpec:
    """Every graph feature at once: the data read by three layers, an in-place ReLU (its
    readers see the last writer), a blob read by Eltwise SUM/PROD/MAX and Concat (implicit
    splits), an explicit Split, Flatten, LRN within channels, and two losses on one blob."""
    return NetSpec(
        "graph",
        InputSpec(2, 4, 4),
        (
            ReshapeSpec(name="flat", bottoms=("data",), tops=("flatdata",)),
            ConvSpec(name="c1", filters=3, kernel_h=3, kernel_w=3, pad_h=1, pad_w=1,
                     weight_filler=gaussian(), bottoms=("data",), tops=("a",)),
            ConvSpec(name="c2", filters=3, kernel_h=1, kernel_w=1, weight_filler=gaussian(),
                     bottoms=("data",), tops=("b",)),
            ActivationSpec(name="relu", activation="relu", negative_slope=0.1, bottoms=("a",),
                           tops=("a",)),
            EltwiseSpec(name="sum", coeffs=(1.0, -0.5), bottoms=("a", "b"), tops=("s",)),
            EltwiseSpec(name="prod", operation="prod", bottoms=("a", "b", "s"), tops=("p",)),
            EltwiseSpec(name="max", operation="max", bottoms=("s", "p"), tops=("m",)),
            SplitSpec(name="split", bottoms=("m",), tops=("m1", "m2")),
            LRNSpec(name="lrn", region="within", local_size=3, alpha=0.3, bottoms=("m1",),
                    tops=("n",)),
            ConcatSpec(name="cat", bottoms=("n", "m2", "a"), tops=("cat",)),
            ConnectedSpec(name="ip", outputs=32, weight_filler=gaussian(0.2), bottoms=("cat",),
                          tops=("ip",)),
            SigmoidCrossEntropyLossSpec(name="loss", bottoms=("ip", "flatdata"), tops=("ce",)),
            ActivationSpec(name="sig", activation="logistic", bottoms=("ip",), tops=("sig",)),
            EuclideanLossSpec(name="loss", bottoms=("sig", "flatdata"), tops=("l2",),
                              loss_weight=0.5),
        ),
        input_tops=("data",),
    )  # fmt: skip


def test_graph_net_gradients_are_the_derivative_of_its_loss():
    """Every parameter's gradient against central differences of the float32 net loss."""
    net = Network(_graph_net(), CpuBackend(), batch=2, semantics="caffe")
    rng = np.random.default_rng(3)
    net.params[:] = (rng.normal(size=net.params.shape) * 0.4).astype(np.float32)
    x = rng.uniform(0.0, 1.0, size=(2, 2, 4, 4)).astype(np.float32)
    net.forward(x, train=True)
    net.zero_grads()
    net.backward()
    analytic = net.grads.copy()
    picks = rng.choice(net.params.size, size=40, replace=False)
    h = 1e-2
    for i in picks:
        keep = net.params[i]
        net.params[i] = keep + h
        up = net.forward(x, train=True) is not None and net.loss
        net.params[i] = keep - h
        down = net.forward(x, train=True) is not None and net.loss
        net.params[i] = keep
        numeric = (up - down) / (2 * h)
        assert analytic[i] == pytest.approx(numeric, rel=3e-2, abs=3e-3), i


AUTOENCODER = """
name: "ae"
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 4 dim: 1 dim: 4 dim: 4 } } }
layer { name: "flatdata" type: "Flatten" bottom: "data" top: "flatdata" }
layer { name: "enc" type: "InnerProduct" bottom: "data" top: "enc"
  inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 1 sparse: 3 } } }
layer { name: "encn" type: "Sigmoid" bottom: "enc" top: "enc" }
layer { name: "lrn" type: "Power" bottom: "enc" top: "lrn" power_param { power: 2 scale: 0.5 } }
layer { name: "dec" type: "InnerProduct" bottom: "lrn" top: "dec"
  inner_product_param { num_output: 16 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "loss" type: "SigmoidCrossEntropyLoss" bottom: "dec" bottom: "flatdata"
  top: "cross_entropy_loss" loss_weight: 1 }
layer { name: "decn" type: "Sigmoid" bottom: "dec" top: "decn" }
layer { name: "loss" type: "EuclideanLoss" bottom: "decn" bottom: "flatdata" top: "l2_error"
  loss_weight: 0 }
"""
SOLVER = 'net: "net.prototxt"\nbase_lr: 0.01\nlr_policy: "fixed"\nmax_iter: 10\n'


def test_autoencoder_style_prototxt_builds_and_reads_named_blobs(tmp_path):
    from dnupdate.engine.config import load_config

    (tmp_path / "net.prototxt").write_text(AUTOENCODER)
    (tmp_path / "solver.prototxt").write_text(SOLVER)
    run = load_config(str(tmp_path / "solver.prototxt"))
    net = Network(run.net, CpuBackend(), batch=4, semantics="caffe")
    assert run.net.input_tops == ("data",)
    bottoms = [s.bottoms for s in net.shapes]
    assert bottoms == [(-1,), (-1,), (1,), (2,), (3,), (4, 0), (4,), (6, 0)]
    x = np.random.default_rng(0).uniform(size=(4, 1, 4, 4)).astype(np.float32)
    net.forward(x, train=True)
    assert set(net.scalars) == {"cross_entropy_loss", "l2_error"}
    assert net.scalars["l2_error"] == 0.0  # loss_weight 0: nothing added to the net's loss
    assert net.loss == pytest.approx(net.scalars["cross_entropy_loss"])


def test_unknown_bottom_blob_names_file_and_line(tmp_path):
    from dnupdate.engine.config import load_config
    from dnupdate.engine.spec import ConfigError

    text = AUTOENCODER.replace('bottom: "lrn" top: "dec"', 'bottom: "lnr" top: "dec"')
    (tmp_path / "net.prototxt").write_text(text)
    (tmp_path / "solver.prototxt").write_text(SOLVER)
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "solver.prototxt"))
    error = next(d for d in info.value.diagnostics if d.severity == "error")
    assert error.key == "bottom" and "'lnr'" in error.message
    assert error.line == 1 + text.split("\n").index(
        next(line for line in text.split("\n") if '"lnr"' in line)
    )
