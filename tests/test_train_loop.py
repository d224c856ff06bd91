"""engine.training.session: the loop's events, loss smoothing, per-layer norms, tests, checkpoints,
divergence, interruption and bit-exact resume — on tiny nets and a few hundred images written
by the tests themselves (no downloads, no real datasets)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from dnupdate.engine.config import load_config
from dnupdate.engine.training.events import schema
from dnupdate.engine.training.runfolder import RunFolder, load_state, read_metrics
from dnupdate.engine.training.session import (
    LayerNormTable,
    LossSmoother,
    TrainingSession,
    TrainOptions,
)

# ---- fixtures shared with the CLI tests -------------------------------------------------------

TINY_CFG = """[net]
batch={batch}
subdivisions={subdivisions}
height=6
width=6
channels=1
learning_rate={lr}
momentum=0.9
decay=0.0005
{extra}
policy=steps
steps=4
scales=.5
max_batches={max_batches}

[convolutional]
filters=3
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[dropout]
probability=.2

[connected]
output=4
activation=linear

[softmax]
"""

TINY_NET = """name: "tiny"
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
  transform_param {{ scale: 0.00390625 }}
  data_param {{ source: "{train}" batch_size: {batch} backend: LMDB }} }}
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
  transform_param {{ scale: 0.00390625 }}
  data_param {{ source: "{test}" batch_size: 10 backend: LMDB }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param {{ lr_mult: 1 }} param {{ lr_mult: 2 }}
  convolution_param {{ num_output: 3 kernel_size: 3 pad: 1 stride: 1
    weight_filler {{ type: "xavier" }} bias_filler {{ type: "constant" }} }} }}
