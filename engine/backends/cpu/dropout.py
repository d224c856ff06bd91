"""Dropout kernels (CPU, Numba): darknet's in-place rule and Caffe's mask rules.

Both frameworks use *inverted* dropout: kept values are multiplied by ``scale = 1/(1 − p)`` at
training time and inference is the identity (the caller simply skips these kernels).

darknet (``dropout_layer.c``; spec/darknet.md 7.7): one ``rand_uniform(0, 1)`` per element in flat
order on every training forward; drop when ``r < p`` (both float32), else ``x·scale``; backward
applies the same mask and scale to the delta in place. The caller supplies the draws (e.g.
``engine.rng.DarknetRandom.rand_uniform_array``) so the exact glibc stream is reproduced.

Caffe (``dropout_layer.cpp``/``.cu``, ``math_functions.cpp:caffe_rng_bernoulli``; spec/caffe.md
7.6): ``threshold_ = p``, ``scale_ = 1/(1 − p)`` (float), ``uint_thres_ = (uint)(UINT_MAX·p)``.

* CPU: ``caffe_rng_bernoulli(count, 1. − p, mask)`` with boost's ``bernoulli_distribution<double>``
  on the raw 32-bit ``mt19937`` output ``u``: ``mask = 1`` iff ``double(u) ≤ (1 − p)·(2³² − 1)``.
  Low draws are KEPT.
* GPU: a raw ``uint`` per element and ``mask = u > uint_thres_``, where ``UINT_MAX·p`` is a
  float32 product (``UINT_MAX`` becomes 2³²). High draws are kept: the same stream gives a
  different mask than on the CPU.
* From a float uniform ``r ∈ [0, 1)`` (an engine that does not emulate mt19937): ``keep iff
  r > p``, the GPU rule in uniform terms, which keeps with probability ``1 − p``.

Forward ``y = x·mask·scale``; backward ``dx = dy·mask·scale`` (float32, ``(x·mask)·scale``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from dnupdate.engine.backends.cpu.activations import (
    KernelArgumentError,
    as_flat_float32,
    check_same_size,
)

_UINT_MAX = 4294967295.0


def darknet_dropout_scale(probability: float) -> np.float32:
    """``l.scale = 1./(1. − probability)`` with a float ``probability``, stored as float."""
    return np.float32(1.0 / (1.0 - float(np.float32(probability))))


def caffe_dropout_scale(ratio: float) -> np.float32:
    """``scale_ = 1. / (1. − threshold_)`` with a float ``threshold_``, stored as float."""
    return np.float32(1.0 / (1.0 - float(np.float32(ratio))))


@njit(parallel=True, cache=True)
def _darknet_dropout(values, draws, probability, scale):
    for i in prange(values.size):
        if draws[i] < probability:
            values[i] = np.float32(0.0)
        else:
            values[i] = values[i] * scale


def _check_probability(probability: float) -> None:
    if not 0.0 <= probability < 1.0:
        raise KernelArgumentError(f"dropout probability must be in [0, 1), got {probability}")


def darknet_dropout_forward(x: np.ndarray, draws: np.ndarray, probability: float) -> None:
    """darknet ``forward_dropout_layer`` (training), in place on ``x`` (the previous layer's
    output): ``x[i] = 0`` if ``draws[i] < p`` else ``x[i]·scale``.

    ``draws``: float32, one ``rand_uniform(0, 1)`` per element of ``x`` in flat order; keep them
    for the backward pass (darknet's ``l.rand``). darknet quirk: because ``x`` is modified in
    place, the previous layer's activation gradient later sees dropped and scaled values.
    """
    _check_probability(probability)
    x_flat = as_flat_float32(x, "x")
    r_flat = as_flat_float32(draws, "draws")
    check_same_size(("x", x_flat), ("draws", r_flat))
    _darknet_dropout(x_flat, r_flat, np.float32(probability), darknet_dropout_scale(probability))


def darknet_dropout_backward(delta: np.ndarray, draws: np.ndarray, probability: float) -> None:
    """darknet ``backward_dropout_layer``: the same mask and scale applied to ``delta`` (the
    previous layer's delta, which is this layer's delta) in place."""
    darknet_dropout_forward(delta, draws, probability)


@njit(parallel=True, cache=True)
def _mask_cpu_rule(bits, keep_limit, mask):
    for i in prange(bits.size):
        mask[i] = 1 if np.float64(bits[i]) <= keep_limit else 0


@njit(parallel=True, cache=True)
def _mask_gpu_rule(bits, threshold, mask):
    for i in prange(bits.size):
        mask[i] = 1 if bits[i] > threshold else 0


@njit(parallel=True, cache=True)
def _mask_uniform_rule(draws, ratio, mask):
    for i in prange(draws.size):
        mask[i] = 1 if draws[i] > ratio else 0


def _check_mask(mask: np.ndarray, size: int) -> np.ndarray:
    if not isinstance(mask, np.ndarray) or mask.dtype != np.uint32 or mask.size != size:
        raise KernelArgumentError(f"mask: expected a uint32 array of {size} elements")
    if not mask.flags.c_contiguous:
        raise KernelArgumentError("mask: expected a contiguous array")
    return mask.reshape(-1)


def _check_bits(bits: np.ndarray) -> np.ndarray:
    if not isinstance(bits, np.ndarray) or bits.dtype != np.uint32 or not bits.flags.c_contiguous:
        raise KernelArgumentError("bits: expected a contiguous uint32 array of raw draws")
    return bits.reshape(-1)


def caffe_dropout_mask_cpu_rule(bits: np.ndarray, ratio: float, mask: np.ndarray) -> None:
    """Caffe CPU mask from raw 32-bit ``mt19937`` draws: ``mask = 1`` iff
    ``double(u) ≤ (1 − p)·(2³² − 1)`` (boost ``bernoulli_distribution<double>(1. − p)``)."""
    _check_probability(ratio)
    flat = _check_bits(bits)
    keep_probability = 1.0 - float(np.float32(ratio))
    _mask_cpu_rule(flat, keep_probability * _UINT_MAX, _check_mask(mask, flat.size))


def caffe_dropout_mask_gpu_rule(bits: np.ndarray, ratio: float, mask: np.ndarray) -> None:
    """Caffe GPU mask from raw 32-bit draws: ``mask = 1`` iff ``u > uint(UINT_MAX·p)`` with the
    product in float32 (``uint_thres_``)."""
    _check_probability(ratio)
    flat = _check_bits(bits)
    threshold = np.uint32(min(float(np.float32(2.0**32) * np.float32(ratio)), _UINT_MAX))
    _mask_gpu_rule(flat, threshold, _check_mask(mask, flat.size))


def caffe_dropout_mask_from_uniform(draws: np.ndarray, ratio: float, mask: np.ndarray) -> None:
    """Bernoulli(1 − p) mask from float32 uniforms in [0, 1): ``mask = 1`` iff ``r > p``."""
    _check_probability(ratio)
    flat = as_flat_float32(draws, "draws")
    _mask_uniform_rule(flat, np.float32(ratio), _check_mask(mask, flat.size))


@njit(parallel=True, cache=True)
def _apply_mask(source, mask, scale, target):
    for i in prange(source.size):
        target[i] = (source[i] * np.float32(mask[i])) * scale


def caffe_dropout_forward(x: np.ndarray, mask: np.ndarray, ratio: float, y: np.ndarray) -> None:
    """Caffe ``Dropout`` TRAIN forward: ``y = x·mask·scale`` (``y`` may be ``x``)."""
    x_flat = as_flat_float32(x, "x")
    y_flat = as_flat_float32(y, "y")
    check_same_size(("x", x_flat), ("y", y_flat))
    _apply_mask(x_flat, _check_mask(mask, x_flat.size), caffe_dropout_scale(ratio), y_flat)


def caffe_dropout_backward(dy: np.ndarray, mask: np.ndarray, ratio: float, dx: np.ndarray) -> None:
    """Caffe ``Dropout`` TRAIN backward: ``dx = dy·mask·scale`` (``dx`` may be ``dy``)."""
    caffe_dropout_forward(dy, mask, ratio, dx)
