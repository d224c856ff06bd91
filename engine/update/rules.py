"""Update rules: darknet SGD/Adam, Caffe SGD/Nesterov/AdaGrad/RMSProp/AdaDelta/Adam, and AdamW
(``torch.optim.AdamW``, decoupled weight decay) under either semantics.

All parameters live in one flat float32 buffer ``params`` with gradients ``grads`` in the same
layout and a segment table (one segment per blob: ``offset``, ``size``, ``lr_mult``,
``decay_mult``, ``learnable``). :func:`make_optimizer` turns a ``SolverSpec`` and that table
into an :class:`Optimizer` whose :meth:`Optimizer.step` runs ONE fused kernel pass over the
buffer (the backend's ``fused_update``: ``engine.backends.cpu.update.fused_update`` on the CPU),
with the per-segment rates and decays passed as arrays. The optimizer state lives on the
backend's device, next to ``params``. Non-learnable segments (batch-norm running statistics)
are never touched.

Gradient conventions (what the network leaves in ``grads`` before :meth:`Optimizer.step`):

* darknet: Σ over the B = minibatch·accumulate images of the NEGATIVE gradient, added on top
  of what the previous update left there (darknet quirk: the ``*_updates`` buffer carries the
  momentum: after an SGD step it holds ``m·U``; the loop must NOT zero it);
* Caffe: +∂L/∂θ (of the per-pass mean loss) summed over the ``iter_size`` passes; the loop
  zeroes ``grads`` before each iteration (``Net::ClearParamDiffs``).

Float32 arithmetic follows the frameworks' CPU code operation by operation (see
``../shared/spec/darknet.md`` §6 and ``caffe.md`` §5, beside the repository): darknet
``η = f32(lr·scale)``, ``α = f32(η/B)``, ``δ = f32(−decay·B)``; Caffe
``local_rate = f32(rate·lr_mult)``, ``local_decay = f32(weight_decay·decay_mult)``; every element
operation rounded on its own.

AdamW (Loshchilov & Hutter) follows ``torch.optim.AdamW``'s single-tensor path, not a textbook:
the scalars are Python doubles cast to float32 where torch casts them (``1 − lr·λ``,
``−lr/(1 − β1^t)``, ``sqrt(1 − β2^t)``), per blob ``lr = rate·lr_mult`` and
``λ = weight_decay·decay_mult``; the element steps are in ``engine.backends.cpu.update.
adamw_element``. Under Caffe semantics the gradient is Caffe's (clipped, ``iter_size``
-normalised) mean gradient and ``t = iter + 1``; under darknet semantics (extension key
``adamw=1``) it is ``−Σ/B`` and ``t`` counts the optimizer's own updates.

Deliberate difference: pjreddie darknet's CPU build silently runs SGD when ``adam=1``; here
darknet Adam always runs the formula of darknet's GPU path (``adam_update_gpu``), on the CPU.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from dnupdate.engine.backends.base import Backend
from dnupdate.engine.backends.cpu import update as kernels
from dnupdate.engine.spec import SolverSpec

F32 = np.float32

DARKNET_OPTIMIZERS = ("sgd", "adam", "adamw")
CAFFE_OPTIMIZERS = ("sgd", "nesterov", "adagrad", "rmsprop", "adadelta", "adam", "adamw")

_CAFFE_RULES = {
    "sgd": kernels.RULE_CAFFE_SGD,
    "nesterov": kernels.RULE_CAFFE_NESTEROV,
    "adagrad": kernels.RULE_CAFFE_ADAGRAD,
    "rmsprop": kernels.RULE_CAFFE_RMSPROP,
    "adadelta": kernels.RULE_CAFFE_ADADELTA,
    "adam": kernels.RULE_CAFFE_ADAM,
    "adamw": kernels.RULE_CAFFE_ADAMW,
}
_DARKNET_RULES = {
    "sgd": kernels.RULE_DARKNET_SGD,
    "adam": kernels.RULE_DARKNET_ADAM,
    "adamw": kernels.RULE_DARKNET_ADAMW,
}
# Caffe keeps 2 history blobs per parameter for these (history[i], history[n + i]).
_TWO_HISTORIES = ("adadelta", "adam", "adamw")
# Rules that count their own updates (darknet net.t): saved as ``adam_t``.
_OWN_COUNTER = (kernels.RULE_DARKNET_ADAM, kernels.RULE_DARKNET_ADAMW)


class SolverError(ValueError):
    """The solver settings cannot drive an update rule (named field, value and reason)."""


class SegmentError(ValueError):
    """The segment table does not fit the flat buffer (out of bounds or overlapping)."""


class OptimizerStateError(ValueError):
    """A saved optimizer state does not match this optimizer (keys, shapes or dtypes)."""


class ParamSegment(Protocol):
    """One parameter blob in the flat buffer (the network's segment table entry)."""

    offset: int
    size: int
    lr_mult: float
    decay_mult: float
    learnable: bool


@dataclass(frozen=True)
class UpdateStats:
    """Norms of one update, per segment in the order of the segment table.

    ``step_norms[s] = ‖Δw‖₂`` (the change actually applied), ``weight_norms[s] = ‖w‖₂`` before
    the update (both 0 for non-learnable segments). ``grad_norm``: Caffe's global L2 norm of
    the summed gradients when ``clip_gradients ≥ 0`` (else ``None``); ``clip_scale``: the factor
    applied when clipping fired (else ``None``).
    """

    step_norms: np.ndarray
    weight_norms: np.ndarray
    grad_norm: float | None = None
    clip_scale: float | None = None
    #: per segment ``‖g‖₂`` of the update's summed gradient, when :meth:`Optimizer.step` was
    #: given the darknet ``carry`` (measured in the update's own pass); else None
    grad_norms: np.ndarray | None = None

    @property
    def ratios(self) -> np.ndarray:
        """Update-to-weight ratio ``‖Δw‖/‖w‖`` per segment (0 where ``‖w‖ = 0``)."""
        out = np.zeros_like(self.step_norms)
        np.divide(self.step_norms, self.weight_norms, out=out, where=self.weight_norms > 0)
        return out


@dataclass(frozen=True)
class _Table:
    """The learnable segments as kernel arrays; ``index`` maps back to the caller's table."""

    index: np.ndarray
    offsets: np.ndarray
    sizes: np.ndarray
    lr_mult: np.ndarray
    decay_mult: np.ndarray
    grad_on: np.ndarray
    count: int


def _mult(segment, name: str) -> float:
    value = getattr(segment, name, None)
    if value is None:  # a BlobSpec-like segment carrying a ParamMult
        value = getattr(segment.mult, name)
    return float(value)


def _segment_table(segments: Sequence[ParamSegment], total_size: int) -> _Table:
    """Validate the segments against the buffer and keep the learnable ones as arrays."""
    spans = []
    for i, seg in enumerate(segments):
        if seg.offset < 0 or seg.size < 0 or seg.offset + seg.size > total_size:
            raise SegmentError(
                f"segment {i} [{seg.offset}, {seg.offset + seg.size}) lies outside the "
                f"parameter buffer of {total_size} floats"
            )
        if seg.learnable:
            spans.append((seg.offset, seg.size, i))
    spans.sort()
    for (a_off, a_size, a_i), (b_off, _, b_i) in itertools.pairwise(spans):
        if a_off + a_size > b_off:
            raise SegmentError(f"learnable segments {a_i} and {b_i} overlap")
    learn = [i for i, seg in enumerate(segments) if seg.learnable]
    lr = np.array([_mult(segments[i], "lr_mult") for i in learn], dtype=F32)
    return _Table(
        index=np.array(learn, dtype=np.int64),
        offsets=np.array([segments[i].offset for i in learn], dtype=np.int64),
        sizes=np.array([segments[i].size for i in learn], dtype=np.int64),
        lr_mult=lr,
        decay_mult=np.array([_mult(segments[i], "decay_mult") for i in learn], dtype=F32),
        grad_on=(lr != 0).astype(np.int8),
        count=len(segments),
    )


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _check(ok: bool, field: str, value: object, reason: str) -> None:
    if not ok:
        raise SolverError(f"solver.{field} = {value!r}: {reason}")


def validate_solver(solver: SolverSpec) -> None:
    """Raise :class:`SolverError` when ``solver`` cannot drive its update rule.

    darknet semantics implies ``momentum_style = lr_outside`` and ``grad_reduction = sum``
    (its gradient buffer carries the momentum). Caffe's own solver checks: AdaGrad and RMSProp
    require momentum 0, RMSProp ``0 ≤ rms_decay < 1``; ``regularization`` is L1 or L2.
    """
    _check(solver.minibatch >= 1, "minibatch", solver.minibatch, "must be at least 1")
    _check(solver.accumulate >= 1, "accumulate", solver.accumulate, "must be at least 1")
    if solver.semantics == "darknet":
        _check(
            solver.optimizer in DARKNET_OPTIMIZERS,
            "optimizer",
            solver.optimizer,
            f"darknet semantics knows {', '.join(DARKNET_OPTIMIZERS)}",
        )
        _check(
            solver.momentum_style == "lr_outside",
            "momentum_style",
            solver.momentum_style,
            "darknet semantics keeps the lr outside its momentum buffer (lr_outside); "
            "use Caffe semantics for lr_inside",
        )
        _check(
            solver.grad_reduction == "sum",
            "grad_reduction",
            solver.grad_reduction,
            "darknet semantics sums gradients over the batch and scales by lr/B (sum)",
        )
        return
    _check(solver.semantics == "caffe", "semantics", solver.semantics, "expected darknet or caffe")
    _check(
        solver.optimizer in CAFFE_OPTIMIZERS,
        "optimizer",
        solver.optimizer,
        f"Caffe semantics knows {', '.join(CAFFE_OPTIMIZERS)}",
    )
    _check(
        solver.regularization in ("L1", "L2"),
        "regularization",
        solver.regularization,
        "Caffe knows L1 and L2 (Unknown regularization type)",
    )
    if solver.optimizer in ("adagrad", "rmsprop"):
        _check(
            solver.momentum == 0,
            "momentum",
            solver.momentum,
            f"Momentum cannot be used with {solver.optimizer} (Caffe's check): set it to 0",
        )
    if solver.optimizer == "rmsprop":
        _check(
            0 <= solver.rms_decay < 1,
            "rms_decay",
            solver.rms_decay,
            "RMSProp requires 0 <= rms_decay < 1",
        )
    if solver.momentum_style == "lr_outside":
        _check(
            solver.optimizer in ("sgd", "adagrad", "rmsprop", "adadelta", "adam"),
            "momentum_style",
            solver.momentum_style,
            "lr_outside exists for SGD only under Caffe semantics",
        )


# --------------------------------------------------------------------------------------------
# The optimizer
# --------------------------------------------------------------------------------------------


class Optimizer:
    """One update rule bound to a segment table; see :func:`make_optimizer`.

    ``zero_grads_needed``: whether the training loop must zero ``grads`` before accumulating
    the next iteration's gradients (Caffe yes; darknet no: its buffer carries ``m·U``, and
    darknet Adam zeroes it itself).
    """

    def __init__(
        self,
        solver: SolverSpec,
        segments: Sequence[ParamSegment],
        total_size: int,
        backend: Backend | None = None,
    ):
        validate_solver(solver)
        self.solver = solver
        self.total_size = int(total_size)
        self.table = _segment_table(segments, self.total_size)
        self.darknet = solver.semantics == "darknet"
        self.rule = self._rule_code()
        self.zero_grads_needed = not self.darknet
        #: the learnable segments are the whole buffer (they never overlap): an update with
        #: ``clear_grads`` then leaves every diff 0, and the loop's zeroing pass has nothing to do
        self.clears_whole_buffer = int(self.table.sizes.sum()) == self.total_size
        self.t = 0  # darknet Adam: net.t, the number of updates applied by this optimizer
        self._bind(backend)

    def _bind(self, backend: Backend | None) -> None:
        """Run on ``backend`` (default: the CPU backend), with zeroed state on its device."""
        if backend is None:
            from dnupdate.engine.backends.cpu import CpuBackend

            backend = CpuBackend()
        self.backend = backend
        self._state = self._new_state()
        empty = backend.zeros((0,))
        self._state_a = self._state.get("history", self._state.get("adam_m", empty))
        self._state_b = self._state.get("history2", self._state.get("adam_v", empty))

    def _follow(self, params) -> None:
        """Move to the backend owning ``params`` when they live on another device (an
        optimizer made without ``backend=``), carrying the state over."""
        if isinstance(params, type(self._state_a)):
            return
        from dnupdate.engine.backends import backend_for

        state = self.state_arrays()
        self._bind(backend_for(params))
        self.load_state(state)

    # ---- construction ---------------------------------------------------------------------
    def _rule_code(self) -> int:
        s = self.solver
        if self.darknet:
            return _DARKNET_RULES[s.optimizer]
        if s.optimizer == "sgd" and s.momentum_style == "lr_outside":
            return kernels.RULE_CAFFE_SGD_LR_OUTSIDE
        return _CAFFE_RULES[s.optimizer]

    def _new_state(self) -> dict[str, np.ndarray]:
        n, zeros = (self.total_size,), self.backend.zeros
        if self.darknet:
            if self.rule == kernels.RULE_DARKNET_SGD:
                return {}  # darknet quirk: the momentum lives in ``grads`` (save it with them)
            return {"adam_m": zeros(n), "adam_v": zeros(n)}
        state = {"history": zeros(n)}
        if self.solver.optimizer in _TWO_HISTORIES:
            state["history2"] = zeros(n)
        return state

    # ---- per-step scalars -----------------------------------------------------------------
    def _darknet_scalars(
        self, lr: float, loss_scale: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(seg_lr, seg_decay, coef)`` with darknet's float32 rounding points.

        ``loss_scale`` S (SGD only): AlexeyAB darknet's static loss scale
        (``update_convolutional_layer_gpu``): ``η = f32(f32(lr·scale)/S)``, the decay axpy
        ``f32(f32(−decay·batch)·S)``; the momentum buffer then holds S-scaled values and the
        scale cancels in exact arithmetic. S = 1 leaves every number as it was."""
        s, tab = self.solver, self.table
        batch = F32(s.batch)
        eta = F32(lr) * tab.lr_mult  # learning_rate · l.learning_rate_scale
        delta = (-F32(s.decay)) * batch  # −decay·batch
        if self.rule == kernels.RULE_DARKNET_SGD and loss_scale != 1.0:
            eta = (eta / F32(loss_scale)).astype(F32)  # learning_rate_init·scale / loss_scale
            delta = F32(delta * F32(loss_scale))  # −decay·batch·loss_scale
        if self.rule == kernels.RULE_DARKNET_SGD:
            seg_decay = delta * tab.decay_mult  # decay_mult 0 (biases, scales) → no decay axpy
            coef = kernels.pack_coefficients(momentum=F32(s.momentum))
            return eta / batch, seg_decay.astype(F32), coef
        if self.rule == kernels.RULE_DARKNET_ADAMW:
            seg_lr, seg_decay, named = self._adamw_scalars(lr, self.t)
            return seg_lr, seg_decay, kernels.pack_coefficients(batch=batch, **named)
        # darknet quirk: GPU Adam decays every blob (biases and scales too): decay_mult ignored
        b1, b2, t = F32(s.beta1), F32(s.beta2), F32(self.t)
        coef = kernels.pack_coefficients(
            momentum=b1,
            one_minus_momentum=F32(1) - b1,
            beta2=b2,
            one_minus_beta2=F32(1) - b2,
            eps=F32(s.eps),
            correction1=F32(1) - np.power(b1, t),
            correction2=F32(1) - np.power(b2, t),
        )
        return eta.astype(F32), np.full(eta.shape, delta, dtype=F32), coef

    def _adamw_scalars(self, lr: float, t: int) -> tuple[np.ndarray, np.ndarray, dict]:
        """``(seg_lr, seg_decay, named coefficients)`` of ``torch.optim.AdamW`` at step ``t``.

        Per blob, in double as torch's Python scalars: ``lr_b = lr·lr_mult``,
        ``λ_b = λ·decay_mult``; ``seg_decay = f32(1 − lr_b·λ_b)`` (``param.mul_``),
        ``seg_lr = f32(−lr_b/(1 − β1^t))`` (``addcdiv_``'s value); coefficients
        ``f32(1 − β1)`` (lerp weight), ``f32(β2)``, ``f32(1 − β2)``, ``f32(ε)`` and
        ``f32(sqrt(1 − β2^t))``.
        """
        s, tab = self.solver, self.table
        lr_b = float(lr) * tab.lr_mult.astype(np.float64)
        decay_b = float(s.decay) * tab.decay_mult.astype(np.float64)
        b1, b2 = float(s.beta1), float(s.beta2)
        bc1, bc2 = 1.0 - b1**t, 1.0 - b2**t
        named = {
            "one_minus_momentum": 1.0 - b1,
            "beta2": b2,
            "one_minus_beta2": 1.0 - b2,
            "eps": float(s.eps),
            "correction2": math.sqrt(bc2),
        }
        return (-(lr_b / bc1)).astype(F32), (1.0 - lr_b * decay_b).astype(F32), named

    def _caffe_scalars(self, lr: float, iteration: int) -> tuple[np.ndarray, np.ndarray, dict]:
        """``(seg_lr, seg_decay, named coefficients)`` with Caffe's float32 rounding points."""
        s, tab = self.solver, self.table
        if s.optimizer == "adamw":
            local_rate, local_decay, named = self._adamw_scalars(lr, iteration + 1)
            return local_rate, local_decay, self._caffe_stages(named)
        local_rate = F32(lr) * tab.lr_mult
        local_decay = (F32(s.decay) * tab.decay_mult).astype(F32)
        opt = s.optimizer
        named: dict[str, np.float32] = {}
        if opt in ("sgd", "nesterov"):
            m = F32(s.momentum)
            named = {"momentum": m, "one_plus_momentum": F32(1) + m}
        elif opt == "adagrad":
            named = {"eps": F32(s.eps)}
        elif opt == "rmsprop":
            d = F32(s.rms_decay)
            named = {"momentum": d, "one_minus_momentum": F32(1) - d, "eps": F32(s.eps)}
        elif opt == "adadelta":
            m = F32(s.momentum)
            named = {"momentum": m, "one_minus_momentum": F32(1) - m, "eps": F32(s.eps)}
        else:  # adam
            b1, b2 = F32(s.beta1), F32(s.beta2)
            named = {
                "momentum": b1,
                "one_minus_momentum": F32(1) - b1,
                "beta2": b2,
                "one_minus_beta2": F32(1) - b2,
                "eps": F32(s.eps),
            }
            local_rate = local_rate * caffe_adam_correction(s.beta1, s.beta2, iteration + 1)
        if s.regularization == "L1":
            named["l1"] = 1
        return local_rate.astype(F32), local_decay, self._caffe_stages(named)

    def _caffe_stages(self, named: dict) -> dict:
        """Add Caffe's ``Normalize`` factor (``iter_size`` > 1 under mean reduction)."""
        s = self.solver
        if s.grad_reduction == "mean" and s.accumulate != 1:
            named.update(norm_on=1, norm_scale=F32(1) / F32(s.accumulate))
        return named

    def _caffe_clip(self, grads: np.ndarray, named: dict) -> tuple[float | None, float | None]:
        """Caffe ``ClipGradients``: global L2 norm over all learnable blobs' raw summed diffs
        (float32 sum of per-blob float32 dots); scale ``clip/norm`` when ``norm > clip``."""
        clip = F32(self.solver.clip_gradients)
        if clip < 0:
            return None, None
        tab = self.table
        per_blob = np.zeros(tab.offsets.size, dtype=np.float64)
        self.backend.segment_sumsq(grads, tab.offsets, tab.sizes, tab.grad_on, per_blob)
        sumsq = F32(0)
        for blob_sumsq in per_blob.astype(F32):  # Dtype sumsq_diff += blob->sumsq_diff()
            sumsq = F32(sumsq + blob_sumsq)
        norm = np.sqrt(sumsq)
        if not norm > clip:
            return float(norm), None
        scale = F32(clip / norm)
        named.update(clip_on=1, clip_scale=scale)
        return float(norm), float(scale)

    # ---- public API -----------------------------------------------------------------------
    def step(
        self,
        params: np.ndarray,
        grads: np.ndarray,
        lr: float,
        iteration: int,
        loss_scale: float = 1.0,
        carry: np.ndarray | None = None,
        source: np.ndarray | None = None,
        measure_grads: bool = False,
        clear_grads: bool = False,
    ) -> UpdateStats:
        """Apply one update in place with learning rate ``lr`` (the schedule's value; used as
        float32). ``iteration``: updates already applied (Caffe ``iter``; Caffe Adam uses
        ``t = iteration + 1``). darknet Adam counts its own ``t`` (darknet ``net.t``).
        ``loss_scale``: AlexeyAB's static scale, darknet SGD only (see
        :meth:`_darknet_scalars`); every other rule is given unscaled gradients. ``carry``
        (darknet rules): the gradient buffer as it was before this update's passes; the
        update's pass then also measures ``‖grads − carry‖`` per segment
        (``UpdateStats.grad_norms``) and leaves ``carry`` equal to the new ``grads``
        (the backend's ``fused_update``). ``source`` (``params``' shape): the weights the
        rule reads, the result going to ``params`` (simulated mixed precision's master copy,
        read where it is kept while ``params`` holds the rounded working copy).
        ``measure_grads`` (Caffe rules, a backend with ``FUSED_GRAD_NORM``): the update's pass
        also measures ``‖grads‖`` per segment as the buffer holds it before the update (Caffe's
        summed diff, ``UpdateStats.grad_norms``; the caller divides by ``iter_size``).
        ``clear_grads`` (Caffe rules, a backend with ``FUSED_CLEAR``): the learnable segments'
        diffs are left 0 instead of the applied step (see :attr:`clears_whole_buffer`)."""
        self._check_buffers(params, grads)
        self._follow(params)
        grad_norm = clip_scale = None
        if self.darknet:
            if self.rule in _OWN_COUNTER:
                self.t += 1
            seg_lr, seg_decay, coef = self._darknet_scalars(lr, loss_scale)
        else:
            seg_lr, seg_decay, named = self._caffe_scalars(lr, iteration)
            grad_norm, clip_scale = self._caffe_clip(grads, named)
            coef = kernels.pack_coefficients(**named)
        tab = self.table
        step_sq = np.zeros(tab.offsets.size, dtype=np.float64)
        weight_sq = np.zeros(tab.offsets.size, dtype=np.float64)
        measured = carry is not None or (measure_grads and not self.darknet)
        grad_sq = np.zeros(tab.offsets.size, dtype=np.float64) if measured else None
        keep = {} if grad_sq is None else {"grad_sq": grad_sq}
        if carry is not None:
            keep["carry"] = carry
        if source is not None:
            keep["source"] = source
        if clear_grads:
            if self.darknet or not self.backend.FUSED_CLEAR:
                raise ValueError("clear_grads needs a Caffe rule and a backend with FUSED_CLEAR")
            keep["clear_grads"] = True
        self.backend.fused_update(
            self.rule,
            params,
            grads,
            self._state_a,
            self._state_b,
            tab.offsets,
            tab.sizes,
            seg_lr,
            seg_decay,
            tab.grad_on,
            coef,
            step_sq,
            weight_sq,
            **keep,
        )
        return self._stats(step_sq, weight_sq, grad_norm, clip_scale, grad_sq)

    def _stats(self, step_sq, weight_sq, grad_norm, clip_scale, grad_sq=None) -> UpdateStats:
        steps = np.zeros(self.table.count, dtype=np.float64)
        weights = np.zeros(self.table.count, dtype=np.float64)
        steps[self.table.index] = np.sqrt(step_sq)
        weights[self.table.index] = np.sqrt(weight_sq)
        grads = None
        if grad_sq is not None:
            grads = np.zeros(self.table.count, dtype=np.float64)
            grads[self.table.index] = np.sqrt(grad_sq)
        return UpdateStats(steps, weights, grad_norm, clip_scale, grads)

    def _check_buffers(self, params: np.ndarray, grads: np.ndarray) -> None:
        for name, arr in (("params", params), ("grads", grads)):
            if arr.dtype != F32 or arr.ndim != 1 or arr.size != self.total_size:
                raise ValueError(
                    f"{name} must be a flat float32 array of {self.total_size} floats; got "
                    f"{arr.dtype} with shape {arr.shape}"
                )
            if not arr.flags.c_contiguous:
                raise ValueError(f"{name} must be contiguous")

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The optimizer's state for bit-exact resume (copies).

        Caffe: ``history`` (SGD/Nesterov velocity with the lr inside, AdaGrad Σg², RMSProp and
        AdaDelta E[g²], Adam m) and, for AdaDelta/Adam, ``history2`` (E[Δx²] / v), laid out like
        ``params``. darknet Adam: ``adam_m``, ``adam_v`` and ``adam_t`` (``[t]``, int64).
        darknet SGD: empty — darknet quirk: its momentum is the ``grads`` buffer itself, which
        a checkpoint must save for an exact resume.
        """
        state = {name: self.backend.to_host(arr) for name, arr in self._state.items()}
        if self.rule in _OWN_COUNTER:
            state["adam_t"] = np.array([self.t], dtype=np.int64)
        return state

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore what :meth:`state_arrays` returned; raise :class:`OptimizerStateError` on
        any mismatch of keys, shapes or dtypes."""
        expected = self.state_arrays()
        if set(state) != set(expected):
            raise OptimizerStateError(
                f"optimizer state has keys {sorted(state)}, expected {sorted(expected)} "
                f"({self.solver.semantics} {self.solver.optimizer})"
            )
        for name, ref in expected.items():
            arr = np.asarray(state[name])
            if arr.shape != ref.shape or arr.dtype != ref.dtype:
                raise OptimizerStateError(
                    f"optimizer state {name!r}: {arr.dtype}{list(arr.shape)}, expected "
                    f"{ref.dtype}{list(ref.shape)}"
                )
        for name, arr in self._state.items():
            self.backend.copy_from_host(np.asarray(state[name]), arr)
        if "adam_t" in expected:
            self.t = int(np.asarray(state["adam_t"])[0])


def caffe_adam_correction(beta1: float, beta2: float, t: int) -> np.float32:
    """Caffe Adam's ``correction = sqrt(1 − β2^t) / (1 − β1^t)``: ``pow(float, int)`` promotes
    to double in C++, so it is computed in double from the float32 betas and rounded once."""
    b1, b2 = float(F32(beta1)), float(F32(beta2))
    return F32(math.sqrt(1.0 - b2**t) / (1.0 - b1**t))


def make_optimizer(
    solver: SolverSpec,
    segments: Sequence[ParamSegment],
    total_size: int,
    backend: Backend | None = None,
) -> Optimizer:
    """The update rule of ``solver`` over a flat buffer of ``total_size`` floats described by
    ``segments`` (learnable ones are updated with their ``lr_mult``/``decay_mult``), run by
    ``backend``'s fused update (default: the CPU backend; an optimizer handed device arrays of
    another backend moves its state there on the first step).

    Raises :class:`SolverError` for settings the rule rejects (e.g. Caffe AdaGrad with
    momentum) and :class:`SegmentError` for a table that does not fit the buffer.
    """
    return Optimizer(solver, segments, total_size, backend)


# --------------------------------------------------------------------------------------------
# The rule written out (``dnupdate inspect``)
# --------------------------------------------------------------------------------------------

_CAFFE_NAMES = {
    "sgd": "SGD",
    "nesterov": "Nesterov",
    "adagrad": "AdaGrad",
    "rmsprop": "RMSProp",
    "adadelta": "AdaDelta",
    "adam": "Adam",
    "adamw": "AdamW",
}


def _n(value: float) -> str:
    """A value as the float32 the update uses, in its shortest round-trip form."""
    return str(F32(value))


def adamw_lines(s: SolverSpec, lr: float, gradient: str) -> list[str]:
    """``torch.optim.AdamW``'s step written out with the solver's numbers at rate ``lr``
    (``gradient``: how g is formed from the framework's buffer)."""
    b1, b2, lam = float(s.beta1), float(s.beta2), float(s.decay)
    return [
        f"g ← {gradient}",
        f"W ← W·(1 − lr_b·λ_b),  lr_b = {_n(lr)}·lr_mult, λ_b = {_n(lam)}·decay_mult   "
        f"(decoupled decay, first update: W·{_n(1.0 - lr * lam)} at lr_mult = decay_mult = 1)",
        f"m ← m + {_n(1.0 - b1)}·(g − m)   (torch's lerp: = {_n(b1)}·m + {_n(1.0 - b1)}·g);   "
        f"v ← {_n(b2)}·v + {_n(1.0 - b2)}·g²",
        f"W ← W − (lr_b/(1 − {_n(b1)}^t))·m / (sqrt(v)/sqrt(1 − {_n(b2)}^t) + {_n(s.eps)})   "
        "(ε added to the bias-corrected root; no decay in g)",
    ]


def _darknet_update_lines(s: SolverSpec, lr: float) -> list[str]:
    batch = F32(s.batch)
    alpha = F32(F32(lr) / batch)
    delta = F32(-F32(s.decay) * batch)
    m = _n(s.momentum)
    head = f"B = minibatch {s.minibatch} × subdivisions {s.accumulate} = {s.batch} images"
    if s.optimizer == "adamw":
        return [
            f"AdamW (torch.optim.AdamW; dnupdate extension adamw=1), {head}, lr = {_n(lr)}, "
            "t = 1, 2, …",
            *adamw_lines(s, lr, f"−(Σ over the B images of −∂L/∂W)/{s.batch}   (mean gradient)"),
            "d ← 0",
        ]
    if s.optimizer == "adam":
        b1, b2 = F32(s.beta1), F32(s.beta2)
        return [
            f"darknet Adam (the GPU formula, run on the CPU), {head}, lr = {_n(lr)}, t = 1, 2, …",
            "d ← Σ over the B images of −∂L/∂W",
            f"d ← d + (−decay·B = {_n(delta)})·W   (every blob: biases and scales too)",
            f"m ← {_n(b1)}·m + {_n(F32(1) - b1)}·d;   v ← {_n(b2)}·v + {_n(F32(1) - b2)}·d²",
            f"W ← W + {_n(lr)}·(m/(1 − {_n(b1)}^t)) / (sqrt(v/(1 − {_n(b2)}^t)) + {_n(s.eps)});"
            "   d ← 0",
        ]
    return [
        f"darknet SGD, {head}, lr = {_n(lr)}",
        f"U ← U + (−decay·B = {_n(delta)})·W   (weights only: biases and BN scales undecayed)",
        f"W ← W + (lr/B = {_n(alpha)})·U   (× the layer's learning_rate scale)",
        f"U ← {m}·U   (kept; the next backward adds Σ over the B images of −∂L/∂W)",
        f"per-image-mean form: u ← {m}·u + (−mean ∂L/∂W − {_n(s.decay)}·W);  W ← W + {_n(lr)}·u",
    ]


def _caffe_stage_lines(s: SolverSpec) -> list[str]:
    k = s.accumulate
    lines = [f"g ← Σ over {k} pass(es) of ∂L/∂W   (each pass: the batch-mean loss)"]
    if s.clip_gradients >= 0:
        c = _n(s.clip_gradients)
        lines.append(f"if ‖g‖₂ > {c} over all blobs: g ← g·{c}/‖g‖₂   (before normalisation)")
    if s.grad_reduction == "mean" and k != 1:
        lines.append(f"g ← g·(1/iter_size = {_n(F32(1) / F32(k))})")
    if s.decay != 0 and s.optimizer != "adamw":
        term = "sign(W)" if s.regularization == "L1" else "W"
        why = "L1" if s.regularization == "L1" else "L2: the gradient of (λ/2)‖W‖²"
        lines.append(f"g ← g + ({_n(s.decay)}·decay_mult)·{term}   ({why})")
    return lines


def _caffe_rule_lines(s: SolverSpec, lr: float) -> list[str]:
    r = f"({_n(lr)}·lr_mult)"
    m, eps = _n(s.momentum), _n(s.eps)
    opt = s.optimizer
    if opt == "sgd" and s.momentum_style == "lr_outside":
        return [f"h ← {m}·h + g;   W ← W − {r}·h   (lr OUTSIDE the history)"]
    if opt == "sgd":
        return [f"h ← {m}·h + {r}·g;   W ← W − h   (lr inside the history)"]
    if opt == "nesterov":
        return [f"h' ← {m}·h + {r}·g;   W ← W − ({_n(1 + F32(s.momentum))}·h' − {m}·h)"]
    if opt == "adagrad":
        return [f"h ← h + g²;   W ← W − {r}·g/(sqrt(h) + {eps})"]
    if opt == "rmsprop":
        d = F32(s.rms_decay)
        return [f"h ← {_n(d)}·h + {_n(F32(1) - d)}·g²;   W ← W − {r}·g/(sqrt(h) + {eps})"]
    if opt == "adadelta":
        rho = F32(s.momentum)
        return [
            f"h ← {_n(rho)}·h + {_n(F32(1) - rho)}·g²;   Δ ← g·sqrt((h₂ + {eps})/(h + {eps}))",
            f"h₂ ← {_n(rho)}·h₂ + {_n(F32(1) - rho)}·Δ²;   W ← W − {r}·Δ",
        ]
    if opt == "adamw":
        return adamw_lines(s, lr, "the gradient above, t = iter + 1")[1:]
    b1, b2 = F32(s.beta1), F32(s.beta2)
    first = caffe_adam_correction(s.beta1, s.beta2, 1)
    return [
        f"m ← {_n(b1)}·m + {_n(F32(1) - b1)}·g;   v ← {_n(b2)}·v + {_n(F32(1) - b2)}·g²",
        f"W ← W − {r}·(sqrt(1 − {_n(b2)}^t)/(1 − {_n(b1)}^t))·m/(sqrt(v) + {eps}),  "
        f"t = iter + 1 (first update: correction {_n(first)})",
    ]


def effective_update_lines(solver: SolverSpec, lr: float) -> list[str]:
    """The update rule written out with the config's own numbers at learning rate ``lr``.

    darknet SGD: ``U ← U + (−decay·B)·W; W ← W + (lr/B)·U; U ← m·U`` plus its per-image-mean
    equivalent; Caffe: the ClipGradients / Normalize / Regularize stages then the solver's
    ``ComputeUpdateValue`` and ``W ← W − step``. Values are the float32 ones the update uses.
    """
    try:
        validate_solver(solver)
    except SolverError as error:
        return [f"no update rule: {error}"]
    if solver.semantics == "darknet":
        return _darknet_update_lines(solver, lr)
    s = solver
    head = (
        f"Caffe {_CAFFE_NAMES[s.optimizer]}, batch_size {s.minibatch} × iter_size "
        f"{s.accumulate}, rate = {_n(lr)}"
    )
    return [head, *_caffe_stage_lines(s), *_caffe_rule_lines(s, lr)]


def _darknet_mapping(s: SolverSpec) -> list[str]:
    d, m, b = _n(s.decay), _n(s.momentum), s.batch
    lines = [
        f"darknet decay {d} with B={b} ⇒ per-image-mean form: weight_decay {d} inside the "
        "momentum buffer, lr outside (u ← m·u + (−mean ∂L/∂W − decay·W); W ← W + lr·u); "
        "Caffe: lr inside (h ← m·h + lr·(g + λ·W); W ← W − h)",
        f"as a Caffe solver: base_lr = learning_rate, momentum {m}, weight_decay {d}, "
        f"batch_size {s.minibatch}, iter_size {s.accumulate}; darknet nets give biases and "
        "BN scales decay_mult 0 and every blob lr_mult = the layer's learning_rate scale "
        "(a Caffe net keeps its own lr_mult/decay_mult under either rule)",
        "the two agree while the lr is constant; after an lr change Caffe's history still "
        "carries the old rate (fading as momentum^k), darknet's u is rescaled at once",
    ]
    if s.optimizer == "adamw":
        lines = [
            _adamw_mapping(s),
            'as Caffe: type: "AdamW" (dnupdate extension) with weight_decay = λ, momentum = '
            "B1, momentum2 = B2, delta = eps, base_lr = learning_rate",
        ]
    if s.optimizer == "adam":
        lines += [
            "darknet Adam vs Caffe Adam: darknet corrects inside the root, "
            "sqrt(v/(1−β2^t)) + eps; Caffe adds ε̂ to the uncorrected sqrt(v) "
            "(ε̂ = eps·sqrt(1−β2^t)); darknet's d is the SUM over B images and decays biases",
            "deliberate difference: pjreddie darknet's CPU build silently runs SGD when "
            "adam=1; dnupdate runs the GPU Adam formula on the CPU too",
        ]
    lines.append("darknet .weights hold no momentum: a darknet resume restarts with U = 0")
    return lines


def _adamw_mapping(s: SolverSpec) -> str:
    """AdamW against the coupled conventions, with the config's λ."""
    d = _n(s.decay)
    return (
        f"AdamW's λ = {d} is decoupled: W shrinks by lr·λ per update and the decay never "
        f"enters Adam's m and v; Adam + L2 would add {d}·W to g (Caffe weight_decay {d} = 2λ "
        f"of a loss λ‖W‖² with λ = {_n(F32(s.decay) / F32(2))}; darknet decay {d}·B on the "
        "summed gradient is the same coupled term)"
    )


def _caffe_mapping(s: SolverSpec) -> list[str]:
    d, m, b = _n(s.decay), _n(s.momentum), s.batch
    lines = [
        f"Caffe weight_decay {d} ({s.regularization}) × decay_mult and lr × lr_mult per blob, "
        f"momentum {m} with the lr inside the history: h ← m·h + lr·(g + λ·W); W ← W − h",
        f"as darknet (SGD): learning_rate = base_lr, momentum {m}, decay {d}, batch {b} "
        f"(subdivisions {s.accumulate}); darknet sums the gradients and uses lr/B and "
        f"decay·B = {_n(F32(s.decay) * F32(b))}: the same step while the lr is constant",
        "darknet never decays biases or BN scales; Caffe does unless decay_mult is 0 (its "
        "examples decay biases and give them lr_mult 2)",
    ]
    if s.accumulate != 1:
        lines.append(
            f"iter_size {s.accumulate}: Caffe sums the passes then multiplies by "
            f"1/{s.accumulate}; darknet subdivisions sum and divide by B through lr/B"
        )
    extras = []
    if s.regularization == "L1":
        extras.append("L1 regularization")
    if s.clip_gradients >= 0:
        extras.append(f"clip_gradients {_n(s.clip_gradients)}")
    if s.optimizer not in DARKNET_OPTIMIZERS:
        extras.append(f"the {_CAFFE_NAMES[s.optimizer]} solver")
    if extras:
        lines.append("no darknet counterpart: " + ", ".join(extras))
    if s.optimizer == "adamw":
        return [
            _adamw_mapping(s),
            "as darknet: adamw=1 in [net] (dnupdate extension) with decay = λ, B1 = momentum, "
            "B2 = momentum2, eps = delta: the same rule on −Σ/B",
        ]
    if s.optimizer == "adam":
        lines.append(
            "Caffe Adam: t = iter + 1 from the global counter (continues across resume); "
            "β1 is Caffe's momentum"
        )
    return lines


def describe_mapping(solver: SolverSpec) -> list[str]:
    """How the solver's rule maps onto the other framework's, with its numbers (darknet
    decay vs Caffe weight_decay, momentum with the lr outside vs inside the history, what has
    no counterpart). ``dnupdate inspect`` prints these lines."""
    try:
        validate_solver(solver)
    except SolverError as error:
        return [f"no update rule: {error}"]
    if solver.semantics == "darknet":
        return _darknet_mapping(solver)
    return _caffe_mapping(solver)
