"""Size-independent generation shared by the synthetic datasets.

Sample ``i`` depends only on (seed, split, i), never on the set size: samples are drawn in fixed
chunks of :data:`CHUNK`, chunk ``k`` from its own ``SeedSequence([seed, split code, k, salt])``
spawned into two streams (sample parameters, pixel noise). A set of ``size`` samples is the
first ``size`` samples of chunks 0, 1, ...
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

CHUNK = 1024
SPLIT_CODES = {"train": 0, "test": 1}  # any other split name draws from code 2

# (seed, split code, chunk index, count) → (uint8 images, int64 labels) of that chunk.
ChunkRenderer = Callable[[int, int, int, int], tuple[np.ndarray, np.ndarray]]


def chunk_streams(
    seed: int, split_code: int, chunk: int, salt: int
) -> tuple[np.random.Generator, np.random.Generator]:
    """The (parameter, noise) generators of one chunk; ``salt`` keeps datasets apart."""
    params, noise = np.random.SeedSequence([seed, split_code, chunk, salt]).spawn(2)
    return np.random.default_rng(params), np.random.default_rng(noise)


def generate_chunked(
    size: int, seed: int, split: str, render: ChunkRenderer, image_shape: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """``size`` samples: (uint8 size×C×H×W, int64 labels), rendered a whole chunk at a time."""
    split_code = SPLIT_CODES.get(split, 2)
    images = np.empty((size, *image_shape), dtype=np.uint8)
    labels = np.empty(size, dtype=np.int64)
    for chunk, start in enumerate(range(0, size, CHUNK)):
        count = min(CHUNK, size - start)
        chunk_images, chunk_labels = render(seed, split_code, chunk, CHUNK)
        images[start : start + count] = chunk_images[:count].reshape(count, *image_shape)
        labels[start : start + count] = chunk_labels[:count]
    return images, labels
