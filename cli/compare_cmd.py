"""``dnupdate compare``: variants of one config in lockstep, from the same initial parameters
on the same batches, with the distance between their trajectories (engine:
:mod:`engine.experiments.compare`); lines on stderr, ``--json`` events on stdout, and
``DIR/compare.csv``/``compare.jsonl`` with ``--out``."""

from __future__ import annotations

import sys

import typer

from dnupdate.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    data_dir_option,
    data_option,
    fail,
    fail_config,
    json_option,
    max_iters_option,
    out_option,
    quiet_option,
    seed_option,
    set_option,
    threads_option,
)
from dnupdate.cli.help_format import help_from_doc

COMPARE_HELP = help_from_doc(
    """Train variants of one config side by side and measure where they part.

Every variant starts from the same initial parameters and sees the same batches in the same
order; after each update it shows each variant's loss and ‖θ_a − θ_v‖/‖θ_a‖ against the
first variant (per layer in the files). A variant's OPTIONS are --semantics, --set KEY=VALUE,
--lr-scaling and --lr-warmup.

Examples:

  dnupdate compare configs/mnist_lenet.cfg \\
    --variant darknet='--semantics darknet' \\
    --variant caffe='--semantics caffe' --set steps=20 --set scales=.1 \\
    --max-iters 40

  dnupdate compare configs/lenet_solver.prototxt \\
    --variant adam='--set type=Adam' --variant adamw='--set type=AdamW' \\
    --max-iters 100 --out compare-adam
"""
)


def _line(step: dict) -> str:
    losses = " | ".join(f"{n} {v:.5g}" for n, v in step["losses"].items())
    parts = [f"iter {step['iteration']}: loss {losses}"]
    for name, d in step["distances"].items():
        parts.append(f"‖θ−θ_{name}‖/‖θ‖ {d['net']:.3g}")
    lrs = set(step["lrs"].values())
    parts.append("lr " + ("/".join(f"{v:.6g}" for v in step["lrs"].values()) if len(lrs) > 1
                          else f"{next(iter(lrs)):.6g}"))  # fmt: skip
    return "; ".join(parts)


def _finished_line(data: dict) -> str:
    parts = [f"compare {data['status']} after {data['iteration']} updates"]
    for name, at in data["parted_at"].items():
        where = f"parted at update {at}" if at is not None else "never parted"
        parts.append(f"{name}: {where} (max distance {data['max_distance'][name]:.3g})")
    return "; ".join(parts) + f" [threshold {data['threshold']:g}]"


def compare(
    config: str = typer.Argument(..., metavar="CONFIG", help="darknet .cfg or Caffe solver."),
    variants: list[str] = typer.Option(
        [],
        "--variant",
        "-v",
        metavar="NAME=OPTIONS",
        help="A variant: its name and its options in quotes (repeatable; two or more).",
    ),
    sets: list[str] = set_option("Override a config key for every variant (repeatable)."),
    max_iters: int | None = max_iters_option("Stop after N updates."),
    data: str | None = data_option(),
    data_dir: str | None = data_dir_option(),
    seed: int | None = seed_option("Seed of init and data order, the same for every variant."),
    threads: int | None = threads_option(),
    every: int | None = typer.Option(
        None, "--every", min=1, metavar="N", help="Print every N updates."
    ),
    out: str | None = out_option("Write compare.csv and compare.jsonl to DIR."),
    as_json: bool = json_option(),
    quiet: bool = quiet_option("No lines on stderr."),
) -> None:
    """Compare variants (see COMPARE_HELP); exits 0, 1 bad input, 2 usage, 130 stopped."""
    from dnupdate.cli.sinks import JsonLinesSink
    from dnupdate.cli.train_cmd import StopRequest
    from dnupdate.engine.config import parse_overrides
    from dnupdate.engine.experiments.compare import (
        CompareError,
        compare_runs,
        parse_variant,
        step_row,
        write_compare,
    )
    from dnupdate.engine.spec import ConfigError

    options = {"data": data, "data_dir": data_dir, "seed": seed, "max_iters": max_iters,
               "threads": threads}  # fmt: skip
    try:
        parsed = [parse_variant(v) for v in variants]
        overrides = parse_overrides(sets)
    except CompareError as error:
        fail(str(error), EXIT_USAGE)
    except ConfigError as error:
        fail_config(error)
    sink = JsonLinesSink(sys.stdout) if as_json else None
    lines = None if quiet else CompareLines(every)
    stop = StopRequest()
    stop.install()
    rows, events, status = [], [], "done"
    try:
        for event in compare_runs(config, parsed, sets=overrides, options=options, stop=stop):
            events.append(event)
            if sink is not None:
                sink.handle(event)
            if lines is not None:
                lines.handle(event)
            if event.kind == "compare_step":
                rows.append(step_row(event.data))
            elif event.kind == "compare_finished":
                status = event.data["status"]
    except ConfigError as error:
        fail_config(error)
    except (CompareError, ValueError, OSError) as error:
        fail(str(error), EXIT_BAD_INPUT)
    finally:
        stop.restore()
        if out is not None and events:
            write_compare(out, rows, events)
    raise typer.Exit(EXIT_INTERRUPTED if status == "interrupted" else EXIT_OK)


class CompareLines:
    """Plain lines on stderr: the start, every ``every``-th update (and the first), the end."""

    def __init__(self, every: int | None) -> None:
        self.every = every

    def handle(self, event) -> None:
        data = event.data
        if event.kind == "compare_started":
            self.every = self.every or max(1, data["max_iter"] // 20)
            semantics = ", ".join(data["semantics"])
            line = f"comparing {', '.join(data['variants'])} ({semantics} semantics)"
            print(f"{line} over {data['max_iter']} updates", file=sys.stderr, flush=True)
        elif event.kind == "compare_step":
            if data["iteration"] % (self.every or 1) == 0 or data["iteration"] == 1:
                print(_line(data), file=sys.stderr, flush=True)
        elif event.kind == "compare_finished":
            print(_finished_line(data), file=sys.stderr, flush=True)
