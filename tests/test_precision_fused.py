"""The fused passes of simulated mixed precision give the unfused passes' bits.

* ``fused_update(…, source=S)``: the rule reads the weights from ``S`` and writes ``params``,
  exactly as an in-place update of a copy of ``S`` (every rule, with and without the darknet
  carry, over segments longer than one parallel block);
* ``round_unscale_sum_squares`` (CPU: one pass) against ``Backend``'s default (``round_storage``
  then ``unscale_sum_squares``): buffer, counts and norms, over edge values, every format,
  flush on and off, with and without a factor and a carry, one and two threads;
* whole runs: a trainer on the CPU backend against one whose backend takes the unfused path
  (two passes, the master copied back under ``params`` before an in-place update), darknet
  and Caffe rules, with overflows skipped, AlexeyAB's static scale and no master weights.
"""

from __future__ import annotations

import numpy as np
import pytest

from dnupdate.engine.backends.base import Backend
from dnupdate.engine.backends.cpu import CpuBackend, reduce, share
from dnupdate.engine.backends.cpu import precision as p
from dnupdate.engine.backends.cpu import update as up
from dnupdate.engine.bench.runner import fixed_batch
from dnupdate.engine.bench.workloads import resolve_workload
from dnupdate.engine.config import load_config
from dnupdate.engine.training.step import Trainer

f32 = np.float32

# ---- fused_update with a source ---------------------------------------------------------------

B = up.BLOCK
SIZES = np.array([3, 2 * B + 5, 0, B + 1, 2], dtype=np.int64)
OFFSETS = np.concatenate([[0], np.cumsum(SIZES)[:-1]]).astype(np.int64)
TOTAL = int(SIZES.sum())
RULES = {
    "darknet_sgd": (up.RULE_DARKNET_SGD, 0),
    "darknet_adam": (up.RULE_DARKNET_ADAM, 2),
    "darknet_adamw": (up.RULE_DARKNET_ADAMW, 2),
    "caffe_sgd": (up.RULE_CAFFE_SGD, 1),
    "caffe_nesterov": (up.RULE_CAFFE_NESTEROV, 1),
    "caffe_adadelta": (up.RULE_CAFFE_ADADELTA, 2),
    "caffe_adam": (up.RULE_CAFFE_ADAM, 2),
    "caffe_adamw": (up.RULE_CAFFE_ADAMW, 2),
}
COEF = up.pack_coefficients(
    momentum=0.9, one_minus_momentum=f32(1) - f32(0.9), beta2=0.999,
    one_minus_beta2=f32(1) - f32(0.999), eps=1e-6, correction1=0.19, correction2=0.002,
    one_plus_momentum=f32(1) + f32(0.9), batch=6,
)  # fmt: skip
DARKNET = (up.RULE_DARKNET_SGD, up.RULE_DARKNET_ADAM, up.RULE_DARKNET_ADAMW)


def _update(rule, params, grads, a, b, *, carry=None, source=None):
    rng = np.random.default_rng(1)
    lr = rng.uniform(0.001, 0.1, SIZES.size).astype(f32)
    decay = np.where(np.arange(SIZES.size) % 2, f32(0), f32(-0.0005)).astype(f32)
    step_sq, weight_sq = np.zeros(SIZES.size), np.zeros(SIZES.size)
    grad_sq = None if carry is None else np.zeros(SIZES.size)
    up.fused_update(rule, params, grads, a, b, OFFSETS, SIZES, lr, decay,
                    np.ones(SIZES.size, np.int8), COEF, step_sq, weight_sq, carry=carry,
                    grad_sq=grad_sq, source=source)  # fmt: skip
    return step_sq, weight_sq, grad_sq


CASES = [(name, False) for name in RULES] + [
    (name, True) for name, (rule, _) in RULES.items() if rule in DARKNET
]


@pytest.mark.parametrize(("name", "carried"), CASES)
def test_update_from_a_source_is_the_in_place_update(name, carried):
    rule, states = RULES[name]
    rng = np.random.default_rng(0)
    master = rng.normal(0, 1, TOTAL).astype(f32)
    grads = rng.normal(0, 0.1, TOTAL).astype(f32)
    state = [rng.uniform(0, 0.1, TOTAL if k < states else 0).astype(f32) for k in range(2)]
    carry = rng.normal(0, 0.1, TOTAL).astype(f32) if carried else None

    def run(from_source: bool):
        kept = master.copy()
        params = master.astype(np.float16).astype(f32) if from_source else kept
        bufs = [grads.copy(), *(s.copy() for s in state)]
        mine = None if carry is None else carry.copy()
        sums = _update(rule, params, *bufs, carry=mine, source=kept if from_source else None)
        if from_source:
            np.testing.assert_array_equal(kept, master)  # the source is only read
        return params, bufs, mine, sums

    want, got = run(False), run(True)
    np.testing.assert_array_equal(got[0], want[0])
    for g, w in zip(got[1], want[1], strict=True):
        np.testing.assert_array_equal(g, w)
    if carried:
        np.testing.assert_array_equal(got[2], want[2])
    for g, w in zip(got[3], want[3], strict=True):
        if w is not None:
            np.testing.assert_array_equal(g, w)


