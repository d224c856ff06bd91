"""Just enough of the protobuf wire format for Caffe's ``Datum`` and ``BlobProto``.

Wire format (developers.google.com/protocol-buffers/docs/encoding): each field is a varint key
``(number << 3) | wire_type`` followed by a varint (type 0), 8 bytes (type 1), a
length-delimited payload (type 2) or 4 bytes (type 5). Repeated scalars may be packed
(one type-2 payload) or not (one entry per value); both are accepted, as protobuf requires.

Caffe messages (``caffe.proto``)::

    message Datum { int32 channels = 1; int32 height = 2; int32 width = 3; bytes data = 4;
                    int32 label = 5; repeated float float_data = 6; bool encoded = 7; }
    message BlobShape { repeated int64 dim = 1 [packed = true]; }
    message BlobProto { BlobShape shape = 7; repeated float data = 5 [packed = true];
                        repeated float diff = 6; repeated double double_data = 8; ...
                        int32 num = 1; int32 channels = 2; int32 height = 3; int32 width = 4; }
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``: (value, next position)."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError("varint too long")


def _signed32(value: int) -> int:
    """int32 fields are sign-extended to 64 bits on the wire."""
    value &= 0xFFFFFFFFFFFFFFFF
    return value - (1 << 64) if value >= 1 << 63 else value


def iter_fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield (field number, wire type, value): an int for types 0/1/5, bytes for type 2."""
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = read_varint(buf, pos)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise WireError("truncated 64-bit field")
            value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wire == 2:
            length, pos = read_varint(buf, pos)
            if pos + length > len(buf):
                raise WireError(f"field {number}: length {length} runs past the end")
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            if pos + 4 > len(buf):
                raise WireError("truncated 32-bit field")
            value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        else:
            raise WireError(f"field {number}: unsupported wire type {wire}")
        yield number, wire, value


def _floats(chunks: list[tuple[int, int | bytes]], fmt: str) -> np.ndarray:
    """Collect a repeated float/double field given as packed payloads or single values."""
    size = struct.calcsize(fmt)
    parts: list[bytes] = []
    for wire, value in chunks:
        if wire == 2:
            parts.append(value)  # type: ignore[arg-type]
        else:
            parts.append(int(value).to_bytes(size, "little"))  # type: ignore[arg-type]
    return np.frombuffer(b"".join(parts), dtype="<" + fmt)


def _varints(buf: bytes) -> list[int]:
    out, pos = [], 0
    while pos < len(buf):
        value, pos = read_varint(buf, pos)
        out.append(value)
    return out


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
        if number in (1, 2, 3, 5) and wire == 0:
            setattr(
                datum, ("", "channels", "height", "width", "", "label")[number], _signed32(value)
            )  # type: ignore[arg-type]
        elif number == 4 and wire == 2:
            datum.data = bytes(value)  # type: ignore[arg-type]
        elif number == 6 and wire in (2, 5):
            floats.append((wire, value))
        elif number == 7 and wire == 0:
            datum.encoded = bool(value)
    if floats:
        datum.float_data = _floats(floats, "f").astype(np.float32)
    return datum


def _key(number: int, wire: int) -> bytes:
    return encode_varint((number << 3) | wire)


def encode_varint(value: int) -> bytes:
    """Encode a non-negative (or 64-bit two's complement) integer as a varint."""
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


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
        out += _key(number, 0) + encode_varint(value)
    if data is not None:
        out += _key(4, 2) + encode_varint(len(data)) + data
    out += _key(5, 0) + encode_varint(label)
    if float_data is not None:
        for value in np.asarray(float_data, dtype="<f4").ravel():
            out += _key(6, 5) + value.tobytes()
    return bytes(out)


def decode_blob(buf: bytes) -> tuple[tuple[int, ...], np.ndarray]:
    """Parse a serialized BlobProto: (shape, float32 data).

    The shape is ``shape.dim`` when present, else the legacy ``(num, channels, height,
    width)`` that ``compute_image_mean`` writes. ``double_data`` is used when ``data`` is empty.
    """
    legacy = {1: 0, 2: 0, 3: 0, 4: 0}
    dims: list[int] = []
    data: list[tuple[int, int | bytes]] = []
    doubles: list[tuple[int, int | bytes]] = []
    for number, wire, value in iter_fields(buf):
        if number in legacy and wire == 0:
            legacy[number] = _signed32(value)  # type: ignore[arg-type]
        elif number == 5 and wire in (2, 5):
            data.append((wire, value))
        elif number == 8 and wire in (1, 2):
            doubles.append((wire, value))
        elif number == 7 and wire == 2:
            for dim_number, dim_wire, dim_value in iter_fields(value):  # type: ignore[arg-type]
                if dim_number == 1 and dim_wire == 2:
                    dims.extend(_varints(dim_value))  # type: ignore[arg-type]
                elif dim_number == 1 and dim_wire == 0:
                    dims.append(int(dim_value))  # type: ignore[arg-type]
    values = _floats(data, "f") if data else _floats(doubles, "d")
    shape = tuple(dims) if dims else tuple(legacy[i] for i in (1, 2, 3, 4))
    return shape, values.astype(np.float32)


def encode_blob(array: np.ndarray) -> bytes:
    """Serialize a 4-D float array as a BlobProto with legacy dims and packed data
    (the layout ``compute_image_mean`` produces)."""
    array = np.asarray(array, dtype="<f4")
    out = bytearray()
    for number, value in zip((1, 2, 3, 4), array.shape, strict=True):
        out += _key(number, 0) + encode_varint(int(value))
    payload = array.tobytes()
    out += _key(5, 2) + encode_varint(len(payload)) + payload
    return bytes(out)
