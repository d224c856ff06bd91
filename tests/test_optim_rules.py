"""Each update rule of ``engine.update.rules`` against the line-by-line NumPy transcriptions in
``tests/reference/optim.py``, over several iterations with a changing learning rate.

The net is a small segment table with weights, biases at 2× lr, a BN-like scale, a
non-learnable running statistic, a frozen (lr_mult 0) blob and an L1/decay_mult mix, laid out
in one flat float32 buffer. darknet SGD and Caffe SGD/Nesterov must agree BIT FOR BIT; the
rules that take a square root (``caffe_powx(x, 0.5)`` = ``powf`` vs the kernel's ``sqrtf``)
are allowed 2 ulp (they agree exactly on this machine; the tolerance documents the libm
dependence).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest

from dnupdate.engine.spec import SolverSpec
from dnupdate.engine.update.rules import make_optimizer
from tests.reference import optim as ref

f32 = np.float32
LRS = (0.1, 0.1, 0.02, 0.05, 0.005, 0.0, 0.03)  # changing lr: lr inside vs outside differs


@dataclass(frozen=True)
class Seg:
    offset: int
    size: int
    lr_mult: float = 1.0
    decay_mult: float = 1.0
    learnable: bool = True


def layout(kind: str) -> list[Seg]:
    """A conv/BN/FC-like segment table (sizes small, offsets contiguous)."""
    if kind == "darknet":
        spec = [  # biases, scales, rolling mean, rolling var, weights (conv), fc biases, weights
            (8, 1.0, 0.0, True),
            (8, 1.0, 0.0, True),
            (8, 0.0, 0.0, False),
            (8, 0.0, 0.0, False),
            (72, 1.0, 1.0, True),
            (5, 0.3, 0.0, True),  # layer learning_rate=0.3
            (40, 0.3, 1.0, True),
            (6, 0.0, 1.0, True),  # learning_rate=0: frozen but still decayed into U
        ]
    else:  # Caffe: weights, bias (lr 2), BN stats (non-learnable), frozen, decay_mult mix
        spec = [
            (72, 1.0, 1.0, True),
            (8, 2.0, 1.0, True),
            (8, 0.0, 0.0, False),
            (40, 1.0, 2.0, True),
            (5, 2.0, 0.0, True),
            (6, 0.0, 1.0, True),  # lr_mult 0: no gradient, still regularised
        ]
    segs, off = [], 0
    for size, lr, decay, learnable in spec:
        segs.append(Seg(off, size, lr, decay, learnable))
        off += size
    return segs


def ulps(a: np.ndarray, b: np.ndarray) -> int:
    """Largest distance in float32 units in the last place."""
    ia = a.view(np.int32).astype(np.int64)
    ib = b.view(np.int32).astype(np.int64)
    ia = np.where(ia < 0, -(2**31) - ia, ia)
    ib = np.where(ib < 0, -(2**31) - ib, ib)
    return int(np.max(np.abs(ia - ib))) if a.size else 0


def assert_close(a: np.ndarray, b: np.ndarray, max_ulps: int, what: str) -> None:
    if max_ulps == 0:
        np.testing.assert_array_equal(a.view(np.int32), b.view(np.int32), err_msg=what)
    else:
        assert ulps(a, b) <= max_ulps, f"{what}: {ulps(a, b)} ulp"


def split(flat: np.ndarray, segs: list[Seg]) -> list[np.ndarray]:
    return [flat[s.offset : s.offset + s.size] for s in segs]


# --------------------------------------------------------------------------------------------
# darknet
# --------------------------------------------------------------------------------------------


def darknet_solver(optimizer: str = "sgd", **kw) -> SolverSpec:
    base = dict(
        semantics="darknet",
        optimizer=optimizer,
        momentum=0.9,
        decay=0.0005,
        minibatch=3,
        accumulate=2,
        momentum_style="lr_outside",
        grad_reduction="sum",
        eps=1e-7,
    )
    base.update(kw)
    return SolverSpec(**base)


def run_darknet(solver: SolverSpec, steps: int, seed: int = 0):
    """Drive kernel and reference with the same gradient stream; return both final states."""
    rng = np.random.default_rng(seed)
    segs = layout("darknet")
    total = segs[-1].offset + segs[-1].size
    params = rng.normal(0, 0.5, total).astype(f32)
    grads = np.zeros(total, f32)
    opt = make_optimizer(solver, segs, total)
    learn = [s for s in segs if s.learnable]
    blobs = [
        ref.RefBlob(
            params[s.offset : s.offset + s.size].copy(),
            np.zeros(s.size, f32),
            s.lr_mult,
            s.decay_mult,
        )
        for s in learn
    ]
    frozen_stats = params.copy()
    for it in range(steps):
        lr = LRS[it % len(LRS)]
        # backward over the subdivisions: Σ(−grad) accumulated on top of the carried m·U
        for _ in range(solver.accumulate):
            g = rng.normal(0, 1.0, total).astype(f32)
            grads += g
            for blob, s in zip(blobs, learn, strict=True):
                blob.diff += g[s.offset : s.offset + s.size]
        opt.step(params, grads, lr, it)
        if solver.optimizer == "sgd":
            ref.darknet_sgd_update(blobs, f32(lr), solver.momentum, solver.decay, solver.batch)
        else:
            ref.darknet_adam_update(
                blobs,
                f32(lr),
                solver.decay,
                solver.batch,
                solver.beta1,
                solver.beta2,
                solver.eps,
                it + 1,
            )
    return segs, params, grads, blobs, frozen_stats, opt


def test_darknet_sgd_bit_exact_over_iterations_with_changing_lr():
    segs, params, grads, blobs, before, _ = run_darknet(darknet_solver(), steps=7)
    learn = [s for s in segs if s.learnable]
    for s, blob in zip(learn, blobs, strict=True):
        assert_close(params[s.offset : s.offset + s.size], blob.data, 0, "params")
        assert_close(grads[s.offset : s.offset + s.size], blob.diff, 0, "m·U buffer")
    for s in segs:
        if not s.learnable:  # running statistics are never touched
            assert_close(
                params[s.offset : s.offset + s.size],
                before[s.offset : s.offset + s.size],
                0,
                "non-learnable",
            )


def test_darknet_sgd_biases_not_decayed_and_lr_scale_zero_keeps_weights():
    solver = darknet_solver(decay=0.5)  # a large decay makes a mistake visible
    segs, params, grads, _, before, _ = run_darknet(solver, steps=3)
    frozen = segs[-1]  # learning_rate=0: weights unchanged, but U still receives decay
    sl = slice(frozen.offset, frozen.offset + frozen.size)
    assert_close(params[sl], before[sl], 0, "lr_mult 0 weights")
    assert np.any(grads[sl] != 0)


def test_darknet_sgd_matches_closed_form_mean_form():
    """u_t = m·u_{t−1} + (mean neg grad − decay·W), W += lr·u (spec §6.1) to ~1e-6."""
    solver = darknet_solver(accumulate=1, minibatch=8)
    seg = [Seg(0, 50)]
    rng = np.random.default_rng(3)
    w = rng.normal(0, 1, 50).astype(f32)
    grads = np.zeros(50, f32)
    w64, u64 = w.astype(np.float64), np.zeros(50)
    opt = make_optimizer(solver, seg, 50)
    for it in range(5):
        lr = LRS[it]
        g = rng.normal(0, 1, 50).astype(f32)
        grads += g
        u64 = 0.9 * u64 + (g / 8.0 - 0.0005 * w64)
        w64 = w64 + lr * u64
        opt.step(w, grads, lr, it)
    np.testing.assert_allclose(w, w64, rtol=0, atol=2e-6)


def test_darknet_adam_against_gpu_formula():
    solver = darknet_solver("adam", beta1=0.9, beta2=0.999, decay=0.01)
    segs, params, grads, blobs, before, opt = run_darknet(solver, steps=6)
    learn = [s for s in segs if s.learnable]
    for s, blob in zip(learn, blobs, strict=True):
        assert_close(params[s.offset : s.offset + s.size], blob.data, 2, "adam params")
        assert not np.any(grads[s.offset : s.offset + s.size]), "Adam zeroes the buffer"
    assert opt.t == 6
    for s in segs:
        if not s.learnable:
            assert_close(
                params[s.offset : s.offset + s.size],
                before[s.offset : s.offset + s.size],
                0,
                "non-learnable",
            )


def test_darknet_adam_decays_biases_too():
    """darknet quirk (GPU): with zero gradients, only decay moves a bias."""
    solver = darknet_solver("adam", decay=0.1)
    segs = [Seg(0, 4, 1.0, 0.0)]  # a bias: decay_mult 0
    w = np.ones(4, f32)
    opt = make_optimizer(solver, segs, 4)
    opt.step(w, np.zeros(4, f32), 0.01, 0)
    assert np.all(w < 1)


# --------------------------------------------------------------------------------------------
# Caffe
# --------------------------------------------------------------------------------------------

CAFFE_TYPES = {
    "sgd": "SGD",
    "nesterov": "Nesterov",
    "adagrad": "AdaGrad",
    "rmsprop": "RMSProp",
    "adadelta": "AdaDelta",
    "adam": "Adam",
}
EXACT = {"sgd", "nesterov"}


def caffe_solver(optimizer: str = "sgd", **kw) -> SolverSpec:
    base = dict(
        semantics="caffe",
        optimizer=optimizer,
        momentum=0.9,
        decay=0.004,
        minibatch=4,
        accumulate=1,
        momentum_style="lr_inside",
        grad_reduction="mean",
        eps=1e-8,
        rms_decay=0.98,
        beta1=0.9,
        beta2=0.999,
    )
    if optimizer in ("adagrad", "rmsprop"):
        base["momentum"] = 0.0
    if optimizer == "adadelta":
        base.update(momentum=0.95, eps=1e-6)
    base.update(kw)
    return SolverSpec(**base)


def ref_params(s: SolverSpec) -> ref.CaffeSolverParams:
    return ref.CaffeSolverParams(
        type=CAFFE_TYPES[s.optimizer],
        momentum=s.beta1 if s.optimizer == "adam" else s.momentum,
        momentum2=s.beta2,
        weight_decay=s.decay,
        regularization_type=s.regularization,
        iter_size=s.accumulate,
        clip_gradients=s.clip_gradients,
        delta=s.eps,
        rms_decay=s.rms_decay,
    )


def run_caffe(solver: SolverSpec, steps: int, seed: int = 1, grad_scale: float = 1.0):
    rng = np.random.default_rng(seed)
    segs = layout("caffe")
    total = segs[-1].offset + segs[-1].size
    params = rng.normal(0, 0.5, total).astype(f32)
    params[5] = 0.0  # sign(0) = 0 under L1
    before = params.copy()
    grads = np.zeros(total, f32)
    opt = make_optimizer(solver, segs, total)
    learn = [s for s in segs if s.learnable]
    blobs = [
        ref.RefBlob(
            params[s.offset : s.offset + s.size].copy(),
            np.zeros(s.size, f32),
            s.lr_mult,
            s.decay_mult,
        )
        for s in learn
    ]
    norms, stats = [], []
    for it in range(steps):
        lr = LRS[it % len(LRS)]
        grads[:] = 0  # Net::ClearParamDiffs
        for _ in range(solver.accumulate):  # iter_size passes accumulate
            grads += (rng.normal(0, grad_scale, total)).astype(f32)
        for blob, s in zip(blobs, learn, strict=True):
            # lr_mult 0: Caffe computes no gradient, the diff stays 0 (the kernel must
            # ignore whatever the network left there)
            blob.diff[:] = grads[s.offset : s.offset + s.size] if s.lr_mult != 0 else 0
        stats.append(opt.step(params, grads, lr, it))
        norms.append(ref.caffe_apply_update(blobs, ref_params(solver), f32(lr), it))
    return segs, params, grads, blobs, before, opt, norms, stats


def check_caffe(solver: SolverSpec, steps: int = 7, **kw):
    segs, params, grads, blobs, before, opt, norms, stats = run_caffe(solver, steps, **kw)
    tol = 0 if solver.optimizer in EXACT else 2
    learn = [s for s in segs if s.learnable]
    for s, blob in zip(learn, blobs, strict=True):
        sl = slice(s.offset, s.offset + s.size)
        assert_close(params[sl], blob.data, tol, f"{solver.optimizer} params")
        assert_close(grads[sl], blob.diff, tol, f"{solver.optimizer} diff (applied step)")
    state = opt.state_arrays()
    for k, name in enumerate(("history", "history2")):
        if name in state:
            for s, blob in zip(learn, blobs, strict=True):
                assert_close(state[name][s.offset : s.offset + s.size], blob.history[k], tol, name)
    for s in segs:
        if not s.learnable:
            sl = slice(s.offset, s.offset + s.size)
            assert_close(params[sl], before[sl], 0, "non-learnable")
    return norms, stats


@pytest.mark.parametrize("optimizer", list(CAFFE_TYPES))
def test_caffe_rules_against_reference(optimizer):
    check_caffe(caffe_solver(optimizer))


@pytest.mark.parametrize("optimizer", list(CAFFE_TYPES))
def test_caffe_rules_iter_size_l1_and_clipping_that_fires(optimizer):
    solver = caffe_solver(optimizer, accumulate=3, regularization="L1", clip_gradients=5.0)
    norms, stats = check_caffe(solver)
    assert all(fired for _, fired in norms), "the clip threshold must trigger in this test"
    for (norm, _), st in zip(norms, stats, strict=True):
        assert st.clip_scale is not None
        assert st.grad_norm == pytest.approx(norm, rel=1e-6)


def test_caffe_clipping_that_does_not_fire():
    solver = caffe_solver("sgd", accumulate=2, clip_gradients=1e6)
    norms, stats = check_caffe(solver)
    assert not any(fired for _, fired in norms)
    assert all(st.clip_scale is None and st.grad_norm is not None for st in stats)


def test_caffe_lr_mult_zero_blob_is_regularised_but_never_moves():
    solver = caffe_solver("sgd", decay=0.5)
    segs, params, _grads, _, before, opt, _, _ = run_caffe(solver, steps=4, grad_scale=10.0)
    frozen = segs[-1]
    sl = slice(frozen.offset, frozen.offset + frozen.size)
    assert_close(params[sl], before[sl], 0, "lr_mult 0")
    assert not np.any(opt.state_arrays()["history"][sl])


def test_lr_inside_and_lr_outside_differ_when_lr_changes():
    """Caffe keeps lr inside the history; the PyTorch form (lr outside) rescales at once."""
    inside = run_caffe(caffe_solver("sgd"), steps=4)[1]
    outside = run_caffe(caffe_solver("sgd", momentum_style="lr_outside"), steps=4)[1]
    assert np.max(np.abs(inside - outside)) > 1e-3
    const_lr = dict(steps=2)  # LRS[0] == LRS[1]: identical while the lr is constant
    a = run_caffe(caffe_solver("sgd"), **const_lr)[1]
    b = run_caffe(caffe_solver("sgd", momentum_style="lr_outside"), **const_lr)[1]
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_caffe_sgd_equals_darknet_sgd_in_closed_form_at_constant_lr():
    """The mapping `dnupdate inspect` prints: darknet (decay, lr/B, Σ grads) ≡ Caffe (weight
    decay, lr, mean grads) while lr is constant, for a blob with decay in both."""
    rng = np.random.default_rng(7)
    n, batch = 30, 8
    w0 = rng.normal(0, 1, n).astype(f32)
    dk, cf = w0.copy(), w0.copy()
    dk_solver = darknet_solver(minibatch=batch, accumulate=1, decay=0.001)
    cf_solver = replace(caffe_solver("sgd", decay=0.001), minibatch=batch)
    opt_d = make_optimizer(dk_solver, [Seg(0, n)], n)
    opt_c = make_optimizer(cf_solver, [Seg(0, n)], n)
    u = np.zeros(n, f32)
    for it in range(5):
        g_mean = rng.normal(0, 1, n).astype(f32)  # mean +gradient over the batch
        u += -g_mean * f32(batch)
        opt_d.step(dk, u, 0.05, it)
        opt_c.step(cf, g_mean.copy(), 0.05, it)
    np.testing.assert_allclose(dk, cf, rtol=0, atol=5e-6)


# --------------------------------------------------------------------------------------------
# Textbook float64 forms (spec caffe.md §5.4, darknet.md §6.2): an independent check that the
# transcription and the kernel did not share a misreading
# --------------------------------------------------------------------------------------------


def textbook_caffe(opt: str, s: SolverSpec, w, g, h, h2, lr: float, t: int):
    """One Caffe update in float64 from the spec's formulas; returns (w, h, h2)."""
    m, eps = s.momentum, s.eps
    if opt == "sgd":
        h = m * h + lr * g
        return w - h, h, h2
    if opt == "nesterov":
        h_new = m * h + lr * g
        return w - ((1 + m) * h_new - m * h), h_new, h2
    if opt == "adagrad":
        h = h + g * g
        return w - lr * g / (np.sqrt(h) + eps), h, h2
    if opt == "rmsprop":
        h = s.rms_decay * h + (1 - s.rms_decay) * g * g
        return w - lr * g / (np.sqrt(h) + eps), h, h2
    if opt == "adadelta":
        h = m * h + (1 - m) * g * g
        dx = g * np.sqrt((h2 + eps) / (h + eps))
        h2 = m * h2 + (1 - m) * dx * dx
        return w - lr * dx, h, h2
    b1, b2 = s.beta1, s.beta2
    h = b1 * h + (1 - b1) * g
    h2 = b2 * h2 + (1 - b2) * g * g
    corr = np.sqrt(1 - b2**t) / (1 - b1**t)
    return w - lr * corr * h / (np.sqrt(h2) + eps), h, h2


