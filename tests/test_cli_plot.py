"""``dnupdate plot RUN_DIR``: terminal panels, SVG files, a run still being written, errors.
Metrics files are written by hand here (not by the trainer)."""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner

from cli.main import app
from cli.plot_cmd import panels_from_rows

runner = CliRunner()


def rows(updates: int = 20) -> list[dict]:
    out = []
    for iteration in range(1, updates + 1):
        out.append(
            {
                "kind": "train",
                "iteration": iteration,
                "lr": 0.1 if iteration <= 10 else 0.01,
                "loss": 2.0 / iteration,
                "avg_loss_ema": 2.5 / iteration,
            }
        )
        if iteration % 5 == 0:
            out.append(
                {"kind": "test", "iteration": iteration, "test_loss": 1.0 / iteration,
                 "test_accuracy": iteration / updates}
            )  # fmt: skip
    return out


def write_run(folder, data: list[dict], partial: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row) + "\n" for row in data) + partial
    (folder / "metrics.jsonl").write_text(text)


def test_panels_hold_raw_and_smoothed_loss_lr_and_accuracy():
    loss, lr, accuracy = panels_from_rows(rows())
    labels = [label for label, _, _ in loss.curves]
    assert labels == ["loss (raw)", "avg_loss_ema", "test loss"]
    assert loss.curves[0][1] == [float(i) for i in range(1, 21)]
    assert lr.curves[0][2][9:11] == [0.1, 0.01]
    assert accuracy.curves[0][1] == [5.0, 10.0, 15.0, 20.0]
    assert accuracy.curves[0][2] == [0.25, 0.5, 0.75, 1.0]


def test_terminal_plot_of_a_run_in_progress(tmp_path):
    write_run(tmp_path / "run", rows(), partial='{"kind": "train", "itera')
    result = runner.invoke(app, ["plot", str(tmp_path / "run")], env={"NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "20 updates" in out
    for title in ("loss", "learning rate", "test accuracy"):
        assert re.search(rf"^{title}$", out, re.MULTILINE), title
    assert "avg_loss_ema" in out


def test_svg_file_has_one_polyline_per_curve(tmp_path):
    write_run(tmp_path / "run", rows())
    target = tmp_path / "curves.svg"
    result = runner.invoke(app, ["plot", str(tmp_path / "run"), "--output", str(target)])
    assert result.exit_code == 0, result.output
    svg = target.read_text()
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert svg.count("<polyline") == 5  # raw, smoothed, test loss; lr; accuracy
    first = re.search(r'points="([^"]+)"', svg).group(1).split()
    assert len(first) == 20


def test_a_run_without_tests_yet_still_plots(tmp_path):
    write_run(tmp_path / "run", [r for r in rows(3) if r["kind"] == "train"])
    result = runner.invoke(app, ["plot", str(tmp_path / "run")], env={"NO_COLOR": "1"})
    assert result.exit_code == 0
    assert "test accuracy: no values yet" in result.stdout


def test_missing_run_and_bad_output_type(tmp_path):
    result = runner.invoke(app, ["plot", str(tmp_path / "none")])
    assert result.exit_code == 1 and "metrics" in result.stderr
    write_run(tmp_path / "run", rows(2))
    result = runner.invoke(app, ["plot", str(tmp_path / "run"), "-o", str(tmp_path / "x.gif")])
    assert result.exit_code == 2


def test_png_needs_matplotlib(tmp_path):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        write_run(tmp_path / "run", rows(2))
        result = runner.invoke(app, ["plot", str(tmp_path / "run"), "-o", str(tmp_path / "a.png")])
        assert result.exit_code == 1 and "matplotlib" in result.stderr
    else:
        write_run(tmp_path / "run", rows(2))
        result = runner.invoke(app, ["plot", str(tmp_path / "run"), "-o", str(tmp_path / "a.png")])
        assert result.exit_code == 0 and (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
