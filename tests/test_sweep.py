"""``dnupdate sweep`` and engine/experiments: variants from --grid × --seeds, a variant
resumed after an interrupt equals a straight run, and (on 2 local worker processes) a sweep
whose variants equal standalone ``dnupdate train`` runs bit for bit, a diverged variant
recorded without stopping the others, a re-run that starts nothing, the same sweep through
``--scheduler`` (a Dask LocalCluster bound to 127.0.0.1), and ``--summary``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dnupdate.cli.main import app
from dnupdate.engine.experiments.grid import GridError, make_variants, parse_grid, safe_name
from dnupdate.engine.experiments.variant import VariantTask, run_variant
from tests.test_train_loop import darknet_config, write_quadrants

runner = CliRunner()


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = write_quadrants(tmp_path / "quadrants.npz")
    config = darknet_config(tmp_path, batch=8, subdivisions=2, lr=0.1, max_batches=6)
    return tmp_path, config, data


# ---- variants (no cluster) ------------------------------------------------------------------


def test_grid_cross_product_seeds_and_names():
    grid = parse_grid(["learning_rate=0.01,0.05", "batch=32,64"])
    variants = make_variants(grid, framework="darknet", seeds=2, base_seed=5)
    assert len(variants) == 8
    first = variants[0]
    assert first.name == "learning_rate=0.01,batch=32,seed=5"
    assert first.sets == (("learning_rate", "0.01"), ("batch", "32"))
    assert first.options == {"seed": 5}
    assert variants[-1].options == {"seed": 6}


def test_own_keys_route_to_options_and_darknet_flags():
    grid = parse_grid(["semantics=darknet,caffe", "optimizer=adamw", "lr_scaling=sqrt"])
    darknet, caffe = make_variants(grid, framework="darknet")
    assert darknet.options == {"semantics": "darknet"} and caffe.options == {"semantics": "caffe"}
    assert darknet.sets == (("adamw", "1"), ("lr_scaling", "sqrt"))
    (solver,) = make_variants(parse_grid(["optimizer=Adam"]), framework="caffe")
    assert solver.sets == (("type", "Adam"),)


def test_names_are_filesystem_safe():
    assert safe_name([("data", "npz:/x/y.npz")]) == "data=npz__x_y.npz"
    long = safe_name([("k", "v" * 300)])
    assert len(long) == 120 and "/" not in long


@pytest.mark.parametrize(("items", "seeds", "needle"), [
    (["learning_rate"], None, "expected KEY=V1,V2"),
    (["a=1", "a=2"], None, "given twice"),
    (["a=1,1"], None, "repeated"),
    (["seed=1,2"], 2, "not both"),
])  # fmt: skip
def test_bad_grids_are_named(items, seeds, needle):
    with pytest.raises(GridError, match=needle):
        make_variants(parse_grid(items), framework="darknet", seeds=seeds)


def test_precision_is_a_grid_key_passed_as_the_options_set_it(tmp_path):
    from dnupdate.engine.config import load_config

    variants = make_variants(parse_grid(["precision=fp32,fp16", "loss_scale=dynamic"]),
                             framework="darknet")  # fmt: skip
    assert [v.sets for v in variants] == [
        (("precision", "fp32"), ("loss_scale", "dynamic")),
        (("precision", "fp16"), ("loss_scale", "dynamic")),
    ]
    run = load_config("quickstart", list(variants[1].sets))
    assert run.precision.precision == "fp16" and run.precision.loss_scale == "dynamic"


def test_interrupted_variant_resumes_to_the_straight_runs_bytes(tiny):
    root, config, data = tiny
    options = {"data": f"npz:{data}", "threads": 1}
    text = Path(config).read_text()

    def task(name: str) -> VariantTask:
        return VariantTask(name, str(config), text, (("learning_rate", "0.05"),), options,
                           str(root / name), threads=1)  # fmt: skip

    straight = run_variant(task("straight"))
    assert straight["status"] == "done"
    steps = []

    def report(kind, payload):
        steps.append(kind)

    calls = iter(range(100))
    stopped = run_variant(task("split"), report, lambda: "SIGINT" if next(calls) >= 3 else None)
    assert stopped["status"] == "interrupted" and "SIGINT" in stopped["reason"]
    resumed = run_variant(task("split"))
    assert resumed["status"] == "done" and not resumed["skipped"]
    assert (root / "split/final.npz").read_bytes() == (root / "straight/final.npz").read_bytes()
    again = run_variant(task("split"))
    assert again["skipped"] and again["status"] == "done"


def test_summary_of_a_folder_without_results_exits_1(tmp_path):
    result = runner.invoke(app, ["sweep", "--summary", str(tmp_path)])
    assert result.exit_code == 1 and "not a sweep folder" in result.output


def test_unknown_grid_key_exits_1_before_any_cluster(tiny):
    root, config, data = tiny
    result = runner.invoke(app, ["sweep", str(config), "--grid", "no_such_key=1,2",
                                 "--data", f"npz:{data}", "--out", str(root / "s")])  # fmt: skip
    assert result.exit_code == 1 and "no_such_key" in result.output
    assert not (root / "s").exists()


# ---- on local workers ------------------------------------------------------------------------


def _rows(folder: Path) -> dict[str, dict]:
    with open(folder / "results.csv", newline="") as handle:
        return {r["variant"]: r for r in csv.DictReader(handle)}


def test_sweep_variants_equal_standalone_runs_and_a_rerun_starts_nothing(tiny):
    root, config, data = tiny
    sweep_dir = root / "sweep"
    args = ["sweep", str(config), "--grid", "learning_rate=0.05,1e9", "--data", f"npz:{data}",
            "--workers", "2", "--out", str(sweep_dir), "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = _rows(sweep_dir)
    assert {n: r["status"] for n, r in rows.items()} == {
        "learning_rate=0.05": "done",
        "learning_rate=1e9": "diverged",
    }
    assert "non-finite" in rows["learning_rate=1e9"]["reason"]
    assert "learning_rate=1e9: diverged" in result.stderr  # plain lines: not a terminal
    assert rows["learning_rate=0.05"]["run_dir"] == "runs/learning_rate=0.05"
    for column in ("final_loss", "smoothed_loss", "test_loss", "test_accuracy", "wall_s"):
        assert rows["learning_rate=0.05"][column] != ""
    events = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert events[0]["event"] == "sweep_started" and events[-1]["event"] == "sweep_finished"
    assert {e["variant"] for e in events if e["event"] == "variant_finished"} == set(rows)
    info = json.loads((sweep_dir / "sweep.json").read_text())
    assert info["grid"] == [["learning_rate", ["0.05", "1e9"]]]

    standalone = root / "standalone"
    train_args = ["train", str(config), "--set", "learning_rate=0.05", "--data", f"npz:{data}"]
    alone = runner.invoke(app, [*train_args, "--out", str(standalone), "-q"])
    assert alone.exit_code == 0, alone.output
    variant = sweep_dir / "runs" / "learning_rate=0.05"
    assert (variant / "final.npz").read_bytes() == (standalone / "final.npz").read_bytes()
    summary = json.loads((variant / "summary.json").read_text())
    assert float(rows["learning_rate=0.05"]["final_loss"]) == summary["final_loss"]

    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    finished = [json.loads(line) for line in again.stdout.splitlines()]
    assert all(e["skipped"] for e in finished if e["event"] == "variant_finished")
    assert not [e for e in finished if e["event"] == "status"], "no cluster was started"

    other = runner.invoke(app, [*args[:3], "learning_rate=0.5", *args[4:]])
    assert other.exit_code == 1 and "different sweep" in other.output

    table = runner.invoke(app, ["sweep", "--summary", str(sweep_dir)], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert table.stdout.index("learning_rate=0.05") < table.stdout.index("learning_rate=1e9")


def test_same_sweep_through_scheduler_gives_identical_results(tiny):
    from distributed import LocalCluster

    root, config, data = tiny
    common = [str(config), "--grid", "learning_rate=0.05,0.1", "--data", f"npz:{data}", "-q"]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:  # fmt: skip
        remote = runner.invoke(app, ["sweep", *common, "--out", str(root / "remote"),
                                     "--scheduler", cluster.scheduler_address])  # fmt: skip
    assert remote.exit_code == 0, remote.output
    local = runner.invoke(app, ["sweep", *common, "--workers", "1", "--out", str(root / "local")])
    assert local.exit_code == 0, local.output
    # every variant done on both sides (a sweep exits 0 whatever its variants' status: a failed
    # one is a row with its reason, shown here if it happens)
    for side in ("remote", "local"):
        rows = _rows(root / side)
        assert {n: r["status"] for n, r in rows.items()} == {
            "learning_rate=0.05": "done",
            "learning_rate=0.1": "done",
        }, (side, rows)
    for name in ("learning_rate=0.05", "learning_rate=0.1"):
        a = (root / "remote" / "runs" / name / "final.npz").read_bytes()
        b = (root / "local" / "runs" / name / "final.npz").read_bytes()
        assert a == b, name
    strip = lambda rows: {n: (r["status"], r["final_loss"], r["test_accuracy"])  # noqa: E731
                          for n, r in rows.items()}  # fmt: skip
    assert strip(_rows(root / "remote")) == strip(_rows(root / "local"))


def test_stop_checkpoints_running_variants_and_a_rerun_resumes_them(tiny):
    from dnupdate.engine.experiments.sweep import plan_sweep, run_sweep

    root, config, data = tiny
    plan = plan_sweep(str(config), ["learning_rate=0.05,0.1"], seeds=None, sets=[],
                      options={"data": f"npz:{data}"}, out=root / "stopped")  # fmt: skip
    # Ctrl-C as soon as the variants are submitted: each sees the stop Event at its first check
    events = list(run_sweep(plan, workers=2, stop=lambda: "SIGINT"))
    ended = {e.variant: e.data for e in events if e.kind == "variant_finished"}
    assert {n: d["status"] for n, d in ended.items()} == {
        "learning_rate=0.05": "interrupted",
        "learning_rate=0.1": "interrupted",
    }
    for name in ended:
        assert (root / "stopped" / "runs" / name / "state.npz").exists()
    events = list(run_sweep(plan, workers=2))
    started = [e for e in events if e.kind == "variant_started"]
    assert started and all(e.data["resumed"] for e in started)
    assert events[-1].data["counts"] == {"done": 2}


def test_live_table_shows_each_variants_state_on_a_terminal():
    import io

    from rich.console import Console

    from dnupdate.cli.sweep_cmd import LiveTable
    from dnupdate.engine.experiments.sweep import SweepEvent

    buffer = io.StringIO()
    table = LiveTable(Console(file=buffer, force_terminal=True, width=120))
    names = ["learning_rate=0.05", "learning_rate=0.1"]
    table.handle(SweepEvent("sweep_started", data={"names": names}))
    table.handle(SweepEvent("variant_started", names[0], {"iteration": 0, "max_iter": 10}))
    table.handle(SweepEvent("variant_progress", names[0],
                            {"iteration": 5, "loss": 1.25, "elapsed_s": 10.0}))  # fmt: skip
    ended = {"status": "diverged", "final_loss": float("nan")}
    table.handle(SweepEvent("variant_finished", names[1], ended))
    table.close()
    text = buffer.getvalue()
    assert "5/10" in text and "1.2500" in text and "0:10" in text  # ETA: 10 s for 5 more
    assert "diverged" in text and "queued" in text


class _FakeClient:
    def __init__(self, *args, **kwargs):
        self.closed = False

    def close(self):
        self.closed = True


class _RefusedScheduler(_FakeClient):
    def __init__(self, *args, **kwargs):
        raise OSError("Timed out trying to connect")


@pytest.mark.parametrize("scheduler", ["tcp://127.0.0.1:1", "sched.json"])
def test_dask_log_level_is_raised_for_the_sweep_and_put_back_after(monkeypatch, scheduler):
    """Dask's log lines below ERROR stay off the sweep's terminal while its cluster runs
    (closing included); afterwards the ``distributed`` logger has the level it had before, so
    an application running sweeps keeps its own logging (no server starts here)."""
    import logging

    import distributed

    from dnupdate.engine.experiments import sweep

    monkeypatch.setattr(distributed, "Client", _FakeClient)
    logger = logging.getLogger("distributed")
    monkeypatch.setattr(logger, "level", logging.INFO)
    cluster = sweep._connect(scheduler)
    assert logger.level == sweep.DASK_LOG_LEVEL
    cluster.close()
    assert cluster.client.closed and logger.level == logging.INFO


def test_dask_log_level_is_put_back_when_the_scheduler_cannot_be_reached(monkeypatch):
    import logging

    import distributed

    from dnupdate.engine.experiments import sweep

    monkeypatch.setattr(distributed, "Client", _RefusedScheduler)
    logger = logging.getLogger("distributed")
    monkeypatch.setattr(logger, "level", logging.WARNING)
    with pytest.raises(OSError, match="Timed out"):
        sweep._connect("tcp://127.0.0.1:1")
    assert logger.level == logging.WARNING
