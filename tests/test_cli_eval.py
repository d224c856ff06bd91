"""``dnupdate eval``: a config with --weights and a run folder's checkpoints, the figures against
the run's own final test, the confusion matrix and its rules (ties, non-finite scores), JSON
and human output, and bad input. Tiny configs and data are built in tmp_path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dnupdate.cli.main import app
from dnupdate.engine.data.errors import DataError
from dnupdate.engine.training.evaluate import _Counter
from tests.test_train_loop import caffe_config, darknet_config, write_quadrants

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


def invoke(*args: str):
    return runner.invoke(app, [*args], env={"NO_COLOR": "1", "COLUMNS": "140"})


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """One darknet run (checkpoint at 4 updates, final at 8) and one Caffe run."""
    root = tmp_path_factory.mktemp("eval")
    data = write_quadrants(root / "quadrants.npz")
    cfg = darknet_config(root)
    solver = caffe_config(root, data)
    for config, out in ((cfg, root / "dk"), (solver, root / "cf")):
        result = invoke(
            "train", str(config), "--data", f"npz:{data}", "--out", str(out),
            "--checkpoint-every", "4", "--quiet",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    return {"root": root, "data": data, "cfg": cfg, "solver": solver}


def eval_json(*args: str) -> dict:
    result = invoke("eval", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# ---- the figures -----------------------------------------------------------------------------


def test_run_folder_eval_agrees_with_the_runs_final_test(trained):
    run = trained["root"] / "dk"
    summary = json.loads((run / "summary.json").read_text())
    report = eval_json(str(run))
    assert report["weights"].endswith("final.npz") and report["iteration"] == 8
    assert report["images"] == summary["test_images"] == 96
    assert report["loss"] == summary["test_loss"]  # the same test pass, bit for bit
    assert report["top1"] == summary["test_accuracy"]
    confusion = np.array(report["confusion"])
    assert confusion.shape == (4, 4) and confusion.sum() == 96
    assert report["top1"] == np.trace(confusion) / 96
    assert report["top5"] is None  # 4 classes: no top-5
    per_class = report["per_class"]
    assert [row["images"] for row in per_class] == [24, 24, 24, 24]
    assert [row["correct"] for row in per_class] == np.diagonal(confusion).tolist()


def test_config_with_weights_equals_the_run_folder_form(trained):
    run = trained["root"] / "dk"
    by_folder = eval_json(str(run))
    by_config = eval_json(
        str(trained["cfg"]), "--weights", str(run / "final.weights"),
        "--data", f"npz:{trained['data']}",
    )  # fmt: skip
    for key in ("loss", "top1", "confusion", "images"):
        assert by_config[key] == by_folder[key], key
    assert by_config["iteration"] == 8  # from the .weights header's seen


def test_checkpoint_by_number_and_images_limit(trained):
    run = trained["root"] / "dk"
    report = eval_json(str(run), "--checkpoint", "4", "--images", "40")
    assert report["iteration"] == 4 and report["weights"].endswith("iter_000004.npz")
    assert report["images"] == 40 and np.array(report["confusion"]).sum() == 40


def test_caffe_weights_are_tested_on_every_test_image_once(trained):
    run = trained["root"] / "cf"
    report = eval_json(str(trained["solver"]), "--weights", str(run / "final.caffemodel"))
    assert report["semantics"] == "caffe" and report["images"] == 96
    assert report["classes"] == 4 and report["iteration"] is None
    assert eval_json(str(run))["confusion"] == report["confusion"]


def test_nan_weights_are_wrong_answers_with_a_warning(trained, tmp_path):
    final = np.load(trained["root"] / "dk" / "final.npz")
    arrays = {key: np.full_like(final[key], np.nan) for key in final.files}
    bad = tmp_path / "nan.npz"
    np.savez(bad, **arrays)
    result = invoke(
        "eval", str(trained["cfg"]), "--weights", str(bad), "--data", f"npz:{trained['data']}",
        "--json", "--allow-nonfinite",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["top1"] == 0 and report["non_finite_images"] == 96
    assert np.array(report["confusion"]).sum() == 0
    assert [row["non_finite"] for row in report["per_class"]] == [24] * 4
    assert "96 of 96 images gave non-finite scores" in result.stderr


def test_human_output_shows_the_figures_and_the_matrix(trained):
    result = invoke("eval", str(trained["root"] / "dk"))
    assert result.exit_code == 0, result.output
    report = eval_json(str(trained["root"] / "dk"))
    out = result.stdout
    assert f"top-1 accuracy {report['top1']:.4g} " in out
    assert f"loss {report['loss']:.5g};" in out
    assert "(after 8 updates)" in out and "96 test images, 4 classes" in out
    assert "per class" in out and "columns 0…: predicted class" in out


# ---- the rules ---------------------------------------------------------------------------------


def test_ties_count_against_and_the_diagonal_is_the_top1_hits():
    counter = _Counter(3)
    scores = np.array(
        [[0.1, 0.7, 0.2], [0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.2, 0.3, np.nan]], dtype=np.float32
    )
    counter(scores, np.array([1, 0, 2, 2]))
    # image 0 right; image 1 ties 0 with 1: wrong, predicted 1; image 2 ties: predicted 1
    assert counter.confusion.tolist() == [[0, 1, 0], [0, 1, 0], [0, 1, 0]]
    assert counter.non_finite.tolist() == [0, 0, 1]


def test_top5_follows_caffes_count_of_better_classes():
    counter = _Counter(7)
    scores = np.array([[6, 5, 4, 3, 2, 1, 0], [6, 5, 4, 3, 2, 1, 0], [1, 1, 1, 1, 1, 1, 1]])
    counter(scores.astype(np.float32), np.array([4, 5, 0]))
    assert counter.top_k_hits == 1  # class 4 has 4 better; class 5 has 5; an all-tie has 6


def test_labels_outside_the_nets_outputs_are_bad_input():
    with pytest.raises(DataError, match="label 5 is out of range for a net with 3 outputs"):
        _Counter(3)(np.zeros((2, 3), dtype=np.float32), np.array([0, 5]))


# ---- bad input ---------------------------------------------------------------------------------


def test_usage_errors(trained):
    run = str(trained["root"] / "dk")
    result = invoke("eval", str(trained["cfg"]))
    assert result.exit_code == 2 and "--weights FILE" in result.stderr
    result = invoke("eval", str(trained["cfg"]), "--checkpoint", "4")
    assert result.exit_code == 2 and "--checkpoint needs a RUN_DIR" in result.stderr
    result = invoke("eval", run, "--weights", "x.weights")
    assert result.exit_code == 2 and "drop --weights" in result.stderr


def test_bad_input_names_the_problem(trained, tmp_path):
    run = str(trained["root"] / "dk")
    result = invoke("eval", run, "--checkpoint", "5")
    assert result.exit_code == 1
    assert "no checkpoint after 5 updates (have: 4)" in result.stderr
    result = invoke("eval", str(tmp_path))
    assert result.exit_code == 1 and "not a dnupdate run folder" in result.stderr
    missing = tmp_path / "missing.weights"
    result = invoke("eval", str(trained["cfg"]), "--weights", str(missing))
    assert result.exit_code == 1 and str(missing) in result.stderr
    assert "Traceback" not in result.output


def test_eval_as_a_subprocess_writes_plain_json(trained):
    command = [sys.executable, "-c", "from dnupdate.cli.main import app; app()", "eval"]
    proc = subprocess.run(
        [*command, str(trained["root"] / "dk"), "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["images"] == 96


def test_nan_weights_are_refused_without_allow_nonfinite(trained, tmp_path):
    final = np.load(trained["root"] / "dk" / "final.npz")
    bad = tmp_path / "nan.npz"
    np.savez(bad, **{key: np.full_like(final[key], np.nan) for key in final.files})
    result = invoke(
        "eval", str(trained["cfg"]), "--weights", str(bad), "--data", f"npz:{trained['data']}"
    )
    assert result.exit_code == 1 and "--allow-nonfinite" in result.stderr


def test_a_run_folder_locked_by_a_live_run_can_be_evaluated(trained):
    from dnupdate.engine.training.runfolder import RunFolder

    folder = RunFolder.open(trained["root"] / "dk")  # as a resumed run holds it
    try:
        result = invoke("eval", str(trained["root"] / "dk"), "--json")
        assert result.exit_code == 0, result.output
        latest = invoke("eval", str(trained["root"] / "dk"), "--checkpoint", "4", "--json")
        assert latest.exit_code == 0, latest.output
    finally:
        folder.unlock()


def test_a_net_that_is_not_a_classifier_reports_its_loss_alone(trained, tmp_path):
    cost_cfg = tmp_path / "cost.cfg"
    cost_cfg.write_text(trained["cfg"].read_text().replace("[softmax]", "[cost]\ntype=sse"))
    out = tmp_path / "run"
    result = invoke(
        "train", str(cost_cfg), "--data", f"npz:{trained['data']}", "--out", str(out), "--quiet"
    )
    assert result.exit_code == 0, result.output
    report = eval_json(str(out))
    assert report["classifier"] is False and report["top1"] is None
    assert report["per_class"] == [] and report["confusion"] == []
    assert report["loss"] > 0 and report["images"] > 0
    text = invoke("eval", str(out))
    assert text.exit_code == 0, text.output
    assert "not a classifier" in text.stdout and "per class" not in text.stdout
    assert eval_json(str(trained["root"] / "dk"))["classifier"] is True
