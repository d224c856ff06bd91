"""``.caffemodel`` read/write (engine.formats.caffemodel).

Files are built here byte by byte with a tiny independent protobuf writer (``_pb``), so the
decoder is checked against the wire format, not against our own encoder. Round trips check the
encoder; error cases check the messages (file, layer, expected vs found).
"""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from dnupdate.engine.formats.caffemodel import (
    CaffeModelError,
    decode_caffemodel,
    encode_caffemodel,
    read_caffemodel,
    write_caffemodel,
)
from dnupdate.engine.formats.weights import WeightsFileError
from dnupdate.engine.model.initialisation import allocate_blobs, initialise
from dnupdate.engine.spec import (
    BatchNormSpec,
    ConnectedSpec,
    ConvSpec,
    FillerSpec,
    InputSpec,
    NetSpec,
    ScaleSpec,
    SoftmaxLossSpec,
)

NET = NetSpec(
    "tiny",
    InputSpec(1, 4, 4),
    (
        ConvSpec(
            name="conv1", filters=2, kernel_h=3, kernel_w=3, weight_filler=FillerSpec("gaussian")
        ),
        BatchNormSpec(name="bn"),
        ScaleSpec(name="sc", bias_term=True),
        ConnectedSpec(name="ip", outputs=3, weight_filler=FillerSpec("xavier")),
        SoftmaxLossSpec(name="loss"),
    ),
)


# ---- an independent, deliberately plain protobuf writer ------------------------------------
def _varint(value: int) -> bytes:
    out = b""
    while value >= 0x80:
        out += bytes([(value & 0x7F) | 0x80])
        value >>= 7
    return out + bytes([value])


