"""engine.training.session against BVLC/caffe ``solver.cpp``: display numbering (``Solver::Step``),
the
float32 smoothed loss (``Solver::UpdateSmoothedLoss``), when ``Solver::Solve``/``Step`` test,
and the seed (``SolverParameter.random_seed``). Tiny nets and data written by the tests."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from dnupdate.cli.dashboard import PlainLines
from dnupdate.engine.config import load_config
from dnupdate.engine.training.session import LossSmoother, display_label, resolve_seed
from tests.test_train_loop import TINY_NET, Tiny, caffe_config, run_all, session, write_quadrants


@pytest.fixture
def tiny(tmp_path) -> Tiny:
    data = write_quadrants(tmp_path / "quadrants.npz")
    return Tiny(tmp_path, data, tmp_path / "unused.cfg", caffe_config(tmp_path, data))


SOLVER = """net: "{net}"
{test}
base_lr: 0.01
momentum: 0.9
weight_decay: 0.0005
lr_policy: "inv"
gamma: 0.0001
power: 0.75
display: {display}
average_loss: {average_loss}
max_iter: {max_iter}
{extra}
"""


def caffe_solver(
    folder: Path,
    data: Path,
    *,
    max_iter: int,
    display: int = 100,
    test: str = "",
    average_loss: int = 1,
    extra: str = "",
) -> Path:
    """A Caffe solver on the tiny net with MNIST's lenet_solver schedule (inv, 0.01, 1e-4, .75)."""
    net = folder / "tiny_net.prototxt"
    net.write_text(TINY_NET.format(train=data, test=data, batch=4))
    solver = folder / "solver.prototxt"
    solver.write_text(
        SOLVER.format(
            net=net.name,
            test=test,
            display=display,
            average_loss=average_loss,
            max_iter=max_iter,
            extra=extra,
        )
    )
    return solver


# ---- (2) display numbering: Solver::Step logs "Iteration k" before ++iter_ ----------------------


def test_display_label_follows_each_frameworks_numbering():
    # Caffe: update k+1's forward is displayed as "Iteration k" when k % display == 0
    assert [display_label("caffe", i, 100) for i in (1, 2, 100, 101, 201)] == [
        0,
        None,
        None,
        100,
        200,
    ]
    # darknet: the batch number after the update, every display interval and the first
    assert [display_label("darknet", i, 100) for i in (1, 2, 100, 101)] == [1, None, 100, None]


def test_caffe_display_line_matches_the_mnist_log_lr_at_iteration_100(tiny):
    """BVLC/caffe examples/mnist (lenet_solver: inv, base_lr .01, gamma 1e-4, power .75) logs
    "Iteration 100, lr = 0.00992565": ApplyUpdate prints rate() with iter_ = 100, i.e. the
    rate of the 101st update."""
    config = caffe_solver(tiny.root, tiny.data, max_iter=101)
    stream = io.StringIO()
    plain = PlainLines(stream)
    events = run_all(config, None, data=f"npz:{tiny.data}")
    for event in events:
        plain.handle(event)
    lines = [line for line in stream.getvalue().splitlines() if line.startswith("iter ")]
    assert [line.split()[1] for line in lines] == ["0", "100"]
    assert lines[1].startswith("iter 100 (update 101/101)")
    assert "lr 0.00992565," in lines[1]
    # every output numbers the update as Caffe does: it = 100 is the 101st update
    steps = [e for e in events if e.kind == "step_finished"]
    assert steps[100].iteration == 100 and steps[100].updates == 101
    assert f"{steps[100].lr:.6g}" == "0.00992565"
    norms = [e.iteration for e in events if e.kind == "norms_reported"]
    assert norms == [0, 100]  # the updates whose forward Caffe displays


# ---- (1) Solver::UpdateSmoothedLoss in float32 --------------------------------------------------


def caffe_update_smoothed_loss(losses: list[float], average_loss: int) -> list[float]:
    """BVLC/caffe ``Solver<float>::UpdateSmoothedLoss`` transcribed with NumPy float32 scalars:
    ``smoothed_loss_ = (smoothed_loss_ * (size - 1) + loss) / size`` while filling, then
    ``smoothed_loss_ += (loss - losses_[idx]) / average_loss``."""
    f32 = np.float32
    kept: list[np.float32] = []
    smoothed = f32(0)
    out = []
    for index, loss in enumerate(losses):
        loss = f32(loss)
        if len(kept) < average_loss:
            kept.append(loss)
            size = len(kept)
            smoothed = f32(f32(f32(smoothed * f32(size - 1)) + loss) / f32(size))
        else:
            idx = index % average_loss
            smoothed = f32(smoothed + f32(f32(loss - kept[idx]) / f32(average_loss)))
            kept[idx] = loss
        out.append(float(smoothed))
    return out


