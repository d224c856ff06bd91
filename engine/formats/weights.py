"""Parameter files: darknet ``.weights`` (read and write) and ``.npz`` keyed ``LAYER/INDEX``.

darknet ``.weights`` (``parser.c:save_weights_upto`` / ``load_weights_upto``, spec section 10),
little-endian:

* header: ``major``, ``minor``, ``revision`` as int32, then ``seen`` (images seen) as an
  unsigned 8-byte ``size_t`` when ``major*10 + minor >= 2`` and ``major < 1000`` and
  ``minor < 1000``, otherwise as a 4-byte ``int`` (16-byte header instead of 20);
* body: for every layer in cfg order (``dontsave`` layers skipped when writing, ``dontload``
  layers when reading) its float32 blobs in darknet's order, which is the order
  :func:`engine.model.shapes.param_blobs` gives for darknet layers:

  - convolutional: ``biases[n]``, [``scales``, ``rolling_mean``, ``rolling_variance``],
    ``weights[n][c/groups][size][size]``;
  - connected: ``biases[out]``, ``weights[out][in]``, then [``scales``, ``rolling_mean``,
    ``rolling_variance``] (darknet quirk: the batch-norm block comes *after* the weights here,
    *before* them in a conv layer);
  - ``[batchnorm]``: ``scales``, ``rolling_mean``, ``rolling_variance`` (no biases).

* the transpose flag: ``major > 1000 or minor > 1000`` means connected weights are stored as
  ``[in][out]``; they are transposed on reading (darknet) and on writing (here, so that a file
  we write with such a header reads back the same in darknet).

Not supported (the spec has no field for them): the conv ``flipped`` key, ``dontloadscales``,
``numload``, binary/xnor weights, and the recurrent/local layers.

Unlike darknet, which ignores short reads, a file whose size does not match the net is an error
(:class:`WeightsFileError`) naming both byte counts and the layer where the file ran out. Extra
bytes after the last layer are an error too unless ``allow_trailing=True`` (darknet silently
ignores them, which is how a truncated cfg loads a pretrained file); the count is then reported
in :attr:`WeightsHeader.trailing_bytes`.

Every write is atomic: a temporary file in the destination folder, flushed and fsynced, then
renamed over the destination.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from dnupdate.engine.model.blobs import ArraySource, as_mapping, blob_key, has_darknet_layout
from dnupdate.engine.model.shapes import infer_shapes
from dnupdate.engine.spec import NetSpec

_FLOAT = np.dtype("<f4")
_SIZE_T_MAX = (1 << 64) - 1


class WeightsFileError(ValueError):
    """A parameter file does not fit the network (size, shape, key) or cannot be read/written.

    ``path`` is the file, ``message`` what is wrong (expected vs found byte counts, the layer
    where the file ran out, the offending key and shapes).
    """

    def __init__(self, path: str | os.PathLike, message: str) -> None:
        self.path = str(path)
        self.message = message
        super().__init__(f"{self.path}: {message}")


@dataclass(frozen=True)
class WeightsHeader:
    """The header of a darknet ``.weights`` file.

    ``seen``: images seen so far, as darknet stores it (``size_t``; a 4-byte header value is
    sign-extended and wrapped to 64 bits as darknet's ``*net->seen = iseen`` does).
    ``trailing_bytes``: bytes found after the last layer (0 unless read with
    ``allow_trailing=True``).
    """

    major: int = 0
    minor: int = 2
    revision: int = 0
    seen: int = 0
    trailing_bytes: int = 0

    @property
    def seen_bytes(self) -> int:
        """8 when ``major*10 + minor >= 2 and major < 1000 and minor < 1000``, else 4."""
        wide = self.major * 10 + self.minor >= 2 and self.major < 1000 and self.minor < 1000
        return 8 if wide else 4

    @property
    def transpose(self) -> bool:
        """darknet's transpose flag: connected weights stored ``[in][out]``."""
        return self.major > 1000 or self.minor > 1000

    @property
    def nbytes(self) -> int:
        """Header size: 12 bytes of version then ``seen_bytes``."""
        return 12 + self.seen_bytes

    def to_bytes(self) -> bytes:
        """The header as darknet writes it (little-endian)."""
        words = np.array([self.major, self.minor, self.revision], dtype="<i4").tobytes()
        if self.seen_bytes == 8:
            return words + np.array([self.seen], dtype="<u8").tobytes()
        return words + np.array([self.seen], dtype="<i4").tobytes()


@dataclass(frozen=True)
class StoredBlob:
    """One float32 array of a ``.weights`` body, in file order.

    ``key``: the ``"LAYER/INDEX"`` name shared with ``.npz`` files and the network's blobs;
    ``layer``/``kind``/``name``: for messages; ``transposable``: connected weights, stored
    ``[in][out]`` when the header's transpose flag is set.
    """

    key: str
    layer: str
    kind: str
    name: str
    shape: tuple[int, ...]
    transposable: bool

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return 4 * self.size


def darknet_layout(
    net_spec: NetSpec, *, purpose: str = "load", path: str | os.PathLike = ""
) -> list[StoredBlob]:
    """The ``.weights`` body of ``net_spec``, blob by blob, in file order.

    ``purpose``: ``"load"`` skips ``dontload`` layers, ``"save"`` skips ``dontsave`` layers.
    A layer with parameters but no darknet layout (a Caffe-ordered layer) raises
    :class:`WeightsFileError` for ``path``.
    """
    if purpose not in ("load", "save"):
        raise ValueError(f"purpose must be 'load' or 'save', not {purpose!r}")
    layout: list[StoredBlob] = []
    for shape in infer_shapes(net_spec):
        layer = shape.layer
        if not shape.blobs:
            continue
        if not has_darknet_layout(layer):
            raise WeightsFileError(
                path or f"<net {net_spec.name}>",
                f"layer {layer.name} ({layer.kind}, {layer.origin}) has parameters in Caffe's "
                "order, which has no darknet .weights layout; use .npz",
            )
        if layer.dontload if purpose == "load" else layer.dontsave:
            continue
        for index, blob in enumerate(shape.blobs):
            layout.append(
                StoredBlob(
                    key=blob_key(layer.name, index),
                    layer=layer.name,
                    kind=layer.kind,
                    name=blob.name,
                    shape=blob.shape,
                    transposable=layer.kind == "connected" and blob.name == "weights",
                )
            )
    return layout


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def read_file_bytes(path: str, error: type[WeightsFileError] = WeightsFileError) -> bytes:
    """The whole file; an OS error (missing, unreadable) raises ``error`` naming ``path``."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise error(path, exc.strerror or str(exc)) from None


def _read_header(path: str, data: bytes) -> WeightsHeader:
    if len(data) < 12:
        raise WeightsFileError(
            path, f"file has {len(data)} bytes, the header's version needs 12; not a .weights file"
        )
    major, minor, revision = (int(v) for v in np.frombuffer(data, "<i4", 3))
    probe = WeightsHeader(major, minor, revision)
    if len(data) < probe.nbytes:
        raise WeightsFileError(
            path,
            f"file has {len(data)} bytes, the header (version {major}.{minor}.{revision}) "
            f"needs {probe.nbytes}",
        )
    if probe.seen_bytes == 8:
        seen = int(np.frombuffer(data, "<u8", 1, 12)[0])
    else:
        # darknet quirk: `int iseen; *net->seen = iseen;` sign-extends into a size_t.
        seen = int(np.frombuffer(data, "<i4", 1, 12)[0]) & _SIZE_T_MAX
    return WeightsHeader(major, minor, revision, seen)


def _ran_out(layout: list[StoredBlob], header: WeightsHeader, size: int) -> str:
    """Describe where a short file ends: which layer and blob, expected vs found bytes."""
    expected = header.nbytes + sum(b.nbytes for b in layout)
    offset = header.nbytes
    for blob in layout:
        if offset + blob.nbytes > size:
            return (
                f"truncated: expected {expected} bytes for this network, found {size}; "
                f"the file ends inside layer {blob.layer} ({blob.kind}) blob '{blob.name}' "
                f"{blob.shape} at byte {size - offset} of {blob.nbytes}"
            )
        offset += blob.nbytes
    return f"expected {expected} bytes, found {size}"  # pragma: no cover - caller checked


def read_darknet_weights(
    path: str | os.PathLike, net_spec: NetSpec, *, allow_trailing: bool = False
) -> tuple[WeightsHeader, dict[str, np.ndarray]]:
    """Read a darknet ``.weights`` file for ``net_spec``.

    Returns the header and ``{"LAYER/INDEX": float32 array}`` for every blob of every layer
    not marked ``dontload`` (those keep whatever the caller initialised). Connected weights are
    transposed back to ``(outputs, inputs)`` when the header's transpose flag is set.
    Raises :class:`WeightsFileError` when the file is missing, truncated (naming expected and
    found byte counts and the layer where it ran out) or longer than the network needs
    (unless ``allow_trailing``).
    """
    path = str(path)
    data = read_file_bytes(path)
    header = _read_header(path, data)
    layout = darknet_layout(net_spec, purpose="load", path=path)
    expected = header.nbytes + sum(b.nbytes for b in layout)
    if len(data) < expected:
        raise WeightsFileError(path, _ran_out(layout, header, len(data)))
    trailing = len(data) - expected
    if trailing and not allow_trailing:
        raise WeightsFileError(
            path,
            f"expected {expected} bytes for this network, found {len(data)} "
            f"({trailing} extra bytes after the last layer); wrong cfg for these weights? "
            "(allow_trailing=True loads the leading layers, as darknet does)",
        )
    arrays: dict[str, np.ndarray] = {}
    offset = header.nbytes
    for blob in layout:
        flat = np.frombuffer(data, _FLOAT, blob.size, offset).astype(np.float32)
        offset += blob.nbytes
        if blob.transposable and header.transpose:
            # darknet quirk: with the transpose flag the matrix is stored [inputs][outputs].
            out, inp = blob.shape
            arrays[blob.key] = np.ascontiguousarray(flat.reshape(inp, out).T)
        else:
            arrays[blob.key] = flat.reshape(blob.shape)
    return WeightsHeader(header.major, header.minor, header.revision, header.seen, trailing), arrays


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Run ``write(file)`` on a temporary file next to ``path``, flush and fsync it, then
    rename it over ``path`` (so readers see the old file or the whole new one, never half)."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable where the OS allows it
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def checked_array(
    path: str,
    arrays: Mapping[str, np.ndarray],
    key: str,
    shape: tuple[int, ...],
    what: str,
    error: type[WeightsFileError] = WeightsFileError,
) -> np.ndarray:
    """``arrays[key]`` as an array of exactly ``shape``; a missing key or another shape raises
    ``error`` for ``path``, describing the blob as ``what``."""
    if key not in arrays:
        raise error(path, f"no array for {what} (key {key!r})")
    array = np.asarray(arrays[key])
    if array.shape != shape:
        message = f"{what} (key {key!r}) has shape {array.shape}, the network needs {shape}"
        raise error(path, message)
    return array


def write_darknet_weights(
    path: str | os.PathLike,
    net_spec: NetSpec,
    arrays: ArraySource,
    seen: int,
    *,
    major: int = 0,
    minor: int = 2,
    revision: int = 0,
) -> None:
    """Write ``arrays`` (keyed ``"LAYER/INDEX"``; a mapping, pairs, or a callable such as
    ``Network.named_blobs``) as a darknet ``.weights`` file, atomically.

    The default version 0.2.0 is what pjreddie/darknet writes (8-byte ``seen``). Another
    version picks darknet's reading rules: a 4-byte ``seen`` when ``major*10 + minor < 2`` or
    either is >= 1000, and connected weights stored transposed when either exceeds 1000.
    Layers marked ``dontsave`` are left out, as darknet does.
    """
    path = str(path)
    header = WeightsHeader(major, minor, revision, int(seen))
    limit = _SIZE_T_MAX if header.seen_bytes == 8 else (1 << 31) - 1
    if not 0 <= header.seen <= limit:
        raise WeightsFileError(
            path, f"seen = {seen} does not fit the header's {header.seen_bytes}-byte field"
        )
    arrays = as_mapping(arrays)
    chunks = [header.to_bytes()]
    for blob in darknet_layout(net_spec, purpose="save", path=path):
        what = f"layer {blob.layer} ({blob.kind}) blob '{blob.name}'"
        array = checked_array(path, arrays, blob.key, blob.shape, what)
        if blob.transposable and header.transpose:
            array = array.T
        chunks.append(np.ascontiguousarray(array, dtype=_FLOAT).tobytes())
    atomic_write(path, lambda handle: handle.writelines(chunks))


# --------------------------------------------------------------------------------------------
# .npz
# --------------------------------------------------------------------------------------------


def _all_blobs(net_spec: NetSpec) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{"LAYER/INDEX": (description, shape)}`` for every blob of every layer."""
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    for shape in infer_shapes(net_spec):
        for index, blob in enumerate(shape.blobs):
            what = f"layer {shape.layer.name} blob '{blob.name}'"
            out[blob_key(shape.layer.name, index)] = (what, blob.shape)
    return out


def save_npz_weights(path: str | os.PathLike, net_spec: NetSpec, arrays: ArraySource) -> None:
    """Write every parameter blob of ``net_spec`` to an uncompressed ``.npz``, one float32
    member per ``"LAYER/INDEX"`` key, atomically. Missing keys or wrong shapes raise
    :class:`WeightsFileError`; keys that are not blobs of the net are ignored."""
    path = str(path)
    arrays = as_mapping(arrays)
    members = {
        key: np.ascontiguousarray(checked_array(path, arrays, key, shape, what), np.float32)
        for key, (what, shape) in _all_blobs(net_spec).items()
    }
    atomic_write(path, lambda handle: np.savez(handle, **members))


def load_npz_weights(
    path: str | os.PathLike, net_spec: NetSpec, *, strict: bool = True
) -> dict[str, np.ndarray]:
    """Read a ``.npz`` keyed ``"LAYER/INDEX"`` for ``net_spec`` as float32 arrays.

    Every blob of the net must be present with its exact shape. ``strict``: members that are
    not blobs of the net are an error (else ignored). Raises :class:`WeightsFileError`.
    """
    path = str(path)
    expected = _all_blobs(net_spec)
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise WeightsFileError(path, "not an .npz archive (a single .npy array?)")
        with npz:
            extra = sorted(set(npz.files) - set(expected))
            if strict and extra:
                raise WeightsFileError(
                    path, f"members that are not blobs of this network: {', '.join(extra)}"
                )
            loaded = {key: npz[key] for key in expected if key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        if isinstance(exc, WeightsFileError):
            raise
        raise WeightsFileError(path, f"cannot read as .npz: {exc or 'empty file'}") from None
    out: dict[str, np.ndarray] = {}
    for key, (what, shape) in expected.items():
        array = checked_array(path, loaded, key, shape, what)
        if not np.issubdtype(array.dtype, np.floating):
            raise WeightsFileError(path, f"{what} (key {key!r}) has dtype {array.dtype}")
        out[key] = array.astype(np.float32)
    return out


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def first_nonfinite(arrays: Mapping[str, np.ndarray]) -> tuple[str, tuple[int, ...], float] | None:
    """``(key, index, value)`` of the first NaN or ±inf, blobs in the mapping's order, or None."""
    for key, array in arrays.items():
        values = np.asarray(array)
        finite = np.isfinite(values)
        if not finite.all():
            index = np.unravel_index(int((~finite).argmax()), values.shape)
            where = tuple(int(i) for i in index)
            return key, where, float(values[where])
    return None


def nonfinite_message(arrays: Mapping[str, np.ndarray]) -> str | None:
    """What :func:`first_nonfinite` found, as a sentence (None when every value is finite)."""
    found = first_nonfinite(arrays)
    if found is None:
        return None
    key, index, value = found
    count = sum(int((~np.isfinite(np.asarray(a))).sum()) for a in arrays.values())
    return f"blob {key} holds {value} at index {list(index)} ({count} non-finite values in all)"
