"""darknet layer sections → :mod:`engine.spec` layer specs (``parser.c:parse_*``, pjreddie
61c9d02e), with darknet's keys and defaults and the shape rules the parser itself applies.

Supported (the layers a classifier uses): ``[convolutional]``/``[conv]``, ``[connected]``/
``[conn]``, ``[maxpool]``/``[max]``, ``[avgpool]``/``[avg]``, ``[dropout]``,
``[softmax]``/``[soft]``, ``[cost]``, ``[batchnorm]``, ``[reorg]``, ``[crop]``, and the graph
layers ``[shortcut]`` and ``[route]``, which read earlier layers by index (``from=``,
``layers=``: negative values count back from the layer itself, others are absolute, as
``parse_shortcut``/``parse_route`` resolve them). Every layer also reads the common keys
``truth``, ``onlyforward``, ``stopbackward``, ``dontsave``, ``dontload``, ``numload``,
``dontloadscales``, ``learning_rate`` (a multiplier of the net rate, default 1) and ``smooth``.

Shapes are tracked only as far as the parser needs them (darknet's ``size_params``): the next
layer receives the previous ``out_h, out_w, out_c`` and ``outputs``; softmax and cost set no
``out_*``, so nothing image-shaped may follow them ("Layer before X layer must output image").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dnupdate.engine.config.darknet_options import OptionTable
from dnupdate.engine.config.darknet_values import c_atoi
from dnupdate.engine.model.shapes import c_div, conv_out, darknet_pool_out, shortcut_geometry
from dnupdate.engine.spec import (
    BatchNormSpec,
    ConnectedSpec,
    ConvSpec,
    CostSpec,
    CropSpec,
    DropoutSpec,
    FillerSpec,
    LayerSpec,
    Origin,
    ParamMult,
    PoolSpec,
    ReorgSpec,
    RouteSpec,
    ShortcutSpec,
    SoftmaxSpec,
)

ACTIVATIONS = (
    "logistic", "loggy", "relu", "elu", "selu", "relie", "plse", "hardtan", "lhtan",
    "linear", "ramp", "leaky", "tanh", "stair",
)  # fmt: skip
COST_TYPES = ("seg", "sse", "masked", "smooth", "L1", "wgan")

SECTION_ALIASES = {
    "convolutional": "convolutional",
    "conv": "convolutional",
    "connected": "connected",
    "conn": "connected",
    "maxpool": "maxpool",
    "max": "maxpool",
    "avgpool": "avgpool",
    "avg": "avgpool",
    "dropout": "dropout",
    "softmax": "softmax",
    "soft": "softmax",
    "cost": "cost",
    "batchnorm": "batchnorm",
    "shortcut": "shortcut",
    "route": "route",
    "reorg": "reorg",
    "crop": "crop",
}
SUPPORTED_SECTIONS = (
    "[convolutional]", "[connected]", "[maxpool]", "[avgpool]", "[dropout]", "[softmax]",
    "[cost]", "[batchnorm]", "[shortcut]", "[route]", "[reorg]", "[crop]",
)  # fmt: skip
# Section types darknet's string_to_layer_type knows that dnupdate does not train.
UNSUPPORTED_SECTIONS = frozenset(
    {
        "detection", "region", "yolo", "iseg", "local", "deconv",
        "deconvolutional", "activation", "logistic", "l2norm", "crnn", "gru", "lstm", "rnn",
        "lrn", "normalization", "upsample",
    }
)  # fmt: skip
NET_SECTIONS = frozenset({"net", "network"})


@dataclass(frozen=True)
class Shape:
    """What a layer hands the next one: ``out_h, out_w, out_c`` and ``outputs``."""

    h: int
    w: int
    c: int
    outputs: int

    @property
    def is_image(self) -> bool:
        return self.h > 0 and self.w > 0 and self.c > 0

    @staticmethod
    def flat(outputs: int) -> Shape:
        """A layer that sets no ``out_*`` (softmax, cost, or an ``inputs=``-only net)."""
        return Shape(0, 0, 0, outputs)


@dataclass
class LayerContext:
    """One layer section being parsed: its index, options and the incoming shape.

    ``earlier``: the output shape of every earlier layer section by index (None where that
    section could not be built), for the layers that read earlier layers by index."""

    index: int
    section_name: str
    table: OptionTable
    shape: Shape
    previous: str | None
    pad_key: str = "padding"
    earlier: list[Shape | None] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.index)

    @property
    def origin(self) -> Origin:
        return Origin(self.table.path, self.table.section.line)

    def section_error(self, message: str, key: str | None = None) -> None:
        """An error at the section's line, under ``key`` (default: the section's name)."""
        key = key or self.section_name.strip("[]")
        self.table.sink.error(self.table.path, self.table.section.line, key, message)

    def section_warning(self, message: str, key: str | None = None) -> None:
        key = key or self.section_name.strip("[]")
        self.table.sink.warning(self.table.path, self.table.section.line, key, message)

    def require_image(self) -> bool:
        """darknet: ``if(!(h && w && c)) error("Layer before X layer must output image.")``."""
        if self.shape.is_image:
            return True
        before = f"[{self.previous}]" if self.previous else "[net] (inputs= only)"
        self.section_error(
            f"Layer before {self.section_name} layer must output image: {before} gives "
            f"h={self.shape.h} w={self.shape.w} c={self.shape.c}"
        )
        return False

    def positive(self, key: str, value: int) -> bool:
        """``value >= 1``, else an error on ``key``."""
        return self._at_least(key, value, 1)

    def non_negative(self, key: str, value: int) -> bool:
        """``value >= 0``, else an error on ``key``."""
        return self._at_least(key, value, 0)

    def _at_least(self, key: str, value: int, bound: int) -> bool:
        if value >= bound:
            return True
        self.table.error(key, f"{key} must be >= {bound}, got {value}")
        return False


@dataclass
class CommonKeys:
    """The keys every layer reads after its own (``parse_network_cfg``)."""

    stop_backward: bool
    dontsave: bool
    dontload: bool
    lr_scale: float


def read_activation(ctx: LayerContext, default: str = "logistic") -> str:
    """``get_activation``: exact names; unknown → relu with darknet's message."""
    name = ctx.table.get_str("activation", default)
    assert name is not None
    if name in ACTIVATIONS:
        return name
    ctx.table.warning(
        "activation",
        f"unknown activation '{name}': darknet says \"Couldn't find activation function "
        f'{name}, going with ReLU" and so do we',
    )
    return "relu"


