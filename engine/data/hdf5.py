"""Caffe's ``HDF5Data`` input: ``.h5`` files with one dataset per top, read with h5py.

A source is written ``h5:PATH`` (``--data h5:PATH``; a Caffe ``HDF5Data`` layer's
``hdf5_data_param.source`` becomes the same). ``PATH`` is either one ``.h5``/``.hdf5`` file or,
as in Caffe, a text file listing ``.h5`` files (whitespace-separated, as
``hdf5_data_layer.cpp`` reads them with ``source_file >> line``). Relative names resolve from
the working directory (Caffe's rule), then from the list file's folder. ``h5:PATH#DATA,LABEL``
names the datasets (the layer's tops); by default they are ``data`` and ``label``.

Datasets (Caffe ``hdf5_load_nd_dataset``, read as float):

* the data dataset is N×C×H×W or N×D (→ D×1×1), of any real numeric type; it is converted to
  float32 and used exactly as given (Caffe's ``HDF5Data`` has no ``transform_param``: no scale,
  no mean, no crop, no mirror), so values must be finite (and within the engine's bound);
* the label dataset holds N class indices (N, or N×1 of integral values ≥ 0), stored as
  integers or integral floats (Caffe reads labels as float; a SoftmaxWithLoss/Accuracy label
  is its integer part, so a fractional N-row label is refused here rather than silently
  truncated); or **float targets**: N×k, N×k×… (k > 1), or N×1 with values that are not class
  indices, which Caffe's HDF5Data passes to its top unchanged (regression targets, e.g. for
  ``EuclideanLoss``): kept as float32 N×k×…, with no classes (the training session refuses
  them for a net that reads class labels);
* every file's datasets have the same row count N (files may differ in N).

The whole set is loaded into memory (Caffe keeps one file at a time); a dataset whose declared
size exceeds half of this machine's memory is refused before anything is read, so a hostile
header cannot exhaust it. Every problem is a :class:`DataError` naming the file and dataset.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dnupdate.engine.data.errors import DataError, check_pixels

H5_PREFIX = "h5:"
H5_SUFFIXES = (".h5", ".hdf5", ".he5")
DEFAULT_DATASETS = ("data", "label")


@dataclass(frozen=True)
class H5Source:
    """A parsed ``h5:PATH[#DATA,LABEL]`` source."""

    path: str
    data: str = DEFAULT_DATASETS[0]
    label: str = DEFAULT_DATASETS[1]

    def text(self) -> str:
        """Back to ``h5:PATH`` (with ``#DATA,LABEL`` when the names are not the defaults)."""
        names = (self.data, self.label)
        suffix = "" if names == DEFAULT_DATASETS else "#" + ",".join(names)
        return H5_PREFIX + self.path + suffix


def is_h5_source(source: str) -> bool:
    """``h5:...`` or a path with an HDF5 suffix."""
    return source.startswith(H5_PREFIX) or source.lower().endswith(H5_SUFFIXES)


def parse_h5_source(source: str) -> H5Source:
    """``h5:PATH``, ``h5:PATH#DATA,LABEL`` or a bare ``.h5`` path → :class:`H5Source`."""
    body = source.removeprefix(H5_PREFIX)
    path, sep, names = body.rpartition("#") if "#" in body else (body, "", "")
    if not sep:
        return H5Source(path)
    parts = [n.strip() for n in names.split(",")]
    if len(parts) != 2 or not all(parts):
        raise DataError(source, "expected h5:PATH or h5:PATH#DATA,LABEL (two dataset names)")
    return H5Source(path, parts[0], parts[1])


def h5_source_for_tops(source: str, tops: list[str] | tuple[str, ...]) -> str:
    """The ``h5:`` source text of a Caffe ``HDF5Data`` layer reading ``source`` into ``tops``
    (the first two tops name the data and label datasets)."""
    names = (tuple(tops) + DEFAULT_DATASETS[len(tops) :])[:2] if tops else DEFAULT_DATASETS
    return H5Source(source, names[0], names[1]).text()


def _resolve(name: str, base: Path | None, data_dir: str | Path | None) -> Path | None:
    """An existing file: ``name`` as given (working directory), under ``base``, under
    ``data_dir``; None when none exists."""
    path = Path(name).expanduser()
    candidates = [path]
    if not path.is_absolute():
        candidates += [Path(d) / path for d in (base, data_dir) if d]
    return next((c for c in candidates if c.is_file()), None)


def h5_files(source: H5Source, data_dir: str | Path | None = None) -> list[Path]:
    """The ``.h5`` files a source names: itself, or the entries of its list file."""
    path = _resolve(source.path, None, data_dir)
    if path is None:
        raise DataError(source.path, "no such file (an HDF5Data source: a list of .h5 files)")
    if path.suffix.lower() in H5_SUFFIXES or _looks_like_hdf5(path):
        return [path]
    try:
        names = path.read_text(encoding="utf-8", errors="strict").split()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(str(path), f"cannot read the list of .h5 files ({exc})") from None
    if not names:
        raise DataError(str(path), "the list of .h5 files is empty")
    files = []
    for number, name in enumerate(names, 1):
        found = _resolve(name, path.parent, data_dir)
        if found is None:
            raise DataError(str(path), f"entry {number}: {name!r} does not exist")
        files.append(found)
    return files


def _looks_like_hdf5(path: Path) -> bool:
    """True when the file starts with the HDF5 signature (a superblock at offset 0)."""
    try:
        with path.open("rb") as handle:
            return handle.read(8) == b"\x89HDF\r\n\x1a\n"
    except OSError:
        return False


def _memory_bound() -> int:
    """Half of this machine's physical memory, in bytes (1 GiB when it cannot be told)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 1 << 30


def _dataset(handle, path: Path, name: str):
    """The named dataset of an open file, checked to be a numeric array."""
    try:
        node = handle[name]
    except KeyError:
        present = ", ".join(sorted(handle.keys())[:10]) or "none"
        raise DataError(str(path), f"no dataset '{name}' (datasets present: {present})") from None
    if not hasattr(node, "dtype") or not hasattr(node, "shape"):
        raise DataError(str(path), f"'{name}' is a group, not a dataset")
    kind = node.dtype.kind
    if kind not in "iuf" or node.dtype.fields is not None:
        raise DataError(str(path), f"dataset '{name}' holds {node.dtype}; expected numbers")
    if node.shape is None or len(node.shape) == 0:
        raise DataError(str(path), f"dataset '{name}' is a scalar; expected N rows")
    return node


def _data_shape(shape: tuple[int, ...], path: Path, name: str) -> tuple[int, int, int]:
    """(C, H, W) of one row of an N×C×H×W or N×D data dataset."""
    if len(shape) == 4:
        return int(shape[1]), int(shape[2]), int(shape[3])
    if len(shape) == 2:
        return int(shape[1]), 1, 1
    raise DataError(str(path), f"dataset '{name}' has shape {shape}; expected N×C×H×W or N×D")


def _open(path: Path):
    import h5py

    try:
        return h5py.File(path, "r")
    except Exception as exc:  # h5py raises OSError, and others for damaged superblocks
        raise DataError(str(path), f"not a readable HDF5 file ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    """A one-line reason from an h5py/HDF5 exception (bounded length)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


def probe_h5_shape(source: str, data_dir: str | Path | None = None) -> tuple[int, int, int]:
    """(C, H, W) of the data dataset of the first file, from its header alone."""
    parsed = parse_h5_source(source)
    path = h5_files(parsed, data_dir)[0]
    with _open(path) as handle:
        try:
            node = _dataset(handle, path, parsed.data)
            shape = tuple(node.shape)
        except DataError:
            raise
        except Exception as exc:
            raise DataError(str(path), f"dataset '{parsed.data}': {_reason(exc)}") from None
    return _data_shape(shape, path, parsed.data)


def probe_h5_label_shape(source: str, data_dir: str | Path | None = None) -> tuple[int, ...]:
    """The per-row shape of the first file's labels as :func:`read_h5` reads them: ``()`` for
    class indices, ``(k, …)`` for float targets (the label dataset is read: labels are small)."""
    parsed = parse_h5_source(source)
    path = h5_files(parsed, data_dir)[0]
    with _open(path) as handle:
        try:
            node = _dataset(handle, path, parsed.label)
            values = _read_dataset(node, path, parsed.label, _memory_bound())
        except DataError:
            raise
        except Exception as exc:
            raise DataError(str(path), f"dataset '{parsed.label}': {_reason(exc)}") from None
    rows = values.shape[0] if values.ndim else 0
    return tuple(int(d) for d in _labels(values, path, parsed.label, rows).shape[1:])


def _read_dataset(node, path: Path, name: str, limit: int) -> np.ndarray:
    """Read a whole dataset as float32 after checking its declared size against ``limit``."""
    size = math.prod(int(d) for d in node.shape) * 4
    if size > limit:
        raise DataError(
            str(path),
            f"dataset '{name}' declares shape {tuple(node.shape)} ({size} bytes as float32), "
            f"more than half of this machine's memory",
        )
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # a too-large value becomes inf,
            return np.asarray(node[()], dtype=np.float32)  # which the checks then refuse
    except Exception as exc:  # damaged chunks, filters, truncated storage
        raise DataError(str(path), f"dataset '{name}' is unreadable ({_reason(exc)})") from None


def _class_indices(values: np.ndarray) -> np.ndarray:
    """Per value: an integral, non-negative float below 2²⁴ (a class index float32 holds)."""
    with np.errstate(invalid="ignore"):
        return (values >= 0) & (np.floor(values) == values) & (values < 2**24)


def _labels(values: np.ndarray, path: Path, name: str, rows: int) -> np.ndarray:
    """N class indices (int64) from an N label dataset of integral, non-negative values, or
    from an N×1 one of such values; otherwise (N×k, N×k×…, a non-integral N×1) the float32
    targets as stored (finite)."""
    if values.ndim == 0 or values.shape[0] != rows:
        found = values.shape[0] if values.ndim else 0
        raise DataError(str(path), f"dataset '{name}' has {found} rows but the data has {rows}")
    column = values.ndim == 2 and values.shape[1] == 1
    if column and _class_indices(values).all():
        values = values[:, 0]
    if values.ndim > 1:
        finite = np.isfinite(values.reshape(rows, -1)).all(axis=1)
        if not finite.all():
            row = int((~finite).argmax())
            raise DataError(
                str(path), f"dataset '{name}' row {row} holds NaN or inf; targets must be finite"
            )
        return values
    bad = ~_class_indices(values)
    if bad.any():
        row = int(bad.argmax())
        raise DataError(
            str(path),
            f"dataset '{name}' row {row} is {float(values[row]):g}; labels must be class "
            "indices 0, 1, 2, …",
        )
    return values.astype(np.int64)


def _read_file(path: Path, source: H5Source, limit: int) -> tuple[np.ndarray, np.ndarray]:
    with _open(path) as handle:
        try:
            data_node = _dataset(handle, path, source.data)
            label_node = _dataset(handle, path, source.label)
            _data_shape(tuple(data_node.shape), path, source.data)
            data = _read_dataset(data_node, path, source.data, limit)
            labels = _read_dataset(label_node, path, source.label, limit)
        except DataError:
            raise
        except Exception as exc:
            raise DataError(str(path), f"unreadable ({_reason(exc)})") from None
    if data.ndim == 2:
        data = data.reshape(data.shape[0], data.shape[1], 1, 1)
    check_pixels(path, data, unit=f"dataset '{source.data}' row")
    return data, _labels(labels, path, source.label, data.shape[0])


def read_h5(
    source: str, data_dir: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray, int, tuple[int, ...], list[Path]]:
    """(images N×C×H×W float32, labels (N int64 class indices, or N×k×… float32 targets with
    classes 0), classes, rows per file, files) of a source.

    Files are concatenated in list order; ``rows per file`` lets the sampler reproduce
    Caffe's per-file shuffling."""
    parsed = parse_h5_source(source)
    files = h5_files(parsed, data_dir)
    limit = _memory_bound()
    images, labels, rows = [], [], []
    shape = None
    for path in files:
        data, label = _read_file(path, parsed, limit)
        if shape is not None and data.shape[1:] != shape:
            raise DataError(
                str(path),
                f"dataset '{parsed.data}' rows are {'×'.join(map(str, data.shape[1:]))}, "
                f"but {files[0]} has {'×'.join(map(str, shape))}",
            )
        shape = data.shape[1:]
        limit -= data.nbytes
        images.append(data)
        labels.append(label)
        rows.append(int(data.shape[0]))
    _same_label_kind(labels, files, parsed.label)
    all_images = np.concatenate(images) if len(images) > 1 else images[0]
    all_labels = np.concatenate(labels) if len(labels) > 1 else labels[0]
    if len(all_labels) == 0:
        raise DataError(str(files[0]), f"dataset '{parsed.data}' has no rows")
    classes = int(all_labels.max()) + 1 if all_labels.ndim == 1 else 0
    return all_images, all_labels, classes, tuple(rows), files


def _same_label_kind(labels: list[np.ndarray], files: list[Path], name: str) -> None:
    """Every file's labels are class indices, or float targets of one per-row shape."""
    first = labels[0]
    for path, label in zip(files[1:], labels[1:], strict=True):
        if label.ndim != first.ndim or label.shape[1:] != first.shape[1:]:
            raise DataError(
                str(path),
                f"dataset '{name}' rows are {_label_kind(label)}, but {files[0]} has "
                f"{_label_kind(first)}",
            )


def _label_kind(labels: np.ndarray) -> str:
    """``class indices`` or ``float targets of shape k×…``."""
    if labels.ndim == 1:
        return "class indices"
    return f"float targets of shape {'×'.join(map(str, labels.shape[1:]))}"
