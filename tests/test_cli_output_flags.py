"""The one rule for machine output (README, "Commands"): ``--json`` on every command with
machine output; ``--format NAME`` where a command has more formats, ``--json`` being
``--format json``; a bad ``--output`` fails before anything is printed."""

from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

from dnupdate.cli.main import app

runner = CliRunner()

SCHEDULE = [
    "lr-schedule", "--set", "policy=steps", "--set", "learning_rate=0.1", "--set", "steps=3,6",
    "--set", "scales=.1,.1", "--set", "max_batches=8",
]  # fmt: skip


def invoke(*args: str):
    return runner.invoke(app, list(args), env={"NO_COLOR": "1"})


@pytest.mark.parametrize(
    "command",
    [
        ["bench"],
        ["data", "list"],
        ["data", "info"],
        ["devices"],
        ["eval"],
        ["inspect"],
        ["lr-schedule"],
        ["train"],
    ],
)
def test_every_command_with_machine_output_takes_json(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "--json" in result.stdout


def test_json_is_format_json_for_lr_schedule_and_inspect(tmp_path):
    long_form = invoke(*SCHEDULE, "--format", "json")
    short_form = invoke(*SCHEDULE, "--json")
    assert long_form.exit_code == short_form.exit_code == 0
    assert json.loads(short_form.stdout) == json.loads(long_form.stdout)
    config = tmp_path / "net.cfg"
    config.write_text(
        "[net]\nbatch=2\nheight=4\nwidth=4\nchannels=1\nmax_batches=2\n"
        "[connected]\noutput=2\n[softmax]\n"
    )
    long_form = invoke("inspect", str(config), "--format", "json")
    short_form = invoke("inspect", str(config), "--json")
    assert long_form.exit_code == short_form.exit_code == 0, long_form.output
    assert json.loads(short_form.stdout) == json.loads(long_form.stdout)


def test_json_with_another_format_is_a_usage_error():
    result = invoke(*SCHEDULE, "--json", "--format", "csv")
    assert result.exit_code == 2
    assert "--json and --format csv" in result.stderr and result.stdout == ""


def test_lr_schedule_output_json_writes_the_json_document(tmp_path):
    target = tmp_path / "lr.json"
    result = invoke(*SCHEDULE, "--output", str(target))
    assert result.exit_code == 0, result.output
    assert json.loads(target.read_text()) == json.loads(invoke(*SCHEDULE, "--json").stdout)


def test_bad_output_fails_before_printing_the_table(tmp_path):
    result = invoke(*SCHEDULE, "--output", str(tmp_path / "lr.gif"))
    assert result.exit_code == 1 and "'.gif'" in result.stderr
    assert result.stdout == ""


def test_png_without_matplotlib_fails_before_printing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib → ImportError
    result = invoke(*SCHEDULE, "--output", str(tmp_path / "lr.png"))
    assert result.exit_code == 1 and "matplotlib" in result.stderr
    assert result.stdout == "" and not (tmp_path / "lr.png").exists()
