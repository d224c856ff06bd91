"""Readers: IDX, CIFAR (binary and pickle), npz, LMDB — good files and corrupt ones."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import pickle

import numpy as np
import pytest

from dnupdate.engine.data import DataError, DatasetNotFound, open_dataset
from dnupdate.engine.data.cifar import read_cifar_binary, read_cifar_pickle
from dnupdate.engine.data.idx import read_idx_pair, write_idx
from dnupdate.engine.data.lmdb_source import read_lmdb, write_lmdb
from dnupdate.engine.data.npz import read_npz
from dnupdate.engine.data.protobuf import decode_datum, encode_datum
from tests.data_fixtures import random_images, write_cifar10_folder, write_mnist_split

# ---------------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [True, False])
def test_idx_pair_round_trip(tmp_path, gz):
    images, labels = write_mnist_split(tmp_path, "train", 12, gz=gz)
    suffix = ".gz" if gz else ""
    got_images, got_labels = read_idx_pair(
        tmp_path / f"train-images-idx3-ubyte{suffix}",
        tmp_path / f"train-labels-idx1-ubyte{suffix}",
        classes=10,
    )
    assert got_images.shape == (12, 1, 28, 28)
    np.testing.assert_array_equal(got_images[:, 0], images)
    np.testing.assert_array_equal(got_labels, labels)
    if not gz:  # raw IDX is memory-mapped
        assert isinstance(got_images.base, np.memmap) or isinstance(got_images, np.memmap)


def test_idx_bad_magic_names_file(tmp_path):
    write_mnist_split(tmp_path, "train", 3, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    data = bytearray(path.read_bytes())
    data[2:4] = b"\x08\x01"  # a label-file magic in an image file
    path.write_bytes(bytes(data))
    with pytest.raises(DataError) as info:
        read_idx_pair(path, tmp_path / "train-labels-idx1-ubyte", 10)
    assert str(path) in str(info.value)
    assert "bad magic" in str(info.value) and "0x00000801" in str(info.value)


def test_idx_truncated(tmp_path):
    write_mnist_split(tmp_path, "train", 5, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated") as info:
        read_idx_pair(path, tmp_path / "train-labels-idx1-ubyte", 10)
    assert info.value.path == str(path)


def test_idx_truncated_gzip_stream(tmp_path):
    write_mnist_split(tmp_path, "train", 50, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="truncated gzip") as info:
        read_idx_pair(path, tmp_path / "train-labels-idx1-ubyte.gz", 10)
    assert info.value.path == str(path)


def test_idx_count_mismatch(tmp_path):
    write_mnist_split(tmp_path, "train", 6, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5, dtype=np.uint8))
    with pytest.raises(DataError, match="count mismatch: 5 labels") as info:
        read_idx_pair(
            tmp_path / "train-images-idx3-ubyte", tmp_path / "train-labels-idx1-ubyte", 10
        )
    assert "train-labels-idx1-ubyte" in info.value.path


def test_idx_header_count_larger_than_data(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3]) + (9).to_bytes(4, "big") + (2).to_bytes(4, "big") * 2)
    with pytest.raises(DataError, match=r"header says 9×2×2 \(36 bytes"):
        from dnupdate.engine.data.idx import read_idx_images

        read_idx_images(path)


@pytest.mark.parametrize(
    ("data_bytes", "message"),
    [(35, r"truncated: header says 9×2×2 \(36 bytes of data\) but only 35"), (37, "but 37 bytes")],
)
def test_gzip_idx_data_count_checked(tmp_path, data_bytes, message):
    """A gzipped file decompressed into the preallocated array still reports short or long
    data with the header's shape and the byte counts actually present."""
    path = tmp_path / "x-idx3-ubyte.gz"
    head = bytes([0, 0, 8, 3]) + (9).to_bytes(4, "big") + (2).to_bytes(4, "big") * 2
    path.write_bytes(gzip.compress(head + bytes(range(data_bytes))))
    from dnupdate.engine.data.idx import read_idx_images

    with pytest.raises(DataError, match=message):
        read_idx_images(path)


