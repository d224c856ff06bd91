"""Per-segment reductions (engine.backends.cpu.reduce)."""

from __future__ import annotations

import numpy as np
import pytest

from dnupdate.engine.backends.cpu import reduce as red
from dnupdate.engine.backends.cpu.activations import KernelArgumentError


def _segments(lengths):
    lengths = np.array(lengths, np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return offsets, lengths


def _sequential(values: np.ndarray) -> float:
    """A float64 sum in index order (``np.sum`` adds pairwise)."""
    return float(np.cumsum(values)[-1]) if values.size else 0.0


def _lanes_reference(block: np.ndarray) -> float:
    """One block's sum the kernels' way: element ``LANES·j + k`` into lane ``k`` (``j`` order),
    the tail into lanes ``0…``, the lanes added in order."""
    squares = block.astype(np.float64) ** 2
    full = block.size // red.LANES * red.LANES
    lanes = [_sequential(squares[k : full : red.LANES]) for k in range(red.LANES)]
    for i in range(full, block.size):
        lanes[i - full] += squares[i]
    return _sequential(np.array(lanes))


def test_sum_squares_are_the_lane_sums_bit_for_bit():
    """The vectorised lanes add exactly in the documented order: a NumPy transcription of the
    order over values of every magnitude, where another order would round otherwise."""
    rng = np.random.default_rng(5)
    offsets, lengths = _segments([3, 2 * red.BLOCK + 13, 8, 0, red.BLOCK, 29])
    size = int(lengths.sum())
    buffer = (rng.normal(size=size) * 10.0 ** rng.integers(-30, 30, size)).astype(np.float32)
    out = np.empty(lengths.size, np.float64)
    red.segment_sum_squares(buffer, offsets, lengths, out)
    want = []
    for offset, length in zip(offsets.tolist(), lengths.tolist(), strict=True):
        blocks = [
            _lanes_reference(buffer[lo : min(lo + red.BLOCK, offset + length)])
            for lo in range(offset, offset + length, red.BLOCK)
        ]
        want.append(_sequential(np.array(blocks)))
    np.testing.assert_array_equal(out.view(np.uint64), np.array(want).view(np.uint64))
    orders = [  # the data tells the orders apart: one sequential chain rounds otherwise
        _sequential(buffer[o : o + n].astype(np.float64) ** 2)
        for o, n in zip(offsets, lengths, strict=True)
    ]
    assert any(w != o for w, o in zip(want, orders, strict=True))


def test_sum_squares_and_norms_match_float64():
    rng = np.random.default_rng(0)
    offsets, lengths = _segments([5, 0, 1, 1000, 37])
    buffer = rng.normal(size=int(lengths.sum())).astype(np.float32)
    out = np.empty(5, np.float64)
    red.segment_sum_squares(buffer, offsets, lengths, out)
    expected = [
        float(np.sum(buffer[o : o + n].astype(np.float64) ** 2))
        for o, n in zip(offsets, lengths, strict=True)
    ]
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    assert out[1] == 0.0
    red.segment_l2_norms(buffer, offsets, lengths, out)
    np.testing.assert_allclose(out, np.sqrt(expected), rtol=1e-12)


def test_large_segments_sum_in_blocks_whatever_the_thread_count():
    import numba

    rng = np.random.default_rng(1)
    offsets, lengths = _segments([3 * red.BLOCK + 17, 5, red.BLOCK, 2 * red.BLOCK - 1])
    buffer = rng.normal(size=int(lengths.sum())).astype(np.float32)
    results = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        out = np.empty(4, np.float64)
        red.segment_sum_squares(buffer, offsets, lengths, out)
        results.append(out)
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert np.array_equal(results[0], results[1])
    expected = [
        float(np.sum(buffer[o : o + n].astype(np.float64) ** 2))
        for o, n in zip(offsets, lengths, strict=True)
    ]
    np.testing.assert_allclose(results[0], expected, rtol=1e-12)


def test_segments_may_be_any_subset_in_any_order():
    buffer = np.arange(10, dtype=np.float32)
    offsets = np.array([8, 0], np.int64)
    lengths = np.array([2, 3], np.int64)
    out = np.empty(2, np.float64)
    red.segment_sum_squares(buffer, offsets, lengths, out)
    assert list(out) == [64 + 81, 0 + 1 + 4]


def test_large_values_do_not_overflow_float32():
    buffer = np.full(4, 3e30, np.float32)
    out = np.empty(1, np.float64)
    red.segment_l2_norms(buffer, np.array([0], np.int64), np.array([4], np.int64), out)
    assert out[0] == pytest.approx(6e30, rel=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_first_nonfinite_segment(bad):
    offsets, lengths = _segments([3, 4, 5, 2])
    buffer = np.ones(14, np.float32)
    flags = np.empty(4, np.int8)
    assert red.first_nonfinite_segment(buffer, offsets, lengths, flags) == -1
    buffer[10] = bad  # segment 2
    buffer[13] = bad  # segment 3
    assert red.first_nonfinite_segment(buffer, offsets, lengths, flags) == 2
    assert list(flags) == [0, 0, 1, 1]


def test_no_segments():
    empty = np.zeros(0, np.int64)
    assert (
        red.first_nonfinite_segment(np.ones(3, np.float32), empty, empty, np.zeros(0, np.int8))
        == -1
    )


def test_bad_segments_are_refused():
    buffer = np.ones(5, np.float32)
    out = np.empty(1, np.float64)
    with pytest.raises(KernelArgumentError, match="outside"):
        red.segment_sum_squares(buffer, np.array([3], np.int64), np.array([3], np.int64), out)
    with pytest.raises(KernelArgumentError, match="int64"):
        red.segment_sum_squares(buffer, np.array([0], np.int32), np.array([3], np.int32), out)
    with pytest.raises(KernelArgumentError, match="float64"):
        red.segment_sum_squares(
            buffer, np.array([0], np.int64), np.array([3], np.int64), np.empty(1, np.float32)
        )


def test_sum_squares_of_a_change_equals_the_sum_squares_of_the_difference():
    rng = np.random.default_rng(3)
    offsets, lengths = _segments([2 * red.BLOCK + 5, 0, 17, 300])
    before = rng.normal(size=int(lengths.sum())).astype(np.float32)
    after = (before + rng.normal(scale=1e-3, size=before.size)).astype(np.float32)
    fused, separate = np.empty(4, np.float64), np.empty(4, np.float64)
    red.segment_sum_squares_change(before, after, offsets, lengths, fused)
    red.segment_sum_squares(before - after, offsets, lengths, separate)
    assert np.array_equal(fused, separate)
    assert fused[1] == 0.0


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("carried", [False, True], ids=["no-carry", "carry"])
def test_unscale_sum_squares_equals_its_three_numpy_passes(threads, carried):
    """GradScaler's unscale, the per-segment sums and the carry added back, in one blocked
    pass: the same bits as ``buffer *= f``, :func:`segment_sum_squares`, ``buffer += carry``
    over the whole buffer, with segments out of order, an empty one, one that is not summed
    (length 0, as the trainer's non-learnable blobs) and elements outside every segment."""
    from dnupdate.engine.backends.cpu import share

    rng = np.random.default_rng(4)
    size = 5 * red.BLOCK + 123
    buffer = (rng.normal(size=size) * 1e3).astype(np.float32)
    carry = rng.normal(size=size).astype(np.float32) if carried else None
    offsets = np.array([2 * red.BLOCK + 7, 10, 300, 4 * red.BLOCK], np.int64)
    lengths = np.array([red.BLOCK + 5, 200, 0, red.BLOCK + 100], np.int64)
    factor = float(np.float32(1 / 65536))
    want = buffer * np.float32(factor)
    want_sums = np.empty(4, np.float64)
    red.segment_sum_squares(want, offsets, lengths, want_sums)
    if carried:
        want = want + carry
    share.set_threads(threads)
    try:
        got, sums = buffer.copy(), np.empty(4, np.float64)
        red.unscale_sum_squares(got, factor, carry, offsets, lengths, sums)
    finally:
        share.set_threads(None)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    np.testing.assert_array_equal(sums.view(np.uint64), want_sums.view(np.uint64))
    assert sums[2] == 0.0
    got = buffer.copy()
    red.unscale_sum_squares(got, 1.0, None, offsets, lengths, sums)  # factor 1: untouched
    np.testing.assert_array_equal(got, buffer)
    np.testing.assert_allclose(
        sums[0], np.sum(buffer[offsets[0] : offsets[0] + lengths[0]].astype(np.float64) ** 2)
    )
