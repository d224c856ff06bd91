"""Generated synthetic sets kept on disk, so only the first run pays for generating them.

``synthetic-digits`` takes several seconds for its 60,000 training images; the set is a pure
function of (generator version, name, split, seed, count), so it is saved once under the data
cache (``<cache root>/synthetic/NAME-vVERSION-SPLIT-seedSEED-nCOUNT.npz``, uncompressed, written
atomically) and read back afterwards. ``GENERATOR_VERSION`` in each generator module is part of
the key: change the generator, bump it, and old files are simply never read again.

The file holds ``images``, ``labels`` and ``sha256`` (of both arrays' bytes). A file that is
damaged, of the wrong shape or whose digest does not match is ignored and rewritten; a cache
folder that cannot be written leaves the set generated in memory, as before. Never raises for
the cache's sake.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dnupdate.engine.data.locate import cache_root
from dnupdate.engine.formats.weights import atomic_write

Generated = tuple[np.ndarray, np.ndarray]


def cache_path(name: str, version: int, split: str, seed: int, count: int) -> Path:
    """Where the set with this key is kept."""
    return cache_root() / "synthetic" / f"{name}-v{version}-{split}-seed{seed}-n{count}.npz"


def digest(images: np.ndarray, labels: np.ndarray) -> str:
    """sha256 over the images' then the labels' bytes (C order)."""
    hasher = hashlib.sha256()
    hasher.update(np.ascontiguousarray(images).data)
    hasher.update(np.ascontiguousarray(labels).data)
    return hasher.hexdigest()


def _read(path: Path, count: int, image_shape: tuple[int, ...]) -> Generated | None:
    """The cached set, or None when the file is missing, damaged or not this set."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            images, labels, sha = stored["images"], stored["labels"], str(stored["sha256"])
    except Exception:  # any damage at all (zip, npy header, size) means: generate it again
        return None
    if (
        images.dtype != np.uint8
        or images.shape != (count, *image_shape)
        or labels.dtype != np.int64
        or labels.shape != (count,)
        or sha != digest(images, labels)
    ):
        return None
    return images, labels


def _write(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        sha = np.array(digest(images, labels))
        atomic_write(path, lambda f: np.savez(f, images=images, labels=labels, sha256=sha))


def cached_generate(
    name: str,
    version: int,
    split: str,
    seed: int,
    count: int,
    image_shape: tuple[int, ...],
    generate: Callable[[], Generated],
) -> Generated:
    """The set from the disk cache, else ``generate()`` (then saved for next time)."""
    path = cache_path(name, version, split, seed, count)
    found = _read(path, count, image_shape)
    if found is not None:
        return found
    images, labels = generate()
    _write(path, images, labels)
    return images, labels
