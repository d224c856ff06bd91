"""``scripts/torch_whole_run.py`` (the PyTorch re-creation of a whole run, issue 16): its
command line, and that its plan is ``dnupdate train``'s run — the same update counts with a
test, the same rates, the same batches. PyTorch is not a dependency: the tests that train in
PyTorch are skipped where it is missing (CI), and the script's own refusal is tested there."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from dnupdate.engine.config import load_config, parse_overrides
from dnupdate.engine.training.session import TrainingSession, TrainOptions
from tests.data_fixtures import random_images, write_mnist_split

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "torch_whole_run.py"
LENET = str(ROOT / "configs" / "lenet_solver.prototxt")
SMALL = ["--set", "test_iter=2", "--set", "test_interval=3", "--set", "display=0"]


def _load_script():
    spec = importlib.util.spec_from_file_location("torch_whole_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


script = _load_script()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    """Small MNIST files (200 training, 120 test images) standing in for the real set."""
    folder = tmp_path_factory.mktemp("data")
    write_mnist_split(folder / "mnist", "train", 200, seed=0)
    write_mnist_split(folder / "mnist", "t10k", 120, seed=1)
    return str(folder)


def _session(data_dir: str, argv: list[str]) -> list:
    """The events of ``dnupdate train`` with the script's arguments ``argv`` (no folder)."""
    options = script.parse_args([LENET, "--data-dir", data_dir, *argv])
    run = load_config(LENET, parse_overrides(options.overrides))
    train = TrainOptions(
        data_dir=data_dir, max_iters=options.max_iters, eval_every=options.eval_every, threads=1
    )
    return list(TrainingSession(run, train).events())


@pytest.mark.parametrize(
    ("argv", "tests_at"),
    [
        (["--max-iters", "7"], [0, 3, 6, 7]),
        (["--max-iters", "6"], [0, 3, 6]),
        (["--max-iters", "7", "--set", "test_initialization=false"], [3, 6, 7]),
        (["--max-iters", "4", "--eval-every", "2"], [0, 2, 4]),
        (["--max-iters", "4", "--eval-every", "0"], []),
    ],
)
def test_the_plan_tests_where_train_tests_with_its_rates(data_dir, argv, tests_at):
    plan = script.make_plan(script.parse_args([LENET, "--data-dir", data_dir, *SMALL, *argv]))
    events = _session(data_dir, [*SMALL, *argv])
    tested = [e.iteration for e in events if e.kind == "eval_finished"]
    assert plan.tests_at == tested == tests_at
    rates = [e.lr for e in events if e.kind == "step_finished"]
    assert plan.rates.tolist() == rates  # the same float32 rates, update by update
    assert len(rates) == plan.max_iter and plan.rule == "caffe"


def test_the_plan_reads_the_batches_train_reads(data_dir):
    """Caffe reads in order: the plan's first batches are the first training images, scaled
    by the data layer's 1/256, and the 200-image set wraps inside the fourth batch."""
    plan = script.make_plan(script.parse_args([LENET, "--data-dir", data_dir, *SMALL]))
    images, labels = random_images(200, (28, 28), seed=0), np.arange(200) % 10
    order = np.arange(4 * 64) % 200
    for k in range(4):
        x, y = plan.next_batch()
        rows = order[64 * k : 64 * (k + 1)]
        assert np.array_equal(y, labels[rows])
        expected = images[rows].astype(np.float32)[:, None] * np.float32(0.00390625)
        assert np.array_equal(x, expected)


def test_test_points_follow_caffe_and_the_final_test():
    points = script.test_points
    assert points(2000, 500, test_initialization=True, final=True) == [0, 500, 1000, 1500, 2000]
    assert points(1700, 500, test_initialization=False, final=True) == [500, 1000, 1500, 1700]
    assert points(10, 0, test_initialization=True, final=True) == [10]
    assert points(10, 0, test_initialization=True, final=False) == []


