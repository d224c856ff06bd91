"""darknet batch norm, bit for bit against darknet's loops transcribed in NumPy.

The kernels (engine.backends.cpu.batchnorm) run each channel's float32 chains in darknet's
``(image, position)`` order, several channels at a time (scalar lanes, or SIMD lanes over a
transposed strip of the planes). Whatever the lane layout, every channel's chain must be the
one of ``blas.c``: the transcription below walks the ``(b, s)`` positions one by one with all
channels as a NumPy vector (each channel one float32 chain, float64 where C promotes), so it
fixes the order and the roundings of every sum independently of the kernels' blocking.
Shapes: channel counts that are and are not multiples of the lane widths, a connected layer's
``spatial = 1``, batch 1, ``m`` a power of two and not, and ``m`` longer than a strip.
"""

from __future__ import annotations

import numpy as np
import pytest

from dnupdate.engine.backends.cpu import activations as act
from dnupdate.engine.backends.cpu import batchnorm as bn
from tests.numba_threads import with_threads as _with_threads
from tests.reference.batchnorm import darknet_layer_data

F32, F64 = np.float32, np.float64

#: (B, C, spatial...) — C mod 8, 16 and 32 not 0 and 0; spatial 1; batch 1; m = 2^j; m > 512
SHAPES = [(3, 5, 3, 3), (4, 16, 4, 4), (2, 37, 3, 3), (1, 19, 6, 5), (6, 11), (5, 40),
          (2, 64, 4, 4), (3, 33, 13, 13), (128, 3)]  # fmt: skip
CODES = [act.LINEAR, act.LEAKY, act.RELU]


_data = darknet_layer_data


def _positions(x3):
    """darknet's order of a channel's elements: images, then positions."""
    return [(b, s) for b in range(x3.shape[0]) for s in range(x3.shape[2])]


def _forward_reference(d, code):
    """``forward_batchnorm_layer`` (train) then ``activate_array``: ``mean_cpu``,
    ``variance_cpu`` (``+= pow(x − mean, 2)``: double, stored float each step), the rolling
    update, ``normalize_cpu``, ``scale_bias``, ``add_bias``."""
    out = d["out"].copy()
    x3 = out.reshape(out.shape[0], out.shape[1], -1)
    m = x3.shape[0] * x3.shape[2]
    totals = np.zeros(x3.shape[1], F32)
    for b, s in _positions(x3):
        totals = totals + x3[b, :, s]
    mean = totals * F32(1.0 / m)
    squares = np.zeros(x3.shape[1], F32)
    for b, s in _positions(x3):
        diff = (x3[b, :, s] - mean).astype(F64)
        squares = (squares.astype(F64) + diff * diff).astype(F32)
    with np.errstate(invalid="ignore", divide="ignore"):
        variance = squares * (F32(1.0 / (m - 1)) if m > 1 else F32(np.inf))
    rm = d["rolling_mean"] * F32(0.99)
    rm = rm + F32(0.01) * mean
    rv = d["rolling_variance"] * F32(0.99)
    rv = rv + F32(0.01) * variance
    column = (1, -1, 1)
    denominator = np.sqrt(variance.astype(F64)) + F64(F32(0.000001))
    x_norm = ((x3 - mean.reshape(column)).astype(F64) / denominator.reshape(column)).astype(F32)
    y = x_norm * d["scales"].reshape(column) + d["biases"].reshape(column)
    y = y.reshape(out.shape)
    act.activate(y, code)
    return dict(out=y, x=out, x_norm=x_norm.reshape(out.shape), mean=mean, variance=variance,
                rm=rm, rv=rv)  # fmt: skip


def _backward_reference(d, forward, code):
    """``gradient_array`` then ``backward_batchnorm_layer``: ``backward_bias`` (a float sum
    per image, added), ``backward_scale_cpu``, ``scale_bias``, ``mean_delta_cpu``,
    ``variance_delta_cpu``, ``normalize_delta_cpu``."""
    delta = d["delta"].copy()
    act.gradient(forward["out"], code, delta)
    shape = delta.shape
    delta3 = delta.reshape(shape[0], shape[1], -1)
    x3 = forward["x"].reshape(delta3.shape)
    norm3 = forward["x_norm"].reshape(delta3.shape)
    mean, variance, scales = forward["mean"], forward["variance"], d["scales"]
    m = delta3.shape[0] * delta3.shape[2]
    bias_updates, scale_updates = d["updates"].copy(), d["updates"][::-1].copy()
    for b in range(delta3.shape[0]):
        per_image = np.zeros(shape[1], F32)
        for s in range(delta3.shape[2]):
            per_image = per_image + delta3[b, :, s]
        bias_updates = bias_updates + per_image
    products = np.zeros(shape[1], F32)
    for b, s in _positions(delta3):
        products = products + delta3[b, :, s] * norm3[b, :, s]
    scale_updates = scale_updates + products
    scaled = delta3 * scales.reshape(1, -1, 1)
    totals, weighted = np.zeros(shape[1], F32), np.zeros(shape[1], F32)
    for b, s in _positions(delta3):
        totals = totals + scaled[b, :, s]
        weighted = weighted + scaled[b, :, s] * (x3[b, :, s] - mean)
    var_eps = (variance + F32(0.00001)).astype(F64)
    mean_delta = (totals.astype(F64) * (-1.0 / np.sqrt(var_eps))).astype(F32)
    variance_delta = (weighted.astype(F64) * (-0.5 * var_eps**-1.5)).astype(F32)
    column = (1, -1, 1)
    centered = (x3 - mean.reshape(column)).astype(F64)
    mean_term = (mean_delta / F32(m)).astype(F64).reshape(column)
    result = (
        scaled.astype(F64) * (1.0 / np.sqrt(var_eps)).reshape(column)
        + (variance_delta.astype(F64) * 2.0).reshape(column) * centered / m
        + mean_term
    ).astype(F32)
    return dict(delta=result.reshape(shape), bias_updates=bias_updates,
                scale_updates=scale_updates, mean_delta=mean_delta,
                variance_delta=variance_delta)  # fmt: skip


