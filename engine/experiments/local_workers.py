"""A sweep's variants on worker processes of this machine, without a cluster.

:class:`LocalWorkers` starts ``count`` processes (``multiprocessing``'s *spawn*: a fresh
interpreter each, nothing inherited from this one but the environment), each with a pipe of
its own. A worker says it is ready, is handed one :class:`VariantTask` at a time, runs it with
:func:`run_variant` and sends back its progress and result as ``{"variant", "kind", ...}``
dictionaries, the messages a Dask worker publishes (``kind``: ``started``/``step``/``eval``, or
``result`` with the ``result`` dictionary); ``None`` instead of a task ends it.

Why not Dask's ``LocalCluster`` (what ``dnupdate sweep`` used before): on a 2-core machine its
scheduler, nannies and worker processes took ~2 s to start (importing ``distributed`` alone
0.86 s in this process, then 1.0 s for the workers), as long as a short variant, and served
nothing a sweep on one machine needs. These processes start in ~0.5 s, in parallel; Dask
remains the way to spread a sweep over several machines (``--scheduler``).

- **Threads**: the processes start with ``NUMBA_NUM_THREADS``/``OPENBLAS_NUM_THREADS``/
  ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` = ``threads`` in their environment, before any
  kernel or BLAS loads.
- **Nothing shared but a flag**: each worker talks through its own pipe, and the stop request
  is a lock-free shared boolean, so a worker killed at any moment cannot leave a lock or a
  half-written message that would stall the others or this process.
- **Stopping**: the processes start with SIGINT ignored (inherited through ``exec``: Python
  leaves an ignored SIGINT ignored), so a terminal's Ctrl-C, which signals the whole
  foreground process group, reaches only this process; :meth:`request_stop` sets the flag,
  which every running variant polls through its ``stop()`` callback: it checkpoints and ends
  ``interrupted`` (variants handed out later end so at their first update). A worker sent
  SIGTERM (``kill`` of the process group, a service manager) does the same with its variant,
  then ends; one whose sweep process has died (checked once a second) too.
- **A process that dies** (killed, out of memory, a crash in native code) fails the variant it
  was running, unless that variant's folder holds its finished run by then (the result may
  have been lost with the process), and a new process takes its place if variants are still
  waiting (at most one per variant lost, so a worker that cannot start cannot respawn
  forever). Waiting variants that no process is left to run fail with the reason (after a
  stop request they stay pending instead: the same command runs them).
- :meth:`close` ends the processes (killed: after the last result they have nothing left to
  write; before it, a second Ctrl-C or an error here abandons their variants); being
  *daemonic*, they also end with this process if it exits without closing.
"""

from __future__ import annotations

import signal
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from dnupdate.engine.backends.jit_env import BLAS_THREAD_VARIABLES, child_environment
from dnupdate.engine.experiments.variant import VariantTask, finished_result, read_summary

#: the thread-count variables a worker process starts with
THREAD_VARIABLES = ("NUMBA_NUM_THREADS", *BLAS_THREAD_VARIABLES)
#: seconds between a worker's checks that its sweep process is still there
PARENT_CHECK_S = 1.0


def worker_main(conn, stop_flag) -> None:
    """A worker process: announce itself, then run each task handed to it until ``None``."""
    import multiprocessing

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited already; a belt to the braces
    terminated: list[str] = []
    signal.signal(signal.SIGTERM, lambda *_: terminated.append("SIGTERM"))
    parent = multiprocessing.parent_process()
    checked = [time.monotonic()]

    def stop() -> str | None:
        if terminated:
            return "SIGTERM"
        if stop_flag.value:
            return "SIGINT"
        now = time.monotonic()
        if now - checked[0] >= PARENT_CHECK_S:
            checked[0] = now
            if parent is not None and not parent.is_alive():
                terminated.append("SIGTERM")  # the sweep is gone: checkpoint and end
                return "SIGTERM"
        return None

    from dnupdate.engine.experiments.variant import run_variant

    try:
        conn.send({"variant": "", "kind": "ready"})
        while (task := conn.recv()) is not None:

            def report(kind: str, payload: dict[str, Any], name: str = task.name) -> None:
                if kind != "finished":  # the result message carries the end
                    conn.send({"variant": name, "kind": kind, **payload})

            result = run_variant(task, report, stop)
            conn.send({"variant": task.name, "kind": "result", "result": result})
            if terminated:
                return
    except (EOFError, OSError):  # the sweep process has gone: nobody to report to
        return


@dataclass(eq=False)
class _Worker:
    """One worker process, its end of the pipe and the variant it runs (None: none)."""

    process: Any
    conn: Any
    running: str | None = None


