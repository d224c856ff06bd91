"""Storage rounding (``engine.backends.cpu.precision``) against NumPy's float16 and a bit-level
bfloat16 reference, over every edge case: ties to even, subnormals, the overflow threshold,
signed zeros, infinities and NaN; then the segment counts and the lost-update kernel."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from dnupdate.engine.backends.cpu import CpuBackend
from dnupdate.engine.backends.cpu import precision as p


def fp16_reference(x: np.ndarray) -> np.ndarray:
    """IEEE binary16 round trip (NumPy's conversion rounds to nearest even)."""
    with np.errstate(over="ignore"):
        return x.astype(np.float16).astype(np.float32)


def bf16_reference(x: np.ndarray) -> np.ndarray:
    """The bfloat16 bit rule: ``(bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000``, NaN kept."""
    bits = x.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
    out = rounded.view(np.float32).copy()
    out[np.isnan(x)] = np.nan
    return out


def edge_values() -> np.ndarray:
    """Hand-picked cases for both formats, each with its neighbours one float32 ulp away."""
    f = np.float32
    cases = [
        0.0,
        1.0,
        1.0 + 2.0**-11,
        1.0 + 3 * 2.0**-11,
        1.0 + 2.0**-8,
        1.0 + 3 * 2.0**-8,
        1.0001,
        2049.0,
        2051.0,
        65504.0,
        65519.0,
        65520.0,
        65536.0,
        1e10,
        2.0**-14,
        2.0**-14 - 2.0**-25,
        2.0**-24,
        2.0**-25,
        3 * 2.0**-25,
        2.0**-26,
        1.5 * 2.0**-24,
        2.5 * 2.0**-24,
        2.0**-126,
        2.0**-133,
        2.0**-134,
        3 * 2.0**-134,
        2.0**-149,
        float(np.finfo(np.float32).max),
        3.3895313e38,
        3.3961775e38,
    ]
    base = np.array(cases, dtype=f)
    with np.errstate(over="ignore"):
        up = np.nextafter(base, f(np.inf))
    values = np.concatenate([base, up, np.nextafter(base, f(0))])
    values = np.concatenate([values, -values, np.array([np.inf, -np.inf, np.nan], dtype=f)])
    return values.astype(f)


def random_bits(n: int = 200_000) -> np.ndarray:
    rng = np.random.default_rng(14)
    return rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32).view(np.float32)


def rounded(values: np.ndarray, code: int) -> tuple[np.ndarray, np.ndarray]:
    out = values.copy()
    counts = np.zeros((1, 3), np.int64)
    p.round_segments(out, [0], [out.size], code, counts)
    return out, counts


def assert_same_bits(got: np.ndarray, want: np.ndarray) -> None:
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))


@pytest.mark.parametrize("values", [edge_values(), random_bits()], ids=["edges", "random"])
@pytest.mark.parametrize(
    ("code", "reference"),
    [(p.FP16, fp16_reference), (p.BF16, bf16_reference)],
    ids=["fp16", "bf16"],
)
def test_rounding_is_bit_exact(values, code, reference):
    got, _ = rounded(values, code)
    assert_same_bits(got, reference(values))


def test_fp16_named_cases():
    cases = {
        1.0001: 1.0,  # "1 + 0.0001 rounds to 1"
        1.0 + 2.0**-11: 1.0,  # a tie goes to the even neighbour
        1.0 + 3 * 2.0**-11: 1.0 + 2.0**-9,
        65519.0: 65504.0,
        65520.0: np.inf,  # 65504 + half an ulp: the overflow threshold
        2.0**-25: 0.0,  # half the smallest subnormal: a tie, to the even 0
        3 * 2.0**-25: 2.0**-23,  # 1.5 steps: tie to even (2 steps)
        2.0**-24: 2.0**-24,
    }
    values = np.array(list(cases), dtype=np.float32)
    got, _ = rounded(values, p.FP16)
    np.testing.assert_array_equal(got, np.array(list(cases.values()), dtype=np.float32))
    assert np.signbit(rounded(np.array([-(2.0**-26)], np.float32), p.FP16)[0][0])


