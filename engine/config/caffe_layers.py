"""Caffe ``LayerParameter`` messages → ``engine.spec`` layer specs, one builder per type.

Each builder reads the layer's ``*_param`` message with Caffe's defaults and ``LayerSetUp``
checks (caffe spec section 7): e.g. pooling's stride defaults to 1 (not the kernel), an unset
filler is constant 0, BatchNorm forces ``lr_mult = 0`` on its three statistics blobs.
Every spec field gets an Origin: the line of the key it came from, or DEFAULT.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from dnupdate.engine.config.caffe_schema import Msg, Reporter
from dnupdate.engine.spec import (
    DEFAULT,
    AccuracySpec,
    ActivationSpec,
    BatchNormSpec,
    CaffeSoftmaxSpec,
    ConcatSpec,
    ConnectedSpec,
    ConvSpec,
    DropoutSpec,
    EltwiseSpec,
    EuclideanLossSpec,
    FillerSpec,
    LayerSpec,
    LRNSpec,
    Origin,
    ParamMult,
    PoolSpec,
    PowerSpec,
    ReshapeSpec,
    ScaleSpec,
    SigmoidCrossEntropyLossSpec,
    SilenceSpec,
    SoftmaxLossSpec,
    SplitSpec,
)

FILLER_TYPES = ("constant", "uniform", "gaussian", "xavier", "msra", "positive_unitball")
VARIANCE_NORMS = {"FAN_IN": "fan_in", "FAN_OUT": "fan_out", "AVERAGE": "average"}
NORMALIZATIONS = {"FULL": "full", "VALID": "valid", "BATCH_SIZE": "batch_size", "NONE": "none"}


@dataclass
class LayerReader:
    """One layer being mapped: collects spec keyword arguments with their origins and reports
    problems prefixed with the layer's name and type."""

    layer: Msg
    phases: frozenset[str]
    reporter: Reporter
    kwargs: dict[str, object] = field(default_factory=dict)
    origins: dict[str, Origin] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The layer's ``name``."""
        return self.layer.get("name")

    @property
    def type(self) -> str:
        """The layer's ``type`` string (after the V1 upgrade)."""
        return self.layer.get("type")

    def error(self, origin: Origin, key: str | None, message: str) -> None:
        """Report an error prefixed with the layer's name and type."""
        self.reporter.error(origin, key, f"layer {self.name!r} ({self.type}): {message}")

    def put(self, spec_field: str, value: object, origin: Origin = DEFAULT) -> None:
        """Set one spec keyword argument and remember where it came from."""
        self.kwargs[spec_field] = value
        self.origins[spec_field] = origin

    def take(self, msg: Msg, key: str, spec_field: str, convert: Callable = lambda v: v):
        """Copy ``msg.key`` (or its proto default) into ``spec_field``; return the raw value."""
        value = msg.get(key)
        self.put(spec_field, convert(value), msg.origin_or_default(key))
        return value

    def take_optional(self, msg: Msg, key: str, spec_field: str) -> None:
        """Copy ``msg.key`` into ``spec_field``, or None when it is unset (no proto default)."""
        self.put(spec_field, msg.get(key) if msg.has(key) else None, msg.origin_or_default(key))

    def param(self, key: str) -> Msg:
        """The layer's ``key`` sub-message (an empty one with defaults when unset)."""
        return self.layer.get(key)

    def make(self, spec_type: type) -> LayerSpec:
        """Build the spec from the collected keyword arguments (with the layer's bottom and
        top blob names)."""
        for key, spec_field in (("bottom", "bottoms"), ("top", "tops")):
            values = tuple(self.layer.get(key))
            self.put(spec_field, values, self.layer.origin_of(key) if values else DEFAULT)
        return spec_type(
            name=self.name, origin=self.layer.origin, phases=self.phases, **self.kwargs
        )


# --------------------------------------------------------------------------------------------
# Shared pieces: fillers, param blocks, kernel geometry
# --------------------------------------------------------------------------------------------


