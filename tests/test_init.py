"""Initialisation (engine.model.initialisation): darknet's draws against an independent
transcription of the
spec on the C library's own ``rand()``, and Caffe's fillers by their defining properties."""

from __future__ import annotations

import ctypes
import math
import platform

import numpy as np
import pytest

from dnupdate.engine.model.initialisation import (
    allocate_blobs,
    caffe_fans,
    darknet_scale,
    init_framework,
    init_plan,
    initialise,
)
from dnupdate.engine.rng import DarknetRandom
from dnupdate.engine.spec import (
    BatchNormSpec,
    ConfigError,
    ConnectedSpec,
    ConvSpec,
    DropoutSpec,
    FillerSpec,
    InputSpec,
    NetSpec,
    Origin,
    ScaleSpec,
)
from tests.darknet_fixtures import dk_connected, dk_conv

# --------------------------------------------------------------------------------------------
# darknet
# --------------------------------------------------------------------------------------------


DARKNET_NET = NetSpec(
    "dk",
    InputSpec(3, 6, 5),
    (
        dk_conv("0", 5, 3, bn=True, pad=1),  # 135 weights: odd, leaves the spare pending
        dk_conv("1", 5, 1, groups=5),  # 5 weights
        dk_connected("2", 4, bn=True),
    ),
)


class CRand:
    """The C library's ``srand``/``rand`` (glibc on Linux), the reference stream."""

    def __init__(self, seed: int):
        self.libc = ctypes.CDLL(None)
        self.libc.srand.argtypes = [ctypes.c_uint]
        self.libc.rand.restype = ctypes.c_int
        self.libc.srand(seed & 0xFFFFFFFF)
        self.spare: float | None = None

    def rand(self) -> int:
        return self.libc.rand()

    def rand_normal(self) -> np.float32:
        """spec 9.3, with plain divisions (the spec notes they give the same floats)."""
        if self.spare is not None:
            value, self.spare = self.spare, None
            return np.float32(value)
        u1 = max(self.rand() / 2147483647.0, 1e-100)
        rand1 = -2.0 * math.log(u1)
        rand2 = self.rand() / 2147483647.0 * float(np.float32(6.2831855))
        self.spare = math.sqrt(rand1) * math.sin(rand2)
        return np.float32(math.sqrt(rand1) * math.cos(rand2))

    def rand_uniform(self, low: float, high: float) -> np.float32:
        """spec 9.2: float32 arithmetic, RAND_MAX as float is 2^31."""
        unit = np.float32(self.rand()) / np.float32(2147483647)
        return np.float32(unit * np.float32(high - low)) + np.float32(low)


glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the reference rand() stream is glibc's",
)


