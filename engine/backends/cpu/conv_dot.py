"""The weight gradient of a convolution of few input channels with the pixels in the vector lanes
(CPU, Numba + the LLVM IR tile :func:`microkernel.make_dot_tile`).

A first layer (LeNet's 1 → 20 5×5, a CIFAR net's 3 → 16 3×3) sums each weight's gradient over
hundreds of pixels but has only 25–27 taps per output channel: too few for the tiles of
:mod:`conv_direct`, whose columns are the taps (a vector of 16 lanes mostly idle), and the
im2col + OpenBLAS path it took ran at ~35 GFLOP/s a core (a 20 × 25 result per image, K = 576:
OpenBLAS's small-matrix kernel, packing included). Here the output pixels are the lanes:

    ``dW[f, c, ky, kx] (+)= Σ_p δ[f, p] · J[c, kx, p + ky·d·out_w]``

with ``p = y·out_w + x`` the output gradient's own order (read in place) and ``J[c, kx]`` the
zero-padded image's columns ``x + kx·d`` of every padded row (``Hp × out_w``, :func:`_windows`):
a tap's window is then ONE shift of ``J[c, kx]`` for all pixels, so one copy per kernel column
stands for the whole im2col matrix. One tile call covers :data:`ROWS` output channels ×
:data:`TAPS` taps; each lane is one FMA chain over the vectors of pixels, the 16 lanes then
added in a fixed tree (:func:`microkernel._lane_sum`) and the image's sum added to the chunk's
partial sum, image after image (the chunks are summed in order, as for the other paths). The
order depends on the shape only, never on the threads; against im2col + OpenBLAS it differs
in the last bits. Stride 1 (a tap's shift is the same for every pixel), any padding and
dilation, whole vectors of pixels and whole tiles of output channels.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit

from dnupdate.engine.backends.cpu import conv_taps, microkernel

LANES = microkernel.LANES
#: the tile: output channels × taps (20 accumulators, 4 + 5 vector loads per 20 FMAs)
ROWS, TAPS = 4, 5
_dot = microkernel.make_dot_tile(ROWS, TAPS)


def dw_dot_applies(kernel, stride, pad, per_group, outputs, out_hw) -> bool:
    """Whether a convolution's weight gradient takes :func:`weight_grad_dot_image`: where
    the micro-kernel is there (FMA + AVX-512F), stride 1, fewer input channels per group than
    the channel tiles take (:data:`conv_taps.MIN_CHANNELS`), not an unpadded 1×1 (its GEMM
    reads the input as it is), outputs per group a multiple of :data:`ROWS` and output
    pixels a multiple of 16 (the tile reads whole vectors of the output gradient in place).
    Any dilation (a tap's shift is ``ky·d·out_w`` into its window)."""
    direct = tuple(kernel) == (1, 1) and tuple(pad) == (0, 0)
    return (
        microkernel.AVAILABLE
        and tuple(stride) == (1, 1)
        and not direct
        and per_group < conv_taps.MIN_CHANNELS
        and outputs % ROWS == 0
        and out_hw[0] * out_hw[1] % LANES == 0
    )


def dw_dot_scratch_floats(per_group, kernel, pad, in_hw, out_hw) -> int:
    """Floats of one image's scratch: the windows ``J`` (``C·kw`` planes of ``Hp × out_w``)."""
    return per_group * kernel[1] * (in_hw[0] + 2 * pad[0]) * out_hw[1]


@functools.lru_cache(maxsize=256)
def tap_offsets(per_group, kernel, dilation, in_hw, pad, out_hw) -> np.ndarray:
    """``off[(c·kh + ky)·kw + kx] = (c·kw + kx)·Hp·out_w + ky·d·out_w`` (int64, im2col row
    order: the weights' own), read-only (cached)."""
    plane = (in_hw[0] + 2 * pad[0]) * out_hw[1]
    c, ky, kx = np.meshgrid(
        np.arange(per_group), np.arange(kernel[0]), np.arange(kernel[1]), indexing="ij"
    )
    table = ((c * kernel[1] + kx) * plane + ky * dilation * out_hw[1]).reshape(-1)
    table = table.astype(np.int64)
    table.setflags(write=False)
    return table


@njit(inline="always")
def _copy(target, source):
    """``target[i] = source[i]`` (views indexed from 0 by a loop counter: no wrap-around
    test per element, so the loop vectorises)."""
    for i in range(target.size):
        target[i] = source[i]


@njit(inline="always")
def _zero(target):
    for i in range(target.size):
        target[i] = np.float32(0.0)


@njit(cache=True)
def _windows(x_b, windows, c0, channels, kw, ph, pw, dil, out_w):
    """``J[c, kx, y, x] = xp[c0 + c, y, x + kx·d]`` for every padded row ``y < Hp`` and
    ``x < out_w``, ``xp`` the image zero-padded by ``(ph, pw)`` (read from ``x_b``, never
    built)."""
    h, w = x_b.shape[1], x_b.shape[2]
    hp = h + 2 * ph
    for c in range(channels):
        for kx in range(kw):
            plane = windows[(c * kw + kx) * hp * out_w : (c * kw + kx + 1) * hp * out_w]
            _zero(plane[: ph * out_w])
            _zero(plane[(ph + h) * out_w :])
            shift = kx * dil - pw  # source column of x = 0
            first = max(0, -shift)  # the columns left of the image are padding
            last = min(out_w, w - shift)  # and those right of it
            for y in range(h):
                row = plane[(ph + y) * out_w : (ph + y + 1) * out_w]
                _zero(row[:first])
                _copy(row[first:last], x_b[c0 + c, y, first + shift : last + shift])
                _zero(row[last:])


@njit(cache=True)
def weight_grad_dot_image(x_b, delta_b, partial_g, scratch, table, c0, f0, m, geometry,
                          accumulate):  # fmt: skip
    """``partial[f, k] (+)= Σ_p δ[f0 + f, p] · J[p + table[k]]`` for one group of one image
    (module docstring): ``x_b`` ``(C, H, W)``, ``delta_b`` ``(F, out_h·out_w)``, ``partial_g``
    flat ``(m, K)`` (``=`` unless ``accumulate``), ``table`` :func:`tap_offsets`, ``scratch``
    :func:`dw_dot_scratch_floats` floats."""
    kh, kw, _sh, _sw, ph, pw, dil, out_h, out_w = geometry
    channels = table.size // (kh * kw)
    pixels = out_h * out_w
    _windows(x_b, scratch, c0, channels, kw, ph, pw, dil, out_w)
    depth = table.size
    source = scratch.ctypes.data
    target = partial_g.ctypes.data
    for block in range(m // ROWS):
        a = delta_b[f0 + block * ROWS :].ctypes.data
        for t0 in range(0, depth, TAPS):
            _dot(a, pixels, source, table[t0:].ctypes.data, pixels // LANES,
                 target + 4 * (block * ROWS * depth + t0), depth, ROWS, min(TAPS, depth - t0),
                 accumulate)  # fmt: skip
