"""``dnupdate lr-schedule``: formats, conventions, configs and options, files, errors."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from dnupdate.cli.main import app

runner = CliRunner()

STEPS_OPTIONS = [
    "--set",
    "policy=steps",
    "--set",
    "learning_rate=0.1",
    "--set",
    "steps=100,200",
    "--set",
    "scales=.1,.1",
    "--set",
    "max_batches=300",
]
LENET_OPTIONS = [
    "--set",
    "lr_policy=inv",
    "--set",
    "base_lr=0.01",
    "--set",
    "gamma=0.0001",
    "--set",
    "power=0.75",
    "--set",
    "max_iter=10000",
]

DARKNET_CFG = """[net]
batch=4
subdivisions=1
height=8
width=8
channels=1
learning_rate=0.1
policy=steps
steps=20,40
scales=.5,.1
burn_in=10
max_batches=60

[connected]
output=2
activation=linear

[softmax]
"""

CAFFE_NET = """name: "tiny"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 2 } }
"""

CAFFE_SOLVER = """# a small solver
net: "tiny_net.prototxt"
base_lr: 0.05
lr_policy: "multistep"
gamma: 0.5
stepvalue: 10
stepvalue: 30
max_iter: 50
momentum: 0.9
"""


def invoke(*args: str):
    return runner.invoke(app, ["lr-schedule", *args])


def parse_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_csv_from_darknet_options():
    result = invoke(*STEPS_OPTIONS, "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = parse_csv(result.stdout)
    assert rows[0] == ["iteration", "lr"]
    body = rows[1:]
    assert [int(r[0]) for r in body] == list(range(1, 301))  # darknet: b = 1..max_batches
    rates = np.float32([float(r[1]) for r in body])
    lr = np.float32(0.1)
    assert np.all(rates[:99] == lr)  # b < 100
    assert rates[99] == lr * np.float32(0.1)  # steps apply from b == step (float32 product)
    assert rates[199] == (lr * np.float32(0.1)) * np.float32(0.1)
    assert "darknet convention" in result.stderr
    assert "\x1b" not in result.stdout


def test_json_from_caffe_options_has_the_published_lenet_value():
    result = invoke(*LENET_OPTIONS, "--format", "json", "--iters", "101")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [row["iteration"] for row in rows] == list(range(0, 101))  # Caffe: it = 0..N-1
    assert set(rows[0]) == {"iteration", "lr"}
    assert f"{rows[100]['lr']:.6g}" == "0.00992565"  # Caffe MNIST tutorial log
    assert "Caffe convention" in result.stderr


def test_csv_values_identify_the_float32_rate():
    result = invoke(*LENET_OPTIONS, "--format", "csv", "--iters", "50")
    rates = [float(row[1]) for row in parse_csv(result.stdout)[1:]]
    expected = [
        np.float32(np.float32(0.01) * np.float32(1 + np.float32(np.float32(1e-4) * it)) ** -0.75)
        for it in range(50)
    ]
    np.testing.assert_allclose(np.float32(rates), np.float32(expected), rtol=2e-7)


def test_table_lists_milestones_and_the_convention(tmp_path):
    cfg = tmp_path / "small.cfg"
    cfg.write_text(DARKNET_CFG)
    result = invoke(str(cfg))
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "darknet convention" in text
    for expected in ("burn-in end", "step", "end"):
        assert expected in text
    lines = {line.split("│")[1].strip(): line for line in text.splitlines() if "│" in line}
    assert {"1", "10", "20", "40", "60"} <= set(lines)
    assert "0.0500000007" in lines["20"]  # 0.1 * 0.5 in float32


def test_several_configs_overlay_and_long_csv(tmp_path):
    cfg = tmp_path / "small.cfg"
    cfg.write_text(DARKNET_CFG)
    (tmp_path / "tiny_net.prototxt").write_text(CAFFE_NET)
    solver = tmp_path / "solver.prototxt"
    solver.write_text(CAFFE_SOLVER)
    result = invoke(str(cfg), str(solver), "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = parse_csv(result.stdout)
    assert rows[0] == ["config", "iteration", "lr"]
    caffe_rows = [r for r in rows[1:] if r[0] == str(solver)]
    assert [int(r[1]) for r in caffe_rows] == list(range(50))
    by_it = {int(r[1]): float(r[2]) for r in caffe_rows}
    assert by_it[9] == pytest.approx(0.05) and by_it[10] == pytest.approx(0.025)
    assert by_it[30] == pytest.approx(0.0125)
    assert len([r for r in rows[1:] if r[0] == str(cfg)]) == 60
    table = invoke(str(cfg), str(solver))
    assert table.exit_code == 0
    assert "Caffe convention" in table.stdout and "darknet convention" in table.stdout


def test_set_overrides_a_config_and_iters_limits(tmp_path):
    cfg = tmp_path / "small.cfg"
    cfg.write_text(DARKNET_CFG)
    result = invoke(str(cfg), "--set", "burn_in=0", "--iters", "25", "--format", "json")
    rows = json.loads(result.stdout)
    assert len(rows) == 25
    assert rows[0]["lr"] == pytest.approx(0.1)  # no burn-in any more


def test_plot_marks_burn_in_and_steps():
    result = invoke(*STEPS_OPTIONS, "--set", "burn_in=50", "--plot")
    assert result.exit_code == 0, result.output
    assert "burn-in end @ 50" in result.stdout
    assert "step @ 100" in result.stdout and "step @ 200" in result.stdout
    assert "⠀" in result.stdout or "⡇" in result.stdout  # braille canvas


def test_plot_goes_to_stderr_with_machine_formats():
    result = invoke(*STEPS_OPTIONS, "--plot", "--format", "csv")
    assert result.exit_code == 0
    assert "step @ 100" in result.stderr
    assert parse_csv(result.stdout)[0] == ["iteration", "lr"]


def test_output_csv_and_svg(tmp_path):
    target = tmp_path / "lr.csv"
    result = invoke(*STEPS_OPTIONS, "--output", str(target))
    assert result.exit_code == 0, result.output
    rows = parse_csv(target.read_text())
    assert rows[0] == ["iteration", "lr"] and len(rows) == 301
    svg = tmp_path / "lr.svg"
    result = invoke(*STEPS_OPTIONS, "--output", str(svg), "--log")
    assert result.exit_code == 0, result.output
    assert "<svg" in svg.read_text()


def test_png_without_matplotlib_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib → ImportError
    result = invoke(*STEPS_OPTIONS, "--output", str(tmp_path / "lr.png"))
    assert result.exit_code == 1
    assert "matplotlib" in result.stderr and "dnupdate[plot]" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib")
def test_png_with_matplotlib(tmp_path):
    target = tmp_path / "lr.png"
    result = invoke(*STEPS_OPTIONS, "--output", str(target))
    assert result.exit_code == 0, result.output
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ([], 2, "give a CONFIG"),
        (["--set", "policy=step", "--set", "step=0", "--set", "max_batches=5"], 1, "step"),
        (["no-such-file.cfg"], 1, "no such file"),
        (["--set", "policy=steps", "--set", "steps=1,2", "--set", "max_batches=5"], 1, "scales"),
        (["--set", "policy=constant"], 1, "--iters"),
        ([*STEPS_OPTIONS, "--output", "lr.gif"], 1, ".gif"),
        (["--set", "lr_policy=inv", "--set", "learning_rate=0.1"], 1, "mix"),
    ],
)
def test_bad_input_is_a_clear_error(args, code, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(*args)
    assert result.exit_code == code, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_lr_schedule_does_not_import_numba(tmp_path):
    code = (
        "import sys\n"
        "from dnupdate.cli.main import app\n"
        "try:\n"
        "    app(['lr-schedule', '--set', 'policy=poly', '--set', 'max_batches=50',"
        " '--plot', '--format', 'json'])\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        "assert 'numba' not in sys.modules, 'numba imported by lr-schedule'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, cwd=tmp_path)


# ---- issue 17 item 21: only the schedule's diagnostics, in line order; clear range; ticks ----

AUGMENTED_CFG = DARKNET_CFG.replace(
    "max_batches=60\n", "max_batches=60\nangle=7\nsaturation=1.5\nhue=.1\nlearning_rat=0.2\n"
)


def test_only_schedule_warnings_are_shown_and_the_rest_counted(tmp_path):
    config = tmp_path / "aug.cfg"
    config.write_text(AUGMENTED_CFG)
    result = invoke(str(config))
    assert result.exit_code == 0, result.output
    assert "angle" not in result.stderr and "saturation" not in result.stderr
    assert "[learning_rat]" in result.stderr  # a likely misspelling of a schedule key stays


def test_diagnostics_of_a_failing_config_come_in_line_order(tmp_path):
    config = tmp_path / "bad.cfg"
    text = AUGMENTED_CFG.replace("scales=.5,.1", "scales=.5")
    config.write_text(text)
    result = invoke(str(config))
    assert result.exit_code == 1
    lines = [int(line.split(":")[1]) for line in result.stderr.splitlines() if line]
    assert lines == sorted(lines) and len(lines) >= 2, result.stderr
    assert "angle" not in result.stderr


def test_range_line_names_start_end_min_and_max():
    result = invoke(*STEPS_OPTIONS, "--set", "burn_in=50")
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "lr from" not in text
    assert "at the start → 0.00100000005 at the end" in text
    assert "lr 1.59999995e-08 at the start" in text  # burn-in starts near 0
    assert "(min 1.59999995e-08, max 0.100000001)" in text


@pytest.mark.parametrize(
    "options",
    [STEPS_OPTIONS, LENET_OPTIONS, [*LENET_OPTIONS, "--log"], [*STEPS_OPTIONS, "--iters", "97"]],
)
def test_plot_ticks_are_round_numbers(options):
    """Every labelled tick of the terminal plot is a short round number (no 38.375000)."""
    result = runner.invoke(app, ["lr-schedule", *options, "--plot"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    y_labels = [line.split("|")[0].strip() for line in lines if "|" in line and "⠀" in line]
    x_axis = next(i for i, line in enumerate(lines) if line.startswith("-----------|-"))
    x_labels = lines[x_axis + 1].split("|", 1)[1].split()
    for label in [*y_labels, *x_labels]:
        assert len(label.lstrip("-").replace(".", "")) <= 6, label
        float(label)  # a number
    steps = np.diff([float(v) for v in x_labels])
    assert np.allclose(steps, steps[0]) and steps[0] > 0
    mantissa = steps[0] / 10 ** np.floor(np.log10(steps[0]))
    assert round(float(mantissa), 6) in (1.0, 2.0, 2.5, 5.0)


# ---- the schedule needs only the solver / [net] (issue 13) ------------------------------------

UNREADABLE_NETS = {
    "missing net file": None,
    "unknown data source": """name: "h5"