def test_gzip_idx_decompressed_into_writable_array(tmp_path):
    images = random_images(7, (5, 4))
    write_idx(tmp_path / "x-idx3-ubyte.gz", images)
    from dnupdate.engine.data.idx import read_idx_images

    got = read_idx_images(tmp_path / "x-idx3-ubyte.gz")
    assert got.shape == (7, 1, 5, 4) and got.dtype == np.uint8 and got.flags.writeable
    assert np.array_equal(got[:, 0], images)


def test_large_gzip_idx_is_memory_mapped_from_an_unpacked_copy(tmp_path, monkeypatch):
    """A gzipped IDX file over the size threshold is unpacked once into the data cache and
    memory-mapped (read-only) from there: same values, and a second read reuses the copy."""
    from dnupdate.engine.data import idx
    from dnupdate.engine.data.idx import read_idx_images

    monkeypatch.setenv("DNUPDATE_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(idx, "UNPACK_MIN_BYTES", 0)
    images = random_images(9, (6, 5))
    source = tmp_path / "x-idx3-ubyte.gz"
    write_idx(source, images)
    got = read_idx_images(source)
    assert isinstance(got.base, np.memmap) or isinstance(got, np.memmap)
    assert got.shape == (9, 1, 6, 5) and not got.flags.writeable
    assert np.array_equal(got[:, 0], images)
    copy = idx.unpacked_path(source)
    assert copy.read_bytes() == gzip.decompress(source.read_bytes())
    stamp = copy.stat().st_mtime_ns
    assert np.array_equal(read_idx_images(source)[:, 0], images)
    assert copy.stat().st_mtime_ns == stamp  # reused, not unpacked again
    assert [p.name for p in copy.parent.iterdir()] == [copy.name]  # no temporary left


@pytest.mark.parametrize("data_bytes", [35, 37])
def test_malformed_large_gzip_idx_keeps_its_message_and_leaves_no_copy(
    tmp_path, monkeypatch, data_bytes
):
    from dnupdate.engine.data import idx
    from dnupdate.engine.data.idx import read_idx_images

    monkeypatch.setenv("DNUPDATE_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(idx, "UNPACK_MIN_BYTES", 0)
    path = tmp_path / "x-idx3-ubyte.gz"
    head = bytes([0, 0, 8, 3]) + (9).to_bytes(4, "big") + (2).to_bytes(4, "big") * 2
    path.write_bytes(gzip.compress(head + bytes(range(data_bytes))))
    with pytest.raises(DataError, match="header says 9×2×2"):
        read_idx_images(path)
    assert not idx.unpacked_path(path).exists()
    assert list((tmp_path / "cache" / "unpacked").iterdir()) == []


def test_gzip_idx_read_into_memory_where_the_cache_cannot_be_written(tmp_path, monkeypatch):
    from dnupdate.engine.data import idx
    from dnupdate.engine.data.idx import read_idx_images

    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("DNUPDATE_DATA_DIR", str(blocker))
    monkeypatch.setattr(idx, "UNPACK_MIN_BYTES", 0)
    images = random_images(4, (3, 3))
    write_idx(tmp_path / "x-idx3-ubyte.gz", images)
    got = read_idx_images(tmp_path / "x-idx3-ubyte.gz")
    assert got.flags.writeable and np.array_equal(got[:, 0], images)


def test_idx_label_out_of_range(tmp_path):
    write_mnist_split(tmp_path, "train", 4, gz=True)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([1, 2, 12, 3], dtype=np.uint8))
    with pytest.raises(DataError, match=r"item 2 has label 12, expected 0\.\.9"):
        read_idx_pair(
            tmp_path / "train-images-idx3-ubyte.gz", tmp_path / "train-labels-idx1-ubyte.gz", 10
        )


def test_gzip_written_idx_matches_raw_bytes(tmp_path):
    images = random_images(3, (28, 28))
    write_idx(tmp_path / "a.gz", images)
    raw = gzip.decompress((tmp_path / "a.gz").read_bytes())
    assert raw[:4] == b"\x00\x00\x08\x03"
    assert int.from_bytes(raw[4:8], "big") == 3
    assert raw[16:] == images.tobytes()


# ---------------------------------------------------------------------------------- CIFAR


def test_cifar10_binary_folder(tmp_path):
    written = write_cifar10_folder(tmp_path, per_batch=4)
    train = open_dataset(str(tmp_path), "train")
    assert train.name == "cifar10" and len(train) == 20 and train.shape == (3, 32, 32)
    expected = np.concatenate([images for images, _ in written[:5]])
    np.testing.assert_array_equal(train.images, expected)
    np.testing.assert_array_equal(train.labels, np.concatenate([lab for _, lab in written[:5]]))
    test = open_dataset("cifar10", "test", data_dir=str(tmp_path))
    assert len(test) == 4 and test.notes == ()
    np.testing.assert_array_equal(test.images, written[5][0])


def test_cifar10_plane_order(tmp_path):
    record = bytes([7]) + bytes([1] * 1024 + [2] * 1024 + [3] * 1024)
    (tmp_path / "one.bin").write_bytes(record)
    images, labels = read_cifar_binary(
        [tmp_path / "one.bin"], label_bytes=1, label_index=0, classes=10
    )
    assert labels.tolist() == [7]
    assert [int(images[0, c].mean()) for c in range(3)] == [1, 2, 3]


def test_cifar10_partial_test_batch_is_used_and_said(tmp_path):
    write_cifar10_folder(tmp_path, per_batch=3, test="test_batch_first1000.bin")
    test = open_dataset("cifar10", "test", data_dir=str(tmp_path))
    assert len(test) == 3
    assert any("test_batch_first1000.bin" in note and "absent" in note for note in test.notes)


def test_cifar_truncated_names_file_and_sizes(tmp_path):
    write_cifar10_folder(tmp_path, per_batch=3)
    path = tmp_path / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError) as info:
        open_dataset("cifar10", "train", data_dir=str(tmp_path))
    assert info.value.path == str(path)
    assert "not a multiple of the 3073-byte record" in info.value.problem


