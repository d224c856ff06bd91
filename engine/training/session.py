"""The training loop: a generator of :mod:`engine.training.events` around
:class:`engine.training.step.Trainer`.

:class:`TrainingSession` sets a run up (data, backend, trainer, run folder; every problem raises
before the first event) and :meth:`TrainingSession.events` runs it, yielding events and never
printing. Per update it:

1. calls ``Trainer.train_iteration`` (ONE weight update in darknet's or Caffe's loop semantics:
   subdivisions / ``iter_size``, rate per update, ``seen``);
2. smooths the loss as the framework displays it (:class:`LossSmoother`: darknet
   ``avg = .9·avg + .1·loss``, Caffe's ``average_loss`` window);
3. aggregates the per-segment norms (weights, gradient, update) to layers, appends a
   metrics row, yields :class:`~engine.training.events.StepFinished` (and
   :class:`~engine.training.events.NormsReported` every display interval);
4. on a non-finite loss or parameter yields :class:`~engine.training.events.Diverged` (the last good
   checkpoint stays) and stops;
5. tests on the test split every ``eval_every`` updates (Caffe ``test_interval``; also before
   the first update when ``test_initialization``), and the final weights at the end, however
   the run ends (a Caffe config in ``Solver::Solve``'s place, after the final snapshot, with a
   status where Solve itself would not test), unless ``--eval-every 0``;
6. checkpoints every ``checkpoint_every`` updates (Caffe ``snapshot``: ``iter_<N>.npz`` plus
   darknet ``<cfg>_<N>.weights`` or Caffe ``<prefix>_iter_<N>.caffemodel``, and the full
   state) and at the end (``final.npz``, ``final.weights`` for darknet nets,
   ``final.caffemodel`` for Caffe nets);
7. when ``stop()`` names a signal, checkpoints, yields
   :class:`~engine.training.events.Interrupted` and tests the weights it stopped with.

Numbering: every event and metrics row numbers an update as the framework does
(:func:`iteration_label`: darknet's batch number, Caffe's 0-based ``it``); tests and
checkpoints by the updates applied. Speed: :class:`Throughput` (steady state, start-up apart).

Resume: the state file holds the trainer state (parameters, gradient buffers — darknet's SGD
momentum lives there — optimizer state, RNG streams, ``seen``, ``iteration``, Caffe multistep
step), both samplers' positions and generator states, and the loss smoothing, so that N updates
straight and k updates + resume to N give identical parameters.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dnupdate.engine.data import (
    CATALOG,
    BatchSampler,
    DataError,
    Dataset,
    open_dataset,
    resolve_source,
)
from dnupdate.engine.data.catalog import canonical_name
from dnupdate.engine.data.errors import check_label_range
from dnupdate.engine.data.resolve import split_in_name
from dnupdate.engine.model.network import native_framework
from dnupdate.engine.spec import DataSourceSpec, NetSpec, RunSpec
from dnupdate.engine.training.events import (
    SCHEMA_VERSION,
    CheckpointSaved,
    Diverged,
    EvalFinished,
    Event,
    Interrupted,
    LayerNorms,
    LayerPrecision,
    LossOutput,
    NormsReported,
    PrecisionReported,
    RunFinished,
    RunStarted,
    Status,
    StepFinished,
)
from dnupdate.engine.training.runfolder import (
    TEST_COLUMNS,
    RunFolder,
    RunFolderError,
    metric_columns,
    publish,
    resolved_config,
    truncate_metrics,
)
from dnupdate.engine.training.step import labels_are_values, reports_accuracy
from dnupdate.engine.training.versions import package_versions

#: without ``test_iter`` (darknet): test images per periodic test, and for the final test
PERIODIC_TEST_IMAGES = 1000
FINAL_TEST_IMAGES = 10000


class TrainSetupError(Exception):
    """A run cannot start: data that does not fit the net, no iteration limit, a device that
    is not there. ``str()`` names the file or option and the problem."""


@dataclass(frozen=True)
class TrainOptions:
    """Command-line choices layered over the config.

    ``data``: a source for both splits (``NAME`` or ``npz:PATH``), replacing the config's;
    ``max_iters``: stop after this many updates in total (the schedule keeps the config's
    ``max_batches``/``max_iter``); ``eval_every``/``checkpoint_every``: None = the config's
    ``test_interval``/``snapshot`` (darknet: a tenth of the run / none), 0 = never (a final
    checkpoint still happens; ``eval_every`` 0 given here also skips the test of the final
    weights every other run ends with, see ``TrainingSession._final_test_due``);
    ``display_every``: None = the config's ``display`` (the console's interval only: Caffe's
    extra forward after the last update follows the config's ``display``);
    ``shuffle``: None = the config's (darknet samples randomly, Caffe reads in order);
    ``train_size``/``test_size``: keep only the first N images (synthetic sets: generate N);
    ``seed``: None = the config's (see :func:`resolve_seed`);
    ``allow_nonfinite``: load ``weights`` holding NaN/inf with a warning instead of refusing.
    """

    data: str | None = None
    data_dir: str | None = None
    weights: str | None = None
    clear: bool = False
    allow_nonfinite: bool = False
    max_iters: int | None = None
    seed: int | None = None
    semantics: str | None = None
    device: str = "cpu"
    threads: int | None = None
    shuffle: bool | None = None
    eval_every: int | None = None
    checkpoint_every: int | None = None
    display_every: int | None = None
    train_size: int | None = None
    test_size: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The options as stored in ``run.json`` (``--resume`` rebuilds the run from them)."""
        return dict(self.__dict__)

    @classmethod
    def check_saved(cls, saved: dict[str, Any], where: str) -> dict[str, Any]:
        """``run.json``'s options, checked against the fields: a known name and a value of the
        field's type (``bool``, ``int``, ``str``, or null where the field allows None); else
        :class:`RunFolderError` for ``where`` naming the option."""
        fields = {f.name: str(f.type) for f in dataclasses.fields(cls)}
        kinds = {"bool": (bool,), "int": (int,), "str": (str,)}
        for name, value in saved.items():
            if name not in fields:
                raise RunFolderError(where, f"damaged: unknown option {name!r} in 'options'")
            allowed = fields[name].replace(" ", "").split("|")
            if value is None and "None" in allowed:
                continue
            types = tuple(t for kind in allowed for t in kinds.get(kind, ()))
            if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
                raise RunFolderError(
                    where, f"damaged: option {name!r} is {value!r}, expected {fields[name]}"
                )
        return saved


# --------------------------------------------------------------------------------------------
# Loss smoothing
# --------------------------------------------------------------------------------------------


class LossSmoother:
    """The smoothed loss each framework displays.

    darknet (``classifier.c:train_classifier``): ``avg`` starts at −1; each update, if
    ``avg == −1`` then ``avg = loss``; then ``avg = .9·avg + .1·loss`` (so the first value is
    the first loss). Named ``avg_loss_ema``.

    Caffe (``Solver::UpdateSmoothedLoss``, float32 throughout as ``Dtype = float``): while
    fewer than ``N = average_loss`` losses are kept, ``smoothed = (smoothed·(n−1) + loss)/n``;
    then the oldest is replaced, ``smoothed += (loss − losses[k])/N`` with
    ``k = (updates so far) mod N``. Named
    ``smoothed_loss_window<N>``. (Caffe resets the window when a run resumes; here it is part
    of the saved state, so the curve continues.)
    """

    def __init__(self, semantics: str, average_loss: int = 1) -> None:
        self.semantics = semantics
        self.window = max(int(average_loss), 1)
        self.value = -1.0 if semantics == "darknet" else 0.0
        self.losses: list[float] = []
        self.count = 0

    @property
    def name(self) -> str:
        """The metrics column name, after the definition."""
        if self.semantics == "darknet":
            return "avg_loss_ema"
        return f"smoothed_loss_window{self.window}"

    @property
    def definition(self) -> str:
        if self.semantics == "darknet":
            return "darknet avg = .9*avg + .1*loss (first avg = first loss)"
        return f"Caffe average_loss: mean of the last {self.window} losses"

    def update(self, loss: float) -> float:
        """Fold in one update's loss; returns the smoothed value."""
        if self.semantics == "darknet":
            # darknet: float avg_loss; if (avg_loss == -1) avg_loss = loss; (float arithmetic)
            avg = np.float32(loss) if self.value == -1.0 else np.float32(self.value)
            self.value = float(np.float32(avg * np.float32(0.9) + np.float32(loss) * 0.1))
        else:
            self.value = self._caffe_update(np.float32(loss))
        self.count += 1
        return self.value

    def _caffe_update(self, loss: np.float32) -> float:
        """``Solver::UpdateSmoothedLoss`` with ``Dtype = float``: every operation rounds to
        float32 (the int counts converted to float first)."""
        f32 = np.float32
        value = f32(self.value)
        if len(self.losses) < self.window:
            self.losses.append(float(loss))
            n = len(self.losses)
            return float(f32(f32(f32(value * f32(n - 1)) + loss) / f32(n)))
        k = self.count % self.window
        step = f32(f32(loss - f32(self.losses[k])) / f32(self.window))
        self.losses[k] = float(loss)
        return float(f32(value + step))

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value, "losses": list(self.losses), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])
        self.losses = [float(v) for v in state["losses"]]
        self.count = int(state["count"])


