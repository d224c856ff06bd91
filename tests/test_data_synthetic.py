"""The built-in synthetic sets: deterministic, labelled synthetic, learnable."""

from __future__ import annotations

import numpy as np
import pytest

from dnupdate.engine.data import open_dataset


@pytest.mark.parametrize(
    ("name", "shape"), [("synthetic-digits", (1, 28, 28)), ("synthetic-shapes", (3, 32, 32))]
)
def test_shape_dtype_labels_and_synthetic_flag(name, shape):
    dataset = open_dataset(name, "train", size=1500, seed=1)
    assert dataset.shape == shape and dataset.images.dtype == np.uint8
    assert dataset.synthetic and "SYNTHETIC" in dataset.description
    assert any("SYNTHETIC" in note for note in dataset.notes)
    histogram = dataset.label_histogram()
    assert histogram.sum() == 1500 and histogram.min() > 100  # every class present
    assert dataset.images.std() > 20  # not blank


@pytest.mark.parametrize("name", ["synthetic-digits", "synthetic-shapes"])
def test_deterministic_and_independent_of_size(name):
    small = open_dataset(name, "train", size=300, seed=7)
    large = open_dataset(name, "train", size=2100, seed=7)
    np.testing.assert_array_equal(small.images, large.images[:300])
    np.testing.assert_array_equal(small.labels, large.labels[:300])
    other_seed = open_dataset(name, "train", size=300, seed=8)
    assert not np.array_equal(small.images, other_seed.images)
    test = open_dataset(name, "test", size=300, seed=7)
    assert not np.array_equal(small.images, test.images)


def test_default_sizes():
    assert len(open_dataset("synthetic-digits", "test")) == 10000


def test_digits_are_linearly_learnable():
    train = open_dataset("synthetic-digits", "train", size=2000, seed=3)
    test = open_dataset("synthetic-digits", "test", size=500, seed=3)

    def design(d):
        x = d.images.reshape(len(d), -1) / 255.0
        return np.hstack([x, np.ones((len(x), 1))])

    x = design(train)
    weights = np.linalg.solve(x.T @ x + np.eye(x.shape[1]), x.T @ np.eye(10)[train.labels])
    accuracy = (np.argmax(design(test) @ weights, axis=1) == test.labels).mean()
    assert accuracy > 0.6  # chance is 0.1


def test_shapes_are_learnable_from_translation_invariant_features():
    train = open_dataset("synthetic-shapes", "train", size=2000, seed=3)
    test = open_dataset("synthetic-shapes", "test", size=500, seed=3)

    def design(d):
        gray = d.images.astype(np.float32).mean(axis=1)
        gray -= gray.mean(axis=(1, 2), keepdims=True)
        spectrum = np.abs(np.fft.rfft2(gray)).reshape(len(gray), -1)
        spectrum /= np.linalg.norm(spectrum, axis=1, keepdims=True) + 1e-6
        return np.hstack([spectrum, np.ones((len(spectrum), 1))])

    x = design(train)
    weights = np.linalg.solve(x.T @ x + 0.1 * np.eye(x.shape[1]), x.T @ np.eye(10)[train.labels])
    accuracy = (np.argmax(design(test) @ weights, axis=1) == test.labels).mean()
    assert accuracy > 0.4  # chance is 0.1
