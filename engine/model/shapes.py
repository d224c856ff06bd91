"""Shape inference, parameter blobs and FLOP counts for a :class:`~engine.spec.NetSpec`.

This is the one place that knows each layer's output size rule and its parameter blobs in the
framework's own order. The network builder, initialisation, checkpoints (darknet ``.weights``,
``.npz`` keyed ``LAYER/INDEX``, ``.caffemodel``) and ``dnupdate inspect`` all read it.

Output-size rules (C integer division truncates toward zero, which :func:`c_div` reproduces):

* convolution: ``out = (in + 2*pad - (dilation*(k-1) + 1)) / stride + 1``;
* darknet maxpool: ``out = (in + padding - size) / stride + 1`` with ``padding`` the total;
* Caffe pooling (CEIL): ``out = ceil((in + 2*pad - k) / stride) + 1``, then minus one when padded
  and the last window would start at or past ``in + pad`` (FLOOR uses floor);
* global pooling and darknet ``[avgpool]``: ``1×1``;
* darknet ``[shortcut]``: the previous layer's shape (the ``from`` layer may differ: darknet's
  stride/sample rule, :func:`shortcut_geometry`);
* darknet ``[route]``: channels add up when every source has the same H×W, else a flat vector;
* Caffe ``Eltwise``/``Split``/``LRN``/``Power``/``Softmax``: the input's shape; ``Concat``:
  the dims at its axis add up (C, H or W; a flat bottom's K); ``Flatten``: ``(C·H·W, 1, 1)``;
  ``Reshape``: its dims (``0`` copies, ``-1`` is inferred); losses, ``Accuracy`` and
  ``Silence``: ``1×1×1`` sinks;
* darknet ``[reorg]``: ``(C·s², H/s, W/s)``, reversed ``(C/s², H·s, W·s)``, ``flatten`` the
  same shape, ``extra`` a flat ``C·H·W + extra`` (:func:`reorg_shape`);
* darknet ``[crop]``: ``(C, crop_height, crop_width)``.

Networks are graphs: each :class:`LayerShape` lists its ``bottoms``, the positions (in the
returned list) of the layers whose outputs it reads, ``-1`` for the network input. A chain
layer reads the last non-sink layer before it; ``[shortcut]`` reads that and its ``source``;
``[route]`` reads its ``sources``. A Caffe layer names its ``bottoms``: each resolves to the
LAST earlier layer with that top (in-place tops: the last writer wins), the data layer's first
top to ``-1`` and its other tops (the label) to :data:`LABEL`. A blob read by several layers
gets all their gradients added up, as the Split layer Caffe inserts there does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dnupdate.engine.spec import (
    AccuracySpec,
    ActivationSpec,
    BatchNormSpec,
    CaffeSoftmaxSpec,
    ConcatSpec,
    ConfigError,
    ConnectedSpec,
    ConvSpec,
    CostSpec,
    CropSpec,
    Diagnostic,
    DropoutSpec,
    EltwiseSpec,
    EuclideanLossSpec,
    LayerSpec,
    LRNSpec,
    NetSpec,
    ParamMult,
    PoolSpec,
    PowerSpec,
    ReorgSpec,
    ReshapeSpec,
    RouteSpec,
    ScaleSpec,
    ShortcutSpec,
    SigmoidCrossEntropyLossSpec,
    SilenceSpec,
    SoftmaxLossSpec,
    SoftmaxSpec,
    SplitSpec,
)

#: the position of the truth (a Caffe data layer's second and later tops) in ``bottoms``
LABEL = -2
#: layers whose output no later layer reads by the chain rule (Caffe loss, metric, Silence)
SINKS = (
    SoftmaxLossSpec,
    AccuracySpec,
    SilenceSpec,
    EuclideanLossSpec,
    SigmoidCrossEntropyLossSpec,
)

Shape3 = tuple[int, int, int]


@dataclass(frozen=True)
class BlobSpec:
    """One parameter blob of a layer.

    ``learnable``: it receives gradients and updates (batch-norm running statistics do not:
    they change in the forward pass). ``mult``: the lr/decay multipliers the update uses.
    """

    name: str
    shape: tuple[int, ...]
    learnable: bool
    mult: ParamMult

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class LayerShape:
    """A layer with its resolved input/output shapes (C, H, W per sample), blobs and cost.

    ``image_out``: whether the output is image-shaped (darknet's softmax and cost layers, and
    Caffe's InnerProduct/loss layers, produce flat vectors that no conv or pool may follow).
    ``flops``: floating-point operations of one sample's forward pass (a multiply-add counts 2).
    ``bottoms``: positions in :func:`infer_shapes`' list of the layers this one reads (``-1``:
    the network input), the chain input first; ``input`` is the first bottom's shape (a
    route's is its own concatenated output).
    """

    index: int
    layer: LayerSpec
    input: Shape3
    output: Shape3
    blobs: tuple[BlobSpec, ...]
    flops: int
    image_out: bool
    bottoms: tuple[int, ...] = (-1,)
    #: Caffe's number of axes of the output blob, the batch included (0: 4 for an image, 2 for
    #: a flat one); a ``Reshape`` to two dims makes a 3-axis ``N×A×B`` blob, stored ``(A, B, 1)``
    axes_out: int = 0

    @property
    def axes(self) -> int:
        """The output blob's number of axes, the batch included (``N×C×H×W``: 4; ``N×K``: 2;
        a ``Reshape``'s ``N×A×B``: 3)."""
        return self.axes_out or (4 if self.image_out else 2)

    @property
    def inputs(self) -> int:
        return math.prod(self.input)

    @property
    def outputs(self) -> int:
        return math.prod(self.output)

    @property
    def param_count(self) -> int:
        """Number of learnable parameters (running statistics excluded)."""
        return sum(b.size for b in self.blobs if b.learnable)

    @property
    def stored_count(self) -> int:
        """Number of stored floats, running statistics included."""
        return sum(b.size for b in self.blobs)


