"""The CLI's entry points: help, version, exit code for usage errors."""

import subprocess
import sys

from typer.testing import CliRunner

from dnupdate.cli import __version__
from dnupdate.cli.main import app

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_unknown_command_is_usage_error():
    result = runner.invoke(app, ["no-such-command"])
    assert result.exit_code == 2


def test_help_does_not_import_numba():
    code = (
        "import sys\n"
        "from dnupdate.cli.main import app\n"
        "try:\n"
        "    app(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert 'numba' not in sys.modules, 'numba imported by --help'\n"
        "assert 'numpy' not in sys.modules, 'numpy imported by --help'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_every_help_shows_examples():
    commands = [
        [],
        ["train"],
        ["plot"],
        ["lr-schedule"],
        ["inspect"],
        ["bench"],
        ["devices"],
        ["data"],
        ["data", "list"],
        ["data", "fetch"],
        ["data", "verify"],
        ["data", "info"],
    ]
    for command in commands:
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, command
        assert "Examples:" in result.output, command
        assert f"dnupdate {' '.join(command)}".strip() in result.output.split("Examples:")[1]


def test_train_help_names_both_config_seeds():
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert "random_seed" in result.output and "seed=" in result.output
