"""Per-segment reductions over a flat float32 buffer (CPU, Numba).

The network keeps all parameters (and gradients, updates) in one flat float32 buffer with a view
per layer blob. The training loop reports per-layer ‖w‖, ‖Δw‖ and ‖grad‖ and checks for
non-finite values; both are reductions over segments ``buffer[offset : offset + length]``.

Sums of squares accumulate in float64 (the report is ours, not a framework's, so it is made as
accurate as cheaply possible). They run over fixed blocks of :data:`BLOCK` elements, each block
over :data:`LANES` interleaved accumulators added in lane order (one float64 chain would wait
on the adder's latency: 3x slower), then a segment's blocks added in block order; the blocks
are shared out to the threads (``engine.backends.cpu.share``: GIL-free serial kernels, no
parallel build to compile), each writing its own partial sum, so the result does not depend on
the thread count. The non-finite check runs per segment, stopping at the first bad value.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import njit, prange

from dnupdate.engine.backends.cpu.activations import KernelArgumentError, as_flat_float32
from dnupdate.engine.backends.cpu.share import share_out, share_start


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


#: elements per block of :func:`segment_sum_squares`
BLOCK = 1 << 15


#: independent float64 accumulators per block (the ``k``-th element of each row of LANES
#: consecutive elements adds to lane ``k``; lanes added in order at the end): one chain would
#: wait on the adder's latency at every element (3x slower). The loop over a row's lanes is an
#: element-wise loop over slices that LLVM vectorises (8 lanes were unrolled away and stayed
#: scalar); the update pass (``engine.backends.cpu.update``) sums its norms the same way
LANES = 32


@njit(inline="always")
def _add_squares(row, sums):
    for lane in range(row.size):
        value = np.float64(row[lane])
        sums[lane] += value * value


@njit(inline="always")
def _add_squared_changes(before, after, sums):
    for lane in range(before.size):
        value = np.float64(before[lane] - after[lane])  # the float32 difference
        sums[lane] += value * value


@njit(inline="always")
def lanes_total(sums):
    """The :data:`LANES` partial sums added in lane order (float64)."""
    total = 0.0
    for lane in range(LANES):
        total += sums[lane]
    return total


@njit(inline="always")
def _rows_sum_squares(block, added, add):
    """``Σ f64(block)²`` over :data:`LANES` lanes (rows of LANES consecutive elements, element
    ``k`` of a row into lane ``k``, the tail a shorter row, lanes added in order: the order of
    :func:`segment_sum_squares`); with ``add`` (``added`` as long as ``block``), then
    ``block += added`` (float32) over the whole block while it is in cache (one long loop:
    adding row by row, 32 at a time, ran the 1.86M-float pass 1.25 against 0.8 ms)."""
    sums = np.zeros(LANES)
    for base in range(0, block.size, LANES):
        _add_squares(block[base : min(base + LANES, block.size)], sums)
    if add:
        for i in range(block.size):
            block[i] = block[i] + added[i]
    return lanes_total(sums)


@njit(cache=True, nogil=True)
def _block_sum_squares(first_block, end_block, buffer, starts, stops, partial):
    for j in range(first_block, end_block):
        block = buffer[starts[j] : stops[j]]
        partial[j] = _rows_sum_squares(block, block, False)


@njit(cache=True, nogil=True)
def _block_sum_squares_change(first_block, end_block, before, after, starts, stops, partial):
    sums = np.zeros(LANES)
    for j in range(first_block, end_block):
        sums[:] = 0.0
        for base in range(starts[j], stops[j], LANES):
            end = min(base + LANES, stops[j])
            _add_squared_changes(before[base:end], after[base:end], sums)
        partial[j] = lanes_total(sums)


@njit(parallel=True, cache=True)
def _block_sum_squares_shared(threads, count, buffer, starts, stops, partial):
    """:func:`_block_sum_squares`, one share of the blocks per thread (``share_out``)."""
    for t in prange(threads):
        _block_sum_squares(share_start(t, count, threads), share_start(t + 1, count, threads),
                           buffer, starts, stops, partial)  # fmt: skip


@njit(parallel=True, cache=True)
def _block_sum_squares_change_shared(threads, count, before, after, starts, stops, partial):
    """:func:`_block_sum_squares_change`, one share of the blocks per thread."""
    for t in prange(threads):
        _block_sum_squares_change(share_start(t, count, threads),
                                  share_start(t + 1, count, threads), before, after, starts,
                                  stops, partial)  # fmt: skip


@njit(cache=True)
def _add_segment_blocks(first, partial, out):
    for k in range(out.size):
        total = 0.0
        for j in range(first[k], first[k + 1]):
            total += partial[j]
        out[k] = total


def block_table(
    offsets: np.ndarray, lengths: np.ndarray, block: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The fixed ``block``-element blocks of the segments: ``first[k]``, segment ``k``'s first
    block (the block count at ``first[-1]``), and each block's segment, start and stop (NumPy:
    nothing to compile). Kept by table (a trainer asks for the same one every update): the
    callers only read them."""
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    return _block_table(offsets.tobytes(), lengths.tobytes(), int(block))


