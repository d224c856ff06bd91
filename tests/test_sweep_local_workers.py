"""engine/experiments/local_workers.py: a sweep's worker processes on this machine. A process
killed in the middle of a variant fails that variant (with its exit code) and a new process
runs the rest; one that ends before taking a variant is not replaced over and over, and the
variants waiting for it fail with the reason; a stop request interrupts the running variant
and the ones handed out after it; SIGTERM to a worker checkpoints its variant; close() leaves
no process behind; the thread variables are set only while a process starts."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil

from dnupdate.engine.backends.jit_env import child_environment
from dnupdate.engine.experiments import local_workers
from dnupdate.engine.experiments.local_workers import THREAD_VARIABLES, LocalWorkers
from dnupdate.engine.experiments.variant import VariantTask, run_variant
from tests.test_train_loop import darknet_config, write_quadrants


def _task(root: Path, config: Path, data: Path, name: str, max_batches: int) -> VariantTask:
    overrides = (("max_batches", str(max_batches)),)
    options = {"data": f"npz:{data}", "threads": 1}
    return VariantTask(name, str(config), config.read_text(), overrides, options,
                       str(root / name), threads=1)  # fmt: skip


def _tiny(tmp_path: Path) -> tuple[Path, Path]:
    data = write_quadrants(tmp_path / "quadrants.npz")
    return darknet_config(tmp_path, batch=8, subdivisions=2, lr=0.1), data


def _until_step(pool: LocalWorkers, name: str | None, deadline_s: float = 120) -> None:
    """Read messages until ``name`` (None: any variant) reports an update."""
    deadline = time.monotonic() + deadline_s
    while True:
        assert time.monotonic() < deadline, f"{name} never started"
        message = pool.next_message(0.2)
        if message is not None and message["kind"] == "step":
            assert name is None or message["variant"] == name
            return


def _results(pool: LocalWorkers, deadline_s: float = 120) -> dict[str, dict]:
    results: dict[str, dict] = {}
    deadline = time.monotonic() + deadline_s
    while not pool.finished():
        assert time.monotonic() < deadline, results
        message = pool.next_message(0.2)
        if message is not None and message["kind"] == "result":
            assert message["variant"] not in results, "one result per variant"
            results[message["variant"]] = message["result"]
    return results


def test_a_killed_worker_fails_its_variant_and_a_new_process_runs_the_rest(tmp_path):
    config, data = _tiny(tmp_path)
    pool = LocalWorkers(1, 1)
    try:
        pool.start([_task(tmp_path, config, data, "long", 100000),
                    _task(tmp_path, config, data, "short", 4)])  # fmt: skip
        _until_step(pool, "long")
        first = pool.workers[0].process
        os.kill(first.pid, signal.SIGKILL)
        results = _results(pool)
        assert pool.workers and pool.workers[0].process is not first, "a new process"
    finally:
        pool.close()
    assert results["long"]["status"] == "failed", results["long"]
    assert results["long"]["reason"] == "its worker process ended (exit code -9)"
    assert results["short"]["status"] == "done", results["short"]
    assert (tmp_path / "short" / "final.npz").is_file()
    assert not first.is_alive() and not pool.workers


def _interrupted(tmp_path: Path, names: str, interrupt) -> dict[str, dict]:
    """The results of long variants ``names`` on one worker, ``interrupt(pool)`` called once
    the first has made an update."""
    config, data = _tiny(tmp_path)
    pool = LocalWorkers(1, 1)
    try:
        pool.start([_task(tmp_path, config, data, name, 100000) for name in names])
        _until_step(pool, names[0])
        interrupt(pool)
        return _results(pool)
    finally:
        pool.close()


def test_stop_interrupts_the_running_variant_and_those_handed_out_after(tmp_path):
    results = _interrupted(tmp_path, "ab", LocalWorkers.request_stop)
    for name in ("a", "b"):
        assert results[name]["status"] == "interrupted", results[name]
        assert "SIGINT" in results[name]["reason"]
        assert (tmp_path / name / "state.npz").is_file(), "checkpointed: a re-run resumes it"


def test_sigterm_to_a_worker_checkpoints_its_variant(tmp_path):
    results = _interrupted(
        tmp_path, "a", lambda pool: os.kill(pool.workers[0].process.pid, signal.SIGTERM)
    )
    assert results["a"]["status"] == "interrupted" and "SIGTERM" in results["a"]["reason"]
    assert (tmp_path / "a" / "state.npz").is_file()


def test_close_in_the_middle_of_a_variant_leaves_no_process(tmp_path):
    config, data = _tiny(tmp_path)
    pool = LocalWorkers(2, 1)
    pool.start([_task(tmp_path, config, data, "a", 100000),
                _task(tmp_path, config, data, "b", 100000)])  # fmt: skip
    pids = [worker.process.pid for worker in pool.workers]
    try:
        _until_step(pool, None)
    finally:
        pool.close()
    assert len(pids) == 2 and not pool.workers
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


class _Ended:
    """A process that ended with ``exitcode`` before saying it was ready."""

    def __init__(self, exitcode: int) -> None:
        self.exitcode = exitcode
        self.pid = None  # close() has nothing to kill
        self.sentinel = None

    def is_alive(self) -> bool:
        return False

    def join(self, timeout=None) -> None:
        pass


class _Closed:
    """The pipe of a process that sent nothing."""

    def poll(self) -> bool:
        return False

    def close(self) -> None:
        pass


def test_a_process_ending_before_it_took_a_variant_is_not_replaced(tmp_path):
    """A worker that cannot start (exit code 1 before it is ready) is not replaced (each
    replacement would die the same way); the waiting variants fail with the reason."""
    pool = LocalWorkers(1, 1)
    waiting = [VariantTask(name, "cfg", "", (), {}, str(tmp_path / name)) for name in "ab"]
    pool.run_dirs = {task.name: task.run_dir for task in waiting}
    pool.waiting.extend(waiting)
    pool.outstanding = {"a", "b"}
    worker = local_workers._Worker(_Ended(1), _Closed())
    pool.workers = [worker]
    pool._ended(worker)
    assert pool.workers == [], "no replacement"
    reason = "no worker process was left to run it (the last ended with exit code 1)"
    results = [pool.next_message(0) for _ in range(2)]
    assert [(r["variant"], r["result"]["status"], r["result"]["reason"]) for r in results] == [
        ("a", "failed", reason),
        ("b", "failed", reason),
    ]
    assert pool.finished()


def test_after_a_stop_the_variants_no_process_ran_stay_pending(tmp_path):
    pool = LocalWorkers(1, 1)
    task = VariantTask("a", "cfg", "", (), {}, str(tmp_path / "a"))
    pool.run_dirs, pool.outstanding = {"a": task.run_dir}, {"a"}
    pool.waiting.append(task)
    pool.request_stop()
    worker = local_workers._Worker(_Ended(0), _Closed())
    pool.workers = [worker]
    pool._ended(worker)
    assert pool.next_message(0) is None and pool.finished()


def test_a_variant_lost_after_it_finished_keeps_its_result(tmp_path):
    """A process killed after its variant's last file was written, before the result reached
    the sweep: the folder's finished run is the result (not skipped: it ran here)."""
    config, data = _tiny(tmp_path)
    task = _task(tmp_path, config, data, "a", 4)
    assert run_variant(task)["status"] == "done"
    pool = LocalWorkers(1, 1)
    pool.run_dirs = {"a": task.run_dir}
    result = pool._lost("a", "its worker process ended (exit code -9)")["result"]
    assert result["status"] == "done" and result["skipped"] is False


def test_thread_variables_are_set_only_while_a_process_starts(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
    values = {name: "3" for name in THREAD_VARIABLES}
    with child_environment(values):
        assert all(os.environ[name] == "3" for name in THREAD_VARIABLES)
    assert os.environ["OMP_NUM_THREADS"] == "7" and "NUMBA_NUM_THREADS" not in os.environ


def test_the_main_script_is_hidden_only_while_a_process_starts(monkeypatch):
    """A spawned worker would first run the parent's main script again (for ``dnupdate``, the
    whole CLI); without ``__file__`` it does not. ``python -m`` mains (a ``__spec__``) and
    mains without a file are left alone."""
    import sys
    import types

    script = types.ModuleType("__main__")
    script.__file__, script.__spec__ = "/venv/bin/dnupdate", None
    monkeypatch.setitem(sys.modules, "__main__", script)
    with local_workers._main_script_hidden():
        assert not hasattr(script, "__file__")
    assert script.__file__ == "/venv/bin/dnupdate"
    script.__spec__ = types.SimpleNamespace(name="dnupdate.cli.main")
    with local_workers._main_script_hidden():
        assert script.__file__ == "/venv/bin/dnupdate"
