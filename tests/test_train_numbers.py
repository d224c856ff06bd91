"""The numbers a training run reports (issue 17): one iteration numbering per framework in
every output, a test of the final weights, steady-state speed, non-finite scores never
counted as correct, distinct test images, darknet's batch-norm warm-up, ``--quiet``,
``--display-every``, the run's settings in ``summary.json``, and the console's status lines.
Tiny nets and data written by the tests themselves."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from rich.console import Console

from dnupdate.cli.dashboard import Dashboard, eval_line, summary_line
from dnupdate.cli.main import app
from dnupdate.engine.model.layers.loss import _accuracy_counting_non_finite_wrong
from dnupdate.engine.training.events import EvalFinished, RunFinished
from dnupdate.engine.training.session import Throughput, substitution_note
from dnupdate.engine.training.step import _darknet_top1_correct, _top1_correct
from tests.test_cli_train import json_events, runner, train
from tests.test_cli_train_display import events as display_events
from tests.test_train_loop import (
    Tiny,
    caffe_config,
    darknet_config,
    run_all,
    session,
    write_quadrants,
)


@pytest.fixture
def tiny(tmp_path, monkeypatch) -> Tiny:
    monkeypatch.chdir(tmp_path)  # the default run folder, runs/..., lands here
    data = write_quadrants(tmp_path / "quadrants.npz")
    return Tiny(tmp_path, data, darknet_config(tmp_path), caffe_config(tmp_path, data))


# ---- item 3: one iteration numbering, joined with lr-schedule -------------------------------


def _train_rows(folder) -> list[dict]:
    with open(folder / "metrics.csv", encoding="utf-8", newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["kind"] == "train"]


def _schedule_rows(config) -> dict[int, float]:
    result = runner.invoke(app, ["lr-schedule", str(config), "--format", "csv"])
    assert result.exit_code == 0, result.output
    rows = csv.DictReader(io.StringIO(result.stdout))
    return {int(row["iteration"]): float(row["lr"]) for row in rows}


@pytest.mark.parametrize("kind", ["darknet", "caffe"])
def test_metrics_join_lr_schedule_on_iteration(tiny, kind):
    """Every training row's lr is the lr-schedule's at the same ``iteration`` (Caffe: 0-based
    ``it``; darknet: batch number from 1), and the console line of an update carries that
    number too."""
    config = tiny.caffe if kind == "caffe" else tiny.darknet
    data = [] if kind == "caffe" else ["--data", f"npz:{tiny.data}"]
    out = tiny.root / kind
    result = train(str(config), *data, "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    rows = _train_rows(out)
    schedule = _schedule_rows(config)
    first = 0 if kind == "caffe" else 1
    assert [int(row["iteration"]) for row in rows] == list(range(first, first + 8))
    assert sorted(schedule) == [int(row["iteration"]) for row in rows]
    for row in rows:
        assert np.float32(float(row["lr"])) == np.float32(schedule[int(row["iteration"])])
    steps = [e for e in json_events(result.stdout) if e["event"] == "step_finished"]
    assert [e["iteration"] for e in steps] == [int(row["iteration"]) for row in rows]
    assert [e["updates"] for e in steps] == list(range(1, 9))
    started = json_events(result.stdout)[0]
    assert started["convention"] == kind
    name = {"caffe": "Caffe", "darknet": "darknet"}[kind]
    assert started["iteration_convention"].startswith(f"{name} convention: iteration")


def test_a_resumed_caffe_run_keeps_the_numbering_without_repeats(tiny):
    out = tiny.root / "run"
    assert train(str(tiny.caffe), "--out", str(out), "--max-iters", "3", "-q").exit_code == 0
    with open(out / "metrics.jsonl", "a") as handle:  # a row written after the checkpoint
        handle.write(json.dumps({"kind": "train", "iteration": 3, "loss": 1.0}) + "\n")
    assert train("--resume", str(out), "-q").exit_code == 0
    iterations = [int(row["iteration"]) for row in _train_rows(out)]
    jsonl = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert iterations == list(range(8))
    assert [r["iteration"] for r in jsonl if r["kind"] == "train"] == list(range(8))


# ---- item 1: the final test, and which test the summary holds --------------------------------


def test_max_iters_ends_with_a_test_of_the_final_weights(tiny):
    """--max-iters 4 with test_interval 3: Caffe's Solve would not test at 4; the run does, and
    the last line and summary.json report that test, not the one at 3."""
    out = tiny.root / "run"
    result = train(str(tiny.caffe), "--out", str(out), "--max-iters", "4")
    assert result.exit_code == 0, result.output
    assert "test after 4 updates: accuracy" in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_iteration"] == 4 and summary["test_is_final"] is True
    assert summary["loss_iteration"] == 3  # Caffe's it of the 4th update
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("done after 4 updates") and "; test accuracy " in last


def test_with_eval_every_0_the_last_line_names_an_older_test(tiny):
    out = tiny.root / "run"
    data = ["--data", f"npz:{tiny.data}"]
    assert train(str(tiny.darknet), *data, "--out", str(out), "--max-iters", "3").exit_code == 0
    result = train("--resume", str(out), "--max-iters", "5", "--eval-every", "0")
    assert result.exit_code == 0, result.output
    assert "test after 5 updates" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "last test after 3 updates: accuracy" in last
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_iteration"] == 3 and summary["test_is_final"] is False


# ---- item 2: non-finite scores ----------------------------------------------------------------


def test_darknet_top_k_picks_the_first_unbeaten_class_and_nan_picks_class_0():
    scores = np.array(
        [[0.2, 0.5, 0.5], [np.nan] * 3, [np.nan] * 3, [0.1, np.nan, 0.9]], dtype=np.float32
    )
    labels = np.array([1, 0, 2, 2])
    # row 0: tie between 1 and 2 goes to 1 (correct); rows 1-2 pick 0; row 3: 0.9 > 0.1
    assert _darknet_top1_correct(scores, labels) == 3


def test_caffe_rule_counts_nan_correct_unless_flagged_wrong():
    scores = np.full((4, 3), np.nan, dtype=np.float32)
    labels = np.array([0, 1, 2, 0])
    assert _top1_correct(scores, labels) == 4  # Caffe: every >= with NaN is false
    bad = ~np.isfinite(scores).all(axis=1)
    assert _top1_correct(scores, labels, wrong=bad) == 0
    # the Accuracy layer's correction, with positions (B, C, inner) and an ignored label
    scores3 = np.array([[[np.nan], [1.0]], [[2.0], [1.0]], [[0.0], [3.0]]], dtype=np.float32)
    labels3 = np.array([[0], [0], [-1]])
    bad3 = ~np.isfinite(scores3).all(axis=1)
    assert _accuracy_counting_non_finite_wrong(scores3, labels3, bad3, 1, -1) == 0.5


@pytest.mark.parametrize("kind", ["darknet", "caffe"])
def test_a_nan_net_is_never_reported_accurate(tiny, kind):
    config = tiny.caffe if kind == "caffe" else tiny.darknet
    run = session(config, None, data=f"npz:{tiny.data}", max_iters=1)
    trainer = run.trainer
    trainer.backend.copy_from_host(
        np.full(trainer.network.params.shape, np.nan, np.float32), trainer.network.params
    )
    event = run._evaluate(final=True)
    assert event.non_finite == event.images > 0
    # counted wrong; what the framework itself would report is kept beside it: Caffe's
    # Accuracy counts every NaN row, darknet's top_k picks class 0 (a quarter of 4 classes)
    assert event.accuracy == 0.0
    assert event.framework_accuracy == (1.0 if kind == "caffe" else pytest.approx(0.25))
    line = eval_line(event)
    assert f"WARNING: {event.images} of {event.images} predictions had non-finite scores" in line
    assert "counted wrong (the framework's own rule would report" in line


# ---- item 4: steady-state speed ----------------------------------------------------------------


def test_throughput_leaves_out_startup_and_pauses(monkeypatch):
    clock = iter([0.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 17.0])
    monkeypatch.setattr("dnupdate.engine.training.session.time.perf_counter", lambda: next(clock))
    timer = Throughput(images_per_update=100)
    timer.start()  # t = 0
    timer.update_done(1)  # t = 10: compilation and the first update
    assert timer.startup_s == 10.0 and timer.images_per_s() is None
    assert timer.eta_seconds(9) is None
    with timer.paused():  # t = 11 .. 12: a test
        pass
    timer.update_done(2)  # t = 13
    timer.update_done(3)  # t = 14
    # two updates of 100 images in 14 - 10 - 1 (the test) = 3 s
    assert timer.images_per_s() == pytest.approx(200 / 3)
    # recent pace 1.5 s (tests left out) + the session's test time per update, 1 s / 2
    assert timer.eta_seconds(7) == pytest.approx(7 * (1.5 + 0.5))
    with timer.paused():  # t = 15 .. 17: a pause no update follows (an interrupted run's test)
        pass
    assert timer.images_per_s() == pytest.approx(200 / 3)


def test_eta_does_not_jump_when_a_long_test_enters_the_recent_window(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("dnupdate.engine.training.session.time.perf_counter", lambda: now[0])
    timer = Throughput(images_per_update=10)
    timer.start()
    etas = []
    for update in range(1, 201):
        if update % 50 == 0:  # a 30 s test every 50 updates
            with timer.paused():
                now[0] += 30.0
        now[0] += 1.0  # one update takes 1 s
        timer.update_done(update)
        if update > 60:
            etas.append(timer.eta_seconds(1000))
    # 1 s per update + 30 s per 50 updates amortised: about 1000 · 1.6 s, never the
    # (20 s + 30 s)/20 pace a window holding the test would give
    assert max(etas) < 1000 * 1.7 and min(etas) > 1000 * 1.25


def test_speed_figures_agree_between_events_summary_and_console(tiny):
    out = tiny.root / "run"
    result = train(str(tiny.darknet), "--data", f"npz:{tiny.data}", "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    events = json_events(result.stdout)
    steps = [e for e in events if e["event"] == "step_finished"]
    assert steps[0]["images_per_s"] is None and steps[0]["eta_s"] is None
    assert all(e["images_per_s"] > 0 for e in steps[1:])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images_per_s"] == steps[-1]["images_per_s"]
    assert summary["startup_s"] > 0
    assert f"{summary['images_per_s']:.0f} img/s (after " in result.stderr.splitlines()[-1]
    assert "iter 1 (update 1/8)" in result.stderr and "- img/s" in result.stderr


# ---- item 5: distinct images ----------------------------------------------------------------


def test_a_wrapping_caffe_test_counts_predictions_and_distinct_images(tiny):
    out = tiny.root / "run"
    result = train(str(tiny.caffe), "--out", str(out), "--set", "test_iter=12")
    assert result.exit_code == 0, result.output
    assert "(120 predictions over 96 distinct images)" in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_images"] == 120 and summary["test_distinct_images"] == 96


# ---- item 6: --quiet keeps the ending ---------------------------------------------------------


def test_quiet_still_says_why_a_run_diverged(tiny):
    config = darknet_config(tiny.root, lr=1e9, subdivisions=1)
    result = train(str(config), "--data", f"npz:{tiny.data}", "--out", str(tiny.root / "d"), "-q")
    assert result.exit_code == 3
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("DIVERGED: non-finite") and lines[-1].startswith("diverged after")


# ---- item 7: darknet batch norm warming up ------------------------------------------------------


def test_darknet_batch_norm_tests_say_the_rolling_statistics_are_warming_up(tiny):
    text = tiny.darknet.read_text().replace(
        "activation=leaky", "batch_normalize=1\nactivation=leaky"
    )
    tiny.darknet.write_text(text)
    events = run_all(tiny.darknet, None, data=f"npz:{tiny.data}", max_iters=2)
    test = [e for e in events if e.kind == "eval_finished"][-1]
    passes = 2 * 2  # 2 updates × 2 subdivisions
    assert test.rolling_stats_weight == pytest.approx(0.99**passes)
    assert "rolling statistics still warming up" in eval_line(test)
    late = EvalFinished(5000, 0.1, 0.9, 100, 100, rolling_stats_weight=0.99**5000)
    assert "WARNING" not in eval_line(late)
    caffe = [e for e in run_all(tiny.caffe, None, max_iters=1) if e.kind == "eval_finished"]
    assert caffe[-1].rolling_stats_weight is None  # Caffe's BatchNorm divides by its s


# ---- item 10: the run's settings in summary.json and run_started ---------------------------------


def test_summary_and_run_started_carry_overrides_and_hyperparameters(tiny):
    out = tiny.root / "run"
    result = train(
        str(tiny.darknet),
        *("--data", f"npz:{tiny.data}", "--out", str(out), "--json", "-q"),
        *("--set", "learning_rate=0.02", "--set", "momentum=0.8"),
    )
    assert result.exit_code == 0, result.output
    started = json_events(result.stdout)[0]
    assert started["config"]["overrides"] == ["learning_rate=0.02", "momentum=0.8"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overrides"] == ["learning_rate=0.02", "momentum=0.8"]
    hyper = summary["hyperparameters"]
    assert hyper["base_lr"] == pytest.approx(0.02) and hyper["momentum"] == pytest.approx(0.8)
    assert hyper["images_per_update"] == 8 and hyper["max_iter"] == 8
    assert summary["config_values"]["learning_rate"] in ("0.02", 0.02)
    resumed = train("--resume", str(out), "--max-iters", "9", "--json", "-q")
    assert json_events(resumed.stdout)[0]["config"]["overrides"] == started["config"]["overrides"]


# ---- item 11: --display-every ---------------------------------------------------------------


def test_display_every_sets_the_plain_log_interval(tiny):
    data = ["--data", f"npz:{tiny.data}", "--out", str(tiny.root / "run")]
    result = train(str(tiny.darknet), *data, "--display-every", "3")
    assert result.exit_code == 0, result.output
    lines = [line.split()[1] for line in result.stderr.splitlines() if line.startswith("iter ")]
    assert lines == ["1", "3", "6", "8"]  # darknet's first, every third, and the last


# ---- item 22: the console's status lines and the dashboard ----------------------------------


def test_a_missing_lmdb_named_after_a_dataset_is_said_to_be_substituted():
    note = substitution_note("examples/mnist/mnist_train_lmdb", "train", None)
    assert note is not None and "examples/mnist/mnist_train_lmdb" in note and "mnist" in note
    assert substitution_note("mnist", "train", None) is None  # asked for by name
    assert substitution_note("npz:x.npz", "train", None) is None


def test_resuming_a_finished_run_prints_no_clear_hint_and_no_zero_speed(tiny):
    out = tiny.root / "run"
    assert train(str(tiny.darknet), "--data", f"npz:{tiny.data}", "--out", str(out)).exit_code == 0
    result = train("--resume", str(out))
    assert result.exit_code == 0, result.output
    assert "nothing to train: 8 updates already done" in result.stderr
    assert "--clear" not in result.stderr and "0 img/s" not in result.stderr
    assert "preparing kernels" not in result.stderr


def _dashboard_text(width: int, events) -> str:
    console = Console(
        file=io.StringIO(), force_terminal=True, width=width, record=True, no_color=True
    )
    dashboard = Dashboard(console)
    for event in events:
        dashboard.handle(event)
    dashboard.close()
    return console.export_text()


def _long_tests(max_iter: int):
    for event in display_events(max_iter):
        if event.kind == "eval_finished":  # a long description beside the sparkline
            event = EvalFinished(event.iteration, 0.5, 0.75, 10000, 1000)
        yield event


@pytest.mark.parametrize("width", [100, 120])
def test_the_sparkline_keeps_its_newest_points(width):
    text = _dashboard_text(width, _long_tests(80))
    line = [row for row in text.splitlines() if row.startswith("loss trend")][-1]
    assert "…" not in line
    shown = min(60, width - 49)
    assert f"last {shown} updates" in line
    assert line.split()[2].endswith("▁")  # the newest (lowest) loss is drawn


def test_final_lines_come_below_the_dashboard():
    text = _dashboard_text(120, display_events(10))
    assert text.rindex("checkpoint (final) after 10 updates") > text.rindex("per-layer norms")
    assert text.strip().splitlines()[-1].startswith("done after 10 updates")


def test_summary_line_without_a_speed_leaves_it_out():
    finished = RunFinished("done", 8, {"final_loss": 0.5, "images_per_s": None})
    assert "img/s" not in summary_line(finished)
