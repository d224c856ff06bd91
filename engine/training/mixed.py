"""Simulated mixed precision: where a real fp16/bf16 run stores values, round them.

Precision is a storage format, not a second engine: the float32 kernels run unchanged and
:class:`MixedPrecision` rounds (``Backend.round_storage``, round to nearest even with
subnormals and overflow to ±inf) at the points where a mixed-precision run stores a value:

* the weights used by forward and backward: with master weights (the default) a float32 master
  copy is kept and each update's passes run on a rounded working copy (learnable blobs only:
  batch-norm running statistics stay float32; the update rule reads the master from where it
  was kept, ``saved``, and writes the new master under ``params``, so ``params`` holds the
  master between updates); without, the weights themselves are stored
  rounded and every update's result is rounded again (so a too-small update is really lost);
* every layer's output after its forward, and every layer's delta once complete, just before
  its backward reads it (loss layers excepted: loss and softmax run in float32; the input
  batch stays float32); products and sums inside a layer accumulate in float32;
* the weight gradients of one update (all its passes summed in float32), rounded once.

Loss scaling (:class:`engine.update.scaler.LossScaler`): the delta a loss layer hands its input
is multiplied by S (AlexeyAB's ``axpy(loss_scale, delta, net.delta)``: the producer's delta,
when loss layers are its only readers, is scaled once it is complete). After the passes the
rounded gradients are checked: GradScaler (dynamic, or a static scale under any rule but
darknet SGD) multiplies them by ``float32(1/S)`` and skips the whole update when one is
non-finite (weights, momentum untouched: the darknet momentum carried in the gradient buffer
is put back); AlexeyAB's static scale (darknet SGD) keeps them scaled, zeroes non-finite
entries (``reset_nan_and_inf``, counted here as an overflow) and lets the update rule divide
(``lr/S``, ``decay·B·S``).

Measured per update and per layer (fractions in [0, 1], 0 where nothing qualifies):
``grad_underflow`` (weight-gradient values non-zero in float32 that round to zero),
``delta_underflow`` (the same over the layer's deltas, all passes), ``update_lost`` (weights
whose float32 update is non-zero yet ``round(w + Δw) == round(w)``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from dnupdate.engine.backends.base import Backend
from dnupdate.engine.backends.cpu.precision import CODES
from dnupdate.engine.model.network import Network
from dnupdate.engine.spec import PrecisionSpec
from dnupdate.engine.update.scaler import LossScaler

__all__ = ["MixedPrecision", "PrecisionReport", "StorageHooks"]


@dataclass(frozen=True)
class PrecisionReport:
    """What the precision machinery saw in one update.

    ``loss_scale``: the scale the update's backward used; ``overflow``: a weight gradient was
    non-finite after rounding (GradScaler: the update was skipped, ``skipped``; AlexeyAB static:
    the entries were zeroed, the update ran); ``nonfinite_grads``: how many values;
    per layer (by name): ``grad_underflow``, ``delta_underflow``, ``update_lost``."""

    loss_scale: float
    overflow: bool
    skipped: bool
    nonfinite_grads: int = 0
    grad_underflow: dict[str, float] = field(default_factory=dict)
    delta_underflow: dict[str, float] = field(default_factory=dict)
    update_lost: dict[str, float] = field(default_factory=dict)

    def columns(self) -> dict[str, float | int]:
        """The metrics row's columns: ``loss_scale``, ``overflow`` (0/1) and per layer
        ``<layer>.grad_underflow``, ``<layer>.delta_underflow``, ``<layer>.update_lost``."""
        row: dict[str, float | int] = {
            "loss_scale": self.loss_scale,
            "overflow": int(self.overflow),
        }
        for name, value in self.grad_underflow.items():
            row[f"{name}.grad_underflow"] = value
        for name, value in self.delta_underflow.items():
            row[f"{name}.delta_underflow"] = value
        for name, value in self.update_lost.items():
            row[f"{name}.update_lost"] = value
        return row

    def worst(self) -> tuple[float, float]:
        """``(largest grad/delta underflow, largest update_lost)`` over the layers."""
        under = max([*self.grad_underflow.values(), *self.delta_underflow.values()], default=0.0)
        return under, max(self.update_lost.values(), default=0.0)


def _fraction(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    out = np.zeros(part.shape, dtype=np.float64)
    np.divide(part, whole, out=out, where=whole > 0)
    return out


class StorageHooks:
    """What :class:`~engine.model.network.Network` calls when ``network.storage`` is set:
    :meth:`output` after a layer's forward, :meth:`delta` before a layer's backward."""

    def __init__(self, network: Network, code: int) -> None:
        self.backend = network.backend
        self.code = code
        self.loss_scale = 1.0
        layers = network.layers
        n = len(layers)
        self.rounds = [not (layer.has_loss or layer.is_sink) for layer in layers]
        readers: list[list[int]] = [[] for _ in range(n)]
        for index, bottoms in enumerate(network.bottoms):
            for bottom in bottoms:
                if bottom >= 0:
                    readers[bottom].append(index)
        #: producers whose readers are all loss/sink layers, one of them a loss: the delta the
        #: loss hands back is scaled by S once it is complete
        self.scaled = [
            bool(r)
            and all(layers[i].has_loss or layers[i].is_sink for i in r)
            and any(layers[i].has_loss for i in r)
            for r in readers
        ]
        self._tables = [
            (np.zeros(1, np.int64), np.array([layer.output.size], np.int64)) for layer in layers
        ]
        self._scratch = np.zeros((1, 3), np.int64)
        self.delta_counts = np.zeros((n, 2), np.int64)  # (non-zero, flushed) over the passes

    def output(self, index: int, layer) -> None:
        """Store the layer's output in the low precision."""
        if self.rounds[index] and self.code:
            offsets, lengths = self._tables[index]
            self.backend.store_rounded(layer.output, offsets, lengths, self.code)

    def delta(self, index: int, layer) -> None:
        """The layer's delta is complete: scale it (a loss's input) and store it rounded."""
        if self.scaled[index] and self.loss_scale != 1.0:
            self.backend.scale(layer.delta, self.loss_scale)
        if self.rounds[index]:
            offsets, lengths = self._tables[index]
            counts = self._scratch
            self.backend.round_storage(layer.delta, offsets, lengths, self.code, counts)
            self.delta_counts[index] += counts[0, :2]


