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
from dnupdate.engine.backends.cpu.microkernel import jit_target_has
from dnupdate.engine.backends.cpu.reduce import (
    add_unscaled_sums,
    unscale_table,
    unscaled_block_sums,
)
from dnupdate.engine.backends.cpu.share import share_out, share_start

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
# to the float32 bits as uint32 integers (a few integer operations per element, in SIMD lanes:
# ~0.3 ns per element against ~100 ns), or for fp16 by the hardware's conversion where the JIT
# target has one (:data:`F16C`), and are tested bit-exact against it and against NumPy's
# float16 over every float32 class (ties, subnormals, the overflow threshold, NaN, ±0, ±inf).

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


def _u32(value: int) -> ir.Constant:
    return ir.Constant(ir.IntType(32), value)


@intrinsic
def _fp16_bits(typingctx, bits):
    """fp16 rounding of the float32 with bits ``bits`` (uint32 → uint32), as 32-bit IR.

    ``a = |bits|``; at or above 2^-14 (``0x38800000``) 10 of the 23 fraction bits are kept,
    nearest even: ``(a + 0xFFF + ((a >> 13) & 1)) & 0xFFFFE000``; below, ``(|x| + 0.5) − 0.5``
    in float32 rounds to a multiple of 2^-24 (the sum's spacing), ties to even; 65520
    (``0x477FF000``) and above: ±inf; NaN (``a > 0x7F800000``) kept with its payload.
    Written as IR because Numba widens uint32 arithmetic to 64 bits, which halves the SIMD
    lanes of the array loops."""
    if bits != types.uint32:
        return None

    def codegen(context, builder, signature, args):
        (u,) = args
        a = builder.and_(u, _u32(_MAGNITUDE))
        sign = builder.xor(u, a)
        lsb = builder.and_(builder.lshr(a, _u32(13)), _u32(1))
        kept = builder.and_(builder.add(builder.add(a, _u32(0xFFF)), lsb), _u32(0xFFFFE000))
        half = ir.Constant(ir.FloatType(), 0.5)
        small = builder.fsub(builder.fadd(builder.bitcast(a, ir.FloatType()), half), half)
        normal = builder.icmp_unsigned(">=", a, _u32(_FP16_MIN_NORMAL_BITS))
        r = builder.select(normal, kept, builder.bitcast(small, ir.IntType(32)))
        overflow = builder.icmp_unsigned(">=", a, _u32(_FP16_OVERFLOW_BITS))
        r = builder.or_(sign, builder.select(overflow, _u32(_INF_BITS), r))
        return builder.select(builder.icmp_unsigned(">", a, _u32(_INF_BITS)), u, r)

    return types.uint32(types.uint32), codegen


@intrinsic
def _bf16_bits(typingctx, bits):
    """bf16 rounding of the float32 with bits ``bits`` (uint32 → uint32), as 32-bit IR: the
    top 16 bits, nearest even, ``(bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000`` (a value
    that rounds past FLT_MAX becomes ±inf); NaN kept with its payload."""
    if bits != types.uint32:
        return None

    def codegen(context, builder, signature, args):
        (u,) = args
        lsb = builder.and_(builder.lshr(u, _u32(16)), _u32(1))
        r = builder.and_(builder.add(builder.add(u, _u32(0x7FFF)), lsb), _u32(0xFFFF0000))
        nan = builder.icmp_unsigned(">", builder.and_(u, _u32(_MAGNITUDE)), _u32(_INF_BITS))
        return builder.select(nan, u, r)

    return types.uint32(types.uint32), codegen


def _jit_converts_fp16() -> bool:
    """Whether the JIT's target converts float32 ↔ float16 in hardware (x86 F16C): LLVM's
    ``fptrunc``/``fpext`` to ``half`` are then one instruction per 8 lanes; on a target
    without it they may be library calls Numba does not link, so :func:`_fp16_bits` stays."""
    return jit_target_has("f16c")


#: the fp16 rounding of the array kernels is the hardware conversion (:func:`_fp16_convert`)
F16C = _jit_converts_fp16()


@intrinsic
def _fp16_convert(typingctx, bits):
    """fp16 rounding of the float32 with bits ``bits`` (uint32 → uint32) by the hardware's
    conversions, ``fpext(fptrunc(x to half) to float)``: IEEE round to nearest even with
    subnormals and overflow to ±inf, :func:`_fp16_bits`' rule (vcvtps2ph ignores MXCSR.FTZ,
    and a float32 subnormal is ±0 in fp16 either way); a NaN keeps its own bits (the
    conversion would quiet it). Tested bit-exact against :func:`_fp16_bits` and NumPy; the
    lost-update count over 32768 weights: 13.7 → 10.5 µs, one core."""
    if bits != types.uint32:
        return None

    def codegen(context, builder, signature, args):
        (u,) = args
        x = builder.bitcast(u, ir.FloatType())
        y = builder.fpext(builder.fptrunc(x, ir.HalfType()), ir.FloatType())
        nan = builder.icmp_unsigned(">", builder.and_(u, _u32(_MAGNITUDE)), _u32(_INF_BITS))
        return builder.select(nan, u, builder.bitcast(y, ir.IntType(32)))

    return types.uint32(types.uint32), codegen


