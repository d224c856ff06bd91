"""Where dataset files live: the data directories and the search for a dataset's files.

Precedence (``spec/users.md`` B.1): ``--data-dir`` → ``$DNUPDATE_DATA_DIR`` →
``platformdirs.user_cache_dir("dnupdate", appauthor=False)/datasets``. Reading searches all of
them in that order, then system folders (Debian's ``dataset-fashion-mnist`` installs
``/usr/share/datasets/fashion-mnist``); ``fetch`` writes into the first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dnupdate.engine.data.catalog import CatalogEntry

ENV_VAR = "DNUPDATE_DATA_DIR"


def cache_root() -> Path:
    """``$DNUPDATE_DATA_DIR``, else the user cache directory's ``datasets`` folder."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("dnupdate", appauthor=False)) / "datasets"


def write_root(data_dir: str | Path | None) -> Path:
    """The directory ``fetch`` writes into: ``--data-dir`` if given, else :func:`cache_root`."""
    return Path(data_dir).expanduser() if data_dir else cache_root()


def search_roots(data_dir: str | Path | None) -> list[Path]:
    """Data directories to search, in order (duplicates removed)."""
    roots = [Path(data_dir).expanduser()] if data_dir else []
    roots.append(cache_root())
    unique: list[Path] = []
    for root in roots:
        if root not in unique:
            unique.append(root)
    return unique


def candidate_dirs(
    entry: CatalogEntry, data_dir: str | Path | None, *, only: bool = False
) -> list[Path]:
    """Every folder that may hold ``entry``'s files, most preferred first.

    ``only``: search ``data_dir`` and its sub-folders alone (not the cache or system folders).
    """
    dirs: list[Path] = []
    roots = [Path(data_dir)] if only and data_dir else search_roots(data_dir)
    for root in roots:
        for folder in (*entry.folders, entry.cache_folder):
            path = root / folder if folder else root
            if path not in dirs:
                dirs.append(path)
    if not only:
        dirs.extend(Path(p) for p in entry.system_dirs)
    return dirs


def first_existing(folder: Path, names: tuple[str, ...]) -> Path | None:
    """The first of ``names`` that is a file in ``folder``."""
    for name in names:
        path = folder / name
        if path.is_file():
            return path
    return None


@dataclass(frozen=True)
class Located:
    """The files found for one split: role → paths, the folder, and notes for the user."""

    folder: Path
    files: dict[str, list[Path]]
    notes: tuple[str, ...] = ()
