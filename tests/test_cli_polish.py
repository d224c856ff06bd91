"""Issue 17 item 22 leftovers and issue 15's ``plot SWEEP_DIR``: a binary file given as a
config, the status shown while data is generated or loaded, a sweep's variants overlaid."""

from __future__ import annotations

import io
import random
import subprocess
import sys

from rich.console import Console
from typer.testing import CliRunner

from dnupdate.cli.main import app
from tests.test_train_loop import darknet_config, write_quadrants

runner = CliRunner()


def binary_config(tmp_path):
    """A file of random bytes with many line breaks (like an ELF file given as a config)."""
    rng = random.Random(17)
    data = bytearray(rng.randrange(256) for _ in range(6000))
    for index in range(0, len(data), 90):
        data[index] = 0x0A
    path = tmp_path / "garbage.cfg"
    path.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(data))
    return path


def test_binary_config_stops_after_the_first_few_raw_byte_lines(tmp_path):
    path = binary_config(tmp_path)
    for command in (["train", str(path)], ["inspect", str(path)], ["lr-schedule", str(path)]):
        result = subprocess.run(
            [sys.executable, "-c", "from dnupdate.cli.main import app; app()", *command],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=120,
        )
        assert result.returncode == 1, (command, result.stderr[-500:])
        assert "Traceback" not in result.stderr
        raw = [line for line in result.stderr.splitlines() if "\\x" in line]
        assert 1 <= len(raw) <= 3, (command, result.stderr)
        assert "looks like a binary file, not a text config" in result.stderr, command
        assert max(len(line) for line in result.stderr.splitlines()) < 400


# ---- item 16's spinner: what is happening while data is generated or loaded --------------


def terminal_console(buffer: io.StringIO):
    """A console that believes it is a terminal, writing into ``buffer``."""
    return lambda: Console(file=buffer, force_terminal=True, width=100, no_color=True)


def test_data_info_says_a_synthetic_set_is_being_prepared(tmp_path, monkeypatch):
    monkeypatch.setenv("DNUPDATE_DATA_DIR", str(tmp_path / "cache"))
    buffer = io.StringIO()
    monkeypatch.setattr("dnupdate.cli.data_cmd.stderr_console", terminal_console(buffer))
    args = ["data", "info", "synthetic-digits", "--split", "test", "--size", "40"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "preparing synthetic-digits (test; generated once, then cached)" in buffer.getvalue()
    assert "preparing" not in result.stdout  # the status is on stderr only


def test_data_info_on_a_pipe_shows_no_spinner(tmp_path, monkeypatch):
    monkeypatch.setenv("DNUPDATE_DATA_DIR", str(tmp_path / "cache"))
    args = ["data", "info", "synthetic-digits", "--split", "test", "--size", "40"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "preparing" not in result.output


def test_train_says_what_it_loads_before_the_first_update(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_quadrants(tmp_path / "quadrants.npz")
    data = "quadrants.npz"  # relative: the status line stays short whatever tmp_path is
    config = darknet_config(tmp_path)
    buffer = io.StringIO()
    monkeypatch.setattr("dnupdate.cli.train_cmd.stderr_console", terminal_console(buffer))
    args = ["train", str(config), "--data", f"npz:{data}", "--max-iters", "2", "--out", "r"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    shown = buffer.getvalue()
    assert f"loading npz:{data} (train)" in shown
    assert shown.index("loading npz:") < shown.index("done after")