def warn_if_set(ctx: LayerContext, key: str, value: float, default: float, why: str) -> None:
    """Warn about a key darknet reads but dnupdate does not apply, when not at its default."""
    if value != default:
        ctx.table.warning(key, f"{key}={value:g} is ignored by dnupdate: {why}")


def read_common(ctx: LayerContext) -> CommonKeys:
    """``truth``, ``onlyforward``, ``stopbackward``, ``dontsave``, ``dontload``, ``numload``,
    ``dontloadscales``, ``learning_rate`` (multiplier, default 1), ``smooth``."""
    table = ctx.table
    warn_if_set(ctx, "truth", table.get_int("truth", 0), 0, "not used by classifiers")
    warn_if_set(ctx, "onlyforward", table.get_int("onlyforward", 0), 0, "unused on the CPU")
    common = CommonKeys(
        stop_backward=table.get_flag("stopbackward"),
        dontsave=table.get_flag("dontsave"),
        dontload=table.get_flag("dontload"),
        lr_scale=table.get_float("learning_rate", 1.0),
    )
    warn_if_set(ctx, "numload", table.get_int("numload", 0), 0, "affects .weights loading")
    warn_if_set(
        ctx, "dontloadscales", table.get_int("dontloadscales", 0), 0, "affects .weights loading"
    )
    warn_if_set(ctx, "smooth", table.get_float("smooth", 0.0), 0.0, "GPU only")
    return common


def spec_fields(ctx: LayerContext, common: CommonKeys) -> dict[str, Any]:
    """The fields every layer spec takes from its section: name (the layer index, as darknet
    numbers layers), origin, and the common ``stopbackward``/``dontsave``/``dontload`` keys."""
    return {
        "name": ctx.name,
        "origin": ctx.origin,
        "stop_backward": common.stop_backward,
        "dontsave": common.dontsave,
        "dontload": common.dontload,
    }


def batchnorm_params(lr: float) -> tuple[ParamMult, ...]:
    """darknet BN blobs: scales (learned, never decayed), rolling mean/variance (not learned)."""
    return (ParamMult(lr, 0.0), ParamMult(0.0, 0.0), ParamMult(0.0, 0.0))


