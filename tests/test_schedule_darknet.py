"""darknet learning-rate policies against the real library and the spec's worked values.

Conformance: for every pjreddie policy, with and without burn-in, our ``lr_at`` must equal
libdarknet's ``get_current_rate`` to the last float32 bit, with ``*net->seen`` set to
``b * batch`` (batch = mini-batch × subdivisions), for hundreds of batch numbers.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from dnupdate.engine.rng import GlibcRand
from dnupdate.engine.spec import ScheduleSpec
from dnupdate.engine.update.schedule import ScheduleError, lr_at, lr_series, milestones
from tests import libdarknet as dn

BATCH, SUBDIVISIONS = 4, 2  # seen = b * BATCH (mini-batch 2, two subdivisions)
BATCHES = range(0, 420)


def bits(value: float) -> int:
    """float32 bit pattern; every NaN maps to one value (C and Python may differ in sign)."""
    if math.isnan(value):
        return -1
    return struct.unpack("<I", struct.pack("<f", value))[0]


def dn_spec(policy: str, **fields) -> ScheduleSpec:
    fields.setdefault("base_lr", 0.1)
    return ScheduleSpec(convention="darknet", policy=policy, **fields)


def cfg_text(spec: ScheduleSpec) -> str:
    """The [net] section darknet needs to reproduce ``spec`` (plus a weightless layer)."""
    lines = [
        "[net]",
        f"batch={BATCH}",
        f"subdivisions={SUBDIVISIONS}",
        "inputs=4",
        f"learning_rate={spec.base_lr!r}",
        f"policy={spec.policy}",
        f"power={spec.power!r}",
        f"burn_in={spec.burn_in}",
        f"max_batches={spec.max_iter}",
    ]
    if spec.policy in ("step", "sigmoid"):
        lines.append(f"step={spec.step}")
    if spec.policy == "step":
        lines.append(f"scale={spec.scale!r}")
    if spec.policy in ("exp", "sigmoid"):
        lines.append(f"gamma={spec.gamma!r}")
    if spec.policy == "steps":
        lines.append("steps=" + ",".join(str(s) for s in spec.steps))
        lines.append("scales=" + ",".join(repr(s) for s in spec.scales))
    return "\n".join(lines) + "\n\n[softmax]\n"


CASES = {
    "constant": dn_spec("constant", base_lr=0.0137),
    "step": dn_spec("step", step=25, scale=0.5),
    "step-odd": dn_spec("step", base_lr=0.003, step=7, scale=0.9),
    "steps": dn_spec("steps", steps=(10, 50, 100, 150), scales=(0.1, 0.5, 2.0, 0.1)),
    "steps-negative": dn_spec("steps", steps=(-1, 100, 200), scales=(0.1, 0.1, 0.1)),
    "steps-unsorted": dn_spec("steps", steps=(50, 20, 300), scales=(0.3, 7.0, 0.1)),
    "exp": dn_spec("exp", gamma=0.98),
    "poly": dn_spec("poly", power=4.0, max_iter=200),
    "poly-past-end": dn_spec("poly", power=2.0, max_iter=150),
    "poly-fractional": dn_spec("poly", power=0.9, max_iter=300),
    "sigmoid": dn_spec("sigmoid", gamma=0.1, step=100),
    "sigmoid-negative-gamma": dn_spec("sigmoid", gamma=-0.05, step=60),
    "random": dn_spec("random", power=1.0),
    "random-power4": dn_spec("random", power=4.0, base_lr=0.01),
}
BURN_INS = {"no-burn-in": {}, "burn-in": {"burn_in": 20}, "burn-in-p2": {"burn_in": 37}}


def _with_burn_in(spec: ScheduleSpec, extra: dict) -> ScheduleSpec:
    fields = {**spec.__dict__, **extra}
    if extra.get("burn_in") == 37:
        fields["power"] = 2.0 if spec.policy not in ("poly", "random") else spec.power
    return ScheduleSpec(**fields)


@pytest.mark.darknet
@pytest.mark.parametrize("burn", list(BURN_INS))
@pytest.mark.parametrize("case", list(CASES))
def test_matches_libdarknet_bit_for_bit(libdarknet, case, burn):
    spec = _with_burn_in(CASES[case], BURN_INS[burn])
    net = dn.parse_cfg_text(libdarknet, cfg_text(spec))
    try:
        assert net.contents.batch * net.contents.subdivisions == BATCH
        seed = 5
        dn.srand(seed)
        stream = GlibcRand(seed)
        ours, theirs = [], []
        for b in BATCHES:
            dn.set_seen(net, b * BATCH)
            assert libdarknet.get_current_batch(net) == b
            theirs.append(libdarknet.get_current_rate(net))
            ours.append(lr_at(spec, b, rand_state=stream))
        mismatches = [
            (b, o, t) for b, o, t in zip(BATCHES, ours, theirs, strict=True) if bits(o) != bits(t)
        ]
        assert not mismatches, mismatches[:5]
        series = lr_series(spec, BATCHES[0], BATCHES[-1], seed=seed)
        assert [bits(v) for v in series.tolist()] == [bits(v) for v in theirs]
    finally:
        libdarknet.free_network(net)


@pytest.mark.darknet
def test_huge_batch_numbers_match_libdarknet(libdarknet):
    """Unsigned 64-bit counters far past 2^24 (float rounding of b) and 2^32."""
    spec = dn_spec("sigmoid", gamma=1e-9, step=3)
    net = dn.parse_cfg_text(libdarknet, cfg_text(spec))
    try:
        for b in (2**24 + 1, 2**31 + 7, 2**33 + 5, 10**12 + 3):
            dn.set_seen(net, b * BATCH)
            assert bits(lr_at(spec, b)) == bits(libdarknet.get_current_rate(net))
    finally:
        libdarknet.free_network(net)


# ---- worked values from spec/darknet.md section 3.5 (produced by the library) -----------------

WORKED = [
    (dn_spec("steps", steps=(10, 50, 100, 150), scales=(0.1, 0.5, 2, 0.1)), 9, 0.100000001),
    (dn_spec("steps", steps=(10, 50, 100, 150), scales=(0.1, 0.5, 2, 0.1)), 10, 0.0100000007),
    (dn_spec("steps", steps=(10, 50, 100, 150), scales=(0.1, 0.5, 2, 0.1)), 50, 0.00500000035),
    (dn_spec("steps", steps=(10, 50, 100, 150), scales=(0.1, 0.5, 2, 0.1)), 100, 0.0100000007),
    (dn_spec("steps", steps=(10, 50, 100, 150), scales=(0.1, 0.5, 2, 0.1)), 150, 0.00100000005),
    (dn_spec("step", step=25, scale=0.5), 24, 0.100000001),
    (dn_spec("step", step=25, scale=0.5), 25, 0.0500000007),
    (dn_spec("step", step=25, scale=0.5), 150, 0.00156250002),
    (dn_spec("exp", gamma=0.98), 1, 0.0980000049),
    (dn_spec("exp", gamma=0.98), 100, 0.0132619813),
    (dn_spec("exp", gamma=0.98), 200, 0.00175880152),
    (dn_spec("poly", power=4, max_iter=200), 1, 0.0980149508),
    (dn_spec("poly", power=4, max_iter=200), 100, 0.00625000009),
    (dn_spec("poly", power=4, max_iter=200), 200, 0.0),
    (dn_spec("poly", power=2, max_iter=150), 149, 4.44443594e-06),
    (dn_spec("poly", power=2, max_iter=150), 151, 4.44443594e-06),
    (dn_spec("poly", power=2, max_iter=150), 200, 0.0111111142),
    (dn_spec("sigmoid", gamma=0.1, step=100), 99, 0.0),
    (dn_spec("sigmoid", gamma=0.1, step=100), 100, 0.0500000007),
    (dn_spec("sigmoid", gamma=0.1, step=100), 101, 0.0475020818),
    (dn_spec("sigmoid", gamma=0.1, step=100), 150, 0.000669285131),
    (dn_spec("constant", burn_in=20), 0, 0.0),
    (dn_spec("constant", burn_in=20), 1, 6.25000041e-07),
    (dn_spec("constant", burn_in=20), 10, 0.00625000009),
    (dn_spec("constant", burn_in=20), 19, 0.0814506188),
    (dn_spec("poly", power=4, max_iter=200, burn_in=20), 20, 0.0656099916),
    (dn_spec("poly", power=4, max_iter=20, burn_in=5), 1, 0.000160000011),
    (dn_spec("poly", power=4, max_iter=20, burn_in=5), 4, 0.0409600027),
    (dn_spec("poly", power=4, max_iter=20, burn_in=5), 5, 0.0316406265),
    (dn_spec("steps", steps=(-1, 100), scales=(0.1, 0.1)), 300, 0.100000001),
]


@pytest.mark.parametrize(("spec", "b", "expected"), WORKED)
def test_worked_values(spec, b, expected):
    assert lr_at(spec, b) == pytest.approx(expected, rel=2e-8, abs=1e-12)


def test_random_worked_values():
    spec = dn_spec("random", power=1.0)
    stream = GlibcRand(5)
    got = [lr_at(spec, b, rand_state=stream) for b in range(3)]
    assert got == pytest.approx([0.027474558, 0.00464677671, 0.0992755219], rel=1e-7)
    burned = dn_spec("random", power=1.0, burn_in=20)
    stream = GlibcRand(5)
    for b in range(20):  # burn-in batches consume no rand()
        lr_at(burned, b, rand_state=stream)
    assert lr_at(burned, 20, rand_state=stream) == pytest.approx(0.027474558, rel=1e-7)


def test_training_run_convention_for_steps():
    """Updates 1-2 use .1, updates 3-5 .01, from update 6 on .001 (spec 3.5)."""
    spec = dn_spec("steps", steps=(3, 6), scales=(0.1, 0.1))
    rates = lr_series(spec, 1, 8)
    lr = np.float32(0.1)
    once = lr * np.float32(0.1)  # float32 running product, as darknet
    twice = once * np.float32(0.1)
    expected = np.array([lr, lr, once, once, once, twice, twice, twice], dtype=np.float32)
    np.testing.assert_array_equal(rates, expected)


def test_random_needs_a_stream():
    with pytest.raises(ScheduleError, match="rand_state"):
        lr_at(dn_spec("random"), 3)


def test_step_zero_is_an_error():
    with pytest.raises(ScheduleError, match="step"):
        lr_at(dn_spec("step", step=0), 3)


def test_milestones_mark_burn_in_and_steps():
    spec = dn_spec("steps", steps=(10, 50), scales=(0.1, 0.5), burn_in=5)
    marks = milestones(spec, 60)
    assert [(it, reason) for it, _, reason in marks] == [
        (1, "start"),
        (5, "burn-in end"),
        (10, "step"),
        (50, "step"),
        (60, "end"),
    ]
    assert marks[2][1] == pytest.approx(0.01, rel=1e-6)
