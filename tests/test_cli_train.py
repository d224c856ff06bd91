"""``dnupdate train`` through Typer's runner and as a subprocess: exit codes, the JSON event
stream and its schema, the run folder's files, plain (non-TTY) output, resume, stdin configs,
``--no-shuffle`` on one fixed batch, and SIGINT."""

from __future__ import annotations

import json
import os
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
from dnupdate.engine.formats.caffemodel import read_caffemodel
from dnupdate.engine.formats.weights import read_darknet_weights
from dnupdate.engine.training.events import schema
from dnupdate.engine.training.step import run_fixed_batch
from tests.test_train_loop import Tiny, caffe_config, darknet_config, write_quadrants

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def tiny(tmp_path, monkeypatch) -> Tiny:
    monkeypatch.chdir(tmp_path)  # the default run folder, runs/..., lands here
    data = write_quadrants(tmp_path / "quadrants.npz")
    return Tiny(tmp_path, data, darknet_config(tmp_path), caffe_config(tmp_path, data))


def train(*args: str, input: str | None = None):
    return runner.invoke(app, ["train", *args], input=input, env={"NO_COLOR": "1"})


def json_events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def check_schema(events: list[dict]) -> None:
    contract = schema()
    for event in events:
        assert tuple(event) == contract[event["event"]], event["event"]


# ---- success paths --------------------------------------------------------------------------


def test_json_stream_follows_the_schema_and_the_folder_holds_every_file(tiny):
    out = tiny.root / "run"
    result = train(
        str(tiny.darknet), "--data", f"npz:{tiny.data}", "--out", str(out), "--json", "--quiet"
    )
    assert result.exit_code == 0, result.output
    events = json_events(result.stdout)
    check_schema(events)
    names = [e["event"] for e in events]
    assert names[0] == "run_started" and names[-1] == "run_finished"
    assert {"step_finished", "norms_reported", "eval_finished", "checkpoint_saved"} <= set(names)
    started = events[0]
    assert started["config"]["solver"]["minibatch"] == 4  # resolved: batch 8 / subdivisions 2
    assert started["smoothed_loss_name"] == "avg_loss_ema"
    assert events[-1]["status"] == "done" and events[-1]["summary"]["iteration"] == 8
    for name in (
        "config.original.cfg",
        "config.resolved.json",
        "run.json",
        "metrics.jsonl",
        "metrics.csv",
        "state.npz",
        "final.npz",
        "final.weights",
        "summary.json",
    ):
        assert (out / name).is_file(), name
    run = load_config(str(tiny.darknet))
    header, weights = read_darknet_weights(out / "final.weights", run.net)
    assert header.seen == 64  # 8 updates × batch 8
    final = np.load(out / "final.npz")
    assert sorted(final.files) == sorted(weights)
    for key in weights:
        np.testing.assert_array_equal(final[key], weights[key])


