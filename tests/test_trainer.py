"""engine.training.step: the training step under both loop semantics, without libdarknet.

Hand computations (float64 NumPy) check one update of a linear softmax classifier under every
pairing of net and semantics: darknet semantics sums ``−∂L/∂θ`` over the images and scales by
``lr/B``; Caffe semantics averages ``+∂L/∂θ`` and subtracts ``lr·g``; both give
``W ← W + lr·(mean_i (t − p) xᵀ − decay·W)`` for the first update (zero momentum). Then the loop
bookkeeping (subdivisions, iter_size, darknet's modulo test, lr timing), exact resume through
``state_dict``, evaluation, weight files and divergence reporting.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dnupdate.engine.config import load_config
from dnupdate.engine.formats.caffemodel import write_caffemodel
from dnupdate.engine.formats.weights import save_npz_weights, write_darknet_weights
from dnupdate.engine.model.network import NetworkError
from dnupdate.engine.spec import (
    ConnectedSpec,
    DropoutSpec,
    FillerSpec,
    InputSpec,
    NetSpec,
    RunSpec,
    ScheduleSpec,
    SoftmaxLossSpec,
    SolverSpec,
)
from dnupdate.engine.training.step import Trainer, TrainerStateError, run_fixed_batch
from tests.reference.training import train_linear_softmax

DARKNET_LINEAR = """[net]
batch={batch}
subdivisions={subdivisions}
height=1
width=1
channels=3
learning_rate=0.5
momentum={momentum}
decay=0.01
policy={policy}
steps=2
scales=.1
max_batches=100

[connected]
output=3
activation=linear

[softmax]
"""

DARKNET_DROPOUT = """[net]
batch=4
subdivisions=2
height=2
width=2
channels=2
learning_rate=0.1
momentum=0.9
decay=0.0005
policy=steps
steps=3
scales=.1
max_batches=100

[connected]
output=6
activation=leaky

[dropout]
probability=.4

[connected]
output=3
activation=linear

