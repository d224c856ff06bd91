"""NumPy/Python transcriptions of darknet's ``reorg_cpu``/``flatten`` (``blas.c``),
``forward_crop_layer`` (``crop_layer.c``) and the GPU recolouring ``rgb_to_hsv_kernel``/
``hsv_to_rgb_kernel`` (``crop_layer_kernels.cu``), loop for loop, for the kernel tests."""

from __future__ import annotations

import math

import numpy as np

F = np.float32


def reorg_cpu(x: np.ndarray, w: int, h: int, c: int, batch: int, stride: int, forward: bool):
    """``reorg_cpu`` writing a new flat array (every element is written once)."""
    x = x.reshape(-1)
    out = np.full(x.size, np.nan, dtype=np.float32)
    out_c = c // (stride * stride)
    for b in range(batch):
        for k in range(c):
            for j in range(h):
                for i in range(w):
                    in_index = i + w * (j + h * (k + c * b))
                    c2 = k % out_c
                    offset = k // out_c
                    w2 = i * stride + offset % stride
                    h2 = j * stride + offset // stride
                    out_index = w2 + w * stride * (h2 + h * stride * (c2 + out_c * b))
                    if forward:
                        out[out_index] = x[in_index]
                    else:
                        out[in_index] = x[out_index]
    return out


def flatten(x: np.ndarray, size: int, layers: int, batch: int, forward: bool) -> np.ndarray:
    """``flatten``: ``swap[b·L·S + i·L + c] = x[b·L·S + c·S + i]`` (forward) or back."""
    x = x.reshape(-1)
    swap = np.zeros_like(x)
    for b in range(batch):
        for c in range(layers):
            for i in range(size):
                i1 = b * layers * size + c * size + i
                i2 = b * layers * size + i * layers + c
                if forward:
                    swap[i2] = x[i1]
                else:
                    swap[i1] = x[i2]
    return swap


def rgb_to_hsv(r, g, b):
    """``rgb_to_hsv_kernel`` in float32 (a grey pixel gets hue 0 instead of 0/0)."""
    mx = (r if r > b else b) if r > g else (g if g > b else b)
    mn = (r if r < b else b) if r < g else (g if g < b else b)
    delta = F(mx - mn)
    v = mx
    if mx == 0:
        return F(-1), F(0), v
    s = F(delta / mx)
    if delta == 0:
        h = F(0)
    elif r == mx:
        h = F((g - b) / delta)
    elif g == mx:
        h = F(F(2) + F((b - r) / delta))
    else:
        h = F(F(4) + F((r - g) / delta))
    if h < 0:
        h = F(h + F(6))
    return h, s, v


def hsv_to_rgb(h, s, v):
    """``hsv_to_rgb_kernel`` in float32, clamped to [0, 1]."""
    if s == 0:
        r = g = b = v
    else:
        index = math.floor(h)
        f = F(h - F(index))
        p = F(v * F(F(1) - s))
        q = F(v * F(F(1) - F(s * f)))
        t = F(v * F(F(1) - F(s * F(F(1) - f))))
        r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][
            index if index < 5 else 5
        ]
    return tuple(F(min(max(val, F(0)), F(1))) for val in (r, g, b))


def crop(x, out_h, out_w, top, left, flip, scale, trans, colour=None):
    """``forward_crop_layer`` with a given window; ``colour`` (B×2 saturation, exposure)
    recolours each pixel first as the GPU kernel does."""
    batch, c, _, w = x.shape
    out = np.zeros((batch, c, out_h, out_w), dtype=np.float32)
    for b in range(batch):
        for i in range(out_h):
            for j in range(out_w):
                col = w - left - j - 1 if flip else j + left
                pixel = [x[b, k, i + top, col] for k in range(c)]
                if colour is not None:
                    h, s, v = rgb_to_hsv(*pixel)
                    pixel = hsv_to_rgb(h, F(s * colour[b, 0]), F(v * colour[b, 1]))
                for k in range(c):
                    out[b, k, i, j] = F(F(pixel[k] * F(scale)) + F(trans))
    return out
