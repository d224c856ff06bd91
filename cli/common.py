"""Shared CLI plumbing: exit codes, stderr console, error reporting."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import NoReturn

import typer

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130


def stderr_console():
    """A Rich console on stderr that honours NO_COLOR and non-terminal output."""
    from rich.console import Console

    return Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")) or None)


def stdout_console():
    """A Rich console on stdout; 140 columns wide when stdout is not a terminal (files, pipes)."""
    from rich.console import Console

    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 140
    return Console(no_color=bool(os.environ.get("NO_COLOR")) or None, width=width)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print one clear error line on stderr and exit (never a traceback)."""
    print(f"dnupdate: error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def report_diagnostics(diagnostics: Iterable, *, file=None) -> None:
    """Print diagnostics, one per line, ``file:line: severity [key]: message``."""
    out = file or sys.stderr
    for diagnostic in diagnostics:
        print(str(diagnostic), file=out)


def fail_config(error) -> NoReturn:
    """Report a ConfigError's diagnostics and exit with code 1."""
    report_diagnostics(error.diagnostics)
    raise typer.Exit(EXIT_BAD_INPUT)


def machine_format(as_json: bool, output_format: str, default: str) -> str:
    """The one rule for machine output flags: ``--json`` on every command that has machine
    output means JSON on stdout; a command with more formats also has ``--format NAME``, of
    which ``--json`` is the short form (``--format json``). Both naming different formats is
    a usage error (exit 2)."""
    if as_json and output_format not in (default, "json"):
        fail(f"--json and --format {output_format} ask for different outputs: give one", EXIT_USAGE)
    return "json" if as_json else output_format
