"""``dnupdate bench --precision fp16|bf16``: a second worker of ours trains each workload in the
simulated precision, windows interleaved with float32; the result carries its images/s and the
step-time ratio. No timing is asserted (only the arithmetic between the printed numbers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dnupdate.engine.bench.measure import BenchResult
from dnupdate.engine.bench.runner import dnupdate_runner, precision_overrides
from dnupdate.engine.bench.workloads import BenchError, BenchSettings
from tests.test_bench import ISSUE_FIELDS, TINY_CFG

PRECISION_FIELDS = {"precision", "precision_images_per_s", "step_time_ratio"}


@pytest.fixture
def tiny_cfg(tmp_path):
    path = tmp_path / "tiny.cfg"
    path.write_text(TINY_CFG)
    return path


def bench(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "from dnupdate.cli.main import app; app()", "bench", *args]
    env = {**os.environ, "COLUMNS": "250"}  # the table on one line per row
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def test_overrides_are_the_precision_with_dynamic_scaling():
    assert precision_overrides("fp32") == ()
    assert precision_overrides("bf16") == (("precision", "bf16"), ("loss_scale", "dynamic"))


def test_the_runner_trains_in_the_simulated_precision(tiny_cfg):
    settings = BenchSettings(threads=1)
    runner = dnupdate_runner(str(tiny_cfg), settings, precision_overrides("fp16"))
    runner.timed("train", 2)
    plain = dnupdate_runner(str(tiny_cfg), settings)
    assert runner.batch == plain.batch == 4


def test_settings_refuse_unknown_formats_and_two_comparisons():
    with pytest.raises(BenchError, match="expected one of fp16, bf16"):
        BenchSettings(threads=1, precision="fp8").check()
    with pytest.raises(BenchError, match="one at a time"):
        BenchSettings(threads=1, precision="fp16", vs_torch=True).check()


def test_result_json_adds_the_precision_fields_only_when_compared():
    base = BenchResult("lenet", "train", 2, 64, 100.0, 90.0, 110.0, 1.5, 0.01, 0.2, 150.0)
    assert not PRECISION_FIELDS & set(base.as_json())
    compared = BenchResult(
        "lenet", "train", 2, 64, 100.0, 90.0, 110.0, 1.5, 0.01, 0.2, 150.0,
        precision="fp16", precision_images_per_s=80.0, step_time_ratio=1.25,
    )  # fmt: skip
    assert set(compared.as_json()) == ISSUE_FIELDS | PRECISION_FIELDS


def test_bench_precision_json_and_table(tiny_cfg):
    done = bench(
        str(tiny_cfg), "--threads", "1", "--windows", "2", "--iters", "2", "--mode", "train",
        "--precision", "fp16", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (row,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert set(row) == ISSUE_FIELDS | PRECISION_FIELDS and row["precision"] == "fp16"
    ratio = row["images_per_s"] / row["precision_images_per_s"]
    assert row["step_time_ratio"] == pytest.approx(ratio, rel=1e-3)
    done = bench(
        str(tiny_cfg), "--threads", "1", "--windows", "1", "--iters", "1", "--warmup", "1",
        "--mode", "train", "--precision", "bf16",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "bf16 images/s" in done.stdout and "bf16/fp32 step" in done.stdout
    assert "target ≤ 1.5×" in done.stdout
    assert "step time" in done.stderr and "× float32" in done.stderr


def test_bench_precision_with_vs_torch_exits_1(tiny_cfg):
    done = bench(str(tiny_cfg), "--precision", "fp16", "--vs", "torch")
    assert done.returncode == 1 and "one at a time" in done.stderr
    assert "Traceback" not in done.stderr
