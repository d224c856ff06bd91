"""Batch normalisation kernels (CPU, Numba): darknet's in-layer BN, Caffe BatchNorm and Scale.

Layout: any C-contiguous float32 array ``(B, C, ...)``; statistics are per channel ``C`` over the
batch and every trailing (spatial) position, ``m = B·spatial``. A connected layer's ``(B, outputs)``
output is the ``spatial = 1`` case.

darknet (``batchnorm_layer.c``, ``blas.c``; spec/darknet.md 7.3), reproduced operation by operation
in darknet's order and precision (float32 accumulators in C's loop order, double where C promotes):

* forward (train): ``x ← output``; ``mean = Σx·(1/m)``; **unbiased** ``var = Σ(x−mean)²·(1/(m−1))``
  (the square and the running sum in double, stored float32 each step, as ``pow`` does);
  ``rolling ← .99·rolling`` then ``rolling += .01·stat`` (float32); ``x_norm = (x − mean) /
  (sqrt(var) + 1e-6)`` in double, rounded; ``output = x_norm·scale + bias``;
* forward (inference): the same normalisation with the rolling statistics;
* backward: ``bias_updates += Σδ``, ``scale_updates += Σδ·x_norm``, ``δ ← δ·scale``, then
  darknet's three inconsistencies (``sqrt(var + 1e-5)``, division by ``m``, the omitted
  ``variance_delta`` term of ``mean_delta``).

Caffe (``batch_norm_layer.cpp``, ``scale_layer.cpp``, ``bias_layer.cpp``; spec/caffe.md 7.9):
biased variance for normalising, ``s ← λs + 1``, ``M ← λM + mean``, ``V ← λV + m/(m−1)·var``,
``use_global_stats`` with ``f = 1/s``; ``std = sqrt(var + eps)`` is kept for the backward pass as
Caffe keeps it in ``variance_``. Caffe's reductions are BLAS ``gemv`` calls whose summation order
is the BLAS build's; here they accumulate in double and round once.

Scratch buffers are passed in by the caller (shapes given in each docstring); the kernels
allocate only a few per-block accumulators and a 16 KiB strip. Parallel loops (``prange``) run
over channels (or blocks of channels: :func:`block_width` for darknet's forward, :data:`LANES`
for its backward) where a channel's statistics are summed, and over ``(image, channel)`` planes
for the element-wise passes. Every iteration owns its channels' outputs and each channel is
summed in the same order as the serial loop (darknet's order), so results are bit-identical
whatever the thread count or block width.

darknet's float32 sums run several channels side by side, each channel one chain in darknet's
order: the float-add chains (``mean_cpu``, the backward's sums) as 8 scalar lanes held in
registers; ``variance_cpu``'s chain, whose float↔double conversions made it the slow one, in
SIMD lanes over a transposed strip of the planes (:func:`_squares_block`). Transposing costs
~0.3 ns per element and array, more than it saves on a plain float add: the backward's sums,
which read two arrays each, ran 1.11 → 1.80 ms that way (128×16×32×32, one core), so they
stay scalar.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from dnupdate.engine.backends.cpu.activations import (
    LINEAR,
    KernelArgumentError,
    _activate_array,
    _gradient_array,
)

_DARKNET_NORMALIZE_EPS = np.float32(0.000001)  # `.000001f`, added OUTSIDE the sqrt
_DARKNET_BACKWARD_EPS = np.float32(0.00001)  # `.00001f`, added INSIDE the sqrt
_ROLLING_KEEP = np.float32(0.99)  # scal_cpu(.99) takes a float
_ROLLING_TAKE = np.float32(0.01)  # axpy_cpu(.01)


def _as_bcs(array: np.ndarray, name: str) -> np.ndarray:
    """``(B, C, spatial)`` view of a C-contiguous float32 ``(B, C, ...)`` array."""
    if not isinstance(array, np.ndarray) or array.dtype != np.float32:
        raise KernelArgumentError(f"{name}: expected a float32 ndarray")
    if not array.flags.c_contiguous or array.ndim < 2:
        raise KernelArgumentError(f"{name}: expected a C-contiguous (B, C, ...) array")
    return array.reshape(array.shape[0], array.shape[1], -1)


def _check_vector(array: np.ndarray, name: str, length: int) -> np.ndarray:
    if not isinstance(array, np.ndarray) or array.dtype != np.float32 or array.ndim != 1:
        raise KernelArgumentError(f"{name}: expected a 1-D float32 array")
    if array.shape[0] != length or not array.flags.c_contiguous:
        raise KernelArgumentError(f"{name}: expected {length} contiguous elements")
    return array


def _check_like(array: np.ndarray, name: str, like: np.ndarray) -> np.ndarray:
    view = _as_bcs(array, name)
    if view.shape != like.shape:
        raise KernelArgumentError(f"{name}: shape {array.shape} does not match {like.shape}")
    return view


# --------------------------------------------------------------------------------------------
# darknet
# --------------------------------------------------------------------------------------------


#: channels whose float32 sums run side by side: each channel's sum keeps darknet's order
#: (images, then positions), but 8 independent dependency chains fill the FP pipeline where one
#: chain waits on the adder's latency (statistics 3x, backward 1.6x faster, same bits). The
#: float32 sums (:func:`_lane_sums`, the backward's) spell the 8 lanes out as local variables:
#: kept in registers, where sums in an array go through memory on every add (the compiler cannot
#: rule out that the array aliases the data), 1.7x faster again.
LANES = 8


@njit(inline="always")
def _planes(a, b, c0, lanes):
    """The ``LANES`` (8) channel planes ``a[b, c0 + k]`` of image ``b``; lanes ``k ≥ lanes``
    (a block's tail) repeat plane ``c0 + lanes − 1``, and their sums are dropped."""
    last = c0 + lanes - 1
    return (
        a[b, c0], a[b, min(c0 + 1, last)], a[b, min(c0 + 2, last)], a[b, min(c0 + 3, last)],
        a[b, min(c0 + 4, last)], a[b, min(c0 + 5, last)], a[b, min(c0 + 6, last)],
        a[b, min(c0 + 7, last)],
    )  # fmt: skip


@njit(inline="always")
def _put(target, lanes, values):
    """``target[k] = values[k]`` for the block's ``lanes`` lanes (the rest are dropped)."""
    for k in range(lanes):
        target[k] = values[k]


@njit(inline="always")
def _lane_scratch():
    """Per-block float32 sums of the backward pass, rows ``(products, totals, weighted)``."""
    return np.zeros((3, LANES), dtype=np.float32)


@njit(inline="always")
def _lane_sums(x, c0, lanes, totals):
    """``totals[k] = Σ_b Σ_s x[b, c0 + k, s]`` for the 8 lanes ``k``, each one float32 chain
    in darknet's ``(b, s)`` order (``mean_cpu``), the 8 chains interleaved in registers."""
    batch, _, spatial = x.shape
    t0 = t1 = t2 = t3 = t4 = t5 = t6 = t7 = np.float32(0.0)
    for b in range(batch):
        p0, p1, p2, p3, p4, p5, p6, p7 = _planes(x, b, c0, lanes)
        for s in range(spatial):
            t0 += p0[s]
            t1 += p1[s]
            t2 += p2[s]
            t3 += p3[s]
            t4 += p4[s]
            t5 += p5[s]
            t6 += p6[s]
            t7 += p7[s]
    _put(totals, lanes, (t0, t1, t2, t3, t4, t5, t6, t7))


#: the widest block of channels whose variance chains run in SIMD lanes (:func:`_squares_block`);
#: :func:`block_width` narrows it so that every thread gets a block
VECTOR_LANES = 32
#: float32 elements of a block's transposed strip (16 KiB: stays in L1 beside the planes read)
STRIP = 4096


def block_width(channels: int, threads: int) -> int:
    """Channels per block of the forward pass: :data:`VECTOR_LANES` (32) or 16, narrowed to
    :data:`LANES` (8) when wider blocks would leave some of the ``threads`` without one. Any
    width gives the same bits (each channel's chains keep darknet's order); wider blocks
    run more SIMD lanes side by side."""
    width = VECTOR_LANES
    while width > LANES and -(-channels // width) < threads:
        width //= 2
    return width


@njit(inline="always")
def _strip_row(planes, s, row):
    """``row[k] = planes[k, s]``: one position of the block's planes, channels side by side."""
    for k in range(row.size):
        row[k] = planes[k, s]


@njit(inline="always")
def _add_squares(row, means, squares):
    """One step of every lane's ``variance_cpu`` chain, ``squares[k] += pow(row[k] − means[k],
    2)`` in C's precision: the float32 difference, squared and added in double, stored float32.
    An element-wise loop over the lanes: LLVM's loop vectoriser runs the chains in SIMD lanes
    (vector float↔double conversions), each lane's chain in its own order."""
    for k in range(squares.size):
        diff = np.float64(row[k] - means[k])
        squares[k] = np.float32(np.float64(squares[k]) + diff * diff)


@njit(inline="always")
def _squares_block(x, c0, means, squares, strip):
    """``squares[k] = Σ_b Σ_s pow(x[b, c0 + k, s] − means[k], 2)`` for the block's lanes
    (``means``, ``squares``: one element per lane), each one float32 chain in darknet's
    ``(b, s)`` order. Per image, over strips of positions: a strip is first transposed into
    ``strip`` (positions × lanes, cache-resident), then its rows are the chains' steps, every
    lane at once (darknet's planes hold a channel's positions side by side, where the vector
    chains want the channels)."""
    batch, _, spatial = x.shape
    lanes = squares.size
    rows = min(strip.size // lanes, spatial)
    table = strip[: rows * lanes].reshape(rows, lanes)
    squares[:] = 0.0
    for b in range(batch):
        planes = x[b, c0 : c0 + lanes]
        for first in range(0, spatial, rows):
            count = min(rows, spatial - first)
            for r in range(count):
                _strip_row(planes, first + r, table[r])
            for r in range(count):
                _add_squares(table[r], means, squares)


@njit(inline="always")
def _lane_squares(x, c0, lanes, mean, squares):
    """The ``variance_cpu`` chains of channels ``[c0, c0 + lanes)`` as scalar lanes (``lanes``
    a constant: the compiler unrolls them): a vector step of 8 lanes would run in the vector
    loop's scalar remainder (:func:`_squares_block` vectorises wider)."""
    batch, _, spatial = x.shape
    for b in range(batch):
        for s in range(spatial):
            for k in range(lanes):
                diff = np.float64(x[b, c0 + k, s] - mean[c0 + k])
                squares[k] = np.float32(np.float64(squares[k]) + diff * diff)  # `+= pow(d, 2)`


@njit(cache=True, nogil=True)
def _statistics_block(x, mean, variance, c0, lanes, totals, squares, strip):
    """``mean_cpu`` and ``variance_cpu`` for channels ``[c0, c0 + lanes)``: the float32 sums
    8 channels at a time (:func:`_lane_sums`, scalar lanes: a float add is short enough a chain),
    the variance chains in SIMD lanes (:func:`_squares_block`)."""
    batch, _, spatial = x.shape
    m = batch * spatial
    mean_scale = np.float32(1.0 / m)  # `float scale = 1./(batch*spatial)`
    var_scale = np.float32(1.0 / (m - 1)) if m > 1 else np.float32(np.inf)
    for k0 in range(0, lanes, LANES):
        part = min(LANES, lanes - k0)
        _lane_sums(x, c0 + k0, part, totals)
        for k in range(part):
            mean[c0 + k0 + k] = totals[k] * mean_scale
    if lanes == LANES:  # a block of 8 (several threads, few channels): 8 scalar chains
        _lane_squares(x, c0, LANES, mean, squares)
    else:
        _squares_block(x, c0, mean[c0 : c0 + lanes], squares, strip)
    for k in range(lanes):
        # darknet quirk: m == 1 gives 0·inf = NaN (1./(m−1) is a division by zero)
        variance[c0 + k] = squares[k] * var_scale


@njit(inline="always")
def _normalize_plane(source, out, x, x_norm, mean, denominator, scale, bias, copy, keep_norm):
    """One plane: ``normalized = f32(f64(source − mean)/denominator)`` (darknet's double
    division), into ``x_norm`` with ``keep_norm``; ``x ← source`` with ``copy`` (darknet's
    ``copy_cpu(out → x)``, in this pass); ``out = normalized·scale + bias``. ``source`` may be
    ``out`` itself."""
    for s in range(out.size):
        value = source[s]
        normalized = np.float32(np.float64(value - mean) / denominator)
        if copy:
            x[s] = value
        if keep_norm:
            x_norm[s] = normalized
        out[s] = normalized * scale + bias


@njit(inline="always")
def _normalize_block(out, x, x_norm, mean, variance, scales, biases, c0, lanes, keep_x_norm,
                     code, from_x, add, total, s1, s2, total_code):  # fmt: skip
    """Channels ``[c0, c0 + lanes)`` normalised plane by plane, then activated (``code``) on
    the plane while it is in cache. Training (``keep_x_norm``): ``x_norm`` kept and ``x`` the
    pre-BN values, copied from ``out`` unless the layer wrote them there (``from_x``).

    With a non-empty ``total``, each finished plane is also the chain input of a darknet
    ``[shortcut]``, run on it while it is in cache: ``total = s1·out + s2·add`` then the
    activation ``total_code`` (:func:`engine.backends.cpu.graph.shortcut_forward`'s
    expression, so the same bits)."""
    batch = out.shape[0]
    shortcut = total.shape[0] > 0
    for k in range(lanes):
        c = c0 + k
        denominator = math.sqrt(np.float64(variance[c])) + np.float64(_DARKNET_NORMALIZE_EPS)
        mean_c, scale, bias = mean[c], scales[c], biases[c]
        for b in range(batch):
            plane = out[b, c]
            if not keep_x_norm:
                _normalize_plane(plane, plane, plane, plane, mean_c, denominator, scale, bias,
                                 False, False)  # fmt: skip
            elif from_x:
                _normalize_plane(x[b, c], plane, plane, x_norm[b, c], mean_c, denominator, scale,
                                 bias, False, True)  # fmt: skip
            else:
                _normalize_plane(plane, plane, x[b, c], x_norm[b, c], mean_c, denominator, scale,
                                 bias, True, True)  # fmt: skip
            if code != LINEAR:
                _activate_array(plane, code)
            if shortcut:
                _shortcut_plane(plane, add[b, c], total[b, c], s1, s2, total_code)


@njit(inline="always")
def _shortcut_plane(plane, add, total, s1, s2, code):
    """One plane of darknet's ``[shortcut]`` forward on ``plane``: ``total = s1·plane +
    s2·add``, then the activation ``code``."""
    for s in range(plane.size):
        total[s] = s1 * plane[s] + s2 * add[s]
    if code != LINEAR:
        _activate_array(total, code)


@njit(inline="always")
def _forward_block(
    out, x, x_norm, mean, variance, rolling_mean, rolling_variance, scales, biases, train, code,
    c0, lanes, from_x, add, total, s1, s2, total_code,
):  # fmt: skip
    """Channels ``[c0, c0 + lanes)`` of :func:`_darknet_forward`."""
    if train:  # the statistics of darknet's x: out (copied in the normalising pass), or x
        totals, squares = np.zeros(LANES, dtype=np.float32), np.zeros(lanes, dtype=np.float32)
        strip = np.empty(STRIP, dtype=np.float32)
        _statistics_block(x if from_x else out, mean, variance, c0, lanes, totals, squares,
                          strip)  # fmt: skip
        for k in range(lanes):  # scal_cpu(.99) then axpy_cpu(.01), float32
            c = c0 + k
            rolling_mean[c] = rolling_mean[c] * _ROLLING_KEEP
            rolling_mean[c] = rolling_mean[c] + _ROLLING_TAKE * mean[c]
            rolling_variance[c] = rolling_variance[c] * _ROLLING_KEEP
            rolling_variance[c] = rolling_variance[c] + _ROLLING_TAKE * variance[c]
    _normalize_block(out, x, x_norm, mean, variance, scales, biases, c0, lanes, train, code,
                     from_x, add, total, s1, s2, total_code)  # fmt: skip


#: :func:`_darknet_forward`'s shortcut arguments when no ``[shortcut]`` rides along
_NO_SHORTCUT = (np.zeros((0, 0, 0), np.float32), np.zeros((0, 0, 0), np.float32), np.float32(1),
                np.float32(1), LINEAR)  # fmt: skip


@njit(parallel=True, cache=True)
def _darknet_forward(
    out, x, x_norm, mean, variance, rolling_mean, rolling_variance, scales, biases, train, code,
    width, from_x, add, total, s1, s2, total_code,
):  # fmt: skip
    """Training (``train``): ``x ← out``, batch statistics, rolling update, normalise with the
    batch statistics; with ``from_x`` the layer computed its pre-BN values into ``x`` itself:
    the statistics are ``x``'s, and ``out`` receives the normalised values (no copy).
    Inference: normalise ``out`` in place with ``mean``/``variance`` (the caller passes the
    rolling statistics there). Then darknet's activation ``code`` (``LINEAR``: none) on each
    ``(image, channel)`` plane right after it is normalised.
    A non-empty ``total``: the ``[shortcut]`` reading ``out`` runs on each plane too
    (:func:`_normalize_block`). Parallel over blocks of ``width`` channels
    (:func:`block_width`; the last one may be narrower)."""
    channels = out.shape[1]
    for block in prange(-(-channels // width)):
        c0 = block * width
        _forward_block(out, x, x_norm, mean, variance, rolling_mean, rolling_variance, scales,
                       biases, train, code, c0, min(width, channels - c0), from_x, add, total,
                       s1, s2, total_code)  # fmt: skip


#: channels per step of the backward's fused sums (:func:`_backward_sums`): 4 lanes × 4 chains
#: and their 8 constants stay in registers, where 8 lanes (32 chains) spilled to memory (2.60
#: against 1.76 ms, 128×16×32×32, one core)
SUM_LANES = 4


@njit(inline="always")
def _four_planes(a, b, c0, lanes):
    """The 4 planes ``a[b, c0 + k]`` (lanes ``k ≥ lanes`` repeat the last; sums dropped)."""
    last = c0 + lanes - 1
    return a[b, c0], a[b, min(c0 + 1, last)], a[b, min(c0 + 2, last)], a[b, min(c0 + 3, last)]


@njit(inline="always")
def _four_values(a, c0, lanes):
    """``a[c0 + k]`` for the 4 lanes (lanes ``k ≥ lanes`` repeat the last)."""
    last = c0 + lanes - 1
    return a[c0], a[min(c0 + 1, last)], a[min(c0 + 2, last)], a[min(c0 + 3, last)]


@njit(inline="always")
def _backward_sums(delta, y, code, x, x_norm, mean, scales, bias_updates, c0, lanes, sums):
    """All four float32 sums of darknet's batch-norm backward for the 4 lanes from ``c0``, in
    one pass (``lanes ≤ 4``; each sum one chain in darknet's ``(b, s)`` order): darknet's
    activation gradient first (``gradient_array``, plane by plane while in cache), then

    * ``backward_bias``: one float32 sum of ``δ`` per image and channel, added into
      ``bias_updates``;
    * ``backward_scale_cpu``: ``Σ δ·x_norm`` into ``sums[0, k]``;
    * ``mean_delta_cpu`` and ``variance_delta_cpu``'s ``Σ δ'`` and ``Σ δ'·(x − mean)`` into
      ``sums[1, k]`` and ``sums[2, k]``, of the delta after ``scale_bias``: ``δ' =
      δ·scales[c]`` (the float32 product formed here, the same bits as darknet's stored one).

    Reading ``δ`` once for the four (two passes before: 2.18 → 1.76 ms at 128×16×32×32)."""
    batch, _, spatial = delta.shape
    zero = np.float32(0.0)
    q0 = q1 = q2 = q3 = t0 = t1 = t2 = t3 = w0 = w1 = w2 = w3 = zero
    m0, m1, m2, m3 = _four_values(mean, c0, lanes)
    a0, a1, a2, a3 = _four_values(scales, c0, lanes)
    for b in range(batch):
        if code != LINEAR:
            for k in range(lanes):
                _gradient_array(y[b, c0 + k], code, delta[b, c0 + k])
        d0, d1, d2, d3 = _four_planes(delta, b, c0, lanes)
        n0, n1, n2, n3 = _four_planes(x_norm, b, c0, lanes)
        x0, x1, x2, x3 = _four_planes(x, b, c0, lanes)
        s0 = s1 = s2 = s3 = zero
        for s in range(spatial):
            v0, v1, v2, v3 = d0[s], d1[s], d2[s], d3[s]
            s0, q0 = s0 + v0, q0 + v0 * n0[s]
            s1, q1 = s1 + v1, q1 + v1 * n1[s]
            s2, q2 = s2 + v2, q2 + v2 * n2[s]
            s3, q3 = s3 + v3, q3 + v3 * n3[s]
            u0, u1, u2, u3 = v0 * a0, v1 * a1, v2 * a2, v3 * a3
            t0, w0 = t0 + u0, w0 + u0 * (x0[s] - m0)
            t1, w1 = t1 + u1, w1 + u1 * (x1[s] - m1)
            t2, w2 = t2 + u2, w2 + u2 * (x2[s] - m2)
            t3, w3 = t3 + u3, w3 + u3 * (x3[s] - m3)
        per_image = (s0, s1, s2, s3)
        for k in range(lanes):
            bias_updates[c0 + k] += per_image[k]
    _put(sums[0], lanes, (q0, q1, q2, q3))
    _put(sums[1], lanes, (t0, t1, t2, t3))
    _put(sums[2], lanes, (w0, w1, w2, w3))


@njit(inline="always")
def _bn_backward_block(delta, y, code, x, x_norm, mean, variance, scales, updates, deltas, c0,
                       lanes, acc):  # fmt: skip
    bias_updates, scale_updates = updates
    mean_delta, variance_delta = deltas
    batch, _, spatial = delta.shape
    m = batch * spatial
    m_float = np.float32(m)
    # darknet's divisions by m: exact multiplications by 1/m when m = 2^j (both round x·2^−j)
    inverse_m = 1.0 / m if m & (m - 1) == 0 else 0.0
    # scale_bias(delta, scales) is not a pass of its own: the sums form delta·scales[c] where
    # they read delta, and so does normalize_delta (the same float32 product, no store pass)
    for first in range(0, lanes, SUM_LANES):
        _backward_sums(delta, y, code, x, x_norm, mean, scales, bias_updates, c0 + first,
                       min(SUM_LANES, lanes - first), acc[:, first:])  # fmt: skip
    products, totals, weighted = acc[0], acc[1], acc[2]
    for k in range(lanes):
        c = c0 + k
        scale_updates[c] += products[k]
        scale = scales[c]
        var_eps = np.float64(variance[c] + _DARKNET_BACKWARD_EPS)  # float add, then double
        mean_delta[c] = np.float32(np.float64(totals[k]) * (-1.0 / math.sqrt(var_eps)))
        variance_delta[c] = np.float32(np.float64(weighted[k]) * (-0.5 * var_eps**-1.5))
        inv_std = 1.0 / math.sqrt(var_eps)
        mean_term = np.float64(mean_delta[c] / m_float)  # float / int: float32 division
        variance_scale = np.float64(variance_delta[c]) * 2.0
        for b in range(batch):  # normalize_delta_cpu
            if inverse_m > 0.0:
                for s in range(spatial):
                    centered = np.float64(x[b, c, s] - mean[c])
                    delta[b, c, s] = np.float32(
                        np.float64(delta[b, c, s] * scale) * inv_std
                        + variance_scale * centered * inverse_m
                        + mean_term
                    )
            else:
                for s in range(spatial):
                    centered = np.float64(x[b, c, s] - mean[c])
                    delta[b, c, s] = np.float32(
                        np.float64(delta[b, c, s] * scale) * inv_std
                        + variance_scale * centered / m
                        + mean_term
                    )


@njit(parallel=True, cache=True)
def _darknet_bn_backward(delta, y, code, x, x_norm, mean, variance, scales, updates, deltas):
    """darknet's activation gradient ``delta ← delta·g(y)`` (``code``; ``LINEAR``: none), then
    the batch-norm backward. Parallel over the full blocks of ``LANES`` channels (a block owns
    its channels' deltas and per-channel outputs); the remaining channels are
    :func:`_darknet_bn_backward_tail`'s."""
    for block in prange(delta.shape[1] // LANES):
        acc = _lane_scratch()
        _bn_backward_block(delta, y, code, x, x_norm, mean, variance, scales, updates, deltas,
                           block * LANES, LANES, acc)  # fmt: skip


@njit(cache=True)
def _darknet_bn_backward_tail(delta, y, code, x, x_norm, mean, variance, scales, updates,
                              deltas):  # fmt: skip
    """The last ``C mod LANES`` channels of :func:`_darknet_bn_backward` (serial: a kernel of
    its own keeps the variable-lane code out of the parallel kernel, whose compile time grows
    with its body, and compiles only for such channel counts)."""
    channels = delta.shape[1]
    c0 = channels // LANES * LANES
    _bn_backward_block(delta, y, code, x, x_norm, mean, variance, scales, updates, deltas, c0,
                       channels - c0, _lane_scratch())  # fmt: skip


def darknet_batchnorm_forward_train(
    output: np.ndarray,
    x: np.ndarray,
    x_norm: np.ndarray,
    mean: np.ndarray,
    variance: np.ndarray,
    rolling_mean: np.ndarray,
    rolling_variance: np.ndarray,
    scales: np.ndarray,
    biases: np.ndarray,
    activation: int = LINEAR,
    from_x: bool = False,
    shortcut: tuple | None = None,
) -> None:
    """darknet ``forward_batchnorm_layer`` with ``net.train = 1``, in place on ``output``, then
    the layer's ``activate_array`` with darknet code ``activation`` (``LINEAR``: none) fused
    into the same pass (element-wise, so the same bits as a separate pass).

    ``shortcut = (add, total, alpha, beta, code)``: then also the ``[shortcut]`` whose chain
    input is ``output`` (``total`` and ``add`` of ``output``'s shape), plane by plane in the
    same pass: ``total = alpha·output + beta·add``, activated with ``code`` (the same bits as
    :func:`engine.backends.cpu.graph.shortcut_forward` after this pass; ``output`` is written
    as before).

    ``from_x``: the layer computed its output straight into ``x`` (darknet's copy of it), and
    ``output`` is only written: the same values as ``copy_cpu(output → x)`` then the pass in
    place, without the copy (one array less written per pass).

    ``output``: the conv/connected result ``(B, C, ...)``, overwritten by
    ``x_norm·scales + biases`` (the biases are the BN shift: darknet adds no separate bias).
    Buffers the layer owns: ``x`` and ``x_norm`` (same shape; receive the pre-BN input and the
    normalised value, both needed by the backward pass), ``mean`` and ``variance`` ``(C,)``
    (receive the batch statistics; variance is UNBIASED), ``rolling_mean``/``rolling_variance``
    ``(C,)`` (updated ``.99·r + .01·stat`` in float32, darknet starts them at 0).

    Normalisation: ``(x − mean)/(sqrt(var) + 1e-6)`` (eps outside the sqrt), in double.
    darknet quirk: with ``m = B·spatial = 1`` the variance is NaN (division by ``m − 1 = 0``).
    """
    out3 = _as_bcs(output, "output")
    channels = out3.shape[1]
    x3 = _check_like(x, "x", out3)
    norm3 = _check_like(x_norm, "x_norm", out3)
    for name, vector in (
        ("mean", mean),
        ("variance", variance),
        ("rolling_mean", rolling_mean),
        ("rolling_variance", rolling_variance),
        ("scales", scales),
        ("biases", biases),
    ):
        _check_vector(vector, name, channels)
    args = (out3, x3, norm3, mean, variance, rolling_mean, rolling_variance, scales, biases, True,
            activation)  # fmt: skip
    width = block_width(channels, numba.get_num_threads())
    if shortcut is None:
        _darknet_forward(*args, width, from_x, *_NO_SHORTCUT)
        return
    add, total, alpha, beta, code = shortcut
    add3, total3 = _check_like(add, "add", out3), _check_like(total, "total", out3)
    _darknet_forward(*args, width, from_x, add3, total3, np.float32(alpha), np.float32(beta),
                     code)  # fmt: skip


def darknet_batchnorm_forward_infer(
    output: np.ndarray,
    rolling_mean: np.ndarray,
    rolling_variance: np.ndarray,
    scales: np.ndarray,
    biases: np.ndarray,
    activation: int = LINEAR,
) -> None:
    """darknet ``forward_batchnorm_layer`` with ``net.train = 0``, in place on ``output``:
    ``((x − rolling_mean)/(sqrt(rolling_variance) + 1e-6))·scales + biases``, then the
    activation ``activation`` (``LINEAR``: none) in the same pass.

    With darknet's zero-initialised rolling statistics early inference is badly scaled (as in
    darknet). ``x``/``x_norm`` are not touched (darknet does not update ``x_norm`` here).
    """
    out3 = _as_bcs(output, "output")
    channels = out3.shape[1]
    for name, vector in (
        ("rolling_mean", rolling_mean),
        ("rolling_variance", rolling_variance),
        ("scales", scales),
        ("biases", biases),
    ):
        _check_vector(vector, name, channels)
    args = (out3, out3, out3, rolling_mean, rolling_variance, rolling_mean, rolling_variance,
            scales, biases, False, activation)  # fmt: skip
    _darknet_forward(*args, block_width(channels, numba.get_num_threads()), False, *_NO_SHORTCUT)


def darknet_batchnorm_backward(
    delta: np.ndarray,
    x: np.ndarray,
    x_norm: np.ndarray,
    mean: np.ndarray,
    variance: np.ndarray,
    scales: np.ndarray,
    bias_updates: np.ndarray,
    scale_updates: np.ndarray,
    mean_delta: np.ndarray,
    variance_delta: np.ndarray,
    output: np.ndarray | None = None,
    activation: int = LINEAR,
) -> None:
    """darknet ``backward_batchnorm_layer``: ``delta`` (already times the activation gradient,
    or, with ``activation`` not ``LINEAR``, first multiplied here by darknet's gradient of the
    layer ``output``: ``gradient_array`` fused into the first pass) is transformed in place
    into the delta of the pre-BN output.

    ``bias_updates[c] += Σ δ`` (one float sum per image, as ``backward_bias``) and
    ``scale_updates[c] += Σ δ·x_norm`` accumulate (darknet sums over the batch, the update step
    scales by ``lr/B``). Then ``δ ← δ·scale`` and, with ``v = var + 1e-5`` (float32 add)::

        mean_delta     = Σδ · (−1/sqrt(v))
        variance_delta = Σδ·(x − mean) · (−.5·v^(−3/2))
        δ ← δ/sqrt(v) + variance_delta·2·(x − mean)/m + mean_delta/m

    darknet quirks kept: ``sqrt(var + 1e-5)`` although the forward pass used
    ``sqrt(var) + 1e-6``; division by ``m`` although the variance is the ``m − 1`` estimate;
    no ``variance_delta·Σ(−2(x − mean))/m`` term in ``mean_delta``. ``mean_delta/m`` is a float32
    division, the rest double, stored float32.

    ``mean``/``variance``: the batch statistics when training; darknet passes the ROLLING
    statistics when ``net.train = 0`` (the caller chooses). Scratch: ``mean_delta`` and
    ``variance_delta``, ``(C,)``, receive darknet's intermediate per-channel values.
    """
    delta3 = _as_bcs(delta, "delta")
    channels = delta3.shape[1]
    x3 = _check_like(x, "x", delta3)
    norm3 = _check_like(x_norm, "x_norm", delta3)
    for name, vector in (
        ("mean", mean),
        ("variance", variance),
        ("scales", scales),
        ("bias_updates", bias_updates),
        ("scale_updates", scale_updates),
        ("mean_delta", mean_delta),
        ("variance_delta", variance_delta),
    ):
        _check_vector(vector, name, channels)
    y3 = delta3 if activation == LINEAR else _check_like(output, "output", delta3)
    args = (delta3, y3, activation, x3, norm3, mean, variance, scales,
            (bias_updates, scale_updates), (mean_delta, variance_delta))  # fmt: skip
    _darknet_bn_backward(*args)
    if channels % LANES:
        _darknet_bn_backward_tail(*args)


# --------------------------------------------------------------------------------------------
# Caffe BatchNorm
# --------------------------------------------------------------------------------------------


@njit(parallel=True, cache=True)
def _caffe_bn_train(x, y, mean, std, mean_sum, variance_sum, fraction, eps):
    batch, channels, spatial = x.shape
    m = batch * spatial
    # `Dtype bias_correction_factor = m > 1 ? Dtype(m)/(m-1) : 1` (float division)
    correction = np.float32(m) / np.float32(m - 1) if m > 1 else np.float32(1.0)
    for c in prange(channels):
        # Judgment: Caffe takes the mean (and the variance) with two gemv, Σ_b (f32(1/m)·Σ_s x),
        # in its BLAS's float order; here one float64 sum divided by m, rounded once.
        total = 0.0
        for b in range(batch):
            for s in range(spatial):
                total += np.float64(x[b, c, s])
        mean[c] = np.float32(total / m)
        squares = 0.0
        for b in range(batch):
            for s in range(spatial):
                centered = x[b, c, s] - mean[c]
                squares += np.float64(centered * centered)  # caffe_sqr in float32
        variance = np.float32(squares / m)  # BIASED: E((X − EX)²)
        mean_sum[c] = fraction * mean_sum[c] + mean[c]
        variance_sum[c] = fraction * variance_sum[c] + correction * variance
        std[c] = np.float32(math.sqrt(variance + eps))
        for b in range(batch):
            for s in range(spatial):
                y[b, c, s] = (x[b, c, s] - mean[c]) / std[c]


@njit(cache=True)
def _caffe_global_statistics(mean, std, mean_sum, variance_sum, factor, eps):
    for c in range(mean.shape[0]):
        mean[c] = factor * mean_sum[c]
        std[c] = np.float32(math.sqrt(factor * variance_sum[c] + eps))


@njit(parallel=True, cache=True)
def _caffe_bn_backward(y, dy, dx, std):
    batch, channels, spatial = y.shape
    inv_count = np.float32(-1.0 / (batch * spatial))  # Dtype(-1. / (num * spatial_dim))
    for c in prange(channels):
        dot = 0.0
        total = 0.0
        for b in range(batch):
            for s in range(spatial):
                dot += np.float64(y[b, c, s] * dy[b, c, s])
                total += np.float64(dy[b, c, s])
        dot32 = np.float32(dot)
        total32 = np.float32(total)
        for b in range(batch):
            for s in range(spatial):
                both = y[b, c, s] * dot32 + total32
                dx[b, c, s] = (dy[b, c, s] + inv_count * both) / std[c]


#: :func:`_channel_affine` operations (one parallel kernel serves every per-channel affine
#: pass of the Caffe layers: a parallel kernel costs compile time of its own)
_CENTER_DIVIDE = 0  # y = (x − a[c]) / b[c]
_DIVIDE = 1  # y = x / b[c]
_SCALE = 2  # y = a[c]·x
_SCALE_SHIFT = 3  # y = a[c]·x + b[c]


@njit(parallel=True, cache=True)
def _channel_affine(x, y, a, b, op):
    """``y[i, c, :] = op(x[i, c, :], a[c], b[c])`` in float32, parallel over ``(image,
    channel)`` planes (``y`` may be ``x``)."""
    batch, channels, spatial = x.shape
    for task in prange(batch * channels):
        i = task // channels
        c = task % channels
        if op == _CENTER_DIVIDE:
            for s in range(spatial):
                y[i, c, s] = (x[i, c, s] - a[c]) / b[c]
        elif op == _DIVIDE:
            for s in range(spatial):
                y[i, c, s] = x[i, c, s] / b[c]
        elif op == _SCALE:
            for s in range(spatial):
                y[i, c, s] = a[c] * x[i, c, s]
        else:
            for s in range(spatial):
                y[i, c, s] = a[c] * x[i, c, s] + b[c]


def _caffe_bn_views(x, y, mean, std, mean_sum, variance_sum, scale_factor):
    """Checked ``(B, C, spatial)`` views of ``x`` and ``y`` for the Caffe BatchNorm forwards,
    after checking the ``(C,)`` scratch/blob vectors and the one-element scale factor."""
    x3 = _as_bcs(x, "x")
    channels = x3.shape[1]
    y3 = _check_like(y, "y", x3)
    for name, vector in (
        ("mean", mean),
        ("std", std),
        ("mean_sum", mean_sum),
        ("variance_sum", variance_sum),
    ):
        _check_vector(vector, name, channels)
    _check_vector(scale_factor, "scale_factor", 1)
    return x3, y3


def caffe_batchnorm_forward_train(
    x: np.ndarray,
    y: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    mean_sum: np.ndarray,
    variance_sum: np.ndarray,
    scale_factor: np.ndarray,
    moving_average_fraction: float = 0.999,
    eps: float = 1e-5,
) -> None:
    """Caffe ``BatchNorm`` forward with ``use_global_stats = false`` (TRAIN).

    Per channel over ``m = B·spatial``: ``mean``, BIASED ``var = E((x − mean)²)``,
    ``y = (x − mean)/sqrt(var + eps)`` (``y`` may be ``x``: Caffe runs it in place). The blobs
    are updated on every such forward: ``scale_factor[0] ← λ·s + 1``, ``mean_sum ← λ·M + mean``,
    ``variance_sum ← λ·V + (m/(m − 1))·var`` (``1`` when ``m = 1``).

    Scratch ``(C,)``: ``mean`` and ``std`` receive the batch mean and ``sqrt(var + eps)``;
    keep ``std`` (and ``y``, Caffe's ``x_norm_`` cache) for :func:`caffe_batchnorm_backward`.
    """
    x3, y3 = _caffe_bn_views(x, y, mean, std, mean_sum, variance_sum, scale_factor)
    fraction = np.float32(moving_average_fraction)
    scale_factor[0] = scale_factor[0] * fraction
    scale_factor[0] = scale_factor[0] + np.float32(1.0)
    _caffe_bn_train(x3, y3, mean, std, mean_sum, variance_sum, fraction, np.float32(eps))


def caffe_batchnorm_forward_global(
    x: np.ndarray,
    y: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    mean_sum: np.ndarray,
    variance_sum: np.ndarray,
    scale_factor: np.ndarray,
    eps: float = 1e-5,
) -> None:
    """Caffe ``BatchNorm`` forward with ``use_global_stats = true`` (TEST by default).

    ``f = 0 if s == 0 else 1/s`` (``s = scale_factor[0]``); ``mean = f·M``,
    ``std = sqrt(f·V + eps)``, ``y = (x − mean)/std``. Blobs are not modified. Scratch as in
    :func:`caffe_batchnorm_forward_train`.
    """
    x3, y3 = _caffe_bn_views(x, y, mean, std, mean_sum, variance_sum, scale_factor)
    s = scale_factor[0]
    factor = np.float32(0.0) if s == 0 else np.float32(1.0) / s
    _caffe_global_statistics(mean, std, mean_sum, variance_sum, factor, np.float32(eps))
    _channel_affine(x3, y3, mean, std, _CENTER_DIVIDE)


def caffe_batchnorm_backward(
    y: np.ndarray,
    dy: np.ndarray,
    dx: np.ndarray,
    std: np.ndarray,
    use_global_stats: bool = False,
) -> None:
    """Caffe ``BatchNorm`` backward, overwriting ``dx`` (may alias ``dy``).

    Training statistics: ``dx = (dy − mean(dy) − mean(dy·y)·y)/std`` evaluated as Caffe does,
    ``(dy + (−1/m)·(y·Σ(dy·y) + Σdy))/std``; ``y`` is the normalised output (Caffe's ``x_norm_``).
    Global statistics: ``dx = dy/std``. ``std`` is the forward pass's ``sqrt(var + eps)``.
    """
    dy3 = _as_bcs(dy, "dy")
    channels = dy3.shape[1]
    dx3 = _check_like(dx, "dx", dy3)
    _check_vector(std, "std", channels)
    if use_global_stats:
        _channel_affine(dy3, dx3, std, std, _DIVIDE)
        return
    y3 = _check_like(y, "y", dy3)
    _caffe_bn_backward(y3, dy3, dx3, std)


# --------------------------------------------------------------------------------------------
# Caffe Scale (+ its internal Bias)
# --------------------------------------------------------------------------------------------


@njit(parallel=True, cache=True)
def _caffe_scale_param_grads(x, dy, gamma_diff, beta_diff, has_beta, overwrite_gamma):
    batch, channels, spatial = x.shape
    for c in prange(channels):
        if has_beta:  # BiasLayer: one gemv per image, accumulating (beta = 1)
            for b in range(batch):
                row = 0.0
                for s in range(spatial):
                    row += np.float64(dy[b, c, s])
                beta_diff[c] = beta_diff[c] + np.float32(row)
        over_images = 0.0
        for b in range(batch):
            row = 0.0
            for s in range(spatial):
                row += np.float64(dy[b, c, s] * x[b, c, s])  # caffe_mul in float32
            over_images += np.float64(np.float32(row))
        if overwrite_gamma:
            gamma_diff[c] = np.float32(over_images)
        else:
            gamma_diff[c] = gamma_diff[c] + np.float32(over_images)


def caffe_scale_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray | None, y: np.ndarray
) -> None:
    """Caffe ``Scale`` (axis 1, one axis): ``y = γ[c]·x (+ β[c])`` in float32.

    ``y`` may alias ``x``; then the caller must keep a copy of ``x`` for the backward pass, as
    Caffe does in ``temp_``.
    """
    x3 = _as_bcs(x, "x")
    channels = x3.shape[1]
    y3 = _check_like(y, "y", x3)
    _check_vector(gamma, "gamma", channels)
    if beta is not None:
        _check_vector(beta, "beta", channels)
    if beta is None:
        _channel_affine(x3, y3, gamma, gamma, _SCALE)
    else:
        _channel_affine(x3, y3, gamma, beta, _SCALE_SHIFT)


def caffe_scale_overwrites_gamma_diff(batch: int, channels: int, spatial: int) -> bool:
    """Whether Caffe's ``ScaleLayer::Backward_cpu`` OVERWRITES ``γ``'s diff instead of adding.

    Caffe quirk: with ``outer_dim = B = 1`` the product (``inner_dim = 1``: the eltwise case) or
    the ``gemv`` with ``beta = 0`` writes straight into the diff, so gradients from earlier
    ``iter_size`` passes are lost; the single-channel case with spatial extent accumulates.
    """
    return batch == 1 and not (channels == 1 and spatial > 1)


def caffe_scale_backward(
    x: np.ndarray,
    dy: np.ndarray,
    gamma: np.ndarray,
    dx: np.ndarray | None,
    gamma_diff: np.ndarray,
    beta_diff: np.ndarray | None = None,
) -> None:
    """Caffe ``Scale`` backward.

    ``beta_diff[c] += Σ dy`` (BiasLayer, one ``gemv`` per image); ``gamma_diff[c] += Σ dy·x``
    (see :func:`caffe_scale_overwrites_gamma_diff` for the batch-1 overwrite quirk);
    ``dx = γ[c]·dy`` unless ``dx`` is None. ``x`` is the bottom data (the saved copy when the
    layer ran in place). Parameter diffs accumulate because Caffe accumulates over
    ``iter_size`` passes and clears them before each iteration.
    """
    x3 = _as_bcs(x, "x")
    batch, channels, spatial = x3.shape
    dy3 = _check_like(dy, "dy", x3)
    _check_vector(gamma, "gamma", channels)
    _check_vector(gamma_diff, "gamma_diff", channels)
    if beta_diff is not None:
        _check_vector(beta_diff, "beta_diff", channels)
    overwrite = caffe_scale_overwrites_gamma_diff(batch, channels, spatial)
    has_beta = beta_diff is not None
    _caffe_scale_param_grads(
        x3, dy3, gamma_diff, beta_diff if has_beta else gamma_diff, has_beta, overwrite
    )
    if dx is not None:
        _channel_affine(dy3, _check_like(dx, "dx", x3), gamma, gamma, _SCALE)
