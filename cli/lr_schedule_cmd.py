"""``dnupdate lr-schedule``: the learning rate at every iteration of one or more schedules.

Reads schedules from configs (darknet ``.cfg``, Caffe solver prototxt/YAML) or from ``--set``
options alone, evaluates them with :mod:`engine.update.schedule` (bit-exact float32 values) and
shows
a milestone table, a terminal plot, CSV or JSON, or writes a PNG/SVG/CSV file.

Startup matters (``lr-schedule`` must start fast): the engine, NumPy and Rich are imported
inside the command, and nothing on this path imports Numba.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import typer

from cli.common import (
    EXIT_USAGE,
    LR_SCALING_HELP,
    LR_WARMUP_HELP,
    fail,
    fail_config,
    report_diagnostics,
    scaling_sets,
)

LR_SCHEDULE_HELP = """Show the learning rate at every iteration of a schedule.

CONFIG is a darknet .cfg or a Caffe solver (.prototxt/.yaml); give several to compare them
(curves overlaid, values side by side), or none and describe the schedule with --set options
in either framework's key names. N (--iters) is the number of updates, by default the
config's max_batches / max_iter.

Iteration conventions: darknet rates are indexed by the batch number b (the k-th update uses
b = k, so b runs 1..N); Caffe rates by it, the updates already applied (it runs 0..N-1).

Examples:

  dnupdate lr-schedule configs/mnist_lenet.cfg --plot

  dnupdate lr-schedule configs/lenet_solver.prototxt --format csv > lr.csv

  dnupdate lr-schedule --plot --set policy=steps --set learning_rate=0.1 \\
    --set steps=100,200 --set scales=.1,.1 --set max_batches=300

  dnupdate lr-schedule --set lr_policy=inv --set base_lr=0.01 \\
    --set gamma=0.0001 --set power=0.75 --set max_iter=10000

  dnupdate lr-schedule a.cfg b.cfg --output compare.png
