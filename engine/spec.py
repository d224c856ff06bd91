"""The one internal description of a training run.

Both config formats (darknet ``.cfg`` and Caffe solver/net prototxt or YAML) are parsed by
``engine.config`` into these frozen dataclasses. Nothing outside ``engine/config/`` knows a
foreign key name: framework conventions are *named fields* here (``momentum_style``,
``grad_reduction``, ``convention``, ``accumulate``), never hidden branches on the file format.

Units and conventions used throughout:

* tensors are float32, NCHW;
* ``minibatch`` is the number of images in one forward/backward pass (darknet ``batch /
  subdivisions``, Caffe ``batch_size``), ``accumulate`` the number of passes per update
  (darknet ``subdivisions``, Caffe ``iter_size``), so one update sees
  ``minibatch * accumulate`` images;
* an :class:`Origin` says where a value came from: a file and 1-based line, ``--set``, or a
  default (``line is None``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Framework = Literal["darknet", "caffe"]
Severity = Literal["error", "warning"]
Phase = Literal["train", "test"]


# --------------------------------------------------------------------------------------------
# Provenance and diagnostics
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Origin:
    """Where a resolved value came from.

    ``file`` is a path, ``"--set"`` for a command-line override, or ``"default"``; ``line`` is
    1-based, or ``None`` when there is no line (defaults, overrides).
    """

    file: str
    line: int | None = None

    def __str__(self) -> str:
        if self.file == "default":
            return "default"
        return f"{self.file}:{self.line}" if self.line is not None else self.file


DEFAULT = Origin("default")


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in a config: an error stops the run, a warning is reported."""

    severity: Severity
    file: str
    line: int | None
    key: str | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        key = f" [{self.key}]" if self.key else ""
        return f"{where}: {self.severity}{key}: {self.message}"


class ConfigError(Exception):
    """A config (or override) could not be turned into a spec.

    Carries every diagnostic collected so far (errors and warnings), so the CLI can print them
    all and exit with code 1.
    """

    def __init__(self, diagnostics: list[Diagnostic] | tuple[Diagnostic, ...]):
        self.diagnostics = tuple(diagnostics)
        errors = [d for d in self.diagnostics if d.severity == "error"] or list(self.diagnostics)
        super().__init__("\n".join(str(d) for d in errors))


# --------------------------------------------------------------------------------------------
# Learning-rate schedule
# --------------------------------------------------------------------------------------------

DarknetPolicy = Literal[
    "constant", "step", "steps", "exp", "poly", "sigmoid", "random", "sgdr", "cosine"
]
CaffePolicy = Literal["fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid", "cosine"]