[softmax]
"""


def darknet_run(
    batch=4, subdivisions=1, momentum=0.0, policy="constant", text=DARKNET_LINEAR
) -> RunSpec:
    cfg = text.format(batch=batch, subdivisions=subdivisions, momentum=momentum, policy=policy)
    return load_config("linear.cfg", text=cfg)


def caffe_run(
    *,
    minibatch=4,
    iter_size=1,
    optimizer="sgd",
    momentum=0.0,
    policy="fixed",
    dropout=False,
    steps=(),
) -> RunSpec:
    layers = [ConnectedSpec(name="ip", outputs=3, weight_filler=FillerSpec("gaussian", std=0.5))]
    if dropout:
        layers += [
            DropoutSpec(name="drop", probability=0.3),
            ConnectedSpec(name="ip2", outputs=3, weight_filler=FillerSpec("xavier")),
        ]
    layers.append(SoftmaxLossSpec(name="loss"))
    net = NetSpec("linear", InputSpec(3, 1, 1), tuple(layers))
    solver = SolverSpec(
        semantics="caffe",
        optimizer=optimizer,
        momentum=momentum,
        decay=0.01,
        minibatch=minibatch,
        accumulate=iter_size,
    )
    schedule = ScheduleSpec(
        convention="caffe", policy=policy, base_lr=0.5, gamma=0.5, steps=tuple(steps)
    )
    return RunSpec("caffe", "linear.prototxt", net, solver, schedule)


def batch_of(rows: int, seed: int = 0, *, chw=(3, 1, 1), classes=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, *chw)).astype(np.float32)
    return x, rng.integers(0, classes, size=rows)


def weights_and_bias(trainer: Trainer) -> tuple[np.ndarray, np.ndarray]:
    blobs = dict(trainer.network.named_blobs())
    if trainer.network.native == "darknet":
        return blobs["0/1"].astype(np.float64), blobs["0/0"].astype(np.float64)
    return blobs["ip/0"].astype(np.float64), blobs["ip/1"].astype(np.float64)


def hand_first_update(w, b, x, y, lr, decay, bias_decay):
    """``W + lr·(mean (t − p) xᵀ − decay·W)``, the bias likewise (decay only if Caffe's)."""
    x = x.reshape(x.shape[0], -1).astype(np.float64)
    logits = x @ w.T + b
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    t = np.eye(w.shape[0])[y]
    loss = float(np.mean(-np.log(p[np.arange(len(y)), y])))
    w_new = w + lr * ((t - p).T @ x / len(y) - decay * w)
    b_new = b + lr * ((t - p).mean(axis=0) - (decay * b if bias_decay else 0.0))
    return w_new, b_new, loss


# ---- one update against the hand computation -------------------------------------------------
PAIRINGS = [
    ("darknet", "darknet", False),
    ("darknet", "caffe", False),  # darknet net: biases never decay (decay_mult 0)
    ("caffe", "caffe", True),  # Caffe net: biases decay (decay_mult 1)
    ("caffe", "darknet", True),
]


@pytest.mark.parametrize(("net_kind", "semantics", "bias_decay"), PAIRINGS)
def test_first_update_matches_the_hand_computation(net_kind, semantics, bias_decay):
    run = darknet_run() if net_kind == "darknet" else caffe_run()
    x, y = batch_of(4, seed=1)
    trainer = Trainer(run, seed=3, semantics=semantics)
    w0, b0 = weights_and_bias(trainer)
    w_hand, b_hand, loss = hand_first_update(w0, b0, x, y, 0.5, 0.01, bias_decay)
    result = trainer.train_iteration(lambda: (x, y))
    w1, b1 = weights_and_bias(trainer)
    np.testing.assert_allclose(w1, w_hand, atol=2e-6)
    np.testing.assert_allclose(b1, b_hand, atol=2e-6)
    assert result.loss == pytest.approx(loss, rel=1e-5)
    assert (result.iteration, result.seen, result.lr) == (1, 4, 0.5)
    assert trainer.solver.semantics == semantics
    assert trainer.solver.momentum_style == (
        "lr_outside" if semantics == "darknet" else "lr_inside"
    )


@pytest.mark.parametrize("net_kind", ["darknet", "caffe"])
@pytest.mark.parametrize("semantics", ["darknet", "caffe"])
def test_every_pairing_trains_a_tiny_fixed_batch(net_kind, semantics):
    run = darknet_run(momentum=0.9) if net_kind == "darknet" else caffe_run(momentum=0.9)
    x, y = batch_of(4, seed=2)
    trainer = run_fixed_batch(run, x, y, 25, seed=1, semantics=semantics)
    losses = [r.loss for r in trainer.history]
    assert losses[-1] < 0.5 * losses[0]
    assert all(r.non_finite is None for r in trainer.history)


def test_constant_rate_makes_the_two_momentum_styles_agree_and_a_step_separates_them():
    """darknet keeps lr outside its buffer, Caffe inside: equal while lr is constant; after a
    rate change Caffe's history still carries the old rate."""
    x, y = batch_of(4, seed=4)

    def weights(policy, semantics):
        trainer = run_fixed_batch(
            darknet_run(momentum=0.9, policy=policy), x, y, 4, seed=2, semantics=semantics
        )
        return weights_and_bias(trainer)[0]

    np.testing.assert_allclose(
        weights("constant", "darknet"), weights("constant", "caffe"), atol=1e-6
    )
    apart = np.abs(weights("steps", "darknet") - weights("steps", "caffe")).max()
    assert apart > 1e-3


@pytest.mark.parametrize(("net_kind", "semantics", "bias_decay"), PAIRINGS)
def test_five_updates_with_momentum_accumulation_and_a_rate_change_match_the_reference(
    net_kind, semantics, bias_decay
):
    """Momentum .9, two passes per update, a schedule that changes the rate: every pairing
    against the float64 transcription of its loop (tests/reference/training.py)."""
    if net_kind == "darknet":
        run = darknet_run(batch=4, subdivisions=2, momentum=0.9, policy="steps")
        rates = [0.5, 0.05, 0.05, 0.05, 0.05]  # steps=2, scales=.1: rate(b = k)
    else:
        run = caffe_run(minibatch=2, iter_size=2, momentum=0.9, policy="step")
        rates = [0.5 * 0.5**k for k in range(5)]  # stepsize 1, gamma .5: rate(it = k - 1)
    x, y = batch_of(4, seed=14)
    trainer = Trainer(run, seed=2, semantics=semantics)
    w0, b0 = weights_and_bias(trainer)
    next_batch, _ = counting(x, y, 2)
    results = [trainer.train_iteration(next_batch) for _ in range(5)]
    assert [r.lr for r in results] == pytest.approx(rates, rel=1e-6)
    w_ref, b_ref = train_linear_softmax(
        w0,
        b0,
        [(x[:2], y[:2]), (x[2:], y[2:])] * 5,
        rates,
        passes=2,
        momentum=0.9,
        decay=0.01,
        bias_decay=bias_decay,
        semantics=semantics,
    )
    w5, b5 = weights_and_bias(trainer)
    np.testing.assert_allclose(w5, w_ref, atol=1e-5)
    np.testing.assert_allclose(b5, b_ref, atol=1e-5)
    assert np.abs(w5 - w0).max() > 1e-2  # it moved


# ---- loop bookkeeping ------------------------------------------------------------------------
def counting(x, y, bm):
    calls = []

    def next_batch():
        start = (len(calls) % (x.shape[0] // bm)) * bm
        calls.append(start)
        return x[start : start + bm], y[start : start + bm]

    return next_batch, calls


def test_darknet_subdivisions_sum_then_update_with_the_incremented_batch_number():
    run = darknet_run(batch=4, subdivisions=2, policy="steps")
    x, y = batch_of(4, seed=5)
    trainer = Trainer(run, seed=0)
    next_batch, calls = counting(x, y, 2)
    rates = [trainer.train_iteration(next_batch).lr for _ in range(3)]
    assert calls == [0, 2, 0, 2, 0, 2]
    assert trainer.seen == 12 and trainer.iteration == 3
    assert rates == [0.5, pytest.approx(0.05), pytest.approx(0.05)]  # b = 1, 2, 3; steps=2


def test_darknet_loss_is_the_mean_over_subdivisions():
    x, y = batch_of(4, seed=6)
    whole = Trainer(darknet_run(batch=4, subdivisions=1), seed=0).train_iteration(lambda: (x, y))
    halves = Trainer(darknet_run(batch=4, subdivisions=2), seed=0)
    next_batch, _ = counting(x, y, 2)
    split = halves.train_iteration(next_batch)
    assert split.loss == pytest.approx(whole.loss, rel=1e-6)
    w_whole = Trainer(darknet_run(batch=4, subdivisions=1), seed=0)
    w_whole.train_iteration(lambda: (x, y))
    np.testing.assert_allclose(weights_and_bias(halves)[0], weights_and_bias(w_whole)[0], atol=1e-6)


def test_darknet_modulo_test_decides_when_a_misaligned_run_updates():
    """darknet quirk: updates fire when (seen/Bm) % S == 0, so a run resumed with seen one
    mini-batch in needs a single pass for its next update."""
    trainer = Trainer(darknet_run(batch=4, subdivisions=2), seed=0)
    trainer.seen = 2
    x, y = batch_of(2, seed=7)
    next_batch, calls = counting(x, y, 2)
    result = trainer.train_iteration(next_batch)
    assert len(calls) == 1 and result.seen == 4


def test_caffe_iter_size_averages_the_passes():
    x, y = batch_of(4, seed=8)
    one = Trainer(caffe_run(minibatch=4), seed=0)
    one.train_iteration(lambda: (x, y))
    two = Trainer(caffe_run(minibatch=2, iter_size=2), seed=0)
    next_batch, calls = counting(x, y, 2)
    result = two.train_iteration(next_batch)
    assert len(calls) == 2 and result.seen == 4 and result.iteration == 1
    np.testing.assert_allclose(weights_and_bias(two)[0], weights_and_bias(one)[0], atol=1e-6)


def test_lr_is_the_rate_the_next_update_uses():
    x, y = batch_of(4, seed=9)
    for run, semantics in [
        (darknet_run(policy="steps"), "darknet"),
        (darknet_run(policy="steps"), "caffe"),
        (caffe_run(policy="multistep", steps=(1, 2)), "caffe"),
        (caffe_run(policy="step"), "darknet"),
    ]:
        trainer = Trainer(run, seed=0, semantics=semantics)
        for _ in range(4):
            expected = trainer.lr()
            assert trainer.train_iteration(lambda: (x, y)).lr == expected


def test_caffe_schedule_counts_updates_already_applied_and_darknet_batches():
    caffe = Trainer(caffe_run(policy="step"), seed=0)  # stepsize 1, gamma .5: rate(it)
    darknet = Trainer(darknet_run(policy="steps"), seed=0)  # steps=2: rate(b = k)
    x, y = batch_of(4)
    assert [caffe.train_iteration(lambda: (x, y)).lr for _ in range(3)] == [0.5, 0.25, 0.125]
    assert [darknet.train_iteration(lambda: (x, y)).lr for _ in range(2)] == [
        0.5,
        pytest.approx(0.05),
    ]


def test_lr_peeks_without_consuming_the_random_policy_draw():
    run = darknet_run(policy="random")
    x, y = batch_of(4)
    plain, peeked = Trainer(run, seed=3), Trainer(run, seed=3)
    rates = [plain.train_iteration(lambda: (x, y)).lr for _ in range(3)]
    shown = []
    for _ in range(3):
        shown.append(peeked.lr())
        peeked.lr()
        assert peeked.train_iteration(lambda: (x, y)).lr == shown[-1]
    assert shown == rates and len(set(rates)) == 3


# ---- exact resume ----------------------------------------------------------------------------
def _resume_is_exact(run, x, y, tmp_path, semantics=None):
    bm = run.solver.minibatch
    straight = Trainer(run, seed=4, semantics=semantics)
    next_batch, _ = counting(x, y, bm)
    for _ in range(3):
        straight.train_iteration(next_batch)
    path = tmp_path / "state.npz"
    np.savez(path, **straight.state_dict())
    for _ in range(3):
        straight.train_iteration(next_batch)
    resumed = Trainer(run, seed=999, semantics=semantics)  # other seed: state must override it
    with np.load(path) as saved:
        resumed.load_state_dict(dict(saved))
    next_batch2, _ = counting(x, y, bm)
    for _ in range(3):
        next_batch2()  # skip the batches consumed before the save (3 updates' worth)
        if run.solver.accumulate == 2:
            next_batch2()
    for _ in range(3):
        resumed.train_iteration(next_batch2)
    assert resumed.network.params.tobytes() == straight.network.params.tobytes()
    assert resumed.network.grads.tobytes() == straight.network.grads.tobytes()
    assert (resumed.seen, resumed.iteration) == (straight.seen, straight.iteration)


def test_state_dict_resumes_bit_exactly_darknet_dropout(tmp_path):
    """darknet SGD momentum lives in grads, the glibc stream drives the dropout masks."""
    run = load_config("dropout.cfg", text=DARKNET_DROPOUT)
    x, y = batch_of(4, seed=10, chw=(2, 2, 2))
    _resume_is_exact(run, x, y, tmp_path)


def test_state_dict_resumes_bit_exactly_caffe_adam_multistep_dropout(tmp_path):
    run = caffe_run(optimizer="adam", policy="multistep", steps=(2, 4), dropout=True)
    x, y = batch_of(4, seed=11)
    _resume_is_exact(run, x, y, tmp_path)


def test_load_state_dict_rejects_another_network_or_semantics():
    donor = Trainer(darknet_run(), seed=0).state_dict()
    with pytest.raises(TrainerStateError, match="saved under darknet"):
        Trainer(darknet_run(), seed=0, semantics="caffe").load_state_dict(donor)
    with pytest.raises(TrainerStateError, match="another network"):
        Trainer(load_config("d.cfg", text=DARKNET_DROPOUT), seed=0).load_state_dict(donor)
    with pytest.raises(TrainerStateError, match="no 'rng'"):
        Trainer(darknet_run(), seed=0).load_state_dict(
            {k: v for k, v in donor.items() if k != "rng"}
        )


# ---- evaluation ------------------------------------------------------------------------------
def test_evaluate_is_test_mode_and_counts_top1_like_caffe():
    run = load_config("dropout.cfg", text=DARKNET_DROPOUT)
    trainer = Trainer(run, seed=1)
    x, y = batch_of(6, seed=12, chw=(2, 2, 2))
    params = trainer.network.params.copy()
    rng_state = trainer.state_dict()["rng"]
    first = trainer.evaluate([(x[:4], y[:4]), (x[4:], y[4:])])
    second = trainer.evaluate([(x, y)])
    assert first.images == second.images == 6
    assert first.loss == pytest.approx(second.loss, rel=1e-6)  # no dropout: deterministic
    assert first.accuracy == second.accuracy
    assert trainer.network.params.tobytes() == params.tobytes()
    assert trainer.state_dict()["rng"] == rng_state  # no draw consumed
    scores = trainer._eval_network(6).output.reshape(6, -1)
    truth = scores[np.arange(6), y]
    hand = np.mean([(scores[i] >= truth[i]).sum() == 1 for i in range(6)])
    assert second.accuracy == pytest.approx(hand)
    expected_loss = np.mean(-np.log(truth.astype(np.float64)))
    assert second.loss == pytest.approx(expected_loss, rel=1e-5)


# ---- weight files ----------------------------------------------------------------------------
def test_weights_files_load_by_suffix_and_darknet_seen_sets_the_schedule(tmp_path):
    run = darknet_run(policy="steps")
    donor = Trainer(run, seed=5)
    donor.network.params[:] = np.linspace(-1, 1, donor.network.params.size, dtype=np.float32)
    write_darknet_weights(tmp_path / "w.weights", run.net, donor.network.named_blobs, seen=8)
    save_npz_weights(tmp_path / "w.npz", run.net, donor.network.named_blobs)
    write_caffemodel(tmp_path / "w.caffemodel", run.net, donor.network.named_blobs)
    for name in ("w.weights", "w.npz", "w.caffemodel"):
        trainer = Trainer(run, seed=0, weights=str(tmp_path / name))
        assert trainer.network.params.tobytes() == donor.network.params.tobytes(), name
    resumed = Trainer(run, seed=0, weights=str(tmp_path / "w.weights"))
    assert (resumed.seen, resumed.iteration) == (8, 2)
    assert resumed.lr() == pytest.approx(0.05)  # b = 3 > steps=2
    cleared = Trainer(run, seed=0, weights=str(tmp_path / "w.weights"), clear=True)
    assert (cleared.seen, cleared.iteration, cleared.lr()) == (0, 0, 0.5)


# ---- divergence and bad input ----------------------------------------------------------------
def test_divergence_names_where_the_first_non_finite_value_appeared():
    run = darknet_run()
    run = dataclasses.replace(run, schedule=dataclasses.replace(run.schedule, base_lr=1e38))
    x, y = batch_of(4, seed=13)
    x *= 1e4
    trainer = Trainer(run, seed=0)
    results = [trainer.train_iteration(lambda: (x, y)) for _ in range(3)]
    flagged = [r.non_finite for r in results if r.non_finite]
    assert flagged, [r.loss for r in results]
    assert flagged[0].startswith(("layer ", "blob 0/", "loss"))


def test_run_fixed_batch_rejects_a_batch_that_does_not_split_into_minibatches():
    x, y = batch_of(3)
    with pytest.raises(NetworkError, match="multiple of the mini-batch 4"):
        run_fixed_batch(darknet_run(), x, y, 1)


# ---- per-segment gradient norms (IterationResult.grad_norms) ----------------------------------
def _expected_gradient(trainer, passes, semantics):
    """NumPy: this update's gradient from the weights before it, per blob key: darknet
    ``Σ_images (t − p) xᵀ`` over every pass; Caffe ``Σ_passes mean_images (p − t) xᵀ / passes``."""
    w, b = weights_and_bias(trainer)
    gw, gb = np.zeros_like(w), np.zeros_like(b)
    for x, y in passes:
        x = x.reshape(x.shape[0], -1).astype(np.float64)
        p = np.exp(x @ w.T + b)
        p /= p.sum(axis=1, keepdims=True)
        delta = np.eye(w.shape[0])[y] - p
        scale = 1.0 if semantics == "darknet" else -1.0 / (x.shape[0] * len(passes))
        gw, gb = gw + scale * delta.T @ x, gb + scale * delta.sum(axis=0)
    if trainer.network.native == "darknet":
        return {"0/1": gw, "0/0": gb}
    return {"ip/0": gw, "ip/1": gb}


@pytest.mark.parametrize("semantics", ["darknet", "caffe"])
def test_gradient_norms_are_this_updates_gradient_without_the_carried_momentum(semantics):
    """darknet (momentum .9, 2 subdivisions): ‖Σ_B −∂L/∂θ‖ of each update, not of the buffer
    that also holds m·U_prev (the caffe case: iter_size 2, the norm of the mean diff,
    ``Solver::ApplyUpdate``'s input before ClipGradients/Normalize/Regularize)."""
    if semantics == "darknet":
        run = darknet_run(batch=4, subdivisions=2, momentum=0.9, policy="constant")
    else:
        run = caffe_run(minibatch=2, iter_size=2, momentum=0.9)
    x, y = batch_of(4, seed=21)
    trainer = Trainer(run, seed=5)
    next_batch, _ = counting(x, y, 2)
    keys = [s.key for s in trainer.network.segments]
    carried = 0.0
    for _ in range(3):
        expected = _expected_gradient(trainer, [(x[:2], y[:2]), (x[2:], y[2:])], semantics)
        result = trainer.train_iteration(next_batch)
        assert result.grad_norms is not None and result.grad_norms.shape == (len(keys),)
        for key, norm in zip(keys, result.grad_norms, strict=True):
            assert norm == pytest.approx(np.linalg.norm(expected[key]), rel=1e-5, abs=1e-6)
        carried = max(carried, float(np.abs(trainer.backend.to_host(trainer.network.grads)).max()))
    if semantics == "caffe" and trainer._clear_in_update:  # the next ClearParamDiffs, done
        assert carried == 0.0
    else:  # darknet: the buffer carries momentum; Caffe: the last diff
        assert carried > 0


DARKNET_BATCHNORM = """[net]
batch=4
subdivisions=1
height=4
width=4
channels=1
learning_rate=0.1
momentum=0.9
decay=0.0005
policy=constant
max_batches=100

[convolutional]
batch_normalize=1
filters=2
size=3
stride=1
pad=1
activation=leaky

[connected]
output=3
activation=linear

[softmax]
"""


def _host_scan(trainer: Trainer) -> str | None:
    """Reference: copy the parameters and name the first segment holding a NaN or ±inf."""
    params = np.array(trainer.network.params, dtype=np.float32)
    for seg in trainer.network.segments:
        if not np.isfinite(params[seg.offset : seg.offset + seg.size]).all():
            return f"blob {seg.key} ({seg.name})"
    return None


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_param_check_agrees_with_a_host_scan_for_every_segment(value):
    """Every segment, learnable (read from the update's step norms) or not (batch-norm
    rolling statistics, scanned on the buffer), poisoned alone and together with a later
    one: the check names the same first blob as copying and scanning all parameters."""
    run = load_config("bn.cfg", text=DARKNET_BATCHNORM)
    x, y = batch_of(4, seed=3, chw=(1, 4, 4))
    y = np.eye(3, dtype=np.float32)[y]
    segments = Trainer(run, seed=0).network.segments
    assert any(not s.learnable for s in segments) and any(s.learnable for s in segments)
    for index, later in [(i, j) for i in range(len(segments)) for j in (None, len(segments) - 1)]:
        trainer = Trainer(run, seed=0)
        assert trainer.train_iteration(lambda: (x, y)).non_finite is None
        net = trainer.network
        for poisoned in {index, later} - {None}:
            seg = segments[poisoned]
            net.params[seg.offset + seg.size // 2] = value
        stats = trainer.optimizer.step(net.params, net.grads, 0.1, trainer.iteration)
        expected = f"blob {segments[index].key} ({segments[index].name})"
        assert _host_scan(trainer) == expected
        assert trainer._non_finite_param(stats) == expected, (index, later)


def test_poisoned_rolling_mean_is_reported_by_train_iteration():
    """A NaN in a batch-norm rolling mean (not read by a training forward, not updated by
    the optimizer) still surfaces in ``IterationResult.non_finite``."""
    run = load_config("bn.cfg", text=DARKNET_BATCHNORM)
    x, y = batch_of(4, seed=3, chw=(1, 4, 4))
    y = np.eye(3, dtype=np.float32)[y]
    trainer = Trainer(run, seed=0)
    seg = next(s for s in trainer.network.segments if not s.learnable)
    trainer.network.params[seg.offset] = np.nan
    result = trainer.train_iteration(lambda: (x, y))
    assert result.non_finite == f"blob {seg.key} ({seg.name})"


def test_update_that_overflows_finite_weights_is_reported():
    """Finite weights before the update, ±inf after it (float32 overflow in ``w + step``):
    named through the step norm although the weight norm before the update is finite."""
    run = load_config("bn.cfg", text=DARKNET_BATCHNORM)
    trainer = Trainer(run, seed=0)
    net = trainer.network
    seg = next(s for s in net.segments if s.learnable and s.size > 1)
    net.params[seg.offset + 1] = np.float32(3.4e38)
    net.grads[seg.offset + 1] = np.float32(3e38)
    stats = trainer.optimizer.step(net.params, net.grads, 0.1, trainer.iteration)
    assert np.isfinite(stats.weight_norms).all()
    assert np.isinf(net.params[seg.offset + 1])
    assert trainer._non_finite_param(stats) == f"blob {seg.key} ({seg.name})" == _host_scan(trainer)


def test_release_eval_networks_then_evaluate_again_gives_the_same_result():
    """The test-phase networks hold no state: dropped after a test (as the training loop
    does) and rebuilt, they give bit-identical results and leave the training state alone."""
    run = caffe_run()
    trainer = Trainer(run, seed=0)
    x, y = batch_of(6, seed=5)
    trainer.train_iteration(lambda: (x[:4], y[:4]))
    state = trainer.state_dict()
    before = trainer.evaluate([(x[:3], y[:3]), (x[3:], y[3:])])
    trainer.release_eval_networks()
    assert not trainer._eval_networks
    after = trainer.evaluate([(x[:3], y[:3]), (x[3:], y[3:])])
    assert (after.loss, after.accuracy, after.images) == (before.loss, before.accuracy, 6)
    assert trainer.state_dict()["params"].tobytes() == state["params"].tobytes()