def read_filler(reader: LayerReader, msg: Msg, default: FillerSpec = FillerSpec()) -> FillerSpec:
    """FillerParameter → FillerSpec; an unset filler is ``default`` (constant 0 in Caffe)."""
    if not msg.values:
        return default
    kind = msg.get("type")
    if kind not in FILLER_TYPES:
        reader.error(msg.origin_of("type"), "type", f"Unknown filler name: {kind!r}")
    return FillerSpec(
        type=kind,
        value=msg.get("value"),
        min=msg.get("min"),
        max=msg.get("max"),
        mean=msg.get("mean"),
        std=msg.get("std"),
        sparse=msg.get("sparse"),
        variance_norm=VARIANCE_NORMS[msg.get("variance_norm")],
    )


def take_filler(reader: LayerReader, msg: Msg, key: str, spec_field: str, default=FillerSpec()):
    """Read filler ``msg.key`` into ``spec_field`` (``default`` when the block is absent)."""
    origin = msg.origin_or_default(key)
    reader.put(spec_field, read_filler(reader, msg.get(key), default), origin)


def take_params(reader: LayerReader, blobs: int) -> None:
    """``param { lr_mult decay_mult }`` blocks → one ParamMult per blob (1, 1 when absent).

    More blocks than blobs is fatal in Caffe (``Net::Init``: "Too many params specified").
    """
    blocks = reader.layer.all("param")
    if len(blocks) > blobs:
        reader.error(
            reader.layer.origin_of("param", blobs),
            "param",
            f"too many param blocks: {len(blocks)} given, the layer has {blobs} blob(s)",
        )
    for block in blocks[:blobs]:
        if block.get("name"):
            reader.error(block.origin_of("name"), "name", "shared params are not supported")
    mults = [ParamMult(b.get("lr_mult"), b.get("decay_mult")) for b in blocks[:blobs]]
    mults += [ParamMult()] * (blobs - len(mults))
    origin = reader.layer.origin_of("param") if blocks else DEFAULT
    reader.put("params", tuple(mults), origin)


def _conv_pair(reader: LayerReader, p: Msg, rep: str, h: str, w: str, default: int):
    """Convolution's repeated ``kernel_size``/``stride``/``pad`` (1 or 2 values) or the
    ``_h``/``_w`` pair (both required, not mixed): ``(h, w, origin)``."""
    if p.has(h) or p.has(w):
        if p.has(rep):
            reader.error(p.origin_of(rep), rep, f"give either {rep} or {h}/{w}, not both")
        if not (p.has(h) and p.has(w)):
            reader.error(p.origin_of(h if p.has(h) else w), h, f"{h} and {w} go together")
        return p.get(h), p.get(w), p.origin_of(h if p.has(h) else w)
    values = p.get(rep)
    if len(values) > 2:
        reader.error(p.origin_of(rep, 2), rep, f"{rep} takes 1 or 2 values for a 2-D input")
    if not values:
        return default, default, DEFAULT
    return values[0], values[-1] if len(values) > 1 else values[0], p.origin_of(rep)


def _take_weights_and_bias(reader: LayerReader, p: Msg) -> None:
    """The part Convolution and InnerProduct share: ``bias_term``, ``weight_filler``,
    ``bias_filler`` and the param blocks of their 1 or 2 blobs (Caffe order weights, bias; no
    activation of their own)."""
    bias = reader.take(p, "bias_term", "bias")
    reader.put("param_order", "caffe")
    reader.put("activation", "linear")
    take_filler(reader, p, "weight_filler", "weight_filler")
    take_filler(reader, p, "bias_filler", "bias_filler")
    take_params(reader, 2 if bias else 1)


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------


