"""The ``dnupdate`` command: a Typer app whose commands live one per module.

Command modules import the engine lazily, inside the command functions, so ``--help`` and
``lr-schedule`` never import Numba.
"""

from __future__ import annotations

import typer

from cli import __version__

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
    """Attach every command module's commands to the app."""
    from cli import commands  # noqa: F401  (imports register the commands)


_register()
