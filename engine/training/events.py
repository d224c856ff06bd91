"""What a training run reports: small frozen event records, yielded by
:func:`engine.training.session.train`.

The loop never prints; the CLI chooses sinks (the Rich dashboard on stderr, one JSON object per
event on stdout with ``--json``). Every event has :meth:`Event.to_json`, a plain ``dict`` whose
``"event"`` member names the event type (the class name in snake case) and whose other members
are the dataclass fields, JSON-ready: tuples become lists, nested records objects, and
non-finite floats the strings ``"nan"``, ``"inf"``, ``"-inf"`` so that every line stays strict
JSON.

The schema (event names and their members) is :data:`EVENT_TYPES` → :func:`schema`; the README
documents it and a test checks emitted lines against it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

#: version of the event schema written into ``run_started`` and ``summary.json``
SCHEMA_VERSION = 1


def json_value(value: Any) -> Any:
    """A value made strict-JSON-ready: dataclasses → dicts, tuples → lists, NumPy scalars →
    Python numbers, non-finite floats → ``"nan"``/``"inf"``/``"-inf"`` strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: json_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(json_value(v) for v in value)
    if hasattr(value, "item") and callable(value.item):  # NumPy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@dataclass(frozen=True)
class Event:
    """Base of every event: ``to_json()`` gives ``{"event": <snake name>, **fields}``."""

    kind: ClassVar[str] = "event"

    def to_json(self) -> dict[str, Any]:
        """The event as a JSON-ready dict (see the module docstring)."""
        out: dict[str, Any] = {"event": self.kind}
        for f in dataclasses.fields(self):
            out[f.name] = json_value(getattr(self, f.name))
        return out

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.kind = _snake(cls.__name__)


@dataclass(frozen=True)
class RunStarted(Event):
    """The run is set up and about to train.

    ``config``: the resolved config (``engine.training.runfolder.resolved_config``); ``semantics``:
    the
    update rule driving it (darknet or caffe); ``start_iteration``: updates already applied
    (non-zero on ``--resume``); ``max_iter``: the iteration the run stops at;
    ``images_per_update``: darknet ``batch`` (= minibatch·subdivisions), Caffe
    ``batch_size·iter_size``; ``convention``: how every ``iteration`` of this run is numbered
    (``darknet``: the batch number ``b``, the k-th update is ``b = k``; ``caffe``: ``it``, the
    updates applied before this one, the k-th update is ``it = k − 1``; tests and checkpoints
    are numbered by the updates applied in both) and ``iteration_convention`` that rule in
    words; ``smoothed_loss_name``: the metrics name of the smoothed loss
    (``avg_loss_ema`` or ``smoothed_loss_window<N>``) and ``smoothed_loss_definition`` its
    formula; ``out_dir``: the run folder (empty without one); ``display_every``: the display
    interval (Caffe ``display``); ``eval_every``/``checkpoint_every``: test and checkpoint
    intervals in updates (0 = only at the end).
    """

    config_path: str
    format: str
    semantics: str
    net: str
    optimizer: str
    start_iteration: int
    max_iter: int
    images_per_update: int
    minibatch: int
    accumulate: int
    train_images: int
    test_images: int
    dataset: str
    seed: int
    device: str
    out_dir: str
    resumed: bool
    smoothed_loss_name: str
    smoothed_loss_definition: str
    display_every: int
    eval_every: int
    checkpoint_every: int
    config: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    convention: str = "darknet"
    iteration_convention: str = ""


@dataclass(frozen=True)
class Status(Event):
    """A message about what the run is doing (e.g. "compiling kernels"); ``busy`` True while a
    long one-time step runs (the dashboard shows a spinner)."""

    message: str
    busy: bool = False


