"""Caffe solvers take the simulated mixed-precision keys as dnupdate extension fields
(``precision: "fp16"``, ``loss_scale: 128`` or ``"dynamic"``, ``scale_*``,
``master_weights``): typed and checked by the same reader as darknet's ``[net]`` keys, each
with its FILE:LINE origin and an extension warning, ``--set`` winning over the file."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from dnupdate.cli.main import app
from dnupdate.engine.config import load_config
from dnupdate.engine.spec import ConfigError
from tests.test_config_caffe import net_text, write_net

runner = CliRunner()
BASE = 'net: "net.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\nmax_iter: 4\n'


def solver(tmp_path: Path, extra: str, suffix: str = ".prototxt") -> Path:
    path = write_net(tmp_path, net_text("", "data"), BASE + extra)
    if suffix != ".prototxt":
        path = path.rename(path.with_suffix(suffix))
    return path


def test_solver_extension_keys_set_the_precision_with_origins_and_warnings(tmp_path):
    extra = (
        'precision: "fp16"\nloss_scale: "dynamic"\nscale_init: 1024\nscale_backoff: 0.25\n'
        "scale_growth: 4\nscale_growth_interval: 50\nmaster_weights: false\n"
    )
    path = solver(tmp_path, extra)
    run = load_config(str(path))
    p = run.precision
    assert (p.precision, p.loss_scale, p.scale) == ("fp16", "dynamic", 1024.0)
    assert (p.backoff, p.growth, p.growth_interval, p.master_weights) == (0.25, 4.0, 50, False)
    assert run.origins["precision.precision"].line == 5
    assert run.origins["precision.master_weights"].line == 11
    warned = {d.key for d in run.diagnostics if "dnupdate extension" in d.message}
    assert warned == {
        "precision", "loss_scale", "scale_init", "scale_backoff", "scale_growth",
        "scale_growth_interval", "master_weights",
    }  # fmt: skip


def test_an_unquoted_number_is_a_static_scale_and_set_wins(tmp_path):
    path = solver(tmp_path, "loss_scale: 128\n")
    run = load_config(str(path))
    assert (run.precision.precision, run.precision.loss_scale) == ("fp32", "static")
    assert run.precision.scale == 128.0
    run = load_config(str(path), [("loss_scale", "dynamic"), ("precision", "bf16")])
    assert (run.precision.precision, run.precision.loss_scale) == ("bf16", "dynamic")
    assert str(run.origins["precision.loss_scale"]) == "--set"


def test_yaml_solver_takes_them_too(tmp_path):
    path = tmp_path / "solver.yaml"
    write_net(tmp_path, net_text("", "data"))
    path.write_text(
        "net: net.prototxt\nbase_lr: 0.1\nlr_policy: fixed\nprecision: bf16\nloss_scale: 8\n"
    )
    run = load_config(str(path))
    assert (run.precision.precision, run.precision.loss_scale, run.precision.scale) == (
        "bf16", "static", 8.0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "key", "line"),
    [
        ('precision: "fp8"\n', "precision", 5),
        ("display: 1\nscale_growth_interval: 0\n", "scale_growth_interval", 6),
        ('loss_scale: "dynamic"\nscale_backoff: 2\n', "scale_backoff", 6),
    ],
)
def test_bad_values_name_file_line_and_key(tmp_path, extra, key, line):
    path = solver(tmp_path, extra)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert f"{path}:{line}: error [{key}]" in str(caught.value)


def test_train_reports_the_bad_key_and_exits_1(tmp_path):
    path = solver(tmp_path, 'precision: "fp8"\n')
    result = runner.invoke(app, ["train", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert f"{path}:5: error [precision]: 'fp8': expected one of fp32, fp16, bf16" in result.stderr
    assert "Traceback" not in result.output