@dataclass(frozen=True)
class ScheduleSpec:
    """A learning-rate policy, in its framework's own arithmetic and iteration convention.

    ``convention`` decides both the formulas' float arithmetic and how iterations are counted:

    * ``"darknet"``: the rate is a function of the batch number ``b``; the k-th update
      (k = 1, 2, ...) uses ``rate(k)`` because ``seen`` is incremented before the update;
      counters are unsigned 64-bit as in pjreddie/darknet; ``burn_in`` composes with every
      policy (``lr * (b/burn_in)^power`` while ``b < burn_in``).
    * ``"caffe"``: the rate is a function of ``it``, the number of updates already applied
      (0-based): the first update uses ``rate(0)``.

    Field meanings (unused fields keep their defaults):

    ``base_lr``: darknet ``learning_rate`` / Caffe ``base_lr``.
    ``gamma``: exp/inv/sigmoid/step (Caffe) and exp/sigmoid (darknet).
    ``power``: darknet ``power`` (burn-in, poly, random; default 4) / Caffe ``power``.
    ``step``: darknet ``step`` / Caffe ``stepsize``.
    ``scale``: darknet ``scale`` of the ``step`` policy.
    ``steps``/``scales``: darknet ``steps``/``scales``; Caffe ``stepvalue`` goes to ``steps``.
    ``max_iter``: darknet ``max_batches`` / Caffe ``max_iter`` (poly, sgdr/cosine cycle).
    ``burn_in``: darknet burn-in batches (0 = none).
    ``warmup``: linear warm-up iterations (extra; 0 = none) composed in front of any policy.
    ``seed``: seeds the glibc ``rand()`` stream of darknet's ``random`` policy.
    ``cycle``/``cycle_mult``/``lr_min``: SGDR / cosine annealing with warm restarts.
    ``lr_scaling``/``reference_batch``/``scaled_batch``/``lr_factor``/``lr_warmup`` (ours,
    ``--lr-scaling``, ``--lr-warmup``): when the batch B (``scaled_batch``) differs from the
    config's own ``reference_batch`` B0,
    every rate is multiplied by ``lr_factor`` = B/B0 (``linear``, Goyal et al.) or sqrt(B/B0)
    (``sqrt``); ``lr_warmup`` N > 0 ramps the factor linearly from 1 to ``lr_factor`` over the
    first N updates (Goyal's gradual warm-up: the u-th update uses 1 + (factor − 1)·u/N).
    """

    convention: Framework
    policy: str
    base_lr: float
    gamma: float = 1.0
    power: float = 4.0
    step: int = 1
    scale: float = 1.0
    steps: tuple[int, ...] = ()
    scales: tuple[float, ...] = ()
    max_iter: int = 0
    burn_in: int = 0
    warmup: int = 0
    seed: int = 0
    cycle: int = 0
    cycle_mult: float = 2.0
    lr_min: float = 0.0
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    reference_batch: int = 0
    scaled_batch: int = 0
    lr_factor: float = 1.0
    lr_warmup: int = 0


# --------------------------------------------------------------------------------------------
# Initialisation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FillerSpec:
    """How a parameter blob is initialised.

    Caffe types: ``constant`` (value), ``uniform`` (min, max), ``gaussian`` (mean, std,
    sparse), ``xavier`` and ``msra`` (variance_norm: ``fan_in``/``fan_out``/``average``),
    ``positive_unitball``.
    darknet types (bit-exact with glibc ``rand()``): ``darknet_conv``
    (``sqrt(2/(size*size*c/groups)) * rand_normal()``) and ``darknet_connected``
    (``sqrt(2/inputs) * rand_uniform(-1, 1)``).
    """

    type: str = "constant"
    value: float = 0.0
    min: float = 0.0
    max: float = 1.0
    mean: float = 0.0
    std: float = 1.0
    sparse: int = -1
    variance_norm: Literal["fan_in", "fan_out", "average"] = "fan_in"


@dataclass(frozen=True)
class ParamMult:
    """Per-blob multipliers: Caffe ``param { lr_mult decay_mult }``.

    darknet has no such block; its conventions are expressed with these too: biases and
    batch-norm scales get ``decay_mult = 0`` (darknet never decays them) and the layer's
    ``learning_rate=`` key becomes ``lr_mult`` on every blob.
    """

    lr_mult: float = 1.0
    decay_mult: float = 1.0


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class LayerBase:
    """Fields every layer has.

    ``name``: darknet layers are named by their index in the cfg (``"0"``, ``"1"``, ...), Caffe
    layers by their ``name``. ``phases``: the phases the layer runs in (Caffe ``include``).
    ``origin``: the section header / ``layer {`` line.
    ``stop_backward``: darknet ``stopbackward`` (the backward pass stops at this layer).
    ``dontsave``/``dontload``: darknet ``.weights`` skips the layer when writing/reading.
    ``bottoms``/``tops``: Caffe blob names the layer reads and writes. Empty ``bottoms`` means
    darknet's chain rule (the previous layer's output, plus a graph layer's named sources);
    given, each bottom is the output of the LAST earlier layer (in the same phase) with that
    top (Caffe in-place tops: the last writer wins) or one of the data layer's tops
    (``NetSpec.input_tops``).
    """

    name: str
    origin: Origin = DEFAULT
    phases: frozenset[str] = frozenset({"train", "test"})
    stop_backward: bool = False
    dontsave: bool = False
    dontload: bool = False
    bottoms: tuple[str, ...] = ()
    tops: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ConvSpec(LayerBase):
    """Convolution (darknet ``[convolutional]``, Caffe ``Convolution``).

    Cross-correlation with zero padding ``pad_h``/``pad_w`` on every side,
    ``out = (in + 2*pad - dilation*(k-1) - 1) // stride + 1``.
    ``batch_normalize``: darknet's in-layer batch norm (biases act as the BN shift).
    ``activation``: darknet activation applied in the layer (``"linear"`` for Caffe).
    ``darknet_1x1_shortcut``: reproduce darknet's CPU shortcut that skips im2col for size 1
    (and so ignores stride and padding).
    ``param_order``: the framework's blob order (see ``engine.model.shapes.param_blobs``): darknet
    ``biases, [scales, rolling_mean, rolling_variance], weights``; Caffe ``weights, bias``.
    ``params``: one ParamMult per blob, in that order.
    """

    kind: Literal["conv"] = "conv"
    param_order: Framework = "caffe"
    filters: int
    kernel_h: int
    kernel_w: int
    stride_h: int = 1
    stride_w: int = 1
    pad_h: int = 0
    pad_w: int = 0
    dilation: int = 1
    groups: int = 1
    bias: bool = True
    batch_normalize: bool = False
    activation: str = "linear"
    weight_filler: FillerSpec = FillerSpec()
    bias_filler: FillerSpec = FillerSpec()
    params: tuple[ParamMult, ...] = ()
    darknet_1x1_shortcut: bool = False


