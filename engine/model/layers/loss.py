"""Loss and metric layers.

darknet (deltas are the NEGATIVE gradient, losses are sums over the mini-batch):

* ``[softmax]``: softmax per group with temperature; with truth, ``delta = t − p`` and cost
  ``Σ −log p`` over nonzero targets; backward adds ``delta`` into the input delta (no Jacobian);
* ``[cost]``: per-element errors, ``delta`` per type; backward ``dx += scale·delta`` (after a
  ``[softmax]`` this adds to its ``t − p``: darknet's doubled logit gradient).

Caffe (diffs are the POSITIVE gradient): ``SoftmaxWithLoss`` (normalization modes, FLT_MIN
clamp, ``loss_weight``) and ``Accuracy`` (ties count against). Both are sinks: their output does
not feed the next layer.
"""

from __future__ import annotations

import numpy as np

from dnupdate.engine.model.layers.base import Layer, LayerContext
from dnupdate.engine.model.shapes import LayerShape
from dnupdate.engine.spec import AccuracySpec, CostSpec, SoftmaxLossSpec, SoftmaxSpec


class TruthLayer(Layer):
    """A layer that reads the network's truth (set by :meth:`set_truth` before forward)."""

    truth_kind = "float"  # "float": targets shaped like the input; "label": int32 class ids
    #: whether the layer reads the truth at all (a Caffe loss may read another layer instead)
    reads_truth = True

    def __init__(self, shape: LayerShape, ctx: LayerContext):
        super().__init__(shape, ctx)
        self.truth = None

    def set_truth(self, truth) -> None:
        """Attach the truth array (device array of the layer's :attr:`truth_kind`)."""
        self.truth = truth


class DarknetSoftmaxLayer(TruthLayer):
    """darknet ``[softmax]``; see the module docstring."""

    has_loss = True

    def __init__(self, shape: LayerShape, ctx: LayerContext):
        super().__init__(shape, ctx)
        spec: SoftmaxSpec = shape.layer
        self.groups = spec.groups
        self.temperature = spec.temperature
        self.noloss = spec.noloss
        self.flat = (ctx.batch, shape.outputs)
        self.losses = ctx.backend.zeros(self.flat)

    def forward(self, x, train: bool) -> None:
        truth = None if self.noloss else self.truth
        self.loss = self.backend.darknet_softmax(
            x.reshape(self.flat),
            self.output.reshape(self.flat),
            truth,
            self.delta.reshape(self.flat),
            self.losses,
            self.groups,
            self.temperature,
        )

    def backward(self, x, dx) -> None:
        if dx is not None:
            self.backend.accumulate(dx.reshape(self.flat), self.delta.reshape(self.flat), 1.0)


class DarknetCostLayer(TruthLayer):
    """darknet ``[cost]``; see the module docstring."""

    has_loss = True

    def __init__(self, shape: LayerShape, ctx: LayerContext):
        super().__init__(shape, ctx)
        spec: CostSpec = shape.layer
        self.cost_type = spec.cost_type
        self.scale = spec.scale
        self.flat = (ctx.batch, shape.outputs)

    def forward(self, x, train: bool) -> None:
        if self.truth is None:
            self.loss = 0.0
            return
        self.loss = self.backend.darknet_cost(
            x.reshape(self.flat),
            self.truth,
            self.output.reshape(self.flat),
            self.delta.reshape(self.flat),
            self.cost_type,
        )

    def backward(self, x, dx) -> None:
        if dx is not None:
            self.backend.accumulate(
                dx.reshape(self.flat), self.delta.reshape(self.flat), self.scale
            )


def _class_view(array, batch: int, channels: int):
    return array.reshape(batch, channels, -1)


