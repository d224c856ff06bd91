"""Kernels of darknet's ``[reorg]`` and ``[crop]`` (CPU, Numba).

``reorg`` is darknet's ``reorg_cpu`` (``blas.c``) on flat arrays, with the input dimensions
``w, h, c`` (per image) and ``out_c = c / s²``. For every input position ``(k, j, i)`` of image
``b``::

    in  = i + w·(j + h·(k + c·b))
    c2 = k mod out_c,  offset = k / out_c
    out = (i·s + offset mod s) + w·s·((j·s + offset / s) + h·s·(c2 + out_c·b))
    forward:  y[out] = x[in]          otherwise:  y[in] = x[out]

darknet quirk: ``[reorg]`` with ``reverse=0`` calls it with ``forward=0`` (and ``reverse=1``
with ``forward=1``), its backward with the other value; the map is a permutation, so each
direction assigns every element once.

``crop_forward`` is ``forward_crop_layer``: ``y[b, k, i, j] = scale·x[b, k, top + i, col] +
trans`` with ``col = left + j``, or ``W − left − j − 1`` when flipped. ``colour`` (``B×2``:
each image's saturation and exposure factors; zero rows = none) recolours 3-channel pixels
first, as darknet's GPU ``levels_image_kernel`` does: RGB → HSV, ``S·sat``, ``V·exp``, back to
RGB clamped to ``[0, 1]`` (:func:`levels_channel`, float32 throughout).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

F0 = np.float32(0.0)
F1 = np.float32(1.0)
F2 = np.float32(2.0)
F4 = np.float32(4.0)
F6 = np.float32(6.0)


@njit(cache=True, parallel=True)
def _reorg(x, w, h, c, batch, stride, forward, out):  # pragma: no cover - compiled
    out_c = c // (stride * stride)
    for plane in prange(batch * c):
        b = plane // c
        k = plane % c
        c2 = k % out_c
        offset = k // out_c
        for j in range(h):
            for i in range(w):
                in_index = i + w * (j + h * (k + c * b))
                w2 = i * stride + offset % stride
                h2 = j * stride + offset // stride
                out_index = w2 + w * stride * (h2 + h * stride * (c2 + out_c * b))
                if forward:
                    out[out_index] = x[in_index]
                else:
                    out[in_index] = x[out_index]


def reorg(x: np.ndarray, out: np.ndarray, w: int, h: int, c: int, stride: int, forward: bool):
    """``reorg_cpu(x, w, h, c, batch, stride, forward, out)`` (see the module docstring);
    ``x``/``out`` are any contiguous float32 arrays of ``batch·w·h·c`` values."""
    batch = x.size // (w * h * c)
    _reorg(x.reshape(-1), w, h, c, batch, stride, bool(forward), out.reshape(-1))


@njit(inline="always")
def levels_channel(r, g, b, saturation, exposure, channel):
    """One channel (0 R, 1 G, 2 B) of darknet's GPU recolouring of the pixel ``(r, g, b)``:
    ``rgb_to_hsv``, ``s·saturation``, ``v·exposure``, ``hsv_to_rgb`` with the result clamped
    to ``[0, 1]``. A grey pixel (max = min) keeps hue 0 where darknet divides 0 by 0: its
    saturation is 0, so the hue is never used."""
    big = (r if r > b else b) if r > g else (g if g > b else b)
    small = (r if r < b else b) if r < g else (g if g < b else b)
    delta = big - small
    v = big
    hue = F0
    s = F0
    if big != F0:
        s = delta / big
        if delta != F0:
            if r == big:
                hue = (g - b) / delta
            elif g == big:
                hue = F2 + (b - r) / delta
            else:
                hue = F4 + (r - g) / delta
            if hue < F0:
                hue = hue + F6
    s = s * saturation
    v = v * exposure
    if s == F0:
        red = v
        green = v
        blue = v
    else:
        index = int(np.floor(hue))
        f = hue - np.float32(index)
        p = v * (F1 - s)
        q = v * (F1 - s * f)
        t = v * (F1 - s * (F1 - f))
        if index == 0:
            red, green, blue = v, t, p
        elif index == 1:
            red, green, blue = q, v, p
        elif index == 2:
            red, green, blue = p, v, t
        elif index == 3:
            red, green, blue = p, q, v
        elif index == 4:
            red, green, blue = t, p, v
        else:
            red, green, blue = v, p, q
    value = red if channel == 0 else green if channel == 1 else blue
    return F0 if value < F0 else F1 if value > F1 else value


@njit(cache=True, parallel=True)
def _crop(x, out, top, left, flip, scale, trans, colour):  # pragma: no cover - compiled
    batch, channels, _, width = x.shape
    _, _, out_h, out_w = out.shape
    recolour = colour.shape[0] > 0
    for b in prange(batch):
        for i in range(out_h):
            row = i + top
            for j in range(out_w):
                col = width - left - j - 1 if flip else j + left
                if recolour:
                    r, g, bl = x[b, 0, row, col], x[b, 1, row, col], x[b, 2, row, col]
                    for k in range(3):
                        value = levels_channel(r, g, bl, colour[b, 0], colour[b, 1], k)
                        out[b, k, i, j] = value * scale + trans
                else:
                    for k in range(channels):
                        out[b, k, i, j] = x[b, k, row, col] * scale + trans


def crop_forward(x, out, top: int, left: int, flip: bool, scale: float, trans: float, colour):
    """``forward_crop_layer`` into ``out (B, C, h, w)`` from ``x (B, C, H, W)``; see the
    module docstring (``colour``: ``(B, 2)`` float32 or ``(0, 2)`` for none)."""
    _crop(x, out, int(top), int(left), bool(flip), np.float32(scale), np.float32(trans), colour)