@dataclass(frozen=True, kw_only=True)
class ConnectedSpec(LayerBase):
    """Fully connected (darknet ``[connected]``, Caffe ``InnerProduct``): ``y = x Wᵀ + b``,
    W of shape (outputs, inputs), input flattened in CHW order.

    ``param_order``: darknet ``biases, weights, [scales, rolling_mean, rolling_variance]``;
    Caffe ``weights, bias``. ``params``: one ParamMult per blob, in that order.
    """

    kind: Literal["connected"] = "connected"
    param_order: Framework = "caffe"
    outputs: int
    bias: bool = True
    batch_normalize: bool = False
    activation: str = "linear"
    weight_filler: FillerSpec = FillerSpec()
    bias_filler: FillerSpec = FillerSpec()
    params: tuple[ParamMult, ...] = ()


@dataclass(frozen=True, kw_only=True)
class PoolSpec(LayerBase):
    """Max or average pooling.

    ``size_rule`` decides the output size and the window origin:

    * ``"darknet"`` (``[maxpool]``): ``pad_h``/``pad_w`` hold darknet's *total* ``padding``
      (default size-1); ``out = (in + padding - size)//stride + 1``; windows start at
      ``-(padding//2)``; cells outside the image are ``-FLT_MAX``.
    * ``"ceil"`` / ``"floor"`` (Caffe ``Pooling``, ``round_mode``): ``pad`` per side,
      ``out = ceil_or_floor((in + 2*pad - k)/stride) + 1``, minus one if padded and the last
      window starts at or past ``in + pad``.
    * ``global_pooling`` (darknet ``[avgpool]``, Caffe ``global_pooling``): kernel = H×W.
    """

    kind: Literal["pool"] = "pool"
    method: Literal["max", "ave"]
    kernel_h: int = 1
    kernel_w: int = 1
    stride_h: int = 1
    stride_w: int = 1
    pad_h: int = 0
    pad_w: int = 0
    size_rule: Literal["darknet", "ceil", "floor"] = "ceil"
    global_pooling: bool = False


@dataclass(frozen=True, kw_only=True)
class DropoutSpec(LayerBase):
    """Inverted dropout with keep-scale ``1/(1-p)``.

    ``style="darknet"``: in place on the previous layer's output, one ``rand_uniform(0,1)``
    draw per element from the glibc stream (drop when ``r < p``).
    ``style="caffe"``: Bernoulli(1-p) mask from the engine's generator.
    """

    kind: Literal["dropout"] = "dropout"
    probability: float = 0.5
    style: Framework = "caffe"