def build_convolution(reader: LayerReader) -> LayerSpec:
    """``Convolution`` → ConvSpec (Caffe blob order weights, bias; cross-correlation)."""
    p = reader.param("convolution_param")
    if reader.take(p, "num_output", "filters") <= 0:
        reader.error(p.origin_of("num_output"), "num_output", "num_output must be > 0")
    kernel_h, kernel_w, where = _conv_pair(reader, p, "kernel_size", "kernel_h", "kernel_w", 0)
    if kernel_h <= 0 or kernel_w <= 0:
        reader.error(
            where if where != DEFAULT else p.origin,
            "kernel_size",
            "kernel size is required and must be > 0",
        )
    reader.put("kernel_h", kernel_h, where)
    reader.put("kernel_w", kernel_w, where)
    stride_h, stride_w, where = _conv_pair(reader, p, "stride", "stride_h", "stride_w", 1)
    if stride_h <= 0 or stride_w <= 0:
        reader.error(where, "stride", "stride must be > 0")
    reader.put("stride_h", stride_h, where)
    reader.put("stride_w", stride_w, where)
    pad_h, pad_w, where = _conv_pair(reader, p, "pad", "pad_h", "pad_w", 0)
    reader.put("pad_h", pad_h, where)
    reader.put("pad_w", pad_w, where)
    dilations = p.get("dilation") or [1]
    if len(set(dilations)) > 1 or dilations[0] <= 0:
        reader.error(p.origin_of("dilation"), "dilation", "one positive dilation is supported")
    reader.put("dilation", dilations[0], p.origin_or_default("dilation"))
    group = reader.take(p, "group", "groups")
    if group <= 0 or p.get("num_output") % group:
        reader.error(p.origin_of("group"), "group", "num_output must be divisible by group")
    if p.get("axis") != 1:
        reader.error(p.origin_of("axis"), "axis", "only axis 1 (channels) is supported")
    _take_weights_and_bias(reader, p)
    return reader.make(ConvSpec)


def build_inner_product(reader: LayerReader) -> LayerSpec:
    """``InnerProduct`` → ConnectedSpec: ``y = x·Wᵀ + b``, input flattened from axis 1."""
    p = reader.param("inner_product_param")
    if reader.take(p, "num_output", "outputs") <= 0:
        reader.error(p.origin_of("num_output"), "num_output", "num_output must be > 0")
    if p.get("axis") != 1:
        reader.error(p.origin_of("axis"), "axis", "only axis 1 is supported")
    if p.get("transpose"):
        reader.error(p.origin_of("transpose"), "transpose", "transpose: true is not supported")
    _take_weights_and_bias(reader, p)
    return reader.make(ConnectedSpec)


def _pool_pair(reader: LayerReader, p: Msg, one: str, h: str, w: str, required: bool):
    """Pooling's singular ``kernel_size``/``stride``/``pad`` or the ``_h``/``_w`` pair."""
    if p.has(h) or p.has(w):
        if p.has(one) or not (p.has(h) and p.has(w)):
            reader.error(p.origin_of(h if p.has(h) else w), h, f"give {one} OR {h} and {w}")
        return p.get(h), p.get(w), p.origin_of(h if p.has(h) else w)
    if required and not p.has(one):
        reader.error(p.origin, one, f"{one} (or {h} and {w}) is required")
    value = p.get(one)
    return value, value, p.origin_or_default(one)


