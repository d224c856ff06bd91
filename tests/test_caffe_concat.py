"""Caffe ``Concat`` along any axis (C, H, W of an image blob, K of a flat one; negative axes
as ``CanonicalAxisIndex``, the deprecated ``concat_dim``): forward and backward against the
NumPy transcription of ``concat_layer.cpp`` (``tests/reference/caffe_layers.py``), the whole
net's gradients against central differences, and shape errors naming file, line and key."""

from __future__ import annotations

import numpy as np
import pytest

from dnupdate.engine.backends.cpu import CpuBackend
from dnupdate.engine.model.network import Network
from dnupdate.engine.spec import (
    ConcatSpec,
    ConfigError,
    ConnectedSpec,
    ConvSpec,
    EuclideanLossSpec,
    FillerSpec,
    InputSpec,
    NetSpec,
)
from tests.gradcheck import loss_slopes
from tests.reference import caffe_layers as ref

GAUSS = FillerSpec(type="gaussian", std=0.5)
# (per-image C×H×W of the data; conv A's and conv B's kernel h×w and filters; axis as given,
# its N×C×H×W index) -- B differs from A only at the concat axis
CASES = {
    "channels": ((2, 3, 4), ((1, 1, 2), (1, 1, 3)), 1, 1),
    "channels-negative": ((2, 3, 4), ((1, 1, 2), (1, 1, 3)), -3, 1),
    "height": ((2, 3, 4), ((1, 1, 2), (2, 1, 2)), 2, 2),
    "height-negative": ((2, 3, 4), ((1, 1, 2), (2, 1, 2)), -2, 2),
    "width": ((2, 3, 4), ((1, 1, 2), (1, 3, 2)), 3, 3),
    "width-negative": ((2, 3, 4), ((1, 1, 2), (1, 3, 2)), -1, 3),
}


def _conv(name: str, kernel: tuple[int, int, int]) -> ConvSpec:
    kh, kw, filters = kernel
    return ConvSpec(
        name=name, filters=filters, kernel_h=kh, kernel_w=kw, weight_filler=GAUSS,
        bottoms=("data",), tops=(name,),
    )  # fmt: skip


def _concat_net(data, kernels, axis: int, key: str = "axis", flat: bool = False) -> NetSpec:
    """data → conv a, conv b (→ InnerProduct each when ``flat``) → Concat → InnerProduct →
    EuclideanLoss against the label."""
    layers = [_conv("a", kernels[0]), _conv("b", kernels[1])]
    names = ("a", "b")
    if flat:
        layers += [
            ConnectedSpec(name="fa", outputs=3, weight_filler=GAUSS, bottoms=("a",), tops=("fa",)),
            ConnectedSpec(name="fb", outputs=5, weight_filler=GAUSS, bottoms=("b",), tops=("fb",)),
        ]
        names = ("fa", "fb")
    layers += [
        ConcatSpec(name="cat", axis=axis, axis_key=key, bottoms=names, tops=("cat",)),
        ConnectedSpec(name="ip", outputs=4, weight_filler=GAUSS, bottoms=("cat",), tops=("ip",)),
        EuclideanLossSpec(name="loss", bottoms=("ip", "label"), tops=("l",)),
    ]
    return NetSpec("cat", InputSpec(*data), tuple(layers), input_tops=("data", "label"))


def _net(spec: NetSpec, batch: int = 2) -> Network:
    net = Network(spec, CpuBackend(), batch=batch, semantics="caffe")
    rng = np.random.default_rng(5)
    net.params[:] = (rng.normal(size=net.params.shape) * 0.4).astype(np.float32)
    net.set_truth(rng.normal(size=(batch, 4)).astype(np.float32))
    return net


def _layer(net: Network, name: str):
    return next(layer for layer in net.layers if layer.shape.layer.name == name)


@pytest.mark.parametrize("case", sorted(CASES))
def test_concat_matches_caffes_cpu_code(case):
    data, kernels, axis, canonical = CASES[case]
    net = _net(_concat_net(data, kernels, axis))
    x = np.random.default_rng(1).normal(size=(2, *data)).astype(np.float32)
    net.forward(x, train=True)
    a, b, cat = (_layer(net, name) for name in ("a", "b", "cat"))
    want = _check_concat(cat, (a, b), [(2, *a.shape.output), (2, *b.shape.output)], canonical)
    assert (2, *cat.shape.output) == want.shape


