"""Convolution one image at a time on every core (CPU, Numba + OpenBLAS ``sgemm``).

darknet (``forward_convolutional_layer``) and Caffe (``BaseConvolutionLayer``) unfold and
multiply one image at a time: ``col = im2col(x_b)``, ``y_b = W·col`` per group. So do these
kernels, with the batch split into ``P`` fixed chunks of consecutive images that the threads
share out (``engine.backends.cpu.share``); each chunk has its own ``K × N`` column buffer,
small enough to stay in the core's cache between the unfold and the GEMM, and calls OpenBLAS
single-threaded (:mod:`engine.backends.cpu.sgemm`). The output lands in NCHW directly.

Backward, per image and group, with the columns unfolded again (cheaper than keeping a batch's
worth of them from forward):

* ``dW_pᵀ (+)= col · delta_bᵀ`` into the chunk's own partial sum, then
  ``dW += alpha · (Σ_p dW_pᵀ)ᵀ`` summed in chunk order ``p = 0, 1, …`` — so the result does not
  depend on the thread count (darknet adds image after image into ``weight_updates``; the
  float32 sums differ only in order);
* ``dx_b += col2im(W_gᵀ · delta_b)``.

A stride-1 convolution with 8–64 input channels per group skips im2col altogether: one GEMM
per kernel tap on a zero-padded copy of the image (:mod:`engine.backends.cpu.conv_taps`),
forward and backward, where the chunk scratch holds it (:func:`col_floats`); the backward
keeps im2col where a small kernel at least doubles the channels
(:func:`conv_taps.backward_applies`). Before the taps, where the shape suits its tiles (output
rows of 8+ pixels, the channel counts of :mod:`engine.backends.cpu.conv_direct`) and the JIT
target has the instructions, the register-blocked micro-kernel computes the forward, the input
gradient (flipped convolution, or tap by tap) and the weight gradient with no BLAS call
(``partial`` then holds each group's ``(kh, m, kw, C/G)``, or ``(m, kh, kw, C/G)`` by kernel
rows).

A 1×1 convolution with stride 1 and no padding needs no unfolding (``col`` is the input
itself, as Caffe's ``is_1x1_`` and darknet's ``size == 1`` shortcut), and its input gradient is
one GEMM adding straight into ``dx`` (``beta = 1``).

Layouts: ``x``/``dx`` ``(B, C, H, W)``; ``weights``/``dweights`` ``(G, m, K)`` with
``K = (C/G)·kh·kw`` in darknet's and Caffe's im2col row order ``(c·kh + ky)·kw + kx``;
``out``/``delta`` ``(B, G·m, N)``; scratch ``col``/``dcol`` ``(P, K, N)``, ``partial``
``(P, G, K, m)``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from dnupdate.engine.backends.cpu import conv_direct, conv_dot, conv_taps
from dnupdate.engine.backends.cpu.activations import LINEAR
from dnupdate.engine.backends.cpu.conv import fold_image_add, unfold_image
from dnupdate.engine.backends.cpu.conv_taps import backward_image as taps_backward_image
from dnupdate.engine.backends.cpu.conv_taps import forward_image as taps_forward_image
from dnupdate.engine.backends.cpu.sgemm import NO_TRANS, ROW_MAJOR, TRANS, cblas_sgemm
from dnupdate.engine.backends.cpu.share import share_out, share_start
from dnupdate.engine.backends.cpu.tail import image_backward, image_forward


@njit(inline="always")
def _chunk(p, chunks, batch):
    """Images ``[first, end)`` of chunk ``p`` (consecutive, sizes differing by at most one)."""
    return p * batch // chunks, (p + 1) * batch // chunks


@njit(cache=True)
def _forward_images(x, weights, out, col, first, end, geometry, direct, bias, code, tail, taps,
                    packed, table):  # fmt: skip
    """Images ``[first, end)`` of the forward pass, with one chunk's ``col (K, N)``; with
    ``packed`` (non-empty, :func:`conv_direct.pack`) by the micro-kernel, with ``taps``
    (non-empty, :func:`conv_taps.tap_weights`) by one GEMM per kernel tap."""
    kh, kw, sh, sw, ph, pw, dil, out_h, out_w = geometry
    per_group = x.shape[1] // weights.shape[0]
    groups, m, k = weights.shape
    n = out_h * out_w
    for b in range(first, end):
        for g in range(groups):
            if packed.size > 0:
                conv_direct.conv_image(x[b], packed[g], table, out[b], col.reshape(-1),
                                       g * per_group, g * m, m, geometry, True)  # fmt: skip
                continue
            if taps.size > 0:
                taps_forward_image(x[b], taps[g], out[b], col.reshape(-1), g * per_group, g * m,
                                   geometry)  # fmt: skip
                continue
            if direct:
                source = x[b, g * per_group].ctypes.data
            else:
                unfold_image(x[b], col.reshape(-1), 0, n, k, g * per_group, kh, kw, sh, sw, ph,
                             pw, dil, out_h, out_w)  # fmt: skip
                source = col.ctypes.data
            cblas_sgemm(
                ROW_MAJOR, NO_TRANS, NO_TRANS, m, n, k,
                np.float32(1.0), weights[g].ctypes.data, k, source, n,
                np.float32(0.0), out[b, g * m].ctypes.data, n,
            )  # fmt: skip
        if tail:
            image_forward(out[b], bias, code)


@njit(cache=True, nogil=True)
def _forward_chunks(p0, p1, x, weights, out, col, g0, g1, g2, g3, g4, g5, g6, g7, g8, direct,
                    bias, code, tail, taps, packed, table):  # fmt: skip
    """Chunks ``[p0, p1)`` of the forward pass (run by ``share_out``), the geometry unpacked
    (``g0 … g8``: a parallel loop's body cannot pass a tuple on, :func:`_forward_shared`)."""
    geometry = (g0, g1, g2, g3, g4, g5, g6, g7, g8)
    chunks = col.shape[0]
    for p in range(p0, p1):
        first, end = _chunk(p, chunks, x.shape[0])
        _forward_images(x, weights, out, col[p], first, end, geometry, direct, bias, code, tail,
                        taps, packed, table)  # fmt: skip


@njit(parallel=True, cache=True)
def _forward_shared(threads, count, x, weights, out, col, g0, g1, g2, g3, g4, g5, g6, g7, g8,
                    direct, bias, code, tail, taps, packed, table):  # fmt: skip
    """:func:`_forward_chunks`, one share of the chunks per thread (``share_out``)."""
    for t in prange(threads):
        _forward_chunks(share_start(t, count, threads), share_start(t + 1, count, threads), x,
                        weights, out, col, g0, g1, g2, g3, g4, g5, g6, g7, g8, direct, bias,
                        code, tail, taps, packed, table)  # fmt: skip


@njit(cache=True)
def _backward_images(
    x, weights, delta, dx, col, dcol, partial, sums, first, end, geometry, direct, y, code, tail,
    assign, taps, packed_dx, table_dx, geometry_dx, table_dw, packed_tdx, table_tdx, dw_layout,
):  # fmt: skip
    """Images ``[first, end)`` of the backward pass, into one chunk's ``partial (G, K, m)``
    and bias ``sums``, with its ``col``/``dcol (K, N)``; with ``taps`` (non-empty) by one GEMM
    per kernel tap (:func:`conv_taps.backward_image`); with ``packed_dx`` (non-empty, the
    flipped weights, :func:`conv_direct.flipped_weights`) the input gradient by the
    micro-kernel, in ``dcol``; with ``table_dw`` (non-empty, :func:`conv_direct.pixel_offsets`)
    the weight gradient by the micro-kernel into ``partial`` laid out ``(G, kh, m, kw, C/G)`` (the
    input gradient then by whichever path computes it); with ``packed_tdx`` (non-empty,
    :func:`conv_direct.taps_dx_pack`) the input gradient by the micro-kernel tap by tap
    (:func:`conv_direct.taps_dx_image`, ``table_tdx`` its plane offsets), in ``dcol``; with
    ``dw_layout`` :data:`DW_ROWS` the weight gradient of few channels by kernel rows
    (:func:`conv_direct.weight_grad_rows_image`, ``partial`` laid out ``(G, m, kh, kw, C/G)``),
    :data:`DW_DOT` with the pixels in the lanes (:func:`conv_dot.weight_grad_dot_image`,
    ``table_dw`` its tap offsets, ``partial`` laid out ``(G, m, K)``)."""
    kh, kw, sh, sw, ph, pw, dil, out_h, out_w = geometry
    per_group = x.shape[1] // weights.shape[0]
    groups, m, k = weights.shape
    n = out_h * out_w
    micro_dx = dx.size > 0 and (packed_dx.size > 0 or packed_tdx.size > 0)
    micro_dw = table_dw.size > 0
    want_dx = dx.size > 0 and not micro_dx
    no_dx = np.empty((0, 0, 0), dtype=np.float32)
    in_n = dx.shape[2] * dx.shape[3] if dx.size > 0 else 0
    for b in range(first, end):
        beta = np.float32(0.0) if b == first else np.float32(1.0)
        if tail:
            image_backward(y[b], delta[b], sums, code, b == first)
        for g in range(groups):
            c0 = g * per_group
            if micro_dx and packed_tdx.size > 0:  # dx_b[group] (+)= Σ_tap shifted W_tapᵀ·δ
                conv_direct.taps_dx_image(delta[b], packed_tdx[g], table_tdx, dx[b],
                                          dcol.reshape(-1), c0, g * m, per_group, geometry,
                                          assign)  # fmt: skip
            elif micro_dx:  # dx_b[group] (+)= the flipped convolution of delta_b[group]
                delta_image = delta[b].reshape(delta.shape[1], out_h, out_w)
                conv_direct.conv_image(delta_image, packed_dx[g], table_dx,
                                       dx[b].reshape(dx.shape[1], in_n), dcol.reshape(-1), g * m,
                                       c0, per_group, geometry_dx, assign)  # fmt: skip
            if micro_dw and dw_layout == DW_DOT:
                conv_dot.weight_grad_dot_image(x[b], delta[b], partial[g].reshape(-1),
                                               col.reshape(-1), table_dw, c0, g * m, m, geometry,
                                               b != first)  # fmt: skip
            elif micro_dw and dw_layout == DW_ROWS:
                conv_direct.weight_grad_rows_image(x[b], delta[b], partial[g].reshape(-1),
                                                   col.reshape(-1), table_dw, c0, g * m, m,
                                                   geometry, b != first)  # fmt: skip
            elif micro_dw:
                conv_direct.weight_grad_image(x[b], delta[b], partial[g].reshape(-1),
                                              col.reshape(-1), table_dw, c0, g * m, m, geometry,
                                              b != first)  # fmt: skip
            if micro_dw and not want_dx:
                continue
            if taps.size > 0:
                dx_b = dx[b] if want_dx else no_dx
                taps_backward_image(x[b], delta[b], taps[g], partial[g], dx_b, col.reshape(-1),
                                    dcol.reshape(-1), c0, g * m, geometry, beta, assign,
                                    not micro_dw)  # fmt: skip
                continue
            delta_g = delta[b, g * m].ctypes.data
            if not micro_dw:
                if direct:
                    source = x[b, c0].ctypes.data
                else:
                    unfold_image(x[b], col.reshape(-1), 0, n, k, c0, kh, kw, sh, sw, ph, pw, dil,
                                 out_h, out_w)  # fmt: skip
                    source = col.ctypes.data
                # dW_p[g]ᵀ (K×m) (+)= col (K×N) · delta_gᵀ (N×m): this orientation runs 10–25%
                # faster in OpenBLAS than delta_g · colᵀ; transposed back in the sum
                cblas_sgemm(
                    ROW_MAJOR, NO_TRANS, TRANS, k, m, n,
                    np.float32(1.0), source, n, delta_g, n,
                    beta, partial[g].ctypes.data, m,
                )  # fmt: skip
            if not want_dx:
                continue
            if direct:  # dx_b[group] (K×N) (+)= W_gᵀ (K×m) · delta_g (m×N)
                cblas_sgemm(
                    ROW_MAJOR, TRANS, NO_TRANS, k, n, m,
                    np.float32(1.0), weights[g].ctypes.data, k, delta_g, n,
                    np.float32(0.0) if assign else np.float32(1.0), dx[b, c0].ctypes.data, n,
                )  # fmt: skip
            else:  # dcol (K×N) = W_gᵀ · delta_g, folded back into dx_b
                if assign:
                    dx[b, c0 : c0 + per_group] = 0.0
                cblas_sgemm(
                    ROW_MAJOR, TRANS, NO_TRANS, k, n, m,
                    np.float32(1.0), weights[g].ctypes.data, k, delta_g, n,
                    np.float32(0.0), dcol.ctypes.data, n,
                )  # fmt: skip
                fold_image_add(dcol.reshape(-1), 0, n, k, dx[b], c0, kh, kw, sh, sw, ph, pw, dil,
                               out_h, out_w)  # fmt: skip


@njit(cache=True, nogil=True)
def _backward_chunks(
    p0, p1, x, weights, delta, dx, col, dcol, partial, sums, g0, g1, g2, g3, g4, g5, g6, g7, g8,
    direct, y, code, tail, assign, taps, packed_dx, table_dx, h0, h1, h2, h3, h4, h5, h6, h7, h8,
    table_dw, packed_tdx, table_tdx, dw_layout,
):  # fmt: skip
    """Chunks ``[p0, p1)`` of the backward pass (run by ``share_out``), the geometry and the
    input gradient's geometry unpacked (``g*``, ``h*``: :func:`_forward_chunks`)."""
    geometry = (g0, g1, g2, g3, g4, g5, g6, g7, g8)
    geometry_dx = (h0, h1, h2, h3, h4, h5, h6, h7, h8)
    chunks = col.shape[0]
    for p in range(p0, p1):
        first, end = _chunk(p, chunks, x.shape[0])
        _backward_images(
            x, weights, delta, dx, col[p], dcol[p], partial[p], sums[p], first, end, geometry,
            direct, y, code, tail, assign, taps, packed_dx, table_dx, geometry_dx, table_dw,
            packed_tdx, table_tdx, dw_layout,
        )  # fmt: skip


@njit(parallel=True, cache=True)
def _backward_shared(
    threads, count, x, weights, delta, dx, col, dcol, partial, sums, g0, g1, g2, g3, g4, g5, g6,
    g7, g8, direct, y, code, tail, assign, taps, packed_dx, table_dx, h0, h1, h2, h3, h4, h5, h6,
    h7, h8, table_dw, packed_tdx, table_tdx, dw_layout,
):  # fmt: skip
    """:func:`_backward_chunks`, one share of the chunks per thread (``share_out``)."""
    for t in prange(threads):
        _backward_chunks(
            share_start(t, count, threads), share_start(t + 1, count, threads), x, weights,
            delta, dx, col, dcol, partial, sums, g0, g1, g2, g3, g4, g5, g6, g7, g8, direct, y,
            code, tail, assign, taps, packed_dx, table_dx, h0, h1, h2, h3, h4, h5, h6, h7, h8,
            table_dw, packed_tdx, table_tdx, dw_layout,
        )  # fmt: skip


#: the layouts of the chunks' weight-gradient sums (:func:`_add_chunk_sums`)
_LAYOUT_CODES = {"plain": 0, "transposed": 1, "strip": 2, "rows": 3}


@njit(inline="always")
def _add_scaled(out, index, value, alpha):
    """``out[index] += value`` (``alpha`` 1), ``−= value`` (−1), else ``+= f32(alpha·value)``."""
    if alpha == 1.0:
        out[index] = out[index] + value
    elif alpha == -1.0:
        out[index] = out[index] - value
    else:
        out[index] = out[index] + alpha * value


#: floats per block of the chunks' element-wise sum
_SUM_BLOCK = 4096


@njit(parallel=True, cache=True)
def _chunk_sums_into(partial, out, alpha, layout, groups, m, kh, kw):
    """:func:`_add_chunk_sums` over flat views: ``partial`` ``(P, n)`` (its chunk 0 receives
    the sum), ``out`` ``(n,)`` laid out ``(G, m, K)``, ``K = C·kh·kw``; the reordering add
    walks the sum in its own order (``layout`` 0 plain, 1 transposed ``(G, K, m)``, 2 strip
    ``(G, kh, m, kw, C)``, 3 rows ``(G, m, kh, kw, C)``)."""
    chunks, n = partial.shape
    total = partial[0]
    for block in prange((n + _SUM_BLOCK - 1) // _SUM_BLOCK):
        lo = block * _SUM_BLOCK
        hi = min(n, lo + _SUM_BLOCK)
        first = total[lo:hi]
        for p in range(1, chunks):
            part = partial[p, lo:hi]
            for i in range(hi - lo):
                first[i] += part[i]
    depth = n // (groups * m)
    channels = depth // (kh * kw)
    if layout == 0:
        for block in prange((n + _SUM_BLOCK - 1) // _SUM_BLOCK):
            for i in range(block * _SUM_BLOCK, min(n, (block + 1) * _SUM_BLOCK)):
                _add_scaled(out, i, total[i], alpha)
    elif layout == 1:
        for row in prange(groups * depth):  # (g, k): m consecutive sums
            g, k = row // depth, row % depth
            for f in range(m):
                _add_scaled(out, (g * m + f) * depth + k, total[row * m + f], alpha)
    elif layout == 2:
        for row in prange(groups * kh * m):  # (g, ky, f): kw·C consecutive sums
            g, ky, f = row // (kh * m), row // m % kh, row % m
            source = row * kw * channels
            for kx in range(kw):
                for c in range(channels):
                    k = (c * kh + ky) * kw + kx
                    _add_scaled(out, (g * m + f) * depth + k, total[source], alpha)
                    source += 1
    else:
        for row in prange(groups * m):  # (g, f): kh·kw·C consecutive sums
            source = row * depth
            for ky in range(kh):
                for kx in range(kw):
                    for c in range(channels):
                        _add_scaled(out, row * depth + (c * kh + ky) * kw + kx, total[source],
                                    alpha)  # fmt: skip
                        source += 1


def _add_chunk_sums(partial: np.ndarray, out: np.ndarray, alpha: float, layout: str,
                    kernel=None):  # fmt: skip
    """``out += alpha · Σ_p partial[p]``, each group's sum reordered to ``out``'s ``(m, K)``
    from ``layout``: ``"plain"`` (already in that order, whatever shape the scratch has),
    ``"transposed"`` (``(K, m)``), ``"strip"`` (the micro-kernel's ``(kh, m, kw, C)``) or
    ``"rows"`` (``(m, kh, kw, C)``), ``kernel`` the ``(kh, kw)`` of the last two. The chunks
    are added in order per element (what NumPy's sum over a leading axis does), whatever the
    thread count; ``alpha`` ±1 adds or subtracts the sum, another value adds ``f32(alpha)·sum``
    (two roundings). ``partial``'s first chunk receives the sum (it is scratch). Two parallel
    passes, the sum and the reordering add (NumPy's sum, a reordering copy and the add took
    0.19 ms of LeNet's 6–7 ms step)."""
    if not out.flags.c_contiguous:
        raise ValueError("conv_images: the gradient sums go to C-contiguous arrays")
    kh, kw = kernel if kernel is not None else (1, 1)
    groups, m = out.shape[:2] if out.ndim == 3 else (1, 1)
    flat = partial.reshape(partial.shape[0], -1)
    _chunk_sums_into(flat, out.reshape(-1), np.float32(alpha), _LAYOUT_CODES[layout], groups, m,
                     kh, kw)  # fmt: skip


def _require_contiguous(**arrays) -> None:
    """The kernels hand raw pointers to BLAS with C-order leading dimensions: refuse other
    layouts (a reshape would silently work on a copy)."""
    for name, array in arrays.items():
        if array is not None and not array.flags.c_contiguous:
            raise ValueError(f"conv_images: {name} must be C-contiguous")


def is_direct(kernel, stride, pad, dilation) -> bool:
    """A 1×1 convolution, stride 1, no padding: the input is its own column matrix."""
    return kernel == (1, 1) and stride == (1, 1) and pad == (0, 0)


_NO_FLOATS = np.empty(0, dtype=np.float32)
_NO_TAPS = np.empty((0, 0, 0, 0), dtype=np.float32)
_NO_TABLE = np.empty(0, dtype=np.int64)
#: the weight gradient's micro-kernel paths (``dw_layout``) and how each lays out ``partial``
DW_STRIP, DW_ROWS, DW_DOT = 0, 1, 2
_PARTIAL_LAYOUTS = {DW_STRIP: "strip", DW_ROWS: "rows", DW_DOT: "plain"}


def col_floats(x_shape, weights_shape, kernel, stride, pad, dilation, out_hw) -> int:
    """Floats of one chunk's ``col`` scratch: ``K·N`` for im2col, at least the forward
    scratch of :mod:`conv_taps` where that applies (the forward then takes the taps)."""
    stride = tuple(stride)  # as in conv_forward
    groups, m, k = weights_shape
    floats = k * out_hw[0] * out_hw[1]
    per_group = x_shape[1] // groups
    if conv_taps.applies(kernel, stride, pad, per_group):
        taps = conv_taps.forward_floats(per_group, m, kernel, pad, dilation, x_shape[2:], out_hw)
        floats = max(floats, taps)
    if conv_direct.applies(kernel, stride, pad, per_group, m, out_hw[1]):
        direct = conv_direct.scratch_floats(per_group, kernel, pad, dilation, x_shape[2:],
                                            stride)  # fmt: skip
        floats = max(floats, direct)
    if conv_direct.dw_applies(kernel, stride, pad, per_group, m, out_hw[1]):
        dw = conv_direct.dw_scratch_floats(per_group, m, kernel, pad, dilation, x_shape[2:],
                                           out_hw)  # fmt: skip
        floats = max(floats, dw)
    if conv_direct.dw_rows_applies(kernel, stride, pad, dilation, per_group, m):
        dw = conv_direct.dw_rows_scratch_floats(per_group, m, pad, x_shape[2:], out_hw)
        floats = max(floats, dw)
    if conv_dot.dw_dot_applies(kernel, stride, pad, per_group, m, out_hw):
        dw = conv_dot.dw_dot_scratch_floats(per_group, kernel, pad, x_shape[2:], out_hw)
        floats = max(floats, dw)
    return floats


def _micro_forward(x, weights, col, kernel, stride, pad, dilation, out_hw, by_micro):
    """``(packed, table)`` for the micro-kernel's forward (:mod:`conv_direct`), or empty ones
    where it does not apply, the scratch is short or ``by_micro`` is False."""
    per_group = x.shape[1] // weights.shape[0]
    chosen = conv_direct.applies(kernel, stride, pad, per_group, weights.shape[1], out_hw[1])
    need = conv_direct.scratch_floats(per_group, kernel, pad, dilation, x.shape[2:], stride)
    if by_micro is False or not chosen or col.shape[1] < need:
        if by_micro:
            raise ValueError("conv_images: no micro-kernel forward for this geometry or scratch")
        return _NO_TAPS, _NO_TABLE
    planes_hw = conv_direct.phase_hw(x.shape[2:], pad, stride)
    rows = conv_direct.tile_rows(weights.shape[1], out_hw[1])
    packed = conv_direct.pack(weights, rows)
    return packed, conv_direct.phase_offsets(per_group, kernel, dilation, stride, planes_hw)


def _micro_dx(x, weights, dcol, kernel, stride, pad, dilation, out_hw, by_micro):
    """``(packed, table, geometry)`` of the input gradient's flipped convolution by the
    micro-kernel, or empty ones where it does not apply, ``dcol`` is short or ``by_micro`` is
    False."""
    m = weights.shape[1]
    per_group = x.shape[1] // weights.shape[0]
    chosen = conv_direct.dx_applies(kernel, stride, pad, dilation, per_group, m, x.shape[3],
                                    x.shape[2:], out_hw)  # fmt: skip
    geometry = conv_direct.dx_geometry(kernel, pad, dilation, x.shape[2:])
    need = conv_direct.scratch_floats(m, kernel, geometry[4:6], dilation, out_hw)
    if by_micro is False or not chosen or dcol.shape[1] < need:
        return _NO_TAPS, _NO_TABLE, geometry
    flipped = conv_direct.flipped_weights(weights, kernel)
    padded_hw = (out_hw[0] + 2 * geometry[4], out_hw[1] + 2 * geometry[5])
    table = conv_direct.offsets(m, kernel, dilation, padded_hw)
    return conv_direct.pack(flipped, conv_direct.tile_rows(per_group, x.shape[3])), table, geometry


_NO_TAP_TILES = np.empty((0, 0, 0, 0, 0), dtype=np.float32)


def _micro_taps_dx(x, weights, dcol, kernel, stride, pad, dilation, out_hw, by_micro):
    """``(packed, table)`` of the input gradient by the micro-kernel tap by tap
    (:func:`conv_direct.taps_dx_image`), or empty ones (as :func:`_micro_dx`)."""
    groups, m, _ = weights.shape
    per_group = x.shape[1] // groups
    chosen = conv_direct.taps_dx_applies(kernel, stride, pad, dilation, per_group, m, out_hw[1],
                                         x.shape[2:], out_hw)  # fmt: skip
    need = conv_direct.taps_dx_scratch_floats(per_group, pad, x.shape[2:], stride)
    if by_micro is False or not chosen or dcol.shape[1] < need:
        return _NO_TAP_TILES, _NO_TABLE
    rows = conv_direct.tile_rows(per_group, out_hw[1])
    packed = conv_direct.taps_dx_pack(weights, kernel, rows)
    return packed, conv_direct.plane_offsets(m, out_hw[0] * out_hw[1])


def _micro_dw(x, weights, col, kernel, stride, pad, dilation, out_hw, by_micro):
    """``(table, layout)``: the table of the weight gradient by the micro-kernel and the
    layout it writes (:data:`DW_STRIP`: per kernel row's strip,
    :func:`conv_direct.weight_grad_image`; :data:`DW_DOT`: for few input channels, the pixels
    in the lanes, :func:`conv_dot.weight_grad_dot_image`, its tap table; :data:`DW_ROWS`: for
    few input channels where the dot tiles do not fit, per kernel row's segment,
    :func:`conv_direct.weight_grad_rows_image`, its pixel table); an empty table where none
    applies (as :func:`_micro_forward`). Few channels, dots against rows, two cores: Caffe's
    CIFAR-10 3 → 32 5×5 at 32×32, batch 100, 3.30 → 2.85 ms."""
    groups, m, _ = weights.shape
    per_group = x.shape[1] // groups
    if by_micro is False:
        return _NO_TABLE, DW_STRIP
    in_hw = x.shape[2:]
    if conv_direct.dw_applies(kernel, stride, pad, per_group, m, out_hw[1]):
        layout = DW_STRIP
        need = conv_direct.dw_scratch_floats(per_group, m, kernel, pad, dilation, in_hw, out_hw)
    elif conv_dot.dw_dot_applies(kernel, stride, pad, per_group, m, out_hw):
        layout = DW_DOT
        need = conv_dot.dw_dot_scratch_floats(per_group, kernel, pad, in_hw, out_hw)
    elif conv_direct.dw_rows_applies(kernel, stride, pad, dilation, per_group, m):
        layout = DW_ROWS
        need = conv_direct.dw_rows_scratch_floats(per_group, m, pad, in_hw, out_hw)
    else:
        return _NO_TABLE, DW_STRIP
    if col.shape[1] < need:
        return _NO_TABLE, DW_STRIP
    if layout == DW_DOT:
        return conv_dot.tap_offsets(per_group, kernel, dilation, in_hw, pad, out_hw), layout
    padded_w = x.shape[3] + 2 * pad[1]
    return conv_direct.pixel_offsets(per_group, out_hw, padded_w, stride), layout


def conv_forward(
    x, weights, out, col, kernel, stride, pad, dilation, out_hw, bias=None, activation=None,
    by_taps=None, by_micro=None,
) -> None:  # fmt: skip
    """``out[b, g·m:(g+1)·m] = W_g · im2col(x_b)_g`` for every image (module docstring);
    ``col`` ``(P, …)`` is scratch (its first axis sets the chunk count; :func:`col_floats`
    per chunk). With ``bias`` and/or ``activation`` (a darknet code), darknet's tail without
    batch norm follows each image: ``y = act(y + bias)``. A stride-1 convolution with enough
    scratch runs one GEMM per kernel tap (:mod:`conv_taps`) unless ``by_taps=False``;
    ``by_taps=True`` requires it. Before either, where :func:`conv_direct.applies`, the
    register-blocked micro-kernel (:mod:`conv_direct`) unless ``by_micro=False``
    (``by_micro=True`` requires it)."""
    _require_contiguous(x=x, weights=weights, out=out, col=col)
    stride = tuple(stride)  # the micro-kernel's rules and cached tables compare and hash it
    direct = is_direct(kernel, stride, pad, dilation)
    code = LINEAR if activation is None else activation
    bias = _NO_FLOATS if bias is None else bias
    tail = bias.size > 0 or code != LINEAR
    geometry = (*kernel, *stride, *pad, dilation, *out_hw)
    out3 = out.reshape(out.shape[0], out.shape[1], -1)
    col = col.reshape(col.shape[0], -1)
    taps = _NO_TAPS
    groups, m, _ = weights.shape
    per_group = x.shape[1] // groups
    micro = by_micro if by_taps is None else False
    packed, table = _micro_forward(x, weights, col, kernel, stride, pad, dilation, out_hw, micro)
    chosen = conv_taps.applies(kernel, stride, pad, per_group) and not packed.size
    if by_taps or (by_taps is None and chosen):
        need = conv_taps.forward_floats(per_group, m, kernel, pad, dilation, x.shape[2:], out_hw)
        if conv_taps.fits(kernel, stride, pad) and col.shape[1] >= need:
            taps = conv_taps.tap_weights(weights, kernel)
    if by_taps and not taps.size:
        raise ValueError("conv_images: no per-tap forward for this geometry or scratch")
    share_out(_forward_shared, _forward_chunks, col.shape[0], x, weights, out3, col, *geometry,
              direct, bias, code, tail, taps, packed, table)  # fmt: skip


def conv_backward(
    x, weights, delta, dweights, dx, col, dcol, partial, alpha, kernel, stride, pad, dilation,
    out_hw, output=None, activation=None, dbias=None, bias_partial=None, assign_dx=False,
    by_taps=None, by_micro=None,
) -> None:  # fmt: skip
    """``dweights += alpha · Σ_b delta_b · im2col(x_b)ᵀ`` and, unless ``dx`` is None,
    ``dx += col2im(Wᵀ · delta_b)`` (module docstring). ``col``/``dcol`` ``(P, K, N)`` and
    ``partial`` ``(P, G, K, m)`` are scratch. With ``activation`` (darknet code; needs the
    layer ``output``) and/or ``dbias`` (needs ``bias_partial`` ``(P, F)`` scratch), darknet's
    backward tail without batch norm runs first on each image: ``delta ← delta·g(y)`` (in
    place, as darknet) and ``dbias += alpha·Σ delta``. ``assign_dx``: ``dx = …`` instead of
    ``+=`` (each image's planes zeroed in cache first; ``Layer.assign_dx``). ``by_taps`` as in
    :func:`conv_forward` (the taps' backward needs :func:`conv_taps.backward_fits` scratch).
    The input gradient takes the micro-kernel where :func:`conv_direct.dx_applies` (the
    flipped convolution of ``delta``, in ``dcol``), and the weight gradient where
    :func:`conv_direct.dw_applies`, each beside whichever path computes the other;
    ``by_micro=False`` keeps both off, ``by_micro=True`` requires the weight gradient's."""
    _require_contiguous(x=x, weights=weights, delta=delta, dweights=dweights, dx=dx, output=output)
    stride = tuple(stride)  # as in conv_forward
    direct = is_direct(kernel, stride, pad, dilation)
    batch = x.shape[0]
    chunks = min(col.shape[0], batch)
    delta3 = delta.reshape(batch, delta.shape[1], -1)
    code = LINEAR if activation is None else activation
    tail = dbias is not None or code != LINEAR
    y = delta3 if output is None else output.reshape(delta3.shape)
    no_bias = np.empty((chunks, 0), dtype=np.float32)
    sums = no_bias if dbias is None else bias_partial[:chunks]
    if dx is None:
        dx = np.empty((0, 0, 0, 0), dtype=np.float32)
    geometry = (*kernel, *stride, *pad, dilation, *out_hw)
    col = col[:chunks].reshape(chunks, -1)
    dcol = dcol[:chunks].reshape(chunks, -1)
    packed_dx, table_dx, geometry_dx = _NO_TAPS, _NO_TABLE, geometry
    packed_tdx, table_tdx = _NO_TAP_TILES, _NO_TABLE
    micro = by_micro if by_taps is None else False
    if dx.size > 0:
        packed_dx, table_dx, geometry_dx = _micro_dx(x, weights, dcol, kernel, stride, pad,
                                                     dilation, out_hw, micro)  # fmt: skip
        packed_tdx, table_tdx = _micro_taps_dx(x, weights, dcol, kernel, stride, pad, dilation,
                                               out_hw, micro)  # fmt: skip
    table_dw, dw_layout = _micro_dw(x, weights, col, kernel, stride, pad, dilation, out_hw,
                                     micro)  # fmt: skip
    if by_micro and not table_dw.size:
        raise ValueError("conv_images: no micro-kernel weight gradient for this geometry")
    taps = _NO_TAPS
    groups, m, _ = weights.shape
    per_group = x.shape[1] // groups
    chosen = conv_taps.backward_applies(kernel, stride, pad, per_group, m)
    micro_dx = packed_dx.size or packed_tdx.size
    chosen = chosen and not (table_dw.size and (dx.size == 0 or micro_dx))
    if by_taps or (by_taps is None and chosen):
        fits = conv_taps.backward_fits(per_group, m, kernel, pad, dilation, x.shape[2:], out_hw,
                                       col.shape[1], dcol.shape[1])  # fmt: skip
        if conv_taps.fits(kernel, stride, pad) and fits:
            taps = conv_taps.tap_weights(weights, kernel)
    if by_taps and not taps.size:
        raise ValueError("conv_images: no per-tap backward for this geometry or scratch")
    share_out(
        _backward_shared, _backward_chunks, chunks, x, weights, delta3, dx, col, dcol,
        partial[:chunks], sums, *geometry, direct, y, code, tail, assign_dx, taps, packed_dx,
        table_dx, *geometry_dx, table_dw, packed_tdx, table_tdx, dw_layout,
    )  # fmt: skip
    layout = _PARTIAL_LAYOUTS[dw_layout] if table_dw.size else "transposed"
    _add_chunk_sums(partial[:chunks], dweights, alpha, layout, kernel)
    if dbias is not None:
        _add_chunk_sums(bias_partial[:chunks], dbias, alpha, "plain")
