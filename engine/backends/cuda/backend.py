"""The CUDA backend: :class:`CudaBackend` behind the method names of
:class:`engine.backends.base.Backend`, on numba-cuda kernels.

Arrays are :class:`~engine.backends.cuda.arrays.CudaArray` views on the device. Parameters,
gradients, optimizer state, activations and deltas stay there; the host sends the batch, the
truth and dropout's uniforms (``copy_from_host``) and receives only scalars: losses, accuracy
and the per-segment norms of the fused update. Per-segment tables (offsets, rates, …) are small
host arrays, copied over on each call.

Results agree with the CPU backend to float32 rounding: the per-element math is the CPU's own
Python functions compiled for the device, reductions sum in the CPU's order where the CPU sums
in float32, and the GEMM sums each dot product in ascending ``k`` (see ``gemm.py``). On a real
GPU, NVVM also contracts ``a·b + c`` into fused multiply-adds (its default), which the CPU
kernels never do; the simulator runs the Python source and has no FMA.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from dnupdate.engine.backends.base import Backend, BackendError
from dnupdate.engine.backends.cpu import activations as cpu_act
from dnupdate.engine.backends.cpu import batchnorm as cpu_bn
from dnupdate.engine.backends.cpu import dropout as cpu_dropout
from dnupdate.engine.backends.cpu import softmax as cpu_softmax
from dnupdate.engine.backends.cpu.activations import LINEAR
from dnupdate.engine.backends.cuda import caffe_layers as caffe_kernels
from dnupdate.engine.backends.cuda import (
    channels,
    elementwise,
    gemm,
    graph,
    precision,
    segments,
    spatial,
)
from dnupdate.engine.backends.cuda import losses as loss_kernels
from dnupdate.engine.backends.cuda.arrays import (
    CudaArray,
    DeviceArrayError,
    copy_device_to_host,
    copy_host_to_device,
)
from dnupdate.engine.backends.cuda.compile import SIMULATOR, grid

F32 = np.float32
_NO_IGNORE = cpu_softmax._NO_IGNORE


def _f32(value: float) -> np.float32:
    return np.float32(value)


def _bcs(array: CudaArray):
    """The ``(B, C, spatial)`` device view of a contiguous ``(B, C, ...)`` array."""
    return array.reshape(array.shape[0], array.shape[1], -1).dev


def _gemm_operand(array: CudaArray) -> tuple[int, int, int, int, int]:
    """``(offset, s0, s1, s_row, s_col)`` of a 2-, 3- or 4-D operand (missing stack axes
    broadcast with stride 0)."""
    if array.ndim < 2 or array.ndim > 4:
        raise DeviceArrayError(f"matmul takes 2-D to 4-D operands, got shape {array.shape}")
    strides = (0,) * (4 - array.ndim) + array.strides
    shape = (1,) * (4 - array.ndim) + array.shape
    s0 = 0 if shape[0] == 1 else strides[0]
    s1 = 0 if shape[1] == 1 else strides[1]
    return array.offset, s0, s1, strides[2], strides[3]


class CudaBackend(Backend):
    """numba-cuda implementation of :class:`~engine.backends.base.Backend` (see the module
    docstring). Raises :class:`~engine.backends.base.BackendError` where the CPU backend
    raises one, and :class:`~engine.backends.cpu.softmax.LabelOutOfRangeError` for labels
    outside ``[0, classes)``."""

    name = "cuda"

    def __init__(self) -> None:
        self._scratch: dict[tuple, object] = {}

    def _device_scratch(self, tag: str, shape: tuple[int, ...], dtype) -> object:
        """A cached device array for per-call scratch (allocated once per tag and shape)."""
        key = (tag, shape, np.dtype(dtype).str)
        buffer = self._scratch.get(key)
        if buffer is None:
            buffer = self._scratch[key] = cuda.device_array(shape, dtype=dtype)
        return buffer

    @staticmethod
    def _to_device(host: np.ndarray, dtype) -> object:
        return cuda.to_device(np.ascontiguousarray(host, dtype=dtype))

    # ---- memory ---------------------------------------------------------------------------
    def empty(self, shape, dtype=np.float32):
        return CudaArray.allocate(shape, dtype, zero=False)

    def zeros(self, shape, dtype=np.float32):
        return CudaArray.allocate(shape, dtype, zero=True)

    def to_host(self, array):
        if isinstance(array, np.ndarray):
            return array.copy()
        return copy_device_to_host(array)

    def copy_from_host(self, host, out):
        copy_host_to_device(np.asarray(host), out)

    def fill(self, out, value):
        if out.size:
            flat = out.flat
            elementwise.fill[grid(out.size)](flat, flat.dtype.type(value))

    def copy(self, src, out):
        if src.shape != out.shape and src.size == out.size and src.is_contiguous:
            src = src.reshape(out.shape)
        if not out.size:
            return
        if src.is_contiguous:
            elementwise.copy[grid(out.size)](src.flat, out.flat)
        else:
            self._strided_copy(src, out)

    def permute_copy(self, src, out, axes):
        self._strided_copy(src.transpose(axes), out)

    def _strided_copy(self, view: CudaArray, out: CudaArray) -> None:
        if view.shape != out.shape or view.ndim > 4:
            raise DeviceArrayError(f"cannot copy a {view.shape} view into {out.shape}")
        shape = (1,) * (4 - view.ndim) + view.shape
        strides = (0,) * (4 - view.ndim) + view.strides
        spatial.strided_copy[grid(out.size)](
            view.data, view.offset, *strides, out.flat, shape[1], shape[2], shape[3]
        )

    # ---- dense algebra --------------------------------------------------------------------
    def _gemm(self, a, b, out, alpha: float, accumulate: bool) -> None:
        m, k = a.shape[-2], a.shape[-1]
        n = b.shape[-1]
        if b.shape[-2] != k or out.shape[-2:] != (m, n):
            raise DeviceArrayError(f"matmul shapes {a.shape} @ {b.shape} -> {out.shape}")
        stack = (1,) * (4 - out.ndim) + out.shape
        if SIMULATOR:
            kernel = gemm.gemm_direct[grid(out.size)]
        else:
            kernel = gemm.gemm[gemm.launch_shape(stack[0] * stack[1], m, n)]
        kernel(
            a.data, *_gemm_operand(a),
            b.data, *_gemm_operand(b),
            out.data, *_gemm_operand(out),
            stack[0], stack[1], m, n, k, _f32(alpha), accumulate,
        )  # fmt: skip

    def matmul(self, a, b, out):
        self._gemm(a, b, out, 1.0, False)

    def matmul_add(self, a, b, out, scratch, alpha):
        self._gemm(a, b, out, alpha, True)

    def sum_leading_add(self, stack, out, scratch, alpha):
        flat_stack = stack.reshape(stack.shape[0], -1).dev
        channels.sum_leading_add[grid(out.size)](flat_stack, out.flat, _f32(alpha))

    def accumulate(self, out, value, alpha):
        elementwise.axpy[grid(out.size)](_f32(alpha), value.flat, out.flat)

    def scale(self, out, factor):
        elementwise.scale[grid(out.size)](out.flat, _f32(factor))

    # ---- convolution ----------------------------------------------------------------------
    def im2col(self, x, col, kernel, stride, pad, dilation, out_hw):
        spatial.im2col[grid(col.size)](x.dev, col.dev, *kernel, *stride, *pad, dilation, *out_hw)

    def col2im_add(self, col, dx, kernel, stride, pad, dilation, out_hw):
        spatial.col2im_add[grid(dx.size)](
            col.dev, dx.dev, *kernel, *stride, *pad, dilation, *out_hw
        )

    def flat_as_col(self, x, col):
        spatial.flat_as_col[grid(col.size)](x.flat, col.dev, x.shape[0])

    def flat_as_col_add(self, col, dx):
        spatial.flat_as_col_add[1, 1](col.dev, dx.flat, dx.shape[0])

    def bias_add(self, y, bias):
        elementwise.bias_add[grid(y.size)](
            y.flat, bias.flat, y.shape[1], y.size // (y.shape[0] * y.shape[1])
        )

    def bias_grad(self, delta, grad, alpha):
        channels.bias_grad[grid(delta.shape[1])](_bcs(delta), grad.flat, _f32(alpha))

    # ---- graph layers ---------------------------------------------------------------------
    def shortcut(self, add, out, s1, s2):
        work = math.prod(min(a, b) for a, b in zip(add.shape, out.shape, strict=True))
        graph.shortcut[grid(work)](add.dev, out.dev, _f32(s1), _f32(s2))

    def route_copy(self, src, out, offset, group=0, groups=1):
        batch = src.shape[0]
        stride, total = src.size // batch, out.size // batch
        n = stride // groups
        graph.route_copy[grid(batch * n)](src.flat, out.flat, batch, n, total, offset, stride,
                                          group * n)  # fmt: skip

    def route_add(self, delta, dx, offset, group=0, groups=1):
        batch = dx.shape[0]
        stride, total = dx.size // batch, delta.size // batch
        n = stride // groups
        graph.route_add[grid(batch * n)](delta.flat, dx.flat, batch, n, total, offset, stride,
                                         group * n)  # fmt: skip

    # ---- reorg and crop -------------------------------------------------------------------
    def reorg(self, x, out, w, h, c, stride, forward):
        graph.reorg[grid(x.size)](x.flat, w, h, c, x.size // (w * h * c), stride, bool(forward),
                                  out.flat)  # fmt: skip

    def crop_forward(self, x, out, top, left, flip, scale, trans, colour):
        device_colour = cuda.to_device(np.ascontiguousarray(colour, dtype=F32))
        work = out.shape[0] * out.shape[2] * out.shape[3]
        graph.crop[grid(work)](x.dev, out.dev, int(top), int(left), bool(flip), _f32(scale),
                               _f32(trans), device_colour)  # fmt: skip

    # ---- pooling --------------------------------------------------------------------------
    def maxpool_forward(self, x, y, argmax, kernel, stride, offset):
        spatial.max_forward[grid(y.size)](x.dev, y.dev, argmax.dev, *kernel, *stride, *offset)

    def maxpool_backward(self, dy, argmax, dx):
        spatial.max_backward[grid(dx.shape[0] * dx.shape[1])](dy.dev, argmax.dev, dx.dev)

    def avepool_forward(self, x, y, kernel, stride, pad):
        spatial.ave_forward[grid(y.size)](x.dev, y.dev, *kernel, *stride, *pad)

    def avepool_backward(self, dy, dx, kernel, stride, pad):
        spatial.ave_backward[grid(dx.shape[0] * dx.shape[1])](
            dy.dev, dx.dev, *kernel, *stride, *pad
        )

    # ---- activations ----------------------------------------------------------------------
    def activation_code(self, activation):
        try:
            return cpu_act.activation_code(activation)
        except ValueError as exc:
            raise BackendError(str(exc)) from exc

    def activate(self, x, code):
        if code != LINEAR and x.size:
            elementwise.activate[grid(x.size)](x.flat, code)

    def activation_gradient(self, y, code, delta):
        if y.size != delta.size:
            raise DeviceArrayError(f"delta has {delta.size} elements, y has {y.size}")
        if code != LINEAR and y.size:
            elementwise.gradient[grid(y.size)](y.flat, code, delta.flat)

    def caffe_activation_forward(self, x, y, activation, negative_slope):
        launch = grid(x.size)
        if activation == "relu":
            elementwise.caffe_relu_forward[launch](x.flat, y.flat, _f32(negative_slope))
        elif activation == "logistic":
            elementwise.caffe_sigmoid_forward[launch](x.flat, y.flat)
        elif activation == "tanh":
            elementwise.caffe_tanh_forward[launch](x.flat, y.flat)
        else:
            raise BackendError(f"no Caffe activation {activation!r} (relu, logistic, tanh)")

    def caffe_activation_backward(self, x, y, dy, dx, activation, negative_slope):
        launch = grid(x.size)
        if activation == "relu":
            elementwise.caffe_relu_backward[launch](x.flat, dy.flat, dx.flat, _f32(negative_slope))
        elif activation == "logistic":
            elementwise.caffe_sigmoid_backward[launch](y.flat, dy.flat, dx.flat)
        elif activation == "tanh":
            elementwise.caffe_tanh_backward[launch](y.flat, dy.flat, dx.flat)
        else:
            raise BackendError(f"no Caffe activation {activation!r} (relu, logistic, tanh)")

    # ---- batch norm and scale -------------------------------------------------------------
    def darknet_bn_forward(self, x, state, train):
        out = _bcs(x)
        batch, chans, spatial_n = out.shape
        if not train:
            channels.darknet_normalize_affine[grid(x.size)](
                out, out, out, state.rolling_mean.flat, state.rolling_variance.flat,
                state.scales.flat, state.biases.flat, False,
            )  # fmt: skip
            return
        saved = _bcs(state.x)
        elementwise.copy[grid(x.size)](x.flat, state.x.flat)
        m = batch * spatial_n
        mean_scale = F32(1.0 / m)
        var_scale = F32(1.0 / (m - 1)) if m > 1 else F32(np.inf)
        channels.darknet_statistics[grid(chans)](
            saved, state.mean.flat, state.variance.flat, state.rolling_mean.flat,
            state.rolling_variance.flat, mean_scale, var_scale,
        )  # fmt: skip
        channels.darknet_normalize_affine[grid(x.size)](
            out, saved, _bcs(state.x_norm), state.mean.flat, state.variance.flat,
            state.scales.flat, state.biases.flat, True,
        )  # fmt: skip

    def darknet_bn_backward(self, delta, state, alpha):
        d3 = _bcs(delta)
        x3, norm3 = _bcs(state.x), _bcs(state.x_norm)
        channels.darknet_bn_sums[grid(d3.shape[1])](
            d3, x3, norm3, state.mean.flat, state.variance.flat, state.scales.flat,
            state.bias_updates.flat, state.scale_updates.flat, state.mean_delta.flat,
            state.variance_delta.flat, _f32(alpha), alpha == 1.0,
        )  # fmt: skip
        channels.darknet_bn_delta[grid(delta.size)](
            d3, x3, state.mean.flat, state.variance.flat, state.scales.flat,
            state.mean_delta.flat, state.variance_delta.flat,
        )  # fmt: skip

    def caffe_bn_forward(self, x, y, state, use_global_stats):
        x3, y3 = _bcs(x), _bcs(y)
        chans = x3.shape[1]
        if use_global_stats:
            channels.caffe_bn_global_statistics[grid(chans)](
                state.mean.flat, state.std.flat, state.mean_sum.flat, state.variance_sum.flat,
                state.scale_factor.flat, _f32(state.eps),
            )  # fmt: skip
        else:
            channels.caffe_bn_statistics[grid(chans)](
                x3, state.mean.flat, state.std.flat, state.mean_sum.flat,
                state.variance_sum.flat, state.scale_factor.flat,
                _f32(state.moving_average_fraction), _f32(state.eps),
            )  # fmt: skip
        channels.caffe_bn_normalize[grid(x.size)](x3, y3, state.mean.flat, state.std.flat)

    def caffe_bn_backward(self, y, dy, dx, state, use_global_stats):
        dy3, dx3 = _bcs(dy), _bcs(dx)
        if use_global_stats:
            channels.divide_by_channel[grid(dy.size)](dy3, dx3, state.std.flat)
            return
        y3 = _bcs(y)
        batch, chans, spatial_n = y3.shape
        dots = self._device_scratch("bn_dots", (chans,), np.float32)
        totals = self._device_scratch("bn_totals", (chans,), np.float32)
        channels.caffe_bn_sums[grid(chans)](y3, dy3, dots, totals)
        inv_count = F32(-1.0 / (batch * spatial_n))
        channels.caffe_bn_input_grad[grid(dy.size)](
            y3, dy3, dx3, state.std.flat, dots, totals, inv_count
        )

    def scale_forward(self, x, y, gamma, beta):
        has_beta = beta is not None
        channels.scale_forward[grid(x.size)](
            _bcs(x), gamma.flat, (beta if has_beta else gamma).flat, has_beta, _bcs(y)
        )

    def scale_backward(self, x, dy, dx, gamma, dgamma, dbeta, alpha):
        x3, dy3 = _bcs(x), _bcs(dy)
        batch, chans, spatial_n = x3.shape
        has_beta = dbeta is not None
        overwrite = cpu_bn.caffe_scale_overwrites_gamma_diff(batch, chans, spatial_n)
        channels.scale_param_grads[grid(chans)](
            x3, dy3, dgamma.flat, (dbeta if has_beta else dgamma).flat, has_beta, overwrite,
            _f32(alpha), alpha == 1.0,
        )  # fmt: skip
        if dx is not None:
            channels.scale_input_grad[grid(dy.size)](dy3, gamma.flat, _bcs(dx))

    # ---- dropout --------------------------------------------------------------------------
    def dropout_forward(self, x, y, uniforms, mask, probability, style):
        if not 0.0 <= probability < 1.0:
            raise BackendError(f"dropout probability must be in [0, 1), got {probability}")
        launch = grid(x.size)
        if style == "darknet":
            keep_scale = cpu_dropout.darknet_dropout_scale(probability)
            elementwise.darknet_dropout[launch](
                x.flat, uniforms.flat, _f32(probability), keep_scale
            )
            return
        elementwise.caffe_dropout_mask[launch](uniforms.flat, _f32(probability), mask.flat)
        keep_scale = cpu_dropout.caffe_dropout_scale(probability)
        elementwise.caffe_apply_mask[launch](x.flat, mask.flat, keep_scale, y.flat)

    def dropout_backward(self, dy, dx, uniforms, mask, probability, style):
        launch = grid(dx.size)
        if style == "darknet":
            keep_scale = cpu_dropout.darknet_dropout_scale(probability)
            elementwise.darknet_dropout[launch](
                dx.flat, uniforms.flat, _f32(probability), keep_scale
            )
            return
        keep_scale = cpu_dropout.caffe_dropout_scale(probability)
        elementwise.caffe_apply_mask[launch](dy.flat, mask.flat, keep_scale, dx.flat)

    # ---- losses ---------------------------------------------------------------------------
    def _scalar_sum(self, values) -> float:
        result = self._device_scratch("sum", (1,), np.float32)
        loss_kernels.sequential_sum[1, 1](values, result)
        return float(result.copy_to_host()[0])

    def darknet_softmax(self, x, y, truth, delta, losses, groups, temperature):
        batch = x.shape[0] if x.ndim > 1 else 1
        inputs = x.size // max(batch, 1)
        if groups < 1 or inputs % groups:
            raise BackendError(f"{inputs} inputs cannot be split into {groups} groups")
        rows = batch * groups
        loss_kernels.darknet_softmax[grid(rows)](
            x.flat, y.flat, rows, inputs // groups, _f32(temperature)
        )
        if truth is None:
            return 0.0
        loss_kernels.darknet_cross_entropy[grid(y.size)](
            y.flat, truth.flat, delta.flat, losses.flat
        )
        return self._scalar_sum(losses.flat)

    def darknet_cost(self, x, truth, errors, delta, cost_type):
        try:
            code = cpu_softmax.cost_code(cost_type)
        except ValueError as exc:
            raise BackendError(str(exc)) from exc
        loss_kernels.darknet_cost[grid(x.size)](x.flat, truth.flat, delta.flat, errors.flat, code)
        return self._scalar_sum(errors.flat)

    @staticmethod
    def _labels(labels, outer: int, inner: int):
        if labels.size != outer * inner:
            raise BackendError(f"labels: expected {outer * inner} labels (N·inner)")
        return labels.reshape(outer, inner).dev

    @staticmethod
    def _ignore(ignore_label) -> int:
        return _NO_IGNORE if ignore_label is None else int(ignore_label)

    def _checked_result(self, result, labels) -> float:
        loss, bad = result.copy_to_host()
        if bad >= 0:
            value = copy_device_to_host(labels).reshape(-1)[int(bad)]
            raise cpu_softmax.LabelOutOfRangeError(
                f"label {value} at position {int(bad)} is outside the classes "
                "(and is not the ignore_label)"
            )
        return float(loss)

    def softmax_loss_forward(self, x, labels, prob, normalization, ignore_label):
        x3, p3 = _bcs(x), _bcs(prob)
        outer, _, inner = x3.shape
        loss_kernels.caffe_softmax[grid(outer * inner)](x3, p3)
        result = self._device_scratch("nll", (2,), np.float64)
        mode = cpu_softmax.normalization_code(normalization)
        loss_kernels.caffe_nll[1, 1](
            p3, self._labels(labels, outer, inner), self._ignore(ignore_label), mode, result
        )
        return self._checked_result(result, labels)

    def softmax_loss_backward(self, prob, labels, dx, normalization, ignore_label, loss_weight):
        p3, dx3 = _bcs(prob), _bcs(dx)
        outer, _, inner = p3.shape
        labels2 = self._labels(labels, outer, inner)
        ignore = self._ignore(ignore_label)
        count = self._device_scratch("valid", (1,), np.int64)
        loss_kernels.count_valid[1, 1](labels2, ignore, count)
        mode = cpu_softmax.normalization_code(normalization)
        loss_kernels.caffe_softmax_loss_grad[grid(prob.size)](
            p3, labels2, dx3, ignore, mode, _f32(loss_weight), count
        )

    def accuracy(self, x, labels, top_k, ignore_label):
        x3 = _bcs(x)
        outer, _, inner = x3.shape
        result = self._device_scratch("accuracy", (2,), np.float64)
        loss_kernels.caffe_accuracy[1, 1](
            x3, self._labels(labels, outer, inner), top_k, self._ignore(ignore_label), result
        )
        return self._checked_result(result, labels)

    # ---- Caffe element-wise and normalisation layers --------------------------------------
    def multiply(self, a, b, out):
        caffe_kernels.multiply[grid(out.size)](a.flat, b.flat, out.flat)

    def divide(self, a, b, out):
        caffe_kernels.divide[grid(out.size)](a.flat, b.flat, out.flat)

    def eltwise_max(self, x, out, mask, index):
        caffe_kernels.eltwise_max[grid(out.size)](x.flat, out.flat, mask.flat, index)

    def eltwise_max_backward(self, delta, mask, index, dx):
        caffe_kernels.eltwise_max_backward[grid(dx.size)](delta.flat, mask.flat, index, dx.flat)

    def power_forward(self, x, y, power, scale, shift):
        caffe_kernels.power_forward[grid(y.size)](
            x.flat, y.flat, _f32(power), _f32(scale), _f32(shift)
        )

    def power_backward(self, x, y, dy, dx, power, scale, shift):
        caffe_kernels.power_backward[grid(dx.size)](
            x.flat, y.flat, dy.flat, dx.flat, _f32(power), _f32(scale), _f32(shift)
        )

    def lrn_forward(self, x, scale, y, size, alpha, beta, k):
        batch, _, hw = x.shape
        alpha_over_size = _f32(_f32(alpha) / _f32(size))
        caffe_kernels.lrn_forward[grid(batch * hw)](
            x.dev, scale.dev, y.dev, size, alpha_over_size, _f32(beta), _f32(k)
        )

    def lrn_backward(self, x, y, scale, dy, dx, size, alpha, beta):
        batch, _, hw = x.shape
        cache_ratio = _f32(2.0 * float(alpha) * float(beta) / size)
        caffe_kernels.lrn_backward[grid(batch * hw)](
            x.dev, y.dev, scale.dev, dy.dev, dx.dev, size, cache_ratio, _f32(beta)
        )

    def caffe_softmax_forward(self, x, y):
        caffe_kernels.softmax_forward[grid(x.shape[0] * x.shape[2])](x.dev, y.dev)

    def caffe_softmax_backward(self, y, dy, dx):
        caffe_kernels.softmax_backward[grid(y.shape[0] * y.shape[2])](y.dev, dy.dev, dx.dev)

    # ---- update and per-segment reductions ------------------------------------------------
    def _lane_scratch(self, tag: str, count: int):
        return self._device_scratch(tag, (max(count, 1), segments.LANES), np.float64)

    def _sum_lanes(self, partial, out: np.ndarray) -> None:
        totals = self._device_scratch("lane_totals", (partial.shape[0],), np.float64)
        segments.sum_lanes[grid(partial.shape[0])](partial, totals)
        out[...] = totals.copy_to_host()[: out.size]

    def fused_update(
        self, rule, params, grads, state_a, state_b, seg_offsets, seg_sizes, seg_lr,
        seg_decay, seg_grad_on, coef, step_sq, weight_sq, source=None,
    ):  # fmt: skip
        count = len(seg_offsets)
        if count == 0:
            return
        has_b = state_b.size > 0
        step_partial = self._lane_scratch("step_partial", count)
        weight_partial = self._lane_scratch("weight_partial", count)
        blocks, threads = segments.segment_grid(count)
        segments.fused_update[blocks, threads](
            rule, params.flat, grads.flat, (state_a if state_a.size else params).flat,
            (state_b if has_b else params).flat, has_b,
            self._to_device(seg_offsets, np.int64), self._to_device(seg_sizes, np.int64),
            self._to_device(seg_lr, np.float32), self._to_device(seg_decay, np.float32),
            self._to_device(seg_grad_on, np.int8), self._to_device(coef, np.float32),
            step_partial, weight_partial, (params if source is None else source).flat,
        )  # fmt: skip
        self._sum_lanes(step_partial, step_sq)
        self._sum_lanes(weight_partial, weight_sq)

    def segment_sumsq(self, values, seg_offsets, seg_sizes, seg_on, out):
        count = len(seg_offsets)
        if count == 0:
            return
        partial = self._lane_scratch("sumsq_partial", count)
        blocks, threads = segments.segment_grid(count)
        segments.segment_squares[blocks, threads](
            values.flat, self._to_device(seg_offsets, np.int64),
            self._to_device(seg_sizes, np.int64), self._to_device(seg_on, np.int8), partial,
        )  # fmt: skip
        self._sum_lanes(partial, out)

    def segment_sum_squares(self, buffer, offsets, lengths, out):
        self.segment_sumsq(buffer, offsets, lengths, np.ones(len(offsets), np.int8), out)

    def first_nonfinite_segment(self, buffer, offsets, lengths, flags) -> int:
        count = len(offsets)
        if count == 0:
            return -1
        partial = self._lane_scratch("nonfinite_partial", count)
        blocks, threads = segments.segment_grid(count)
        segments.segment_nonfinite[blocks, threads](
            buffer.flat, self._to_device(offsets, np.int64),
            self._to_device(lengths, np.int64), partial,
        )  # fmt: skip
        seen = np.zeros(count, np.float64)
        self._sum_lanes(partial, seen)
        flags[...] = (seen > 0).astype(flags.dtype)
        bad = np.flatnonzero(seen > 0)
        return int(bad[0]) if bad.size else -1

    # ---- simulated storage precision ------------------------------------------------------
    def _segment_counts(self, kernel, arrays, offsets, lengths, args, counts) -> None:
        """Launch ``kernel`` over a segment table, its counts summed on the device."""
        count = len(offsets)
        if count == 0:
            return
        device_counts = cuda.to_device(np.zeros(counts.shape, dtype=np.int64))
        work = max(int(np.max(lengths)), 1)
        kernel[grid(work)](
            *arrays, self._to_device(offsets, np.int64), self._to_device(lengths, np.int64),
            *args, device_counts,
        )  # fmt: skip
        counts[...] = device_counts.copy_to_host()

    def round_storage(self, buffer, offsets, lengths, code, counts, flush_nonfinite=False):
        self._segment_counts(
            precision.round_segments, (buffer.flat,), offsets, lengths,
            (int(code), bool(flush_nonfinite)), counts,
        )  # fmt: skip

    def lost_updates(self, before, after, offsets, lengths, code, store, counts):
        self._segment_counts(
            precision.lost_update_segments, (before.flat, after.flat), offsets, lengths,
            (int(code), bool(store)), counts,
        )  # fmt: skip
