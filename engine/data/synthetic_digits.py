"""``synthetic-digits``: a procedurally generated, learnable stand-in for MNIST.

SYNTHETIC DATA, not handwriting. 28×28 grayscale uint8 images of 10 classes of digit-like
glyphs. Each class has two stroke skeletons (polylines and arcs in a unit box). Their distance
fields are computed once; image pixels are mapped into glyph space through a random affine
transform (rotation ±15°, scale 0.8–1.15, aspect 0.85–1.15, shear ±0.25, shift ±0.08) plus a
smooth sinusoidal warp, and inked where the distance is below a random stroke half-width
(0.03–0.07 of the box, about 1.7–4 px strokes) with a one-pixel anti-aliased edge. Then a random
ink level (0.7–1) and Gaussian noise (σ up to 8% of full scale) are applied.

Determinism: sample ``i`` depends only on (seed, split, i), never on the set size: samples are
drawn in fixed chunks of 1024, each from its own ``SeedSequence([seed, split, chunk])``.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np

from dnupdate.engine.data.synthetic_chunks import chunk_streams, generate_chunked

SIDE = 28
#: part of the disk cache's key (engine.data.synthetic_cache): bump it when the images change
GENERATOR_VERSION = 1
FIELD = 96  # distance-field resolution over glyph space [-0.25, 1.25]^2
FIELD_LO, FIELD_HI = -0.25, 1.25


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float) -> list:
    """Points on an elliptical arc from angle a0 to a1 (degrees, 90 = up, y grows down)."""
    steps = max(4, int(abs(a1 - a0) / 12))
    angles = np.radians(np.linspace(a0, a1, steps + 1))
    return [(cx + rx * np.cos(a), cy - ry * np.sin(a)) for a in angles]


def _glyphs() -> list[list[list[tuple[float, float]]]]:
    """Stroke skeletons: for each of 20 variants (class = index // 2), a list of polylines."""
    line = lambda *pts: list(pts)  # noqa: E731
    return [
        [_arc(0.5, 0.5, 0.27, 0.4, 0, 360)],
        [_arc(0.5, 0.5, 0.2, 0.4, 0, 360)],
        [line((0.5, 0.1), (0.5, 0.9))],
        [line((0.33, 0.27), (0.52, 0.1), (0.52, 0.9)), line((0.34, 0.9), (0.7, 0.9))],
        [[*_arc(0.5, 0.33, 0.26, 0.23, 160, -30), (0.22, 0.9), (0.8, 0.9)]],
        [[*_arc(0.48, 0.3, 0.24, 0.2, 170, -40), (0.25, 0.88), (0.45, 0.8), (0.8, 0.9)]],
        [_arc(0.5, 0.3, 0.24, 0.2, 150, -90), _arc(0.5, 0.7, 0.27, 0.2, 90, -150)],
        [line((0.25, 0.1), (0.75, 0.1), (0.45, 0.45)), _arc(0.48, 0.67, 0.28, 0.23, 100, -150)],
        [line((0.66, 0.9), (0.66, 0.1), (0.2, 0.65), (0.82, 0.65))],
        [line((0.3, 0.1), (0.24, 0.58), (0.82, 0.58)), line((0.66, 0.3), (0.66, 0.9))],
        [line((0.76, 0.1), (0.3, 0.1), (0.27, 0.47)), _arc(0.5, 0.66, 0.26, 0.23, 140, -145)],
        [
            line(
                (0.74, 0.12),
                (0.32, 0.14),
                (0.3, 0.5),
                (0.55, 0.46),
                (0.74, 0.62),
                (0.64, 0.86),
                (0.28, 0.86),
            )
        ],
        [_arc(0.66, 0.56, 0.38, 0.45, 110, 200), _arc(0.5, 0.68, 0.23, 0.21, 0, 360)],
        [line((0.68, 0.1), (0.3, 0.6)), _arc(0.5, 0.7, 0.22, 0.19, 0, 360)],
        [line((0.22, 0.1), (0.78, 0.1), (0.4, 0.9))],
        [line((0.2, 0.14), (0.8, 0.1), (0.5, 0.9)), line((0.36, 0.5), (0.7, 0.5))],
        [_arc(0.5, 0.3, 0.2, 0.19, 0, 360), _arc(0.5, 0.7, 0.25, 0.21, 0, 360)],
        [_arc(0.5, 0.28, 0.23, 0.17, 0, 360), _arc(0.5, 0.68, 0.21, 0.22, 0, 360)],
        [_arc(0.48, 0.32, 0.23, 0.21, 0, 360), line((0.71, 0.34), (0.64, 0.9))],
        [_arc(0.5, 0.3, 0.22, 0.2, -20, 340), _arc(0.28, 0.3, 0.44, 0.6, 0, -75)],
    ]


def _segment_distance(px: np.ndarray, py: np.ndarray, polyline) -> np.ndarray:
    """Distance from each point to a polyline: min over its segments of |p - proj(p)|."""
    pts = np.asarray(polyline, dtype=np.float64)
    best = np.full(px.shape, np.inf)
    for (ax, ay), (bx, by) in itertools.pairwise(pts):
        dx, dy = bx - ax, by - ay
        t = np.clip(((px - ax) * dx + (py - ay) * dy) / max(dx * dx + dy * dy, 1e-12), 0, 1)
        best = np.minimum(best, np.hypot(px - ax - t * dx, py - ay - t * dy))
    return best


@lru_cache(maxsize=1)
def distance_fields() -> np.ndarray:
    """float32 (20, FIELD, FIELD): distance to each glyph variant's skeleton, in box units."""
    axis = np.linspace(FIELD_LO, FIELD_HI, FIELD)
    py, px = np.meshgrid(axis, axis, indexing="ij")
    fields = []
    for glyph in _glyphs():
        fields.append(np.min([_segment_distance(px, py, stroke) for stroke in glyph], axis=0))
    return np.asarray(fields, dtype=np.float32)


def _chunk(seed: int, split_code: int, chunk: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Render ``count`` samples of chunk ``chunk``: (uint8 count×28×28, labels int64)."""
    params_rng, noise_rng = chunk_streams(seed, split_code, chunk, 0xD161)
    u = params_rng.random((count, 16)).astype(np.float32)
    labels = np.minimum((u[:, 0] * 10).astype(np.int64), 9)
    variant = labels * 2 + (u[:, 1] < 0.5)
    theta = np.radians((u[:, 2] - 0.5) * 30, dtype=np.float32)
    scale = 0.8 + 0.35 * u[:, 3]
    aspect = 0.85 + 0.3 * u[:, 4]
    shear = (u[:, 5] - 0.5) * 0.5
    shift_x, shift_y = (u[:, 6] - 0.5) * 0.16, (u[:, 7] - 0.5) * 0.16
    half_width = 0.03 + 0.04 * u[:, 8]
    ink = 0.7 + 0.3 * u[:, 9]
    noise_sigma = 0.08 * u[:, 10]
    warp_amp, warp_freq, warp_phase = 0.03 * u[:, 11], 1 + 2 * u[:, 12], 2 * np.pi * u[:, 13]

    # Forward map glyph→image: p = c + t + R(θ)·Shear·diag(s·a, s/a)·(g − c); invert it.
    cos, sin = np.cos(theta), np.sin(theta)
    sx, sy = scale * aspect, scale / aspect
    m00, m01 = cos * sx, (cos * shear - sin) * sy
    m10, m11 = sin * sx, (sin * shear + cos) * sy
    det = m00 * m11 - m01 * m10
    centres = ((np.arange(SIDE) + 0.5) / SIDE).astype(np.float32)
    gy, gx = np.meshgrid(centres, centres, indexing="ij")
    qx = gx.reshape(1, -1) - 0.5 - shift_x[:, None]
    qy = gy.reshape(1, -1) - 0.5 - shift_y[:, None]
    ux = (m11[:, None] * qx - m01[:, None] * qy) / det[:, None] + 0.5
    uy = (-m10[:, None] * qx + m00[:, None] * qy) / det[:, None] + 0.5
    two_pi_f = np.float32(2 * np.pi) * warp_freq[:, None]
    ux += warp_amp[:, None] * np.sin(two_pi_f * uy + warp_phase[:, None])
    uy += warp_amp[:, None] * np.sin(two_pi_f * ux - warp_phase[:, None])

    distance = _bilinear(distance_fields(), variant, ux, uy)
    alpha = np.clip((half_width[:, None] - distance) * np.float32(SIDE) + np.float32(0.5), 0, 1)
    value = alpha * ink[:, None]
    value += noise_rng.standard_normal(value.shape, dtype=np.float32) * noise_sigma[:, None]
    images = np.clip(np.rint(value * np.float32(255)), 0, 255).astype(np.uint8)
    return images.reshape(count, SIDE, SIDE), labels


def _bilinear(fields: np.ndarray, which: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample ``fields[which[i]]`` at glyph-space points (x, y), clamped at the border."""
    res = fields.shape[-1]
    to_grid = np.float32((res - 1) / (FIELD_HI - FIELD_LO))
    top_index = np.float32(res - 1.001)
    fx = np.clip((x - np.float32(FIELD_LO)) * to_grid, 0, top_index)
    fy = np.clip((y - np.float32(FIELD_LO)) * to_grid, 0, top_index)
    ix, iy = fx.astype(np.int32), fy.astype(np.int32)
    wx, wy = fx - ix, fy - iy
    flat = fields.reshape(-1)
    base = (which[:, None] * (res * res)).astype(np.int32) + iy * res + ix
    top = flat[base] * (1 - wx) + flat[base + 1] * wx
    bottom = flat[base + res] * (1 - wx) + flat[base + res + 1] * wx
    return top * (1 - wy) + bottom * wy


def generate_digits(
    size: int, seed: int = 0, split: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """``size`` synthetic digits: (uint8 size×1×28×28, int64 labels in 0..9)."""
    return generate_chunked(size, seed, split, _chunk, (1, SIDE, SIDE))
