"""``synthetic-shapes``: a procedurally generated, learnable stand-in for CIFAR-10.

SYNTHETIC DATA. 32×32 RGB uint8 images of 10 classes: disk, square, triangle, plus sign, ring,
star, crescent (shapes on a background), and stripes, checkerboard, polka dots (textures over
the whole image). Each sample has a random rotation (any angle), size, position, foreground and
background colour (at least 0.3 apart in mean intensity), texture frequency, and Gaussian noise
(σ up to 6% of full scale). Shapes are drawn from signed distances with a one-pixel
anti-aliased edge.

Determinism: as for ``synthetic-digits``, sample ``i`` depends only on (seed, split, i).
"""

from __future__ import annotations

import numpy as np

from dnupdate.engine.data.synthetic_chunks import chunk_streams, generate_chunked

SIDE = 32
#: part of the disk cache's key (engine.data.synthetic_cache): bump it when the images change
GENERATOR_VERSION = 1
CLASS_NAMES = (
    "disk",
    "square",
    "triangle",
    "plus",
    "ring",
    "star",
    "crescent",
    "stripes",
    "checkerboard",
    "dots",
)


def _inside(label: int, x: np.ndarray, y: np.ndarray, size: np.ndarray, freq: np.ndarray):
    """Signed distance (positive inside, in image-width units) of class ``label`` at local
    coordinates (x, y) for objects of radius ``size`` and textures of frequency ``freq``."""
    r = np.hypot(x, y)
    if label == 0:
        return size - r
    if label == 1:
        return 0.8 * size - np.maximum(np.abs(x), np.abs(y))
    if label == 2:  # equilateral triangle with circumradius `size`
        k = np.float32(np.sqrt(3.0))
        return (
            np.minimum(
                np.minimum(0.5 * size + y, 0.5 * size - (k * x + y) / 2),
                0.5 * size - (-k * x + y) / 2,
            )
            * 0.9
        )
    if label == 3:
        arm = 0.28 * size
        bar = np.maximum(
            np.minimum(size - np.abs(x), arm - np.abs(y)),
            np.minimum(size - np.abs(y), arm - np.abs(x)),
        )
        return bar
    if label == 4:
        return 0.22 * size - np.abs(r - 0.75 * size)
    if label == 5:
        angle = np.arctan2(y, x)
        return size * (0.62 + 0.38 * np.cos(5 * angle)) - r
    if label == 6:
        return np.minimum(size - r, np.hypot(x - 0.45 * size, y) - 0.8 * size)
    if label == 7:
        return np.sin(2 * np.pi * freq * x) / (2 * np.pi * freq)
    if label == 8:
        return np.sin(2 * np.pi * freq * x) * np.sin(2 * np.pi * freq * y) / (2 * np.pi * freq)
    spacing = 1.0 / freq
    cx = x - spacing * np.round(x / spacing)
    cy = y - spacing * np.round(y / spacing)
    return 0.3 * spacing - np.hypot(cx, cy)


def _colours(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Foreground and background RGB in [0, 1] whose mean intensities differ by ≥ 0.3."""
    fg = u[:, 0:3].copy()
    bg = u[:, 3:6].copy()
    gap = fg.mean(axis=1) - bg.mean(axis=1)
    push = np.where(np.abs(gap) < 0.3, (0.3 - np.abs(gap)) / 2 + 0.01, 0)[:, None]
    direction = np.where(gap >= 0, 1, -1)[:, None]
    fg = np.clip(fg + push * direction, 0, 1)
    bg = np.clip(bg - push * direction, 0, 1)
    return fg, bg


def _chunk(seed: int, split_code: int, chunk: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    params_rng, noise_rng = chunk_streams(seed, split_code, chunk, 0x5A9E)
    u = params_rng.random((count, 16)).astype(np.float32)
    labels = np.minimum((u[:, 0] * 10).astype(np.int64), 9)
    theta = u[:, 1] * np.float32(2 * np.pi)
    size = 0.22 + 0.16 * u[:, 2]
    shift_x, shift_y = (u[:, 3] - 0.5) * 0.3, (u[:, 4] - 0.5) * 0.3
    freq = 3 + 4 * u[:, 5]
    fg, bg = _colours(u[:, 6:12])
    noise_sigma = 0.06 * u[:, 12]

    centres = ((np.arange(SIDE) + 0.5) / SIDE - 0.5).astype(np.float32)
    gy, gx = np.meshgrid(centres, centres, indexing="ij")
    qx = gx.reshape(1, -1) - shift_x[:, None]
    qy = gy.reshape(1, -1) - shift_y[:, None]
    cos, sin = np.cos(theta)[:, None], np.sin(theta)[:, None]
    lx, ly = cos * qx + sin * qy, -sin * qx + cos * qy

    alpha = np.empty((count, SIDE * SIDE), dtype=np.float32)
    for label in range(10):
        rows = np.flatnonzero(labels == label)
        if rows.size:
            sd = _inside(label, lx[rows], ly[rows], size[rows, None], freq[rows, None])
            alpha[rows] = np.clip(sd * SIDE + 0.5, 0, 1)
    image = bg[:, :, None] + (fg - bg)[:, :, None] * alpha[:, None, :]
    image += noise_rng.standard_normal(image.shape, dtype=np.float32) * noise_sigma[:, None, None]
    pixels = np.clip(np.rint(image * np.float32(255)), 0, 255).astype(np.uint8)
    return pixels.reshape(count, 3, SIDE, SIDE), labels


def generate_shapes(
    size: int, seed: int = 0, split: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """``size`` synthetic shapes: (uint8 size×3×32×32, int64 labels in 0..9)."""
    return generate_chunked(size, seed, split, _chunk, (3, SIDE, SIDE))
