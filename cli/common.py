"""Shared CLI plumbing: exit codes, stderr console, error reporting."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator
from enum import StrEnum
from typing import Any, NoReturn

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


@contextlib.contextmanager
def busy(console, message: str) -> Iterator[None]:
    """A spinner saying ``message`` on a terminal while the block runs (a long silent step:
    generating a synthetic set, loading a dataset); nothing on other consoles or with
    ``console`` None (``--quiet``)."""
    if console is None or not console.is_terminal:
        yield
        return
    with console.status(message, spinner="dots"):
        yield


def data_status(source: str | None, split: str, data_dir: str | None) -> str:
    """What opening ``source`` will do, for :func:`busy`: a synthetic set is generated the
    first time and read from the data cache afterwards; a named dataset or file is loaded."""
    from dnupdate.engine.data import CATALOG, DataError, resolve_source

    if not source:
        return "opening the data"
    try:
        name = resolve_source(source, split, data_dir)
    except DataError:
        return f"opening {clip_text(source, 80)}"
    entry = CATALOG.get(name)
    if entry is not None and entry.synthetic:
        return f"preparing {name} ({split}; generated once, then cached)"
    return f"loading {clip_text(str(name), 80)} ({split})"


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print one clear error line on stderr and exit (never a traceback)."""
    print(f"dnupdate: error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def check_blas_environment() -> None:
    """Exit 1 naming ``DNUPDATE_BLAS`` where it holds no known BLAS name (the engine's
    ``engine.backends.mkl.blas_choice``; the GEMM binding would otherwise take it as
    ``openblas`` without a word). Cheap: the ``mkl`` module imports neither Numba nor MKL."""
    from dnupdate.engine.backends.mkl import BlasChoiceError, blas_choice

    try:
        blas_choice()
    except BlasChoiceError as error:
        fail(f"{error} (unset it for NumPy's OpenBLAS)")


MAX_SAME_DIAGNOSTIC = 5  # lines shown of one repeated problem (same severity, key, message)
MAX_DIAGNOSTICS = 100  # lines shown in all
MAX_BINARY_DIAGNOSTICS = 3  # lines shown of those echoing raw bytes (a binary file as config)
MAX_ECHO_CHARS = 300  # characters of one diagnostic or echoed value
MAX_BINARY_ECHO_CHARS = 60  # characters of a diagnostic echoing raw bytes


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


def is_binary_text(text: str) -> bool:
    """Whether ``text`` holds raw bytes: undecodable bytes or control characters (other than
    tab) — what a diagnostic about a binary file given as a config echoes."""
    return not all(_printable(char) or char == "\t" for char in text)


def _clipped(diagnostic, limit: int) -> str:
    """``file:line: severity [key]: message`` with the part after the location clipped to
    ``limit`` characters (a long path never eats the message)."""
    text = str(diagnostic)
    where = diagnostic.file if diagnostic.line is None else f"{diagnostic.file}:{diagnostic.line}"
    if not text.startswith(where):
        return clip_text(text, limit)
    return clip_text(where) + clip_text(text[len(where) :], limit)


def diagnostic_lines(diagnostics: Iterable) -> list[str]:
    """Diagnostics as lines ``file:line: severity [key]: message``, each clipped
    (:func:`clip_text`), at most :data:`MAX_SAME_DIAGNOSTIC` of one repeated problem,
    :data:`MAX_BINARY_DIAGNOSTICS` of those echoing raw bytes (a binary file given as a
    config) and :data:`MAX_DIAGNOSTICS` in all; what is left out is counted
    (``… and 99,990 more``)."""
    lines: list[str] = []
    repeats: dict[tuple, int] = {}
    hidden_repeats: dict[tuple, int] = {}
    hidden = 0
    binary: list[str] = []  # files of the diagnostics echoing raw bytes
    for diagnostic in diagnostics:
        group = (diagnostic.severity, diagnostic.key, diagnostic.message)
        repeats[group] = repeats.get(group, 0) + 1
        limit = MAX_ECHO_CHARS
        if is_binary_text(f"{diagnostic.key or ''}{diagnostic.message}"):
            binary.append(diagnostic.file)
            if len(binary) > MAX_BINARY_DIAGNOSTICS:
                continue
            limit = MAX_BINARY_ECHO_CHARS
        if repeats[group] > MAX_SAME_DIAGNOSTIC:
            hidden_repeats[group] = hidden_repeats.get(group, 0) + 1
        elif len(lines) >= MAX_DIAGNOSTICS:
            hidden += 1
        else:
            lines.append(_clipped(diagnostic, limit))
    for (severity, key, message), count in hidden_repeats.items():
        if len(lines) >= MAX_DIAGNOSTICS:
            hidden += count
            continue
        about = f" [{clip_text(key, 60)}]" if key else ""
        lines.append(f"… and {count:,} more {severity}s{about} like '{clip_text(message, 80)}'")
    if len(binary) > MAX_BINARY_DIAGNOSTICS:
        files = " and ".join(dict.fromkeys(clip_text(f, 120) for f in binary))
        lines.append(
            f"… and {len(binary) - MAX_BINARY_DIAGNOSTICS:,} more diagnostics echoing raw bytes: "
            f"{files} looks like a binary file, not a text config"
        )
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


# --------------------------------------------------------------------------------------------
# Options shared by several commands: defined once here, so their names, metavars and help
# agree everywhere (a command passes its own ``help`` where its meaning narrows).
# --------------------------------------------------------------------------------------------

LR_SCALING_HELP = (
    "Rescale every rate when --set changes the batch B from the config's own B0: none, "
    "linear (× B/B0) or sqrt (× sqrt(B/B0))."
)
LR_WARMUP_HELP = "Ramp linearly from the unscaled to the scaled rate over N updates (Goyal)."
DATA_HELP = "Data for both splits instead of the config's: a dataset name or npz:FILE."
DATA_DIR_HELP = (
    "Folder with the dataset files (default: $DNUPDATE_DATA_DIR, else the user cache folder)."
)
SET_HELP = "Override a config key, in the config's own key names (repeatable)."
SEED_HELP = (
    "Seed of init, dropout and data order (default: Caffe random_seed or darknet seed=, else 0)."
)
SEMANTICS_HELP = "Update rule and loop: darknet or caffe (default: the config's framework)."
DEVICE_HELP = "Where to compute: cpu or cuda."
THREADS_HELP = "BLAS and Numba threads (default: automatic)."
JSON_HELP = "One JSON object per event on stdout."


class Semantics(StrEnum):
    """``--semantics``: whose update rule and training loop to follow."""

    darknet = "darknet"
    caffe = "caffe"


class Device(StrEnum):
    """``--device``: the backend that computes."""

    cpu = "cpu"
    cuda = "cuda"


def data_option(help: str = DATA_HELP) -> Any:
    """``--data NAME``: a named dataset or ``npz:FILE`` replacing the config's data."""
    return typer.Option(None, "--data", metavar="NAME", help=help)


def data_dir_option(help: str = DATA_DIR_HELP) -> Any:
    """``--data-dir DIR``: where dataset files are looked for (and fetched to)."""
    return typer.Option(None, "--data-dir", metavar="DIR", help=help)


def set_option(help: str = SET_HELP) -> Any:
    """``--set/-s KEY=VALUE`` (repeatable): config overrides in the config's own key names."""
    return typer.Option([], "--set", "-s", metavar="KEY=VALUE", help=help)


def seed_option(help: str = SEED_HELP) -> Any:
    """``--seed N``; ``None`` when not given (the config's seed, else 0)."""
    return typer.Option(None, "--seed", metavar="N", help=help)


def semantics_option(help: str = SEMANTICS_HELP) -> Any:
    """``--semantics darknet|caffe``; ``None`` when not given (the config's framework)."""
    return typer.Option(None, "--semantics", metavar="darknet|caffe", help=help)


def device_option(help: str = DEVICE_HELP) -> Any:
    """``--device cpu|cuda`` (default cpu)."""
    return typer.Option(Device.cpu, "--device", metavar="cpu|cuda", help=help)


def threads_option(help: str = THREADS_HELP, *, short: bool = False) -> Any:
    """``--threads N`` (N ≥ 1); ``None`` when not given (automatic)."""
    names = ("--threads", "-t") if short else ("--threads",)
    return typer.Option(None, *names, min=1, metavar="N", help=help)


def max_iters_option(
    help: str = "Stop after N updates in total (the schedule is unchanged).",
) -> Any:
    """``--max-iters N`` (N ≥ 1); ``None`` when not given (the config's end)."""
    return typer.Option(None, "--max-iters", min=1, metavar="N", help=help)


def weights_option(help: str = "Initial weights: darknet .weights, .caffemodel or .npz.") -> Any:
    """``--weights FILE``."""
    return typer.Option(None, "--weights", metavar="FILE", help=help)


def out_option(help: str) -> Any:
    """``--out DIR``: the folder a command writes into."""
    return typer.Option(None, "--out", metavar="DIR", help=help)


def json_option(help: str = JSON_HELP) -> Any:
    """``--json``: machine output on stdout (see :func:`machine_format`)."""
    return typer.Option(False, "--json", help=help)


def quiet_option(help: str = "No progress on stderr; the ending line still shows.") -> Any:
    """``--quiet/-q``."""
    return typer.Option(False, "--quiet", "-q", help=help)


def shuffle_option(help: str = "Random sampling, or reading in order.") -> Any:
    """``--shuffle/--no-shuffle``; ``None`` when not given (the config's choice)."""
    return typer.Option(None, "--shuffle/--no-shuffle", help=help)


def eval_every_option(
    help: str = "Test every N updates (default: test_interval); 0: never.",
) -> Any:
    """``--eval-every N`` (N ≥ 0)."""
    return typer.Option(None, "--eval-every", min=0, metavar="N", help=help)


def checkpoint_every_option(
    help: str = "Checkpoint every N updates (default: snapshot); 0: never.",
) -> Any:
    """``--checkpoint-every N`` (N ≥ 0)."""
    return typer.Option(None, "--checkpoint-every", min=0, metavar="N", help=help)


def lr_scaling_option() -> Any:
    """``--lr-scaling none|linear|sqrt``; ``None`` when not given."""
    return typer.Option(None, "--lr-scaling", metavar="RULE", help=LR_SCALING_HELP)


def lr_warmup_option() -> Any:
    """``--lr-warmup N`` (N ≥ 0); ``None`` when not given."""
    return typer.Option(None, "--lr-warmup", min=0, metavar="N", help=LR_WARMUP_HELP)


def scaling_sets(lr_scaling: str | None, lr_warmup: int | None) -> list[str]:
    """``--lr-scaling``/``--lr-warmup`` as the ``lr_scaling=``/``lr_warmup=`` pseudo-keys that
    ``engine.config.load_config`` reads among the ``--set`` overrides."""
    sets = []
    if lr_scaling is not None:
        sets.append(f"lr_scaling={lr_scaling}")
    if lr_warmup is not None:
        sets.append(f"lr_warmup={lr_warmup}")
    return sets
