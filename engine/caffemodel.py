"""Caffe ``.caffemodel`` files: a binary protobuf ``NetParameter``, read and written by hand.

Only the fields that carry weights are used (``caffe.proto``); everything else is skipped when
reading, as protobuf does with unknown fields::

    message NetParameter     { string name = 1; repeated LayerParameter layer = 100;
                               repeated V1LayerParameter layers = 2; /* legacy */ }
    message LayerParameter   { string name = 1; string type = 2; repeated BlobProto blobs = 7; }
    message V1LayerParameter { string name = 4; LayerType type = 5 (enum);
                               repeated BlobProto blobs = 6; V0LayerParameter layer = 1; }
    message V0LayerParameter { string name = 1; string type = 2; repeated BlobProto blobs = 50; }
    message BlobProto        { BlobShape shape = 7; repeated float data = 5 [packed];
                               repeated double double_data = 8 [packed];
                               int32 num = 1, channels = 2, height = 3, width = 4; /* legacy */ }
    message BlobShape        { repeated int64 dim = 1 [packed]; }

Wire format: varint keys ``(field << 3) | wire_type``; repeated scalars are accepted packed
(one length-delimited payload) and unpacked (one entry per value), as protobuf requires.

Mapping onto a net (Caffe ``Net::CopyTrainedLayersFrom``): layers are matched **by name**,
blobs by index in the layer's framework order (:func:`engine.shapes.param_blobs`: Caffe
Convolution/InnerProduct ``weights, bias``; BatchNorm ``mean, variance, scale_factor``; Scale
``gamma[, beta]``). File layers the net does not have are ignored, net layers missing from the
file keep their initial values (fine-tuning), as in Caffe. A blob with ``shape`` must match
exactly; a legacy blob (``num/channels/height/width``) must match the blob's shape left-padded
with 1s to four axes (Caffe's ``LegacyShape``). A layer with another number of blobs, a shape
mismatch or a short ``data`` array is an error naming the file, the layer and both shapes.

Writing produces a ``NetParameter`` with the net's name and one ``LayerParameter`` (name, type,
blobs with ``shape`` and packed ``data``) per layer that has parameters, atomically. darknet-ordered
layers keep darknet's blob order and are typed ``Darknet*`` (Caffe itself cannot use them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from engine.checkpoint import ArraySource, WeightsFileError, as_mapping, atomic_write
from engine.shapes import infer_shapes
from engine.spec import LayerSpec, NetSpec

__all__ = [
    "CaffeBlob",
    "CaffeLayer",
    "CaffeModel",
    "CaffeModelError",
    "decode_caffemodel",
    "encode_caffemodel",
    "net_to_caffemodel",
    "read_caffemodel",
    "write_caffemodel",
]

# Caffe's registered layer type names (the file format's own strings, written and reported).
_CAFFE_TYPES = {"conv": "Convolution", "connected": "InnerProduct", "batchnorm": "BatchNorm"}
_DARKNET_TYPES = {
    "conv": "DarknetConvolutional",
    "connected": "DarknetConnected",
    "batchnorm": "DarknetBatchnorm",
}
# V1LayerParameter.LayerType values of the layers that carry blobs (for messages only).
_V1_TYPES = {4: "Convolution", 14: "InnerProduct", 39: "Deconvolution"}

_MASK64 = (1 << 64) - 1


class CaffeModelError(WeightsFileError):
    """A ``.caffemodel`` is malformed or does not fit the network (file, layer, shapes)."""


class _Truncated(ValueError):
    """Raised inside the decoder; turned into a :class:`CaffeModelError` with the file name."""


@dataclass(frozen=True)
class CaffeBlob:
    """One ``BlobProto``: ``shape`` (from ``BlobShape`` or the legacy 4 dims), ``data``
    (float32, flat), ``legacy`` (True when the shape came from ``num/channels/height/width``)."""

    shape: tuple[int, ...]
    data: np.ndarray
    legacy: bool = False


@dataclass(frozen=True)
class CaffeLayer:
    """One layer of a ``.caffemodel``: name, Caffe type name, blobs in file order."""

    name: str
    type: str
    blobs: tuple[CaffeBlob, ...]


@dataclass(frozen=True)
class CaffeModel:
    """A decoded ``NetParameter``: the net's name and its layers (new and V1 format merged,
    in file order)."""

    name: str
    layers: tuple[CaffeLayer, ...]


# --------------------------------------------------------------------------------------------
# Wire format
# --------------------------------------------------------------------------------------------


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise _Truncated("the data ends inside a varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Truncated("a varint is longer than 10 bytes")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """``(field number, wire type, value)``: an int for varint/fixed fields, a zero-copy
    view for length-delimited ones."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if pos + size > end:
                raise _Truncated(f"field {number}: the data ends inside a {size}-byte value")
            value, pos = int.from_bytes(buf[pos : pos + size], "little"), pos + size
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise _Truncated(
                    f"field {number}: {length} bytes announced, {end - pos} left in the message"
                )
            value, pos = buf[pos : pos + length], pos + length
        else:
            raise _Truncated(f"field {number}: unsupported wire type {wire} (not a caffemodel?)")
        yield number, wire, value


