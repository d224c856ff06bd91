"""Caffe learning-rate policies (``SGDSolver::GetLearningRate``), Caffe's iteration
convention, float32 arithmetic checked against the C library's ``powf``/``expf``, and
``multistep``'s one-step-per-call state."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnupdate.engine.spec import ScheduleSpec
from dnupdate.engine.update.schedule import (
    ScheduleError,
    caffe_multistep_sequence,
    caffe_multistep_step,
    convention_note,
    first_iteration,
    lr_at,
    lr_series,
    milestones,
    multistep_trace,
)

f32 = np.float32


def caffe(policy: str, **fields) -> ScheduleSpec:
    fields.setdefault("base_lr", 0.01)
    return ScheduleSpec(convention="caffe", policy=policy, **fields)


LENET = caffe("inv", gamma=0.0001, power=0.75, max_iter=10000)


def test_lenet_inv_published_trace_value():
    # Caffe's MNIST tutorial log: "Iteration 100, lr = 0.00992565".
    assert f"{lr_at(LENET, 100):.6g}" == "0.00992565"
    assert lr_at(LENET, 0) == float(f32(0.01))
    assert lr_at(LENET, 9999) == pytest.approx(0.01 * 1.9999**-0.75, rel=1e-6)


def test_convention():
    assert first_iteration(LENET) == 0
    assert "updates already applied" in convention_note(LENET)


FORMULAS = [
    (caffe("fixed"), lambda it: 0.01),
    (caffe("step", gamma=0.1, step=30), lambda it: 0.01 * 0.1 ** (it // 30)),
    (caffe("exp", gamma=0.99), lambda it: 0.01 * 0.99**it),
    (LENET, lambda it: 0.01 * (1 + 0.0001 * it) ** -0.75),
    (caffe("poly", power=0.5, max_iter=120), lambda it: 0.01 * (1 - it / 120) ** 0.5),
    (
        caffe("sigmoid", gamma=0.05, step=60),
        lambda it: 0.01 / (1 + math.exp(-0.05 * (it - 60))),
    ),
]


@pytest.mark.parametrize(("spec", "formula"), FORMULAS, ids=lambda x: getattr(x, "policy", ""))
def test_policies_follow_their_formulas(spec, formula):
    rates = lr_series(spec, 0, 119)
    assert rates.dtype == np.float32
    for it in range(120):
        assert rates[it] == pytest.approx(formula(it), rel=2e-6, abs=1e-12), it
        assert lr_at(spec, it) == rates[it]


def test_float32_arithmetic_matches_libm(libc):
    """inv/poly/sigmoid use powf/expf on floats; step/exp use double pow (C++ overloads)."""
    powf, expf, pow_ = libc.libm.powf, libc.libm.expf, libc.libm.pow
    inv = caffe("inv", base_lr=0.013, gamma=0.00037, power=0.83)
    poly = caffe("poly", base_lr=0.02, power=1.7, max_iter=5000)
    sigmoid = caffe("sigmoid", base_lr=0.3, gamma=0.0123, step=2500)
    exp = caffe("exp", base_lr=0.07, gamma=0.9995)
    for it in range(0, 5000, 7):
        base = f32(f32(1) + f32(f32(0.00037) * f32(it)))
        expected = f32(f32(0.013) * f32(powf(base, -float(f32(0.83)))))
        assert lr_at(inv, it) == expected, ("inv", it)
        base = f32(f32(1) - f32(f32(it) / f32(5000)))
        expected = f32(f32(0.02) * f32(powf(base, float(f32(1.7)))))
        assert lr_at(poly, it) == expected, ("poly", it)
        shifted = f32(f32(it) - f32(2500))
        e = f32(expf(float(f32(-f32(0.0123) * shifted))))
        expected = f32(f32(0.3) * f32(f32(1) / f32(f32(1) + e)))
        assert lr_at(sigmoid, it) == expected, ("sigmoid", it)
        expected = f32(float(f32(0.07)) * pow_(float(f32(0.9995)), float(it)))
        assert lr_at(exp, it) == expected, ("exp", it)


def test_poly_reaches_zero_only_after_the_last_update():
    spec = caffe("poly", power=2.0, max_iter=100)
    assert lr_at(spec, 99) > 0
    assert lr_at(spec, 100) == 0.0


def test_sigmoid_rises_through_half_at_stepsize():
    spec = caffe("sigmoid", gamma=0.1, step=50)
    assert lr_at(spec, 0) < 0.01 * 0.01
    assert lr_at(spec, 50) == pytest.approx(0.005, rel=1e-6)
    assert lr_at(spec, 200) == pytest.approx(0.01, rel=1e-6)


def reference_multistep(stepvalues, last):
    """A direct transcription of Caffe's stateful code, called every iteration."""
    current, out = 0, []
    for it in range(last + 1):
        if current < len(stepvalues) and it >= stepvalues[current]:
            current += 1
        out.append(current)
    return out


