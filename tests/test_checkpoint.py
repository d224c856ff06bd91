"""darknet ``.weights`` and ``.npz`` parameter files (engine.formats.weights), on files built by
hand from the format description (spec darknet.md 10)."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from dnupdate.engine.formats.weights import (
    WeightsFileError,
    WeightsHeader,
    atomic_write,
    darknet_layout,
    load_npz_weights,
    read_darknet_weights,
    save_npz_weights,
    write_darknet_weights,
)
from dnupdate.engine.model.initialisation import allocate_blobs
from dnupdate.engine.spec import (
    BatchNormSpec,
    ConvSpec,
    InputSpec,
    NetSpec,
    PoolSpec,
)
from tests.darknet_fixtures import dk_connected, dk_conv

# input 2×3×3 → conv 3 filters 1×1 (BN) → maxpool → connected 4 (BN) → [batchnorm]
NET = NetSpec(
    "tiny",
    InputSpec(2, 3, 3),
    (
        dk_conv("0", 3, 1, bn=True),
        PoolSpec(
            name="1", method="max", kernel_h=3, kernel_w=3, size_rule="darknet", pad_h=2, pad_w=2
        ),
        dk_connected("2", 4, bn=True),
        BatchNormSpec(name="3", style="darknet"),
    ),
)


def numbered_blobs(net: NetSpec) -> dict[str, np.ndarray]:
    """Every float distinct: blob k holds k*1000 + 0, 1, 2, ..."""
    blobs = allocate_blobs(net)
    for k, array in enumerate(blobs.values()):
        array[...] = (k * 1000 + np.arange(array.size)).reshape(array.shape)
    return blobs


def by_hand(blobs, seen=99, header=(0, 2, 0), seen_format="<Q", transpose_fc=False) -> bytes:
    """The file as spec section 10 describes it, written out explicitly."""
    b = blobs
    fc_weights = b["2/1"].T if transpose_fc else b["2/1"]
    parts = [
        struct.pack("<iii", *header) + struct.pack(seen_format, seen),
        # conv: biases, scales, rolling_mean, rolling_variance, weights
        b["0/0"], b["0/1"], b["0/2"], b["0/3"], b["0/4"],
        # connected: biases, weights, then scales, rolling_mean, rolling_variance
        b["2/0"], fc_weights, b["2/2"], b["2/3"], b["2/4"],
        # batchnorm: scales, rolling_mean, rolling_variance
        b["3/0"], b["3/1"], b["3/2"],
    ]  # fmt: skip
    return b"".join(p if isinstance(p, bytes) else p.astype("<f4").tobytes() for p in parts)


def test_written_file_is_darknets_layout(tmp_path):
    blobs = numbered_blobs(NET)
    path = tmp_path / "a.weights"
    write_darknet_weights(path, NET, blobs, seen=99)
    assert path.read_bytes() == by_hand(blobs)


def test_arrays_may_come_as_pairs_from_a_callable(tmp_path):
    blobs = numbered_blobs(NET)
    write_darknet_weights(tmp_path / "a.weights", NET, lambda: iter(blobs.items()), seen=99)
    assert (tmp_path / "a.weights").read_bytes() == by_hand(blobs)
    save_npz_weights(tmp_path / "a.npz", NET, list(blobs.items()))
    assert load_npz_weights(tmp_path / "a.npz", NET).keys() == blobs.keys()


def test_read_returns_header_and_blobs(tmp_path):
    blobs = numbered_blobs(NET)
    path = tmp_path / "a.weights"
    path.write_bytes(by_hand(blobs, seen=2**33 + 1))
    header, arrays = read_darknet_weights(path, NET)
    assert header == WeightsHeader(0, 2, 0, 2**33 + 1)
    assert arrays.keys() == blobs.keys()
    for key, value in blobs.items():
        assert arrays[key].dtype == np.float32 and np.array_equal(arrays[key], value), key


@pytest.mark.parametrize(
    ("major", "minor", "seen_bytes", "transpose"),
    [
        (0, 1, 4, False),
        (0, 2, 8, False),
        (1, 0, 8, False),
        (999, 999, 8, False),
        (1000, 0, 4, False),
        (0, 1000, 4, False),
        (1001, 0, 4, True),
        (0, 1001, 4, True),
    ],
)
def test_header_seen_width_and_transpose_flag(major, minor, seen_bytes, transpose):
    header = WeightsHeader(major, minor, 0, 5)
    assert (header.seen_bytes, header.transpose) == (seen_bytes, transpose)
    assert header.nbytes == 12 + seen_bytes == len(header.to_bytes())


def test_four_byte_seen_and_transposed_connected_weights(tmp_path):
    blobs = numbered_blobs(NET)
    path = tmp_path / "t.weights"
    write_darknet_weights(path, NET, blobs, seen=12, major=0, minor=1001, revision=4)
    assert path.read_bytes() == by_hand(
        blobs, seen=12, header=(0, 1001, 4), seen_format="<i", transpose_fc=True
    )
    header, arrays = read_darknet_weights(path, NET)
    assert (header.seen, header.seen_bytes, header.transpose) == (12, 4, True)
    assert np.array_equal(arrays["2/1"], blobs["2/1"])


def test_negative_four_byte_seen_wraps_like_size_t(tmp_path):
    path = tmp_path / "n.weights"
    path.write_bytes(by_hand(numbered_blobs(NET), seen=-1, header=(0, 1, 0), seen_format="<i"))
    header, _ = read_darknet_weights(path, NET)
    assert header.seen == 2**64 - 1


def test_truncated_file_names_counts_and_layer(tmp_path):
    full = by_hand(numbered_blobs(NET))
    path = tmp_path / "short.weights"
    cut = 20 + 4 * (3 * 4 + 3 * 2) + 4 * 4 + 10  # inside the connected weights
    path.write_bytes(full[:cut])
    with pytest.raises(WeightsFileError) as info:
        read_darknet_weights(path, NET)
    message = str(info.value)
    assert str(path) in message and f"expected {len(full)} bytes" in message
    assert f"found {cut}" in message and "layer 2 (connected) blob 'weights'" in message


@pytest.mark.parametrize("size", [0, 7, 15])
def test_file_shorter_than_the_header(tmp_path, size):
    path = tmp_path / "h.weights"
    path.write_bytes(b"\0" * size)
    with pytest.raises(WeightsFileError, match=f"file has {size} bytes"):
        read_darknet_weights(path, NET)


def test_trailing_bytes_error_or_reported(tmp_path):
    full = by_hand(numbered_blobs(NET))
    path = tmp_path / "long.weights"
    path.write_bytes(full + b"\0" * 8)
    with pytest.raises(WeightsFileError, match=f"found {len(full) + 8} .*8 extra bytes"):
        read_darknet_weights(path, NET)
    header, arrays = read_darknet_weights(path, NET, allow_trailing=True)
    assert header.trailing_bytes == 8 and len(arrays) == 13


def test_missing_file(tmp_path):
    with pytest.raises(WeightsFileError, match=r"nope\.weights"):
        read_darknet_weights(tmp_path / "nope.weights", NET)


def test_dontsave_and_dontload_layers_are_skipped(tmp_path):
    skipping = NetSpec(
        "skip",
        NET.input,
        (dk_conv("0", 3, 1, dontsave=True, dontload=True), dk_connected("1", 2)),
    )
    blobs = numbered_blobs(skipping)
    path = tmp_path / "s.weights"
    write_darknet_weights(path, skipping, blobs, seen=0)
    expected = struct.pack("<iiiQ", 0, 2, 0, 0) + b"".join(
        blobs[k].astype("<f4").tobytes() for k in ("1/0", "1/1")
    )
    assert path.read_bytes() == expected
    _, arrays = read_darknet_weights(path, skipping)
    assert sorted(arrays) == ["1/0", "1/1"]


def test_caffe_ordered_layers_have_no_darknet_layout(tmp_path):
    caffe = NetSpec(
        "c", InputSpec(1, 4, 4), (ConvSpec(name="conv1", filters=2, kernel_h=3, kernel_w=3),)
    )
    with pytest.raises(WeightsFileError, match=r"layer conv1 .* no darknet \.weights layout"):
        write_darknet_weights(tmp_path / "c.weights", caffe, allocate_blobs(caffe), seen=0)
    assert not (tmp_path / "c.weights").exists()


def test_write_checks_keys_shapes_and_seen(tmp_path):
    blobs = numbered_blobs(NET)
    path = tmp_path / "w.weights"
    wrong = dict(blobs, **{"2/1": np.zeros((18, 4), np.float32)})
    with pytest.raises(WeightsFileError, match=r"layer 2 .*'weights'.*\(18, 4\).*\(4, 27\)"):
        write_darknet_weights(path, NET, wrong, seen=0)
    missing = {k: v for k, v in blobs.items() if k != "0/2"}
    with pytest.raises(WeightsFileError, match="rolling_mean"):
        write_darknet_weights(path, NET, missing, seen=0)
    with pytest.raises(WeightsFileError, match="4-byte"):
        write_darknet_weights(path, NET, blobs, seen=2**31, major=0, minor=1)
    assert not path.exists()


def test_layout_lists_blobs_in_file_order():
    layout = darknet_layout(NET)
    names = [(b.layer, b.name) for b in layout]
    assert names[:5] == [
        ("0", "biases"),
        ("0", "scales"),
        ("0", "rolling_mean"),
        ("0", "rolling_variance"),
        ("0", "weights"),
    ]
    assert names[5:7] == [("2", "biases"), ("2", "weights")]
    assert [b.transposable for b in layout].count(True) == 1


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "keep.weights"
    path.write_bytes(b"old")

    def failing(handle):
        handle.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, failing)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["keep.weights"]
    atomic_write(path, lambda handle: handle.write(b"new"))
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["keep.weights"]


# --------------------------------------------------------------------------------------------
# .npz
# --------------------------------------------------------------------------------------------


def test_npz_round_trip(tmp_path):
    blobs = numbered_blobs(NET)
    path = tmp_path / "p.npz"
    save_npz_weights(path, NET, blobs)
    with np.load(path) as raw:
        assert sorted(raw.files) == sorted(blobs)
    loaded = load_npz_weights(path, NET)
    assert all(np.array_equal(loaded[k], blobs[k]) for k in blobs)
    assert os.listdir(tmp_path) == ["p.npz"]


def test_npz_errors(tmp_path):
    blobs = numbered_blobs(NET)
    path = tmp_path / "bad.npz"
    np.savez(path, **{k: v for k, v in blobs.items() if k != "0/4"})
    with pytest.raises(WeightsFileError, match=r"layer 0 blob 'weights'.*0/4"):
        load_npz_weights(path, NET)
    np.savez(path, **dict(blobs, **{"0/4": np.zeros((3, 2), np.float32)}))
    with pytest.raises(WeightsFileError, match=r"\(3, 2\).*\(3, 2, 1, 1\)"):
        load_npz_weights(path, NET)
    np.savez(path, **dict(blobs, extra=np.zeros(1)))
    with pytest.raises(WeightsFileError, match="extra"):
        load_npz_weights(path, NET)
    assert len(load_npz_weights(path, NET, strict=False)) == len(blobs)
    path.write_bytes(b"not a zip")
    with pytest.raises(WeightsFileError, match="cannot read"):
        load_npz_weights(path, NET)
    with pytest.raises(WeightsFileError, match="no array"):
        save_npz_weights(tmp_path / "x.npz", NET, {})