def _key(number: int, wire: int) -> bytes:
    return _encode_varint((number << 3) | wire)


def _encode_varint(value: int) -> bytes:
    value &= _MASK64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _encode_varint(len(payload)) + payload


def _signed(value: int, bits: int = 64) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def _repeated(chunks: list[tuple[int, int | memoryview]], dtype: str) -> np.ndarray:
    """A repeated float (``<f4``) or double (``<f8``) field, packed or not."""
    size = np.dtype(dtype).itemsize
    parts = [
        bytes(v) if wire == 2 else int(v).to_bytes(size, "little")  # type: ignore[arg-type]
        for wire, v in chunks
    ]
    joined = b"".join(parts)
    if len(joined) % size:
        raise _Truncated(f"a packed {dtype} array has {len(joined)} bytes")
    return np.frombuffer(joined, dtype=dtype)


def _decode_dims(buf: memoryview) -> list[int]:
    dims: list[int] = []
    for number, wire, value in _fields(buf):
        if number != 1:
            continue
        if wire == 2:
            pos, view = 0, value  # type: ignore[assignment]
            while pos < len(view):  # type: ignore[arg-type]
                dim, pos = _varint(view, pos)  # type: ignore[arg-type]
                dims.append(_signed(dim))
        elif wire == 0:
            dims.append(_signed(value))  # type: ignore[arg-type]
    return dims


def _decode_blob(buf: memoryview) -> CaffeBlob:
    legacy = {1: 0, 2: 0, 3: 0, 4: 0}
    dims: list[int] | None = None
    floats: list[tuple[int, int | memoryview]] = []
    doubles: list[tuple[int, int | memoryview]] = []
    for number, wire, value in _fields(buf):
        if number in legacy and wire == 0:
            legacy[number] = _signed(value, 32)  # type: ignore[arg-type]
        elif number == 5 and wire in (2, 5):
            floats.append((wire, value))
        elif number == 8 and wire in (1, 2):
            doubles.append((wire, value))
        elif number == 7 and wire == 2:
            dims = (dims or []) + _decode_dims(value)  # type: ignore[arg-type]
    data = _repeated(floats, "<f4") if floats else _repeated(doubles, "<f8")
    if dims is not None:
        return CaffeBlob(tuple(dims), data.astype(np.float32))
    return CaffeBlob(tuple(legacy[i] for i in (1, 2, 3, 4)), data.astype(np.float32), True)


def _decode_layer(buf: memoryview, name_field: int, type_field: int, blob_field: int):
    """``(name, type, blobs, nested V0 layer or None)`` of one layer message."""
    name, kind, blobs, nested = "", "", [], None
    for number, wire, value in _fields(buf):
        if number == name_field and wire == 2:
            name = bytes(value).decode("utf-8", "replace")  # type: ignore[arg-type]
        elif number == type_field and wire == 2:
            kind = bytes(value).decode("utf-8", "replace")  # type: ignore[arg-type]
        elif number == type_field and wire == 0:
            kind = _V1_TYPES.get(int(value), f"V1 type {value}")  # type: ignore[arg-type]
        elif number == blob_field and wire == 2:
            blobs.append(_decode_blob(value))  # type: ignore[arg-type]
        elif number == 1 and wire == 2 and name_field == 4:
            nested = value  # V1LayerParameter.layer: a V0LayerParameter
    return name, kind, blobs, nested


