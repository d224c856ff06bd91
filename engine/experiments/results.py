"""A sweep's folder and its results table.

Layout of ``DIR``: ``sweep.json`` (the grid, the options, the versions, the variants),
``runs/<variant-name>/`` (an ordinary run folder per variant), ``results.csv`` and
``results.jsonl`` (one row per variant, in the variants' order: ``variant``, the grid keys,
``status``, ``final_loss``, ``smoothed_loss``, ``test_loss``, ``test_accuracy``,
``images_per_s``, ``wall_s``, ``run_dir`` relative to ``DIR``, ``reason``). Both results files
are rewritten atomically whenever a variant ends, so they always hold whole rows.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dnupdate.engine.training.events import json_value
from dnupdate.engine.training.runfolder import RunFolderError, read_json, write_json, write_text

SWEEP_FILE = "sweep.json"
RUNS_DIR = "runs"
RESULTS_CSV = "results.csv"
RESULTS_JSONL = "results.jsonl"
METRIC_COLUMNS = (
    "status",
    "final_loss",
    "smoothed_loss",
    "test_loss",
    "test_accuracy",
    "images_per_s",
    "wall_s",
    "run_dir",
    "reason",
)
#: summary.json field → results column
SUMMARY_FIELDS = {
    "final_loss": "final_loss",
    "smoothed_loss": "final_smoothed_loss",
    "test_loss": "test_loss",
    "test_accuracy": "test_accuracy",
    "images_per_s": "images_per_s",
    "wall_s": "wall_time_s",
}


class SweepFolderError(ValueError):
    """``DIR`` is not a sweep folder, or belongs to a different sweep."""


def run_dir(sweep_dir: str | Path, name: str) -> Path:
    """``DIR/runs/<name>``."""
    return Path(sweep_dir) / RUNS_DIR / name


def row(
    values: Sequence[tuple[str, str]], name: str, result: Mapping[str, Any] | None
) -> dict[str, Any]:
    """One results row: the grid values, then the variant's numbers from its summary
    (``status`` ``pending`` and empty numbers while it has no result)."""
    out: dict[str, Any] = {"variant": name, **dict(values)}
    summary = (result or {}).get("summary", {}) or {}
    out["status"] = (result or {}).get("status", "pending")
    for column, key in SUMMARY_FIELDS.items():
        out[column] = summary.get(key)
    out["run_dir"] = f"{RUNS_DIR}/{name}"
    out["reason"] = (result or {}).get("reason", "")
    return out


def _csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    columns = list(rows[0]) if rows else ["variant", *METRIC_COLUMNS]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for item in rows:
        writer.writerow({k: "" if v is None else v for k, v in item.items()})
    return buffer.getvalue()


def write_results(sweep_dir: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rewrite ``results.csv`` and ``results.jsonl`` atomically."""
    folder = Path(sweep_dir)
    write_text(folder / RESULTS_CSV, _csv_text(rows))
    lines = "".join(json.dumps(json_value(item)) + "\n" for item in rows)
    write_text(folder / RESULTS_JSONL, lines)


def read_results(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of ``results.jsonl`` (SweepFolderError when ``DIR`` has none)."""
    path = Path(sweep_dir) / RESULTS_JSONL
    if not path.is_file():
        raise SweepFolderError(f"{sweep_dir}: not a sweep folder (no {RESULTS_JSONL})")
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        raise SweepFolderError(f"{path}: cannot read ({exc})") from None


def sorted_by_accuracy(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Best test accuracy first; rows without one (failed, no test set) last, then by loss."""

    def key(item: Mapping[str, Any]) -> tuple:
        accuracy = item.get("test_accuracy")
        loss = item.get("final_loss")
        has = isinstance(accuracy, (int, float)) and math.isfinite(accuracy)
        finite_loss = isinstance(loss, (int, float)) and math.isfinite(loss)
        return (not has, -(accuracy if has else 0.0), not finite_loss, loss if finite_loss else 0)

    return sorted(rows, key=key)


def write_sweep_info(sweep_dir: str | Path, info: Mapping[str, Any]) -> None:
    """``sweep.json``; a folder holding a different sweep (other config, grid or options) is
    a SweepFolderError (use another ``--out``)."""
    path = Path(sweep_dir) / SWEEP_FILE
    if path.exists():
        try:
            old = read_json(path)
        except RunFolderError as exc:
            raise SweepFolderError(str(exc)) from None
        identity = ("config_path", "grid", "seeds", "sets", "options")
        if any(old.get(k) != info.get(k) for k in identity):
            raise SweepFolderError(
                f"{sweep_dir} holds a different sweep (its {SWEEP_FILE} has another config, "
                "grid or options); use another --out"
            )
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    write_json(path, info)
