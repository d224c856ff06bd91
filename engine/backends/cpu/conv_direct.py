"""Stride-1 convolution of one image by the register-blocked micro-kernel (CPU, Numba + LLVM IR):
an implicit GEMM on the zero-padded image, no im2col and no BLAS.

With ``xp`` the zero-padded group (``conv_taps.pad_group``: planes ``Hp × Wp``) and the offset
table ``off[(c·kh + ky)·kw + kx] = c·Hp·Wp + ky·d·Wp + kx·d`` (:func:`offsets`),

    ``out[f, oy, ox] = Σ_k W[f, k] · xp[off[k] + oy·Wp + ox]``,   ``k`` in im2col row order,

is one tile call of :func:`microkernel.make_tile` per block of 16 output channels (the tile's
rows) and 16 pixels of one output row (its columns), stored straight into the output (a partial
last block masked). Every output is ONE fused multiply-add chain over ``k = 0 … K − 1`` in
darknet's ``gemm_nn`` order (its ``C += A·B`` rounds each product apart): the result depends on
neither the tiling nor the threads. Against the per-tap and im2col GEMMs of OpenBLAS (other
summation orders) it differs in the last bits.

The input gradient of a stride-1 convolution is the same operation (:func:`flipped_weights`):
``dx[c, y, x] = Σ_{f, ky, kx} Wf[c, f, ky, kx] · dp[f, y + ky·d, x + kx·d]`` with ``dp`` the
output gradient zero-padded by ``d·(k − 1) − p`` and ``Wf[c, f, ky, kx] =
W[f, c, kh − 1 − ky, kw − 1 − kx]``; ``assign`` stores it (``dx = …``), else adds it.

The weight gradient (:func:`weight_grad_image`) sums over the pixels instead: per tap, rows are
16 output channels of the output gradient (packed, broadcast), columns 16 input channels of a
channels-last copy of the padded image (one pixel's channels are contiguous), and the k-loop
runs over the image's pixels through a pixel offset table; each element is one FMA chain over
the pixels in order, added to the chunk's partial sum image after image (the chunks are then
summed in order, as for the other paths).

Rows of at most 16 pixels (8×8 and 16×16 maps, LeNet's 8×8 outputs) take the segment tiles
(:func:`microkernel.make_segment_tile`): each output row is one segment of a vector, rows of
up to 8 pixels two to a vector, so no lane holds a wrapped column; the tile's rows are 8 or 10
output channels (:func:`tile_rows`). Where the input gradient's padding would make it sum mostly
zeros (:data:`MAX_DX_GROWTH`) the input gradient goes tap by tap instead (:func:`taps_dx_image`:
per tap ``W_tapᵀ`` times the output gradient, added at the tap's shift). A first layer of a few
input channels computes its weight gradient with the pixels in the lanes (:mod:`conv_dot`) or,
where those tiles do not fit, by kernel rows (:func:`weight_grad_rows_image`).

Measured on one core (AVX-512), 128 images, 3×3 forward, against the per-tap GEMMs: 16 → 16
channels at 32×32 5.4 against 8.4 ms (111 against 72 GFLOP/s), 32 → 32 at 16×16 5.3 against
6.8, 32 → 64 at 16×16 10.4 against 12.7. A tile of 16 rows × 1 vector measured as fast as
8 × 2 on 32-pixel rows, and faster on 16-pixel rows (one vector a row). On 8×8 maps a span of
padded rows as columns (wrapped columns dropped) only tied the OpenBLAS paths; the segment
tiles (two rows a vector) ran 64 → 64 at 8×8 1.67 → 1.01 ms and LeNet's 5×5 20 → 50 2.72 →
1.30 (batch 32 and 64). Backward (input and weight gradient, against the taps, or im2col for
32 → 64): 16.5 → 12.4 ms, 14.3 → 11.5, 28.8 → 22.3; 64 → 64 at 8×8 (the weight gradient
only) 16.3 → 12.0.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit

from dnupdate.engine.backends.cpu import conv_taps, microkernel
from dnupdate.engine.backends.cpu.conv import _u
from dnupdate.engine.backends.cpu.conv_taps import _crop_add, pad_group

LANES = microkernel.LANES
#: the tile of rows of more than 16 pixels: ``R`` output channels × ``J`` vectors of 16 pixels
ROWS, VECTORS = 16, 1
_tile = microkernel.make_tile(ROWS, VECTORS)

#: the tiles of rows of at most 16 pixels (:func:`microkernel.make_segment_tile`, each output
#: row a segment; rows of up to 8 pixels two to a vector): ``R`` output channels × 2 vectors,
#: the ``R`` with the fewest padded rows (8 on a tie). Measured on one core (forward, against
#: the OpenBLAS taps): LeNet's 5×5 20 → 50 at 8×8 (batch 64) 2.72 → 1.30 ms with 10 × 2 (5 × 4
#: 1.41, 16 × 1 1.79, 8 × 3 1.75); 3×3 64 → 64 at 8×8 (batch 32) 1.67 → 1.01 with 8 × 2 (10 × 2
#: 1.06, 16 × 1 1.13, 16 × 2 1.29); 32 → 32 at 16×16 1.31 (the 16-pixel vectors of one row,
#: 16 × 1) → 0.96 with 8 × 2 (16 × 1 1.00, 10 × 2 1.15, 4 × 6 1.35)
NARROW_ROWS, NARROW_VECTORS = (8, 10), 2
_rows8 = microkernel.make_segment_tile(8, NARROW_VECTORS, 1)
_rows10 = microkernel.make_segment_tile(10, NARROW_VECTORS, 1)
_pairs8 = microkernel.make_segment_tile(8, NARROW_VECTORS, 2)
_pairs10 = microkernel.make_segment_tile(10, NARROW_VECTORS, 2)

#: the narrowest output rows the forward and input gradient take the micro-kernel on (rows of
#: 8 pixels fill a vector two by two)
MIN_NARROW_WIDTH = 8


@njit(cache=True)
def fewest_padded(m, choices):
    """The index in ``choices`` (tile row counts ``R``) with the fewest padded rows
    ``⌈m / R⌉·R`` for ``m`` outputs, the first on a tie."""
    best, index = -1, 0
    for i in range(len(choices)):
        padded = (m + choices[i] - 1) // choices[i] * choices[i]
        if best < 0 or padded < best:
            best, index = padded, i
    return index


#: the row counts of the tiles on rows wider than 16 pixels (16 × 1, or 10 × 2 segment tiles)
WIDE_ROWS = (ROWS, 10)


@njit(cache=True)
def is_narrow(out_w: int) -> bool:
    """Rows of at most 16 pixels: one tile call covers whole output rows (segments)."""
    return out_w <= LANES


def tile_rows(m: int, out_w: int) -> int:
    """The tile's rows ``R`` for ``m`` outputs per group on rows of ``out_w`` pixels: of
    :data:`ROWS` (16) and 10 on wide rows, of :data:`NARROW_ROWS` on narrow ones, the fewest
    padded rows ``⌈m / R⌉·R`` (the first on a tie)."""
    choices = NARROW_ROWS if is_narrow(out_w) else WIDE_ROWS
    return choices[fewest_padded(m, choices)]


#: the shortest sum (``C/G·kh·kw`` products per output) whose forward takes the micro-kernel:
#: below it each tile call's store outweighs its k-loop. Measured on one core, batch 64, im2col
#: + GEMM against the micro-kernel: 3 → 16 channels 3×3 at 32×32 (a CIFAR net's first layer,
#: 27 products) 0.88 → 0.63 ms, 2 → 16 (18) 0.70 → 0.42, LeNet's 1 → 20 5×5 (25; 10-row tiles)
#: 0.51 → 0.46, but 1 → 16 3×3 (9) 0.38 → 0.49 and 1 → 32 0.62 → 0.81
MIN_FORWARD_DEPTH = 16


def _fits(kernel, stride, pad, channels, rows, out_w, fewest, strided=False) -> bool:
    """The micro-kernel is there, the geometry suits it (stride 1, not an unpadded 1×1; or,
    with ``strided``, any larger stride: :func:`phase_group`),
    ``fewest``–:data:`conv_taps.MAX_CHANNELS` channels are summed, and rows of more than 16
    pixels, or of :data:`MIN_NARROW_WIDTH`–16 pixels with 8 or more tile ``rows`` (output
    channels)."""
    narrow_ok = out_w >= MIN_NARROW_WIDTH and rows >= NARROW_ROWS[0]
    shape = narrow_ok or not is_narrow(out_w)
    geometry = conv_taps.fits(kernel, stride, pad) or (strided and stride != (1, 1))
    return (
        microkernel.AVAILABLE
        and geometry
        and fewest <= channels <= conv_taps.MAX_CHANNELS
        and shape
    )


def applies(kernel, stride, pad, per_group, outputs, out_w) -> bool:
    """Whether a convolution's forward takes the micro-kernel: where the JIT target has it
    (:data:`microkernel.AVAILABLE`), stride 1 and not an unpadded 1×1 (``conv_taps.fits``) or
    a larger stride (on the input's phase planes, :func:`phase_group`), at most
    :data:`conv_taps.MAX_CHANNELS` input channels per group summing at least
    :data:`MIN_FORWARD_DEPTH` products per output, and ``outputs`` per group and rows of
    ``out_w`` pixels as :func:`_fits` asks; on rows wider than 16 pixels in whole tiles of
    :func:`tile_rows` outputs (16 → 8 channels at 32×32 ran 0.82×, 16 → 4 0.56× the per-tap
    GEMMs with 16-row tiles). The shape's rule only, never the threads'. Strided, measured on
    two cores, batch 128, against im2col + GEMM: a CIFAR ResNet's stride-2 3×3 16 → 32 at
    32×32 2.99 → 2.29 ms, 32 → 64 at 16×16 2.49 → 1.94 (splitting the phases, ~0.5 ms of the
    first, is a gather of 17-float rows)."""
    whole_tiles = is_narrow(out_w) or outputs % tile_rows(outputs, out_w) == 0
    deep = per_group * kernel[0] * kernel[1] >= MIN_FORWARD_DEPTH
    return whole_tiles and deep and _fits(kernel, stride, pad, per_group, outputs, out_w, 1, True)


#: the most input-gradient pixels per output-gradient pixel for which the input gradient is
#: the flipped convolution: on small maps its padding ``d·(k − 1) − p`` sums mostly zeros
#: (LeNet's 5×5 on 8×8 outputs: 12×12 inputs, 2.25× the products; 2.46 ms against the taps'
#: 1.30 at 2 threads, batch 64)
MAX_DX_GROWTH = 1.5


def dx_applies(kernel, stride, pad, dilation, per_group, outputs, in_w, in_hw=None,
               out_hw=None) -> bool:  # fmt: skip
    """Whether a convolution's input gradient takes the micro-kernel: the flipped convolution
    (``outputs`` per group its summed channels, ``per_group`` its tile rows, ``in_w`` its
    output width) with :data:`conv_taps.MIN_CHANNELS`–:data:`conv_taps.MAX_CHANNELS` of each
    (4 → 16 channels at 32×32, 4 rows per tile of 16, ran its backward 0.66×; 8 → 16 1.12×),
    where its padding ``d·(k − 1) − p`` is not negative and (given the input and output
    sizes ``in_hw``/``out_hw``) it computes at most :data:`MAX_DX_GROWTH` outputs per
    output-gradient pixel."""
    kh, kw = kernel
    growth = 1.0
    if in_hw is not None and out_hw is not None:
        growth = in_hw[0] * in_hw[1] / (out_hw[0] * out_hw[1])
    return (
        _fits(kernel, stride, pad, outputs, per_group, in_w, conv_taps.MIN_CHANNELS)
        and conv_taps.MIN_CHANNELS <= per_group <= conv_taps.MAX_CHANNELS
        and dilation * (kh - 1) >= pad[0]
        and dilation * (kw - 1) >= pad[1]
        and growth <= MAX_DX_GROWTH
    )


def dx_geometry(kernel, pad, dilation, in_hw) -> tuple[int, ...]:
    """The input gradient's convolution geometry ``(kh, kw, 1, 1, ph', pw', d, H, W)`` with
    ``p' = d·(k − 1) − p``."""
    kh, kw = kernel
    ph, pw = dilation * (kh - 1) - pad[0], dilation * (kw - 1) - pad[1]
    return (kh, kw, 1, 1, ph, pw, dilation, *in_hw)


@functools.lru_cache(maxsize=256)
def offsets(channels, kernel, dilation, padded_hw) -> np.ndarray:
    """``off[(c·kh + ky)·kw + kx] = c·Hp·Wp + ky·d·Wp + kx·d`` (int64): row ``k`` of the
    implicit GEMM's right operand, in floats from the padded group's start. Cached by shape
    (every layer's every pass asks for it: ~3 ms per cifar-resnet step built afresh); the
    kernels only read it."""
    kh, kw = kernel
    hp, wp = padded_hw
    c, ky, kx = np.meshgrid(np.arange(channels), np.arange(kh), np.arange(kw), indexing="ij")
    return (c * hp * wp + ky * dilation * wp + kx * dilation).reshape(-1).astype(np.int64)


@njit(cache=True)
def _phase_planes(height, width, ph, pw, sh, sw):
    """``(Hq, Wq) = (⌈(H + 2p_h)/s_h⌉, ⌈(W + 2p_w)/s_w⌉)``: the size of each phase plane of a
    padded ``H × W`` image (:func:`phase_group`; the padded plane itself at stride 1)."""
    return -(-(height + 2 * ph) // sh), -(-(width + 2 * pw) // sw)


def phase_hw(in_hw, pad, stride) -> tuple[int, int]:
    """:func:`_phase_planes` of an input ``in_hw`` padded by ``pad`` at ``stride``."""
    return _phase_planes(in_hw[0], in_hw[1], pad[0], pad[1], stride[0], stride[1])


@functools.lru_cache(maxsize=256)
def phase_offsets(channels, kernel, dilation, stride, planes_hw) -> np.ndarray:
    """The strided convolution's :func:`offsets` on the phase planes of :func:`phase_group`
    (``Hq × Wq``): tap ``(ky, kx)`` of channel ``c`` reads plane ``((c·s_h + dy mod s_h)·s_w +
    dx mod s_w)`` at ``(⌊dy/s_h⌋, ⌊dx/s_w⌋)`` (``dy = ky·d``, ``dx = kx·d``), where output pixel
    ``(oy, ox)`` adds ``oy·Wq + ox``: a stride-1 sum over the planes. At stride 1 it is
    :func:`offsets`."""
    kh, kw = kernel
    sh, sw = stride
    hq, wq = planes_hw
    c, ky, kx = np.meshgrid(np.arange(channels), np.arange(kh), np.arange(kw), indexing="ij")
    dy, dx = ky * dilation, kx * dilation
    plane = (c * sh + dy % sh) * sw + dx % sw
    return (plane * hq * wq + dy // sh * wq + dx // sw).reshape(-1).astype(np.int64)


def pack(weights: np.ndarray, rows_r: int = ROWS) -> np.ndarray:
    """``packed[g, t, k, r] = W[g, t·R + r, k]`` (0 past the last row): the weights
    ``(G, m, K)`` as :func:`microkernel.pack_rows` tiles of ``R = rows_r`` rows
    (:func:`tile_rows`), per group."""
    return np.stack([microkernel.pack_rows(w, rows_r) for w in weights])


def flipped_weights(weights: np.ndarray, kernel: tuple[int, int]) -> np.ndarray:
    """``Wf[g, c, (f·kh + ky)·kw + kx] = W[g, f, (c·kh + kh − 1 − ky)·kw + kw − 1 − kx]``: the
    weights of the input gradient's convolution, ``(G, C/G, m·kh·kw)``."""
    groups, m, k = weights.shape
    kh, kw = kernel
    w = weights.reshape(groups, m, k // (kh * kw), kh, kw)[..., ::-1, ::-1]
    return np.ascontiguousarray(w.transpose(0, 2, 1, 3, 4).reshape(groups, k // (kh * kw), -1))


def scratch_floats(channels, kernel, pad, dilation, in_hw, stride=(1, 1)) -> int:
    """Floats of one image's scratch: the padded group (as its phase planes where strided,
    :func:`phase_group`) and a ``d·(kw − 1)`` slack."""
    hq, wq = phase_hw(in_hw, pad, stride)
    return channels * stride[0] * stride[1] * hq * wq + dilation * (kernel[1] - 1)


@njit(inline="always")
def _narrow_tile(pairs, rows_r, a, b, table, depth, c, ldc, rows, cols, accumulate, width, b_pitch,
                 c_pitch):  # fmt: skip
    """The narrow-row tile of ``R = rows_r`` rows, two rows a vector with ``pairs`` (a literal
    switch: each is an intrinsic)."""
    if pairs:
        if rows_r == 8:
            _pairs8(a, b, table, depth, c, ldc, rows, cols, accumulate, width, b_pitch, c_pitch)
        else:
            _pairs10(a, b, table, depth, c, ldc, rows, cols, accumulate, width, b_pitch, c_pitch)
    elif rows_r == 8:
        _rows8(a, b, table, depth, c, ldc, rows, cols, accumulate, width, b_pitch, c_pitch)
    else:
        _rows10(a, b, table, depth, c, ldc, rows, cols, accumulate, width, b_pitch, c_pitch)


@njit(inline="always")
def _wide_tile(rows_r, a, b, table, depth, c, ldc, rows, cols, accumulate):
    """The tile of rows wider than 16 pixels: :data:`ROWS` × :data:`VECTORS`, or 10 rows × 2
    vectors along the row (the segment tile on 16-float segments)."""
    if rows_r == ROWS:
        _tile(a, b, table, depth, c, ldc, rows, cols, accumulate)
    else:
        _rows10(a, b, table, depth, c, ldc, rows, cols, accumulate, LANES, LANES, LANES)


@njit(cache=True)
def _gemm(packed_g, table, source, target, ldc, m, out_h, out_w, wp, accumulate):
    """``target[f·ldc + oy·out_w + ox] (+)= Σ_k W[f, k] · source[off[k] + oy·Wp + ox]`` for
    ``f < m`` (``source``/``target`` addresses), per block of ``R`` channels (the packed
    tiles'): on rows wider than 16 pixels per output row and run of the tile's vectors, one
    :func:`_wide_tile`; on narrower rows per :data:`NARROW_VECTORS` vectors
    of rows (each row a segment, two to a vector where they have at most 8 pixels), one
    segment tile."""
    rows_r = packed_g.shape[2]
    depth = table.size
    if not is_narrow(out_w):
        width = LANES * (VECTORS if rows_r == ROWS else NARROW_VECTORS)
        for t in range(packed_g.shape[0]):
            a = packed_g[t].ctypes.data
            for oy in range(out_h):
                for ox in range(0, out_w, width):
                    _wide_tile(rows_r, a, source + 4 * (oy * wp + ox), table.ctypes.data, depth,
                               target + 4 * (t * rows_r * ldc + oy * out_w + ox), ldc,
                               min(rows_r, m - t * rows_r), min(width, out_w - ox),
                               accumulate)  # fmt: skip
        return
    pairs = 2 * out_w <= LANES
    per_call = NARROW_VECTORS * (2 if pairs else 1)
    for t in range(packed_g.shape[0]):
        a = packed_g[t].ctypes.data
        for oy in range(0, out_h, per_call):
            _narrow_tile(pairs, rows_r, a, source + 4 * oy * wp, table.ctypes.data, depth,
                         target + 4 * (t * rows_r * ldc + oy * out_w), ldc,
                         min(rows_r, m - t * rows_r), min(per_call, out_h - oy) * out_w,
                         accumulate, out_w, wp, out_w)  # fmt: skip


@njit(inline="always")
def _phase_columns(width, pw, px, sw, wq):
    """``[first, end)``: the columns ``j < Wq`` of phase ``px`` whose pixel
    ``j·s_w + px − p_w`` lies inside a row of ``width`` pixels (the rest are padding)."""
    first = min(max(0, -(-(pw - px) // sw)), wq)
    return first, max(min(wq, -(-(width + pw - px) // sw)), first)


@njit(cache=True)
def phase_group(x_b, c0, channels, xq, ph, pw, sh, sw):
    """``xq[((c·s_h + py)·s_w + px)·Hq·Wq + i·Wq + j] = xp[c, i·s_h + py, j·s_w + px]``: the
    group's ``channels`` of ``x_b`` zero-padded (``xp``, 0 outside the image and past the
    padded planes) and split into ``s_h·s_w`` phase planes each (:func:`phase_hw`), so that a
    stride-``s`` convolution reads each tap's pixels side by side (:func:`phase_offsets`);
    zeros in the slack after the last plane."""
    height, width = x_b.shape[1], x_b.shape[2]
    hq, wq = _phase_planes(height, width, ph, pw, sh, sw)
    source = x_b.reshape(-1)
    zero = np.float32(0.0)
    for c in range(channels):
        for py in range(sh):
            for px in range(sw):
                first, end = _phase_columns(width, pw, px, sw, wq)
                base = ((c * sh + py) * sw + px) * hq * wq
                for i in range(hq):
                    row = base + i * wq
                    y = i * sh + py - ph
                    if y < 0 or y >= height:
                        for j in range(wq):
                            xq[_u(row + j)] = zero
                        continue
                    start = (c0 + c) * height * width + y * width + px - pw
                    for j in range(first):
                        xq[_u(row + j)] = zero
                    for j in range(first, end):
                        xq[_u(row + j)] = source[_u(start + j * sw)]
                    for j in range(end, wq):
                        xq[_u(row + j)] = zero
    for i in range(channels * sh * sw * hq * wq, xq.size):  # slack
        xq[_u(i)] = zero


@njit(cache=True)
def conv_image(x_b, packed_g, table, out_b, scratch, c0, f0, m, geometry, assign):
    """``out_b[f0 + f] (+)= Σ_k W[f, k] · shift_k(xp)`` for the ``m`` outputs of one group of one
    image (module docstring): ``x_b (C, H, W)``, ``packed_g`` one group of :func:`pack`,
    ``table`` :func:`offsets`, ``out_b (F, out_h·out_w)``, ``scratch`` flat,
    :func:`scratch_floats` long; ``=`` with ``assign``, else ``+=``. ``geometry`` is
    ``(kh, kw, sh, sw, ph, pw, d, out_h, out_w)`` (``out_w`` ≥ :data:`MIN_NARROW_WIDTH`);
    strided, ``table`` is :func:`phase_offsets`'."""
    kh, kw, sh, sw, ph, pw, dil, out_h, out_w = geometry
    channels = table.size // (kh * kw)
    if sh == 1 and sw == 1:
        wp = x_b.shape[2] + 2 * pw
        padded = channels * (x_b.shape[1] + 2 * ph) * wp + dil * (kw - 1)
        xp = scratch[:padded]
        pad_group(x_b, c0, channels, xp, ph, pw)
    else:  # the padded input's phase planes (table: phase_offsets), read at stride 1
        hq, wp = _phase_planes(x_b.shape[1], x_b.shape[2], ph, pw, sh, sw)
        xp = scratch[: channels * sh * sw * hq * wp + dil * (kw - 1)]
        phase_group(x_b, c0, channels, xp, ph, pw, sh, sw)
    target = out_b[f0:].ctypes.data
    _gemm(packed_g, table, xp.ctypes.data, target, out_h * out_w, m, out_h, out_w, wp,
          not assign)  # fmt: skip


# ---- the input gradient tap by tap, where the flipped convolution would sum mostly zeros ----


def taps_dx_applies(kernel, stride, pad, dilation, per_group, outputs, out_w, in_hw,
                    out_hw) -> bool:  # fmt: skip
    """Whether a convolution's input gradient takes the micro-kernel tap by tap
    (:func:`taps_dx_image`): where the flipped convolution does not (:func:`dx_applies`), on
    output-gradient rows of :data:`MIN_NARROW_WIDTH`–16 pixels, with
    :data:`conv_taps.MIN_CHANNELS`–:data:`conv_taps.MAX_CHANNELS` input channels per group (the
    tile's rows) and at least as many outputs (its k-loop); strided, into the padded input
    gradient's phase planes (:func:`phase_hw`), where each tap's shifted rows are side by
    side again (a CIFAR ResNet's stride-2 3×3, two cores, batch 128, against im2col + GEMM +
    col2im: 16 → 32 at 32×32 3.5–4.1 → 2.8–2.9 ms, 32 → 64 at 16×16 2.5 → 2.0)."""
    strided = stride != (1, 1)
    return (
        microkernel.AVAILABLE
        and (strided or conv_taps.fits(kernel, stride, pad))
        and MIN_NARROW_WIDTH <= out_w <= LANES
        and conv_taps.MIN_CHANNELS <= per_group <= conv_taps.MAX_CHANNELS
        and outputs >= conv_taps.MIN_CHANNELS
        and not dx_applies(
            kernel, stride, pad, dilation, per_group, outputs, in_hw[1], in_hw, out_hw
        )
    )


def taps_dx_pack(weights: np.ndarray, kernel: tuple[int, int], rows_r: int) -> np.ndarray:
    """``packed[g, tap, t, f, r] = W[g, f, (c·kh + ky)·kw + kx]`` with ``c = t·R + r`` (0 past
    the group's channels): per group and tap, ``W_tapᵀ`` as :func:`microkernel.pack_rows` tiles
    of ``R = rows_r`` input channels, ``(G, T, tiles, m, R)``."""
    groups, m, k = weights.shape
    taps = kernel[0] * kernel[1]
    channels = k // taps
    tiles = -(-channels // rows_r)
    padded = np.zeros((groups, m, tiles * rows_r, taps), dtype=np.float32)
    padded[:, :, :channels] = weights.reshape(groups, m, channels, taps)
    # one copy (not a pack per tap: 25 small ones cost ~0.1 ms of LeNet's step)
    tiled = padded.reshape(groups, m, tiles, rows_r, taps).transpose(0, 4, 2, 1, 3)
    return np.ascontiguousarray(tiled)


@functools.lru_cache(maxsize=256)
def plane_offsets(m: int, n: int) -> np.ndarray:
    """``off[f] = f·n`` (int64): the output gradient's plane ``f`` (``n`` pixels), the
    k-loop's rows of :func:`taps_dx_image` (cached by shape, as :func:`offsets`)."""
    return (np.arange(m) * n).astype(np.int64)


def taps_dx_scratch_floats(channels, pad, in_hw, stride=(1, 1)) -> int:
    """Floats of one image's scratch of :func:`taps_dx_image`: the padded input gradient (as
    its phase planes where strided)."""
    hq, wq = phase_hw(in_hw, pad, stride)
    return channels * stride[0] * stride[1] * hq * wq


@njit(cache=True)
def taps_dx_image(delta_b, packed_g, table, dx_b, scratch, c0, f0, channels, geometry, assign):
    """``dx_b[c0 + c] (+)= Σ_tap Σ_f W[f, c, tap] · delta_b[f0 + f]`` placed at the tap's shift,
    for one group of one image (``=`` with ``assign``): per tap and tile of ``R`` input
    channels (``packed_g`` :func:`taps_dx_pack`'s group), the k-loop over the ``m`` outputs
    (``table`` :func:`plane_offsets`), the columns the output gradient's rows as segments
    (two to a vector where they have at most 8 pixels), added at the tap's offset into a zeroed
    padded buffer (``scratch``, :func:`taps_dx_scratch_floats`) then cropped: the transpose of
    the forward's shifted read. Each element is, tap after tap, the sum of one FMA chain over
    the outputs; no product with the padding's zeros is formed (LeNet's 5×5 on 8×8 outputs:
    the flipped convolution's 12×12 sums run over 2.25× the products). Strided, the padded
    buffer is split into the stride's phase planes (as :func:`phase_group` splits the input):
    tap ``(ky, kx)`` adds into plane ``(dy mod s_h, dx mod s_w)`` at ``(⌊dy/s_h⌋, ⌊dx/s_w⌋)``,
    rows ``Wq`` apart, and the planes are woven back into ``dx_b``."""
    _kh, kw, sh, sw, ph, pw, dil, out_h, out_w = geometry
    n_taps, tiles, m, rows_r = packed_g.shape
    hq, wq = _phase_planes(dx_b.shape[1], dx_b.shape[2], ph, pw, sh, sw)
    plane = sh * sw * hq * wq
    dxp = scratch[: channels * plane]
    dxp[:] = 0.0
    source = delta_b[f0:].ctypes.data
    pairs = 2 * out_w <= LANES
    per_call = NARROW_VECTORS * (2 if pairs else 1)
    for tap in range(n_taps):
        dy, dx = (tap // kw) * dil, (tap % kw) * dil
        shift = ((dy % sh) * sw + dx % sw) * hq * wq + dy // sh * wq + dx // sw
        for t in range(tiles):
            a = packed_g[tap, t].ctypes.data
            for oy in range(0, out_h, per_call):
                _narrow_tile(pairs, rows_r, a, source + 4 * oy * out_w, table.ctypes.data, m,
                             dxp.ctypes.data + 4 * (t * rows_r * plane + shift + oy * wq), plane,
                             min(rows_r, channels - t * rows_r),
                             min(per_call, out_h - oy) * out_w, True, out_w, out_w,
                             wq)  # fmt: skip
    if sh == 1 and sw == 1:
        _crop_add(dxp, dx_b, c0, channels, ph, pw, assign)
    else:
        _unphase_add(dxp, dx_b, c0, channels, ph, pw, sh, sw, assign)


@njit(cache=True)
def _unphase_add(dxq, dx_b, c0, channels, ph, pw, sh, sw, assign):
    """``dx_b[c0 + c, y, x] (+)= dxq[c, phase(y + p_h, x + p_w)]`` (``=`` with ``assign``): the
    padded input gradient's phase planes (:func:`taps_dx_image`) woven back, the padding
    dropped (:func:`conv_taps._crop_add` at stride 1); plane by plane, as :func:`phase_group`
    splits them."""
    height, width = dx_b.shape[1], dx_b.shape[2]
    hq, wq = _phase_planes(height, width, ph, pw, sh, sw)
    target = dx_b.reshape(-1)
    for c in range(channels):
        for py in range(sh):
            for px in range(sw):
                first, end = _phase_columns(width, pw, px, sw, wq)
                base = ((c * sh + py) * sw + px) * hq * wq
                for i in range(hq):
                    y = i * sh + py - ph
                    if y < 0 or y >= height:
                        continue
                    row = base + i * wq
                    start = (c0 + c) * height * width + y * width + px - pw
                    if assign:
                        for j in range(first, end):
                            target[_u(start + j * sw)] = dxq[_u(row + j)]
                    else:
                        for j in range(first, end):
                            target[_u(start + j * sw)] += dxq[_u(row + j)]


# ---- the weight gradient: per kernel row, the k-loop over the pixels ---------------------------


#: the narrowest output rows whose weight gradient takes the micro-kernel (it sums over the
#: pixels, so it needs no vector-wide rows; 8×8 maps measured: 64 → 64 channels 10.3 → 5.6 ms
#: against the per-tap GEMMs, LeNet's 5×5 20 → 50 4.1 → 3.3, batch 128 and 64, one core)
MIN_DW_WIDTH = 8

#: the weight gradient's tiles ``(R, J)``: :func:`dw_choice` picks the one whose rows waste the
#: fewest (8 × 3 on a tie). Measured on one core, LeNet's 5×5 20 → 50 at 8×8 (strips of 100
#: floats, batch 64): 16 × 1 2.39 ms, 10 × 2 2.05, 8 × 3 2.37, 5 × 5 2.63, 4 × 6 3.07 (per tap,
#: 16 × 1 on 20 channels: 3.34); 3×3 (batch 32, plain stores on whole tiles): 16 → 16 at 32×32
#: 1.60 with 16 × 1, 1.40 with 8 × 3; 32 → 32 at 16×16 1.23 → 1.08; 64 → 64 at 8×8 1.13 →
#: 1.05; 16 → 32 at 32×32 2.98 → 2.53 (10 × 2 slower on each)
DW_TILES = ((8, 3), (10, 2))
_dw_tile0 = microkernel.make_tile(*DW_TILES[0])
_dw_tile1 = microkernel.make_tile(*DW_TILES[1])


_DW_ROWS = tuple(rows for rows, _ in DW_TILES)


@njit(cache=True)
def dw_choice(m):
    """The weight gradient's tile for ``m`` outputs per group, as an index into
    :data:`DW_TILES`: the one with the fewest padded rows (:func:`fewest_padded`)."""
    return fewest_padded(m, _DW_ROWS)


def dw_applies(kernel, stride, pad, per_group, outputs, out_w) -> bool:
    """Whether a convolution's weight gradient takes the micro-kernel: where it is there, any
    stride (the pixel table steps over the input: :func:`pixel_offsets`) but not the unpadded
    1×1 of stride 1 (its GEMM reads the input as it is),
    :data:`conv_taps.MIN_CHANNELS`–:data:`conv_taps.MAX_CHANNELS` input channels per group (the
    tile's columns: fewer would leave most of a vector idle), at least as many outputs (its
    rows) and output rows of :data:`MIN_DW_WIDTH` pixels or more. Measured on two cores, batch
    128, against im2col + GEMM: the stride-2 3×3 of a CIFAR ResNet, 16 → 32 at 32×32 3.01 →
    1.88 ms, 32 → 64 at 16×16 2.37 → 1.56."""
    direct = stride == (1, 1) and kernel == (1, 1) and pad == (0, 0)
    return (
        microkernel.AVAILABLE
        and not direct
        and conv_taps.MIN_CHANNELS <= per_group <= conv_taps.MAX_CHANNELS
        and outputs >= conv_taps.MIN_CHANNELS
        and out_w >= MIN_DW_WIDTH
    )


def dw_scratch_floats(channels, m, kernel, pad, dilation, in_hw, out_hw) -> int:
    """Floats of one image's weight-gradient scratch: the padded group channels-last
    (:func:`pad_channels_last`) with its ``d·(kw − 1)·C`` slack, and the packed output
    gradient (:func:`pack_delta`, tiles of :func:`dw_choice`'s rows)."""
    hp, wp = in_hw[0] + 2 * pad[0], in_hw[1] + 2 * pad[1]
    rows = DW_TILES[dw_choice(m)][0]
    tiles = -(-m // rows)
    return (hp * wp + dilation * (kernel[1] - 1)) * channels + tiles * rows * out_hw[0] * out_hw[1]


@functools.lru_cache(maxsize=256)
def pixel_offsets(channels, out_hw, padded_w, stride=(1, 1)) -> np.ndarray:
    """``off[oy·out_w + ox] = (s_h·oy·Wp + s_w·ox)·C`` (int64): the channels-last padded image's
    pixel under output pixel ``(oy, ox)`` for the tap ``(0, 0)``, in floats (cached by shape,
    as :func:`offsets`)."""
    oy, ox = np.meshgrid(np.arange(out_hw[0]), np.arange(out_hw[1]), indexing="ij")
    return ((stride[0] * oy * padded_w + stride[1] * ox) * channels).reshape(-1).astype(np.int64)


@njit(cache=True)
def pad_channels_last(x_b, c0, channels, xt, ph, pw):
    """``xt[((y + p_h)·Wp + x + p_w)·C + c] = x_b[c0 + c, y, x]``, 0 in the padding and the
    slack after the last pixel (pixel by pixel: each pixel's channels one contiguous store)."""
    height, width = x_b.shape[1], x_b.shape[2]
    source = x_b.reshape(-1)
    plane = height * width
    wp = width + 2 * pw
    zero = np.float32(0.0)
    for i in range(ph * wp * channels):  # top rows
        xt[_u(i)] = zero
    for y in range(height):
        row = (y + ph) * wp * channels
        for i in range(pw * channels):  # left and right padding
            xt[_u(row + i)] = zero
            xt[_u(row + (pw + width) * channels + i)] = zero
        for x in range(width):
            pixel = row + (pw + x) * channels
            start = c0 * plane + y * width + x
            for c in range(channels):
                xt[_u(pixel + c)] = source[_u(start + c * plane)]
    for i in range((height + ph) * wp * channels, xt.size):  # bottom rows and slack
        xt[_u(i)] = zero


@njit(cache=True)
def pack_delta(delta_b, f0, m, packed, rows_r):
    """``packed[t, p, r] = delta_b[f0 + t·R + r, p]`` (0 past ``m``): the output gradient of one
    group as :func:`microkernel.pack_rows` tiles of ``R = rows_r`` channels, ``packed`` flat."""
    n = delta_b.shape[1]
    source = delta_b.reshape(-1)
    zero = np.float32(0.0)
    for t in range((m + rows_r - 1) // rows_r):
        live = min(rows_r, m - t * rows_r)
        start = (f0 + t * rows_r) * n
        for p in range(n):
            base = (t * n + p) * rows_r
            for r in range(live):
                packed[_u(base + r)] = source[_u(start + r * n + p)]
            for r in range(live, rows_r):
                packed[_u(base + r)] = zero


@njit(inline="always")
def _channels_last_and_packed(x_b, delta_b, scratch, c0, f0, m, channels, ph, pw, slack, rows_r):
    """``(xt, packed)`` in ``scratch``: the group's ``channels`` of ``x_b`` padded and
    channels-last (:func:`pad_channels_last`; ``slack`` pixels after the last row), then the
    output gradient as tiles of ``rows_r`` channels (:func:`pack_delta`): the operands of both
    weight gradients."""
    padded = ((x_b.shape[1] + 2 * ph) * (x_b.shape[2] + 2 * pw) + slack) * channels
    xt = scratch[:padded]
    tiles = (m + rows_r - 1) // rows_r
    packed = scratch[padded : padded + tiles * rows_r * delta_b.shape[1]]
    pad_channels_last(x_b, c0, channels, xt, ph, pw)
    pack_delta(delta_b, f0, m, packed, rows_r)
    return xt, packed


@njit(inline="always")
def _dw_tile(choice, a, b, table, depth, c, ldc, rows, cols, accumulate):
    """The :data:`DW_TILES` tile number ``choice`` (a literal switch: each is an intrinsic)."""
    if choice == 0:
        _dw_tile0(a, b, table, depth, c, ldc, rows, cols, accumulate)
    else:
        _dw_tile1(a, b, table, depth, c, ldc, rows, cols, accumulate)


@njit(cache=True)
def weight_grad_image(x_b, delta_b, partial_g, scratch, table, c0, f0, m, geometry, accumulate):
    """``partial[ky, f, kx, c] (+)= Σ_p delta_b[f0 + f, p] · x_pad[c, shift_(ky,kx)(p)]`` for
    one group of one image, ``partial_g`` flat ``(kh, m, kw, C)`` (``=`` unless
    ``accumulate``), with the tile :func:`dw_choice` picks: rows ``R`` output channels
    (the packed ``delta``, broadcast), columns a strip of the channels-last padded image
    (:func:`pad_channels_last`), the k-loop over the pixels through ``table``
    (:func:`pixel_offsets`). Without dilation a kernel row's taps are side by side in the
    padded image (``kx·C + c`` from the row's first tap), so one strip of ``kw·C`` floats per
    kernel row (LeNet's 5×5 on 20 channels: 7 vectors for 100 floats, where tap by tap took
    10 for 5 × 20); with dilation one strip of ``C`` per tap. Each element is one FMA chain
    over the image's pixels in order, whatever the tile."""
    kh, kw, _sh, _sw, ph, pw, dil, out_h, out_w = geometry
    channels = partial_g.size // (kh * kw * m)
    choice = dw_choice(m)
    rows_r, vectors_j = DW_TILES[choice]
    width = LANES * vectors_j
    wp = x_b.shape[2] + 2 * pw
    n = out_h * out_w
    tiles = (m + rows_r - 1) // rows_r
    xt, packed = _channels_last_and_packed(x_b, delta_b, scratch, c0, f0, m, channels, ph, pw,
                                           dil * (kw - 1), rows_r)  # fmt: skip
    strip = kw * channels if dil == 1 else channels
    ldc = kw * channels
    target = partial_g.ctypes.data
    for ky in range(kh):
        for kx in range(0, kw, kw if dil == 1 else 1):
            shift = (ky * dil * wp + kx * dil) * channels
            for t in range(tiles):
                a = packed[t * n * rows_r :].ctypes.data
                for cb in range(0, strip, width):
                    _dw_tile(choice, a, xt[shift + cb :].ctypes.data, table.ctypes.data, n,
                             target + 4 * ((ky * m + t * rows_r) * ldc + kx * channels + cb), ldc,
                             min(rows_r, m - t * rows_r), min(width, strip - cb),
                             accumulate)  # fmt: skip


# ---- the weight gradient of few input channels: each kernel row's taps one segment ------------


#: the fewest products per weight-gradient row (``C/G·kh·kw``) for :func:`weight_grad_rows_image`:
#: measured on one core against im2col + GEMM (batch 64 and 128), 3 → 32 channels 5×5 at 32×32
#: (75; Caffe's CIFAR-10 first layers) 12.2 → 8.6 ms, but LeNet's 1 → 20 5×5 (25) 0.72 → 1.17
#: and 3 → 16 3×3 (27) 2.65 → 3.13: packing the output gradient and the padded image per image
#: costs more than so short a sum gains
MIN_DW_ROWS_DEPTH = 48


def dw_rows_applies(kernel, stride, pad, dilation, per_group, outputs) -> bool:
    """Whether a convolution's weight gradient takes :func:`weight_grad_rows_image`: where
    the micro-kernel is there, stride 1 and not an unpadded 1×1, no dilation, fewer input
    channels per group than :func:`dw_applies` takes, a kernel row's ``kw·C`` taps at most 16
    floats (one segment), :data:`MIN_DW_ROWS_DEPTH` or more taps and at least 8 outputs (the
    tile's rows)."""
    return (
        microkernel.AVAILABLE
        and conv_taps.fits(kernel, stride, pad)
        and dilation == 1
        and per_group < conv_taps.MIN_CHANNELS
        and per_group * kernel[1] <= LANES
        and per_group * kernel[0] * kernel[1] >= MIN_DW_ROWS_DEPTH
        and outputs >= NARROW_ROWS[0]
    )


def dw_rows_scratch_floats(channels, m, pad, in_hw, out_hw) -> int:
    """Floats of one image's scratch of :func:`weight_grad_rows_image`: the padded group
    channels-last and the packed output gradient."""
    hp, wp = in_hw[0] + 2 * pad[0], in_hw[1] + 2 * pad[1]
    rows = NARROW_ROWS[fewest_padded(m, NARROW_ROWS)]
    return hp * wp * channels + -(-m // rows) * rows * out_hw[0] * out_hw[1]


@njit(cache=True)
def weight_grad_rows_image(x_b, delta_b, partial_g, scratch, table, c0, f0, m, geometry,
                           accumulate):  # fmt: skip
    """``partial[f, ky, kx, c] (+)= Σ_p delta_b[f0 + f, p] · x_pad[c, shift_(ky,kx)(p)]`` for
    one group of one image, ``partial_g`` flat ``(m, kh, kw, C)`` (``=`` unless
    ``accumulate``): rows 8 or 10 output channels (the packed ``delta``), the k-loop over the
    pixels through ``table`` (:func:`pixel_offsets`), and each kernel row's ``kw·C`` taps one
    segment of the channels-last padded image (:func:`pad_channels_last`: a kernel row's taps
    side by side), the rows one padded row apart, two to a vector where ``kw·C ≤ 8``: for a
    first layer of a few channels (a 5×5 on 3 channels: 15 floats a kernel row, where a strip
    of them per kernel row would leave most of a tile idle). Each element is one FMA chain
    over the image's pixels."""
    kh, kw, _sh, _sw, ph, pw, _dil, out_h, out_w = geometry
    channels = partial_g.size // (kh * kw * m)
    rows_r = NARROW_ROWS[fewest_padded(m, NARROW_ROWS)]
    wp = x_b.shape[2] + 2 * pw
    n = out_h * out_w
    tiles = (m + rows_r - 1) // rows_r
    xt, packed = _channels_last_and_packed(x_b, delta_b, scratch, c0, f0, m, channels, ph, pw, 0,
                                           rows_r)  # fmt: skip
    width = kw * channels
    pairs = 2 * width <= LANES
    per_call = NARROW_VECTORS * (2 if pairs else 1)
    depth = kh * width
    target = partial_g.ctypes.data
    for t in range(tiles):
        a = packed[t * n * rows_r :].ctypes.data
        for ky in range(0, kh, per_call):
            _narrow_tile(pairs, rows_r, a, xt[ky * wp * channels :].ctypes.data, table.ctypes.data,
                         n, target + 4 * (t * rows_r * depth + ky * width), depth,
                         min(rows_r, m - t * rows_r), min(per_call, kh - ky) * width, accumulate,
                         width, wp * channels, width)  # fmt: skip
