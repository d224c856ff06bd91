"""The protobuf wire format, by hand, and Caffe's ``BlobProto`` message built on it.

Shared by the ``.caffemodel`` reader/writer (:mod:`engine.formats.caffemodel`) and the data readers
(:mod:`engine.data.protobuf`: LMDB ``Datum`` records, ``mean.binaryproto``).

Wire format (developers.google.com/protocol-buffers/docs/encoding): each field is a varint key
``(number << 3) | wire_type`` followed by a varint (type 0), 8 bytes (type 1), a
length-delimited payload (type 2) or 4 bytes (type 5). Repeated scalars may be packed (one
type-2 payload) or not (one entry per value); readers accept both, as protobuf requires, and
skip fields they do not know.

Caffe's blob message (``caffe.proto``)::

    message BlobProto { BlobShape shape = 7; repeated float data = 5 [packed = true];
                        repeated double double_data = 8 [packed = true];
                        int32 num = 1; int32 channels = 2; int32 height = 3; int32 width = 4; }
    message BlobShape { repeated int64 dim = 1 [packed = true]; }
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BlobProto",
    "WireError",
    "decode_blob_proto",
    "encode_blob_proto",
    "encode_varint",
    "field_key",
    "iter_fields",
    "length_delimited",
    "packed_varints",
    "read_varint",
    "repeated_floats",
    "signed",
]

Buffer = bytes | memoryview
_MASK64 = (1 << 64) - 1
_LEGACY_DIMS = (1, 2, 3, 4)  # BlobProto num, channels, height, width


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message (truncated, or an unknown wire type)."""


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def read_varint(buf: Buffer, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos`` (7 bits a byte, least significant first, high bit
    set on every byte but the last): ``(value, next position)``."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise WireError("the data ends inside a varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError("a varint is longer than 10 bytes")


def iter_fields(buf: Buffer) -> Iterator[tuple[int, int, int | Buffer]]:
    """Yield ``(field number, wire type, value)``: an int for types 0/1/5 (fixed-size values
    little-endian), a slice of ``buf`` for type 2 (zero-copy when ``buf`` is a memoryview)."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = read_varint(buf, pos)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if pos + size > end:
                raise WireError(f"field {number}: the data ends inside a {size}-byte value")
            value, pos = int.from_bytes(buf[pos : pos + size], "little"), pos + size
        elif wire == 2:
            length, pos = read_varint(buf, pos)
            if pos + length > end:
                raise WireError(
                    f"field {number}: length {length} runs past the end ({end - pos} bytes left)"
                )
            value, pos = buf[pos : pos + length], pos + length
        else:
            raise WireError(f"field {number}: unsupported wire type {wire}")
        yield number, wire, value


def signed(value: int, bits: int = 64) -> int:
    """Two's complement reading of the low ``bits`` bits (int32/int64 fields are sent
    sign-extended to 64 bits)."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def packed_varints(buf: Buffer) -> list[int]:
    """The varints of a packed repeated integer field's payload, unsigned."""
    out, pos = [], 0
    while pos < len(buf):
        value, pos = read_varint(buf, pos)
        out.append(value)
    return out


def repeated_floats(chunks: list[tuple[int, int | Buffer]], dtype: str) -> np.ndarray:
    """A repeated float (``"<f4"``) or double (``"<f8"``) field from its ``(wire type,
    value)`` entries: packed payloads (type 2) and single fixed-size values, in order."""
    size = np.dtype(dtype).itemsize
    parts = [
        bytes(value) if wire == 2 else int(value).to_bytes(size, "little")  # type: ignore[arg-type]
        for wire, value in chunks
    ]
    joined = b"".join(parts)
    if len(joined) % size:
        raise WireError(f"a packed {dtype} array has {len(joined)} bytes")
    return np.frombuffer(joined, dtype=dtype)


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """Encode a non-negative (or 64-bit two's complement) integer as a varint."""
    value &= _MASK64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def field_key(number: int, wire: int) -> bytes:
    """The varint key ``(number << 3) | wire`` that starts a field."""
    return encode_varint((number << 3) | wire)


def length_delimited(number: int, payload: bytes) -> bytes:
    """A type-2 field: key, varint length, payload."""
    return field_key(number, 2) + encode_varint(len(payload)) + payload


# --------------------------------------------------------------------------------------------
# Caffe BlobProto
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlobProto:
    """One Caffe ``BlobProto``: ``shape`` (from ``BlobShape`` or the legacy 4 dims), ``data``
    (float32, flat), ``legacy`` (True when the shape came from ``num/channels/height/width``)."""

    shape: tuple[int, ...]
    data: np.ndarray
    legacy: bool = False


def _blob_shape_dims(buf: Buffer) -> list[int]:
    """``BlobShape.dim`` (int64), packed or not."""
    dims: list[int] = []
    for number, wire, value in iter_fields(buf):
        if number == 1 and wire == 2:
            dims.extend(signed(dim) for dim in packed_varints(value))  # type: ignore[arg-type]
        elif number == 1 and wire == 0:
            dims.append(signed(value))  # type: ignore[arg-type]
    return dims


def decode_blob_proto(buf: Buffer) -> BlobProto:
    """Parse a serialized ``BlobProto``. The shape is ``shape.dim`` when a ``shape`` field is
    present, else the legacy ``(num, channels, height, width)``; ``double_data`` is used when
    ``data`` is empty. Raises :class:`WireError` on malformed bytes."""
    legacy = dict.fromkeys(_LEGACY_DIMS, 0)
    dims: list[int] | None = None
    floats: list[tuple[int, int | Buffer]] = []
    doubles: list[tuple[int, int | Buffer]] = []
    for number, wire, value in iter_fields(buf):
        if number in legacy and wire == 0:
            legacy[number] = signed(value, 32)  # type: ignore[arg-type]
        elif number == 5 and wire in (2, 5):
            floats.append((wire, value))
        elif number == 8 and wire in (1, 2):
            doubles.append((wire, value))
        elif number == 7 and wire == 2:
            dims = (dims or []) + _blob_shape_dims(value)  # type: ignore[arg-type]
    data = repeated_floats(floats, "<f4") if floats else repeated_floats(doubles, "<f8")
    data = data.astype(np.float32)
    if dims is not None:
        return BlobProto(tuple(dims), data)
    return BlobProto(tuple(legacy[i] for i in _LEGACY_DIMS), data, legacy=True)


def encode_blob_proto(blob: BlobProto) -> bytes:
    """Serialize ``blob``: legacy dims (a 4-D shape) first when ``legacy``, then ``data``
    packed, then a ``BlobShape`` with packed dims when not ``legacy``."""
    out = bytearray()
    if blob.legacy:
        for number, dim in zip(_LEGACY_DIMS, blob.shape, strict=True):
            out += field_key(number, 0) + encode_varint(int(dim))
    out += length_delimited(5, np.ascontiguousarray(blob.data, dtype="<f4").tobytes())
    if not blob.legacy:
        dims = b"".join(encode_varint(int(d)) for d in blob.shape)
        out += length_delimited(7, length_delimited(1, dims) if dims else b"")
    return bytes(out)
