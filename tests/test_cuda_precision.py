"""The CUDA storage-rounding kernels against the CPU backend's, bit for bit (edge cases of
``tests/test_precision_kernels.py``; tiny sizes: these run under the numba-cuda simulator, see
``tests/test_cuda_simulator.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from dnupdate.engine.backends.cpu import precision as p
from tests.test_cuda_support import backends, on_backend, requires_cuda
from tests.test_precision_kernels import assert_same_bits, edge_values

pytestmark = requires_cuda


@pytest.mark.parametrize("code", [p.FP16, p.BF16, p.FP32])
def test_round_storage_matches_the_cpu(code):
    values = edge_values()
    offsets, lengths = np.array([0, 40], np.int64), np.array([40, values.size - 40], np.int64)
    found = {}
    for name, backend in backends().items():
        counts = np.zeros((2, 3), np.int64)
        arrays, _ = on_backend(
            backend,
            {"values": values},
            lambda b, values, c=counts: b.round_storage(values, offsets, lengths, code, c, True),
        )
        found[name] = (arrays["values"], counts)
    assert_same_bits(found["cuda"][0], found["cpu"][0])
    np.testing.assert_array_equal(found["cuda"][1], found["cpu"][1])


def test_lost_updates_match_the_cpu():
    before = np.linspace(-2, 2, 61, dtype=np.float32)
    after = (before + np.float32(3e-4) * np.sin(np.arange(61, dtype=np.float32))).astype(np.float32)
    offsets, lengths = np.array([0], np.int64), np.array([61], np.int64)
    found = {}
    for name, backend in backends().items():
        counts = np.zeros((1, 2), np.int64)
        arrays, _ = on_backend(
            backend,
            {"before": before, "after": after},
            lambda b, before, after, c=counts: b.lost_updates(
                before, after, offsets, lengths, p.FP16, True, c
            ),
        )
        found[name] = (arrays["after"], counts)
    assert_same_bits(found["cuda"][0], found["cpu"][0])
    np.testing.assert_array_equal(found["cuda"][1], found["cpu"][1])
    assert 0 < found["cpu"][1][0, 1] < found["cpu"][1][0, 0]


def test_store_rounded_and_unscale_sum_squares_match_the_cpu():
    """The fused passes of the mixed-precision update (the CUDA backend runs the base class's
    multi-pass defaults): the working copy rounded with its master kept, and the unscale with
    the gradient norms and the carry added back."""
    values = edge_values()
    offsets, lengths = np.array([3, 50], np.int64), np.array([40, values.size - 52], np.int64)
    rng = np.random.default_rng(2)
    grads = rng.normal(size=300).astype(np.float32)
    carry = rng.normal(size=300).astype(np.float32)
    g_offsets, g_lengths = np.array([250, 10, 0], np.int64), np.array([50, 200, 0], np.int64)
    found = {}
    for name, backend in backends().items():
        arrays, _ = on_backend(
            backend,
            {"values": values, "saved": np.zeros_like(values)},
            lambda b, values, saved: b.store_rounded(values, offsets, lengths, p.FP16, saved),
        )
        sums = np.zeros(3, np.float64)
        unscaled, _ = on_backend(
            backend,
            {"grads": grads, "carry": carry},
            lambda b, grads, carry, s=sums: b.unscale_sum_squares(
                grads, 2.0**-10, carry, g_offsets, g_lengths, s
            ),
        )
        found[name] = (arrays["values"], arrays["saved"], unscaled["grads"], sums)
    for cuda_array, cpu_array in zip(found["cuda"][:3], found["cpu"][:3], strict=True):
        assert_same_bits(cuda_array, cpu_array)
    np.testing.assert_allclose(found["cuda"][3], found["cpu"][3], rtol=1e-12)