def test_cifar_label_out_of_range(tmp_path):
    path = tmp_path / "b.bin"
    path.write_bytes(bytes([3]) + bytes(3072) + bytes([10]) + bytes(3072))
    with pytest.raises(DataError, match="record 1 has label 10"):
        read_cifar_binary([path], label_bytes=1, label_index=0, classes=10)


def test_cifar100_fine_and_coarse(tmp_path):
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    images = random_images(5, (3, 32, 32))
    coarse, fine = np.array([0, 19, 3, 4, 5]), np.array([99, 0, 42, 7, 8])
    from dnupdate.engine.data.cifar import write_cifar_binary

    for name in ("train.bin", "test.bin"):
        write_cifar_binary(folder / name, images, [coarse, fine])
    fine_set = open_dataset("cifar100", "train", data_dir=str(tmp_path))
    coarse_set = open_dataset("cifar100-coarse", "test", data_dir=str(tmp_path))
    assert fine_set.classes == 100 and coarse_set.classes == 20
    np.testing.assert_array_equal(fine_set.labels, fine)
    np.testing.assert_array_equal(coarse_set.labels, coarse)
    np.testing.assert_array_equal(fine_set.images, images)


def test_cifar_pickle_version(tmp_path):
    images = random_images(6, (3, 32, 32))
    batch = {b"data": images.reshape(6, -1), b"labels": [0, 1, 2, 3, 4, 9]}
    (tmp_path / "b").write_bytes(pickle.dumps(batch))
    got, labels = read_cifar_pickle([tmp_path / "b"], label_key="labels", classes=10)
    np.testing.assert_array_equal(got, images)
    assert labels.tolist() == [0, 1, 2, 3, 4, 9]


def test_cifar_pickle_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    (tmp_path / "b").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DataError, match=r"refusing to load builtins\.print"):
        read_cifar_pickle([tmp_path / "b"], label_key="labels", classes=10)


