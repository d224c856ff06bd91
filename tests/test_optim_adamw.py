"""AdamW (engine.update.rules, fused kernel) against a NumPy transcription of
``torch.optim.AdamW``'s single-tensor algorithm (tests/reference/optim.py), bit for bit, under
Caffe semantics (``type: "AdamW"``: clip and iter_size normalisation, then AdamW with
``lr_mult``/``decay_mult`` per blob) and darknet semantics (``adamw=1``: the mean gradient is
``−Σ/B``); against torch itself when it is importable; and the decoupled form against the
textbook's float64 formula."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dnupdate.engine.update.rules import describe_mapping, effective_update_lines, make_optimizer
from tests.reference import optim as ref
from tests.test_optim_rules import LRS, assert_close, caffe_solver, darknet_solver, layout

f32 = np.float32


def _blobs(params: np.ndarray, learn) -> list[ref.RefBlob]:
    return [
        ref.RefBlob(
            params[s.offset : s.offset + s.size].copy(),
            np.zeros(s.size, f32),
            s.lr_mult,
            s.decay_mult,
        )
        for s in learn
    ]


def _caffe_run(solver, steps: int, seed: int = 3, grad_scale: float = 1.0):
    rng = np.random.default_rng(seed)
    segs = layout("caffe")
    total = segs[-1].offset + segs[-1].size
    params = rng.normal(0, 0.5, total).astype(f32)
    before = params.copy()
    grads = np.zeros(total, f32)
    opt = make_optimizer(solver, segs, total)
    learn = [s for s in segs if s.learnable]
    blobs = _blobs(params, learn)
    p = ref.CaffeSolverParams(
        type="AdamW", momentum=solver.beta1, momentum2=solver.beta2, iter_size=solver.accumulate,
        clip_gradients=solver.clip_gradients, delta=solver.eps,
    )  # fmt: skip
    for it in range(steps):
        lr = LRS[it % len(LRS)]
        grads[:] = 0
        for _ in range(solver.accumulate):
            grads += rng.normal(0, grad_scale, total).astype(f32)
        for blob, s in zip(blobs, learn, strict=True):
            blob.diff[:] = grads[s.offset : s.offset + s.size] if s.lr_mult != 0 else 0
        opt.step(params, grads, lr, it)
        ref.caffe_adamw_update(blobs, p, lr, it, solver.decay)
    return segs, params, before, blobs, opt


@pytest.mark.parametrize(
    "extra",
    [{}, {"accumulate": 3, "clip_gradients": 5.0}, {"beta1": 0.3, "decay": 0.1}],
    ids=["plain", "iter_size_and_clip", "lerp_weight_over_half"],
)
def test_caffe_adamw_matches_torch_transcription_bit_for_bit(extra):
    solver = caffe_solver("adamw", **{"decay": 0.01, **extra})
    segs, params, before, blobs, opt = _caffe_run(solver, steps=9)
    learn = [s for s in segs if s.learnable]
    state = opt.state_arrays()
    for s, blob in zip(learn, blobs, strict=True):
        sl = slice(s.offset, s.offset + s.size)
        assert_close(params[sl], blob.data, 0, "params")
        assert_close(state["history"][sl], blob.history[0], 0, "exp_avg")
        assert_close(state["history2"][sl], blob.history[1], 0, "exp_avg_sq")
    for s in segs:
        if not s.learnable or s.lr_mult == 0:  # lr 0: neither decayed nor moved
            sl = slice(s.offset, s.offset + s.size)
            assert_close(params[sl], before[sl], 0, "untouched")


def test_darknet_adamw_is_torch_adamw_on_the_mean_gradient():
    solver = darknet_solver("adamw", decay=0.05, beta1=0.9, beta2=0.999, eps=1e-7)
    rng = np.random.default_rng(5)
    segs = layout("darknet")
    total = segs[-1].offset + segs[-1].size
    params = rng.normal(0, 0.5, total).astype(f32)
    grads = np.zeros(total, f32)
    opt = make_optimizer(solver, segs, total)
    learn = [s for s in segs if s.learnable]
    blobs = _blobs(params, learn)
    for it in range(8):
        lr = LRS[it % len(LRS)]
        for _ in range(solver.accumulate):  # darknet: Σ of the NEGATIVE gradient
            grads += rng.normal(0, 1.0, total).astype(f32)
        for blob, s in zip(blobs, learn, strict=True):
            blob.diff[:] = grads[s.offset : s.offset + s.size]
            if not blob.history:
                blob.history = [np.zeros(s.size, f32), np.zeros(s.size, f32)]
        opt.step(params, grads, lr, it)
        for blob in blobs:
            mean_grad = (-blob.diff) / f32(solver.batch)
            ref.torch_adamw_step(
                blob.data, mean_grad, *blob.history, it + 1,
                lr=lr * float(f32(blob.lr_mult)), beta1=solver.beta1, beta2=solver.beta2,
                eps=solver.eps, weight_decay=solver.decay * float(f32(blob.decay_mult)),
            )  # fmt: skip
        for s in learn:  # darknet AdamW zeroes its gradient buffer, as darknet Adam
            assert not grads[s.offset : s.offset + s.size].any()
    for s, blob in zip(learn, blobs, strict=True):
        assert_close(params[s.offset : s.offset + s.size], blob.data, 0, "params")
    state = opt.state_arrays()
    assert state["adam_t"].tolist() == [8]
    again = make_optimizer(solver, segs, total)
    again.load_state(state)
    assert again.t == 8


def _textbook_adamw(w, g_seq, lr_seq, beta1, beta2, eps, lam):
    """Loshchilov & Hutter / torch's documented algorithm in float64."""
    w = w.astype(np.float64)
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, (g, lr) in enumerate(zip(g_seq, lr_seq, strict=True), start=1):
        w = w - lr * lam * w
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        mhat, vhat = m / (1 - beta1**t), v / (1 - beta2**t)
        w = w - lr * mhat / (np.sqrt(vhat) + eps)
    return w


