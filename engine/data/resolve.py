"""From a config's data source to a :class:`Dataset`: name resolution, shape probing, opening.

A source is a catalog name (``mnist``, ``cifar10``, ``synthetic-digits``, ...), ``npz:PATH`` or
a ``.npz`` path, ``h5:PATH`` or a ``.h5`` path (Caffe's HDF5Data input, :mod:`engine.data.hdf5`),
a Caffe LMDB directory, a folder holding a dataset's files, or a darknet ``.data`` file. Caffe
examples point at ``examples/mnist/mnist_train_lmdb`` and ``examples/cifar10/cifar10_train_lmdb``;
when such a path does not exist here it resolves, by its name, to the catalog dataset
(``mnist``, ``cifar10``).
"""

from __future__ import annotations

import re
from pathlib import Path

from dnupdate.engine.data.catalog import CATALOG, canonical_name, split_name
from dnupdate.engine.data.dataset import Dataset
from dnupdate.engine.data.errors import DataError
from dnupdate.engine.data.hdf5 import (
    H5_PREFIX,
    H5Source,
    is_h5_source,
    parse_h5_source,
    probe_h5_label_shape,
    probe_h5_shape,
    read_h5,
)
from dnupdate.engine.data.lmdb_source import is_lmdb_dir, probe_lmdb_shape, read_lmdb
from dnupdate.engine.data.npz import probe_npz_shape, read_npz

NPZ_PREFIX = "npz:"
DATASET_SUFFIXES = (".data",)
NAME_PATTERNS = (  # matched against the lower-cased path, first hit wins
    (re.compile(r"fashion[-_]?mnist|fmnist"), "fashion-mnist"),
    (re.compile(r"mnist"), "mnist"),
    (re.compile(r"cifar[-_]?100"), "cifar100"),
    (re.compile(r"cifar"), "cifar10"),
)


def name_from_path(path: str) -> str | None:
    """The catalog dataset a path's name refers to (``mnist_train_lmdb`` → ``mnist``), or None."""
    lowered = path.lower()
    for pattern, name in NAME_PATTERNS:
        if pattern.search(lowered):
            return name
    return None


SPLIT_IN_NAME = re.compile(r"(?:^|[^a-z])(train|test|val|valid)(?:[^a-z]|$)")


def split_in_name(path: str) -> str | None:
    """The split a data path's last component names, or None: Caffe's LMDB names say which
    split they hold (``examples/mnist/mnist_train_lmdb`` → ``train``, ``cifar10_test_lmdb``
    → ``test``; ``val``/``valid`` → ``test``), whatever phase's data layer reads them (the
    autoencoder's TEST net ``test-on-train`` reads ``mnist_train_lmdb``)."""
    found = SPLIT_IN_NAME.search(Path(path.rstrip("/")).name.lower())
    if found is None:
        return None
    return "train" if found.group(1) == "train" else "test"


def _existing(source: str, data_dir: str | Path | None) -> Path | None:
    path = Path(source).expanduser()
    if path.exists():
        return path
    if data_dir and not path.is_absolute() and (Path(data_dir) / path).exists():
        return Path(data_dir) / path
    return None


def _from_darknet_data(path: Path) -> str:
    """A darknet ``.data`` file (``key = value`` lines) → the dataset its values name.

    Each value that is itself a usable source wins; otherwise the file's paths are matched by
    name (``data/mnist/mnist.train.list`` → ``mnist``).
    """
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise DataError(str(path), str(exc)) from None
    values = [
        line.partition("=")[2].strip()
        for line in text.splitlines()
        if "=" in line and not line.lstrip().startswith(("#", ";"))
    ]
    for value in values:
        if canonical_name(value) or value.startswith(NPZ_PREFIX) or value.endswith(".npz"):
            return resolve_source(value, "train", path.parent)
        candidate = _existing(value, path.parent)
        if candidate is not None and is_lmdb_dir(candidate):
            return str(candidate)
    for value in values:
        name = name_from_path(value)
        if name:
            return name
    raise DataError(
        str(path),
        "names no dataset this program can read (expected a dataset name such as mnist or "
        "cifar10, an .npz file or an LMDB directory in one of its values)",
    )