# ---------------------------------------------------------------------------------- npz


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_nhwc_uint8(tmp_path, compressed):
    x = random_images(5, (8, 9, 3))
    y = np.array([0, 1, 2, 1, 0])
    save = np.savez_compressed if compressed else np.savez
    save(tmp_path / "d.npz", x=x, y=y)
    images, labels, classes = read_npz(tmp_path / "d.npz")
    assert images.shape == (5, 3, 8, 9) and classes == 3
    np.testing.assert_array_equal(images, x.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(labels, y)


def test_npz_uncompressed_is_memory_mapped(tmp_path):
    np.savez(tmp_path / "d.npz", x=random_images(4, (1, 5, 5)), y=np.arange(4))
    images, _, _ = read_npz(tmp_path / "d.npz")
    assert isinstance(images, np.memmap)


def test_npz_float32_used_exactly(tmp_path):
    x = np.random.default_rng(1).normal(size=(3, 2, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "f.npz", x=x, y=np.array([0, 1, 1]), classes=np.array(5))
    dataset = open_dataset(f"npz:{tmp_path / 'f.npz'}")
    assert dataset.prescaled and dataset.classes == 5 and dataset.shape == (2, 4, 4)
    np.testing.assert_array_equal(dataset.images, x)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((3, 1, 4, 4), np.uint8), "y": np.zeros(2, np.int64)}, "count mismatch"),
        ({"x": np.zeros((2, 1, 4, 4), np.float64), "y": np.zeros(2, np.int64)}, "float64"),
        ({"x": np.zeros((2, 1, 4, 4), np.uint8)}, "no array 'y'"),
        ({"x": np.zeros((2, 1, 4, 4), np.uint8), "y": np.array([0, -1])}, "label out of range"),
        (
            {"x": np.zeros((2, 1, 4, 4), np.uint8), "y": np.array([0, 4]), "classes": np.array(3)},
            "label out of range",
        ),
    ],
)
def test_npz_errors(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message) as info:
        read_npz(tmp_path / "bad.npz")
    assert info.value.path == str(tmp_path / "bad.npz")


def test_npz_not_a_zip(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match=r"not a valid \.npz"):
        open_dataset(str(tmp_path / "junk.npz"))


# ---------------------------------------------------------------------------------- LMDB


def test_datum_round_trip_and_negative_int32():
    datum = decode_datum(encode_datum(3, 2, 1, 7, data=b"abcdef"))
    assert (datum.channels, datum.height, datum.width, datum.label) == (3, 2, 1, 7)
    assert datum.data == b"abcdef" and not datum.encoded
    assert decode_datum(encode_datum(1, 1, 1, -1, data=b"a")).label == -1


def test_datum_packed_float_data_is_accepted():
    values = np.array([1.5, -2.0], dtype="<f4")
    body = bytes([0x08, 1, 0x10, 1, 0x18, 2, 0x28, 4, 0x32, 8]) + values.tobytes()
    datum = decode_datum(body)
    np.testing.assert_array_equal(datum.float_data, values)


def test_lmdb_round_trip_in_key_order(tmp_path):
    images = random_images(25, (1, 6, 5))
    labels = np.arange(25) % 4
    write_lmdb(tmp_path / "train_lmdb", images, labels)
    dataset = open_dataset(str(tmp_path / "train_lmdb"))
    assert dataset.shape == (1, 6, 5) and dataset.classes == 4
    np.testing.assert_array_equal(dataset.images, images)
    np.testing.assert_array_equal(dataset.labels, labels)


def test_lmdb_float_data(tmp_path):
    images = np.random.default_rng(0).normal(size=(3, 2, 2, 2)).astype(np.float32)
    write_lmdb(tmp_path / "f_lmdb", images, np.array([0, 1, 0]))
    got, _, _ = read_lmdb(tmp_path / "f_lmdb")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, images)


