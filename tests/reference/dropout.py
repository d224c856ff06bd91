"""Plain-NumPy references for the dropout kernels."""

from __future__ import annotations

import numpy as np


def darknet_dropout(x, draws, probability):
    """``0`` where ``r < p`` else ``x·(1/(1 − p))`` (float32 scale, as darknet stores it)."""
    p32 = np.float32(probability)
    scale = np.float32(1.0 / (1.0 - float(p32)))
    x = np.asarray(x, np.float32)
    return np.where(np.asarray(draws, np.float32) < p32, np.float32(0), x * scale)


def caffe_mask_cpu(bits, ratio):
    """boost ``bernoulli_distribution<double>(1 − p)`` on raw 32-bit draws."""
    keep = 1.0 - float(np.float32(ratio))
    return (np.asarray(bits, np.float64) <= keep * 4294967295.0).astype(np.uint32)


def caffe_mask_gpu(bits, ratio):
    """``u > (uint)(UINT_MAX·p)`` with the product in float32."""
    threshold = int(float(np.float32(2.0**32) * np.float32(ratio)))
    return (np.asarray(bits, np.uint64) > threshold).astype(np.uint32)


def caffe_dropout(x, mask, ratio):
    scale = np.float32(1.0 / (1.0 - float(np.float32(ratio))))
    return (np.asarray(x, np.float32) * mask.astype(np.float32)) * scale
