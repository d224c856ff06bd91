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

Wire format and ``BlobProto`` codec: :mod:`engine.formats.protobuf_wire` (repeated scalars are
accepted
packed and unpacked, as protobuf requires).

Mapping onto a net (Caffe ``Net::CopyTrainedLayersFrom``): layers are matched **by name**,
blobs by index in the layer's framework order (:func:`engine.model.shapes.param_blobs`: Caffe
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
from dataclasses import dataclass

import numpy as np

from dnupdate.engine.formats.protobuf_wire import (
    BlobProto,
    WireError,
    decode_blob_proto,
    encode_blob_proto,
    iter_fields,
    length_delimited,
)
from dnupdate.engine.formats.weights import (
    WeightsFileError,
    atomic_write,
    checked_array,
    read_file_bytes,
)
from dnupdate.engine.model.blobs import ArraySource, as_mapping, blob_key
from dnupdate.engine.model.shapes import infer_shapes
from dnupdate.engine.spec import LayerSpec, NetSpec

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


class CaffeModelError(WeightsFileError):
    """A ``.caffemodel`` is malformed or does not fit the network (file, layer, shapes)."""


# One ``BlobProto``: shape, flat float32 data, and whether the shape came from the legacy dims.
CaffeBlob = BlobProto


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
# Decoding
# --------------------------------------------------------------------------------------------


def _decode_layer(buf: memoryview, name_field: int, type_field: int, blob_field: int):
    """``(name, type, blobs, nested V0 layer or None)`` of one layer message."""
    name, kind, blobs, nested = "", "", [], None
    for number, wire, value in iter_fields(buf):
        if number == name_field and wire == 2:
            name = bytes(value).decode("utf-8", "replace")  # type: ignore[arg-type]
        elif number == type_field and wire == 2:
            kind = bytes(value).decode("utf-8", "replace")  # type: ignore[arg-type]
        elif number == type_field and wire == 0:
            kind = _V1_TYPES.get(int(value), f"V1 type {value}")  # type: ignore[arg-type]
        elif number == blob_field and wire == 2:
            blobs.append(decode_blob_proto(value))  # type: ignore[arg-type]
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
    fields = iter_fields(buf)
    while True:
        try:
            number, wire, value = next(fields)
        except StopIteration:
            break
        except WireError as exc:
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
        except WireError as exc:
            raise CaffeModelError(
                path, f"malformed layer #{len(layers) + 1} of the file: {exc}"
            ) from None
    return CaffeModel(name, tuple(layers))


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


def encode_caffemodel(model: CaffeModel) -> bytes:
    """Serialize ``model`` as a ``NetParameter`` (``name``, then one ``layer`` (100) per
    layer with ``name``, ``type`` and ``blobs``; blob data packed)."""
    out = bytearray(length_delimited(1, model.name.encode()))
    for layer in model.layers:
        body = length_delimited(1, layer.name.encode()) + length_delimited(2, layer.type.encode())
        body += b"".join(length_delimited(7, encode_blob_proto(b)) for b in layer.blobs)
        out += length_delimited(100, body)
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
    model = decode_caffemodel(read_file_bytes(path, CaffeModelError), path)
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
        out[blob_key(name, index)] = have.data.reshape(want.shape).copy()
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
            what = f"layer {shape.layer.name} blob {index} '{blob.name}'"
            key = blob_key(shape.layer.name, index)
            array = checked_array(path, arrays, key, blob.shape, what, CaffeModelError)
            blobs.append(CaffeBlob(blob.shape, np.asarray(array, dtype=np.float32).ravel()))
        layers.append(CaffeLayer(shape.layer.name, _type_name(shape.layer), tuple(blobs)))
    return CaffeModel(net_spec.name, tuple(layers))


def write_caffemodel(path: str | os.PathLike, net_spec: NetSpec, arrays: ArraySource) -> None:
    """Write ``arrays`` (a mapping, pairs, or a callable such as ``Network.named_blobs``) as a
    ``.caffemodel`` for ``net_spec``, atomically (temporary file, fsync, rename)."""
    model = net_to_caffemodel(net_spec, arrays, path=str(path))
    payload = encode_caffemodel(model)
    atomic_write(path, lambda handle: handle.write(payload))
