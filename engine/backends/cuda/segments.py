"""The fused parameter update and the per-segment reductions on the GPU.

:func:`fused_update` runs every update rule of ``engine.update.rules`` in one launch: grid axis y is
the segment (one learnable blob), grid axis x and the threads stride over its elements. The
per-element step is the CPU backend's own Python function (``darknet_sgd_element``,
``caffe_adam_element``, … in ``engine.backends.cpu.update``) compiled for the device, with the
same rule codes and coefficient slots. Each thread leaves its partial ``Σ(Δw)²`` and ``Σw²``
(float64) in a ``(segments, lanes)`` scratch; :func:`sum_lanes` adds the lanes of each segment
in lane order, so the norms are deterministic (they differ from the CPU's sequential float64
sums only in the last bits).
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from dnupdate.engine.backends.cpu import update as cpu_update
from dnupdate.engine.backends.cuda.compile import SIMULATOR, device_function

_darknet_sgd = device_function(cpu_update.darknet_sgd_element)
_darknet_adam = device_function(cpu_update.darknet_adam_element)
_caffe_prepare = device_function(cpu_update.caffe_prepared_gradient)
_caffe_step = device_function(cpu_update._caffe_step)
_adamw = device_function(cpu_update.adamw_element)

RULE_DARKNET_SGD = cpu_update.RULE_DARKNET_SGD
RULE_DARKNET_ADAM = cpu_update.RULE_DARKNET_ADAM
RULE_DARKNET_ADAMW = cpu_update.RULE_DARKNET_ADAMW
RULE_CAFFE_ADAMW = cpu_update.RULE_CAFFE_ADAMW
K_BATCH = cpu_update.K_BATCH
K_MOMENTUM = cpu_update.K_MOMENTUM
_F0 = np.float32(0.0)

#: blocks along one segment (grid axis x); threads per block
LANE_BLOCKS = 1 if SIMULATOR else 16
LANE_THREADS = 8 if SIMULATOR else 256
LANES = LANE_BLOCKS * LANE_THREADS


@cuda.jit
def fused_update(
    rule, params, grads, state_a, state_b, has_b, seg_offsets, seg_sizes, seg_lr,
    seg_decay, seg_grad_on, coef, step_partial, weight_partial, source,
):  # fmt: skip
    """One update of ``rule`` over segment ``blockIdx.y`` (``engine.backends.cpu.update.
    fused_update``'s contract: ``w`` read from ``source``, ``params`` itself or the master
    copy); partial norms go to ``*_partial[segment, lane]``."""
    s = cuda.blockIdx.y
    lane = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    lanes = cuda.gridDim.x * cuda.blockDim.x
    k = (
        coef[0], coef[1], coef[2], coef[3], coef[4], coef[5], coef[6],
        coef[7], coef[8], coef[9], coef[10], coef[11], coef[12], coef[13],
    )  # fmt: skip
    momentum = k[K_MOMENTUM]
    start = seg_offsets[s]
    rate = seg_lr[s]
    decay = seg_decay[s]
    grad_on = seg_grad_on[s] != 0
    step_acc = 0.0
    weight_acc = 0.0
    for j in range(lane, seg_sizes[s], lanes):
        i = start + j
        w = source[i]
        if rule == RULE_DARKNET_SGD:
            w_new, u = _darknet_sgd(w, grads[i], rate, decay, momentum)
            grads[i] = u
        elif rule == RULE_DARKNET_ADAM:
            w_new, m, v = _darknet_adam(w, grads[i], state_a[i], state_b[i], rate, decay, k)
            state_a[i] = m
            state_b[i] = v
            grads[i] = _F0
        elif rule == RULE_DARKNET_ADAMW:
            g = (-grads[i]) / k[K_BATCH]  # darknet's Σ of −∂L/∂W → the mean gradient
            w_new, m, v = _adamw(w, g, state_a[i], state_b[i], rate, decay, k)
            state_a[i] = m
            state_b[i] = v
            grads[i] = _F0
        elif rule == RULE_CAFFE_ADAMW:
            g = grads[i] if grad_on else _F0
            g = _caffe_prepare(g, w, _F0, k)
            w_new, m, v = _adamw(w, g, state_a[i], state_b[i], rate, decay, k)
            state_a[i] = m
            state_b[i] = v
            grads[i] = w - w_new
        else:
            g = grads[i] if grad_on else _F0
            g = _caffe_prepare(g, w, decay, k)
            h2 = state_b[i] if has_b else _F0
            step, h, h2 = _caffe_step(rule, g, state_a[i], h2, rate, k)
            state_a[i] = h
            if has_b:
                state_b[i] = h2
            grads[i] = step
            w_new = w - step
        params[i] = w_new
        delta_w = np.float64(w_new) - np.float64(w)
        step_acc += delta_w * delta_w
        weight_acc += np.float64(w) * np.float64(w)
    step_partial[s, lane] = step_acc
    weight_partial[s, lane] = weight_acc


@cuda.jit
def segment_squares(values, seg_offsets, seg_sizes, seg_on, partial):
    """``partial[s, lane]`` = this lane's ``Σ values²`` over segment ``s`` (float64); 0 for
    segments with ``seg_on[s] = 0``."""
    s = cuda.blockIdx.y
    lane = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    lanes = cuda.gridDim.x * cuda.blockDim.x
    acc = 0.0
    if seg_on[s] != 0:
        start = seg_offsets[s]
        for j in range(lane, seg_sizes[s], lanes):
            x = np.float64(values[start + j])
            acc += x * x
    partial[s, lane] = acc


@cuda.jit
def segment_nonfinite(values, seg_offsets, seg_sizes, partial):
    """``partial[s, lane] = 1.0`` when this lane saw a NaN or ±inf in segment ``s``."""
    s = cuda.blockIdx.y
    lane = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    lanes = cuda.gridDim.x * cuda.blockDim.x
    flag = 0.0
    start = seg_offsets[s]
    for j in range(lane, seg_sizes[s], lanes):
        if not math.isfinite(values[start + j]):
            flag = 1.0
            break
    partial[s, lane] = flag


@cuda.jit
def sum_lanes(partial, out):
    """``out[s] = Σ_lane partial[s, lane]`` in lane order (float64)."""
    segments, lanes = partial.shape
    for s in range(cuda.grid(1), segments, cuda.gridsize(1)):
        total = 0.0
        for lane in range(lanes):
            total += partial[s, lane]
        out[s] = total


def segment_grid(segments: int) -> tuple[tuple[int, int], int]:
    """``((blocks_x, segments), threads)`` for the per-segment kernels."""
    return (LANE_BLOCKS, max(segments, 1)), LANE_THREADS
