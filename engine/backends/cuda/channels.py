"""Per-channel CUDA kernels: bias gradient, batch-stack sums, darknet/Caffe batch norm, Scale.

The reductions transcribe the CPU kernels (``engine.backends.cpu.batchnorm``/``conv``) loop for
loop, one thread per channel, so every float32/double sum is made in the same order with the
same rounding points as on the CPU (darknet's float32 accumulators included). The element-wise
halves (normalising, ``δ`` updates, scaling) run one element per iteration and read the
per-channel results the reduction kernels left in small device vectors.

Arrays are ``(B, C, N)`` views (``N`` spatial positions); per-channel vectors are ``(C,)``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from dnupdate.engine.backends.cpu import batchnorm as cpu_bn

_NORMALIZE_EPS = cpu_bn._DARKNET_NORMALIZE_EPS
_BACKWARD_EPS = cpu_bn._DARKNET_BACKWARD_EPS
_KEEP = cpu_bn._ROLLING_KEEP
_TAKE = cpu_bn._ROLLING_TAKE
_F0 = np.float32(0.0)
_F1 = np.float32(1.0)


@cuda.jit
def bias_grad(delta, grad, alpha):
    """``grad[c] += alpha·Σ_b Σ_j delta[b, c, j]`` (float32 sum in (b, j) order)."""
    batch, channels, spatial = delta.shape
    for c in range(cuda.grid(1), channels, cuda.gridsize(1)):
        total = _F0
        for b in range(batch):
            for j in range(spatial):
                total += delta[b, c, j]
        grad[c] += alpha * total


@cuda.jit
def sum_leading_add(stack, out, alpha):
    """``out[i] += alpha·Σ_s stack[s, i]`` (the stack summed in order, as ``np.sum(axis=0)``)."""
    count, size = stack.shape
    for i in range(cuda.grid(1), size, cuda.gridsize(1)):
        total = stack[0, i]
        for s in range(1, count):
            total = total + stack[s, i]
        out[i] = out[i] + alpha * total


# ---- darknet --------------------------------------------------------------------------------


@cuda.jit
def darknet_statistics(x, mean, variance, rolling_mean, rolling_variance, mean_scale, var_scale):
    """Batch mean and UNBIASED variance (float32 sums, ``pow`` in double), then the rolling
    ``.99·r + .01·stat`` updates (``_darknet_statistics`` + ``_darknet_rolling``)."""
    batch, channels, spatial = x.shape
    for c in range(cuda.grid(1), channels, cuda.gridsize(1)):
        total = _F0
        for b in range(batch):
            for s in range(spatial):
                total += x[b, c, s]
        mean[c] = total * mean_scale
        squares = _F0
        for b in range(batch):
            for s in range(spatial):
                diff = np.float64(x[b, c, s] - mean[c])
                squares = np.float32(np.float64(squares) + diff * diff)
        variance[c] = squares * var_scale
        rolling_mean[c] = rolling_mean[c] * _KEEP
        rolling_mean[c] = rolling_mean[c] + _TAKE * mean[c]
        rolling_variance[c] = rolling_variance[c] * _KEEP
        rolling_variance[c] = rolling_variance[c] + _TAKE * variance[c]


@cuda.jit
def darknet_normalize_affine(out, x, x_norm, mean, variance, scales, biases, keep_x_norm):
    """``x_norm = (x − mean)/(sqrt(var) + 1e-6)`` in double; ``out = x_norm·scale + bias``."""
    batch, channels, spatial = out.shape
    for t in range(cuda.grid(1), batch * channels * spatial, cuda.gridsize(1)):
        s = t % spatial
        c = (t // spatial) % channels
        b = t // (spatial * channels)
        denominator = math.sqrt(np.float64(variance[c])) + np.float64(_NORMALIZE_EPS)
        normalized = np.float32(np.float64(x[b, c, s] - mean[c]) / denominator)
        if keep_x_norm:
            x_norm[b, c, s] = normalized
        out[b, c, s] = normalized * scales[c] + biases[c]


@cuda.jit
def darknet_bn_sums(
    delta, x, x_norm, mean, variance, scales, bias_updates, scale_updates,
    mean_delta, variance_delta, alpha, direct,
):  # fmt: skip
    """The per-channel half of ``backward_batchnorm_layer``: bias/scale updates (times
    ``alpha`` unless ``direct``), then ``mean_delta`` and ``variance_delta`` of ``δ·scale``."""
    batch, channels, spatial = delta.shape
    for c in range(cuda.grid(1), channels, cuda.gridsize(1)):
        bias_total = _F0
        for b in range(batch):
            image_sum = _F0
            for s in range(spatial):
                image_sum += delta[b, c, s]
            if direct:
                bias_updates[c] += image_sum
            else:
                bias_total += image_sum
        products = _F0
        for b in range(batch):
            for s in range(spatial):
                products += delta[b, c, s] * x_norm[b, c, s]
        if direct:
            scale_updates[c] += products
        else:
            bias_updates[c] = bias_updates[c] + alpha * bias_total
            scale_updates[c] = scale_updates[c] + alpha * products
        var_eps = np.float64(variance[c] + _BACKWARD_EPS)
        total = _F0
        for b in range(batch):
            for s in range(spatial):
                total += delta[b, c, s] * scales[c]
        mean_delta[c] = np.float32(np.float64(total) * (-1.0 / math.sqrt(var_eps)))
        weighted = _F0
        for b in range(batch):
            for s in range(spatial):
                weighted += (delta[b, c, s] * scales[c]) * (x[b, c, s] - mean[c])
        variance_delta[c] = np.float32(np.float64(weighted) * (-0.5 * var_eps**-1.5))


@cuda.jit
def darknet_bn_delta(delta, x, mean, variance, scales, mean_delta, variance_delta):
    """``δ ← (δ·scale)/sqrt(v) + variance_delta·2·(x − mean)/m + mean_delta/m`` (darknet's
    ``normalize_delta_cpu`` with its quirks; double, stored float32)."""
    batch, channels, spatial = delta.shape
    m = batch * spatial
    m_float = np.float32(m)
    for t in range(cuda.grid(1), batch * channels * spatial, cuda.gridsize(1)):
        s = t % spatial
        c = (t // spatial) % channels
        b = t // (spatial * channels)
        var_eps = np.float64(variance[c] + _BACKWARD_EPS)
        inv_std = 1.0 / math.sqrt(var_eps)
        mean_term = np.float64(mean_delta[c] / m_float)
        variance_scale = np.float64(variance_delta[c]) * 2.0
        centered = np.float64(x[b, c, s] - mean[c])
        scaled = np.float64(delta[b, c, s] * scales[c])
        delta[b, c, s] = np.float32(scaled * inv_std + variance_scale * centered / m + mean_term)


# ---- Caffe BatchNorm ------------------------------------------------------------------------


@cuda.jit
def caffe_bn_statistics(x, mean, std, mean_sum, variance_sum, scale_factor, fraction, eps):
    """Caffe TRAIN statistics: mean (double sum), BIASED variance, the running sums
    ``M ← λM + mean``, ``V ← λV + m/(m−1)·var``, ``std = sqrt(var + eps)``; the thread of
    channel 0 also updates ``scale_factor ← λ·s + 1``."""
    batch, channels, spatial = x.shape
    m = batch * spatial
    correction = np.float32(m) / np.float32(m - 1) if m > 1 else _F1
    for c in range(cuda.grid(1), channels, cuda.gridsize(1)):
        if c == 0:
            scale_factor[0] = scale_factor[0] * fraction
            scale_factor[0] = scale_factor[0] + _F1
        total = 0.0
        for b in range(batch):
            for s in range(spatial):
                total += np.float64(x[b, c, s])
        mean[c] = np.float32(total / m)
        squares = 0.0
        for b in range(batch):
            for s in range(spatial):
                centered = x[b, c, s] - mean[c]
                squares += np.float64(centered * centered)
        variance = np.float32(squares / m)
        mean_sum[c] = fraction * mean_sum[c] + mean[c]
        variance_sum[c] = fraction * variance_sum[c] + correction * variance
        std[c] = np.float32(math.sqrt(variance + eps))


@cuda.jit
def caffe_bn_global_statistics(mean, std, mean_sum, variance_sum, scale_factor, eps):
    """``f = 1/s`` (0 when ``s = 0``), ``mean = f·M``, ``std = sqrt(f·V + eps)``."""
    s = scale_factor[0]
    factor = _F0 if s == 0 else _F1 / s
    for c in range(cuda.grid(1), mean.size, cuda.gridsize(1)):
        mean[c] = factor * mean_sum[c]
        std[c] = np.float32(math.sqrt(factor * variance_sum[c] + eps))


@cuda.jit
def caffe_bn_normalize(x, y, mean, std):
    """``y = (x − mean[c]) / std[c]`` (``y`` may be ``x``)."""
    batch, channels, spatial = x.shape
    for t in range(cuda.grid(1), batch * channels * spatial, cuda.gridsize(1)):
        s = t % spatial
        c = (t // spatial) % channels
        b = t // (spatial * channels)
        y[b, c, s] = (x[b, c, s] - mean[c]) / std[c]


@cuda.jit
def caffe_bn_sums(y, dy, dots, totals):
    """Per channel ``Σ y·dy`` and ``Σ dy`` accumulated in double, rounded to float32."""
    batch, channels, spatial = y.shape
    for c in range(cuda.grid(1), channels, cuda.gridsize(1)):
        dot = 0.0
        total = 0.0
        for b in range(batch):
            for s in range(spatial):
                dot += np.float64(y[b, c, s] * dy[b, c, s])
                total += np.float64(dy[b, c, s])
        dots[c] = np.float32(dot)
        totals[c] = np.float32(total)


@cuda.jit
def caffe_bn_input_grad(y, dy, dx, std, dots, totals, inv_count):
    """``dx = (dy + (−1/m)·(y·Σ(dy·y) + Σdy)) / std`` (``dx`` may be ``dy``)."""
    batch, channels, spatial = y.shape
    for t in range(cuda.grid(1), batch * channels * spatial, cuda.gridsize(1)):
        s = t % spatial
        c = (t // spatial) % channels
        b = t // (spatial * channels)
        both = y[b, c, s] * dots[c] + totals[c]
        dx[b, c, s] = (dy[b, c, s] + inv_count * both) / std[c]


@cuda.jit
def divide_by_channel(dy, dx, std):
    """``dx = dy / std[c]`` (Caffe BatchNorm backward with global statistics)."""
    batch, channels, spatial = dy.shape
    for t in range(cuda.grid(1), batch * channels * spatial, cuda.gridsize(1)):
        s = t % spatial
        c = (t // spatial) % channels
        b = t // (spatial * channels)
        dx[b, c, s] = dy[b, c, s] / std[c]


# ---- Caffe Scale ----------------------------------------------------------------------------


@cuda.jit
def scale_forward(x, gamma, beta, has_beta, y):
    """``y = γ[c]·x (+ β[c])``."""
    batch, channels, spatial = x.shape
    for t in range(cuda.grid(1), batch * channels * spatial, cuda.gridsize(1)):
        s = t % spatial
        c = (t // spatial) % channels
        b = t // (spatial * channels)
        value = gamma[c] * x[b, c, s]
        y[b, c, s] = value + beta[c] if has_beta else value


@cuda.jit
def scale_param_grads(x, dy, gamma_diff, beta_diff, has_beta, overwrite_gamma, alpha, direct):
    """``β`` diff ``+= Σ dy`` (one double row sum per image, rounded), ``γ`` diff ``+= Σ dy·x``
    (Caffe's batch-1 overwrite quirk when ``overwrite_gamma``); with ``direct = False`` the
    sums are formed from zero and added times ``alpha`` (the CPU backend's scratch path)."""
    batch, channels, spatial = x.shape
    for c in range(cuda.grid(1), channels, cuda.gridsize(1)):
        if has_beta:
            beta_acc = beta_diff[c] if direct else _F0
            for b in range(batch):
                row = 0.0
                for s in range(spatial):
                    row += np.float64(dy[b, c, s])
                beta_acc = beta_acc + np.float32(row)
            if direct:
                beta_diff[c] = beta_acc
            else:
                beta_diff[c] = beta_diff[c] + alpha * beta_acc
        over_images = 0.0
        for b in range(batch):
            row = 0.0
            for s in range(spatial):
                row += np.float64(dy[b, c, s] * x[b, c, s])
            over_images += np.float64(np.float32(row))
        gamma_sum = np.float32(over_images)
        if direct:
            gamma_diff[c] = gamma_sum if overwrite_gamma else gamma_diff[c] + gamma_sum
        else:
            gamma_diff[c] = gamma_diff[c] + alpha * gamma_sum


@cuda.jit
def scale_input_grad(dy, gamma, dx):
    """``dx = γ[c]·dy``."""
    batch, channels, spatial = dy.shape
    for t in range(cuda.grid(1), batch * channels * spatial, cuda.gridsize(1)):
        s = t % spatial
        c = (t // spatial) % channels
        b = t // (spatial * channels)
        dx[b, c, s] = gamma[c] * dy[b, c, s]