# --------------------------------------------------------------------------------------------
# Throughput
# --------------------------------------------------------------------------------------------


class Throughput:
    """The speed figures of one session, the same in every output (console, ``--json``,
    ``summary.json``).

    ``startup_s``: from the session's start to the end of its first update: set-up, kernel
    compilation (Numba compiles on first use), an initial test, the first update itself.
    ``images_per_s``: steady state, the images of the updates after the first over the wall
    time from the end of the first update to the end of the last, less the time spent in
    tests and checkpoints. ``eta_seconds``: the remaining updates at the pace of the last
    :data:`RECENT_UPDATES` updates (tests and checkpoints left out of it), plus the session's
    mean test and checkpoint time per update so far (they will recur): a long test inside the
    recent window no longer makes the ETA jump."""

    RECENT_UPDATES = 20

    def __init__(self, images_per_update: int) -> None:
        self.images_per_update = images_per_update
        self.t0: float | None = None
        self.startup_s: float | None = None
        self.steady_t0 = 0.0
        self.steady_updates = 0
        self.paused_s = 0.0
        self._pending_pause = 0.0  # counts once an update follows it
        self.last_t = 0.0
        #: (time, updates applied, pause time counted so far) of the recent updates
        self.recent: deque[tuple[float, int, float]] = deque(maxlen=self.RECENT_UPDATES)

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def session_seconds(self) -> float:
        return 0.0 if self.t0 is None else time.perf_counter() - self.t0

    def update_done(self, updates: int) -> None:
        """Record the end of an update; ``updates``: updates applied so far."""
        now = time.perf_counter()
        if self.startup_s is None:
            self.startup_s = now - (self.t0 if self.t0 is not None else now)
            self.steady_t0 = now
        else:
            self.steady_updates += 1
            self.paused_s += self._pending_pause
        self._pending_pause = 0.0
        self.last_t = now
        self.recent.append((now, updates, self.paused_s))

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent inside is left out of the steady-state rate (tests, checkpoints) once
        an update follows it (a pause after the last update lies outside the measured span)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.startup_s is not None:
                self._pending_pause += time.perf_counter() - start

    def images_per_s(self) -> float | None:
        """Steady-state images per second; None before a second update."""
        seconds = self.last_t - self.steady_t0 - self.paused_s
        if self.steady_updates == 0 or seconds <= 0:
            return None
        return self.steady_updates * self.images_per_update / seconds

    def eta_seconds(self, remaining_updates: int) -> float | None:
        """Seconds for ``remaining_updates`` at the recent pace; None before two updates."""
        if remaining_updates <= 0:
            return 0.0
        if len(self.recent) < 2:
            return None
        (t_first, u_first, p_first), (t_last, u_last, p_last) = self.recent[0], self.recent[-1]
        if u_last <= u_first:
            return None
        pace = ((t_last - t_first) - (p_last - p_first)) / (u_last - u_first)
        pauses = self.paused_s / self.steady_updates if self.steady_updates else 0.0
        return remaining_updates * (pace + pauses)


# --------------------------------------------------------------------------------------------
# Display numbering
# --------------------------------------------------------------------------------------------


def iteration_label(convention: str, updates: int) -> int:
    """The number the framework gives the ``updates``-th update (1-based), the one every
    output of a run uses (console, metrics, ``--json``, ``lr-schedule``, ``plot``).

    darknet (``convention="darknet"``): the batch number ``b = seen/batch`` after the update,
    ``b = k`` for the k-th update, which uses ``rate(b)`` (``seen`` is incremented before the
    update) and which darknet's log line (``classifier.c``: ``get_current_batch(net)`` after
    ``train_network``) and its ``<cfg>_<b>.weights`` carry. Caffe: ``it = k − 1``, the updates
    already applied; the k-th update uses ``rate(it)`` and Caffe logs it as "Iteration it" (its
    loss is the forward of the weights after ``it`` updates). Tests and checkpoints are numbered
    by the updates applied in both (Caffe "Iteration 500, Testing net" tests the weights after
    500 updates)."""
    return updates - 1 if convention == "caffe" else updates


def iteration_convention(convention: str) -> str:
    """:func:`iteration_label`'s rule in one sentence, for headers."""
    if convention == "caffe":
        return (
            "Caffe convention: iteration it = updates applied before the update (0-based); "
            "training row it is the update from it to it+1 updates, with lr rate(it) and the loss "
            "of the weights after it updates (Caffe's 'Iteration it'); tests and checkpoints at "
            "it are of the weights after it updates"
        )
    return (
        "darknet convention: iteration b = batch number seen/batch after the update (1-based); "
        "training row b is the b-th update, with lr rate(b); tests and checkpoints at b are of "
        "the weights after b updates"
    )


def display_label(convention: str, updates: int, every: int) -> int | None:
    """The iteration number the framework's display line carries for update ``updates``
    (1-based, :func:`iteration_label`), or None when the framework shows no line for it.

    darknet (``classifier.c``: ``printf("%ld, %.3f: ...", get_current_batch(net), ...)`` after
    ``train_network``): the update's own batch number; shown every ``every`` updates and for
    the first. Caffe (``Solver::Step``): "Iteration k, loss = …" and ApplyUpdate's
    "Iteration k, lr = …" are logged while ``iter_ = k``, from the forward/backward of the
    update that makes ``iter_`` k + 1 (and with the rate ``rate(k)`` that update uses), when
    ``k % display == 0``: update ``updates`` is shown as ``updates − 1``.
    """
    every = max(int(every), 1)
    label = iteration_label(convention, updates)
    if convention == "caffe":
        return label if label % every == 0 else None
    return label if label % every == 0 or label == 1 else None


# --------------------------------------------------------------------------------------------
# Per-layer norms
# --------------------------------------------------------------------------------------------


class LayerNormTable:
    """Aggregates per-segment norms (:class:`engine.update.rules.UpdateStats` and
    ``IterationResult.grad_norms``) to layers: ``‖w‖_layer = sqrt(Σ_b ‖w_b‖²)`` over the layer's
    learnable blobs b, likewise ``‖Δw‖`` and the gradient norm ``‖g‖``, and
    ``ratio = ‖Δw‖/‖w‖`` (0 when ``‖w‖ = 0``). Running statistics are not learnable and left
    out."""

    def __init__(self, segments) -> None:
        names: list[str] = []
        members: dict[str, list[int]] = {}
        for index, segment in enumerate(segments):
            if not segment.learnable:
                continue
            if segment.layer not in members:
                names.append(segment.layer)
                members[segment.layer] = []
            members[segment.layer].append(index)
        self.layers = names
        self._members = [np.array(members[name], dtype=np.int64) for name in names]

    def norms(self, stats, grad_norms: np.ndarray | None = None) -> tuple[LayerNorms, ...]:
        """The per-layer norms of one update; ``grad_norms``: per-segment gradient norms
        (``g_norm`` is None without them)."""
        weights = np.asarray(stats.weight_norms, dtype=np.float64)
        steps = np.asarray(stats.step_norms, dtype=np.float64)
        grads = None if grad_norms is None else np.asarray(grad_norms, dtype=np.float64)
        out = []
        for name, index in zip(self.layers, self._members, strict=True):
            w = _quadrature(weights, index)
            dw = _quadrature(steps, index)
            g = None if grads is None else _quadrature(grads, index)
            out.append(LayerNorms(name, w, dw, dw / w if w > 0 else 0.0, g))
        return tuple(out)


