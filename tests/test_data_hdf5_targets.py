"""HDF5Data float targets (a ``label`` dataset of N×k or N×k×… floats, as Caffe's HDF5Data
passes any-shaped tops through): the reader, the sampler, ``inspect``'s label shape, and a
regression net (InnerProduct → EuclideanLoss against a vector label) trained and evaluated from
the CLI; class labels N / N×1 stay class indices. Every .h5 file is made here."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from dnupdate.cli.main import app
from dnupdate.engine.data import BatchSampler, DataError, open_dataset
from dnupdate.engine.data.hdf5 import read_h5
from dnupdate.engine.spec import DataSourceSpec

runner = CliRunner()

NET = """name: "regression"
layer { name: "data" type: "HDF5Data" top: "data" top: "label" include { phase: TRAIN }
  hdf5_data_param { source: "train.txt" batch_size: 5 shuffle: true } }
layer { name: "data" type: "HDF5Data" top: "data" top: "label" include { phase: TEST }
  hdf5_data_param { source: "test.txt" batch_size: 5 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: OUTPUTS weight_filler { type: "xavier" } } }
layer { name: "loss" type: "LOSS" bottom: "ip" bottom: "label" top: "loss" }
"""
SOLVER = """net: "net.prototxt"
base_lr: 0.05
lr_policy: "fixed"
momentum: 0.9
max_iter: 60
test_iter: 2
test_interval: 30
display: 20
random_seed: 1
"""


def write(path: Path, data: np.ndarray, label: np.ndarray) -> None:
    with h5py.File(path, "w") as handle:
        handle["data"] = data
        handle["label"] = label


def regression_root(root: Path, outputs: int = 3, loss: str = "EuclideanLoss") -> Path:
    """A linear regression y = x·W (6 inputs, 3 targets): 30 training and 10 test rows."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    y = x @ rng.normal(size=(6, 3)).astype(np.float32)
    write(root / "train.h5", x[:30], y[:30])
    write(root / "test.h5", x[30:], y[30:])
    (root / "train.txt").write_text("train.h5\n")
    (root / "test.txt").write_text("test.h5\n")
    net = NET.replace("OUTPUTS", str(outputs)).replace("LOSS", loss)
    (root / "net.prototxt").write_text(net)
    (root / "solver.prototxt").write_text(SOLVER)
    return root / "solver.prototxt"


@pytest.mark.parametrize(
    ("label", "shape", "dtype"),
    [
        (np.arange(12, dtype=np.float64).reshape(4, 3) / 7, (4, 3), np.float32),
        (np.ones((4, 2, 2), np.float32) * 0.5, (4, 2, 2), np.float32),
        (np.array([[0.0], [2.0], [1.0], [2.0]]), (4,), np.int64),  # N×1 class indices
        (np.array([[0.5], [2.0], [-1.0], [2.0]]), (4, 1), np.float32),  # N×1 targets
    ],
)
def test_label_datasets_are_class_indices_or_float_targets(tmp_path, label, shape, dtype):
    write(tmp_path / "a.h5", np.zeros((4, 3), np.float32), label)
    _, labels, classes, _, _ = read_h5(f"h5:{tmp_path / 'a.h5'}")
    assert labels.shape == shape and labels.dtype == dtype
    np.testing.assert_array_equal(labels, np.asarray(label).reshape(shape).astype(dtype))
    assert classes == (3 if dtype == np.int64 else 0)


def test_sampler_batches_carry_the_targets(tmp_path):
    label = np.arange(24, dtype=np.float32).reshape(8, 3) / 10
    write(tmp_path / "a.h5", np.zeros((8, 2), np.float32), label)
    dataset = open_dataset(f"h5:{tmp_path / 'a.h5'}", "train")
    assert dataset.has_targets and dataset.label_shape == (3,)
    assert dataset.label_histogram().size == 0
    sampler = BatchSampler(dataset, DataSourceSpec(batch_size=4), framework="caffe")
    _, labels = sampler.next_batch()
    np.testing.assert_array_equal(labels, label[:4])


@pytest.mark.parametrize(
    ("second", "words"),
    [
        (np.zeros((2, 4), np.float32) + 0.5, "float targets of shape 4, but"),
        (np.zeros(2, np.float32), "class indices, but"),
        (np.array([[0.5, np.nan, 1.0]] * 2, np.float32), "row 0 holds NaN or inf"),
    ],
)
def test_files_must_agree_and_targets_must_be_finite(tmp_path, second, words):
    write(tmp_path / "a.h5", np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32) + 0.5)
    write(tmp_path / "b.h5", np.zeros((2, 3), np.float32), second)
    (tmp_path / "list.txt").write_text(f"{tmp_path / 'a.h5'}\n{tmp_path / 'b.h5'}\n")
    with pytest.raises(DataError) as info:
        read_h5(f"h5:{tmp_path / 'list.txt'}")
    assert "b.h5" in str(info.value) and words in str(info.value)


def invoke(*args: str):
    return runner.invoke(app, list(args), env={"NO_COLOR": "1", "COLUMNS": "160"})


