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


MAX_SAME_DIAGNOSTIC = 5  # lines shown of one repeated problem (same severity, key, message)
MAX_DIAGNOSTICS = 100  # lines shown in all
MAX_ECHO_CHARS = 300  # characters of one diagnostic or echoed value


def _printable(char: str) -> bool:
    return char.isprintable() and not 0xD800 <= ord(char) <= 0xDFFF


def _escaped(char: str) -> str:
    """``\\xNN`` for a byte that was not UTF-8 (kept as a surrogate by ``surrogateescape``),
    else the character's Python escape (``\\n``, ``\\x00``, ``\\ud800``)."""
    if 0xDC80 <= ord(char) <= 0xDCFF:
        return f"\\x{ord(char) - 0xDC00:02x}"
    return char.encode("unicode_escape").decode("ascii")


def clip_text(text: str, limit: int = MAX_ECHO_CHARS) -> str:
    """``text`` made safe to print and bounded: control characters and undecodable bytes
    (surrogates from a binary file) escaped, and anything past ``limit`` characters cut with
    ``… (N more characters)``."""
    head = text[:limit]
    if not all(_printable(char) for char in head):
        head = "".join(char if _printable(char) else _escaped(char) for char in head)
    if len(text) > limit:
        head += f"… ({len(text) - limit:,} more characters)"
    return head


def diagnostic_lines(diagnostics: Iterable) -> list[str]:
    """Diagnostics as lines ``file:line: severity [key]: message``, each clipped
    (:func:`clip_text`), at most :data:`MAX_SAME_DIAGNOSTIC` of one repeated problem and
    :data:`MAX_DIAGNOSTICS` in all; what is left out is counted (``… and 99,990 more``)."""
    lines: list[str] = []
    repeats: dict[tuple, int] = {}
    hidden_repeats: dict[tuple, int] = {}
    hidden = 0
    for diagnostic in diagnostics:
        group = (diagnostic.severity, diagnostic.key, diagnostic.message)
        repeats[group] = repeats.get(group, 0) + 1
        if repeats[group] > MAX_SAME_DIAGNOSTIC:
            hidden_repeats[group] = hidden_repeats.get(group, 0) + 1
        elif len(lines) >= MAX_DIAGNOSTICS:
            hidden += 1
        else:
            lines.append(clip_text(str(diagnostic)))
    for (severity, key, message), count in hidden_repeats.items():
        if len(lines) >= MAX_DIAGNOSTICS:
            hidden += count
            continue
        about = f" [{clip_text(key, 60)}]" if key else ""
        lines.append(f"… and {count:,} more {severity}s{about} like '{clip_text(message, 80)}'")
    if hidden:
        lines.append(f"… and {hidden:,} more diagnostics")
    return lines


def report_diagnostics(diagnostics: Iterable, *, file=None) -> None:
    """Print diagnostics, one per line, ``file:line: severity [key]: message``, capped and
    clipped as :func:`diagnostic_lines` says."""
    out = file or sys.stderr
    for line in diagnostic_lines(diagnostics):
        print(line, file=out)


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
