"""Extras: AlexeyAB's ``sgdr``, cosine annealing with warm restarts, linear warm-up, and
properties shared by every policy (series = pointwise, float32 values)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnupdate.engine.rng import GlibcRand
from dnupdate.engine.spec import ScheduleSpec
from dnupdate.engine.update.schedule import lr_at, lr_series, milestones


def spec(convention: str, policy: str, **fields) -> ScheduleSpec:
    fields.setdefault("base_lr", 0.1)
    return ScheduleSpec(convention=convention, policy=policy, **fields)


def alexeyab_sgdr(b: int, lr: float, lr_min: float, cycle: int, mult: int) -> float:
    """AlexeyAB network.c, transcribed in plain double arithmetic."""
    start, size = 0, cycle
    while start + size < b:
        start += size
        size *= mult
    return lr_min + 0.5 * (lr - lr_min) * (1.0 + math.cos((b - start) * 3.14159265 / size))


def test_sgdr_matches_alexeyab_formula():
    schedule = spec("darknet", "sgdr", cycle=10, cycle_mult=2, lr_min=0.001, max_iter=200)
    rates = lr_series(schedule, 1, 150)
    for b in range(1, 151):
        assert rates[b - 1] == pytest.approx(alexeyab_sgdr(b, 0.1, 0.001, 10, 2), rel=1e-6)
    assert rates[9] == pytest.approx(0.001, rel=1e-5)  # b = 10 ends the first cycle
    assert rates[10] > 0.09  # b = 11 restarts
    marks = [(it, reason) for it, _, reason in milestones(schedule, 150)]
    assert marks == [(1, "start"), (11, "restart"), (31, "restart"), (71, "restart"), (150, "end")]


def test_sgdr_cycle_defaults_to_max_batches():
    schedule = spec("darknet", "sgdr", max_iter=100, lr_min=0.0)
    assert lr_at(schedule, 50) == pytest.approx(0.05, rel=1e-6)


def test_cosine_restarts_in_caffe_convention():
    schedule = spec("caffe", "cosine", cycle=10, cycle_mult=2.0, lr_min=0.01)
    rates = lr_series(schedule, 0, 80)
    assert rates[0] == np.float32(0.1)
    assert rates[5] == pytest.approx((0.1 + 0.01) / 2, rel=1e-6)
    assert rates[10] == np.float32(0.1) and rates[30] == np.float32(0.1)  # restarts
    assert rates[20] == pytest.approx((0.1 + 0.01) / 2, rel=1e-6)  # middle of a 20-long cycle
    marks = [(it, reason) for it, _, reason in milestones(schedule, 80)]
    assert marks == [(0, "start"), (10, "restart"), (30, "restart"), (70, "restart"), (80, "end")]


def test_cosine_in_darknet_convention_starts_at_lr_on_the_first_update():
    schedule = spec("darknet", "cosine", max_iter=100)
    assert lr_at(schedule, 1) == np.float32(0.1)
    assert lr_at(schedule, 51) == pytest.approx(0.05, rel=1e-6)


@pytest.mark.parametrize("convention", ["darknet", "caffe"])
def test_linear_warmup(convention):
    policy = "constant" if convention == "darknet" else "fixed"
    schedule = spec(convention, policy, warmup=4)
    first = 1 if convention == "darknet" else 0
    rates = lr_series(schedule, first, first + 5)
    expected = np.float32([0.1 * 1 / 4, 0.1 * 2 / 4, 0.1 * 3 / 4, 0.1, 0.1, 0.1])
    np.testing.assert_allclose(rates, expected, rtol=1e-7)
    marks = [(it, reason) for it, _, reason in milestones(schedule, first + 5)]
    assert (first + 3, "warm-up end") in marks


def test_warmup_composes_with_burn_in_and_steps():
    schedule = spec("darknet", "steps", steps=(6,), scales=(0.5,), burn_in=3, warmup=2)
    rates = lr_series(schedule, 1, 8)
    burn = [0.1 * (b / 3) ** 4 for b in (1, 2)]
    expected = [burn[0] * 0.5, burn[1], 0.1, 0.1, 0.1, 0.05, 0.05, 0.05]
    np.testing.assert_allclose(rates, np.float32(expected), rtol=1e-6)


_darknet = st.sampled_from(["constant", "step", "steps", "exp", "poly", "sigmoid", "random"])


@settings(max_examples=60, deadline=None)
@given(
    policy=_darknet,
    base_lr=st.floats(1e-5, 1.0),
    gamma=st.floats(-0.2, 1.0),
    power=st.floats(0.0, 5.0),
    step=st.integers(1, 40),
    burn_in=st.integers(-3, 30),
    first=st.integers(0, 60),
    count=st.integers(1, 60),
    steps=st.lists(st.integers(-2, 120), max_size=4),
)
def test_darknet_series_equals_pointwise(
    policy, base_lr, gamma, power, step, burn_in, first, count, steps
):
    schedule = ScheduleSpec(
        convention="darknet",
        policy=policy,
        base_lr=base_lr,
        gamma=gamma,
        power=power,
        step=step,
        steps=tuple(steps),
        scales=tuple(0.5 for _ in steps),
        max_iter=100,
        burn_in=burn_in,
        seed=9,
    )
    series = lr_series(schedule, first, first + count - 1)
    stream = GlibcRand(9)
    pointwise = [lr_at(schedule, b, rand_state=stream) for b in range(first, first + count)]
    assert series.dtype == np.float32
    np.testing.assert_array_equal(series, np.float32(pointwise))


@pytest.mark.parametrize("convention", ["darknet", "caffe"])
def test_warmup_with_cosine_climbs_to_the_base_rate_then_starts_the_cosine(convention):
    """Issue 17 item 14 (timm's warmup_prefix=True): update u < W uses base·u/W, update W
    the base rate, and the cosine's first cycle counts from there."""
    schedule = spec(
        convention, "cosine", max_iter=40, cycle=10, cycle_mult=1.0, warmup=5, lr_min=0.0
    )
    first = 1 if convention == "darknet" else 0
    rates = lr_series(schedule, first, first + 24)
    cosine = [0.05 * (1 + math.cos(math.pi * t / 10)) for t in range(10)]
    expected = [0.1 * u / 5 for u in range(1, 5)] + cosine + cosine + [0.1]
    np.testing.assert_allclose(rates, np.float32(expected), rtol=1e-6)
    marks = {it: reason for it, _, reason in milestones(schedule, first + 24)}
    assert marks[first + 4] == "warm-up end"
    assert marks[first + 14] == "restart" and marks[first + 24] == "restart"
