"""Caffe LMDB data sources: one serialized ``Datum`` per record, read in key order.

Caffe's ``DataLayer`` walks the database with a cursor from the first key to the last and
wraps around (``data_layer.cpp``); the converters write keys ``%08d`` (MNIST) or ``%05d``
(CIFAR-10) so key order is file order. Records hold raw uint8 bytes (C×H×W) or ``float_data``;
``encoded`` (JPEG/PNG) records are not supported here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dnupdate.engine.data.errors import DataError, check_pixels
from dnupdate.engine.data.protobuf import Datum, WireError, decode_datum, encode_datum


def is_lmdb_dir(path: str | Path) -> bool:
    """True for a directory holding an LMDB environment (``data.mdb``)."""
    return (Path(path) / "data.mdb").is_file()


def _open(path: Path):
    import lmdb

    if not path.exists():
        raise DataError(str(path), "no such LMDB directory")
    if not is_lmdb_dir(path):
        raise DataError(str(path), "not an LMDB directory (no data.mdb inside)")
    try:
        return lmdb.open(str(path), readonly=True, lock=False, readahead=False, max_readers=4)
    except lmdb.Error as exc:
        raise DataError(str(path), f"cannot open LMDB ({exc})") from None


def _decode(path: Path, key: bytes, value: bytes) -> Datum:
    try:
        datum = decode_datum(value)
    except WireError as exc:
        raise DataError(str(path), f"record {key.decode(errors='replace')}: {exc}") from None
    if datum.encoded:
        raise DataError(
            str(path),
            f"record {key.decode(errors='replace')} holds an encoded (JPEG/PNG) image; "
            "only raw Datum records are supported (convert_imageset without --encoded)",
        )
    return datum


def _pixels(path: Path, key: bytes, datum: Datum, shape: tuple[int, int, int]) -> np.ndarray:
    """The record's C×H×W values (uint8 from ``data`` or float32 from ``float_data``)."""
    where = f"record {key.decode(errors='replace')}"
    if (datum.channels, datum.height, datum.width) != shape:
        raise DataError(
            str(path),
            f"{where} is {datum.channels}×{datum.height}×{datum.width} but the first record "
            f"is {shape[0]}×{shape[1]}×{shape[2]}",
        )
    count = shape[0] * shape[1] * shape[2]
    if datum.data:
        if len(datum.data) != count:
            raise DataError(
                str(path), f"{where} has {len(datum.data)} data bytes, expected {count}"
            )
        return np.frombuffer(datum.data, dtype=np.uint8)
    if datum.float_data is not None and datum.float_data.size == count:
        return datum.float_data
    raise DataError(str(path), f"{where} has no pixel data (or the wrong amount)")


def read_lmdb(path: str | Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Read every record in key order: (images N×C×H×W uint8 or float32, labels int64, classes)."""
    path = Path(path)
    env = _open(path)
    try:
        count = env.stat()["entries"]
        if count == 0:
            raise DataError(str(path), "the database has no records")
        with env.begin(buffers=False) as txn:
            cursor = txn.cursor()
            images = labels = None
            shape = (0, 0, 0)
            for index, (key, value) in enumerate(cursor):
                datum = _decode(path, key, value)
                if images is None:
                    shape = (datum.channels, datum.height, datum.width)
                    if min(shape) <= 0:
                        raise DataError(str(path), f"first record has shape {shape}")
                    dtype = np.uint8 if datum.data else np.float32
                    images = np.empty((count, *shape), dtype=dtype)
                    labels = np.empty(count, dtype=np.int64)
                pixels = _pixels(path, key, datum, shape)
                if pixels.dtype != images.dtype:
                    raise DataError(
                        str(path),
                        f"record {key.decode(errors='replace')} mixes byte and float data",
                    )
                images[index] = pixels.reshape(shape)
                labels[index] = datum.label
    finally:
        env.close()
    assert images is not None and labels is not None
    check_pixels(path, images, "record")
    if int(labels.min()) < 0:
        bad = int(np.argmax(labels < 0))
        raise DataError(str(path), f"label out of range: record {bad} has label {labels[bad]}")
    return images, labels, int(labels.max()) + 1


def probe_lmdb_shape(path: str | Path) -> tuple[int, int, int] | None:
    """(C, H, W) of the first record, or None for an empty database."""
    path = Path(path)
    env = _open(path)
    try:
        with env.begin() as txn:
            cursor = txn.cursor()
            if not cursor.first():
                return None
            datum = _decode(path, cursor.key(), cursor.value())
            return datum.channels, datum.height, datum.width
    finally:
        env.close()


def write_lmdb(path: str | Path, images: np.ndarray, labels: np.ndarray, key_digits: int = 8):
    """Write images and labels as Datum records with keys ``%0{key_digits}d`` (as Caffe's
    ``convert_mnist_data`` does); float32 images go to ``float_data``."""
    import lmdb

    path = Path(path)
    map_size = max(1 << 20, int(images.nbytes * 3 + 4096 * len(images)))
    env = lmdb.open(str(path), map_size=map_size)
    try:
        with env.begin(write=True) as txn:
            for index, (image, label) in enumerate(zip(images, labels, strict=True)):
                c, h, w = image.shape
                if image.dtype == np.uint8:
                    value = encode_datum(c, h, w, int(label), data=image.tobytes())
                else:
                    value = encode_datum(c, h, w, int(label), float_data=image)
                txn.put(f"{index:0{key_digits}d}".encode(), value)
    finally:
        env.close()