def parse_convolutional(ctx: LayerContext, common: CommonKeys) -> tuple[LayerSpec, Shape] | None:
    """``parse_convolutional``: filters 1, size 1, stride 1, pad 0, padding 0, groups 1,
    activation logistic, batch_normalize 0; ``pad`` nonzero ⇒ padding = size/2."""
    t = ctx.table
    filters, size, stride = t.get_int("filters", 1), t.get_int("size", 1), t.get_int("stride", 1)
    pad, padding, groups = t.get_int("pad", 0), t.get_int("padding", 0), t.get_int("groups", 1)
    activation = read_activation(ctx)
    batch_normalize = t.get_flag("batch_normalize")
    for key in ("binary", "xnor"):
        if t.get_int(key, 0):
            t.error(key, f"{key}=1 (XNOR / binary weights) is not supported by dnupdate")
    warn_if_set(ctx, "flipped", t.get_int("flipped", 0), 0, "affects .weights loading")
    warn_if_set(ctx, "dot", t.get_float("dot", 0.0), 0.0, "unused on the CPU training path")
    if pad:
        ctx.pad_key = "pad"
        if t.has("padding") and padding != c_div(size, 2):
            t.warning("padding", f"padding={padding} is overridden by pad={pad} (size/2)")
        padding = c_div(size, 2)  # darknet quirk: pad=1 means padding = size/2, always
    valid = all(ctx.positive(k, v) for k, v in (("filters", filters), ("size", size)))
    valid = ctx.positive("stride", stride) and ctx.positive("groups", groups) and valid
    valid = ctx.non_negative("padding", padding) and valid
    if not ctx.require_image() or not valid:
        return None
    h, w, c = ctx.shape.h, ctx.shape.w, ctx.shape.c
    if c % groups or filters % groups:
        t.error("groups", f"groups={groups} must divide channels ({c}) and filters ({filters})")
        return None
    if min(h, w) + 2 * padding < size:
        t.error("size", f"size={size} is larger than the padded input {h}x{w} (+{padding})")
        return None
    if size == 1 and (stride > 1 or padding > 0):
        t.warning(
            "size",
            "darknet quirk: the CPU 1x1 convolution skips im2col and so ignores stride and "
            "padding (its output is wrong in darknet); dnupdate reproduces it",
        )
    lr = common.lr_scale
    params = (ParamMult(lr, 0.0), *(batchnorm_params(lr) if batch_normalize else ()))
    spec = ConvSpec(
        **spec_fields(ctx, common),
        param_order="darknet",
        filters=filters,
        kernel_h=size,
        kernel_w=size,
        stride_h=stride,
        stride_w=stride,
        pad_h=padding,
        pad_w=padding,
        groups=groups,
        bias=True,
        batch_normalize=batch_normalize,
        activation=activation,
        weight_filler=FillerSpec(type="darknet_conv"),
        bias_filler=FillerSpec(),
        params=(*params, ParamMult(lr, 1.0)),
        darknet_1x1_shortcut=size == 1,
    )
    out_h, out_w = conv_out(h, size, stride, padding), conv_out(w, size, stride, padding)
    return spec, Shape(out_h, out_w, filters, out_h * out_w * filters)


def parse_connected(ctx: LayerContext, common: CommonKeys) -> tuple[LayerSpec, Shape] | None:
    """``parse_connected``: output 1, activation logistic, batch_normalize 0."""
    t = ctx.table
    outputs = t.get_int("output", 1)
    activation = read_activation(ctx)
    batch_normalize = t.get_flag("batch_normalize")
    if not ctx.positive("output", outputs):
        return None
    if ctx.shape.outputs <= 0:
        ctx.section_error("the layer before [connected] has no outputs")
        return None
    lr = common.lr_scale
    spec = ConnectedSpec(
        **spec_fields(ctx, common),
        param_order="darknet",
        outputs=outputs,
        batch_normalize=batch_normalize,
        activation=activation,
        weight_filler=FillerSpec(type="darknet_connected"),
        params=(
            ParamMult(lr, 0.0),
            ParamMult(lr, 1.0),
            *(batchnorm_params(lr) if batch_normalize else ()),
        ),
    )
    return spec, Shape(1, 1, outputs, outputs)