def reference_darknet_init(seed: int) -> dict[str, np.ndarray]:
    """DARKNET_NET initialised by hand from spec 9.4 on the C library's rand()."""
    c = CRand(seed)
    out = {}
    scale0 = np.float32(math.sqrt(2.0 / (3 * 3 * 3 // 1)))
    w0 = [scale0 * c.rand_normal() for _ in range(5 * 3 * 3 * 3)]
    scale1 = np.float32(math.sqrt(2.0 / (1 * 1 * 5 // 5)))
    w1 = [scale1 * c.rand_normal() for _ in range(5 * 1 * 1 * 1)]
    scale2 = np.float32(math.sqrt(2.0 / (5 * 6 * 5)))
    w2 = [scale2 * c.rand_uniform(-1, 1) for _ in range(4 * 150)]
    out["0/4"] = np.array(w0, np.float32).reshape(5, 3, 3, 3)
    out["1/1"] = np.array(w1, np.float32).reshape(5, 1, 1, 1)
    out["2/1"] = np.array(w2, np.float32).reshape(4, 150)
    out["next_rand"] = c.rand()
    return out


@glibc_only
@pytest.mark.parametrize("seed", [0, 1, 7, 123456789])
def test_darknet_weights_match_a_transcription_on_glibc_rand(seed):
    blobs = allocate_blobs(DARKNET_NET)
    rng = initialise(DARKNET_NET, blobs, seed=seed)
    expected = reference_darknet_init(seed)
    for key in ("0/4", "1/1", "2/1"):
        assert blobs[key].tobytes() == expected[key].tobytes(), key
    assert isinstance(rng, DarknetRandom)
    assert rng.glibc.rand() == expected["next_rand"]


def test_darknet_constants_biases_zero_scales_one_statistics_zero():
    blobs = allocate_blobs(DARKNET_NET)
    for array in blobs.values():
        array[...] = 5.0  # initialise must overwrite everything
    initialise(DARKNET_NET, blobs, seed=3)
    # conv with BN: biases, scales, rolling_mean, rolling_variance, weights
    assert np.all(blobs["0/0"] == 0) and np.all(blobs["0/1"] == 1)
    assert np.all(blobs["0/2"] == 0) and np.all(blobs["0/3"] == 0)
    assert np.all(blobs["1/0"] == 0)
    # connected with BN: biases, weights, scales, rolling_mean, rolling_variance
    assert np.all(blobs["2/0"] == 0) and np.all(blobs["2/2"] == 1)
    assert np.all(blobs["2/3"] == 0) and np.all(blobs["2/4"] == 0)


def test_darknet_scale_uses_integer_fan_then_double_sqrt():
    # size 3, c 6, groups 3: 3*3*6/3 = 18
    assert darknet_scale("darknet_conv", (4, 2, 3, 3)) == np.float32(math.sqrt(2.0 / 18))
    assert darknet_scale("darknet_connected", (10, 7)) == np.float32(math.sqrt(2.0 / 7))
    assert darknet_scale("darknet_conv", (4, 2, 3, 3)).dtype == np.float32


def test_darknet_weight_statistics_follow_the_scales():
    net = NetSpec("big", InputSpec(16, 8, 8), (dk_conv("0", 64, 3, pad=1), dk_connected("1", 200)))
    blobs = allocate_blobs(net)
    initialise(net, blobs, seed=1)
    assert abs(blobs["0/1"].std() / math.sqrt(2 / 144) - 1) < 0.03
    fc = blobs["1/1"]
    bound = np.float32(math.sqrt(2 / (64 * 8 * 8)))
    assert np.abs(fc).max() <= bound and np.abs(fc).max() > 0.99 * bound


def test_framework_rng_continues_instead_of_reseeding():
    first = allocate_blobs(DARKNET_NET)
    rng = initialise(DARKNET_NET, first, seed=4)
    second = allocate_blobs(DARKNET_NET)
    continued = DarknetRandom(4)
    continued.set_state(rng.get_state())
    again = initialise(DARKNET_NET, second, seed=999, framework_rng=continued)
    assert again is continued
    assert not np.array_equal(first["0/4"], second["0/4"])
    # the same as drawing both nets' weights from one stream seeded once
    one_stream = DarknetRandom(4)
    initialise(DARKNET_NET, allocate_blobs(DARKNET_NET), seed=4, framework_rng=one_stream)
    twice = allocate_blobs(DARKNET_NET)
    initialise(DARKNET_NET, twice, seed=0, framework_rng=one_stream)
    assert twice["0/4"].tobytes() == second["0/4"].tobytes()


def test_blobs_may_come_from_a_callable_of_pairs():
    blobs = allocate_blobs(DARKNET_NET)
    initialise(DARKNET_NET, lambda: list(blobs.items()), seed=2)
    reference = allocate_blobs(DARKNET_NET)
    initialise(DARKNET_NET, reference, seed=2)
    assert all(np.array_equal(blobs[k], reference[k]) for k in blobs)


def test_missing_or_misshapen_buffers_are_reported():
    blobs = allocate_blobs(DARKNET_NET)
    del blobs["1/1"]
    with pytest.raises(KeyError, match="1/1"):
        initialise(DARKNET_NET, blobs, seed=1)
    blobs = allocate_blobs(DARKNET_NET)
    blobs["1/1"] = np.zeros((5, 1), np.float32)
    with pytest.raises(ValueError, match=r"1/1.*expected float32\[5, 1, 1, 1\]"):
        initialise(DARKNET_NET, blobs, seed=1)


def test_allocate_blobs_keys_and_shapes():
    blobs = allocate_blobs(DARKNET_NET)
    assert list(blobs) == ["0/0", "0/1", "0/2", "0/3", "0/4", "1/0", "1/1"] + [
        f"2/{i}" for i in range(5)
    ]
    assert blobs["2/1"].shape == (4, 150) and blobs["2/1"].dtype == np.float32


def test_init_framework():
    assert init_framework(DARKNET_NET) == "darknet"
    assert init_framework(caffe_net(FillerSpec(type="xavier"))) == "caffe"
    dropout_only = NetSpec("d", InputSpec(1, 2, 2), (DropoutSpec(name="0", style="darknet"),))
    assert init_framework(dropout_only) == "darknet"


# --------------------------------------------------------------------------------------------
# Caffe
# --------------------------------------------------------------------------------------------


def caffe_net(weight: FillerSpec, bias: FillerSpec = FillerSpec(), *, shape=(8, 5, 3, 3)):
    """A Caffe conv with weight blob ``shape`` = (O, C, k, k) and an InnerProduct after it."""
    o, c, k, _ = shape
    conv = ConvSpec(
        name="conv",
        origin=Origin("net.prototxt", 12),
        filters=o,
        kernel_h=k,
        kernel_w=k,
        weight_filler=weight,
        bias_filler=bias,
    )
    return NetSpec("c", InputSpec(c, 9, 9), (conv, ConnectedSpec(name="ip", outputs=3)))


def filled(weight: FillerSpec, bias: FillerSpec = FillerSpec(), seed=1, **kw):
    net = caffe_net(weight, bias, **kw)
    blobs = allocate_blobs(net)
    rng = initialise(net, blobs, seed=seed)
    return blobs, rng


def test_unset_filler_is_constant_zero_and_constant_uses_value():
    blobs, rng = filled(FillerSpec(type="constant", value=0.25))
    assert np.all(blobs["conv/0"] == np.float32(0.25))
    assert np.all(blobs["conv/1"] == 0) and np.all(blobs["ip/0"] == 0)
    assert isinstance(rng, np.random.Generator)


def test_uniform_stays_within_bounds_and_includes_the_upper_one():
    blobs, _ = filled(FillerSpec(type="uniform", min=-0.5, max=0.25), shape=(64, 16, 5, 5))
    w = blobs["conv/0"]
    assert w.min() >= np.float32(-0.5) and w.max() <= np.float32(0.25)
    assert w.min() < -0.49 and w.max() > 0.24
    point, _ = filled(FillerSpec(type="uniform", min=0.75, max=0.75))
    assert np.all(point["conv/0"] == np.float32(0.75))  # U[a, a] is a, as in Caffe


def test_gaussian_mean_and_std():
    blobs, _ = filled(FillerSpec(type="gaussian", mean=0.5, std=0.1), shape=(64, 16, 5, 5))
    w = blobs["conv/0"]
    assert abs(w.mean() - 0.5) < 0.005 and abs(w.std() - 0.1) < 0.003


def test_gaussian_sparse_keeps_sparse_over_outputs():
    blobs, _ = filled(FillerSpec(type="gaussian", sparse=16), shape=(64, 16, 5, 5))
    kept = np.count_nonzero(blobs["conv/0"]) / blobs["conv/0"].size
    assert abs(kept - 16 / 64) < 0.02


@pytest.mark.parametrize(
    ("norm", "n"),
    [("fan_in", 16 * 9), ("fan_out", 32 * 9), ("average", (16 * 9 + 32 * 9) / 2)],
)
def test_xavier_bound_and_msra_std_follow_variance_norm(norm, n):
    shape = (32, 16, 3, 3)
    blobs, _ = filled(FillerSpec(type="xavier", variance_norm=norm), shape=shape)
    w = blobs["conv/0"]
    bound = math.sqrt(3 / n)
    assert np.abs(w).max() <= np.float32(bound) and np.abs(w).max() > 0.99 * bound
    blobs, _ = filled(FillerSpec(type="msra", variance_norm=norm), shape=shape)
    assert abs(blobs["conv/0"].std() / math.sqrt(2 / n) - 1) < 0.03


def test_caffe_fans_use_legacy_num_and_channels():
    assert caffe_fans((32, 16, 3, 3)) == (144, 288)
    assert caffe_fans((10, 7)) == (7, 10)
    assert caffe_fans((6,)) == (1, 6)


def test_positive_unitball_rows_sum_to_one():
    blobs, _ = filled(FillerSpec(type="positive_unitball"))
    rows = blobs["conv/0"].reshape(8, -1)
    assert np.all(rows >= 0) and np.all(rows <= 1)
    assert np.allclose(rows.sum(axis=1), 1, atol=1e-5)


def test_bilinear_kernel():
    blobs, _ = filled(FillerSpec(type="bilinear"), shape=(2, 5, 4, 4))
    profile = np.array([0.25, 0.75, 0.75, 0.25], np.float32)  # f = 2, c = 0.75
    assert np.allclose(blobs["conv/0"][1, 3], np.outer(profile, profile))


def test_weight_filler_draws_before_bias_filler():
    gaussian = FillerSpec(type="gaussian")
    blobs, _ = filled(gaussian, gaussian, seed=8)
    gen = np.random.default_rng(8)
    weights = gen.normal(0, 1, (8, 5, 3, 3)).astype(np.float32)
    bias = gen.normal(0, 1, (8,)).astype(np.float32)
    assert np.array_equal(blobs["conv/0"], weights) and np.array_equal(blobs["conv/1"], bias)


def test_caffe_fillers_are_seeded():
    xavier = FillerSpec(type="xavier")
    a, _ = filled(xavier, seed=5)
    b, _ = filled(xavier, seed=5)
    c, _ = filled(xavier, seed=6)
    assert np.array_equal(a["conv/0"], b["conv/0"])
    assert not np.array_equal(a["conv/0"], c["conv/0"])


def test_scale_and_caffe_batchnorm_defaults():
    net = NetSpec(
        "s",
        InputSpec(4, 3, 3),
        (
            BatchNormSpec(name="bn"),
            ScaleSpec(name="sc", bias_term=True),
            BatchNormSpec(name="dbn", style="darknet"),
        ),
    )
    blobs = allocate_blobs(net)
    for array in blobs.values():
        array[...] = 9
    initialise(net, blobs, seed=1)
    assert all(np.all(blobs[f"bn/{i}"] == 0) for i in range(3))
    assert np.all(blobs["sc/0"] == 1) and np.all(blobs["sc/1"] == 0)
    assert np.all(blobs["dbn/0"] == 1) and np.all(blobs["dbn/1"] == 0)


@pytest.mark.parametrize(
    ("filler", "message"),
    [
        (FillerSpec(type="glorot"), "unknown filler type 'glorot'"),
        (FillerSpec(type="xavier", sparse=3), "sparse is only supported by gaussian"),
        (FillerSpec(type="gaussian", std=0), "std > 0"),
        (FillerSpec(type="uniform", min=1, max=0), "min <= max"),
        (FillerSpec(type="gaussian", sparse=99), "exceeds the 8 outputs"),
    ],
)
def test_bad_fillers_name_file_line_layer_and_field(filler, message):
    with pytest.raises(ConfigError) as info:
        filled(filler)
    (diagnostic,) = info.value.diagnostics
    assert (diagnostic.file, diagnostic.line, diagnostic.key) == (
        "net.prototxt",
        12,
        "weight_filler",
    )
    assert "layer conv" in diagnostic.message and message in diagnostic.message


def test_init_plan_order_within_a_layer():
    plan = init_plan(DARKNET_NET)
    assert [e.key for e in plan[:5]] == ["0/4", "0/0", "0/1", "0/2", "0/3"]
    assert [e.field for e in plan[:2]] == ["weight_filler", "bias_filler"]


def test_lenet_from_the_caffe_reader_gets_xavier_weights_and_zero_biases():
    """The example LeNet solver/net through the config reader: xavier weights within
    ``sqrt(3/fan_in)``, constant-0 biases (spec caffe.md 11.2)."""
    from pathlib import Path

    from dnupdate.engine.config import load_config

    solver = Path(__file__).resolve().parent.parent / "configs" / "lenet_solver.prototxt"
    if not solver.exists():
        pytest.skip("example LeNet config not present")
    net = load_config(str(solver)).net
    blobs = allocate_blobs(net)
    initialise(net, blobs, seed=1)
    for key, fan_in in (("conv1/0", 25), ("conv2/0", 500), ("ip1/0", 800), ("ip2/0", 500)):
        bound = np.float32(math.sqrt(3 / fan_in))
        assert 0.95 * bound < np.abs(blobs[key]).max() <= bound, key
    assert all(np.all(blobs[k] == 0) for k in ("conv1/1", "conv2/1", "ip1/1", "ip2/1"))