def c_div(a: int, b: int) -> int:
    """C integer division (truncates toward zero), as darknet's and Caffe's size formulas."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def conv_out(size: int, kernel: int, stride: int, pad: int, dilation: int = 1) -> int:
    """Convolution output size (darknet and Caffe agree): ``(in + 2p - k_eff)/s + 1``."""
    k_eff = dilation * (kernel - 1) + 1
    return c_div(size + 2 * pad - k_eff, stride) + 1


def darknet_pool_out(size: int, kernel: int, stride: int, padding_total: int) -> int:
    """darknet maxpool output size: ``(in + padding - size)/stride + 1`` (padding is total)."""
    return c_div(size + padding_total - kernel, stride) + 1


def caffe_pool_out(
    size: int, kernel: int, stride: int, pad: int, rounding: str, padded: bool | None = None
) -> int:
    """Caffe pooling output size with its CEIL/FLOOR rounding and the padded clip rule.

    Caffe quirk: the default rounding is CEIL, so a 3/2 pool over 32 gives 16, not 15; and only
    when the layer is padded is a last window starting at or past ``in + pad`` dropped.
    ``padded``: whether EITHER axis has padding (``pooling_layer.cpp: Reshape`` guards the
    clip of both axes with ``if (pad_h_ || pad_w_)``); default ``pad > 0``.
    """
    ratio = (size + 2 * pad - kernel) / stride
    pooled = (math.ceil(ratio) if rounding == "ceil" else math.floor(ratio)) + 1
    if (pad > 0 if padded is None else padded) and (pooled - 1) * stride >= size + pad:
        pooled -= 1
    return pooled


def pool_geometry(layer: PoolSpec, c: int, h: int, w: int) -> tuple[int, int, int, int, int, int]:
    """Resolved pooling window: ``(kernel_h, kernel_w, offset_h, offset_w, out_h, out_w)``.

    ``offset`` is how far the first window starts before the image (window y0 = i*stride -
    offset): darknet ``padding//2`` of the total padding, Caffe ``pad``.
    """
    if layer.global_pooling:
        return h, w, 0, 0, 1, 1
    kh, kw = layer.kernel_h, layer.kernel_w
    if layer.size_rule == "darknet":
        oh = darknet_pool_out(h, kh, layer.stride_h, layer.pad_h)
        ow = darknet_pool_out(w, kw, layer.stride_w, layer.pad_w)
        return kh, kw, c_div(layer.pad_h, 2), c_div(layer.pad_w, 2), oh, ow
    padded = layer.pad_h != 0 or layer.pad_w != 0  # Caffe quirk: one guard for both axes
    oh = caffe_pool_out(h, kh, layer.stride_h, layer.pad_h, layer.size_rule, padded)
    ow = caffe_pool_out(w, kw, layer.stride_w, layer.pad_w, layer.size_rule, padded)
    return kh, kw, layer.pad_h, layer.pad_w, oh, ow


def _mult(layer, index: int) -> ParamMult:
    params = getattr(layer, "params", ())
    return params[index] if index < len(params) else ParamMult()


def _blobs(layer, named: list[tuple[str, tuple[int, ...], bool]]) -> tuple[BlobSpec, ...]:
    return tuple(
        BlobSpec(name, shape, learnable, _mult(layer, i))
        for i, (name, shape, learnable) in enumerate(named)
    )


def _darknet_bn(n: int, present: bool = True) -> list[tuple[str, tuple[int, ...], bool]]:
    """darknet's batch-norm blobs of ``n`` channels: ``scales`` (learned), ``rolling_mean``
    and ``rolling_variance`` (not learned); none when not ``present``."""
    if not present:
        return []
    return [
        ("scales", (n,), True),
        ("rolling_mean", (n,), False),
        ("rolling_variance", (n,), False),
    ]


def param_blobs(layer: LayerSpec, input_shape: Shape3) -> tuple[BlobSpec, ...]:
    """A layer's parameter blobs in its framework's order (the ``.npz`` ``LAYER/INDEX`` order).

    darknet convolutional: ``biases, [scales, rolling_mean, rolling_variance], weights``
    darknet connected:     ``biases, weights, [scales, rolling_mean, rolling_variance]``
    Caffe Convolution / InnerProduct: ``weights, bias``; BatchNorm: ``mean, variance,
    scale_factor`` (running sums, not learned); Scale: ``gamma[, beta]``.
    darknet ``[batchnorm]``: ``scales, rolling_mean, rolling_variance`` (it stores no biases).
    """
    c = input_shape[0]
    if isinstance(layer, ConvSpec):
        n = layer.filters
        weights = ("weights", (n, c // layer.groups, layer.kernel_h, layer.kernel_w), True)
        if layer.param_order == "darknet":
            named = [("biases", (n,), True), *_darknet_bn(n, layer.batch_normalize)]
            return _blobs(layer, [*named, weights])
        return _blobs(layer, [weights] + ([("bias", (n,), True)] if layer.bias else []))
    if isinstance(layer, ConnectedSpec):
        n, k = layer.outputs, math.prod(input_shape)
        if layer.param_order == "darknet":
            named = [("biases", (n,), True), ("weights", (n, k), True)]
            return _blobs(layer, [*named, *_darknet_bn(n, layer.batch_normalize)])
        named = [("weights", (n, k), True)] + ([("bias", (n,), True)] if layer.bias else [])
        return _blobs(layer, named)
    if isinstance(layer, BatchNormSpec):
        if layer.style == "darknet":
            return _blobs(layer, _darknet_bn(c))
        return _blobs(
            layer, [("mean", (c,), False), ("variance", (c,), False), ("scale_factor", (1,), False)]
        )
    if isinstance(layer, ScaleSpec):
        return _blobs(
            layer, [("gamma", (c,), True)] + ([("beta", (c,), True)] if layer.bias_term else [])
        )
    return ()


def _error(layer: LayerSpec, message: str) -> ConfigError:
    return ConfigError(
        [
            Diagnostic(
                "error",
                layer.origin.file,
                layer.origin.line,
                layer.name,
                f"layer {layer.name}: {message}",
            )
        ]
    )


def _conv_shape(layer: ConvSpec, c: int, h: int, w: int) -> tuple[Shape3, int]:
    if c % layer.groups or layer.filters % layer.groups:
        raise _error(
            layer,
            f"{c} input channels and {layer.filters} filters must both divide by "
            f"{layer.groups} groups",
        )
    oh = conv_out(h, layer.kernel_h, layer.stride_h, layer.pad_h, layer.dilation)
    ow = conv_out(w, layer.kernel_w, layer.stride_w, layer.pad_w, layer.dilation)
    k = (c // layer.groups) * layer.kernel_h * layer.kernel_w
    flops = 2 * layer.filters * oh * ow * k + layer.filters * oh * ow
    return (layer.filters, oh, ow), flops


def _layer_shape(layer: LayerSpec, shape: Shape3, image_in: bool) -> tuple[Shape3, int, bool]:
    """Output shape, forward FLOPs per sample and whether the output is image-shaped."""
    c, h, w = shape
    count = c * h * w
    if isinstance(layer, ConvSpec | PoolSpec | ReorgSpec | CropSpec) and not image_in:
        raise _error(layer, "the layer before must output an image (C×H×W), not a flat vector")
    if isinstance(layer, ConvSpec):
        out, flops = _conv_shape(layer, c, h, w)
        return out, flops, True
    if isinstance(layer, ConnectedSpec):
        flops = 2 * count * layer.outputs + layer.outputs
        return (layer.outputs, 1, 1), flops, layer.param_order == "darknet"
    if isinstance(layer, PoolSpec):
        kh, kw, _, _, oh, ow = pool_geometry(layer, c, h, w)
        if layer.stride_h <= 0 or layer.stride_w <= 0:
            raise _error(layer, "stride must be positive")
        return (c, oh, ow), c * oh * ow * kh * kw, True
    if isinstance(layer, SoftmaxSpec):
        if count % layer.groups:
            raise _error(layer, f"{count} inputs do not split into {layer.groups} groups")
        return (count, 1, 1), 4 * count, False
    if isinstance(layer, SINKS):
        return (1, 1, 1), 4 * count, False
    if isinstance(layer, CostSpec):
        return shape, 3 * count, False
    if isinstance(layer, DropoutSpec | ActivationSpec):
        return shape, count, image_in
    if isinstance(layer, BatchNormSpec | ScaleSpec):
        return shape, 2 * count, image_in
    if isinstance(layer, LRNSpec):
        if not image_in:
            raise _error(layer, "LRN needs an image input (N×C×H×W)")
        return shape, (2 * layer.local_size + 4) * count, True
    if isinstance(layer, PowerSpec | CaffeSoftmaxSpec | SplitSpec):
        return shape, 4 * count, image_in
    if isinstance(layer, ReshapeSpec):
        return _reshape(layer, shape), 0, bool(layer.shape) and len(layer.shape) == 3
    if isinstance(layer, ReorgSpec):
        out, image = reorg_shape(layer, shape)
        return out, count, image
    if isinstance(layer, CropSpec):
        if not (0 < layer.crop_height <= h and 0 < layer.crop_width <= w):
            raise _error(
                layer, f"a {layer.crop_height}×{layer.crop_width} crop does not fit a {h}×{w} image"
            )
        return (c, layer.crop_height, layer.crop_width), 2 * count, True
    raise _error(layer, f"unknown layer kind {type(layer).__name__}")


def _reshape(layer: ReshapeSpec, shape: Shape3) -> Shape3:
    """``Flatten`` (no dims): ``(C·H·W, 1, 1)``; ``Reshape``: per-image dims with ``0`` = the
    input's dim at that axis and one ``-1`` inferred from the count (``reshape_layer.cpp``)."""
    count = math.prod(shape)
    if not layer.shape:
        return (count, 1, 1)
    if len(layer.shape) > 3:
        raise _error(layer, "at most 3 dims after the batch (N×C×H×W) are supported")
    dims = [shape[i] if d == 0 else d for i, d in enumerate(layer.shape)]
    known = math.prod(d for d in dims if d != -1)
    if dims.count(-1) > 1 or min(dims) < -1 or known <= 0:
        raise _error(layer, f"cannot reshape {'×'.join(map(str, shape))} to {layer.shape}")
    if -1 in dims:
        if count % known:
            raise _error(layer, f"{count} values per image do not divide by {known}")
        dims[dims.index(-1)] = count // known
    if math.prod(dims) != count:
        raise _error(
            layer, f"reshape to {'×'.join(map(str, dims))} changes the count ({count} values)"
        )
    return tuple(dims + [1] * (3 - len(dims)))  # type: ignore[return-value]