def _quadrature(norms: np.ndarray, index: np.ndarray) -> float:
    """``sqrt(Σ_i norms[index_i]²)``: the L2 norm of several blobs from their own norms."""
    return float(np.sqrt(np.sum(norms[index] ** 2)))


# --------------------------------------------------------------------------------------------
# Setting up
# --------------------------------------------------------------------------------------------


def make_backend(device: str = "cpu", threads: int | None = None):
    """The backend for ``--device``: ``cpu`` (Numba threads = ``threads``, None = automatic)
    or ``cuda`` when ``engine.backends.cuda`` is present and ``is_available()``; otherwise
    :class:`TrainSetupError` saying which is missing."""
    if device == "cpu":
        from dnupdate.engine.backends.cpu import CpuBackend

        return CpuBackend(threads=threads)
    if device != "cuda":
        raise TrainSetupError(f"--device: unknown device {device!r} (use cpu or cuda)")
    try:
        from dnupdate.engine.backends import cuda
    except ImportError as exc:
        raise TrainSetupError(
            f"--device cuda: the CUDA backend is not available in this installation ({exc})"
        ) from None
    available = getattr(cuda, "is_available", lambda: False)
    if not available():
        raise TrainSetupError(
            "--device cuda: no CUDA device found (set NUMBA_ENABLE_CUDASIM=1 to use the simulator)"
        )
    backend_class = getattr(cuda, "CudaBackend", None)
    if backend_class is None:
        raise TrainSetupError("--device cuda: the CUDA backend has no CudaBackend class")
    return backend_class()


def _split_source(
    run: RunSpec, options: TrainOptions, split: str, spec: DataSourceSpec | None = None
) -> str | None:
    """The data source of ``split``: ``--data``, else the config's (``spec``'s when given: a
    further Caffe test net's data layer)."""
    source_spec = spec or (run.data.train if split == "train" else run.data.test)
    return options.data or (source_spec.source if source_spec else None)


def _read_split(run: RunSpec, options: TrainOptions, source: str | None, split: str) -> str:
    """The split to read of a source: a Caffe data layer's own path names its split when it
    says one (``mnist_train_lmdb`` read by a TEST net is the train split: Caffe reads the
    LMDB it names, whatever the phase); otherwise (``--data``, darknet) the phase's."""
    if run.format != "caffe" or options.data or not source:
        return split
    return split_in_name(source) or split


def open_split(
    run: RunSpec, options: TrainOptions, split: str, spec: DataSourceSpec | None = None
) -> Dataset | None:
    """The dataset of ``split``; None for a test split the run does not test on: none
    configured, or a Caffe config without ``test_iter`` (see :func:`caffe_tests_disabled`)."""
    source = _split_source(run, options, split, spec)
    if split == "test" and (source is None or caffe_tests_disabled(run)):
        return None
    size = options.train_size if split == "train" else options.test_size
    return open_dataset(
        source, _read_split(run, options, source, split), options.data_dir, size=size
    )


def substitution_note(source: str | None, split: str, data_dir: str | None) -> str | None:
    """A note when a config's data path is not there and the catalog dataset its name refers
    to stands in (Caffe's ``examples/mnist/mnist_train_lmdb`` → ``mnist``, see
    :func:`engine.data.resolve_source`); None when the source was read as given."""
    if not source or canonical_name(source.strip()) or source.startswith("npz:"):
        return None
    try:
        resolved = resolve_source(source, split, data_dir)
    except DataError:
        return None
    if resolved not in CATALOG:
        return None
    return (
        f"{source} is not a dataset folder here: reading the {split} split of {resolved}, "
        "the dataset its name refers to"
    )


def resolve_seed(seed: int | None, run: RunSpec) -> int:
    """The run's seed: ``--seed`` when given, else the config's (Caffe ``random_seed``,
    darknet ``seed=``: ``SolverSpec.random_seed``) when it is set (``>= 0``; Caffe's default
    −1 means "from the clock", which a reproducible simulator does not do), else 0."""
    if seed is not None:
        return int(seed)
    if run.solver.random_seed >= 0:
        return int(run.solver.random_seed)
    return 0


def caffe_tests_disabled(run: RunSpec) -> bool:
    """A Caffe config with ``test_iter`` unset or 0 never tests: ``Solver::InitTestNets``
    makes one test net per ``test_iter`` entry, so without one ``TestAll`` has nothing to run
    (even with a TEST-phase data layer, ``test_interval`` or ``--eval-every``)."""
    return run.format == "caffe" and run.solver.test_iter <= 0


def _check_shape(run: RunSpec, sampler: BatchSampler, dataset: Dataset) -> None:
    want = (run.net.input.channels, run.net.input.height, run.net.input.width)
    if sampler.output_shape != want:
        have = "×".join(map(str, sampler.output_shape))
        hint = ""
        if run.format == "darknet" and sampler.output_shape[0] == want[0]:
            _, height, width = sampler.output_shape
            hint = f" (give the net the data's size: --set height={height} --set width={width})"
        raise TrainSetupError(
            f"{dataset.path or dataset.name}: images are {have} (C×H×W) but the network "
            f"{run.net.name} expects {'×'.join(map(str, want))}{hint}"
        )


def _check_labels(network, dataset: Dataset) -> None:
    """Every label must name one of the network's outputs (``0 <= label < outputs``), checked
    before training: a label past them would otherwise stop the run at its first (or final)
    test with no state written. Raises :class:`engine.data.DataError` naming the first.
    Float targets (HDF5Data): see :func:`_check_targets`."""
    if dataset.has_targets:
        _check_targets(network, dataset)
        return
    if labels_are_values(network):
        return  # one float target per image, whatever its value (Caffe's pair losses)
    outputs = int(np.prod(network.output.shape[1:]))
    check_label_range(
        dataset.path or dataset.name,
        np.asarray(dataset.labels),
        outputs,
        "item",
        f" (the network {network.spec.name} has {outputs} outputs)",
    )


def _check_targets(network, dataset: Dataset) -> None:
    """Float targets (an HDF5 ``label`` of N×k×…) feed losses that compare them with a
    prediction: Caffe's ``EuclideanLoss``/``SigmoidCrossEntropyLoss`` reading the label with
    as many values per image (their ``CHECK_EQ`` of the counts), darknet's ``[cost]`` with
    ``outputs`` values. A layer that reads class labels (``SoftmaxWithLoss``, ``Accuracy``,
    darknet's ``[softmax]``) cannot use them: :class:`engine.data.DataError` naming the file."""
    from dnupdate.engine.model.shapes import LABEL
    from dnupdate.engine.spec import AccuracySpec, SoftmaxLossSpec, SoftmaxSpec

    count = int(np.prod(dataset.label_shape))
    shape = "×".join(map(str, dataset.label_shape))
    where = dataset.path or dataset.name
    if network.native == "darknet":
        readers = [s for s in network.shapes if isinstance(s.layer, SoftmaxSpec)]
        width = int(np.prod(network.output.shape[1:]))
        if readers or width != count:
            raise DataError(
                where,
                f"the labels are float targets of {shape} per image, but the network "
                f"{network.spec.name} "
                + ("reads class labels ([softmax])" if readers else f"has {width} outputs"),
            )
        return
    for layer in network.shapes:
        if LABEL not in layer.bottoms:
            continue
        if isinstance(layer.layer, SoftmaxLossSpec | AccuracySpec):
            raise DataError(
                where,
                f"the labels are float targets of {shape} per image, but layer "
                f"{layer.layer.name} ({layer.layer.origin}) reads class labels",
            )
        if layer.inputs != count:
            raise DataError(
                where,
                f"the labels are float targets of {shape} ({count} values) per image, but "
                f"layer {layer.layer.name} ({layer.layer.origin}) compares them with "
                f"{layer.inputs} values",
            )


