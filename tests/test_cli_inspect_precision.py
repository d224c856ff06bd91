"""``dnupdate inspect`` states the simulated precision model and the effective loss-scaling
rule with the config's numbers: AlexeyAB's static ``loss_scale`` (``lr/S``, ``decay·batch·S``),
GradScaler's fixed or dynamic scale (init/growth/backoff/interval), and each setting's origin."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from dnupdate.cli.main import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def inspect(*args: str) -> dict:
    result = runner.invoke(app, ["inspect", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_fp32_says_nothing_is_rounded_and_adds_no_settings():
    document = inspect("quickstart")
    assert document["precision"] == [
        "float32 throughout (no --precision, loss scale or --no-master-weights)"
    ]
    assert not [row for row in document["settings"] if row["field"].startswith("precision.")]


def test_darknet_static_loss_scale_is_alexeyabs_arithmetic_with_the_numbers(tmp_path):
    from dnupdate.engine.config.builtin import locate_config

    source = Path(locate_config("quickstart")).read_text(encoding="utf-8")
    path = tmp_path / "scaled.cfg"
    path.write_text(source.replace("[net]\n", "[net]\nloss_scale=128\n", 1), encoding="utf-8")
    document = inspect(str(path), "--set", "precision=fp16")
    text = "\n".join(document["precision"])
    # quickstart: lr 0.05, decay 0.0005, batch 64; η/B = float32(0.05)/8192 in float32
    assert "static loss scale S = 128.0 (AlexeyAB darknet loss_scale)" in text
    assert "η = lr/S = 0.05/128.0 = 0.000390625" in text
    assert "−decay·batch·S = −0.0005·64·128.0 = -4.096" in text
    assert "W ← W + (η/B = 6.1035157e-06)·U" in text
    assert "storage fp16 (max 65504, smallest normal 6.1e-05, smallest subnormal 5.96e-08" in text
    settings = {row["field"]: row for row in document["settings"]}
    assert settings["precision.scale"]["value"] == "128.0"
    line = path.read_text(encoding="utf-8").splitlines().index("loss_scale=128") + 1
    assert settings["precision.scale"]["origin"] == f"{path}:{line}"
    assert settings["precision.precision"]["origin"] == "--set"


def test_dynamic_scale_states_gradscalers_rule_with_the_settings():
    document = inspect(
        "quickstart", "--set", "precision=bf16", "--set", "loss_scale=dynamic",
        "--set", "scale_init=1024", "--set", "scale_growth_interval=50",
        "--set", "scale_backoff=0.25", "--set", "master_weights=0",
    )  # fmt: skip
    text = "\n".join(document["precision"])
    assert "storage bf16" in text and "smallest subnormal 9.18e-41" in text
    assert "dynamic loss scale (torch.amp.GradScaler)" in text
    assert "float32(1/S) (= 0.0009765625 at S = 1024.0)" in text
    assert "S starts at 1024.0; on a skipped update S ← S·0.25; after 50 consecutive " in text
    assert "S ← S·2.0" in text
    assert "no master weights: the weights are stored in bf16" in text
    settings = {row["field"]: row["value"] for row in document["settings"]}
    assert settings["precision.growth_interval"] == "50"
    assert settings["precision.master_weights"] == "False"


def test_caffe_static_scale_is_gradscaler_with_a_fixed_scale_in_the_text_output():
    result = runner.invoke(
        app,
        ["inspect", str(ROOT / "configs/lenet_solver.prototxt"), "--set", "precision=fp16",
         "--set", "loss_scale=8"],
        env={"NO_COLOR": "1", "COLUMNS": "300"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Precision (simulated; with this config's numbers)" in result.stdout
    assert "static loss scale (torch.amp.GradScaler)" in result.stdout
    assert "(= 0.125 at S = 8.0) before the sgd rule" in result.stdout
    assert "AlexeyAB" not in result.stdout
