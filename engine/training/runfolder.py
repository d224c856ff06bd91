"""The run folder: everything one training run leaves on disk, written atomically.

Layout (``--out DIR``, default ``runs/<config-name>-<YYYYmmdd-HHMMSS>/``)::

    config.original<.cfg|.prototxt|.yaml>   the config text as given (stdin too)
    net.original.prototxt                   a Caffe solver's net file, when it has one
    config.resolved.json                    the resolved spec, --set overrides, provenance
    run.json                                how to rebuild the run: config path, overrides,
                                            data, seed, semantics (read by --resume)
    metrics.jsonl / metrics.csv             one row per update (kind "train") and per test
                                            pass (kind "test"); appended on resume
    checkpoints/iter_<N>.npz                parameters after N updates, keyed "LAYER/INDEX"
    checkpoints/<cfg>_<N>.weights           the same in darknet's file (darknet nets), or
    checkpoints/<prefix>_iter_<N>.caffemodel  in Caffe's (Caffe nets)
    state.npz                               the latest good full state (parameters, gradient
                                            and optimizer buffers, RNG states, iteration, seen,
                                            data positions, loss smoothing): --resume reads it
    final.npz (+ final.weights | final.caffemodel)   the parameters at the end
    summary.json                            final loss/accuracy, images/s, wall time, versions

Atomicity: every file except the two metrics files is written to a temporary file in the same
folder, flushed, fsynced and renamed over its name (:func:`engine.formats.weights.atomic_write`), so
a reader (or a crash) sees either the old or the whole new file. The metrics files are
append-only: each row is one ``write`` of a whole line on a file opened for appending, and
they are fsynced whenever a checkpoint is written; on resume, rows after the checkpoint's
iteration (written by a run that died between checkpoints) are dropped first, by an atomic
rewrite.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.formats.weights import atomic_write
from engine.training.events import json_value

STATE_FILE = "state.npz"
RUN_FILE = "run.json"
METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
SUMMARY_FILE = "summary.json"
RESOLVED_FILE = "config.resolved.json"
CHECKPOINT_DIR = "checkpoints"
_META_KEY = "__meta__"

#: the leading CSV columns; per-layer columns follow (``<layer>.w_norm`` ...), then test ones
BASE_COLUMNS = ("kind", "iteration", "seen", "epoch", "lr", "loss")
TEST_COLUMNS = (
    "test_loss",
    "test_accuracy",
    "test_images",
    "test_distinct_images",
    "test_non_finite",
)
LAYER_FIELDS = ("w_norm", "g_norm", "dw_norm", "ratio")


class RunFolderError(Exception):
    """A run folder cannot be created, read or resumed: ``path`` and what is wrong."""

    def __init__(self, path: str | os.PathLike, message: str) -> None:
        self.path = str(path)
        self.message = message
        super().__init__(f"{self.path}: {message}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(path: str | os.PathLike) -> None:
    """Give a file written through a temporary file the mode a plain ``open`` would
    (``0o666 & ~umask``): ``mkstemp`` creates it readable by its owner only."""
    with contextlib.suppress(OSError):
        os.chmod(path, 0o666 & ~_umask())


def write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically (temporary file, fsync, rename)."""
    data = text.encode("utf-8", errors="surrogateescape")
    atomic_write(path, lambda handle: handle.write(data))
    publish(path)


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented strict JSON, atomically."""
    write_text(path, json.dumps(json_value(value), indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    """Read a JSON file, or raise :class:`RunFolderError`."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunFolderError(path, "no such file") from None
    except (OSError, ValueError) as exc:
        raise RunFolderError(path, f"cannot read as JSON ({exc})") from None


def default_run_dir(config_path: str, root: str | Path = "runs") -> Path:
    """``runs/<config stem>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``... when it exists)."""
    stem = "stdin" if config_path in ("-", "<stdin>") else Path(config_path).stem
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem) or "run"
    base = Path(root) / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, count = base, 1
    while candidate.exists():
        count += 1
        candidate = base.with_name(f"{base.name}-{count}")
    return candidate


# --------------------------------------------------------------------------------------------
# State files: arrays in an .npz, everything else as JSON inside it
# --------------------------------------------------------------------------------------------


def save_state(path: Path, state: Mapping[str, Any]) -> None:
    """Write a state dict atomically as one ``.npz``: NumPy arrays as members, every other
    value (ints of any size, floats, strings, nested dicts such as a sampler's generator
    state) as JSON in the member ``__meta__``. Floats round-trip exactly (``repr``)."""
    arrays = {k: np.asarray(v) for k, v in state.items() if isinstance(v, np.ndarray)}
    meta = {k: json_value(v) for k, v in state.items() if not isinstance(v, np.ndarray)}
    text = json.dumps(meta, sort_keys=True).encode("utf-8")
    arrays[_META_KEY] = np.frombuffer(text, dtype=np.uint8)
    atomic_write(path, lambda handle: np.savez(handle, **arrays))
    publish(path)


