"""The ``dnupdate`` command: a Typer app whose commands live one per module.

Command modules import the engine lazily, inside the command functions, so ``--help`` and
``lr-schedule`` never import Numba.
"""

from __future__ import annotations

import typer

from cli import (
    __version__,
    bench_cmd,
    compare_cmd,
    data_cmd,
    devices_cmd,
    eval_cmd,
    inspect_cmd,
    lr_schedule_cmd,
    plot_cmd,
    sweep_cmd,
    train_cmd,
)

app = typer.Typer(
    name="dnupdate",
    help=(
        "Train small conv/FC networks exactly the way darknet and Caffe update their weights, "
        "and watch it happen.\n\n"
        "Examples:\n\n"
        "  dnupdate train configs/quickstart.cfg\n\n"
        "  dnupdate lr-schedule configs/quickstart.cfg --plot\n\n"
        "  dnupdate inspect configs/lenet_solver.prototxt\n\n"
        "  dnupdate train configs/lenet_solver.prototxt --data-dir ../shared/data\n\n"
        "  dnupdate <command> --help"
    ),
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"dnupdate {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Train darknet .cfg and Caffe solver configs with their frameworks' exact update rules."""


def _register() -> None:
    """Attach every command module's commands to the app, in the order ``--help`` lists them.

    The command modules define plain functions and never import this module, so the imports
    point one way: ``cli.main`` → ``cli.*_cmd`` → ``cli.common`` (and the engine, lazily).
    """
    app.command("bench", help=bench_cmd.BENCH_HELP, no_args_is_help=False)(bench_cmd.bench)
    app.command("compare", help=compare_cmd.COMPARE_HELP, no_args_is_help=True)(compare_cmd.compare)
    app.add_typer(data_cmd.data_app, name="data")
    app.command("devices")(devices_cmd.devices)
    app.command("eval", help=eval_cmd.EVAL_HELP, no_args_is_help=True)(eval_cmd.eval_command)
    app.command("inspect", help=inspect_cmd.INSPECT_HELP)(inspect_cmd.inspect_command)
    app.command("lr-schedule", help=lr_schedule_cmd.LR_SCHEDULE_HELP, no_args_is_help=False)(
        lr_schedule_cmd.lr_schedule
    )
    app.command("plot", help=plot_cmd.PLOT_HELP, no_args_is_help=True)(plot_cmd.plot)
    app.command("sweep", help=sweep_cmd.SWEEP_HELP, no_args_is_help=True)(sweep_cmd.sweep)
    app.command("train", help=train_cmd.TRAIN_HELP, no_args_is_help=True)(train_cmd.train)


_register()