def build_pooling(reader: LayerReader) -> LayerSpec:
    """``Pooling`` → PoolSpec; MAX or AVE, ``round_mode`` CEIL (default) or FLOOR."""
    p = reader.param("pooling_param")
    method = reader.take(p, "pool", "method", lambda v: {"MAX": "max", "AVE": "ave"}.get(v, v))
    if method == "STOCHASTIC":
        reader.error(p.origin_of("pool"), "pool", "STOCHASTIC pooling is not supported")
    is_global = reader.take(p, "global_pooling", "global_pooling")
    reader.take(p, "round_mode", "size_rule", str.lower)
    names = ("kernel_size", "kernel_h", "kernel_w")
    if is_global and any(p.has(n) for n in names):
        reader.error(
            p.origin_of("kernel_size"),
            "kernel_size",
            "with global_pooling: true the kernel size cannot be given",
        )
    kernel_h, kernel_w, kernel_origin = 1, 1, DEFAULT
    if not is_global:
        kernel_h, kernel_w, kernel_origin = _pool_pair(reader, p, *names, required=True)
        if p.has("kernel_size") or p.has("kernel_h"):
            if kernel_h <= 0 or kernel_w <= 0:
                reader.error(kernel_origin, "kernel_size", "kernel size must be > 0")
            reader.put("kernel_h", kernel_h, kernel_origin)
            reader.put("kernel_w", kernel_w, kernel_origin)
    pad_h, pad_w, pad_origin = _pool_pair(reader, p, "pad", "pad_h", "pad_w", required=False)
    stride_h, stride_w, stride_origin = _pool_pair(
        reader, p, "stride", "stride_h", "stride_w", required=False
    )
    if is_global and (pad_h or pad_w or stride_h != 1 or stride_w != 1):
        reader.error(
            p.origin_of("global_pooling"),
            "global_pooling",
            "with global_pooling: true only pad = 0 and stride = 1 are allowed",
        )
    if stride_h <= 0 or stride_w <= 0:
        reader.error(stride_origin, "stride", "stride must be > 0")
    if not is_global and (pad_h >= kernel_h or pad_w >= kernel_w) and (pad_h or pad_w):
        reader.error(pad_origin, "pad", "pad must be smaller than the kernel")
    for name, value, origin in (
        ("pad_h", pad_h, pad_origin),
        ("pad_w", pad_w, pad_origin),
        ("stride_h", stride_h, stride_origin),
        ("stride_w", stride_w, stride_origin),
    ):
        reader.put(name, value, origin)
    return reader.make(PoolSpec)


def build_relu(reader: LayerReader) -> LayerSpec:
    """``ReLU`` → ``relu`` activation: ``max(x, 0) + negative_slope·min(x, 0)``."""
    reader.put("activation", "relu")
    reader.take(reader.param("relu_param"), "negative_slope", "negative_slope")
    return reader.make(ActivationSpec)


def build_sigmoid(reader: LayerReader) -> LayerSpec:
    """``Sigmoid`` → ``logistic`` (darknet's name for the same function)."""
    reader.put("activation", "logistic")
    return reader.make(ActivationSpec)


def build_tanh(reader: LayerReader) -> LayerSpec:
    """``TanH`` → ``tanh``."""
    reader.put("activation", "tanh")
    return reader.make(ActivationSpec)


def build_dropout(reader: LayerReader) -> LayerSpec:
    """``Dropout`` → inverted dropout, Caffe style (Bernoulli(1 − p) mask, scale 1/(1 − p))."""
    p = reader.param("dropout_param")
    ratio = reader.take(p, "dropout_ratio", "probability")
    if not 0 <= ratio < 1:
        reader.error(p.origin_of("dropout_ratio"), "dropout_ratio", "must be in [0, 1)")
    if not p.get("scale_train"):
        reader.error(
            p.origin_of("scale_train"),
            "scale_train",
            "scale_train: false is not "
            "supported (dnupdate scales at train time, as Caffe does by default)",
        )
    reader.put("style", "caffe")
    return reader.make(DropoutSpec)


def build_batch_norm(reader: LayerReader) -> LayerSpec:
    """``BatchNorm`` → BatchNormSpec, Caffe style (three statistics blobs, no affine part).

    Caffe quirk: ``LayerSetUp`` adds ``param { lr_mult: 0 }`` for each of the 3 blobs that has
    no block (leaving ``decay_mult`` at 1; harmless, the step is scaled by lr 0) and a block
    with nonzero ``lr_mult`` is fatal.
    """
    p = reader.param("batch_norm_param")
    reader.take_optional(p, "use_global_stats", "use_global_stats")
    reader.take(p, "moving_average_fraction", "moving_average_fraction")
    reader.take(p, "eps", "eps")
    reader.put("style", "caffe")
    blocks = reader.layer.all("param")
    for index, block in enumerate(blocks):
        if block.get("lr_mult") != 0:
            reader.error(
                block.origin_of("lr_mult"),
                "lr_mult",
                "Cannot configure batch normalization statistics as layer parameters "
                "(lr_mult must be 0)",
            )
        if index >= 3:
            reader.error(block.origin, "param", "too many param blocks: BatchNorm has 3 blobs")
    mults = [ParamMult(0.0, b.get("decay_mult")) for b in blocks[:3]]
    mults += [ParamMult(0.0, 1.0)] * (3 - len(mults))
    reader.put("params", tuple(mults), reader.layer.origin_of("param") if blocks else DEFAULT)
    return reader.make(BatchNormSpec)