@njit(inline="always")
def round_bits(u, code):
    """The float32 bits (uint32) that format ``code`` stores for the float32 with bits ``u``
    (uint32): :func:`round_storage` on bit patterns (:func:`_fp16_convert` where the target
    converts fp16 in hardware, else :func:`_fp16_bits`; :func:`_bf16_bits`), without branches
    on the data, so the array loops vectorise."""
    if code == FP16:
        if F16C:
            return _fp16_convert(u)
        return _fp16_bits(u)
    if code == BF16:
        return _bf16_bits(u)
    return u


# ---- the counts, in 32-bit lanes ------------------------------------------------------------
#
# Each element's flags (0/1 each) are packed into one uint32 and summed in uint32 over chunks
# of at most ``_CHUNK`` elements (10 bits per count: no carry into the next field), then
# unpacked into the int64 totals: Numba's own sums would be int64, a quarter of the SIMD lanes.

_CHUNK = 1023
_FIELD = 10
_FIELD_MASK = (1 << _FIELD) - 1


@intrinsic
def _add32(typingctx, a, b):
    """``a + b`` in uint32 (Numba would widen the sum to 64 bits)."""
    if a != types.uint32 or b != types.uint32:
        return None

    def codegen(context, builder, signature, args):
        return builder.add(args[0], args[1])

    return types.uint32(types.uint32, types.uint32), codegen


def _flag(builder, bit, shift: int):
    return builder.shl(builder.zext(bit, ir.IntType(32)), _u32(shift))


@intrinsic
def _round_flags(typingctx, before, after):
    """Packed flags of one rounded value (float32 bits before, after): bit 0 ``before ≠ ±0``,
    bit 10 that and ``after = ±0`` (flushed), bit 20 ``after`` is ±inf or NaN."""
    if before != types.uint32 or after != types.uint32:
        return None

    def codegen(context, builder, signature, args):
        u, r = args
        was = builder.icmp_unsigned("!=", builder.and_(u, _u32(_MAGNITUDE)), _u32(0))
        zero = builder.icmp_unsigned("==", builder.and_(r, _u32(_MAGNITUDE)), _u32(0))
        bad = builder.icmp_unsigned("==", builder.and_(r, _u32(_INF_BITS)), _u32(_INF_BITS))
        flags = builder.or_(_flag(builder, was, 0), _flag(builder, builder.and_(was, zero), 10))
        return builder.or_(flags, _flag(builder, bad, 20))

    return types.uint32(types.uint32, types.uint32), codegen


@intrinsic
def _lost_flags(typingctx, before, after, rounded_before, rounded_after):
    """Packed flags of one weight (float32 bits): bit 0 ``after ≠ before`` (moved), bit 10 that
    and ``rounded_after = rounded_before`` (lost); float32 comparisons (±0 equal, NaN equal
    to nothing)."""
    if any(t != types.uint32 for t in (before, after, rounded_before, rounded_after)):
        return None

    def codegen(context, builder, signature, args):
        w, v, rw, rv = (builder.bitcast(x, ir.FloatType()) for x in args)
        moved = builder.fcmp_unordered("!=", v, w)
        kept = builder.fcmp_ordered("==", rv, rw)
        return builder.or_(_flag(builder, moved, 0), _flag(builder, builder.and_(moved, kept), 10))

    sig = types.uint32(types.uint32, types.uint32, types.uint32, types.uint32)
    return sig, codegen


@njit(inline="always")
def _field(packed, index):
    return np.int64((packed >> (_FIELD * index)) & _FIELD_MASK)


@njit(inline="always")
def _round_loop(seg, code, flush_nonfinite, factor, scaled):
    """Round ``seg`` in place; ``(non-zero before, flushed to zero, non-finite)``. ``scaled``:
    each rounded value is stored times ``factor`` (float32, one rounding: GradScaler's unscale
    in the same loop). ``code``, ``flush_nonfinite`` and ``scaled`` are constants after
    inlining: one loop each."""
    nonzero = 0
    flushed = 0
    nonfinite = 0
    values = seg.view(np.float32)
    for lo in range(0, seg.size, _CHUNK):
        part = seg[lo : lo + _CHUNK]
        stored = values[lo : lo + _CHUNK]
        packed = np.uint32(0)
        for i in range(part.size):
            u = part[i]
            r = round_bits(u, code)
            flags = _round_flags(u, r)
            packed = _add32(packed, flags)
            if flush_nonfinite:
                r = np.uint32(0) if flags >= np.uint32(1 << 20) else r
            if scaled:
                stored[i] = _float_of_bits(r) * factor
            else:
                part[i] = r
        nonzero += _field(packed, 0)
        flushed += _field(packed, 1)
        nonfinite += _field(packed, 2)
    return nonzero, flushed, nonfinite


