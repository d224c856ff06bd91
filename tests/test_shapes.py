"""Shape inference, parameter blobs and size rules (engine.model.shapes)."""

import pytest

from dnupdate.engine.model.shapes import (
    c_div,
    caffe_pool_out,
    conv_out,
    darknet_pool_out,
    infer_shapes,
    param_blobs,
)
from dnupdate.engine.spec import (
    AccuracySpec,
    ActivationSpec,
    ConfigError,
    ConnectedSpec,
    ConvSpec,
    InputSpec,
    NetSpec,
    Origin,
    ParamMult,
    PoolSpec,
    SoftmaxLossSpec,
    SoftmaxSpec,
)


def caffe_conv(name, n, k, pad=0):
    return ConvSpec(name=name, filters=n, kernel_h=k, kernel_w=k, pad_h=pad, pad_w=pad)


def caffe_pool(name, method, k, s):
    return PoolSpec(name=name, method=method, kernel_h=k, kernel_w=k, stride_h=s, stride_w=s)


def test_c_div_truncates_toward_zero():
    assert c_div(7, 2) == 3
    assert c_div(-1, 2) == 0
    assert c_div(-3, 2) == -1


def test_caffe_cifar10_quick_shapes_use_ceil_pooling():
    """Caffe's CIFAR-10 quick: the first InnerProduct sees 64×4×4 = 1024 inputs (spec 11.4)."""
    layers = (
        caffe_conv("conv1", 32, 5, pad=2),
        caffe_pool("pool1", "max", 3, 2),
        ActivationSpec(name="relu1", activation="relu"),
        caffe_conv("conv2", 32, 5, pad=2),
        ActivationSpec(name="relu2", activation="relu"),
        caffe_pool("pool2", "ave", 3, 2),
        caffe_conv("conv3", 64, 5, pad=2),
        ActivationSpec(name="relu3", activation="relu"),
        caffe_pool("pool3", "ave", 3, 2),
        ConnectedSpec(name="ip1", outputs=64),
        ConnectedSpec(name="ip2", outputs=10),
        AccuracySpec(name="accuracy", phases=frozenset({"test"})),
        SoftmaxLossSpec(name="loss"),
    )
    shapes = infer_shapes(NetSpec("CIFAR10_quick", InputSpec(3, 32, 32), layers))
    by_name = {s.layer.name: s for s in shapes}
    assert by_name["pool1"].output == (32, 16, 16)
    assert by_name["pool2"].output == (32, 8, 8)
    assert by_name["pool3"].output == (64, 4, 4)
    assert by_name["ip1"].inputs == 1024
    assert sum(s.param_count for s in shapes) == 145_578
    train = infer_shapes(NetSpec("q", InputSpec(3, 32, 32), layers), phase="train")
    assert "accuracy" not in {s.layer.name for s in train}


def test_caffe_lenet_parameter_count():
    layers = (
        caffe_conv("conv1", 20, 5),
        caffe_pool("pool1", "max", 2, 2),
        caffe_conv("conv2", 50, 5),
        caffe_pool("pool2", "max", 2, 2),
        ConnectedSpec(name="ip1", outputs=500),
        ActivationSpec(name="relu1", activation="relu"),
        ConnectedSpec(name="ip2", outputs=10),
        SoftmaxLossSpec(name="loss"),
    )
    shapes = infer_shapes(NetSpec("LeNet", InputSpec(1, 28, 28), layers))
    assert [s.output for s in shapes[:4]] == [(20, 24, 24), (20, 12, 12), (50, 8, 8), (50, 4, 4)]
    assert sum(s.param_count for s in shapes) == 431_080
    assert shapes[0].flops == 2 * 20 * 24 * 24 * 25 + 20 * 24 * 24


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding", "expected"),
    [(28, 2, 2, 1, 14), (7, 2, 2, 1, 4), (13, 3, 1, 2, 13), (32, 2, 2, 1, 16)],
)
def test_darknet_maxpool_padding_is_total(size, kernel, stride, padding, expected):
    assert darknet_pool_out(size, kernel, stride, padding) == expected


def test_caffe_pool_clip_rule_only_when_padded():
    # (5 + 2 - 2)/2 = 2.5 → ceil 3 → 4 windows; the 4th starts at 6 >= 5 + 1: dropped.
    assert caffe_pool_out(5, 2, 2, 1, "ceil") == 3
    assert caffe_pool_out(5, 2, 2, 0, "ceil") == 3
    assert caffe_pool_out(32, 3, 2, 0, "floor") == 15


def test_conv_out_with_dilation():
    assert conv_out(10, 3, 1, 0, dilation=2) == 6


def test_darknet_blob_orders_and_multipliers():
    conv = ConvSpec(
        name="0",
        filters=4,
        kernel_h=3,
        kernel_w=3,
        param_order="darknet",
        batch_normalize=True,
        params=(
            ParamMult(1, 0),
            ParamMult(1, 0),
            ParamMult(0, 0),
            ParamMult(0, 0),
            ParamMult(1, 1),
        ),
    )
    blobs = param_blobs(conv, (2, 5, 5))
    assert [b.name for b in blobs] == [
        "biases",
        "scales",
        "rolling_mean",
        "rolling_variance",
        "weights",
    ]
    assert blobs[-1].shape == (4, 2, 3, 3)
    assert [b.learnable for b in blobs] == [True, True, False, False, True]
    fc = ConnectedSpec(name="1", outputs=3, param_order="darknet", batch_normalize=True)
    assert [b.name for b in param_blobs(fc, (4, 2, 2))] == [
        "biases",
        "weights",
        "scales",
        "rolling_mean",
        "rolling_variance",
    ]


def test_flat_layer_before_conv_is_an_error_with_line():
    layers = (
        SoftmaxSpec(name="0", origin=Origin("net.cfg", 7)),
        ConvSpec(name="1", filters=1, kernel_h=1, kernel_w=1, origin=Origin("net.cfg", 9)),
    )
    with pytest.raises(ConfigError) as info:
        infer_shapes(NetSpec("n", InputSpec(1, 4, 4), layers))
    diagnostic = info.value.diagnostics[0]
    assert (diagnostic.file, diagnostic.line) == ("net.cfg", 9)
    assert "image" in diagnostic.message


def test_nonpositive_output_is_an_error():
    with pytest.raises(ConfigError, match="output would be"):
        infer_shapes(NetSpec("n", InputSpec(1, 3, 3), (caffe_conv("c", 2, 5),)))


def test_groups_must_divide():
    layer = ConvSpec(name="g", filters=4, kernel_h=1, kernel_w=1, groups=3)
    with pytest.raises(ConfigError, match="groups"):
        infer_shapes(NetSpec("n", InputSpec(6, 3, 3), (layer,)))
