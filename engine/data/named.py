"""Open a catalog dataset (``mnist``, ``cifar10``, ``synthetic-digits``, ...) by name."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from dnupdate.engine.data.catalog import CATALOG, CatalogEntry
from dnupdate.engine.data.cifar import read_cifar_binary, read_cifar_pickle, read_cifar_pickle_file
from dnupdate.engine.data.dataset import Dataset
from dnupdate.engine.data.errors import DataError, DatasetNotFound
from dnupdate.engine.data.idx import read_idx_pair
from dnupdate.engine.data.locate import Located, candidate_dirs, first_existing, write_root

PARTIAL_CIFAR10_TEST = "test_batch_first1000.bin"


def _find_idx(entry: CatalogEntry, split: str, folder: Path) -> Located | None:
    roles = entry.files[split]
    images = first_existing(folder, roles["images"])
    labels = first_existing(folder, roles["labels"])
    if images and labels:
        return Located(folder, {"images": [images], "labels": [labels]})
    return None


def _find_cifar10(split: str, folder: Path) -> Located | None:
    if split == "train":
        binary = [folder / f"data_batch_{i}.bin" for i in range(1, 6)]
        python = [folder / f"data_batch_{i}" for i in range(1, 6)]
        for batches in (binary, python):
            if all(p.is_file() for p in batches):
                return Located(folder, {"batches": batches})
        return None
    if (folder / "test_batch.bin").is_file():
        return Located(folder, {"batches": [folder / "test_batch.bin"]})
    if (folder / PARTIAL_CIFAR10_TEST).is_file():
        note = (
            f"test_batch.bin is absent: using {PARTIAL_CIFAR10_TEST} "
            "(the first 1000 of the 10000 official test images)"
        )
        return Located(folder, {"batches": [folder / PARTIAL_CIFAR10_TEST]}, (note,))
    if (folder / "test_batch").is_file() and (folder / "batches.meta").is_file():
        return Located(folder, {"batches": [folder / "test_batch"]})
    return None


def _find_cifar100(split: str, folder: Path) -> Located | None:
    for name in (f"{split}.bin", split):
        path = folder / name
        if path.is_file() and (name.endswith(".bin") or (folder / "meta").is_file()):
            return Located(folder, {"batches": [path]})
    return None


def locate_split(
    entry: CatalogEntry, split: str, data_dir: str | Path | None, *, only: bool = False
) -> Located | None:
    """Find the files of one split of a catalog dataset, or None (``only``: look in
    ``data_dir`` and its sub-folders alone)."""
    for folder in candidate_dirs(entry, data_dir, only=only):
        if not folder.is_dir():
            continue
        if entry.kind == "idx":
            found = _find_idx(entry, split, folder)
        elif entry.kind == "cifar10":
            found = _find_cifar10(split, folder)
        else:
            found = _find_cifar100(split, folder)
        if found:
            return found
    return None


def placement_hint(
    entry: CatalogEntry, data_dir: str | Path | None, *, suggest_fetch: bool = True
) -> str:
    """What to place where, every file of both splits (training needs the test files too), and
    (``suggest_fetch``) the command that downloads them — not when that command just failed."""
    target = write_root(data_dir) / entry.cache_folder
    if entry.kind == "idx":
        names = [
            entry.files[split][role][0] for split in entry.files for role in entry.files[split]
        ]
        where = f"Place {', '.join(names)} in {target}"
    else:
        archive = entry.downloads[0]
        where = (
            f"Download {archive.filename} from {archive.mirrors[0]} and extract it so that "
            f"{target / archive.archive_dir} holds its files"
        )
    hint = f"{where} (or pass --data-dir DIR, or set DNUPDATE_DATA_DIR)"
    if suggest_fetch:
        hint += f", or download it with: dnupdate data fetch {entry.name}"
    return hint


def _not_found(entry: CatalogEntry, split: str, data_dir: str | Path | None) -> DatasetNotFound:
    searched = ", ".join(str(p) for p in candidate_dirs(entry, data_dir) if p.is_dir())
    problem = f"the {split} split is not on this machine"
    if searched:
        problem += f" (searched {searched})"
    return DatasetNotFound(entry.name, problem, placement_hint(entry, data_dir))


def _load_files(entry: CatalogEntry, found: Located) -> tuple[np.ndarray, np.ndarray]:
    if entry.kind == "idx":
        return read_idx_pair(found.files["images"][0], found.files["labels"][0], entry.classes)
    batches = found.files["batches"]
    binary = batches[0].suffix == ".bin"
    if entry.kind == "cifar10":
        if binary:
            return read_cifar_binary(batches, label_bytes=1, label_index=0, classes=10)
        return read_cifar_pickle(batches, label_key="labels", classes=10)
    coarse = entry.name.endswith("coarse")
    if binary:
        return read_cifar_binary(
            batches, label_bytes=2, label_index=0 if coarse else 1, classes=entry.classes
        )
    key = "coarse_labels" if coarse else "fine_labels"
    return read_cifar_pickle(batches, label_key=key, classes=entry.classes)


def _check_identity(entry: CatalogEntry, found: Located) -> None:
    """Refuse another dataset's files under this name (MNIST and Fashion-MNIST share file
    names): the small label file is compared with the other datasets' checksums."""
    from dnupdate.engine.data.checksums import matches

    labels = found.files["labels"][0]
    others = [o for o in CATALOG.values() if o.kind == entry.kind and o.name != entry.name]
    for other in others:
        if matches(labels, other.checksums.get(labels.name, ())):
            raise DataError(
                str(labels),
                f"these are {other.name} files, not {entry.name} (the label file has "
                f"{other.name}'s checksum); open them as {other.name}",
            )