class MixedPrecision:
    """The storage rounding, loss scaler and measurements of one trainer (module docstring).

    ``darknet_sgd``: the update rule is darknet's SGD (a static scale then follows AlexeyAB's
    arithmetic)."""

    def __init__(self, spec: PrecisionSpec, network: Network, darknet_sgd: bool) -> None:
        self.spec = spec
        self.code = CODES[spec.precision]
        self.network = network
        self.backend: Backend = network.backend
        self.scaler = LossScaler.from_spec(spec)
        self.alexeyab = spec.loss_scale == "static" and darknet_sgd
        self.master = spec.master_weights
        self.hooks = StorageHooks(network, self.code)
        network.storage = self.hooks
        learnable = [s for s in network.segments if s.learnable]
        self.offsets = np.array([s.offset for s in learnable], np.int64)
        self.lengths = np.array([s.size for s in learnable], np.int64)
        names = list(dict.fromkeys(s.layer for s in learnable))
        self.param_layers = names
        self._seg_layer = np.array([names.index(s.layer) for s in learnable], np.int64)
        self._grad_counts = np.zeros((len(learnable), 3), np.int64)
        #: every segment's row in a table over all of ``network.segments`` (the trainer's norm
        #: table, non-learnable segments empty): the learnable rows, and counts over that table
        self._learnable_rows = np.array(
            [i for i, s in enumerate(network.segments) if s.learnable], np.int64
        )
        self._table_counts = np.zeros((len(network.segments), 3), np.int64)
        self._lost_counts = np.zeros((len(learnable), 2), np.int64)
        self.delta_layers = [
            (i, layer.name) for i, layer in enumerate(network.layers) if self.hooks.rounds[i]
        ]
        self.saved = self.backend.zeros(network.params.shape)
        if not self.master:
            self._round_params()

    # ---- weights ------------------------------------------------------------------------------
    def _round_params(self, keep_master: bool = False) -> None:
        """The learnable blobs rounded in place; ``keep_master``: ``saved ← params`` first (the
        same pass)."""
        saved = self.saved if keep_master else None
        params = self.network.params
        self.backend.store_rounded(params, self.offsets, self.lengths, self.code, saved)

    def _restore_learnable(self) -> None:
        params, saved, copy = self.network.params, self.saved, self.backend.copy
        for offset, length in zip(self.offsets.tolist(), self.lengths.tolist(), strict=True):
            copy(saved[offset : offset + length], params[offset : offset + length])

    def begin(self) -> None:
        """Before an update's passes: the scale the backward uses, zeroed delta counts, and
        the weights the passes see (master: ``saved ← params``, params rounded, learnable
        blobs only, one pass; else ``saved ← params`` for the lost-update count)."""
        self.hooks.loss_scale = self.scaler.scale
        self.hooks.delta_counts[...] = 0
        if self.master:
            self._round_params(keep_master=True)
        else:
            self.backend.copy(self.network.params, self.saved)

    @property
    def update_source(self):
        """The buffer the update rule reads the weights from (``Optimizer.step``'s
        ``source``): with master weights the master copy ``saved`` (``params`` holds the
        rounded working copy until the rule writes the new master there: no copy back), else
        None (``params``, the low-precision weights themselves)."""
        return self.saved if self.master else None

    def skip_update(self) -> None:
        """The update is skipped (GradScaler): the master copy back under the learnable
        blobs, where the rule would have written the new one."""
        if self.master:
            self._restore_learnable()

    @contextmanager
    def working_weights(self) -> Iterator[None]:
        """The rounded working copy in place of the master for a test (master weights only)."""
        if not self.master or not self.code:
            yield
            return
        self._round_params(keep_master=True)
        try:
            yield
        finally:
            self._restore_learnable()

    # ---- gradients ------------------------------------------------------------------------------
    def round_unscale(self, grads, carry, offsets, lengths, out) -> int:
        """In one pass (``Backend.round_unscale_sum_squares``): this update's (scaled) weight
        gradients stored rounded (AlexeyAB static: non-finite values zeroed, still counted),
        GradScaler's unscale by ``float32(1/S)`` (when :attr:`unscales`), ``out[k] = Σ g²`` per
        segment of the table ``offsets``/``lengths`` (every one of ``network.segments``, the
        non-learnable ones empty) and darknet's ``carry`` added back (None: nothing). Returns
        the number of non-finite rounded gradients.

        When that count then skips the update the buffer is already unscaled and carries the
        momentum again: harmless, as the skipped update never reads it (darknet: the trainer
        puts the carry back over it; Caffe: the next iteration zeroes it first)."""
        factor = float(self.scaler.inv_scale) if self.unscales else 1.0
        counts = self._table_counts
        self.backend.round_unscale_sum_squares(
            grads, offsets, lengths, self.code, counts, self.alexeyab, factor, carry, out
        )
        self._grad_counts[...] = counts[self._learnable_rows]
        return int(self._grad_counts[:, 2].sum())

    @property
    def skips_on_overflow(self) -> bool:
        """GradScaler's rule: a non-finite gradient skips the update (a scaler is on and the
        arithmetic is not AlexeyAB's)."""
        return self.scaler.mode != "none" and not self.alexeyab

    @property
    def unscales(self) -> bool:
        """Whether the gradients are multiplied by ``1/S`` before the update rule."""
        return self.scaler.mode != "none" and not self.alexeyab

    @property
    def rule_scale(self) -> float:
        """The loss scale the darknet SGD rule divides out (AlexeyAB), else 1."""
        return self.scaler.scale if self.alexeyab else 1.0

    def count_lost(self) -> None:
        """After the update: ``saved`` holds the weights before, ``params`` after; count the
        lost updates and, without master weights, store the new weights rounded."""
        self.backend.lost_updates(
            self.saved,
            self.network.params,
            self.offsets,
            self.lengths,
            self.code,
            not self.master,
            self._lost_counts,
        )

    def column_names(self) -> list[str]:
        """The metrics columns :meth:`PrecisionReport.columns` fills, in its order."""
        names = ["loss_scale", "overflow"]
        names += [f"{name}.grad_underflow" for name in self.param_layers]
        names += [f"{name}.delta_underflow" for _, name in self.delta_layers]
        return names + [f"{name}.update_lost" for name in self.param_layers]

    def report(self, scale: float, nonfinite: int, skipped: bool) -> PrecisionReport:
        """This update's :class:`PrecisionReport` (``_lost_counts`` zero when skipped)."""
        n = len(self.param_layers)
        grad = np.zeros((n, 2), np.int64)
        np.add.at(grad, self._seg_layer, self._grad_counts[:, :2])
        lost = np.zeros((n, 2), np.int64)
        if not skipped:
            np.add.at(lost, self._seg_layer, self._lost_counts)
        grad_f = _fraction(grad[:, 1], grad[:, 0])
        lost_f = _fraction(lost[:, 1], lost[:, 0])
        deltas = self.hooks.delta_counts
        return PrecisionReport(
            loss_scale=scale,
            overflow=nonfinite > 0,
            skipped=skipped,
            nonfinite_grads=nonfinite,
            grad_underflow={name: float(grad_f[i]) for i, name in enumerate(self.param_layers)},
            delta_underflow={
                name: float(_fraction(deltas[i, 1:2], deltas[i, 0:1])[0])
                for i, name in self.delta_layers
            },
            update_lost={name: float(lost_f[i]) for i, name in enumerate(self.param_layers)},
        )


def attach_output_rounding(network: Network, spec: PrecisionSpec) -> None:
    """A test-phase network stores its layer outputs in the low precision too."""
    code = CODES[spec.precision]
    if code:
        network.storage = StorageHooks(network, code)
