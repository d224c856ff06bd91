"""``.npz`` archives with arrays ``x`` (images) and ``y`` (labels).

``x`` is N×C×H×W or N×H×W×C (channels-last when the last axis has 1, 3 or 4 entries and
axis 1 has more than 4; N×H×W means one channel), uint8 (0..255, preprocessed like any image)
or float32 (used exactly as given).
``y`` holds N non-negative integer labels. An optional scalar ``classes`` array gives the class
count; otherwise it is ``max(y) + 1``. Members stored without compression (``np.savez``) are
memory-mapped; compressed members (``np.savez_compressed``) are read into memory.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from dnupdate.engine.data.errors import DataError, check_pixels

CHANNEL_COUNTS = (1, 3, 4)

#: what reading a damaged archive raises (zipfile, zlib, NumPy's header parser; a damaged
#: compression-method field gives NotImplementedError)
_READ_ERRORS = (
    ValueError,
    OSError,
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
    NotImplementedError,
)

#: bytes per read when checking a memory-mapped member's CRC-32
_CRC_PIECE = 1 << 20


def _member(archive: zipfile.ZipFile, path: Path, name: str) -> zipfile.ZipInfo:
    try:
        return archive.getinfo(f"{name}.npy")
    except KeyError:
        present = ", ".join(n.removesuffix(".npy") for n in archive.namelist())
        raise DataError(str(path), f"no array '{name}' (arrays present: {present})") from None


def _open_archive(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise DataError(str(path), "no such file") from None
    except _READ_ERRORS as exc:
        raise DataError(str(path), f"not a valid .npz archive ({exc})") from None


def _header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path):
    """(shape, fortran_order, dtype) of one member, read from its .npy header only."""
    try:
        with archive.open(info) as handle:
            return _read_npy_header(handle)
    except _READ_ERRORS as exc:
        raise DataError(str(path), f"array '{info.filename}' is unreadable ({exc})") from None


def _read_npy_header(handle):
    """Read the .npy magic and header: (shape, fortran_order, dtype)."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(handle)
    return np.lib.format.read_array_header_2_0(handle)


def _stored_offset(path: Path, info: zipfile.ZipInfo) -> int | None:
    """File offset of an uncompressed member's array data, or None if it is compressed."""
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with path.open("rb") as handle:
        handle.seek(info.header_offset)
        local = handle.read(30)
        name_len = int.from_bytes(local[26:28], "little")
        extra_len = int.from_bytes(local[28:30], "little")
        handle.seek(info.header_offset + 30 + name_len + extra_len)
        _read_npy_header(handle)
        return handle.tell()


def _verify_crc(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, name: str) -> None:
    """Read a member through :mod:`zipfile` in pieces, which checks its CRC-32 at the end: a
    memory-mapped member is otherwise never checked (a flipped bit would train silently)."""
    try:
        with archive.open(info) as handle:
            while handle.read(_CRC_PIECE):
                pass
    except _READ_ERRORS as exc:
        raise DataError(str(path), f"array '{name}' is damaged ({exc})") from None


def _load_member(archive: zipfile.ZipFile, path: Path, name: str) -> np.ndarray:
    info = _member(archive, path, name)
    shape, fortran, dtype = _header(archive, info, path)
    count = math.prod(shape)  # Python ints: a damaged header's product may overflow int64
    if min(shape, default=0) < 0 or count * dtype.itemsize > info.file_size:
        raise DataError(
            str(path),
            f"array '{name}' is damaged or truncated: its header says shape {shape} of "
            f"{dtype} ({count * dtype.itemsize} bytes), the member holds {info.file_size}",
        )
    offset = None if fortran or dtype.hasobject else _stored_offset(path, info)
    if offset is not None:
        if offset + count * dtype.itemsize > path.stat().st_size:
            raise DataError(str(path), f"array '{name}' is truncated")
        _verify_crc(archive, info, path, name)
        if count == 0:
            return np.zeros(shape, dtype=dtype)
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    try:
        with archive.open(info) as handle:
            return np.lib.format.read_array(handle, allow_pickle=False)
    except _READ_ERRORS as exc:
        raise DataError(str(path), f"array '{name}' is unreadable ({exc})") from None