def test_a_source_of_another_shape_is_refused():
    params = np.zeros(TOTAL, f32)
    with pytest.raises(ValueError, match="source"):
        _update(up.RULE_DARKNET_SGD, params, params.copy(), np.zeros(0, f32),
                np.zeros(0, f32), source=np.zeros(TOTAL - 1, f32))  # fmt: skip


# ---- rounding and unscaling in one pass ------------------------------------------------------

RB = reduce.BLOCK
#: learnable segments over several blocks, empty (non-learnable) rows and gaps between them
TABLE_OFFSETS = np.array([5, 0, 40, 40 + 2 * RB + 3, 3 * RB, 3 * RB + 900], np.int64)
TABLE_LENGTHS = np.array([30, 0, 2 * RB + 3, 0, 700, RB + 11], np.int64)
SIZE = 4 * RB + 1000


def _gradients(seed: int) -> np.ndarray:
    """Scaled gradients with every rounding case: ties, subnormals, overflow, ±0, ±inf, NaN."""
    rng = np.random.default_rng(seed)
    g = (rng.standard_normal(SIZE) * rng.choice([1e-9, 1e-6, 1e-3, 1.0, 3e4, 1e6], SIZE)).astype(
        f32
    )
    specials = [0.0, -0.0, np.inf, -np.inf, np.nan, 65504.0, 65520.0, 65519.0, 2.0**-24,
                2.0**-25, 3 * 2.0**-25, 1.0 + 2.0**-11, 1.0 + 2.0**-8, 2.0**-133]  # fmt: skip
    where = rng.choice(SIZE, 400, replace=False)
    g[where] = np.resize(np.array(specials, f32), where.size)
    return g


def _both(code, flush, factor, carried, threads, seed=0):
    grads = _gradients(seed)
    carry = (np.random.default_rng(seed + 1).standard_normal(SIZE) * 1e-2).astype(f32)
    out = []
    for fused in (False, True):
        backend = CpuBackend(threads=threads)
        backend.configure(1 << 30)
        buffer = grads.copy()
        counts = np.zeros((TABLE_OFFSETS.size, 3), np.int64)
        sums = np.zeros(TABLE_OFFSETS.size)
        method = backend.round_unscale_sum_squares if fused else (
            lambda *a, b=backend: Backend.round_unscale_sum_squares(b, *a)
        )  # fmt: skip
        method(buffer, TABLE_OFFSETS, TABLE_LENGTHS, code, counts, flush, factor,
               carry if carried else None, sums)  # fmt: skip
        out.append((buffer, counts, sums))
    share.set_threads(None)
    return out


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    ("code", "flush", "factor", "carried"),
    [
        (p.FP16, False, float(f32(2.0**-16)), True),
        (p.FP16, False, 1.0, False),
        (p.FP16, True, 1.0, True),
        (p.BF16, False, float(f32(1 / 3)), True),
        (p.BF16, True, float(f32(2.0**-7)), False),
        (p.FP32, False, float(f32(2.0**-16)), True),
    ],
    ids=[
        "fp16-unscale-carry",
        "fp16-plain",
        "fp16-flush",
        "bf16-odd-factor",
        "bf16-flush",
        "fp32",
    ],
)
def test_round_unscale_in_one_pass_is_the_two_passes(code, flush, factor, carried, threads):
    (want_buf, want_counts, want_sums), (buf, counts, sums) = _both(
        code, flush, factor, carried, threads
    )
    np.testing.assert_array_equal(buf.view(np.uint32), want_buf.view(np.uint32))
    np.testing.assert_array_equal(counts, want_counts)
    np.testing.assert_array_equal(sums.view(np.uint64), want_sums.view(np.uint64))
    assert want_counts[:, 0].sum() > 0 and want_counts[:, 2].sum() > 0  # cases were exercised
    assert want_counts[:, 1].sum() > 0 or code != p.FP16  # fp16 flushes the 1e-9 scale
    assert np.all(want_counts[TABLE_LENGTHS == 0] == 0)


def test_round_unscale_checks_its_arguments():
    backend = CpuBackend()
    buffer = np.zeros(SIZE, f32)
    counts, sums = np.zeros((TABLE_OFFSETS.size, 3), np.int64), np.zeros(TABLE_OFFSETS.size)
    args = (TABLE_OFFSETS, TABLE_LENGTHS, p.FP16)
    with pytest.raises(p.KernelArgumentError, match="counts"):
        backend.round_unscale_sum_squares(buffer, *args, counts[:2], False, 1.0, None, sums)
    with pytest.raises(p.KernelArgumentError, match="carry"):
        backend.round_unscale_sum_squares(buffer, *args, counts, False, 1.0, buffer[:9], sums)
    with pytest.raises(p.KernelArgumentError, match="out"):
        backend.round_unscale_sum_squares(buffer, *args, counts, False, 1.0, None, sums[:2])