def load_state(path: Path) -> dict[str, Any]:
    """Read a state written by :func:`save_state` (arrays and JSON values merged)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except FileNotFoundError:
        raise RunFolderError(path, "no state file (was a checkpoint ever written?)") from None
    except (OSError, ValueError) as exc:
        raise RunFolderError(path, f"cannot read the state file ({exc})") from None
    if _META_KEY not in arrays:
        raise RunFolderError(path, "not a dnupdate state file (no __meta__ member)")
    meta = json.loads(arrays.pop(_META_KEY).tobytes().decode("utf-8"))
    return {**meta, **arrays}


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def metric_columns(layers: Sequence[str], smoothed_name: str) -> list[str]:
    """CSV header: base columns, the smoothed loss (named after its definition), wall time,
    ``<layer>.w_norm``/``.g_norm``/``.dw_norm``/``.ratio`` per layer, then the test columns."""
    columns = [*BASE_COLUMNS, smoothed_name, "time_s"]
    for layer in layers:
        columns += [f"{layer}.{name}" for name in LAYER_FIELDS]
    return columns + list(TEST_COLUMNS)


class MetricsLog:
    """Append-only ``metrics.jsonl`` (one JSON object per row) and ``metrics.csv`` (fixed
    columns from :func:`metric_columns`; a row leaves columns it has no value for empty)."""

    def __init__(self, folder: Path, columns: Sequence[str]) -> None:
        self.jsonl_path = folder / METRICS_JSONL
        self.csv_path = folder / METRICS_CSV
        self.columns = list(columns)
        self._check_header()
        self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")  # noqa: SIM115
        self._csv = open(self.csv_path, "a", encoding="utf-8", newline="")  # noqa: SIM115
        if self._csv.tell() == 0:
            self._write_line(
                self._csv, self._csv_line(dict(zip(self.columns, self.columns, strict=True)))
            )

    def _check_header(self) -> None:
        if not self.csv_path.exists() or self.csv_path.stat().st_size == 0:
            return
        with open(self.csv_path, encoding="utf-8", newline="") as handle:
            header = next(csv.reader(handle), [])
        if header != self.columns:
            raise RunFolderError(
                self.csv_path, "its columns differ from this network's (another net's run?)"
            )

    def _csv_line(self, row: Mapping[str, Any]) -> str:
        buffer = io.StringIO()
        values = [_csv_value(row.get(column)) for column in self.columns]
        csv.writer(buffer, lineterminator="\n").writerow(values)
        return buffer.getvalue()

    @staticmethod
    def _write_line(handle, line: str) -> None:
        handle.write(line)
        handle.flush()

    def append(self, row: Mapping[str, Any]) -> None:
        """Append one row to both files (a whole line per ``write``)."""
        self._write_line(self._jsonl, json.dumps(json_value(dict(row))) + "\n")
        self._write_line(self._csv, self._csv_line(row))

    def sync(self) -> None:
        """fsync both files (called at every checkpoint)."""
        for handle in (self._jsonl, self._csv):
            handle.flush()
            os.fsync(handle.fileno())

    def close(self) -> None:
        for handle in (self._jsonl, self._csv):
            if not handle.closed:
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if np.isfinite(value) else str(json_value(value))
    return str(value)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``metrics.jsonl`` (or of the run folder holding one). A last line without
    its newline (a row being written by a live run) is skipped."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_JSONL
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunFolderError(path, "no metrics file (not a run folder?)") from None
    except OSError as exc:
        raise RunFolderError(path, str(exc)) from None
    rows = []
    lines = text.split("\n")
    for number, line in enumerate(lines[:-1], 1):  # the part after the last "\n" is partial
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as exc:
            raise RunFolderError(path, f"line {number} is not JSON ({exc})") from None
    return rows


def _row_kept(kind: str, label: int, iteration: int, train_label_offset: int) -> bool:
    """Whether a metrics row belongs to the first ``iteration`` updates: a test row numbered
    ``label`` tests the weights after ``label`` updates; a training row numbered ``label`` is
    update ``label + train_label_offset`` (1 under Caffe's 0-based ``it``, 0 under darknet's
    batch number)."""
    if kind == "train":
        return label + train_label_offset <= iteration
    return label <= iteration


def truncate_metrics(folder: Path, iteration: int, *, train_label_offset: int = 0) -> None:
    """Drop rows after ``iteration`` updates from both metrics files (atomic rewrite), so that
    a run resumed from the checkpoint at ``iteration`` does not repeat rows (see
    :func:`_row_kept`)."""
    jsonl = folder / METRICS_JSONL
    if jsonl.exists():
        kept = [
            row
            for row in read_metrics(jsonl)
            if _row_kept(
                str(row.get("kind", "train")),
                int(row.get("iteration", 0)),
                iteration,
                train_label_offset,
            )
        ]
        write_text(jsonl, "".join(json.dumps(row) + "\n" for row in kept))
    table = folder / METRICS_CSV
    if table.exists():
        with open(table, encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle))
        if rows:
            position = rows[0].index("iteration") if "iteration" in rows[0] else 1
            kind = rows[0].index("kind") if "kind" in rows[0] else 0
            body = [
                r
                for r in rows[1:]
                if len(r) > position
                and _row_kept(r[kind], int(r[position]), iteration, train_label_offset)
            ]
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="\n").writerows([rows[0], *body])
            write_text(table, buffer.getvalue())


def resolved_config(run: Any, overrides: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """The resolved config of a :class:`engine.spec.RunSpec` as a JSON-ready dict: format,
    net/solver/schedule/data specs (our field names), the config's own resolved key/value
    pairs (``raw``), the ``--set`` overrides, and where each value came from (``origins``)."""
    return {
        "format": run.format,
        "config_path": run.config_path,
        "overrides": [f"{key}={value}" for key, value in overrides],
        "raw": dict(run.raw),
        "solver": json_value(run.solver),
        "schedule": json_value(run.schedule),
        "data": json_value(run.data),
        "net": json_value(run.net),
        "origins": {key: str(origin) for key, origin in run.origins.items()},
        "diagnostics": [str(d) for d in run.diagnostics],
    }


# --------------------------------------------------------------------------------------------
# The folder
# --------------------------------------------------------------------------------------------


class RunFolder:
    """One run's folder (see the module docstring). Create it with :meth:`create` for a new
    run or :meth:`open` for ``--resume``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.metrics: MetricsLog | None = None

    # ---- setting up -------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path) -> RunFolder:
        """Make the folder (and ``checkpoints/``); an existing folder holding a run is an
        error (resume it with ``--resume`` or pick another ``--out``)."""
        path = Path(path)
        if (path / STATE_FILE).exists() or (path / METRICS_JSONL).exists():
            raise RunFolderError(
                path, "already holds a run; use --resume to continue it or another --out"
            )
        try:
            (path / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunFolderError(path, f"cannot create the run folder ({exc})") from None
        return cls(path)

    @classmethod
    def open(cls, path: str | Path) -> RunFolder:
        """An existing run folder, for ``--resume``: it must hold ``run.json``."""
        path = Path(path)
        if not path.is_dir():
            raise RunFolderError(path, "no such run folder")
        if not (path / RUN_FILE).exists():
            raise RunFolderError(path, f"not a dnupdate run folder (no {RUN_FILE})")
        return cls(path)

    def write_config(
        self, config_path: str, text: str, resolved: Mapping[str, Any], net_text: str | None
    ) -> None:
        """Save the original config text (named after its suffix), a Caffe net file's text,
        and the resolved config."""
        suffix = Path(config_path).suffix if config_path not in ("-", "<stdin>") else ".txt"
        write_text(self.path / f"config.original{suffix or '.txt'}", text)
        if net_text is not None:
            write_text(self.path / "net.original.prototxt", net_text)
        write_json(self.path / RESOLVED_FILE, resolved)

    def write_run_info(self, info: Mapping[str, Any]) -> None:
        """``run.json``: what ``--resume`` needs to rebuild the run."""
        write_json(self.path / RUN_FILE, info)

    def read_run_info(self) -> dict[str, Any]:
        return read_json(self.path / RUN_FILE)

    def original_config_text(self) -> str:
        """The saved original config text."""
        for candidate in sorted(self.path.glob("config.original*")):
            return candidate.read_text(encoding="utf-8", errors="surrogateescape")
        raise RunFolderError(self.path, "no config.original* file")

    def open_metrics(self, columns: Sequence[str]) -> MetricsLog:
        """Open (append) the metrics files with these CSV columns."""
        self.metrics = MetricsLog(self.path, columns)
        return self.metrics

    # ---- checkpoints --------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.path / STATE_FILE

    def checkpoint_path(self, iteration: int) -> Path:
        return self.path / CHECKPOINT_DIR / f"iter_{iteration:06d}.npz"

    def has_state(self) -> bool:
        return self.state_path.exists()

    def save_state(self, state: Mapping[str, Any]) -> Path:
        """Replace ``state.npz`` atomically (after syncing the metrics files)."""
        if self.metrics is not None:
            self.metrics.sync()
        save_state(self.state_path, state)
        return self.state_path

    def load_state(self) -> dict[str, Any]:
        return load_state(self.state_path)

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        path = self.path / SUMMARY_FILE
        write_json(path, summary)
        return path

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
