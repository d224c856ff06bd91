"""Central differences of a whole network's loss, for the gradient tests of graph layers."""

from __future__ import annotations

import numpy as np


def loss_slopes(net, x: np.ndarray, count: int, seed: int, h: float = 1e-2):
    """``(indices, slopes)``: ``count`` parameter indices drawn with ``seed`` and, for each,
    ``(L(θ + h·e_i) − L(θ − h·e_i)) / 2h`` of ``net.loss`` after a training-mode forward of
    ``x`` (the parameter is put back after each pair)."""
    indices = np.random.default_rng(seed).choice(net.params.size, size=count, replace=False)
    slopes = []
    for i in indices:
        keep = net.params[i]
        net.params[i] = keep + h
        net.forward(x, train=True)
        up = net.loss
        net.params[i] = keep - h
        net.forward(x, train=True)
        down = net.loss
        net.params[i] = keep
        slopes.append((up - down) / (2 * h))
    return indices, slopes
