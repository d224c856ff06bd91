"""The CPU array kernels round on float32 bit patterns (``round_bits``); the scalar
``round_storage`` (float64 arithmetic, the CUDA device function) is the reference they must
equal bit for bit, and the lost-update count must compare as floats do (±0 equal, NaN never)."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from dnupdate.engine.backends.cpu import precision as p
from tests.test_precision_kernels import (
    assert_same_bits,
    bf16_reference,
    edge_values,
    fp16_reference,
    random_bits,
)


@njit(cache=False)
def scalar_reference(values, code):
    out = np.empty_like(values)
    for i in range(values.size):
        out[i] = p.round_storage(values[i], code)
    return out


def subnormal_range(n: int = 50_000) -> np.ndarray:
    """Magnitudes around fp16's subnormal range and float32's own subnormals, both signs."""
    rng = np.random.default_rng(7)
    exponents = rng.uniform(-150, -13, n)
    signs = rng.choice([-1.0, 1.0], n)
    return (signs * 2.0**exponents).astype(np.float32)


@pytest.mark.parametrize("code", [p.FP16, p.BF16], ids=["fp16", "bf16"])
def test_array_kernel_equals_the_scalar_rule(code):
    values = np.concatenate([edge_values(), random_bits(100_000), subnormal_range()])
    got = values.copy()
    counts = np.zeros((1, 3), np.int64)
    p.round_segments(got, [0], [got.size], code, counts)
    want = scalar_reference(values, code)
    assert_same_bits(got, want)
    assert counts[0, 0] == np.count_nonzero(values)
    assert counts[0, 1] == np.count_nonzero((values != 0) & (want == 0))
    assert counts[0, 2] == np.count_nonzero(~np.isfinite(want))


def test_lost_updates_compare_as_floats():
    before = np.array([0.0, -0.0, np.nan, 1.0, 1.0, 2.0**-30], np.float32)
    after = np.array([-0.0, 0.0, np.nan, 1.0001, 1.001, 2.0**-29], np.float32)
    counts = np.zeros((1, 2), np.int64)
    p.lost_update_segments(before, after, [0], [6], p.FP16, False, counts)
    # ±0 is no change; NaN != NaN is a change (rounded NaN is never equal: not lost);
    # 1 → 1.0001 is lost in fp16, 1 → 1.001 is not; 2^-30 → 2^-29 both flush to 0: lost
    np.testing.assert_array_equal(counts, [[4, 2]])


@pytest.mark.parametrize("code", [p.FP16, p.BF16], ids=["fp16", "bf16"])
def test_threaded_kernels_equal_the_serial_ones_segment_by_segment(code):
    values = np.concatenate([random_bits(150_000), subnormal_range(), edge_values()])
    offsets = np.array([0, 10, 70_000, 100_003, 180_000], np.int64)
    lengths = np.array([5, 69_990, 30_000, 79_000, values.size - 180_000], np.int64)
    bits = [values.copy().view(np.uint32) for _ in range(2)]
    counts = [np.zeros((5, 3), np.int64) for _ in range(2)]
    p._round_segments(bits[0], offsets, lengths, code, True, counts[0])
    p._round_segments_threaded(bits[1], offsets, lengths, code, True, counts[1])
    np.testing.assert_array_equal(bits[0], bits[1])
    np.testing.assert_array_equal(counts[0], counts[1])
    with np.errstate(over="ignore", invalid="ignore"):  # random bits include inf and NaN
        after = [(values * np.float32(1.0001)).view(np.uint32) for _ in range(2)]
    lost = [np.zeros((5, 2), np.int64) for _ in range(2)]
    before = values.view(np.uint32)
    p._lost_update_segments(before, after[0], offsets, lengths, code, True, lost[0])
    p._lost_update_segments_threaded(before, after[1], offsets, lengths, code, True, lost[1])
    np.testing.assert_array_equal(after[0], after[1])
    np.testing.assert_array_equal(lost[0], lost[1])
    assert lost[0][:, 1].sum() > 0


@pytest.mark.parametrize(
    ("code", "reference"),
    [(p.FP16, fp16_reference), (p.BF16, bf16_reference)],
    ids=["fp16", "bf16"],
)
def test_lost_update_counts_equal_a_numpy_transcription(code, reference):
    """Segments of thousands of weights (the kernels sum their counts in chunks of 1023), a
    mix of moves that survive the rounding, moves that do not, no moves, ±0, inf and NaN."""
    rng = np.random.default_rng(3)
    before = np.concatenate([edge_values(), random_bits(20_000), subnormal_range(20_000)])
    steps = rng.choice(np.array([0.0, 1e-6, 1e-3, 1e-1], np.float32), before.size)
    with np.errstate(over="ignore", invalid="ignore"):
        after = (before * (np.float32(1) + steps)).astype(np.float32)
    offsets, lengths = np.array([0, 3, 30_000]), np.array([3, 29_997, before.size - 30_000])
    counts = np.zeros((3, 2), np.int64)
    stored = after.copy()
    p.lost_update_segments(before, stored, offsets, lengths, code, True, counts)
    assert_same_bits(stored, reference(after))
    with np.errstate(invalid="ignore"):
        moved = after != before
        lost = moved & (reference(after) == reference(before))
    for s, (lo, n) in enumerate(zip(offsets, lengths, strict=True)):
        want = [np.count_nonzero(moved[lo : lo + n]), np.count_nonzero(lost[lo : lo + n])]
        np.testing.assert_array_equal(counts[s], want)
    assert 0 < counts[:, 1].sum() < counts[:, 0].sum()


@pytest.mark.parametrize(
    ("code", "reference"),
    [(p.FP16, fp16_reference), (p.BF16, bf16_reference)],
    ids=["fp16", "bf16"],
)
@pytest.mark.parametrize("threads", [1, 2])
def test_store_segments_rounds_and_keeps_the_master_like_numpy(code, reference, threads):
    """The uncounted rounding (layer outputs, the working weights) and its master copy: each
    segment copied to ``saved`` and rounded in place, nothing outside the segments touched,
    the same whatever the thread count."""
    import numba

    values = np.concatenate([random_bits(150_000), subnormal_range(), edge_values()])
    offsets = np.array([5, 70_000, 100_003], np.int64)
    lengths = np.array([69_990, 30_000, values.size - 100_003 - 7], np.int64)
    inside = np.zeros(values.size, bool)
    for lo, n in zip(offsets, lengths, strict=True):
        inside[lo : lo + n] = True
    want = np.where(inside, reference(values), values)
    numba.set_num_threads(threads)
    try:
        got, saved = values.copy(), np.zeros_like(values)
        p.store_segments(got, offsets, lengths, code, saved)
        alone = values.copy()
        p.store_segments(alone, offsets, lengths, code)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert_same_bits(got, want)
    assert_same_bits(alone, want)
    np.testing.assert_array_equal(saved.view(np.uint32)[inside], values.view(np.uint32)[inside])
    assert not saved[~inside].any()
