"""``engine.update.rules`` API: exact resume through ``state_arrays``/``load_state``, validation
errors, segment checks, the norms in ``UpdateStats``, the written-out rule and mapping, and
a property test of the fused darknet SGD kernel against the NumPy transcription."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnupdate.engine.spec import SolverSpec
from dnupdate.engine.update.rules import (
    OptimizerStateError,
    SegmentError,
    SolverError,
    describe_mapping,
    effective_update_lines,
    make_optimizer,
)
from tests.reference import optim as ref
from tests.test_optim_rules import Seg, caffe_solver, darknet_solver

f32 = np.float32

ALL_SOLVERS = [
    darknet_solver("sgd"),
    darknet_solver("adam"),
    *[caffe_solver(o) for o in ("sgd", "nesterov", "adagrad", "rmsprop", "adadelta", "adam")],
    caffe_solver("sgd", momentum_style="lr_outside"),
]
SEGS = [Seg(0, 10, 1.0, 1.0), Seg(10, 3, 2.0, 0.0), Seg(13, 3, 0.0, 0.0, False), Seg(16, 5)]
TOTAL = 21


def _label(solver: SolverSpec) -> str:
    return f"{solver.semantics}-{solver.optimizer}-{solver.momentum_style}"


def _drive(opt, params, grads, rng, iterations, start, semantics):
    for it in range(start, start + iterations):
        g = rng.normal(0, 1, TOTAL).astype(f32)
        if semantics == "caffe":
            grads[:] = g
        else:
            grads += g
        opt.step(params, grads, 0.01 * (1 + it % 3), it)


@pytest.mark.parametrize("solver", ALL_SOLVERS, ids=_label)
def test_resume_from_state_arrays_is_bit_exact(solver):
    rng = np.random.default_rng(0)
    params = rng.normal(0, 1, TOTAL).astype(f32)
    grads = np.zeros(TOTAL, f32)
    opt = make_optimizer(solver, SEGS, TOTAL)
    _drive(opt, params, grads, rng, 3, 0, solver.semantics)
    saved = (params.copy(), grads.copy(), opt.state_arrays(), rng.bit_generator.state)

    _drive(opt, params, grads, rng, 4, 3, solver.semantics)  # uninterrupted

    p2, g2, state, rng_state = saved
    rng2 = np.random.default_rng()
    rng2.bit_generator.state = rng_state
    resumed = make_optimizer(solver, SEGS, TOTAL)
    resumed.load_state(state)
    _drive(resumed, p2, g2, rng2, 4, 3, solver.semantics)
    assert p2.tobytes() == params.tobytes()
    for name, arr in opt.state_arrays().items():
        assert resumed.state_arrays()[name].tobytes() == arr.tobytes(), name


def test_state_layout_per_rule():
    assert make_optimizer(darknet_solver("sgd"), SEGS, TOTAL).state_arrays() == {}
    adam = make_optimizer(darknet_solver("adam"), SEGS, TOTAL).state_arrays()
    assert sorted(adam) == ["adam_m", "adam_t", "adam_v"]
    assert sorted(make_optimizer(caffe_solver("adam"), SEGS, TOTAL).state_arrays()) == [
        "history",
        "history2",
    ]
    assert sorted(make_optimizer(caffe_solver("sgd"), SEGS, TOTAL).state_arrays()) == ["history"]


def test_load_state_rejects_mismatches():
    opt = make_optimizer(caffe_solver("adam"), SEGS, TOTAL)
    with pytest.raises(OptimizerStateError, match="keys"):
        opt.load_state({"history": np.zeros(TOTAL, f32)})
    with pytest.raises(OptimizerStateError, match="history2"):
        opt.load_state({"history": np.zeros(TOTAL, f32), "history2": np.zeros(3, f32)})
    with pytest.raises(OptimizerStateError, match="float64"):
        opt.load_state({"history": np.zeros(TOTAL), "history2": np.zeros(TOTAL, f32)})


def test_zero_grads_needed():
    assert make_optimizer(caffe_solver(), SEGS, TOTAL).zero_grads_needed
    assert not make_optimizer(darknet_solver(), SEGS, TOTAL).zero_grads_needed
    assert not make_optimizer(darknet_solver("adam"), SEGS, TOTAL).zero_grads_needed


@pytest.mark.parametrize(
    ("solver", "field"),
    [
        (caffe_solver("adagrad", momentum=0.9), "momentum"),
        (caffe_solver("rmsprop", momentum=0.5), "momentum"),
        (caffe_solver("rmsprop", rms_decay=1.0), "rms_decay"),
        (caffe_solver("lbfgs"), "optimizer"),
        (caffe_solver("nesterov", momentum_style="lr_outside"), "momentum_style"),
        (darknet_solver("nesterov"), "optimizer"),
        (darknet_solver(momentum_style="lr_inside"), "momentum_style"),
        (darknet_solver(grad_reduction="mean"), "grad_reduction"),
        (caffe_solver(regularization="L3"), "regularization"),
        (caffe_solver(accumulate=0), "accumulate"),
    ],
)
def test_invalid_solvers_are_named(solver, field):
    with pytest.raises(SolverError, match=f"solver.{field}"):
        make_optimizer(solver, SEGS, TOTAL)
    assert effective_update_lines(solver, 0.1)[0].startswith("no update rule")
    assert describe_mapping(solver)[0].startswith("no update rule")


def test_segment_table_checks():
    with pytest.raises(SegmentError, match="outside"):
        make_optimizer(caffe_solver(), [Seg(0, 30)], TOTAL)
    with pytest.raises(SegmentError, match="overlap"):
        make_optimizer(caffe_solver(), [Seg(0, 10), Seg(5, 10)], TOTAL)
    # a non-learnable segment may alias anything: it is never touched
    make_optimizer(caffe_solver(), [Seg(0, 10), Seg(5, 10, learnable=False)], TOTAL)


def test_buffers_must_be_flat_float32():
    opt = make_optimizer(caffe_solver(), SEGS, TOTAL)
    with pytest.raises(ValueError, match="params"):
        opt.step(np.zeros(TOTAL), np.zeros(TOTAL, f32), 0.1, 0)
    with pytest.raises(ValueError, match="grads"):
        opt.step(np.zeros(TOTAL, f32), np.zeros(TOTAL - 1, f32), 0.1, 0)


def test_update_stats_are_the_applied_step_norms():
    rng = np.random.default_rng(5)
    params = rng.normal(0, 1, TOTAL).astype(f32)
    grads = rng.normal(0, 1, TOTAL).astype(f32)
    before = params.copy()
    stats = make_optimizer(caffe_solver(), SEGS, TOTAL).step(params, grads, 0.1, 0)
    for i, s in enumerate(SEGS):
        sl = slice(s.offset, s.offset + s.size)
        step = params[sl].astype(np.float64) - before[sl].astype(np.float64)
        if s.learnable:
            assert stats.step_norms[i] == pytest.approx(np.linalg.norm(step), rel=1e-12)
            assert stats.weight_norms[i] == pytest.approx(
                np.linalg.norm(before[sl].astype(np.float64)), rel=1e-12
            )
            ratio = stats.step_norms[i] / stats.weight_norms[i]
            assert stats.ratios[i] == pytest.approx(ratio)
        else:
            assert stats.step_norms[i] == 0 and stats.weight_norms[i] == 0
            assert stats.ratios[i] == 0
    assert stats.grad_norm is None and stats.clip_scale is None


def test_effective_update_lines_use_the_configs_numbers():
    solver = darknet_solver(minibatch=16, accumulate=4, decay=0.0005, momentum=0.9)
    lines = "\n".join(effective_update_lines(solver, 0.001))
    alpha = f32(f32(0.001) / f32(64))  # computed here, independently
    delta = f32(-f32(0.0005) * f32(64))
    assert f"lr/B = {alpha!s}" in lines
    assert f"decay·B = {delta!s}" in lines
    assert "U ← 0.9·U" in lines
    assert "per-image-mean form" in lines and "W ← W + 0.001·u" in lines
    assert "[" not in lines  # printed through Rich with markup on

    caffe = caffe_solver("sgd", accumulate=4, clip_gradients=3.0, regularization="L1")
    text = "\n".join(effective_update_lines(caffe, 0.01))
    assert f"1/iter_size = {f32(1) / f32(4)!s}" in text
    assert "sign(W)" in text and "‖g‖₂ > 3.0" in text
    order = [text.index(k) for k in ("‖g‖₂ >", "1/iter_size", "sign(W)", "h ← 0.9·h")]
    assert order == sorted(order), "clip → normalise → regularise → update"


def test_describe_mapping_names_both_conventions():
    darknet = "\n".join(describe_mapping(darknet_solver(minibatch=16, accumulate=4)))
    assert "darknet decay 0.0005 with B=64" in darknet
    assert "lr outside" in darknet and "lr inside" in darknet
    adam = "\n".join(describe_mapping(darknet_solver("adam")))
    assert "runs SGD when adam=1" in adam
    caffe = "\n".join(describe_mapping(caffe_solver("rmsprop", clip_gradients=1.0)))
    assert "weight_decay 0.004" in caffe and "no darknet counterpart" in caffe
    assert "RMSProp" in caffe and "clip_gradients 1.0" in caffe


def test_darknet_adam_t_continues_and_caffe_adam_uses_iteration():
    opt = make_optimizer(darknet_solver("adam"), SEGS, TOTAL)
    p, g = np.ones(TOTAL, f32), np.ones(TOTAL, f32)
    for _ in range(3):
        opt.step(p, g, 0.01, 99)  # darknet ignores the loop's iteration: net.t counts
    assert opt.state_arrays()["adam_t"][0] == 3
    first = np.ones(TOTAL, f32)
    later = np.ones(TOTAL, f32)
    make_optimizer(caffe_solver("adam"), SEGS, TOTAL).step(first, np.ones(TOTAL, f32), 0.1, 0)
    make_optimizer(caffe_solver("adam"), SEGS, TOTAL).step(later, np.ones(TOTAL, f32), 0.1, 9)
    assert not np.array_equal(first, later), "t = iteration + 1 enters the correction"


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(1, 40),
    lr=st.floats(0, 1),
    momentum=st.floats(0, 0.99),
    decay=st.floats(0, 0.1),
    minibatch=st.integers(1, 9),
    accumulate=st.integers(1, 4),
    lr_mult=st.sampled_from([0.0, 0.1, 1.0, 2.5]),
    seed=st.integers(0, 2**16),
)
def test_darknet_sgd_kernel_matches_reference_bitwise(
    size, lr, momentum, decay, minibatch, accumulate, lr_mult, seed
):
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1, 2 * size).astype(f32)
    u = rng.normal(0, 3, 2 * size).astype(f32)
    solver = dataclasses.replace(
        darknet_solver(),
        momentum=momentum,
        decay=decay,
        minibatch=minibatch,
        accumulate=accumulate,
    )
    segs = [Seg(0, size, lr_mult, 1.0), Seg(size, size, lr_mult, 0.0)]
    blobs = [
        ref.RefBlob(
            w[s.offset : s.offset + s.size].copy(),
            u[s.offset : s.offset + s.size].copy(),
            s.lr_mult,
            s.decay_mult,
        )
        for s in segs
    ]
    make_optimizer(solver, segs, 2 * size).step(w, u, lr, 0)
    ref.darknet_sgd_update(blobs, f32(lr), momentum, decay, solver.batch)
    assert w.tobytes() == np.concatenate([b.data for b in blobs]).tobytes()
    assert u.tobytes() == np.concatenate([b.diff for b in blobs]).tobytes()


@pytest.mark.parametrize(
    "config",
    ["configs/lenet_solver.prototxt", "configs/mnist_lenet.cfg", "configs/cifar_small.cfg"],
)
@pytest.mark.parametrize("semantics", ["darknet", "caffe"])
def test_example_configs_drive_either_rule(config, semantics):
    """The shipped configs, under either rule, over the net's own blob table (LeNet biases:
    lr_mult 2 and decayed; darknet biases: undecayed)."""
    from pathlib import Path

    from dnupdate.engine.config import load_config
    from dnupdate.engine.model.shapes import infer_shapes
    from dnupdate.engine.update.semantics import with_semantics

    path = Path(__file__).resolve().parent.parent / config
    if not path.exists():
        pytest.skip(f"{config} not in this checkout")
    run = load_config(str(path))
    solver = with_semantics(run.solver, semantics)
    segs, offset = [], 0
    for shape in infer_shapes(run.net):
        for blob in shape.blobs:
            segs.append(
                Seg(offset, blob.size, blob.mult.lr_mult, blob.mult.decay_mult, blob.learnable)
            )
            offset += blob.size
    opt = make_optimizer(solver, segs, offset)
    rng = np.random.default_rng(0)
    params = rng.normal(0, 0.1, offset).astype(f32)
    grads = rng.normal(0, 0.1, offset).astype(f32)
    stats = opt.step(params, grads, 0.01, 0)
    learnable = [i for i, s in enumerate(segs) if s.learnable and s.lr_mult != 0]
    assert all(stats.step_norms[i] > 0 for i in learnable)
    assert effective_update_lines(solver, 0.01) and describe_mapping(solver)
