"""Softmax and loss kernels (CPU, Numba): darknet ``[softmax]``/``[cost]``, Caffe
``SoftmaxWithLoss`` and ``Accuracy``.

darknet (``softmax_layer.c``, ``cost_layer.c``, ``blas.c``; spec/darknet.md 7.8, 7.9). Deltas are
darknet's *negative* gradients (``t − p``), and every backward ADDS into the previous layer's
delta:

* softmax per sample and group with temperature: ``e_i = expf(x_i/T − max/T)`` (darknet's
  ``-Ofast`` build narrowed the double ``exp`` to ``expf``, so float32 here), ``p = e/Σe``;
* cross-entropy: ``loss_i = −log p_i`` where ``t_i ≠ 0`` (unweighted), ``delta = t − p`` (ignores
  ``1/T``), ``cost = Σ loss`` (float32 sum, as ``sum_array``); backward ``net.delta += delta``
  (no softmax Jacobian);
* ``[cost]``: L2 (``sse`` and every other name), smooth-L1 (``smooth``), L1 (``L1``),
  ``masked`` (inputs where ``truth == −1234`` are set to −1234 first, in place); backward
  ``net.delta += scale·delta``. A ``[cost]`` after ``[softmax]`` therefore doubles the logit
  gradient: the cost's ``t − p`` lands in the softmax delta, which passes straight through.

Caffe (``softmax_layer.cpp``, ``softmax_loss_layer.cpp``, ``accuracy_layer.cpp``; spec/caffe.md
7.7, 7.8): softmax over axis 1 of ``(N, C, inner)`` with the max subtracted; the loss
``−Σ log(max(p_label, FLT_MIN))/normalizer`` accumulates in float32 with ``logf``; the channel
sums accumulate in float32 in channel order, as the ``Softmax`` layer's (``SoftmaxWithLoss``
runs that layer; Caffe's CPU sums with BLAS ``sgemv``, its GPU in channel order).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from dnupdate.engine.backends.cpu.activations import (
    KernelArgumentError,
    as_flat_float32,
    check_same_size,
)

SECRET_NUM = np.float32(-1234.0)  # darknet's mask value for `[cost] type=masked`

# darknet.h: typedef enum { SSE, MASKED, L1, SEG, SMOOTH, WGAN } COST_TYPE;
SSE, MASKED, L1, SEG, SMOOTH, WGAN = range(6)
DARKNET_COSTS: dict[str, int] = {
    "sse": SSE,
    "masked": MASKED,
    "L1": L1,
    "seg": SEG,
    "smooth": SMOOTH,
    "wgan": WGAN,
}

# caffe.proto LossParameter.NormalizationMode
FULL, VALID, BATCH_SIZE, NONE = range(4)
CAFFE_NORMALIZATIONS: dict[str, int] = {
    "full": FULL,
    "valid": VALID,
    "batch_size": BATCH_SIZE,
    "none": NONE,
}

FLT_MIN = np.float32(np.finfo(np.float32).tiny)
_NO_IGNORE = np.iinfo(np.int64).min
_UNUSED = np.zeros(0, np.float32)


class LabelOutOfRangeError(ValueError):
    """A class label outside ``[0, classes)`` (and not the ignore label)."""


def cost_code(name: str) -> int:
    """darknet ``COST_TYPE`` value of a ``[cost] type=`` name (``sse``, ``masked``, ``L1``,
    ``seg``, ``smooth``, ``wgan``); darknet falls back to SSE for others, here it is an error."""
    try:
        return DARKNET_COSTS[name]
    except KeyError:
        raise KernelArgumentError(
            f"unknown cost type {name!r} (known: {', '.join(DARKNET_COSTS)})"
        ) from None


def normalization_code(name: str) -> int:
    """Caffe ``NormalizationMode`` value of ``full``/``valid``/``batch_size``/``none``."""
    try:
        return CAFFE_NORMALIZATIONS[name]
    except KeyError:
        raise KernelArgumentError(
            f"unknown normalization {name!r} (known: {', '.join(CAFFE_NORMALIZATIONS)})"
        ) from None


# --------------------------------------------------------------------------------------------
# darknet softmax and cross-entropy
# --------------------------------------------------------------------------------------------


@njit(inline="always", cache=True)
def _darknet_softmax_row(x, out, start, n, temperature):
    largest = np.float32(-np.finfo(np.float32).max)  # -FLT_MAX, strict >
    for i in range(n):
        if x[start + i] > largest:
            largest = x[start + i]
    total = np.float32(0.0)
    shift = largest / temperature
    for i in range(n):
        e = np.exp(x[start + i] / temperature - shift)  # float32 expf
        total += e
        out[start + i] = e
    for i in range(n):
        out[start + i] = out[start + i] / total


# softmax kernels are serial: a batch of class scores is microseconds of work, and a parallel
# build costs ~0.5 s of cold compile each
@njit(cache=True)
def _darknet_softmax(x, out, batch, groups, temperature):
    inputs = x.size // batch
    n = inputs // groups
    for task in range(batch * groups):
        b = task // groups
        g = task % groups
        _darknet_softmax_row(x, out, b * inputs + g * n, n, temperature)


@njit(cache=True)
def _darknet_cross_entropy(p, truth, delta, loss):
    cost = np.float32(0.0)
    for i in range(p.size):
        t = truth[i]
        loss[i] = np.float32(-np.log(np.float64(p[i]))) if t != 0 else np.float32(0.0)
        delta[i] = t - p[i]
        cost += loss[i]  # sum_array
    return cost


@njit(cache=True)
def _axpy(alpha, x, y):
    for i in range(x.size):
        y[i] = y[i] + alpha * x[i]


def darknet_softmax_forward(
    x: np.ndarray, out: np.ndarray, groups: int = 1, temperature: float = 1.0
) -> None:
    """darknet ``softmax_cpu`` as ``[softmax]`` calls it: per sample (first axis), the input is
    split into ``groups`` contiguous chunks, each normalised with temperature ``T``:
    ``p_i = expf(x_i/T − max/T) / Σ_j expf(x_j/T − max/T)`` in float32, the sum sequential.
    """
    x_flat = as_flat_float32(x, "x")
    out_flat = as_flat_float32(out, "out")
    check_same_size(("x", x_flat), ("out", out_flat))
    batch = x.shape[0] if x.ndim > 1 else 1
    inputs = x_flat.size // max(batch, 1)
    if groups < 1 or inputs % groups:
        raise KernelArgumentError(f"{inputs} inputs cannot be split into {groups} groups")
    _darknet_softmax(x_flat, out_flat, batch, groups, np.float32(temperature))


def darknet_softmax_cross_entropy(
    p: np.ndarray, truth: np.ndarray, delta: np.ndarray, loss: np.ndarray
) -> float:
    """darknet ``softmax_x_ent_cpu`` + ``sum_array``: returns the layer cost.

    ``loss_i = −log(p_i)`` (double log, stored float32) wherever ``t_i ≠ 0`` — NOT
    ``t_i·(−log p_i)``: soft or multi-hot targets count each nonzero target once, unweighted;
    ``delta_i = t_i − p_i`` (darknet's negative gradient; exact only for Σt = 1 and T = 1);
    cost = float32 sequential sum of ``loss``.
    """
    flats = [
        as_flat_float32(a, n)
        for a, n in ((p, "p"), (truth, "truth"), (delta, "delta"), (loss, "loss"))
    ]
    check_same_size(*zip(("p", "truth", "delta", "loss"), flats, strict=True))
    return float(_darknet_cross_entropy(*flats))


def darknet_softmax_backward(delta: np.ndarray, input_delta: np.ndarray) -> None:
    """darknet ``backward_softmax_layer``: ``net.delta += delta`` (``axpy`` with 1); the softmax
    Jacobian is not applied (darknet quirk: the cross-entropy delta is already w.r.t. logits)."""
    darknet_cost_backward(delta, input_delta, 1.0)


# --------------------------------------------------------------------------------------------
# darknet [cost]
# --------------------------------------------------------------------------------------------


@njit(cache=True)
def _darknet_cost(pred, truth, delta, error, cost_type):
    cost = np.float32(0.0)
    for i in range(pred.size):
        if cost_type == MASKED and truth[i] == SECRET_NUM:
            pred[i] = SECRET_NUM
        diff = truth[i] - pred[i]
        if cost_type == SMOOTH:  # smooth_l1_cpu
            magnitude = abs(diff)
            if magnitude < 1:
                error[i] = diff * diff
                delta[i] = diff
            else:
                error[i] = np.float32(2.0) * magnitude - np.float32(1.0)
                # darknet quirk: sign inverted relative to diff
                delta[i] = np.float32(1.0) if diff < 0 else np.float32(-1.0)
        elif cost_type == L1:  # l1_cpu
            error[i] = abs(diff)
            delta[i] = np.float32(1.0) if diff > 0 else np.float32(-1.0)
        else:  # l2_cpu (sse, masked, seg, wgan)
            error[i] = diff * diff
            delta[i] = diff
        cost += error[i]
    return cost


def darknet_cost_forward(
    pred: np.ndarray, truth: np.ndarray, delta: np.ndarray, error: np.ndarray, cost_type: int
) -> float:
    """darknet ``forward_cost_layer``: per element, with ``d = t − p``:

    * L2 (``sse``, also ``masked``/``seg``/``wgan``): ``error = d²``, ``delta = d`` (half the
      true gradient of ``Σd²``);
    * smooth-L1: ``|d| < 1``: ``d²``, ``d``; otherwise ``2|d| − 1`` and ``delta = +1 if d < 0
      else −1`` (darknet quirk: the sign is inverted relative to ``d``);
    * L1: ``|d|``, ``delta = +1 if d > 0 else −1``.

    ``masked`` first sets ``pred[i] = −1234`` in place wherever ``truth[i] == −1234`` (darknet
    writes into the previous layer's output). Returns ``cost = Σ error`` (float32).
    """
    flats = [
        as_flat_float32(a, n)
        for a, n in ((pred, "pred"), (truth, "truth"), (delta, "delta"), (error, "error"))
    ]
    check_same_size(*zip(("pred", "truth", "delta", "error"), flats, strict=True))
    return float(_darknet_cost(*flats, cost_type))


def darknet_cost_backward(delta: np.ndarray, input_delta: np.ndarray, scale: float) -> None:
    """darknet ``backward_cost_layer``: ``net.delta += scale·delta`` (``axpy_cpu``: the product
    and the sum each rounded to float32)."""
    d_flat = as_flat_float32(delta, "delta")
    in_flat = as_flat_float32(input_delta, "input_delta")
    check_same_size(("delta", d_flat), ("input_delta", in_flat))
    _axpy(np.float32(scale), d_flat, in_flat)


# --------------------------------------------------------------------------------------------
# Caffe SoftmaxWithLoss and Accuracy
# --------------------------------------------------------------------------------------------


def _as_nci(array: np.ndarray, name: str) -> np.ndarray:
    if not isinstance(array, np.ndarray) or array.dtype != np.float32:
        raise KernelArgumentError(f"{name}: expected a float32 ndarray")
    if not array.flags.c_contiguous or array.ndim < 2:
        raise KernelArgumentError(f"{name}: expected a C-contiguous (N, C, ...) array")
    return array.reshape(array.shape[0], array.shape[1], -1)


def _labels_view(labels: np.ndarray, outer: int, inner: int) -> np.ndarray:
    if not isinstance(labels, np.ndarray) or labels.size != outer * inner:
        raise KernelArgumentError(f"labels: expected {outer * inner} labels (N·inner)")
    if not labels.flags.c_contiguous:
        raise KernelArgumentError("labels: expected a contiguous array")
    return labels.reshape(outer, inner)


@njit(cache=True)
def _first_bad_label(labels, classes, ignore):
    outer, inner = labels.shape
    for i in range(outer):
        for j in range(inner):
            value = np.int64(labels[i, j])  # static_cast<int>: truncation
            if value == ignore:
                continue
            if value < 0 or value >= classes:
                return i * inner + j
    return -1


def _check_labels(labels2: np.ndarray, classes: int, ignore: int) -> None:
    bad = _first_bad_label(labels2, classes, ignore)
    if bad >= 0:
        value = labels2.reshape(-1)[bad]
        raise LabelOutOfRangeError(
            f"label {value} at position {bad} is outside [0, {classes}) "
            "(and is not the ignore_label)"
        )


@njit(cache=True)
def _caffe_softmax(x, prob):
    outer, channels, inner = x.shape
    for task in range(outer * inner):
        i = task // inner
        k = task % inner
        largest = x[i, 0, k]
        for c in range(1, channels):
            largest = max(largest, x[i, c, k])
        total = np.float32(0.0)  # float32, in channel order, as the Softmax layer's kernel
        for c in range(channels):
            e = np.exp(x[i, c, k] - largest)
            prob[i, c, k] = e
            total = total + e
        for c in range(channels):
            prob[i, c, k] = prob[i, c, k] / total


@njit(cache=True)
def _caffe_normalizer(mode, outer, inner, valid):
    if mode == FULL:
        value = np.float32(outer * inner)
    elif mode == VALID:
        value = np.float32(valid)
    elif mode == BATCH_SIZE:
        value = np.float32(outer)
    else:
        value = np.float32(1.0)
    return max(np.float32(1.0), value)


@njit(cache=True)
def _caffe_nll(prob, labels, ignore, mode):
    outer, _, inner = prob.shape
    loss = np.float32(0.0)
    count = 0
    for i in range(outer):
        for j in range(inner):
            label = np.int64(labels[i, j])
            if label == ignore:
                continue
            loss -= np.log(max(prob[i, label, j], FLT_MIN))  # logf, float32 sum
            count += 1
    return loss / _caffe_normalizer(mode, outer, inner, count)


@njit(cache=True)
def _caffe_softmax_loss_grad(prob, labels, dx, ignore, mode, top_diff):
    outer, channels, inner = prob.shape
    count = 0
    for i in range(outer):
        for j in range(inner):
            label = np.int64(labels[i, j])
            if label == ignore:
                for c in range(channels):
                    dx[i, c, j] = np.float32(0.0)
                continue
            for c in range(channels):
                dx[i, c, j] = prob[i, c, j]
            dx[i, label, j] = dx[i, label, j] - np.float32(1.0)
            count += 1
    factor = top_diff / _caffe_normalizer(mode, outer, inner, count)  # float32 division
    for i in range(outer):
        for c in range(channels):
            for j in range(inner):
                dx[i, c, j] = dx[i, c, j] * factor


def caffe_softmax_forward(x: np.ndarray, prob: np.ndarray) -> None:
    """Caffe ``Softmax`` over axis 1 of ``(N, C, inner...)``: ``p = exp(x − max_c x)/Σ_c``
    (float32 ``exp``, the channel sum in float32 in channel order, the division in float32).

    ``SoftmaxWithLoss`` runs Caffe's own ``Softmax`` layer internally, so this is the same
    arithmetic as :func:`engine.backends.cpu.caffe_layers.caffe_softmax_forward` (tested bit
    for bit). Judgment: Caffe's CPU sum is ``caffe_cpu_gemv`` (BLAS ``sgemv``: float32, in
    the BLAS's order), its GPU sum ``kernel_channel_sum`` (float32, channel order); the float32
    sum in channel order is the GPU's exactly and the CPU's up to the BLAS's order."""
    x3 = _as_nci(x, "x")
    p3 = _as_nci(prob, "prob")
    if p3.shape != x3.shape:
        raise KernelArgumentError(f"prob: shape {prob.shape} does not match {x.shape}")
    _caffe_softmax(x3, p3)


def caffe_softmax_loss_forward(
    x: np.ndarray,
    labels: np.ndarray,
    prob: np.ndarray,
    normalization: str = "valid",
    ignore_label: int | None = None,
) -> float:
    """Caffe ``SoftmaxWithLoss`` forward: fills ``prob`` (the softmax of ``x`` over axis 1) and
    returns the layer's top value ``−Σ log(max(p[n, label, s], FLT_MIN)) / normalizer``.

    ``labels``: ``N·inner`` class indices (any numeric dtype; truncated to int as
    ``static_cast<int>``). Positions whose label equals ``ignore_label`` are skipped.
    ``normalizer`` = ``full``: N·inner, ``valid``: the number of non-ignored positions,
    ``batch_size``: N, ``none``: 1; then ``max(1, normalizer)``. The FLT_MIN clamp caps each term
    at 87.3365. The net's loss is ``loss_weight ×`` this value (the caller multiplies).
    Raises :class:`LabelOutOfRangeError` for a label outside ``[0, C)``.
    """
    x3 = _as_nci(x, "x")
    caffe_softmax_forward(x, prob)
    labels2 = _labels_view(labels, x3.shape[0], x3.shape[2])
    ignore = _NO_IGNORE if ignore_label is None else int(ignore_label)
    _check_labels(labels2, x3.shape[1], ignore)
    mode = normalization_code(normalization)
    return float(_caffe_nll(_as_nci(prob, "prob"), labels2, ignore, mode))


def caffe_softmax_loss_backward(
    prob: np.ndarray,
    labels: np.ndarray,
    dx: np.ndarray,
    loss_weight: float = 1.0,
    normalization: str = "valid",
    ignore_label: int | None = None,
) -> None:
    """Caffe ``SoftmaxWithLoss`` backward, overwriting ``dx`` (same shape as ``prob``):
    ``dx = (p − onehot(label))·(loss_weight/normalizer)`` with the factor computed in float32
    first, as Caffe does; ``dx = 0`` at ignored positions. ``loss_weight`` is the top diff.
    """
    p3 = _as_nci(prob, "prob")
    dx3 = _as_nci(dx, "dx")
    if dx3.shape != p3.shape:
        raise KernelArgumentError(f"dx: shape {dx.shape} does not match {prob.shape}")
    labels2 = _labels_view(labels, p3.shape[0], p3.shape[2])
    ignore = _NO_IGNORE if ignore_label is None else int(ignore_label)
    _check_labels(labels2, p3.shape[1], ignore)
    mode = normalization_code(normalization)
    _caffe_softmax_loss_grad(p3, labels2, dx3, ignore, mode, np.float32(loss_weight))


@njit(cache=True)
def _caffe_accuracy(scores, labels, top_k, ignore, per_class, class_counts, want_per_class):
    outer, classes, inner = scores.shape
    if want_per_class:
        per_class[:] = 0
        class_counts[:] = 0
    correct = np.float32(0.0)
    count = 0
    for i in range(outer):
        for j in range(inner):
            label = np.int64(labels[i, j])
            if label == ignore:
                continue
            if want_per_class:
                class_counts[label] += 1
            true_score = scores[i, label, j]
            better = -1  # the true class counts itself
            k = 0
            while k < classes and better < top_k:
                if scores[i, k, j] >= true_score:  # ties count against
                    better += 1
                k += 1
            if better < top_k:
                correct += 1
                if want_per_class:
                    per_class[label] += 1
            count += 1
    if want_per_class:
        for c in range(classes):
            per_class[c] = 0 if class_counts[c] == 0 else per_class[c] / class_counts[c]
    return np.float32(0.0) if count == 0 else correct / np.float32(count)


def caffe_accuracy(
    scores: np.ndarray,
    labels: np.ndarray,
    top_k: int = 1,
    ignore_label: int | None = None,
    per_class: np.ndarray | None = None,
    class_counts: np.ndarray | None = None,
) -> float:
    """Caffe ``Accuracy``: a position is correct when ``#{k : score_k ≥ score_label} − 1 <
    top_k`` (ties count AGAINST: another class with exactly the true score makes top-1 wrong).
    Returns ``correct/count`` (0 when every position is ignored).

    Optional second top: ``per_class`` and scratch ``class_counts`` (both float32 ``(C,)``)
    receive the per-class accuracy (0 for classes that do not occur).
    """
    s3 = _as_nci(scores, "scores")
    classes = s3.shape[1]
    labels2 = _labels_view(labels, s3.shape[0], s3.shape[2])
    ignore = _NO_IGNORE if ignore_label is None else int(ignore_label)
    _check_labels(labels2, classes, ignore)
    want = per_class is not None
    if want:
        if class_counts is None:
            raise KernelArgumentError("per_class needs the class_counts scratch buffer")
        for name, vector in (("per_class", per_class), ("class_counts", class_counts)):
            if vector.dtype != np.float32 or vector.shape != (classes,):
                raise KernelArgumentError(f"{name}: expected float32 ({classes},)")
    else:
        per_class = class_counts = _UNUSED  # never indexed when want is False
    return float(_caffe_accuracy(s3, labels2, top_k, ignore, per_class, class_counts, want))