def parse_maxpool(ctx: LayerContext, common: CommonKeys) -> tuple[LayerSpec, Shape] | None:
    """``parse_maxpool``: stride 1, size = stride, padding = size − 1 (TOTAL padding);
    ``out = (in + padding − size)/stride + 1``."""
    t = ctx.table
    stride = t.get_int("stride", 1)
    size = t.get_int("size", stride)
    padding = t.get_int("padding", size - 1)
    valid = ctx.positive("stride", stride) and ctx.positive("size", size)
    valid = ctx.non_negative("padding", padding) and valid
    if not ctx.require_image() or not valid:
        return None
    h, w = ctx.shape.h, ctx.shape.w
    if min(h, w) + padding < size:
        t.error("size", f"size={size} is larger than the input {h}x{w} (+{padding} padding)")
        return None
    spec = PoolSpec(
        **spec_fields(ctx, common),
        method="max",
        kernel_h=size,
        kernel_w=size,
        stride_h=stride,
        stride_w=stride,
        pad_h=padding,
        pad_w=padding,
        size_rule="darknet",
    )
    out_h = darknet_pool_out(h, size, stride, padding)
    out_w = darknet_pool_out(w, size, stride, padding)
    return spec, Shape(out_h, out_w, ctx.shape.c, out_h * out_w * ctx.shape.c)


def parse_avgpool(ctx: LayerContext, common: CommonKeys) -> tuple[LayerSpec, Shape] | None:
    """``parse_avgpool``: no keys; global average over h·w, output 1×1×c."""
    if not ctx.require_image():
        return None
    spec = PoolSpec(
        **spec_fields(ctx, common),
        method="ave",
        global_pooling=True,
        size_rule="floor",
    )
    return spec, Shape(1, 1, ctx.shape.c, ctx.shape.c)


def parse_dropout(ctx: LayerContext, common: CommonKeys) -> tuple[LayerSpec, Shape] | None:
    """``parse_dropout``: probability .5 (AlexeyAB: .2); in place on the previous layer."""
    t = ctx.table
    probability = t.get_float("probability", 0.5)
    if not t.has("probability"):
        t.warning("probability", "probability not set: pjreddie's default .5 is used "
                  "(AlexeyAB/darknet's default is .2)")  # fmt: skip
    if ctx.previous is None:
        ctx.section_error("[dropout] cannot be the first layer: darknet applies it in place "
                          "to the previous layer's output")  # fmt: skip
        return None
    if not 0.0 <= probability < 1.0:
        t.error("probability", f"probability must be in [0, 1), got {probability:g}")
        return None
    spec = DropoutSpec(
        **spec_fields(ctx, common),
        probability=probability,
        style="darknet",
    )
    return spec, ctx.shape


def parse_softmax(ctx: LayerContext, common: CommonKeys) -> tuple[LayerSpec, Shape] | None:
    """``parse_softmax``: groups 1, temperature 1, tree (unsupported), spatial (GPU), noloss 0."""
    t = ctx.table
    groups = t.get_int("groups", 1)
    temperature = t.get_float("temperature", 1.0)
    tree = t.get_str("tree", None)
    warn_if_set(ctx, "spatial", t.get_float("spatial", 0.0), 0.0, "GPU only")
    noloss = t.get_flag("noloss")
    if tree is not None:
        t.error("tree", "tree= (hierarchical softmax) is not supported by dnupdate")
        return None
    if not ctx.positive("groups", groups):
        return None
    if temperature == 0.0:
        t.error("temperature", "temperature must not be 0")
        return None
    inputs = ctx.shape.outputs
    if inputs % groups:
        t.error("groups", f"groups={groups} does not divide the {inputs} inputs")
        return None
    spec = SoftmaxSpec(
        **spec_fields(ctx, common),
        groups=groups,
        temperature=temperature,
        noloss=noloss,
    )
    return spec, Shape.flat(inputs)


def parse_cost(ctx: LayerContext, common: CommonKeys) -> tuple[LayerSpec, Shape] | None:
    """``parse_cost``: type sse (unknown → sse), scale 1; ratio/noobj/thresh are GPU only."""
    t = ctx.table
    cost_type = t.get_str("type", "sse")
    assert cost_type is not None
    if cost_type not in COST_TYPES:
        t.warning("type", f"unknown cost type '{cost_type}': darknet says \"Couldn't find cost "
                  f'type {cost_type}, going with SSE" and so do we')  # fmt: skip
        cost_type = "sse"
    elif cost_type in ("seg", "wgan"):
        t.warning("type", f"type={cost_type}: darknet's CPU path computes L2 (sse) for it")
        cost_type = "sse"
    scale = t.get_float("scale", 1.0)
    warn_if_set(ctx, "ratio", t.get_float("ratio", 0.0), 0.0, "GPU only")
    warn_if_set(ctx, "noobj", t.get_float("noobj", 1.0), 1.0, "GPU only")
    warn_if_set(ctx, "thresh", t.get_float("thresh", 0.0), 0.0, "GPU only")
    spec = CostSpec(
        **spec_fields(ctx, common),
        cost_type=cost_type,
        scale=scale,
    )
    return spec, Shape.flat(ctx.shape.outputs)


