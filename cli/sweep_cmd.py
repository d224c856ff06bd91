"""``dnupdate sweep``: a grid of training runs on local worker processes or a Dask cluster, and
its results table.

Rendering only: the variants, the cluster and the results files are
:mod:`engine.experiments`'s. A live Rich table on stderr (one row per variant: state,
iteration, loss, accuracy, ETA) on a terminal, plain lines otherwise; ``--json`` prints every
sweep event as one JSON object on stdout; ``--summary DIR`` prints a finished (or partial)
sweep's results sorted by test accuracy.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import typer

from dnupdate.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    checkpoint_every_option,
    data_dir_option,
    data_option,
    device_option,
    eval_every_option,
    fail,
    fail_config,
    json_option,
    lr_scaling_option,
    lr_warmup_option,
    max_iters_option,
    out_option,
    quiet_option,
    scaling_sets,
    seed_option,
    semantics_option,
    set_option,
    shuffle_option,
    stderr_console,
    stdout_console,
    threads_option,
    weights_option,
)
from dnupdate.cli.help_format import help_from_doc

SWEEP_HELP = help_from_doc(
    """Train every combination of --grid values (× --seeds) on local worker processes, or on a
Dask cluster with --scheduler.

Each variant is an ordinary run (DIR/runs/<variant>/, the same files and numbers as
'dnupdate train' with those --set values); DIR/results.csv and results.jsonl hold one row per
variant. Running the same command again skips finished variants and resumes interrupted
ones; Ctrl-C checkpoints the running variants. KEY is any --set key of the config, or
semantics, seed, lr_scaling, lr_warmup, optimizer (type for Caffe).

Examples:

  dnupdate sweep configs/quickstart.cfg --grid learning_rate=0.01,0.05 \\
    --grid batch=32,64 --max-iters 20 --workers 2 --out sweeps/lr-batch

  dnupdate sweep configs/mnist_lenet.cfg --grid batch=64,256,1024 \\
    --grid lr_scaling=none,linear,sqrt --seeds 3 --data-dir ../shared/data

  dnupdate sweep configs/quickstart.cfg --grid learning_rate=0.01,0.05 \\
    --scheduler tcp://10.0.0.5:8786 --threads 4

  dnupdate sweep --summary sweeps/lr-batch
"""
)

REFRESH_S = 0.25


# ---- the display ----------------------------------------------------------------------------


class VariantRows:
    """The live state of each variant, from the sweep's events."""

    def __init__(self, names: list[str]) -> None:
        self.rows: dict[str, dict[str, Any]] = {n: {"state": "queued"} for n in names}

    def update(self, event) -> None:
        row = self.rows.setdefault(event.variant, {"state": "queued"}) if event.variant else None
        if row is None:
            return
        data = event.data
        if event.kind == "variant_started":
            row.update(state="resumed" if data.get("resumed") else "running",
                       iteration=data["iteration"], max_iter=data["max_iter"])  # fmt: skip
        elif event.kind == "variant_progress":
            row.update(state="running", iteration=data["iteration"], loss=data["loss"],
                       elapsed=data["elapsed_s"])  # fmt: skip
        elif event.kind == "variant_eval":
            row["accuracy"] = data["accuracy"]
        elif event.kind == "variant_finished":
            row.update(state=data["status"] + (" (earlier)" if data.get("skipped") else ""),
                       loss=data.get("final_loss"), accuracy=data.get("test_accuracy"),
                       reason=data.get("reason", ""))  # fmt: skip
            row.pop("elapsed", None)

    @staticmethod
    def eta(row: dict[str, Any]) -> str:
        """Remaining time from the variant's pace so far (its elapsed time per update)."""
        it, total, elapsed = row.get("iteration"), row.get("max_iter"), row.get("elapsed")
        if not it or not total or elapsed is None:
            return ""
        seconds = int(elapsed / it * max(total - it, 0))
        return f"{seconds // 60}:{seconds % 60:02d}"


def _number(value, digits: int = 4) -> str:
    return (
        "" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    )


def _table(rows: VariantRows):
    from rich.table import Table

    table = Table(show_edge=False)
    for column in ("variant", "state", "iteration", "loss", "accuracy", "ETA"):
        table.add_column(column, justify="left" if column in ("variant", "state") else "right")
    for name, row in rows.rows.items():
        it = row.get("iteration")
        progress = "" if it is None else f"{it}/{row.get('max_iter', '?')}"
        table.add_row(name, row["state"], progress, _number(row.get("loss")),
                      _number(row.get("accuracy")), rows.eta(row))  # fmt: skip
    return table


