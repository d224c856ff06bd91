"""Every command's --help at 80 columns (issue 17 item 19): real metavars instead of Typer's
``<bool>``/``<str>``/``<int range>`` labels, clean usage lines, no line over 80 columns, no
word cut or folded, examples indented on their own lines."""

import re

import pytest
import typer
from typer.testing import CliRunner

from dnupdate.cli.main import app

runner = CliRunner()
WIDTH = 80
COMMANDS = [
    [],
    ["train"],
    ["eval"],
    ["inspect"],
    ["lr-schedule"],
    ["plot"],
    ["data"],
    ["data", "list"],
    ["data", "fetch"],
    ["data", "verify"],
    ["data", "info"],
    ["bench"],
    ["devices"],
    ["sweep"],
    ["compare"],
]
TYPE_LABEL = re.compile(r"<(bool|str|int|float|path|list\[[^]]*\]|int range|float range)>")


def render_help(command: list[str]) -> str:
    result = runner.invoke(
        app, [*command, "--help"], env={"COLUMNS": str(WIDTH), "NO_COLOR": "1", "TERM": "dumb"}
    )
    assert result.exit_code == 0, result.output
    return result.output


def command_object(command: list[str]):
    """The Click command behind ``dnupdate COMMAND`` (for its parameters' help texts)."""
    group = typer.main.get_command(app)
    ctx = group.make_context("dnupdate", [], resilient_parsing=True)
    cmd = group
    for name in command:
        cmd = cmd.get_command(ctx, name)
    return cmd


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "dnupdate")
def test_help_fits_80_columns_with_real_metavars(command):
    text = render_help(command)
    lines = text.splitlines()
    too_long = [line for line in lines if len(line) > WIDTH]
    assert not too_long, too_long
    assert not TYPE_LABEL.search(text), TYPE_LABEL.search(text).group(0)
    assert "…" not in text.replace(", …", "").replace("+1, …", ""), "a cut word"
    usage = next(line for line in lines if "Usage:" in line)
    assert "{" not in usage and "[[" not in usage and "]...]" not in usage, usage


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "dnupdate")
def test_help_words_are_whole(command):
    """Every word of every parameter's help appears whole in the rendered help: Rich wraps at
    spaces only, so a word it had to fold or cut would be missing."""
    text = render_help(command)
    words_shown = set()
    for line in text.splitlines():
        words_shown.update(line.strip("│ ").split())
    for param in command_object(command).params:
        for word in (getattr(param, "help", None) or "").split():
            assert word in words_shown, (param.name, word)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "dnupdate")
def test_examples_are_indented_lines_of_their_own(command):
    text = render_help(command)
    examples = text.split("Examples:")[1].split("╭")[0]
    lines = [line.rstrip() for line in examples.splitlines() if line.strip()]
    assert lines, "no examples"
    for line in lines:
        assert line.startswith("   dnupdate ") or line.startswith("     -"), line


def test_flags_show_no_metavar_and_options_show_theirs():
    text = render_help(["train"])
    rows = {line.split()[1]: line for line in text.splitlines() if line.startswith("│ --")}
    assert rows["--json"].split()[2] == "One"  # straight to the help: no type for a flag
    assert rows["--quiet"].split()[3] == "No"
    assert rows["--data-dir"].split()[2] == "DIR"
    assert rows["--weights"].split()[2] == "FILE"
    assert rows["--set"].split()[3] == "KEY=VALUE"
    assert rows["--device"].split()[2] == "cpu|cuda"
    assert rows["--max-iters"].split()[2] == "N"


def test_usage_lines_name_arguments_plainly():
    assert "dnupdate eval [OPTIONS] CONFIG|RUN_DIR" in render_help(["eval"])
    assert "dnupdate plot [OPTIONS] RUN_DIR|SWEEP_DIR..." in render_help(["plot"])
    assert "dnupdate bench [OPTIONS] [WORKLOAD|CONFIG]..." in render_help(["bench"])
    assert "dnupdate lr-schedule [OPTIONS] [CONFIG]..." in render_help(["lr-schedule"])
    assert "dnupdate train [OPTIONS] [CONFIG]" in render_help(["train"])


def test_help_text_is_plain_text_not_rich_markup():
    from dnupdate.cli.help_format import help_text

    text = help_text("Sections like [net] and [convolutional] stay.", "Also [x] here.")
    assert "\\[net]" in text and "\\[convolutional]" in text and "\\[x]" in text


def test_shared_options_agree_across_commands():
    """--data-dir, --set, --seed, --threads, --device read the same in every command."""
    for command in (["train"], ["eval"], ["sweep"], ["compare"]):
        rows = {}
        for line in render_help(command).splitlines():
            parts = line.strip("│ ").split()
            if parts and parts[0].startswith("--"):
                rows[parts[0]] = parts
        assert rows["--data-dir"][1] == "DIR", command
        assert rows["--set"][1:3] == ["-s", "KEY=VALUE"], command
        assert rows["--threads"][1] == "N", command
        assert rows["--seed"][1] == "N", command