@functools.lru_cache(maxsize=64)
def _block_table(offsets_bytes: bytes, lengths_bytes: bytes, block: int):
    offsets = np.frombuffer(offsets_bytes, dtype=np.int64)
    lengths = np.frombuffer(lengths_bytes, dtype=np.int64)
    counts = (lengths + block - 1) // block
    first = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(counts, out=first[1:])
    owner = np.repeat(np.arange(lengths.size, dtype=np.int64), counts)
    starts = offsets[owner] + (np.arange(first[-1], dtype=np.int64) - first[owner]) * block
    stops = np.minimum(starts + block, (offsets + lengths)[owner])
    return first, owner, starts, stops  # shared by every caller of the table: read only


@njit(cache=True)
def _nonfinite_flags(buffer, offsets, lengths, flags):
    for k in range(offsets.size):
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
    first, _, starts, stops = block_table(offsets, lengths, BLOCK)
    partial = np.empty(starts.size, dtype=np.float64)
    share_out(_block_sum_squares_shared, _block_sum_squares, starts.size, flat, starts, stops,
              partial)  # fmt: skip
    _add_segment_blocks(first, partial, out)


def segment_sum_squares_change(
    before: np.ndarray, after: np.ndarray, offsets: np.ndarray, lengths: np.ndarray,
    out: np.ndarray,
) -> None:  # fmt: skip
    """``out[k] = Σ f32(before − after)²`` per segment, in float64, as
    :func:`segment_sum_squares` of the difference (same blocks and lanes, so the same bits)
    without writing the difference anywhere."""
    flat, offsets, lengths = _check_segments(before, offsets, lengths)
    other = as_flat_float32(after, "after")
    if other.size != flat.size:
        raise KernelArgumentError("before and after must have the same size")
    if out.dtype != np.float64 or out.shape != offsets.shape:
        raise KernelArgumentError(f"out: expected float64 of shape {offsets.shape}")
    first, _, starts, stops = block_table(offsets, lengths, BLOCK)
    partial = np.empty(starts.size, dtype=np.float64)
    share_out(_block_sum_squares_change_shared, _block_sum_squares_change, starts.size, flat,
              other, starts, stops, partial)  # fmt: skip
    _add_segment_blocks(first, partial, out)


@njit(cache=True, nogil=True)
def _block_unscale_sum_squares(
    first_block, end_block, buffer, factor, carry, starts, stops, summed, partial
):  # fmt: skip
    for j in range(first_block, end_block):
        block = buffer[starts[j] : stops[j]]  # a slice from 0: the loops vectorise
        if factor != 1.0:
            for i in range(block.size):
                block[i] = block[i] * factor
        unscaled_block_sums(block, carry, starts[j], stops[j], summed[j], partial, j)


@njit(parallel=True, cache=True)
def _block_unscale_sum_squares_shared(threads, count, buffer, factor, carry, starts, stops,
                                      summed, partial):  # fmt: skip
    """:func:`_block_unscale_sum_squares`, one share of the blocks per thread."""
    for t in prange(threads):
        _block_unscale_sum_squares(share_start(t, count, threads),
                                   share_start(t + 1, count, threads), buffer, factor, carry,
                                   starts, stops, summed, partial)  # fmt: skip


