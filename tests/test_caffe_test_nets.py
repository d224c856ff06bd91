"""Several Caffe test nets (``test_state``/``test_iter`` repeated, ``Solver::TestAll``), the
test figures a net without Accuracy layer reports, and small copies of BVLC's example nets
(the MNIST autoencoder, cifar10_full's WITHIN_CHANNEL LRN) trained and scheduled end to end."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from dnupdate.cli.dashboard import Dashboard, eval_line, output_text
from dnupdate.cli.main import app
from dnupdate.cli.plot_cmd import Run, panels_from_runs
from dnupdate.engine.config import load_config
from dnupdate.engine.data.resolve import split_in_name
from dnupdate.engine.spec import ConfigError
from dnupdate.engine.training.events import EVENT_TYPES, EvalFinished, LossOutput
from dnupdate.engine.training.step import reports_accuracy
from tests.data_fixtures import write_cifar10_folder, write_mnist_split

runner = CliRunner()

TRAIN_IMAGES, TEST_IMAGES = 30, 20

# The structure of BVLC's examples/mnist/mnist_autoencoder.prototxt, cut down: three data
# layers (TRAIN, TEST test-on-train, TEST test-on-test), Flatten, an InnerProduct stack with
# sigmoids, SigmoidCrossEntropyLoss and an EuclideanLoss of weight 0.
AUTOENCODER_NET = """
name: "MNISTAutoencoder"
layer { name: "data" type: "Data" top: "data" include { phase: TRAIN }
  transform_param { scale: 0.0039215684 }
  data_param { source: "examples/mnist/mnist_train_lmdb" batch_size: 5 backend: LMDB } }
layer { name: "data" type: "Data" top: "data"
  include { phase: TEST stage: "test-on-train" }
  transform_param { scale: 0.0039215684 }
  data_param { source: "examples/mnist/mnist_train_lmdb" batch_size: 5 backend: LMDB } }
layer { name: "data" type: "Data" top: "data"
  include { phase: TEST stage: "test-on-test" }
  transform_param { scale: 0.0039215684 }
  data_param { source: "examples/mnist/mnist_test_lmdb" batch_size: 4 backend: LMDB } }
layer { name: "flatdata" type: "Flatten" bottom: "data" top: "flatdata" }
layer { name: "encode1" type: "InnerProduct" bottom: "data" top: "encode1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 1 decay_mult: 0 }
  inner_product_param { num_output: 8
    weight_filler { type: "gaussian" std: 1 sparse: 4 } bias_filler { type: "constant" } } }
layer { name: "encode1neuron" type: "Sigmoid" bottom: "encode1" top: "encode1neuron" }
layer { name: "decode1" type: "InnerProduct" bottom: "encode1neuron" top: "decode1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 1 decay_mult: 0 }
  inner_product_param { num_output: 784
    weight_filler { type: "gaussian" std: 1 sparse: 15 } bias_filler { type: "constant" } } }
layer { name: "loss" type: "SigmoidCrossEntropyLoss" bottom: "decode1" bottom: "flatdata"
  top: "cross_entropy_loss" loss_weight: 1 }
layer { name: "decode1neuron" type: "Sigmoid" bottom: "decode1" top: "decode1neuron" }
layer { name: "loss" type: "EuclideanLoss" bottom: "decode1neuron" bottom: "flatdata"
  top: "l2_error" loss_weight: L2_WEIGHT }
"""

AUTOENCODER_SOLVER = """net: "examples/mnist/mnist_autoencoder.prototxt"
test_state: { stage: 'test-on-train' }
test_iter: 7
test_state: { stage: 'test-on-test' }
test_iter: 2
test_interval: 2
test_compute_loss: true
base_lr: 0.01
lr_policy: "step"
gamma: 0.1
stepsize: 2
display: 1
max_iter: 4
weight_decay: 0.0005
snapshot: 0
snapshot_prefix: "examples/mnist/mnist_autoencoder"
momentum: 0.9
random_seed: 3
solver_mode: CPU
"""

# The structure of BVLC's examples/cifar10/cifar10_full_train_test.prototxt, cut down: conv,
# pool, relu, LRN WITHIN_CHANNEL, an InnerProduct, Accuracy in TEST and SoftmaxWithLoss.
CIFAR_FULL_NET = """
name: "CIFAR10_full"
layer { name: "cifar" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { mean_file: "examples/cifar10/mean.binaryproto" }
  data_param { source: "examples/cifar10/cifar10_train_lmdb" batch_size: 4 backend: LMDB } }
layer { name: "cifar" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { mean_file: "examples/cifar10/mean.binaryproto" }
  data_param { source: "examples/cifar10/cifar10_test_lmdb" batch_size: 3 backend: LMDB } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 4 pad: 2 kernel_size: 5 stride: 1
    weight_filler { type: "gaussian" std: 0.0001 } bias_filler { type: "constant" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "pool1" top: "pool1" }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1"
  lrn_param { local_size: 3 alpha: 5e-05 beta: 0.75 norm_region: WITHIN_CHANNEL } }