def test_caffe_smoothed_loss_rounds_every_operation_to_float32():
    losses = [float(v) for v in np.random.default_rng(7).uniform(0.1, 2.5, 40).astype(np.float32)]
    smoother = LossSmoother("caffe", average_loss=7)
    got = [smoother.update(loss) for loss in losses]
    assert got == caffe_update_smoothed_loss(losses, 7)
    # the float64 recurrence drifts away from it: the test can tell the two apart
    value, window, double = 0.0, [], []
    for index, loss in enumerate(losses):
        if len(window) < 7:
            window.append(loss)
            value = (value * (len(window) - 1) + loss) / len(window)
        else:
            value += (loss - window[index % 7]) / 7
            window[index % 7] = loss
        double.append(value)
    assert got != double
    assert got == pytest.approx(double, rel=1e-5)


# ---- (3) Solver::Solve's final test (iter_ % test_interval == 0), and dnupdate's own ---------


@pytest.mark.parametrize(("max_iter", "tests"), [(6, [3, 6]), (7, [3, 6, 7])])
def test_caffe_run_ends_with_a_test_only_on_the_test_interval(tiny, max_iter, tests):
    config = caffe_solver(
        tiny.root, tiny.data, max_iter=max_iter, test="test_iter: 1\ntest_interval: 3"
    )
    events = run_all(config, None, data=f"npz:{tiny.data}")
    # test_initialization (default true) adds iteration 0; the run always ends with a test of
    # its final weights, in Solve's order (after the final snapshot); where Solve would not
    # run it (7 % 3 != 0) a status says so
    assert [e.iteration for e in events if e.kind == "eval_finished"] == [0, *tests]
    assert events[-1].summary["test_iteration"] == max_iter
    assert events[-1].summary["test_is_final"] is True
    notes = [e for e in events if e.kind == "status" and "Solve would not test" in e.message]
    assert len(notes) == (max_iter % 3 != 0)


def test_eval_every_0_skips_the_final_test_and_the_summary_says_which_test_it_holds(tiny):
    config = caffe_solver(tiny.root, tiny.data, max_iter=4, test="test_iter: 1\ntest_interval: 3")
    events = run_all(config, None, data=f"npz:{tiny.data}", eval_every=0)
    assert [e.iteration for e in events if e.kind == "eval_finished"] == []
    summary = events[-1].summary
    assert summary["test_iteration"] is None and summary["test_is_final"] is False


def test_darknet_config_still_ends_with_a_test(tmp_path):
    from tests.test_train_loop import darknet_config

    data = write_quadrants(tmp_path / "q.npz")
    events = run_all(darknet_config(tmp_path, max_batches=5), None, data=f"npz:{data}")
    evals = [e.iteration for e in events if e.kind == "eval_finished"]
    assert evals[-1] == 5


# ---- (5) Solver::InitTestNets: no test_iter, no test net, no test --------------------------------


@pytest.mark.parametrize("test", ["", "test_iter: 0\ntest_interval: 2", "test_interval: 2"])
def test_caffe_config_without_test_iter_never_tests(tiny, test):
    config = caffe_solver(tiny.root, tiny.data, max_iter=4, test=test)
    events = run_all(config, None, data=f"npz:{tiny.data}", eval_every=2)
    assert not [e for e in events if e.kind == "eval_finished"]
    assert events[0].test_images == 0 and events[0].eval_every == 0
    assert events[-1].status == "done" and events[-1].summary["test_accuracy"] is None


# ---- (6) SolverParameter.random_seed / darknet seed=: --seed > config > 0 ----------------


def _initial_params(config: Path, data: Path, **options) -> tuple[int, np.ndarray]:
    live = session(config, None, data=f"npz:{data}", **options)
    return live.started_event().seed, live.backend.to_host(live.trainer.network.params)


def test_the_configs_random_seed_is_used_when_no_seed_is_given(tiny):
    """Caffe ``Solver::Init``: ``if (param_.random_seed() >= 0) Caffe::set_random_seed(...)``."""
    seeded = caffe_solver(tiny.root, tiny.data, max_iter=2, extra="random_seed: 5")
    seed, params = _initial_params(seeded, tiny.data)
    assert seed == 5
    np.testing.assert_array_equal(params, _initial_params(seeded, tiny.data, seed=5)[1])
    assert not np.array_equal(params, _initial_params(seeded, tiny.data, seed=0)[1])
    # --seed wins over the config
    assert _initial_params(seeded, tiny.data, seed=9)[0] == 9
    # Caffe's default -1 (from the clock) is not reproducible: the simulator uses 0
    unseeded = caffe_solver(tiny.root, tiny.data, max_iter=2)
    assert _initial_params(unseeded, tiny.data)[0] == 0


