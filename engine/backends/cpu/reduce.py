"""Per-segment reductions over a flat float32 buffer (CPU, Numba).

The network keeps all parameters (and gradients, updates) in one flat float32 buffer with a view
per layer blob. The training loop reports per-layer ‖w‖, ‖Δw‖ and ‖grad‖ and checks for
non-finite values; both are reductions over segments ``buffer[offset : offset + length]``.

Sums of squares accumulate in float64 (the report is ours, not a framework's, so it is made as
accurate as cheaply possible). Segments are independent: the parallel loop runs over segments
and each iteration writes only its own output entry.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from engine.backends.cpu.activations import KernelArgumentError, as_flat_float32


def _check_segments(
    buffer: np.ndarray, offsets: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    flat = as_flat_float32(buffer, "buffer")
    offsets = np.asarray(offsets)
    lengths = np.asarray(lengths)
    if offsets.shape != lengths.shape or offsets.ndim != 1:
        raise KernelArgumentError("offsets and lengths must be 1-D arrays of the same length")
    if offsets.dtype != np.int64 or lengths.dtype != np.int64:
        raise KernelArgumentError("offsets and lengths must be int64 arrays")
    if offsets.size and (
        offsets.min() < 0 or lengths.min() < 0 or (offsets + lengths).max() > flat.size
    ):
        raise KernelArgumentError(f"a segment lies outside the buffer of {flat.size} elements")
    return flat, offsets, lengths


@njit(parallel=True, cache=True)
def _sum_squares(buffer, offsets, lengths, out):
    for k in prange(offsets.size):
        total = 0.0
        start = offsets[k]
        for i in range(start, start + lengths[k]):
            value = np.float64(buffer[i])
            total += value * value
        out[k] = total


@njit(parallel=True, cache=True)
def _nonfinite_flags(buffer, offsets, lengths, flags):
    for k in prange(offsets.size):
        flags[k] = 0
        start = offsets[k]
        for i in range(start, start + lengths[k]):
            if not math.isfinite(buffer[i]):
                flags[k] = 1
                break


def segment_sum_squares(
    buffer: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, out: np.ndarray
) -> None:
    """``out[k] = Σ buffer[offsets[k] : offsets[k] + lengths[k]]²`` accumulated in float64.

    ``offsets``/``lengths``: int64 ``(K,)``; ``out``: float64 ``(K,)``. An empty segment gives 0;
    NaN/inf propagate into the sum.
    """
    flat, offsets, lengths = _check_segments(buffer, offsets, lengths)
    if out.dtype != np.float64 or out.shape != offsets.shape:
        raise KernelArgumentError(f"out: expected float64 of shape {offsets.shape}")
    _sum_squares(flat, offsets, lengths, out)


def segment_l2_norms(
    buffer: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, out: np.ndarray
) -> None:
    """``out[k] = sqrt(Σ segment²)`` (float64 throughout): per-segment Euclidean norms."""
    segment_sum_squares(buffer, offsets, lengths, out)
    np.sqrt(out, out=out)


def first_nonfinite_segment(
    buffer: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, flags: np.ndarray
) -> int:
    """Index of the first segment holding a NaN or ±inf, or ``-1`` when every value is finite.

    ``flags``: int8 ``(K,)`` scratch, left holding 1 for every non-finite segment.
    """
    flat, offsets, lengths = _check_segments(buffer, offsets, lengths)
    if flags.dtype != np.int8 or flags.shape != offsets.shape:
        raise KernelArgumentError(f"flags: expected int8 of shape {offsets.shape}")
    _nonfinite_flags(flat, offsets, lengths, flags)
    if flags.size == 0:
        return -1
    first = int(np.argmax(flags))
    return first if flags[first] else -1