def _layer_from(buf: memoryview, version: int) -> CaffeLayer:
    if version == 2:
        name, kind, blobs, _ = _decode_layer(buf, 1, 2, 7)
        return CaffeLayer(name, kind, tuple(blobs))
    name, kind, blobs, nested = _decode_layer(buf, 4, 5, 6)
    if nested is not None:  # V0 inside V1: its own name, type and blobs (field 50)
        v0_name, v0_kind, v0_blobs, _ = _decode_layer(nested, 1, 2, 50)
        name, kind, blobs = name or v0_name, kind or v0_kind, blobs or v0_blobs
    return CaffeLayer(name, kind, tuple(blobs))


def decode_caffemodel(data: bytes, path: str | os.PathLike = "<bytes>") -> CaffeModel:
    """Decode a serialized ``NetParameter`` (new ``layer`` and legacy ``layers`` entries, in
    file order). Raises :class:`CaffeModelError` for malformed or truncated bytes, naming the
    layer being read."""
    buf = memoryview(data)
    name = ""
    layers: list[CaffeLayer] = []
    fields = _fields(buf)
    while True:
        try:
            number, wire, value = next(fields)
        except StopIteration:
            break
        except _Truncated as exc:
            where = f"after layer '{layers[-1].name}'" if layers else "before the first layer"
            raise CaffeModelError(
                path, f"truncated or not a .caffemodel ({where}): {exc}"
            ) from None
        if wire != 2 or number not in (1, 2, 100):
            continue
        if number == 1:
            name = bytes(value).decode("utf-8", "replace")  # type: ignore[arg-type]
            continue
        try:
            layers.append(_layer_from(value, 2 if number == 100 else 1))  # type: ignore[arg-type]
        except _Truncated as exc:
            raise CaffeModelError(
                path, f"malformed layer #{len(layers) + 1} of the file: {exc}"
            ) from None
    return CaffeModel(name, tuple(layers))


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


def _encode_blob(blob: CaffeBlob) -> bytes:
    out = bytearray()
    if blob.legacy:
        for number, dim in zip((1, 2, 3, 4), blob.shape, strict=True):
            out += _key(number, 0) + _encode_varint(dim)
    payload = np.ascontiguousarray(blob.data, dtype="<f4").tobytes()
    out += _length_delimited(5, payload)
    if not blob.legacy:
        dims = b"".join(_encode_varint(d) for d in blob.shape)
        out += _length_delimited(7, _length_delimited(1, dims) if dims else b"")
    return bytes(out)


def encode_caffemodel(model: CaffeModel) -> bytes:
    """Serialize ``model`` as a ``NetParameter`` (``name``, then one ``layer`` (100) per
    layer with ``name``, ``type`` and ``blobs``; blob data packed)."""
    out = bytearray(_length_delimited(1, model.name.encode()))
    for layer in model.layers:
        body = _length_delimited(1, layer.name.encode()) + _length_delimited(2, layer.type.encode())
        body += b"".join(_length_delimited(7, _encode_blob(b)) for b in layer.blobs)
        out += _length_delimited(100, body)
    return bytes(out)


# --------------------------------------------------------------------------------------------
# Net mapping
# --------------------------------------------------------------------------------------------


def _type_name(layer: LayerSpec) -> str:
    order = getattr(layer, "param_order", None) or getattr(layer, "style", "caffe")
    table = _DARKNET_TYPES if order == "darknet" else _CAFFE_TYPES
    return table.get(layer.kind, "Scale" if layer.kind == "scale" else layer.kind)


def _shape_fits(blob: CaffeBlob, shape: tuple[int, ...]) -> bool:
    """Caffe ``Blob::ShapeEquals``: exact for a ``BlobShape``; for a legacy blob, the four
    dims against the shape left-padded with 1s (``LegacyShape``)."""
    if not blob.legacy:
        return blob.shape == shape
    return len(shape) <= 4 and blob.shape == (1,) * (4 - len(shape)) + shape