def _put(path, key: bytes, value: bytes):
    import lmdb

    env = lmdb.open(str(path), map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(key, value)
    env.close()


def test_lmdb_encoded_record_is_refused(tmp_path):
    _put(tmp_path / "e", b"00000000", encode_datum(3, 2, 2, 0, data=b"\xff\xd8") + b"\x38\x01")
    with pytest.raises(DataError, match="record 00000000 holds an encoded"):
        read_lmdb(tmp_path / "e")


def test_lmdb_record_with_wrong_byte_count(tmp_path):
    _put(tmp_path / "w", b"00000000", encode_datum(1, 2, 2, 0, data=b"abc"))
    with pytest.raises(DataError, match="has 3 data bytes, expected 4"):
        read_lmdb(tmp_path / "w")


def test_lmdb_garbage_record(tmp_path):
    _put(tmp_path / "g", b"00000001", b"\x22\x7f")
    with pytest.raises(DataError, match="record 00000001: field 4: length 127 runs past"):
        read_lmdb(tmp_path / "g")


def test_lmdb_shape_mismatch_between_records(tmp_path):
    import lmdb

    env = lmdb.open(str(tmp_path / "m"), map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"0", encode_datum(1, 2, 2, 0, data=bytes(4)))
        txn.put(b"1", encode_datum(1, 3, 2, 0, data=bytes(6)))
    env.close()
    with pytest.raises(DataError, match="record 1 is 1×3×2 but the first record is 1×2×2"):
        read_lmdb(tmp_path / "m")


def test_not_an_lmdb_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no dataset found in this folder"):
        open_dataset(str(tmp_path / "empty"))


# ---------------------------------------------------------------------------------- named sets


def test_named_mnist_from_data_dir_and_subfolder(tmp_path):
    write_mnist_split(tmp_path / "mnist", "train", 10)
    write_mnist_split(tmp_path / "mnist", "t10k", 4)
    train = open_dataset("mnist", "train", data_dir=str(tmp_path))
    test = open_dataset("MNIST", "val", data_dir=str(tmp_path / "mnist"))
    assert (len(train), len(test)) == (10, 4)
    assert train.label_histogram().tolist() == [1] * 10


def test_size_keeps_the_first_images(tmp_path):
    images, _ = write_mnist_split(tmp_path, "train", 10)
    subset = open_dataset("mnist", "train", data_dir=str(tmp_path), size=3)
    np.testing.assert_array_equal(subset.images[:, 0], images[:3])


def test_missing_dataset_says_what_to_place_where(tmp_path, monkeypatch):
    monkeypatch.setenv("DNUPDATE_DATA_DIR", str(tmp_path / "cache"))
    with pytest.raises(DatasetNotFound) as info:
        open_dataset("mnist", "test")
    text = str(info.value)
    assert "t10k-images-idx3-ubyte.gz" in text and "t10k-labels-idx1-ubyte.gz" in text
    assert str(tmp_path / "cache" / "mnist") in text
    assert "dnupdate data fetch mnist" in text


def test_missing_cifar_names_the_archive(tmp_path, monkeypatch):
    monkeypatch.setenv("DNUPDATE_DATA_DIR", str(tmp_path))
    with pytest.raises(DatasetNotFound, match=r"cifar-10-binary\.tar\.gz") as info:
        open_dataset("cifar10")
    assert "https://www.cs.toronto.edu/~kriz/" in str(info.value)


def test_unknown_split(tmp_path):
    with pytest.raises(DataError, match="unknown split 'dev'"):
        open_dataset("synthetic-digits", "dev")


def test_fashion_files_are_not_taken_for_mnist(tmp_path, monkeypatch):
    from dnupdate.engine.data import catalog as catalog_module

    write_mnist_split(tmp_path, "t10k", 3)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    fashion = catalog_module.CATALOG["fashion-mnist"]
    digest = hashlib.md5(labels.read_bytes()).hexdigest()
    patched = {**fashion.checksums, labels.name: (("md5", digest),)}
    monkeypatch.setitem(
        catalog_module.CATALOG, "fashion-mnist", dataclasses.replace(fashion, checksums=patched)
    )
    with pytest.raises(DataError, match="these are fashion-mnist files, not mnist"):
        open_dataset("mnist", "test", data_dir=str(tmp_path))
    assert len(open_dataset("fashion-mnist", "test", data_dir=str(tmp_path))) == 3


def test_labels_are_int64_for_every_named_source(tmp_path):
    write_mnist_split(tmp_path, "train", 3)
    write_cifar10_folder(tmp_path / "c", per_batch=2)
    assert open_dataset("mnist", data_dir=str(tmp_path)).labels.dtype == np.int64
    assert open_dataset("cifar10", "test", data_dir=str(tmp_path / "c")).labels.dtype == np.int64
    assert open_dataset("synthetic-digits", size=5).labels.dtype == np.int64


def test_leveldb_folder_is_named_as_unsupported(tmp_path):
    folder = tmp_path / "mnist_train_leveldb"
    folder.mkdir()
    (folder / "CURRENT").write_text("MANIFEST-000001\n")
    (folder / "000005.ldb").write_bytes(b"\0")
    with pytest.raises(DataError, match="LevelDB database, which is not supported") as info:
        open_dataset(str(folder))
    assert info.value.path == str(folder)


# ------------------------------------------------------- damaged files (issue 18, items 7, 8)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_header_claiming_billions_of_images_is_refused_before_allocating(tmp_path, gz):
    images = tmp_path / ("huge-idx3-ubyte" + (".gz" if gz else ""))
    head = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (2**31 - 1, 28, 28))
    data = head + bytes(784)
    images.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataError, match="2147483647×28×28") as info:
        read_idx_pair(images, tmp_path / "labels", classes=10)
    assert info.value.path == str(images)


