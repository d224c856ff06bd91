"""The ``dnupdate`` command: a Typer app whose commands live one per module.

Command modules import the engine lazily, inside the command functions, so ``--help`` and
``lr-schedule`` never import Numba.
"""

from __future__ import annotations

import typer

from dnupdate.cli import (
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
from dnupdate.cli.common import check_blas_environment
from dnupdate.cli.help_format import HelpCommand, HelpGroup, help_text

HELP_FLAGS = frozenset({"-h", "--help"})


class RootGroup(HelpGroup):
    """The ``dnupdate`` group: notes whether help was asked for anywhere on the line (the
    group's callback runs before a command parses its own ``--help``)."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        ctx.meta["dnupdate_help"] = not HELP_FLAGS.isdisjoint(args)
        return super().parse_args(ctx, args)


app = typer.Typer(
    name="dnupdate",
    help=help_text(
        "Train small conv/FC networks exactly the way darknet and Caffe update their weights, "
        "and watch it happen.",
        "Run dnupdate COMMAND --help for a command's options and examples.",
        examples=(
            "dnupdate train configs/quickstart.cfg",
            "dnupdate lr-schedule configs/quickstart.cfg --plot",
            "dnupdate inspect configs/lenet_solver.prototxt",
            "dnupdate train configs/lenet_solver.prototxt --data-dir ../shared/data",
        ),
    ),
    cls=RootGroup,
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
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Train darknet .cfg and Caffe solver configs with their frameworks' exact update rules."""
    if not ctx.meta.get("dnupdate_help"):  # help is shown whatever the variable says
        check_blas_environment()  # every command: an unknown DNUPDATE_BLAS is refused, exit 1


def _register() -> None:
    """Attach every command module's commands to the app, in the order ``--help`` lists them.

    The command modules define plain functions and never import this module, so the imports
    point one way: ``cli.main`` → ``cli.*_cmd`` → ``cli.common`` (and the engine, lazily).
    """
    commands = (
        ("bench", bench_cmd.bench, bench_cmd.BENCH_HELP, False),
        ("compare", compare_cmd.compare, compare_cmd.COMPARE_HELP, True),
        ("devices", devices_cmd.devices, devices_cmd.DEVICES_HELP, False),
        ("eval", eval_cmd.eval_command, eval_cmd.EVAL_HELP, True),
        ("inspect", inspect_cmd.inspect_command, inspect_cmd.INSPECT_HELP, False),
        ("lr-schedule", lr_schedule_cmd.lr_schedule, lr_schedule_cmd.LR_SCHEDULE_HELP, False),
        ("plot", plot_cmd.plot, plot_cmd.PLOT_HELP, True),
        ("sweep", sweep_cmd.sweep, sweep_cmd.SWEEP_HELP, True),
        ("train", train_cmd.train, train_cmd.TRAIN_HELP, True),
    )
    for name, function, help_, no_args_is_help in commands:
        app.command(name, help=help_, no_args_is_help=no_args_is_help, cls=HelpCommand)(function)
    app.add_typer(data_cmd.data_app, name="data")


_register()
