"""Issue 17 item 12: ``--set batch_size=N`` on a Caffe solver sets the TRAIN data layer's
batch size, and a key of the other framework gets a hint naming this framework's key."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from dnupdate.cli.main import app
from dnupdate.engine.config import load_config
from dnupdate.engine.spec import ConfigError

runner = CliRunner()

NET = """name: "n"
layer { name: "d" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  data_param { source: "mnist" batch_size: 8 backend: LMDB } }
layer { name: "t" type: "Data" top: "data" top: "label" include { phase: TEST }
  data_param { source: "mnist" batch_size: 100 backend: LMDB } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 10 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
SOLVER = 'net: "net.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\nmax_iter: 10\n'
CFG = "[net]\nbatch=4\nheight=4\nwidth=4\nchannels=1\nmax_batches=5\n[connected]\noutput=2\n"


@pytest.fixture
def solver(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    path = tmp_path / "solver.prototxt"
    path.write_text(SOLVER)
    return path


def test_set_batch_size_sets_the_train_data_layer_only(solver):
    run = load_config(str(solver), [("batch_size", "32")])
    assert run.solver.minibatch == 32
    assert run.data.train.batch_size == 32
    assert run.data.test.batch_size == 100
    assert str(run.origins["solver.minibatch"]) == "--set"


@pytest.mark.parametrize("value", ["0", "-3", "x", "1.5"])
def test_bad_batch_size_is_an_error_naming_the_key(solver, value):
    with pytest.raises(ConfigError) as info:
        load_config(str(solver), [("batch_size", value)])
    (error,) = [d for d in info.value.diagnostics if d.severity == "error"]
    assert (error.file, error.key) == ("--set", "batch_size")


def test_inspect_shows_the_overridden_batch_with_its_origin(solver):
    result = runner.invoke(app, ["inspect", str(solver), "--set", "batch_size=32"])
    assert result.exit_code == 0, result.output
    assert any("solver.minibatch" in line and "32" in line and "--set" in line
               for line in result.stdout.splitlines())  # fmt: skip


@pytest.mark.parametrize(
    "key, words",
    [
        ("base_lr", "'base_lr' is a Caffe key, darknet calls it learning_rate"),
        ("weight_decay", "darknet calls it decay"),
        ("batch_size", "darknet calls it batch"),
        ("lr_policy", "darknet calls it policy"),
    ],
)
def test_caffe_key_on_a_darknet_cfg_names_darknets_key(tmp_path, key, words):
    path = tmp_path / "n.cfg"
    path.write_text(CFG)
    result = runner.invoke(app, ["inspect", str(path), "--set", f"{key}=1"])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"--set: error [{key}]: unknown darknet [net] key '{key}'; ")
    assert words in result.stderr


@pytest.mark.parametrize(
    "key, words",
    [
        ("learning_rate", "'learning_rate' is a darknet key, Caffe calls it base_lr"),
        ("max_batches", "Caffe calls it max_iter"),
        ("burn_in", "'burn_in' is a darknet key: Caffe has no burn-in"),
    ],
)
def test_darknet_key_on_a_caffe_solver_names_caffes_key(solver, key, words):
    result = runner.invoke(app, ["inspect", str(solver), "--set", f"{key}=1"])
    assert result.exit_code == 1
    assert words in result.stderr