def test_caffe_run_writes_a_caffemodel_holding_the_final_parameters(tiny):
    out = tiny.root / "run"
    result = train(str(tiny.caffe), "--out", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    run = load_config(str(tiny.caffe))
    blobs = read_caffemodel(out / "final.caffemodel", run.net)
    final = np.load(out / "final.npz")
    assert sorted(blobs) == sorted(final.files)
    for key, array in blobs.items():
        np.testing.assert_array_equal(final[key], array)
    assert (out / "net.original.prototxt").read_text() == (
        tiny.root / "tiny_net.prototxt"
    ).read_text()


def test_plain_lines_when_stderr_is_not_a_terminal(tiny):
    result = train(str(tiny.caffe), "--out", str(tiny.root / "run"))
    assert result.exit_code == 0, result.output
    err = result.stderr
    assert "\x1b[" not in err  # no cursor movement or colour in a log file
    lines = [line for line in err.splitlines() if line.startswith("iter ")]
    # Caffe display = 2, numbered as Solver::Step logs "Iteration k" (the forward of update
    # k + 1): updates 1, 3, 5, 7 as 0, 2, 4, 6; the last update (8) always, as 7
    assert [line.split()[1] for line in lines] == ["0", "2", "4", "6", "7"]
    assert lines[0].startswith("iter 0 (update 1/8)")
    assert lines[-1].startswith("iter 7 (update 8/8)")
    assert "smoothed_loss_window3" in lines[0]
    assert "Caffe convention: iteration it = updates applied before the update" in err
    assert "test after 6 updates: accuracy" in err  # test_interval 3
    # 8 % 3 != 0: Caffe would not test at the end, dnupdate does and says so
    assert "Caffe's Solve would not test here" in err
    assert "test after 8 updates: accuracy" in err
    assert err.strip().splitlines()[-1].startswith("done after 8 updates")


def test_quiet_prints_only_the_ending_line(tiny):
    result = train(
        str(tiny.darknet), "--data", f"npz:{tiny.data}", "--out", str(tiny.root / "r"), "-q"
    )
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr.splitlines() == [result.stderr.strip()]  # one line
    assert result.stderr.startswith("done after 8 updates; loss ")


def test_set_overrides_use_the_configs_own_keys(tiny):
    result = train(
        str(tiny.darknet),
        "--data",
        f"npz:{tiny.data}",
        "--set",
        "learning_rate=0.02",
        "--set",
        "max_batches=3",
        "--out",
        str(tiny.root / "run"),
        "--json",
        "-q",
    )
    assert result.exit_code == 0, result.output
    steps = [e for e in json_events(result.stdout) if e["event"] == "step_finished"]
    assert len(steps) == 3 and steps[0]["lr"] == pytest.approx(0.02)
    resolved = json.loads((tiny.root / "run" / "config.resolved.json").read_text())
    assert resolved["overrides"] == ["learning_rate=0.02", "max_batches=3"]


def test_config_from_standard_input(tiny):
    text = tiny.darknet.read_text()
    out = tiny.root / "run"
    result = train("-", "--data", f"npz:{tiny.data}", "--out", str(out), "-q", input=text)
    assert result.exit_code == 0, result.output
    assert (out / "config.original.txt").read_text() == text


def test_no_shuffle_on_an_npz_of_one_batch_trains_on_that_batch_every_time(tiny):
    rng = np.random.default_rng(3)
    x = rng.random((8, 1, 6, 6), dtype=np.float32)
    y = np.arange(8) % 4
    batch = tiny.root / "one_batch.npz"
    np.savez(batch, x=x, y=y)
    out = tiny.root / "run"
    config = darknet_config(tiny.root, max_batches=5)
    result = train(str(config), "--data", f"npz:{batch}", "--no-shuffle", "--out", str(out), "-q")
    assert result.exit_code == 0, result.output
    trainer = run_fixed_batch(load_config(str(config)), x, y, 5, seed=0)
    final = np.load(out / "final.npz")
    for key, view in trainer.network.named_blobs():
        np.testing.assert_array_equal(final[key], view, err_msg=key)


def test_resume_through_the_cli_matches_a_straight_run(tiny):
    data = ["--data", f"npz:{tiny.data}", "-q"]
    straight, split = tiny.root / "straight", tiny.root / "split"
    assert train(str(tiny.darknet), *data, "--out", str(straight)).exit_code == 0
    assert train(str(tiny.darknet), *data, "--max-iters", "3", "--out", str(split)).exit_code == 0
    result = train("--resume", str(split), "-q")
    assert result.exit_code == 0, result.output
    assert (straight / "final.npz").read_bytes() == (split / "final.npz").read_bytes()


# ---- exit codes -----------------------------------------------------------------------------


def test_bad_config_and_unknown_set_key_exit_1_naming_them(tiny):
    result = train(str(tiny.root / "missing.cfg"))
    assert result.exit_code == 1 and "missing.cfg" in result.stderr
    result = train(str(tiny.darknet), "--set", "no_such_key=1", "--data", f"npz:{tiny.data}")
    assert result.exit_code == 1 and "no_such_key" in result.stderr
    result = train(str(tiny.darknet), "--set", "learning_rate=fast")
    assert result.exit_code == 1 and "learning_rate" in result.stderr
    assert not any(tiny.root.glob("runs/*"))


def test_missing_data_exits_1_and_leaves_no_run_folder(tiny):
    out = tiny.root / "run"
    result = train(str(tiny.darknet), "--data", f"npz:{tiny.root / 'nope.npz'}", "--out", str(out))
    assert result.exit_code == 1
    assert "nope.npz" in result.stderr and "Traceback" not in result.output
    assert not out.exists()


def test_corrupt_weights_exit_1(tiny):
    bad = tiny.root / "bad.weights"
    bad.write_bytes(b"\x00\x01\x02")
    result = train(str(tiny.darknet), "--data", f"npz:{tiny.data}", "--weights", str(bad))
    assert result.exit_code == 1 and "bad.weights" in result.stderr
    assert not any(tiny.root.glob("runs/*"))  # the default run folder was removed again
    short = tiny.root / "short.npz"
    np.savez(short, **{"0/0": np.zeros(3, np.float32)})
    result = train(str(tiny.darknet), "--data", f"npz:{tiny.data}", "--weights", str(short))
    assert result.exit_code == 1 and "short.npz" in result.stderr


def test_divergence_exits_3_with_iteration_and_layer(tiny):
    config = darknet_config(tiny.root, lr=1e9, subdivisions=1)
    out = tiny.root / "run"
    result = train(str(config), "--data", f"npz:{tiny.data}", "--out", str(out), "--json")
    assert result.exit_code == 3, result.output
    events = json_events(result.stdout)
    check_schema(events)
    diverged = [e for e in events if e["event"] == "diverged"]
    assert len(diverged) == 1 and diverged[0]["iteration"] >= 1 and diverged[0]["layer"]
    assert events[-1]["status"] == "diverged"
    assert "DIVERGED" in result.stderr
    assert not (out / "final.npz").exists()


def test_usage_errors_exit_2(tiny):
    assert train(str(tiny.darknet), "--semantics", "torch").exit_code == 2
    assert train(str(tiny.darknet), "--device", "tpu").exit_code == 2
    assert train(str(tiny.darknet), "--max-iters", "0").exit_code == 2
    assert train("--data", "mnist").exit_code == 2  # no CONFIG and no --resume
    result = train("--resume", str(tiny.root), "--set", "batch=2")
    assert result.exit_code == 2 and "--set" in result.stderr


def test_resume_of_a_folder_without_a_run_exits_1(tiny):
    result = train("--resume", str(tiny.root / "nothing"))
    assert result.exit_code == 1 and "nothing" in result.stderr


def test_cuda_without_a_device_exits_1(tiny, monkeypatch):
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
    from dnupdate.engine.training.session import TrainSetupError, make_backend

    try:
        make_backend("cuda")
    except TrainSetupError:
        pass
    else:
        pytest.skip("a CUDA device is available here")
    result = train(str(tiny.darknet), "--data", f"npz:{tiny.data}", "--device", "cuda")
    assert result.exit_code == 1 and "cuda" in result.stderr.lower()


# ---- as a subprocess ------------------------------------------------------------------------


def _command(*args: str) -> list[str]:
    return [sys.executable, "-c", "from dnupdate.cli.main import app; app()", "train", *args]


def test_sigint_writes_a_checkpoint_and_exits_130(tiny):
    config = darknet_config(tiny.root, max_batches=100000, subdivisions=1)
    out = tiny.root / "run"
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        _command(str(config), "--data", f"npz:{tiny.data}", "--out", str(out), "--json", "-q"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:  # wait until training is under way
            if json.loads(line)["event"] == "step_finished":
                break
        time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        rest, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    events = [json.loads(line) for line in rest.splitlines() if line.strip()]
    names = [e["event"] for e in events]
    # the checkpoint, the interruption, then a test of the weights it stopped with
    assert names[-5:] == [
        "checkpoint_saved",
        "interrupted",
        "status",
        "eval_finished",
        "run_finished",
    ]
    interrupted = next(e for e in events if e["event"] == "interrupted")
    assert interrupted["signal"] == "SIGINT"
    assert (out / "state.npz").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["iteration"] == interrupted["iteration"]
    assert summary["test_iteration"] == interrupted["iteration"] and summary["test_is_final"]
    # --quiet still says why the run stopped, on stderr
    assert "interrupted by SIGINT" in err and "interrupted after" in err


def test_subprocess_exit_codes_for_bad_input_and_divergence(tiny):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    bad = subprocess.run(
        _command(str(tiny.root / "nope.cfg")), capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert bad.returncode == 1 and "nope.cfg" in bad.stderr and "Traceback" not in bad.stderr
    config = darknet_config(tiny.root, lr=1e9, subdivisions=1)
    diverged = subprocess.run(
        _command(str(config), "--data", f"npz:{tiny.data}", "--out", str(tiny.root / "d"), "-q"),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert diverged.returncode == 3, diverged.stderr
    # --quiet silences progress, not why the run stopped
    assert "DIVERGED: non-finite" in diverged.stderr and "diverged after" in diverged.stderr


def test_a_run_imports_no_network_module_and_no_pydantic(tiny):
    """A run that downloads nothing keeps ``urllib.request``/``ssl`` (OpenSSL, ~3 MiB resident)
    and pydantic (~7 MiB, Typer 0.29's parameter coercion) out of the process: issue 16's
    peak-RSS budget. The data path imports ``engine.data.download``, which imports the network
    modules only to download."""
    code = (
        "import sys\n"
        "from dnupdate.cli.main import app\n"
        "try:\n"
        "    app(sys.argv[1:])\n"
        "except SystemExit as stop:\n"
        "    assert stop.code == 0, stop.code\n"
        "heavy = ('ssl', 'urllib.request', 'http.client', 'pydantic', 'pydantic_core')\n"
        "print(sorted(name for name in heavy if name in sys.modules))\n"
    )
    config = caffe_config(tiny.root, tiny.data)
    done = subprocess.run(
        [sys.executable, "-c", code, "train", str(config), "--out", str(tiny.root / "r"), "-q"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout


def test_readme_documents_every_event_and_member():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = {
        line.split("|")[1].strip().strip("`"): line
        for line in readme.splitlines()
        if line.startswith("| `") and line.count("|") >= 3
    }
    for name, members in schema().items():
        assert name in rows, f"README has no row for event {name}"
        for member in members[1:]:
            assert f"`{member}`" in rows[name], f"README row {name} lacks {member}"


def test_weights_header_seen_sets_the_start_and_clear_resets_it(tiny):
    data = ["--data", f"npz:{tiny.data}", "-q", "--json"]
    first = tiny.root / "first"
    assert train(str(tiny.darknet), *data, "--max-iters", "3", "--out", str(first)).exit_code == 0
    weights = str(first / "final.weights")
    kept = train(str(tiny.darknet), *data, "--weights", weights, "--out", str(tiny.root / "a"))
    assert kept.exit_code == 0, kept.output
    started = json_events(kept.stdout)[0]
    assert started["start_iteration"] == 3  # seen = 24 images = 3 batches of 8
    steps = [e for e in json_events(kept.stdout) if e["event"] == "step_finished"]
    assert [s["iteration"] for s in steps] == [4, 5, 6, 7, 8]
    cleared = train(
        str(tiny.darknet), *data, "--weights", weights, "--clear", "--out", str(tiny.root / "b")
    )
    assert json_events(cleared.stdout)[0]["start_iteration"] == 0
    npz = train(
        str(tiny.darknet), *data, "--weights", str(first / "final.npz"), "--max-iters", "1",
        "--out", str(tiny.root / "c"),
    )  # fmt: skip
    assert npz.exit_code == 0 and json_events(npz.stdout)[0]["start_iteration"] == 0


def test_resume_from_another_folder_finds_relative_config_and_data(tiny, monkeypatch):
    split = tiny.root / "split"
    args = ["tiny_solver.prototxt", "--max-iters", "2", "--out", str(split), "-q"]
    assert train(*args).exit_code == 0  # relative solver path, relative net and data paths
    elsewhere = tiny.root / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = train("--resume", str(split), "--max-iters", "4", "-q")
    assert result.exit_code == 0, result.output
    summary = json.loads((split / "summary.json").read_text())
    assert summary["iteration"] == 4