def _pb_bytes(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _pb_int(field: int, value: int) -> bytes:
    return _varint(field << 3 | 0) + _varint(value)


def _pb_float(field: int, value: float) -> bytes:  # unpacked repeated float: wire type 5
    return _varint(field << 3 | 5) + struct.pack("<f", value)


def blob_with_shape(values, dims, *, packed=True) -> bytes:
    shape = _pb_bytes(7, _pb_bytes(1, b"".join(_varint(d) for d in dims)))
    if packed:
        data = _pb_bytes(5, struct.pack(f"<{len(values)}f", *values))
    else:
        data = b"".join(_pb_float(5, v) for v in values)
    return shape + data


def blob_legacy(values, num, channels, height, width) -> bytes:
    head = _pb_int(1, num) + _pb_int(2, channels) + _pb_int(3, height) + _pb_int(4, width)
    return head + _pb_bytes(5, struct.pack(f"<{len(values)}f", *values))


def layer(name: str, kind: str, *blobs: bytes, extra: bytes = b"") -> bytes:
    body = _pb_bytes(1, name.encode()) + _pb_bytes(2, kind.encode()) + extra
    return _pb_bytes(100, body + b"".join(_pb_bytes(7, b) for b in blobs))


def v1_layer(name: str, enum_type: int, *blobs: bytes) -> bytes:
    body = _pb_bytes(4, name.encode()) + _pb_int(5, enum_type)
    return _pb_bytes(2, body + b"".join(_pb_bytes(6, b) for b in blobs))


def ip_net() -> NetSpec:
    return NetSpec(
        "ipnet",
        InputSpec(2, 1, 1),
        (ConnectedSpec(name="ip", outputs=3), SoftmaxLossSpec(name="l")),
    )


W = [0.5, -1.0, 2.0, 0.25, -0.125, 3.0]
B = [0.1, 0.2, 0.3]


# ---- decoding hand-built files ---------------------------------------------------------------
def test_reads_a_hand_built_file_with_shape_and_legacy_blobs(tmp_path):
    data = _pb_bytes(1, b"ipnet") + layer(
        "ip",
        "InnerProduct",
        blob_with_shape(W, (3, 2)),
        blob_legacy(B, 1, 1, 1, 3),  # Caffe's legacy 4-D form of a (3,) bias
        extra=_pb_bytes(3, b"data") + _pb_bytes(4, b"ip") + _pb_int(10, 0),  # bottom/top/phase
    )
    path = tmp_path / "ip.caffemodel"
    path.write_bytes(data)
    arrays = read_caffemodel(path, ip_net())
    np.testing.assert_array_equal(arrays["ip/0"], np.array(W, np.float32).reshape(3, 2))
    np.testing.assert_array_equal(arrays["ip/1"], np.array(B, np.float32))
    model = decode_caffemodel(data)
    assert model.name == "ipnet"
    assert [(ly.name, ly.type) for ly in model.layers] == [("ip", "InnerProduct")]
    assert model.layers[0].blobs[1].legacy


def test_unpacked_floats_unknown_fields_and_extra_layers(tmp_path):
    unknown = _varint(999 << 3 | 1) + b"\0" * 8 + _varint(998 << 3 | 5) + b"\0" * 4
    data = (
        layer("data", "Data")
        + unknown
        + layer(
            "ip",
            "InnerProduct",
            blob_with_shape(W, (3, 2), packed=False),
            blob_with_shape(B, (3,), packed=False),
        )
        + layer("not_in_net", "InnerProduct", blob_with_shape([1.0], (1, 1)))
    )
    path = tmp_path / "m.caffemodel"
    path.write_bytes(data)
    arrays = read_caffemodel(path, ip_net())
    assert sorted(arrays) == ["ip/0", "ip/1"]
    np.testing.assert_array_equal(arrays["ip/1"], np.array(B, np.float32))


def test_reads_legacy_v1_layers(tmp_path):
    data = v1_layer("ip", 14, blob_legacy(W, 1, 1, 3, 2), blob_legacy(B, 1, 1, 1, 3))
    path = tmp_path / "v1.caffemodel"
    path.write_bytes(data)
    arrays = read_caffemodel(path, ip_net())
    np.testing.assert_array_equal(arrays["ip/0"].ravel(), np.array(W, np.float32))
    assert decode_caffemodel(data).layers[0].type == "InnerProduct"


def test_double_data_is_read_when_float_data_is_absent(tmp_path):
    doubles = _pb_bytes(8, struct.pack("<6d", *W))
    blob = _pb_bytes(7, _pb_bytes(1, _varint(3) + _varint(2))) + doubles
    data = layer("ip", "InnerProduct", blob, blob_with_shape(B, (3,)))
    path = tmp_path / "d.caffemodel"
    path.write_bytes(data)
    np.testing.assert_array_equal(
        read_caffemodel(path, ip_net())["ip/0"], np.array(W, np.float32).reshape(3, 2)
    )


# ---- errors -----------------------------------------------------------------------------------
def _write(tmp_path, data: bytes):
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(data)
    return path


def test_shape_mismatch_names_file_layer_and_both_shapes(tmp_path):
    path = _write(
        tmp_path, layer("ip", "InnerProduct", blob_with_shape(W, (2, 3)), blob_with_shape(B, (3,)))
    )
    with pytest.raises(CaffeModelError) as info:
        read_caffemodel(path, ip_net())
    message = str(info.value)
    assert str(path) in message and "layer ip" in message
    assert "[2, 3]" in message and "[3, 2]" in message


def test_wrong_blob_count_and_short_data(tmp_path):
    path = _write(tmp_path, layer("ip", "InnerProduct", blob_with_shape(W, (3, 2))))
    with pytest.raises(CaffeModelError, match="1 blobs, the network expects 2"):
        read_caffemodel(path, ip_net())
    path = _write(
        tmp_path,
        layer("ip", "InnerProduct", blob_with_shape(W[:5], (3, 2)), blob_with_shape(B, (3,))),
    )
    with pytest.raises(CaffeModelError, match="5 values"):
        read_caffemodel(path, ip_net())


def test_truncated_file_is_a_clear_error(tmp_path):
    full = layer("ip", "InnerProduct", blob_with_shape(W, (3, 2)), blob_with_shape(B, (3,)))
    for cut in (1, 7, len(full) // 2, len(full) - 3):
        path = _write(tmp_path, full[:cut])
        with pytest.raises(CaffeModelError) as info:
            read_caffemodel(path, ip_net())
        assert str(path) in str(info.value)
        assert isinstance(info.value, WeightsFileError)


def test_no_shared_layer_and_missing_file(tmp_path):
    path = _write(tmp_path, layer("fc9", "InnerProduct", blob_with_shape([1.0], (1, 1))))
    with pytest.raises(CaffeModelError, match="no parameter layer"):
        read_caffemodel(path, ip_net())
    with pytest.raises(CaffeModelError, match="No such file"):
        read_caffemodel(tmp_path / "absent.caffemodel", ip_net())


# ---- round trips ------------------------------------------------------------------------------
def test_round_trip_every_blob_kind(tmp_path):
    arrays = allocate_blobs(NET)
    initialise(NET, arrays, seed=5)
    arrays["bn/0"][:] = [0.5, -0.5]  # make the statistics non-trivial
    arrays["bn/2"][:] = 3.0
    path = tmp_path / "tiny.caffemodel"
    write_caffemodel(path, NET, arrays)
    back = read_caffemodel(path, NET)
    assert back.keys() == arrays.keys()
    for key in arrays:
        assert back[key].tobytes() == arrays[key].tobytes(), key
    types = [(ly.name, ly.type) for ly in decode_caffemodel(path.read_bytes()).layers]
    assert types == [
        ("conv1", "Convolution"),
        ("bn", "BatchNorm"),
        ("sc", "Scale"),
        ("ip", "InnerProduct"),
    ]
    assert [p for p in os.listdir(tmp_path) if p != "tiny.caffemodel"] == []  # no temp left


def test_encoder_output_is_what_the_plain_writer_produces():
    model = decode_caffemodel(
        _pb_bytes(1, b"ipnet")
        + layer("ip", "InnerProduct", blob_with_shape(W, (3, 2)), blob_with_shape(B, (3,)))
    )
    again = decode_caffemodel(encode_caffemodel(model))
    assert again.name == "ipnet"
    for a, b in zip(model.layers[0].blobs, again.layers[0].blobs, strict=True):
        assert a.shape == b.shape and a.data.tobytes() == b.data.tobytes()


def test_write_rejects_a_wrong_shape_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "keep.caffemodel"
    path.write_bytes(b"old")
    arrays = allocate_blobs(NET)
    arrays["ip/0"] = np.zeros((8, 3), np.float32)
    with pytest.raises(CaffeModelError, match="layer ip blob 0"):
        write_caffemodel(path, NET, arrays)
    assert path.read_bytes() == b"old"