layer { name: "ip1" type: "InnerProduct" bottom: "norm1" top: "ip1"
  param { lr_mult: 1 decay_mult: 250 } param { lr_mult: 2 decay_mult: 0 }
  inner_product_param { num_output: 10
    weight_filler { type: "gaussian" std: 0.01 } bias_filler { type: "constant" } } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip1" bottom: "label" top: "accuracy"
  include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
"""

CIFAR_FULL_SOLVER = """net: "examples/cifar10/cifar10_full_train_test.prototxt"
test_iter: 2
test_interval: 2
base_lr: 0.001
momentum: 0.9
weight_decay: 0.004
lr_policy: "fixed"
display: 1
max_iter: 4
snapshot: 0
snapshot_prefix: "examples/cifar10/cifar10_full"
solver_mode: CPU
"""


@pytest.fixture
def caffe_root(tmp_path, monkeypatch) -> Path:
    """A Caffe root with the two example nets, and a data folder of small MNIST (30 train,
    20 test images) and CIFAR-10 files; the nets' LMDB paths are not there, so their names
    pick the catalog dataset and split."""
    root = tmp_path / "caffe"
    (root / "examples" / "mnist").mkdir(parents=True)
    (root / "examples" / "cifar10").mkdir(parents=True)
    write_autoencoder(root, l2_weight="0")
    (root / "examples/cifar10/cifar10_full_train_test.prototxt").write_text(CIFAR_FULL_NET)
    (root / "examples/cifar10/cifar10_full_solver.prototxt").write_text(CIFAR_FULL_SOLVER)
    data = tmp_path / "data"
    write_mnist_split(data / "mnist", "train", TRAIN_IMAGES, seed=0)
    write_mnist_split(data / "mnist", "t10k", TEST_IMAGES, seed=1)
    write_cifar10_folder(data / "cifar-10-batches-bin", per_batch=3)
    monkeypatch.chdir(root)
    return root


def write_autoencoder(root: Path, l2_weight: str) -> None:
    net = AUTOENCODER_NET.replace("L2_WEIGHT", l2_weight)
    (root / "examples/mnist/mnist_autoencoder.prototxt").write_text(net)
    (root / "examples/mnist/mnist_autoencoder_solver.prototxt").write_text(AUTOENCODER_SOLVER)


AE_SOLVER = "examples/mnist/mnist_autoencoder_solver.prototxt"
CIFAR_SOLVER = "examples/cifar10/cifar10_full_solver.prototxt"


def train(root: Path, solver: str, *extra: str, out: str = "run"):
    data = str(root.parent / "data")
    args = ["train", solver, "--data-dir", data, "--json", "--out", str(root / out), *extra]
    if solver == "--resume":
        args = ["train", "--resume", *extra, "--json"]
    result = runner.invoke(app, args, env={"NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result, events


def run_folder(events: list[dict]) -> Path:
    return Path(next(e for e in events if e["event"] == "run_started")["out_dir"])


# ---- config ----------------------------------------------------------------------------------


def test_each_test_state_builds_its_own_test_net_and_data_source(caffe_root):
    run = load_config(AE_SOLVER)
    assert run.solver.test_iter == 7 and run.solver.test_iters == (7, 2)
    assert run.data.test_name == "test-on-train"
    assert run.data.test.source == "examples/mnist/mnist_train_lmdb"
    assert run.data.test.batch_size == 5
    (second,) = run.data.more_tests
    assert (second.name, second.phase) == ("test-on-test", "test1")
    assert second.source.source == "examples/mnist/mnist_test_lmdb"
    assert second.source.batch_size == 4
    # the layers without rules are in every net; no layer is reported as in no phase
    assert all(layer.phases == {"train", "test", "test1"} for layer in run.net.layers)
    assert not [d for d in run.diagnostics if "no phase" in d.message]


def test_a_stage_rule_keeps_a_layer_in_its_test_net_only(caffe_root):
    net = Path("examples/mnist/mnist_autoencoder.prototxt")
    extra = (
        'layer { name: "probe" type: "Power" bottom: "flatdata" top: "probe"\n'
        '  include { phase: TEST stage: "test-on-test" } }\n'
    )
    net.write_text(net.read_text() + extra)
    run = load_config(AE_SOLVER)
    probe = next(layer for layer in run.net.layers if layer.name == "probe")
    assert probe.phases == {"test1"}


def test_a_test_state_count_unlike_the_test_iter_count_is_an_error(caffe_root):
    solver = Path(AE_SOLVER)
    text = solver.read_text().replace("test_iter: 2\n", "")
    solver.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(AE_SOLVER)
    (error,) = [d for d in caught.value.diagnostics if d.severity == "error"]
    assert error.key == "test_state" and error.line == 2
    assert "once per test net" in error.message


def test_a_path_names_its_split():
    assert split_in_name("examples/mnist/mnist_train_lmdb") == "train"
    assert split_in_name("examples/cifar10/cifar10_test_lmdb/") == "test"
    assert split_in_name("data/val_lmdb") == "test"
    assert split_in_name("examples/mnist/mnist") is None
    assert split_in_name("examples/trainer/data") is None  # a folder's name, not the source's


def test_only_nets_with_an_accuracy_layer_or_softmax_report_accuracy(caffe_root, tmp_path):
    assert not reports_accuracy(load_config(AE_SOLVER).net)
    cifar = load_config(CIFAR_SOLVER).net
    assert reports_accuracy(cifar, "test") and not reports_accuracy(cifar, "train")
    cfg = tmp_path / "regress.cfg"
    body = "[net]\nbatch=2\nheight=4\nwidth=4\nchannels=1\n[connected]\noutput=3\n"
    cfg.write_text(body + "activation=linear\n[cost]\n")
    assert not reports_accuracy(load_config(str(cfg)).net)
    cfg.write_text(body + "activation=linear\n[softmax]\n")
    assert reports_accuracy(load_config(str(cfg)).net)


# ---- training ----------------------------------------------------------------------------------


def test_autoencoder_tests_each_net_at_every_interval_with_its_own_data(caffe_root):
    result, events = train(caffe_root, AE_SOLVER)
    tests = [e for e in events if e["event"] == "eval_finished"]
    # Solver::TestAll at 0, 2 and 4 updates: net #0 then net #1 each time
    assert [(e["iteration"], e["test_net"]) for e in tests] == [
        (0, 0), (0, 1), (2, 0), (2, 1), (4, 0), (4, 1)
    ]  # fmt: skip
    names = {e["test_net"]: e["test_net_name"] for e in tests}
    assert names == {0: "test-on-train", 1: "test-on-test"}
    for e in tests:
        assert e["accuracy"] is None and e["framework_accuracy"] is None
        outputs = {o["name"]: o for o in e["outputs"]}
        assert list(outputs) == ["cross_entropy_loss", "l2_error"]
        assert outputs["l2_error"]["loss_weight"] == 0.0
        assert outputs["cross_entropy_loss"]["value"] == e["loss"]  # Σ weight·loss, l2 weight 0
    first, second = tests[0], tests[1]
    # test-on-train reads the 30 train images (7 batches of 5 wrap around them); test-on-test
    # 2 batches of 4 of the 20 test images
    assert (first["images"], first["distinct_images"]) == (35, TRAIN_IMAGES)
    assert (second["images"], second["distinct_images"]) == (8, 8)
    assert "accuracy" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("test net #")]
    assert len(lines) == 6
    assert lines[5].startswith("test net #1 (test-on-test) after 4 updates: loss ")
    assert "cross_entropy_loss = " in lines[5] and "l2_error = " in lines[5]
    assert "(*" not in lines[5]  # weight 1 and 0: Caffe's product says nothing new
    assert "never a right answer" not in result.stderr  # not a classifier


def test_test_nets_figures_agree_across_console_metrics_and_summary(caffe_root):
    result, events = train(caffe_root, AE_SOLVER)
    tests = [e for e in events if e["event"] == "eval_finished"]
    folder = run_folder(events)
    with open(folder / "metrics.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["kind"] == "test"]
    assert [(int(r["iteration"]), int(r["test_net"])) for r in rows] == [
        (e["iteration"], e["test_net"]) for e in tests
    ]
    for row, event in zip(rows, tests, strict=True):
        assert float(row["test_loss"]) == pytest.approx(event["loss"], rel=1e-12)
        assert row["test_accuracy"] == ""
        outputs = {o["name"]: o["value"] for o in event["outputs"]}
        assert float(row["test.l2_error"]) == pytest.approx(outputs["l2_error"], rel=1e-12)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["test_accuracy"] is None
    assert summary["test_loss"] == tests[4]["loss"]
    nets = summary["test_nets"]
    assert [(n["test_net"], n["name"], n["test_iter"]) for n in nets] == [
        (0, "test-on-train", 7),
        (1, "test-on-test", 2),
    ]
    assert nets[1]["test_loss"] == tests[5]["loss"] and nets[1]["test_iteration"] == 4
    assert nets[1]["test_outputs"] == {o["name"]: o["value"] for o in tests[5]["outputs"]}
    last = result.stderr.splitlines()
    line = next(x for x in last if x.startswith("test net #1 (test-on-test) after 4"))
    assert f"loss {tests[5]['loss']:.5g}" in line


def test_a_resumed_run_keeps_each_test_nets_cursor(caffe_root):
    _, events = train(caffe_root, AE_SOLVER, "--max-iters", "2")
    folder = run_folder(events)
    _, resumed = train(caffe_root, "--resume", str(folder), "--max-iters", "4")
    _, straight = train(caffe_root, AE_SOLVER, out="straight")
    pick = [(e["test_net"], e["loss"]) for e in resumed if e["event"] == "eval_finished"]
    want = [(e["test_net"], e["loss"]) for e in straight if e["event"] == "eval_finished"]
    assert pick[-2:] == want[-2:]


def test_a_loss_weight_other_than_0_and_1_shows_caffes_product(caffe_root):
    write_autoencoder(caffe_root, l2_weight="0.5")
    result, events = train(caffe_root, AE_SOLVER, "--max-iters", "2")
    test = [e for e in events if e["event"] == "eval_finished"][-1]
    l2 = next(o for o in test["outputs"] if o["name"] == "l2_error")
    assert l2["loss_weight"] == 0.5 and l2["weighted"] == pytest.approx(0.5 * l2["value"])
    assert test["loss"] == pytest.approx(test["outputs"][0]["value"] + l2["weighted"], rel=1e-6)
    assert "(* 0.5 = " in result.stderr


def test_output_text_follows_caffes_print_rule():
    assert output_text(LossOutput("l2", 2.0, 0.0, 0.0)) == "l2 = 2"
    assert output_text(LossOutput("ce", 3.0, 1.0, 3.0)) == "ce = 3"
    assert output_text(LossOutput("l2", 2.0, 0.25, 0.5)) == "l2 = 2 (* 0.25 = 0.5 loss)"
    event = EvalFinished(5, 1.5, 0.75, 10)
    assert eval_line(event) == "test after 5 updates: accuracy 0.75, loss 1.5 (10 images)"


def test_cifar10_full_structure_trains_and_reports_its_accuracy(caffe_root):
    result, events = train(caffe_root, CIFAR_SOLVER)
    tests = [e for e in events if e["event"] == "eval_finished"]
    assert [e["iteration"] for e in tests] == [0, 2, 4]
    assert all(e["test_net"] == 0 and e["test_net_name"] == "" for e in tests)
    assert all(0.0 <= e["accuracy"] <= 1.0 for e in tests)
    assert [o["name"] for o in tests[0]["outputs"]] == ["loss"]
    lines = [line for line in result.stderr.splitlines() if line.startswith("test after")]
    assert len(lines) == 3 and "accuracy " in lines[0]
    summary = json.loads((run_folder(events) / "summary.json").read_text())
    assert "test_nets" not in summary and summary["test_accuracy"] == tests[-1]["accuracy"]


@pytest.mark.parametrize(
    ("solver", "rates"),
    [(AE_SOLVER, [0.01, 0.01, 0.001, 0.001]), (CIFAR_SOLVER, [0.001] * 4)],
)
def test_lr_schedule_reads_each_example_solver(caffe_root, solver, rates):
    result = runner.invoke(app, ["lr-schedule", solver, "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [row["iteration"] for row in rows][:4] == [0, 1, 2, 3]
    assert [row["lr"] for row in rows][:4] == pytest.approx(rates, rel=1e-6)


def test_plot_draws_one_test_curve_per_test_net(caffe_root):
    _, events = train(caffe_root, AE_SOLVER)
    folder = run_folder(events)
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    loss, _, accuracy, *_ = panels_from_runs([Run("run", rows)])
    tests = {curve.label: list(curve.y) for curve in loss.curves if curve.label.startswith("test")}
    want = [e for e in events if e["event"] == "eval_finished"]
    assert tests == {
        f"test loss #{net}": [e["loss"] for e in want if e["test_net"] == net] for net in (0, 1)
    }
    assert not accuracy.curves  # the autoencoder reports no accuracy


def test_the_live_dashboard_shows_each_test_net_and_no_accuracy_without_one(caffe_root):
    _, events = train(caffe_root, AE_SOLVER)
    kinds = {cls.kind: cls for cls in EVENT_TYPES}
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=160, record=True, no_color=True)
    dashboard = Dashboard(console)
    for data in events:
        if data["event"] == "eval_finished":
            outputs = tuple(LossOutput(**o) for o in data.pop("outputs"))
            dashboard.handle(kinds["eval_finished"](**{**data_fields(data), "outputs": outputs}))
    dashboard.close()
    text = console.export_text()
    tests = [e for e in events if e["event"] == "eval_finished"]
    assert "test loss #0" in text and "test loss #1" in text
    assert "test-on-train, after 4 updates" in text and "test-on-test, after 4 updates" in text
    assert f"{tests[5]['loss']:.5g}" in text
    assert "test accuracy" not in text


def data_fields(data: dict) -> dict:
    return {key: value for key, value in data.items() if key != "event"}
