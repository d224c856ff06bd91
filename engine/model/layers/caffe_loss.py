"""Caffe's two-input regression losses, NumPy-vectorised on the host (the blobs are copied
over once per pass: cheap next to the layers that feed them).

* ``EuclideanLoss`` (``euclidean_loss_layer.cpp``): ``d = a − b``, loss
  ``dot(d, d) / N / 2`` (float32, a BLAS ``sdot`` as Caffe's ``caffe_cpu_dot``; N = batch);
  backward ``da += (w/N)·d``, ``db += −(w/N)·d`` for each bottom that wants a gradient.
* ``SigmoidCrossEntropyLoss`` (``sigmoid_cross_entropy_loss_layer.cpp``): the stable sum
  ``−Σ [x·(t − [x≥0]) − log(1 + exp(x − 2x·[x≥0]))]`` in float32, in element order, over the
  elements whose ``int(t)`` is not ``ignore_label``, divided by the normalizer
  (``max(1, ·)`` of FULL/VALID/BATCH_SIZE/NONE; Caffe quirk: BATCH_SIZE by default);
  backward ``dx += (σ(x) − t)·w/normalizer`` (0 where ignored), σ as Caffe's Sigmoid layer;
  the target gets no gradient (Caffe refuses to back-propagate to it).

The second bottom is another layer's output, or the truth when it is the data layer's label
(:data:`engine.model.shapes.LABEL`). ``loss`` is ``loss_weight·loss`` (what the net sums),
``value`` the unweighted loss Caffe displays.
"""

from __future__ import annotations

import numpy as np

from dnupdate.engine.model.layers.base import LayerContext
from dnupdate.engine.model.layers.loss import TruthLayer
from dnupdate.engine.model.shapes import LABEL, LayerShape
from dnupdate.engine.spec import EuclideanLossSpec, SigmoidCrossEntropyLossSpec

F32 = np.float32


class _PairLoss(TruthLayer):
    """A loss of a prediction (bottom 0) against a target (bottom 1 or the truth)."""

    is_sink = True
    has_loss = True

    def __init__(self, shape: LayerShape, ctx: LayerContext):
        super().__init__(shape, ctx)
        self.reads_truth = shape.bottoms[1] == LABEL
        self.target_output, self.target_delta = ctx.bottoms[1]
        self.loss_weight = shape.layer.loss_weight
        self.flat = (ctx.batch, shape.inputs)
        self.scratch = ctx.backend.zeros(self.flat)
        self.value = 0.0

    def host(self, array) -> np.ndarray:
        """A float32 ``(batch, count)`` host copy of a device array."""
        return np.asarray(self.backend.to_host(array), dtype=F32).reshape(self.flat)

    def target(self) -> np.ndarray | None:
        source = self.truth if self.reads_truth else self.target_output
        return None if source is None else self.host(source)

    def add_into(self, target, values: np.ndarray) -> None:
        """``target += values`` through the backend."""
        self.backend.copy_from_host(values, self.scratch)
        self.backend.accumulate(target.reshape(self.flat), self.scratch, 1.0)

    def set_loss(self, value: F32) -> None:
        self.value = float(value)
        self.loss = float(F32(value) * F32(self.loss_weight))
        self.backend.fill(self.output, self.value)


class EuclideanLossLayer(_PairLoss):
    """See the module docstring."""

    def __init__(self, shape: LayerShape, ctx: LayerContext):
        super().__init__(shape, ctx)
        self.spec_: EuclideanLossSpec = shape.layer
        self.diff: np.ndarray | None = None

    def forward(self, x, train: bool) -> None:
        target = self.target()
        if target is None:
            self.diff = None
            self.set_loss(F32(0.0))
            return
        self.diff = self.host(x) - target
        flat = self.diff.reshape(-1)
        dot = F32(np.dot(flat, flat))
        self.set_loss(F32(F32(dot / F32(self.batch)) / F32(2.0)))

    def backward(self, x, dx) -> None:
        if self.diff is None:
            return
        targets = [(dx, 1.0), (None if self.reads_truth else self.target_delta, -1.0)]
        for delta, sign in targets:
            if delta is not None:
                alpha = F32(F32(sign * F32(self.loss_weight)) / F32(self.batch))
                self.add_into(delta, alpha * self.diff)


class SigmoidCrossEntropyLossLayer(_PairLoss):
    """See the module docstring."""

    def __init__(self, shape: LayerShape, ctx: LayerContext):
        super().__init__(shape, ctx)
        spec: SigmoidCrossEntropyLossSpec = shape.layer
        self.normalization = spec.normalization
        self.ignore_label = spec.ignore_label
        self.prob = ctx.backend.zeros(self.flat)
        self.grad: np.ndarray | None = None

    def _normalizer(self, valid: int) -> F32:
        count = self.flat[0] * self.flat[1]
        value = {"full": count, "valid": valid, "batch_size": self.flat[0], "none": 1}
        return F32(max(1.0, float(value[self.normalization])))

    def forward(self, x, train: bool) -> None:
        target = self.target()
        self.grad = None
        if target is None:
            self.set_loss(F32(0.0))
            return
        scores = self.host(x)
        keep = np.ones(scores.shape, dtype=bool)
        if self.ignore_label is not None:
            keep = target.astype(np.int64) != self.ignore_label
        normalizer = self._normalizer(int(keep.sum()))
        self.set_loss(F32(sigmoid_cross_entropy_sum(scores[keep], target[keep]) / normalizer))
        self.backend.caffe_activation_forward(x.reshape(self.flat), self.prob, "logistic", 0.0)
        grad = self.host(self.prob) - target
        grad[~keep] = 0.0
        self.grad = grad * F32(F32(self.loss_weight) / normalizer)

    def backward(self, x, dx) -> None:
        if dx is not None and self.grad is not None:
            self.add_into(dx, self.grad)


def sigmoid_cross_entropy_sum(x: np.ndarray, t: np.ndarray) -> F32:
    """``−Σ [x·(t − [x≥0]) − log(1 + exp(x − 2x·[x≥0]))]`` summed in float32 in element
    order (``loss -= term`` in Caffe's loop: the same float as minus the running sum)."""
    positive = (x >= 0).astype(F32)
    softplus = np.log(F32(1.0) + np.exp(x - F32(2.0) * x * positive))  # not log1p: as Caffe
    terms = x * (t - positive) - softplus
    if terms.size == 0:
        return F32(0.0)
    return F32(-np.cumsum(terms.astype(F32), dtype=F32)[-1])
