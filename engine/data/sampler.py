"""Preprocessed float32 batches from a uint8 dataset, with a resumable state.

Caffe (``data_transformer.cpp: DataTransformer::Transform``), per image:

1. ``crop_size``: a random offset in TRAIN (``Rand(H - crop + 1)``, ``Rand(W - crop + 1)``),
   the centre ``((H - crop) / 2, (W - crop) / 2)`` in TEST;
2. ``mirror``: a horizontal flip with probability 1/2 (Caffe quirk: also in TEST);
3. mean subtraction: the per-pixel ``mean_file`` image (taken at the same, un-flipped source
   pixel as the value) or per-channel ``mean_value``;
4. scale: ``out = (pixel - mean) * scale`` in float32.

darknet (``load_image_cv``): ``out = pixel / 255.`` computed in double and rounded to float
(darknet quirk: this differs in the last bit from ``pixel * float(1/255)`` for 126 of the 256
byte values, so the sampler divides).

Order: darknet samples with replacement (``rand() % N`` per image, ``shuffle=True``); Caffe
reads records in order and wraps at the end, so batches straddle epochs (``shuffle=False``).
Caffe's ``HDF5Data`` with ``shuffle: true`` (``hdf5_data_layer.cpp``) permutes instead: the
file order at the start and at each wrap past the last file, and each file's rows whenever the
file is (re)loaded; batches still straddle files and epochs. The sampler does the same with
its own generator, one permutation of files and rows per pass (seeded by the run's seed and
the pass number).
The random draws come from a NumPy PCG64 generator (not Caffe's or darknet's stream), whose
state is part of :meth:`BatchSampler.state_dict`, so a resumed run continues bit-exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from dnupdate.engine.data.darknet_augment import augment_train, center_crop
from dnupdate.engine.data.darknet_augment import describe as describe_augment
from dnupdate.engine.data.dataset import Dataset
from dnupdate.engine.data.errors import DataError
from dnupdate.engine.data.protobuf import WireError, decode_blob
from dnupdate.engine.spec import DataSourceSpec

Phase = Literal["train", "test"]

# mean_file path → the mean computed in its place from a training set (see BatchSampler).
_COMPUTED_MEANS: dict[str, np.ndarray] = {}


def load_mean_file(path: str | Path, shape: tuple[int, int, int]) -> np.ndarray:
    """Read a Caffe ``mean.binaryproto`` (a BlobProto 1×C×H×W) as float32 C×H×W.

    The blob must hold exactly C·H·W values matching the dataset's image shape.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(str(path), f"cannot read the mean file ({exc.strerror or exc})") from None
    try:
        dims, values = decode_blob(raw)
    except WireError as exc:
        raise DataError(str(path), f"not a BlobProto ({exc})") from None
    expected = shape[0] * shape[1] * shape[2]
    if values.size != expected:
        raise DataError(
            str(path),
            f"mean blob has shape {dims} ({values.size} values) but the images are "
            f"{shape[0]}×{shape[1]}×{shape[2]}",
        )
    return values.reshape(shape)


def mean_image(source: DataSourceSpec, shape: tuple[int, int, int]) -> np.ndarray | None:
    """The mean to subtract, as float32 broadcastable to C×H×W (None when there is none)."""
    if source.mean_file and source.mean_values:
        raise DataError(
            source.mean_file, "give either a mean file or mean values, not both (Caffe rule)"
        )
    if source.mean_file:
        return load_mean_file(source.mean_file, shape)
    if source.mean_values:
        values = np.asarray(source.mean_values, dtype=np.float32)
        if values.size == 1:
            values = np.repeat(values, shape[0])
        if values.size != shape[0]:
            raise DataError(
                str(source.origin),
                f"{values.size} mean values for {shape[0]} channels (give 1 or {shape[0]})",
            )
        return values.reshape(shape[0], 1, 1)
    return None