def layout_of(shape: tuple[int, ...]) -> str:
    """``"NCHW"``, ``"NHWC"`` or ``"NHW"`` for an image array shape (see module docstring)."""
    if len(shape) == 3:
        return "NHW"
    if len(shape) != 4:
        raise ValueError(f"expected 3 or 4 dimensions, got shape {shape}")
    if shape[3] in CHANNEL_COUNTS and shape[1] > max(CHANNEL_COUNTS):
        return "NHWC"
    return "NCHW"


def _to_nchw(x: np.ndarray) -> np.ndarray:
    layout = layout_of(x.shape)
    if layout == "NHW":
        return x.reshape(x.shape[0], 1, x.shape[1], x.shape[2])
    if layout == "NHWC":
        return x.transpose(0, 3, 1, 2)
    return x


def probe_npz_shape(path: str | Path) -> tuple[int, int, int]:
    """(C, H, W) of the ``x`` array, from the .npy header alone."""
    path = Path(path)
    with _open_archive(path) as archive:
        shape, _, _ = _header(archive, _member(archive, path, "x"), path)
    if len(shape) not in (3, 4):
        raise DataError(str(path), f"'x' has shape {shape}; expected N×C×H×W or N×H×W×C")
    layout = layout_of(shape)
    if layout == "NHW":
        return 1, shape[1], shape[2]
    if layout == "NHWC":
        return shape[3], shape[1], shape[2]
    return shape[1], shape[2], shape[3]


def _declared_classes(path: Path, value: np.ndarray) -> int:
    """The ``classes`` member: one non-negative integer (a 0-d or 1-element integer array; a
    float such as 10.7, a list such as [10, 10] or a negative count is refused)."""
    if value.size != 1 or not np.issubdtype(value.dtype, np.integer):
        raise DataError(
            str(path),
            f"'classes' is {value.dtype} with shape {value.shape}; expected one integer",
        )
    classes = int(value.reshape(-1)[0])
    if classes < 0:
        raise DataError(str(path), f"'classes' is {classes}; expected a non-negative count")
    return classes


def read_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Read (images N×C×H×W, labels N int64, classes) from an ``.npz`` archive."""
    path = Path(path)
    with _open_archive(path) as archive:
        x = _load_member(archive, path, "x")
        y = _load_member(archive, path, "y")
        declared = (
            _declared_classes(path, _load_member(archive, path, "classes"))
            if "classes.npy" in archive.namelist()
            else None
        )
    if x.ndim not in (3, 4):
        raise DataError(str(path), f"'x' has shape {x.shape}; expected N×C×H×W or N×H×W×C")
    if x.dtype not in (np.uint8, np.float32):
        raise DataError(str(path), f"'x' is {x.dtype}; expected uint8 or float32")
    check_pixels(path, x)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(str(path), f"'y' is {y.dtype} {y.shape}; expected N integer labels")
    if y.shape[0] != x.shape[0]:
        raise DataError(
            str(path), f"count mismatch: 'x' has {x.shape[0]} images but 'y' has {y.shape[0]}"
        )
    labels = np.asarray(y, dtype=np.int64)
    if labels.size and int(labels.min()) < 0:
        bad = int(np.argmax(labels < 0))
        raise DataError(str(path), f"label out of range: item {bad} has label {labels[bad]}")
    classes = int(labels.max()) + 1 if labels.size else 0
    if declared is not None:
        if classes > declared:
            bad = int(np.argmax(labels >= declared))
            raise DataError(
                str(path),
                f"label out of range: item {bad} has label {labels[bad]}, 'classes' is {declared}",
            )
        classes = declared
    return _to_nchw(x), labels, classes
