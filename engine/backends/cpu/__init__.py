"""The CPU backend: NumPy arrays, BLAS GEMM and Numba ``@njit(cache=True)`` kernels.

:class:`CpuBackend` gathers the kernels of this package behind the method names of
:class:`engine.backends.base.Backend`. Convolution, connected and pooling kernels live in
``conv.py``, ``pool.py`` and ``blas.py``; the element-wise, normalisation, dropout and loss
kernels in ``activations.py``, ``batchnorm.py``, ``dropout.py`` and ``softmax.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numba
import numpy as np
from numba import njit, prange

from dnupdate.engine.backends.base import Backend, BackendError
from dnupdate.engine.backends.cpu import (
    activations,
    batchnorm,
    blas,
    caffe_layers,
    conv,
    conv_images,
    dropout,
    graph,
    memory,
    pool,
    precision,
    reduce,
    reshape,
    sgemm,
    share,
    softmax,
    tail,
    threads,
    update,
)
from dnupdate.engine.backends.jit_env import drop_stale_kernel_caches_once

drop_stale_kernel_caches_once()  # before any kernel's first call reads its cache


class CpuBackend(Backend):
    """NumPy/Numba implementation of :class:`~engine.backends.base.Backend` (deterministic:
    every parallel loop iteration owns its output slice)."""

    name = "cpu"
    maxpool_assigns_dx = True
    darknet_bn_reads_x = True

    #: below this many floats in the largest activation, Numba kernels run on one thread: a
    #: parallel launch costs more than small layers take (large GEMMs still use every thread)
    PARALLEL_MIN_WORK = 1 << 18

    def __init__(self, threads: int | None = None) -> None:
        """``threads``: Numba threads for the parallel kernels; None = all for large
        networks, one for small ones (see :meth:`configure`)."""
        self._scratch: dict[tuple[str, int], np.ndarray] = {}
        self.threads = threads
        self._all_threads = min(threads or 1, numba.config.NUMBA_NUM_THREADS)

    def configure(self, work: int) -> None:
        """Set the Numba thread count for the kernels, and keep OpenBLAS itself on one thread:
        GEMMs are tiled over Numba's threads (:mod:`~engine.backends.cpu.blas`) and the
        per-image convolution calls ``sgemm`` from every thread at once. Kernel results do not
        depend on the thread counts: every parallel iteration owns its output."""
        count = min(self.threads or threads.max_threads(), threads.max_threads())
        small = self.threads is None and work < self.PARALLEL_MIN_WORK
        share.set_threads(count)
        threads.set_threads(1 if small else count, blas=1 if sgemm.AVAILABLE else count)
        self._all_threads = count

    #: a pass over the flat parameter buffers (update, norms, rounding) of at least this many
    #: floats runs on every thread even where a small network's layer kernels run on one: the
    #: MLP's 1.86M weights are a small network by activations (128×1024) but its update pass
    #: took 5.0 ms on one thread and 2.6 ms on two (2-core host). The passes cut their work
    #: into fixed blocks, so the thread count changes no result.
    PARALLEL_FLAT_MIN = 1 << 18

    @contextmanager
    def _flat_pass(self, size: int) -> Iterator[None]:
        """Numba's thread count for one flat-buffer pass of ``size`` floats (this thread's
        count restored after it)."""
        before = numba.get_num_threads()
        wanted = self._all_threads if size >= self.PARALLEL_FLAT_MIN else before
        if wanted == before:
            yield
            return
        numba.set_num_threads(wanted)
        try:
            yield
        finally:
            numba.set_num_threads(before)

    def _zeroed(self, tag: str, size: int) -> np.ndarray:
        """A cached zero-filled scratch vector (allocated once per tag and size)."""
        buffer = self._scratch.get((tag, size))
        if buffer is None:
            buffer = self._scratch[(tag, size)] = np.zeros(size, dtype=np.float32)
        else:
            buffer.fill(0.0)
        return buffer

    # ---- memory ---------------------------------------------------------------------------
    # large buffers on huge pages (engine.backends.cpu.memory)
    def empty(self, shape, dtype=np.float32):
        return memory.empty(shape, dtype)

    def zeros(self, shape, dtype=np.float32):
        return memory.zeros(shape, dtype)

    def to_host(self, array):
        return np.array(array, copy=True)

    def copy_from_host(self, host, out):
        out[...] = host

    def fill(self, out, value):
        if out.size < self.PARALLEL_COPY_MIN or not out.flags.c_contiguous:
            out.fill(value)
            return
        block = 1 << 18  # as the copy: a residual net's deltas, 8 MB, 1.1 ms on one thread
        share.share_out(_fill_blocks_shared, _fill_blocks, -(-out.size // block),
                        out.reshape(-1), np.float32(value), block)  # fmt: skip

    #: a flat copy of at least this many floats is shared out to the threads in blocks
    #: (darknet's momentum snapshot of a 1.86M-weight MLP: 0.58 → ~0.35 ms)
    PARALLEL_COPY_MIN = 1 << 20

    def copy(self, src, out):
        if out.size < self.PARALLEL_COPY_MIN or not (
            src.shape == out.shape and src.flags.c_contiguous and out.flags.c_contiguous
        ):
            np.copyto(out, src)
            return
        flat_src, flat_out = src.reshape(-1), out.reshape(-1)
        block = 1 << 18
        share.share_out(_copy_blocks_shared, _copy_blocks, -(-out.size // block), flat_src,
                        flat_out, block)  # fmt: skip

    def permute_copy(self, src, out, axes):
        np.copyto(out, src.transpose(axes))

    # ---- dense algebra --------------------------------------------------------------------
    matmul = staticmethod(blas.matmul)
    matmul_add = staticmethod(blas.matmul_add)
    sum_leading_add = staticmethod(blas.sum_leading_add)
    accumulate = staticmethod(blas.accumulate)

    def scale(self, out, factor):
        out *= np.float32(factor)

    # ---- convolution and pooling ----------------------------------------------------------
    #: the per-image convolution splits a batch into at most this many chunks of consecutive
    #: images (each with its own scratch and weight-gradient partial sum): enough to keep 8
    #: cores busy; fixed so that results do not depend on the thread count
    IMAGE_CHUNKS = 8
    #: ... and gives all chunks together at most this much scratch (bytes)
    IMAGE_SCRATCH_BYTES = 64 << 20

    def conv_image_chunks(self, batch, chunk_floats):
        if not sgemm.AVAILABLE:
            return 0
        fit = self.IMAGE_SCRATCH_BYTES // (4 * max(1, chunk_floats))
        return max(1, min(self.IMAGE_CHUNKS, batch, fit))

    conv_col_floats = staticmethod(conv_images.col_floats)
    conv_forward_images = staticmethod(conv_images.conv_forward)
    conv_backward_images = staticmethod(conv_images.conv_backward)
    im2col = staticmethod(conv.im2col)
    col2im_add = staticmethod(conv.col2im_add)
    flat_as_col = staticmethod(conv.flat_as_col)
    flat_as_col_add = staticmethod(conv.flat_as_col_add)
    bias_add = staticmethod(conv.bias_add)
    bias_grad = staticmethod(conv.bias_grad)

    def darknet_tail_forward(self, y, bias, code) -> None:
        if y.ndim == 3 and y.shape[2] == 1 and y.flags.c_contiguous:  # connected: one pass
            tail.rows_forward(y, bias, code)
            return
        super().darknet_tail_forward(y, bias, code)

    def darknet_tail_backward(self, y, delta, dbias, code, alpha: float) -> None:
        one_pass = delta.ndim == 3 and delta.shape[2] == 1 and delta.flags.c_contiguous
        if one_pass and y.shape == delta.shape and y.flags.c_contiguous:
            tail.rows_backward(y, delta, dbias, code, alpha)
            return
        super().darknet_tail_backward(y, delta, dbias, code, alpha)

    maxpool_forward = staticmethod(pool.maxpool_forward)
    maxpool_backward = staticmethod(pool.maxpool_backward)
    avepool_forward = staticmethod(pool.avepool_forward)
    avepool_backward = staticmethod(pool.avepool_backward)

    # ---- graph layers ---------------------------------------------------------------------
    shortcut = staticmethod(graph.shortcut)

    def shortcut_forward(self, x, add, out, s1, s2, code):
        graph.shortcut_forward(x, add, out, s1, s2, activations.LINEAR if code is None else code)

    def shortcut_backward(
        self, out, delta, dx, da, alpha, beta, code, assign_dx=False, assign_da=False
    ):  # fmt: skip
        code = activations.LINEAR if code is None else code
        graph.shortcut_backward(out, delta, dx, da, alpha, beta, code, assign_dx, assign_da)

    route_copy = staticmethod(graph.route_copy)
    route_add = staticmethod(graph.route_add)

    # ---- reorg and crop -------------------------------------------------------------------
    reorg = staticmethod(reshape.reorg)
    crop_forward = staticmethod(reshape.crop_forward)

    # ---- activations ----------------------------------------------------------------------
    def activation_code(self, activation):
        try:
            return activations.activation_code(activation)
        except ValueError as exc:
            raise BackendError(str(exc)) from exc

    activate = staticmethod(activations.activate)
    activation_gradient = staticmethod(activations.gradient)

    def caffe_activation_forward(self, x, y, activation, negative_slope):
        if activation == "relu":
            activations.caffe_relu_forward(x, y, negative_slope)
        elif activation == "logistic":
            activations.caffe_sigmoid_forward(x, y)
        elif activation == "tanh":
            activations.caffe_tanh_forward(x, y)
        else:
            raise BackendError(f"no Caffe activation {activation!r} (relu, logistic, tanh)")

    def caffe_activation_backward(self, x, y, dy, dx, activation, negative_slope):
        if activation == "relu":
            activations.caffe_relu_backward(x, dy, dx, negative_slope)
        elif activation == "logistic":
            activations.caffe_sigmoid_backward(y, dy, dx)
        elif activation == "tanh":
            activations.caffe_tanh_backward(y, dy, dx)
        else:
            raise BackendError(f"no Caffe activation {activation!r} (relu, logistic, tanh)")

    # ---- batch norm and scale -------------------------------------------------------------
    def darknet_bn_forward(self, x, state, train):
        self.darknet_bn_act_forward(x, state, train, None)

    def darknet_bn_act_forward(self, x, state, train, code):
        code = activations.LINEAR if code is None else code
        if train:
            self._darknet_bn_train(x, state, code, from_x=False)
        else:
            batchnorm.darknet_batchnorm_forward_infer(
                x, state.rolling_mean, state.rolling_variance, state.scales, state.biases, code
            )

    def darknet_bn_act_forward_from_x(self, out, state, code):
        self._darknet_bn_train(out, state, activations.LINEAR if code is None else code, True)

    BN_CARRIES_SHORTCUT = True

    def darknet_bn_act_shortcut_forward(self, out, state, code, add, total, alpha, beta,
                                        total_code):  # fmt: skip
        """The shortcut runs on each normalised plane while it is in cache (one pass less over
        ``out``, which is still written: other layers or the divergence scan may read it)."""
        total_code = activations.LINEAR if total_code is None else total_code
        shortcut = (add, total, alpha, beta, total_code)
        self._darknet_bn_train(out, state, activations.LINEAR if code is None else code, True,
                               shortcut)  # fmt: skip

    @staticmethod
    def _darknet_bn_train(out, state, code, from_x, shortcut=None):
        batchnorm.darknet_batchnorm_forward_train(
            out,
            state.x,
            state.x_norm,
            state.mean,
            state.variance,
            state.rolling_mean,
            state.rolling_variance,
            state.scales,
            state.biases,
            code,
            from_x=from_x,
            shortcut=shortcut,
        )

    def darknet_bn_backward(self, delta, state, alpha):
        self.darknet_bn_act_backward(delta, delta, state, alpha, None)

    def darknet_bn_act_backward(self, y, delta, state, alpha, code):
        code = activations.LINEAR if code is None else code
        channels = state.scales.shape[0]
        direct = alpha == 1.0
        bias_updates = state.bias_updates if direct else self._zeroed("bn_bias", channels)
        scale_updates = state.scale_updates if direct else self._zeroed("bn_scale", channels)
        batchnorm.darknet_batchnorm_backward(
            delta,
            state.x,
            state.x_norm,
            state.mean,
            state.variance,
            state.scales,
            bias_updates,
            scale_updates,
            state.mean_delta,
            state.variance_delta,
            y,
            code,
        )
        if not direct:
            blas.accumulate(state.bias_updates, bias_updates, alpha)
            blas.accumulate(state.scale_updates, scale_updates, alpha)

    def caffe_bn_forward(self, x, y, state, use_global_stats):
        if use_global_stats:
            batchnorm.caffe_batchnorm_forward_global(
                x,
                y,
                state.mean,
                state.std,
                state.mean_sum,
                state.variance_sum,
                state.scale_factor,
                state.eps,
            )
        else:
            batchnorm.caffe_batchnorm_forward_train(
                x,
                y,
                state.mean,
                state.std,
                state.mean_sum,
                state.variance_sum,
                state.scale_factor,
                state.moving_average_fraction,
                state.eps,
            )

    def caffe_bn_backward(self, y, dy, dx, state, use_global_stats):
        batchnorm.caffe_batchnorm_backward(y, dy, dx, state.std, use_global_stats)

    def scale_forward(self, x, y, gamma, beta):
        batchnorm.caffe_scale_forward(x, gamma, beta, y)

    def scale_backward(self, x, dy, dx, gamma, dgamma, dbeta, alpha):
        if alpha == 1.0:
            batchnorm.caffe_scale_backward(x, dy, gamma, dx, dgamma, dbeta)
            return
        channels = gamma.shape[0]
        gamma_scratch = self._zeroed("scale_gamma", channels)
        beta_scratch = None if dbeta is None else self._zeroed("scale_beta", channels)
        batchnorm.caffe_scale_backward(x, dy, gamma, dx, gamma_scratch, beta_scratch)
        blas.accumulate(dgamma, gamma_scratch, alpha)
        if dbeta is not None:
            blas.accumulate(dbeta, beta_scratch, alpha)

    # ---- dropout --------------------------------------------------------------------------
    def dropout_forward(self, x, y, uniforms, mask, probability, style):
        if style == "darknet":
            dropout.darknet_dropout_forward(x, uniforms, probability)
        else:
            dropout.caffe_dropout_mask_from_uniform(uniforms, probability, mask)
            dropout.caffe_dropout_forward(x, mask, probability, y)

    def dropout_backward(self, dy, dx, uniforms, mask, probability, style):
        if style == "darknet":
            dropout.darknet_dropout_backward(dx, uniforms, probability)
        else:
            dropout.caffe_dropout_backward(dy, mask, probability, dx)

    # ---- losses ---------------------------------------------------------------------------
    def darknet_softmax(self, x, y, truth, delta, losses, groups, temperature):
        softmax.darknet_softmax_forward(x, y, groups, temperature)
        if truth is None:
            return 0.0
        return softmax.darknet_softmax_cross_entropy(y, truth, delta, losses)

    def darknet_cost(self, x, truth, errors, delta, cost_type):
        try:
            code = softmax.cost_code(cost_type)
        except ValueError as exc:
            raise BackendError(str(exc)) from exc
        return softmax.darknet_cost_forward(x, truth, delta, errors, code)

    def softmax_loss_forward(self, x, labels, prob, normalization, ignore_label):
        return softmax.caffe_softmax_loss_forward(x, labels, prob, normalization, ignore_label)

    def softmax_loss_backward(self, prob, labels, dx, normalization, ignore_label, loss_weight):
        softmax.caffe_softmax_loss_backward(
            prob, labels, dx, loss_weight, normalization, ignore_label
        )

    def accuracy(self, x, labels, top_k, ignore_label):
        return softmax.caffe_accuracy(x, labels, top_k, ignore_label)

    # ---- Caffe element-wise and normalisation layers --------------------------------------
    multiply = staticmethod(caffe_layers.multiply)
    divide = staticmethod(caffe_layers.divide)
    eltwise_max = staticmethod(caffe_layers.eltwise_max)
    eltwise_max_backward = staticmethod(caffe_layers.eltwise_max_backward)
    power_forward = staticmethod(caffe_layers.power_forward)
    power_backward = staticmethod(caffe_layers.power_backward)
    lrn_forward = staticmethod(caffe_layers.lrn_forward)
    lrn_backward = staticmethod(caffe_layers.lrn_backward)
    caffe_softmax_forward = staticmethod(caffe_layers.caffe_softmax_forward)
    caffe_softmax_backward = staticmethod(caffe_layers.caffe_softmax_backward)

    # ---- update and per-segment reductions ------------------------------------------------
    FUSED_CARRY = True
    FUSED_GRAD_NORM = True
    FUSED_CLEAR = True

    def fused_update(self, rule, params, *args, **kwargs):
        with self._flat_pass(params.size):
            update.fused_update(rule, params, *args, **kwargs)

    segment_sumsq = staticmethod(update.segment_sumsq)
    segment_sum_squares = staticmethod(reduce.segment_sum_squares)
    segment_sum_squares_change = staticmethod(reduce.segment_sum_squares_change)
    first_nonfinite_segment = staticmethod(reduce.first_nonfinite_segment)

    # ---- simulated storage precision ------------------------------------------------------
    def round_storage(self, buffer, offsets, lengths, code, counts, flush_nonfinite=False):
        with self._flat_pass(buffer.size):
            precision.round_segments(buffer, offsets, lengths, code, counts, flush_nonfinite)

    def store_rounded(self, buffer, offsets, lengths, code, saved=None):
        with self._flat_pass(buffer.size):
            precision.store_segments(buffer, offsets, lengths, code, saved)

    unscale_sum_squares = staticmethod(reduce.unscale_sum_squares)
    round_unscale_sum_squares = staticmethod(precision.round_unscale_sum_squares)

    def lost_updates(self, before, after, offsets, lengths, code, store, counts):
        with self._flat_pass(after.size):
            precision.lost_update_segments(before, after, offsets, lengths, code, store, counts)


@njit(cache=True, nogil=True)
def _copy_blocks(first, end, src, out, block):
    """``out[i] = src[i]`` over blocks ``[first, end)`` of ``block`` floats (flat arrays)."""
    stop = min(end * block, out.size)
    for i in range(first * block, stop):
        out[i] = src[i]


@njit(cache=True, nogil=True)
def _fill_blocks(first, end, out, value, block):
    """``out[i] = value`` over blocks ``[first, end)`` of ``block`` floats (a flat array)."""
    stop = min(end * block, out.size)
    for i in range(first * block, stop):
        out[i] = value


@njit(parallel=True, cache=True)
def _fill_blocks_shared(threads, count, out, value, block):
    """:func:`_fill_blocks`, one share of the blocks per thread (``share.share_out``)."""
    for t in prange(threads):
        _fill_blocks(share.share_start(t, count, threads),
                     share.share_start(t + 1, count, threads), out, value, block)  # fmt: skip


@njit(parallel=True, cache=True)
def _copy_blocks_shared(threads, count, src, out, block):
    """:func:`_copy_blocks`, one share of the blocks per thread (``share.share_out``)."""
    for t in prange(threads):
        _copy_blocks(share.share_start(t, count, threads),
                     share.share_start(t + 1, count, threads), src, out, block)  # fmt: skip
