"""Caffe's HDF5Data input (issue 13): the reader, ``--data h5:PATH``, the sampler's per-pass
shuffle, and ``inspect``/``train``/``lr-schedule`` on an HDF5Data net. Every .h5 file is made
here."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from dnupdate.cli.main import app
from dnupdate.engine.config import load_config
from dnupdate.engine.data import BatchSampler, DataError, open_dataset, probe_shape
from dnupdate.engine.data.hdf5 import read_h5
from dnupdate.engine.spec import DataSourceSpec
from tests.test_train_loop import darknet_config

runner = CliRunner()

NET = """name: "h5net"
layer {{ name: "data" type: "HDF5Data" top: "{data}" top: "{label}" include {{ phase: TRAIN }}
        hdf5_data_param {{ source: "{source}" batch_size: 8 shuffle: {shuffle} }} }}
layer {{ name: "data" type: "HDF5Data" top: "{data}" top: "{label}" include {{ phase: TEST }}
        hdf5_data_param {{ source: "{source}" batch_size: 10 }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "{data}" top: "ip"
        inner_product_param {{ num_output: 2 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "{label}" top: "loss" }}
layer {{ name: "acc" type: "Accuracy" bottom: "ip" bottom: "{label}" top: "acc"
        include {{ phase: TEST }} }}
"""

SOLVER = """net: "net.prototxt"
base_lr: 0.1
lr_policy: "step"
gamma: 0.5
stepsize: 10
momentum: 0.9
max_iter: 30
test_iter: 4
test_interval: 15
display: 10
random_seed: 3
"""


def write_h5(path: Path, rows: int, shape=(1, 6, 6), seed=0, names=("data", "label"), **kw):
    """A learnable two-class float set: class 1 adds 3 to the first value."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, *shape)).astype(np.float64)
    y = (np.arange(rows) % 2).astype(np.float32)
    x.reshape(rows, -1)[:, 0] += 3 * y
    with h5py.File(path, "w") as handle:
        handle.create_dataset(names[0], data=x, **kw)
        handle.create_dataset(names[1], data=y.reshape(rows, 1))
    return x.astype(np.float32), y.astype(np.int64)


@pytest.fixture
def h5net(tmp_path, monkeypatch):
    """A folder with two .h5 files (24 and 16 rows), their list, a net and a solver; the
    working directory is the folder (Caffe resolves sources from it)."""
    x0, y0 = write_h5(tmp_path / "part0.h5", 24, seed=0)
    x1, y1 = write_h5(tmp_path / "part1.h5", 16, seed=1, chunks=True, compression="gzip")
    (tmp_path / "list.txt").write_text("part0.h5\n  part1.h5\n")
    write_net(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path, np.concatenate([x0, x1]), np.concatenate([y0, y1])


def write_net(folder: Path, source="list.txt", shuffle="true", data="data", label="label"):
    text = NET.format(source=source, shuffle=shuffle, data=data, label=label)
    (folder / "net.prototxt").write_text(text)
    (folder / "solver.prototxt").write_text(SOLVER)


def test_read_h5_concatenates_the_listed_files_as_float(h5net):
    folder, x, y = h5net
    images, labels, classes, rows, files = read_h5("h5:list.txt")
    assert images.dtype == np.float32 and images.shape == (40, 1, 6, 6)
    np.testing.assert_array_equal(images, x)  # as given: no scale, no mean
    np.testing.assert_array_equal(labels, y)
    assert classes == 2 and rows == (24, 16)
    assert [f.name for f in files] == ["part0.h5", "part1.h5"]
    assert probe_shape("h5:list.txt") == (1, 6, 6)
    dataset = open_dataset("h5:list.txt")
    assert dataset.prescaled and dataset.segments == (24, 16)
    assert open_dataset(str(folder / "part1.h5")).shape == (1, 6, 6)  # a bare .h5 path


def test_flat_rows_and_named_datasets(tmp_path):
    write_h5(tmp_path / "flat.h5", 6, shape=(5,), names=("feat", "cls"))
    images, labels, _, _, _ = read_h5(f"h5:{tmp_path / 'flat.h5'}#feat,cls")
    assert images.shape == (6, 5, 1, 1) and labels.tolist() == [0, 1, 0, 1, 0, 1]


def test_caffe_net_takes_shape_and_tops_from_the_file(h5net):
    folder, _, _ = h5net
    write_net(folder, data="feat", label="cls")
    write_h5(folder / "named.h5", 8, shape=(2, 3, 5), names=("feat", "cls"))
    (folder / "list.txt").write_text("named.h5\n")
    run = load_config("solver.prototxt")
    assert (run.net.input.channels, run.net.input.height, run.net.input.width) == (2, 3, 5)
    assert run.data.train.source == "h5:list.txt#feat,cls"
    assert run.data.train.shuffle and not run.data.test.shuffle


def test_data_option_replaces_the_source_and_its_shape(h5net):
    """A net whose HDF5Data source does not exist loads with --data, shaped by --data."""
    folder, _, _ = h5net
    write_net(folder, source="elsewhere/missing.txt")
    write_h5(folder / "other.h5", 12, shape=(3, 2, 2))
    write_h5(folder / "mnist_like.h5", 4, shape=(2, 3, 3))  # a name is no shape for h5 files
    run = load_config("solver.prototxt", data="h5:mnist_like.h5")
    assert (run.net.input.channels, run.net.input.height, run.net.input.width) == (2, 3, 3)
    with pytest.raises(Exception, match=r"missing\.txt"):
        load_config("solver.prototxt")
    run = load_config("solver.prototxt", data="h5:other.h5")
    assert (run.net.input.channels, run.net.input.height, run.net.input.width) == (3, 2, 2)
    result = runner.invoke(
        app, ["train", "solver.prototxt", "--data", "h5:other.h5", "--out", "r", "-q"]
    )
    assert result.exit_code == 0, result.output


def test_sampler_shuffles_files_and_rows_per_pass_and_resumes(h5net):
    """Caffe HDF5Data shuffle: each pass visits every row once, a file's rows together;
    passes differ; a restored state continues the same stream."""
    dataset = open_dataset("h5:list.txt")
    source = DataSourceSpec(source="h5:list.txt", batch_size=8, shuffle=True)
    sampler = BatchSampler(dataset, source, framework="caffe", seed=5)
    stream = np.concatenate([sampler.next_indices() for _ in range(10)])  # 2 passes
    first, second = stream[:40], stream[40:80]
    for one_pass in (first, second):
        assert sorted(one_pass) == list(range(40))
        starts_small = one_pass[0] >= 24
        if starts_small:
            assert set(one_pass[:16]) == set(range(24, 40))
        else:
            assert set(one_pass[:24]) == set(range(24))
    assert not np.array_equal(first, second)
    again = BatchSampler(dataset, source, framework="caffe", seed=5)
    for _ in range(3):
        again.next_indices()
    state = json.loads(json.dumps(again.state_dict()))
    resumed = BatchSampler(dataset, source, framework="caffe", seed=0)
    resumed.load_state_dict(state)
    np.testing.assert_array_equal(
        np.concatenate([resumed.next_indices() for _ in range(7)]), stream[24:]
    )


def test_unshuffled_reads_files_in_order_and_wraps(h5net):
    dataset = open_dataset("h5:list.txt")
    source = DataSourceSpec(source="h5:list.txt", batch_size=16, shuffle=False)
    sampler = BatchSampler(dataset, source, framework="caffe")
    stream = np.concatenate([sampler.next_indices() for _ in range(3)])
    assert stream.tolist() == [*range(40), *range(8)]
    images, _ = BatchSampler(dataset, source, framework="caffe").next_batch()
    np.testing.assert_array_equal(images, dataset.images[:16])  # float data as given


def test_inspect_train_and_lr_schedule_on_an_hdf5_net(h5net):
    result = runner.invoke(app, ["inspect", "solver.prototxt"])
    assert result.exit_code == 0, result.output
    assert "1×6×6" in result.output
    result = runner.invoke(app, ["train", "solver.prototxt", "--out", "run", "--json", "-q"])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    tests = [e for e in events if e.get("event") == "eval_finished"]
    assert tests and tests[-1]["accuracy"] > 0.9
    result = runner.invoke(app, ["lr-schedule", "solver.prototxt", "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[11] == "10,0.0500000007"


def test_a_darknet_cfg_trains_on_data_h5(tmp_path):
    write_h5(tmp_path / "d.h5", 16, shape=(1, 6, 6))
    config = darknet_config(tmp_path, batch=4, subdivisions=1, max_batches=4)
    args = [str(config), "--data", f"h5:{tmp_path / 'd.h5'}", "--out", str(tmp_path / "r")]
    result = runner.invoke(app, ["train", *args, "-q", "--eval-every", "0"])
    assert result.exit_code == 0, result.output


# ---- hostile files ---------------------------------------------------------------------------


def _hostile(path: Path, case: str) -> str:
    """Write one malformed .h5 file; returns the message expected in the error."""
    with h5py.File(path, "w") as handle:
        if case == "no label":
            handle["data"] = np.zeros((2, 1, 2, 2), np.float32)
            return "no dataset 'label'"
        if case == "strings":
            handle["data"] = np.array([b"ab", b"cd"])
            handle["label"] = np.zeros(2)
            return "dataset 'data' holds"
        if case == "group":
            handle.create_group("data")
            handle["label"] = np.zeros(2)
            return "'data' is a group"
        if case == "scalar":
            handle["data"] = np.float32(1)
            handle["label"] = np.zeros(2)
            return "dataset 'data' is a scalar"
        if case == "3-d":
            handle["data"] = np.zeros((2, 3, 3), np.float32)
            handle["label"] = np.zeros(2)
            return "dataset 'data' has shape (2, 3, 3)"
        if case == "nan":
            data = np.zeros((2, 1, 2, 2), np.float32)
            data[1, 0, 1, 0] = np.nan
            handle["data"] = data
            handle["label"] = np.zeros(2)
            return "row 1 pixel (0, 1, 0) is nan"
        if case == "fractional label":
            handle["data"] = np.zeros((2, 1, 2, 2), np.float32)
            handle["label"] = np.array([0.0, 0.5])
            return "dataset 'label' row 1 is 0.5"
        if case == "negative label":
            handle["data"] = np.zeros((2, 1, 2, 2), np.float32)
            handle["label"] = np.array([0.0, -1.0])
            return "dataset 'label' row 1 is -1"
        if case == "row mismatch":
            handle["data"] = np.zeros((3, 1, 2, 2), np.float32)
            handle["label"] = np.zeros(2)
            return "dataset 'label' has 2 rows but the data has 3"
        if case == "huge":  # a chunked dataset declaring ~4 PB, storing nothing
            handle.create_dataset("data", shape=(2**40, 1, 32, 32), dtype="f4", chunks=True)
            handle["label"] = np.zeros(2)
            return "more than half of this machine's memory"
        if case == "compound":
            handle["data"] = np.zeros(2, dtype=[("a", "f4"), ("b", "f4")])
            handle["label"] = np.zeros(2)
            return "dataset 'data' holds"
    raise AssertionError(case)


HOSTILE = [
    "no label",
    "strings",
    "group",
    "scalar",
    "3-d",
    "nan",
    "fractional label",
    "negative label",
    "row mismatch",
    "huge",
    "compound",
]


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_h5_files_are_data_errors_naming_file_and_dataset(tmp_path, case):
    path = tmp_path / "bad.h5"
    expected = _hostile(path, case)
    with pytest.raises(DataError) as info:
        read_h5(f"h5:{path}")
    assert str(path) in str(info.value) and expected in str(info.value)


@pytest.mark.parametrize(
    ("content", "expected"),
    [("", "is empty"), ("a.h5\nmissing.h5\n", "entry 2: 'missing.h5' does not exist")],
)
def test_bad_source_lists(tmp_path, content, expected):
    write_h5(tmp_path / "a.h5", 2)
    (tmp_path / "list.txt").write_text(content)
    with pytest.raises(DataError, match=expected):
        read_h5(f"h5:{tmp_path / 'list.txt'}")


def test_train_on_a_hostile_h5_exits_1_naming_file_and_dataset(h5net):
    folder, _, _ = h5net
    _hostile(folder / "part1.h5", "fractional label")
    result = runner.invoke(app, ["train", "solver.prototxt", "--out", "run", "-q"])
    assert result.exit_code == 1, result.output
    assert "part1.h5" in result.stderr and "dataset 'label'" in result.stderr
    assert "Traceback" not in result.output
    (folder / "part0.h5").write_bytes(b"not an hdf5 file at all")
    result = runner.invoke(app, ["inspect", "solver.prototxt"])
    assert result.exit_code == 1 and "part0.h5" in result.stderr
    assert "not a readable HDF5 file" in result.stderr


def test_eval_of_an_hdf5_net_whose_source_moved_takes_the_shape_from_data(h5net):
    folder, _, _ = h5net
    result = runner.invoke(app, ["train", "solver.prototxt", "--out", "run", "-q"])
    assert result.exit_code == 0, result.output
    write_net(folder, source="moved/away.txt")
    args = ["solver.prototxt", "--weights", "run/final.npz", "--data", "h5:part1.h5", "--json"]
    result = runner.invoke(app, ["eval", *args])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[-1])["top1"] > 0.9