# ---- whole runs: fused against unfused -------------------------------------------------------


class UnfusedCpu(CpuBackend):
    """The CPU backend taking the unfused path: rounding and unscaling as two passes
    (``Backend``'s default), and an update given a ``source`` copies it under ``params`` first
    (the master back before an in-place update, as ``MixedPrecision.end_passes`` did)."""

    def round_unscale_sum_squares(self, *args):
        Backend.round_unscale_sum_squares(self, *args)

    def fused_update(self, rule, params, grads, state_a, state_b, offsets, sizes, *rest,
                     source=None, **kwargs):  # fmt: skip
        if source is not None:
            for offset, size in zip(offsets.tolist(), sizes.tolist(), strict=True):
                params[offset : offset + size] = source[offset : offset + size]
        super().fused_update(rule, params, grads, state_a, state_b, offsets, sizes, *rest,
                             **kwargs)  # fmt: skip


def _train(config: str, keys: dict[str, str], backend: CpuBackend, updates: int):
    run = load_config(config, list(keys.items()))
    trainer = Trainer(run, backend=backend)
    net = trainer.network
    x, y = fixed_batch(net.input_shape, max(2, net.output.size // net.batch), 4)
    results = [trainer.train_iteration(lambda: (x, y)) for _ in range(updates)]
    return trainer, results


WHOLE_RUNS = {
    "darknet-dynamic-overflow": (
        "quickstart",
        {
            "precision": "fp16",
            "loss_scale": "dynamic",
            "scale_init": "1e9",
            "scale_backoff": "0.0001",
            "scale_growth_interval": "2",
        },
    ),
    "darknet-bn-bf16": (
        resolve_workload("cifar-small-bn").config,
        {"precision": "bf16", "loss_scale": "dynamic", "batch": "8", "subdivisions": "2"},
    ),
    "darknet-alexeyab-static": ("quickstart", {"precision": "fp16", "loss_scale": "1024"}),
    "darknet-no-master": (
        "quickstart",
        {"precision": "fp16", "loss_scale": "dynamic", "master_weights": "0"},
    ),
    "caffe-dynamic-overflow": (
        resolve_workload("lenet").config,
        {
            "precision": "fp16",
            "loss_scale": "dynamic",
            "scale_init": "1e9",
            "scale_backoff": "0.0001",
            "scale_growth_interval": "2",
        },
    ),
}


@pytest.mark.parametrize("name", list(WHOLE_RUNS))
def test_fused_training_is_the_unfused_training_bit_for_bit(name):
    config, keys = WHOLE_RUNS[name]
    fused, got = _train(config, keys, CpuBackend(threads=2), 6)
    plain, want = _train(config, keys, UnfusedCpu(threads=2), 6)
    np.testing.assert_array_equal(fused.network.params, plain.network.params)
    np.testing.assert_array_equal(fused.network.grads, plain.network.grads)
    for key, value in plain.optimizer.state_arrays().items():
        np.testing.assert_array_equal(fused.optimizer.state_arrays()[key], value)
    for g, w in zip(got, want, strict=True):
        assert g.precision == w.precision
        assert g.loss == w.loss
        np.testing.assert_array_equal(g.grad_norms, w.grad_norms)
        np.testing.assert_array_equal(g.stats.step_norms, w.stats.step_norms)
        np.testing.assert_array_equal(g.stats.weight_norms, w.stats.weight_norms)
    if "overflow" in name:  # both branches taken: skipped and applied updates
        skipped = [r.precision.skipped for r in got]
        assert any(skipped) and not all(skipped)


@pytest.mark.parametrize(
    "config", ["quickstart", resolve_workload("lenet").config], ids=["darknet", "caffe"]
)
def test_a_skipped_update_leaves_the_master_weights_as_they_were(config):
    """The passes ran on the rounded working copy under ``params``; a skipped update puts the
    master back (no rule runs to write it)."""
    keys = {"precision": "fp16", "loss_scale": "dynamic", "scale_init": "1e9"}
    trainer = Trainer(load_config(config, list(keys.items())), backend=CpuBackend())
    net = trainer.network
    before = net.params.copy()
    assert not np.array_equal(before, before.astype(np.float16).astype(f32))
    x, y = fixed_batch(net.input_shape, max(2, net.output.size // net.batch), 4)
    result = trainer.train_iteration(lambda: (x, y))
    assert result.precision.skipped
    np.testing.assert_array_equal(net.params, before)
