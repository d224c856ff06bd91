"""The configs that ship with dnupdate, by name: ``dnupdate train quickstart`` works anywhere.

The repository's ``configs/`` folder is the source. A wheel carries a copy of it inside this
package, as ``engine/config/bundled/`` (``hatch_build.py``, a wheel build hook), so an
installed ``dnupdate`` finds its examples and benchmark workloads without the repository; a
checkout (editable install) reads ``configs/`` itself.

A built-in name is a file's stem: ``quickstart`` (``quickstart.cfg``), ``lenet_solver``
(``lenet_solver.prototxt``), … Net files that a solver names (``*_train_test.prototxt``) and the
YAML twins of solvers are not names of their own (the prototxt solver wins the stem). Names
are looked up only when no file of that name exists: a path always means the file.
"""

from __future__ import annotations

import os
from pathlib import Path

#: the copy inside an installed wheel
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
#: the repository's own folder (a checkout or editable install)
REPOSITORY_DIR = Path(__file__).resolve().parents[2] / "configs"

_SUFFIXES = (".cfg", ".prototxt", ".yaml")


def configs_dir() -> Path:
    """Where the shipped configs are: the wheel's bundled copy, else the repository's folder."""
    return BUNDLED_DIR if BUNDLED_DIR.is_dir() else REPOSITORY_DIR


def builtin_configs(folder: Path | None = None) -> dict[str, Path]:
    """``{name: path}`` of the runnable configs in ``folder`` (default :func:`configs_dir`)."""
    folder = configs_dir() if folder is None else folder
    names: dict[str, Path] = {}
    for suffix in _SUFFIXES:  # .cfg, then .prototxt, then .yaml: the first suffix keeps a stem
        for path in sorted(folder.glob(f"*{suffix}")):
            if path.stem.endswith("_train_test") or path.stem in names:
                continue
            names[path.stem] = path
    return names


def locate_config(argument: str) -> str:
    """The file a CONFIG argument means: itself when such a file exists (or ``-``), else the
    built-in config of that name, else the argument unchanged (the reader reports it)."""
    if argument == "-" or os.path.exists(argument):  # False (no error) for odd names too
        return argument
    found = builtin_configs().get(argument)
    return str(found) if found is not None else argument


def builtin_names() -> list[str]:
    """The built-in config names, sorted (for messages and ``--help``)."""
    return sorted(builtin_configs())