def _unknown(source: str) -> DataError:
    names = ", ".join(CATALOG)
    return DataError(
        source,
        f"unknown data source: not a dataset name ({names}), not npz:PATH, and no such file "
        "or directory",
    )


def resolve_source(source: str | None, split: str = "train", data_dir: str | None = None) -> str:
    """Map a config's data source to something :func:`open_dataset` reads directly.

    Returns a catalog name, ``npz:PATH``, or an existing path (LMDB directory or dataset
    folder). Order: catalog names; ``npz:``/``.npz``; existing paths (also tried under
    ``data_dir``), a darknet ``.data`` file resolving to the dataset it names; finally a missing
    path is matched by name (Caffe's ``examples/mnist/mnist_train_lmdb`` → ``mnist``).
    ``split`` is accepted for symmetry with :func:`open_dataset`; names do not depend on it.
    """
    del split
    if source is None or not source.strip():
        raise DataError(
            "(data source)",
            "no data source given: set one in the config or on the command line "
            "(a dataset name such as mnist or synthetic-digits, an .npz file or an LMDB folder)",
        )
    source = source.strip()
    name = canonical_name(source)
    if name:
        return name
    if is_h5_source(source):
        return _resolve_h5(source, data_dir)
    if source.startswith(NPZ_PREFIX) or source.lower().endswith(".npz"):
        raw = source.removeprefix(NPZ_PREFIX)
        path = _existing(raw, data_dir)
        if path is None or not path.is_file():
            raise DataError(raw, "no such .npz file")
        return NPZ_PREFIX + str(path)
    path = _existing(source, data_dir)
    if path is not None:
        if path.is_dir():
            return str(path)
        if path.suffix in DATASET_SUFFIXES:
            return _from_darknet_data(path)
        matched = name_from_path(str(path))
        if matched:
            return matched
        raise DataError(
            str(path),
            "cannot read this file as a data source (darknet image lists are not supported; "
            "use a dataset name, an .npz file or an LMDB directory)",
        )
    matched = name_from_path(source)
    if matched:
        return matched
    raise _unknown(source)


def _resolve_h5(source: str, data_dir: str | None) -> str:
    """``h5:PATH[#DATA,LABEL]`` with PATH made an existing file (as given, or under
    ``data_dir``)."""
    parsed = parse_h5_source(source)
    path = _existing(parsed.path, data_dir)
    if path is None or not path.is_file():
        raise DataError(parsed.path, "no such file (an h5: source: an .h5 file or a list of them)")
    return H5Source(str(path), parsed.data, parsed.label).text()


def probe_shape(source: str) -> tuple[int, int, int] | None:
    """(C, H, W) of a source's images without loading them, or None when it cannot be told.

    Catalog names give their fixed shape; ``.npz`` files their ``x`` header; LMDB directories
    their first record; dataset folders the shape of the dataset found in them; ``h5:``
    sources the data dataset of their first file. A damaged ``h5:`` source raises its
    :class:`DataError` (naming the file and dataset) rather than returning None.
    """
    if is_h5_source(source.strip()):
        return probe_h5_shape(resolve_source(source))
    try:
        resolved = resolve_source(source)
        if resolved in CATALOG:
            return CATALOG[resolved].shape
        if resolved.startswith(NPZ_PREFIX):
            return probe_npz_shape(resolved.removeprefix(NPZ_PREFIX))
        path = Path(resolved)
        if is_lmdb_dir(path):
            return probe_lmdb_shape(path)
        kind = _folder_kind(path)
        return CATALOG[kind].shape if kind else None
    except (DataError, OSError):
        return None


def probe_label_shape(source: str) -> tuple[int, ...]:
    """The per-image shape of a source's labels: ``()`` (class indices) for every source but an
    ``h5:`` one whose label dataset holds float targets (``(k, …)``, :func:`read_h5`). A
    damaged ``h5:`` source raises its :class:`DataError`."""
    if is_h5_source(source.strip()):
        return probe_h5_label_shape(resolve_source(source))
    return ()


def _folder_kind(folder: Path) -> str | None:
    """Which catalog dataset's files a folder holds (train or test split), if any."""
    from dnupdate.engine.data.named import locate_split

    for name in ("mnist", "cifar10", "cifar100"):
        for split in ("train", "test"):
            found = locate_split(CATALOG[name], split, folder, only=True)
            if found is not None:
                return _identify_idx(found.files) if name == "mnist" else name
    return None