def compute_image_mean(dataset: Dataset) -> np.ndarray:
    """The per-pixel mean image, as Caffe's ``tools/compute_image_mean.cpp`` computes it.

    Caffe sums the uint8 pixels into a float blob and divides by the image count in float.
    The sums of up to 65 793 images of 255 are integers below 2^24, so they are exact in
    float32, and ``float32(sum) / float32(count)`` reproduces the tool's values bit for bit.
    """
    total = np.zeros(dataset.shape, dtype=np.float64)
    for start in range(0, len(dataset), 4096):
        total += dataset.images[start : start + 4096].sum(axis=0, dtype=np.float64)
    return total.astype(np.float32) / np.float32(len(dataset))


def mean_for(source: DataSourceSpec, train: Dataset) -> tuple[np.ndarray | None, str | None]:
    """The mean a source subtracts, and a note when it had to be computed.

    A ``mean_file`` that does not exist here (Caffe's CIFAR-10 example points at
    ``examples/cifar10/mean.binaryproto``) is replaced by :func:`compute_image_mean` of the
    training set, which is what ``compute_image_mean`` would have written.
    """
    if source.mean_file and not source.mean_values and not Path(source.mean_file).exists():
        note = (
            f"{source.mean_file} does not exist: using the mean image of the {train.name} "
            "training set, computed as Caffe's compute_image_mean does"
        )
        return compute_image_mean(train), note
    return mean_image(source, train.shape), None


def darknet_divisor(scale: float) -> float:
    """The divisor darknet's ``pixel / 255.`` uses for a given scale (255 for 1/255)."""
    inverse = 1.0 / float(scale)
    return float(round(inverse)) if abs(inverse - round(inverse)) < 1e-3 else inverse


def _darknet_augment(source: DataSourceSpec, dataset: Dataset, framework: str):
    """The darknet augmentation spec when it applies (a darknet config whose net is smaller
    than the data images), else None; a non-square net is refused (darknet's training crop is
    ``width×width``, :mod:`engine.data.darknet_augment`)."""
    spec = source.augment
    _, height, width = dataset.shape
    if framework != "darknet" or spec is None:
        return None
    if (height, width) == (spec.height, spec.width) or height < spec.height or width < spec.width:
        return None
    if spec.height != spec.width:
        raise DataError(
            dataset.path or dataset.name,
            f"images are {height}×{width}, the net {spec.height}×{spec.width}: darknet's "
            "classifier crop is square (width×width); give the net equal height and width",
        )
    return spec