def test_rates_follow_each_convention():
    caffe = load_config(LENET)
    rates = script.update_rates(caffe.schedule, 3)
    # Caffe's inv: base_lr·(1 + γ·it)^(−power) with it = k − 1 for the k-th update
    assert rates[0] == np.float32(0.01)
    assert rates[2] == pytest.approx(0.01 * (1 + 0.0001 * 2) ** -0.75, rel=1e-6)
    darknet = load_config(str(ROOT / "configs" / "mnist_lenet.cfg"))
    first = script.update_rates(darknet.schedule, 2)
    assert len(first) == 2 and first.dtype == np.float32


def test_rule_caffe_is_for_caffe_sgd_only():
    caffe = load_config(LENET)
    assert script.pick_rule(caffe, None) == "caffe"
    assert script.pick_rule(caffe, "torch") == "torch"
    adam = load_config(LENET, parse_overrides(["type=Adam"]))
    assert script.pick_rule(adam, None) == "torch"
    with pytest.raises(ValueError, match="Caffe's SGD only"):
        script.pick_rule(adam, "caffe")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-iters", "0"], "--max-iters must be positive"),
        (["--threads", "-1"], "--threads must be positive"),
        (["--eval-every", "-2"], "--eval-every must be 0 or more"),
        (["--rule", "adam"], "invalid choice"),
    ],
)
def test_bad_arguments_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args([LENET, *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def _has_torch() -> bool:
    return importlib.util.find_spec("torch") is not None


@pytest.mark.skipif(_has_torch(), reason="checks the message given where torch is missing")
def test_without_torch_it_exits_1_saying_so():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), LENET, "--max-iters", "1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 1 and "needs PyTorch" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_a_bad_config_key_exits_1_naming_it(data_dir, capsys, monkeypatch):
    fake_torch = types.SimpleNamespace(manual_seed=lambda seed: None)
    monkeypatch.setattr(script, "import_torch", lambda: fake_torch)
    assert script.main([LENET, "--data-dir", data_dir, "--set", "no_such_key=1"]) == 1
    assert "no_such_key" in capsys.readouterr().err


def test_a_run_in_pytorch_follows_ours(data_dir, capsys):
    """The whole run in PyTorch (skipped without torch): from our initial weights, with
    Caffe's rule and the same batches and rates, the final test is ours to float32 rounding
    drift over 6 updates; the JSON gives every figure."""
    pytest.importorskip("torch")
    argv = [*SMALL, "--max-iters", "6", "--set", "test_interval=3"]
    assert script.main([LENET, "--data-dir", data_dir, "--threads", "1", *argv]) == 0
    figures = __import__("json").loads(capsys.readouterr().out)
    assert figures["tested_at"] == [0, 3, 6] and figures["tests"] == 3
    assert figures["test_images"] == 3 * 200 and figures["rule"] == "caffe-sgd"
    assert figures["train_images_per_s"] > 0 and figures["test_images_per_s"] > 0
    ours = [e for e in _session(data_dir, argv) if e.kind == "eval_finished"][-1]
    assert figures["test_loss"] == pytest.approx(ours.loss, rel=1e-3)
    assert figures["test_accuracy"] == pytest.approx(ours.accuracy, abs=0.011)


def test_figures_time_tests_as_whole_runs_does(data_dir):
    """Training images/s over the loop without its tests; test images/s without the test at
    0 (its time includes the first forward's warm-up, as the first metrics row ours)."""
    plan = script.make_plan(script.parse_args([LENET, "--data-dir", data_dir, *SMALL]))
    result = script.TestResult
    tests = [result(2.3, 0.1, 200, 5.0, 0), result(0.5, 0.9, 200, 1.0, 3),
             result(0.4, 0.92, 200, 1.0, 6)]  # fmt: skip
    figures = script.figures(plan, tests, 17.0, 0.1, 0.3, "x")
    assert figures["test_s"] == 7.0 and figures["train_s"] == 10.0
    assert figures["train_images_per_s"] == plan.max_iter * 64 / 10.0
    assert figures["test_images_per_s"] == 400 / 2.0 and figures["test_images"] == 600
    assert figures["test_accuracy"] == 0.92 and figures["test_loss"] == 0.4
    alone = script.figures(plan, tests[:1], 17.0, 0.1, 0.3, "x")
    assert alone["test_images_per_s"] == 200 / 5.0
