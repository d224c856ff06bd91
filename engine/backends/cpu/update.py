"""Fused parameter-update kernels: one pass over the flat parameter buffer per update.

Every update rule of :mod:`engine.update.rules` runs through :func:`fused_update`: it walks the
segments (one per learnable blob) and, inside each, the elements, applying the rule's
per-element step with the segment's own rate and decay, and accumulating per-segment squared
norms of the applied step and of the weights in the same pass. The pass runs in parallel over
fixed-size blocks of each segment (:data:`BLOCK`); the blocks' partial norms are added in block
order, so nothing depends on the thread count.

Float32 fidelity: every operation is one float32 operation rounded on its own, in the order
the framework's CPU code performs it (``y + (a·x)`` is two roundings, never a fused
multiply-add). These kernels are therefore compiled **without** ``fastmath`` (which would allow
LLVM to contract into FMA and to re-associate). All scalars arrive as float32 so that no
operation is silently promoted to float64.

Judgment (Caffe, where its result depends on the BLAS/libm it was linked with; checked
against ``sgd_solver.cpp`` and the other solvers, ``math_functions.cpp`` and
``mkl_alternate.hpp``): ``caffe_cpu_axpby`` is ``sscal`` then ``saxpy``, taken as two roundings
(OpenBLAS's FMA kernels fuse ``saxpy``; a GPU build's ``SGDUpdate`` is contracted to FMA by
nvcc); ``caffe_powx(g, 2)`` (glibc ``powf``) is taken as ``g·g`` and ``caffe_powx(h, .5)`` as
``sqrt(h)`` (they agree except, possibly, on exact rounding ties of ``g·g``); the clip norm's
``cblas_sdot`` is a float64 sum rounded per blob (:func:`segment_sumsq`), not BLAS's float
partial sums.

The per-element steps are plain Python functions (``*_element``) compiled here with
``njit(inline="always")``; a CUDA backend can compile the same functions as device functions.

Rule codes (``RULE_*``) and coefficient slots (``K_*``, see :func:`pack_coefficients`) are the
kernel's calling convention; :mod:`engine.update.rules` builds them from a ``SolverSpec``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from dnupdate.engine.backends.cpu.reduce import LANES, block_table, lanes_total

F32 = np.float32

# ---- rule codes ------------------------------------------------------------------------------
RULE_DARKNET_SGD = 0
RULE_DARKNET_ADAM = 1
RULE_CAFFE_SGD = 2
RULE_CAFFE_NESTEROV = 3
RULE_CAFFE_ADAGRAD = 4
RULE_CAFFE_RMSPROP = 5
RULE_CAFFE_ADADELTA = 6
RULE_CAFFE_ADAM = 7
RULE_CAFFE_SGD_LR_OUTSIDE = 8
RULE_DARKNET_ADAMW = 9  # dnupdate extension: torch AdamW on darknet's summed, negated gradient
RULE_CAFFE_ADAMW = 10  # torch.optim.AdamW on Caffe's (clipped, normalised) mean gradient

# ---- coefficient slots -----------------------------------------------------------------------
K_MOMENTUM = 0  # darknet/Caffe momentum; AdaDelta rho; RMSProp rms_decay; Adam beta1
K_ONE_MINUS_MOMENTUM = 1  # float32(1 - K_MOMENTUM)
K_BETA2 = 2  # Adam beta2
K_ONE_MINUS_BETA2 = 3
K_EPS = 4  # darknet Adam eps / Caffe delta
K_CORRECTION1 = 5  # darknet Adam: float32(1 - B1^t)
K_CORRECTION2 = 6  # darknet Adam: float32(1 - B2^t)
K_CLIP_SCALE = 7  # Caffe ClipGradients factor (used when K_CLIP_ON != 0)
K_CLIP_ON = 8
K_NORM_SCALE = 9  # Caffe Normalize factor float32(1/iter_size) (used when K_NORM_ON != 0)
K_NORM_ON = 10
K_L1 = 11  # Caffe regularization: 0 = L2, 1 = L1
K_ONE_PLUS_MOMENTUM = 12  # Caffe Nesterov: float32(1 + momentum)
K_BATCH = 13  # darknet AdamW: float32(B), the divisor turning the summed gradient into a mean
N_COEFFICIENTS = 14

_SLOTS = {
    "momentum": K_MOMENTUM,
    "one_minus_momentum": K_ONE_MINUS_MOMENTUM,
    "beta2": K_BETA2,
    "one_minus_beta2": K_ONE_MINUS_BETA2,
    "eps": K_EPS,
    "correction1": K_CORRECTION1,
    "correction2": K_CORRECTION2,
    "clip_scale": K_CLIP_SCALE,
    "clip_on": K_CLIP_ON,
    "norm_scale": K_NORM_SCALE,
    "norm_on": K_NORM_ON,
    "l1": K_L1,
    "one_plus_momentum": K_ONE_PLUS_MOMENTUM,
    "batch": K_BATCH,
}


def pack_coefficients(**named: float) -> np.ndarray:
    """The float32 coefficient vector :func:`fused_update` reads, from named slots
    (``momentum=…, eps=…``; see the ``K_*`` constants). Unnamed slots are 0 (off)."""
    coef = np.zeros(N_COEFFICIENTS, dtype=F32)
    for name, value in named.items():
        if name not in _SLOTS:
            raise KeyError(f"unknown update coefficient {name!r}; known: {sorted(_SLOTS)}")
        coef[_SLOTS[name]] = F32(value)
    return coef


# ---- per-element steps (plain Python, compiled below) ----------------------------------------


def darknet_sgd_element(w, u, alpha, delta, momentum):
    """darknet CPU SGD on one element (``update_convolutional_layer``/``_connected_layer``).

    ``u`` is the ``*_updates`` buffer (Σ of negative gradients plus the carried ``m·U``):
    ``u ← u + δ·w`` (only when δ ≠ 0: darknet never calls the decay axpy for biases and
    scales), ``w ← w + α·u``, ``u ← m·u``. Returns ``(w, u)``.
    """
    if delta != 0:
        u = u + delta * w
    w = w + alpha * u
    u = momentum * u
    return w, u


def darknet_adam_element(w, d, m, v, rate, delta, coef):
    """darknet GPU Adam (``adam_update_gpu`` + ``adam_kernel``) on one element.

    ``m ← B1·m; v ← B2·v; d ← d + δ·w; m ← m + (1−B1)·d; v ← v + (1−B2)·d²;
    w ← w + rate·(m/(1−B1^t)) / (sqrt(v/(1−B2^t)) + eps)``; then ``d ← 0``.
    darknet quirk: the decay axpy runs for every blob, biases and scales included, and even
    when δ = 0. Returns ``(w, m, v)``.
    """
    m = coef[K_MOMENTUM] * m
    v = coef[K_BETA2] * v
    d = d + delta * w
    m = m + coef[K_ONE_MINUS_MOMENTUM] * d
    d = d * d
    v = v + coef[K_ONE_MINUS_BETA2] * d
    mhat = m / coef[K_CORRECTION1]
    vhat = v / coef[K_CORRECTION2]
    w = w + (rate * mhat) / (np.sqrt(vhat) + coef[K_EPS])
    return w, m, v


def caffe_prepared_gradient(g, w, decay, coef):
    """Caffe's stages before ``ComputeUpdateValue`` on one element, in Caffe's order:
    ``ClipGradients`` (``g·s`` when it fired), ``Normalize`` (``g·float32(1/iter_size)`` when
    iter_size > 1), ``Regularize`` (only when local_decay ≠ 0: L2 ``g + λ·w``, L1
    ``g + λ·sign(w)`` with sign(0) = 0)."""
    if coef[K_CLIP_ON] != 0:
        g = g * coef[K_CLIP_SCALE]
    if coef[K_NORM_ON] != 0:
        g = g * coef[K_NORM_SCALE]
    if decay != 0:
        if coef[K_L1] != 0:
            sign = F32(0.0)
            if w > 0:
                sign = F32(1.0)
            elif w < 0:
                sign = F32(-1.0)
            g = g + decay * sign
        else:
            g = g + decay * w
    return g


def caffe_sgd_element(g, h, rate, coef):
    """Caffe SGD: ``h ← m·h; h ← h + rate·g`` (``caffe_cpu_axpby``), step = h. Returns
    ``(step, h)``."""
    h = coef[K_MOMENTUM] * h
    h = h + rate * g
    return h, h


def caffe_sgd_lr_outside_element(g, h, rate, coef):
    """Caffe-convention gradients with the lr OUTSIDE the history (PyTorch form):
    ``h ← m·h + g``; step = ``rate·h``. Returns ``(step, h)``."""
    h = coef[K_MOMENTUM] * h
    h = h + g
    return rate * h, h


def caffe_nesterov_element(g, h, rate, coef):
    """Caffe Nesterov: ``h_prev ← h; h ← m·h + rate·g;
    step ← (−m)·h_prev + (1+m)·h`` (axpby into the update buffer). Returns ``(step, h)``."""
    m = coef[K_MOMENTUM]
    h_prev = h
    h = m * h
    h = h + rate * g
    step = (-m) * h_prev
    step = step + coef[K_ONE_PLUS_MOMENTUM] * h
    return step, h


def caffe_adagrad_element(g, h, rate, coef):
    """Caffe AdaGrad: ``h ← g² + h; step ← 0·g + rate·(g / (sqrt(h) + δ))``.
    Returns ``(step, h)``."""
    gg = g * g
    h = gg + h
    q = g / (np.sqrt(h) + coef[K_EPS])
    step = F32(0.0) * g
    step = step + rate * q
    return step, h


def caffe_rmsprop_element(g, h, rate, coef):
    """Caffe RMSProp: ``h ← d·h + (1−d)·g²; step ← 0·g + rate·(g / (sqrt(h) + δ))``.
    Returns ``(step, h)``."""
    gg = g * g
    h = coef[K_MOMENTUM] * h
    h = h + coef[K_ONE_MINUS_MOMENTUM] * gg
    q = g / (np.sqrt(h) + coef[K_EPS])
    step = F32(0.0) * g
    step = step + rate * q
    return step, h


def caffe_adadelta_element(g, h, h2, rate, coef):
    """Caffe AdaDelta: ``h ← ρ·h + (1−ρ)·g²; dx ← g·sqrt((δ + h2)/(δ + h));
    h2 ← ρ·h2 + (1−ρ)·dx²; step ← rate·dx``. Returns ``(step, h, h2)``."""
    rho = coef[K_MOMENTUM]
    one_minus_rho = coef[K_ONE_MINUS_MOMENTUM]
    delta = coef[K_EPS]
    h = rho * h
    h = h + one_minus_rho * (g * g)
    ratio = (delta + h2) / (delta + h)
    dx = g * np.sqrt(ratio)
    h2 = rho * h2
    h2 = h2 + one_minus_rho * (dx * dx)
    return rate * dx, h, h2


def caffe_adam_element(g, m, v, rate_corrected, coef):
    """Caffe Adam: ``m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
    step ← (rate·correction)·(m / (sqrt(v) + ε̂))``. Returns ``(step, m, v)``."""
    m = coef[K_MOMENTUM] * m
    m = m + coef[K_ONE_MINUS_MOMENTUM] * g
    v = coef[K_BETA2] * v
    v = v + coef[K_ONE_MINUS_BETA2] * (g * g)
    q = m / (np.sqrt(v) + coef[K_EPS])
    return rate_corrected * q, m, v


def adamw_element(w, g, m, v, neg_step_size, decay_factor, coef):
    """``torch.optim.AdamW``'s single-tensor step (``maximize=False``, ``amsgrad=False``) on one
    element, each tensor operation rounded to float32 on its own. Returns ``(w, m, v)``.

    * ``param.mul_(1 − lr·λ)``: ``w ← w·decay_factor`` (``decay_factor = f32(1 − lr·λ)``,
      the product taken in double as Python does);
    * ``exp_avg.lerp_(g, 1 − β1)``: torch's lerp formula, ``m + w·(g − m)`` for a weight
      ``w = f32(1 − β1)`` under 0.5, else ``g − (g − m)·(1 − w)`` (torch quirk: not the
      textbook ``β1·m + (1 − β1)·g``; its vectorised CPU kernel fuses this multiply-add);
    * ``exp_avg_sq.mul_(β2).addcmul_(g, g, value=1 − β2)``: ``v ← β2·v; v ← v + ((1 − β2)·g)·g``;
    * ``denom = (exp_avg_sq.sqrt() / sqrt(1 − β2^t)).add_(ε)`` (``K_CORRECTION2`` holds
      ``f32(sqrt(1 − β2^t))``): ε is added to the bias-CORRECTED root, unlike Caffe's Adam;
    * ``param.addcdiv_(m, denom, value=−lr/(1 − β1^t))``: ``w ← w + (neg_step_size·m)/denom``.
    """
    w = w * decay_factor
    weight = coef[K_ONE_MINUS_MOMENTUM]
    m = m + weight * (g - m) if abs(weight) < 0.5 else g - (g - m) * (F32(1.0) - weight)
    v = v * coef[K_BETA2]
    v = v + (coef[K_ONE_MINUS_BETA2] * g) * g
    denom = np.sqrt(v) / coef[K_CORRECTION2]
    denom = denom + coef[K_EPS]
    w = w + (neg_step_size * m) / denom
    return w, m, v


_inline = njit(inline="always")
_darknet_sgd = _inline(darknet_sgd_element)
_darknet_adam = _inline(darknet_adam_element)
_caffe_prepare = _inline(caffe_prepared_gradient)
_caffe_sgd = _inline(caffe_sgd_element)
_caffe_sgd_lr_outside = _inline(caffe_sgd_lr_outside_element)
_caffe_nesterov = _inline(caffe_nesterov_element)
_caffe_adagrad = _inline(caffe_adagrad_element)
_caffe_rmsprop = _inline(caffe_rmsprop_element)
_caffe_adadelta = _inline(caffe_adadelta_element)
_caffe_adam = _inline(caffe_adam_element)
_adamw = _inline(adamw_element)


# ---- the fused pass --------------------------------------------------------------------------


@njit(inline="always")
def _as_tuple(coef):
    """The coefficients as a tuple of scalars: values in registers, so the compiler can hoist
    them out of the element loop (array loads could alias the buffers being written)."""
    return (
        coef[0], coef[1], coef[2], coef[3], coef[4], coef[5], coef[6],
        coef[7], coef[8], coef[9], coef[10], coef[11], coef[12], coef[13],
    )  # fmt: skip


@njit(inline="always")
def _caffe_step(rule, g, h, h2, rate, coef):
    """Dispatch one Caffe ``ComputeUpdateValue`` element; returns ``(step, h, h2)``."""
    if rule == RULE_CAFFE_SGD:
        step, h = _caffe_sgd(g, h, rate, coef)
    elif rule == RULE_CAFFE_SGD_LR_OUTSIDE:
        step, h = _caffe_sgd_lr_outside(g, h, rate, coef)
    elif rule == RULE_CAFFE_NESTEROV:
        step, h = _caffe_nesterov(g, h, rate, coef)
    elif rule == RULE_CAFFE_ADAGRAD:
        step, h = _caffe_adagrad(g, h, rate, coef)
    elif rule == RULE_CAFFE_RMSPROP:
        step, h = _caffe_rmsprop(g, h, rate, coef)
    elif rule == RULE_CAFFE_ADADELTA:
        step, h, h2 = _caffe_adadelta(g, h, h2, rate, coef)
    else:
        step, h, h2 = _caffe_adam(g, h, h2, rate, coef)
    return step, h, h2


#: elements per parallel iteration of :func:`fused_update` (64 KiB of each float32 buffer): a
#: segment is cut into blocks of this size from its own start, so the blocks, and the norms'
#: partial sums, do not depend on the thread count
BLOCK = 1 << 14


@njit(cache=True)
def _add_blocks(first, partial, step_sq, weight_sq, grad_sq):
    """Each segment's norms: its blocks' partial sums added in block order (``grad_sq`` only
    where given: non-empty)."""
    for s in range(first.size - 1):
        step_acc = 0.0
        weight_acc = 0.0
        grad_acc = 0.0
        for j in range(first[s], first[s + 1]):
            step_acc += partial[j, 0]
            weight_acc += partial[j, 1]
            grad_acc += partial[j, 2]
        step_sq[s] = step_acc
        weight_sq[s] = weight_acc
        if grad_sq.size > 0:
            grad_sq[s] = grad_acc


# The norms' independent float64 accumulators are ``engine.backends.cpu.reduce``'s ``LANES``
# (element ``i`` of a block adds to lane ``(i − start) mod LANES``; lanes added in order): the
# block goes by rows of LANES consecutive elements, and the loop over a row's lanes is a plain
# element-wise loop over slices (indices from 0, no wrap-around select) that LLVM vectorises,
# the lanes' sums being independent. 32 lanes: 1.86M weights with the carry on one core
# 4.6 → 1.8 ms (8 unrolled lanes stayed scalar).


@njit(inline="always")
def _darknet_sgd_row(s_row, w_row, g_row, c_row, keep, rate, decay, momentum, sums):
    """:func:`darknet_sgd_element` on one row of consecutive elements (slices): ``w`` read
    from ``s_row`` (``w_row`` itself, or the master copy's row), the new weight written to
    ``w_row``; element ``lane`` adds ``(Δw)²``, ``w²`` and ``g²`` (``g = f32(carry − grads)``
    before the step, and ``carry ← grads`` after it, with ``keep``) in float64 to
    ``sums[0|1|2, lane]``."""
    step_sums, weight_sums, grad_sums = sums[0], sums[1], sums[2]
    for lane in range(w_row.size):
        g = g_row[lane]
        if keep:
            change = np.float64(c_row[lane] - g)  # the float32 difference, as the trainer's
            grad_sums[lane] += change * change
        w = s_row[lane]
        w_new, u = _darknet_sgd(w, g, rate, decay, momentum)
        g_row[lane] = u
        w_row[lane] = w_new
        if keep:
            c_row[lane] = u
        delta_w = np.float64(w_new) - np.float64(w)
        step_sums[lane] += delta_w * delta_w
        weight_sums[lane] += np.float64(w) * np.float64(w)


@njit(cache=True, nogil=True)
def _darknet_sgd_rows(params, grads, carry, start, stop, rate, decay, momentum, sums):
    """:func:`_darknet_sgd_row` over the rows of ``[start, stop)``, weights read and written
    in ``params`` (the same row passed twice, so the compiler sees one buffer: a second one
    overlapping it would fail the vectoriser's alias check and run scalar). A function of its
    own, compiled apart, so that its vector code can be checked
    (``tests/test_kernels_vectorised.py``): a branch between two row calls inside one loop
    once turned both scalar."""
    keep = carry.size > 0
    for base in range(start, stop, LANES):
        end = min(base + LANES, stop)
        c_row = carry[base:end] if keep else carry
        w_row = params[base:end]
        _darknet_sgd_row(w_row, w_row, grads[base:end], c_row, keep, rate, decay, momentum,
                         sums)  # fmt: skip


@njit(cache=True, nogil=True)
def _darknet_sgd_rows_from(source, params, grads, carry, start, stop, rate, decay, momentum,
                           sums):  # fmt: skip
    """:func:`_darknet_sgd_rows` with the weights read from ``source`` (the master copy)."""
    keep = carry.size > 0
    for base in range(start, stop, LANES):
        end = min(base + LANES, stop)
        c_row = carry[base:end] if keep else carry
        _darknet_sgd_row(source[base:end], params[base:end], grads[base:end], c_row, keep,
                         rate, decay, momentum, sums)  # fmt: skip


@njit(inline="always")
def _darknet_sgd_span(params, grads, start, stop, rate, decay, momentum, carry, source):
    """darknet SGD over ``[start, stop)`` with :func:`_darknet_block`'s norms, element ``i``
    summed into lane ``(i − start) mod LANES``: full rows of :data:`LANES` elements, then the
    tail as a shorter row (lanes ``0…``); the same float32 operations per element and the same
    float64 operations in the same order per lane as one element at a time. ``source`` empty:
    the weights are read from ``params``."""
    sums = np.zeros((3, LANES))
    if source.size == 0:
        _darknet_sgd_rows(params, grads, carry, start, stop, rate, decay, momentum, sums)
    else:
        _darknet_sgd_rows_from(source, params, grads, carry, start, stop, rate, decay, momentum,
                               sums)  # fmt: skip
    return lanes_total(sums[0]), lanes_total(sums[1]), lanes_total(sums[2])


@njit(cache=True)
def _darknet_block(
    rule, params, grads, state_a, state_b, start, stop, rate, decay, coef, carry, source
):  # fmt: skip
    """A darknet rule's step on ``[start, stop)`` (one segment's rate and decay); returns the
    block's ``(Σ(Δw)², Σw², Σg²)``, each over :data:`LANES` interleaved float64 accumulators
    added in lane order. With a ``carry`` (non-empty): the update's gradient
    ``g = f32(carry − grads)`` (the passes added it onto the carried buffer) is summed as
    ``Σ f64(g)²`` before the step, and ``carry ← grads`` after it (the snapshot the next
    update's gradient is measured from): the two passes the trainer would otherwise make over
    these buffers (``segment_sum_squares_change``, then a copy)."""
    k = _as_tuple(coef)
    momentum = k[K_MOMENTUM]
    if rule == RULE_DARKNET_SGD:  # the common rule, in vectorisable groups
        return _darknet_sgd_span(params, grads, start, stop, rate, decay, momentum, carry,
                                 source)  # fmt: skip
    step_lanes = np.zeros(LANES)
    weight_lanes = np.zeros(LANES)
    grad_lanes = np.zeros(LANES)
    keep = carry.size > 0
    weights = params if source.size == 0 else source
    for i in range(start, stop):
        lane = (i - start) & (LANES - 1)
        if keep:
            change = np.float64(carry[i] - grads[i])  # the float32 difference, as the trainer's
            grad_lanes[lane] += change * change
        w = weights[i]
        if rule == RULE_DARKNET_ADAMW:
            # dnupdate's darknet AdamW extension: grads hold darknet's Σ over the B images of
            # the NEGATIVE gradient, so torch's mean gradient is g = (−d)/B (one division)
            g = (-grads[i]) / k[K_BATCH]
            w_new, m, v = _adamw(w, g, state_a[i], state_b[i], rate, decay, k)
            state_a[i] = m
            state_b[i] = v
            grads[i] = F32(0.0)
        else:
            w_new, m, v = _darknet_adam(w, grads[i], state_a[i], state_b[i], rate, decay, k)
            state_a[i] = m
            state_b[i] = v
            grads[i] = F32(0.0)
        params[i] = w_new
        if keep:
            carry[i] = grads[i]
        delta_w = np.float64(w_new) - np.float64(w)
        step_lanes[lane] += delta_w * delta_w
        weight_lanes[lane] += np.float64(w) * np.float64(w)
    return lanes_total(step_lanes), lanes_total(weight_lanes), lanes_total(grad_lanes)


@njit(inline="always")
def _caffe_sgd_row(s_row, w_row, g_row, h_row, grad_on, rate, decay, k, sums, clear):
    """Caffe SGD (``ClipGradients``, ``Normalize``, ``Regularize``, ``ComputeUpdateValue``,
    ``w ← w − diff``) on one row of consecutive elements (slices), ``w`` read from ``s_row``
    and written to ``w_row`` (as the darknet rows); element ``lane`` adds ``(Δw)²``, ``w²``
    and the diff's own ``g²`` (as the buffer holds it, before the step) in float64 to
    ``sums[0|1|2, lane]``. The diff keeps the step, or 0 with ``clear``."""
    step_sums, weight_sums, grad_sums = sums[0], sums[1], sums[2]
    for lane in range(w_row.size):
        w = s_row[lane]
        diff = np.float64(g_row[lane])
        grad_sums[lane] += diff * diff
        g = g_row[lane] if grad_on else F32(0.0)
        g = _caffe_prepare(g, w, decay, k)
        step, h = _caffe_sgd(g, h_row[lane], rate, k)
        h_row[lane] = h
        g_row[lane] = F32(0.0) if clear else step
        w_new = w - step
        w_row[lane] = w_new
        delta_w = np.float64(w_new) - np.float64(w)
        step_sums[lane] += delta_w * delta_w
        weight_sums[lane] += np.float64(w) * np.float64(w)


@njit(inline="always")
def _caffe_sgd_rows(params, grads, history, start, stop, rate, decay, grad_on, k, sums, clear):
    """:func:`_caffe_sgd_row` over the rows of ``[start, stop)`` in ``params`` (as
    :func:`_darknet_sgd_rows`: one buffer). Inlined: compiled apart it ran 2.8× slower (LeNet's
    431K weights, one core: 0.38 → 1.06 ms), darknet's rows did not."""
    for base in range(start, stop, LANES):
        end = min(base + LANES, stop)
        w_row = params[base:end]
        _caffe_sgd_row(w_row, w_row, grads[base:end], history[base:end], grad_on, rate, decay,
                       k, sums, clear)  # fmt: skip


@njit(inline="always")
def _caffe_sgd_rows_from(source, params, grads, history, start, stop, rate, decay, grad_on, k,
                         sums, clear):  # fmt: skip
    """:func:`_caffe_sgd_rows` with the weights read from ``source`` (the master copy)."""
    for base in range(start, stop, LANES):
        end = min(base + LANES, stop)
        _caffe_sgd_row(source[base:end], params[base:end], grads[base:end], history[base:end],
                       grad_on, rate, decay, k, sums, clear)  # fmt: skip


@njit(cache=True)
def _caffe_block(
    rule, params, grads, state_a, state_b, start, stop, rate, decay, grad_on, coef, source, clear
):  # fmt: skip
    """A Caffe rule's step on ``[start, stop)``, as :func:`_darknet_block` (norms over
    :data:`LANES` lanes; Caffe SGD in vectorised rows); returns the block's ``(Σ(Δw)², Σw²,
    Σg²)``, ``g`` the diff as the buffer holds it before the step (Caffe's summed gradient,
    before clipping and normalising: the trainer's gradient norm). AdamW: Caffe's clip and
    normalise stages, no ``Regularize`` (``decay`` is AdamW's ``f32(1 − lr·λ)``). ``clear``:
    the diff left 0 instead of the step (the next iteration's ``ClearParamDiffs``)."""
    k = _as_tuple(coef)
    sums = np.zeros((3, LANES))
    own = source.size == 0
    if rule == RULE_CAFFE_SGD:  # the common rule, in vectorisable rows
        if own:
            _caffe_sgd_rows(params, grads, state_a, start, stop, rate, decay, grad_on, k, sums,
                            clear)  # fmt: skip
        else:
            _caffe_sgd_rows_from(source, params, grads, state_a, start, stop, rate, decay,
                                 grad_on, k, sums, clear)  # fmt: skip
        return lanes_total(sums[0]), lanes_total(sums[1]), lanes_total(sums[2])
    weights = params if own else source
    for i in range(start, stop):
        lane = (i - start) & (LANES - 1)
        w = weights[i]
        diff = np.float64(grads[i])
        sums[2, lane] += diff * diff
        g = grads[i] if grad_on else F32(0.0)
        if rule == RULE_CAFFE_ADAMW:
            g = _caffe_prepare(g, w, F32(0.0), k)
            w_new, m, v = _adamw(w, g, state_a[i], state_b[i], rate, decay, k)
            state_a[i] = m
            state_b[i] = v
            grads[i] = F32(0.0) if clear else w - w_new
        else:
            g = _caffe_prepare(g, w, decay, k)
            h2 = state_b[i] if state_b.size > 0 else F32(0.0)
            step, h, h2 = _caffe_step(rule, g, state_a[i], h2, rate, k)
            state_a[i] = h
            if state_b.size > 0:
                state_b[i] = h2
            grads[i] = F32(0.0) if clear else step
            w_new = w - step
        params[i] = w_new
        delta_w = np.float64(w_new) - np.float64(w)
        sums[0, lane] += delta_w * delta_w
        sums[1, lane] += np.float64(w) * np.float64(w)
    return lanes_total(sums[0]), lanes_total(sums[1]), lanes_total(sums[2])


@njit(parallel=True, cache=True)
def _darknet_update(
    rule, params, grads, state_a, state_b, owner, starts, stops, seg_lr, seg_decay, coef, partial,
    carry, source,
):  # fmt: skip
    for j in prange(owner.size):
        s = owner[j]
        step_acc, weight_acc, grad_acc = _darknet_block(rule, params, grads, state_a, state_b,
                                                        starts[j], stops[j], seg_lr[s],
                                                        seg_decay[s], coef, carry,
                                                        source)  # fmt: skip
        partial[j, 0] = step_acc
        partial[j, 1] = weight_acc
        partial[j, 2] = grad_acc


@njit(parallel=True, cache=True)
def _caffe_update(
    rule, params, grads, state_a, state_b, owner, starts, stops, seg_lr, seg_decay, seg_grad_on,
    coef, partial, source, clear,
):  # fmt: skip
    for j in prange(owner.size):
        s = owner[j]
        step_acc, weight_acc, grad_acc = _caffe_block(rule, params, grads, state_a, state_b,
                                                      starts[j], stops[j], seg_lr[s],
                                                      seg_decay[s], seg_grad_on[s] != 0, coef,
                                                      source, clear)  # fmt: skip
        partial[j, 0] = step_acc
        partial[j, 1] = weight_acc
        partial[j, 2] = grad_acc


def fused_update(
    rule: int,
    params: np.ndarray,
    grads: np.ndarray,
    state_a: np.ndarray,
    state_b: np.ndarray,
    seg_offsets: np.ndarray,
    seg_sizes: np.ndarray,
    seg_lr: np.ndarray,
    seg_decay: np.ndarray,
    seg_grad_on: np.ndarray,
    coef: np.ndarray,
    step_sq: np.ndarray,
    weight_sq: np.ndarray,
    carry: np.ndarray | None = None,
    grad_sq: np.ndarray | None = None,
    source: np.ndarray | None = None,
    clear_grads: bool = False,
) -> None:
    """Apply one update of ``rule`` to every segment of the flat buffers, in place.

    ``params``/``grads``/``state_a``/``state_b``: float32, same layout (``state_*`` may be
    length-0 arrays for rules without them). Segment ``s`` covers
    ``[seg_offsets[s], seg_offsets[s] + seg_sizes[s])`` with float32 ``seg_lr[s]`` (darknet
    SGD ``α = η/B``; darknet Adam ``η``; Caffe ``local_rate``, times the Adam correction) and
    ``seg_decay[s]`` (darknet ``δ = −decay·B·decay_mult``; Caffe ``local_decay``; AdamW:
    ``seg_lr = f32(−lr·lr_mult/(1 − β1^t))`` and ``seg_decay = f32(1 − lr·lr_mult·λ·decay_mult)``);
    ``seg_grad_on[s] = 0`` makes a Caffe segment's gradient read as 0 (Caffe ``lr_mult: 0``).

    After the call: darknet SGD leaves ``m·U`` in ``grads`` (darknet quirk: the gradient buffer
    carries the momentum); darknet Adam/AdamW zero ``grads``; Caffe leaves the applied step in
    ``grads`` (``w ← w − diff``, as ``Net::Update``). ``step_sq[s]``/``weight_sq[s]`` receive
    Σ(Δw)² and Σw² (weights before the update), accumulated in float64.

    Parallel over blocks of :data:`BLOCK` elements inside the segments (elements are
    independent, so every value written is the serial loop's). Each block sums its squares
    over :data:`LANES` interleaved accumulators (element ``i`` into lane ``(i − start) mod
    LANES``), added in lane order; a segment's blocks are then added in block order: the same
    float64 sum re-associated (last-bit differences from one sequential sum, the same whatever
    the thread count).

    ``grad_sq`` without a ``carry`` (Caffe rules only): ``grad_sq[s] = Σ f64(g)²`` of the diff as
    ``grads`` holds it before the update (Caffe's summed gradient, before ``ClipGradients`` and
    ``Normalize``; blocks and lanes as the step's norms): the gradient norm the trainer would
    take in a pass of its own (``reduce.segment_sum_squares``, whose blocks are other: the same
    float64 sum re-associated).

    ``carry`` (darknet rules only, with ``grad_sq``): the gradient buffer as it was before this
    update's passes (darknet quirk: nothing zeroes it). The same pass then gives
    ``grad_sq[s] = Σ f64(f32(carry − grads))²`` (the squared norm of this update's summed
    gradient, blocks as the step's norms) and leaves ``carry`` equal to ``grads`` after the
    update: the snapshot and the gradient norm the trainer would take in two more passes. The
    updated values are the same bits either way.

    ``source`` (same shape as ``params``): the weights the rule reads, ``w = source[i]``, while
    the result goes to ``params[i]`` (``Σw²`` is of ``source``): the master copy of simulated
    mixed precision, read where it is kept while ``params`` holds the rounded working copy
    (``engine.training.mixed``), so that nothing copies it back first. None: ``params``.

    ``clear_grads`` (Caffe rules only): the segments' diffs are left 0 instead of the applied
    step: the next iteration's ``Net::ClearParamDiffs`` done in this pass, which writes the
    diff anyway (the trainer then skips its own zeroing pass where the segments cover the
    whole buffer). The updated weights and state are the same bits either way.

    The darknet and the Caffe rules are two kernels: a parallel kernel's compile time grows
    with its body (Numba optimises the body once more for each parallel wrapper layer), and a
    run compiles only its own family.
    """
    first, owner, starts, stops = block_table(seg_offsets, seg_sizes, BLOCK)
    partial = np.zeros((owner.size, 3), dtype=np.float64)
    blocks = (owner, starts, stops)
    darknet = rule in (RULE_DARKNET_SGD, RULE_DARKNET_ADAM, RULE_DARKNET_ADAMW)
    if carry is not None and (not darknet or grad_sq is None or carry.shape != grads.shape):
        raise ValueError("fused_update: carry needs a darknet rule, grad_sq and grads' shape")
    if grad_sq is not None and darknet and carry is None:
        raise ValueError("fused_update: a darknet rule measures grad_sq against a carry")
    if source is not None and source.shape != params.shape:
        raise ValueError("fused_update: source must have params' shape")
    if clear_grads and darknet:
        raise ValueError("fused_update: clear_grads is for Caffe rules (darknet's carry)")
    source = _NO_CARRY if source is None else source  # empty: read params
    if darknet:
        keep = _NO_CARRY if carry is None else carry
        _darknet_update(rule, params, grads, state_a, state_b, *blocks, seg_lr, seg_decay, coef,
                        partial, keep, source)  # fmt: skip
    else:
        _caffe_update(rule, params, grads, state_a, state_b, *blocks, seg_lr, seg_decay,
                      seg_grad_on, coef, partial, source, clear_grads)  # fmt: skip
    _add_blocks(first, partial, step_sq, weight_sq, _NO_SUMS if grad_sq is None else grad_sq)


_NO_CARRY = np.empty(0, dtype=np.float32)
_NO_SUMS = np.empty(0, dtype=np.float64)


@njit(cache=True)
def segment_sumsq(values, seg_offsets, seg_sizes, seg_on, out):
    """``out[s] = Σ values[i]²`` over segment ``s`` (float64 accumulation, in index order);
    segments with ``seg_on[s] = 0`` give 0 (Caffe: an ``lr_mult: 0`` blob's diff stays 0)."""
    for s in range(seg_offsets.size):
        acc = 0.0
        if seg_on[s] != 0:
            start = seg_offsets[s]
            for i in range(start, start + seg_sizes[s]):
                x = np.float64(values[i])
                acc += x * x
        out[s] = acc