def test_inspect_shows_the_label_shape(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    solver = regression_root(tmp_path)
    text = invoke("inspect", str(solver))
    assert text.exit_code == 0, text.output
    assert "label 3 (float targets)" in " ".join(text.stdout.split())
    document = json.loads(invoke("inspect", str(solver), "--format", "json").stdout)
    assert document["label_shape"] == [3]
    write(tmp_path / "train.h5", np.zeros((4, 6), np.float32), np.array([0.0, 1, 1, 0]))
    assert "label class index" in " ".join(invoke("inspect", str(solver)).stdout.split())


def test_a_regression_net_trains_and_evaluates_on_vector_labels(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    solver = regression_root(tmp_path)
    result = invoke("train", str(solver), "--out", str(tmp_path / "run"), "--json")
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    tests = [e for e in events if e["event"] == "eval_finished"]
    assert [e["iteration"] for e in tests] == [0, 30, 60]
    assert tests[-1]["loss"] < tests[0]["loss"] / 20  # it learns the linear map
    assert all(e["accuracy"] is None for e in tests)
    report = json.loads(invoke("eval", str(tmp_path / "run"), "--json").stdout)
    assert report["classifier"] is False and report["images"] == 10
    assert report["loss"] == tests[-1]["loss"]  # 2 batches of 5 = the 10 test rows, in order


@pytest.mark.parametrize(
    ("outputs", "loss", "words"),
    [
        (4, "EuclideanLoss", "float targets of 3 (3 values) per image, but layer loss"),
        (3, "SoftmaxWithLoss", "net.prototxt:8) reads class labels"),
    ],
)
def test_targets_a_net_cannot_use_are_bad_input(tmp_path, monkeypatch, outputs, loss, words):
    monkeypatch.chdir(tmp_path)
    solver = regression_root(tmp_path, outputs, loss)
    result = invoke("train", str(solver), "--out", str(tmp_path / "run"), "--quiet")
    assert result.exit_code == 1
    assert "train.txt" in result.stderr and words in result.stderr
    assert "Traceback" not in result.output


def test_eval_refuses_targets_for_a_classifier(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    solver = regression_root(tmp_path, 3, "SoftmaxWithLoss")
    x = np.zeros((10, 6), np.float32)
    write(tmp_path / "classes.h5", x, np.arange(10) % 3)
    trained = invoke(
        "train", str(solver), "--data", "h5:classes.h5", "--out", "run", "--max-iters", "2",
        "--quiet",
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    result = invoke("eval", "run", "--data", "h5:test.txt")
    assert result.exit_code == 1 and "reads class labels" in result.stderr, result.output
    assert "Traceback" not in result.output


def binary_root(root: Path, loss: str, values: list[float]) -> Path:
    """One-output nets whose N×1 label holds integral values (0/1 for a sigmoid, counts for a
    regression): Caffe compares each with the prediction as the float it is."""
    solver = regression_root(root, 1, loss)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    y = rng.choice(values, size=(40, 1)).astype(np.float32)
    write(root / "train.h5", x[:30], y[:30])
    write(root / "test.h5", x[30:], y[30:])
    return solver


def test_a_caffe_pair_loss_reads_an_integral_label_as_its_value(tmp_path, monkeypatch):
    """EuclideanLoss against labels 0, 1, 2: ``Σ(a − label)²/N/2``, never a one-hot row (a
    label 0 was the target 1.0, a label 1 "out of range" for one output)."""
    from dnupdate.engine.backends.cpu import CpuBackend
    from dnupdate.engine.config import load_config
    from dnupdate.engine.model.network import Network

    monkeypatch.chdir(tmp_path)
    run = load_config(str(binary_root(tmp_path, "EuclideanLoss", [0.0, 1.0, 2.0])))
    net = Network(run.net, CpuBackend(), 5, "caffe")
    net.params[...] = np.random.default_rng(1).normal(0, 0.5, net.params.size)
    x = np.random.default_rng(3).normal(size=(5, 6, 1, 1)).astype(np.float32)
    labels = np.array([0, 1, 2, 0, 1])
    net.set_truth(labels)
    net.forward(x, train=True)
    prediction = net.output.reshape(5).astype(np.float64)
    want = ((prediction - labels) ** 2).sum() / 5 / 2
    assert net.loss == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize(
    ("loss", "values"), [("SigmoidCrossEntropyLoss", [0.0, 1.0]), ("EuclideanLoss", [0.0, 3.0])]
)
def test_integral_n_by_1_targets_train_and_evaluate(tmp_path, monkeypatch, loss, values):
    """HDF5Data N×1 labels of 0/1 (binary classification with a sigmoid, as in Caffe's
    examples) or integral regression targets: trained and tested as values, no range error."""
    monkeypatch.chdir(tmp_path)
    solver = binary_root(tmp_path, loss, values)
    result = invoke("train", str(solver), "--out", "run", "--max-iters", "4", "--json")
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    tests = [e for e in events if e["event"] == "eval_finished"]
    assert tests and all(e["accuracy"] is None and math.isfinite(e["loss"]) for e in tests)
    report = invoke("eval", "run", "--json")
    assert report.exit_code == 0, report.output
    assert json.loads(report.stdout)["loss"] == tests[-1]["loss"]