@njit(inline="always")
def _round_block(bits, lo, hi, code, flush_nonfinite, factor):
    """Round ``bits[lo:hi]`` in place; ``(non-zero before, flushed to zero, non-finite)``;
    ``factor`` (float32) ≠ 1: each rounded value stored times ``factor``.

    Vectorisation: the loops run over a slice from index 0 (an index from a runtime ``lo``
    could be negative to Numba, whose wrap-around select then hides the consecutive addresses
    from LLVM: ~3× slower) with the format, the flush and the scaling compile-time constants,
    on uint32 lanes (:func:`_fp16_bits`, :func:`_add32`)."""
    seg = bits[lo:hi]
    if factor != 1.0:
        return _round_formats(seg, code, flush_nonfinite, factor, True)
    return _round_formats(seg, code, flush_nonfinite, factor, False)


@njit(inline="always")
def _round_formats(seg, code, flush_nonfinite, factor, scaled):
    """:func:`_round_loop` with the format and the flush made constants (``scaled`` one)."""
    if code == FP16:
        if flush_nonfinite:
            return _round_loop(seg, FP16, True, factor, scaled)
        return _round_loop(seg, FP16, False, factor, scaled)
    if code == BF16:
        if flush_nonfinite:
            return _round_loop(seg, BF16, True, factor, scaled)
        return _round_loop(seg, BF16, False, factor, scaled)
    return _round_loop(seg, FP32, flush_nonfinite, factor, scaled)


@njit(inline="always")
def _lost_loop(before, after, code, store):
    """:func:`_lost_block` over two equal-length slices (``code``, ``store`` constants after
    inlining)."""
    changed = 0
    lost = 0
    for lo in range(0, after.size, _CHUNK):
        old, new = before[lo : lo + _CHUNK], after[lo : lo + _CHUNK]
        packed = np.uint32(0)
        for i in range(new.size):
            w = old[i]
            v = new[i]
            r = round_bits(v, code)
            packed = _add32(packed, _lost_flags(w, v, round_bits(w, code), r))
            if store:
                new[i] = r
        changed += _field(packed, 0)
        lost += _field(packed, 1)
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


@njit(inline="always")
def _store_loop(src, saved, code, keep):
    """``saved ← src`` (``keep``), ``src ← round(src)``: nothing counted (``code`` and
    ``keep`` constants after inlining: one loop each)."""
    for i in range(src.size):
        u = src[i]
        if keep:
            saved[i] = u
        src[i] = round_bits(u, code)


@njit(inline="always")
def _store_block(bits, saved, lo, hi, code):
    """:func:`_store_loop` over ``[lo, hi)`` (``saved`` empty: round only)."""
    seg = bits[lo:hi]
    if saved.size > 0:
        keep = saved[lo:hi]
        if code == FP16:
            _store_loop(seg, keep, FP16, True)
        elif code == BF16:
            _store_loop(seg, keep, BF16, True)
        else:
            _store_loop(seg, keep, FP32, True)
    elif code == FP16:
        _store_loop(seg, seg, FP16, False)
    elif code == BF16:
        _store_loop(seg, seg, BF16, False)


_ONE = np.float32(1.0)  # no scaling

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
        counted = _round_block(bits, lo, lo + lengths[s], code, flush_nonfinite, _ONE)
        counts[s, 0], counts[s, 1], counts[s, 2] = counted


@njit(cache=True, parallel=True)
def _round_segments_threaded(bits, offsets, lengths, code, flush_nonfinite, counts):
    """:func:`_round_segments` with the blocks on the threads (element-wise: the same
    result; the counts are integers, summed per segment)."""
    table = _block_table(offsets, lengths)
    part = np.zeros((table.shape[0], 3), np.int64)
    for b in prange(table.shape[0]):
        counted = _round_block(bits, table[b, 1], table[b, 2], code, flush_nonfinite, _ONE)
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


@njit(cache=True)
def _store_segments(bits, saved, offsets, lengths, code):
    for s in range(offsets.size):
        _store_block(bits, saved, offsets[s], offsets[s] + lengths[s], code)


