"""Issue 18: hostile config input ends in one clean diagnostic (``FILE:LINE: error [KEY]``),
never a traceback or a wrong success. One regression test per crash or wrong success."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from dnupdate.cli.main import app
from dnupdate.engine.config import load_config
from dnupdate.engine.spec import ConfigError
from tests.darknet_fixtures import cfg_errors, load_cfg

runner = CliRunner()

NET = """[net]
batch=4
height=4
width=4
channels=1
learning_rate=0.1
momentum=0.9
decay=0.0005
max_batches=100
{extra}
[connected]
output=2
[softmax]
"""


def cfg(extra: str = "") -> str:
    return NET.format(extra=extra)


def only_error(text: str, overrides=()):
    errors = cfg_errors(text, overrides)
    assert len(errors) == 1, errors
    return errors[0]


# ---- item 1: documented policies never crash inspect -------------------------------------


def test_inspect_random_policy_prints_the_rule_and_exits_0(tmp_path):
    path = tmp_path / "r.cfg"
    path.write_text(cfg("policy=random\npower=2"))
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    assert "Update rule" in result.stdout


# ---- item 2: step=0 is a config error before anything runs -------------------------------


def test_step_policy_with_step_0_is_an_error_naming_the_line_and_key():
    error = only_error(cfg("policy=step\nstep=0\nscale=0.5"))
    assert (error.file, error.line, error.key) == ("t.cfg", 11, "step")
    assert "division by zero" in error.message


def test_train_refuses_step_0_before_creating_the_run_folder(tmp_path):
    path = tmp_path / "s.cfg"
    path.write_text(cfg("policy=step\nstep=0"))
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(path), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert f"{path}:11: error [step]" in result.stderr
    assert not out.exists()


def test_sgdr_mult_below_1_is_an_error():
    error = only_error(cfg("policy=sgdr\nsgdr_cycle=10\nsgdr_mult=0.5"))
    assert error.key == "sgdr_mult"


# ---- item 5: darknet numbers --------------------------------------------------------------


def test_integer_of_5000_digits_does_not_fit_in_a_c_int():
    error = only_error(cfg("max_batches=" + "9" * 5000).replace("max_batches=100\n", ""))
    assert error.key == "max_batches"
    assert "does not fit in a C int" in error.message


def test_huge_integer_override_does_not_fit_in_a_c_int():
    error = only_error(cfg(), [("batch", "-" + "1" * 5000)])
    assert (error.file, error.key) == ("--set", "batch")
    assert "does not fit in a C int" in error.message


def test_huge_steps_entry_does_not_fit_in_a_c_int():
    error = only_error(cfg("policy=steps\nsteps=10," + "7" * 30 + "\nscales=.1,.1"))
    assert error.key == "steps"


@pytest.mark.parametrize(
    "line, key", [("batch=６４", "batch"), ("learning_rate=٠.٥", "learning_rate")]
)
def test_unicode_digits_are_diagnosed_not_read(line, key):
    text = cfg(line).replace(f"{key}=", "#", 1)  # drop the original key, keep the fuzzed one
    error = only_error(text)
    assert error.key == key
    assert "not an ASCII digit" in error.message


def test_unicode_digit_in_a_steps_list_is_diagnosed():
    error = only_error(cfg("policy=steps\nsteps=10,２0\nscales=.1,.1"))
    assert error.key == "steps" and "ASCII digit" in error.message


# ---- item 12: non-finite and impossible hyper-parameters ---------------------------------


@pytest.mark.parametrize(
    "key, value",
    [
        ("learning_rate", "nan"),
        ("learning_rate", "inf"),
        ("momentum", "nan"),
        ("decay", "inf"),
        ("decay", "1e39"),
        ("power", "nan"),
    ],
)
def test_non_finite_darknet_hyper_parameters_are_errors(key, value):
    text = cfg("policy=poly") if key == "power" else cfg()
    error = only_error(text, [(key, value)])
    assert (error.file, error.key) == ("--set", key)
    assert "finite" in error.message or "overflows" in error.message


def test_non_finite_scale_in_a_list_is_an_error():
    error = only_error(cfg("policy=steps\nsteps=10,20\nscales=.1,nan"))
    assert error.key == "scales"


def test_non_finite_temperature_is_an_error():
    text = cfg().replace("[softmax]", "[softmax]\ntemperature=nan")
    error = only_error(text)
    assert error.key == "temperature"


def test_negative_learning_rate_is_a_warning_as_darknet_accepts_it():
    spec = load_cfg(cfg(), [("learning_rate", "-0.1")])
    assert any(d.key == "learning_rate" and "negative" in d.message for d in spec.diagnostics)


def test_lr_schedule_refuses_a_nan_rate_instead_of_printing_nan():
    result = runner.invoke(
        app, ["lr-schedule", "--set", "learning_rate=nan", "--set", "max_batches=10"]
    )
    assert result.exit_code == 1
    assert "error [learning_rate]" in result.stderr
    assert "nan" not in result.stdout.lower()


def test_config_error_is_a_config_error_for_load_config(tmp_path):
    path = tmp_path / "n.cfg"
    path.write_text(cfg().replace("momentum=0.9", "momentum=nan"))
    with pytest.raises(ConfigError):
        load_config(str(path))


# ---- Caffe: prototxt and YAML readers (items 3, 4, 12, 14) ---------------------------------

CAFFE_NET = """name: "n"
layer { name: "d" type: "Data" top: "data" top: "label"
  data_param { source: "mnist" batch_size: 8 backend: LMDB } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 10 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
CAFFE_SOLVER = 'net: "net.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\nmax_iter: 10\n'


def caffe_errors(tmp_path, solver: str, name: str = "solver.prototxt", overrides=()):
    (tmp_path / "net.prototxt").write_text(CAFFE_NET)
    path = tmp_path / name
    path.write_text(solver, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(str(path), overrides)
    return [d for d in info.value.diagnostics if d.severity == "error"]


@pytest.mark.parametrize("digit", ["٣", "６４", "0.٥"])
def test_prototxt_unicode_digit_is_a_clean_error_naming_the_key(tmp_path, digit):
    (error,) = caffe_errors(tmp_path, CAFFE_SOLVER.replace("0.1", digit))
    assert (error.line, error.key) == (2, "base_lr")
    assert "ASCII digit" in error.message or "invalid number" in error.message


@pytest.mark.parametrize("escape", ["\\U0011ffff", "\\ud800"])
def test_prototxt_escape_outside_unicode_is_a_clean_error(tmp_path, escape):
    (error,) = caffe_errors(tmp_path, CAFFE_SOLVER + f'snapshot_prefix: "{escape}"\n')
    assert (error.line, error.key) == (5, "snapshot_prefix")


def test_prototxt_deep_nesting_is_a_clean_error(tmp_path):
    (error,) = caffe_errors(tmp_path, CAFFE_SOLVER + "a {" * 600 + "}" * 600)
    assert error.line == 5 and "nested" in error.message


def test_prototxt_5000_digit_integer_is_out_of_range_not_a_crash(tmp_path):
    (error,) = caffe_errors(tmp_path, CAFFE_SOLVER.replace("10", "9" * 5000))
    assert error.key == "max_iter"


def test_prototxt_unexpected_character_names_the_field_it_interrupts(tmp_path):
    (error,) = caffe_errors(tmp_path, CAFFE_SOLVER.replace("0.1", "0.1 @"))
    assert (error.line, error.key) == (2, "base_lr")
    assert "unexpected character '@'" in error.message


@pytest.mark.parametrize(
    "net, words",
    [("x" * 300 + ".prototxt", "not found"), ("/dev/zero", "not a regular file")],
)
def test_net_path_too_long_or_a_device_is_a_clean_error(tmp_path, net, words):
    (error,) = caffe_errors(tmp_path, CAFFE_SOLVER.replace("net.prototxt", net))
    assert (error.line, error.key) == (1, "net")
    assert words in error.message


@pytest.mark.parametrize(
    "yaml_text, key",
    [
        ("loop: &l {a: *l}\n", "a"),
        ("net_param: &n {layer: [*n]}\n", "layer"),
    ],
)
def test_recursive_yaml_aliases_are_a_clean_error(tmp_path, yaml_text, key):
    (error,) = caffe_errors(tmp_path, yaml_text, name="solver.yaml")
    assert (error.line, error.key) == (1, key)
    assert "recursive YAML alias" in error.message


def test_yaml_1000_deep_list_is_a_clean_error(tmp_path):
    (error,) = caffe_errors(tmp_path, "a: " + "[" * 1000 + "]" * 1000 + "\n", name="s.yaml")
    assert error.line == 1 and "nested" in error.message


def test_yaml_alias_bomb_is_refused(tmp_path):
    lines = ["l0: &l0 {" + ", ".join(f"k{i}: 1" for i in range(10)) + "}"]
    for level in range(1, 8):
        items = ", ".join(f"k{i}: *l{level - 1}" for i in range(10))
        lines.append(f"l{level}: &l{level} {{{items}}}")
    (error,) = caffe_errors(tmp_path, "\n".join(lines) + "\n", name="s.yaml")
    assert "expand" in error.message


@pytest.mark.parametrize(
    "key, value",
    [
        ("base_lr", "nan"),
        ("base_lr", "inf"),
        ("momentum", "-1e999"),
        ("weight_decay", "inf"),
        ("clip_gradients", "nan"),
        ("momentum2", "inf"),
        ("base_lr", "1e39"),
    ],
)
def test_non_finite_caffe_hyper_parameters_are_errors_in_file_and_set(tmp_path, key, value):
    solver = CAFFE_SOLVER.replace("base_lr: 0.1\n", "") + f"{key}: {value}\n"
    (error,) = caffe_errors(tmp_path, solver)
    assert (error.line, error.key) == (4, key)
    (error,) = caffe_errors(tmp_path, CAFFE_SOLVER, overrides=[(key, value)])
    assert (error.file, error.key) == ("--set", key)


def test_negative_caffe_base_lr_is_a_warning(tmp_path):
    (tmp_path / "net.prototxt").write_text(CAFFE_NET)
    path = tmp_path / "solver.prototxt"
    path.write_text(CAFFE_SOLVER.replace("0.1", "-1"))
    run = load_config(str(path))
    assert any(d.key == "base_lr" and "negative" in d.message for d in run.diagnostics)


# ---- item 14: every config error has FILE:LINE: error [KEY] --------------------------------


@pytest.mark.parametrize(
    "text, line, key",
    [
        ("", 1, "net"),
        ("# nothing\n", 1, "net"),
        ("[conv]\nfilters=1\n", 1, "conv"),
        (cfg() + "[crop]\ncrop_width=3\n", 14, "crop"),
        (cfg() + "[shortcut]\n", 14, "from"),
        (cfg() + "[net]\n", 14, "net"),
        (cfg() + "[convolutoinal]\n", 14, "convolutoinal"),
    ],
)
def test_darknet_section_errors_name_line_and_key(text, line, key):
    errors = cfg_errors(text)
    assert (errors[0].line, errors[0].key) == (line, key), errors


def test_cli_reports_the_promised_form(tmp_path):
    path = tmp_path / "s.cfg"
    path.write_text(cfg() + "[upsample]\n")
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{path}:14: error [upsample]: unsupported layer type")


# ---- item 13: diagnostics are capped and echoed values clipped -----------------------------


def test_a_field_repeated_100000_times_prints_a_handful_of_lines(tmp_path):
    (tmp_path / "net.prototxt").write_text(CAFFE_NET)
    path = tmp_path / "solver.prototxt"
    path.write_text(CAFFE_SOLVER + "foo: 1\n" * 100_000)
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 1
    assert len(result.output) < 5_000
    assert "… and 99,995 more errors [foo] like 'unknown field 'foo'" in result.stderr


def test_a_5_mb_value_is_not_echoed_in_full(tmp_path):
    path = tmp_path / "long.cfg"
    path.write_text(cfg().replace("batch=4", "batch=4x" + "y" * 5_000_000))
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 0
    assert len(result.output) < 20_000
    assert "more characters)" in result.output


def test_clip_text_escapes_binary_and_cuts_long_text():
    from dnupdate.cli.common import clip_text

    assert clip_text("a\x00b\udcff\n") == "a\\x00b\\xff\\n"
    assert clip_text("x" * 310, 300) == "x" * 300 + "… (10 more characters)"


def test_many_different_diagnostics_are_capped_in_all():
    from dnupdate.cli.common import MAX_DIAGNOSTICS, diagnostic_lines
    from dnupdate.engine.spec import Diagnostic

    many = [Diagnostic("warning", "f", i, f"k{i}", "m") for i in range(1000)]
    lines = diagnostic_lines(many)
    assert len(lines) == MAX_DIAGNOSTICS + 1
    assert lines[-1] == "… and 900 more diagnostics"


def test_a_layer_named_like_rich_markup_prints_as_text(tmp_path):
    (tmp_path / "net.prototxt").write_text(CAFFE_NET.replace('name: "ip"', 'name: "[/]x[bold"'))
    path = tmp_path / "solver.prototxt"
    path.write_text(CAFFE_SOLVER)
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    assert "[/]x[bold" in result.stdout


# ---- item 11: memory estimated before training ---------------------------------------------

HUGE_FC = "[net]\nbatch=1\nheight=28\nwidth=28\nchannels=1\n[connected]\noutput=2147483647\n"


def test_inspect_refuses_a_net_that_needs_tib_naming_the_layer_and_figure(tmp_path):
    path = tmp_path / "fc.cfg"
    path.write_text(HUGE_FC + "[softmax]\n")
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{path}:6: error [0]: layer 0: training would need about")
    assert "TiB" in result.stderr


def test_train_refuses_it_before_creating_the_run_folder(tmp_path):
    path = tmp_path / "fc.cfg"
    path.write_text(HUGE_FC + "[softmax]\n")
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(path), "--out", str(out)])
    assert result.exit_code == 1 and "TiB" in result.stderr
    assert not out.exists()