@dataclass(frozen=True)
class StepFinished(Event):
    """One weight update done.

    ``iteration``: the update's number in the run's convention (``RunStarted.convention``:
    darknet batch number ``b = k`` for the k-th update, Caffe ``it = k − 1``; the schedule's
    index of the rate it used, so ``lr-schedule`` rows join on it); ``updates``: updates
    applied so far, this one included (k); ``seen``: images seen
    (darknet's counter; Caffe: ``iteration·images_per_update``); ``epoch = seen / train
    images``; ``lr``: the rate this update used; ``loss``: the raw loss of the update (darknet:
    mean per-image loss ``Σ cost / (subdivisions·minibatch)``; Caffe: ``Σ pass losses /
    iter_size``); ``smoothed_loss``: darknet ``avg = .9·avg + .1·loss`` (first value = first
    loss) or Caffe's mean of the last ``average_loss`` losses; ``elapsed_s``: wall seconds since
    the run (or the resumed part) started; ``images_per_s``: steady-state training throughput
    of this session, images of the updates after its first over their wall time, tests and
    checkpoints excluded (None until a second update: the first includes kernel compilation
    and set-up, reported as ``startup_s`` in ``summary.json``); ``eta_s``: seconds to
    ``max_iter`` at the pace of the last updates (tests and checkpoints included; None until
    two updates are timed).
    """

    iteration: int
    seen: int
    epoch: float
    lr: float
    loss: float
    smoothed_loss: float
    elapsed_s: float
    images_per_s: float | None
    updates: int | None = None
    eta_s: float | None = None


@dataclass(frozen=True)
class LayerNorms:
    """Norms of one layer's learnable blobs in one update, aggregated over its blobs:
    ``w_norm = sqrt(Σ‖w_b‖²)`` before the update, ``dw_norm = sqrt(Σ‖Δw_b‖²)`` of the applied
    change, ``ratio = dw_norm / w_norm`` (0 when ``w_norm = 0``), ``g_norm = sqrt(Σ‖g_b‖²)``
    of this update's gradient, sign-free: darknet the sum over the batch's images of
    ``−∂L/∂θ`` (without the momentum darknet carries in its gradient buffer), Caffe the
    accumulated diff divided by ``iter_size`` (before clipping, normalisation and
    regularisation); None when not measured."""

    layer: str
    w_norm: float
    dw_norm: float
    ratio: float
    g_norm: float | None = None


@dataclass(frozen=True)
class NormsReported(Event):
    """Per-layer norms of update ``iteration`` (numbered as ``StepFinished.iteration``;
    every update goes to the metrics file; the
    event is emitted every display interval). ``grad_norm``: Caffe's global gradient L2 norm
    when ``clip_gradients`` is on (else ``None``); ``clip_scale``: the clip factor applied."""

    iteration: int
    layers: tuple[LayerNorms, ...]
    grad_norm: float | None = None
    clip_scale: float | None = None


@dataclass(frozen=True)
class LayerPrecision:
    """One layer's simulated-precision measurements in one update (fractions in [0, 1]; None
    where the layer has no such values): ``grad_underflow``: of its weight-gradient values
    non-zero in float32, the share that round to zero in the storage format;
    ``delta_underflow``: the same over its output deltas (all passes of the update);
    ``update_lost``: of its weights whose float32 update is non-zero, the share whose stored
    low-precision value does not change (with master weights: what would have been lost)."""

    layer: str
    grad_underflow: float | None = None
    delta_underflow: float | None = None
    update_lost: float | None = None


@dataclass(frozen=True)
class PrecisionReported(Event):
    """Simulated mixed precision, every update of a run with ``--precision`` other than fp32,
    a loss scale or ``--no-master-weights`` (numbered as ``StepFinished.iteration``).
    ``precision``: the storage format; ``loss_scale``: the scale this update's backward used
    (1 without scaling); ``overflow``: a weight gradient was non-finite (``skipped``: the
    update was skipped, GradScaler's rule; AlexeyAB's static scale zeroes the values and
    updates); ``skipped_updates``: updates skipped so far in the run; ``next_scale``: the scale
    the next update uses; ``layers``: per layer, :class:`LayerPrecision`."""

    iteration: int
    precision: str
    loss_scale: float
    overflow: bool
    skipped: bool
    skipped_updates: int
    next_scale: float
    layers: tuple[LayerPrecision, ...] = ()


