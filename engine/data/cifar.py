"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009), binary and Python-pickle versions.

Binary version: headerless files of fixed-size records. CIFAR-10 records are 1 label byte
followed by 3072 pixel bytes (1024 red, 1024 green, 1024 blue; each plane 32×32 row-major);
CIFAR-100 records have 2 label bytes (coarse, fine) before the pixels.
Python version: pickled dicts with ``data`` (N×3072 uint8, same plane order) and ``labels``
(CIFAR-10) or ``fine_labels``/``coarse_labels`` (CIFAR-100).
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from dnupdate.engine.data.errors import DataError, check_label_range

PIXELS = 3 * 32 * 32


def record_size(label_bytes: int) -> int:
    """Bytes per binary record: the label bytes plus 3×32×32 pixels."""
    return label_bytes + PIXELS


def _records(path: Path, label_bytes: int) -> np.ndarray:
    """Memory-map one binary file as an N×record_size uint8 array after checking its size."""
    size_of = record_size(label_bytes)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DataError(str(path), "no such file") from None
    if size == 0:
        raise DataError(str(path), "empty file (no records)")
    if size % size_of:
        raise DataError(
            str(path),
            f"truncated or not a CIFAR binary file: {size} bytes is not a multiple of the "
            f"{size_of}-byte record ({size // size_of} whole records and "
            f"{size % size_of} bytes left over)",
        )
    return np.memmap(path, dtype=np.uint8, mode="r", shape=(size // size_of, size_of))


def read_cifar_binary(
    paths: Sequence[str | Path], *, label_bytes: int, label_index: int, classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Read binary CIFAR files into (images N×3×32×32 uint8, labels N uint8).

    ``label_index`` picks the label byte (CIFAR-100: 0 = coarse, 1 = fine). A single file is
    returned as a memory-mapped view; several files are copied into one uint8 array.
    """
    parts = [_records(Path(p), label_bytes) for p in paths]
    for path, part in zip(paths, parts, strict=True):
        check_label_range(path, part[:, label_index], classes, "record")
    if len(parts) == 1:
        records = parts[0]
        return records[:, label_bytes:].reshape(-1, 3, 32, 32), records[:, label_index]
    total = sum(p.shape[0] for p in parts)
    images = np.empty((total, 3, 32, 32), dtype=np.uint8)
    labels = np.empty(total, dtype=np.uint8)
    start = 0
    for part in parts:
        stop = start + part.shape[0]
        images[start:stop] = part[:, label_bytes:].reshape(-1, 3, 32, 32)
        labels[start:stop] = part[:, label_index]
        start = stop
    return images, labels


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and NumPy arrays only (no arbitrary code)."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_cifar_pickle_file(path: str | Path) -> dict:
    """Load one Python-version CIFAR batch as a dict with ``str`` keys."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        missing = isinstance(exc, FileNotFoundError)
        raise DataError(str(path), "no such file" if missing else str(exc.strerror)) from None
    try:
        # from memory: a damaged length field then asks for at most the file's size (reading
        # from the file object, the unpickler preallocates whatever length the bytes claim)
        raw = _ArrayOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:
        problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise DataError(str(path), f"not a CIFAR Python batch ({problem})") from None
    if not isinstance(raw, dict):
        raise DataError(str(path), "not a CIFAR Python batch (not a dict)")
    return {
        (k.decode("utf-8", "replace") if isinstance(k, bytes) else k): v for k, v in raw.items()
    }


def read_cifar_pickle(
    paths: Sequence[str | Path], *, label_key: str, classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Read Python-version CIFAR batches into (images N×3×32×32 uint8, labels N int64)."""
    images, labels = [], []
    for path in paths:
        batch = read_cifar_pickle_file(path)
        if "data" not in batch or label_key not in batch:
            raise DataError(str(path), f"missing 'data' or '{label_key}' in the batch")
        data = np.asarray(batch["data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
            raise DataError(
                str(path), f"'data' is {data.dtype} {data.shape}, expected N×3072 uint8"
            )
        batch_labels = np.asarray(batch[label_key], dtype=np.int64)
        if batch_labels.shape != (data.shape[0],):
            raise DataError(
                str(path),
                f"count mismatch: {batch_labels.size} labels for {data.shape[0]} images",
            )
        if batch_labels.size and int(batch_labels.min()) < 0:
            raise DataError(str(path), "label out of range: negative label")
        check_label_range(path, batch_labels, classes, "record")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(batch_labels)
    return np.concatenate(images), np.concatenate(labels)


def write_cifar_binary(path: str | Path, images: np.ndarray, labels: Sequence[np.ndarray]) -> None:
    """Write records ``label bytes + pixels`` (for tests and conversions)."""
    images = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), PIXELS)
    columns = [np.asarray(lab, dtype=np.uint8).reshape(-1, 1) for lab in labels]
    Path(path).write_bytes(np.hstack([*columns, images]).tobytes())
