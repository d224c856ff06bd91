"""Plain NumPy (float64) convolution: the definition both darknet and Caffe implement.

``y[b, o, i, j] = Σ_{c in o's group, ky, kx} W[o, c, ky, kx] · xpad[b, g·C/G + c,
i·s_h + ky·d, j·s_w + kx·d] + bias[o]`` with ``xpad`` the input zero-padded by ``p`` on every
side (cross-correlation, no kernel flip).
"""

from __future__ import annotations

import numpy as np


def conv_out(size: int, kernel: int, stride: int, pad: int, dilation: int = 1) -> int:
    """``(size + 2·pad − (dilation·(kernel − 1) + 1)) // stride + 1``."""
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def conv_forward(x, w, bias, stride=(1, 1), pad=(0, 0), groups=1, dilation=1):
    """Direct convolution, one output position at a time (float64)."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    batch, _channels, height, width = x.shape
    filters, per_group, kh, kw = w.shape
    oh = conv_out(height, kh, stride[0], pad[0], dilation)
    ow = conv_out(width, kw, stride[1], pad[1], dilation)
    xpad = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    per_out = filters // groups
    y = np.zeros((batch, filters, oh, ow))
    for o in range(filters):
        g = o // per_out
        xs = xpad[:, g * per_group : (g + 1) * per_group]
        for i in range(oh):
            for j in range(ow):
                rows = i * stride[0] + dilation * np.arange(kh)
                cols = j * stride[1] + dilation * np.arange(kw)
                patch = xs[:, :, rows][:, :, :, cols]
                y[:, o, i, j] = np.einsum("bcyx,cyx->b", patch, w[o])
        if bias is not None:
            y[:, o] += bias[o]
    return y


def conv_backward(x, w, dy, stride=(1, 1), pad=(0, 0), groups=1, dilation=1):
    """Gradients of ``Σ dy·y`` w.r.t. ``x``, ``W`` and the bias (float64): ``(dx, dw, db)``."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    dy = np.asarray(dy, np.float64)
    _batch, _channels, height, width = x.shape
    filters, per_group, kh, kw = w.shape
    _, _, oh, ow = dy.shape
    xpad = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    dxpad = np.zeros_like(xpad)
    dw = np.zeros_like(w)
    per_out = filters // groups
    for o in range(filters):
        g = o // per_out
        lo, hi = g * per_group, (g + 1) * per_group
        for i in range(oh):
            for j in range(ow):
                rows = i * stride[0] + dilation * np.arange(kh)
                cols = j * stride[1] + dilation * np.arange(kw)
                patch = xpad[:, lo:hi][:, :, rows][:, :, :, cols]
                dw[o] += np.einsum("b,bcyx->cyx", dy[:, o, i, j], patch)
                grad = np.einsum("b,cyx->bcyx", dy[:, o, i, j], w[o])
                dxpad[:, lo:hi, rows[:, None], cols[None, :]] += grad
    dx = dxpad[:, :, pad[0] : pad[0] + height, pad[1] : pad[1] + width]
    db = dy.sum(axis=(0, 2, 3))
    return dx, dw, db


def darknet_1x1_shortcut_forward(x, w, out_hw, groups=1):
    """darknet quirk (CPU ``size == 1`` path): the group's input memory read as a
    ``(C/G) × (out_h·out_w)`` matrix with row stride ``out_h·out_w``, whatever the stride and
    padding; reads past the batch give 0 (undefined in darknet)."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    batch = x.shape[0]
    flat = x.reshape(-1)
    filters, per_group = w.shape[:2]
    n = out_hw[0] * out_hw[1]
    per_image = flat.size // batch
    per_filter_group = filters // groups
    y = np.zeros((batch, filters, n))
    padded = np.concatenate([flat, np.zeros(per_group * n * groups + per_image)])
    for b in range(batch):
        for g in range(groups):
            start = b * per_image + g * (per_image // groups)
            col = padded[start : start + per_group * n].reshape(per_group, n)
            rows = slice(g * per_filter_group, (g + 1) * per_filter_group)
            y[b, rows] = w[rows, :, 0, 0] @ col
    return y.reshape(batch, filters, *out_hw)


def stride1_case(case: tuple, seed: int = 0):
    """A random stride-1 convolution ``case = (batch, C, H, W, filters, kh, kw, ph, pw, groups,
    dilation)``: ``x (B, C, H, W)``, weights ``(G, m, (C/G)·kh·kw)`` and the geometry
    ``((kh, kw), (1, 1), (ph, pw), dilation, (out_h, out_w))`` the per-image kernels take."""
    return strided_case(case, (1, 1), seed)


def strided_case(case: tuple, stride: tuple[int, int], seed: int = 0):
    """:func:`stride1_case` with the stride ``(s_h, s_w)``: outputs
    ``⌊(H + 2p − d·(k − 1) − 1)/s⌋ + 1`` a side."""
    batch, c, h, w, f, kh, kw, ph, pw, g, d = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, c, h, w)).astype(np.float32)
    weights = rng.standard_normal((g, f // g, (c // g) * kh * kw)).astype(np.float32)
    oh = (h + 2 * ph - d * (kh - 1) - 1) // stride[0] + 1
    ow = (w + 2 * pw - d * (kw - 1) - 1) // stride[1] + 1
    return x, weights, ((kh, kw), tuple(stride), (ph, pw), d, (oh, ow))
