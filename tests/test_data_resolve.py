"""resolve_source and probe_shape: names, Caffe example paths, darknet .data files."""

from __future__ import annotations

import numpy as np
import pytest

from dnupdate.engine.data import DataError, open_dataset, probe_shape, resolve_source
from dnupdate.engine.data.lmdb_source import write_lmdb
from tests.data_fixtures import random_images, write_mnist_split


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("mnist", "mnist"),
        ("CIFAR-10", "cifar10"),
        ("fashion_mnist", "fashion-mnist"),
        ("cifar100-coarse", "cifar100-coarse"),
        ("examples/mnist/mnist_train_lmdb", "mnist"),
        ("examples/mnist/mnist_test_lmdb", "mnist"),
        ("examples/cifar10/cifar10_train_lmdb", "cifar10"),
        ("examples/cifar10/cifar10_test_lmdb", "cifar10"),
        ("data/cifar100/train_lmdb", "cifar100"),
        ("/no/such/fashion-mnist_train_leveldb", "fashion-mnist"),
    ],
)
def test_names_and_missing_caffe_example_paths(source, expected):
    assert resolve_source(source, "train", None) == expected


def test_existing_lmdb_wins_over_name_matching(tmp_path):
    path = tmp_path / "mnist_train_lmdb"
    write_lmdb(path, random_images(3, (1, 4, 4)), np.array([0, 1, 2]))
    assert resolve_source(str(path)) == str(path)
    assert probe_shape(str(path)) == (1, 4, 4)


def test_relative_source_found_under_data_dir(tmp_path):
    write_lmdb(tmp_path / "my_lmdb", random_images(2, (3, 2, 2)), np.array([0, 1]))
    assert resolve_source("my_lmdb", "train", str(tmp_path)) == str(tmp_path / "my_lmdb")


def test_npz_forms(tmp_path):
    np.savez(tmp_path / "d.npz", x=random_images(2, (5, 6, 3)), y=np.array([0, 1]))
    assert resolve_source(str(tmp_path / "d.npz")) == f"npz:{tmp_path / 'd.npz'}"
    assert resolve_source(f"npz:{tmp_path / 'd.npz'}") == f"npz:{tmp_path / 'd.npz'}"
    assert probe_shape(str(tmp_path / "d.npz")) == (3, 5, 6)
    with pytest.raises(DataError, match=r"no such \.npz file"):
        resolve_source(str(tmp_path / "missing.npz"))


def test_darknet_data_file_maps_to_its_dataset(tmp_path):
    (tmp_path / "cifar.data").write_text(
        "classes=10\ntrain  = data/cifar/train.list\nvalid  = data/cifar/test.list\n"
        "labels = data/cifar/labels.txt\nbackup = backup/\ntop=2\n"
    )
    assert resolve_source(str(tmp_path / "cifar.data")) == "cifar10"
    assert probe_shape(str(tmp_path / "cifar.data")) == (3, 32, 32)


def test_darknet_data_file_naming_a_dataset(tmp_path):
    (tmp_path / "x.data").write_text("# comment\nclasses=10\ntrain=synthetic-digits\n")
    assert resolve_source(str(tmp_path / "x.data")) == "synthetic-digits"


def test_darknet_data_file_naming_nothing(tmp_path):
    (tmp_path / "x.data").write_text("classes=3\ntrain=/data/mine/train.list\n")
    with pytest.raises(DataError, match="names no dataset") as info:
        resolve_source(str(tmp_path / "x.data"))
    assert info.value.path == str(tmp_path / "x.data")


def test_no_source_and_unknown_source():
    with pytest.raises(DataError, match="no data source given"):
        resolve_source(None)
    with pytest.raises(DataError, match="unknown data source") as info:
        resolve_source("imagenet-22k")
    assert "synthetic-digits" in str(info.value)


def test_existing_image_list_is_refused(tmp_path):
    (tmp_path / "train.list").write_text("a.png\n")
    with pytest.raises(DataError, match="image lists are not supported"):
        resolve_source(str(tmp_path / "train.list"))


def test_probe_shape_of_names_and_unknowns():
    assert probe_shape("mnist") == (1, 28, 28)
    assert probe_shape("examples/cifar10/cifar10_train_lmdb") == (3, 32, 32)
    assert probe_shape("synthetic-shapes") == (3, 32, 32)
    assert probe_shape("what-is-this") is None


def test_dataset_folder_is_recognised(tmp_path):
    write_mnist_split(tmp_path, "t10k", 4)
    assert probe_shape(str(tmp_path)) == (1, 28, 28)
    dataset = open_dataset(str(tmp_path), "test")
    assert dataset.name == "mnist" and len(dataset) == 4
