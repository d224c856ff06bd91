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

    checkpoints/iter_<N>.state.npz          the full state at that checkpoint:
                                            ``--resume RUN/checkpoints/iter_<N>.npz`` starts there
    run.lock                                held (``flock``) by the run using the folder; holds
                                            its pid, host and start time (empty once released)

Atomicity: every file except the two metrics files is written to a temporary file in the same
folder, flushed, fsynced and renamed over its name (:func:`engine.formats.weights.atomic_write`), so
a reader (or a crash) sees either the old or the whole new file. The metrics files are
append-only: each row is one ``write`` of a whole line on a file opened for appending, and
they are fsynced whenever a checkpoint is written; on resume, rows after the checkpoint's
iteration (written by a run that died between checkpoints) are dropped first, by an atomic
rewrite.

Damage: ``--resume`` checks what it reads (``run.json``'s fields and types, the state's
members, keys, types and iteration, the metrics' lines) and refuses a damaged folder with
:class:`RunFolderError` naming the file and the damage, and, when the state is what is damaged,
the newest earlier checkpoint whose state is intact. Temporary files left by a killed writer
(``.<name>.<random>.tmp``) are removed on resume, once the folder's lock is held.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import os
import re
import socket
import time
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dnupdate.engine.formats.weights import atomic_write
from dnupdate.engine.training.events import json_value

STATE_FILE = "state.npz"
RUN_FILE = "run.json"
METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
SUMMARY_FILE = "summary.json"
RESOLVED_FILE = "config.resolved.json"
CHECKPOINT_DIR = "checkpoints"
LOCK_FILE = "run.lock"
_META_KEY = "__meta__"
#: a checkpoint's full state, next to its parameters ``iter_<N>.npz``
STATE_SUFFIX = ".state.npz"
#: files a run writes over; a folder (or anything not a file) in their place is damage
WRITTEN_FILES = (
    STATE_FILE,
    SUMMARY_FILE,
    METRICS_JSONL,
    METRICS_CSV,
    "final.npz",
    "final.weights",
    "final.caffemodel",
)

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


def parameter_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(N, checkpoints/iter_<N>.npz)`` of a run folder, oldest first: the parameter files
    only (not the ``iter_<N>.state.npz`` full states beside them)."""
    found = []
    for path in (Path(run_dir) / CHECKPOINT_DIR).glob("iter_*.npz"):
        digits = path.name.removeprefix("iter_").removesuffix(".npz")
        if digits.isdigit():
            found.append((int(digits), path))
    return sorted(found)


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
    """Read a state written by :func:`save_state` (arrays and JSON values merged). A missing,
    truncated, bit-flipped (CRC-32) or otherwise unreadable file raises :class:`RunFolderError`
    saying which; so does a ``__meta__`` member that is not a UTF-8 JSON object."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except FileNotFoundError:
        raise RunFolderError(path, "no state file (was a checkpoint ever written?)") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise RunFolderError(
            path, f"damaged: cannot read the state file ({exc or 'empty'})"
        ) from None
    except AttributeError:  # np.load gave a plain array: not an archive
        raise RunFolderError(path, "damaged: not an .npz archive") from None
    if _META_KEY not in arrays:
        raise RunFolderError(path, "not a dnupdate state file (no __meta__ member)")
    try:
        meta = json.loads(arrays.pop(_META_KEY).tobytes().decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise RunFolderError(path, f"damaged: its __meta__ member is not JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise RunFolderError(path, "damaged: its __meta__ member is not a JSON object")
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
        header = next(iter(_csv_rows(self.csv_path)), [])
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


def _read_utf8(path: Path, what: str) -> str:
    """A metrics file's text; missing, unreadable or not UTF-8 raises :class:`RunFolderError`."""
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise RunFolderError(path, f"no {what} (not a run folder?)") from None
    except UnicodeDecodeError as exc:
        raise RunFolderError(
            path, f"damaged: not UTF-8 text (byte {exc.start} is 0x{exc.object[exc.start]:02x})"
        ) from None
    except OSError as exc:
        raise RunFolderError(path, exc.strerror or str(exc)) from None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``metrics.jsonl`` (or of the run folder holding one). A last line without
    its newline (a row being written by a live run) is skipped. A line that is not a JSON
    object with an integer ``iteration`` raises :class:`RunFolderError` naming it."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_JSONL
    text = _read_utf8(path, "metrics file")
    rows = []
    lines = text.split("\n")
    for number, line in enumerate(lines[:-1], 1):  # the part after the last "\n" is partial
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise RunFolderError(path, f"line {number} is not JSON ({exc})") from None
        if not isinstance(row, dict) or type(row.get("iteration", 0)) is not int:
            raise RunFolderError(
                path,
                f"line {number} is not a metrics row (a JSON object with an integer "
                f"'iteration'): {line[:80]}",
            )
        rows.append(row)
    return rows


def _csv_rows(path: Path) -> list[list[str]]:
    """A metrics CSV's complete rows: a last line without its newline (a row cut short by a
    crash) is left out, as :func:`read_metrics` does."""
    text = _read_utf8(path, "metrics table")
    complete = text[: text.rfind("\n") + 1]
    try:
        return list(csv.reader(io.StringIO(complete, newline="")))
    except csv.Error as exc:
        raise RunFolderError(path, f"damaged: not CSV ({exc})") from None


def _csv_iteration(path: Path, row: list[str], position: int, number: int) -> int:
    try:
        return int(row[position])
    except (IndexError, ValueError):
        raise RunFolderError(
            path, f"line {number} is not a metrics row (no integer iteration): {','.join(row)[:80]}"
        ) from None


def _row_kept(kind: str, label: int, iteration: int, train_label_offset: int) -> bool:
    """Whether a metrics row belongs to the first ``iteration`` updates: a test row numbered
    ``label`` tests the weights after ``label`` updates; a training row numbered ``label`` is
    update ``label + train_label_offset`` (1 under Caffe's 0-based ``it``, 0 under darknet's
    batch number)."""
    if kind == "train":
        return label + train_label_offset <= iteration
    return label <= iteration


def truncate_metrics(folder: Path, iteration: int, *, train_label_offset: int = 0) -> None:
    """Drop rows after ``iteration`` updates from both metrics files (atomic rewrite; see
    :func:`_row_kept`), so that a run resumed from the checkpoint at ``iteration`` does not
    repeat rows; a last row cut short (no newline) goes too. Both files are read and checked
    before either is rewritten: a damaged line raises :class:`RunFolderError` naming it, with
    both files as they were."""
    rewrites: list[tuple[Path, str]] = []
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
        rewrites.append((jsonl, "".join(json.dumps(row) + "\n" for row in kept)))
    table = folder / METRICS_CSV
    if table.exists():
        rows = _csv_rows(table)
        if rows:
            position = rows[0].index("iteration") if "iteration" in rows[0] else 1
            kind = rows[0].index("kind") if "kind" in rows[0] else 0
            body = [
                row
                for number, row in enumerate(rows[1:], 2)
                if _row_kept(
                    row[kind] if len(row) > kind else "train",
                    _csv_iteration(table, row, position, number),
                    iteration,
                    train_label_offset,
                )
            ]
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="\n").writerows([rows[0], *body])
            rewrites.append((table, buffer.getvalue()))
    for path, text in rewrites:
        write_text(path, text)


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


def _lock_holder(text: str) -> str:
    """``pid N on host H since T`` from a lock file's JSON content (or the raw text)."""
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on host {info['host']} since {info['started']}"
    except (ValueError, TypeError, KeyError):
        return f"unreadable lock content {text[:80]!r}"


def _temporaries(folder: Path) -> list[Path]:
    """Temporary files :func:`atomic_write` leaves when its process is killed mid-write
    (``.<name>.<random>.tmp``), in the folder and its ``checkpoints/``."""
    found: list[Path] = []
    for place in (folder, folder / CHECKPOINT_DIR):
        if place.is_dir():
            found += [p for p in place.glob(".*.tmp") if p.is_file()]
    return sorted(found)


class RunFolder:
    """One run's folder (see the module docstring). Create it with :meth:`create` for a new
    run or :meth:`open` for ``--resume``; either takes the folder's lock (``run.lock``,
    ``flock``, held until :meth:`close` or the process ends).

    ``notes``: what the user should be told once (a stale lock, temporary files removed).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.metrics: MetricsLog | None = None
        self.notes: list[str] = []
        self.resume_state: Path = self.path / STATE_FILE
        self.created = False  # whether :meth:`create` made the folder
        self._lock_fd: int | None = None

    # ---- locking ------------------------------------------------------------------------------
    def lock(self) -> None:
        """Take the folder's exclusive lock: ``flock(LOCK_EX | LOCK_NB)`` on ``run.lock``, then
        write this process's pid, host and start time into it. Held by another live process:
        :class:`RunFolderError` naming it. The OS drops a lock when its process dies (kill -9
        included), so a lock file whose content was never cleared belonged to a run that did
        not end cleanly: that is noted, and the lock taken over."""
        path = self.path / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise RunFolderError(path, f"cannot open the lock file ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace")
            os.close(fd)
            raise RunFolderError(
                self.path,
                f"in use by another run ({_lock_holder(holder)}); wait for it to end or "
                "use another --out",
            ) from None
        previous = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        if previous:
            self.notes.append(
                f"{path}: the previous run ({_lock_holder(previous)}) ended without releasing "
                "the folder (killed?); lock taken over"
            )
        mine = json.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, mine.encode("utf-8") + b"\n", 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        """Clear the lock file's content (a clean release) and drop the lock. The file stays:
        removing it would let a run waiting on the old inode and a new one both "hold" it."""
        if self._lock_fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._lock_fd, 0)
        os.close(self._lock_fd)  # closing the descriptor releases the flock
        self._lock_fd = None

    # ---- setting up -------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path) -> RunFolder:
        """Make the folder (and ``checkpoints/``) and lock it; an existing folder holding a
        run is an error (resume it with ``--resume`` or pick another ``--out``), and so is
        a folder locked by a live run. ``created`` says whether this call made the folder."""
        path = Path(path)
        try:
            existed = path.is_dir()
            (path / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunFolderError(path, f"cannot create the run folder ({exc})") from None
        folder = cls(path)
        folder.created = not existed
        folder.lock()
        if (path / STATE_FILE).exists() or (path / METRICS_JSONL).exists():
            folder.unlock()
            raise RunFolderError(
                path, "already holds a run; use --resume to continue it or another --out"
            )
        return folder

    @classmethod
    def open(cls, path: str | Path) -> RunFolder:
        """An existing run folder, for ``--resume``, locked and checked (see
        :meth:`check_resumable`). ``path`` is the folder, or one of its checkpoints
        ``RUN/checkpoints/iter_<N>.npz`` to resume from that checkpoint's full state."""
        path = Path(path)
        state = None
        if path.is_file() and path.parent.name == CHECKPOINT_DIR:
            state = path.with_name(path.name.removesuffix(".npz") + STATE_SUFFIX)
            if not state.is_file():
                raise RunFolderError(
                    path, f"this checkpoint has no full state ({state.name}) to resume from"
                )
            path = path.parent.parent
        folder = cls.read(path)
        if state is not None:
            folder.resume_state = state
        folder.lock()
        try:
            folder.check_resumable()
        except RunFolderError:
            folder.unlock()
            raise
        return folder

    @classmethod
    def read(cls, path: str | Path) -> RunFolder:
        """An existing run folder, to read only (``dnupdate eval``): not locked, so a run still
        writing it may be read; nothing in it is changed or cleaned."""
        path = Path(path)
        if not path.is_dir():
            raise RunFolderError(path, "no such run folder")
        if not (path / RUN_FILE).exists():
            raise RunFolderError(path, f"not a dnupdate run folder (no {RUN_FILE})")
        folder = cls(path)
        folder.created = False
        return folder

    def check_resumable(self) -> None:
        """Before a resume: what the run will write over must be files (a folder named
        ``summary.json`` is damage), ``checkpoints/`` is recreated when deleted, and the
        temporary files of a killed writer are removed (the lock is held: no live writer)."""
        for name in WRITTEN_FILES:
            target = self.path / name
            if (target.exists() or target.is_symlink()) and not target.is_file():
                raise RunFolderError(
                    target, "damaged: not a file (a folder or other object in its place)"
                )
        checkpoints = self.path / CHECKPOINT_DIR
        if checkpoints.exists() and not checkpoints.is_dir():
            raise RunFolderError(checkpoints, "damaged: not a folder")
        if not checkpoints.exists():
            checkpoints.mkdir()
            self.notes.append(f"{checkpoints}: was missing (deleted?); recreated")
        removed = 0
        for temporary in _temporaries(self.path):
            with contextlib.suppress(OSError):
                temporary.unlink()
                removed += 1
        if removed:
            self.notes.append(
                f"{self.path}: removed {removed} temporary file(s) left by an interrupted write"
            )

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
        """``run.json``, checked: an object with a string ``config_path``, ``overrides`` as
        ``[key, value]`` string pairs and an ``options`` object; else :class:`RunFolderError`."""
        path = self.path / RUN_FILE
        info = read_json(path)
        if not isinstance(info, dict):
            raise RunFolderError(path, "damaged: not a JSON object")
        if not isinstance(info.get("config_path"), str):
            raise RunFolderError(path, "damaged: 'config_path' is missing or not a string")
        overrides = info.get("overrides", [])
        if not isinstance(overrides, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(v, str) for v in p)
            for p in overrides
        ):
            raise RunFolderError(path, "damaged: 'overrides' is not a list of [key, value] pairs")
        if not isinstance(info.get("options", {}), dict):
            raise RunFolderError(path, "damaged: 'options' is not an object")
        return info

    def original_config_text(self) -> str:
        """The saved original config text."""
        for candidate in sorted(self.path.glob("config.original*")):
            try:
                return candidate.read_text(encoding="utf-8", errors="surrogateescape")
            except OSError as exc:
                raise RunFolderError(candidate, f"cannot read ({exc.strerror})") from None
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

    def checkpoint_state_path(self, iteration: int) -> Path:
        """The full state written with checkpoint ``iteration`` (``iter_<N>.state.npz``)."""
        return self.path / CHECKPOINT_DIR / f"iter_{iteration:06d}{STATE_SUFFIX}"

    def has_state(self) -> bool:
        return self.state_path.exists()

    def save_state(self, state: Mapping[str, Any], iteration: int | None = None) -> Path:
        """Replace ``state.npz`` atomically (after syncing the metrics files); with
        ``iteration``, first keep the same state as that checkpoint's ``iter_<N>.state.npz``
        (what ``--resume RUN/checkpoints/iter_<N>.npz`` starts from)."""
        if self.metrics is not None:
            self.metrics.sync()
        if iteration is not None:
            save_state(self.checkpoint_state_path(iteration), state)
        save_state(self.state_path, state)
        return self.state_path

    def load_state(self) -> dict[str, Any]:
        """The state to resume from (``state.npz``, or the checkpoint's given to :meth:`open`)."""
        return load_state(self.resume_state)

    def intact_checkpoint(self, usable: Callable[[dict[str, Any]], object]) -> Path | None:
        """The newest checkpoint (``iter_<N>.npz``) other than the one being resumed whose
        full state loads and passes ``usable`` (which raises on a bad one), or None."""
        states = sorted((self.path / CHECKPOINT_DIR).glob(f"iter_*{STATE_SUFFIX}"), reverse=True)
        for state_path in states:
            if state_path == self.resume_state:
                continue
            digits = state_path.name.removeprefix("iter_").removesuffix(STATE_SUFFIX)
            if not digits.isdigit():
                continue
            try:
                usable(load_state(state_path))
            except (RunFolderError, ValueError, TypeError, KeyError):
                continue
            return state_path.with_name(f"iter_{digits}.npz")
        return None

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        path = self.path / SUMMARY_FILE
        write_json(path, summary)
        return path

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        self.unlock()


def net_file_text(run: Any) -> str | None:
    """The text of a Caffe solver's separate net file (the file its layers came from), which a
    run folder keeps beside the config; None for a single-file config."""
    files = {layer.origin.file for layer in run.net.layers if layer.origin.file}
    files.discard(run.config_path)
    files.discard("<stdin>")
    for name in sorted(files):
        if Path(name).is_file():
            return Path(name).read_text(encoding="utf-8", errors="surrogateescape")
    return None
