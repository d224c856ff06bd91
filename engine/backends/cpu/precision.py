"""Storage rounding for simulated mixed precision (CPU, Numba): float32 → float16 / bfloat16.

A simulated low-precision value is kept in a float32 array, holding exactly the number the
real format would store. :func:`round_storage` is the per-element rule (written once; the CUDA
backend compiles the same function for the device): IEEE round to nearest, ties to even, with
gradual underflow (subnormals), overflow to ±inf and NaN kept NaN.

* ``FP16`` (binary16: 1/5/10 bits): a magnitude ≥ 65520 (65504 plus half an ulp) becomes
  ±inf; below 2^-14 the spacing is the subnormal step 2^-24, so a magnitude ≤ 2^-25 becomes
  ±0 (2^-25 itself is a tie and goes to the even neighbour, 0).
* ``BF16`` (the top 16 bits of a float32: 1/8/7 bits): 8 significant bits at every exponent,
  the float32 subnormal step 2^-133 below 2^-126; a value that rounds to 2^128 is ±inf
  (FLT_MAX rounds up to inf, as the bit rule ``bits + 0x7FFF + lsb`` does).
* ``FP32``: the identity.

The arithmetic runs in float64, where every step is exact: with ``a = |x|`` and ``2^(e-1) ≤ a
< 2^e`` (``math.frexp``), the spacing is ``ulp = 2^(e-1-p)`` for ``p`` fraction bits (never
below the format's subnormal step), and ``round_half_even(a/ulp)·ulp`` is the stored value.
No bit reinterpretation is needed, so the same source runs on the CPU and as a CUDA device
function.

Array kernels work over segments ``values[offset : offset + length]`` of a flat float32 buffer
and count, per segment, what the measurements of ``engine.training`` need (see
:func:`round_segments`, :func:`lost_update_segments`).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from dnupdate.engine.backends.cpu.activations import KernelArgumentError, as_flat_float32

FP32 = 0
FP16 = 1
BF16 = 2

#: the storage codes by format name (``engine.spec.PrecisionSpec.precision``)
CODES = {"fp32": FP32, "fp16": FP16, "bf16": BF16}

_FP16_OVERFLOW = 65520.0  # 65504 + half an ulp (16): this and above round to inf
_FP16_MIN_NORMAL = 2.0**-14
_FP16_SUBNORMAL_STEP = 2.0**-24
_BF16_MIN_NORMAL = 2.0**-126
_BF16_SUBNORMAL_STEP = 2.0**-133


@njit(inline="always")
def _round_half_even(t):
    """``t`` (a non-negative float64) rounded to the nearest integer, ties to even."""
    f = math.floor(t)
    r = t - f
    if r > 0.5 or (r == 0.5 and f - 2.0 * math.floor(0.5 * f) == 1.0):
        f += 1.0
    return f


@njit(inline="always")
def _round_magnitude(a, fraction_bits, min_normal, subnormal_step):
    """A finite magnitude ``a`` (float64) rounded to ``fraction_bits`` bits, ties to even;
    below ``min_normal`` to a multiple of ``subnormal_step``."""
    if a == 0.0:
        return a
    if a < min_normal:
        step = subnormal_step
    else:
        _, e = math.frexp(a)  # a = m·2^e, 0.5 <= m < 1
        step = math.ldexp(1.0, e - 1 - fraction_bits)
    return _round_half_even(a / step) * step


@njit(inline="always")
def round_storage(x, code):
    """The float32 value format ``code`` stores for float32 ``x`` (see the module docstring)."""
    if code == FP32 or x != x:  # NaN stays NaN
        return x
    d = float(x)
    a = abs(d)
    if a == math.inf:
        return x
    if code == FP16:
        if a >= _FP16_OVERFLOW:
            r = math.inf
        else:
            r = _round_magnitude(a, 10, _FP16_MIN_NORMAL, _FP16_SUBNORMAL_STEP)
    else:
        r = _round_magnitude(a, 7, _BF16_MIN_NORMAL, _BF16_SUBNORMAL_STEP)
    return np.float32(math.copysign(r, d))  # exact (or ±inf for a bf16 value rounded to 2^128)


# ---- the array kernels: the same rule on the float32 bit patterns ----------------------------
#
# :func:`round_storage` (float64 ``frexp``/``ldexp``/``floor``, libm calls per element) is the
# reference and the CUDA device function; the CPU array kernels below apply the same rounding
# to the float32 bits as int64 integers (a few integer operations per element, several times
# faster), and are tested bit-exact against it and against NumPy's float16 over every float32
# class (ties, subnormals, the overflow threshold, NaN, ±0, ±inf).

_SIGN = 0x80000000
_MAGNITUDE = 0x7FFFFFFF
_INF_BITS = 0x7F800000
_FP16_OVERFLOW_BITS = 0x477FF000  # 65520.0: this and above round to inf
_FP16_MIN_NORMAL_BITS = 0x38800000  # 2^-14


@intrinsic
def _float_of_bits(typingctx, bits):
    """The float32 whose bit pattern is the uint32 ``bits`` (a register bitcast)."""
    if bits != types.uint32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.uint32), codegen


@intrinsic
def _bits_of_float(typingctx, value):
    """The uint32 bit pattern of the float32 ``value`` (a register bitcast)."""
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


@njit(inline="always")
def round_bits(u, code):
    """The float32 bits (int64 holding 32 bits) that format ``code`` stores for the float32
    with bits ``u``: :func:`round_storage` on bit patterns, without branches on the data (so
    the array loops vectorise). fp16: 10 of the 23 fraction bits kept, nearest even, at or
    above 2^-14; below, ``(|x| + 0.5) − 0.5`` in float32 rounds to a multiple of 2^-24 (the
    sum's spacing), ties to even; 65520 and above: ±inf. bf16: the top 16 bits, nearest
    even (``bits + 0x7FFF + lsb``). NaN is kept with its payload."""
    if code == FP32:
        return u
    sign = u & _SIGN
    a = u & _MAGNITUDE
    if code == BF16:
        r = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    else:
        normal = sign | ((a + 0xFFF + ((a >> 13) & 1)) & 0xFFFFE000)
        half = np.float32(0.5)
        m = (_float_of_bits(np.uint32(a)) + half) - half  # float32 arithmetic, exact steps
        subnormal = sign | np.int64(_bits_of_float(m))
        r = normal if a >= _FP16_MIN_NORMAL_BITS else subnormal
        r = (sign | _INF_BITS) if a >= _FP16_OVERFLOW_BITS else r
    return u if a > _INF_BITS else r


@njit(inline="always")
def _same_float(a, b):
    """Whether float32 bit patterns ``a`` and ``b`` compare equal as floats (±0 equal, NaN
    equal to nothing)."""
    nan = ((a & _MAGNITUDE) > _INF_BITS) | ((b & _MAGNITUDE) > _INF_BITS)
    equal = (a == b) | (((a | b) & _MAGNITUDE) == 0)
    return equal & ~nan


@njit(inline="always")
def _round_loop(seg, code, flush_nonfinite):
    """Round ``seg`` in place (``code`` a constant after inlining: one loop per format)."""
    nonzero = 0
    flushed = 0
    nonfinite = 0
    for i in range(seg.size):
        u = np.int64(seg[i])
        r = round_bits(u, code)
        was = (u & _MAGNITUDE) != 0
        nonzero += was
        flushed += was & ((r & _MAGNITUDE) == 0)
        bad = (r & _INF_BITS) == _INF_BITS
        nonfinite += bad
        r = 0 if bad & flush_nonfinite else r
        seg[i] = np.uint32(r)
    return nonzero, flushed, nonfinite


@njit(inline="always")
def _round_block(bits, lo, hi, code, flush_nonfinite):
    """Round ``bits[lo:hi]`` in place; ``(non-zero before, flushed to zero, non-finite)``.

    Vectorisation: the loops run over a slice from index 0 (an index from a runtime ``lo``
    could be negative to Numba, whose wrap-around select then hides the consecutive addresses
    from LLVM: ~3× slower) with the format a compile-time constant."""
    seg = bits[lo:hi]
    if code == FP16:
        return _round_loop(seg, FP16, flush_nonfinite)
    if code == BF16:
        return _round_loop(seg, BF16, flush_nonfinite)
    return _round_loop(seg, FP32, flush_nonfinite)


@njit(inline="always")
def _lost_loop(before, after, code, store):
    """:func:`_lost_block` over two equal-length slices (``code`` constant after inlining).
    The comparisons are float32 ones (±0 equal, NaN equal to nothing), on the values the bits
    hold."""
    changed = 0
    lost = 0
    for i in range(after.size):
        w = np.int64(before[i])
        v = np.int64(after[i])
        r = round_bits(v, code)
        moved = _float_of_bits(np.uint32(v)) != _float_of_bits(np.uint32(w))
        kept = _float_of_bits(np.uint32(r)) == _float_of_bits(np.uint32(round_bits(w, code)))
        changed += moved
        lost += moved & kept
        if store:
            after[i] = np.uint32(r)
    return changed, lost


@njit(inline="always")
def _lost_block(before, after, lo, hi, code, store):
    """``(weights moved, of those whose rounded value did not)`` over ``[lo, hi)``."""
    b, a = before[lo:hi], after[lo:hi]
    if code == FP16:
        return _lost_loop(b, a, FP16, True) if store else _lost_loop(b, a, FP16, False)
    if code == BF16:
        return _lost_loop(b, a, BF16, True) if store else _lost_loop(b, a, BF16, False)
    return _lost_loop(b, a, FP32, store)


#: elements per block of the threaded kernels; a table of fewer elements in all runs serially
PARALLEL_BLOCK = 1 << 15


@njit(cache=True)
def _block_table(offsets, lengths):
    """``(segment of each block, first element, end)`` for blocks of ``PARALLEL_BLOCK``."""
    count = 0
    for s in range(offsets.size):
        count += (lengths[s] + PARALLEL_BLOCK - 1) // PARALLEL_BLOCK
    table = np.empty((count, 3), np.int64)
    b = 0
    for s in range(offsets.size):
        end = offsets[s] + lengths[s]
        for lo in range(offsets[s], end, PARALLEL_BLOCK):
            table[b, 0] = s
            table[b, 1] = lo
            table[b, 2] = min(lo + PARALLEL_BLOCK, end)
            b += 1
    return table


@njit(cache=True)
def _round_segments(bits, offsets, lengths, code, flush_nonfinite, counts):
    for s in range(offsets.size):
        lo = offsets[s]
        counted = _round_block(bits, lo, lo + lengths[s], code, flush_nonfinite)
        counts[s, 0], counts[s, 1], counts[s, 2] = counted


@njit(cache=True, parallel=True)
def _round_segments_threaded(bits, offsets, lengths, code, flush_nonfinite, counts):
    """:func:`_round_segments` with the blocks on the threads (element-wise: the same
    result; the counts are integers, summed per segment)."""
    table = _block_table(offsets, lengths)
    part = np.zeros((table.shape[0], 3), np.int64)
    for b in prange(table.shape[0]):
        counted = _round_block(bits, table[b, 1], table[b, 2], code, flush_nonfinite)
        part[b, 0], part[b, 1], part[b, 2] = counted
    counts[:, :] = 0
    for b in range(table.shape[0]):
        for k in range(3):
            counts[table[b, 0], k] += part[b, k]


@njit(cache=True)
def _lost_update_segments(before, after, offsets, lengths, code, store, counts):
    for s in range(offsets.size):
        lo = offsets[s]
        counts[s, 0], counts[s, 1] = _lost_block(before, after, lo, lo + lengths[s], code, store)


@njit(cache=True, parallel=True)
def _lost_update_segments_threaded(before, after, offsets, lengths, code, store, counts):
    """:func:`_lost_update_segments` with the blocks on the threads."""
    table = _block_table(offsets, lengths)
    part = np.zeros((table.shape[0], 2), np.int64)
    for b in prange(table.shape[0]):
        counted = _lost_block(before, after, table[b, 1], table[b, 2], code, store)
        part[b, 0], part[b, 1] = counted
    counts[:, :] = 0
    for b in range(table.shape[0]):
        for k in range(2):
            counts[table[b, 0], k] += part[b, k]


def _threaded(lengths: np.ndarray) -> bool:
    """Whether the segments hold enough elements for the threaded kernels."""
    return numba.get_num_threads() > 1 and int(lengths.sum()) >= 2 * PARALLEL_BLOCK


def _table(flat: np.ndarray, offsets, lengths, counts, width: int):
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if offsets.shape != lengths.shape or offsets.ndim != 1:
        raise KernelArgumentError("offsets and lengths must be 1-D arrays of the same length")
    if offsets.size and (offsets.min() < 0 or (offsets + lengths).max() > flat.size):
        raise KernelArgumentError(f"a segment lies outside the buffer of {flat.size} elements")
    if counts.shape != (offsets.size, width) or counts.dtype != np.int64:
        shape = (offsets.size, width)
        raise KernelArgumentError(f"counts must be an int64 array of shape {shape}")
    return offsets, lengths


def round_segments(
    values: np.ndarray,
    offsets,
    lengths,
    code: int,
    counts: np.ndarray,
    flush_nonfinite: bool = False,
) -> None:
    """Round every segment of ``values`` in place to format ``code``; per segment ``s``:
    ``counts[s] = (values ≠ 0 before, of those = 0 after: flushed to zero, non-finite after)``.
    ``flush_nonfinite``: a non-finite result is stored as 0 (AlexeyAB's ``reset_nan_and_inf``),
    still counted."""
    flat = as_flat_float32(values, "values")
    offsets, lengths = _table(flat, offsets, lengths, counts, 3)
    bits = flat.view(np.uint32)
    kernel = _round_segments_threaded if _threaded(lengths) else _round_segments
    kernel(bits, offsets, lengths, int(code), bool(flush_nonfinite), counts)


def lost_update_segments(
    before: np.ndarray,
    after: np.ndarray,
    offsets,
    lengths,
    code: int,
    store: bool,
    counts: np.ndarray,
) -> None:
    """Per segment ``s``: ``counts[s] = (weights with after ≠ before, of those with
    round(after) = round(before))``: the update is non-zero yet the stored low-precision weight
    does not move. ``store``: ``after`` is replaced by ``round(after)`` (weights kept in the low
    precision, no master copy)."""
    flat_before = as_flat_float32(before, "before")
    flat_after = as_flat_float32(after, "after")
    if flat_before.size != flat_after.size:
        raise KernelArgumentError("before and after must have the same size")
    offsets, lengths = _table(flat_after, offsets, lengths, counts, 2)
    kernel = _lost_update_segments_threaded if _threaded(lengths) else _lost_update_segments
    kernel(
        flat_before.view(np.uint32),
        flat_after.view(np.uint32),
        offsets,
        lengths,
        int(code),
        bool(store),
        counts,
    )
