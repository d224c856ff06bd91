"""Plain NumPy transcriptions of darknet's and Caffe's update code, line by line.

Slow and obvious on purpose: one blob at a time, the frameworks' own helper functions
(darknet ``axpy_cpu``/``scal_cpu``; Caffe ``caffe_cpu_axpby``, ``caffe_powx``, ...) written
out with float32 NumPy operations, each rounded on its own (no FMA).

Sources (see ``../shared/spec/darknet.md`` §6, ``caffe.md`` §5):

* darknet ``convolutional_layer.c:update_convolutional_layer`` and
  ``connected_layer.c:update_connected_layer`` (CPU SGD); ``blas_kernels.cu:adam_update_gpu``
  and ``adam_kernel`` (GPU Adam).
* Caffe ``sgd_solver.cpp`` (``ApplyUpdate``, ``ClipGradients``, ``Normalize``,
  ``Regularize``, ``ComputeUpdateValue``), ``nesterov_solver.cpp``, ``adagrad_solver.cpp``,
  ``rmsprop_solver.cpp``, ``adadelta_solver.cpp``, ``adam_solver.cpp``; the helpers in
  ``math_functions.cpp`` and ``mkl_alternate.hpp`` (``cblas_saxpby`` = ``sscal`` then
  ``saxpy``; ``vsPowx`` = ``pow`` element-wise).

Documented choices where the sources leave a rounding detail to the BLAS/libm in use:
``cblas_sdot`` (the clip norm) is taken as a float64 dot rounded to float32; ``saxpy`` as
``y + (a·x)`` with two roundings (OpenBLAS on FMA hardware may fuse them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

f32 = np.float32


@dataclass
class RefBlob:
    """One parameter blob: ``data``, ``diff`` (float32) and its multipliers."""

    data: np.ndarray
    diff: np.ndarray
    lr_mult: float = 1.0
    decay_mult: float = 1.0
    history: list[np.ndarray] = field(default_factory=list)


# ============================================================================================
# darknet (blas.c)
# ============================================================================================


def axpy_cpu(n: int, alpha, x: np.ndarray, y: np.ndarray) -> None:
    """``for i: Y[i] += ALPHA*X[i]`` (two float32 roundings; the build has no FMA)."""
    y[:n] = y[:n] + f32(alpha) * x[:n]


def scal_cpu(n: int, alpha, x: np.ndarray) -> None:
    """``for i: X[i] *= ALPHA``."""
    x[:n] = f32(alpha) * x[:n]


def mul_cpu(n: int, x: np.ndarray, y: np.ndarray) -> None:
    """``for i: Y[i] *= X[i]``."""
    y[:n] = y[:n] * x[:n]


def fill_cpu(n: int, alpha, x: np.ndarray) -> None:
    x[:n] = f32(alpha)


def darknet_sgd_update(blobs: list[RefBlob], learning_rate, momentum, decay, batch: int) -> None:
    """``update_convolutional_layer``/``update_connected_layer`` (CPU), one blob at a time.

    A blob with ``decay_mult == 0`` is a bias/scale (no decay axpy); otherwise a weight blob.
    ``lr_mult`` is the layer's ``learning_rate_scale``.
    """
    for blob in blobs:
        n = blob.data.size
        # float learning_rate = a.learning_rate*l.learning_rate_scale;
        lr = f32(f32(learning_rate) * f32(blob.lr_mult))
        m = f32(momentum)
        d = f32(decay)
        if blob.decay_mult != 0:
            # axpy_cpu(l.nweights, -decay*batch, l.weights, 1, l.weight_updates, 1);
            axpy_cpu(n, f32(f32(-d * f32(batch)) * f32(blob.decay_mult)), blob.data, blob.diff)
        # axpy_cpu(l.nweights, learning_rate/batch, l.weight_updates, 1, l.weights, 1);
        axpy_cpu(n, f32(lr / f32(batch)), blob.diff, blob.data)
        # scal_cpu(l.nweights, momentum, l.weight_updates, 1);
        scal_cpu(n, m, blob.diff)


def darknet_adam_update(
    blobs: list[RefBlob], learning_rate, decay, batch: int, b1, b2, eps, t: int
) -> None:
    """``update_*_layer_gpu`` with ``a.adam``: ``adam_update_gpu`` per blob (weights, biases
    and scales alike, so decay applies to every blob). ``blob.history = [m, v]``."""
    for blob in blobs:
        n = blob.data.size
        if not blob.history:
            blob.history = [np.zeros(n, f32), np.zeros(n, f32)]
        m, v = blob.history
        rate = f32(f32(learning_rate) * f32(blob.lr_mult))
        B1, B2 = f32(b1), f32(b2)
        scal_cpu(n, B1, m)  # scal_gpu(n, B1, m, 1);
        scal_cpu(n, B2, v)  # scal_gpu(n, B2, v, 1);
        axpy_cpu(n, f32(-f32(decay) * f32(batch)), blob.data, blob.diff)  # axpy(-decay*batch)
        axpy_cpu(n, f32(f32(1) - B1), blob.diff, m)  # axpy_gpu(n, (1-B1), d, 1, m, 1);
        mul_cpu(n, blob.diff, blob.diff)  # mul_gpu(n, d, 1, d, 1);
        axpy_cpu(n, f32(f32(1) - B2), blob.diff, v)  # axpy_gpu(n, (1-B2), d, 1, v, 1);
        # adam_kernel: mhat = m/(1.f - powf(B1, t)); vhat = v/(1.f - powf(B2, t));
        #              x = x + rate * mhat / (sqrtf(vhat) + eps);
        mhat = m / f32(f32(1) - np.power(B1, f32(t)))
        vhat = v / f32(f32(1) - np.power(B2, f32(t)))
        blob.data[:] = blob.data + (rate * mhat) / (np.sqrt(vhat) + f32(eps))
        fill_cpu(n, 0, blob.diff)  # fill_gpu(n, 0, d, 1);


# ============================================================================================
# Caffe (math_functions.cpp, mkl_alternate.hpp)
# ============================================================================================


def caffe_scal(alpha, x: np.ndarray) -> None:
    x[:] = f32(alpha) * x


def caffe_axpy(alpha, x: np.ndarray, y: np.ndarray) -> None:
    y[:] = y + f32(alpha) * x


def caffe_cpu_axpby(alpha, x: np.ndarray, beta, y: np.ndarray) -> None:
    """``cblas_saxpby`` of mkl_alternate.hpp: ``cblas_sscal(beta, Y)`` then ``saxpy``."""
    caffe_scal(beta, y)
    caffe_axpy(alpha, x, y)


def caffe_cpu_scale(alpha, x: np.ndarray, y: np.ndarray) -> None:
    """``caffe_copy(x → y)`` then ``cblas_sscal(alpha, y)``."""
    y[:] = x
    caffe_scal(alpha, y)


def caffe_powx(a: np.ndarray, b, y: np.ndarray) -> None:
    """``vsPowx``: ``y[i] = pow(a[i], b)`` (float pow)."""
    y[:] = np.power(a, f32(b))


def caffe_add(a: np.ndarray, b: np.ndarray, y: np.ndarray) -> None:
    y[:] = a + b


def caffe_mul(a: np.ndarray, b: np.ndarray, y: np.ndarray) -> None:
    y[:] = a * b


def caffe_div(a: np.ndarray, b: np.ndarray, y: np.ndarray) -> None:
    y[:] = a / b


def caffe_add_scalar(alpha, y: np.ndarray) -> None:
    y[:] = y + f32(alpha)


def caffe_set(alpha, y: np.ndarray) -> None:
    y[:] = f32(alpha)


def caffe_cpu_sign(x: np.ndarray, y: np.ndarray) -> None:
    """``caffe_sign``: ``(0 < x) - (x < 0)``."""
    y[:] = (x > 0).astype(f32) - (x < 0).astype(f32)


def caffe_cpu_dot(x: np.ndarray, y: np.ndarray) -> np.float32:
    """``cblas_sdot`` (taken as a float64 dot rounded to float32, see the module docstring)."""
    return f32(np.dot(x.astype(np.float64), y.astype(np.float64)))


@dataclass
class CaffeSolverParams:
    """The ``SolverParameter`` fields the update reads (Caffe names)."""

    type: str = "SGD"
    momentum: float = 0.0
    momentum2: float = 0.999
    weight_decay: float = 0.0
    regularization_type: str = "L2"
    iter_size: int = 1
    clip_gradients: float = -1.0
    delta: float = 1e-8
    rms_decay: float = 0.99


def caffe_apply_update(
    blobs: list[RefBlob], p: CaffeSolverParams, rate: float, iter_: int
) -> tuple[float | None, bool]:
    """``SGDSolver::ApplyUpdate`` then ``Net::Update``; returns (clip norm, clip fired).

    Blobs with ``lr_mult == 0`` must come with a zero diff (Caffe does not compute it).
    """
    rate = f32(rate)
    norm, fired = clip_gradients(blobs, p)
    n_hist = 2 if p.type in ("AdaDelta", "Adam") else 1
    for blob in blobs:
        if not blob.history:  # PreSolve: zero-filled history (and update_/temp_)
            blob.history = [np.zeros_like(blob.data) for _ in range(n_hist)]
    for param_id, blob in enumerate(blobs):
        normalize(blob, p)
        regularize(blob, p)
        compute_update_value(blob, p, rate, iter_, param_id)
    for blob in blobs:  # Net::Update -> Blob::Update: caffe_axpy(-1, diff, data)
        caffe_axpy(f32(-1), blob.diff, blob.data)
    return norm, fired


def clip_gradients(blobs: list[RefBlob], p: CaffeSolverParams) -> tuple[float | None, bool]:
    clip = f32(p.clip_gradients)
    if clip < 0:
        return None, False
    sumsq_diff = f32(0)
    for blob in blobs:
        sumsq_diff = f32(sumsq_diff + caffe_cpu_dot(blob.diff, blob.diff))
    l2norm_diff = np.sqrt(sumsq_diff)
    if l2norm_diff > clip:
        scale_factor = f32(clip / l2norm_diff)
        for blob in blobs:
            caffe_scal(scale_factor, blob.diff)  # scale_diff
        return float(l2norm_diff), True
    return float(l2norm_diff), False


def normalize(blob: RefBlob, p: CaffeSolverParams) -> None:
    if p.iter_size == 1:
        return
    accum_normalization = f32(f32(1.0) / f32(p.iter_size))
    caffe_scal(accum_normalization, blob.diff)


def regularize(blob: RefBlob, p: CaffeSolverParams) -> None:
    local_decay = f32(f32(p.weight_decay) * f32(blob.decay_mult))
    if local_decay:
        if p.regularization_type == "L2":
            caffe_axpy(local_decay, blob.data, blob.diff)
        elif p.regularization_type == "L1":
            temp = np.empty_like(blob.data)
            caffe_cpu_sign(blob.data, temp)
            caffe_axpy(local_decay, temp, blob.diff)
        else:
            raise ValueError(f"Unknown regularization type: {p.regularization_type}")


def compute_update_value(
    blob: RefBlob, p: CaffeSolverParams, rate, iter_: int, param_id: int
) -> None:
    local_rate = f32(rate * f32(blob.lr_mult))
    getattr(_Updates, p.type.lower())(blob, p, local_rate, iter_)


class _Updates:
    """``<Type>Solver::ComputeUpdateValue`` (CPU branch), one static method per solver."""

    @staticmethod
    def sgd(blob: RefBlob, p: CaffeSolverParams, local_rate, iter_: int) -> None:
        history = blob.history[0]
        momentum = f32(p.momentum)
        caffe_cpu_axpby(local_rate, blob.diff, momentum, history)
        blob.diff[:] = history  # caffe_copy

    @staticmethod
    def nesterov(blob: RefBlob, p: CaffeSolverParams, local_rate, iter_: int) -> None:
        history = blob.history[0]
        momentum = f32(p.momentum)
        update = history.copy()  # save history momentum for stepping back
        caffe_cpu_axpby(local_rate, blob.diff, momentum, history)  # update history
        # compute update: step back then over step
        caffe_cpu_axpby(f32(f32(1) + momentum), history, -momentum, update)
        blob.diff[:] = update

    @staticmethod
    def adagrad(blob: RefBlob, p: CaffeSolverParams, local_rate, iter_: int) -> None:
        history = blob.history[0]
        delta = f32(p.delta)
        update = np.empty_like(blob.diff)
        caffe_powx(blob.diff, 2, update)  # compute square of gradient in update
        caffe_add(update, history, history)  # update history
        caffe_powx(history, 0.5, update)  # prepare update
        caffe_add_scalar(delta, update)
        caffe_div(blob.diff, update, update)
        caffe_cpu_axpby(local_rate, update, f32(0), blob.diff)  # scale and copy

    @staticmethod
    def rmsprop(blob: RefBlob, p: CaffeSolverParams, local_rate, iter_: int) -> None:
        history = blob.history[0]
        delta = f32(p.delta)
        rms_decay = f32(p.rms_decay)
        update = np.empty_like(blob.diff)
        caffe_powx(blob.diff, 2, update)
        caffe_cpu_axpby(f32(f32(1) - rms_decay), update, rms_decay, history)
        caffe_powx(history, 0.5, update)
        caffe_add_scalar(delta, update)
        caffe_div(blob.diff, update, update)
        caffe_cpu_axpby(local_rate, update, f32(0), blob.diff)

    @staticmethod
    def adadelta(blob: RefBlob, p: CaffeSolverParams, local_rate, iter_: int) -> None:
        history, update_history = blob.history
        delta = f32(p.delta)
        momentum = f32(p.momentum)
        update = np.empty_like(blob.diff)
        temp = np.empty_like(blob.diff)
        caffe_powx(blob.diff, 2, update)  # compute square of gradient in update
        caffe_cpu_axpby(f32(f32(1) - momentum), update, momentum, history)
        caffe_set(delta, temp)  # add delta to history to guard against dividing by zero
        caffe_add(temp, update_history, update)
        caffe_add(temp, history, temp)
        caffe_div(update, temp, update)  # divide history of updates by history of gradients
        caffe_powx(update, 0.5, update)  # jointly compute the RMS of both
        caffe_mul(blob.diff, update, blob.diff)  # compute the update
        caffe_powx(blob.diff, 2, update)  # compute square of update
        caffe_cpu_axpby(f32(f32(1) - momentum), update, momentum, update_history)
        caffe_cpu_scale(local_rate, blob.diff, blob.diff)  # apply learning rate

    @staticmethod
    def adam(blob: RefBlob, p: CaffeSolverParams, local_rate, iter_: int) -> None:
        val_m, val_v = blob.history
        beta1, beta2 = f32(p.momentum), f32(p.momentum2)
        t = iter_ + 1
        # std::sqrt(Dtype(1) - pow(beta2, t)) / (Dtype(1.) - pow(beta1, t)): pow(float, int)
        # promotes to double, the quotient is rounded to float once.
        correction = f32(math.sqrt(1.0 - float(beta2) ** t) / (1.0 - float(beta1) ** t))
        eps_hat = f32(p.delta)
        val_t = np.empty_like(blob.diff)
        caffe_cpu_axpby(f32(f32(1) - beta1), blob.diff, beta1, val_m)
        caffe_mul(blob.diff, blob.diff, val_t)
        caffe_cpu_axpby(f32(f32(1) - beta2), val_t, beta2, val_v)
        caffe_powx(val_v, 0.5, val_t)
        caffe_add_scalar(eps_hat, val_t)
        caffe_div(val_m, val_t, val_t)
        caffe_cpu_scale(f32(local_rate * correction), val_t, blob.diff)


# ============================================================================================
# torch.optim.AdamW (torch/optim/adamw.py, adam.py: _single_tensor_adam(w), maximize=False,
# amsgrad=False, capturable=False; ATen CPU kernels for mul_, lerp_, addcmul_, sqrt, div, add_,
# addcdiv_). Python scalars are doubles; a float32 tensor op casts its scalar to float32.
# ============================================================================================


def torch_lerp_(start: np.ndarray, end: np.ndarray, weight) -> None:
    """``start.lerp_(end, weight)`` (ATen ``lerp``): ``start + w·(end − start)`` for
    ``|w| < 0.5``, else ``end − (end − start)·(1 − w)``, with ``w = float(weight)``. (The
    vectorised CPU kernel fuses the multiply-add; transcribed here unfused.)"""
    w = f32(weight)
    if abs(w) < 0.5:
        start[:] = start + w * (end - start)
    else:
        start[:] = end - (end - start) * (f32(1) - w)


def torch_adamw_step(
    param: np.ndarray,
    grad: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    step: int,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
) -> None:
    """One ``torch.optim.AdamW`` step on one tensor (``step`` = the incremented ``step_t``)."""
    if weight_decay != 0:
        param[:] = param * f32(1 - lr * weight_decay)  # param.mul_(1 - lr * weight_decay)
    torch_lerp_(exp_avg, grad, 1 - beta1)  # exp_avg.lerp_(grad, 1 - beta1)
    # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2): self + value*t1*t2
    exp_avg_sq[:] = exp_avg_sq * f32(beta2)
    exp_avg_sq[:] = exp_avg_sq + (f32(1 - beta2) * grad) * grad
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = lr / bias_correction1
    bias_correction2_sqrt = math.sqrt(bias_correction2)
    denom = np.sqrt(exp_avg_sq) / f32(bias_correction2_sqrt)  # (exp_avg_sq.sqrt() / bc2_sqrt)
    denom = denom + f32(eps)  # .add_(eps)
    param[:] = param + (f32(-step_size) * exp_avg) / denom  # addcdiv_: self + value*t1/t2


def caffe_adamw_update(
    blobs: list[RefBlob],
    p: CaffeSolverParams,
    rate: float,
    iter_: int,
    weight_decay: float,
) -> None:
    """dnupdate's Caffe ``type: "AdamW"``: Caffe's ClipGradients and Normalize, no Regularize,
    then ``torch_adamw_step`` per blob with ``lr = rate·lr_mult``, ``λ = weight_decay·
    decay_mult``, ``t = iter + 1`` (``blob.history = [m, v]``; ``p.momentum`` is β1)."""
    clip_gradients(blobs, p)
    for blob in blobs:
        if not blob.history:
            blob.history = [np.zeros_like(blob.data), np.zeros_like(blob.data)]
        normalize(blob, p)
        torch_adamw_step(
            blob.data, blob.diff, *blob.history, iter_ + 1,
            lr=float(rate) * float(f32(blob.lr_mult)), beta1=p.momentum, beta2=p.momentum2,
            eps=p.delta, weight_decay=weight_decay * float(f32(blob.decay_mult)),
        )  # fmt: skip
