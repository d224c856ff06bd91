"""IDX files (MNIST, Fashion-MNIST), gzipped or raw.

Format (LeCun's MNIST page): a 4-byte big-endian magic ``0x00 0x00 TYPE NDIM``, then NDIM
big-endian uint32 dimensions, then the data in row-major order. Images are ``0x00000803``
(uint8, N×rows×cols), labels ``0x00000801`` (uint8, N).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import zlib
from pathlib import Path

import numpy as np

from dnupdate.engine.data.errors import DataError, check_label_range

IDX_UBYTE = 0x08
IMAGE_MAGIC = 0x00000803
LABEL_MAGIC = 0x00000801


#: bytes per ``readinto`` call when gunzipping
_READ_PIECE = 1 << 20

#: deflate's largest expansion: one compressed byte never yields more than 1032 (RFC 1951
#: length codes; zlib's technical details), so a gzip file of ``n`` bytes holds at most this
#: many times ``n`` bytes of data; a header asking for more is refused before allocating
_DEFLATE_MAX_RATIO = 1032


def _gzip_errors(path: Path, exc: BaseException) -> DataError:
    """The :class:`DataError` for an exception raised while reading ``path``."""
    if isinstance(exc, FileNotFoundError):
        return DataError(str(path), "no such file")
    if isinstance(exc, EOFError):
        return DataError(str(path), "truncated gzip stream (file cut short)")
    if isinstance(exc, (gzip.BadGzipFile, zlib.error)):
        return DataError(str(path), f"not a valid gzip file ({exc})")
    return DataError(str(path), str(exc))


def _read_gzip_idx(path: Path, expected_magic: int) -> tuple[tuple[int, ...], np.ndarray, int]:
    """Gunzip ``path`` straight into its final array: the header first, then ``readinto`` a
    preallocated uint8 array of the header's size (no temporary copy of the whole file).

    Returns ``(dims, data, available)`` where ``available`` counts the data bytes that follow
    the header (more than ``data.size`` when the file has trailing bytes).
    """
    try:
        with gzip.open(path, "rb") as handle:
            dims = _header(path, handle.read(4 + 4 * (expected_magic & 0xFF)), expected_magic)
            _check_gzip_can_hold(path, dims)
            data = np.empty(math.prod(dims), dtype=np.uint8)
            view = memoryview(data)
            filled = 0
            while filled < data.size:
                # in pieces: GzipFile.readinto reads the whole request into a temporary bytes
                # object first (a 47 MB spike for MNIST's training images)
                count = handle.readinto(view[filled : filled + _READ_PIECE])
                if not count:
                    break
                filled += count
            extra = len(handle.read(1)) if filled == data.size else 0
    except (OSError, EOFError, zlib.error) as exc:
        raise _gzip_errors(path, exc) from None
    return dims, data.reshape(dims), filled + extra


def _check_gzip_can_hold(path: Path, dims: tuple[int, ...]) -> None:
    """Refuse a header whose data cannot fit in the compressed file (at most
    :data:`_DEFLATE_MAX_RATIO` bytes per compressed byte), before any allocation."""
    needed = math.prod(dims)
    limit = _DEFLATE_MAX_RATIO * path.stat().st_size
    if needed > limit:
        shape_text = "×".join(str(d) for d in dims)
        raise DataError(
            str(path),
            f"truncated or damaged: header says {shape_text} ({needed} bytes of data), more "
            f"than a gzip file of {path.stat().st_size} bytes can hold (at most {limit})",
        )


def _header(path: Path, head: bytes, expected_magic: int) -> tuple[int, ...]:
    """Check the magic and return the dimensions."""
    if len(head) < 4:
        raise DataError(str(path), f"too short for an IDX header ({len(head)} bytes)")
    magic = int.from_bytes(head[:4], "big")
    if magic != expected_magic:
        raise DataError(
            str(path),
            f"bad magic number 0x{magic:08x} (expected 0x{expected_magic:08x} for an IDX "
            f"{'image' if expected_magic == IMAGE_MAGIC else 'label'} file)",
        )
    ndim = expected_magic & 0xFF
    if len(head) < 4 + 4 * ndim:
        raise DataError(str(path), "truncated IDX header")
    return tuple(int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))


def read_idx(path: str | Path, expected_magic: int) -> np.ndarray:
    """Read an IDX uint8 array (memory-mapped when the file is not gzipped; a large gzipped
    file is memory-mapped from its uncompressed copy in the data cache, :func:`unpacked_path`;
    a small one, or any where the cache cannot be written, is decompressed straight into one
    preallocated array).

    Raises :class:`DataError` on a bad magic number, a truncated file or trailing bytes.
    """
    path = Path(path)
    data = None
    if path.suffix == ".gz":
        mapped = _mapped_unpacked(path, expected_magic)
        if mapped is not None:
            return mapped
        dims, data, available = _read_gzip_idx(path, expected_magic)
    else:
        try:
            size = path.stat().st_size
            with path.open("rb") as handle:
                head = handle.read(4 + 4 * (expected_magic & 0xFF))
        except OSError as exc:
            raise _gzip_errors(path, exc) from None
        dims = _header(path, head, expected_magic)
        offset, available = 4 + 4 * len(dims), size - 4 - 4 * len(dims)
    needed = math.prod(dims)  # Python ints: 3 uint32 dimensions may overflow int64
    shape_text = "×".join(str(d) for d in dims)
    if available < needed:
        raise DataError(
            str(path),
            f"truncated: header says {shape_text} ({needed} bytes of data) "
            f"but only {available} bytes follow",
        )
    if available > needed:
        raise DataError(
            str(path),
            f"count mismatch: header says {shape_text} ({needed} bytes of data) "
            f"but {available} bytes follow",
        )
    if data is not None:
        return data
    if needed == 0:
        return np.zeros(dims, dtype=np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=dims)


#: gzipped IDX files of at least this many compressed bytes are unpacked once into the data
#: cache and memory-mapped from there (MNIST's training images: 9.9 MB → 47 MB)
UNPACK_MIN_BYTES = 1 << 20


def unpacked_path(path: Path) -> Path:
    """Where the data cache keeps the uncompressed copy of the gzipped IDX file ``path``:
    ``<cache root>/unpacked/<name>-<key>`` with ``key`` a digest of the file's absolute path,
    size and modification time (a changed file gets a new copy; stale ones are never read)."""
    from dnupdate.engine.data.locate import cache_root

    info = path.stat()
    ident = f"{path.resolve()}\0{info.st_size}\0{info.st_mtime_ns}".encode()
    key = hashlib.sha256(ident).hexdigest()[:16]
    return cache_root() / "unpacked" / f"{path.name.removesuffix('.gz')}-{key}"


def _mapped_unpacked(path: Path, expected_magic: int) -> np.ndarray | None:
    """A large gzipped IDX file as a read-only memory map of its uncompressed copy in the data
    cache (unpacked in pieces on first use, written atomically), so that only the pages a run
    reads are resident: Caffe reads its records in order, and 300 LeNet updates touch a third
    of MNIST's training images. None (read into memory as before) for small files, files that
    are not well-formed (the in-memory reader names the fault) and a cache that cannot be
    written."""
    try:
        if path.stat().st_size < UNPACK_MIN_BYTES:
            return None
        target = unpacked_path(path)
        ndim = expected_magic & 0xFF
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            if not _unpack(path, target, expected_magic):
                return None
        with target.open("rb") as handle:
            dims = _header(target, handle.read(4 + 4 * ndim), expected_magic)
        offset = 4 + 4 * ndim
        if target.stat().st_size != offset + math.prod(dims) or math.prod(dims) == 0:
            return None
        return np.memmap(target, dtype=np.uint8, mode="r", offset=offset, shape=dims)
    except (OSError, EOFError, zlib.error, DataError):
        return None


def _unpack(path: Path, target: Path, expected_magic: int) -> bool:
    """Gunzip ``path`` into ``target`` in :data:`_READ_PIECE` pieces (atomically); False, and
    nothing written, when the data is not exactly what the header announces."""
    from dnupdate.engine.formats.weights import atomic_write

    class _Malformed(Exception):
        pass

    def write(out) -> None:
        with gzip.open(path, "rb") as handle:
            head = handle.read(4 + 4 * (expected_magic & 0xFF))
            dims = _header(path, head, expected_magic)
            _check_gzip_can_hold(path, dims)
            out.write(head)
            left = math.prod(dims)
            while left > 0:
                piece = handle.read(min(left, _READ_PIECE))
                if not piece:
                    raise _Malformed
                out.write(piece)
                left -= len(piece)
            if handle.read(1):
                raise _Malformed

    with contextlib.suppress(_Malformed):
        atomic_write(target, write)
        return True
    return False


def read_idx_images(path: str | Path) -> np.ndarray:
    """IDX image file → uint8 array N×1×rows×cols."""
    images = read_idx(path, IMAGE_MAGIC)
    n, rows, cols = images.shape
    return images.reshape(n, 1, rows, cols)


def read_idx_labels(path: str | Path, classes: int) -> np.ndarray:
    """IDX label file → uint8 array N; every label must be below ``classes``."""
    labels = read_idx(path, LABEL_MAGIC)
    check_label_range(path, labels, classes, "item")
    return labels


def read_idx_pair(
    images_path: str | Path, labels_path: str | Path, classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Read an image file and its label file and check that their counts agree."""
    images = read_idx_images(images_path)
    labels = read_idx_labels(labels_path, classes)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            str(labels_path),
            f"count mismatch: {labels.shape[0]} labels but {images_path} has "
            f"{images.shape[0]} images",
        )
    return images, labels


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzipped when the name ends in ``.gz``)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    head = bytes([0, 0, IDX_UBYTE, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    data = head + array.tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)