def parse_batchnorm(ctx: LayerContext, common: CommonKeys) -> tuple[LayerSpec, Shape] | None:
    """``parse_batchnorm``: no keys; per-channel batch norm of the previous layer's image.

    darknet quirk: pjreddie's CPU path cannot run a standalone ``[batchnorm]`` (its forward
    writes through unallocated buffers) and never updates its scales and biases."""
    if not ctx.require_image():
        return None
    ctx.section_warning(
        "darknet quirk: pjreddie darknet's CPU path cannot run a standalone [batchnorm] "
        "(forward writes through NULL) and never updates its scales/biases; dnupdate's "
        "behaviour for it has no darknet reference"
    )
    spec = BatchNormSpec(
        **spec_fields(ctx, common),
        style="darknet",
    )
    return spec, ctx.shape


def resolve_index(ctx: LayerContext, key: str, text: str) -> int | None:
    """One darknet layer reference: ``atoi(text)``, plus the layer's own index when negative
    (``if(index < 0) index = params.index + index``). It must name a built earlier layer
    (darknet reads whatever memory an out-of-range index points at)."""
    number, rest = c_atoi(text)
    if number is None:
        ctx.table.error(key, f"{key}: '{text}' is not a layer index")
        return None
    if rest:
        ctx.table.warning(key, f"{key}: '{text}' reads as {number} (atoi ignores '{rest}')")
    index = ctx.index + number if number < 0 else number
    if not 0 <= index < ctx.index:
        ctx.table.error(
            key,
            f"{key}={number} points at layer {index}, but layer {ctx.index} can only read "
            f"layers 0..{ctx.index - 1}",
        )
        return None
    return index


def _earlier(ctx: LayerContext, index: int) -> Shape | None:
    return ctx.earlier[index] if index < len(ctx.earlier) else None


def parse_shortcut(ctx: LayerContext, common: CommonKeys) -> tuple[LayerSpec, Shape] | None:
    """``parse_shortcut``: ``from`` (required), activation linear, alpha 1, beta 1. Output:
    the previous layer's shape; ``from`` may differ in size by darknet's stride/sample rule
    (the smaller channel count is added)."""
    t = ctx.table
    text = t.get_str("from", None)
    activation = read_activation(ctx, "linear")
    alpha, beta = t.get_float("alpha", 1.0), t.get_float("beta", 1.0)
    if not _unweighted_shortcut(ctx):
        return None
    if text is None:
        ctx.section_error("[shortcut] needs from= (darknet crashes without it)", "from")
        return None
    if "," in text:  # AlexeyAB: from=-2,-3 sums several layers; pjreddie's atoi reads one
        first, _, rest = text.partition(",")
        t.warning(
            "from",
            f"from={text}: AlexeyAB's multi-input shortcut is not simulated: only layer "
            f"{first.strip()} is added, as pjreddie's darknet reads it (atoi ignores ',{rest}')",
        )
        text = first
    index = resolve_index(ctx, "from", text)
    if index is None or not ctx.require_image():
        return None
    source = _earlier(ctx, index)
    if source is None:
        return None  # the source layer's own error is reported
    if not source.is_image:
        t.error("from", f"from={text}: layer {index} does not output an image")
        return None
    shape = ctx.shape
    if shortcut_geometry((source.c, source.h, source.w), (shape.c, shape.h, shape.w)) is None:
        t.error(
            "from",
            f"from={text}: layer {index} ({source.w}x{source.h}x{source.c}) and the previous "
            f"layer ({shape.w}x{shape.h}x{shape.c}) differ in width and height by different "
            "ratios (darknet asserts stride == h1/h2)",
        )
        return None
    spec = ShortcutSpec(
        **spec_fields(ctx, common),
        source=str(index),
        alpha=alpha,
        beta=beta,
        activation=activation,
    )
    return spec, shape


