"""Storage rounding for simulated mixed precision on the GPU.

The per-element rule is the CPU backend's :func:`engine.backends.cpu.precision.round_storage`
compiled for the device (:func:`engine.backends.cuda.compile.device_function`), so both
backends store the same bits. The kernels walk a segment table with grid-stride loops and add
their counts into a ``(segments, k)`` int64 device array with atomics (integer sums: the
result does not depend on the launch).
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from dnupdate.engine.backends.cpu import precision as cpu_precision
from dnupdate.engine.backends.cuda.compile import device_function

round_storage = device_function(cpu_precision.round_storage)
_F0 = np.float32(0.0)


@cuda.jit
def round_segments(values, offsets, lengths, code, flush_nonfinite, counts):
    """In place ``values = round(values)`` per segment; ``counts[s] += (non-zero before,
    flushed to zero, non-finite after)`` (see ``engine.backends.cpu.precision``)."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for s in range(offsets.size):
        nonzero = 0
        flushed = 0
        nonfinite = 0
        base = offsets[s]
        for i in range(start, lengths[s], stride):
            x = values[base + i]
            r = round_storage(x, code)
            if x != 0.0:
                nonzero += 1
                if r == 0.0:
                    flushed += 1
            if not math.isfinite(r):
                nonfinite += 1
                if flush_nonfinite:
                    r = _F0
            values[base + i] = r
        cuda.atomic.add(counts, (s, 0), nonzero)
        cuda.atomic.add(counts, (s, 1), flushed)
        cuda.atomic.add(counts, (s, 2), nonfinite)


@cuda.jit
def lost_update_segments(before, after, offsets, lengths, code, store, counts):
    """``counts[s] += (after ≠ before, and round(after) = round(before))`` per segment;
    ``store``: ``after = round(after)``."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for s in range(offsets.size):
        changed = 0
        lost = 0
        base = offsets[s]
        for i in range(start, lengths[s], stride):
            w = before[base + i]
            v = after[base + i]
            r = round_storage(v, code)
            if v != w:
                changed += 1
                if r == round_storage(w, code):
                    lost += 1
            if store:
                after[base + i] = r
        cuda.atomic.add(counts, (s, 0), changed)
        cuda.atomic.add(counts, (s, 1), lost)