def build_scale(reader: LayerReader) -> LayerSpec:
    """``Scale`` → per-channel ``y = γ·x (+ β)``; γ defaults to constant 1."""
    p = reader.param("scale_param")
    if p.get("axis") != 1 or p.get("num_axes") != 1:
        reader.error(p.origin_of("axis"), "axis", "only axis: 1, num_axes: 1 is supported")
    bias = reader.take(p, "bias_term", "bias_term")
    take_filler(reader, p, "filler", "filler", FillerSpec(type="constant", value=1.0))
    take_filler(reader, p, "bias_filler", "bias_filler")
    take_params(reader, 2 if bias else 1)
    return reader.make(ScaleSpec)


def _normalization(reader: LayerReader, p: Msg) -> None:
    """``normalization`` (default VALID), or the deprecated ``normalize`` when it is unset:
    true → VALID, false → BATCH_SIZE (``LossLayer`` / ``SoftmaxWithLossLayer``)."""
    if p.has("normalization"):
        reader.take(p, "normalization", "normalization", NORMALIZATIONS.get)
    elif p.has("normalize"):
        mode = "valid" if p.get("normalize") else "batch_size"
        reader.put("normalization", mode, p.origin_of("normalize"))
    else:
        reader.put("normalization", "valid")


def build_softmax_loss(reader: LayerReader) -> LayerSpec:
    """``SoftmaxWithLoss`` → ``-log(max(p_label, FLT_MIN)) / normalizer``, loss weight 1."""
    p = reader.param("loss_param")
    _normalization(reader, p)
    reader.take_optional(p, "ignore_label", "ignore_label")
    softmax = reader.param("softmax_param")
    if softmax.get("axis") != 1:
        reader.error(softmax.origin_of("axis"), "axis", "only softmax axis 1 is supported")
    weights = reader.layer.get("loss_weight")
    reader.put(
        "loss_weight",
        weights[0] if weights else 1.0,
        reader.layer.origin_of("loss_weight") if weights else DEFAULT,
    )
    return reader.make(SoftmaxLossSpec)


def build_accuracy(reader: LayerReader) -> LayerSpec:
    """``Accuracy`` → top-k accuracy (ties count against the true class)."""
    p = reader.param("accuracy_param")
    if reader.take(p, "top_k", "top_k") < 1:
        reader.error(p.origin_of("top_k"), "top_k", "top_k must be >= 1")
    if p.get("axis") != 1:
        reader.error(p.origin_of("axis"), "axis", "only axis 1 is supported")
    reader.take_optional(p, "ignore_label", "ignore_label")
    return reader.make(AccuracySpec)


def build_eltwise(reader: LayerReader) -> LayerSpec:
    """``Eltwise`` → SUM (with ``coeff``, one per bottom), PROD or MAX."""
    p = reader.param("eltwise_param")
    operation = reader.take(p, "operation", "operation", str.lower)
    coeffs = p.get("coeff")
    if coeffs and operation != "SUM":
        reader.error(p.origin_of("coeff"), "coeff", "coeff is for operation SUM only")
    if coeffs and len(coeffs) != len(reader.layer.get("bottom")):
        reader.error(p.origin_of("coeff"), "coeff", "give one coeff per bottom")
    reader.put("coeffs", tuple(coeffs), p.origin_or_default("coeff"))
    reader.take(p, "stable_prod_grad", "stable_prod_grad")
    if len(reader.layer.get("bottom")) < 2:
        reader.error(reader.layer.origin_of("bottom"), "bottom", "Eltwise needs 2+ bottoms")
    return reader.make(EltwiseSpec)


