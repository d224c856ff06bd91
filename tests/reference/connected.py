"""Plain NumPy (float64) fully connected layer: ``y = x·Wᵀ + b`` with ``x`` flattened CHW."""

from __future__ import annotations

import numpy as np


def connected_forward(x, w, bias):
    """``y[b, o] = Σ_i x[b, i]·W[o, i] + bias[o]``."""
    x2 = np.asarray(x, np.float64).reshape(len(x), -1)
    y = x2 @ np.asarray(w, np.float64).T
    return y if bias is None else y + np.asarray(bias, np.float64)


def connected_backward(x, w, dy):
    """Gradients of ``Σ dy·y``: ``(dx shaped like x, dW = dyᵀ·x, db = Σ_b dy)``."""
    x = np.asarray(x, np.float64)
    x2 = x.reshape(len(x), -1)
    dy = np.asarray(dy, np.float64).reshape(len(x), -1)
    dx = (dy @ np.asarray(w, np.float64)).reshape(x.shape)
    return dx, dy.T @ x2, dy.sum(axis=0)