@dataclass(frozen=True)
class LossOutput:
    """One loss output of a Caffe test (``Solver::Test``'s ``Test net output #i``): the
    loss layer's top ``name``, its ``value`` (the unweighted loss, ``Σ_f32 batch values /
    test_iter``), its ``loss_weight`` and ``weighted``, the float32 ``loss_weight·value``
    (Caffe prints ``(* w = w·value loss)`` when w ≠ 0)."""

    name: str
    value: float
    loss_weight: float = 1.0
    weighted: float = 0.0


@dataclass(frozen=True)
class EvalFinished(Event):
    """A test pass on the test split, of the weights after ``iteration`` updates: ``loss``
    (mean over the test batches) and top-1 ``accuracy`` (fraction correct) over ``images``
    predictions, made on ``distinct_images`` different images (fewer when Caffe's
    ``test_iter`` wraps around the test set).

    ``non_finite``: predictions whose scores held a NaN or an infinity. They are never counted
    as correct where the framework would (Caffe's Accuracy counts one whose every comparison
    with NaN is false); darknet's ``top_k`` picks a class for them, which counts when it is the
    label. ``framework_accuracy``: the accuracy the framework itself would print, when it
    differs from ``accuracy`` (else None). ``rolling_stats_weight``: darknet batch norm only:
    the weight ``0.99^n`` the zero start of the rolling mean/variance still carries after
    ``n`` training passes (darknet tests with them as they are; None when the net has none or
    its statistics came from a weights file). ``test_net``: which test net (Caffe's
    ``Testing net (#i)``: one per ``test_iter``/``test_state``), ``test_net_name``: its
    ``test_state`` stages (``test-on-train``), or ``#i``; empty when the run has one.
    ``accuracy`` is None for a net that reports none (Caffe: no ``Accuracy`` layer in the
    test net, e.g. the MNIST autoencoder; darknet: no ``[softmax]`` classifier); ``loss`` is
    the net's total (Caffe ``Σ loss_weight·loss``) and ``outputs`` each Caffe loss output.
    """

    iteration: int
    loss: float
    accuracy: float | None
    images: int
    distinct_images: int | None = None
    non_finite: int = 0
    framework_accuracy: float | None = None
    rolling_stats_weight: float | None = None
    test_net: int = 0
    test_net_name: str = ""
    outputs: tuple[LossOutput, ...] = ()


@dataclass(frozen=True)
class CheckpointSaved(Event):
    """Parameters and full state written after ``iteration`` updates. ``reason``:
    ``periodic`` (``--checkpoint-every`` / Caffe ``snapshot``), ``final``, ``interrupt``.
    ``files``: paths written (weights ``.npz``, the state, and at the end
    ``final.weights``/``final.caffemodel``)."""

    iteration: int
    reason: str
    files: tuple[str, ...]


@dataclass(frozen=True)
class Diverged(Event):
    """A non-finite loss or parameter: ``iteration`` is the update that produced it (numbered
    as ``StepFinished.iteration``), ``layer``
    the first layer with a non-finite value (``"loss"`` when only the loss is), ``what`` a
    description; ``last_checkpoint`` the last good checkpoint kept (empty when none)."""

    iteration: int
    layer: str
    what: str
    last_checkpoint: str


@dataclass(frozen=True)
class Interrupted(Event):
    """The run was stopped by a signal (``SIGINT``/``SIGTERM``) after ``iteration`` updates;
    a checkpoint was written first (``checkpoint``)."""

    iteration: int
    signal: str
    checkpoint: str


@dataclass(frozen=True)
class RunFinished(Event):
    """The run ended. ``status``: ``done``, ``diverged`` or ``interrupted``; ``summary``: the
    content of ``summary.json`` (final loss and accuracy, images/s, wall time, versions, seed)."""

    status: str
    iteration: int
    summary: dict = field(default_factory=dict)


EVENT_TYPES: tuple[type[Event], ...] = (
    RunStarted,
    Status,
    StepFinished,
    NormsReported,
    PrecisionReported,
    EvalFinished,
    CheckpointSaved,
    Diverged,
    Interrupted,
    RunFinished,
)


def schema() -> dict[str, tuple[str, ...]]:
    """``{event name: member names}`` for every event type (the ``--json`` contract)."""
    return {cls.kind: ("event", *(f.name for f in dataclasses.fields(cls))) for cls in EVENT_TYPES}