class LiveTable:
    """The Rich live table on a terminal (refreshed at most every :data:`REFRESH_S`)."""

    def __init__(self, console) -> None:
        self.console = console
        self.live = None
        self.rows: VariantRows | None = None
        self.last = 0.0

    def handle(self, event) -> None:
        from rich.live import Live

        if event.kind == "sweep_started":
            self.rows = VariantRows(event.data["names"])
            self.live = Live(_table(self.rows), console=self.console, auto_refresh=False)
            self.live.start()
            return
        if event.kind == "status":
            self.console.print(event.data.get("message", ""), highlight=False)
            return
        if self.rows is None or self.live is None:
            return
        self.rows.update(event)
        now = time.monotonic()
        if event.kind in ("variant_finished", "sweep_finished") or now - self.last >= REFRESH_S:
            self.last = now
            self.live.update(_table(self.rows), refresh=True)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()


class PlainLines:
    """One line per event on stderr when it is not a terminal."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def handle(self, event) -> None:
        data, name = event.data, event.variant
        if event.kind == "sweep_started":
            line = (
                f"sweep {data['sweep_dir']}: {data['variants']} variant(s), {data['to_run']} to run"
            )
        elif event.kind == "status":
            line = data.get("message", "")
        elif event.kind == "variant_started":
            how = "resumed at" if data.get("resumed") else "started at"
            line = f"{name}: {how} iteration {data['iteration']} of {data['max_iter']}"
        elif event.kind == "variant_progress":
            line = f"{name}: iteration {data['iteration']} loss {_number(data['loss'])}"
        elif event.kind == "variant_eval":
            line = f"{name}: test after {data['iteration']}: accuracy {_number(data['accuracy'])}"
        elif event.kind == "variant_finished":
            line = _finished_line(name, data)
        elif event.kind == "sweep_finished":
            line = "sweep finished: " + ", ".join(f"{v} {k}" for k, v in data["counts"].items())
        else:
            return
        print(line, file=self.stream, flush=True)

    def close(self) -> None:
        self.stream.flush()


def _finished_line(name: str, data: dict[str, Any]) -> str:
    earlier = " (finished earlier)" if data.get("skipped") else ""
    text = f"{name}: {data['status']}{earlier}"
    if data.get("final_loss") is not None:
        text += f"; loss {_number(data['final_loss'])}"
    if data.get("test_accuracy") is not None:
        text += f"; test accuracy {_number(data['test_accuracy'])}"
    if data.get("reason"):
        text += f"; {data['reason']}"
    return text


# ---- --summary ------------------------------------------------------------------------------


def print_summary(sweep_dir: str) -> None:
    """The results table, best test accuracy first."""
    from rich.table import Table

    from dnupdate.engine.experiments.results import (
        SweepFolderError,
        read_results,
        sorted_by_accuracy,
    )

    try:
        rows = sorted_by_accuracy(read_results(sweep_dir))
    except SweepFolderError as error:
        fail(str(error), EXIT_BAD_INPUT)
    columns = [c for c in (rows[0] if rows else {}) if c not in ("run_dir",)]
    table = Table(title=f"{sweep_dir}: {len(rows)} variant(s), best test accuracy first",
                  title_justify="left", show_edge=False)  # fmt: skip
    for column in columns:
        table.add_column(
            column, justify="right" if column not in ("variant", "status", "reason") else "left"
        )
    for item in rows:
        table.add_row(*[_number(item.get(c)) for c in columns])
    stdout_console().print(table)


# ---- the command ----------------------------------------------------------------------------


def sweep(
    config: str | None = typer.Argument(
        None, metavar="CONFIG", help="darknet .cfg or Caffe solver."
    ),
    grid: list[str] = typer.Option(
        [], "--grid", "-g", metavar="KEY=V1,V2", help="Values of one key (repeatable)."
    ),
    seeds: int | None = typer.Option(
        None, "--seeds", min=1, metavar="N", help="N seeds per combination (seed, seed+1, …)."
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        min=1,
        metavar="N",
        help="Local worker processes, one variant at a time each (default: cores/2).",
    ),
    scheduler: str | None = typer.Option(
        None,
        "--scheduler",
        metavar="ADDRESS",
        help="Use an existing Dask cluster: tcp://HOST:PORT or a scheduler file.",
    ),
    out: str | None = out_option("Sweep folder (default: runs/sweep-CONFIG)."),
    summary: str | None = typer.Option(
        None, "--summary", metavar="DIR", help="Print DIR's results, best first."
    ),
    data: str | None = data_option(),
    data_dir: str | None = data_dir_option("Folder with the dataset files (on every worker)."),
    weights: str | None = weights_option("Initial weights for every variant."),
    max_iters: int | None = max_iters_option("Stop each variant after N updates."),
    seed: int | None = seed_option("Seed (the first of --seeds)."),
    semantics: str | None = semantics_option("darknet or caffe for every variant."),
    device: str = device_option(),
    threads: int | None = threads_option("Numba and BLAS threads per variant."),
    sets: list[str] = set_option("Override a config key for every variant (repeatable)."),
    shuffle: bool | None = shuffle_option(),
    eval_every: int | None = eval_every_option(),
    checkpoint_every: int | None = checkpoint_every_option(),
    lr_scaling: str | None = lr_scaling_option(),
    lr_warmup: int | None = lr_warmup_option(),
    as_json: bool = json_option("One JSON object per sweep event on stdout."),
    quiet: bool = quiet_option("No display on stderr."),
) -> None:
    """Run a sweep (see SWEEP_HELP); exits 0 when every variant ran (whatever its status),
    1 bad input, 2 usage, 130 interrupted."""
    if summary is not None:
        print_summary(summary)
        return
    if config is None or (not grid and seeds is None):
        fail("give a CONFIG and at least one --grid KEY=V1,V2 (or --seeds N), or --summary DIR",
             EXIT_USAGE)  # fmt: skip
    if semantics is not None and semantics not in ("darknet", "caffe"):
        fail("--semantics must be darknet or caffe", EXIT_USAGE)
    options = {
        "data": data, "data_dir": data_dir, "weights": weights, "max_iters": max_iters,
        "seed": seed, "semantics": semantics, "device": device, "shuffle": shuffle,
        "eval_every": eval_every, "checkpoint_every": checkpoint_every,
    }  # fmt: skip
    plan = _plan(config, grid, seeds, [*sets, *scaling_sets(lr_scaling, lr_warmup)], options, out)
    raise typer.Exit(_run(plan, workers, scheduler, threads, as_json=as_json, quiet=quiet))


def _plan(config, grid, seeds, sets, options, out):
    from dnupdate.engine.config import parse_overrides
    from dnupdate.engine.experiments.grid import GridError
    from dnupdate.engine.experiments.sweep import plan_sweep
    from dnupdate.engine.spec import ConfigError

    target = out or str(Path("runs") / f"sweep-{Path(config).stem}")
    try:
        return plan_sweep(config, grid, seeds=seeds, sets=parse_overrides(sets),
                          options=options, out=target)  # fmt: skip
    except ConfigError as error:
        fail_config(error)
    except GridError as error:
        fail(str(error), EXIT_USAGE)


def _run(plan, workers, scheduler, threads, *, as_json: bool, quiet: bool) -> int:
    from dnupdate.cli.sinks import JsonLinesSink
    from dnupdate.cli.train_cmd import StopRequest
    from dnupdate.engine.experiments.results import SweepFolderError
    from dnupdate.engine.experiments.sweep import run_sweep

    console = stderr_console()
    sinks: list = []
    if not quiet:
        sinks.append(LiveTable(console) if console.is_terminal else PlainLines(sys.stderr))
    if as_json:
        sinks.append(JsonLinesSink(sys.stdout))
    stop = StopRequest()
    stop.install()
    try:
        for event in run_sweep(plan, workers=workers, scheduler=scheduler, threads=threads,
                               stop=stop):  # fmt: skip
            for sink in sinks:
                sink.handle(event)
    except SweepFolderError as error:
        fail(str(error), EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        print("dnupdate: interrupted twice; running variants stopped without a checkpoint",
              file=sys.stderr)  # fmt: skip
        return EXIT_INTERRUPTED
    except OSError as error:  # the scheduler cannot be reached, …
        fail(f"sweep: {error}", EXIT_BAD_INPUT)
    finally:
        stop.restore()
        for sink in sinks:
            sink.close()
    return EXIT_INTERRUPTED if stop() else EXIT_OK
