"""Issue 18 item 6: ``lr-schedule`` works in bounded memory for any legal iteration count.
Milestones are found analytically (checked against the brute-force definition), chosen
iterations are evaluated alone, CSV/JSON stream in chunks equal to the whole series."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dnupdate.cli.main import app
from dnupdate.engine.spec import ScheduleSpec
from dnupdate.engine.update.schedule import (
    PIECEWISE_CONSTANT,
    first_iteration,
    iter_lr_chunks,
    lr_points,
    lr_series,
    milestones,
)

runner = CliRunner()


def brute_force_milestones(schedule: ScheduleSpec, n: int) -> list[tuple[int, float, str]]:
    """The definition the analytic milestones must meet, from the whole series."""
    first = first_iteration(schedule)
    rates = lr_series(schedule, first, n)
    found = {first: "start"}
    if schedule.convention == "darknet" and 0 < schedule.burn_in <= n:
        found.setdefault(max(schedule.burn_in, first), "burn-in end")
    policy_start = first
    if schedule.convention == "darknet" and schedule.burn_in > 0:
        policy_start = max(first, schedule.burn_in)
    if schedule.policy in PIECEWISE_CONSTANT:
        changed = np.nonzero(rates[1:] != rates[:-1])[0] + 1 + first
        for it in changed:
            if it > policy_start:
                found.setdefault(int(it), "step")
    found.setdefault(n, "end")
    return [(it, float(rates[it - first]), found[it]) for it in sorted(found)]


piecewise = st.one_of(
    st.builds(
        lambda step, scale, burn_in: ScheduleSpec(
            "darknet", "step", 0.1, step=step, scale=scale, burn_in=burn_in
        ),
        st.integers(-3, 40).filter(lambda step: step != 0),
        st.sampled_from([0.5, 1.0, 0.1, 2.0]),
        st.integers(0, 30),
    ),
    st.builds(
        lambda steps, burn_in: ScheduleSpec(
            "darknet", "steps", 0.1, steps=tuple(steps), scales=(0.5,) * len(steps),
            burn_in=burn_in,
        ),
        st.lists(st.integers(-5, 120), max_size=5),
        st.integers(0, 30),
    ),
    st.builds(
        lambda steps: ScheduleSpec("caffe", "multistep", 0.1, gamma=0.5, steps=tuple(steps)),
        st.lists(st.integers(0, 120), max_size=5).map(sorted),
    ),
    st.builds(
        lambda step: ScheduleSpec("caffe", "step", 0.1, gamma=0.5, step=step),
        st.integers(1, 40),
    ),
)  # fmt: skip


@settings(max_examples=120, derandomize=True, database=None, deadline=None)
@given(schedule=piecewise, n=st.integers(1, 150))
def test_analytic_milestones_equal_the_brute_force_definition(schedule, n):
    assert milestones(schedule, n) == brute_force_milestones(schedule, n)


SCHEDULES = [
    ScheduleSpec("darknet", "random", 0.1, power=2.0, burn_in=7, seed=3),
    ScheduleSpec("darknet", "sgdr", 0.1, cycle=5, cycle_mult=2.0, lr_min=0.001),
    ScheduleSpec("darknet", "sgdr", 0.1, cycle=3, cycle_mult=1.0, lr_min=0.001),
    ScheduleSpec("caffe", "cosine", 0.1, cycle=4, cycle_mult=1.5, max_iter=100, warmup=5),
    ScheduleSpec("caffe", "cosine", 0.1, cycle=6, cycle_mult=1.0, max_iter=100),
    ScheduleSpec("caffe", "multistep", 0.1, gamma=0.5, steps=(3, 3, 3, 50)),
    ScheduleSpec("darknet", "poly", 0.1, power=2.0, max_iter=90, burn_in=10),
    ScheduleSpec("caffe", "inv", 0.01, gamma=1e-4, power=0.75),
]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: f"{s.convention}-{s.policy}")
def test_chunks_and_points_equal_the_whole_series(schedule):
    first = first_iteration(schedule)
    whole = lr_series(schedule, first, first + 199)
    pieces = list(iter_lr_chunks(schedule, first, first + 199, chunk=17))
    assert np.concatenate([its for its, _ in pieces]).tolist() == list(range(first, first + 200))
    assert np.array_equal(np.concatenate([r for _, r in pieces]), whole)
    chosen = np.array([first, first + 3, first + 64, first + 150, first + 199])
    assert np.array_equal(lr_points(schedule, chosen), whole[chosen - first])


def test_restart_cycles_of_a_2_31_schedule_cost_one_entry():
    schedule = ScheduleSpec("darknet", "sgdr", 0.1, cycle=1, cycle_mult=1.0, lr_min=0.0)
    marks = milestones(schedule, 2**31 - 1, limit=10)
    # the start and 10 restarts at each end; the last restart is the last iteration
    assert len(marks) == 1 + 20
    assert marks[-1] == (2**31 - 1, 0.0, "restart")
    assert [it for it, _, _ in marks[:3]] == [1, 2, 3]


def peak_bytes(args: list[str]) -> tuple[int, object]:
    tracemalloc.start()
    try:
        result = runner.invoke(app, args)
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "sets",
    [
        ["--set", "policy=steps", "--set", "steps=200,260", "--set", "scales=.1,.1"],
        ["--set", "policy=poly", "--set", "power=2"],
        ["--set", "policy=step", "--set", "step=1", "--set", "scale=0.9999"],
        ["--set", "policy=sgdr", "--set", "sgdr_cycle=1", "--set", "sgdr_mult=1"],
    ],
)
def test_a_2_31_iteration_table_and_plot_use_bounded_memory(sets):
    args = ["lr-schedule", *sets, "--set", "max_batches=2147483647", "--plot"]
    peak, result = peak_bytes(args)
    assert result.exit_code == 0, result.output
    assert "2,147,483,647 updates" in result.stdout
    assert "sampled" in result.stdout
    assert peak < 150 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_random_policy_past_the_walk_limit_is_a_clean_error():
    result = runner.invoke(
        app, ["lr-schedule", "--set", "policy=random", "--set", "max_batches=2147483647"]
    )
    assert result.exit_code == 1
    assert "pass a smaller --iters" in result.stderr


def test_csv_and_json_stream_every_iteration_equal_to_the_series():
    sets = ["--set", "policy=sgdr", "--set", "sgdr_cycle=7", "--set", "max_batches=150000"]
    csv_result = runner.invoke(app, ["lr-schedule", *sets, "--format", "csv"])
    json_result = runner.invoke(app, ["lr-schedule", *sets, "--format", "json"])
    assert csv_result.exit_code == json_result.exit_code == 0
    lines = csv_result.stdout.splitlines()
    assert lines[0] == "iteration,lr" and len(lines) == 150_001
    rows = json.loads(json_result.stdout)
    assert len(rows) == 150_000
    schedule = ScheduleSpec("darknet", "sgdr", 0.001, cycle=7, cycle_mult=2.0, lr_min=1e-5)
    whole = lr_series(schedule, 1, 150_000)
    assert lines[-1] == f"150000,{float(whole[-1]):.9g}"
    assert rows[70_000] == {"iteration": 70_001, "lr": float(f"{float(whole[70_000]):.9g}")}


def test_table_of_a_long_schedule_agrees_with_the_exact_one():
    """Milestone rows are the same whether the run is evaluated whole or sampled."""
    base = ["lr-schedule", "--set", "policy=steps", "--set", "steps=20,50"]
    base += ["--set", "scales=.1,.5"]
    short = runner.invoke(app, [*base, "--set", "max_batches=1000"])
    long = runner.invoke(app, [*base, "--set", "max_batches=100000000"])
    assert short.exit_code == long.exit_code == 0

    def cells(output: str) -> dict[str, list[str]]:
        rows = [line.split("│")[1:-1] for line in output.splitlines() if line.startswith("│")]
        return {row[0].strip(): [c.strip() for c in row[1:]] for row in rows}

    short_rows, long_rows = cells(short.stdout), cells(long.stdout)
    for iteration in ("1", "20", "50"):
        assert short_rows[iteration] == long_rows[iteration]
