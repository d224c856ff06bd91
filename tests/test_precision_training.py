"""Simulated mixed precision in training (issue 14's done-when checks): the GradScaler state
machine, AlexeyAB's static ``loss_scale`` arithmetic, fp32 bit-identity, the static scale
cancelling in fp32, bf16 and no-master-weights runs, resume with a scaler, and the
quickstart fp16 run with dynamic scaling through the CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from dnupdate.cli.main import app
from dnupdate.engine.config import load_config
from dnupdate.engine.spec import ConfigError, PrecisionSpec
from dnupdate.engine.training.step import Trainer, run_fixed_batch
from dnupdate.engine.update.rules import make_optimizer
from dnupdate.engine.update.scaler import LossScaler

F32 = np.float32
runner = CliRunner()


def batch(n: int = 64, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)


def quickstart(**keys: str):
    return load_config("quickstart", list(keys.items()))


# ---- the scaler ------------------------------------------------------------------------------


def gradscaler_reference(found: list[bool], scale, growth, backoff, interval):
    """torch's ``_amp_update_scale_`` written out: (scale, tracker) after each step."""
    tracker, out = 0, []
    for inf in found:
        if inf:
            scale, tracker = float(F32(scale * backoff)), 0
        elif tracker + 1 == interval:
            scale, tracker = float(F32(scale * growth)), 0
        else:
            tracker += 1
        out.append((scale, tracker))
    return out


def test_scaler_follows_gradscalers_rule():
    rng = np.random.default_rng(0)
    found = [bool(x) for x in rng.random(400) < 0.05]
    spec = PrecisionSpec("fp16", "dynamic", 65536.0, 2.0, 0.5, 7)
    scaler = LossScaler.from_spec(spec)
    got = []
    for inf in found:
        scaler.update(inf)
        got.append((scaler.scale, scaler.tracker))
    assert got == gradscaler_reference(found, 65536.0, 2.0, 0.5, 7)
    assert scaler.skipped == sum(found)
    assert scaler.inv_scale == F32(1.0 / scaler.scale)


def test_static_scaler_never_moves():
    scaler = LossScaler.from_spec(PrecisionSpec("fp16", "static", 128.0))
    for inf in (True, False, False):
        scaler.update(inf)
    assert (scaler.scale, scaler.tracker, scaler.skipped) == (128.0, 0, 1)


# ---- AlexeyAB's static loss_scale in the darknet SGD rule ---------------------------------


def test_darknet_loss_scale_update_matches_alexeyabs_arithmetic():
    run = quickstart()
    trainer = Trainer(run)
    segments = trainer.network.segments
    n = trainer.network.params.size
    optimizer = make_optimizer(trainer.solver, segments, n)
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.1, n).astype(F32)
    u = (rng.normal(0, 1, n) * 128).astype(F32)  # S-scaled momentum and gradient
    lr, scale = 0.05, 128.0
    s = trainer.solver
    params, grads = w.copy(), u.copy()
    optimizer.step(params, grads, lr, 0, loss_scale=scale)
    # update_convolutional_layer_gpu: η = lr·lr_scale/S; U += (−decay·batch·S)·W;
    # W += (η/batch)·U; U *= momentum (biases: no decay)
    eta = F32(F32(lr) * F32(1.0)) / F32(scale)
    alpha = F32(eta / F32(s.batch))
    delta = F32(F32(-F32(s.decay) * F32(s.batch)) * F32(scale))
    want_w, want_u = w.copy(), u.copy()
    for seg in segments:
        part = slice(seg.offset, seg.offset + seg.size)
        if seg.decay_mult:
            want_u[part] = want_u[part] + delta * want_w[part]
        want_w[part] = want_w[part] + alpha * want_u[part]
        want_u[part] = want_u[part] * F32(s.momentum)
    np.testing.assert_array_equal(params, want_w)
    np.testing.assert_array_equal(grads, want_u)


# ---- whole-run properties --------------------------------------------------------------------


def test_fp32_flag_builds_nothing_and_is_bit_identical():
    x, y = batch()
    plain = run_fixed_batch(quickstart(), x, y, 4)
    flagged = run_fixed_batch(quickstart(precision="fp32", loss_scale="none"), x, y, 4)
    assert flagged.mixed is None
    np.testing.assert_array_equal(flagged.network.params, plain.network.params)
    np.testing.assert_array_equal(flagged.network.grads, plain.network.grads)


def test_static_scale_in_fp32_cancels():
    x, y = batch()
    plain = run_fixed_batch(quickstart(), x, y, 20)
    scaled = run_fixed_batch(quickstart(loss_scale="128"), x, y, 20)
    assert scaled.mixed is not None and scaled.mixed.alexeyab
    a, b = plain.network.params, scaled.network.params
    assert np.linalg.norm(a - b) <= 1e-4 * np.linalg.norm(a)
    # the momentum buffer holds S-scaled values (a power of two: exact in float32)
    np.testing.assert_array_equal(scaled.network.grads, plain.network.grads * F32(128))