def _check_concat(cat, sources, shapes, canonical: int) -> np.ndarray:
    """The Concat layer's forward output (already run) and its backward into the two sources'
    deltas against ``concat_layer.cpp``'s transcription along the canonical ``axis``, the
    sources' outputs read as ``shapes`` (N first); returns the expected top."""
    bottoms = [layer.output.reshape(shape) for layer, shape in zip(sources, shapes, strict=True)]
    want = ref.concat_forward(bottoms, canonical)
    np.testing.assert_array_equal(cat.output.reshape(want.shape), want)
    diff = np.random.default_rng(2).normal(size=want.shape).astype(np.float32)
    cat.delta[...] = diff.reshape(cat.delta.shape)
    for layer in sources:
        layer.delta[...] = 0.0
    cat.backward(sources[0].output, sources[0].delta)
    expected = ref.concat_backward(diff, shapes, canonical)
    for layer, target in zip(sources, expected, strict=True):
        np.testing.assert_array_equal(layer.delta.reshape(target.shape), target)
    return want


def test_flat_bottoms_concatenate_along_k_with_axis_minus_one():
    net = _net(_concat_net((2, 3, 4), ((1, 1, 2), (1, 1, 2)), -1, flat=True))
    x = np.random.default_rng(1).normal(size=(2, 2, 3, 4)).astype(np.float32)
    net.forward(x, train=True)
    fa, fb, cat = (_layer(net, name) for name in ("fa", "fb", "cat"))
    assert cat.shape.output == (8, 1, 1) and not cat.shape.image_out
    want = ref.concat_forward([fa.output.reshape(2, 3), fb.output.reshape(2, 5)], 1)
    np.testing.assert_array_equal(cat.output.reshape(2, 8), want)


@pytest.mark.parametrize("case", ["channels", "height-negative", "width"])
def test_concat_net_gradients_are_the_derivative_of_its_loss(case):
    data, kernels, axis, _ = CASES[case]
    net = _net(_concat_net(data, kernels, axis))
    x = np.random.default_rng(3).normal(size=(2, *data)).astype(np.float32)
    net.forward(x, train=True)
    net.zero_grads()
    net.backward()
    analytic = net.grads.copy()
    for i, slope in zip(*loss_slopes(net, x, 30, seed=4), strict=True):
        assert analytic[i] == pytest.approx(slope, rel=2e-2, abs=2e-3), i


NET = """name: "cat"
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 2 dim: 2 dim: 3 dim: 4 } } }
layer { name: "a" type: "Convolution" bottom: "data" top: "a"
  convolution_param { num_output: 2 kernel_h: KH kernel_w: 1 } }
layer { name: "cat" type: "Concat" bottom: "data" bottom: "a" top: "cat"
  concat_param { PARAM } }
"""
SOLVER = 'net: "net.prototxt"\nbase_lr: 0.01\nlr_policy: "fixed"\nmax_iter: 10\n'


def _load(tmp_path, param: str, kh: int = 1):
    from dnupdate.engine.config import load_config

    (tmp_path / "net.prototxt").write_text(NET.replace("PARAM", param).replace("KH", str(kh)))
    (tmp_path / "solver.prototxt").write_text(SOLVER)
    return load_config(str(tmp_path / "solver.prototxt"))


@pytest.mark.parametrize(
    ("param", "kh", "shape"),
    [("axis: 1", 1, (4, 3, 4)), ("concat_dim: 2", 2, (2, 5, 4)), ("axis: -2", 2, (2, 5, 4))],
)
def test_prototxt_axis_and_concat_dim(tmp_path, param, kh, shape):
    run = _load(tmp_path, param, kh)
    net = Network(run.net, CpuBackend(), batch=2, semantics="caffe")
    assert net.shapes[-1].output == shape


@pytest.mark.parametrize(
    ("param", "kh", "key", "words"),
    [
        ("axis: 3", 2, "axis", "same shape, except at concat_axis 3: 2×3×4, 2×2×4"),
        ("axis: 1", 2, "axis", "same shape, except at concat_axis 1: 2×3×4, 2×2×4"),
        ("axis: 4", 1, "axis", "axis 4 is out of range for 4-axis bottoms"),
        ("axis: -5", 1, "axis", "axis -5 is out of range"),
        ("axis: 0", 1, "axis", "along the batch (axis 0) is not supported"),
        ("concat_dim: 0", 1, "concat_dim", "along the batch (axis 0) is not supported"),
        ("axis: 1 concat_dim: 1", 1, "concat_dim", "Either axis or concat_dim"),
    ],
)
def test_concat_shape_errors_name_file_line_and_key(tmp_path, param, kh, key, words):
    from dnupdate.engine.model.shapes import infer_shapes

    with pytest.raises(ConfigError) as info:
        infer_shapes(_load(tmp_path, param, kh).net)  # "both set" fails at load already
    error = next(d for d in info.value.diagnostics if d.severity == "error")
    assert error.file.endswith("net.prototxt") and error.line is not None and error.line >= 6
    assert error.key == key and words in error.message, str(error)