def build_concat(reader: LayerReader) -> LayerSpec:
    """``Concat`` → concatenation along ``axis`` (negative counts from the end) or the
    deprecated ``concat_dim`` (uint32: no negative values); both set is an error, as Caffe's
    ``CHECK(!(has_axis() && has_concat_dim()))``. The axis is resolved against the bottoms'
    shapes in ``engine.model.shapes`` (Caffe's ``ConcatLayer::Reshape``)."""
    p = reader.param("concat_param")
    if p.has("axis") and p.has("concat_dim"):
        reader.error(
            p.origin_of("concat_dim"),
            "concat_dim",
            "Either axis or concat_dim should be specified; not both (Caffe's check)",
        )
    key = "concat_dim" if p.has("concat_dim") and not p.has("axis") else "axis"
    reader.put("axis", int(p.get(key)), p.origin_or_default(key))
    reader.put("axis_key", key)
    return reader.make(ConcatSpec)


def build_flatten(reader: LayerReader) -> LayerSpec:
    """``Flatten`` → ``(C·H·W, 1, 1)`` (axis 1 to the end only)."""
    p = reader.param("flatten_param")
    if p.get("axis") != 1 or p.get("end_axis") != -1:
        key = "axis" if p.has("axis") else "end_axis"
        reader.error(p.origin_of(key), key, "only axis: 1, end_axis: -1 is supported")
    return reader.make(ReshapeSpec)


def build_reshape(reader: LayerReader) -> LayerSpec:
    """``Reshape`` → per-image dims (the batch dim must be ``0`` or ``-1``: unchanged)."""
    p = reader.param("reshape_param")
    if p.get("axis") != 0 or p.get("num_axes") != -1:
        key = "axis" if p.has("axis") else "num_axes"
        reader.error(p.origin_of(key), key, "only axis: 0, num_axes: -1 is supported")
    dims = list(p.get("shape").get("dim"))
    where = p.origin_of("shape") if p.has("shape") else reader.layer.origin
    if not dims or dims[0] not in (0, -1) or (dims[0] == -1 and -1 in dims[1:]):
        reader.error(
            where, "shape", "the first dim (the batch) must be 0 or -1, with the rest given"
        )
    if len(dims) < 2 or len(dims) > 4:
        reader.error(where, "shape", "give 2 to 4 dims (N, then up to C, H, W)")
    reader.put("shape", tuple(dims[1:]), where)
    return reader.make(ReshapeSpec)


def build_split(reader: LayerReader) -> LayerSpec:
    """``Split`` → every top a copy of the bottom."""
    return reader.make(SplitSpec)


def build_silence(reader: LayerReader) -> LayerSpec:
    """``Silence`` → a sink."""
    return reader.make(SilenceSpec)


def build_lrn(reader: LayerReader) -> LayerSpec:
    """``LRN`` → ACROSS_CHANNELS (``k + alpha/size·Σx²``) or WITHIN_CHANNEL."""
    p = reader.param("lrn_param")
    size = reader.take(p, "local_size", "local_size")
    if size % 2 == 0 or size <= 0:
        reader.error(p.origin_of("local_size"), "local_size", "LRN only supports odd values")
    reader.take(p, "alpha", "alpha")
    reader.take(p, "beta", "beta")
    reader.take(p, "k", "k")
    regions = {"ACROSS_CHANNELS": "across", "WITHIN_CHANNEL": "within"}
    reader.take(p, "norm_region", "region", regions.get)
    return reader.make(LRNSpec)


def build_power(reader: LayerReader) -> LayerSpec:
    """``Power`` → ``(shift + scale·x)^power``."""
    p = reader.param("power_param")
    for key in ("power", "scale", "shift"):
        reader.take(p, key, key)
    return reader.make(PowerSpec)


