"""Ctrl-C on a ``dnupdate sweep --workers 2`` in a real terminal: the command runs on a
pseudo-terminal, in its own session with the terminal as its controlling terminal (as a shell
starts a foreground job), and the test types ^C, so the terminal sends SIGINT to the whole
foreground process group, the local worker processes included. The sweep must exit 130
without a traceback, checkpoint the running variants (a re-run resumes them to the standalone
runs' bytes), leave no process behind, and listen on no address (its workers talk through
pipes)."""

from __future__ import annotations

import fcntl
import os
import select
import subprocess
import sys
import termios
import time
from pathlib import Path

import psutil
import pytest

from tests.test_train_loop import darknet_config, write_quadrants

CLI = [sys.executable, "-c", "from dnupdate.cli.main import app; app()"]
NAMES = ("learning_rate=0.05", "learning_rate=0.1")
#: updates per variant: long enough to be mid-run at ^C, short enough to finish on resume
ITERS = 5000


def _as_terminal_job() -> None:
    """In the child: a new session whose controlling terminal is stdin (the pty's slave)."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _read(master: int, sink: bytearray, seconds: float) -> None:
    """Append what the terminal shows during ``seconds`` (a pty must be drained, or a child
    writing to it blocks)."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        ready, _, _ = select.select([master], [], [], min(left, 0.1))
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every process holding the slave has closed it
                return
            if not chunk:
                return
            sink.extend(chunk)


def _metrics_rows(folder: Path, name: str) -> int:
    path = folder / "runs" / name / "metrics.csv"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _listening(processes: list[psutil.Process]) -> set[str]:
    """The addresses the processes listen on."""
    addresses = set()
    for process in processes:
        try:
            connections = process.net_connections(kind="inet")
        except psutil.Error:
            continue
        addresses.update(c.laddr.ip for c in connections if c.status == psutil.CONN_LISTEN)
    return addresses


@pytest.mark.skipif(not hasattr(termios, "TIOCSCTTY"), reason="needs a POSIX terminal")
def test_ctrl_c_in_a_terminal_checkpoints_and_leaves_nothing_behind(tmp_path):
    data = write_quadrants(tmp_path / "quadrants.npz")
    config = darknet_config(tmp_path, batch=8, subdivisions=2, lr=0.1, max_batches=ITERS)
    sweep_dir = tmp_path / "sweep"
    args = [str(config), "--grid", "learning_rate=0.05,0.1", "--data", f"npz:{data}",
            "--workers", "2", "--checkpoint-every", "100000", "--out", str(sweep_dir)]  # fmt: skip
    master, slave = os.openpty()
    env = {**os.environ, "COLUMNS": "120", "LINES": "40", "TERM": "xterm"}
    process = subprocess.Popen([*CLI, "sweep", *args], stdin=slave, stdout=slave, stderr=slave,
                               preexec_fn=_as_terminal_job, cwd=tmp_path, env=env)  # fmt: skip
    os.close(slave)
    shown = bytearray()
    family: dict[int, psutil.Process] = {}
    addresses: set[str] = set()
    try:
        root = psutil.Process(process.pid)
        deadline = time.monotonic() + 240
        while min(_metrics_rows(sweep_dir, n) for n in NAMES) < 3:
            assert process.poll() is None, shown.decode(errors="replace")
            assert time.monotonic() < deadline, "the variants never started"
            _read(master, shown, 0.2)
        for child in [root, *root.children(recursive=True)]:
            family[child.pid] = child
        addresses = _listening(list(family.values()))
        assert os.tcgetpgrp(master) == process.pid, "the sweep is the foreground job"
        os.write(master, b"\x03")  # ^C: the terminal signals the foreground process group
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            _read(master, shown, 0.2)
        _read(master, shown, 0.5)
        code = process.poll()
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
    text = shown.decode(errors="replace")
    assert code == 130, text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert len(family) >= 3, "the sweep and its two workers"
    assert not addresses, addresses
    time.sleep(1)
    left = [p for p in family.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, [p.cmdline() for p in left]

    for name in NAMES:
        run = sweep_dir / "runs" / name
        assert (run / "state.npz").exists(), name
        summary = run / "summary.json"
        assert not summary.exists() or '"done"' not in summary.read_text(), "ran to its end"
    again = subprocess.run([*CLI, "sweep", *args, "--json", "-q"], capture_output=True,
                           text=True, cwd=tmp_path, timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert '"resumed": true' in again.stdout
    for name in NAMES:
        lr = name.split("=")[1]
        alone = tmp_path / f"alone-{lr}"
        subprocess.run([*CLI, "train", str(config), "--set", f"learning_rate={lr}", "--data",
                        f"npz:{data}", "--out", str(alone), "-q"], check=True, cwd=tmp_path,
                       capture_output=True, timeout=300)  # fmt: skip
        ours = (sweep_dir / "runs" / name / "final.npz").read_bytes()
        assert ours == (alone / "final.npz").read_bytes(), name
