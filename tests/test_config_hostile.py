"""Issue 18: hostile config input ends in one clean diagnostic (``FILE:LINE: error [KEY]``),
never a traceback or a wrong success. One regression test per crash or wrong success."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cli.main import app
from engine.config import load_config
from engine.spec import ConfigError
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