layer { name: "data" type: "HDF5Data" top: "data" top: "label"
        hdf5_data_param { source: "nowhere/list.txt" batch_size: 4 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 2 } }
""",
    "unknown layer": """name: "odd"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }
layer { name: "x" type: "NoSuchLayer" bottom: "data" top: "x" }
""",
}


@pytest.mark.parametrize("case", sorted(UNREADABLE_NETS))
def test_caffe_solver_gives_its_schedule_whatever_its_net(case, tmp_path):
    """A solver whose net cannot be built (missing, unknown source, unknown layer) still has a
    schedule: the same rates as a solver over a good net."""
    good = tmp_path / "good"
    good.mkdir()
    (good / "tiny_net.prototxt").write_text(CAFFE_NET)
    (good / "solver.prototxt").write_text(CAFFE_SOLVER)
    bad = tmp_path / "bad"
    bad.mkdir()
    if UNREADABLE_NETS[case] is not None:
        (bad / "tiny_net.prototxt").write_text(UNREADABLE_NETS[case])
    (bad / "solver.prototxt").write_text(CAFFE_SOLVER)
    expected = invoke(str(good / "solver.prototxt"), "--format", "csv")
    result = invoke(str(bad / "solver.prototxt"), "--format", "csv")
    assert expected.exit_code == 0, expected.output
    assert result.exit_code == 0, result.output
    assert result.stdout == expected.stdout
    assert len(parse_csv(result.stdout)) == 51  # header + it = 0..49
    assert "Traceback" not in result.output


def test_darknet_schedule_ignores_layers_and_non_schedule_keys(tmp_path):
    """A cfg with a layer dnupdate cannot build and a non-schedule [net] key it would warn
    about still gives the schedule of its [net], without warnings irrelevant to it."""
    cfg = tmp_path / "odd.cfg"
    cfg.write_text(DARKNET_CFG.replace("[softmax]", "[yolo]\nmask=0\n\n[softmax]") + "\n")
    cfg.write_text(cfg.read_text().replace("channels=1", "channels=1\nhue=.1\nbogus_key=3"))
    plain = tmp_path / "plain.cfg"
    plain.write_text(DARKNET_CFG)
    result = invoke(str(cfg), "--format", "csv")
    expected = invoke(str(plain), "--format", "csv")
    assert result.exit_code == 0, result.output
    assert result.stdout == expected.stdout
    assert "hue" not in result.stderr and "bogus_key" not in result.stderr
    assert "yolo" not in result.stderr


def test_schedule_errors_are_still_reported(tmp_path):
    """Only the net is skipped: a bad schedule key in the solver is still an error."""
    (tmp_path / "solver.prototxt").write_text(CAFFE_SOLVER.replace("gamma: 0.5", "gamma: x"))
    result = invoke(str(tmp_path / "solver.prototxt"))
    assert result.exit_code == 1
    assert "gamma" in result.stderr and "Traceback" not in result.output
