"""glibc ``rand()`` emulation and darknet's ``rand_uniform``/``rand_normal``.

Checked against published glibc values, the process's own C library (through ctypes) and
libdarknet's exported ``rand_uniform``/``rand_normal`` after libc ``srand``.
"""

from __future__ import annotations

import json
import platform

import numpy as np
import pytest

from dnupdate.engine.rng import DarknetRandom, GlibcRand, RandomStateError
from tests import libdarknet as dn

glibc_only = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="the process's C library is not glibc"
)
SEEDS = [0, 1, 5, 42, 12345, -7, 2**31 + 5, 2**32 - 1]


def test_published_glibc_sequence_for_seed_1():
    # The well-known first outputs of glibc rand() without srand (seed 1).
    stream = GlibcRand()
    assert [stream.rand() for _ in range(5)] == [
        1804289383,
        846930886,
        1681692777,
        1714636915,
        1957747793,
    ]


def test_seed_zero_behaves_as_seed_one():
    a, b = GlibcRand(0), GlibcRand(1)
    assert [a.rand() for _ in range(40)] == [b.rand() for _ in range(40)]


@glibc_only
@pytest.mark.parametrize("seed", SEEDS)
def test_matches_the_c_library(libc, seed):
    dn.srand(seed)
    expected = [libc.rand() for _ in range(3000)]
    stream = GlibcRand(seed)
    assert [stream.rand() for _ in range(1000)] + stream.rand_array(2000).tolist() == expected


@pytest.mark.parametrize(("head", "n"), [(0, 0), (0, 5), (3, 1024), (7, 2500), (40, 4099)])
def test_bulk_draws_equal_scalar_draws(head, n):
    scalar, bulk = GlibcRand(99), GlibcRand(99)
    for _ in range(head):
        scalar.rand()
    bulk.rand_array(head)
    expected = [scalar.rand() for _ in range(n)]
    got = bulk.rand_array(n)
    assert got.dtype == np.int64
    assert got.tolist() == expected
    assert bulk.rand() == scalar.rand()  # states agree afterwards


def test_state_round_trip_and_copy():
    stream = GlibcRand(3)
    stream.rand_array(100)
    state = json.loads(json.dumps(stream.get_state()))
    clone = stream.copy()
    expected = [stream.rand() for _ in range(50)]
    assert [clone.rand() for _ in range(50)] == expected
    restored = GlibcRand(777)
    restored.set_state(state)
    assert [restored.rand() for _ in range(50)] == expected


def test_bad_state_is_rejected():
    with pytest.raises(RandomStateError):
        GlibcRand().set_state([1, 2, 3])
    with pytest.raises(RandomStateError):
        DarknetRandom().set_state({"glibc": [0] * 31})


def test_uniform_formula_in_float32():
    stream = GlibcRand(11)
    draws = [stream.rand() for _ in range(200)]
    rng = DarknetRandom(11)
    got = rng.rand_uniform_array(200, -1.0, 1.0)
    span = np.float32(2.0)
    unit = np.float32(draws) / np.float32(2.0**31)
    np.testing.assert_array_equal(got, unit * span + np.float32(-1.0))
    assert got.min() >= -1.0 and got.max() < 1.0


def test_normal_bulk_equals_scalar_including_spare():
    scalar, bulk = DarknetRandom(8), DarknetRandom(8)
    expected = [scalar.rand_normal() for _ in range(1001)]
    got = np.concatenate([bulk.rand_normal_array(1), bulk.rand_normal_array(999)])
    got = np.concatenate([got, bulk.rand_normal_array(1)])
    assert got.tolist() == expected
    assert bulk.get_state() == scalar.get_state()  # both hold the same pending spare


def test_normal_state_round_trip_keeps_the_spare():
    rng = DarknetRandom(4)
    rng.rand_normal()  # leaves a spare pending
    state = json.loads(json.dumps(rng.get_state()))
    expected = [rng.rand_normal() for _ in range(5)]
    other = DarknetRandom(1)
    other.set_state(state)
    assert [other.rand_normal() for _ in range(5)] == expected


def test_normal_moments_are_plausible():
    values = DarknetRandom(123).rand_normal_array(20000).astype(np.float64)
    assert abs(values.mean()) < 0.03
    assert abs(values.std() - 1.0) < 0.03


@pytest.mark.darknet
@pytest.mark.parametrize("seed", [1, 5, 2024, 2**31 + 3])
@pytest.mark.parametrize(("low", "high"), [(0.0, 1.0), (-1.0, 1.0), (3.5, -0.25)])
def test_uniform_matches_libdarknet(libdarknet, seed, low, high):
    dn.srand(seed)
    expected = [libdarknet.rand_uniform(low, high) for _ in range(500)]
    rng = DarknetRandom(seed)
    head = [rng.rand_uniform(low, high) for _ in range(100)]
    assert head + rng.rand_uniform_array(400, low, high).tolist() == expected


@pytest.mark.darknet
@pytest.mark.parametrize("seed", [1, 5, 77, 31337])
def test_normal_matches_libdarknet(libdarknet, seed):
    dn.reset_rand_normal_spare(libdarknet)
    dn.srand(seed)
    expected = [libdarknet.rand_normal() for _ in range(2001)]  # odd: leaves a spare
    dn.reset_rand_normal_spare(libdarknet)
    rng = DarknetRandom(seed)
    head = [rng.rand_normal() for _ in range(3)]
    assert head + rng.rand_normal_array(1998).tolist() == expected


CONV_CFG = """[net]
batch=2
height=6
width=6
channels=3

[convolutional]
filters=4
size=3
stride=1
pad=1
activation=leaky

[connected]
output=5
activation=linear

[softmax]
"""


@pytest.mark.darknet
def test_initial_weights_match_libdarknet(libdarknet):
    """Parsing draws conv weights with rand_normal and connected weights with rand_uniform
    (spec 9.4); the same seed gives the same float32 weights here."""
    dn.reset_rand_normal_spare(libdarknet)
    dn.srand(17)
    net = dn.parse_cfg_text(libdarknet, CONV_CFG)
    try:
        conv = dn.layer_array(net, 0, "weights").copy()
        connected = dn.layer_array(net, 1, "weights").copy()
    finally:
        libdarknet.free_network(net)
    rng = DarknetRandom(17)
    conv_scale = np.float32(np.sqrt(2.0 / (3 * 3 * 3)))
    expected_conv = conv_scale * rng.rand_normal_array(conv.size)
    np.testing.assert_array_equal(conv, expected_conv)
    inputs = 6 * 6 * 4
    fc_scale = np.float32(np.sqrt(2.0 / inputs))
    expected_fc = fc_scale * rng.rand_uniform_array(connected.size, -1.0, 1.0)
    np.testing.assert_array_equal(connected, expected_fc)