@pytest.mark.parametrize(
    ("param", "shown"), [("axis: -2", "axis -2"), ("concat_dim: 2", "concat_dim 2")]
)
def test_inspect_shows_the_concat_axis_as_written(tmp_path, param, shown):
    from typer.testing import CliRunner

    from dnupdate.cli.main import app

    _load(tmp_path, param, 2)
    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "solver.prototxt")])
    assert result.exit_code == 0, result.output
    line = next(text for text in result.output.splitlines() if " concat " in f" {text} ")
    assert shown in " ".join(line.split())


NET3 = """name: "cat3"
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 2 dim: 2 dim: 3 dim: 4 } } }
layer { name: "a" type: "Convolution" bottom: "data" top: "a"
  convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "ra" type: "Reshape" bottom: "a" top: "ra"
  reshape_param { shape { dim: 0 dim: 2 dim: -1 } } }
layer { name: "rb" type: "Reshape" bottom: "data" top: "rb"
  reshape_param { shape { dim: 0 dim: BDIM dim: -1 } } }
layer { name: "sa" type: "Softmax" bottom: "ra" top: "sa" }
layer { name: "cat" type: "Concat" bottom: "sa" bottom: "rb" top: "cat" concat_param { PARAM } }
"""


def _load3(tmp_path, param: str, bdim: int = 2):
    from dnupdate.engine.config import load_config

    text = NET3.replace("PARAM", param).replace("BDIM", str(bdim))
    (tmp_path / "net.prototxt").write_text(text)
    (tmp_path / "solver.prototxt").write_text(SOLVER)
    return load_config(str(tmp_path / "solver.prototxt"))


@pytest.mark.parametrize(
    ("param", "bdim", "canonical", "shape"),
    [
        ("axis: -1", 2, 2, (2, 24, 1)),  # B of N×A×B: 12 + 12 (it joined A before: 4×12)
        ("axis: 2", 2, 2, (2, 24, 1)),
        ("axis: 1", 2, 1, (4, 12, 1)),  # A: 2 + 2, as a flat concat would too
        ("axis: -2", 2, 1, (4, 12, 1)),
        ("axis: 1", 4, 1, None),  # B differs: 12 against 6
    ],
)
def test_reshape_to_three_axes_concatenates_along_caffes_axes(tmp_path, param, bdim, canonical,
                                                                shape):  # fmt: skip
    """A ``Reshape`` to two dims makes an N×A×B blob (Caffe: 3 axes), through a Softmax too:
    ``axis: -1`` is B, as ``CanonicalAxisIndex`` makes it, not the flat blob's K."""
    if shape is None:
        from dnupdate.engine.model.shapes import infer_shapes

        with pytest.raises(ConfigError, match="except at concat_axis 1: 2×12, 4×6"):
            infer_shapes(_load3(tmp_path, param, bdim).net)
        return
    net = Network(_load3(tmp_path, param, bdim).net, CpuBackend(), batch=2, semantics="caffe")
    sa, rb, cat = (_layer(net, name) for name in ("sa", "rb", "cat"))
    assert sa.shape.axes == 3 and rb.shape.axes == 3 and cat.shape.axes == 3
    assert cat.shape.output == shape
    x = np.random.default_rng(6).normal(size=(2, 2, 3, 4)).astype(np.float32)
    net.forward(x, train=True)
    shapes = [(2, *sa.shape.output[:2]), (2, *rb.shape.output[:2])]  # N×A×B
    _check_concat(cat, (sa, rb), shapes, canonical)


@pytest.mark.parametrize(
    ("net_text", "words"),
    [
        (NET3.replace("PARAM", "axis: 3").replace("BDIM", "2"),
         "axis 3 is out of range for 3-axis bottoms (N×A×B)"),
        (NET3.replace("PARAM", "axis: 1").replace('bottom: "rb" top: "cat"', 'bottom: "data" '
                                                   'top: "cat"').replace("BDIM", "2"),
         "All inputs must have the same #axes (N×A×B, N×C×H×W)"),
    ],
)  # fmt: skip
def test_three_axis_concat_errors(tmp_path, net_text, words):
    from dnupdate.engine.config import load_config
    from dnupdate.engine.model.shapes import infer_shapes

    (tmp_path / "net.prototxt").write_text(net_text)
    (tmp_path / "solver.prototxt").write_text(SOLVER)
    with pytest.raises(ConfigError) as info:
        infer_shapes(load_config(str(tmp_path / "solver.prototxt")).net)
    error = next(d for d in info.value.diagnostics if d.severity == "error")
    assert error.file.endswith("net.prototxt") and words in error.message, str(error)