class BatchSampler:
    """Fills a preallocated float32 batch (and int64 labels) from a dataset.

    ``framework``: ``"caffe"`` applies ``(pixel - mean) * scale`` in float32; ``"darknet"``
    applies ``pixel / 255.`` in double then float (see the module docstring). ``phase`` picks
    random (TRAIN) or centre (TEST) crops. ``shuffle`` (from the spec unless overridden): random
    sampling with replacement (darknet) or sequential wrapping order (Caffe).
    ``prescaled`` datasets (float ``.npz``) are copied as given (crop and mirror still apply).
    ``mean``: a mean image (C×H×W) or per-channel mean (C×1×1) to use instead of the spec's.
    When the spec's ``mean_file`` does not exist, a TRAIN sampler computes the mean of its
    dataset (:func:`mean_for`) and remembers it for that path; a TEST sampler created later
    with the same ``mean_file`` reuses it. ``notes`` says when this happened.
    """

    def __init__(
        self,
        dataset: Dataset,
        source: DataSourceSpec,
        *,
        framework: Literal["darknet", "caffe"] = "caffe",
        phase: Phase = "train",
        seed: int = 0,
        batch_size: int | None = None,
        shuffle: bool | None = None,
        mean: np.ndarray | None = None,
    ):
        if len(dataset) == 0:
            raise DataError(dataset.path or dataset.name, "the dataset has no images")
        self.dataset = dataset
        self.framework = framework
        self.phase = phase
        self.batch_size = int(batch_size or source.batch_size)
        if self.batch_size <= 0:
            raise DataError(
                str(source.origin), f"batch size must be positive, got {self.batch_size}"
            )
        self.shuffle = source.shuffle if shuffle is None else shuffle
        # Caffe HDF5Data shuffle: permutations per pass, not draws with replacement
        self.permuted = bool(self.shuffle and framework == "caffe" and dataset.segments)
        self.epoch = 0
        self._order: tuple[int, np.ndarray] | None = None
        self.mirror = source.mirror
        channels, height, width = dataset.shape
        self.augment = _darknet_augment(source, dataset, framework)
        self.crop = int(source.crop_size)
        if self.crop and (self.crop > height or self.crop > width):
            raise DataError(
                str(source.origin), f"crop size {self.crop} exceeds the {height}×{width} images"
            )
        self.scale = np.float32(source.scale)
        self.notes: list[str] = []
        if mean is None and not dataset.prescaled:
            mean = self._missing_mean_file(source, dataset, phase)
        if dataset.prescaled:
            self.mean = None
        elif mean is not None:
            self.mean = np.asarray(mean, dtype=np.float32).reshape(channels, *mean.shape[-2:])
        else:
            self.mean = mean_image(source, dataset.shape)
        self.divisor = darknet_divisor(source.scale) if framework == "darknet" else None
        self.seed = seed
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.position = 0
        out_h, out_w = (self.crop, self.crop) if self.crop else (height, width)
        if self.augment is not None:
            out_h, out_w = self.augment.height, self.augment.width
            if phase == "train":
                self.notes.append(describe_augment(self.augment, dataset.shape))
        self.images = np.empty((self.batch_size, channels, out_h, out_w), dtype=np.float32)
        # class indices (B,) int64, or a dataset's float targets (B, k, ...) as stored
        targets = dataset.labels.ndim > 1
        self.labels = np.empty(
            (self.batch_size, *dataset.labels.shape[1:]),
            dtype=np.float32 if targets else np.int64,
        )
        self._lut = self._lookup_table()

    def _missing_mean_file(
        self, source: DataSourceSpec, dataset: Dataset, phase: Phase
    ) -> np.ndarray | None:
        """The training mean standing in for a missing ``mean_file`` (None if it exists)."""
        path = source.mean_file
        if not path or source.mean_values or Path(path).exists():
            return None
        if phase == "train":
            mean, note = mean_for(source, dataset)
            assert mean is not None and note is not None
            _COMPUTED_MEANS[path] = mean
            self.notes.append(note)
            return mean
        if path in _COMPUTED_MEANS:
            self.notes.append(f"{path} does not exist: using the training set's mean image")
            return _COMPUTED_MEANS[path]
        raise DataError(path, "no such mean file (and no training set to compute it from)")

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one preprocessed image (after cropping)."""
        return self.images.shape[1], self.images.shape[2], self.images.shape[3]

    def _lookup_table(self) -> np.ndarray | None:
        """float32 C×256 values for uint8 data without a per-pixel mean, else None."""
        if self.dataset.images.dtype != np.uint8 or self.dataset.prescaled:
            return None
        if self.mean is not None and self.mean.shape[1:] != (1, 1):
            return None
        channels = self.dataset.shape[0]
        values = np.arange(256, dtype=np.float32)
        if self.divisor is not None:
            row = (np.arange(256, dtype=np.float64) / self.divisor).astype(np.float32)
            return np.tile(row, (channels, 1))
        means = (
            np.zeros((channels, 1), dtype=np.float32)
            if self.mean is None
            else self.mean.reshape(channels, 1)
        )
        return (values[None, :] - means) * self.scale

    def next_indices(self) -> np.ndarray:
        """Indices of the next batch; advances the position (Caffe) or the generator (darknet)."""
        count = len(self.dataset)
        if self.permuted:
            return self._permuted_indices(count)
        if self.shuffle:
            return self.rng.integers(0, count, size=self.batch_size)
        indices = (self.position + np.arange(self.batch_size)) % count
        self.position = int((self.position + self.batch_size) % count)
        return indices

    def pass_order(self, epoch: int) -> np.ndarray:
        """The row order of pass ``epoch`` in Caffe's HDF5Data shuffle: the files in a random
        order, each file's rows in a random order (see the module docstring)."""
        if self._order is not None and self._order[0] == epoch:
            return self._order[1]
        rng = np.random.Generator(np.random.PCG64([self.seed, epoch]))
        segments = self.dataset.segments
        starts = np.concatenate(([0], np.cumsum(segments[:-1]))).astype(np.int64)
        files = rng.permutation(len(segments))
        order = np.concatenate([starts[f] + rng.permutation(segments[f]) for f in files])
        self._order = (epoch, order.astype(np.int64))
        return self._order[1]

    def _permuted_indices(self, count: int) -> np.ndarray:
        """The next batch of the pass-by-pass permuted stream (straddling passes)."""
        out = np.empty(self.batch_size, dtype=np.int64)
        filled = 0
        while filled < self.batch_size:
            order = self.pass_order(self.epoch)
            take = min(self.batch_size - filled, count - self.position)
            out[filled : filled + take] = order[self.position : self.position + take]
            filled += take
            self.position += take
            if self.position == count:
                self.position, self.epoch = 0, self.epoch + 1
        return out

    def _convert(self, raw: np.ndarray) -> np.ndarray:
        """Pixel values → float32 (C×H×W or batch), before crop and mirror."""
        if self.dataset.prescaled:
            return raw.astype(np.float32, copy=False)
        if self._lut is not None:
            out = np.empty(raw.shape, dtype=np.float32)
            for channel in range(raw.shape[-3]):
                np.take(self._lut[channel], raw[..., channel, :, :], out=out[..., channel, :, :])
            return out
        values = raw.astype(np.float32)
        if self.divisor is not None:
            return (values.astype(np.float64) / self.divisor).astype(np.float32)
        if self.mean is not None:
            values -= self.mean
        values *= self.scale
        return values

    def _offsets(self, height: int, width: int) -> tuple[int, int]:
        if self.phase == "train":
            return (
                int(self.rng.integers(0, height - self.crop + 1)),
                int(self.rng.integers(0, width - self.crop + 1)),
            )
        return (height - self.crop) // 2, (width - self.crop) // 2

    def next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        """Fill and return the (images, labels) buffers; they are reused by the next call."""
        indices = self.next_indices()
        raw = self.dataset.images[indices]
        self.labels[:] = self.dataset.labels[indices]
        if self.augment is not None:
            self.images[:] = self._augmented(raw)
            return self.images, self.labels
        if not self.crop and not self.mirror:
            self.images[:] = self._convert(raw)
            return self.images, self.labels
        _, _, height, width = raw.shape
        for row in range(self.batch_size):
            flip = bool(self.mirror and self.rng.integers(0, 2))
            top, left = self._offsets(height, width) if self.crop else (0, 0)
            size_h, size_w = self.images.shape[2], self.images.shape[3]
            window = (slice(None), slice(top, top + size_h), slice(left, left + size_w))
            values = self._convert_window(raw[row][window], window)
            self.images[row] = values[:, :, ::-1] if flip else values
        return self.images, self.labels

    def _augmented(self, raw: np.ndarray) -> np.ndarray:
        """darknet's classifier augmentation (train) or centre crop (test) of a raw batch
        (bytes → ``byte/255`` first, as ``load_image_color``)."""
        images = self._convert(raw)
        spec = self.augment
        assert spec is not None
        if self.phase == "train":
            return augment_train(images, self.rng, spec)
        return center_crop(images, spec.height, spec.width)

    def _convert_window(self, pixels: np.ndarray, window: tuple[slice, ...]) -> np.ndarray:
        """Convert one cropped image; a per-pixel mean is cropped at the same offsets."""
        if self.mean is not None and self.mean.shape[1:] != (1, 1) and not self.dataset.prescaled:
            values = pixels.astype(np.float32) - self.mean[window]
            values *= self.scale
            return values
        return self._convert(pixels)

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: position, pass (HDF5 shuffle), generator state, seed."""
        return {
            "position": self.position,
            "epoch": self.epoch,
            "seed": self.seed,
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` (same dataset and settings assumed)."""
        self.position = int(state["position"]) % len(self.dataset)
        self.seed = int(state.get("seed", self.seed))
        self.epoch = int(state.get("epoch", 0))
        self._order = None
        self.rng.bit_generator.state = state["rng"]