def test_idx_dimensions_whose_product_overflows_int64_are_refused(tmp_path):
    head = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (2**32 - 1,) * 3)
    (tmp_path / "big").write_bytes(head + bytes(16))
    with pytest.raises(DataError, match="truncated"):
        read_idx_pair(tmp_path / "big", tmp_path / "labels", classes=10)


def test_non_utf8_cifar_names_file_is_named(tmp_path):
    write_cifar10_folder(tmp_path, per_batch=2)
    (tmp_path / "batches.meta.txt").write_bytes(b"airplane\n\xff\xfeauto\n")
    with pytest.raises(DataError, match=r"not UTF-8 text \(byte 0xff at offset 9\)") as info:
        open_dataset(str(tmp_path), "train")
    assert info.value.path.endswith("batches.meta.txt")


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        (np.array([10, 10]), r"'classes' is int64 with shape \(2,\)"),
        (np.array(10.7), "'classes' is float64"),
        (np.array(-1), "'classes' is -1"),
    ],
)
def test_npz_classes_must_be_one_integer(tmp_path, classes, message):
    x, y = np.zeros((2, 1, 4, 4), np.uint8), np.array([0, 1])
    np.savez(tmp_path / "bad.npz", x=x, y=y, classes=classes)
    with pytest.raises(DataError, match=message):
        read_npz(tmp_path / "bad.npz")


def test_npy_header_shape_overflowing_int64_is_refused(tmp_path):
    import io
    import zipfile

    header = io.BytesIO()
    shape = (2**40, 2**40, 4, 4)  # the product overflows int64
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": shape}
    )
    path = tmp_path / "bad.npz"
    with zipfile.ZipFile(path, "w") as archive:  # valid CRCs: only the shape lies
        archive.writestr("x.npy", header.getvalue() + bytes(32))
        archive.writestr("y.npy", b"")
    with pytest.raises(DataError, match="array 'x' is damaged or truncated"):
        read_npz(path)


def test_npz_member_with_a_bad_crc_is_refused_even_memory_mapped(tmp_path):
    path = tmp_path / "flip.npz"
    x = np.full((2, 1, 200, 200), 7, np.uint8)  # larger than zipfile's first read
    np.savez(path, x=x, y=np.array([0, 1]))
    data = bytearray(path.read_bytes())
    position = data.index(bytes(x.reshape(-1)))  # the stored pixels
    data[position + 70000] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"array 'x' is damaged \(Bad CRC-32"):
        read_npz(path)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 1e30])
def test_non_finite_or_huge_float_pixels_name_the_file_and_first_bad_index(tmp_path, value):
    x = np.zeros((5, 1, 4, 4), np.float32)
    x[3, 0, 2, 1] = value
    x[4, 0, 0, 0] = value
    np.savez(tmp_path / "px.npz", x=x, y=np.zeros(5, np.int64))
    with pytest.raises(DataError, match=r"bad pixel: item 3 pixel \(0, 2, 1\)") as info:
        read_npz(tmp_path / "px.npz")
    assert info.value.path == str(tmp_path / "px.npz")


def test_lmdb_float_records_are_checked_for_bad_pixels(tmp_path):
    images = np.zeros((3, 1, 2, 2), np.float32)
    images[1, 0, 1, 1] = np.nan
    write_lmdb(tmp_path / "db", images, np.array([0, 1, 0]))
    with pytest.raises(DataError, match=r"bad pixel: record 1 pixel \(0, 1, 1\) is nan"):
        read_lmdb(tmp_path / "db")
