"""Softmax, cost and metric kernels on the GPU (darknet ``[softmax]``/``[cost]``, Caffe
``SoftmaxWithLoss``/``Accuracy``), following ``engine.backends.cpu.softmax``.

Per-row and per-element work is parallel; the scalar results (darknet's cost, Caffe's loss and
accuracy) are float32 sums in the CPU's sequential order, made by one thread
(:func:`sequential_sum`, :func:`caffe_nll`, :func:`caffe_accuracy`) and left in a small device
vector that the backend copies back: only those scalars cross to the host each step.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from dnupdate.engine.backends.cpu import softmax as cpu_softmax
from dnupdate.engine.backends.cuda.compile import device_function

FLT_MAX = np.float32(np.finfo(np.float32).max)
FLT_MIN = cpu_softmax.FLT_MIN
SECRET_NUM = cpu_softmax.SECRET_NUM
MASKED, L1, SMOOTH = cpu_softmax.MASKED, cpu_softmax.L1, cpu_softmax.SMOOTH
caffe_normalizer = device_function(cpu_softmax._caffe_normalizer)
_F0 = np.float32(0.0)
_F1 = np.float32(1.0)


@cuda.jit
def sequential_sum(values, result):
    """``result[0] = Σ values`` in float32, in index order (darknet ``sum_array``)."""
    if cuda.grid(1) != 0:
        return
    total = _F0
    for i in range(values.size):
        total += values[i]
    result[0] = total


@cuda.jit
def darknet_softmax(x, out, rows, n, temperature):
    """Per ``(image, group)`` row of ``n``: ``p = expf(x/T − max/T) / Σ`` (float32)."""
    for row in range(cuda.grid(1), rows, cuda.gridsize(1)):
        start = row * n
        largest = -FLT_MAX
        for i in range(n):
            if x[start + i] > largest:
                largest = x[start + i]
        total = _F0
        shift = largest / temperature
        for i in range(n):
            e = np.float32(math.exp(x[start + i] / temperature - shift))
            total += e
            out[start + i] = e
        for i in range(n):
            out[start + i] = out[start + i] / total


@cuda.jit
def darknet_cross_entropy(p, truth, delta, loss):
    """``loss = −log p`` (double log) where ``t ≠ 0`` else 0; ``delta = t − p``."""
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        t = truth[i]
        loss[i] = np.float32(-math.log(np.float64(p[i]))) if t != 0 else _F0
        delta[i] = t - p[i]


@cuda.jit
def darknet_cost(pred, truth, delta, error, cost_type):
    """darknet ``[cost]`` per element (L2, smooth-L1 with its inverted sign, L1; masked)."""
    for i in range(cuda.grid(1), pred.size, cuda.gridsize(1)):
        if cost_type == MASKED and truth[i] == SECRET_NUM:
            pred[i] = SECRET_NUM
        diff = truth[i] - pred[i]
        if cost_type == SMOOTH:
            magnitude = abs(diff)
            if magnitude < 1:
                error[i] = diff * diff
                delta[i] = diff
            else:
                error[i] = np.float32(2.0) * magnitude - _F1
                delta[i] = _F1 if diff < 0 else -_F1  # darknet quirk: inverted sign
        elif cost_type == L1:
            error[i] = abs(diff)
            delta[i] = _F1 if diff > 0 else -_F1
        else:
            error[i] = diff * diff
            delta[i] = diff


@cuda.jit
def caffe_softmax(x, prob):
    """Softmax over axis 1 of ``(N, C, inner)``: float32 ``exp``, float32 channel sum (the
    ``Softmax`` layer's arithmetic: ``SoftmaxWithLoss`` runs that layer)."""
    outer, channels, inner = x.shape
    for task in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        i = task // inner
        k = task % inner
        largest = x[i, 0, k]
        for c in range(1, channels):
            largest = max(largest, x[i, c, k])
        total = np.float32(0.0)  # float32, channel order: Caffe's kernel_channel_sum
        for c in range(channels):
            e = np.float32(math.exp(x[i, c, k] - largest))
            prob[i, c, k] = e
            total = total + e
        for c in range(channels):
            prob[i, c, k] = prob[i, c, k] / total


@cuda.jit(device=True)
def _first_bad_label(labels, classes, ignore):
    outer, inner = labels.shape
    for i in range(outer):
        for j in range(inner):
            value = np.int64(labels[i, j])
            if value != ignore and (value < 0 or value >= classes):
                return i * inner + j
    return -1


@cuda.jit
def caffe_nll(prob, labels, ignore, mode, result):
    """``result = [−Σ log(max(p_label, FLT_MIN)) / normalizer, first bad label index or −1]``
    (float32 sum in position order, ``logf``); nothing is summed when a label is bad."""
    if cuda.grid(1) != 0:
        return
    outer, classes, inner = prob.shape
    bad = _first_bad_label(labels, classes, ignore)
    result[1] = bad
    if bad >= 0:
        return
    loss = _F0
    count = 0
    for i in range(outer):
        for j in range(inner):
            label = np.int64(labels[i, j])
            if label == ignore:
                continue
            loss -= np.float32(math.log(max(prob[i, label, j], FLT_MIN)))
            count += 1
    result[0] = loss / caffe_normalizer(mode, outer, inner, count)


@cuda.jit
def count_valid(labels, ignore, count):
    """``count[0]`` = positions whose label is not ``ignore``."""
    if cuda.grid(1) != 0:
        return
    outer, inner = labels.shape
    valid = 0
    for i in range(outer):
        for j in range(inner):
            if np.int64(labels[i, j]) != ignore:
                valid += 1
    count[0] = valid


@cuda.jit
def caffe_softmax_loss_grad(prob, labels, dx, ignore, mode, top_diff, count):
    """``dx = (p − onehot(label))·(top_diff/normalizer)``, 0 at ignored positions."""
    outer, channels, inner = prob.shape
    factor = top_diff / caffe_normalizer(mode, outer, inner, count[0])
    for t in range(cuda.grid(1), outer * channels * inner, cuda.gridsize(1)):
        j = t % inner
        c = (t // inner) % channels
        i = t // (inner * channels)
        label = np.int64(labels[i, j])
        if label == ignore:
            dx[i, c, j] = _F0
            continue
        value = prob[i, c, j]
        if c == label:
            value = value - _F1
        dx[i, c, j] = value * factor


@cuda.jit
def caffe_accuracy(scores, labels, top_k, ignore, result):
    """``result = [correct/count (0 when none), first bad label index or −1]``; ties count
    against the true class."""
    if cuda.grid(1) != 0:
        return
    outer, classes, inner = scores.shape
    bad = _first_bad_label(labels, classes, ignore)
    result[1] = bad
    if bad >= 0:
        return
    correct = _F0
    count = 0
    for i in range(outer):
        for j in range(inner):
            label = np.int64(labels[i, j])
            if label == ignore:
                continue
            true_score = scores[i, label, j]
            better = -1
            k = 0
            while k < classes and better < top_k:
                if scores[i, k, j] >= true_score:
                    better += 1
                k += 1
            if better < top_k:
                correct += _F1
            count += 1
    result[0] = _F0 if count == 0 else correct / np.float32(count)