def class_count_note(network, dataset: Dataset) -> str | None:
    """A warning when the net has more outputs than the data has classes (Debian's 1000-class
    ImageNet cfgs on CIFAR-10): the extra outputs are never a right answer."""
    outputs = int(np.prod(network.output.shape[1:]))
    if not dataset.classes or outputs <= dataset.classes:
        return None
    if not reports_accuracy(network.spec):
        return None  # not a classifier (the MNIST autoencoder's 784 outputs rebuild the image)
    return (
        f"warning: the network {network.spec.name} has {outputs} outputs but "
        f"{dataset.name} has {dataset.classes} classes: outputs {dataset.classes}.."
        f"{outputs - 1} are never a right answer (the net still trains and reports "
        f"accuracy); give its last layer {dataset.classes} outputs for a {dataset.classes}-class "
        "net"
    )


def default_eval_every(run: RunSpec, max_iter: int) -> int:
    if run.solver.test_interval > 0:
        return run.solver.test_interval
    if run.format == "darknet":
        return max(max_iter // 10, 1)
    return 0


def _absolute(path: str | None) -> str | None:
    """An existing file or folder as an absolute path (so ``--resume`` works from any
    folder); anything else (a dataset name, ``<stdin>``) unchanged."""
    if not path:
        return path
    prefix = "npz:" if path.startswith("npz:") else ""
    candidate = Path(path.removeprefix(prefix))
    return prefix + str(candidate.resolve()) if candidate.exists() else path


def _portable_options(options: TrainOptions) -> dict[str, Any]:
    """The options for ``run.json``, with relative paths made absolute."""
    saved = options.to_json()
    for key in ("data", "data_dir", "weights"):
        saved[key] = _absolute(saved[key])
    return saved


def _nonfinite_layer(where: str) -> str:
    """The layer named in ``IterationResult.non_finite`` (``"layer 3"``,
    ``"blob conv1/0 (weights)"``, ``"loss"``)."""
    if where.startswith("layer "):
        return where.removeprefix("layer ")
    if where.startswith("blob "):
        return where.removeprefix("blob ").split("/", 1)[0]
    return where


# --------------------------------------------------------------------------------------------
# The session
# --------------------------------------------------------------------------------------------


@dataclass
class TestNet:
    """One test net of a run: Caffe's test net #``index`` (``Solver::test_nets_[index]``,
    one per ``test_iter``), its ``name`` (``test_state`` stages; empty when the run has one
    test net), the ``phase`` tag of its layers (``test``, ``test1``, ...), ``test_iter`` and
    its own data (each test net has its data layer and cursor), and its last result."""

    index: int
    name: str
    phase: str
    test_iter: int
    dataset: Dataset
    sampler: BatchSampler
    last: EvalFinished | None = None


@dataclass
class RunData:
    """The batches a run reads: the training set and its sampler, and its test nets (none
    when the run does not test)."""

    train_set: Dataset
    train_sampler: BatchSampler
    test_nets: list[TestNet]


def open_run_data(run: RunSpec, options: TrainOptions, *, seed: int, minibatch: int) -> RunData:
    """The datasets and samplers of a run, as ``dnupdate train`` reads them: the training
    sampler seeded with ``seed`` (batches of ``minibatch``), test net #0 on the test split
    (seed ``seed + 1``, read in order), Caffe's further test nets on their own data layers
    (seed ``seed + 1 + index``, :func:`_more_test_nets`). Checks the images' shape against
    the net (:class:`TrainSetupError`); the labels need the built network and are the
    caller's to check."""
    train_set = open_split(run, options, "train")
    train_spec = run.data.train
    train_sampler = BatchSampler(
        train_set,
        train_spec,
        framework=run.format,
        phase="train",
        seed=seed,
        batch_size=minibatch,
        shuffle=options.shuffle,
    )
    _check_shape(run, train_sampler, train_set)
    test_set = open_split(run, options, "test")
    if test_set is None:
        return RunData(train_set, train_sampler, [])
    test_sampler = BatchSampler(
        test_set,
        run.data.test or train_spec,
        framework=run.format,
        phase="test",
        seed=seed + 1,
        shuffle=False,
    )
    _check_shape(run, test_sampler, test_set)
    first = TestNet(0, run.data.test_name, "test", run.solver.test_iter, test_set, test_sampler)
    return RunData(train_set, train_sampler, [first, *_more_test_nets(run, options, seed)])


def _more_test_nets(run: RunSpec, options: TrainOptions, seed: int) -> list[TestNet]:
    """Caffe's test nets after the first (``test_state``/``test_iter`` repeated), each with
    its own data layer's source (its NetState's), sampler and ``test_iter``."""
    nets = []
    for index, spec in enumerate(run.data.more_tests, start=1):
        source = spec.source or run.data.test or run.data.train
        dataset = open_split(run, options, "test", source)
        assert dataset is not None  # test net #0 has data, so tests are on
        sampler = BatchSampler(
            dataset,
            source,
            framework=run.format,
            phase="test",
            seed=seed + 1 + index,
            shuffle=False,
        )
        _check_shape(run, sampler, dataset)
        iters = run.solver.test_iters
        test_iter = iters[index] if index < len(iters) else run.solver.test_iter
        nets.append(TestNet(index, spec.name, spec.phase, test_iter, dataset, sampler))
    return nets


def batches_of_test(
    sampler: BatchSampler, test_iter: int, final: bool
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The batches of one test. Caffe (``test_iter > 0``): ``test_iter`` batches from where
    the test net's last test stopped (each test net's data cursor persists). Otherwise the
    first :data:`PERIODIC_TEST_IMAGES` test images (:data:`FINAL_TEST_IMAGES` for the final
    test), the last batch cut short."""
    if test_iter > 0:
        for _ in range(test_iter):
            yield sampler.next_batch()
        return
    limit = FINAL_TEST_IMAGES if final else PERIODIC_TEST_IMAGES
    remaining = min(len(sampler.dataset), limit)
    sampler.position = 0
    while remaining > 0:
        images, labels = sampler.next_batch()
        take = min(remaining, len(labels))
        yield images[:take], labels[:take]
        remaining -= take


class TrainingSession:
    """One run, set up and ready to produce events (see the module docstring).

    ``run``: the resolved spec; ``options``: command-line choices; ``folder``: where files go
    (None: nothing is written); ``resume``: continue from ``folder``'s state file;
    ``overrides``/``config_text``/``net_text``: saved into a new run folder.
    Raises :class:`TrainSetupError`, :class:`engine.data.DataError`,
    :class:`engine.formats.weights.WeightsFileError`, :class:`engine.model.network.NetworkError`,
    :class:`engine.spec.ConfigError` or :class:`engine.training.runfolder.RunFolderError`.
    """

    def __init__(
        self,
        run: RunSpec,
        options: TrainOptions,
        *,
        folder: RunFolder | None = None,
        resume: bool = False,
        overrides: tuple[tuple[str, str], ...] = (),
        config_text: str | None = None,
        net_text: str | None = None,
    ) -> None:
        from dnupdate.engine.training.step import Trainer

        self.run = run
        self.options = options
        self.folder = folder
        self.resumed = resume
        self.backend = make_backend(options.device, options.threads)
        self.seed = resolve_seed(options.seed, run)
        self.trainer = Trainer(
            run,
            seed=self.seed,
            backend=self.backend,
            semantics=options.semantics,
            weights=None if resume else options.weights,
            clear=options.clear,
            allow_nonfinite=options.allow_nonfinite,
        )
        self.semantics = self.trainer.semantics
        self.convention = self.trainer.schedule.convention  # how iterations are numbered
        self.overrides = tuple(overrides)
        self._open_data()
        self.max_iter = options.max_iters or self.trainer.solver.max_iter
        if self.max_iter <= 0:
            raise TrainSetupError(
                f"{run.config_path}: no iteration limit (max_batches / max_iter is 0); "
                "set one in the config or give --max-iters"
            )
        #: Caffe nets with several loss outputs: one metrics column per output
        self.output_columns = loss_output_names(run.net) if self.test_nets else []
        self.smoother = LossSmoother(self.semantics, self.trainer.solver.average_loss)
        self.norm_table = LayerNormTable(self.trainer.network.segments)
        self.eval_every = (
            default_eval_every(run, self.max_iter)
            if options.eval_every is None
            else options.eval_every
        )
        if self.test_sampler is None:
            self.eval_every = 0  # nothing to test on (or a Caffe config without test_iter)
        snapshot = run.solver.snapshot
        self.checkpoint_every = (
            options.checkpoint_every if options.checkpoint_every is not None else snapshot
        )
        self.display_every = options.display_every or run.solver.display or 1
        self.previous_elapsed = 0.0
        self.last_eval: EvalFinished | None = None
        self.last_checkpoint = ""
        self._last_loss: float | None = None
        self._last_lr: float | None = None
        self._last_label: int | None = None  # iteration label of the last training row
        self._smoothed_label: int | None = None
        self.timer = Throughput(self.trainer.images_per_update)
        if folder is not None:
            self._prepare_folder(overrides, config_text, net_text)

    # ---- data --------------------------------------------------------------------------------
    def _open_data(self) -> None:
        run = self.run
        data = open_run_data(run, self.options, seed=self.seed, minibatch=self.trainer.minibatch)
        self.train_set, self.train_sampler = data.train_set, data.train_sampler
        _check_labels(self.trainer.network, self.train_set)
        note = class_count_note(self.trainer.network, self.train_set)
        if note:
            self.train_sampler.notes.append(note)
        for net in data.test_nets:
            _check_labels(self.trainer.network, net.dataset)
        self.test_nets: list[TestNet] = data.test_nets
        self.test_set = data.test_nets[0].dataset if data.test_nets else None
        self.test_sampler = data.test_nets[0].sampler if data.test_nets else None

    # ---- the folder --------------------------------------------------------------------------
    def _prepare_folder(self, overrides, config_text: str | None, net_text: str | None) -> None:
        folder = self.folder
        assert folder is not None
        if self.resumed:
            self._load_state()
            # Caffe numbers a training row by the updates before it (it = k - 1)
            offset = 1 if self.convention == "caffe" else 0
            truncate_metrics(folder.path, self.trainer.iteration, train_label_offset=offset)
        else:
            folder.write_config(
                self.run.config_path,
                config_text or "",
                resolved_config(self.run, overrides),
                net_text,
            )
            folder.write_run_info(
                {
                    "config_path": _absolute(self.run.config_path),
                    "overrides": [list(item) for item in overrides],
                    "options": _portable_options(self.options),
                    "versions": package_versions(),
                }
            )
        columns = metric_columns(self.norm_table.layers, self.smoother.name)
        if self.trainer.mixed is not None:  # precision columns go before the test ones
            cut = columns.index(TEST_COLUMNS[0])
            columns[cut:cut] = self.trainer.mixed.column_names()
        if len(self.test_nets) > 1:
            columns.append("test_net")
        if len(self.output_columns) > 1:
            columns += [f"test.{name}" for name in self.output_columns]
        folder.open_metrics(columns)

    def state_dict(self) -> dict[str, Any]:
        """The full resume state (trainer, samplers, smoothing, elapsed time, last test)."""
        state: dict[str, Any] = {
            f"trainer.{key}": value for key, value in self.trainer.state_dict().items()
        }
        state["sampler.train"] = self.train_sampler.state_dict()
        if self.test_sampler is not None:
            state["sampler.test"] = self.test_sampler.state_dict()
        for net in self.test_nets[1:]:
            state[f"sampler.test{net.index}"] = net.sampler.state_dict()
        if len(self.test_nets) > 1:
            state["more_evals"] = [
                None if n.last is None else n.last.to_json() for n in self.test_nets[1:]
            ]
        state["smoother"] = self.smoother.state_dict()
        state["elapsed_s"] = self.previous_elapsed + self._session_seconds()
        state["last_eval"] = None if self.last_eval is None else self.last_eval.to_json()
        return state

    def _load_state(self) -> None:
        """Restore the folder's resume state; a damaged one raises :class:`RunFolderError`
        saying what is damaged and which earlier checkpoint is intact."""
        folder = self.folder
        assert folder is not None
        try:
            state = folder.load_state()
            self._check_state(state)
            self._restore(state)
        except RunFolderError as exc:
            raise RunFolderError(exc.path, exc.message + self._earlier_checkpoint()) from None
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            message = f"damaged: {type(exc).__name__}: {exc}" + self._earlier_checkpoint()
            raise RunFolderError(folder.resume_state, message) from None
        self.last_checkpoint = str(folder.resume_state)

    def _check_state(self, state: dict[str, Any]) -> None:
        """A loaded state's members have the types a state written by :meth:`state_dict`
        has, counters are not negative, and the parameters fit this network; else
        ``ValueError`` naming the member."""
        for key in ("trainer.params", "trainer.grads"):
            value = state.get(key)
            if not isinstance(value, np.ndarray) or not np.issubdtype(value.dtype, np.floating):
                raise ValueError(f"member {key!r} is missing or not a float array")
        if state["trainer.params"].shape != self.trainer.network.params.shape:
            raise ValueError("member 'trainer.params' does not fit this network")
        for key in ("trainer.seen", "trainer.iteration", "trainer.current_step"):
            value = state.get(key, 0)
            if type(value) is not int or value < 0:
                raise ValueError(f"member {key!r} is {value!r}; expected an integer >= 0")
        for key in ("trainer.semantics", "trainer.rng"):
            if not isinstance(state.get(key), str):
                raise ValueError(f"member {key!r} is missing or not a string")
        for key in ("sampler.train", "smoother"):
            if not isinstance(state.get(key), dict):
                raise ValueError(f"member {key!r} is missing or not an object")
        elapsed = state.get("elapsed_s", 0.0)
        if type(elapsed) not in (int, float) or not elapsed >= 0:
            raise ValueError(f"member 'elapsed_s' is {elapsed!r}; expected seconds >= 0")
        last = state.get("last_eval")
        if last is not None and not (
            isinstance(last, dict) and {"iteration", "loss", "accuracy", "images"} <= set(last)
        ):
            raise ValueError("member 'last_eval' is not a test result")

    def _restore(self, state: dict[str, Any]) -> None:
        trainer_state = {
            key.removeprefix("trainer."): value
            for key, value in state.items()
            if key.startswith("trainer.")
        }
        self.trainer.load_state_dict(trainer_state)
        self.train_sampler.load_state_dict(state["sampler.train"])
        if self.test_sampler is not None and "sampler.test" in state:
            self.test_sampler.load_state_dict(state["sampler.test"])
        more = state.get("more_evals") or []
        for net in self.test_nets[1:]:
            if f"sampler.test{net.index}" in state:
                net.sampler.load_state_dict(state[f"sampler.test{net.index}"])
            if net.index - 1 < len(more) and more[net.index - 1]:
                net.last = _eval_from_json(more[net.index - 1])
        self.smoother.load_state_dict(state["smoother"])
        self.previous_elapsed = float(state.get("elapsed_s", 0.0))
        last = state.get("last_eval")
        if last:
            self.last_eval = _eval_from_json(last)
            if self.test_nets:
                self.test_nets[0].last = self.last_eval

    def _earlier_checkpoint(self) -> str:
        """The sentence offering the newest intact checkpoint to resume from (or saying that
        none is left)."""
        assert self.folder is not None
        found = self.folder.intact_checkpoint(self._check_state)
        if found is None:
            return "; no checkpoint with an intact full state is left to resume from"
        return f"; an earlier checkpoint is intact: dnupdate train --resume {found}"

    # ---- events ------------------------------------------------------------------------------
    def _session_seconds(self) -> float:
        return self.timer.session_seconds()

    def started_event(self) -> RunStarted:
        """The :class:`RunStarted` event of this session."""
        trainer, run = self.trainer, self.run
        return RunStarted(
            config_path=run.config_path,
            format=run.format,
            semantics=self.semantics,
            net=run.net.name,
            optimizer=trainer.solver.optimizer,
            start_iteration=trainer.iteration,
            max_iter=self.max_iter,
            images_per_update=trainer.images_per_update,
            minibatch=trainer.minibatch,
            accumulate=trainer.accumulate,
            train_images=len(self.train_set),
            test_images=0 if self.test_set is None else len(self.test_set),
            dataset=self.train_set.description or self.train_set.name,
            seed=self.seed,
            device=self.options.device,
            out_dir="" if self.folder is None else str(self.folder.path),
            resumed=self.resumed,
            smoothed_loss_name=self.smoother.name,
            smoothed_loss_definition=self.smoother.definition,
            display_every=self.display_every,
            eval_every=self.eval_every,
            checkpoint_every=self.checkpoint_every,
            config=resolved_config(run, self.overrides),
            versions=package_versions(),
            convention=self.convention,
            iteration_convention=iteration_convention(self.convention),
        )

    def data_notes(self) -> list[str]:
        """What the user should know about the data, once each: a dataset stand-in (e.g. only
        CIFAR-10's first 1,000 test images present) or a computed mean image (Caffe's
        ``mean.binaryproto`` missing)."""
        notes: list[str] = []
        subjects: set[str] = set()
        run = self.run
        specs = [("train", None)] + [("test", None)] * (self.test_set is not None)
        specs += [("test", spec.source) for spec in run.data.more_tests[: len(self.test_nets) - 1]]
        for split, spec in specs:
            source = _split_source(run, self.options, split, spec)
            read = _read_split(run, self.options, source, split)
            note = substitution_note(source, read, self.options.data_dir)
            if note is not None and note not in notes:
                notes.append(note)
        sources = [self.folder, self.trainer, self.train_set, self.train_sampler]
        for net in self.test_nets:
            sources += [net.dataset, net.sampler]
        for source in sources:
            for note in getattr(source, "notes", ()):
                # one line per missing file: the TRAIN and TEST samplers both report a missing
                # mean file (in two wordings); the first, the fuller one, says it
                subject = note.split(" does not exist:", 1)[0]
                if note not in notes and subject not in subjects:
                    notes.append(note)
                    subjects.add(subject)
        return notes

    def events(self, stop: Callable[[], str | None] = lambda: None) -> Iterator[Event]:
        """Run to ``max_iter`` (or divergence, or ``stop()`` returning a signal name),
        yielding events. Files are written as it goes when a folder was given."""
        self.timer.start()
        yield self.started_event()
        for note in self.data_notes():
            yield Status(note)
        trainer = self.trainer
        if trainer.iteration >= self.max_iter:
            yield Status(self._nothing_to_train())
        else:
            yield Status("preparing kernels (compiled once, cached afterwards)", busy=True)
        if self._initial_test_due():
            yield from self._test_all()
        first = True
        while trainer.iteration < self.max_iter:
            signal_name = stop()
            if signal_name:
                yield from self._interrupt(signal_name)
                return
            result = trainer.train_iteration(self.train_sampler.next_batch)
            self.timer.update_done(trainer.iteration)
            if first:
                first = False
                yield Status("training", busy=False)
            yield from self._after_update(result)
            if result.non_finite is not None:
                yield from self._diverge(result)
                return
            if (
                self.eval_every > 0
                and trainer.iteration % self.eval_every == 0
                and trainer.iteration < self.max_iter  # the last test is _finish's
            ):
                with self.timer.paused():
                    yield from self._test_all()
            if (
                self.checkpoint_every > 0
                and trainer.iteration % self.checkpoint_every == 0
                and trainer.iteration < self.max_iter
            ):
                with self.timer.paused():
                    yield self._checkpoint("periodic")
        signal_name = stop()
        if signal_name:
            yield from self._interrupt(signal_name)
            return
        yield from self._finish()

    def _nothing_to_train(self) -> str:
        """The status of a session that starts at or past its end (a finished run resumed,
        or ``.weights`` whose ``seen`` is past ``max_batches``)."""
        trainer = self.trainer
        text = (
            f"nothing to train: {trainer.iteration} updates already done ({trainer.seen} images "
            f"seen), the run stops at {self.max_iter}"
        )
        if self.resumed:
            return text + " (give --max-iters N to go on)"
        if self.options.weights and trainer.seen and not self.options.clear:
            return text + " (the .weights header's seen counts; --clear ignores it)"
        return text

    def _initial_test_due(self) -> bool:
        """The test before the first update of this session (``Solver::Step``'s test at the
        top of its loop: ``iter_ % test_interval == 0 && (iter_ > 0 || test_initialization)``).
        From scratch: with ``test_initialization``. Resumed: a Caffe config tests at once
        when the iteration is a multiple of the interval (Caffe tests again after a restore,
        e.g. at 4000 in the CIFAR-10 quick lr1 resume); a darknet config does not."""
        trainer = self.trainer
        if self.test_sampler is None or self.eval_every <= 0:
            return False
        if trainer.iteration == 0:
            return trainer.solver.test_initialization
        return (
            self.run.format == "caffe"
            and trainer.iteration < self.max_iter  # else _finish tests (or not)
            and trainer.iteration % self.eval_every == 0
        )

    def _after_update(self, result) -> Iterator[Event]:
        smoothed = self.smoother.update(result.loss)
        label = iteration_label(self.convention, result.iteration)
        self._last_loss, self._last_lr = result.loss, result.lr
        self._last_label = self._smoothed_label = label
        seconds = self._session_seconds()
        elapsed = self.previous_elapsed + seconds
        epoch = result.seen / max(len(self.train_set), 1)
        speed = self.timer.images_per_s()
        eta = self.timer.eta_seconds(self.max_iter - result.iteration)
        norms = self.norm_table.norms(result.stats, result.grad_norms)
        if self.folder is not None and self.folder.metrics is not None:
            row: dict[str, Any] = {
                "kind": "train",
                "iteration": label,
                "seen": result.seen,
                "epoch": epoch,
                "lr": result.lr,
                "loss": result.loss,
                self.smoother.name: smoothed,
                "time_s": elapsed,
            }
            for layer in norms:
                row[f"{layer.layer}.w_norm"] = layer.w_norm
                row[f"{layer.layer}.g_norm"] = layer.g_norm
                row[f"{layer.layer}.dw_norm"] = layer.dw_norm
                row[f"{layer.layer}.ratio"] = layer.ratio
            if result.precision is not None:
                row.update(result.precision.columns())
            self.folder.metrics.append(row)
        yield StepFinished(
            label,
            result.seen,
            epoch,
            result.lr,
            result.loss,
            smoothed,
            elapsed,
            speed,
            updates=result.iteration,
            eta_s=eta,
        )
        if result.precision is not None:
            yield self._precision_event(label, result.precision)
        last = result.iteration >= self.max_iter
        if display_label(self.convention, result.iteration, self.display_every) is not None or last:
            stats = result.stats
            yield NormsReported(label, norms, stats.grad_norm, stats.clip_scale)

    def _precision_event(self, label: int, report) -> PrecisionReported:
        """The :class:`PrecisionReported` of one update (the metrics row's numbers)."""
        names = list(dict.fromkeys([*report.delta_underflow, *report.grad_underflow]))
        layers = tuple(
            LayerPrecision(
                name,
                report.grad_underflow.get(name),
                report.delta_underflow.get(name),
                report.update_lost.get(name),
            )
            for name in names
        )
        scaler = self.trainer.mixed.scaler
        return PrecisionReported(
            label,
            self.run.precision.precision,
            report.loss_scale,
            report.overflow,
            report.skipped,
            scaler.skipped,
            scaler.scale,
            layers,
        )

    def _test_batches_iter(
        self, final: bool, net: TestNet
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The batches of a test of ``net`` (:func:`batches_of_test`)."""
        return batches_of_test(net.sampler, net.test_iter, final)

    def _test_all(self, final: bool = False) -> Iterator[EvalFinished]:
        """``Solver::TestAll``: each test net in turn (Caffe's ``Testing net (#i)``)."""
        for net in self.test_nets:
            yield self._evaluate(final, net)

    def _evaluate(self, final: bool = False, net: TestNet | None = None) -> EvalFinished:
        """A test of test net ``net`` (#0 when None): its event, metrics row and last result."""
        net = net or self.test_nets[0]
        result = self.trainer.evaluate(self._test_batches_iter(final, net), phase=net.phase)
        self.trainer.release_eval_networks()  # tests are rare: keep only the train net's buffers
        iteration = self.trainer.iteration
        shown = result.has_accuracy  # a net without Accuracy layer / softmax reports none
        event = EvalFinished(
            iteration,
            result.loss,
            result.accuracy if shown else None,
            result.images,
            distinct_images=min(result.images, len(net.dataset)),
            non_finite=result.non_finite,
            framework_accuracy=result.framework_accuracy if shown else None,
            rolling_stats_weight=self._rolling_stats_weight(),
            test_net=net.index,
            test_net_name=net.name,
            outputs=result.outputs,
        )
        net.last = event
        if net.index == 0:
            self.last_eval = event
        if self.folder is not None and self.folder.metrics is not None:
            row = {
                "kind": "test",
                "iteration": iteration,
                "seen": self.trainer.seen,
                "epoch": self.trainer.seen / max(len(self.train_set), 1),
                "time_s": self.previous_elapsed + self._session_seconds(),
                "test_loss": result.loss,
                "test_accuracy": event.accuracy,
                "test_images": result.images,
                "test_distinct_images": event.distinct_images,
                "test_non_finite": event.non_finite,
            }
            if len(self.test_nets) > 1:
                row["test_net"] = net.index
            if len(self.output_columns) > 1:
                row.update({f"test.{out.name}": out.value for out in event.outputs})
            self.folder.metrics.append(row)
        return event

    def _rolling_stats_weight(self) -> float | None:
        """darknet batch norm: ``0.99^n``, the weight its rolling mean and variance still give
        their zero start after ``n`` training passes (darknet quirk: ``rolling = .99·rolling
        + .01·batch statistic`` from 0, with no correction, and tests use them as they are, so
        early tests see inflated activations: test loss ``inf``, constant accuracy). None for
        nets without darknet batch norm, or whose statistics came from a weights file."""
        net = self.run.net
        if self.options.weights or native_framework(net) != "darknet":
            return None
        if not any(getattr(layer, "batch_normalize", False) for layer in net.layers):
            return None
        passes = self.trainer.seen // max(self.trainer.minibatch, 1)
        return float(0.99**passes)

    # ---- checkpoints and endings ------------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        host = self.backend.to_host
        return {key: host(view) for key, view in self.trainer.network.named_blobs()}

    def _checkpoint(self, reason: str) -> CheckpointSaved:
        from dnupdate.engine.formats.weights import save_npz_weights

        files: list[str] = []
        iteration = self.trainer.iteration
        if self.folder is not None:
            path = self.folder.checkpoint_path(iteration)
            arrays = self._arrays()
            save_npz_weights(path, self.run.net, arrays)
            files.append(str(path))
            files += self._framework_snapshot(arrays, iteration)
            state_file = self.folder.save_state(self.state_dict(), iteration)
            files += [str(self.folder.checkpoint_state_path(iteration)), str(state_file)]
            for written in files:
                publish(written)
            self.last_checkpoint = str(path)
        return CheckpointSaved(iteration, reason, tuple(files))

    def _framework_snapshot(self, arrays: dict[str, np.ndarray], iteration: int) -> list[str]:
        """The parameters in the framework's own file, next to the checkpoint: darknet
        ``<cfg>_<N>.weights``; Caffe ``<snapshot_prefix name>_iter_<N>.caffemodel``
        (``Solver::Snapshot``'s name, kept inside the run folder)."""
        from dnupdate.engine.formats.weights import write_darknet_weights

        assert self.folder is not None
        folder = self.folder.path / "checkpoints"
        stem = Path(self.run.config_path).stem if self.run.config_path != "<stdin>" else "net"
        if self.run.format == "darknet":
            path = folder / f"{stem}_{iteration}.weights"
            write_darknet_weights(path, self.run.net, arrays, self.trainer.seen)
            return [str(path)]
        prefix = Path(self.run.solver.snapshot_prefix).name or stem
        return _write_caffemodel(folder / f"{prefix}_iter_{iteration}.caffemodel", self.run, arrays)

    def _final_files(self) -> list[str]:
        from dnupdate.engine.formats.weights import save_npz_weights, write_darknet_weights

        folder = self.folder
        if folder is None:
            return []
        arrays = self._arrays()
        files = []
        final_npz = folder.path / "final.npz"
        save_npz_weights(final_npz, self.run.net, arrays)
        files.append(str(final_npz))
        if self.run.format == "darknet":
            path = folder.path / "final.weights"
            write_darknet_weights(path, self.run.net, arrays, self.trainer.seen)
            files.append(str(path))
        else:
            written = _write_caffemodel(folder.path / "final.caffemodel", self.run, arrays)
            files += written
        files.append(str(folder.save_state(self.state_dict())))
        for written in files:
            publish(written)
        self.last_checkpoint = str(final_npz)
        return files

    def _final_test_due(self) -> bool:
        """Whether the run ends with a test of its final weights: always (so that the reported
        accuracy is of the weights the run ends with) unless ``--eval-every 0`` asked for none,
        there is no test data (or a Caffe config without ``test_iter``), or the last test is
        already of these weights. Caffe's own rule (``Solver::Solve``: only when ``iter %
        test_interval == 0``) decides nothing but a note: where it would not test, a status
        says the test is dnupdate's."""
        iteration = self.trainer.iteration
        if self.test_sampler is None or self.options.eval_every == 0:
            return False
        return self.last_eval is None or self.last_eval.iteration != iteration

    def _caffe_would_test(self) -> bool:
        """``Solver::Solve``'s own final test: ``iter % test_interval == 0``."""
        return self.eval_every > 0 and self.trainer.iteration % self.eval_every == 0

    def _final_test(self) -> Iterator[Event]:
        """The test of the final weights (see :meth:`_final_test_due`), said to be an addition
        where the framework would not run it."""
        if not self._final_test_due():
            return
        if self.run.format == "caffe" and not self._caffe_would_test():
            interval = self.eval_every
            why = (
                f"iteration {self.trainer.iteration} is not a multiple of test_interval {interval}"
                if interval > 0
                else "test_interval is 0"
            )
            yield Status(
                f"testing the final weights (Caffe's Solve would not test here: {why}; "
                "--eval-every 0 skips it)"
            )
        yield from self._test_all(final=True)

    def _finish(self) -> Iterator[Event]:
        """The end of a run. darknet config: the final test, then the final files. Caffe
        config, in ``Solver::Solve``'s order: the final snapshot, then (when
        ``iter % display == 0``) one more training-phase forward, then the test (when
        ``iter % test_interval == 0``)."""
        if self.run.format == "caffe":
            yield from self._final_checkpoint()
            yield from self._caffe_display_forward()
            yield from self._final_test()
        else:
            yield from self._final_test()
            yield from self._final_checkpoint()
        yield self._finished("done")

    def _final_checkpoint(self) -> Iterator[Event]:
        files = self._final_files()
        if files:
            yield CheckpointSaved(self.trainer.iteration, "final", tuple(files))

    def _caffe_display_forward(self) -> Iterator[Event]:
        """``Solver::Solve`` after the last update, when ``display`` is set and
        ``iter % display == 0``: ``net_->Forward(&loss)`` on the next training batch (BatchNorm
        running statistics and dropout draws advance as in training; no gradient, no update),
        ``UpdateSmoothedLoss(loss)`` and the log line "Iteration <iter>, loss = <smoothed>".
        Runs after the final files are written (Caffe snapshots before it), so a resumed run
        continues from the state without it."""
        every = self.run.solver.display  # the config's (--display-every is only the console's)
        iteration = self.trainer.iteration
        if not every or iteration % every:
            return
        loss = self.trainer.forward_loss(self.train_sampler.next_batch)
        smoothed = self.smoother.update(loss)
        self._smoothed_label = iteration  # Caffe logs it as "Iteration <iter>"
        yield Status(
            f"iteration {iteration}, {self.smoother.name} {smoothed:.6g} (Caffe's extra "
            f"training-phase forward after the last update, loss {loss:.6g})"
        )

    def _diverge(self, result) -> Iterator[Event]:
        where = result.non_finite or "loss"
        layer = _nonfinite_layer(where)
        label = iteration_label(self.convention, result.iteration)
        at = _update_words(label, result.iteration)
        what = f"non-finite value in {where} at {at}"
        if where == "loss":
            # every activation finite but the loss is not (e.g. -log 0): name the loss layer
            losses = [item for item in self.trainer.network.layers if item.has_loss]
            layer = losses[0].name if losses else "loss"
            kind = losses[0].spec.kind if losses else "loss"
            what = f"non-finite loss ({result.loss}) in layer {layer} ({kind}) at {at}"
        yield Diverged(label, layer, what, self.last_checkpoint)
        yield self._finished("diverged", last_good=self.last_checkpoint)

    def _interrupt(self, signal_name: str) -> Iterator[Event]:
        saved = self._checkpoint("interrupt")
        yield saved
        yield Interrupted(self.trainer.iteration, signal_name, self.last_checkpoint)
        if self._final_test_due():
            yield Status(
                f"testing the weights after {self.trainer.iteration} updates (a second "
                "signal skips it; the checkpoint is written)",
                busy=True,
            )
            try:
                events = list(self._test_all(final=True))
            except KeyboardInterrupt:  # the second signal (cli/train_cmd.StopRequest)
                yield Status("final test skipped: stopped by a second signal")
            else:
                yield from events
        yield self._finished("interrupted")

    def summary(self, status: str, last_good: str = "") -> dict[str, Any]:
        """The content of ``summary.json``."""
        seconds = self._session_seconds()
        trainer = self.trainer
        test = self.last_eval
        summary = {
            "status": status,
            "config_path": self.run.config_path,
            "net": self.run.net.name,
            "semantics": self.semantics,
            "convention": self.convention,
            "iteration_convention": iteration_convention(self.convention),
            "iteration": trainer.iteration,
            "max_iter": self.max_iter,
            "seen": trainer.seen,
            "final_loss": self._last_loss,
            "final_lr": self._last_lr,
            "loss_iteration": self._last_label,
            "smoothed_loss_name": self.smoother.name,
            "final_smoothed_loss": None if self.smoother.count == 0 else self.smoother.value,
            "smoothed_loss_iteration": self._smoothed_label,
            **_test_figures(test, non_finite=True),
            "test_is_final": test is not None and test.iteration == trainer.iteration,
            "images_per_s": self.timer.images_per_s(),
            "startup_s": self.timer.startup_s,
            "wall_time_s": self.previous_elapsed + seconds,
            "session_wall_time_s": seconds,
            "seed": self.seed,
            "device": self.options.device,
            "overrides": [f"{key}={value}" for key, value in self.overrides],
            "hyperparameters": self.hyperparameters(),
            "config_values": dict(self.run.raw),
            "versions": package_versions(),
            "last_checkpoint": last_good or self.last_checkpoint,
            "schema_version": SCHEMA_VERSION,
        }
        if len(self.test_nets) > 1:
            summary["test_nets"] = [self._test_net_summary(net) for net in self.test_nets]
        if trainer.mixed is not None:
            summary["precision"] = self._precision_summary()
        return summary

    @staticmethod
    def _test_net_summary(net: TestNet) -> dict[str, Any]:
        """``summary.json``'s ``test_nets`` entry of one test net (its last test)."""
        return {
            "test_net": net.index,
            "name": net.name,
            "test_iter": net.test_iter,
            **_test_figures(net.last, non_finite=False),
        }

    def _precision_summary(self) -> dict[str, Any]:
        """``summary.json``'s ``precision``: the model's settings, the updates skipped and the
        final scale (the one the next update would use) and its growth tracker."""
        spec, scaler = self.run.precision, self.trainer.mixed.scaler
        return {
            "precision": spec.precision,
            "loss_scale_mode": scaler.mode,
            "master_weights": spec.master_weights,
            "skipped_updates": scaler.skipped,
            "final_scale": scaler.scale,
            "growth_tracker": scaler.tracker,
            "scale_growth": spec.growth,
            "scale_backoff": spec.backoff,
            "scale_growth_interval": spec.growth_interval,
        }

    def hyperparameters(self) -> dict[str, Any]:
        """The resolved values a results table compares runs by, in our own names (the
        config's own keys are ``config_values``)."""
        solver, schedule = self.trainer.solver, self.trainer.schedule
        return {
            "optimizer": solver.optimizer,
            "base_lr": schedule.base_lr,
            "lr_policy": schedule.policy,
            "momentum": solver.momentum,
            "decay": solver.decay,
            "images_per_update": self.trainer.images_per_update,
            "minibatch": solver.minibatch,
            "accumulate": solver.accumulate,
            "max_iter": self.max_iter,
            "schedule_max_iter": schedule.max_iter,
            "seed": self.seed,
            "semantics": self.semantics,
            "eval_every": self.eval_every,
            "train_images": len(self.train_set),
            "test_images": 0 if self.test_set is None else len(self.test_set),
            "dataset": self.train_set.description or self.train_set.name,
        }

    def _finished(self, status: str, last_good: str = "") -> RunFinished:
        summary = self.summary(status, last_good)
        if self.folder is not None:
            self.folder.write_summary(summary)
            self.folder.close()
        return RunFinished(status, self.trainer.iteration, summary)


def _update_words(label: int, updates: int) -> str:
    """``iteration L`` (and ``(update k)`` where the convention numbers it otherwise)."""
    if label == updates:
        return f"iteration {label}"
    return f"iteration {label} (update {updates})"


def _test_figures(test: EvalFinished | None, *, non_finite: bool) -> dict[str, Any]:
    """``summary.json``'s figures of one test (all None before the first): loss, accuracy,
    images, distinct images, (``non_finite``: the non-finite predictions,) iteration, outputs."""
    figures = {
        "test_loss": None if test is None else test.loss,
        "test_accuracy": None if test is None else test.accuracy,
        "test_images": None if test is None else test.images,
        "test_distinct_images": None if test is None else test.distinct_images,
    }
    if non_finite:
        figures["test_non_finite"] = None if test is None else test.non_finite
    figures["test_iteration"] = None if test is None else test.iteration
    figures["test_outputs"] = None if test is None else _outputs_dict(test)
    return figures


def _outputs_dict(test: EvalFinished) -> dict[str, float]:
    """``{output name: unweighted value}`` of a Caffe test (summary.json's ``test_outputs``)."""
    return {out.name: out.value for out in test.outputs}


def loss_output_names(net: NetSpec) -> list[str]:
    """A Caffe net's loss outputs (each loss layer's top, in layer order; the names
    ``Solver::Test`` prints); empty for darknet nets."""
    if native_framework(net) != "caffe":
        return []
    names = [layer.tops[0] if layer.tops else layer.name for layer in net.layers if _is_loss(layer)]
    return list(dict.fromkeys(names))


def _is_loss(layer) -> bool:
    return layer.kind in ("softmax_loss", "euclidean_loss", "sigmoid_ce_loss")


def _eval_from_json(last: dict[str, Any]) -> EvalFinished:
    """An :class:`EvalFinished` back from its ``to_json`` form (the resume state)."""
    framework = last.get("framework_accuracy")
    weight = last.get("rolling_stats_weight")
    return EvalFinished(
        int(last["iteration"]),
        _float(last["loss"]),
        None if last["accuracy"] is None else _float(last["accuracy"]),
        int(last["images"]),
        distinct_images=last.get("distinct_images"),
        non_finite=int(last.get("non_finite", 0)),
        framework_accuracy=None if framework is None else _float(framework),
        rolling_stats_weight=None if weight is None else _float(weight),
        test_net=int(last.get("test_net", 0)),
        test_net_name=str(last.get("test_net_name", "")),
        outputs=tuple(
            LossOutput(
                str(o["name"]), _float(o["value"]), _float(o["loss_weight"]), _float(o["weighted"])
            )
            for o in last.get("outputs") or ()
        ),
    )


def _float(value: Any) -> float:
    """A float from a JSON value (non-finite values are stored as "nan"/"inf"/"-inf")."""
    return float(value)


def _write_caffemodel(path: Path, run: RunSpec, arrays: dict[str, np.ndarray]) -> list[str]:
    """``final.caffemodel`` (binary ``NetParameter``, Caffe can load it)."""
    from dnupdate.engine.formats.caffemodel import write_caffemodel

    write_caffemodel(path, run.net, arrays)
    return [str(path)]


__all__ = [
    "LayerNormTable",
    "LossSmoother",
    "TrainOptions",
    "TrainSetupError",
    "TrainingSession",
    "caffe_tests_disabled",
    "display_label",
    "make_backend",
    "package_versions",
    "resolve_seed",
]
