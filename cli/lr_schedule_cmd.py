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

from dnupdate.cli.common import (
    EXIT_USAGE,
    fail,
    fail_config,
    json_option,
    lr_scaling_option,
    lr_warmup_option,
    machine_format,
    report_diagnostics,
    scaling_sets,
    set_option,
)
from dnupdate.cli.help_format import help_from_doc

LR_SCHEDULE_HELP = help_from_doc(
    """Show the learning rate at every iteration of a schedule.

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
)

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
    sets: list[str] = set_option("Override or define a schedule key (repeatable)."),
    iters: int | None = typer.Option(
        None,
        "--iters",
        "-n",
        min=1,
        metavar="N",
        help="Number of updates (default: the config's max iterations).",
    ),
    plot: bool = typer.Option(False, "--plot", help="Draw the curve in the terminal."),
    output_format: OutputFormat = typer.Option(
        OutputFormat.table, "--format", "-f", help="table (milestones), csv or json."
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        metavar="FILE",
        help="Write the plot or values to a .png, .svg, .csv or .json file.",
    ),
    log_y: bool = typer.Option(False, "--log", help="Logarithmic lr axis in plots."),
    as_json: bool = json_option("Same as --format json."),
    lr_scaling: str | None = lr_scaling_option(),
    lr_warmup: int | None = lr_warmup_option(),
) -> None:
    from dnupdate.engine.spec import ConfigError

    output_format = OutputFormat(machine_format(as_json, output_format.value, "table"))
    scaling = scaling_sets(lr_scaling, lr_warmup)
    if scaling and not configs:
        fail("--lr-scaling/--lr-warmup need a CONFIG (its own batch is the reference)", EXIT_USAGE)
    if output is not None:
        check_output_file(output)  # before anything is printed
    try:
        sources = load_sources(configs or [], [*sets, *scaling])
    except ConfigError as error:
        fail_config(schedule_diagnostics(error))
    curves = compute_curves(sources, iters)
    emit(curves, output_format, plot=plot, log_y=log_y)
    if output is not None:
        write_file(output, curves, log_y=log_y)


# ---- loading ---------------------------------------------------------------------------------


def load_sources(configs: list[str], sets: list[str]) -> list[Source]:
    """Schedules from each config (with ``--set`` overrides), or from the options alone."""
    from dnupdate.engine.config import load_schedule, parse_overrides, schedule_from_options

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
        found = load_schedule(path, overrides)
        warnings = [d for d in found.diagnostics if d.severity == "warning"]
        report_schedule_warnings(path, warnings)
        sources.append(Source(path, found.schedule, found.updates))
    return sources


def schedule_keys() -> frozenset[str]:
    """The keys a schedule is made of, in both frameworks' names (the config loaders' own
    lists), plus the batch-size scaling pseudo-keys."""
    from dnupdate.engine.config.caffe import CAFFE_SCHEDULE_KEYS, NET_OVERRIDES
    from dnupdate.engine.config.darknet import DARKNET_SCHEDULE_KEYS
    from dnupdate.engine.config.scaling import SCALING_KEYS

    return CAFFE_SCHEDULE_KEYS | DARKNET_SCHEDULE_KEYS | NET_OVERRIDES | set(SCALING_KEYS)


def concerns_schedule(diagnostic, keys: frozenset[str]) -> bool:
    """Whether a diagnostic is about the schedule: its key is a schedule key, or so close to
    one that it may be a misspelling (``learning_rat``); augmentation, layer and data
    warnings are not."""
    import difflib

    key = (diagnostic.key or "").strip("[]")
    return key in keys or bool(difflib.get_close_matches(key, keys, n=1, cutoff=0.8))


def in_line_order(diagnostics: list) -> list:
    """Diagnostics sorted by file, then line (those without a line first in their file)."""
    return sorted(diagnostics, key=lambda d: (d.file, d.line if d.line is not None else -1))


def schedule_diagnostics(error):
    """A ConfigError keeping its errors and the warnings about the schedule, in line order."""
    from dnupdate.engine.spec import ConfigError

    keys = schedule_keys()
    kept = [d for d in error.diagnostics if d.severity == "error" or concerns_schedule(d, keys)]
    return ConfigError(in_line_order(kept))


def report_schedule_warnings(path: str, warnings: list) -> None:
    """Print the warnings that concern the schedule, in file and line order, and count the
    others (``dnupdate inspect`` lists them all)."""
    keys = schedule_keys()
    shown = in_line_order([d for d in warnings if concerns_schedule(d, keys)])
    report_diagnostics(shown)
    hidden = len(warnings) - len(shown)
    if hidden:
        noun = "warning" if hidden == 1 else "warnings"
        print(
            f"{path}: {hidden} {noun} about settings other than the schedule not shown "
            f"(dnupdate inspect {path} lists them)",
            file=sys.stderr,
        )


# ---- evaluation ------------------------------------------------------------------------------


EXACT_LIMIT = 1_000_000  # up to this many updates every rate is computed for table and plot
PLOT_SAMPLES = 4096  # iterations evaluated for the plot of a longer schedule
MILESTONE_LIMIT = 1000  # step/restart points kept at each end of a long list


@dataclass(frozen=True)
class ScheduleCurve:
    """A schedule over ``first..last`` with its milestones. ``iterations``/``rates`` hold
    every iteration up to :data:`EXACT_LIMIT` updates, else a sample (evenly spaced, plus
    each milestone, the iteration before it and the tenths of the run) so that memory and
    time stay bounded; CSV and JSON stream every iteration (:func:`iter_lr_chunks`).
    ``omitted``: step/restart points left out of ``milestones`` (see ``MILESTONE_LIMIT``)."""

    source: Source
    first: int
    last: int
    iterations: object  # np.ndarray[int64]
    rates: object  # np.ndarray[float32]
    milestones: list[tuple[int, float, str]]
    omitted: int = 0

    @property
    def updates(self) -> int:
        return self.last - self.first + 1

    @property
    def sampled(self) -> bool:
        return len(self.iterations) < self.updates

    def tenth(self, k: int) -> int:
        """The iteration ``k/10`` of the way through the run."""
        return self.first + self.updates * k // 10

    def rate_at(self, iteration: int) -> float | None:
        """The rate at ``iteration`` when it was evaluated (always for milestones and
        tenths), else None."""
        import numpy as np

        index = int(np.searchsorted(self.iterations, iteration))
        if index < len(self.iterations) and int(self.iterations[index]) == iteration:
            return float(self.rates[index])
        return None


def compute_curves(sources: list[Source], iters: int | None) -> list[ScheduleCurve]:
    """Evaluate every schedule over ``N`` updates (darknet b = 1..N, Caffe it = 0..N-1)."""
    from dnupdate.engine.update.schedule import ScheduleError, first_iteration

    curves = []
    for source in sources:
        updates = iters or source.updates
        if not updates or updates <= 0:
            fail(
                f"{source.label}: no maximum iteration count (max_batches / max_iter); "
                "pass --iters N"
            )
        first = first_iteration(source.schedule)
        try:
            curves.append(evaluate_curve(source, first, first + updates - 1))
        except ScheduleError as error:
            fail(f"{source.label}: {error}")
    return curves


def evaluate_curve(source: Source, first: int, last: int) -> ScheduleCurve:
    """Milestones (analytic) and the rates of every iteration, or of a sample."""
    import numpy as np

    from dnupdate.engine.update.schedule import lr_points, lr_series, milestones_with_count

    schedule = source.schedule
    marks, omitted = milestones_with_count(schedule, last, limit=MILESTONE_LIMIT)
    if last - first + 1 <= EXACT_LIMIT:
        iterations = np.arange(first, last + 1, dtype=np.int64)
        rates = lr_series(schedule, first, last)
    else:
        iterations = sample_iterations(first, last, [it for it, _, _ in marks])
        rates = lr_points(schedule, iterations)
    return ScheduleCurve(source, first, last, iterations, rates, marks, omitted)


def sample_iterations(first: int, last: int, marks: list[int]):
    """Sorted distinct iterations: :data:`PLOT_SAMPLES` evenly spaced, each mark and the one
    before it (so steps stay sharp in plots), and the tenths of the run."""
    import numpy as np

    updates = last - first + 1
    even = np.linspace(first, last, PLOT_SAMPLES).round().astype(np.int64)
    tenths = [first + updates * k // 10 for k in range(1, 10)]
    around = [m - 1 for m in marks if m > first]
    extra = np.array([*marks, *around, *tenths], dtype=np.int64)
    return np.unique(np.concatenate([even, extra]))


# ---- output ----------------------------------------------------------------------------------


def emit(curves: list[ScheduleCurve], output_format: OutputFormat, *, plot: bool, log_y: bool):
    """Machine formats go to stdout plain (the convention note to stderr); the table and the
    plot are for people (the plot goes to stderr when stdout carries CSV/JSON)."""
    from dnupdate.cli.common import stdout_console

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
    from dnupdate.engine.update.schedule import convention_note

    notes = dict.fromkeys(convention_note(c.source.schedule) for c in curves)
    for note in notes:
        print(note, file=stream)


def print_csv(curves: list[ScheduleCurve], stream) -> None:
    """``iteration,lr`` (one schedule) or ``config,iteration,lr`` (several), every iteration,
    streamed chunk by chunk (bounded memory however long the schedule)."""
    import csv

    from dnupdate.cli.plotting import format_value
    from dnupdate.engine.update.schedule import ScheduleError, iter_lr_chunks

    writer = csv.writer(stream, lineterminator="\n")
    several = len(curves) > 1
    writer.writerow(["config", "iteration", "lr"] if several else ["iteration", "lr"])
    for curve in curves:
        try:
            for its, rates in iter_lr_chunks(curve.source.schedule, curve.first, curve.last):
                values = [format_value(v) for v in rates.tolist()]
                for it, value in zip(its.tolist(), values, strict=True):
                    writer.writerow([curve.source.label, it, value] if several else [it, value])
        except ScheduleError as error:
            fail(f"{curve.source.label}: {error}")


def json_number(value: float) -> float | None:
    """9 significant digits (identifies the float32), null for NaN/inf (not JSON)."""
    import math

    return None if not math.isfinite(value) else float(f"{value:.9g}")


def print_json(curves: list[ScheduleCurve], stream) -> None:
    """A list of ``{"iteration", "lr"}`` objects (plus ``"config"`` with several), written
    as ``json.dump`` would, streamed chunk by chunk."""
    from dnupdate.engine.update.schedule import ScheduleError, iter_lr_chunks

    several = len(curves) > 1
    stream.write("[")
    separator = ""
    for curve in curves:
        try:
            chunks = iter_lr_chunks(curve.source.schedule, curve.first, curve.last)
            for its, rates in chunks:
                for it, lr in zip(its.tolist(), rates.tolist(), strict=True):
                    row = {"config": curve.source.label} if several else {}
                    row.update(iteration=it, lr=json_number(lr))
                    stream.write(separator + json.dumps(row))
                    separator = ", "
        except ScheduleError as error:
            fail(f"{curve.source.label}: {error}")
    stream.write("]\n")


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

    from dnupdate.engine.update.schedule import convention_note

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
        where = f" at the {len(rates):,} iterations sampled" if curve.sampled else ""
        console.print(range_line(curve, where))


def range_line(curve: ScheduleCurve, where: str = "") -> str:
    """``N updates, iterations a..b, lr X at the start → Y at the end (min A, max B)``: the
    start and end rates, then the extremes (a warm-up or a restart puts them elsewhere)."""
    from dnupdate.cli.plotting import format_value

    start, end = curve.rate_at(curve.first), curve.rate_at(curve.last)
    low, high = float(curve.rates.min()), float(curve.rates.max())
    ends = f"lr {format_value(start)} at the start → {format_value(end)} at the end"
    return (
        f"{curve.source.label}: {curve.updates:,} updates, iterations "
        f"{curve.first}..{curve.last}, {ends} "
        f"(min {format_value(low)}, max {format_value(high)}{where})"
    )


def milestone_rows(curves: list[ScheduleCurve]) -> list[tuple[str, ...]]:
    """Rows ``(iteration, lr per curve..., events)`` over the union of milestone iterations
    (plus tenths of the run for continuous policies); the middle of a long list is elided."""
    from dnupdate.cli.plotting import format_value
    from dnupdate.engine.update.schedule import PIECEWISE_CONSTANT

    events: dict[int, list[str]] = {}
    for index, curve in enumerate(curves):
        for it, _, reason in curve.milestones:
            tag = reason if len(curves) == 1 else f"{reason} ({index + 1})"
            events.setdefault(it, []).append(tag)
        if curve.source.schedule.policy not in PIECEWISE_CONSTANT:
            # a continuous curve changes every iteration: show it at tenths of the run too
            for tenth in range(1, 10):
                events.setdefault(curve.tenth(tenth), [])
    rows = []
    for it in sorted(events):
        cells = []
        for curve in curves:
            rate = curve.rate_at(it) if curve.first <= it <= curve.last else None
            cells.append("" if rate is None else format_value(rate))
        rows.append((str(it), *cells, ", ".join(events[it])))
    omitted = sum(curve.omitted for curve in curves)
    if len(rows) > MAX_TABLE_ROWS or omitted:
        half = MAX_TABLE_ROWS // 2
        skipped = max(len(rows) - 2 * half, 0)
        note = f"({skipped} more milestones)" if skipped else ""
        if omitted:
            note = (note + " " if note else "") + (
                f"({omitted:,} more step/restart points not evaluated)"
            )
        gap = ("…", *([""] * len(curves)), note)
        rows = [*rows[:half], gap, *rows[-half:]] if skipped else [*rows[:half], gap, *rows[half:]]
    return rows


def to_plot_curves(curves: list[ScheduleCurve]):
    from dnupdate.cli.plotting import Curve, Marker

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
    from dnupdate.cli.plotting import color_wanted, terminal_plot

    text = terminal_plot(to_plot_curves(curves), log_y=log_y, color=color_wanted(stream))
    print(text, file=stream)
    print_conventions(curves, stream)


def check_output_file(path: Path) -> None:
    """Exit 1 at once when ``--output`` names a type that cannot be written here."""
    from dnupdate.cli.plotting import SUFFIXES, PlotError, check_output

    try:
        check_output(path, (*SUFFIXES, ".json"))
    except PlotError as error:
        fail(str(error))


def write_file(path: Path, curves: list[ScheduleCurve], *, log_y: bool) -> None:
    """``.json``: the ``--format json`` document; else a plot or CSV (cli.plotting)."""
    from dnupdate.cli.plotting import PlotError, write_plot_file

    title = "\n".join(describe(c.source.schedule) for c in curves)
    if path.suffix.lower() == ".csv":  # every iteration, streamed (plots use the sample)
        try:
            with open(path, "w", newline="", encoding="utf-8") as stream:
                print_csv(curves, stream)
        except OSError as error:
            fail(f"{path}: {error.strerror or error}")
        print(f"wrote {path}", file=sys.stderr)
        return
    try:
        if path.suffix.lower() == ".json":
            with open(path, "w", encoding="utf-8") as stream:
                print_json(curves, stream)
        else:
            write_plot_file(path, to_plot_curves(curves), title=title, log_y=log_y)
    except PlotError as error:
        fail(str(error))
    except OSError as error:
        fail(f"{path}: {error.strerror or error}")
    print(f"wrote {path}", file=sys.stderr)