#: AlexeyAB's ``weights_type`` values (``parse_shortcut``): ``per_layer`` is ``per_feature``
WEIGHTED_SHORTCUT_TYPES = frozenset({"per_feature", "per_layer", "per_channel"})
WEIGHTS_NORMALIZATIONS = frozenset({"none", "relu", "avg_relu", "softmax"})


def _unweighted_shortcut(ctx: LayerContext) -> bool:
    """AlexeyAB's ``weights_type``/``weights_normalization`` on a ``[shortcut]`` (pjreddie's
    darknet has neither). ``weights_type=none`` (AlexeyAB's default) is the plain sum. A
    weighted shortcut (``per_feature``/``per_layer``/``per_channel``) learns per-input weights
    (updated in training, stored in ``.weights``, normalised by relu/softmax), which is not
    simulated: an error, since adding the inputs unweighted would change the results silently.
    ``weights_normalization`` alone does nothing in AlexeyAB (it acts on the weights): a
    warning. False when the layer cannot be built."""
    t = ctx.table
    kind = t.get_str("weights_type", "none")
    norm = t.get_str("weights_normalization", None)
    if kind not in WEIGHTED_SHORTCUT_TYPES | {"none"}:
        t.error("weights_type", f"weights_type={kind}: AlexeyAB accepts none, per_feature, "
                "per_layer or per_channel")  # fmt: skip
        return False
    if kind != "none" and norm is not None and norm not in WEIGHTS_NORMALIZATIONS:
        t.error("weights_normalization", f"weights_normalization={norm}: AlexeyAB accepts "
                "none, relu, avg_relu or softmax")  # fmt: skip
        return False
    if kind != "none":
        t.error(
            "weights_type",
            f"weights_type={kind}: AlexeyAB's weighted shortcut is not simulated (its learned "
            "per-input weights, normalised by weights_normalization and stored in .weights, "
            "would change the results; dnupdate would add the inputs unweighted); use "
            "weights_type=none for the plain sum",
        )
        return False
    if norm not in (None, "none"):
        # AlexeyAB quirk: parse_shortcut refuses an unknown weights_normalization only when
        # weights_type is not none (its else-branch tests weights_type_str): any value passes
        unknown = "" if norm in WEIGHTS_NORMALIZATIONS else " (not a name AlexeyAB knows)"
        t.warning(
            "weights_normalization",
            f"weights_normalization={norm}{unknown} is ignored: AlexeyAB's weighted shortcut is "
            "not simulated and without weights_type there are no weights to normalise: the "
            "inputs are added unweighted",
        )
    return True


def _route_groups(ctx: LayerContext, shapes: list[Shape]) -> tuple[int, int] | None:
    """AlexeyAB's ``groups`` (1) and ``group_id`` (0): each source gives its ``group_id``-th
    of ``groups`` equal parts (``part = input_size/groups``); its ``stream``/``wait_stream``
    (GPU scheduling, no effect on the values) are read quietly. Parts that do not divide, or a
    ``group_id`` outside ``0..groups-1``, would make AlexeyAB read out of bounds or leave
    output values unset: errors. None when invalid."""
    t = ctx.table
    groups, group_id = t.get_int("groups", 1), t.get_int("group_id", 0)
    for key in ("stream", "wait_stream"):  # AlexeyAB: which CUDA stream runs it; no effect
        t.get_int(key, -1)
    if not ctx.positive("groups", groups):
        return None
    if not 0 <= group_id < groups:
        t.error("group_id", f"group_id={group_id} must be in 0..{groups - 1} (groups={groups})")
        return None
    if any(shape.outputs % groups or shape.c % groups for shape in shapes):
        sizes = ", ".join(f"{s.w}x{s.h}x{s.c}" if s.is_image else str(s.outputs) for s in shapes)
        t.error("groups", f"groups={groups}: every source must split into {groups} equal "
                f"channel groups ({sizes})")  # fmt: skip
        return None
    return groups, group_id


