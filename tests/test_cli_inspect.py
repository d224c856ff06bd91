"""``dnupdate inspect``: every example config and every Debian darknet cfg gives a full report or
one clean error; shapes, origins and the update rule are shown."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dnupdate.cli.main import app

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(
    p
    for p in (ROOT / "configs").iterdir()
    if p.suffix == ".cfg" or (p.suffix in (".prototxt", ".yaml") and "solver" in p.name)
)
DEBIAN_CFGS = sorted(Path("/usr/share/darknet/cfg").glob("*.cfg"))

runner = CliRunner()


def inspect_json(*args: str) -> dict:
    result = runner.invoke(app, ["inspect", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("config", EXAMPLES, ids=lambda p: p.name)
def test_every_example_config_inspects(config):
    result = runner.invoke(app, ["inspect", str(config)])
    assert result.exit_code == 0, result.output
    assert "Layers" in result.stdout
    assert "Update rule" in result.stdout


@pytest.mark.skipif(not DEBIAN_CFGS, reason="Debian's darknet package is not installed")
@pytest.mark.parametrize("config", DEBIAN_CFGS, ids=lambda p: p.name)
def test_every_debian_cfg_gives_a_report_or_one_clean_error(config):
    result = runner.invoke(app, ["inspect", str(config), "--format", "json"])
    if result.exit_code == 0:
        document = json.loads(result.stdout)
        assert document["layers"], "a loadable cfg has layers"
        return
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if ": error" in line]
    assert errors, result.output
    assert errors[0].startswith(str(config)), errors[0]


def test_caffe_cifar10_quick_first_inner_product_sees_1024_inputs():
    document = inspect_json(str(ROOT / "configs/cifar10_quick_solver.prototxt"))
    layers = {layer["name"]: layer for layer in document["layers"]}
    assert layers["pool1"]["output"] == [32, 16, 16]
    assert layers["ip1"]["input"] == [64, 4, 4]
    assert document["total_params"] == 145_578


def test_darknet_cifar_shapes_match_darknets_printout():
    """darknet prints for cfg/cifar.cfg (28×28 crops): 128 3×3 convs keep 28×28, each 2×2/2
    maxpool halves it (28 → 14 → 7), the 1×1 conv makes 10 channels, avgpool 1×1×10."""
    document = inspect_json(str(ROOT / "configs/darknet_cifar.cfg"))
    outputs = [tuple(layer["output"]) for layer in document["layers"]]
    kinds = [layer["kind"] for layer in document["layers"]]
    size = document["input"][1]
    assert outputs[0] == (128, size, size)
    pools = [out for out, kind in zip(outputs, kinds, strict=True) if kind == "pool"]
    assert pools[0] == (128, (size + 1) // 2, (size + 1) // 2)
    assert pools[-1] == (10, 1, 1)  # the global [avgpool]


def test_origins_name_file_and_line_and_set_overrides():
    config = ROOT / "configs/mnist_lenet.cfg"
    document = inspect_json(str(config), "--set", "momentum=0.8")
    settings = {row["field"]: row for row in document["settings"]}
    assert settings["solver.momentum"]["value"] == "0.8"
    assert settings["solver.momentum"]["origin"] == "--set"
    origin = settings["schedule.base_lr"]["origin"]
    path, line = origin.rsplit(":", 1)
    assert path == str(config)
    assert "learning_rate" in config.read_text().splitlines()[int(line) - 1]


def test_update_rule_written_with_the_configs_numbers():
    document = inspect_json(str(ROOT / "configs/mnist_lenet.cfg"))
    text = "\n".join(document["update_rule"])
    # mnist_lenet.cfg: batch 64, learning_rate 0.01, decay 0.0005, momentum 0.9
    assert "-0.032" in text  # −decay·B
    assert "0.00015625" in text  # lr/B
    assert "0.9·U" in text


def test_semantics_switch_changes_the_rule():
    darknet = inspect_json(str(ROOT / "configs/lenet_solver.prototxt"), "--semantics", "darknet")
    assert darknet["semantics"] == "darknet"
    caffe = inspect_json(str(ROOT / "configs/lenet_solver.prototxt"))
    assert darknet["update_rule"] != caffe["update_rule"]


def test_bad_config_is_one_clean_error(tmp_path):
    bad = tmp_path / "bad.cfg"
    bad.write_text("[net]\nbatch=4\nwidth=8\nheight=8\nchannels=1\n[yolo]\n")
    result = runner.invoke(app, ["inspect", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:6" in result.stderr
    assert "Traceback" not in result.output


def test_unknown_set_key_is_an_error():
    result = runner.invoke(
        app, ["inspect", str(ROOT / "configs/mnist_lenet.cfg"), "--set", "learning_rat=1"]
    )
    assert result.exit_code == 1
    assert "learning_rat" in result.stderr