@pytest.mark.parametrize("stepvalues", [(5, 10, 15), (5, 5, 5, 20), (0, 3), (), (30, 2)])
def test_multistep_state_advances_one_step_per_call(stepvalues):
    expected_steps = reference_multistep(stepvalues, 40)
    assert caffe_multistep_sequence(stepvalues, 40).tolist() == expected_steps
    assert list(multistep_trace(stepvalues, 0, 40)) == expected_steps
    spec = caffe("multistep", gamma=0.5, steps=stepvalues)
    rates = lr_series(spec, 0, 40)
    for it, step in enumerate(expected_steps):
        assert rates[it] == f32(float(f32(0.01)) * 0.5**step)
        assert lr_at(spec, it) == rates[it]
    assert lr_series(spec, 17, 40).tolist() == rates[17:].tolist()


def test_multistep_resumed_state_catches_up_one_step_at_a_time():
    stepvalues = (5, 10, 15)
    assert caffe_multistep_step(stepvalues, 20, 0) == 1
    spec = caffe("multistep", gamma=0.1, steps=stepvalues)
    gamma = float(f32(0.1))  # proto floats are float32; pow(float, int) runs in double
    assert lr_at(spec, 20, current_step=0) == f32(float(f32(0.01)) * gamma)
    assert lr_at(spec, 20) == f32(float(f32(0.01)) * gamma**3)


def test_milestones_for_multistep():
    spec = caffe("multistep", gamma=0.1, steps=(100, 200))
    marks = milestones(spec, 300)
    assert [(it, reason) for it, _, reason in marks] == [
        (0, "start"),
        (100, "step"),
        (200, "step"),
        (300, "end"),
    ]


@pytest.mark.parametrize(
    "spec",
    [
        caffe("step", step=0),
        caffe("exp", gamma=-0.5),
        caffe("nosuch"),
        caffe("sigmoid", gamma=0.1, step=0),
    ],
)
def test_invalid_schedules_raise(spec):
    with pytest.raises(ScheduleError):
        lr_at(spec, 3)


def test_negative_iteration_raises():
    with pytest.raises(ScheduleError):
        lr_at(LENET, -1)


_policies = st.sampled_from(["fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid"])


@settings(max_examples=60, deadline=None)
@given(
    policy=_policies,
    base_lr=st.floats(1e-5, 1.0),
    gamma=st.floats(0.0, 1.0),
    power=st.floats(0.0, 3.0),
    step=st.integers(1, 50),
    first=st.integers(0, 60),
    count=st.integers(1, 60),
    steps=st.lists(st.integers(0, 120), max_size=4).map(lambda s: tuple(sorted(s))),
)
def test_series_equals_pointwise(policy, base_lr, gamma, power, step, first, count, steps):
    spec = caffe(
        policy, base_lr=base_lr, gamma=gamma, power=power, step=step, steps=steps, max_iter=200
    )
    series = lr_series(spec, first, first + count - 1)
    pointwise = [lr_at(spec, it) for it in range(first, first + count)]
    assert series.tolist() == pytest.approx(pointwise, nan_ok=True, rel=0, abs=0)