layer {{ name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "pool1" top: "pool1" }}
layer {{ name: "drop1" type: "Dropout" bottom: "pool1" top: "pool1"
  dropout_param {{ dropout_ratio: 0.2 }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"
  param {{ lr_mult: 1 }} param {{ lr_mult: 2 }}
  inner_product_param {{ num_output: 4 weight_filler {{ type: "xavier" }}
    bias_filler {{ type: "constant" }} }} }}
layer {{ name: "accuracy" type: "Accuracy" bottom: "ip1" bottom: "label" top: "accuracy"
  include {{ phase: TEST }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }}
"""

TINY_SOLVER = """net: "{net}"
test_iter: 2
test_interval: {test_interval}
base_lr: {lr}
momentum: 0.9
weight_decay: 0.0005
lr_policy: "multistep"
gamma: 0.5
stepvalue: 3
stepvalue: 6
display: 2
average_loss: 3
max_iter: {max_iter}
iter_size: 2
{extra}
"""


def write_quadrants(path: Path, count: int = 96, seed: int = 0) -> Path:
    """A learnable 4-class set of 1×6×6 uint8 images: class k lights quadrant k, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 4
    images = rng.integers(0, 60, size=(count, 1, 6, 6))
    for index, label in enumerate(labels):
        row, col = divmod(int(label), 2)
        images[index, 0, row * 3 : row * 3 + 3, col * 3 : col * 3 + 3] += 180
    np.savez(path, x=images.astype(np.uint8), y=labels.astype(np.int64))
    return path


def darknet_config(
    folder: Path,
    *,
    batch=8,
    subdivisions=2,
    lr=0.1,
    extra="",
    max_batches=8,
) -> Path:
    path = folder / "tiny.cfg"
    text = TINY_CFG.format(
        batch=batch, subdivisions=subdivisions, lr=lr, extra=extra, max_batches=max_batches
    )
    path.write_text(text)
    return path


def caffe_config(folder: Path, data: Path, *, lr=0.05, extra="", max_iter=8, test_interval=3):
    net = folder / "tiny_net.prototxt"
    net.write_text(TINY_NET.format(train=data, test=data, batch=4))
    solver = folder / "tiny_solver.prototxt"
    solver.write_text(
        TINY_SOLVER.format(
            net=net.name, lr=lr, extra=extra, max_iter=max_iter, test_interval=test_interval
        )
    )
    return solver


@dataclass
class Tiny:
    """A temporary folder with the tiny data set and both configs."""

    root: Path
    data: Path
    darknet: Path
    caffe: Path


@pytest.fixture
def tiny(tmp_path) -> Tiny:
    data = write_quadrants(tmp_path / "quadrants.npz")
    return Tiny(tmp_path, data, darknet_config(tmp_path), caffe_config(tmp_path, data))


def session(config: Path, out: Path | None, *, sets=(), resume=False, **options):
    run = load_config(str(config), list(sets))
    opts = TrainOptions(**options)
    folder = None
    if out is not None:
        folder = RunFolder.open(out) if resume else RunFolder.create(out)
    return TrainingSession(run, opts, folder=folder, resume=resume, overrides=tuple(sets))


def run_all(config: Path, out: Path | None, **kwargs):
    return list(session(config, out, **kwargs).events())


# ---- loss smoothing -------------------------------------------------------------------------


def test_darknet_average_starts_at_the_first_loss_then_follows_the_ema():
    smoother = LossSmoother("darknet")
    losses = [2.0, 1.0, 4.0, 0.5]
    expected = []
    avg = None
    for loss in losses:
        avg = np.float32(loss) if avg is None else avg
        avg = np.float32(avg * np.float32(0.9) + np.float32(loss) * 0.1)
        expected.append(float(avg))
    got = [smoother.update(loss) for loss in losses]
    assert got == expected
    assert got[0] == pytest.approx(2.0)
    assert smoother.name == "avg_loss_ema"


def test_caffe_window_is_the_mean_of_the_last_n_losses():
    smoother = LossSmoother("caffe", average_loss=3)
    losses = [3.0, 1.0, 2.0, 6.0, 0.0, 9.0]
    for index, loss in enumerate(losses):
        value = smoother.update(loss)
        window = losses[max(0, index - 2) : index + 1]
        assert value == pytest.approx(sum(window) / len(window), rel=1e-6)  # float32
    assert smoother.name == "smoothed_loss_window3"


def test_smoother_state_round_trips():
    first = LossSmoother("caffe", average_loss=2)
    for loss in (1.0, 2.0, 5.0):
        first.update(loss)
    second = LossSmoother("caffe", average_loss=2)
    second.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert second.update(7.0) == first.update(7.0)


# ---- per-layer norms --------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeSegment:
    layer: str
    learnable: bool = True


@dataclass(frozen=True)
class FakeStats:
    weight_norms: np.ndarray
    step_norms: np.ndarray


def test_layer_norms_combine_blob_norms_in_quadrature_and_skip_running_statistics():
    segments = [FakeSegment("a"), FakeSegment("a"), FakeSegment("a", False), FakeSegment("b")]
    stats = FakeStats(np.array([3.0, 4.0, 100.0, 0.0]), np.array([0.3, 0.4, 0.0, 0.0]))
    table = LayerNormTable(segments)
    a, b = table.norms(stats)
    assert (a.layer, a.w_norm, a.dw_norm) == ("a", 5.0, pytest.approx(0.5))
    assert a.ratio == pytest.approx(0.1)
    assert (b.layer, b.w_norm, b.ratio) == ("b", 0.0, 0.0)
    assert a.g_norm is None  # no gradient norms given
    a, b = table.norms(stats, np.array([1.0, 2.0, 7.0, 0.5]))
    assert a.g_norm == pytest.approx(np.sqrt(5.0)) and b.g_norm == 0.5  # running stats left out


# ---- the loop --------------------------------------------------------------------------------


def test_events_follow_the_schema_and_metrics_have_every_update(tiny):
    out = tiny.root / "run"
    events = run_all(tiny.darknet, out, data=f"npz:{tiny.data}", eval_every=4)
    contract = schema()
    for event in events:
        line = json.dumps(event.to_json(), allow_nan=False)
        assert tuple(json.loads(line)) == contract[event.kind]
    kinds = [e.kind for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert kinds.count("step_finished") == 8
    steps = [e for e in events if e.kind == "step_finished"]
    assert [s.iteration for s in steps] == list(range(1, 9))
    assert [s.seen for s in steps] == [8 * i for i in range(1, 9)]
    # darknet steps policy: batch 4 is the first with the halved rate (rate(b), b = update k)
    assert [s.lr for s in steps[:5]] == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05])
    evals = [e.iteration for e in events if e.kind == "eval_finished"]
    assert evals == [0, 4, 8]
    rows = read_metrics(out)
    train = [r for r in rows if r["kind"] == "train"]
    assert [r["iteration"] for r in train] == list(range(1, 9))
    assert {"avg_loss_ema", "0.w_norm", "0.g_norm", "0.dw_norm", "3.ratio"} <= set(train[0])
    assert all(r["0.w_norm"] > 0 and r["0.dw_norm"] > 0 and r["0.g_norm"] > 0 for r in train)
    reported = [e for e in events if e.kind == "norms_reported"]
    assert reported and all(layer.g_norm > 0 for e in reported for layer in e.layers)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "done" and summary["iteration"] == 8
    assert summary["final_loss"] == pytest.approx(steps[-1].loss)
    last_eval = [e for e in events if e.kind == "eval_finished"][-1]
    assert summary["test_accuracy"] == last_eval.accuracy


def test_caffe_loop_tests_on_schedule_and_smooths_over_average_loss(tiny):
    out = tiny.root / "caffe"
    events = run_all(tiny.caffe, out, checkpoint_every=4)
    # Caffe's snapshot name: <snapshot_prefix, default the solver's path>_iter_<N>.caffemodel
    assert (out / "checkpoints" / "tiny_solver_iter_4.caffemodel").exists()
    evals = [e for e in events if e.kind == "eval_finished"]
    # test_initialization, then every test_interval = 3, and a test of the final weights at
    # max_iter = 8, which Solver::Solve would not run (8 % 3 != 0) and a status says so
    assert [e.iteration for e in evals] == [0, 3, 6, 8]
    notes = [e.message for e in events if e.kind == "status" and "final weights" in e.message]
    assert len(notes) == 1 and "not a multiple of test_interval 3" in notes[0]
    assert all(e.images == 20 for e in evals)  # test_iter 2 × batch 10
    steps = [e for e in events if e.kind == "step_finished"]
    # Caffe numbering: the k-th update is iteration it = k - 1 (the rate it used is rate(it))
    assert [s.iteration for s in steps] == list(range(8))
    assert [s.updates for s in steps] == list(range(1, 9))
    losses = [s.loss for s in steps]
    for index, step in enumerate(steps):
        window = losses[max(0, index - 2) : index + 1]
        assert step.smoothed_loss == pytest.approx(sum(window) / len(window), rel=1e-6)
    # multistep at 3 and 6 with gamma 0.5, Caffe's rate(iter) with iter = updates applied
    assert [s.lr for s in steps] == pytest.approx([0.05] * 3 + [0.025] * 3 + [0.0125] * 2)
    assert [s.seen for s in steps] == [8 * i for i in range(1, 9)]  # batch 4 × iter_size 2
    assert (out / "final.caffemodel").exists() and not (out / "final.weights").exists()


def test_training_lowers_the_loss_and_raises_the_accuracy(tiny):
    events = run_all(
        tiny.darknet,
        None,
        sets=[("max_batches", "40"), ("steps", "100")],
        data=f"npz:{tiny.data}",
        eval_every=40,
    )
    evals = [e for e in events if e.kind == "eval_finished"]
    steps = [e for e in events if e.kind == "step_finished"]
    assert evals[-1].accuracy > evals[0].accuracy + 0.3
    assert np.mean([s.loss for s in steps[-5:]]) < np.mean([s.loss for s in steps[:5]])


def _final_bytes(folder: Path) -> bytes:
    return (folder / "final.npz").read_bytes()


@pytest.mark.parametrize(
    ("kind", "sets"),
    [
        ("darknet", []),
        ("darknet", [("adam", "1"), ("learning_rate", "0.01")]),
        ("caffe", []),
        ("caffe", [("type", "Adam"), ("base_lr", "0.01")]),
    ],
    ids=["darknet-momentum", "darknet-adam", "caffe-momentum", "caffe-adam"],
)
def test_k_updates_then_resume_equals_n_straight(tiny, kind, sets):
    config = tiny.darknet if kind == "darknet" else tiny.caffe
    data = {"data": f"npz:{tiny.data}"} if kind == "darknet" else {}
    straight, split = tiny.root / "straight", tiny.root / "split"
    run_all(config, straight, sets=sets, max_iters=7, **data)
    run_all(config, split, sets=sets, max_iters=3, **data)
    resumed = run_all(config, split, sets=sets, resume=True, max_iters=7, **data)
    assert resumed[0].start_iteration == 3 and resumed[0].resumed
    assert _final_bytes(straight) == _final_bytes(split)
    a, b = np.load(straight / "final.npz"), np.load(split / "final.npz")
    assert sorted(a.files) == sorted(b.files)
    train = [r for r in read_metrics(split) if r["kind"] == "train"]
    # darknet numbers the k-th update b = k, Caffe it = k - 1 (the resume drops none, repeats none)
    first = 0 if kind == "caffe" else 1
    assert [r["iteration"] for r in train] == list(range(first, first + 7))
    straight_losses = [r["loss"] for r in read_metrics(straight) if r["kind"] == "train"]
    assert [r["loss"] for r in train] == straight_losses


def test_resume_drops_metrics_rows_written_after_the_checkpoint(tiny):
    out = tiny.root / "run"
    run_all(tiny.darknet, out, data=f"npz:{tiny.data}", max_iters=3)
    with open(out / "metrics.jsonl", "a") as handle:  # a run that died after its checkpoint
        handle.write(json.dumps({"kind": "train", "iteration": 4, "loss": 1.0}) + "\n")
    run_all(tiny.darknet, out, resume=True, data=f"npz:{tiny.data}", max_iters=5)
    iterations = [r["iteration"] for r in read_metrics(out) if r["kind"] == "train"]
    assert iterations == [1, 2, 3, 4, 5]


def test_divergence_names_iteration_and_layer_and_keeps_the_last_good_checkpoint(tiny):
    out = tiny.root / "run"
    config = darknet_config(tiny.root, lr=1e9, subdivisions=1)
    events = run_all(config, out, data=f"npz:{tiny.data}", checkpoint_every=1, eval_every=0)
    diverged = [e for e in events if e.kind == "diverged"]
    assert len(diverged) == 1
    event = diverged[0]
    assert event.iteration >= 1
    assert event.layer in {"0", "1", "2", "3", "4"}  # a layer of the cfg, by index
    assert str(event.iteration) in event.what
    assert events[-1].kind == "run_finished" and events[-1].status == "diverged"
    assert not (out / "final.npz").exists()
    if event.iteration > 1:
        state = load_state(out / "state.npz")
        assert int(state["trainer.iteration"]) == event.iteration - 1
        assert event.last_checkpoint.endswith(f"iter_{event.iteration - 1:06d}.npz")
        params = state["trainer.params"]
        assert np.isfinite(params).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged"


def test_a_stop_request_checkpoints_and_ends_interrupted(tiny):
    out = tiny.root / "run"
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return "SIGINT" if calls["n"] > 2 else None

    events = list(session(tiny.darknet, out, data=f"npz:{tiny.data}").events(stop))
    kinds = [e.kind for e in events]
    assert kinds[-3:] == ["checkpoint_saved", "interrupted", "run_finished"]
    assert events[-1].status == "interrupted" and events[-2].iteration == 2
    assert int(load_state(out / "state.npz")["trainer.iteration"]) == 2
    assert (out / "checkpoints" / "iter_000002.npz").exists()
    assert (out / "checkpoints" / "tiny_2.weights").exists()  # darknet's <cfg>_<N>.weights


def test_no_iteration_limit_is_a_setup_error(tiny):
    from dnupdate.engine.training.session import TrainSetupError

    config = darknet_config(tiny.root, max_batches=0)
    with pytest.raises(TrainSetupError, match="max-iters"):
        session(config, None, data=f"npz:{tiny.data}")


def test_data_of_the_wrong_shape_is_a_setup_error(tiny):
    from dnupdate.engine.training.session import TrainSetupError

    other = tiny.root / "wide.npz"
    np.savez(other, x=np.zeros((8, 1, 5, 7), np.uint8), y=np.zeros(8, np.int64))
    with pytest.raises(TrainSetupError, match="1×5×7"):
        session(tiny.darknet, None, data=f"npz:{other}")


def test_cuda_without_a_device_is_a_setup_error(tiny):
    from dnupdate.engine.training.session import TrainSetupError, make_backend

    try:
        backend = make_backend("cuda")
    except TrainSetupError as exc:
        assert "cuda" in str(exc).lower()
    else:  # a CUDA device (or the simulator) is present here
        assert backend is not None


def test_data_notes_reach_the_event_stream_once(tiny):
    """A Caffe net whose mean_file is missing trains on the computed training-set mean, and the
    run says so in status events right after run_started (each distinct note once)."""
    net = tiny.caffe.parent / "tiny_net.prototxt"
    net.write_text(
        net.read_text().replace(
            "transform_param { scale: 0.00390625 }",
            'transform_param { scale: 0.00390625 mean_file: "no_such_mean.binaryproto" }',
        )
    )
    events = run_all(tiny.caffe, None, max_iters=1, eval_every=0)
    assert events[0].__class__.__name__ == "RunStarted"
    messages = [e.message for e in events if e.__class__.__name__ == "Status"]
    mean_notes = [m for m in messages if "no_such_mean.binaryproto" in m]
    # one line for the missing file, not one per sampler in two wordings
    assert len(mean_notes) == 1 and "mean image" in mean_notes[0], messages
    assert "quadrants.npz" in mean_notes[0]  # the training set whose mean is used
    assert messages.index(mean_notes[0]) < messages.index("training")