@njit(inline="always")
def unscaled_block_sums(block, carry, start, stop, summed, partial, j):
    """The rest of :func:`_block_unscale_sum_squares` once ``block`` (``buffer[start:stop]``)
    is unscaled: ``partial[j]`` its sum of squares (``summed``: the same lanes and order as
    :func:`segment_sum_squares`, so the same bits), then ``block += carry[start:stop]``
    (``carry`` not empty) while the block is in cache."""
    add = carry.size > 0
    added = carry[start:stop] if add else block
    if summed:
        partial[j] = _rows_sum_squares(block, added, add)
    elif add:
        for i in range(block.size):
            block[i] = block[i] + added[i]


def _covering_blocks(
    offsets: np.ndarray, lengths: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`block_table`'s blocks of the segments, then blocks of at most :data:`BLOCK`
    covering the rest of a ``size``-element buffer (segments do not overlap): ``(first,
    starts, stops, summed, order)``, ``summed`` 1 for the segments' blocks (whose partial sums
    count), ``order`` the blocks by start (each thread's share a run of memory)."""
    first, _, starts, stops = block_table(offsets, lengths, BLOCK)
    used = lengths > 0
    lo, hi = offsets[used], offsets[used] + lengths[used]
    by_start = np.argsort(lo, kind="stable")
    lo, hi = lo[by_start], hi[by_start]
    gap_lo = np.concatenate([[0], hi])
    gap_hi = np.concatenate([lo, [size]])
    keep = gap_hi > gap_lo
    gap_lo, gap_hi = gap_lo[keep], gap_hi[keep]
    _, _, gap_starts, gap_stops = block_table(gap_lo, gap_hi - gap_lo, BLOCK)
    all_starts = np.concatenate([starts, gap_starts])
    all_stops = np.concatenate([stops, gap_stops])
    summed = np.concatenate([np.ones(starts.size, np.int8), np.zeros(gap_starts.size, np.int8)])
    return first, all_starts, all_stops, summed, np.argsort(all_starts, kind="stable")


def unscale_table(
    buffer: np.ndarray, carry: np.ndarray | None, offsets, lengths, out: np.ndarray
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """The checked arguments of a pass like :func:`unscale_sum_squares`: ``(flat buffer,
    flat carry (empty for None), (first, starts, stops, summed, order))``, the blocks of
    :func:`_covering_blocks` (``starts``/``stops``/``summed`` in ``order``, as the kernels
    take them)."""
    flat, offsets, lengths = _check_segments(buffer, offsets, lengths)
    if out.dtype != np.float64 or out.shape != offsets.shape:
        raise KernelArgumentError(f"out: expected float64 of shape {offsets.shape}")
    added = np.empty(0, np.float32)
    if carry is not None:
        added = as_flat_float32(carry, "carry")
        if added.size != flat.size:
            raise KernelArgumentError("buffer and carry must have the same size")
    first, starts, stops, summed, order = _covering_blocks(offsets, lengths, flat.size)
    return flat, added, (first, starts[order], stops[order], summed[order], order)


def add_unscaled_sums(blocks: tuple[np.ndarray, ...], partial: np.ndarray, out) -> None:
    """``out[k]``: segment ``k``'s blocks' partial sums (``partial`` in the kernels' block
    order, :func:`unscale_table`) added in block order."""
    first, order = blocks[0], blocks[-1]
    sums = np.empty_like(partial)
    sums[order] = partial
    _add_segment_blocks(first, sums, out)


def unscale_sum_squares(
    buffer: np.ndarray,
    factor: float,
    carry: np.ndarray | None,
    offsets: np.ndarray,
    lengths: np.ndarray,
    out: np.ndarray,
) -> None:
    """In one pass over the buffer, block by block while it is in cache: ``buffer *= factor``
    (float32, every element), ``out[k] = Σ buffer²`` per segment as :func:`segment_sum_squares`
    gives it (same blocks and lanes: the same bits), then ``buffer += carry`` (float32, every
    element; ``carry`` None: nothing added). GradScaler's unscale, the gradient norms and the
    darknet carry added back, as three passes would leave them."""
    flat, added, blocks = unscale_table(buffer, carry, offsets, lengths, out)
    _, starts, stops, summed, _ = blocks
    partial = np.zeros(starts.size, dtype=np.float64)
    share_out(
        _block_unscale_sum_squares_shared, _block_unscale_sum_squares, starts.size, flat,
        np.float32(factor), added, starts, stops, summed, partial,
    )  # fmt: skip
    add_unscaled_sums(blocks, partial, out)


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
