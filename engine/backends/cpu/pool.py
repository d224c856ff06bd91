"""Pooling kernels (CPU, Numba): max with argmax, average with Caffe's divisor rule.

Window ``(i, j)`` of an output plane covers rows ``[i·s_h − off_h, i·s_h − off_h + k_h)`` and
columns likewise, clipped to the image. ``off`` is darknet's ``padding/2`` or Caffe's ``pad``
(``engine.model.shapes.pool_geometry``). Each parallel iteration owns one ``(image, channel)``
plane.

Max pooling has a fast path for 2×2 stride 2 windows lying inside the image (the usual max
pool; every window when the size is even and there is no padding): no clipping and unsigned
indices, so it vectorises. Windows at the border and other sizes take the general, clipped
loop (its indices are unsigned too: clipped, so never negative). Where every window of every
plane is such a 2×2 (even sizes, no offset), one parallel sweep over all the output rows of
the batch does the work with flat indices, no per-plane call (LeNet's 64×20×24×24 pool 0.40 →
0.28 ms on one core, 0.21 → 0.16 on two). The parallel loop calls a
serial per-plane function, which keeps the parallel build small. Indices cast with
``np.uint64`` skip Numba's negative-index wraparound select, which otherwise blocks
vectorisation; they are used only where the index is known to be ≥ 0.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

FLT_MAX = np.float32(3.4028234663852886e38)


@njit(inline="always", cache=True)
def _interior(out, stride, offset, kernel, size):
    """``(first, end)``: the outputs whose window ``[o·stride − offset, … + kernel)`` lies
    entirely inside ``[0, size)`` (an empty range when none does)."""
    first = (offset + stride - 1) // stride if offset > 0 else 0
    end = (size + offset - kernel) // stride + 1 if size + offset >= kernel else 0
    end = min(end, out)
    return first, max(first, end)


@njit(inline="always")
def _window_2x2(x, base, top, left, width):
    """``(max, flat index in the plane)`` of the 2×2 window at ``(top, left)`` of the plane
    that starts at ``x[base]`` (flat, ``width`` wide), the window inside it: start at
    −FLT_MAX, strict ``>``, row-major, so the first maximum wins (a select, not a branch);
    indices unsigned (≥ 0 here: no wraparound select)."""
    best = -FLT_MAX
    arg = -1
    for n in range(2):
        for m in range(2):
            index = (top + n) * width + left + m
            v = x[base + np.uint64(index)]
            take = v > best
            best = v if take else best
            arg = index if take else arg
    return best, arg


@njit(cache=True)
def _max_2x2(x, y, argmax, b, c, i0, i1, j0, j1, oh_off, ow_off):
    """2×2 stride 2 windows ``[i0, i1) × [j0, j1)`` of plane ``(b, c)``, all inside the
    plane: no clipping, and the indices cast to unsigned (they are ≥ 0 here), which drops
    Numba's negative-index wraparound select; the window loops unroll and the loop over a
    row's outputs vectorises (about 10 → 1 ns per output). Same rule as the general path:
    start at −FLT_MAX, strict ``>``, row-major, so the first maximum wins."""
    width = x.shape[3]
    flat = x.reshape(-1)
    base = np.uint64((b * x.shape[1] + c) * x.shape[2] * width)
    for i in range(i0, i1):
        for j in range(j0, j1):
            best, arg = _window_2x2(flat, base, 2 * i - oh_off, 2 * j - ow_off, width)
            y[b, c, np.uint64(i), np.uint64(j)] = best
            argmax[b, c, np.uint64(i), np.uint64(j)] = arg


@njit(cache=True)
def _max_plane(x, y, argmax, b, c, kh, kw, sh, sw, oh_off, ow_off, i0, i1, j0, j1):
    """Plane ``(b, c)``: every window outside ``[i0, i1) × [j0, j1)`` on the general path
    (clipped to the plane), those inside by :func:`_max_2x2`. Serial and not inlined: the
    parallel loop around it stays small."""
    height, width = x.shape[2], x.shape[3]
    out_h, out_w = y.shape[2], y.shape[3]
    if i0 < i1 and i0 == 0 and i1 == out_h and j0 == 0 and j1 == out_w:
        out_h = 0  # no border window: skip the general loop
    for i in range(out_h):
        top = i * sh - oh_off
        first_row, end_row = max(0, -top), min(kh, height - top)  # window ∩ image
        inside = i >= i0 and i < i1
        j = 0
        while j < out_w:
            if inside and j == j0:
                j = j1  # the interior windows: below
                continue
            left = j * sw - ow_off
            best = -FLT_MAX
            arg = -1
            for n in range(first_row, end_row):
                for m in range(max(0, -left), min(kw, width - left)):
                    v = x[b, c, np.uint64(top + n), np.uint64(left + m)]  # ≥ 0: clipped
                    # strict: the first maximum in row-major order wins; a select, not a
                    # branch (random data mispredicts it half the time: 2x faster)
                    take = v > best
                    best = v if take else best
                    arg = (top + n) * width + left + m if take else arg
            y[b, c, i, j] = best
            argmax[b, c, i, j] = arg
            j += 1
    if i0 < i1:
        _max_2x2(x, y, argmax, b, c, i0, i1, j0, j1, oh_off, ow_off)


@njit(parallel=True, cache=True)
def _max_2x2_planes(x, y, argmax, planes, height, width, out_h, out_w):
    """2×2 stride 2 max pooling of ``planes`` whole planes (flat arrays), every window inside
    its plane: per output row, the two input rows read at unsigned flat indices (the loop
    vectorises), the same rule as :func:`_max_2x2`."""
    rows = planes * out_h
    size = height * width
    for row in prange(rows):
        p = row // out_h
        i = row - p * out_h
        base = np.uint64(p * size)
        out = np.uint64(row * out_w)
        for j in range(out_w):
            best, arg = _window_2x2(x, base, 2 * i, 2 * j, width)
            y[out + np.uint64(j)] = best
            argmax[out + np.uint64(j)] = arg


@njit(parallel=True, cache=True)
def _max_forward(x, y, argmax, kh, kw, sh, sw, oh_off, ow_off):
    batch, channels, height, width = x.shape
    out_h, out_w = y.shape[2], y.shape[3]
    # the fast path: 2x2 stride 2 (darknet's and Caffe's usual max pool), windows inside;
    # other windows stay general (a 3x3 stride 2 specialisation would cost ~0.4 s cold compile)
    i0, i1 = _interior(out_h, sh, oh_off, kh, height)
    j0, j1 = _interior(out_w, sw, ow_off, kw, width)
    if j0 == j1 or not (kh == 2 and kw == 2 and sh == 2 and sw == 2):
        i0 = i1 = 0  # every window on the general path
    if i0 == 0 and i1 == out_h and j0 == 0 and j1 == out_w and oh_off == 0 and ow_off == 0:
        # every window a 2×2 inside the plane: the planes as one flat sweep
        _max_2x2_planes(x.reshape(-1), y.reshape(-1), argmax.reshape(-1), batch * channels,
                        height, width, out_h, out_w)  # fmt: skip
        return
    for task in prange(batch * channels):
        b = task // channels
        c = task % channels
        _max_plane(x, y, argmax, b, c, kh, kw, sh, sw, oh_off, ow_off, i0, i1, j0, j1)


@njit(parallel=True, cache=True)
def _max_backward(dy, argmax, dx, assign):
    # dx is (batch, channels, height·width): the flat argmax indexes it without a division
    batch, channels = dx.shape[0], dx.shape[1]
    out_h, out_w = dy.shape[2], dy.shape[3]
    for task in prange(batch * channels):
        b = task // channels
        c = task % channels
        if assign:  # the plane starts from 0 here, in cache, instead of a memset in forward
            dx[b, c, :] = 0.0
        for i in range(out_h):
            for j in range(out_w):
                arg = argmax[b, c, i, j]
                if arg >= 0:
                    dx[b, c, np.uint64(arg)] += dy[b, c, i, j]


@njit(cache=True, inline="always")
def _ave_window(i, stride, pad, k, size):
    start = i * stride - pad
    end = min(start + k, size + pad)
    count = end - start  # Caffe quirk: counted before clipping, so padded cells count
    return max(start, 0), min(end, size), count


# average pooling is serial: darknet's global [avgpool] is microseconds of work, and the
# parallel builds cost ~1.5 s of cold compile
@njit(cache=True)
def _ave_forward(x, y, kh, kw, sh, sw, ph, pw):
    batch, channels, height, width = x.shape
    out_h, out_w = y.shape[2], y.shape[3]
    for task in range(batch * channels):
        b = task // channels
        c = task % channels
        for i in range(out_h):
            y0, y1, nh = _ave_window(i, sh, ph, kh, height)
            for j in range(out_w):
                x0, x1, nw = _ave_window(j, sw, pw, kw, width)
                total = np.float32(0.0)
                for iy in range(y0, y1):
                    for ix in range(x0, x1):  # clipped, so ≥ 0: unsigned, no wraparound
                        total += x[b, c, np.uint64(iy), np.uint64(ix)]
                y[b, c, i, j] = total / np.float32(nh * nw)


@njit(cache=True)
def _ave_backward(dy, dx, kh, kw, sh, sw, ph, pw):
    batch, channels, height, width = dx.shape
    out_h, out_w = dy.shape[2], dy.shape[3]
    for task in range(batch * channels):
        b = task // channels
        c = task % channels
        for i in range(out_h):
            y0, y1, nh = _ave_window(i, sh, ph, kh, height)
            for j in range(out_w):
                x0, x1, nw = _ave_window(j, sw, pw, kw, width)
                share = dy[b, c, i, j] / np.float32(nh * nw)
                for iy in range(y0, y1):
                    for ix in range(x0, x1):
                        dx[b, c, np.uint64(iy), np.uint64(ix)] += share


def maxpool_forward(
    x: np.ndarray,
    y: np.ndarray,
    argmax: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    offset: tuple[int, int],
) -> None:
    """``y = max`` over each window (start ``−FLT_MAX``, strict ``>``: ties go to the first
    element in row-major order, as darknet and Caffe); ``argmax`` (int32, same shape as ``y``)
    gets the flat ``iy·W + ix`` index in the plane, −1 for a window entirely outside."""
    _max_forward(x, y, argmax, kernel[0], kernel[1], stride[0], stride[1], offset[0], offset[1])


def maxpool_backward(
    dy: np.ndarray, argmax: np.ndarray, dx: np.ndarray, assign: bool = False
) -> None:
    """``dx[argmax] += dy`` (overlapping windows accumulate; darknet and Caffe); with
    ``assign``, ``dx`` is zeroed plane by plane first (``Layer.assign_dx``)."""
    batch, channels, height, width = dx.shape
    target = dx if dx.flags.c_contiguous else np.ascontiguousarray(dx)
    _max_backward(dy, argmax, target.reshape(batch, channels, height * width), assign)
    if target is not dx:
        dx[...] = target


def avepool_forward(
    x: np.ndarray,
    y: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pad: tuple[int, int],
) -> None:
    """Caffe AVE: ``y = Σ window / pool_size`` with ``pool_size`` counted over the window
    clipped to ``[−pad, size + pad)`` (padded cells count, ceil overhang does not). With the
    window equal to the image and no padding this is darknet's global ``[avgpool]``
    (``Σ / (h·w)``, float accumulation then divide)."""
    _ave_forward(x, y, kernel[0], kernel[1], stride[0], stride[1], pad[0], pad[1])


def avepool_backward(
    dy: np.ndarray,
    dx: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pad: tuple[int, int],
) -> None:
    """``dx[window] += dy / pool_size`` over the clipped window (Caffe; darknet avgpool)."""
    _ave_backward(dy, dx, kernel[0], kernel[1], stride[0], stride[1], pad[0], pad[1])
