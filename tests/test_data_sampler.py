"""BatchSampler: order, preprocessing arithmetic, crop/mirror, mean files, resumable state."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dnupdate.engine.data import (
    BatchSampler,
    DataError,
    compute_image_mean,
    load_mean_file,
    mean_for,
)
from dnupdate.engine.data.dataset import Dataset
from dnupdate.engine.data.protobuf import encode_blob
from dnupdate.engine.spec import DataSourceSpec


def make_dataset(count=10, shape=(1, 4, 4), seed=0, dtype=np.uint8) -> Dataset:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, *shape)).astype(dtype)
    return Dataset("toy", images, np.arange(count) % 3, classes=3)


def test_caffe_order_is_sequential_and_wraps_across_epochs():
    dataset = make_dataset(count=5)
    sampler = BatchSampler(dataset, DataSourceSpec(batch_size=3, shuffle=False))
    labels = [sampler.next_indices().tolist() for _ in range(3)]
    assert labels == [[0, 1, 2], [3, 4, 0], [1, 2, 3]]


def test_darknet_order_samples_with_replacement():
    dataset = make_dataset(count=4)
    sampler = BatchSampler(dataset, DataSourceSpec(batch_size=64, shuffle=True), seed=3)
    drawn = np.concatenate([sampler.next_indices() for _ in range(4)])
    assert set(drawn.tolist()) == {0, 1, 2, 3}
    assert len(drawn) == 256  # more draws than images: replacement


def test_caffe_scale_is_float32_multiply():
    dataset = make_dataset()
    sampler = BatchSampler(dataset, DataSourceSpec(batch_size=10, scale=0.00390625))
    images, labels = sampler.next_batch()
    expected = dataset.images.astype(np.float32) * np.float32(0.00390625)
    np.testing.assert_array_equal(images, expected)
    np.testing.assert_array_equal(labels, dataset.labels)


def test_darknet_pixels_are_divided_by_255_in_double():
    values = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    dataset = Dataset("ramp", values, np.zeros(1, dtype=np.int64), classes=1)
    source = DataSourceSpec(batch_size=1, scale=float(np.float32(1 / 255)))
    images, _ = BatchSampler(dataset, source, framework="darknet").next_batch()
    exact = (np.arange(256) / 255.0).astype(np.float32)
    np.testing.assert_array_equal(images.ravel(), exact)
    multiplied = np.arange(256, dtype=np.float32) * np.float32(1 / 255)
    assert (exact != multiplied).any()  # the quirk matters: the two roundings differ


def test_mean_values_per_channel_then_scale():
    dataset = make_dataset(shape=(3, 2, 2))
    source = DataSourceSpec(batch_size=10, mean_values=(10.0, 20.0, 30.5), scale=0.5)
    images, _ = BatchSampler(dataset, source).next_batch()
    mean = np.array([10.0, 20.0, 30.5], dtype=np.float32).reshape(1, 3, 1, 1)
    np.testing.assert_array_equal(
        images, (dataset.images.astype(np.float32) - mean) * np.float32(0.5)
    )


def test_single_mean_value_applies_to_every_channel():
    dataset = make_dataset(shape=(3, 2, 2))
    images, _ = BatchSampler(
        dataset, DataSourceSpec(batch_size=10, mean_values=(7.0,))
    ).next_batch()
    np.testing.assert_array_equal(images, dataset.images.astype(np.float32) - np.float32(7))


def test_wrong_number_of_mean_values():
    with pytest.raises(DataError, match="2 mean values for 3 channels"):
        BatchSampler(make_dataset(shape=(3, 2, 2)), DataSourceSpec(mean_values=(1.0, 2.0)))


def test_mean_file_binaryproto(tmp_path):
    dataset = make_dataset(shape=(3, 4, 4))
    mean = np.random.default_rng(5).uniform(0, 255, size=(1, 3, 4, 4)).astype(np.float32)
    (tmp_path / "mean.binaryproto").write_bytes(encode_blob(mean))
    np.testing.assert_array_equal(load_mean_file(tmp_path / "mean.binaryproto", (3, 4, 4)), mean[0])
    source = DataSourceSpec(batch_size=10, mean_file=str(tmp_path / "mean.binaryproto"))
    images, _ = BatchSampler(dataset, source).next_batch()
    np.testing.assert_array_equal(images, dataset.images.astype(np.float32) - mean)


def test_mean_file_with_blobshape_and_unpacked_floats(tmp_path):
    values = np.arange(4, dtype="<f4")
    shape = bytes([0x0A, 4, 1, 1, 2, 2])  # BlobShape { dim: [1, 1, 2, 2] } packed
    body = bytes([0x3A, len(shape)]) + shape
    body += b"".join(bytes([0x2D]) + v.tobytes() for v in values)  # data = 5, wire type 5
    (tmp_path / "m.binaryproto").write_bytes(body)
    np.testing.assert_array_equal(
        load_mean_file(tmp_path / "m.binaryproto", (1, 2, 2)).ravel(), values
    )


def test_mean_file_of_the_wrong_shape(tmp_path):
    (tmp_path / "m").write_bytes(encode_blob(np.zeros((1, 3, 32, 32), np.float32)))
    with pytest.raises(DataError, match=r"mean blob has shape \(1, 3, 32, 32\)") as info:
        load_mean_file(tmp_path / "m", (1, 28, 28))
    assert info.value.path == str(tmp_path / "m")


def test_missing_mean_file(tmp_path):
    with pytest.raises(DataError, match="cannot read the mean file"):
        load_mean_file(tmp_path / "nope.binaryproto", (1, 2, 2))


def test_test_phase_crop_is_centred_and_mean_is_cropped_alike(tmp_path):
    dataset = make_dataset(count=2, shape=(1, 6, 6))
    mean = np.arange(36, dtype=np.float32).reshape(1, 1, 6, 6)
    (tmp_path / "m").write_bytes(encode_blob(mean))
    source = DataSourceSpec(batch_size=2, crop_size=4, mean_file=str(tmp_path / "m"))
    images, _ = BatchSampler(dataset, source, phase="test").next_batch()
    expected = dataset.images[:, :, 1:5, 1:5].astype(np.float32) - mean[:, :, 1:5, 1:5]
    np.testing.assert_array_equal(images, expected)


def test_train_crop_windows_and_mirror_come_from_the_image():
    dataset = make_dataset(count=1, shape=(2, 5, 5))
    source = DataSourceSpec(batch_size=1, crop_size=3, mirror=True)
    sampler = BatchSampler(dataset, source, seed=11)
    image = dataset.images[0].astype(np.float32)
    windows = {
        (top, left, flip): (image[:, top : top + 3, left : left + 3][:, :, ::-1] if flip else
                            image[:, top : top + 3, left : left + 3])
        for top in range(3) for left in range(3) for flip in (False, True)
    }  # fmt: skip
    seen = set()
    for _ in range(200):
        batch, _ = sampler.next_batch()
        match = [key for key, window in windows.items() if np.array_equal(batch[0], window)]
        assert match, "a batch image is not a (mirrored) crop of the source"
        seen.add(match[0])
    assert len(seen) > 12  # offsets and flips vary


def test_state_resumes_bit_exactly():
    dataset = make_dataset(count=7, shape=(1, 5, 5))
    source = DataSourceSpec(batch_size=3, crop_size=3, mirror=True, shuffle=True)
    first = BatchSampler(dataset, source, seed=42)
    for _ in range(5):
        first.next_batch()
    state = json.loads(json.dumps(first.state_dict()))
    expected = [tuple(a.copy() for a in first.next_batch()) for _ in range(4)]
    resumed = BatchSampler(dataset, source, seed=0)
    resumed.load_state_dict(state)
    for images, labels in expected:
        got_images, got_labels = resumed.next_batch()
        np.testing.assert_array_equal(got_images, images)
        np.testing.assert_array_equal(got_labels, labels)


def test_caffe_position_resumes():
    dataset = make_dataset(count=5)
    sampler = BatchSampler(dataset, DataSourceSpec(batch_size=2))
    sampler.next_batch()
    sampler.next_batch()
    other = BatchSampler(dataset, DataSourceSpec(batch_size=2))
    other.load_state_dict(sampler.state_dict())
    assert other.next_indices().tolist() == [4, 0]


def test_prescaled_float_data_is_copied_as_given():
    x = np.random.default_rng(0).normal(size=(4, 1, 3, 3)).astype(np.float32)
    dataset = Dataset("f", x, np.zeros(4, dtype=np.int64), classes=1, prescaled=True)
    source = DataSourceSpec(batch_size=4, scale=0.5, mean_values=(3.0,))
    images, _ = BatchSampler(dataset, source).next_batch()
    np.testing.assert_array_equal(images, x)


def test_buffers_are_preallocated_and_reused():
    sampler = BatchSampler(make_dataset(), DataSourceSpec(batch_size=4))
    a, _ = sampler.next_batch()
    b, _ = sampler.next_batch()
    assert a is b and a.dtype == np.float32 and sampler.output_shape == (1, 4, 4)


def test_crop_larger_than_image():
    with pytest.raises(DataError, match="crop size 9 exceeds the 4×4 images"):
        BatchSampler(make_dataset(), DataSourceSpec(crop_size=9))


def test_compute_image_mean_matches_caffe_float_arithmetic():
    dataset = make_dataset(count=9, shape=(3, 2, 2))
    mean = compute_image_mean(dataset)
    sums = dataset.images.astype(np.int64).sum(axis=0).astype(np.float32)
    np.testing.assert_array_equal(mean, sums / np.float32(9))
    assert mean.dtype == np.float32


def test_missing_mean_file_falls_back_to_the_training_mean(tmp_path):
    train = make_dataset(count=6, shape=(3, 4, 4))
    source = DataSourceSpec(batch_size=6, mean_file=str(tmp_path / "examples/mean.binaryproto"))
    mean, note = mean_for(source, train)
    assert "does not exist" in note and "compute_image_mean" in note
    images, _ = BatchSampler(train, source, mean=mean).next_batch()
    np.testing.assert_array_equal(images, train.images.astype(np.float32) - mean)
    (tmp_path / "real.binaryproto").write_bytes(encode_blob(np.ones((1, 3, 4, 4), np.float32)))
    kept, no_note = mean_for(DataSourceSpec(mean_file=str(tmp_path / "real.binaryproto")), train)
    assert no_note is None and (kept == 1).all()


def test_missing_mean_file_train_sampler_computes_and_test_sampler_reuses(tmp_path):
    train = make_dataset(count=8, shape=(3, 4, 4), seed=1)
    test = make_dataset(count=4, shape=(3, 4, 4), seed=2)
    source = DataSourceSpec(batch_size=4, mean_file=str(tmp_path / "cifar_mean.binaryproto"))
    with pytest.raises(DataError, match="no such mean file"):
        BatchSampler(test, source, phase="test")
    train_sampler = BatchSampler(train, source, phase="train")
    assert train_sampler.notes and "compute_image_mean" in train_sampler.notes[0]
    test_sampler = BatchSampler(test, source, phase="test")
    images, _ = test_sampler.next_batch()
    expected = test.images.astype(np.float32) - compute_image_mean(train)
    np.testing.assert_array_equal(images, expected)