def test_a_darknet_seed_key_seeds_the_run(tmp_path):
    from tests.test_train_loop import darknet_config

    data = write_quadrants(tmp_path / "q.npz")
    config = darknet_config(tmp_path, extra="seed=11")
    assert resolve_seed(None, load_config(str(config))) == 11
    assert resolve_seed(3, load_config(str(config))) == 3
    seed, params = _initial_params(config, data)
    assert seed == 11
    np.testing.assert_array_equal(params, _initial_params(config, data, seed=11)[1])


# ---- (4) Solver::Step after a restore: test at once when iter_ % test_interval == 0 -----------


def test_a_resumed_caffe_run_tests_at_once_on_the_test_interval(tiny):
    """``Solver::Step`` tests at the top of its loop when ``iter_ % test_interval == 0`` and
    ``iter_ > 0``: a run restored at 6 (interval 3) tests at 6 before its first update."""
    out = tiny.root / "run"
    first = run_all(tiny.caffe, out, max_iters=6)
    assert [e.iteration for e in first if e.kind == "eval_finished"] == [0, 3, 6]
    resumed = run_all(tiny.caffe, out, resume=True, max_iters=8)
    kinds = [e.kind for e in resumed]
    assert kinds.index("eval_finished") < kinds.index("step_finished")
    # and a test of the final weights at 8, which Caffe would not run (8 % 3 != 0)
    assert [e.iteration for e in resumed if e.kind == "eval_finished"] == [6, 8]
    # off the interval (resumed at 4): no test before the first update
    other = tiny.root / "other"
    run_all(tiny.caffe, other, max_iters=4)
    again = run_all(tiny.caffe, other, resume=True, max_iters=8)
    assert [e.iteration for e in again if e.kind == "eval_finished"] == [6, 8]


def test_a_resumed_darknet_run_does_not_test_at_once(tmp_path):
    from tests.test_train_loop import darknet_config

    data = write_quadrants(tmp_path / "q.npz")
    config = darknet_config(tmp_path)  # max_batches 8: a test every update (a tenth, at least 1)
    out = tmp_path / "run"
    run_all(config, out, data=f"npz:{data}", max_iters=4)
    resumed = run_all(config, out, resume=True, data=f"npz:{data}", max_iters=6)
    kinds = [e.kind for e in resumed]
    assert kinds.index("step_finished") < kinds.index("eval_finished")


# ---- (3, note) Solver::Solve: one more training forward when iter_ % display == 0 -------------

BN_LAYER = """layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "pool1\""""


def _bn_session(tiny: Tiny, *, max_iter: int, display: int):
    config = caffe_solver(tiny.root, tiny.data, max_iter=max_iter, display=display)
    net = tiny.root / "tiny_net.prototxt"
    net.write_text(net.read_text().replace('layer { name: "pool1"', BN_LAYER))
    live = session(config, tiny.root / f"run{max_iter}", data=f"npz:{tiny.data}")
    return live, list(live.events())


def _bn_blobs(arrays) -> list[np.ndarray]:
    return [np.asarray(arrays[key]) for key in sorted(arrays) if key.startswith("bn1/")]


@pytest.mark.parametrize(("max_iter", "extra"), [(4, True), (5, False)])
def test_caffe_runs_one_more_training_forward_after_the_last_update_when_displaying(
    tiny, max_iter, extra
):
    live, events = _bn_session(tiny, max_iter=max_iter, display=2)
    status = [e.message for e in events if e.kind == "status" and "extra" in e.message]
    assert len(status) == (1 if extra else 0)
    kinds = [e.kind for e in events]
    if extra:  # after the final snapshot (Caffe snapshots first)
        assert kinds.index("checkpoint_saved") < kinds.index("status", kinds.index("step_finished"))
    steps = [e for e in events if e.kind == "step_finished"]
    summary = events[-1].summary
    assert (summary["final_smoothed_loss"] != steps[-1].smoothed_loss) == extra
    saved = _bn_blobs(np.load(live.folder.path / "final.npz"))
    now = _bn_blobs(dict(live.trainer.network.named_blobs()))
    assert len(saved) == 3  # mean sum, variance sum, scale factor
    moved = any(not np.array_equal(a, b) for a, b in zip(saved, now, strict=True))
    assert moved == extra  # the forward moved the BatchNorm running sums, after the snapshot