"""

MAX_TABLE_ROWS = 40


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


@dataclass(frozen=True)
class Source:
    """A schedule to show: a label, the spec, and the default number of updates."""

    label: str
    schedule: object  # engine.spec.ScheduleSpec (imported lazily)
    updates: int


def lr_schedule(
    configs: list[str] = typer.Argument(
        None, metavar="CONFIG", help="darknet .cfg or Caffe solver files (optional)."
    ),
    sets: list[str] = typer.Option(
        [], "--set", "-s", metavar="KEY=VALUE", help="Override or define a schedule key."
    ),
    iters: int | None = typer.Option(
        None, "--iters", "-n", min=1, help="Number of updates (default: max iterations)."
    ),
    plot: bool = typer.Option(False, "--plot", help="Draw the curve in the terminal."),
    output_format: OutputFormat = typer.Option(
        OutputFormat.table, "--format", "-f", help="table (milestones), csv or json."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write the plot or values to a .png, .svg or .csv file."
    ),
    log_y: bool = typer.Option(False, "--log", help="Logarithmic lr axis in plots."),
    lr_scaling: str | None = typer.Option(None, "--lr-scaling", help=LR_SCALING_HELP),
    lr_warmup: int | None = typer.Option(
        None, "--lr-warmup", min=0, metavar="N", help=LR_WARMUP_HELP
    ),
) -> None:
    from engine.spec import ConfigError

    scaling = scaling_sets(lr_scaling, lr_warmup)
    if scaling and not configs:
        fail("--lr-scaling/--lr-warmup need a CONFIG (its own batch is the reference)", EXIT_USAGE)
    try:
        sources = load_sources(configs or [], [*sets, *scaling])
    except ConfigError as error:
        fail_config(error)
    curves = compute_curves(sources, iters)
    emit(curves, output_format, plot=plot, log_y=log_y)
    if output is not None:
        write_file(output, curves, log_y=log_y)


# ---- loading ---------------------------------------------------------------------------------


def load_sources(configs: list[str], sets: list[str]) -> list[Source]:
    """Schedules from each config (with ``--set`` overrides), or from the options alone."""
    from engine.config import load_config, parse_overrides, schedule_from_options

    overrides = parse_overrides(sets)
    if not configs:
        if not overrides:
            fail(
                "give a CONFIG or describe a schedule with --set, e.g. --set policy=steps "
                "--set learning_rate=0.1 --set steps=100,200 --set scales=.1,.1 "
                "--set max_batches=300",
                EXIT_USAGE,
            )
        schedule = schedule_from_options(overrides)
        return [Source("--set options", schedule, schedule.max_iter)]
    sources = []
    for path in configs:
        run = load_config(path, overrides)
        warnings = [d for d in run.diagnostics if d.severity == "warning"]
        report_diagnostics(warnings)
        updates = run.solver.max_iter or run.schedule.max_iter
        sources.append(Source(path, run.schedule, updates))
    return sources


# ---- evaluation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleCurve:
    """A schedule evaluated over its iterations, with its milestones."""

    source: Source
    iterations: object  # np.ndarray[int64]
    rates: object  # np.ndarray[float32]
    milestones: list[tuple[int, float, str]]


def compute_curves(sources: list[Source], iters: int | None) -> list[ScheduleCurve]:
    """Evaluate every schedule over ``N`` updates (darknet b = 1..N, Caffe it = 0..N-1)."""
    import numpy as np

    from engine.update.schedule import ScheduleError, first_iteration, lr_series, milestones

    curves = []
    for source in sources:
        updates = iters or source.updates
        if not updates or updates <= 0:
            fail(
                f"{source.label}: no maximum iteration count (max_batches / max_iter); "
                "pass --iters N"
            )
        first = first_iteration(source.schedule)
        last = first + updates - 1
        try:
            rates = lr_series(source.schedule, first, last)
            marks = milestones(source.schedule, last)
        except ScheduleError as error:
            fail(f"{source.label}: {error}")
        iterations = np.arange(first, last + 1, dtype=np.int64)
        curves.append(ScheduleCurve(source, iterations, rates, marks))
    return curves


# ---- output ----------------------------------------------------------------------------------


def emit(curves: list[ScheduleCurve], output_format: OutputFormat, *, plot: bool, log_y: bool):
    """Machine formats go to stdout plain (the convention note to stderr); the table and the
    plot are for people (the plot goes to stderr when stdout carries CSV/JSON)."""
    from cli.common import stdout_console

    if output_format is OutputFormat.csv:
        print_conventions(curves, sys.stderr)
        print_csv(curves, sys.stdout)
    elif output_format is OutputFormat.json:
        print_conventions(curves, sys.stderr)
        print_json(curves, sys.stdout)
    else:
        print_table(curves, stdout_console())
    if plot:
        stream = sys.stdout if output_format is OutputFormat.table else sys.stderr
        print_plot(curves, stream, log_y=log_y)


def print_conventions(curves: list[ScheduleCurve], stream) -> None:
    from engine.update.schedule import convention_note

    notes = dict.fromkeys(convention_note(c.source.schedule) for c in curves)
    for note in notes:
        print(note, file=stream)


def print_csv(curves: list[ScheduleCurve], stream) -> None:
    """``iteration,lr`` (one schedule) or ``config,iteration,lr`` (several)."""
    from cli.plotting import write_csv

    write_csv(stream, to_plot_curves(curves))


def json_number(value: float) -> float | None:
    """9 significant digits (identifies the float32), null for NaN/inf (not JSON)."""
    import math

    return None if not math.isfinite(value) else float(f"{value:.9g}")


def print_json(curves: list[ScheduleCurve], stream) -> None:
    """A list of ``{"iteration", "lr"}`` objects (plus ``"config"`` with several)."""
    several = len(curves) > 1
    rows = []
    for curve in curves:
        for it, lr in zip(curve.iterations.tolist(), curve.rates.tolist(), strict=True):
            row = {"config": curve.source.label} if several else {}
            row.update(iteration=it, lr=json_number(lr))
            rows.append(row)
    json.dump(rows, stream)
    stream.write("\n")


def describe(schedule) -> str:
    """One line naming the policy and the fields it uses, in our own vocabulary."""
    parts = [f"{schedule.policy}", f"base_lr={schedule.base_lr:.9g}"]
    uses = {
        "step": ("step", "scale", "gamma"),
        "steps": ("steps", "scales"),
        "multistep": ("steps", "gamma"),
        "exp": ("gamma",),
        "inv": ("gamma", "power"),
        "poly": ("power", "max_iter"),
        "sigmoid": ("gamma", "step"),
        "random": ("power", "seed"),
        "sgdr": ("cycle", "cycle_mult", "lr_min", "max_iter"),
        "cosine": ("cycle", "cycle_mult", "lr_min", "max_iter"),
    }.get(schedule.policy, ())
    for name in uses:
        if name == "scale" and schedule.convention == "caffe":
            continue
        if name == "gamma" and schedule.policy == "step" and schedule.convention == "darknet":
            continue
        value = getattr(schedule, name)
        if isinstance(value, tuple):
            value = ",".join(f"{v:g}" for v in value)
        elif isinstance(value, float):
            value = f"{value:.9g}"
        parts.append(f"{name}={value}")
    if schedule.convention == "darknet" and schedule.burn_in:
        parts.append(f"burn_in={schedule.burn_in} (power {schedule.power:g})")
    if schedule.warmup:
        parts.append(f"warmup={schedule.warmup}")
    return f"{schedule.convention} " + " ".join(parts)


def print_table(curves: list[ScheduleCurve], console) -> None:
    """Milestones (start, burn-in/warm-up end, steps, restarts, end) side by side."""
    from rich.table import Table

    from engine.update.schedule import convention_note

    for curve in curves:
        console.print(
            f"[bold]{curve.source.label}[/]: {describe(curve.source.schedule)}", soft_wrap=True
        )
        console.print(f"  {convention_note(curve.source.schedule)}", style="dim", soft_wrap=True)
    table = Table(title="learning-rate milestones", title_justify="left")
    table.add_column("iteration", justify="right")
    for curve in curves:
        name = "lr" if len(curves) == 1 else f"lr {curve.source.label}"
        table.add_column(name, justify="right")
    table.add_column("event")
    for row in milestone_rows(curves):
        table.add_row(*row)
    console.print(table)
    for curve in curves:
        rates = curve.rates
        console.print(
            f"{curve.source.label}: {len(rates)} updates, iterations "
            f"{int(curve.iterations[0])}..{int(curve.iterations[-1])}, "
            f"lr from {float(rates.min()):.9g} to {float(rates.max()):.9g}"
        )


def milestone_rows(curves: list[ScheduleCurve]) -> list[tuple[str, ...]]:
    """Rows ``(iteration, lr per curve..., events)`` over the union of milestone iterations
    (plus tenths of the run for continuous policies); the middle of a long list is elided."""
    from cli.plotting import format_value
    from engine.update.schedule import PIECEWISE_CONSTANT

    events: dict[int, list[str]] = {}
    for index, curve in enumerate(curves):
        for it, _, reason in curve.milestones:
            tag = reason if len(curves) == 1 else f"{reason} ({index + 1})"
            events.setdefault(it, []).append(tag)
        if curve.source.schedule.policy not in PIECEWISE_CONSTANT:
            # a continuous curve changes every iteration: show it at tenths of the run too
            iterations = curve.iterations
            for tenth in range(1, 10):
                events.setdefault(int(iterations[len(iterations) * tenth // 10]), [])
    rows = []
    for it in sorted(events):
        cells = []
        for curve in curves:
            offset = it - int(curve.iterations[0])
            inside = 0 <= offset < len(curve.rates)
            cells.append(format_value(float(curve.rates[offset])) if inside else "")
        rows.append((str(it), *cells, ", ".join(events[it])))
    if len(rows) > MAX_TABLE_ROWS:
        half = MAX_TABLE_ROWS // 2
        skipped = len(rows) - 2 * half
        gap = ("…", *([""] * len(curves)), f"({skipped} more milestones)")
        rows = [*rows[:half], gap, *rows[-half:]]
    return rows


def to_plot_curves(curves: list[ScheduleCurve]):
    from cli.plotting import Curve, Marker

    plotted = []
    for curve in curves:
        markers = tuple(
            Marker(float(it), reason)
            for it, _, reason in curve.milestones
            if reason not in ("start", "end")
        )
        plotted.append(Curve(curve.source.label, curve.iterations, curve.rates, markers))
    return plotted


def print_plot(curves: list[ScheduleCurve], stream, *, log_y: bool) -> None:
    from cli.plotting import color_wanted, terminal_plot

    text = terminal_plot(to_plot_curves(curves), log_y=log_y, color=color_wanted(stream))
    print(text, file=stream)
    print_conventions(curves, stream)


def write_file(path: Path, curves: list[ScheduleCurve], *, log_y: bool) -> None:
    from cli.plotting import PlotError, write_plot_file

    title = "\n".join(describe(c.source.schedule) for c in curves)
    try:
        write_plot_file(path, to_plot_curves(curves), title=title, log_y=log_y)
    except PlotError as error:
        fail(str(error))
    except OSError as error:
        fail(f"{path}: {error.strerror or error}")
    print(f"wrote {path}", file=sys.stderr)
