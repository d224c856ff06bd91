"""Legacy net formats upgraded to ``LayerParameter`` messages, as ``upgrade_proto.cpp`` does.

* V1 nets (``layers { type: CONVOLUTION ... }``, ``UpgradeV1Net``): the enum type becomes the
  layer type string, ``blobs_lr``/``weight_decay`` become ``param { lr_mult decay_mult }``, and
  the deprecated ``data_param { scale mean_file crop_size mirror }`` move into
  ``transform_param`` (``UpgradeNetDataTransformation``).
* Deprecated net inputs (``input: "data"`` with ``input_dim``/``input_shape``,
  ``UpgradeNetInput``) become an ``Input`` layer.
"""

from __future__ import annotations

from dnupdate.engine.config.caffe_schema import Msg, Reporter
from dnupdate.engine.spec import Origin

# upgrade_proto.cpp: UpgradeV1LayerType.
V1_TYPE_NAMES = {
    "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution", "DATA": "Data", "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise",
    "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice",
    "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}  # fmt: skip

_COPIED = ("name", "bottom", "top", "include", "exclude", "loss_weight")
_DATA_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


def _copy(source: Msg, target: Msg, name: str, as_name: str | None = None) -> None:
    for index, value in enumerate(source.all(name)):
        target.add(as_name or name, value, source.origin_of(name, index))


def _v1_params(v1: Msg, layer: Msg) -> None:
    """``param: "name"``, ``blobs_lr`` and ``weight_decay`` → one ParamSpec per blob."""
    names, rates, decays = v1.all("param"), v1.all("blobs_lr"), v1.all("weight_decay")
    for index in range(max(len(names), len(rates), len(decays))):
        key = "blobs_lr" if index < len(rates) else "weight_decay"
        origin = v1.origin_of(key, index) if key in v1.values else v1.origin_of("param", index)
        spec = Msg("ParamSpec", origin)
        if index < len(names):
            spec.add("name", names[index], v1.origin_of("param", index))
        if index < len(rates):
            spec.add("lr_mult", rates[index], v1.origin_of("blobs_lr", index))
        if index < len(decays):
            spec.add("decay_mult", decays[index], v1.origin_of("weight_decay", index))
        layer.add("param", spec, origin)


def _v1_data_transform(layer: Msg) -> None:
    """V1 data layers kept preprocessing in ``data_param``; it moves to ``transform_param``,
    replacing a value already there (``UpgradeNetDataTransformation`` uses ``set_*``)."""
    if not layer.has("data_param"):
        return
    data = layer.get("data_param")
    moved = [name for name in _DATA_TRANSFORM_FIELDS if data.has(name)]
    if not moved:
        return
    transform = layer.get("transform_param")
    if not layer.has("transform_param"):
        layer.add("transform_param", transform, data.origin)
    for name in moved:
        transform.set(name, data.all(name), data.origin_of(name))
        del data.values[name], data.origins[name]


def upgrade_v1_layer(v1: Msg, reporter: Reporter) -> Msg | None:
    """One ``V1LayerParameter`` → an equivalent ``LayerParameter`` (None if it cannot be)."""
    if v1.has("layer"):
        message = "V0 nets (layers { layer { } }) are not supported; upgrade the net first"
        reporter.error(v1.origin_of("layer"), "layer", message)
        return None
    layer = Msg("LayerParameter", v1.origin)
    for name in _COPIED:
        _copy(v1, layer, name)
    enum_name = v1.get("type")
    if enum_name not in V1_TYPE_NAMES:
        reporter.error(v1.origin_of("type"), "type", f"V1 layer type {enum_name} has no upgrade")
        return None
    layer.add("type", V1_TYPE_NAMES[enum_name], v1.origin_of("type"))
    _v1_params(v1, layer)
    for name in v1.values:
        if name.endswith("_param"):
            _copy(v1, layer, name)
    if enum_name == "DATA":
        _v1_data_transform(layer)
    return layer


def input_layer(net: Msg, reporter: Reporter) -> Msg | None:
    """Deprecated ``input``/``input_dim``/``input_shape`` → an ``Input`` layer, or None."""
    if not net.has("input"):
        if net.has("input_dim") or net.has("input_shape"):
            reporter.error(net.origin_of("input_dim"), "input_dim", "input_dim without input")
        return None
    tops, dims, shapes = net.all("input"), net.all("input_dim"), net.all("input_shape")
    origin: Origin = net.origin_of("input")
    layer = Msg("LayerParameter", origin)
    layer.add("name", "input", origin)
    layer.add("type", "Input", origin)
    param = Msg("InputParameter", origin)
    if dims:
        if len(dims) != 4 * len(tops):
            reporter.error(
                net.origin_of("input_dim"), "input_dim", "give 4 input_dim values per input"
            )
            return None
        for index in range(len(tops)):
            shape = Msg("BlobShape", net.origin_of("input_dim", 4 * index))
            shape.set("dim", dims[4 * index : 4 * index + 4], shape.origin)
            param.add("shape", shape, shape.origin)
    elif len(shapes) == len(tops):
        for index, shape in enumerate(shapes):
            param.add("shape", shape, net.origin_of("input_shape", index))
    else:
        reporter.error(origin, "input", "give one input_shape (or 4 input_dim) per input")
        return None
    for index, top in enumerate(tops):
        layer.add("top", top, net.origin_of("input", index))
    layer.add("input_param", param, origin)
    return layer


def net_layers(net: Msg, reporter: Reporter) -> list[Msg]:
    """All layers of a NetParameter as ``LayerParameter`` messages, legacy forms upgraded."""
    if net.has("layer") and net.has("layers"):
        reporter.error(
            net.origin_of("layers"),
            "layers",
            "the net has both 'layer' and legacy 'layers' fields; Caffe refuses to upgrade it",
        )
        return []
    layers = list(net.all("layer"))
    if net.has("layers"):
        reporter.warn(net.origin_of("layers"), "layers", "legacy V1 net (layers { }) upgraded")
        layers = [u for v1 in net.all("layers") if (u := upgrade_v1_layer(v1, reporter))]
    inputs = input_layer(net, reporter)
    return ([inputs] if inputs is not None else []) + layers
