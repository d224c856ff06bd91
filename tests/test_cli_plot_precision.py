"""``dnupdate plot`` of a run with simulated mixed precision: a loss-scale panel (log scale)
with a marker at each skipped update; none for a float32 run."""

from __future__ import annotations

import csv
import json

from typer.testing import CliRunner

from dnupdate.cli.main import app
from dnupdate.cli.plot_cmd import Run, panels_from_runs
from tests.test_cli_plot import rows, write_run

runner = CliRunner()
SCALE_TITLE = "loss scale S per update (marked: skipped updates, non-finite gradient)"


def scaled_rows() -> list[dict]:
    """``rows()`` with a dynamic scale that overflows at updates 3 and 4, then grows at 14."""
    out, scale = [], 65536.0
    for row in rows():
        row = dict(row)
        if row["kind"] == "train":
            overflow = row["iteration"] in (3, 4)
            row["loss_scale"], row["overflow"] = scale, int(overflow)
            scale = scale / 2 if overflow else scale * (2 if row["iteration"] == 13 else 1)
        out.append(row)
    return out


def test_scale_panel_only_when_the_run_has_a_loss_scale():
    assert all("loss scale" not in p.title for p in panels_from_runs([Run("run", rows())]))
    panel = panels_from_runs([Run("run", scaled_rows())])[-1]
    assert panel.title == SCALE_TITLE and panel.log_y
    (curve,) = panel.curves
    assert curve.y[:5].tolist() == [65536.0, 65536.0, 65536.0, 32768.0, 16384.0]
    assert curve.y[-1] == 32768.0
    assert [(m.x, m.label) for m in curve.markers] == [(3.0, "skipped"), (4.0, "skipped")]


def test_terminal_plot_names_the_skipped_updates(tmp_path):
    write_run(tmp_path / "run", scaled_rows())
    result = runner.invoke(app, ["plot", str(tmp_path / "run")], env={"NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    assert SCALE_TITLE in result.stdout
    assert "skipped @ 3, skipped @ 4" in result.stdout


def test_svg_of_a_trained_fp16_run_has_the_scale_panel_and_a_line_per_skip(tmp_path):
    out = tmp_path / "run"
    trained = runner.invoke(
        app,
        [
            "train", "quickstart", "--precision", "fp16", "--loss-scale", "dynamic",
            "--max-iters", "8", "--eval-every", "0", "--out", str(out), "--quiet",
        ],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    with open(out / "metrics.csv", encoding="utf-8") as handle:
        skipped = [r for r in csv.DictReader(handle) if r.get("overflow") == "1"]
    assert skipped
    target = tmp_path / "curves.svg"
    result = runner.invoke(app, ["plot", str(out), "--output", str(target)])
    assert result.exit_code == 0, result.output
    svg = target.read_text()
    assert SCALE_TITLE in svg
    panel = svg[svg.index("loss scale S per update") :]
    assert panel.count('stroke-dasharray="4 3"') == len(skipped)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["precision"]["skipped_updates"] == len(skipped)