def test_adamw_is_the_decoupled_textbook_rule():
    """Not Adam + L2: the decay shrinks the weights directly (float64 textbook, rtol 1e-5)."""
    solver = caffe_solver("adamw", decay=0.1, eps=1e-8)
    segs = [layout("caffe")[0]]
    rng = np.random.default_rng(9)
    w0 = rng.normal(0, 1, segs[0].size).astype(f32)
    params = w0.copy()
    opt = make_optimizer(solver, segs, segs[0].size)
    g_seq, lr_seq = [], []
    for it in range(6):
        g = rng.normal(0, 1, segs[0].size).astype(f32)
        g_seq.append(g.astype(np.float64))
        lr_seq.append(LRS[it])
        opt.step(params, g.copy(), LRS[it], it)
    want = _textbook_adamw(w0, g_seq, lr_seq, solver.beta1, solver.beta2, solver.eps, 0.1)
    np.testing.assert_allclose(params, want, rtol=1e-5, atol=1e-6)
    coupled = caffe_solver("adam", decay=0.1, eps=1e-8)
    other = w0.copy()
    adam = make_optimizer(coupled, segs, segs[0].size)
    for it, g in enumerate(g_seq):
        adam.step(other, g.astype(f32), LRS[it], it)
    assert np.max(np.abs(other - params)) > 1e-3, "AdamW must differ from Adam + L2"


def test_adamw_against_torch_itself():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    w0 = rng.normal(0, 1, 50).astype(f32)
    param = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    opt_t = torch.optim.AdamW([param], lr=0.01, weight_decay=0.05, foreach=False)
    solver = caffe_solver("adamw", decay=0.05)
    seg = layout("caffe")[0]
    ours = w0.copy()
    opt = make_optimizer(solver, [type(seg)(0, 50)], 50)
    for it in range(10):
        g = rng.normal(0, 1, 50).astype(f32)
        param.grad = torch.from_numpy(g.copy())
        opt_t.step()
        opt.step(ours, g.copy(), 0.01, it)
    # torch's vectorised lerp fuses a multiply-add (FMA); the rest is the same op sequence
    np.testing.assert_allclose(ours, param.detach().numpy(), rtol=1e-6, atol=1e-7)


