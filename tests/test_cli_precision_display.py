"""Simulated mixed precision in the train display: the dashboard's loss-scale rows and
per-layer underflow columns, the plain ``precision`` lines (per display interval and per
skipped update), and the summary line under ``--quiet`` — each number the one in
``metrics.csv``/``summary.json``."""

from __future__ import annotations

import csv
import io
import json

from rich.console import Console
from typer.testing import CliRunner

from dnupdate.cli.dashboard import Dashboard, EndingLines, PlainLines, precision_line, worst_layer
from dnupdate.cli.main import app
from dnupdate.engine.training.events import (
    LayerNorms,
    LayerPrecision,
    NormsReported,
    PrecisionReported,
    RunFinished,
    StepFinished,
)
from tests.test_cli_train_display import started

runner = CliRunner()

SUMMARY = {
    "final_loss": 0.2,
    "wall_time_s": 1.0,
    "precision": {"precision": "fp16", "skipped_updates": 2, "final_scale": 16384.0},
}


def precision(iteration: int, scale: float, skipped: bool, count: int) -> PrecisionReported:
    layers = (
        LayerPrecision("conv1", 0.125, 0.0, 0.5),
        LayerPrecision("pool", None, 0.375, None),
        LayerPrecision("ip1", 0.25, 0.0625, 0.75),
    )
    next_scale = scale / 2 if skipped else scale
    return PrecisionReported(iteration, "fp16", scale, skipped, skipped, count, next_scale, layers)


def events(max_iter: int = 10):
    """A fp16 run whose updates 2 and 4 overflow (scale 65536 → 32768 → 16384)."""
    yield started(max_iter)
    scale, count = 65536.0, 0
    for iteration in range(1, max_iter + 1):
        yield StepFinished(iteration, 8 * iteration, iteration / 12, 0.1, 1.0, 1.0, 0.1, 80.0)
        skipped = iteration in (2, 4)
        count += skipped
        event = precision(iteration, scale, skipped, count)
        scale = event.next_scale
        yield event
        yield NormsReported(
            iteration,
            (
                LayerNorms("conv1", 1.5, 0.015, 0.01, 0.0625),
                LayerNorms("ip1", 3.0, 0.3, 0.1, 12.25),
            ),
        )
    yield RunFinished("done", max_iter, SUMMARY)


def test_worst_layer_picks_the_largest_value_and_skips_missing_ones():
    event = precision(1, 1.0, False, 0)
    assert worst_layer(event, "grad_underflow") == ("ip1", 0.25)
    assert worst_layer(event, "delta_underflow") == ("pool", 0.375)
    assert worst_layer(event, "update_lost") == ("ip1", 0.75)
    assert (
        worst_layer(PrecisionReported(1, "fp16", 1.0, False, False, 0, 1.0), "update_lost") is None
    )


def test_dashboard_shows_scale_skips_worst_layers_and_a_column_per_layer():
    console = Console(file=io.StringIO(), force_terminal=True, width=160, record=True)
    dashboard = Dashboard(console)
    for event in events():
        dashboard.handle(event)
    dashboard.close()
    text = console.export_text()
    assert "loss scale" in text and "16384" in text and "2 skipped updates" in text
    assert "grad 0.25 (ip1)" in text and "delta 0.375 (pool)" in text
    assert "0.75 (ip1)" in text
    assert "g underflow" in text and "δ underflow" in text and "update lost" in text
    conv1 = next(line for line in text.splitlines() if line.startswith("conv1"))
    assert [c for c in conv1.split() if c != "│"][-3:] == ["0.125", "0", "0.5"]
    assert "fp16: 2 skipped updates, final loss scale 16384" in text


def test_plain_lines_print_precision_per_display_interval_and_every_skip():
    stream = io.StringIO()
    plain = PlainLines(stream)
    for event in events():
        plain.handle(event)
    lines = [line for line in stream.getvalue().splitlines() if line.startswith("precision")]
    iters = [int(line.split()[4].rstrip(":")) for line in lines]
    assert iters == [1, 2, 3, 4, 6, 9, 10]  # display every 3 (darknet: 1, 3, 6, 9, last) + skips
    assert lines[1] == precision_line(precision(2, 65536.0, True, 1))
    assert "loss scale 65536 (this update skipped: non-finite gradient), next 32768" in lines[1]
    assert "1 skipped updates" in lines[1]
    assert lines[-1].endswith(
        "2 skipped updates; worst grad underflow 0.25 (ip1), delta underflow 0.375 (pool), "
        "update lost 0.75 (ip1)"
    )
    assert "fp16: 2 skipped updates, final loss scale 16384" in stream.getvalue().splitlines()[-1]


def test_quiet_keeps_only_the_summary_with_skips_and_final_scale():
    stream = io.StringIO()
    quiet = EndingLines(stream)
    for event in events():
        quiet.handle(event)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and "fp16: 2 skipped updates, final loss scale 16384" in lines[0]


def run_fp16(tmp_path, *extra: str):
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "train", "quickstart", "--precision", "fp16", "--loss-scale", "dynamic",
            "--max-iters", "12", "--eval-every", "0", "--out", str(out), *extra,
        ],
        env={"NO_COLOR": "1"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    with open(out / "metrics.csv", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["kind"] == "train"]
    return result, summary, rows


def test_train_plain_lines_agree_with_metrics_and_summary(tmp_path):
    result, summary, rows = run_fp16(tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.startswith("precision fp16")]
    skipped = [r for r in rows if r["overflow"] == "1"]
    assert skipped, "65536 overflows fp16 on the quickstart net"
    by_iter = {line.split()[4].rstrip(":"): line for line in lines}
    for row in skipped:
        line = by_iter[row["iteration"]]
        scale = float(row["loss_scale"])
        assert f"loss scale {scale:.6g} (this update skipped" in line
    last = rows[-1]
    line = by_iter[last["iteration"]]
    grads = {
        k[: -len(".grad_underflow")]: float(v)
        for k, v in last.items()
        if k.endswith(".grad_underflow")
    }
    layer, value = max(grads.items(), key=lambda item: item[1])
    assert f"worst grad underflow {value:.4g} ({layer})" in line
    p = summary["precision"]
    assert (
        f"{p['skipped_updates']} skipped updates, final loss scale {p['final_scale']:.6g}"
        in (result.stderr.splitlines()[-1])
    )


def test_train_quiet_summary_line_names_skips_and_final_scale(tmp_path):
    result, summary, _ = run_fp16(tmp_path, "--quiet")
    p = summary["precision"]
    assert not any(line.startswith("precision") for line in result.stderr.splitlines())
    assert f"fp16: {p['skipped_updates']} skipped updates" in result.stderr
    assert f"final loss scale {p['final_scale']:.6g}" in result.stderr