def test_bf16_runs_and_stores_bf16_values():
    x, y = batch()
    trainer = run_fixed_batch(quickstart(precision="bf16", loss_scale="dynamic"), x, y, 5)
    losses = [r.loss for r in trainer.history]
    assert all(np.isfinite(losses))
    assert not any(r.precision.skipped for r in trainer.history)  # bf16 range: no overflow
    report = trainer.history[-1].precision
    assert report is not None and set(report.update_lost) == {"0", "2", "4"}


def test_without_master_weights_the_weights_stay_fp16():
    x, y = batch()
    run = quickstart(precision="fp16", loss_scale="dynamic", master_weights="0")
    trainer = run_fixed_batch(run, x, y, 12)
    params = trainer.network.params
    learnable = np.concatenate(
        [params[s.offset : s.offset + s.size] for s in trainer.network.segments if s.learnable]
    )
    np.testing.assert_array_equal(learnable, learnable.astype(np.float16).astype(F32))
    applied = [r.precision for r in trainer.history if not r.precision.skipped]
    assert applied and max(max(p.update_lost.values()) for p in applied) > 0


def test_resume_carries_the_scaler_state_bit_exactly():
    x, y = batch()
    run = quickstart(precision="fp16", loss_scale="dynamic", scale_growth_interval="3")
    whole = run_fixed_batch(run, x, y, 10)
    first = run_fixed_batch(run, x, y, 6)
    state = first.state_dict()
    assert state["scaler/scale"] == first.mixed.scaler.scale
    second = Trainer(run)
    second.load_state_dict(state)
    cursor = [0]

    def next_batch():
        cursor[0] += 1
        return x, y

    for _ in range(4):
        second.train_iteration(next_batch)
    assert second.mixed.scaler.state_dict() == whole.mixed.scaler.state_dict()
    np.testing.assert_array_equal(second.network.params, whole.network.params)


def test_bad_precision_values_name_the_key():
    with pytest.raises(ConfigError, match=r"\[precision\].*fp8"):
        quickstart(precision="fp8")
    with pytest.raises(ConfigError, match=r"\[scale_backoff\]"):
        quickstart(loss_scale="dynamic", scale_backoff="2")


def test_darknet_net_loss_scale_key(tmp_path):
    from dnupdate.engine.config.builtin import locate_config

    with open(locate_config("quickstart"), encoding="utf-8") as handle:
        source = handle.read()
    path = tmp_path / "scaled.cfg"
    path.write_text(source.replace("[net]\n", "[net]\nloss_scale=256\n", 1), encoding="utf-8")
    run = load_config(str(path))
    assert (run.precision.loss_scale, run.precision.scale) == ("static", 256.0)
    assert not [d for d in run.diagnostics if d.key == "loss_scale"]
    path.write_text(source.replace("[net]\n", "[net]\nloss_scale=big\n", 1), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"scaled.cfg:\d+: error \[loss_scale\]"):
        load_config(str(path))


# ---- the done-when run, through the CLI -----------------------------------------------------


def test_quickstart_fp16_dynamic_learns_and_the_scale_moves_by_the_rule(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "train", "quickstart", "--precision", "fp16", "--loss-scale", "dynamic",
            "--scale-growth-interval", "20", "--max-iters", "150", "--out", str(out),
            "--json", "--quiet",
        ],
        env={"NO_COLOR": "1"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_accuracy"] >= 0.9
    with open(out / "metrics.csv", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["kind"] == "train"]
    scales = [float(r["loss_scale"]) for r in rows]
    overflow = [r["overflow"] == "1" for r in rows]
    assert any(overflow) and not all(overflow)
    clean = 0
    for i in range(1, len(rows)):
        prev = rows[i - 1]
        if overflow[i - 1]:
            assert scales[i] == scales[i - 1] / 2
            assert all(float(prev[f"{layer}.dw_norm"]) == 0 for layer in ("0", "2", "4"))
            clean = 0
        else:
            clean += 1
            assert scales[i] == (scales[i - 1] * 2 if clean == 20 else scales[i - 1])
            clean %= 20
    assert summary["precision"]["skipped_updates"] == sum(overflow)
    events = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    reported = [e for e in events if e["event"] == "precision_reported"]
    assert [e["loss_scale"] for e in reported] == scales
    assert summary["precision"]["final_scale"] == reported[-1]["next_scale"]


def test_master_weights_flags_reach_the_run_and_exclude_each_other(tmp_path):
    both = runner.invoke(app, ["train", "quickstart", "--master-weights", "--no-master-weights"])
    assert both.exit_code == 2 and "give one" in both.output
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "train", "quickstart", "--precision", "fp16", "--no-master-weights",
            "--max-iters", "2", "--out", str(out), "--quiet", "--eval-every", "0",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    info = json.loads((out / "run.json").read_text())
    assert ["master_weights", "0"] in info["overrides"]
