"""One training step, in darknet's or Caffe's loop semantics, on a
:class:`~engine.model.network.Network`.

:class:`Trainer` owns a network, its optimizer, the random stream training continues on and the
counters (``seen``, ``iteration``). :meth:`Trainer.train_iteration` applies exactly ONE weight
update; ``engine.training.session`` builds the loop, events and checkpoints on top of it.

Loop semantics (``--semantics``; the default follows the config's format):

* **darknet** (spec ``darknet.md`` §4, ``network.c:train_network_datum``): per mini-batch of
  ``Bm`` images ``seen += Bm``, forward, backward (gradients are *summed* into ``grads``, on top
  of the momentum the last update left there: darknet quirk, nothing zeroes them); the update
  fires when ``(seen / Bm) % S == 0`` with ``lr = rate(b)``, ``b = seen / (Bm·S)`` evaluated
  AFTER the increment (the k-th update uses ``b = k``). Loss = ``Σ cost / (S·Bm)``, the mean
  per-image loss of the ``B = Bm·S`` images.
* **caffe** (spec ``caffe.md`` §1, ``Solver::Step``): zero the diffs, ``iter_size`` forward/
  backward passes (diffs accumulate), loss ``= Σ loss / iter_size``, ``lr = rate(iter)`` with
  ``iter`` the number of updates already applied, ``ApplyUpdate`` (clip → normalise →
  regularise → update, in :mod:`engine.update.rules`), ``iter += 1``.

The schedule keeps its own convention (``ScheduleSpec.convention``) whichever loop drives it: a
darknet schedule is evaluated at the batch number of the update (``b = k`` for the k-th
update), a Caffe schedule at the number of updates already applied (``k − 1``).

Reported losses are always per image: a darknet net's summed cost is divided by ``Bm``; a Caffe
net's loss is already a mean (``SoftmaxWithLoss`` ``normalization: VALID``).

Random numbers: darknet nets (``darknet_*`` fillers, darknet dropout) draw from one
:class:`~engine.rng.DarknetRandom` seeded like ``srand(seed)``:
:func:`engine.model.initialisation.initialise`
consumes the init draws exactly as ``parse_network_cfg`` does, then the same stream feeds the
dropout masks (one ``rand_uniform(0, 1)`` per element per training forward) and the ``random``
lr policy, as in one darknet process. Caffe nets use a NumPy ``Generator`` seeded with ``seed``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dnupdate.engine.backends.base import Backend
from dnupdate.engine.formats.weights import (
    WeightsFileError,
    load_npz_weights,
    nonfinite_message,
    read_darknet_weights,
)
from dnupdate.engine.model.initialisation import allocate_blobs, initialise
from dnupdate.engine.model.network import Network, NetworkError, native_framework
from dnupdate.engine.rng import DarknetRandom
from dnupdate.engine.spec import Framework, NetSpec, RunSpec
from dnupdate.engine.training.events import LossOutput
from dnupdate.engine.training.mixed import MixedPrecision, PrecisionReport, attach_output_rounding
from dnupdate.engine.update.rules import Optimizer, OptimizerStateError, UpdateStats, make_optimizer
from dnupdate.engine.update.scaler import ScalerStateError
from dnupdate.engine.update.schedule import caffe_multistep_step, lr_at
from dnupdate.engine.update.semantics import with_semantics

Batch = tuple[np.ndarray, np.ndarray]

__all__ = [
    "EvalResult",
    "IterationResult",
    "Trainer",
    "TrainerStateError",
    "run_fixed_batch",
]


class TrainerStateError(ValueError):
    """A saved trainer state does not fit this trainer (missing key, other network, shape)."""


@dataclass(frozen=True)
class IterationResult:
    """What one weight update did.

    ``iteration``: updates applied so far, this one included (darknet: ``seen / B`` for an
    aligned run; Caffe ``iter`` after the increment). ``seen``: images seen. ``lr``: the rate
    this update used. ``loss``: mean per-image loss over the update's images (darknet
    ``train_network``'s return value; Caffe's ``loss / iter_size``), measured before the update.
    ``stats``: norms of the update. ``non_finite``: None, or where the first non-finite value
    appeared: ``"layer NAME"`` (its forward output), ``"blob LAYER/INDEX (name)"`` (a parameter
    after the update) or ``"loss"``. ``grad_norms``: per segment (segment-table order, 0 for
    non-learnable ones) the L2 norm of this update's gradient, sign-free: darknet semantics
    ``‖Σ_B −∂L/∂θ‖`` (what this update's backward passes added to the buffer, without the
    momentum carried in it), Caffe ``‖Σ_passes diff / iter_size‖`` (before clip / normalise /
    regularise); see :meth:`Trainer._gradient_norms`. ``precision``: the mixed-precision
    measurements of this update (None for a plain float32 run).
    """

    iteration: int
    seen: int
    lr: float
    loss: float
    stats: UpdateStats
    non_finite: str | None = None
    grad_norms: np.ndarray | None = None
    precision: PrecisionReport | None = None


@dataclass(frozen=True)
class EvalResult:
    """Test-mode results over some batches: mean per-image ``loss``, top-1 ``accuracy``
    and the number of ``images`` (predictions).

    Top-1 follows the net's framework: darknet ``top_k`` (``utils.c``: the first class whose
    score no later class beats with ``>``; correct when it is the label), Caffe ``Accuracy``
    (correct when no other class scores ``>=`` the true class; ties count against).
    ``non_finite``: predictions whose scores hold a NaN or an infinity. darknet's ``top_k``
    still picks a class for them (every ``>`` with NaN is false), which is kept; Caffe's rule
    would count them correct (every ``>=`` with NaN is false, so nothing "beats" the label),
    which is not: here they are wrong, and ``framework_accuracy`` holds the figure Caffe would
    print (None when it equals ``accuracy``)."""

    loss: float
    accuracy: float
    images: int
    non_finite: int = 0
    framework_accuracy: float | None = None
    #: Caffe: each loss layer's mean unweighted value and its weight (``Solver::Test``)
    outputs: tuple[LossOutput, ...] = ()
    #: whether the framework reports an accuracy for this net (see :func:`reports_accuracy`)
    has_accuracy: bool = True


def reports_accuracy(net: NetSpec, phase: str = "test") -> bool:
    """Whether a test of the net's ``phase`` reports an accuracy: Caffe prints one only as
    the output of an ``Accuracy`` layer (``Solver::Test`` prints the net's output blobs);
    darknet's classifier (``validate_classifier``) only for a ``[softmax]`` net."""
    kinds = {layer.kind for layer in net.layers if phase in layer.phases}
    if native_framework(net) == "caffe":
        return "accuracy" in kinds
    return "softmax" in kinds


def labels_are_values(network) -> bool:
    """Whether a Caffe net reads its label only in pair losses (``EuclideanLoss``,
    ``SigmoidCrossEntropyLoss``) comparing it with one value per image: Caffe then uses each
    label's float value as the target (``Network.set_truth``), so a label is no class index and
    has no range to check (a 0/1 binary target, an integral regression target)."""
    from dnupdate.engine.model.shapes import LABEL
    from dnupdate.engine.spec import EuclideanLossSpec, SigmoidCrossEntropyLossSpec

    if network.native != "caffe":
        return False
    readers = [layer for layer in network.shapes if LABEL in layer.bottoms]
    pairs = (EuclideanLossSpec, SigmoidCrossEntropyLossSpec)
    return bool(readers) and all(
        isinstance(layer.layer, pairs) and layer.inputs == 1 for layer in readers
    )


def _loss_outputs(net: Network) -> list[tuple[str, float, float]]:
    """``(top, unweighted loss, loss_weight)`` of each loss layer after a Caffe forward."""
    out = []
    for layer in net.layers:
        if layer.has_loss:
            name = layer.spec.tops[0] if layer.spec.tops else layer.name
            weight = float(getattr(layer, "loss_weight", 1.0))
            out.append((name, float(getattr(layer, "value", layer.loss)), weight))
    return out


def _output_means(per_batch: list[list[tuple[str, float, float]]]) -> tuple[LossOutput, ...]:
    """``Solver::Test``: each output's ``Σ_f32`` over the batches divided by their count."""
    if not per_batch:
        return ()
    f32 = np.float32
    sums = [f32(0.0)] * len(per_batch[0])
    for outputs in per_batch:
        sums = [f32(total + f32(value)) for total, (_, value, _) in zip(sums, outputs, strict=True)]
    batches = f32(len(per_batch))
    means = [
        (name, f32(total / batches), weight)
        for total, (name, _, weight) in zip(sums, per_batch[0], strict=True)
    ]
    return tuple(
        LossOutput(name, float(mean), weight, float(f32(weight) * mean))
        for name, mean, weight in means
    )


def _load_weight_file(path: str, run: RunSpec) -> tuple[dict[str, np.ndarray], int | None]:
    """``({"LAYER/INDEX": array}, seen or None)`` from a ``.weights``, ``.npz`` or
    ``.caffemodel`` file (chosen by suffix; anything else is read as darknet ``.weights``)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".npz":
        return load_npz_weights(path, run.net), None
    if suffix == ".caffemodel":
        from dnupdate.engine.formats.caffemodel import read_caffemodel

        return read_caffemodel(path, run.net), None
    header, arrays = read_darknet_weights(path, run.net)
    return arrays, header.seen


class Trainer:
    """The training step; see the module docstring.

    ``run``: the resolved spec. ``seed``: darknet ``srand(seed)`` before parsing (init draws,
    then dropout and the ``random`` policy continue on that stream) or the NumPy seed of Caffe
    fillers/dropout. ``backend``: default :class:`~engine.backends.cpu.CpuBackend`.
    ``semantics``: ``"darknet"``/``"caffe"`` loop and update rule (default: the solver's, i.e.
    the config's format; :func:`engine.update.semantics.with_semantics` switches the conventions).
    ``weights``: a ``.weights``/``.npz``/``.caffemodel`` loaded after initialisation (darknet
    quirk kept: the init draws are consumed even then). ``clear``: ignore the ``.weights``
    header's ``seen`` (darknet ``-clear``), so the schedule starts at the first batch.

    Attributes: ``network``, ``optimizer``, ``rng`` (the stream dropout draws from), ``seen``
    (images), ``iteration`` (updates applied), ``images_per_update`` (``Bm·S``),
    ``semantics``, ``solver`` (under ``semantics``), ``schedule``, ``current_step`` (Caffe
    ``multistep`` state).
    """

    def __init__(
        self,
        run: RunSpec,
        *,
        seed: int = 0,
        backend: Backend | None = None,
        semantics: str | None = None,
        weights: str | None = None,
        clear: bool = False,
        allow_nonfinite: bool = False,
    ):
        self.run = run
        self.notes: list[str] = []  # what the user should be told once (e.g. a loud warning)
        self.semantics: Framework = semantics or run.solver.semantics  # type: ignore[assignment]
        solver = run.solver
        if self.semantics != solver.semantics:
            solver = with_semantics(solver, self.semantics)
        self.solver = solver
        self.schedule = run.schedule
        if backend is None:
            from dnupdate.engine.backends.cpu import CpuBackend

            backend = CpuBackend()
        self.backend = backend
        self.minibatch = solver.minibatch
        self.accumulate = solver.accumulate
        self.images_per_update = solver.minibatch * solver.accumulate
        self.rng: DarknetRandom | np.random.Generator = DarknetRandom(seed)
        self.network = Network(
            run.net, backend, solver.minibatch, self.semantics, uniforms=self._uniforms
        )
        self.rng = self._initialise(seed)
        self._policy_rng: DarknetRandom | None = None
        self.seen = 0
        self.iteration = 0
        self.current_step = 0
        if weights is not None:
            self.load_weights(weights, clear=clear, allow_nonfinite=allow_nonfinite)
        self.optimizer: Optimizer = make_optimizer(
            solver, self.network.segments, self.network.params.size, self.backend
        )
        self._eval_networks: dict[tuple[str, int], Network] = {}
        self.history: list[IterationResult] = []
        self._prepare_gradient_norms()
        self._prepare_finite_check()
        self.mixed: MixedPrecision | None = None
        if run.precision.active:  # fp32 without scaling: none of it exists (bit-identical)
            darknet_sgd = self.semantics == "darknet" and solver.optimizer == "sgd"
            self.mixed = MixedPrecision(run.precision, self.network, darknet_sgd)

    def _initialise(self, seed: int) -> DarknetRandom | np.random.Generator:
        """Fill every blob by its filler (host arrays, then copied to the device); returns
        the generator training continues on (see :func:`engine.model.initialisation.initialise`)."""
        blobs = allocate_blobs(self.run.net)
        rng = initialise(self.run.net, blobs, seed=seed)
        for key, view in self.network.named_blobs():
            self.backend.copy_from_host(blobs[key], view)
        return rng

    # ---- random streams -----------------------------------------------------------------
    def _uniforms(self, n: int) -> np.ndarray:
        """Dropout draws: darknet ``rand_uniform(0, 1)`` per element from the glibc stream
        (continuing after the init draws), or float32 uniforms from the NumPy generator."""
        if isinstance(self.rng, DarknetRandom):
            return self.rng.rand_uniform_array(n, 0.0, 1.0)
        return self.rng.random(n, dtype=np.float32)

    @property
    def policy_rng(self) -> DarknetRandom:
        """The stream darknet's ``random`` lr policy draws from: the training stream for a
        darknet net (one process), else a ``DarknetRandom(schedule.seed)`` of its own."""
        if isinstance(self.rng, DarknetRandom):
            return self.rng
        if self._policy_rng is None:
            self._policy_rng = DarknetRandom(self.schedule.seed)
        return self._policy_rng

    # ---- weights --------------------------------------------------------------------------
    def load_weights(
        self, path: str, *, clear: bool = False, allow_nonfinite: bool = False
    ) -> None:
        """Copy a parameter file's blobs into the network. A darknet ``.weights`` header
        also sets ``seen`` (and ``iteration = seen / B``) unless ``clear``. A NaN or ±inf
        value is a :class:`WeightsFileError` naming the blob and index (such weights make
        every test score "correct" and a run that ends at once writes them back out);
        ``allow_nonfinite`` loads them anyway with a warning in :attr:`notes`."""
        arrays, seen = _load_weight_file(str(path), self.run)
        problem = nonfinite_message(arrays)
        if problem is not None and not allow_nonfinite:
            raise WeightsFileError(
                path, f"non-finite weights: {problem}; --allow-nonfinite loads them anyway"
            )
        if problem is not None:
            self.notes.append(f"WARNING: {path}: non-finite weights loaded: {problem}")
        views = dict(self.network.named_blobs())
        for key, array in arrays.items():
            if key not in views:
                raise WeightsFileError(path, f"blob {key} is not a parameter of this network")
            self.backend.copy_from_host(np.asarray(array, dtype=np.float32), views[key])
        if seen is not None and not clear:
            self.seen = int(seen)
            self.iteration = self.seen // self.images_per_update

    # ---- the learning rate ----------------------------------------------------------------
    def _schedule_index(self, update_number: int) -> int:
        """The schedule's iteration for the ``update_number``-th update (1-based): darknet
        batch number ``b = k``, Caffe ``it = k − 1``."""
        if self.schedule.convention == "darknet":
            return update_number
        return max(update_number - 1, 0)

    def _rate(self, update_number: int, *, peek: bool = False) -> float:
        """``lr`` for the ``update_number``-th update; ``peek`` leaves every state as is."""
        schedule = self.schedule
        index = self._schedule_index(update_number)
        if schedule.convention == "darknet":
            rand_state = None
            if schedule.policy == "random":
                rand_state = self.policy_rng.glibc.copy() if peek else self.policy_rng
            return lr_at(schedule, index, rand_state=rand_state)
        if schedule.policy != "multistep":
            return lr_at(schedule, index)
        rate = lr_at(schedule, index, current_step=self.current_step)
        if not peek:
            self.current_step = caffe_multistep_step(schedule.steps, index, self.current_step)
        return rate

    def _darknet_passes_to_update(self) -> tuple[int, int]:
        """``(passes, seen after them)`` until darknet's modulo test fires next."""
        seen, passes = self.seen, 0
        while True:
            seen += self.minibatch
            passes += 1
            if (seen // self.minibatch) % self.accumulate == 0:
                return passes, seen

    def lr(self) -> float:
        """The rate the next update will use (for display; consumes no random draw — with the
        ``random`` policy the actual value differs when dropout draws come first)."""
        if self.semantics == "darknet":
            _, seen = self._darknet_passes_to_update()
            return self._rate(seen // self.images_per_update, peek=True)
        return self._rate(self.iteration + 1, peek=True)

    # ---- gradient norms ---------------------------------------------------------------------
    def _prepare_gradient_norms(self) -> None:
        """Allocate once what :meth:`_gradient_norms` needs: the segment table (non-learnable
        segments get length 0, hence norm 0), the float64 host output and, when the loop
        does not zero the gradient buffer (darknet), a device copy of the carried buffer."""
        segments = self.network.segments
        self._norm_offsets = np.array([s.offset for s in segments], dtype=np.int64)
        self._norm_lengths = np.array(
            [s.size if s.learnable else 0 for s in segments], dtype=np.int64
        )
        self._norm_sumsq = np.zeros(len(segments), dtype=np.float64)
        self._grad_carry = None
        if not self.optimizer.zero_grads_needed:
            self._grad_carry = self.backend.zeros(self.network.grads.shape)
        # where the backend's update pass keeps the carry and measures the gradient norm itself
        # (darknet rules, no simulated precision), the snapshot the last update left stands
        self._fold_carry = self._grad_carry is not None and self.backend.FUSED_CARRY
        # Caffe (diffs zeroed every iteration): the update's pass measures the norm itself
        self._fold_grad_norm = self._grad_carry is None and self.backend.FUSED_GRAD_NORM
        self._carry_fresh = False
        # ... and, where its segments are the whole buffer, leaves the diffs 0: the next
        # iteration's ClearParamDiffs done in the pass that writes them anyway
        self._clear_in_update = (
            self._fold_grad_norm and self.backend.FUSED_CLEAR and self.optimizer.clears_whole_buffer
        )
        self._grads_clear = False  # the last update left every diff 0

    def _remember_carry(self) -> None:
        """Before the first backward of an update: snapshot the gradient buffer. darknet
        quirk: nothing zeroes it, it still holds ``m·U_prev`` (SGD momentum) when the
        passes start adding ``Σ −∂L/∂θ`` on top."""
        if self._carry_fresh:  # the last update's pass left grads in the carry already
            self._carry_fresh = False
        elif self._grad_carry is not None:
            self.backend.copy(self.network.grads, self._grad_carry)

    def _gradient_norms(self) -> np.ndarray:
        """Per-segment L2 norm of this update's gradient, before the optimizer runs.

        darknet (buffer not zeroed): ``‖grads − carry‖`` with ``carry`` the snapshot taken
        before the first backward, i.e. ``‖Σ_B −∂L/∂θ‖`` over the ``B = Bm·S`` images; the
        difference is formed in float32 on the buffers (``f32(carry + G) − carry``), so it
        differs from ``G`` by float32 rounding of the carried momentum. Caffe: ``‖Σ_passes
        diff‖ / iter_size``, the norm of the mean gradient Caffe's ``ApplyUpdate`` starts
        from. Reductions run on the device (``Backend.segment_sum_squares``)."""
        table = (self._norm_offsets, self._norm_lengths, self._norm_sumsq)
        if self._grad_carry is not None:
            # Σ (carry − grads)², carry − grads = −(this update's gradient): the sign does not
            # matter (the carry may be overwritten: it is taken again before the next update)
            self.backend.segment_sum_squares_change(self._grad_carry, self.network.grads, *table)
            return np.sqrt(self._norm_sumsq)
        self.backend.segment_sum_squares(self.network.grads, *table)
        return np.sqrt(self._norm_sumsq) / float(self.accumulate)

    # ---- one update -------------------------------------------------------------------------
    def _pass(self, next_batch: Callable[[], Batch]) -> float:
        """One forward/backward on a fresh mini-batch; returns the per-image loss sum
        (darknet ``*net.cost``) for a darknet net, the mean loss for a Caffe net."""
        x, y = next_batch()
        net = self.network
        net.set_truth(y)
        net.forward(x, train=True)
        net.backward()
        return float(net.loss)

    def _per_image(self, summed: float, passes: int) -> float:
        """Mean per-image loss from the sum of ``passes`` pass losses."""
        if self.network.native == "darknet":
            # darknet: train_network returns (float) sum / (n·Bm), float32 arithmetic
            return float(np.float32(summed) / np.float32(passes * self.minibatch))
        return float(np.float32(summed) / np.float32(passes))

    def train_iteration(self, next_batch: Callable[[], Batch]) -> IterationResult:
        """Apply ONE weight update. ``next_batch()`` returns ``(images, labels)``: float32
        ``(Bm, C, H, W)`` images and integer labels ``(Bm,)`` (one-hot for darknet's softmax)
        or float targets ``(Bm, outputs)``. See the module docstring for both loops."""
        # a diverging run is reported through ``non_finite``, not NumPy warnings
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            if self.semantics == "darknet":
                return self._darknet_iteration(next_batch)
            return self._caffe_iteration(next_batch)

    def _darknet_iteration(self, next_batch: Callable[[], Batch]) -> IterationResult:
        summed = np.float32(0)  # darknet: float sum += train_network_datum(net)
        passes = 0
        first_bad = None
        self._begin_update()
        while True:
            self.seen += self.minibatch
            passes += 1
            summed = np.float32(summed + np.float32(self._pass(next_batch)))
            first_bad = first_bad or self._non_finite_output()
            if (self.seen // self.minibatch) % self.accumulate == 0:
                break
        batch_number = self.seen // self.images_per_update
        lr = self._rate(batch_number)
        return self._update(lr, self._per_image(float(summed), passes), first_bad)

    def _caffe_iteration(self, next_batch: Callable[[], Batch]) -> IterationResult:
        if self.optimizer.zero_grads_needed and not self._grads_clear:
            self.network.zero_grads()  # Net::ClearParamDiffs
        self._grads_clear = False
        self._begin_update()
        summed = np.float32(0)
        first_bad = None
        for _ in range(self.accumulate):
            self.seen += self.minibatch
            summed = np.float32(summed + np.float32(self._pass(next_batch)))
            first_bad = first_bad or self._non_finite_output()
        lr = self._rate(self.iteration + 1)
        return self._update(lr, self._per_image(float(summed), self.accumulate), first_bad)

    def _begin_update(self) -> None:
        """Before an update's first pass: the darknet carry snapshot and, under simulated
        precision, the working weights; the gradient buffer then starts from 0 so the passes
        leave exactly this update's (scaled) gradient in it (the carry is added back later)."""
        self._remember_carry()
        if self.mixed is not None:
            self.mixed.begin()
            if self._grad_carry is not None:
                self.network.zero_grads()

    def _mixed_update(self, lr: float, loss: float, first_bad: str | None) -> IterationResult:
        """One update under simulated precision (``engine.training.mixed``): gradients
        rounded and checked, unscaled (GradScaler) or left scaled (AlexeyAB), the darknet
        carry added back (one pass), the rule run on the master weights unless skipped, the
        lost updates counted and the scaler updated."""
        mixed, net, backend = self.mixed, self.network, self.backend
        assert mixed is not None
        scale = mixed.scaler.scale
        table = (self._norm_offsets, self._norm_lengths, self._norm_sumsq)
        # one pass: rounded, unscaled (GradScaler), ‖g‖² per segment, darknet's carry added back
        nonfinite = mixed.round_unscale(net.grads, self._grad_carry, *table)
        skipped = nonfinite > 0 and mixed.skips_on_overflow
        segments = len(net.segments)
        if skipped:  # nothing moves: Δw = 0; ‖w‖ as it stands, no gradient norm reported
            mixed.skip_update()
            grad_norms = np.zeros(segments)
            backend.segment_sum_squares(net.params, *table)
            stats = UpdateStats(np.zeros(segments), np.sqrt(self._norm_sumsq))
            if self._grad_carry is not None:  # the momentum stays as it was (GradScaler)
                backend.copy(self._grad_carry, net.grads)
                self._carry_fresh = self._fold_carry  # grads = carry: still the snapshot
        else:
            grad_norms = np.sqrt(self._norm_sumsq) / mixed.rule_scale
            if self._grad_carry is None:
                grad_norms = grad_norms / float(self.accumulate)
            # the update's pass also leaves the next snapshot in the carry (as without
            # simulated precision); its own gradient norm is of g + carry − carry: not ours.
            # It reads the master weights where they were kept (params: the working copy)
            carry = self._grad_carry if self._fold_carry else None
            stats = self.optimizer.step(
                net.params, net.grads, lr, self.iteration, mixed.rule_scale, carry=carry,
                source=mixed.update_source,
            )  # fmt: skip
            stats = dataclasses.replace(stats, grad_norms=None)
            self._carry_fresh = carry is not None
            mixed.count_lost()
        mixed.scaler.update(skipped)
        report = mixed.report(scale, nonfinite, skipped)
        self.iteration += 1
        if first_bad is None and not math.isfinite(loss):
            first_bad = "loss"
        first_bad = first_bad or self._non_finite_param(stats)
        return IterationResult(
            self.iteration, self.seen, lr, loss, stats, first_bad, grad_norms, report
        )

    def _update(self, lr: float, loss: float, first_bad: str | None) -> IterationResult:
        if self.mixed is not None:
            return self._mixed_update(lr, loss, first_bad)
        net = self.network
        if self._fold_carry:  # norm, update and next snapshot in one pass
            stats = self.optimizer.step(
                net.params, net.grads, lr, self.iteration, carry=self._grad_carry
            )
            grad_norms = stats.grad_norms
            self._carry_fresh = True
        elif self._fold_grad_norm:  # Caffe: the diff's norm measured in the update's pass
            stats = self.optimizer.step(
                net.params, net.grads, lr, self.iteration, measure_grads=True,
                clear_grads=self._clear_in_update,
            )  # fmt: skip
            self._grads_clear = self._clear_in_update
            grad_norms = stats.grad_norms / float(self.accumulate)
        else:
            grad_norms = self._gradient_norms()
            stats = self.optimizer.step(net.params, net.grads, lr, self.iteration)
        self.iteration += 1
        if first_bad is None and not math.isfinite(loss):
            first_bad = "loss"
        first_bad = first_bad or self._non_finite_param(stats)
        return IterationResult(
            self.iteration, self.seen, lr, loss, stats, first_bad, grad_norms=grad_norms
        )

    def forward_loss(self, next_batch: Callable[[], Batch]) -> float:
        """One training-phase forward without backward or update (Caffe ``Net::Forward``, as
        ``Solver::Solve`` runs it after the last update when it is time to display): batch
        norm running statistics and dropout draws advance as in a training pass, gradients,
        ``seen`` and ``iteration`` stay. Returns the mean per-image loss."""
        x, y = next_batch()
        net = self.network
        net.set_truth(y)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            net.forward(x, train=True)
        return self._per_image(float(net.loss), 1)

    def _non_finite_output(self) -> str | None:
        """The first layer whose forward output holds a NaN or an infinity; searched only
        when the loss is non-finite (a finite loss costs no scan)."""
        if math.isfinite(self.network.loss):
            return None
        for layer in self.network.layers:
            if not np.isfinite(self.backend.to_host(layer.output)).all():
                return f"layer {layer.name}"
        return None

    def _prepare_finite_check(self) -> None:
        """The segments :meth:`_non_finite_param` must scan itself: those the optimizer does
        not update (non-learnable: batch-norm running statistics), whose step norm says
        nothing about their values."""
        segments = self.network.segments
        self._scan_index = np.array(
            [i for i, s in enumerate(segments) if not s.learnable], dtype=np.int64
        )
        self._scan_offsets = np.array([segments[i].offset for i in self._scan_index], np.int64)
        self._scan_lengths = np.array([segments[i].size for i in self._scan_index], np.int64)
        self._scan_flags = np.zeros(self._scan_index.size, dtype=np.int8)

    def _non_finite_param(self, stats: UpdateStats) -> str | None:
        """The first segment (in table order) holding a NaN or ±inf after the update.

        A learnable segment is non-finite exactly when its ``step_norms`` entry is: the fused
        update accumulates ``Σ (f64(w_new) − f64(w))²`` over the segment, which is NaN/inf as
        soon as one ``w`` or ``w_new`` is and finite otherwise (float32 values squared cannot
        overflow float64). The other segments are scanned on the device buffer
        (``Backend.first_nonfinite_segment``); nothing is copied to the host."""
        bad = np.flatnonzero(~np.isfinite(stats.step_norms))
        first = int(bad[0]) if bad.size else len(self.network.segments)
        if self._scan_index.size and (self._scan_index[0] < first):
            found = self.backend.first_nonfinite_segment(
                self.network.params, self._scan_offsets, self._scan_lengths, self._scan_flags
            )
            if found >= 0:
                first = min(first, int(self._scan_index[found]))
        if first == len(self.network.segments):
            return None
        segment = self.network.segments[first]
        return f"blob {segment.key} ({segment.name})"

    # ---- evaluation -----------------------------------------------------------------------
    def _eval_network(self, batch: int, phase: str = "test") -> Network:
        """The test net of ``phase`` (Caffe test net #i: ``test``, ``test1``, ...) for batches
        of ``batch`` images, built once and sharing the training network's parameters."""
        net = self._eval_networks.get((phase, batch))
        if net is None:
            net = Network(
                self.run.net,
                self.backend,
                batch,
                self.semantics,
                phase=phase,
                share_params_with=self.network,
            )
            if self.mixed is not None:
                attach_output_rounding(net, self.run.precision)
            self._eval_networks[(phase, batch)] = net
        return net

    def release_eval_networks(self) -> None:
        """Drop the cached test-phase networks (their activations, im2col buffers and
        workspace; the parameters belong to the training network). The next
        :meth:`evaluate` builds them again, so between tests a run holds only the training
        network's buffers; nothing a result or a resume depends on lives in them."""
        self._eval_networks.clear()

    def evaluate(
        self,
        batches: Iterable[Batch],
        observe: Callable[[np.ndarray, np.ndarray], None] | None = None,
        phase: str = "test",
    ) -> EvalResult:
        """:meth:`_evaluate` with the test net of ``phase``; under simulated precision on the
        rounded working weights."""
        if self.mixed is None:
            return self._evaluate(batches, observe, phase)
        with self.mixed.working_weights():
            return self._evaluate(batches, observe, phase)

    def _evaluate(
        self,
        batches: Iterable[Batch],
        observe: Callable[[np.ndarray, np.ndarray], None] | None = None,
        phase: str = "test",
    ) -> EvalResult:
        """Test-mode forward over ``batches`` of ``(images, integer labels)``: batch-norm uses
        its running statistics, dropout is the identity, the test phase's layers run (sharing
        the training network's parameters). Returns the per-image mean loss and top-1
        accuracy over all images; nothing is updated.

        A Caffe net tested on batches of one size reports what ``Solver::Test`` prints: per
        output, the float32 sum over the batches of each batch's value (the loss; the
        accuracy as the float quotient ``correct / count``: the net's first ``Accuracy``
        layer's output, with its ``top_k`` and ``ignore_label``, when it has one) divided by
        the number of batches.

        ``observe(scores, labels)``, when given, sees each batch's host copy of the output
        scores (images × outputs) and its labels (``dnupdate eval`` builds its confusion matrix
        from them).
        """
        loss_sum = 0.0
        correct = framework_correct = non_finite = images = 0
        # (images, loss, accuracy, the framework's accuracy) per batch
        per_batch: list[tuple[int, float, float, float]] = []
        outputs: list[list[tuple[str, float, float]]] = []
        for x, y in batches:
            labels = np.asarray(y)
            net = self._eval_network(int(np.shape(x)[0]), phase)
            net.set_truth(labels)
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                net.forward(x, train=False)
            count = net.batch
            per_image = net.loss / count if net.native == "darknet" else net.loss
            loss_sum += float(per_image) * count
            scores = self.backend.to_host(net.output).reshape(count, -1)
            if observe is not None:
                observe(scores, labels)
            bad = ~np.isfinite(scores).all(axis=1)
            non_finite += int(bad.sum())
            # a non-finite prediction is a wrong answer; the framework's own rule (darknet's
            # top_k picks some class, Caffe's Accuracy may count it) is kept as framework_hits
            top1 = _darknet_top1_correct if net.native == "darknet" else _top1_correct
            if np.issubdtype(labels.dtype, np.integer) and not labels_are_values(net):
                hits = top1(scores, labels, wrong=bad)
                framework_hits = top1(scores, labels)
            else:  # float targets (HDF5Data regression), label values: no class to hit
                hits = framework_hits = 0
            correct += hits
            framework_correct += framework_hits
            images += count
            if net.native == "caffe":
                outputs.append(_loss_outputs(net))
            per_batch.append(
                (
                    count,
                    float(per_image),
                    _caffe_accuracy(net, hits),
                    _caffe_accuracy(net, framework_hits, framework=True),
                )
            )
        if images == 0:
            return EvalResult(math.nan, math.nan, 0)
        extra = {
            "outputs": _output_means(outputs),
            "has_accuracy": reports_accuracy(self.run.net, phase),
        }
        if self.network.native == "caffe" and len({n for n, *_ in per_batch}) == 1:
            return dataclasses.replace(_caffe_test_means(per_batch, images, non_finite), **extra)
        framework = framework_correct / images
        accuracy = correct / images
        return EvalResult(
            loss_sum / images,
            accuracy,
            images,
            non_finite,
            None if framework == accuracy else framework,
            **extra,
        )

    # ---- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray | int | float | str]:
        """Everything for a bit-exact resume, as NumPy arrays, ints and strings (``np.savez``
        friendly): ``params``, ``grads`` (darknet quirk: its SGD momentum lives there),
        ``optim/<name>`` (optimizer state), ``seen``, ``iteration``, ``current_step`` (Caffe
        multistep), ``semantics``, ``rng`` (JSON of the training stream's state) and
        ``policy_rng`` (JSON, the separate ``random``-policy stream, ``"null"`` if unused)."""
        host = self.backend.to_host
        state: dict[str, np.ndarray | int | float | str] = {
            "params": host(self.network.params),
            "grads": host(self.network.grads),
            "seen": int(self.seen),
            "iteration": int(self.iteration),
            "current_step": int(self.current_step),
            "semantics": self.semantics,
            "rng": _rng_state_json(self.rng),
            "policy_rng": "null" if self._policy_rng is None else _rng_state_json(self._policy_rng),
        }
        for name, array in self.optimizer.state_arrays().items():
            state[f"optim/{name}"] = array
        if self.mixed is not None:
            for name, value in self.mixed.scaler.state_dict().items():
                state[f"scaler/{name}"] = value
        return state

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Restore what :meth:`state_dict` returned (values may be 0-d arrays, as
        ``np.load`` gives them). Raises :class:`TrainerStateError` on a mismatch."""
        for key in ("params", "grads", "seen", "iteration", "semantics", "rng"):
            if key not in state:
                raise TrainerStateError(f"trainer state has no {key!r}")
        semantics = _scalar(state["semantics"], str)
        if semantics != self.semantics:
            raise TrainerStateError(
                f"trainer state was saved under {semantics} semantics, this run uses "
                f"{self.semantics}"
            )
        self._carry_fresh = False  # the restored grads are the next snapshot
        self._grads_clear = False  # Caffe: zero the restored diffs as ever
        for key in ("params", "grads"):
            array = np.asarray(state[key])
            target = getattr(self.network, key)
            if array.shape != target.shape:
                raise TrainerStateError(
                    f"trainer state {key!r} holds {array.size} floats, this network has "
                    f"{target.size}: saved for another network?"
                )
            self.backend.copy_from_host(array.astype(np.float32), target)
        optim = {
            k[len("optim/") :]: np.asarray(v) for k, v in state.items() if k.startswith("optim/")
        }
        try:
            self.optimizer.load_state(optim)
        except OptimizerStateError as exc:
            raise TrainerStateError(str(exc)) from None
        self.seen = _scalar(state["seen"], int)
        self.iteration = _scalar(state["iteration"], int)
        self.current_step = _scalar(state.get("current_step", 0), int)
        _set_rng_state(self.rng, _scalar(state["rng"], str))
        policy = _scalar(state.get("policy_rng", "null"), str)
        if policy != "null":
            self._policy_rng = DarknetRandom(0)
            _set_rng_state(self._policy_rng, policy)
        scaler = {k[len("scaler/") :]: v for k, v in state.items() if k.startswith("scaler/")}
        if self.mixed is not None and scaler:
            try:
                self.mixed.scaler.load_state_dict(scaler)
            except ScalerStateError as exc:
                raise TrainerStateError(str(exc)) from None


def _caffe_accuracy(net: Network, hits: int, *, framework: bool = False) -> float:
    """One batch's accuracy as Caffe's ``AccuracyLayer::Forward_cpu`` gives it: the net's
    first ``Accuracy`` layer's float ``accuracy / count``, else ``f32(hits) / f32(batch)``.
    ``framework``: Caffe's own figure, predictions with non-finite scores counted as Caffe
    counts them (see :class:`EvalResult`); else those count as wrong."""
    for layer in net.layers:
        if layer.spec.kind == "accuracy":
            return float(layer.framework_value if framework else layer.value)
    return float(np.float32(hits) / np.float32(net.batch))


def _caffe_test_means(
    per_batch: list[tuple[int, float, float, float]], images: int, non_finite: int
) -> EvalResult:
    """``Solver::Test``: ``Σ_f32 value_i / test_iter`` for the loss and for the accuracy."""
    f32 = np.float32
    loss_sum, accuracy_sum, framework_sum = f32(0.0), f32(0.0), f32(0.0)
    for _, loss, accuracy, framework in per_batch:
        loss_sum = f32(loss_sum + f32(loss))
        accuracy_sum = f32(accuracy_sum + f32(accuracy))
        framework_sum = f32(framework_sum + f32(framework))
    batches = f32(len(per_batch))
    accuracy, caffe = float(accuracy_sum / batches), float(framework_sum / batches)
    return EvalResult(
        float(loss_sum / batches),
        accuracy,
        images,
        non_finite,
        None if caffe == accuracy else caffe,
    )


def _labels_for(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    labels = labels.reshape(-1).astype(np.int64)
    if labels.size != scores.shape[0]:
        raise NetworkError(
            f"evaluate: {labels.size} labels for {scores.shape[0]} images (top-1 accuracy "
            "needs one integer label per image)"
        )
    return labels


def _top1_correct(scores: np.ndarray, labels: np.ndarray, wrong: np.ndarray | None = None) -> int:
    """Caffe ``Accuracy`` (top_k 1): an image counts when no other class scores ``>=`` its
    true class's score; images flagged in ``wrong`` never count."""
    labels = _labels_for(scores, labels)
    truth = scores[np.arange(labels.size), labels]
    better = (scores >= truth[:, None]).sum(axis=1) - 1
    hit = better < 1
    if wrong is not None:
        hit &= ~wrong
    return int(hit.sum())


def _darknet_top1_correct(
    scores: np.ndarray, labels: np.ndarray, wrong: np.ndarray | None = None
) -> int:
    """darknet ``top_k(pred, classes, 1, indexes)`` then ``indexes[0] == class``: the pick
    starts at class 0 and moves to a later class only when it scores strictly more (``>``),
    so ties go to the first class and NaN scores never win nor lose a comparison (a
    prediction of all NaN picks class 0); images flagged in ``wrong`` never count."""
    labels = _labels_for(scores, labels)
    rows = np.arange(labels.size)
    best = np.zeros(labels.size, dtype=np.int64)
    for column in range(1, scores.shape[1]):
        best = np.where(scores[:, column] > scores[rows, best], column, best)
    hit = best == labels
    if wrong is not None:
        hit &= ~wrong
    return int(hit.sum())


def _rng_state_json(rng: DarknetRandom | np.random.Generator) -> str:
    if isinstance(rng, DarknetRandom):
        return json.dumps({"kind": "darknet", **rng.get_state()})
    return json.dumps({"kind": "numpy", "state": rng.bit_generator.state})


def _set_rng_state(rng: DarknetRandom | np.random.Generator, text: str) -> None:
    try:
        data = json.loads(text)
        kind = data.pop("kind")
    except (ValueError, KeyError, AttributeError) as exc:
        raise TrainerStateError(f"trainer state 'rng' is not a generator state: {exc}") from None
    if isinstance(rng, DarknetRandom) and kind == "darknet":
        rng.set_state(data)
    elif isinstance(rng, np.random.Generator) and kind == "numpy":
        rng.bit_generator.state = data["state"]
    else:
        raise TrainerStateError(f"trainer state holds a {kind} generator, this run uses another")


def _scalar(value: object, kind: type):
    """An int or str from a Python value or a 0-d NumPy array (as ``np.load`` returns)."""
    if isinstance(value, np.ndarray):
        value = value.item()
    return kind(value)


def run_fixed_batch(
    run: RunSpec,
    x: np.ndarray,
    y: np.ndarray,
    iterations: int,
    *,
    seed: int = 0,
    weights: str | None = None,
    semantics: str | None = None,
    clear: bool = False,
) -> Trainer:
    """Train ``iterations`` updates on one fixed batch, without shuffling, and return the
    trainer (its ``history`` attribute lists the :class:`IterationResult` of each update).

    ``x``/``y`` hold a multiple of ``Bm`` images; mini-batches are taken in order, ``Bm`` rows
    at a time, wrapping around (darknet ``train_network`` on a ``data`` of ``B`` rows: every
    update sees rows ``0 … B−1`` in order).
    """
    trainer = Trainer(run, seed=seed, weights=weights, semantics=semantics, clear=clear)
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.asarray(y)
    bm = trainer.minibatch
    if x.shape[0] == 0 or x.shape[0] % bm or y.shape[0] != x.shape[0]:
        raise NetworkError(
            f"fixed batch: {x.shape[0]} images and {y.shape[0]} labels; need the same "
            f"number, a positive multiple of the mini-batch {bm}"
        )
    chunks = x.shape[0] // bm
    cursor = [0]

    def next_batch() -> Batch:
        start = (cursor[0] % chunks) * bm
        cursor[0] += 1
        return x[start : start + bm], y[start : start + bm]

    trainer.history.extend(trainer.train_iteration(next_batch) for _ in range(iterations))
    return trainer
