"""Resume with a loss scaler, end to end through ``dnupdate train``: a fp16 run stopped by
``--max-iters`` and resumed from its folder ends exactly where one uninterrupted run does:
final weights, the ``loss_scale``/``overflow`` columns (every metrics number but the clock) and
the scaler state (scale, growth tracker, skipped updates) in ``state.npz``, bit for bit.
Two scalers: GradScaler's dynamic one (growth interval 2, so the scale halves and doubles
around the stop) and AlexeyAB darknet's static ``loss_scale`` (no scaler state moves, but the
momentum buffer it carries holds scaled values)."""

from __future__ import annotations

import csv
from itertools import pairwise

import numpy as np
import pytest
from typer.testing import CliRunner

from dnupdate.cli.main import app
from dnupdate.engine.training.runfolder import load_state
from tests.test_train_loop import darknet_config, write_quadrants

runner = CliRunner()

#: the scaler options of each case; the tiny darknet net trains with darknet's SGD rule, so a
#: static scale there is AlexeyAB's ``loss_scale`` arithmetic
SCALERS = {
    "dynamic": ["--loss-scale", "dynamic", "--scale-growth-interval", "2"],
    "alexeyab": ["--loss-scale", "128"],
}

#: the metrics columns that measure wall-clock time, different in every run
CLOCK = {"time_s"}


def train(*args: str):
    return runner.invoke(app, ["train", *args, "-q"], env={"NO_COLOR": "1"})


def train_rows(folder) -> list[dict[str, str]]:
    with open(folder / "metrics.csv", encoding="utf-8", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["kind"] == "train"]
    return [{k: v for k, v in row.items() if k not in CLOCK} for row in rows]


def saved_state(folder) -> dict:
    """``state.npz``: the trainer's arrays and the scaler's numbers, by their trainer keys."""
    state = load_state(folder / "state.npz")
    return {k.removeprefix("trainer."): v for k, v in state.items() if k.startswith("trainer.")}


def scaler_state(folder) -> dict[str, float | int]:
    return {k: v for k, v in saved_state(folder).items() if k.startswith("scaler/")}


@pytest.mark.parametrize("scaler", sorted(SCALERS))
def test_a_stopped_and_resumed_fp16_run_equals_a_straight_one(tmp_path, monkeypatch, scaler):
    monkeypatch.chdir(tmp_path)
    data = write_quadrants(tmp_path / "quadrants.npz")
    config = darknet_config(tmp_path, max_batches=12)
    args = [str(config), "--data", f"npz:{data}", "--precision", "fp16", *SCALERS[scaler]]
    straight, split = tmp_path / "straight", tmp_path / "split"
    result = train(*args, "--out", str(straight))
    assert result.exit_code == 0, result.output
    result = train(*args, "--max-iters", "4", "--out", str(split))
    assert result.exit_code == 0, result.output
    stopped_at = scaler_state(split)
    result = train("--resume", str(split))
    assert result.exit_code == 0, result.output

    assert (straight / "final.npz").read_bytes() == (split / "final.npz").read_bytes()
    rows = train_rows(straight)
    assert [r["iteration"] for r in rows] == [str(i) for i in range(1, 13)]
    assert train_rows(split) == rows  # loss_scale, overflow, norms, underflow: all of it
    assert scaler_state(split) == scaler_state(straight)
    assert set(scaler_state(straight)) == {"scaler/scale", "scaler/tracker", "scaler/skipped"}
    a, b = saved_state(straight), saved_state(split)
    for key in ("params", "grads"):  # grads: darknet's momentum, scaled under AlexeyAB
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)

    scales = [float(r["loss_scale"]) for r in rows]
    if scaler == "dynamic":  # the state at the stop was a live one: the scale moved both ways
        assert any(b < a for a, b in pairwise(scales))
        assert any(b > a for a, b in pairwise(scales))
        # stopped between a clean update and the next growth: the tracker matters
        assert stopped_at["scaler/tracker"] == 1
        assert stopped_at["scaler/scale"] == scales[4]
    else:
        assert set(scales) == {128.0}
        assert stopped_at["scaler/scale"] == 128.0