def _identify_idx(files: dict[str, list[Path]]) -> str:
    """MNIST or Fashion-MNIST: tell them apart by the label file's checksum."""
    from dnupdate.engine.data.checksums import matches

    labels = files["labels"][0]
    fashion = CATALOG["fashion-mnist"].checksums.get(labels.name, ())
    return "fashion-mnist" if matches(labels, fashion) else "mnist"


def _open_folder(folder: Path, split: str, size: int | None) -> Dataset:
    from dnupdate.engine.data.named import load_catalog_dataset

    kind = _folder_kind(folder)
    if kind is None and (folder / "CURRENT").is_file() and any(folder.glob("*.ldb")):
        raise DataError(
            str(folder),
            "this is a LevelDB database, which is not supported; rebuild it as LMDB "
            "(Caffe's converters take --backend=lmdb)",
        )
    if kind is None:
        raise DataError(
            str(folder),
            "no dataset found in this folder (expected an LMDB (data.mdb), MNIST-style IDX "
            "files or CIFAR batches)",
        )
    return load_catalog_dataset(kind, split, folder, size, only=True)


def _open_h5(resolved: str, split: str, size: int | None) -> Dataset:
    """An ``h5:`` source as a float dataset used as given (``prescaled``)."""
    images, labels, classes, rows, files = read_h5(resolved)
    if size is not None:
        images, labels = images[:size], labels[:size]
        rows = _first_rows(rows, size)
    path = parse_h5_source(resolved).path
    return Dataset(
        name=Path(path).name,
        images=images,
        labels=labels,
        classes=classes,
        description=f"HDF5 {path}: {len(labels)} rows of float32 in {len(files)} file(s)",
        split=split,
        path=path,
        prescaled=True,
        segments=rows,
    )


def _first_rows(rows: tuple[int, ...], size: int) -> tuple[int, ...]:
    """Rows per file when only the first ``size`` rows are kept."""
    kept = []
    for count in rows:
        if size <= 0:
            break
        kept.append(min(count, size))
        size -= count
    return tuple(kept)


def open_dataset(
    name_or_path: str,
    split: str = "train",
    data_dir: str | None = None,
    *,
    seed: int = 0,
    size: int | None = None,
) -> Dataset:
    """Open one split of a data source (never downloads; see ``dnupdate data fetch``).

    ``split``: ``train`` or ``test`` (``val``/``valid`` mean ``test``); ignored for single-split
    sources (``.npz``, LMDB). ``seed`` and ``size`` set a synthetic set's generator seed and
    image count; for other sources ``size`` keeps the first ``size`` images.
    Raises :class:`DataError` (or its subclass :class:`DatasetNotFound`) with the file and the
    problem.
    """
    from dnupdate.engine.data.named import load_catalog_dataset, load_synthetic

    try:
        split = split_name(split)
    except ValueError as exc:
        raise DataError(name_or_path, str(exc)) from None
    resolved = resolve_source(name_or_path, split, data_dir)
    if resolved in CATALOG:
        if CATALOG[resolved].synthetic:
            return load_synthetic(resolved, split, seed, size)
        return load_catalog_dataset(resolved, split, data_dir, size)
    if resolved.startswith(H5_PREFIX):
        return _open_h5(resolved, split, size)
    if resolved.startswith(NPZ_PREFIX):
        path = Path(resolved.removeprefix(NPZ_PREFIX))
        images, labels, classes = read_npz(path)
        kind, prescaled = "npz", images.dtype != "uint8"
    else:
        path = Path(resolved)
        if not is_lmdb_dir(path):
            return _open_folder(path, split, size)
        images, labels, classes = read_lmdb(path)
        kind, prescaled = "LMDB", False
    if size is not None:
        images, labels = images[:size], labels[:size]
    return Dataset(
        name=path.name,
        images=images,
        labels=labels,
        classes=classes,
        description=f"{kind} {path}: {len(labels)} images of {images.dtype}",
        split=split,
        path=str(path),
        prescaled=prescaled,
    )
