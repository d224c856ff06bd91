"""Every problem in a Caffe config is a diagnostic with file, line, key and message: schema
errors (as protobuf rejects them), Caffe's fatal checks, unsupported layers, broken chains."""

import subprocess
import sys
from pathlib import Path

import pytest

from dnupdate.engine.config import load_config
from dnupdate.engine.spec import ConfigError

GOOD_NET = """name: "n"
layer { name: "d" type: "Data" top: "data" top: "label"
  data_param { source: "mnist" batch_size: 8 backend: LMDB } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 10 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
SOLVER = 'net: "net.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\n'


def errors_of(tmp_path: Path, solver: str = SOLVER, net: str = GOOD_NET, name="solver.prototxt"):
    (tmp_path / "net.prototxt").write_text(net)
    path = tmp_path / name
    path.write_text(solver)
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    found = [d for d in info.value.diagnostics if d.severity == "error"]
    assert found
    return found


def the_error(tmp_path: Path, words: str, **kwargs):
    found = [d for d in errors_of(tmp_path, **kwargs) if words in d.message]
    assert found, f"no error mentions {words!r}"
    return found[0]


def net_with(layer_text: str, bottom_of_ip: str = "x") -> str:
    """GOOD_NET with ``layer_text`` between the data layer and the InnerProduct (which reads
    ``bottom_of_ip``)."""
    head, tail = GOOD_NET.split('layer { name: "ip"')
    tail = tail.replace('bottom: "data"', f'bottom: "{bottom_of_ip}"', 1)
    return head + layer_text + '\nlayer { name: "ip"' + tail


def layer_line(net: str, needle: str) -> int:
    return next(i + 1 for i, line in enumerate(net.splitlines()) if needle in line)


# --------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------


def test_unknown_solver_field_suggests_a_close_match(tmp_path):
    error = the_error(tmp_path, "unknown field", solver=SOLVER + "momentun: 0.9\n")
    assert (error.file, error.line, error.key) == (str(tmp_path / "solver.prototxt"), 4, "momentun")
    assert "did you mean 'momentum'" in error.message


def test_unknown_net_field_names_the_net_file_and_line(tmp_path):
    net = net_with(
        'layer { name: "c" type: "Convolution" bottom: "data" top: "x"\n'
        "  convolution_param { num_output: 2 kernal_size: 3 } }"
    )
    error = the_error(tmp_path, "unknown field 'kernal_size'", net=net)
    assert error.file == str(tmp_path / "net.prototxt")
    assert error.line == layer_line(net, "kernal_size")
    assert "did you mean 'kernel_size'" in error.message
    assert "ConvolutionParameter" in error.message


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ('base_lr: "fast"', "expected a number"),
        ("max_iter: 1.5", "expected an integer"),
        ("max_iter: 3000000000", "out of range"),
        ("lr_policy: inv", "expected a quoted string"),
        ("test_initialization: maybe", "expected true or false"),
        ("solver_mode: TPU", "unknown value 'TPU'"),
        ("snapshot_format: 7", "expected one of"),
        ("display { x: 1 }", "takes a value"),
        ("train_state: 3", "is a message"),
    ],
)
def test_wrong_scalar_types(tmp_path, line, words):
    key = line.split(":")[0].split(" ")[0]
    rest = [item for item in SOLVER.splitlines()[1:] if not item.startswith(key + ":")]
    solver = 'net: "net.prototxt"\n' + line + "\n" + "\n".join(rest) + "\n"
    error = the_error(tmp_path, words, solver=solver)
    assert error.line == 2 and error.key == key


def test_singular_field_twice_is_a_parse_error(tmp_path):
    error = the_error(tmp_path, "specified multiple times", solver=SOLVER + "base_lr: 0.2\n")
    assert (error.line, error.key) == (4, "base_lr")
    assert "line 2" in error.message


def test_all_problems_are_reported_together(tmp_path):
    found = errors_of(tmp_path, solver=SOLVER + "momentun: 1\ndisplay: x\nbase_lr: 1\n")
    assert {d.key for d in found} >= {"momentun", "display", "base_lr"}


def test_syntax_error_in_net_file(tmp_path):
    error = the_error(tmp_path, "missing '}'", net=GOOD_NET + "layer {\n")
    assert error.file == str(tmp_path / "net.prototxt")


def test_yaml_errors_have_lines(tmp_path):
    error = the_error(
        tmp_path, "unknown field", solver="net: net.prototxt\nbase_lr: 0.1\nlr_polcy: fixed\n",
        name="solver.yaml",
    )  # fmt: skip
    assert (error.line, error.key) == (3, "lr_polcy")
    error = the_error(tmp_path, "YAML syntax error", solver="a: [1\nb: 2\n", name="s.yaml")
    assert error.line is not None


# --------------------------------------------------------------------------------------------
# Solver checks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "key", "words"),
    [
        ('type: "Adam"\nsolver_type: ADAM', "solver_type", "cannot both be specified"),
        ('type: "AdaGrad"\nmomentum: 0.9', "momentum", "momentum must be 0"),
        ('type: "RMSProp"\nmomentum: 0.5', "momentum", "momentum must be 0"),
        ('type: "RMSProp"\nrms_decay: 1.0', "rms_decay", "[0, 1)"),
        ('type: "sgd"', "type", "did you mean 'SGD'"),
        ('regularization_type: "L3"', "regularization_type", "Unknown regularization"),
        ("average_loss: 0", "average_loss", ">= 1"),
        ("iter_size: 0", "iter_size", ">= 1"),
        ("test_iter: 10", "test_interval", "test_interval must be > 0"),
    ],
)
def test_fatal_solver_checks(tmp_path, extra, key, words):
    error = the_error(tmp_path, words, solver=SOLVER + extra + "\n")
    assert error.key == key and error.line is not None


@pytest.mark.parametrize(
    ("policy_lines", "key", "words"),
    [
        ("", "lr_policy", "Unknown learning rate policy: (unset)"),
        ('lr_policy: "cosin"', "lr_policy", "Unknown learning rate policy"),
        ('lr_policy: "step"', "stepsize", "needs stepsize > 0"),
        ('lr_policy: "sigmoid"\nstepsize: 5\ngamma: -1', "gamma", "gamma >= 0"),
        ('lr_policy: "multistep"\nstepvalue: 10\nstepvalue: 10', "stepvalue", "ascending"),
    ],
)
def test_schedule_checks(tmp_path, policy_lines, key, words):
    solver = 'net: "net.prototxt"\nbase_lr: 0.1\n' + policy_lines + "\n"
    error = the_error(tmp_path, words, solver=solver)
    assert error.key == key


def test_cosine_policy_is_accepted_with_a_warning(tmp_path):
    (tmp_path / "net.prototxt").write_text(GOOD_NET)
    (tmp_path / "s.prototxt").write_text(SOLVER.replace("fixed", "cosine") + "max_iter: 10\n")
    run = load_config(str(tmp_path / "s.prototxt"))
    assert run.schedule.policy == "cosine"
    assert any("Caffe itself would reject it" in d.message for d in run.diagnostics)


@pytest.mark.parametrize(
    ("solver", "words"),
    [
        ("base_lr: 0.1\nlr_policy: 'fixed'\n", "exactly one of net"),
        (SOLVER + 'train_net: "net.prototxt"\n', "exactly one of net"),
        (SOLVER.replace("net.prototxt", "missing.prototxt"), "not found"),
    ],
)
def test_net_source_errors(tmp_path, solver, words):
    the_error(tmp_path, words, solver=solver)


def test_bare_net_is_rejected_with_advice(tmp_path):
    (tmp_path / "net.prototxt").write_text(GOOD_NET)
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "net.prototxt"))
    assert "point dnupdate at the solver" in str(info.value)


# --------------------------------------------------------------------------------------------
# Net checks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layer_text", "key", "words"),
    [
        ('layer { name: "n" type: "Crop" bottom: "data" top: "x" }',
         "type", "unsupported layer type 'Crop'"),
        ('layer { name: "n" type: "Convolutoin" bottom: "data" top: "x" }',
         "type", "did you mean 'Convolution'"),
        ('layer { name: "n" type: "Pooling" bottom: "data" top: "x"\n'
         "  pooling_param { kernel_size: 2 pad: 2 } }", "pad", "smaller than the kernel"),
        ('layer { name: "n" type: "Pooling" bottom: "data" top: "x"\n'
         "  pooling_param { pool: STOCHASTIC kernel_size: 2 } }", "pool", "STOCHASTIC"),
        ('layer { name: "n" type: "Pooling" bottom: "data" top: "x" pooling_param { } }',
         "kernel_size", "is required"),
        ('layer { name: "n" type: "Pooling" bottom: "data" top: "x"\n'
         "  pooling_param { global_pooling: true kernel_size: 2 } }", "kernel_size",
         "cannot be given"),
        ('layer { name: "n" type: "Pooling" bottom: "data" top: "x"\n'
         "  pooling_param { kernel_size: 2 kernel_h: 2 kernel_w: 2 } }", "kernel_h", "OR"),
        ('layer { name: "n" type: "Convolution" bottom: "data" top: "x"\n'
         "  param { lr_mult: 1 } param { lr_mult: 2 } param { lr_mult: 3 }\n"
         "  convolution_param { num_output: 2 kernel_size: 3 } }", "param", "too many param"),
        ('layer { name: "n" type: "Convolution" bottom: "data" top: "x"\n'
         "  convolution_param { num_output: 2 } }", "kernel_size", "kernel size is required"),
        ('layer { name: "n" type: "Convolution" bottom: "data" top: "x"\n'
         "  convolution_param { kernel_size: 2 } }", "num_output", "num_output must be > 0"),
        ('layer { name: "n" type: "Convolution" bottom: "data" top: "x"\n'
         "  convolution_param { num_output: 3 group: 2 kernel_size: 1 } }", "group",
         "divisible by group"),
        ('layer { name: "n" type: "Convolution" bottom: "data" top: "x"\n'
         "  convolution_param { num_output: 3 kernel_size: 1\n"
         "    weight_filler { type: 'bilinear' } } }",
         "type", "Unknown filler name"),
        ('layer { name: "n" type: "BatchNorm" bottom: "data" top: "x" param { lr_mult: 1 } }',
         "lr_mult", "Cannot configure batch normalization statistics"),
        ('layer { name: "n" type: "Dropout" bottom: "data" top: "x" include { phase: TRAIN }\n'
         "  exclude { phase: TEST } }", "exclude", "not both"),
        ('layer { name: "n" type: "Dropout" bottom: "data" top: "x"\n'
         "  dropout_param { dropout_ratio: 1.5 } }", "dropout_ratio", "[0, 1)"),
        ('layer { name: "n" type: "InnerProduct" bottom: "data" top: "x"\n'
         "  inner_product_param { num_output: 3 transpose: true } }", "transpose",
         "not supported"),
        ('layer { name: "n" type: "Scale" bottom: "data" top: "x" scale_param { axis: 0 } }',
         "axis", "axis: 1"),
        ('layer { name: "n" type: "ReLU" bottom: "data" bottom: "label" top: "x" }', "top",
         "one bottom and one top"),
    ],
)  # fmt: skip
def test_layer_errors_name_file_line_and_key(tmp_path, layer_text, key, words):
    net = net_with(layer_text)
    error = the_error(tmp_path, words, net=net)
    assert error.file == str(tmp_path / "net.prototxt")
    assert error.key == key
    first, last = layer_line(net, 'name: "n"'), layer_line(net, 'layer { name: "ip"') - 1
    assert first <= error.line <= last


def test_unknown_bottom_names_the_layer_and_line(tmp_path):
    net = net_with('layer { name: "r" type: "ReLU" bottom: "data" top: "data" }', "other")
    error = the_error(tmp_path, "which no earlier layer produces", net=net)
    assert "'ip'" in error.message and "'other'" in error.message
    assert error.line == layer_line(net, 'bottom: "other"')


def test_loss_must_take_the_label(tmp_path):
    net = GOOD_NET.replace('bottom: "ip" bottom: "label"', 'bottom: "ip" bottom: "data"')
    the_error(tmp_path, "must take the scores and the data layer's label", net=net)


def test_net_without_data_layer(tmp_path):
    net = 'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" }'
    the_error(tmp_path, "no data layer", net=net)


def test_both_layer_and_layers(tmp_path):
    net = GOOD_NET + 'layers { name: "x" type: RELU bottom: "ip" top: "ip" }\n'
    the_error(tmp_path, "both 'layer' and legacy 'layers'", net=net)


def test_cli_reports_errors_without_traceback(tmp_path):
    (tmp_path / "net.prototxt").write_text(GOOD_NET)
    (tmp_path / "solver.prototxt").write_text(SOLVER + "momentun: 0.9\n")
    code = "from dnupdate.cli.main import app; app()"
    result = subprocess.run(
        [sys.executable, "-c", code, "inspect", str(tmp_path / "solver.prototxt")],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert "solver.prototxt:4" in result.stderr and "momentun" in result.stderr


def test_loss_without_a_label_top(tmp_path):
    net = GOOD_NET.replace('top: "data" top: "label"', 'top: "data"')
    the_error(tmp_path, "needs a label", net=net)


def test_weights_field_is_a_warning(tmp_path):
    (tmp_path / "net.prototxt").write_text(GOOD_NET)
    (tmp_path / "s.prototxt").write_text(SOLVER + 'weights: "init.caffemodel"\n')
    run = load_config(str(tmp_path / "s.prototxt"))
    (warning,) = run.diagnostics
    assert (warning.severity, warning.key, warning.line) == ("warning", "weights", 4)