class LocalWorkers:
    """``count`` worker processes of ``threads`` threads each (see the module docstring)."""

    def __init__(self, count: int, threads: int) -> None:
        import ctypes
        import multiprocessing

        self.context = multiprocessing.get_context("spawn")
        self.count = count
        self.threads = threads
        self.stop_flag = self.context.RawValue(ctypes.c_bool, False)
        self.waiting: deque[VariantTask] = deque()
        self.workers: list[_Worker] = []
        self.run_dirs: dict[str, str] = {}
        self.outstanding: set[str] = set()
        self.inbox: deque[dict[str, Any]] = deque()

    def start(self, tasks: Sequence[VariantTask]) -> None:
        """Queue ``tasks`` (handed out in order) and start the processes."""
        for task in tasks:
            self.run_dirs[task.name] = task.run_dir
        self.waiting.extend(tasks)
        self.outstanding = {task.name for task in tasks}
        for _ in range(self.count):
            self._start_process()

    def _start_process(self) -> None:
        ours, theirs = self.context.Pipe()
        process = self.context.Process(target=worker_main, args=(theirs, self.stop_flag),
                                       name="dnupdate-sweep-worker", daemon=True)  # fmt: skip
        self.workers.append(_Worker(process, ours))  # listed first: close() ends it whatever
        threads = {name: str(self.threads) for name in THREAD_VARIABLES}
        with child_environment(threads), _sigint_ignored(), _main_script_hidden():
            process.start()
        theirs.close()  # the worker's end lives in the worker: its death reads as EOF here

    def request_stop(self) -> None:
        """Ask the running variants to checkpoint and end (those handed out later end at
        their first update, interrupted)."""
        self.stop_flag.value = True

    def finished(self) -> bool:
        """Whether nothing more will come: every task has its result, or no process is left
        (after a stop, the variants never handed out stay without one: pending)."""
        return not self.inbox and (not self.outstanding or not self.workers)

    def next_message(self, timeout: float) -> dict[str, Any] | None:
        """The next progress or result message, None after ``timeout`` seconds without one.
        Results are also made up here for variants a dead process took with it."""
        if not self.inbox and self.workers:
            from multiprocessing.connection import wait

            by_handle: dict[Any, tuple[_Worker, bool]] = {}
            for worker in self.workers:
                by_handle[worker.conn] = (worker, True)
                by_handle[worker.process.sentinel] = (worker, False)
            for handle in wait(list(by_handle), timeout):
                worker, is_pipe = by_handle[handle]
                if worker not in self.workers:
                    continue  # ended while an earlier handle was read
                if is_pipe:
                    self._receive(worker)
                else:
                    self._ended(worker)
        return self.inbox.popleft() if self.inbox else None

    def _receive(self, worker: _Worker) -> None:
        try:
            message = worker.conn.recv()
        except Exception:  # EOF, or half a message from a process killed while sending
            self._ended(worker)
            return
        if message["kind"] == "ready":
            self._hand_out(worker)
            return
        self._accept(worker, message)
        if message["kind"] == "result":
            self._hand_out(worker)

    def _accept(self, worker: _Worker, message: dict[str, Any]) -> None:
        if message["kind"] == "result":
            self.outstanding.discard(message["variant"])
            worker.running = None
        self.inbox.append(message)

    def _hand_out(self, worker: _Worker) -> None:
        task = self.waiting.popleft() if self.waiting else None
        worker.running = None if task is None else task.name
        try:
            worker.conn.send(task)
        except OSError:  # it died meanwhile
            if task is not None:
                self.waiting.appendleft(task)
                worker.running = None
            self._ended(worker)

    def _ended(self, worker: _Worker) -> None:
        """The worker's process has ended, or its pipe broke: read what it sent before, fail
        the variant it took with it, start another process if variants are waiting."""
        while True:
            try:
                if not worker.conn.poll():
                    break
                message = worker.conn.recv()
            except Exception:
                break
            if message["kind"] != "ready":
                self._accept(worker, message)
        worker.conn.close()
        worker.process.join(1.0)
        if worker.process.is_alive():  # a broken pipe, not a death: it is of no use now
            worker.process.kill()
            worker.process.join()
        self.workers.remove(worker)
        code = worker.process.exitcode
        if worker.running is not None:
            reason = f"its worker process ended (exit code {code})"
            self.inbox.append(self._lost(worker.running, reason))
            if self.waiting:
                self._start_process()
        if not self.workers and not self.stop_flag.value:
            reason = f"no worker process was left to run it (the last ended with exit code {code})"
            while self.waiting:
                self.inbox.append(self._lost(self.waiting.popleft().name, reason))

    def _lost(self, name: str, reason: str) -> dict[str, Any]:
        """The result of a variant whose process ended without sending one."""
        self.outstanding.discard(name)
        run_dir = self.run_dirs[name]
        result = finished_result(name, run_dir)
        if result is not None:
            result = {**result, "skipped": False}  # it ran here, to its end
        else:
            result = {"name": name, "status": "failed", "reason": reason,
                      "summary": read_summary(run_dir) or {}, "skipped": False}  # fmt: skip
        return {"variant": name, "kind": "result", "result": result}

    def close(self) -> None:
        """End the processes (see the module docstring)."""
        started = [w for w in self.workers if w.process.pid is not None]
        for worker in started:
            worker.process.kill()
        for worker in started:
            worker.process.join()
        for worker in self.workers:
            worker.conn.close()
        self.workers = []


@contextmanager
def _main_script_hidden() -> Iterator[None]:
    """The ``__main__`` module without its ``__file__`` meanwhile: a spawned process runs the
    parent's main script again first (as ``__mp_main__``), which for the ``dnupdate`` command
    imports the whole CLI (Typer, Rich, every command: ~0.15 s and ~5 MiB per worker) that a
    worker never uses; ``worker_main`` lives in this module, not in the script."""
    import sys

    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is None or getattr(main, "__spec__", None) is not None:
        yield  # nothing to hide (``python -c``), or run by module name (``python -m``)
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored in this process meanwhile: processes started meanwhile inherit the
    ignored disposition through ``exec`` and Python keeps it (a caught signal would be reset
    to the default, KeyboardInterrupt). A Ctrl-C during these milliseconds is lost."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: its signals are not ours to change
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


__all__ = ["THREAD_VARIABLES", "LocalWorkers", "worker_main"]