@dataclass(frozen=True, kw_only=True)
class ActivationSpec(LayerBase):
    """A standalone element-wise activation (Caffe ``ReLU``/``Sigmoid``/``TanH``).

    ``activation`` uses darknet's names where they coincide: ``relu`` (with
    ``negative_slope``: Caffe's leaky ReLU), ``logistic`` (Caffe Sigmoid), ``tanh``.
    """

    kind: Literal["activation"] = "activation"
    activation: str
    negative_slope: float = 0.0


@dataclass(frozen=True, kw_only=True)
class BatchNormSpec(LayerBase):
    """A standalone batch-norm layer.

    ``style="caffe"``: Caffe ``BatchNorm`` (no affine part; three blobs: mean sum, variance
    sum, scale factor; ``use_global_stats`` None = phase-dependent).
    ``style="darknet"``: darknet ``[batchnorm]`` (parsed; darknet's CPU path cannot run it).
    """

    kind: Literal["batchnorm"] = "batchnorm"
    style: Framework = "caffe"
    use_global_stats: bool | None = None
    moving_average_fraction: float = 0.999
    eps: float = 1e-5
    params: tuple[ParamMult, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ScaleSpec(LayerBase):
    """Caffe ``Scale``: per-channel ``y = gamma * x (+ beta)``."""

    kind: Literal["scale"] = "scale"
    bias_term: bool = False
    filler: FillerSpec = FillerSpec(type="constant", value=1.0)
    bias_filler: FillerSpec = FillerSpec()
    params: tuple[ParamMult, ...] = ()


@dataclass(frozen=True, kw_only=True)
class SoftmaxSpec(LayerBase):
    """darknet ``[softmax]``: softmax per group (with temperature) and, when truth is given,
    cross-entropy with delta ``t - p`` and cost ``Σ -log p`` over nonzero targets."""

    kind: Literal["softmax"] = "softmax"
    groups: int = 1
    temperature: float = 1.0
    noloss: bool = False


@dataclass(frozen=True, kw_only=True)
class CostSpec(LayerBase):
    """darknet ``[cost]``: ``sse`` (L2), ``smooth`` (smooth-L1), ``L1``, ``masked``, ...,
    delta scaled by ``scale``."""

    kind: Literal["cost"] = "cost"
    cost_type: str = "sse"
    scale: float = 1.0


@dataclass(frozen=True, kw_only=True)
class SoftmaxLossSpec(LayerBase):
    """Caffe ``SoftmaxWithLoss``: ``-log(max(p_label, FLT_MIN)) / normalizer``.

    ``normalization``: ``full``, ``valid`` (default), ``batch_size`` or ``none``.
    """

    kind: Literal["softmax_loss"] = "softmax_loss"
    normalization: Literal["full", "valid", "batch_size", "none"] = "valid"
    ignore_label: int | None = None
    loss_weight: float = 1.0


@dataclass(frozen=True, kw_only=True)
class AccuracySpec(LayerBase):
    """Caffe ``Accuracy``: correct when fewer than ``top_k`` classes score ``>=`` the true
    class's score (ties count against)."""

    kind: Literal["accuracy"] = "accuracy"
    top_k: int = 1
    ignore_label: int | None = None


@dataclass(frozen=True, kw_only=True)
class ShortcutSpec(LayerBase):
    """A residual sum (darknet ``[shortcut]``) of two earlier outputs.

    Inputs: the previous layer's output ``x`` (the chain input) and the output ``a`` of layer
    ``source`` (a layer name; darknet names layers by their index). Forward, as darknet's
    ``shortcut_cpu``: ``y = x``, then over the overlapping region
    ``y[k, j·sample, i·sample] = alpha·y + beta·a[k, j·stride, i·stride]`` with
    ``stride = max(1, w_a/w_y)``, ``sample = max(1, w_y/w_a)`` and the smaller channel count,
    then ``activation`` in place. The output keeps the previous layer's shape.
    """

    kind: Literal["shortcut"] = "shortcut"
    source: str
    alpha: float = 1.0
    beta: float = 1.0
    activation: str = "linear"


@dataclass(frozen=True, kw_only=True)
class RouteSpec(LayerBase):
    """A channel concatenation (darknet ``[route]``) of the outputs of the layers named in
    ``sources``, in that order (one source: a copy). Per image, the sources' flat outputs are
    laid end to end; when every source has the same H×W this is a concat along channels,
    otherwise the output is a flat vector (darknet sets ``out_h = out_w = out_c = 0``).

    ``groups``/``group_id`` (AlexeyAB/darknet, CSP nets): each source contributes only its
    ``group_id``-th of ``groups`` equal slices of its per-image output (with channels first,
    that slice's channels), so the output has ``1/groups`` of the values and channels."""

    kind: Literal["route"] = "route"
    sources: tuple[str, ...]
    groups: int = 1
    group_id: int = 0


@dataclass(frozen=True, kw_only=True)
class EltwiseSpec(LayerBase):
    """Caffe ``Eltwise`` over 2+ bottoms of one shape: ``sum`` (``y = Σ coeffs_i·x_i``,
    coeffs default 1), ``prod`` (``y = Π x_i``; ``stable_prod_grad``: the input gradient is
    ``dy·Π_{j≠i} x_j``, else ``dy·y/x_i``) or ``max`` (first maximum wins as Caffe's strict
    ``>``: ties between bottoms 0 and 1 go to bottom 1, later ties to the earlier bottom)."""

    kind: Literal["eltwise"] = "eltwise"
    operation: Literal["sum", "prod", "max"] = "sum"
    coeffs: tuple[float, ...] = ()
    stable_prod_grad: bool = True


@dataclass(frozen=True, kw_only=True)
class ConcatSpec(LayerBase):
    """Caffe ``Concat`` along ``axis`` of the N×C×H×W blob (N×K for a flat one), as written:
    negative counts from the end (Caffe's ``CanonicalAxisIndex``, resolved with the bottoms'
    shapes in ``engine.model.shapes``). ``axis_key``: the key it came from (``axis`` or the
    deprecated ``concat_dim``), for errors."""

    kind: Literal["concat"] = "concat"
    axis: int = 1
    axis_key: str = "axis"


@dataclass(frozen=True, kw_only=True)
class ReshapeSpec(LayerBase):
    """Caffe ``Flatten`` (``shape = ()``: ``(C·H·W, 1, 1)``) and ``Reshape`` (``shape``: the
    per-image dims after the batch, ``0`` = copy the input's dim, ``-1`` = inferred). The data
    are copied unchanged (same memory order); the gradient flows back the same way."""

    kind: Literal["reshape"] = "reshape"
    shape: tuple[int, ...] = ()


@dataclass(frozen=True, kw_only=True)
class SplitSpec(LayerBase):
    """Caffe ``Split``: every top is a copy of the bottom; backward the tops' diffs add up."""

    kind: Literal["split"] = "split"


@dataclass(frozen=True, kw_only=True)
class SilenceSpec(LayerBase):
    """Caffe ``Silence``: reads its bottoms, outputs nothing, passes no gradient."""

    kind: Literal["silence"] = "silence"


@dataclass(frozen=True, kw_only=True)
class LRNSpec(LayerBase):
    """Caffe ``LRN``.

    ``across``: ``y = x·(k + alpha/size·Σ_{c' in window} x_{c'}²)^-beta`` over ``size``
    channels centred on c (zero-padded). ``within``: ``y = x·(1 + alpha·avg(x²))^-beta``,
    avg over a size×size window, zero padding (size−1)/2 counted in the divisor (Caffe quirk:
    ``k`` is ignored there, the shift is 1; Caffe composes Split, Power, AVE pooling, Power
    and Eltwise PROD).
    """

    kind: Literal["lrn"] = "lrn"
    local_size: int = 5
    alpha: float = 1.0
    beta: float = 0.75
    k: float = 1.0
    region: Literal["across", "within"] = "across"


@dataclass(frozen=True, kw_only=True)
class PowerSpec(LayerBase):
    """Caffe ``Power``: ``y = (shift + scale·x)^power``."""

    kind: Literal["power"] = "power"
    power: float = 1.0
    scale: float = 1.0
    shift: float = 0.0


@dataclass(frozen=True, kw_only=True)
class CaffeSoftmaxSpec(LayerBase):
    """Caffe ``Softmax`` as a layer (axis 1, per spatial position):
    ``y_c = exp(x_c − max) / Σ exp(x − max)``; backward ``dx = y·(dy − Σ_c dy·y)``."""

    kind: Literal["caffe_softmax"] = "caffe_softmax"


@dataclass(frozen=True, kw_only=True)
class EuclideanLossSpec(LayerBase):
    """Caffe ``EuclideanLoss``: ``1/(2N)·Σ (a − b)²`` with N the batch; both bottoms get
    the gradient (``±loss_weight·(a − b)/N``)."""

    kind: Literal["euclidean_loss"] = "euclidean_loss"
    loss_weight: float = 1.0


@dataclass(frozen=True, kw_only=True)
class SigmoidCrossEntropyLossSpec(LayerBase):
    """Caffe ``SigmoidCrossEntropyLoss``: the stable
    ``−Σ [x·(t − [x≥0]) − log(1 + exp(x − 2x·[x≥0]))] / normalizer``; gradient
    ``(σ(x) − t)·loss_weight/normalizer``. Caffe quirk: the default ``normalization`` is
    BATCH_SIZE here (``valid`` only with ``normalize: true``), unlike SoftmaxWithLoss."""

    kind: Literal["sigmoid_ce_loss"] = "sigmoid_ce_loss"
    normalization: Literal["full", "valid", "batch_size", "none"] = "batch_size"
    ignore_label: int | None = None
    loss_weight: float = 1.0


@dataclass(frozen=True, kw_only=True)
class ReorgSpec(LayerBase):
    """darknet ``[reorg]`` (``reorg_layer.c``), a permutation of the previous image's values.

    ``mode``: ``"reorg"`` (``stride``, ``reverse``), ``"flatten"`` (C×H×W ↔ H×W×C memory
    order; ``reverse`` picks the direction) or ``"extra"`` (a flat copy followed by ``extra``
    zeros). The ``reorg`` index map is darknet's CPU code ``reorg_cpu``, including its quirk:
    ``reverse=0`` calls it with ``forward=0``, so the output is the inverse map read over the
    INPUT's W×H×C; see :mod:`engine.backends.cpu.reshape`. Output shape: ``reverse=0`` →
    ``(C·s², H/s, W/s)``, ``reverse=1`` → ``(C/s², H·s, W·s)``; ``flatten`` keeps the shape;
    ``extra`` gives ``C·H·W + extra`` flat values. darknet quirk: the backward pass ASSIGNS the
    previous layer's delta (``reorg_cpu``/``copy_cpu`` write, they do not add).
    """

    kind: Literal["reorg"] = "reorg"
    stride: int = 1
    reverse: bool = False
    mode: Literal["reorg", "flatten", "extra"] = "reorg"
    extra: int = 0


@dataclass(frozen=True, kw_only=True)
class CropSpec(LayerBase):
    """darknet ``[crop]`` (``crop_layer.c``): a ``crop_height``×``crop_width`` window of the
    previous image, mapped to ``2·x − 1`` (``noadjust``: ``x``).

    Training (darknet's CPU ``forward_crop_layer``): one random offset and, with ``flip``, one
    random horizontal flip per BATCH (not per image); test: the centre window
    ``((H − h)/2, (W − w)/2)`` (C integer division), no flip. ``saturation``/``exposure``
    (darknet applies them only on the GPU, ``levels_image_kernel``): when not 1 and the image
    has 3 channels, each training image's HSV saturation and value are multiplied by a random
    factor in ``[1, s]`` or its reciprocal. darknet quirk: the backward pass sends no gradient
    to the layers before the crop.
    """

    kind: Literal["crop"] = "crop"
    crop_height: int
    crop_width: int
    flip: bool = False
    saturation: float = 1.0
    exposure: float = 1.0
    noadjust: bool = False


LayerSpec = (
    ConvSpec
    | ConnectedSpec
    | PoolSpec
    | DropoutSpec
    | ActivationSpec
    | BatchNormSpec
    | ScaleSpec
    | SoftmaxSpec
    | CostSpec
    | SoftmaxLossSpec
    | AccuracySpec
    | ShortcutSpec
    | RouteSpec
    | EltwiseSpec
    | ConcatSpec
    | ReshapeSpec
    | SplitSpec
    | SilenceSpec
    | LRNSpec
    | PowerSpec
    | CaffeSoftmaxSpec
    | EuclideanLossSpec
    | SigmoidCrossEntropyLossSpec
    | ReorgSpec
    | CropSpec
)


@dataclass(frozen=True)
class InputSpec:
    """The image shape one sample has when it enters the first layer."""

    channels: int
    height: int
    width: int


@dataclass(frozen=True)
class NetSpec:
    """A network: layers run in order; each consumes the previous one's output, except the
    graph layers (:class:`ShortcutSpec`, :class:`RouteSpec`), which name the layers they read."""

    name: str
    input: InputSpec
    layers: tuple[LayerSpec, ...]
    #: Caffe: the data layer's tops (``data``, ``label``, ...), the names layers' ``bottoms``
    #: use for the network input (the first) and the truth (the others)
    input_tops: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------
# Solver (update rule and loop)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SolverSpec:
    """The update rule and the training loop's bookkeeping.

    ``semantics`` picks the update family; ``momentum_style`` and ``grad_reduction`` name the
    conventions it implies:

    * darknet: ``lr_outside`` (``U += -decay*B*W; W += (lr/B)*U; U *= m``) and ``sum``
      (gradients summed over the B images of all subdivisions);
    * Caffe: ``lr_inside`` (``h = m*h + lr*lr_mult*(g + decay*decay_mult*w); w -= h``) and
      ``mean`` (the loss is averaged over the batch; ``iter_size`` passes are divided).

    ``optimizer``: ``sgd``, ``adam`` (darknet, GPU formula) or Caffe's ``sgd``, ``nesterov``,
    ``adagrad``, ``rmsprop``, ``adadelta``, ``adam``.
    ``clip_gradients``: Caffe's global-L2-norm clip threshold, negative = off.
    ``display``/``average_loss``/``test_*``/``snapshot*``: loop bookkeeping (Caffe names; the
    darknet loop fills what it has).
    """

    semantics: Framework
    optimizer: str = "sgd"
    momentum: float = 0.9
    decay: float = 0.0
    regularization: Literal["L2", "L1"] = "L2"
    minibatch: int = 1
    accumulate: int = 1
    max_iter: int = 0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    rms_decay: float = 0.99
    clip_gradients: float = -1.0
    momentum_style: Literal["lr_outside", "lr_inside"] = "lr_inside"
    grad_reduction: Literal["sum", "mean"] = "mean"
    display: int = 0
    average_loss: int = 1
    test_interval: int = 0
    test_iter: int = 0
    #: Caffe: one ``test_iter`` per test net (``test_iter`` repeated; the first is ``test_iter``)
    test_iters: tuple[int, ...] = ()
    test_initialization: bool = True
    snapshot: int = 0
    snapshot_prefix: str = ""
    random_seed: int = -1

    @property
    def batch(self) -> int:
        """Images per weight update (darknet ``B = Bm*S``; Caffe ``batch_size*iter_size``)."""
        return self.minibatch * self.accumulate


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DarknetAugmentSpec:
    """darknet's classifier data augmentation (``[net]`` keys, ``train_classifier``), applied
    by the sampler when the data images are larger than the net (``width``×``height``):
    ``min_ratio``/``max_ratio`` (default ``min_crop``/``max_crop`` ÷ ``width``: the random
    shorter-side size), ``angle`` (degrees), ``aspect``, ``hue``, ``saturation``, ``exposure``;
    see :mod:`engine.data.darknet_augment`. ``center`` (darknet: centre-crop in training too)."""

    width: int
    height: int
    min_ratio: float = 1.0
    max_ratio: float = 2.0
    angle: float = 0.0
    aspect: float = 1.0
    hue: float = 0.0
    saturation: float = 1.0
    exposure: float = 1.0
    center: bool = False


@dataclass(frozen=True)
class DataSourceSpec:
    """Where one split's images come from and how they are preprocessed.

    ``source``: a dataset name (``mnist``, ``cifar10``, ``synthetic-digits``, ...), a path
    (Caffe LMDB directory, ``.npz``, darknet list file) or ``None`` (resolved later).
    Preprocessing is ``(pixel - mean) * scale`` (Caffe ``transform_param``; darknet uses
    ``scale = 1/255`` and no mean). ``shuffle``: darknet samples randomly, Caffe reads in order.
    ``augment``: darknet's crop/augmentation, used when the images are larger than the net.
    """

    source: str | None = None
    batch_size: int = 1
    backend: str = ""
    scale: float = 1.0
    mean_file: str | None = None
    mean_values: tuple[float, ...] = ()
    mirror: bool = False
    crop_size: int = 0
    shuffle: bool = False
    origin: Origin = DEFAULT
    augment: DarknetAugmentSpec | None = None


@dataclass(frozen=True)
class TestNetSpec:
    """A Caffe test net after the first (``test_state`` / ``test_iter`` repeated,
    ``Solver::InitTestNets``): ``name`` (its ``test_state`` stages, else ``#i``), ``phase``
    (the tag in ``LayerBase.phases`` of the layers its NetState keeps: ``test1``, ``test2``,
    ...) and its data layer's ``source``."""

    name: str
    phase: str
    source: DataSourceSpec | None = None


@dataclass(frozen=True)
class DataSpec:
    """The data of each net: ``train``, ``test`` (the first test net's; Caffe test net #0),
    ``more_tests`` (Caffe's further test nets, #1, #2, ...), ``test_name`` (test net #0's
    name when there are several, else empty)."""

    train: DataSourceSpec = DataSourceSpec()
    test: DataSourceSpec | None = None
    classes: int = 0
    more_tests: tuple[TestNetSpec, ...] = ()
    test_name: str = ""


# --------------------------------------------------------------------------------------------
# Simulated mixed precision
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrecisionSpec:
    """Simulated storage precision and loss scaling (``--precision``, ``--loss-scale``, ...;
    darknet ``[net] loss_scale=``; see ``engine.training.mixed`` for the model).

    ``precision``: the storage format of weights used by forward/backward, layer outputs,
    deltas and weight gradients (``fp32``: the plain float32 engine, nothing rounded).
    ``loss_scale``: ``none``; ``static`` (``scale`` fixed: AlexeyAB darknet's ``loss_scale``,
    whose arithmetic the darknet SGD rule follows: ``lr/S``, ``decay·B·S``, scaled momentum);
    ``dynamic`` (``torch.amp.GradScaler``: start at ``scale``, ×``backoff`` on a non-finite
    gradient (update skipped), ×``growth`` after ``growth_interval`` clean updates).
    ``master_weights``: the update runs on a float32 master copy (False: the weights
    themselves stay in the low precision, so a too-small update is really lost).
    """

    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    loss_scale: Literal["none", "static", "dynamic"] = "none"
    scale: float = 1.0
    growth: float = 2.0
    backoff: float = 0.5
    growth_interval: int = 2000
    master_weights: bool = True

    @property
    def active(self) -> bool:
        """Whether anything differs from the plain float32 engine."""
        return self.precision != "fp32" or self.loss_scale != "none" or not self.master_weights


# --------------------------------------------------------------------------------------------
# The whole run
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    """Everything needed to train: the resolved config with provenance.

    ``origins`` maps a dotted field path (``"solver.momentum"``, ``"schedule.base_lr"``,
    ``"layers.3.filters"``) to where its value came from; ``raw`` keeps the config's own
    resolved key/value pairs (for display and the run folder).
    """

    format: Framework
    config_path: str
    net: NetSpec
    solver: SolverSpec
    schedule: ScheduleSpec
    data: DataSpec = DataSpec()
    precision: PrecisionSpec = PrecisionSpec()
    origins: dict[str, Origin] = field(default_factory=dict, compare=False, hash=False)
    raw: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    diagnostics: tuple[Diagnostic, ...] = ()
