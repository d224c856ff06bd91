"""The train display with synthetic events: the Rich dashboard's content, the plain-line
fallback's cadence, the sparkline, and the JSON Lines sink."""

from __future__ import annotations

import io
import json

from rich.console import Console

from dnupdate.cli.dashboard import (
    Dashboard,
    EndingLines,
    PlainLines,
    diverged_line,
    make_display,
    sparkline,
)
from dnupdate.cli.sinks import JsonLinesSink
from dnupdate.engine.training.events import (
    CheckpointSaved,
    Diverged,
    EvalFinished,
    LayerNorms,
    NormsReported,
    RunFinished,
    RunStarted,
    Status,
    StepFinished,
)


def started(max_iter: int = 10, display_every: int = 3) -> RunStarted:
    return RunStarted(
        config_path="tiny.cfg",
        format="darknet",
        semantics="darknet",
        net="tiny",
        optimizer="sgd",
        start_iteration=0,
        max_iter=max_iter,
        images_per_update=8,
        minibatch=4,
        accumulate=2,
        train_images=96,
        test_images=96,
        dataset="npz quadrants",
        seed=0,
        device="cpu",
        out_dir="runs/tiny",
        resumed=False,
        smoothed_loss_name="avg_loss_ema",
        smoothed_loss_definition="darknet avg = .9*avg + .1*loss",
        display_every=display_every,
        eval_every=5,
        checkpoint_every=0,
    )


def events(max_iter: int = 10):
    yield started(max_iter)
    yield Status("preparing kernels", busy=True)
    for iteration in range(1, max_iter + 1):
        if iteration == 1:
            yield Status("training", busy=False)
        loss = 2.0 / iteration
        yield StepFinished(iteration, 8 * iteration, iteration / 12, 0.1, loss, loss, 0.1, 80.0)
        yield NormsReported(
            iteration,
            (
                LayerNorms("conv1", 1.5, 0.015, 0.01, 0.0625),
                LayerNorms("ip1", 3.0, 0.3, 0.1, 12.25),
            ),
        )
        if iteration % 5 == 0:
            yield EvalFinished(iteration, 0.5, 0.75, 96)
    yield CheckpointSaved(max_iter, "final", ("runs/tiny/final.npz",))
    yield RunFinished(
        "done",
        max_iter,
        {"final_loss": 0.2, "test_accuracy": 0.75, "images_per_s": 80.0, "wall_time_s": 1.0},
    )


def test_sparkline_spans_the_block_range_and_marks_non_finite_values():
    line = sparkline([0.0, 1.0, 2.0, float("nan"), 4.0])
    assert line[0] == "▁" and line[-1] == "█" and line[3] == "!"
    assert len(sparkline(range(100), length=60)) == 60


def test_dashboard_shows_progress_losses_lr_accuracy_and_the_layer_table():
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=140, record=True, no_color=True)
    dashboard = Dashboard(console)
    for event in events():
        dashboard.handle(event)
    dashboard.close()
    text = console.export_text()
    assert "10/10" in text and "epoch 0.833" in text
    assert "avg_loss_ema" in text and "darknet avg = .9*avg + .1*loss" in text
    assert "raw loss of the last update" in text and "lr" in text
    assert "test accuracy" in text and "0.75" in text
    assert "per-layer norms, iteration 10" in text
    assert "conv1" in text and "ip1" in text and "1.00e-01" in text
    assert "‖g‖ (gradient)" in text and "0.0625" in text and "12.25" in text
    assert "checkpoint (final) after 10 updates" in text


def test_plain_lines_follow_the_display_interval():
    stream = io.StringIO()
    plain = PlainLines(stream)
    for event in events():
        plain.handle(event)
    lines = stream.getvalue().splitlines()
    iters = [line.split()[1] for line in lines if line.startswith("iter ")]
    assert iters == ["1", "3", "6", "9", "10"]
    assert "iter 10 (update 10/10)" in stream.getvalue()
    assert sum(line.startswith("test after") for line in lines) == 2
    assert lines[-1].startswith("done after 10 updates")
    assert "\x1b" not in stream.getvalue()


def test_make_display_picks_by_terminal_and_quiet():
    tty = Console(file=io.StringIO(), force_terminal=True)
    pipe = Console(file=io.StringIO(), force_terminal=False)
    assert isinstance(make_display(tty, quiet=False), Dashboard)
    assert isinstance(make_display(pipe, quiet=False), PlainLines)
    assert isinstance(make_display(tty, quiet=True), EndingLines)


def test_json_lines_sink_writes_strict_json_per_event():
    stream = io.StringIO()
    sink = JsonLinesSink(stream)
    sink.handle(StepFinished(1, 8, 0.1, 0.1, float("nan"), float("inf"), 0.1, 1.0))
    sink.handle(started())
    lines = stream.getvalue().splitlines()
    first = json.loads(lines[0])
    assert first["event"] == "step_finished" and first["loss"] == "nan"
    assert first["smoothed_loss"] == "inf"
    assert json.loads(lines[1])["event"] == "run_started"


def test_diverged_line_names_the_layer_once():
    loss = Diverged(18, "5", "non-finite loss (inf) in layer 5 (softmax) at iteration 18", None)
    line = diverged_line(loss)
    assert line.count("layer 5") == 1
    assert line.endswith("last good checkpoint: none written yet")
    param = Diverged(7, "conv1", "non-finite value in conv1/0 at iteration 7", "runs/x/a.npz")
    line = diverged_line(param)
    assert "(layer conv1)" in line and line.endswith("runs/x/a.npz")
