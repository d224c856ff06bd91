"""The in-memory form of one split of a dataset."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Dataset:
    """One split of an image-classification dataset.

    ``images`` is N×C×H×W, uint8 (0..255, memory-mapped where the file format allows) or, for
    sources that store floats (``.npz`` float32, Caffe ``Datum.float_data``), float32.
    Preprocessing (scale, mean, crop, mirror) is applied per batch by
    :class:`engine.data.sampler.BatchSampler`; no float32 copy of a uint8 set is ever made.

    ``labels`` holds N integer class indices in ``[0, classes)``, or (Caffe ``HDF5Data``) an
    N×k×… float32 array of per-image targets passed through unchanged (``classes`` 0; see
    :attr:`label_shape`).
    ``synthetic`` is True for the procedurally generated sets, and then ``description`` says so.
    ``prescaled``: the images are floats to be used exactly as given (``.npz`` float32): the
    sampler applies no scale and no mean to them (crop and mirror still apply).
    ``notes``: facts a user should see (e.g. a partial test set was used).
    ``segments``: rows per source file, in order, for sources read as several files that
    Caffe shuffles file by file (HDF5Data); empty otherwise.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    classes: int
    synthetic: bool = False
    description: str = ""
    split: str = "train"
    path: str = ""
    label_names: tuple[str, ...] = ()
    prescaled: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)
    segments: tuple[int, ...] = ()

    @property
    def shape(self) -> tuple[int, int, int]:
        """The (C, H, W) shape of one image."""
        _, c, h, w = self.images.shape
        return int(c), int(h), int(w)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def label_shape(self) -> tuple[int, ...]:
        """The per-image shape of the labels: ``()`` for class indices, ``(k, …)`` for float
        targets."""
        return tuple(int(d) for d in self.labels.shape[1:])

    @property
    def has_targets(self) -> bool:
        """Whether the labels are float targets (no classes) rather than class indices."""
        return bool(self.label_shape)

    def label_histogram(self) -> np.ndarray:
        """Images per class: ``hist[k] = #{i : labels[i] == k}`` for k < classes (empty for
        float targets)."""
        if self.has_targets:
            return np.zeros(0, dtype=np.int64)
        return np.bincount(np.asarray(self.labels, dtype=np.int64), minlength=self.classes)
