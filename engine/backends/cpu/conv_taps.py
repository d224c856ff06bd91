"""Stride-1 convolution of one image as one GEMM per kernel tap, forward and backward (CPU,
Numba + OpenBLAS).

With stride 1, the im2col row of channel ``c`` and tap ``(ky, kx)`` is the zero-padded image
plane itself, shifted: copy the image once into a padded buffer ``xp (C, Hp, Wp)``
(``Hp = H + 2·p_h``, ``Wp = W + 2·p_w``) and

    ``y_p[f, oy·Wp + ox] = Σ_tap Σ_c W[f, c, ky, kx] · xp[c, oy + ky·d, ox + kx·d]``

is, for each tap, one GEMM ``(m × C) · (C × N')`` whose right operand is ``xp`` read from
offset ``ky·d·Wp + kx·d`` with row stride ``Hp·Wp`` (``N' = out_h·Wp``: every output row
padded to ``Wp`` columns; the last ``d·(kw − 1)`` of each row wrap into the next row and are
dropped when ``y_p`` is copied into the output). No ``K × N`` column matrix is written and
packed again by BLAS (9× the image for a 3×3 kernel): for the small channel counts of CIFAR
ResNets (``K = 144``) the taps run about 1.7× as fast as im2col + one GEMM (0.051 against
0.087 ms per 16-channel 32×32 image on one core, padding and copy-out included, measured).
The float32 sum of each output is the same terms as the im2col GEMM's, in another order (tap
by tap, each tap a GEMM over the channels): equal up to float rounding, and the same on any
thread count (one image at a time).

Backward (:func:`backward_image`) the same way: the output gradient padded to rows of ``Wp``
with zeros in the wrapped columns, then per tap one GEMM into the weight gradient and one into a
padded input gradient that is cropped at the end (the transpose of the forward's shifted read).
Measured on one core, 128 images: forward 16.6 → 8.6 ms (16 channels, 32×32), 11.1 → 7.0
(32, 16×16), 9.8 → 7.1 (64, 8×8); backward 39 → 21, 27 → 15, 22 → 17 ms. The wrapped columns
multiply a real pixel by an exact 0: they add nothing, except that a non-finite input there
makes a NaN where the im2col sum has none (a run is diverging by then anyway).

Scratch of one image and group (:func:`forward_floats`): ``xp`` plus ``d·(kw − 1)`` slack
floats (the dropped columns of the last row read past the last plane) and ``y_p (m, N')``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from dnupdate.engine.backends.cpu.conv import _u
from dnupdate.engine.backends.cpu.sgemm import NO_TRANS, ROW_MAJOR, TRANS, cblas_sgemm

#: input channels per group the taps serve: below, each tap's GEMM is too thin (3 channels:
#: 2.5× slower than im2col); above, im2col + one GEMM is as fast (128: the same within noise)
MIN_CHANNELS, MAX_CHANNELS = 8, 64


def applies(kernel, stride, pad, per_group) -> bool:
    """Whether a convolution takes the taps: stride 1, larger than an unpadded 1×1 (that one is
    already a single GEMM on the input), :data:`MIN_CHANNELS`–:data:`MAX_CHANNELS` input
    channels per group."""
    return fits(kernel, stride, pad) and MIN_CHANNELS <= per_group <= MAX_CHANNELS


def backward_applies(kernel, stride, pad, per_group, outputs) -> bool:
    """Whether a convolution's backward takes the taps: where :func:`applies`, except a kernel
    of at most 9 taps with at least twice as many outputs per group as inputs, whose per-tap
    weight-gradient GEMMs (``m × C`` over ``N``) run slower than im2col's one ``K × m`` GEMM.
    Measured, 128 images, 2 threads, backward taps against im2col: 3×3, 32 → 64 channels at
    16×16 17.9 against 15.0 ms, 64 → 128 at 8×8 16.3 against 14.1 (cifar-small's layers);
    where outputs equal inputs the taps win (16 at 32×32 8.6 against 16.0, 32 at 16×16 7.5
    against 10.3, 64 at 8×8 8.5 against 9.1), and LeNet's 5×5, 20 → 50 at 8×8 (3.1 against
    3.5, batch 64) keeps them. The two paths sum the same terms in other orders: the choice
    depends on the shape only, never on the threads."""
    if not applies(kernel, stride, pad, per_group):
        return False
    return not (kernel[0] * kernel[1] <= 9 and outputs >= 2 * per_group)


def fits(kernel, stride, pad) -> bool:
    """Whether the taps can compute a convolution at all: stride 1, not an unpadded 1×1."""
    return stride == (1, 1) and not (kernel == (1, 1) and pad == (0, 0))


def forward_floats(per_group, m, kernel, pad, dilation, in_hw, out_hw) -> int:
    """Floats of one chunk's forward scratch: the padded group, its slack, ``y_p``."""
    hp, wp = in_hw[0] + 2 * pad[0], in_hw[1] + 2 * pad[1]
    return per_group * hp * wp + dilation * (kernel[1] - 1) + m * out_hw[0] * wp


