"""The fused update (engine.backends.cpu.update.fused_update) on segments longer than one
parallel block: every rule against its per-element functions applied to whole NumPy arrays
(float32, one rounding per operation, as the kernel), bit for bit; the norms as block sums
added in block order; and nothing depends on the thread count."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from dnupdate.engine.backends.cpu import update as up

f32 = np.float32
B = up.BLOCK
#: short segments, an empty one, exact multiples of a block and a block plus a little
SIZES = np.array([3, 2 * B + 5, 0, B, 17, B + 1, 2], dtype=np.int64)
OFFSETS = np.concatenate([[0], np.cumsum(SIZES)[:-1]]).astype(np.int64)
TOTAL = int(SIZES.sum())

RULES = {
    "darknet_sgd": (up.RULE_DARKNET_SGD, 0),
    "darknet_adam": (up.RULE_DARKNET_ADAM, 2),
    "caffe_sgd": (up.RULE_CAFFE_SGD, 1),
    "caffe_sgd_lr_outside": (up.RULE_CAFFE_SGD_LR_OUTSIDE, 1),
    "caffe_nesterov": (up.RULE_CAFFE_NESTEROV, 1),
    "caffe_adagrad": (up.RULE_CAFFE_ADAGRAD, 1),
    "caffe_rmsprop": (up.RULE_CAFFE_RMSPROP, 1),
    "caffe_adadelta": (up.RULE_CAFFE_ADADELTA, 2),
    "caffe_adam": (up.RULE_CAFFE_ADAM, 2),
    "caffe_adamw": (up.RULE_CAFFE_ADAMW, 2),
    "darknet_adamw": (up.RULE_DARKNET_ADAMW, 2),
}
COEF = up.pack_coefficients(
    momentum=0.9, one_minus_momentum=f32(1) - f32(0.9), beta2=0.999,
    one_minus_beta2=f32(1) - f32(0.999), eps=1e-6, correction1=0.19, correction2=0.002,
    one_plus_momentum=f32(1) + f32(0.9), clip_on=1, clip_scale=0.75, norm_on=1, norm_scale=0.5,
    batch=6,
)  # fmt: skip


def _inputs(states: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    params = rng.normal(0, 1, TOTAL).astype(f32)
    grads = rng.normal(0, 0.1, TOTAL).astype(f32)
    a = rng.uniform(0, 0.1, TOTAL).astype(f32) if states >= 1 else np.zeros(0, f32)
    b = rng.uniform(0, 0.1, TOTAL).astype(f32) if states >= 2 else np.zeros(0, f32)
    lr = rng.uniform(0.001, 0.1, SIZES.size).astype(f32)
    decay = np.where(np.arange(SIZES.size) % 2, f32(0), f32(-0.0005)).astype(f32)
    grad_on = np.ones(SIZES.size, np.int8)
    grad_on[-2] = 0
    return params, grads, a, b, lr, decay, grad_on


def _run(rule, inputs):
    params, grads, a, b, lr, decay, grad_on = (x.copy() for x in inputs)
    step_sq, weight_sq = np.zeros(SIZES.size), np.zeros(SIZES.size)
    up.fused_update(rule, params, grads, a, b, OFFSETS, SIZES, lr, decay, grad_on, COEF,
                    step_sq, weight_sq)  # fmt: skip
    return params, grads, a, b, step_sq, weight_sq


def _expected(rule, inputs):
    """The element functions on whole segments (NumPy float32 arrays)."""
    params, grads, a, b, lr, decay, grad_on = (x.copy() for x in inputs)
    k = tuple(COEF)
    step_sq, weight_sq = np.zeros(SIZES.size), np.zeros(SIZES.size)
    for s, (start, size) in enumerate(zip(OFFSETS, SIZES, strict=True)):
        seg = slice(start, start + size)
        w = params[seg].copy()
        if rule == up.RULE_DARKNET_SGD:
            w_new, grads[seg] = up.darknet_sgd_element(w, grads[seg], lr[s], decay[s], k[0])
        elif rule == up.RULE_DARKNET_ADAM:
            w_new, a[seg], b[seg] = up.darknet_adam_element(
                w, grads[seg], a[seg], b[seg], lr[s], decay[s], k
            )
            grads[seg] = 0
        elif rule == up.RULE_DARKNET_ADAMW:
            g = (-grads[seg]) / k[up.K_BATCH]
            w_new, a[seg], b[seg] = up.adamw_element(w, g, a[seg], b[seg], lr[s], decay[s], k)
            grads[seg] = 0
        elif rule == up.RULE_CAFFE_ADAMW:  # clip and normalise, no Regularize
            g = grads[seg] if grad_on[s] else np.zeros(size, f32)
            g = up.caffe_prepared_gradient(g, w, f32(0), k)
            w_new, a[seg], b[seg] = up.adamw_element(w, g, a[seg], b[seg], lr[s], decay[s], k)
            grads[seg] = w - w_new
        else:
            g = grads[seg] if grad_on[s] else np.zeros(size, f32)
            g = up.caffe_prepared_gradient(g, w, decay[s], k)
            h2 = b[seg] if b.size else np.zeros(size, f32)
            step, h, h2 = up._caffe_step.py_func(rule, g, a[seg], h2, lr[s], k)
            a[seg] = h
            if b.size:
                b[seg] = h2
            grads[seg] = step
            w_new = w - step
        params[seg] = w_new
        # per block, in index order (a sequential float64 sum: cumsum), then block by block
        for norms, values in (
            (step_sq, np.square(w_new.astype(np.float64) - w.astype(np.float64))),
            (weight_sq, np.square(w.astype(np.float64))),
        ):
            norms[s] = _block_sums(values, up.LANES)
    return params, grads, a, b, step_sq, weight_sq


def _block_sums(values, lanes):
    """Σ over blocks of ``B`` in block order; in each block ``lanes`` sequential sums over the
    elements ``j ≡ lane (mod lanes)``, added in lane order."""
    total = 0.0
    for j in range(0, values.size, B):
        block = values[j : j + B]
        block_total = 0.0
        for lane in range(lanes):
            part = block[lane::lanes]
            block_total += np.cumsum(part)[-1] if part.size else 0.0
        total += block_total
    return total


@pytest.mark.parametrize("name", sorted(RULES))
def test_every_rule_on_multi_block_segments(name):
    rule, states = RULES[name]
    inputs = _inputs(states)
    got, want = _run(rule, inputs), _expected(rule, inputs)
    for label, g, w in zip(("params", "grads", "a", "b", "step", "weight"), got, want, strict=True):
        assert g.tobytes() == w.tobytes(), label
    # the block sums differ from one sequential sum in the last bits only
    for norms, values in ((got[5], inputs[0].astype(np.float64) ** 2),):
        for s, (start, size) in enumerate(zip(OFFSETS, SIZES, strict=True)):
            sequential = np.cumsum(values[start : start + size])[-1] if size else 0.0
            assert norms[s] == pytest.approx(sequential, rel=1e-12)
            if size <= B:
                assert norms[s] == _block_sums(values[start : start + size], up.LANES)


@pytest.mark.parametrize("name", sorted(RULES))
def test_update_does_not_depend_on_threads(name):
    rule, states = RULES[name]
    inputs = _inputs(states, seed=1)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _run(rule, inputs)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = _run(rule, inputs)
    finally:
        numba.set_num_threads(before)
    for a, b in zip(one, two, strict=True):
        assert a.tobytes() == b.tobytes()


def test_no_segments_and_empty_segments():
    empty = np.zeros(0, f32)
    none = np.zeros(0, np.int64)
    up.fused_update(up.RULE_CAFFE_SGD, empty, empty, empty, empty, none, none, empty, empty,
                    np.zeros(0, np.int8), COEF, np.zeros(0), np.zeros(0))  # fmt: skip
    step_sq, weight_sq = np.full(2, 7.0), np.full(2, 7.0)
    w = np.ones(3, f32)
    up.fused_update(up.RULE_DARKNET_SGD, w, np.ones(3, f32), empty, empty,
                    np.array([0, 3], np.int64), np.array([3, 0], np.int64), np.ones(2, f32),
                    np.zeros(2, f32), np.ones(2, np.int8), COEF, step_sq, weight_sq)  # fmt: skip
    assert weight_sq.tolist() == [3.0, 0.0] and step_sq[1] == 0.0


DARKNET_RULES = ["darknet_adam", "darknet_adamw", "darknet_sgd"]


def _run_with_carry(rule, inputs, carry):
    params, grads, a, b, lr, decay, grad_on = (x.copy() for x in inputs)
    carry = carry.copy()
    step_sq, weight_sq, grad_sq = (np.zeros(SIZES.size) for _ in range(3))
    up.fused_update(rule, params, grads, a, b, OFFSETS, SIZES, lr, decay, grad_on, COEF,
                    step_sq, weight_sq, carry=carry, grad_sq=grad_sq)  # fmt: skip
    return params, grads, a, b, step_sq, weight_sq, carry, grad_sq


@pytest.mark.parametrize("name", DARKNET_RULES)
def test_the_carry_rides_along_without_changing_the_update(name):
    """With the darknet carry, the same pass gives Σ f32(carry − grads)² per segment (the
    trainer's gradient norm, blocks aside) and leaves the carry equal to the new grads; every
    updated value and norm is the bits of the pass without it."""
    from dnupdate.engine.backends.cpu import reduce

    rule, states = RULES[name]
    inputs = _inputs(states, seed=4)
    carry = (inputs[1] - np.random.default_rng(5).normal(0, 0.1, TOTAL)).astype(f32)
    plain = _run(rule, inputs)
    *kept, after, grad_sq = _run_with_carry(rule, inputs, carry)
    for a, b in zip(plain, kept, strict=True):
        assert a.tobytes() == b.tobytes()
    assert after.tobytes() == kept[1].tobytes()
    want = np.zeros(SIZES.size)
    reduce.segment_sum_squares_change(carry, inputs[1], OFFSETS, SIZES, want)
    np.testing.assert_allclose(grad_sq, want, rtol=1e-12)
    assert grad_sq[SIZES == 0].tolist() == [0.0] and grad_sq[SIZES > 0].min() > 0


@pytest.mark.parametrize("name", DARKNET_RULES)
def test_the_carry_norm_is_the_lane_sums_bit_for_bit(name):
    """The gradient norm of the carry pass (darknet SGD: its own grouped loop) is the block
    sums over ``up.LANES`` interleaved accumulators of ``f64(f32(carry − grads))²``, exactly,
    also on segments that are not a multiple of the lane count (their tails)."""
    rule, states = RULES[name]
    inputs = _inputs(states, seed=8)
    carry = (inputs[1] - np.random.default_rng(9).normal(0, 0.1, TOTAL)).astype(f32)
    grad_sq = _run_with_carry(rule, inputs, carry)[-1]
    change = np.square((carry - inputs[1]).astype(np.float64))
    want = [_block_sums(change[o : o + n], up.LANES) for o, n in zip(OFFSETS, SIZES, strict=True)]
    assert grad_sq.tolist() == want


@pytest.mark.parametrize("name", DARKNET_RULES)
def test_the_carry_norm_does_not_depend_on_threads(name):
    rule, states = RULES[name]
    inputs = _inputs(states, seed=6)
    carry = np.zeros(TOTAL, f32)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _run_with_carry(rule, inputs, carry)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = _run_with_carry(rule, inputs, carry)
    finally:
        numba.set_num_threads(before)
    for a, b in zip(one, two, strict=True):
        assert a.tobytes() == b.tobytes()


def test_the_carry_needs_a_darknet_rule_and_its_norm_buffer():
    inputs = _inputs(1)
    carry = np.zeros(TOTAL, f32)
    with pytest.raises(ValueError, match="carry"):
        _run_with_carry(up.RULE_CAFFE_SGD, inputs, carry)
    params, grads, a, b, lr, decay, grad_on = (x.copy() for x in inputs)
    with pytest.raises(ValueError, match="carry"):
        up.fused_update(up.RULE_DARKNET_SGD, params, grads, a, b, OFFSETS, SIZES, lr, decay,
                        grad_on, COEF, np.zeros(SIZES.size), np.zeros(SIZES.size),
                        carry=carry)  # fmt: skip


def test_trainer_with_the_carry_in_the_update_pass_matches_the_separate_passes():
    """darknet SGD with momentum and 2 subdivisions, 4 updates: the trainer whose backend folds
    the snapshot and the gradient norm into the update pass ends with the same weights and
    momentum bits, and the same gradient norms up to float64 re-association, as one making the
    copy and the norm pass itself."""
    from dnupdate.engine.backends.cpu import CpuBackend
    from dnupdate.engine.training.step import Trainer
    from tests.test_trainer import batch_of, counting, darknet_run

    class SeparatePasses(CpuBackend):
        FUSED_CARRY = False

    x, y = batch_of(4, seed=21)
    results = []
    for backend in (CpuBackend(), SeparatePasses()):
        trainer = Trainer(darknet_run(batch=4, subdivisions=2, momentum=0.9), seed=5,
                          backend=backend)  # fmt: skip
        assert trainer._fold_carry == backend.FUSED_CARRY
        next_batch, _ = counting(x, y, 2)
        norms = [trainer.train_iteration(next_batch).grad_norms for _ in range(4)]
        net = trainer.network
        results.append((net.params.copy(), net.grads.copy(), np.array(norms)))
    (params, grads, norms), (params_2, grads_2, norms_2) = results
    assert params.tobytes() == params_2.tobytes() and grads.tobytes() == grads_2.tobytes()
    np.testing.assert_allclose(norms, norms_2, rtol=1e-12)
    assert norms.min() > 0


@pytest.mark.parametrize("name", [n for n in RULES if n.startswith("caffe")], ids=lambda n: n)
def test_a_caffe_update_measures_the_diffs_norm_before_it_steps(name):
    """``grad_sq`` alone under a Caffe rule: per segment ``Σ f64(g)²`` of the diff as it was
    before the update (every segment, ``lr_mult: 0`` ones too, as the trainer's own norm
    pass sums the buffer), the same float64 sum as ``reduce.segment_sum_squares`` up to
    re-association; the updated values are the same bits as without it."""
    from dnupdate.engine.backends.cpu import reduce

    rule, states = RULES[name]
    inputs = _inputs(states, seed=3)
    expected = np.zeros(SIZES.size)
    reduce.segment_sum_squares(inputs[1], OFFSETS, SIZES, expected)
    params, grads, a, b, lr, decay, grad_on = (x.copy() for x in inputs)
    step_sq, weight_sq, grad_sq = (np.zeros(SIZES.size) for _ in range(3))
    up.fused_update(rule, params, grads, a, b, OFFSETS, SIZES, lr, decay, grad_on, COEF,
                    step_sq, weight_sq, grad_sq=grad_sq)  # fmt: skip
    np.testing.assert_allclose(grad_sq, expected, rtol=1e-12)
    assert grad_sq[SIZES > 0].min() > 0 and grad_sq[SIZES == 0].tolist() == [0.0]
    plain = _run(rule, inputs)
    for got, want in zip((params, grads, a, b, step_sq, weight_sq), plain, strict=True):
        assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize(
    ("extra", "match"),
    [({"grad_sq": np.zeros(SIZES.size)}, "carry"), ({"clear_grads": True}, "clear_grads")],
    ids=["gradient norm only against a carry", "only a Caffe update leaves the diffs zero"],
)
def test_a_darknet_update_refuses_the_caffe_only_options(extra, match):
    params, grads, a, b, lr, decay, grad_on = _inputs(0)
    with pytest.raises(ValueError, match=match):
        up.fused_update(up.RULE_DARKNET_SGD, params, grads, a, b, OFFSETS, SIZES, lr, decay,
                        grad_on, COEF, np.zeros(SIZES.size), np.zeros(SIZES.size),
                        **extra)  # fmt: skip


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_caffe_trainer_with_the_norm_in_the_update_pass_matches_the_separate_pass(optimizer):
    """Caffe SGD with momentum (and Adam), iter_size 2, 4 updates: the trainer whose backend
    measures the diff's norm in the update pass ends with the same weights and history bits,
    and the same gradient norms up to float64 re-association, as one taking the norm pass."""
    from dnupdate.engine.backends.cpu import CpuBackend
    from dnupdate.engine.training.step import Trainer
    from tests.test_trainer import batch_of, caffe_run, counting

    class SeparatePass(CpuBackend):
        FUSED_GRAD_NORM = False

    x, y = batch_of(4, seed=22)
    results = []
    for backend in (CpuBackend(), SeparatePass()):
        run = caffe_run(minibatch=2, iter_size=2, optimizer=optimizer, momentum=0.9)
        trainer = Trainer(run, seed=5, backend=backend)
        assert trainer._fold_grad_norm == backend.FUSED_GRAD_NORM
        next_batch, _ = counting(x, y, 2)
        norms = [trainer.train_iteration(next_batch).grad_norms for _ in range(4)]
        net = trainer.network
        history = (trainer.optimizer._state_a.copy(), trainer.optimizer._state_b.copy())
        results.append((net.params.copy(), history, np.array(norms)))
    (params, state, norms), (params_2, state_2, norms_2) = results
    assert params.tobytes() == params_2.tobytes()
    for a, b in zip(state, state_2, strict=True):
        assert a.tobytes() == b.tobytes()
    np.testing.assert_allclose(norms, norms_2, rtol=1e-12)
    assert norms.max() > 0


@pytest.mark.parametrize("name", [n for n in RULES if n.startswith("caffe")], ids=lambda n: n)
def test_a_caffe_update_can_leave_the_diffs_zero(name):
    """``clear_grads``: every segment's diff is 0 after the pass (``lr_mult: 0`` ones too),
    the weights, the state and the norms the same bits as without it."""
    rule, states = RULES[name]
    inputs = _inputs(states, seed=4)
    params, grads, a, b, lr, decay, grad_on = (x.copy() for x in inputs)
    step_sq, weight_sq, grad_sq = (np.zeros(SIZES.size) for _ in range(3))
    up.fused_update(rule, params, grads, a, b, OFFSETS, SIZES, lr, decay, grad_on, COEF,
                    step_sq, weight_sq, grad_sq=grad_sq, clear_grads=True)  # fmt: skip
    assert not grads.any() and not np.signbit(grads).any()
    plain = _run(rule, inputs)
    assert plain[1].any()  # without it the diff keeps the step
    for got, want in zip((params, a, b, step_sq, weight_sq), plain[:1] + plain[2:], strict=True):
        assert got.tobytes() == want.tobytes()


def test_caffe_trainer_skips_its_zeroing_pass_where_the_update_left_the_diffs_zero():
    """Caffe SGD, iter_size 2, 4 updates, then a state saved and loaded into a fresh trainer
    for 2 more: with the diffs cleared in the update pass (no ``fill`` of the buffer after
    the first iteration) the weights, history and norms are the bits of the trainer that
    zeroes the buffer itself; a loaded state zeroes its diffs as ever."""
    from dnupdate.engine.backends.cpu import CpuBackend
    from dnupdate.engine.training.step import Trainer
    from tests.test_trainer import batch_of, caffe_run, counting

    class Counting(CpuBackend):
        def __init__(self, clear):
            super().__init__()
            self.FUSED_CLEAR = clear
            self.fills = 0

        def fill(self, out, value):
            self.fills += out.size == self.grads_size
            super().fill(out, value)

    x, y = batch_of(4, seed=23)
    results = []
    for clear in (True, False):
        backend = Counting(clear)
        run = caffe_run(minibatch=2, iter_size=2, optimizer="sgd", momentum=0.9)
        trainer = Trainer(run, seed=6, backend=backend)
        backend.grads_size = trainer.network.grads.size
        assert trainer._clear_in_update == clear
        next_batch, _ = counting(x, y, 2)
        norms = [trainer.train_iteration(next_batch).grad_norms for _ in range(4)]
        assert backend.fills == (1 if clear else 4)
        assert not trainer.network.grads.any() if clear else trainer.network.grads.any()
        state = trainer.state_dict()
        resumed = Trainer(run, seed=6, backend=backend)
        resumed.load_state_dict(state)
        norms += [resumed.train_iteration(next_batch).grad_norms for _ in range(2)]
        history = resumed.optimizer._state_a.copy()
        results.append((resumed.network.params.copy(), history, np.array(norms)))
    (params, history, norms), (params_2, history_2, norms_2) = results
    assert params.tobytes() == params_2.tobytes() and history.tobytes() == history_2.tobytes()
    assert norms.tobytes() == norms_2.tobytes() and norms.max() > 0
