"""Plain-NumPy (float64) references for the softmax and loss kernels."""

from __future__ import annotations

import numpy as np

FLT_MIN = float(np.finfo(np.float32).tiny)
SECRET_NUM = -1234.0


def darknet_softmax(x, groups=1, temperature=1.0):
    """Per sample (first axis) and group: ``exp(x/T − max/T)/Σ``, float64."""
    x = np.asarray(x, np.float64)
    batch = x.shape[0]
    chunks = x.reshape(batch, groups, -1) / temperature
    e = np.exp(chunks - chunks.max(axis=2, keepdims=True))
    return (e / e.sum(axis=2, keepdims=True)).reshape(x.shape)


def darknet_cross_entropy(p, truth):
    """(loss per element, delta, cost): ``−log p`` where ``t ≠ 0``; ``t − p``."""
    p = np.asarray(p, np.float64)
    t = np.asarray(truth, np.float64)
    with np.errstate(divide="ignore"):
        loss = np.where(t != 0, -np.log(p), 0.0)
    return loss, t - p, loss.sum()


def darknet_cost(pred, truth, cost_type):
    """(error, delta, pred after masking) for ``sse``/``masked``/``smooth``/``L1``."""
    pred = np.asarray(pred, np.float64).copy()
    t = np.asarray(truth, np.float64)
    if cost_type == "masked":
        pred[t == SECRET_NUM] = SECRET_NUM
    d = t - pred
    if cost_type == "smooth":
        small = np.abs(d) < 1
        error = np.where(small, d * d, 2 * np.abs(d) - 1)
        delta = np.where(small, d, np.where(d < 0, 1.0, -1.0))
    elif cost_type == "L1":
        error = np.abs(d)
        delta = np.where(d > 0, 1.0, -1.0)
    else:
        error = d * d
        delta = d
    return error, delta, pred


def caffe_softmax(x):
    """Softmax over axis 1 of ``(N, C, inner)``."""
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def caffe_normalizer(mode, outer, inner, valid):
    value = {"full": outer * inner, "valid": valid, "batch_size": outer, "none": 1}[mode]
    return max(1.0, float(value))


def caffe_softmax_loss(x, labels, mode="valid", ignore_label=None, loss_weight=1.0):
    """(top value, dx) for SoftmaxWithLoss on ``(N, C, inner)`` with labels ``(N, inner)``."""
    p = caffe_softmax(x)
    outer, _, inner = p.shape
    labels = np.asarray(labels).reshape(outer, inner).astype(np.int64)
    loss = 0.0
    valid = 0
    dx = p.copy()
    for i in range(outer):
        for j in range(inner):
            label = labels[i, j]
            if ignore_label is not None and label == ignore_label:
                dx[i, :, j] = 0.0
                continue
            loss -= np.log(max(p[i, label, j], FLT_MIN))
            dx[i, label, j] -= 1.0
            valid += 1
    normalizer = caffe_normalizer(mode, outer, inner, valid)
    return loss / normalizer, dx * loss_weight / normalizer


def caffe_softmax_loss_math(x, labels, mode="valid", ignore_label=None):
    """The loss as a float64 function of x (no clamp reached in tests)."""
    return caffe_softmax_loss(x, labels, mode, ignore_label)[0]


def caffe_accuracy(scores, labels, top_k=1, ignore_label=None):
    """(accuracy, per-class accuracy): correct when fewer than top_k OTHER classes score
    ``>=`` the true class (so a tie is a miss)."""
    scores = np.asarray(scores, np.float64)
    outer, classes, inner = scores.shape
    labels = np.asarray(labels).reshape(outer, inner).astype(np.int64)
    correct = count = 0
    hits = np.zeros(classes)
    seen = np.zeros(classes)
    for i in range(outer):
        for j in range(inner):
            label = labels[i, j]
            if ignore_label is not None and label == ignore_label:
                continue
            seen[label] += 1
            others_at_least = int(np.sum(scores[i, :, j] >= scores[i, label, j])) - 1
            if others_at_least < top_k:
                correct += 1
                hits[label] += 1
            count += 1
    per_class = np.where(seen > 0, hits / np.maximum(seen, 1), 0.0)
    return (correct / count if count else 0.0), per_class
