"""``dnupdate train`` on damaged data, weights and run folders (issue 18, items 7-10, 15, 16):
exit 1 with a message naming what is damaged, never a traceback, nothing written lost."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from engine.config import load_config
from engine.formats.weights import write_darknet_weights
from engine.training.step import Trainer
from tests.test_train_loop import Tiny, caffe_config, darknet_config, write_quadrants

runner = CliRunner()


@pytest.fixture
def tiny(tmp_path, monkeypatch) -> Tiny:
    monkeypatch.chdir(tmp_path)
    data = write_quadrants(tmp_path / "quadrants.npz")
    return Tiny(tmp_path, data, darknet_config(tmp_path), caffe_config(tmp_path, data))


def train(*args: str):
    return runner.invoke(app, ["train", *args], env={"NO_COLOR": "1"})


def assert_bad_input(result, *needles: str) -> None:
    """Exit 1, no traceback, and every needle in stderr."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


# ---- data (items 7, 8) ------------------------------------------------------------------------


def test_a_label_past_the_nets_outputs_is_refused_before_training(tiny):
    labels = np.arange(96) % 4
    labels[37] = 4  # the tiny net has 4 outputs
    images = np.zeros((96, 1, 6, 6), np.uint8)
    np.savez(tiny.root / "five.npz", x=images, y=labels, classes=np.array(5))
    out = tiny.root / "run"
    result = train(str(tiny.darknet), "--data", f"npz:{tiny.root / 'five.npz'}", "--out", str(out))
    assert_bad_input(result, "five.npz", "item 37 has label 4", "has 4 outputs")
    assert not out.exists()


@pytest.mark.parametrize("quiet", [[], ["--quiet"]])
def test_nan_pixels_are_bad_input_not_divergence(tiny, quiet):
    x = np.full((96, 1, 6, 6), 0.5, np.float32)
    x[10, 0, 1, 2] = np.nan
    np.savez(tiny.root / "nan.npz", x=x, y=np.arange(96) % 4)
    result = train(str(tiny.darknet), "--data", f"npz:{tiny.root / 'nan.npz'}", *quiet)
    assert_bad_input(result, "nan.npz", "item 10 pixel (0, 1, 2) is nan")


# ---- --weights (item 9) ---------------------------------------------------------------------


def test_an_npy_renamed_npz_is_bad_input(tiny):
    np.save(tiny.root / "w.npy", np.zeros(3, np.float32))
    (tiny.root / "w.npy").rename(tiny.root / "w.npz")
    result = train(str(tiny.darknet), "--data", f"npz:{tiny.data}", "--weights", "w.npz")
    assert_bad_input(result, "w.npz", "not an .npz archive")


def _nan_weights(tiny: Tiny, seen: int) -> str:
    run = load_config(str(tiny.darknet))
    arrays = dict(Trainer(run).network.named_blobs())
    arrays["3/1"] = arrays["3/1"].copy()
    arrays["3/1"][2, 5] = np.nan
    path = tiny.root / "nan.weights"
    write_darknet_weights(path, run.net, arrays, seen)
    return str(path)


def test_nan_weights_are_refused_even_when_seen_is_past_the_end(tiny):
    weights = _nan_weights(tiny, seen=10_000)  # past max_batches: the run would end at once
    out = tiny.root / "run"
    args = [str(tiny.darknet), "--data", f"npz:{tiny.data}", "--out", str(out), "-q"]
    result = train(*args, "--weights", weights)
    assert_bad_input(result, "nan.weights", "blob 3/1 holds nan at index [2, 5]")
    assert not out.exists()


def test_allow_nonfinite_loads_them_with_a_loud_warning(tiny):
    weights = _nan_weights(tiny, seen=0)
    args = [str(tiny.darknet), "--data", f"npz:{tiny.data}", "--max-iters", "1", "--json"]
    result = train(*args, "--weights", weights, "--allow-nonfinite", "-q")
    assert result.exit_code == 3, result.output  # NaN weights: the first update diverges
    assert "WARNING" in result.stdout and "non-finite weights loaded" in result.stdout
