"""Convolution kernels: im2col, col2im, bias add and bias gradient (CPU, Numba).

Layouts (NCHW, float32, C-contiguous):

* ``x``: ``(B, C, H, W)``; ``col``: ``(G, K, B·N)`` with ``K = (C/G)·kh·kw`` rows ordered
  ``(c_in_group·kh + ky)·kw + kx`` (darknet's and Caffe's im2col row order) and ``B·N`` columns
  ordered ``b·N + y·out_w + x`` (``N = out_h·out_w``): every image's columns side by side, so one
  GEMM per group covers the whole batch (darknet and Caffe run one GEMM per image; only the
  summation order differs);
* ``col[g, row, b·N + y·out_w + x] = x[b, g·C/G + c, y·s_h − p_h + ky·d, x·s_w − p_w + kx·d]``,
  or 0 outside the image: cross-correlation with symmetric zero padding, as both frameworks.

The per-image unfold/fold (:func:`unfold_image`, :func:`fold_image_add`) serve both this
whole-batch layout and the per-image convolution (``conv_images``). Parallel loops run over
``(image, group)`` pairs: each iteration owns its columns of ``col`` (im2col) or its channels of
``dx`` (col2im), so results do not depend on the thread count.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(inline="always")
def _inside_columns(shift, stride, width, out_w):
    """``[first, end)``: the output columns ``ox`` whose input column ``ox·stride + shift``
    lies in ``[0, width)`` (the rest read the zero padding)."""
    first = max(0, -(shift // stride))  # ceil(−shift / stride)
    end = min(out_w, max(first, -((shift - width) // stride)))  # ceil((width − shift) / stride)
    return first, end


@njit(inline="always")
def _u(index):
    """An index known to be ≥ 0, as unsigned: Numba then drops its negative-index wraparound
    test, which otherwise keeps these copy loops from vectorising (3–4× slower)."""
    return np.uint64(index)


@njit(cache=True)
def unfold_image(x, target, base, row_stride, rows, c0, kh, kw, sh, sw, ph, pw, dil, out_h,
                 out_w):  # fmt: skip
    """im2col of one image ``x (C, H, W)`` for the ``rows / (kh·kw)`` channels of one group
    from ``c0``, into the flat ``target``: row ``(c·kh + ky)·kw + kx`` starts at
    ``base + row·row_stride`` and holds ``x[c0 + c, oy·sh − ph + ky·d, ox·sw − pw + kx·d]`` at
    ``oy·out_w + ox``, 0 outside the image. Flat indices, so each row segment is one plain
    (vectorised) loop. A per-image ``(K, N)`` buffer has ``row_stride = N``; the whole-batch
    ``(G, K, B·N)`` layout ``row_stride = B·N`` and ``base = (g·K)·B·N + b·N``."""
    height, width = x.shape[1], x.shape[2]
    source = x.reshape(-1)
    plane = height * width
    zero = np.float32(0.0)
    for c in range(rows // (kh * kw)):
        for ky in range(kh):
            for kx in range(kw):
                row = base + ((c * kh + ky) * kw + kx) * row_stride
                shift = kx * dil - pw
                first, end = _inside_columns(shift, sw, width, out_w)
                for oy in range(out_h):
                    iy = oy * sh - ph + ky * dil
                    d = row + oy * out_w
                    if iy < 0 or iy >= height:
                        for ox in range(out_w):
                            target[_u(d + ox)] = zero
                        continue
                    for ox in range(first):  # left padding
                        target[_u(d + ox)] = zero
                    start = (c0 + c) * plane + iy * width + shift
                    if sw == 1:
                        for ox in range(first, end):
                            target[_u(d + ox)] = source[_u(start + ox)]
                    else:
                        for ox in range(first, end):
                            target[_u(d + ox)] = source[_u(start + ox * sw)]
                    for ox in range(end, out_w):  # right padding
                        target[_u(d + ox)] = zero


@njit(cache=True)
def fold_image_add(source, base, row_stride, rows, dx, c0, kh, kw, sh, sw, ph, pw, dil, out_h,
                   out_w):  # fmt: skip
    """Transpose of :func:`unfold_image`: ``dx[c0 + c, iy, ix] += source[row, column]`` for one
    image ``dx (C, H, W)`` (cells in the padding dropped), rows in order, as darknet's
    ``col2im_cpu``."""
    height, width = dx.shape[1], dx.shape[2]
    target = dx.reshape(-1)
    plane = height * width
    for c in range(rows // (kh * kw)):
        for ky in range(kh):
            for kx in range(kw):
                row = base + ((c * kh + ky) * kw + kx) * row_stride
                shift = kx * dil - pw
                first, end = _inside_columns(shift, sw, width, out_w)
                for oy in range(out_h):
                    iy = oy * sh - ph + ky * dil
                    if iy < 0 or iy >= height:
                        continue
                    d = row + oy * out_w
                    start = (c0 + c) * plane + iy * width + shift
                    if sw == 1:
                        for ox in range(first, end):
                            target[_u(start + ox)] += source[_u(d + ox)]
                    else:
                        for ox in range(first, end):
                            target[_u(start + ox * sw)] += source[_u(d + ox)]


@njit(parallel=True, cache=True)
def _im2col(x, col, kh, kw, sh, sw, ph, pw, dil, out_h, out_w):
    batch, channels = x.shape[0], x.shape[1]
    groups, rows, columns = col.shape
    target = col.reshape(-1)
    n = out_h * out_w
    for task in prange(batch * groups):  # each task owns one image's columns of one group
        b = task // groups
        g = task % groups
        c0 = g * (channels // groups)
        unfold_image(x[b], target, g * rows * columns + b * n, columns, rows, c0,
                     kh, kw, sh, sw, ph, pw, dil, out_h, out_w)  # fmt: skip


@njit(parallel=True, cache=True)
def _col2im_add(col, dx, kh, kw, sh, sw, ph, pw, dil, out_h, out_w):
    batch, channels = dx.shape[0], dx.shape[1]
    groups, rows, columns = col.shape
    source = col.reshape(-1)
    n = out_h * out_w
    for task in prange(batch * groups):  # each task owns one image's channels of one group
        b = task // groups
        g = task % groups
        c0 = g * (channels // groups)
        fold_image_add(source, g * rows * columns + b * n, columns, rows, dx[b], c0,
                       kh, kw, sh, sw, ph, pw, dil, out_h, out_w)  # fmt: skip


@njit(parallel=True, cache=True)
def _flat_reinterpret(x, col, batch):
    # darknet quirk: the 1×1 shortcut hands the group's input straight to gemm as a K×N matrix
    # with row stride N, whatever the stride and padding; reads past the image continue into
    # the next image (past the last one: 0 here, undefined in darknet).
    flat = x.reshape(-1)
    groups, rows, columns = col.shape
    n = columns // batch
    per_image = flat.size // batch
    per_group = per_image // groups
    for task in prange(batch * groups):
        b = task // groups
        g = task % groups
        start = b * per_image + g * per_group
        for r in range(rows):
            for j in range(n):
                k = start + r * n + j
                col[g, r, b * n + j] = flat[k] if k < flat.size else 0.0


@njit(cache=True)
def _flat_reinterpret_add(col, dx, batch):
    flat = dx.reshape(-1)
    groups, rows, columns = col.shape
    n = columns // batch
    per_image = flat.size // batch
    per_group = per_image // groups
    # serial over images: with the darknet quirk a group's reads may overlap the next image
    for b in range(batch):
        for g in range(groups):
            start = b * per_image + g * per_group
            for r in range(rows):
                for j in range(n):
                    k = start + r * n + j
                    if k < flat.size:
                        flat[k] += col[g, r, b * n + j]


@njit(parallel=True, cache=True)
def _bias_add(y, bias):
    batch, channels, n = y.shape
    for b in prange(batch):  # one task per image (a connected layer's N is 1)
        for c in range(channels):
            v = bias[c]
            for j in range(n):
                y[b, c, j] += v


#: channels per task of :func:`_bias_grad` when ``N = 1``
BIAS_BLOCK = 64


@njit(parallel=True, cache=True)
def _bias_grad(delta, grad, alpha):
    batch, channels, n = delta.shape
    a = np.float32(alpha)
    # each channel's float32 sum in (b, j) order, whatever the task layout
    for block in prange((channels + BIAS_BLOCK - 1) // BIAS_BLOCK):
        c0 = block * BIAS_BLOCK
        c1 = min(channels, c0 + BIAS_BLOCK)
        totals = np.zeros(c1 - c0, dtype=np.float32)
        if n == 1:  # a connected layer: a row per image, channels side by side (vectorises)
            for b in range(batch):
                row = delta[b, c0:c1, 0]
                for k in range(c1 - c0):
                    totals[k] += row[k]
        else:
            for k in range(c1 - c0):
                total = np.float32(0.0)
                for b in range(batch):
                    plane = delta[b, c0 + k]
                    for j in range(n):
                        total += plane[j]
                totals[k] = total
        for k in range(c1 - c0):
            grad[c0 + k] += a * totals[k]


def im2col(
    x: np.ndarray,
    col: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pad: tuple[int, int],
    dilation: int,
    out_hw: tuple[int, int],
) -> None:
    """Unfold ``x (B,C,H,W)`` into ``col (G,K,B·N)`` (module docstring); zeros outside."""
    _im2col(x, col, kernel[0], kernel[1], stride[0], stride[1], pad[0], pad[1], dilation, *out_hw)


def col2im_add(
    col: np.ndarray,
    dx: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pad: tuple[int, int],
    dilation: int,
    out_hw: tuple[int, int],
) -> None:
    """Fold ``col (G,K,B·N)`` back and **add** into ``dx (B,C,H,W)`` (darknet ``col2im_cpu``
    and Caffe ``col2im`` both accumulate; cells in the padding are dropped)."""
    _col2im_add(
        col, dx, kernel[0], kernel[1], stride[0], stride[1], pad[0], pad[1], dilation, *out_hw
    )


def flat_as_col(x: np.ndarray, col: np.ndarray) -> None:
    """darknet quirk (1×1 convolution shortcut, ``size == 1``): use the input memory itself as
    the ``K × N`` matrix, ignoring stride and padding:
    ``col[g, r, b·N + j] = flat(x)[start + r·N + j]`` with ``start`` the group's first input
    value in image ``b``."""
    _flat_reinterpret(x, col, x.shape[0])


def flat_as_col_add(col: np.ndarray, dx: np.ndarray) -> None:
    """Transpose of :func:`flat_as_col`: ``flat(dx)[start + r·N + j] += col[g, r, b·N + j]``
    (serial: with the quirk a group's reads may overlap the next image's)."""
    _flat_reinterpret_add(col, dx, dx.shape[0])


def bias_add(y: np.ndarray, bias: np.ndarray) -> None:
    """``y[b, c, j] += bias[c]`` for ``y`` viewed as ``(B, C, N)`` (darknet ``add_bias``)."""
    _bias_add(y, bias)


def bias_grad(delta: np.ndarray, grad: np.ndarray, alpha: float) -> None:
    """``grad[c] += alpha · Σ_b Σ_j delta[b, c, j]`` (darknet ``backward_bias``; Caffe's bias
    GEMV with beta = 1). ``alpha`` = ±1 picks the gradient sign convention."""
    _bias_grad(delta, grad, alpha)
