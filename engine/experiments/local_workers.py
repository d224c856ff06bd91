"""A sweep's variants on worker processes of this machine, without a cluster.

:class:`LocalWorkers` starts ``count`` processes (``multiprocessing``'s *spawn*: a fresh
interpreter each, nothing inherited from this one but the environment) that take
:class:`VariantTask` objects from one queue until it is empty, running each with
:func:`run_variant`, and send their progress and results back on another queue as
``{"variant", "kind", ...}`` dictionaries, the same messages a Dask worker publishes
(``kind``: ``started``/``step``/``eval``, or ``result`` with the ``result`` dictionary).

Why not Dask's ``LocalCluster`` (what ``dnupdate sweep`` used before): on a 2-core machine its
scheduler, nannies and worker processes took ~2 s to start (importing ``distributed`` alone
0.86 s in this process, then 1.0 s for the workers), as long as a short variant, and served
nothing a sweep on one machine needs. These processes start in ~0.5 s, in parallel; Dask
remains the way to spread a sweep over several machines (``--scheduler``).

- **Threads**: the processes start with ``NUMBA_NUM_THREADS``/``OPENBLAS_NUM_THREADS``/
  ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` = ``threads`` in their environment, before any
  kernel or BLAS loads.
- **Ctrl-C**: they start with SIGINT ignored (inherited through ``exec``: Python leaves an
  ignored SIGINT ignored), so a terminal's Ctrl-C, which signals the whole foreground process
  group, reaches only this process; :meth:`request_stop` sets an ``Event`` that every running
  variant polls through its ``stop()`` callback: it checkpoints and ends ``interrupted``.
- **A process that dies** (killed, out of memory, a crash in native code) fails the variant it
  was running, unless that variant's folder already holds its finished run (the result may
  have been lost with the process), and a new process takes its place while tasks remain.
- :meth:`close` ends the processes, after the last result or early (a second Ctrl-C, an
  error here): nothing is left behind.
"""

from __future__ import annotations

import os
import queue
import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from dnupdate.engine.experiments.variant import VariantTask, read_summary

#: the thread-count variables a worker process starts with
THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                    "MKL_NUM_THREADS")  # fmt: skip
#: seconds :meth:`LocalWorkers.close` waits for a terminated process before killing it
JOIN_S = 5.0


def worker_main(tasks, messages, stop_flag) -> None:
    """A worker process: run the queued tasks until the ``None`` that ends the queue."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited already; a belt to the braces
    from dnupdate.engine.experiments.variant import run_variant

    pid = os.getpid()

    def stop() -> str | None:
        return "SIGINT" if stop_flag.is_set() else None

    while (task := tasks.get()) is not None:
        messages.put({"variant": task.name, "kind": "taken", "pid": pid})

        def report(kind: str, payload: dict[str, Any], name: str = task.name) -> None:
            if kind != "finished":  # the result message carries the end
                messages.put({"variant": name, "kind": kind, **payload})

        result = run_variant(task, report, stop)
        messages.put({"variant": task.name, "kind": "result", "pid": pid, "result": result})


@dataclass
class _Slot:
    """One worker process and the variant it runs (None between variants)."""

    process: Any
    running: str | None = None


class LocalWorkers:
    """``count`` worker processes of ``threads`` threads each (see the module docstring)."""

    def __init__(self, count: int, threads: int) -> None:
        import multiprocessing

        self.context = multiprocessing.get_context("spawn")
        self.count = count
        self.threads = threads
        self.tasks = self.context.Queue()
        self.messages = self.context.Queue()
        self.stop_flag = self.context.Event()
        self.slots: list[_Slot] = []
        self.run_dirs: dict[str, str] = {}
        self.unclaimed: set[str] = set()
        self.outstanding: set[str] = set()

    def start(self, tasks: Sequence[VariantTask]) -> None:
        """Queue ``tasks`` (in order) and start the processes."""
        for task in tasks:
            self.run_dirs[task.name] = task.run_dir
            self.tasks.put(task)
        for _ in range(self.count):
            self.tasks.put(None)
        self.unclaimed = {task.name for task in tasks}
        self.outstanding = set(self.unclaimed)
        for _ in range(self.count):
            self._start_process()

    def _start_process(self) -> None:
        process = self.context.Process(
            target=worker_main, args=(self.tasks, self.messages, self.stop_flag),
            name="dnupdate-sweep-worker",
        )  # fmt: skip
        threads = {name: str(self.threads) for name in THREAD_VARIABLES}
        with _environment(threads), _sigint_ignored():
            process.start()
        self.slots.append(_Slot(process))

    def request_stop(self) -> None:
        """Ask the running variants to checkpoint and end (queued ones start and end at once,
        interrupted at their first update)."""
        self.stop_flag.set()

    def next_message(self, timeout: float) -> dict[str, Any] | None:
        """The next progress or result message, None after ``timeout`` seconds without one.
        A result is also made up here for a variant whose process died."""
        while True:
            try:
                message = self.messages.get(timeout=timeout)
            except queue.Empty:
                return self._casualty()
            kind, name = message["kind"], message["variant"]
            slot = self._slot(message.get("pid"))
            if kind == "taken":
                self.unclaimed.discard(name)
                if slot is not None:
                    slot.running = name
                continue
            if kind == "result":
                self.outstanding.discard(name)
                if slot is not None:
                    slot.running = None
            return message

    def _slot(self, pid: int | None) -> _Slot | None:
        return next((s for s in self.slots if s.process.pid == pid), None)

    def _casualty(self) -> dict[str, Any] | None:
        """A result for a variant lost with its process (only once the queue is drained, so
        that whatever the process sent before it died has been read)."""
        for slot in self.slots:
            if slot.process.is_alive() or slot.process.exitcode is None:
                continue
            lost, slot.running = slot.running, None
            code = slot.process.exitcode
            self.slots.remove(slot)
            if self.unclaimed and code != 0:
                self._start_process()
            if lost is not None:
                return self._lost(lost, f"its worker process ended (exit code {code})")
        if not self.slots and self.outstanding:  # a task taken by a process that died at once
            name = sorted(self.outstanding)[0]
            return self._lost(name, "no worker process ran it (they all ended)")
        return None

    def _lost(self, name: str, reason: str) -> dict[str, Any]:
        from dnupdate.engine.experiments.variant import finished_result

        self.outstanding.discard(name)
        self.unclaimed.discard(name)
        run_dir = self.run_dirs[name]
        result = finished_result(name, run_dir) or {
            "name": name, "status": "failed", "reason": reason,
            "summary": read_summary(run_dir) or {}, "skipped": False,
        }  # fmt: skip
        return {"variant": name, "kind": "result", "result": result}

    def close(self) -> None:
        """End the processes. Called once every result is in, it only spares them their
        interpreter's exit (~0.25 s: everything a variant writes is in place before its result
        is sent); called early (a second Ctrl-C, an error here), it abandons the variants they
        run, as ``dnupdate train`` killed would."""
        for slot in self.slots:
            if slot.process.is_alive():
                slot.process.terminate()
            slot.process.join(JOIN_S)
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join()
        for channel in (self.tasks, self.messages):
            channel.cancel_join_thread()
            channel.close()


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in ``os.environ`` meanwhile (a spawned process starts with this
    environment), the previous ones put back after."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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