def reorg_shape(layer: ReorgSpec, shape: Shape3) -> tuple[Shape3, bool]:
    """Output shape and image flag of a ``[reorg]`` (``make_reorg_layer``). darknet computes
    the shape with C integer division and ``reorg_cpu`` then walks the whole input, so the
    sizes must divide exactly (else darknet writes past its output or divides by zero):
    ``H``, ``W`` by ``s`` (``reverse=0``) and ``C`` by ``s²`` (both directions)."""
    c, h, w = shape
    s = layer.stride
    if layer.mode == "extra":
        return (c * h * w + layer.extra, 1, 1), False
    if layer.mode == "flatten":
        return shape, True
    if s < 1 or c % (s * s) or (not layer.reverse and (h % s or w % s)):
        need = f"C={c} by {s * s}" + ("" if layer.reverse else f" and H×W={h}×{w} by {s}")
        raise _error(layer, f"reorg stride {s} needs {need} (darknet would read out of bounds)")
    if layer.reverse:
        return (c // (s * s), h * s, w * s), True
    return (c * s * s, h // s, w // s), True


@dataclass(frozen=True)
class ShortcutGeometry:
    """darknet ``shortcut_cpu``'s index rule between the ``from`` output ``(c1, h1, w1)`` and
    the shortcut's output ``(c2, h2, w2)``: ``stride = max(1, w1/w2)``, ``sample =
    max(1, w2/w1)`` (C integer division), and the overlap ``min(c) × min(h) × min(w)``.
    Element ``(k, j, i)`` of the overlap adds ``from[k, j·stride, i·stride]`` into
    ``out[k, j·sample, i·sample]``."""

    stride: int
    sample: int
    channels: int
    height: int
    width: int

    @property
    def overlap(self) -> int:
        return self.channels * self.height * self.width


def shortcut_geometry(source: Shape3, out: Shape3) -> ShortcutGeometry | None:
    """The :class:`ShortcutGeometry` of adding ``source`` into ``out``, or None where darknet
    asserts (``stride == h1/h2`` and ``sample == h2/h1`` must hold before clamping to 1)."""
    (c1, h1, w1), (c2, h2, w2) = source, out
    stride, sample = w1 // w2, w2 // w1
    if stride != h1 // h2 or sample != h2 // h1:
        return None
    return ShortcutGeometry(max(1, stride), max(1, sample), min(c1, c2), min(h1, h2), min(w1, w2))


@dataclass(frozen=True)
class _Produced:
    """What an earlier layer (or the input, position -1) hands on: shape, image flag, and the
    blob's number of axes (0: 4 for an image, 2 for a flat one; see ``LayerShape.axes``)."""

    shape: Shape3
    image: bool
    axes_out: int = 0

    @property
    def axes(self) -> int:
        return self.axes_out or (4 if self.image else 2)


def _resolve_bottom(layer: LayerSpec, name: str, positions: dict[str, int]) -> int:
    position = positions.get(name)
    if position is None:
        raise _error(layer, f"reads layer {name!r}, which is not an earlier layer of this net")
    return position


def _graph_shape(
    layer: ShortcutSpec | RouteSpec,
    chain: int,
    produced: dict[int, _Produced],
    positions: dict[str, int],
) -> tuple[tuple[int, ...], Shape3, Shape3, int, bool]:
    """``(bottoms, input, output, flops, image_out)`` of a shortcut or route layer."""
    if isinstance(layer, ShortcutSpec):
        source = _resolve_bottom(layer, layer.source, positions)
        prev, add = produced[chain], produced[source]
        if not (prev.image and add.image):
            raise _error(layer, "both inputs of a shortcut must be images (C×H×W)")
        geometry = shortcut_geometry(add.shape, prev.shape)
        if geometry is None:
            raise _error(
                layer,
                f"layer {layer.source} ({'×'.join(map(str, add.shape))}) cannot be added to "
                f"{'×'.join(map(str, prev.shape))}: darknet needs the same width and height "
                "ratio (it asserts stride == h1/h2)",
            )
        flops = 3 * geometry.overlap + math.prod(prev.shape)
        return (chain, source), prev.shape, prev.shape, flops, True
    if not layer.sources:
        raise _error(layer, "a route needs at least one source layer")
    bottoms = tuple(_resolve_bottom(layer, name, positions) for name in layer.sources)
    shapes = [produced[b].shape for b in bottoms]
    groups = layer.groups
    if not 0 <= layer.group_id < groups or any(math.prod(s) % groups for s in shapes):
        raise _error(
            layer,
            f"groups={groups} group_id={layer.group_id}: every source's output must split into "
            f"{groups} equal parts and 0 <= group_id < groups",
        )
    total = sum(math.prod(shape) for shape in shapes) // groups
    first = shapes[0]
    if all(shape[1:] == first[1:] for shape in shapes) and all(produced[b].image for b in bottoms):
        out: Shape3 = (sum(shape[0] for shape in shapes) // groups, first[1], first[2])
        return bottoms, out, out, 0, True
    return bottoms, (total, 1, 1), (total, 1, 1), 0, False


_MULTI_INPUT = (
    EltwiseSpec,
    ConcatSpec,
    SilenceSpec,
    EuclideanLossSpec,
    SigmoidCrossEntropyLossSpec,
)
_LABEL_READERS = (SoftmaxLossSpec, AccuracySpec)


def _resolve_blob(layer: LayerSpec, name: str, tops: dict[str, int]) -> int:
    position = tops.get(name)
    if position is None:
        raise _error(
            layer, f"reads blob {name!r}, which no earlier layer (or the data layer) produces"
        )
    return position


def _blob_shape(
    layer: LayerSpec, produced: dict[int, _Produced], tops: dict[str, int]
) -> tuple[tuple[int, ...], Shape3, Shape3, int, bool]:
    """``(bottoms, input, output, flops, image_out)`` of a layer with Caffe ``bottoms``."""
    bottoms = tuple(_resolve_blob(layer, name, tops) for name in layer.bottoms)
    if isinstance(layer, _LABEL_READERS):
        if len(bottoms) != 2 or bottoms[1] != LABEL or bottoms[0] == LABEL:
            raise _error(layer, "reads the scores and the data layer's label (two bottoms)")
    elif isinstance(layer, EuclideanLossSpec | SigmoidCrossEntropyLossSpec):
        if len(bottoms) != 2 or bottoms[0] == LABEL:
            raise _error(layer, "a loss reads two bottoms: the prediction and the target")
    elif isinstance(layer, EltwiseSpec | ConcatSpec):
        if len(bottoms) < (2 if isinstance(layer, EltwiseSpec) else 1):
            raise _error(layer, "needs at least two bottoms")
    elif not isinstance(layer, SilenceSpec) and len(bottoms) != 1:
        raise _error(layer, f"reads one bottom, not {len(bottoms)}")
    if LABEL in bottoms[:1] and not isinstance(layer, SilenceSpec):
        raise _error(layer, "reads the data layer's label, which only loss layers may read")
    first = produced[bottoms[0]] if bottoms else _Produced((1, 1, 1), False)
    if not isinstance(layer, _MULTI_INPUT):
        out, flops, image_out = _layer_shape(layer, first.shape, first.image)
        return bottoms, first.shape, out, flops, image_out
    return (bottoms, first.shape, *_multi_shape(layer, [produced[b] for b in bottoms], bottoms))


def _multi_shape(
    layer: LayerSpec, inputs: list[_Produced], bottoms: tuple[int, ...]
) -> tuple[Shape3, int, bool]:
    """Output, FLOPs and image flag of Eltwise, Concat, Silence and the two-input
    losses (``CHECK_EQ`` of Caffe's ``Reshape``: same shape / same count)."""
    first = inputs[0] if inputs else _Produced((1, 1, 1), False)
    count = math.prod(first.shape)
    if isinstance(layer, SilenceSpec):
        return (1, 1, 1), 0, False
    if isinstance(layer, EuclideanLossSpec | SigmoidCrossEntropyLossSpec):
        if bottoms[1] != LABEL and math.prod(inputs[1].shape) != count:
            raise _error(layer, "both bottoms must have the same number of values per image")
        return (1, 1, 1), 4 * count, False
    if isinstance(layer, EltwiseSpec):
        if any(p.shape != first.shape for p in inputs):
            shapes = ", ".join("×".join(map(str, p.shape)) for p in inputs)
            raise _error(layer, f"all bottoms must have the same shape, got {shapes}")
        if layer.coeffs and len(layer.coeffs) != len(inputs):
            raise _error(layer, "give one coeff per bottom")
        return first.shape, len(inputs) * count, first.image
    assert isinstance(layer, ConcatSpec)
    return _concat_shape(layer, inputs)


def _key_error(layer: LayerSpec, key: str, message: str) -> ConfigError:
    """A :class:`ConfigError` at the layer's line naming ``key``."""
    where = layer.origin
    return ConfigError(
        [Diagnostic("error", where.file, where.line, key, f"layer {layer.name}: {message}")]
    )


_AXES_NAMES = {2: "N×K", 3: "N×A×B", 4: "N×C×H×W"}


def concat_axis(layer: ConcatSpec, num_axes: int) -> int:
    """The per-image dim a Caffe ``Concat`` joins, for bottoms of ``num_axes`` axes (the batch
    included): 0, 1, 2 for C, H, W of an image blob (N×C×H×W, 4 axes), 0 or 1 for a
    ``Reshape``'s N×A×B (3 axes), 0 for a flat one (N×K, 2 axes). ``axis`` is canonicalised as
    Caffe's ``CanonicalAxisIndex`` (``-num_axes <= axis < num_axes``; negative: ``axis +
    num_axes``, so ``-1`` is B of an N×A×B blob); ``concat_dim`` is taken as given
    (``CHECK_LT(concat_dim, num_axes)``). Axis 0 (the batch) is refused: a net here has one
    batch size throughout."""
    axis = layer.axis
    if not -num_axes <= axis < num_axes or (axis < 0 and layer.axis_key == "concat_dim"):
        raise _key_error(
            layer,
            layer.axis_key,
            f"{layer.axis_key} {axis} is out of range for {num_axes}-axis bottoms "
            f"({_AXES_NAMES[num_axes]})",
        )
    axis = axis + num_axes if axis < 0 else axis
    if axis == 0:
        raise _key_error(
            layer,
            layer.axis_key,
            "concatenating along the batch (axis 0) is not supported: a net keeps one batch size",
        )
    return axis - 1


def _concat_shape(layer: ConcatSpec, inputs: list[_Produced]) -> tuple[Shape3, int, bool]:
    """Caffe's ``ConcatLayer::Reshape``: every bottom has the same number of axes and the same
    dims except at the concat axis, where the top's dim is their sum."""
    image, axes = inputs[0].image, inputs[0].axes
    if any(p.axes != axes for p in inputs):
        found = ", ".join(_AXES_NAMES[p.axes] for p in inputs)
        raise _key_error(layer, "bottom", f"All inputs must have the same #axes ({found})")
    k = concat_axis(layer, axes)
    dims = [list(p.shape) if axes > 2 else [math.prod(p.shape), 1, 1] for p in inputs]
    out = list(dims[0])
    for other in dims[1:]:
        if any(a != b for j, (a, b) in enumerate(zip(other, dims[0], strict=True)) if j != k):
            shapes = ", ".join("×".join(map(str, d[: axes - 1])) for d in dims)
            raise _key_error(
                layer,
                layer.axis_key,
                f"All inputs must have the same shape, except at concat_axis {k + 1}: {shapes}",
            )
        out[k] += other[k]
    return (out[0], out[1], out[2]), 0, image


#: Caffe layers whose top has their (first) bottom's axes
_KEEPS_AXES = (
    ConcatSpec,
    EltwiseSpec,
    SplitSpec,
    PowerSpec,
    CaffeSoftmaxSpec,
    BatchNormSpec,
    ScaleSpec,
    DropoutSpec,
    ActivationSpec,
)


def _axes_out(layer: LayerSpec, out: Shape3, image: bool, inputs: list[_Produced]) -> int:
    """Caffe's axis count of a layer's top (0: by the image flag, see ``LayerShape.axes``): a
    ``Reshape`` has its dims' (``Flatten``: N×K); Concat, Eltwise, Split, Power, Softmax,
    BatchNorm, Scale, Dropout and the activations keep their first bottom's (its shape)."""
    if isinstance(layer, ReshapeSpec):
        return 1 + len(layer.shape) if layer.shape else 2
    if inputs and isinstance(layer, ConcatSpec):  # its bottoms' (checked to agree)
        return inputs[0].axes_out
    if inputs and isinstance(layer, _KEEPS_AXES) and inputs[0].shape == out:
        return inputs[0].axes_out
    return 0


def infer_shapes(net: NetSpec, phase: str | None = None) -> list[LayerShape]:
    """Propagate shapes through the net (layers of ``phase`` only, or all when None).

    Raises :class:`ConfigError` naming the layer's file and line when a size becomes
    non-positive, groups do not divide, an image layer follows a flat one, or a layer reads
    a layer that is not before it.
    """
    net_input = (net.input.channels, net.input.height, net.input.width)
    produced = {-1: _Produced(net_input, net.input.height > 0 and net.input.width > 0)}
    produced[LABEL] = _Produced((1, 1, 1), False)
    positions: dict[str, int] = {}
    tops = {name: (-1 if i == 0 else LABEL) for i, name in enumerate(net.input_tops)}
    chain = -1
    result: list[LayerShape] = []
    for index, layer in enumerate(net.layers):
        if phase is not None and phase not in layer.phases:
            continue
        if layer.bottoms:
            bottoms, shape, out, flops, image_out = _blob_shape(layer, produced, tops)
        elif isinstance(layer, _MULTI_INPUT):
            raise _error(layer, "needs its bottoms named")
        elif isinstance(layer, ShortcutSpec | RouteSpec):
            bottoms, shape, out, flops, image_out = _graph_shape(layer, chain, produced, positions)
        else:
            bottoms, shape = (chain,), produced[chain].shape
            out, flops, image_out = _layer_shape(layer, shape, produced[chain].image)
        if min(out) <= 0:
            raise _error(
                layer,
                f"output would be {'×'.join(map(str, out))} for input {'×'.join(map(str, shape))}",
            )
        axes = _axes_out(layer, out, image_out, [produced[b] for b in bottoms if b in produced])
        position = len(result)
        result.append(
            LayerShape(
                index, layer, shape, out, param_blobs(layer, shape), flops, image_out, bottoms,
                axes,
            )
        )  # fmt: skip
        produced[position] = _Produced(out, image_out, axes)
        positions[layer.name] = position
        for top in layer.tops:
            tops[top] = position
        if not isinstance(layer, SINKS):
            chain = position
    return result


# --------------------------------------------------------------------------------------------
# Memory estimate
# --------------------------------------------------------------------------------------------

FLOAT_BYTES = 4
OPTIMIZER_SLOTS = {"adam": 2, "adadelta": 2}  # history blobs per parameter (1 for the rest)


@dataclass(frozen=True)
class MemoryEstimate:
    """float32 bytes a training run holds at once (a lower bound: NumPy temporaries and the
    data set are not counted): ``parameters`` (values, gradients, optimizer history),
    ``activations`` (each layer's output and delta for one minibatch) and ``scratch`` (the
    largest convolution's per-image column buffer). ``largest`` is the layer holding most."""

    parameters: int
    activations: int
    scratch: int
    largest: LayerShape | None
    largest_bytes: int

    @property
    def total(self) -> int:
        return self.parameters + self.activations + self.scratch


def _conv_scratch(shape: LayerShape) -> int:
    """Floats of one image's im2col buffer: ``k_h·k_w·c/groups × out_h·out_w``."""
    layer = shape.layer
    if not isinstance(layer, ConvSpec):
        return 0
    channels = shape.input[0] // max(layer.groups, 1)
    return layer.kernel_h * layer.kernel_w * channels * shape.output[1] * shape.output[2]


def estimate_training_memory(
    shapes: list[LayerShape], batch: int, optimizer: str = "sgd"
) -> MemoryEstimate:
    """Bytes per :class:`MemoryEstimate`: ``4·(stored + (1 + slots)·learnable)`` for the
    parameters, ``4·2·batch·outputs`` per layer (output and delta), ``4·`` the largest conv
    column buffer."""
    slots = OPTIMIZER_SLOTS.get(optimizer, 1)
    parameters = activations = scratch = 0
    largest, largest_bytes = None, -1
    for shape in shapes:
        held = FLOAT_BYTES * (shape.stored_count + (1 + slots) * shape.param_count)
        held_activations = FLOAT_BYTES * 2 * max(batch, 1) * shape.outputs
        parameters += held
        activations += held_activations
        scratch = max(scratch, FLOAT_BYTES * _conv_scratch(shape))
        if held + held_activations > largest_bytes:
            largest, largest_bytes = shape, held + held_activations
    return MemoryEstimate(parameters, activations, scratch, largest, max(largest_bytes, 0))


def format_bytes(count: int) -> str:
    """``1536`` → ``1.50 KiB`` (binary units up to PiB)."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            return f"{value:.0f} B" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{value:.2f} PiB"


def physical_memory() -> int | None:
    """This machine's physical memory in bytes, or None where the OS does not say."""
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_training_memory(
    net: NetSpec, batch: int, optimizer: str = "sgd", limit: int | None = None
) -> MemoryEstimate | None:
    """The estimate for training ``net``; a ConfigError naming the largest layer when it is
    more than ``limit`` bytes (default: this machine's physical memory). None when the shapes
    cannot be inferred (those errors are reported by whoever builds the net)."""
    try:
        shapes = infer_shapes(net)
    except ConfigError:
        return None
    estimate = estimate_training_memory(shapes, batch, optimizer)
    limit = physical_memory() if limit is None else limit
    if limit is not None and estimate.total > limit and estimate.largest is not None:
        layer = estimate.largest.layer
        raise _error(
            layer,
            f"training would need about {format_bytes(estimate.total)} of memory (this layer "
            f"alone {format_bytes(estimate.largest_bytes)} at batch {batch}), more than this "
            f"machine's {format_bytes(limit)}",
        )
    return estimate
