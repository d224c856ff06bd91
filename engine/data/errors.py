"""Exceptions raised by the data layer.

Every message names the file (or dataset) and the problem, so the CLI can print it as one
line with no traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


class DataError(Exception):
    """A data file or source is missing, unreadable or malformed.

    ``path`` is the file or directory concerned (or a dataset name), ``problem`` says what is
    wrong with it; ``str(error)`` is ``"PATH: PROBLEM"``.
    """

    def __init__(self, path: str, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class DatasetNotFound(DataError):
    """A named dataset has no usable copy on this machine.

    The message lists the files to place, the directory to place them in, and the command that
    downloads them (``hint``), so an offline user knows exactly what to do.
    """

    def __init__(self, name: str, problem: str, hint: str):
        self.hint = hint
        super().__init__(name, f"{problem}\n{hint}")


class DownloadError(DataError):
    """Every mirror failed for one file; ``attempts`` holds ``(url, reason)`` per mirror."""

    def __init__(self, filename: str, attempts: list[tuple[str, str]], hint: str = ""):
        self.attempts = list(attempts)
        lines = [f"  {url}: {reason}" for url, reason in attempts]
        text = "download failed from every mirror:\n" + "\n".join(lines)
        if hint:
            text += "\n" + hint
        super().__init__(filename, text)


def check_label_range(path: str | Path, labels: np.ndarray, classes: int, unit: str) -> None:
    """Every label must be below ``classes``: the first that is not raises :class:`DataError`
    naming its position (``"<unit> <index>"``, e.g. ``record 3``), its value and the range."""
    if labels.size and int(labels.max()) >= classes:
        bad = int((labels >= classes).argmax())
        raise DataError(
            str(path),
            f"label out of range: {unit} {bad} has label {int(labels[bad])}, "
            f"expected 0..{classes - 1}",
        )