@njit(cache=True, parallel=True)
def _store_segments_threaded(bits, saved, offsets, lengths, code):
    """:func:`_store_segments` with the blocks on the threads (element-wise: the same)."""
    table = _block_table(offsets, lengths)
    for b in prange(table.shape[0]):
        _store_block(bits, saved, table[b, 1], table[b, 2], code)


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


def store_segments(
    values: np.ndarray, offsets, lengths, code: int, saved: np.ndarray | None = None
) -> None:
    """Round every segment of ``values`` in place to format ``code``, counting nothing (a
    layer's output, the working copy of the weights); with ``saved``, first copy each
    segment's values there (the master weights): ``saved[seg] ← values[seg]``,
    ``values[seg] ← round(values[seg])`` in one pass."""
    flat = as_flat_float32(values, "values")
    keep = np.empty(0, np.uint32)
    if saved is not None:
        flat_saved = as_flat_float32(saved, "saved")
        if flat_saved.size != flat.size:
            raise KernelArgumentError("values and saved must have the same size")
        keep = flat_saved.view(np.uint32)
    counts = np.zeros((np.size(offsets), 1), np.int64)  # only for the table's checks
    offsets, lengths = _table(flat, offsets, lengths, counts, 1)
    kernel = _store_segments_threaded if _threaded(lengths) else _store_segments
    kernel(flat.view(np.uint32), keep, offsets, lengths, int(code))


@njit(cache=True, nogil=True)
def _block_round_unscale(
    first_block, end_block, buffer, factor, carry, starts, stops, summed, partial,
    bits, code, flush_nonfinite, block_counts,
):  # fmt: skip
    """Blocks ``[first_block, end_block)`` of :func:`round_unscale_sum_squares`: a segment's
    block (``summed``) rounded with its counts and unscaled in one loop (another block only
    unscaled), then summed and given the carry in another (``engine.backends.cpu.reduce``)
    while it is in cache."""
    for j in range(first_block, end_block):
        block = buffer[starts[j] : stops[j]]
        if summed[j]:  # rounded and unscaled in one loop
            counted = _round_block(bits, starts[j], stops[j], code, flush_nonfinite, factor)
            block_counts[j, 0], block_counts[j, 1], block_counts[j, 2] = counted
        elif factor != 1.0:
            for i in range(block.size):
                block[i] = block[i] * factor
        unscaled_block_sums(block, carry, starts[j], stops[j], summed[j], partial, j)


@njit(parallel=True, cache=True)
def _block_round_unscale_shared(
    threads, count, buffer, factor, carry, starts, stops, summed, partial, bits, code,
    flush_nonfinite, block_counts,
):  # fmt: skip
    """:func:`_block_round_unscale`, one share of the blocks per thread (``share_out``)."""
    for t in prange(threads):
        _block_round_unscale(share_start(t, count, threads), share_start(t + 1, count, threads),
                             buffer, factor, carry, starts, stops, summed, partial, bits, code,
                             flush_nonfinite, block_counts)  # fmt: skip


def round_unscale_sum_squares(
    values: np.ndarray,
    offsets,
    lengths,
    code: int,
    counts: np.ndarray,
    flush_nonfinite: bool,
    factor: float,
    carry: np.ndarray | None,
    out: np.ndarray,
) -> None:
    """:func:`round_segments` (``counts``, ``flush_nonfinite``) then
    ``engine.backends.cpu.reduce.unscale_sum_squares`` (``factor``, ``carry``, ``out``) over
    the same int64 segment table, in one pass: each block of the norms' table is rounded (a
    segment's block) and then unscaled, squared and given the carry while it is in cache. Per
    element the operations and their order are the two passes', the sums use the same blocks
    and lanes, the counts are integers: the same bits (a simulated-precision update's
    gradients, ``engine.training.mixed``: 2 passes over a 1.86M-float buffer become 1)."""
    flat, added, blocks = unscale_table(values, carry, offsets, lengths, out)
    _table(flat, offsets, lengths, counts, 3)
    first, starts, stops, summed, order = blocks
    partial = np.zeros(starts.size, dtype=np.float64)
    per_block = np.zeros((starts.size, 3), np.int64)
    share_out(
        _block_round_unscale_shared, _block_round_unscale, starts.size, flat, np.float32(factor),
        added, starts, stops, summed, partial, flat.view(np.uint32), int(code),
        bool(flush_nonfinite), per_block,
    )  # fmt: skip
    add_unscaled_sums(blocks, partial, out)
    in_table = np.empty_like(per_block)
    in_table[order] = per_block
    running = np.zeros((first[-1] + 1, 3), np.int64)
    np.cumsum(in_table[: first[-1]], axis=0, out=running[1:])
    counts[...] = running[first[1:]] - running[first[:-1]]
