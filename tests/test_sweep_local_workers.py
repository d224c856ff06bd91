"""engine/experiments/local_workers.py: a sweep's worker processes on this machine. A process
killed in the middle of a variant fails that variant (with its exit code) and a new process
runs the rest; a variant lost with a process that ended before saying it took it is failed
rather than waited for; the thread variables are set only while a process starts."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from dnupdate.engine.experiments import local_workers
from dnupdate.engine.experiments.local_workers import THREAD_VARIABLES, LocalWorkers
from dnupdate.engine.experiments.variant import VariantTask
from tests.test_train_loop import darknet_config, write_quadrants


def _task(root: Path, config: Path, data: Path, name: str, max_batches: int) -> VariantTask:
    overrides = (("max_batches", str(max_batches)),)
    options = {"data": f"npz:{data}", "threads": 1}
    return VariantTask(name, str(config), config.read_text(), overrides, options,
                       str(root / name), threads=1)  # fmt: skip


def _results(pool: LocalWorkers, count: int, deadline_s: float = 120) -> dict[str, dict]:
    results: dict[str, dict] = {}
    deadline = time.monotonic() + deadline_s
    while len(results) < count:
        assert time.monotonic() < deadline, results
        message = pool.next_message(0.2)
        if message is not None and message["kind"] == "result":
            results[message["variant"]] = message["result"]
    return results


def test_a_killed_worker_fails_its_variant_and_a_new_process_runs_the_rest(tmp_path):
    data = write_quadrants(tmp_path / "quadrants.npz")
    config = darknet_config(tmp_path, batch=8, subdivisions=2, lr=0.1)
    pool = LocalWorkers(1, 1)
    try:
        pool.start([_task(tmp_path, config, data, "long", 100000),
                    _task(tmp_path, config, data, "short", 4)])  # fmt: skip
        deadline = time.monotonic() + 120
        while True:  # the long variant is under way in the one process
            assert time.monotonic() < deadline, "the variant never started"
            message = pool.next_message(0.2)
            if message is not None and message["kind"] == "step":
                assert message["variant"] == "long"
                break
        first = pool.slots[0].process
        os.kill(first.pid, signal.SIGKILL)
        results = _results(pool, 2)
    finally:
        pool.close()
    assert results["long"]["status"] == "failed", results["long"]
    assert results["long"]["reason"] == "its worker process ended (exit code -9)"
    assert results["short"]["status"] == "done", results["short"]
    assert (tmp_path / "short" / "final.npz").is_file()
    assert pool.slots and pool.slots[0].process is not first, "a new process ran the rest"
    assert not any(slot.process.is_alive() for slot in pool.slots)


class _Ended:
    """A process that has ended with ``exitcode``."""

    def __init__(self, exitcode: int) -> None:
        self.exitcode = exitcode
        self.pid = 1 << 30

    def is_alive(self) -> bool:
        return False


def test_a_task_lost_with_every_process_is_failed_not_waited_for(tmp_path):
    """A process that died between taking a task and saying so leaves that task outstanding;
    once no process is left it is failed (a finished run in its folder would be its result)."""
    pool = LocalWorkers(1, 1)
    try:
        pool.run_dirs = {"lost": str(tmp_path / "lost")}
        pool.outstanding = {"lost"}
        pool.slots = [local_workers._Slot(_Ended(-9))]
        result = pool.next_message(0.05)
        after = pool.next_message(0.05)
    finally:
        pool.close()
    assert result is not None and result["variant"] == "lost"
    assert result["result"]["status"] == "failed"
    assert result["result"]["reason"] == "no worker process ran it (they all ended)"
    assert after is None and not pool.outstanding


def test_a_process_that_ended_normally_is_no_casualty(tmp_path):
    pool = LocalWorkers(1, 1)
    try:
        pool.run_dirs = {"done": str(tmp_path / "done")}
        pool.slots = [local_workers._Slot(_Ended(0))]
        assert pool.next_message(0.05) is None
    finally:
        pool.close()
    assert not pool.slots


def test_thread_variables_are_set_only_while_a_process_starts(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
    values = {name: "3" for name in THREAD_VARIABLES}
    with local_workers._environment(values):
        assert all(os.environ[name] == "3" for name in THREAD_VARIABLES)
    assert os.environ["OMP_NUM_THREADS"] == "7" and "NUMBA_NUM_THREADS" not in os.environ