class SoftmaxLossLayer(TruthLayer):
    """Caffe ``SoftmaxWithLoss``: classes on axis 1, ``inner`` = H·W positions; labels int32
    ``(B, inner)``. The reported loss is ``loss_weight · loss`` as a float32 product (Caffe
    ``Layer::Forward``: a one-element ``caffe_cpu_dot`` of the top and its loss weight).
    Backward ADDS its diff into the input's: several losses reading one blob sum their
    gradients, as the ``Split`` layer Caffe inserts there does (``SplitLayer::Backward_cpu``;
    with three or more, Caffe adds in layer order, here in reverse: float rounding only)."""

    is_sink = True
    has_loss = True
    truth_kind = "label"

    def __init__(self, shape: LayerShape, ctx: LayerContext):
        super().__init__(shape, ctx)
        spec: SoftmaxLossSpec = shape.layer
        channels = shape.input[0]
        self.x_shape = (ctx.batch, channels, shape.input[1] * shape.input[2])
        self.prob = ctx.backend.zeros(self.x_shape)
        self.diff = ctx.backend.zeros(self.x_shape)
        self.normalization = spec.normalization
        self.ignore_label = spec.ignore_label
        self.loss_weight = spec.loss_weight
        self.value = 0.0  # the unweighted loss (what Caffe's test prints as the output)

    def forward(self, x, train: bool) -> None:
        if self.truth is None:
            self.loss = 0.0
            return
        raw = self.backend.softmax_loss_forward(
            x.reshape(self.x_shape), self.truth, self.prob, self.normalization, self.ignore_label
        )
        self.value = float(raw)
        self.loss = float(np.float32(raw) * np.float32(self.loss_weight))
        self.backend.fill(self.output, self.loss)

    def backward(self, x, dx) -> None:
        if dx is not None and self.truth is not None:
            self.backend.softmax_loss_backward(
                self.prob,
                self.truth,
                self.diff,
                self.normalization,
                self.ignore_label,
                self.loss_weight,
            )
            self.backend.accumulate(dx.reshape(self.x_shape), self.diff, 1.0)


class AccuracyLayer(TruthLayer):
    """Caffe ``Accuracy`` (top_k, ties count against, ignore_label). ``framework_value``
    holds the fraction correct of the last forward as Caffe computes it; ``value`` the same
    with positions whose scores hold a NaN or an infinity counted as wrong (Caffe quirk:
    every ``>=`` against NaN is false, so no class "beats" the label and a NaN net scores 1),
    and ``non_finite`` their number."""

    is_sink = True
    truth_kind = "label"

    def __init__(self, shape: LayerShape, ctx: LayerContext):
        super().__init__(shape, ctx)
        spec: AccuracySpec = shape.layer
        channels = shape.input[0]
        self.x_shape = (ctx.batch, channels, shape.input[1] * shape.input[2])
        self.top_k = spec.top_k
        self.ignore_label = spec.ignore_label
        self.value = 0.0
        self.framework_value = 0.0
        self.non_finite = 0

    def forward(self, x, train: bool) -> None:
        if self.truth is None:
            return
        self.framework_value = self.value = self.backend.accuracy(
            x.reshape(self.x_shape), self.truth, self.top_k, self.ignore_label
        )
        scores = np.asarray(self.backend.to_host(x)).reshape(self.x_shape)
        bad = ~np.isfinite(scores).all(axis=1)  # (batch, positions)
        self.non_finite = int(bad.sum())
        if self.non_finite:
            labels = np.asarray(self.backend.to_host(self.truth)).reshape(bad.shape)
            self.value = _accuracy_counting_non_finite_wrong(
                scores, labels, bad, self.top_k, self.ignore_label
            )

    def backward(self, x, dx) -> None:
        """Accuracy has no gradient."""


def _accuracy_counting_non_finite_wrong(
    scores: np.ndarray, labels: np.ndarray, bad: np.ndarray, top_k: int, ignore: int | None
) -> float:
    """Caffe's ``Accuracy`` (``#{k : score_k >= score_label} − 1 < top_k`` per position,
    ignored labels left out of the count) with the ``bad`` positions counted as wrong, as
    the float32 quotient ``correct / count`` (0 when every position is ignored)."""
    labels = labels.astype(np.int64)
    valid = np.ones(labels.shape, dtype=bool) if ignore is None else labels != ignore
    safe = np.where(valid, labels, 0)
    truth = np.take_along_axis(scores, safe[:, None, :], axis=1)  # (batch, 1, positions)
    better = (scores >= truth).sum(axis=1) - 1
    correct = (better < top_k) & valid & ~bad
    count = int(valid.sum())
    if count == 0:
        return 0.0
    return float(np.float32(correct.sum()) / np.float32(count))