@pytest.mark.parametrize("optimizer", list(CAFFE_TYPES))
def test_caffe_rules_match_the_textbook_form(optimizer):
    solver = caffe_solver(optimizer, decay=0.01, accumulate=2)
    rng = np.random.default_rng(11)
    n = 64
    w = rng.normal(0, 1, n).astype(f32)
    w64, h, h2 = w.astype(np.float64), np.zeros(n), np.zeros(n)
    opt = make_optimizer(solver, [Seg(0, n, 1.0, 1.0)], n)
    grads = np.zeros(n, f32)
    for it in range(6):
        lr = LRS[it]
        grads[:] = rng.normal(0, 1, n).astype(f32) + rng.normal(0, 1, n).astype(f32)
        g = grads.astype(np.float64) / 2 + 0.01 * w64  # Normalize, then L2 Regularize
        w64, h, h2 = textbook_caffe(optimizer, solver, w64, g, h, h2, lr, it + 1)
        opt.step(w, grads, lr, it)
    np.testing.assert_allclose(w, w64, rtol=1e-5, atol=1e-6)


def test_darknet_adam_matches_the_textbook_form():
    solver = darknet_solver("adam", decay=0.001, beta1=0.9, beta2=0.999, eps=1e-7)
    rng = np.random.default_rng(12)
    n = 64
    w = rng.normal(0, 1, n).astype(f32)
    w64, m, v = w.astype(np.float64), np.zeros(n), np.zeros(n)
    opt = make_optimizer(solver, [Seg(0, n, 1.0, 0.0)], n)
    grads = np.zeros(n, f32)
    for t in range(1, 7):
        lr = LRS[t - 1] or 0.01
        grads += rng.normal(0, 1, n).astype(f32)  # Σ of −grad over B (buffer was zeroed)
        d = grads.astype(np.float64) - 0.001 * solver.batch * w64
        m = 0.9 * m + 0.1 * d
        v = 0.999 * v + 0.001 * d * d
        w64 = w64 + lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-7)
        opt.step(w, grads, lr, t - 1)
    np.testing.assert_allclose(w, w64, rtol=1e-5, atol=1e-6)
