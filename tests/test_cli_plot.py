"""``dnupdate plot RUN_DIR``: terminal panels, SVG files, a run still being written, errors.
Metrics files are written by hand here (not by the trainer)."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from dnupdate.cli.main import app
from dnupdate.cli.plot_cmd import Run, panels_from_runs, run_labels
from dnupdate.cli.plotting import nice_ticks, tick_label

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
    loss, lr, accuracy, *norms = panels_from_runs([Run("run", rows())])
    labels = [curve.label for curve in loss.curves]
    assert labels == ["loss (raw)", "avg_loss_ema", "test loss"]
    assert loss.curves[0].x.tolist() == [float(i) for i in range(1, 21)]
    assert lr.curves[0].y[9:11].tolist() == [0.1, 0.01]
    assert accuracy.curves[0].x.tolist() == [5.0, 10.0, 15.0, 20.0]
    assert accuracy.curves[0].y.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert [c.points for c in loss.curves] == [False, False, True]  # test values get dots
    assert accuracy.curves[0].points
    assert [panel.empty for panel in norms] == [True, True, True]  # no norm columns here


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


# ---- several runs, norm panels, --log, axes ----------------------------------------------------


def norm_rows(updates: int = 12, scale: float = 1.0) -> list[dict]:
    """Train rows with two layers' norm columns (as metrics.jsonl holds them)."""
    out = rows(updates)
    for row in out:
        if row["kind"] == "train":
            for layer, size in (("conv1", 1.0), ("ip1", 3.0)):
                step = row["iteration"]
                row[f"{layer}.w_norm"] = size + 0.01 * step
                row[f"{layer}.g_norm"] = scale * size / step
                row[f"{layer}.dw_norm"] = scale * 1e-3 * size / step
                row[f"{layer}.ratio"] = row[f"{layer}.dw_norm"] / row[f"{layer}.w_norm"]
    return out


def write_full_run(folder, data, overrides, seed=None) -> None:
    write_run(folder, data)
    info = {
        "config_path": "/x/configs/quickstart.cfg",
        "overrides": [list(pair) for pair in overrides],
        "options": {"seed": seed, "semantics": None, "data": None, "max_iters": 12},
    }
    (folder / "run.json").write_text(json.dumps(info))


def test_norm_panels_per_layer_with_a_log_ratio():
    panels = panels_from_runs([Run("run", norm_rows())])
    titles = [panel.title for panel in panels]
    assert titles[3:] == [
        "weight norm ‖w‖ per layer (before the update)",
        "gradient norm ‖g‖ per layer",
        "update ratio ‖Δw‖/‖w‖ per layer",
    ]
    w, g, ratio = panels[3:]
    assert [c.label for c in w.curves] == ["layer conv1", "layer ip1"]
    assert g.curves[1].y[0] == 3.0 and ratio.log_y and not w.log_y
    assert ratio.curves[0].y[1] == pytest.approx(5e-4 / 1.02)


def test_several_runs_are_labelled_by_name_and_differing_overrides(tmp_path):
    a, b = tmp_path / "lr-a", tmp_path / "lr-b"
    write_full_run(a, norm_rows(), [("learning_rate", "0.1"), ("batch", "8")], seed=1)
    write_full_run(b, norm_rows(10, 2.0), [("learning_rate", "0.02"), ("batch", "8")], seed=1)
    assert run_labels([a, b]) == ["lr-a (learning_rate=0.1)", "lr-b (learning_rate=0.02)"]
    target = tmp_path / "both.svg"
    result = runner.invoke(app, ["plot", str(a), str(b), "-o", str(target)])
    assert result.exit_code == 0, result.output
    svg = target.read_text()
    assert "lr-a (learning_rate=0.1): 12 updates" in svg
    assert "lr-b (learning_rate=0.02): 10 updates" in svg
    assert "lr-b (learning_rate=0.02): layer ip1" in svg
    assert "loss (raw)" not in svg  # several runs: smoothed and test loss only
    # loss: 2 smoothed + 2 test; lr 2; accuracy 2; three norm panels × 2 runs × 2 layers
    assert svg.count("<polyline") == 4 + 2 + 2 + 3 * 4
    terminal = runner.invoke(app, ["plot", str(a), str(b)], env={"NO_COLOR": "1"})
    assert terminal.exit_code == 0, terminal.output
    assert "lr-a (learning_rate=0.1): avg_loss_ema" in terminal.stdout
    assert "update ratio ‖Δw‖/‖w‖ per layer" in terminal.stdout


