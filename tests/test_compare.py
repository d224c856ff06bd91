"""``dnupdate compare``: variants in lockstep from the same parameters on the same batches;
identical variants never part, darknet and Caffe rules agree while the rate is constant and
part after the steps policy changes it; per-variant options and mismatched batches are clean
errors; ``--out`` writes compare.csv/.jsonl."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from dnupdate.cli.main import app
from dnupdate.engine.experiments.compare import CompareError, compare_runs, parse_variant
from tests.test_train_loop import darknet_config, write_quadrants

runner = CliRunner()


@pytest.fixture
def tiny(tmp_path):
    data = write_quadrants(tmp_path / "quadrants.npz")
    # steps=4, scales=.5: the rate halves from the 4th update on
    config = darknet_config(tmp_path, batch=8, subdivisions=2, lr=0.1, max_batches=8)
    return tmp_path, str(config), {"data": f"npz:{data}", "threads": 1}


def test_parse_variant_options():
    v = parse_variant("a=--semantics caffe --set learning_rate=0.2 -s batch=4 --lr-scaling sqrt")
    assert v.name == "a" and v.options == {"semantics": "caffe"}
    assert v.sets == (("learning_rate", "0.2"), ("batch", "4"), ("lr_scaling", "sqrt"))
    for bad in ("noequals", "a=--weights x", "a=--semantics", "a=--set nokey"):
        with pytest.raises(CompareError):
            parse_variant(bad)


def test_identical_variants_never_part(tiny):
    _, config, options = tiny
    same = [parse_variant("a=--semantics darknet"), parse_variant("b=--semantics darknet")]
    events = list(compare_runs(config, same, options=options))
    steps = [e.data for e in events if e.kind == "compare_step"]
    assert len(steps) == 8
    assert all(s["distances"]["b"]["net"] == 0.0 for s in steps)
    assert all(s["losses"]["a"] == s["losses"]["b"] for s in steps)
    assert events[-1].data["parted_at"] == {"b": None}


def test_darknet_and_caffe_part_after_the_rate_changes(tiny):
    root, config, options = tiny
    out = root / "cmp"
    args = ["compare", config, "--variant", "darknet=--semantics darknet",
            "--variant", "caffe=--semantics caffe", "--data", options["data"],
            "--out", str(out), "--json", "--every", "1"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    steps = [e for e in events if e["event"] == "compare_step"]
    change = next(
        s["iteration"] for s in steps if s["lrs"]["darknet"] != steps[0]["lrs"]["darknet"]
    )
    assert change == 4
    before = [s["distances"]["caffe"]["net"] for s in steps if s["iteration"] < change]
    assert max(before) < 1e-6  # float32 rounding only: the rules agree at a constant rate
    parted = events[-1]["parted_at"]["caffe"]
    assert parted is not None and parted >= change
    rows = list(csv.DictReader((out / "compare.csv").read_text().splitlines()))
    assert (
        len(rows) == 8 and float(rows[-1]["dist_caffe"]) == steps[-1]["distances"]["caffe"]["net"]
    )
    assert (out / "compare.jsonl").read_text().count("compare_step") == 8
    assert f"parted at update {parted}" in result.stderr


def test_variants_with_other_batches_are_refused(tiny):
    _, config, options = tiny
    variants = [parse_variant("a="), parse_variant("b=--set batch=16")]
    with pytest.raises(CompareError, match="same batches"):
        list(compare_runs(config, variants, options=options))
    result = runner.invoke(app, ["compare", config, "--variant", "a=--bogus 1",
                                 "--variant", "b="])  # fmt: skip
    assert result.exit_code == 2 and "--bogus" in result.output
