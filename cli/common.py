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


LR_SCALING_HELP = (
    "Rescale every rate when --set changes the batch B from the config's own B0: none, "
    "linear (× B/B0) or sqrt (× sqrt(B/B0))."
)
LR_WARMUP_HELP = "Ramp linearly from the unscaled to the scaled rate over N updates (Goyal)."


def scaling_sets(lr_scaling: str | None, lr_warmup: int | None) -> list[str]:
    """``--lr-scaling``/``--lr-warmup`` as the ``lr_scaling=``/``lr_warmup=`` pseudo-keys that
    ``engine.config.load_config`` reads among the ``--set`` overrides."""
    sets = []
    if lr_scaling is not None:
        sets.append(f"lr_scaling={lr_scaling}")
    if lr_warmup is not None:
        sets.append(f"lr_warmup={lr_warmup}")
    return sets