def test_bf16_named_cases():
    values = np.array([1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8, np.finfo(np.float32).max], np.float32)
    got, _ = rounded(values, p.BF16)
    np.testing.assert_array_equal(got, np.array([1.0, 1.0 + 2.0**-6, np.inf], np.float32))


def test_fp32_is_the_identity():
    values = random_bits(10_000)
    got, counts = rounded(values, p.FP32)
    assert_same_bits(got, values)
    assert counts[0, 1] == 0


def test_counts_per_segment_and_flush():
    values = np.array([1e-9, 0.0, 1.0, 7e4, 1e-9, 2.0, np.nan], np.float32)
    counts = np.zeros((2, 3), np.int64)
    p.round_segments(values, [0, 4], [4, 3], p.FP16, counts, flush_nonfinite=True)
    np.testing.assert_array_equal(counts, [[3, 1, 1], [3, 1, 1]])
    np.testing.assert_array_equal(values, [0, 0, 1, 0, 0, 2, 0])


def test_lost_updates():
    before = np.array([1.0, 1.0, 1.0, 2.0, 0.5], np.float32)
    after = np.array([1.0001, 1.0, 1.01, 2.0 + 2.0**-10, 0.5 + 2.0**-13], np.float32)
    counts = np.zeros((1, 2), np.int64)
    kept = after.copy()
    p.lost_update_segments(before, kept, [0], [5], p.FP16, False, counts)
    # changed: all but the second; lost: 1.0001 and 2+2^-10 (a tie to even 2) and 0.5+2^-13
    np.testing.assert_array_equal(counts, [[4, 3]])
    np.testing.assert_array_equal(kept, after)
    p.lost_update_segments(before, kept, [0], [5], p.FP16, True, counts)
    np.testing.assert_array_equal(kept, fp16_reference(after))


def test_backend_methods():
    backend = CpuBackend()
    values = edge_values()
    counts = np.zeros((1, 3), np.int64)
    out = values.copy()
    backend.round_storage(out, np.array([0]), np.array([out.size]), p.BF16, counts)
    assert_same_bits(out, bf16_reference(values))
    lost = np.zeros((1, 2), np.int64)
    backend.lost_updates(values, out, np.array([0]), np.array([out.size]), p.BF16, False, lost)
    want = np.zeros((1, 2), np.int64)
    p.lost_update_segments(values, out.copy(), [0], [out.size], p.BF16, False, want)
    np.testing.assert_array_equal(lost, want)
    assert 0 < want[0, 1] < want[0, 0]


@njit
def _conversion_mismatches(first: int, end: int, step: int, sign: int) -> int:
    """How many float32 bit patterns in ``[first, end)`` (every ``step``-th, ``sign`` OR-ed
    in) the hardware conversion rounds otherwise than the bit rule."""
    bad = 0
    for bits in range(first, end, step):
        u = np.uint32(bits | sign)
        if p._fp16_convert(u) != p._fp16_bits(u):
            bad += 1
    return bad


@pytest.mark.skipif(not p.F16C, reason="the JIT target converts fp16 in software")
def test_hardware_fp16_conversion_is_the_bit_rule():
    """The F16C path of the array kernels (``_fp16_convert``) against the IR bit rule
    (``_fp16_bits``, itself NumPy's float16 in the tests above): every third float32 between
    2^-26 (all of it rounds to ±0 or the smallest subnormal below) and 2^17 (inf above 65520),
    both signs, then random bit patterns over every exponent, NaN payloads included."""
    for sign in (0, 0x80000000):
        assert _conversion_mismatches(0x32800000, 0x48000000, 3, sign) == 0
    bits = np.random.default_rng(11).integers(0, 2**32, 1_000_000, dtype=np.uint64)
    values = np.concatenate([bits.astype(np.uint32), edge_values().view(np.uint32)])
    values = values.view(np.float32)
    got = rounded(values, p.FP16)[0]
    assert_same_bits(got, fp16_reference(values))
    nan = np.isnan(values)
    assert nan.sum() > 1000
    np.testing.assert_array_equal(got[nan].view(np.uint32), values[nan].view(np.uint32))