def _read_names(path: Path) -> str:
    """A class-names file as UTF-8 text; unreadable or not UTF-8 raises :class:`DataError`
    naming the file and the first bad byte's offset."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            str(path),
            f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "fix or delete it (without it the catalog's class names are used)",
        ) from None
    except OSError as exc:
        raise DataError(str(path), exc.strerror or str(exc)) from None


def _label_names(entry: CatalogEntry, found: Located) -> tuple[str, ...]:
    """Class names from the dataset's own metadata when present, else the catalog's."""
    folder = found.folder
    meta_txt = {
        "cifar10": "batches.meta.txt",
        "cifar100": "fine_label_names.txt",
        "cifar100-coarse": "coarse_label_names.txt",
    }.get(entry.name)
    if meta_txt and (folder / meta_txt).is_file():
        names = [n.strip() for n in _read_names(folder / meta_txt).splitlines() if n.strip()]
        if len(names) == entry.classes:
            return tuple(names)
    if entry.kind == "cifar100" and (folder / "meta").is_file():
        try:
            meta = read_cifar_pickle_file(folder / "meta")
            key = "coarse_label_names" if entry.name.endswith("coarse") else "fine_label_names"
            return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta[key])
        except (DataError, KeyError):
            pass
    return entry.label_names


def load_catalog_dataset(
    name: str, split: str, data_dir: str | Path | None, size: int | None, *, only: bool = False
) -> Dataset:
    """Open a real catalog dataset from local files (never downloads)."""
    entry = CATALOG[name]
    found = locate_split(entry, split, data_dir, only=only)
    if found is None:
        raise _not_found(entry, split, data_dir)
    if entry.kind == "idx":
        _check_identity(entry, found)
    images, labels = _load_files(entry, found)
    labels = np.asarray(labels, dtype=np.int64)  # uint8 on disk; int64 for every consumer
    if size is not None:
        images, labels = images[:size], labels[:size]
    files = ", ".join(str(p) for paths in found.files.values() for p in paths)
    return Dataset(
        name=entry.name,
        images=images,
        labels=labels,
        classes=entry.classes,
        description=f"{entry.title}, {split} split, {len(labels)} images from {found.folder}",
        split=split,
        path=files,
        label_names=_label_names(entry, found),
        notes=found.notes,
    )


@lru_cache(maxsize=4)
def _synthetic(name: str, split: str, seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic set: this process's cache, else the disk cache (engine.data.synthetic_cache),
    else generated."""
    from dnupdate.engine.data.synthetic_cache import cached_generate

    if name == "synthetic-digits":
        from dnupdate.engine.data import synthetic_digits as generator

        shape = (1, generator.SIDE, generator.SIDE)
        generate = lambda: generator.generate_digits(size, seed, split)  # noqa: E731
    else:
        from dnupdate.engine.data import synthetic_shapes as generator

        shape = (3, generator.SIDE, generator.SIDE)
        generate = lambda: generator.generate_shapes(size, seed, split)  # noqa: E731
    images, labels = cached_generate(
        name, generator.GENERATOR_VERSION, split, seed, size, shape, generate
    )
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def load_synthetic(name: str, split: str, seed: int, size: int | None) -> Dataset:
    """A synthetic set, generated once and then read from the disk cache."""
    entry = CATALOG[name]
    count = entry.counts[split] if size is None else size
    if count < 0:
        raise DataError(name, f"size must be non-negative, got {count}")
    images, labels = _synthetic(name, split, seed, count)
    if name == "synthetic-shapes":
        from dnupdate.engine.data.synthetic_shapes import CLASS_NAMES

        names = CLASS_NAMES
    else:
        names = entry.label_names
    return Dataset(
        name=name,
        images=images,
        labels=labels,
        classes=entry.classes,
        synthetic=True,
        description=f"{entry.title}; {split} split, {count} images, seed {seed}",
        split=split,
        path="(generated)",
        label_names=names,
        notes=("SYNTHETIC data: procedurally generated, not a real dataset",),
    )