def test_inspect_lines_write_out_adamw_with_the_configs_numbers():
    lines = effective_update_lines(caffe_solver("adamw", decay=0.01, eps=1e-8), 0.001)
    text = "\n".join(lines)
    assert lines[0].startswith("Caffe AdamW")
    assert "W·0.99999" in text and "1e-08" in text and "lerp" in text
    assert "+ (0.01·decay_mult)·W" not in text, "AdamW adds no decay to the gradient"
    dark = "\n".join(effective_update_lines(darknet_solver("adamw", decay=0.01), 0.001))
    assert "−(Σ over the B images of −∂L/∂W)/6" in dark
    mapping = "\n".join(describe_mapping(darknet_solver("adamw", decay=0.01)))
    assert "decoupled" in mapping and 'type: "AdamW"' in mapping
    assert math.isclose(float(f32(1 - 0.001 * 0.01)), 0.99999, rel_tol=1e-6)


# ---- configs: Caffe type "AdamW", darknet adamw=1, inspect --------------------------------


def test_caffe_type_adamw_reads_betas_delta_and_weight_decay(tmp_path):
    from tests.test_config_caffe import SOLVER, load

    extra = 'type: "AdamW"\nmomentum: 0.8\nmomentum2: 0.99\ndelta: 1e-6\nweight_decay: 0.01\n'
    run = load(tmp_path, solver=SOLVER + extra)
    s = run.solver
    assert (s.optimizer, s.beta1, s.beta2, s.eps, s.decay) == ("adamw", 0.8, 0.99, 1e-6, 0.01)
    (note,) = [d for d in run.diagnostics if d.key == "type"]
    assert "extension" in note.message and note.line == 4


def test_caffe_adamw_with_l1_is_an_error(tmp_path):
    from dnupdate.engine.spec import ConfigError
    from tests.test_config_caffe import SOLVER, load

    with pytest.raises(ConfigError, match="regularization_type"):
        load(tmp_path, solver=SOLVER + 'type: "AdamW"\nregularization_type: "L1"\n')


def test_darknet_adamw_extension_key():
    from tests.darknet_fixtures import cfg_errors, load_cfg
    from tests.test_config_darknet_mapping import HEAD, IMAGE

    spec = load_cfg(IMAGE + "adamw=1\nB1=.8\ndecay=.01\n" + HEAD)
    assert (spec.solver.optimizer, spec.solver.beta1) == ("adamw", f32(0.8))
    assert spec.solver.decay == f32(0.01)
    (note,) = [d for d in spec.diagnostics if d.key == "adamw"]
    assert "extension" in note.message
    assert not [d for d in spec.diagnostics if d.key == "B1"], "B1 is read under adamw=1"
    (error,) = cfg_errors(IMAGE + "adam=1\nadamw=1\n" + HEAD)
    assert error.key == "adamw"


def test_inspect_writes_out_adamw(tmp_path):
    from tests.test_cli_inspect import inspect_json

    cfg = tmp_path / "a.cfg"
    cfg.write_text(
        "[net]\nbatch=8\nheight=4\nwidth=4\nchannels=1\nlearning_rate=0.002\ndecay=0.05\n"
        "adamw=1\nmax_batches=5\n[connected]\noutput=3\nactivation=linear\n[softmax]\n"
    )
    document = inspect_json(str(cfg))
    text = "\n".join(document["update_rule"])
    assert "AdamW" in text and "/8" in text
    assert "W·0.9999" in text  # 1 − lr·λ = 1 − 0.002·0.05
