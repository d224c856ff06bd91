"""``dnupdate eval`` on a Caffe solver with several test nets (``test_state`` repeated): each
net is tested on its own data, as ``train``'s tests are (figures equal to the run's final tests
where those cover the whole set), a section per net in the Rich output, one object per net in
``--json``, and ``--test-net N`` picks one. A small copy of BVLC's MNIST autoencoder."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from dnupdate.cli.main import app
from tests.test_caffe_test_nets import AE_SOLVER, TEST_IMAGES, TRAIN_IMAGES, caffe_root, train

__all__ = ["caffe_root"]  # the fixture, used by name

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, ["eval", *args], env={"NO_COLOR": "1", "COLUMNS": "120"})


def whole_set_solver(root) -> None:
    """test_iter covering each test net's data exactly once (30 train images in batches of 5,
    20 test images in batches of 4), so every test of the run sees every image in order."""
    path = root / AE_SOLVER
    text = path.read_text().replace("test_iter: 7", "test_iter: 6")
    path.write_text(text.replace("test_iter: 2", "test_iter: 5"))


def test_eval_tests_every_test_net_as_train_does(caffe_root):
    whole_set_solver(caffe_root)
    _, events = train(caffe_root, AE_SOLVER)
    final = {e["test_net"]: e for e in events if e["event"] == "eval_finished"}  # last of each
    folder = next(e for e in events if e["event"] == "run_started")["out_dir"]
    result = invoke(folder, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    nets = report["test_nets"]
    assert [(n["test_net"], n["test_net_name"]) for n in nets] == [
        (0, "test-on-train"),
        (1, "test-on-test"),
    ]
    assert [n["images"] for n in nets] == [TRAIN_IMAGES, TEST_IMAGES]
    assert [n["split"] for n in nets] == ["train", "test"]
    assert report["iteration"] == 4 and all(n["iteration"] == 4 for n in nets)
    for net in nets:
        assert net["classifier"] is False and net["top1"] is None
        assert net["loss"] == final[net["test_net"]]["loss"]
    assert nets[0]["loss"] != nets[1]["loss"]  # different data
    # --test-net N: that net alone, as the plain object
    one = invoke(folder, "--test-net", "1", "--json")
    assert one.exit_code == 0, one.output
    alone = json.loads(one.stdout)
    assert (alone["test_net"], alone["test_net_name"]) == (1, "test-on-test")
    assert alone["loss"] == nets[1]["loss"] and "test_nets" not in alone


def test_human_output_has_a_section_per_test_net(caffe_root):
    _, events = train(caffe_root, AE_SOLVER)
    folder = next(e for e in events if e["event"] == "run_started")["out_dir"]
    result = invoke(folder)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.count("eval ") == 1  # the shared first line
    first, second = (
        out.index("test net #0 (test-on-train)"),
        out.index("test net #1 (test-on-test)"),
    )
    assert first < second
    assert out.count("not a classifier") == 2
    # test-on-train reads the training LMDB: the line names that split, not "test images"
    assert f"{TRAIN_IMAGES} images of the training split" in out[first:second]
    assert "test images" not in out[first:second]
    assert f"{TEST_IMAGES} test images" in out[second:]
    picked = invoke(folder, "--test-net", "0")
    assert picked.exit_code == 0 and "test net #" not in picked.stdout


def test_a_test_net_the_solver_lacks_is_a_usage_error(caffe_root):
    _, events = train(caffe_root, AE_SOLVER, "--max-iters", "1")
    folder = next(e for e in events if e["event"] == "run_started")["out_dir"]
    result = invoke(folder, "--test-net", "2")
    assert result.exit_code == 2
    assert "--test-net 2:" in result.stderr and "has 2 test nets (#0..#1)" in result.stderr
    assert "Traceback" not in result.output