def tap_weights(weights: np.ndarray, kernel: tuple[int, int]) -> np.ndarray:
    """``taps[g, ky·kw + kx, f, c] = W[g, f, (c·kh + ky)·kw + kx]``: each tap's ``m × C/G``
    matrix, contiguous (weights ``(G, m, K)`` in im2col row order)."""
    groups, m, k = weights.shape
    taps = kernel[0] * kernel[1]
    return np.ascontiguousarray(weights.reshape(groups, m, k // taps, taps).transpose(0, 3, 1, 2))


@njit(cache=True)
def pad_group(x_b, c0, channels, xp, ph, pw):
    """``xp[c, y + p_h, x + p_w] = x_b[c0 + c, y, x]`` (``xp`` flat, planes ``Hp × Wp``), zeros
    around each plane and in the slack after the last one. Flat unsigned indices: plain loops
    that vectorise (slice assignments cost more than the copy at these sizes)."""
    height, width = x_b.shape[1], x_b.shape[2]
    source = x_b.reshape(-1)
    wp = width + 2 * pw
    plane = (height + 2 * ph) * wp
    zero = np.float32(0.0)
    for c in range(channels):
        base = c * plane
        for i in range(ph * wp):  # top rows
            xp[_u(base + i)] = zero
        for y in range(height):
            row = base + (y + ph) * wp
            start = (c0 + c) * height * width + y * width
            for i in range(pw):
                xp[_u(row + i)] = zero
            for i in range(width):
                xp[_u(row + pw + i)] = source[_u(start + i)]
            for i in range(pw + width, wp):
                xp[_u(row + i)] = zero
        for i in range((height + ph) * wp, plane):  # bottom rows
            xp[_u(base + i)] = zero
    for i in range(channels * plane, xp.size):  # slack
        xp[_u(i)] = zero


@njit(cache=True)
def _drop_wrapped_columns(yp, out_b, f0, m, out_h, out_w, wp):
    """``out_b[f0 + f, oy·out_w + ox] = y_p[f, oy·Wp + ox]`` for ``ox < out_w``."""
    target = out_b.reshape(-1)
    n = out_b.shape[1]
    for f in range(m):
        for oy in range(out_h):
            source = (f * out_h + oy) * wp
            row = (f0 + f) * n + oy * out_w
            for ox in range(out_w):
                target[_u(row + ox)] = yp[_u(source + ox)]


@njit(cache=True)
def _padded_layout(x_b, channels, kw, ph, pw, dil, out_h):
    """``(wp, plane, n_rows, padded)``: the padded row width and plane, the columns of
    ``y_p``/``d_p`` (out_h padded rows) and the floats of the padded group with the taps'
    slack, as :func:`forward_floats` counts them."""
    wp = x_b.shape[2] + 2 * pw
    plane = (x_b.shape[1] + 2 * ph) * wp
    return wp, plane, out_h * wp, channels * plane + dil * (kw - 1)


@njit(cache=True)
def forward_image(x_b, taps_g, out_b, scratch, c0, f0, geometry):
    """``out_b[f0 + f] = Σ_tap W_tap · shift_tap(xp)`` for one group of one image (module
    docstring); ``taps_g (T, m, C/G)``; ``scratch`` flat, :func:`forward_floats` long."""
    _kh, kw, _sh, _sw, ph, pw, dil, out_h, out_w = geometry
    n_taps, m, channels = taps_g.shape
    wp, plane, n_rows, padded = _padded_layout(x_b, channels, kw, ph, pw, dil, out_h)
    xp = scratch[:padded]
    yp = scratch[padded : padded + m * n_rows]
    pad_group(x_b, c0, channels, xp, ph, pw)
    for tap in range(n_taps):
        shift = (tap // kw) * dil * wp + (tap % kw) * dil
        cblas_sgemm(
            ROW_MAJOR, NO_TRANS, NO_TRANS, m, n_rows, channels,
            np.float32(1.0), taps_g[tap].ctypes.data, channels, xp[shift:].ctypes.data, plane,
            np.float32(0.0) if tap == 0 else np.float32(1.0), yp.ctypes.data, n_rows,
        )  # fmt: skip
    _drop_wrapped_columns(yp, out_b, f0, m, out_h, out_w, wp)


def backward_fits(per_group, m, kernel, pad, dilation, in_hw, out_hw, col, dcol) -> bool:
    """Whether one chunk's ``col`` holds the padded image and the padded output gradient
    (:func:`forward_floats`) and its ``dcol`` the padded input gradient."""
    hp, wp = in_hw[0] + 2 * pad[0], in_hw[1] + 2 * pad[1]
    padded = per_group * hp * wp + dilation * (kernel[1] - 1)
    return col >= forward_floats(per_group, m, kernel, pad, dilation, in_hw, out_hw) and (
        dcol >= padded
    )


@njit(cache=True)
def _pad_delta(delta_b, f0, m, dp, out_h, out_w, wp):
    """``dp[f, oy·Wp + ox] = delta_b[f0 + f, oy·out_w + ox]``, 0 in the ``Wp − out_w``
    wrapped columns of each row (so that they add nothing where they meet real positions)."""
    zero = np.float32(0.0)
    source = delta_b.reshape(-1)
    n = delta_b.shape[1]
    for f in range(m):
        for oy in range(out_h):
            row = (f * out_h + oy) * wp
            start = (f0 + f) * n + oy * out_w
            for ox in range(out_w):
                dp[_u(row + ox)] = source[_u(start + ox)]
            for ox in range(out_w, wp):
                dp[_u(row + ox)] = zero


@njit(cache=True)
def _crop_add(dxp, dx_b, c0, channels, ph, pw, assign):
    """``dx_b[c0 + c, y, x] (+)= dxp[c, y + p_h, x + p_w]`` (``=`` with ``assign``): the
    padding cells of the padded input gradient are dropped, as ``col2im`` drops them."""
    height, width = dx_b.shape[1], dx_b.shape[2]
    target = dx_b.reshape(-1)
    wp = width + 2 * pw
    plane = (height + 2 * ph) * wp
    for c in range(channels):
        for y in range(height):
            row = c * plane + (y + ph) * wp + pw
            start = (c0 + c) * height * width + y * width
            if assign:
                for i in range(width):
                    target[_u(start + i)] = dxp[_u(row + i)]
            else:
                for i in range(width):
                    target[_u(start + i)] += dxp[_u(row + i)]


@njit(cache=True)
def backward_image(x_b, delta_b, taps_g, partial_g, dx_b, scratch, dscratch, c0, f0, geometry,
                   beta, assign, want_dw=True):  # fmt: skip
    """One group of one image's backward by taps, with ``dp`` the output gradient padded to
    rows of ``Wp`` (:func:`_pad_delta`):

    * ``partial_g[c·T + tap, f] (+)= Σ_j xp[c, shift_tap + j] · dp[f, j]``: per tap one GEMM
      ``(C/G × N') · (N' × m)`` into the rows of that tap of the chunk's transposed weight
      gradient (``beta`` 0 on the chunk's first image); the wrapped columns meet 0 in ``dp``;
    * unless ``dx_b`` is empty: ``dxp[c, shift_tap + j] += Σ_f W_tap[f, c] · dp[f, j]`` per
      tap (``W_tapᵀ · dp`` added at the tap's offset: the transpose of the forward's shifted
      read) into a zeroed padded buffer, then cropped into ``dx_b`` (``=`` with ``assign``).

    ``scratch`` holds ``xp`` and ``dp`` (:func:`forward_floats`), ``dscratch`` ``dxp``.
    Without ``want_dw`` only the input gradient (the weight gradient is computed elsewhere).
    """
    _kh, kw, _sh, _sw, ph, pw, dil, out_h, out_w = geometry
    n_taps, m, channels = taps_g.shape
    wp, plane, n_rows, padded = _padded_layout(x_b, channels, kw, ph, pw, dil, out_h)
    xp = scratch[:padded]
    dp = scratch[padded : padded + m * n_rows]
    _pad_delta(delta_b, f0, m, dp, out_h, out_w, wp)
    if want_dw:
        pad_group(x_b, c0, channels, xp, ph, pw)
    for tap in range(n_taps if want_dw else 0):
        shift = (tap // kw) * dil * wp + (tap % kw) * dil
        cblas_sgemm(
            ROW_MAJOR, NO_TRANS, TRANS, channels, m, n_rows,
            np.float32(1.0), xp[shift:].ctypes.data, plane, dp.ctypes.data, n_rows,
            beta, partial_g[tap:].ctypes.data, n_taps * m,
        )  # fmt: skip
    if dx_b.size == 0:
        return
    dxp = dscratch[:padded]
    dxp[:] = 0.0
    for tap in range(n_taps):
        shift = (tap // kw) * dil * wp + (tap % kw) * dil
        cblas_sgemm(
            ROW_MAJOR, TRANS, NO_TRANS, channels, n_rows, m,
            np.float32(1.0), taps_g[tap].ctypes.data, channels, dp.ctypes.data, n_rows,
            np.float32(1.0), dxp[shift:].ctypes.data, plane,
        )  # fmt: skip
    _crop_add(dxp, dx_b, c0, channels, ph, pw, assign)
