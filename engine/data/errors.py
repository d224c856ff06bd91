"""Exceptions raised by the data layer.

Every message names the file (or dataset) and the problem, so the CLI can print it as one
line with no traceback.
"""

from __future__ import annotations

from pathlib import Path

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


def check_label_range(
    path: str | Path, labels: np.ndarray, classes: int, unit: str, why: str = ""
) -> None:
    """Every label must be below ``classes``: the first that is not raises :class:`DataError`
    naming its position (``"<unit> <index>"``, e.g. ``record 3``), its value and the range
    (``why``, when given, is appended: where the range comes from)."""
    if labels.size and int(labels.max()) >= classes:
        bad = int((labels >= classes).argmax())
        raise DataError(
            str(path),
            f"label out of range: {unit} {bad} has label {int(labels[bad])}, "
            f"expected 0..{classes - 1}{why}",
        )


#: the largest pixel magnitude accepted in float images: beyond it the first layers'
#: float32 sums overflow (1e30 squared is inf) and the run "diverges" at update 1, which is
#: bad input, not divergence
MAX_ABS_PIXEL = 1e6

#: images checked per block when scanning float data (bounded temporary memory)
_SCAN_BLOCK = 4096


def check_pixels(path: str | Path, images: np.ndarray, unit: str = "item") -> None:
    """Float images must be finite and within ±:data:`MAX_ABS_PIXEL`: the first bad value
    raises :class:`DataError` naming the image (``"<unit> <index>"``), the pixel (C, H, W)
    and the value. uint8 images cannot be bad and are not scanned."""
    if not np.issubdtype(images.dtype, np.floating):
        return
    for start in range(0, images.shape[0], _SCAN_BLOCK):
        block = np.asarray(images[start : start + _SCAN_BLOCK])
        with np.errstate(invalid="ignore"):
            bad = ~(np.abs(block) <= MAX_ABS_PIXEL)  # NaN compares false
        if bad.any():
            flat = int(bad.argmax())
            where = np.unravel_index(flat, block.shape)
            pixel = ", ".join(str(int(i)) for i in where[1:])
            value = block.reshape(-1)[flat]
            raise DataError(
                str(path),
                f"bad pixel: {unit} {start + int(where[0])} pixel ({pixel}) is {float(value):g}; "
                f"float images must be finite and within ±{MAX_ABS_PIXEL:g}",
            )