def parse_route(ctx: LayerContext, common: CommonKeys) -> tuple[LayerSpec, Shape] | None:
    """``parse_route``: ``layers`` (required), a comma list of indices. Output: the sources'
    outputs end to end; ``out_c`` adds up when every source has the first one's
    ``out_w``/``out_h``, else ``out_h = out_w = out_c = 0`` (a flat vector). AlexeyAB's
    ``groups``/``group_id`` (:func:`_route_groups`) divide ``out_c`` and ``outputs``."""
    text = ctx.table.get_str("layers", None)
    if text is None:
        ctx.section_error(
            '[route] needs layers= (darknet: "Route Layer must specify input layers")', "layers"
        )
        return None
    indices = [resolve_index(ctx, "layers", part) for part in text.split(",")]
    if any(index is None for index in indices):
        return None
    shapes = [_earlier(ctx, index) for index in indices if index is not None]
    if any(shape is None for shape in shapes):
        return None
    known = [shape for shape in shapes if shape is not None]
    first = known[0]
    grouping = _route_groups(ctx, known)
    if grouping is None:
        return None
    groups, group_id = grouping
    outputs = sum(shape.outputs for shape in known) // groups
    channels = first.c
    for shape in known[1:]:
        same = shape.w == first.w and shape.h == first.h
        channels = channels + shape.c if same and channels else 0
    spec = RouteSpec(
        **spec_fields(ctx, common),
        sources=tuple(str(i) for i in indices),
        groups=groups,
        group_id=group_id,
    )
    if channels == 0:
        return spec, Shape.flat(outputs)
    return spec, Shape(first.h, first.w, channels // groups, outputs)


def parse_reorg(ctx: LayerContext, common: CommonKeys) -> tuple[LayerSpec, Shape] | None:
    """``parse_reorg``: stride 1, reverse 0, flatten 0, extra 0 (the last three read quietly).
    darknet's forward tries flatten, then extra, then reverse; its backward tries flatten,
    then REVERSE, then extra, so ``extra`` with ``reverse`` runs different maps each way: an
    error here. ``flatten`` with ``stride`` ≠ 1 sizes the output by the stride but copies the
    whole input (darknet writes past its buffer): an error too."""
    t = ctx.table
    stride = t.get_int("stride", 1)
    reverse, flatten, extra = (t.get_int(k, 0) for k in ("reverse", "flatten", "extra"))
    if not ctx.require_image() or not ctx.positive("stride", stride):
        return None
    if extra and reverse and not flatten:
        t.error("extra", "extra with reverse: darknet's forward copies, its backward reorgs")
        return None
    if flatten and stride != 1:
        t.error("flatten", "flatten needs stride=1 (darknet writes past the output otherwise)")
        return None
    if extra < 0:
        t.error("extra", f"extra must be >= 0, got {extra}")
        return None
    mode = "flatten" if flatten else "extra" if extra else "reorg"
    c, h, w = ctx.shape.c, ctx.shape.h, ctx.shape.w
    s = stride
    if mode == "reorg" and (c % (s * s) or (not reverse and (h % s or w % s))):
        need = f"c={c} by {s * s}" + ("" if reverse else f" and h×w={h}×{w} by {s}")
        t.error("stride", f"stride={s} needs {need}: darknet's reorg_cpu would read out of "
                "bounds (or divide by zero)")  # fmt: skip
        return None
    spec = ReorgSpec(
        **spec_fields(ctx, common), stride=s, reverse=bool(reverse), mode=mode, extra=extra
    )
    if mode == "extra":
        return spec, Shape.flat(ctx.shape.outputs + extra)
    if mode == "flatten":
        return spec, ctx.shape
    out = (h * s, w * s, c // (s * s)) if reverse else (h // s, w // s, c * s * s)
    return spec, Shape(out[0], out[1], out[2], out[0] * out[1] * out[2])


def parse_crop(ctx: LayerContext, common: CommonKeys) -> tuple[LayerSpec, Shape] | None:
    """``parse_crop``: crop_height 1, crop_width 1, flip 0, angle 0, saturation 1, exposure 1,
    noadjust 0 (quiet), shift 0. ``angle`` (rotation) and ``shift`` (GPU-only colour shift)
    are not simulated: a warning when set. ``saturation``/``exposure`` apply to 3-channel
    images only (darknet's GPU kernel reads three channels): a warning otherwise."""
    t = ctx.table
    height, width = t.get_int("crop_height", 1), t.get_int("crop_width", 1)
    flip = t.get_int("flip", 0)
    angle = t.get_float("angle", 0.0)
    saturation, exposure = t.get_float("saturation", 1.0), t.get_float("exposure", 1.0)
    noadjust = t.get_int("noadjust", 0)
    shift = t.get_float("shift", 0.0)
    if not ctx.require_image():
        return None
    h, w, c = ctx.shape.h, ctx.shape.w, ctx.shape.c
    if not (0 < height <= h and 0 < width <= w):
        key = "crop_height" if not 0 < height <= h else "crop_width"
        t.error(key, f"a {height}×{width} crop does not fit the {h}×{w} image before it")
        return None
    for key, value in (("saturation", saturation), ("exposure", exposure)):
        if value <= 0:
            t.error(key, f"{key} must be > 0, got {value:g}")
            return None
    warn_if_set(ctx, "angle", angle, 0.0, "random rotation (darknet's GPU crop) is not simulated")
    warn_if_set(ctx, "shift", shift, 0.0, "the GPU-only colour shift is not simulated")
    if c != 3 and (saturation != 1.0 or exposure != 1.0):
        t.warning("saturation" if saturation != 1.0 else "exposure",
                  f"saturation/exposure need 3 channels (darknet's GPU kernel reads RGB); "
                  f"the {c}-channel image is not recoloured")  # fmt: skip
        saturation = exposure = 1.0
    spec = CropSpec(
        **spec_fields(ctx, common),
        crop_height=height,
        crop_width=width,
        flip=bool(flip),
        saturation=saturation,
        exposure=exposure,
        noadjust=bool(noadjust),
    )
    return spec, Shape(height, width, c, height * width * c)


LayerParser = Callable[[LayerContext, CommonKeys], "tuple[LayerSpec, Shape] | None"]
LAYER_PARSERS: dict[str, LayerParser] = {
    "convolutional": parse_convolutional,
    "connected": parse_connected,
    "maxpool": parse_maxpool,
    "avgpool": parse_avgpool,
    "dropout": parse_dropout,
    "softmax": parse_softmax,
    "cost": parse_cost,
    "batchnorm": parse_batchnorm,
    "shortcut": parse_shortcut,
    "route": parse_route,
    "reorg": parse_reorg,
    "crop": parse_crop,
}

# Spec field → the cfg key it came from, per layer kind (for RunSpec.origins).
LAYER_FIELD_KEYS: dict[str, dict[str, str]] = {
    "convolutional": {
        "filters": "filters", "kernel_h": "size", "kernel_w": "size", "stride_h": "stride",
        "stride_w": "stride", "groups": "groups", "batch_normalize": "batch_normalize",
        "activation": "activation",
    },
    "connected": {
        "outputs": "output", "batch_normalize": "batch_normalize", "activation": "activation",
    },
    "maxpool": {
        "kernel_h": "size", "kernel_w": "size", "stride_h": "stride", "stride_w": "stride",
        "pad_h": "padding", "pad_w": "padding",
    },
    "avgpool": {},
    "dropout": {"probability": "probability"},
    "softmax": {"groups": "groups", "temperature": "temperature", "noloss": "noloss"},
    "cost": {"cost_type": "type", "scale": "scale"},
    "batchnorm": {},
    "shortcut": {"source": "from", "alpha": "alpha", "beta": "beta", "activation": "activation"},
    "route": {"sources": "layers", "groups": "groups", "group_id": "group_id"},
    "reorg": {"stride": "stride", "reverse": "reverse", "extra": "extra"},
    "crop": {
        "crop_height": "crop_height", "crop_width": "crop_width", "flip": "flip",
        "saturation": "saturation", "exposure": "exposure", "noadjust": "noadjust",
    },
}  # fmt: skip
COMMON_FIELD_KEYS = {
    "stop_backward": "stopbackward",
    "dontsave": "dontsave",
    "dontload": "dontload",
    "params": "learning_rate",
}


def layer_origins(kind: str, ctx: LayerContext) -> dict[str, Origin]:
    """``net.layers.<i>.<field>`` → origin of the key that set it."""
    prefix = f"net.layers.{ctx.index}"
    origins = {prefix: ctx.origin}
    for name, key in {**LAYER_FIELD_KEYS[kind], **COMMON_FIELD_KEYS}.items():
        origins[f"{prefix}.{name}"] = ctx.table.origin(key)
    if kind == "convolutional":
        for name in ("pad_h", "pad_w"):
            origins[f"{prefix}.{name}"] = ctx.table.origin(ctx.pad_key)
    return origins


def warn_unused(table: OptionTable) -> None:
    """darknet's ``option_unused``: ``Unused field: 'key = value'`` for every unread key."""
    for option in table.unused():
        table.sink.warning(
            table.path,
            option.line,
            option.key or None,
            f"unused field '{option.key} = {option.value}': {table.section.type} does not read "
            'it (darknet: "Unused field")',
        )
