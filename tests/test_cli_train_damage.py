"""``dnupdate train`` on damaged data, weights and run folders (issue 18, items 7-10, 15, 16):
exit 1 with a message naming what is damaged, never a traceback, nothing written lost."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dnupdate.cli.main import app
from dnupdate.engine.config import load_config
from dnupdate.engine.formats.weights import write_darknet_weights
from dnupdate.engine.training.runfolder import load_state, read_metrics, save_state
from dnupdate.engine.training.step import Trainer
from tests.test_train_loop import Tiny, caffe_config, darknet_config, write_quadrants

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


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


# ---- --resume on damaged folders (items 10, 16) -----------------------------------------------


@pytest.fixture
def stopped(tiny) -> Path:
    """A darknet run stopped after 6 of 8 updates, checkpoints at 2, 4 and 6."""
    out = tiny.root / "run"
    args = [str(tiny.darknet), "--data", f"npz:{tiny.data}", "--out", str(out), "-q"]
    result = train(*args, "--max-iters", "6", "--checkpoint-every", "2")
    assert result.exit_code == 0, result.output
    return out


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x40
    path.write_bytes(bytes(data))


def _rewrite_meta(path: Path, change) -> None:
    state = load_state(path)
    change(state)
    save_state(path, state)


DAMAGE = {
    "truncated state": lambda d: (d / "state.npz").write_bytes(
        (d / "state.npz").read_bytes()[:300]
    ),
    "bit-flipped state": lambda d: _flip(d / "state.npz", 2000),
    "0-byte state": lambda d: (d / "state.npz").write_bytes(b""),
    "negative iteration": lambda d: _rewrite_meta(
        d / "state.npz", lambda s: s.update({"trainer.iteration": -3})
    ),
    "string seen": lambda d: _rewrite_meta(
        d / "state.npz", lambda s: s.update({"trainer.seen": "many"})
    ),
    "sampler missing": lambda d: _rewrite_meta(d / "state.npz", lambda s: s.pop("sampler.train")),
    "sampler garbage": lambda d: _rewrite_meta(
        d / "state.npz", lambda s: s.update({"sampler.train": {"position": 1, "rng": [1]}})
    ),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_state_names_itself_and_the_newest_intact_checkpoint(stopped, damage):
    before = (stopped / "metrics.jsonl").read_bytes()
    DAMAGE[damage](stopped)
    result = train("--resume", str(stopped), "-q")
    assert_bad_input(result, "state.npz", "damaged", "--resume")
    assert str(stopped / "checkpoints" / "iter_000004.npz") in result.stderr
    assert (stopped / "metrics.jsonl").read_bytes() == before  # nothing lost


def test_resume_from_a_checkpoint_equals_a_straight_run(tiny, stopped):
    straight = tiny.root / "straight"
    args = [str(tiny.darknet), "--data", f"npz:{tiny.data}", "-q"]
    assert train(*args, "--out", str(straight)).exit_code == 0
    (stopped / "state.npz").write_bytes(b"")  # damaged: go back to the checkpoint at 4
    result = train("--resume", str(stopped / "checkpoints" / "iter_000004.npz"), "-q")
    assert result.exit_code == 0, result.output
    assert (straight / "final.npz").read_bytes() == (stopped / "final.npz").read_bytes()
    iterations = [r["iteration"] for r in read_metrics(stopped) if r["kind"] == "train"]
    assert iterations == list(range(1, 9))


def test_a_checkpoint_without_a_full_state_is_refused(stopped):
    (stopped / "checkpoints" / "iter_000004.state.npz").unlink()
    result = train("--resume", str(stopped / "checkpoints" / "iter_000004.npz"))
    assert_bad_input(result, "iter_000004.npz", "no full state")


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("metrics.jsonl", b"\xff\xfe\x00binary", "not UTF-8"),
        ("metrics.jsonl", b'{"kind": "train", "iteration": 1}\n[1, 2]\n', "line 2"),
        ("metrics.jsonl", b'{"kind": "train", "iteration": "x"}\n', "line 1"),
        ("metrics.csv", b"kind,iteration\ntrain,1\ntrain,two\n", "line 3"),
        ("run.json", b"{}", "'config_path'"),
        ("run.json", b'{"config_path": 3}', "'config_path'"),
        ("run.json", b'{"config_path": "a.cfg", "overrides": [[1]]}', "'overrides'"),
        ("run.json", b'{"config_path": "a.cfg", "options": []}', "'options'"),
        ("run.json", b"\x00\x01", "JSON"),
    ],
)
def test_damaged_metrics_and_run_json_are_named(stopped, name, content, needle):
    (stopped / name).write_bytes(content)
    result = train("--resume", str(stopped), "-q")
    assert_bad_input(result, name, needle)


def test_wrong_option_types_in_run_json_are_named(stopped):
    info = json.loads((stopped / "run.json").read_text())
    info["options"]["max_iters"] = "ten"
    (stopped / "run.json").write_text(json.dumps(info))
    assert_bad_input(train("--resume", str(stopped)), "run.json", "'max_iters'")
    info["options"] = {"no_such_option": 1}
    (stopped / "run.json").write_text(json.dumps(info))
    assert_bad_input(train("--resume", str(stopped)), "run.json", "'no_such_option'")


def test_a_folder_in_place_of_summary_json_is_refused_before_training(stopped):
    (stopped / "summary.json").unlink()
    (stopped / "summary.json").mkdir()
    before = (stopped / "state.npz").read_bytes()
    result = train("--resume", str(stopped), "-q")
    assert_bad_input(result, "summary.json", "not a file")
    assert (stopped / "state.npz").read_bytes() == before


def test_a_partial_last_csv_row_is_dropped_on_resume(stopped):
    with open(stopped / "metrics.csv", "ab") as handle:
        handle.write(b"train,7,56,0.5,0.1")  # cut short by a crash: no newline
    assert train("--resume", str(stopped), "-q").exit_code == 0
    rows = (stopped / "metrics.csv").read_text().splitlines()
    iterations = [row.split(",")[1] for row in rows[1:] if row.startswith("train")]
    assert iterations == [str(i) for i in range(1, 9)]


def test_a_deleted_checkpoints_folder_is_recreated(stopped):
    shutil.rmtree(stopped / "checkpoints")
    result = train("--resume", str(stopped), "--json", "-q")
    assert result.exit_code == 0, result.output
    assert "recreated" in result.stdout
    assert (stopped / "checkpoints").is_dir() and (stopped / "final.npz").is_file()


def test_temporary_files_left_by_kill_9_are_removed_on_resume(stopped):
    leftovers = [
        stopped / "checkpoints" / ".iter_000008.npz.k3j2_x.tmp",
        stopped / ".state.npz.abcd.tmp",
    ]
    for path in leftovers:
        path.write_bytes(b"half a file")
    result = train("--resume", str(stopped), "--json", "-q")
    assert result.exit_code == 0, result.output
    assert "removed 2 temporary file(s)" in result.stdout
    assert not any(path.exists() for path in leftovers)
    assert not list(stopped.rglob("*.tmp"))


# ---- the run folder's lock (item 15) ----------------------------------------------------------

HOLD = """
import sys, time
from dnupdate.engine.training.runfolder import RunFolder
folder = RunFolder.create(sys.argv[1])
print("locked", flush=True)
time.sleep(60)
"""


def _holder(out: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline() == "locked\n"
    return process


def test_a_second_run_on_the_same_folder_exits_1_naming_the_holder(tiny):
    out = tiny.root / "run"
    holder = _holder(out)
    try:
        args = [str(tiny.darknet), "--data", f"npz:{tiny.data}", "--out", str(out), "-q"]
        result = train(*args)
        assert_bad_input(result, "in use by another run", f"pid {holder.pid}")
        assert out.is_dir()  # the other run's folder is left alone
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_killed_run_is_taken_over_and_reported(tiny):
    out = tiny.root / "run"
    holder = _holder(out)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    args = [str(tiny.darknet), "--data", f"npz:{tiny.data}", "--out", str(out), "--json", "-q"]
    result = train(*args)
    assert result.exit_code == 0, result.output
    assert f"previous run (pid {holder.pid}" in result.stdout
    assert (out / "run.lock").read_text() == ""  # released cleanly at the end


def test_kill_9_then_resume_is_byte_identical_and_takes_the_lock_over(tiny):
    """A run killed with SIGKILL right after a checkpoint resumes to the same final.npz as a
    straight run, removing the temporaries and taking the dead run's lock over."""
    config = darknet_config(tiny.root, max_batches=100)  # long enough to be killed mid-way
    args = [str(config), "--data", f"npz:{tiny.data}", "--eval-every", "0", "-q"]
    straight, killed = tiny.root / "straight", tiny.root / "killed"
    assert train(*args, "--out", str(straight)).exit_code == 0
    dnupdate = str(Path(sys.executable).with_name("dnupdate"))
    command = [dnupdate, "train", *args, "--out", str(killed)]
    process = subprocess.Popen([*command, "--checkpoint-every", "1"], cwd=ROOT)
    state = killed / "checkpoints" / "iter_000002.state.npz"
    try:
        for _ in range(6000):  # poll up to a minute for the checkpoint at 2
            if state.exists() or process.poll() is not None:
                break
            time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL and state.exists()
    (killed / "checkpoints" / ".iter_000009.npz.abc.tmp").write_bytes(b"")  # as a killed write
    result = train("--resume", str(killed), "--json", "-q")
    assert result.exit_code == 0, result.output
    assert (straight / "final.npz").read_bytes() == (killed / "final.npz").read_bytes()
    assert not list(killed.rglob("*.tmp"))
    assert f"previous run (pid {process.pid}" in result.stdout
