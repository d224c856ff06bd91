"""Batch-size learning-rate scaling (``--lr-scaling``, ``--lr-warmup``): ``lr-schedule`` with
``--set batch=4·B0`` doubles every rate under ``sqrt`` and quadruples it under ``linear``;
Caffe's B is ``batch_size``·``iter_size``; Goyal's warm-up ramps from the unscaled rate;
``inspect`` shows B0, the factor and the resulting rate; training uses the same rates and a
resumed run keeps them."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dnupdate.cli.main import app
from dnupdate.engine.config import load_config
from dnupdate.engine.spec import ConfigError
from dnupdate.engine.update.schedule import first_iteration, lr_series

ROOT = Path(__file__).resolve().parent.parent
MNIST = str(ROOT / "configs/mnist_lenet.cfg")  # batch=64, steps policy
LENET = str(ROOT / "configs/lenet_solver.prototxt")  # batch_size 64, iter_size 1, inv policy
runner = CliRunner()


def _rates(*args: str) -> np.ndarray:
    result = runner.invoke(app, ["lr-schedule", *args, "--format", "csv", "-n", "9000"])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    return np.array([float(r[1]) for r in rows[1:]], dtype=np.float32)


@pytest.mark.parametrize(("rule", "factor"), [("sqrt", 2), ("linear", 4), ("none", 1)])
def test_lr_schedule_batch_four_times_scales_every_rate(rule, factor):
    base = _rates(MNIST)
    scaled = _rates(MNIST, "--set", "batch=256", "--lr-scaling", rule)
    assert base.size == scaled.size == 9000
    assert len(set(base.tolist())) == 3  # the steps policy's three rates, all scaled
    np.testing.assert_array_equal(scaled, base * np.float32(factor))


def test_caffe_batch_is_batch_size_times_iter_size():
    base = _rates(LENET)
    np.testing.assert_array_equal(
        _rates(LENET, "--set", "iter_size=4", "--lr-scaling", "sqrt"), base * np.float32(2)
    )
    run = load_config(LENET, [("iter_size", "4"), ("lr_scaling", "linear")])
    s = run.schedule
    assert (s.reference_batch, s.scaled_batch, s.lr_factor) == (64, 256, 4.0)


def test_unchanged_batch_leaves_the_rates_bit_for_bit():
    base = _rates(MNIST)
    np.testing.assert_array_equal(_rates(MNIST, "--lr-scaling", "linear"), base)


def test_goyal_warmup_ramps_from_the_unscaled_rate():
    run = load_config(MNIST, [("batch", "256"), ("lr_scaling", "linear"), ("lr_warmup", "4")])
    first = first_iteration(run.schedule)
    rates = lr_series(run.schedule, first, first + 5)
    lr = float(np.float32(0.01))
    want = [lr * f for f in (1.75, 2.5, 3.25, 4.0, 4.0, 4.0)]
    np.testing.assert_array_equal(rates, np.array(want, dtype=np.float32))


def test_warmup_without_a_factor_warns():
    run = load_config(MNIST, [("lr_warmup", "10")])
    assert any(d.key == "lr_warmup" and "changes nothing" in d.message for d in run.diagnostics)


@pytest.mark.parametrize(("args", "needle"), [
    (["--lr-scaling", "cubic"], "--lr-scaling"),
    (["--lr-warmup", "-1"], "--lr-warmup"),
])  # fmt: skip
def test_bad_scaling_options_exit_cleanly(args, needle):
    result = runner.invoke(app, ["lr-schedule", MNIST, *args])
    assert result.exit_code in (1, 2)
    assert needle in result.output and "Traceback" not in result.output


def test_scaling_needs_a_config():
    result = runner.invoke(app, ["lr-schedule", "--set", "policy=constant", "--lr-scaling", "sqrt"])
    assert result.exit_code == 2 and "need a CONFIG" in result.output


def test_scaling_pseudo_keys_are_checked_in_the_engine():
    with pytest.raises(ConfigError, match="expected one of none, linear, sqrt"):
        load_config(MNIST, [("lr_scaling", "cubic")])


def test_inspect_prints_reference_batch_factor_and_rate():
    args = ["inspect", MNIST, "--set", "batch=128", "--lr-scaling", "sqrt", "--format", "json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    settings = {row["field"]: row for row in document["settings"]}
    assert settings["schedule.reference_batch"]["value"] == "64"
    assert settings["schedule.scaled_batch"]["value"] == "128"
    assert settings["schedule.lr_factor"]["value"] == str(np.float32(2**0.5))
    assert settings["schedule.lr_factor"]["origin"] == "--lr-scaling"
    assert "B0 = 64, batch B = 128" in document["schedule_convention"]
    rate = np.float32(float(np.float32(0.01)) * 2**0.5)
    assert f"lr = {rate!s}" in document["update_rule"][0]
    text = runner.invoke(app, ["inspect", MNIST, "--set", "batch=128", "--lr-scaling", "sqrt"])
    assert "reference batch B0 = 64" in text.stdout.replace("\n", " ")


# ---- training uses the scaled rates; resume keeps them ---------------------------------------


def test_train_steps_use_the_scaled_rate_and_resume_keeps_it(tmp_path, monkeypatch):
    from tests.test_cli_train import json_events, train
    from tests.test_train_loop import darknet_config, write_quadrants

    monkeypatch.chdir(tmp_path)
    data = write_quadrants(tmp_path / "quadrants.npz")
    config = str(darknet_config(tmp_path, batch=8, subdivisions=2, lr=0.1, max_batches=4))
    common = ["--data", f"npz:{data}", "--set", "batch=32", "--lr-scaling", "linear"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    result = train(config, *common, "--out", str(straight), "--json", "-q")
    assert result.exit_code == 0, result.output
    steps = [e for e in json_events(result.stdout) if e["event"] == "step_finished"]
    unscaled = load_config(config, [("batch", "32")]).schedule
    first = first_iteration(unscaled)
    want = lr_series(unscaled, first, first + 3) * np.float32(4)  # × 32/8
    assert [e["lr"] for e in steps] == want.tolist()
    assert want[0] == np.float32(0.4)
    result = train(config, *common, "--max-iters", "2", "--out", str(split), "-q")
    assert result.exit_code == 0, result.output
    resolved = json.loads((split / "config.resolved.json").read_text())
    assert "lr_scaling=linear" in resolved["overrides"]
    result = train("--resume", str(split), "--lr-scaling", "sqrt")
    assert result.exit_code == 2 and "--lr-scaling" in result.output
    result = train("--resume", str(split), "-q")
    assert result.exit_code == 0, result.output
    assert (straight / "final.npz").read_bytes() == (split / "final.npz").read_bytes()