def read_caffemodel(path: str | os.PathLike, net_spec: NetSpec) -> dict[str, np.ndarray]:
    """The ``.caffemodel`` blobs of ``net_spec``'s layers as ``{"LAYER/INDEX": float32
    array}`` (see the module docstring for the matching rules; layers absent from the file are
    left out of the result). Raises :class:`CaffeModelError` when the file cannot be read, is
    malformed, shares no layer with the net, or a layer's blobs do not fit."""
    path = str(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise CaffeModelError(path, exc.strerror or str(exc)) from None
    model = decode_caffemodel(data, path)
    by_name = {layer.name: layer for layer in model.layers}  # later duplicates win, as Caffe
    arrays: dict[str, np.ndarray] = {}
    wanted = [s for s in infer_shapes(net_spec) if s.blobs]
    for shape in wanted:
        stored = by_name.get(shape.layer.name)
        if stored is None:
            continue
        arrays.update(_layer_arrays(path, shape.layer.name, shape.blobs, stored))
    if wanted and not arrays:
        names = ", ".join(s.layer.name for s in wanted)
        found = ", ".join(layer.name for layer in model.layers if layer.blobs) or "none"
        raise CaffeModelError(
            path,
            f"no parameter layer of network {net_spec.name!r} is in the file (network: "
            f"{names}; file layers with blobs: {found}); wrong model for this net?",
        )
    return arrays


def _layer_arrays(path: str, name: str, blobs, stored: CaffeLayer) -> dict[str, np.ndarray]:
    expected = ", ".join(f"{b.name}{list(b.shape)}" for b in blobs)
    if len(stored.blobs) != len(blobs):
        raise CaffeModelError(
            path,
            f"layer {name} ({stored.type}): the file has {len(stored.blobs)} blobs, the "
            f"network expects {len(blobs)} ({expected})",
        )
    out: dict[str, np.ndarray] = {}
    for index, (want, have) in enumerate(zip(blobs, stored.blobs, strict=True)):
        what = f"layer {name} ({stored.type}) blob {index} '{want.name}'"
        if not _shape_fits(have, want.shape):
            kind = "legacy shape" if have.legacy else "shape"
            raise CaffeModelError(
                path,
                f"{what}: the file has {kind} {list(have.shape)}, the network expects "
                f"{list(want.shape)}",
            )
        if have.data.size != want.size:
            raise CaffeModelError(
                path,
                f"{what}: the file has {have.data.size} values for shape {list(want.shape)} "
                f"({want.size} expected); truncated blob",
            )
        out[f"{name}/{index}"] = have.data.reshape(want.shape).copy()
    return out


def net_to_caffemodel(net_spec: NetSpec, arrays: ArraySource, *, path: str = "") -> CaffeModel:
    """The ``CaffeModel`` holding ``arrays`` (``"LAYER/INDEX"``) for every parameter layer
    of ``net_spec``; a missing key or a wrong shape raises :class:`CaffeModelError`."""
    arrays = as_mapping(arrays)
    layers = []
    for shape in infer_shapes(net_spec):
        if not shape.blobs:
            continue
        blobs = []
        for index, blob in enumerate(shape.blobs):
            key = f"{shape.layer.name}/{index}"
            if key not in arrays:
                raise CaffeModelError(path, f"no array for layer {shape.layer.name} blob {key}")
            array = np.asarray(arrays[key], dtype=np.float32)
            if array.shape != blob.shape:
                raise CaffeModelError(
                    path,
                    f"layer {shape.layer.name} blob {index} '{blob.name}' has shape "
                    f"{list(array.shape)}, the network needs {list(blob.shape)}",
                )
            blobs.append(CaffeBlob(blob.shape, array.ravel()))
        layers.append(CaffeLayer(shape.layer.name, _type_name(shape.layer), tuple(blobs)))
    return CaffeModel(net_spec.name, tuple(layers))


def write_caffemodel(path: str | os.PathLike, net_spec: NetSpec, arrays: ArraySource) -> None:
    """Write ``arrays`` (a mapping, pairs, or a callable such as ``Network.named_blobs``) as a
    ``.caffemodel`` for ``net_spec``, atomically (temporary file, fsync, rename)."""
    model = net_to_caffemodel(net_spec, arrays, path=str(path))
    payload = encode_caffemodel(model)
    atomic_write(path, lambda handle: handle.write(payload))