def test_lr_schedule_does_not_need_the_memory(tmp_path):
    path = tmp_path / "fc.cfg"
    path.write_text(HUGE_FC.replace("batch=1", "batch=1\nmax_batches=10") + "[softmax]\n")
    result = runner.invoke(app, ["lr-schedule", str(path)])
    assert result.exit_code == 0, result.output


def test_memory_estimate_counts_parameters_activations_and_scratch():
    from dnupdate.engine.model.shapes import estimate_training_memory, infer_shapes

    run = load_cfg(
        "[net]\nbatch=2\nheight=5\nwidth=5\nchannels=1\n"
        "[convolutional]\nfilters=3\nsize=3\nstride=1\npad=1\nactivation=linear\n"
        "[connected]\noutput=4\nactivation=linear\n[softmax]\n"
    )
    estimate = estimate_training_memory(infer_shapes(run.net), 2, "sgd")
    conv_params, fc_params = 3 * 9 + 3, 75 * 4 + 4
    assert estimate.parameters == 4 * 3 * (conv_params + fc_params)  # value, gradient, momentum
    assert estimate.activations == 4 * 2 * 2 * (75 + 4 + 4)  # output + delta, batch 2
    assert estimate.scratch == 4 * 9 * 25  # one image's 3×3 columns over 5×5 outputs


def test_inspect_json_reports_the_memory_estimate(tmp_path):
    import json

    path = tmp_path / "c.cfg"
    path.write_text(cfg())
    result = runner.invoke(app, ["inspect", str(path), "--format", "json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["memory_bytes"] > 0


# ---- item 14: a garbled saved config is reported against the saved copy --------------------


def test_resume_reports_a_garbled_saved_config_against_the_run_folders_copy(tmp_path):
    from tests.test_train_loop import darknet_config, write_quadrants

    data = write_quadrants(tmp_path / "quadrants.npz")
    config = darknet_config(tmp_path)
    out = tmp_path / "run"
    args = ["train", str(config), "--data", f"npz:{data}", "--max-iters", "1", "--out", str(out)]
    assert runner.invoke(app, [*args, "-q"]).exit_code == 0
    saved = out / "config.original.cfg"
    saved.write_text(saved.read_text().replace("[net]", "[net]\nmomentum=nan", 1))
    result = runner.invoke(app, ["train", "--resume", str(out), "-q"])
    assert result.exit_code == 1
    assert f"{saved}:2: error [momentum]: 'nan' is NaN" in result.stderr, result.stderr
