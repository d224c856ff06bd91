"""Datasets: readers, the download cache, synthetic sets and preprocessed batches.

Public API (other parts of the engine rely on these names):

* :func:`open_dataset` — a name or path → :class:`Dataset` (uint8 N×C×H×W, labels, classes);
* :func:`resolve_source` — a config's data source → what ``open_dataset`` reads
  (e.g. Caffe's missing ``examples/mnist/mnist_train_lmdb`` → ``mnist``);
* :func:`probe_shape` — (C, H, W) of a source without loading it;
* :func:`probe_label_shape` — the per-image label shape (``()``: class indices; an HDF5
  source's float targets: ``(k, …)``);
* :class:`BatchSampler` — float32 batches preprocessed per the framework, resumable state;
  :func:`mean_for` — the mean to subtract (computed from the training set, as Caffe's
  ``compute_image_mean`` would, when a config's ``mean.binaryproto`` is missing);
* :func:`fetch_dataset`, :func:`verify_dataset` — the download cache;
* :class:`DataError`, :class:`DatasetNotFound`, :class:`DownloadError`.

Dataset names: ``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100`` (fine labels),
``cifar100-coarse``, ``synthetic-digits``, ``synthetic-shapes``; ``npz:PATH`` or a ``.npz``
path; ``h5:PATH`` (an ``.h5`` file or Caffe's list of them, :mod:`engine.data.hdf5`); an LMDB
directory; a folder holding one of the named datasets' files.
"""

from __future__ import annotations

from dnupdate.engine.data.catalog import CATALOG, CatalogEntry
from dnupdate.engine.data.dataset import Dataset
from dnupdate.engine.data.errors import DataError, DatasetNotFound, DownloadError
from dnupdate.engine.data.fetch import fetch_dataset, verify_dataset
from dnupdate.engine.data.resolve import (
    open_dataset,
    probe_label_shape,
    probe_shape,
    resolve_source,
)
from dnupdate.engine.data.sampler import BatchSampler, compute_image_mean, load_mean_file, mean_for

__all__ = [
    "CATALOG",
    "BatchSampler",
    "CatalogEntry",
    "DataError",
    "Dataset",
    "DatasetNotFound",
    "DownloadError",
    "compute_image_mean",
    "fetch_dataset",
    "load_mean_file",
    "mean_for",
    "open_dataset",
    "probe_label_shape",
    "probe_shape",
    "resolve_source",
    "verify_dataset",
]
