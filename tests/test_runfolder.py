"""engine.training.runfolder: atomic files, state files, metrics (append, partial lines,
truncation)."""

from __future__ import annotations

import csv
import json
import time

import numpy as np
import pytest

from dnupdate.engine.training.runfolder import (
    MetricsLog,
    RunFolder,
    RunFolderError,
    default_run_dir,
    load_state,
    metric_columns,
    read_metrics,
    save_state,
    truncate_metrics,
    write_json,
    write_text,
)


def test_state_round_trips_arrays_big_ints_floats_and_nested_values(tmp_path):
    state = {
        "params": np.arange(7, dtype=np.float32) / 3,
        "grads": np.array([[1.5, -2.0]], dtype=np.float32),
        "seen": 2**64 - 5,  # darknet's size_t counter
        "lr": 0.1 + 0.2,  # not exactly representable: must come back bit-identical
        "rng": json.dumps({"kind": "numpy", "state": 12345678901234567890}),
        "sampler.train": {"position": 3, "rng": {"state": {"state": 2**100, "inc": 7}}},
        "nothing": None,
    }
    path = tmp_path / "state.npz"
    save_state(path, state)
    loaded = load_state(path)
    assert loaded.keys() == state.keys()
    np.testing.assert_array_equal(loaded["params"], state["params"])
    assert loaded["params"].dtype == np.float32
    assert loaded["seen"] == 2**64 - 5
    assert loaded["lr"] == 0.1 + 0.2
    assert loaded["rng"] == state["rng"]
    assert loaded["sampler.train"]["rng"]["state"]["state"] == 2**100
    assert loaded["nothing"] is None


def test_load_state_errors_name_the_file(tmp_path):
    with pytest.raises(RunFolderError, match="no state file"):
        load_state(tmp_path / "missing.npz")
    np.savez(tmp_path / "plain.npz", a=np.zeros(2))
    with pytest.raises(RunFolderError, match="not a dnupdate state file"):
        load_state(tmp_path / "plain.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(RunFolderError, match=r"junk\.npz"):
        load_state(tmp_path / "junk.npz")


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    write_text(tmp_path / "a.txt", "first")
    write_text(tmp_path / "a.txt", "second")
    write_json(tmp_path / "b.json", {"x": float("nan"), "y": (1, 2)})
    assert (tmp_path / "a.txt").read_text() == "second"
    assert json.loads((tmp_path / "b.json").read_text()) == {"x": "nan", "y": [1, 2]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.json"]


def test_metrics_append_to_both_files_with_fixed_columns(tmp_path):
    columns = metric_columns(["conv1", "ip1"], "avg_loss_ema")
    assert columns[:6] == ["kind", "iteration", "seen", "epoch", "lr", "loss"]
    assert "conv1.w_norm" in columns and "ip1.ratio" in columns and columns[-1] == "test_non_finite"
    assert columns.index("conv1.g_norm") == columns.index("conv1.w_norm") + 1
    log = MetricsLog(tmp_path, columns)
    log.append({"kind": "train", "iteration": 1, "loss": 2.5, "conv1.w_norm": 0.1})
    log.append({"kind": "test", "iteration": 1, "test_accuracy": 0.5, "loss": float("inf")})
    log.close()
    log = MetricsLog(tmp_path, columns)  # reopening appends, no second header
    log.append({"kind": "train", "iteration": 2, "loss": 1.0})
    log.close()
    rows = read_metrics(tmp_path)
    assert [r["iteration"] for r in rows] == [1, 1, 2]
    assert rows[1]["loss"] == "inf"
    with open(tmp_path / "metrics.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 3
    assert table[0]["conv1.w_norm"] == "0.1" and table[0]["ip1.w_norm"] == ""
    assert table[1]["test_accuracy"] == "0.5" and table[1]["loss"] == "inf"


def test_metrics_of_another_network_are_refused(tmp_path):
    MetricsLog(tmp_path, metric_columns(["a"], "avg_loss_ema")).close()
    with pytest.raises(RunFolderError, match="columns differ"):
        MetricsLog(tmp_path, metric_columns(["b"], "avg_loss_ema"))


def test_read_metrics_skips_a_line_still_being_written(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "train", "iteration": 1}\n{"kind": "train", "iter')
    assert read_metrics(path) == [{"kind": "train", "iteration": 1}]
    path.write_text('{"kind": "train", "iteration": 1}\nnot json\n')
    with pytest.raises(RunFolderError, match="line 2"):
        read_metrics(path)


def test_truncate_keeps_rows_up_to_the_checkpoint(tmp_path):
    columns = metric_columns(["a"], "avg_loss_ema")
    log = MetricsLog(tmp_path, columns)
    for iteration in range(1, 6):
        log.append({"kind": "train", "iteration": iteration, "loss": 1.0 / iteration})
    log.close()
    truncate_metrics(tmp_path, 3)
    assert [r["iteration"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    with open(tmp_path / "metrics.csv", newline="") as handle:
        table = list(csv.reader(handle))
    assert table[0] == columns and [row[1] for row in table[1:]] == ["1", "2", "3"]


def test_create_refuses_a_folder_holding_a_run_and_open_needs_one(tmp_path):
    folder = RunFolder.create(tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints").is_dir()
    folder.save_state({"iteration": 1})
    with pytest.raises(RunFolderError, match="in use by another run"):
        RunFolder.create(tmp_path / "run")  # still locked by `folder`
    folder.close()
    with pytest.raises(RunFolderError, match="--resume"):
        RunFolder.create(tmp_path / "run")
    with pytest.raises(RunFolderError, match="no such run folder"):
        RunFolder.open(tmp_path / "nowhere")
    with pytest.raises(RunFolderError, match=r"run\.json"):
        RunFolder.open(tmp_path / "run")


def test_write_config_keeps_the_original_text_and_suffix(tmp_path):
    folder = RunFolder.create(tmp_path / "run")
    folder.write_config("x/solver.prototxt", 'net: "n.prototxt"\n', {"a": 1}, "layer {}\n")
    assert (tmp_path / "run" / "config.original.prototxt").read_text() == 'net: "n.prototxt"\n'
    assert (tmp_path / "run" / "net.original.prototxt").read_text() == "layer {}\n"
    assert folder.original_config_text() == 'net: "n.prototxt"\n'
    assert json.loads((tmp_path / "run" / "config.resolved.json").read_text()) == {"a": 1}


def test_default_run_dir_is_named_after_the_config_and_never_reused(tmp_path):
    first = default_run_dir("configs/quick start.cfg", tmp_path)
    assert first.parent == tmp_path
    assert first.name.startswith("quick_start-" + time.strftime("%Y"))
    first.mkdir()
    second = default_run_dir("configs/quick start.cfg", tmp_path)
    assert second != first and not second.exists()
    assert default_run_dir("-", tmp_path).name.startswith("stdin-")