def test_svg_has_axes_ticks_labels_and_test_points(tmp_path):
    write_run(tmp_path / "run", norm_rows(20))
    target = tmp_path / "one.svg"
    result = runner.invoke(app, ["plot", str(tmp_path / "run"), "-o", str(target), "--log"])
    assert result.exit_code == 0, result.output
    svg = target.read_text()
    assert svg.count(">iteration</text>") == 6  # every panel has its x label
    assert "loss (log scale)</text>" in svg and "‖Δw‖/‖w‖ (log scale)</text>" in svg
    ticks = re.findall(r'font-size="11">([^<]+)</text>', svg)
    assert {"0", "5", "10", "15", "20"} <= set(ticks)  # round x ticks
    assert not [t for t in ticks if re.search(r"\.\d*000$", t)]  # no 38.375000-style labels
    assert svg.count("<circle") == 4 + 4  # the test loss and the test accuracy points


def test_log_loss_in_the_terminal(tmp_path):
    write_run(tmp_path / "run", norm_rows())
    result = runner.invoke(app, ["plot", str(tmp_path / "run"), "--log"], env={"NO_COLOR": "1"})
    assert result.exit_code == 0 and "log10 loss" in result.stdout


@pytest.mark.parametrize(
    ("low", "high", "ticks", "labels"),
    [
        (0.0, 38.375, [0, 10, 20, 30], ["0", "10", "20", "30"]),
        (1.0, 300.0, [100, 200, 300], ["100", "200", "300"]),
        (0.0, 0.001, [0, 0.0002, 0.0004, 0.0006, 0.0008, 0.001], None),
        (0.0, 1.0, [0, 0.2, 0.4, 0.6, 0.8, 1.0], ["0", "0.2", "0.4", "0.6", "0.8", "1.0"]),
        (0.0, 1.2, [0, 0.25, 0.5, 0.75, 1.0], ["0", "0.25", "0.50", "0.75", "1.00"]),
    ],
)
def test_nice_ticks_are_round(low, high, ticks, labels):
    values, step = nice_ticks(low, high)
    assert values == pytest.approx(ticks)
    if labels is not None:
        assert [tick_label(v, step) for v in values] == labels


def test_plain_svg_of_lr_schedule_has_axes_too(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # the built-in writer
    target = tmp_path / "lr.svg"
    result = runner.invoke(
        app,
        ["lr-schedule", "--set", "policy=steps", "--set", "learning_rate=0.1",
         "--set", "steps=100,200", "--set", "scales=.1,.1", "--set", "max_batches=300",
         "--output", str(target)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    svg = target.read_text()
    assert ">iteration</text>" in svg and ">lr</text>" in svg
    assert {"100", "200", "300"} <= set(re.findall(r'font-size="11">([^<]+)</text>', svg))


# ---- issue 15: plot SWEEP_DIR overlays the variants --------------------------------------


def sweep_folder(tmp_path):
    """A sweep folder as ``dnupdate sweep`` lays it out (sweep.json from the engine's own
    plan), two variants with metrics and one not started yet."""
    from dnupdate.engine.experiments.results import write_sweep_info
    from dnupdate.engine.experiments.sweep import plan_sweep
    from tests.test_train_loop import darknet_config

    config = darknet_config(tmp_path, max_batches=20)
    out = tmp_path / "sweep"
    plan = plan_sweep(str(config), ["learning_rate=0.05,0.1,0.2", "batch=4"], seeds=None,
                      sets=[], options={}, out=out)  # fmt: skip
    write_sweep_info(out, plan.info())
    for scale, name in ((1.0, "learning_rate=0.05,batch=4"), (0.5, "learning_rate=0.1,batch=4")):
        data = [{**row, "loss": row.get("loss", 0) * scale} for row in rows()]
        write_run(out / "runs" / name, data)
    return out


def test_plot_of_a_sweep_overlays_its_variants_labelled_by_grid_values(tmp_path):
    sweep = sweep_folder(tmp_path)
    result = runner.invoke(app, ["plot", str(sweep)], env={"NO_COLOR": "1", "COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    assert "learning_rate=0.05, batch=4" in result.stdout
    assert "learning_rate=0.1, batch=4" in result.stdout
    assert "learning_rate=0.2" not in result.stdout  # not started: not plotted, but said
    assert "1 variant(s) not started yet, not plotted" in result.stderr
    for title in ("loss", "learning rate", "test accuracy"):
        assert f"\n{title}\n" in result.stdout
    assert "per layer" not in result.stdout  # a sweep's plot leaves out the layer norms


def test_plot_of_a_sweep_to_svg_names_every_variant(tmp_path):
    sweep = sweep_folder(tmp_path)
    out = tmp_path / "sweep.svg"
    result = runner.invoke(app, ["plot", str(sweep), "--output", str(out)])
    assert result.exit_code == 0, result.output
    svg = out.read_text()
    assert "learning_rate=0.05, batch=4: top-1" in svg
    assert "learning_rate=0.1, batch=4: lr" in svg


def test_plot_of_a_sweep_with_no_started_variant_exits_1(tmp_path):
    sweep = sweep_folder(tmp_path)
    for run in (sweep / "runs").iterdir():
        (run / "metrics.jsonl").unlink()
    result = runner.invoke(app, ["plot", str(sweep)])
    assert result.exit_code == 1
    assert "no variant of this sweep has started yet" in result.output
