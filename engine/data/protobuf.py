"""Caffe's ``Datum`` (LMDB records) and ``BlobProto`` (``mean.binaryproto``) messages.

The wire format and the ``BlobProto`` codec live in :mod:`engine.formats.protobuf_wire` (the
``.caffemodel`` reader shares them); this module adds ``Datum`` and the array-level blob helpers
the data readers use. Caffe's message (``caffe.proto``)::

    message Datum { int32 channels = 1; int32 height = 2; int32 width = 3; bytes data = 4;
                    int32 label = 5; repeated float float_data = 6; bool encoded = 7; }
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dnupdate.engine.formats.protobuf_wire import (
    BlobProto,
    WireError,
    decode_blob_proto,
    encode_blob_proto,
    encode_varint,
    field_key,
    iter_fields,
    length_delimited,
    repeated_floats,
    signed,
)

__all__ = ["Datum", "WireError", "decode_blob", "decode_datum", "encode_blob", "encode_datum"]

# Datum's int32 fields by number.
_DATUM_INTS = {1: "channels", 2: "height", 3: "width", 5: "label"}


@dataclass
class Datum:
    """A decoded ``caffe.Datum``: one C×H×W image (uint8 ``data`` or ``float_data``), one label."""

    channels: int = 0
    height: int = 0
    width: int = 0
    data: bytes = b""
    label: int = 0
    float_data: np.ndarray | None = None
    encoded: bool = False


def decode_datum(buf: bytes) -> Datum:
    """Parse a serialized Datum (unknown fields are skipped, as protobuf does)."""
    datum = Datum()
    floats: list[tuple[int, int | bytes]] = []
    for number, wire, value in iter_fields(buf):
        if number in _DATUM_INTS and wire == 0:
            setattr(datum, _DATUM_INTS[number], signed(value))  # type: ignore[arg-type]
        elif number == 4 and wire == 2:
            datum.data = bytes(value)  # type: ignore[arg-type]
        elif number == 6 and wire in (2, 5):
            floats.append((wire, value))  # type: ignore[arg-type]
        elif number == 7 and wire == 0:
            datum.encoded = bool(value)
    if floats:
        datum.float_data = repeated_floats(floats, "<f4").astype(np.float32)  # type: ignore[arg-type]
    return datum


def encode_datum(
    channels: int,
    height: int,
    width: int,
    label: int,
    data: bytes | None = None,
    float_data: np.ndarray | None = None,
) -> bytes:
    """Serialize a Datum the way Caffe's converters do (fields in number order, unpacked floats)."""
    out = bytearray()
    for number, value in ((1, channels), (2, height), (3, width)):
        out += field_key(number, 0) + encode_varint(value)
    if data is not None:
        out += length_delimited(4, data)
    out += field_key(5, 0) + encode_varint(label)
    if float_data is not None:
        for value in np.asarray(float_data, dtype="<f4").ravel():
            out += field_key(6, 5) + value.tobytes()
    return bytes(out)


def decode_blob(buf: bytes) -> tuple[tuple[int, ...], np.ndarray]:
    """Parse a serialized BlobProto: (shape, float32 data); see
    :func:`engine.formats.protobuf_wire.decode_blob_proto` for the shape and data rules."""
    blob = decode_blob_proto(buf)
    return blob.shape, blob.data


def encode_blob(array: np.ndarray) -> bytes:
    """Serialize a 4-D float array as a BlobProto with legacy dims and packed data
    (the layout ``compute_image_mean`` produces)."""
    array = np.asarray(array, dtype="<f4")
    return encode_blob_proto(BlobProto(array.shape, array.ravel(), legacy=True))
