"""Central finite differences: the numeric derivative a kernel's backward is checked against."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def central_difference(
    loss: Callable[[np.ndarray], float], point: np.ndarray, index: tuple, eps: float = 1e-3
) -> float:
    """``(loss(point + eps·e) − loss(point − eps·e)) / (2·eps)`` with ``e`` the unit array at
    ``index`` (``point``, float64, is left as it was)."""
    plus, minus = point.copy(), point.copy()
    plus[index] += eps
    minus[index] -= eps
    return (loss(plus) - loss(minus)) / (2 * eps)


def assert_gradient(
    loss: Callable[[np.ndarray], float],
    point: np.ndarray,
    analytic: np.ndarray,
    indices: list[tuple],
    tolerance: float = 1e-3,
) -> None:
    """``analytic[index]`` within ``tolerance`` (relative, at least absolute) of the central
    difference of ``loss`` at ``point`` for every index."""
    for index in indices:
        numeric = central_difference(loss, point, index)
        assert abs(numeric - analytic[index]) < tolerance * max(1.0, abs(numeric)), index