def build_softmax(reader: LayerReader) -> LayerSpec:
    """``Softmax`` → softmax over the channels (axis 1)."""
    p = reader.param("softmax_param")
    if p.get("axis") != 1:
        reader.error(p.origin_of("axis"), "axis", "only softmax axis 1 is supported")
    return reader.make(CaffeSoftmaxSpec)


def _loss_weight(reader: LayerReader) -> None:
    weights = reader.layer.get("loss_weight")
    origin = reader.layer.origin_of("loss_weight") if weights else DEFAULT
    reader.put("loss_weight", weights[0] if weights else 1.0, origin)


def build_euclidean_loss(reader: LayerReader) -> LayerSpec:
    """``EuclideanLoss`` → ``1/(2N)·Σ(a − b)²``."""
    _loss_weight(reader)
    return reader.make(EuclideanLossSpec)


def build_sigmoid_ce_loss(reader: LayerReader) -> LayerSpec:
    """``SigmoidCrossEntropyLoss`` → the stable sum over the normalizer (Caffe quirk:
    BATCH_SIZE when neither ``normalization`` nor ``normalize`` is given)."""
    p = reader.param("loss_param")
    if p.has("normalization"):
        reader.take(p, "normalization", "normalization", NORMALIZATIONS.get)
    elif p.has("normalize"):
        mode = "valid" if p.get("normalize") else "batch_size"
        reader.put("normalization", mode, p.origin_of("normalize"))
    else:
        reader.put("normalization", "batch_size")
    reader.take_optional(p, "ignore_label", "ignore_label")
    _loss_weight(reader)
    return reader.make(SigmoidCrossEntropyLossSpec)


BUILDERS: dict[str, Callable[[LayerReader], LayerSpec]] = {
    "Convolution": build_convolution,
    "InnerProduct": build_inner_product,
    "Pooling": build_pooling,
    "ReLU": build_relu,
    "Sigmoid": build_sigmoid,
    "TanH": build_tanh,
    "Dropout": build_dropout,
    "BatchNorm": build_batch_norm,
    "Scale": build_scale,
    "SoftmaxWithLoss": build_softmax_loss,
    "Accuracy": build_accuracy,
    "Eltwise": build_eltwise,
    "Concat": build_concat,
    "Flatten": build_flatten,
    "Reshape": build_reshape,
    "Split": build_split,
    "Silence": build_silence,
    "LRN": build_lrn,
    "Power": build_power,
    "Softmax": build_softmax,
    "EuclideanLoss": build_euclidean_loss,
    "SigmoidCrossEntropyLoss": build_sigmoid_ce_loss,
}
LOSS_TYPES = frozenset({"SoftmaxWithLoss", "Accuracy"})  # read the data layer's label
#: layers with no top (or only a loss top) that no later layer reads
SINK_TYPES = frozenset({*LOSS_TYPES, "Silence", "EuclideanLoss", "SigmoidCrossEntropyLoss"})
DATA_TYPES = frozenset({"Data", "Input", "HDF5Data"})

# Every layer type Caffe registers (layer_factory + REGISTER_LAYER_CLASS), for telling an
# unsupported type from a misspelt one.
CAFFE_LAYER_TYPES = frozenset(
    {
        *BUILDERS,
        *DATA_TYPES,
        "AbsVal", "ArgMax", "BatchReindex", "Bias", "BNLL", "Clip", "Concat",
        "ContrastiveLoss", "Crop", "Deconvolution", "DummyData", "Eltwise", "ELU", "Embed",
        "EuclideanLoss", "Exp", "Filter", "Flatten", "HDF5Output", "HingeLoss", "Im2col",
        "ImageData", "InfogainLoss", "Log", "LRN", "LSTM", "LSTMUnit", "MemoryData",
        "MultinomialLogisticLoss", "MVN", "Parameter", "Power", "PReLU", "Python",
        "Recurrent", "Reduction", "Reshape", "RNN", "SigmoidCrossEntropyLoss", "Silence",
        "Slice", "Softmax", "Split", "SPP", "Swish", "Threshold", "Tile", "WindowData",
    }
)  # fmt: skip
