"""Built-in config names (engine/config/builtin.py): `dnupdate train quickstart` anywhere."""

import ast
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dnupdate.cli.main import app
from dnupdate.engine.config import builtin, load_config, read_config_text
from dnupdate.engine.spec import ConfigError

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def test_names_are_the_runnable_configs_of_the_repository():
    names = builtin.builtin_configs(ROOT / "configs")
    assert {"quickstart", "mnist_lenet", "lenet_solver", "cifar10_quick_solver"} <= set(names)
    assert not any(name.endswith("_train_test") for name in names)  # nets, not solvers
    assert names["lenet_solver"].suffix == ".prototxt"  # the prototxt wins over its YAML twin
    assert names["quickstart"] == ROOT / "configs" / "quickstart.cfg"


def wheel_force_include() -> dict[str, str]:
    """``{source: path in the wheel}`` as hatch_build.py adds them to a built wheel (read from
    its source: hatchling is a build requirement, not installed in the test environment)."""
    tree = ast.parse((ROOT / "hatch_build.py").read_text())
    mapping = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Subscript):
            target = node.targets[0]
            if ast.unparse(target.value) == "build_data['force_include']":
                mapping[ast.literal_eval(target.slice)] = ast.literal_eval(node.value)
    return mapping


def test_the_wheel_bundles_configs_where_the_reader_looks():
    include = wheel_force_include()
    # dnupdate.py is the package's __init__, so the package root is the checkout's root
    assert include["dnupdate.py"] == "dnupdate/__init__.py"
    assert include["configs"] == "dnupdate/" + builtin.BUNDLED_DIR.relative_to(ROOT).as_posix()
    assert not builtin.BUNDLED_DIR.exists()  # only in a wheel: a checkout reads configs/


def test_bundled_copy_wins_when_present(tmp_path, monkeypatch):
    (tmp_path / "mine.cfg").write_text("[net]\n")
    monkeypatch.setattr(builtin, "BUNDLED_DIR", tmp_path)
    assert builtin.configs_dir() == tmp_path
    assert builtin.builtin_names() == ["mine"]


def test_a_file_always_wins_over_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert builtin.locate_config("quickstart") == str(ROOT / "configs" / "quickstart.cfg")
    Path("quickstart").write_text("[net]\n")
    assert builtin.locate_config("quickstart") == "quickstart"
    assert builtin.locate_config("-") == "-"


@pytest.mark.parametrize("odd", ["no-such-config", "x" * 5000, "a\0b", "../" * 300])
def test_odd_arguments_pass_through_unchanged(odd):
    assert builtin.locate_config(odd) == odd


def test_load_config_reads_a_builtin_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = load_config("quickstart")
    assert run.net.layers and run.solver.minibatch == 64
    assert "[net]" in read_config_text("quickstart")
    caffe = load_config("lenet_solver")  # its net file is found next to the solver
    assert caffe.net.name == "LeNet"


def test_unknown_name_lists_the_builtin_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as raised:
        load_config("quickstrat")
    message = str(raised.value)
    assert "no such file" in message and "quickstart" in message and "lenet_solver" in message


def test_cli_commands_accept_a_builtin_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    inspected = runner.invoke(app, ["inspect", "mnist_lenet"])
    assert inspected.exit_code == 0, inspected.output
    schedule = runner.invoke(app, ["lr-schedule", "lenet_solver", "--format", "csv"])
    assert schedule.exit_code == 0, schedule.output
    assert len(schedule.stdout.splitlines()) > 1000  # LeNet's 10,000 iterations
    missing = runner.invoke(app, ["inspect", "quickstrat"])
    assert missing.exit_code == 1 and "quickstart" in missing.output