def _infer_reference(d, forward, code):
    out = d["out"].copy()
    x3 = out.reshape(out.shape[0], out.shape[1], -1)
    column = (1, -1, 1)
    denominator = np.sqrt(forward["rv"].astype(F64)) + F64(F32(0.000001))
    centered = (x3 - forward["rm"].reshape(column)).astype(F64)
    x_norm = (centered / denominator.reshape(column)).astype(F32)
    y = (x_norm * d["scales"].reshape(column) + d["biases"].reshape(column)).reshape(out.shape)
    act.activate(y, code)
    return y


def _ours(d, code):
    channels = d["out"].shape[1]
    out = d["out"].copy()
    x, x_norm = np.empty_like(out), np.empty_like(out)
    mean, variance = np.empty(channels, F32), np.empty(channels, F32)
    rm, rv = d["rolling_mean"].copy(), d["rolling_variance"].copy()
    bn.darknet_batchnorm_forward_train(out, x, x_norm, mean, variance, rm, rv, d["scales"],
                                       d["biases"], activation=code)  # fmt: skip
    delta = d["delta"].copy()
    bias_updates, scale_updates = d["updates"].copy(), d["updates"][::-1].copy()
    mean_delta, variance_delta = np.empty(channels, F32), np.empty(channels, F32)
    bn.darknet_batchnorm_backward(delta, x, x_norm, mean, variance, d["scales"], bias_updates,
                                  scale_updates, mean_delta, variance_delta, output=out,
                                  activation=code)  # fmt: skip
    infer = d["out"].copy()
    bn.darknet_batchnorm_forward_infer(infer, rm, rv, d["scales"], d["biases"], activation=code)
    return dict(out=out, x=x, x_norm=x_norm, mean=mean, variance=variance, rm=rm, rv=rv,
                delta=delta, bias_updates=bias_updates, scale_updates=scale_updates,
                mean_delta=mean_delta, variance_delta=variance_delta, infer=infer)  # fmt: skip


def _reference(d, code):
    forward = _forward_reference(d, code)
    backward = _backward_reference(d, forward, code)
    return {**forward, **backward, "infer": _infer_reference(d, forward, code)}


def _same_bits(ours, theirs):
    assert ours.keys() == theirs.keys()
    for key in theirs:
        assert ours[key].dtype == theirs[key].dtype, key
        assert ours[key].tobytes() == theirs[key].tobytes(), key


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("code", CODES)
def test_darknet_batchnorm_is_darknets_loops_bit_for_bit(shape, code):
    d = _data(shape, code * 7 + shape[1])
    _same_bits(_ours(d, code), _reference(d, code))


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("shape", [(3, 33, 13, 13), (2, 64, 4, 4), (5, 40), (4, 16, 4, 4)])
def test_darknet_batchnorm_lanes_do_not_depend_on_threads(shape, threads):
    d = _data(shape, 11)
    one = _with_threads(1, lambda: _ours(d, act.LEAKY))
    _same_bits(_with_threads(threads, lambda: _ours(d, act.LEAKY)), one)


@pytest.mark.parametrize("shape", [(3, 40, 5, 5), (2, 16, 6, 6), (5, 37)])
def test_every_block_width_gives_the_same_bits(shape):
    """The forward's block width (:func:`bn.block_width`: 8 scalar lanes, 16 or 32 SIMD lanes,
    chosen from the thread count) changes no bit: each channel stays one chain per sum; nor
    does normalising from ``x`` where the layer wrote its product (``from_x``) instead of
    copying ``out`` there."""
    d = _data(shape, 5)
    channels = shape[1]
    results = []
    for width, from_x in [(w, f) for w in (bn.LANES, 16, bn.VECTOR_LANES) for f in (False, True)]:
        out = d["out"].copy()
        out3 = out.reshape(shape[0], channels, -1)
        x, x_norm = np.empty_like(out3), np.empty_like(out3)
        if from_x:
            x[...] = out3
            out3[...] = np.nan  # only written
        stats = [np.empty(channels, F32), np.empty(channels, F32)]
        rolling = [d["rolling_mean"].copy(), d["rolling_variance"].copy()]
        bn._darknet_forward(out3, x, x_norm, *stats, *rolling, d["scales"], d["biases"], True,
                            act.LEAKY, width, from_x, *bn._NO_SHORTCUT)  # fmt: skip
        results.append([out, x, x_norm, *stats, *rolling])
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert a.tobytes() == b.tobytes()


def test_block_width_leaves_no_thread_without_a_block():
    assert bn.block_width(128, 2) == 32
    assert bn.block_width(32, 1) == 32
    assert bn.block_width(32, 2) == 16
    assert bn.block_width(16, 2) == bn.LANES
    assert bn.block_width(5, 4) == bn.LANES
