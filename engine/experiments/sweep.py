"""A sweep: plan the variants, run them on local worker processes or a Dask cluster, keep the
results.

:func:`plan_sweep` checks every variant's config up front (a bad grid key or value is a
ConfigError before anything starts). :func:`run_sweep` yields :class:`SweepEvent` objects while
the variants run: by default on ``workers`` local processes
(:class:`engine.experiments.local_workers.LocalWorkers`: one variant at a time each,
Numba/OpenBLAS threads = cores / workers, set in their environment before their first kernel),
or on an existing Dask cluster (``scheduler``: ``tcp://HOST:PORT`` or a scheduler file).
Variants whose folder already holds a finished run are not resubmitted; interrupted ones
resume. ``stop()`` returning a signal name sets an event that the running variants poll (a
Dask ``Event`` on a cluster, at most once a second): each checkpoints and ends
``interrupted``. ``distributed`` is imported here only, inside the functions, and only for a
``scheduler``.

A terminal's Ctrl-C signals the whole foreground process group, the local workers included:
they start with SIGINT ignored, so only this process acts on it and the variants stop through
the event, checkpointed. Local workers talk to this process through pipes and listen on no
address.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dnupdate.engine.experiments.grid import Variant, make_variants, parse_grid
from dnupdate.engine.experiments.results import (
    row,
    run_dir,
    write_results,
    write_sweep_info,
)
from dnupdate.engine.experiments.variant import VariantTask, finished_result, run_variant

#: seconds between two checks of the stop Event inside a variant
STOP_POLL_S = 1.0


@dataclass(frozen=True)
class SweepEvent:
    """One thing that happened in a sweep. ``kind``: ``sweep_started``, ``status``,
    ``variant_started``, ``variant_progress``, ``variant_eval``, ``variant_finished``,
    ``sweep_finished``; ``variant``: the variant's name ('' for the sweep's own)."""

    kind: str
    variant: str = ""
    data: dict = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Strict-JSON-ready (non-finite floats as ``"nan"``/``"inf"``)."""
        from dnupdate.engine.training.events import json_value

        return json_value({"event": self.kind, "variant": self.variant, **self.data})


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep runs: the config, the base ``--set`` overrides and training options
    shared by all variants, the grid and its variants, and the folder."""

    sweep_dir: Path
    config_path: str
    config_text: str
    framework: str
    grid: tuple[tuple[str, tuple[str, ...]], ...]
    seeds: int | None
    sets: tuple[tuple[str, str], ...]
    options: dict
    variants: tuple[Variant, ...]

    def overrides(self, variant: Variant) -> tuple[tuple[str, str], ...]:
        """The base ``--set`` pairs without those the variant sets, then the variant's."""
        own = {key for key, _ in variant.sets}
        return tuple(p for p in self.sets if p[0] not in own) + variant.sets

    def train_options(self, variant: Variant) -> dict:
        return {**self.options, **variant.options}

    def info(self) -> dict[str, Any]:
        """``sweep.json``'s content."""
        from dnupdate.engine.training.versions import package_versions

        return json.loads(json.dumps({
            "config_path": self.config_path,
            "grid": [[key, list(values)] for key, values in self.grid],
            "seeds": self.seeds,
            "sets": [list(pair) for pair in self.sets],
            "options": self.options,
            "variants": [
                {"name": v.name, "values": dict(v.values), "run_dir": f"runs/{v.name}"}
                for v in self.variants
            ],
            "versions": package_versions(),
        }))  # fmt: skip


def plan_sweep(
    config: str,
    grid_items: Sequence[str],
    *,
    seeds: int | None,
    sets: Sequence[tuple[str, str]],
    options: dict,
    out: str | Path,
) -> SweepPlan:
    """The sweep's variants, each config loaded once to check it (ConfigError, GridError)."""
    from dnupdate.engine.config import detect_format, load_config, read_config_text
    from dnupdate.engine.config.builtin import locate_config

    path = locate_config(config)
    if path == "-":
        from dnupdate.engine.experiments.grid import GridError

        raise GridError("a sweep reads its config from a file, not standard input")
    path = os.path.abspath(path)
    text = read_config_text(path)
    framework = detect_format(path, text)
    grid = parse_grid(grid_items)
    variants = make_variants(grid, framework=framework, seeds=seeds, base_seed=options.get("seed"))
    plan = SweepPlan(
        Path(out), path, text, framework,
        tuple((k, tuple(v)) for k, v in grid), seeds, tuple(sets), dict(options),
        tuple(variants),
    )  # fmt: skip
    for variant in variants:
        load_config(path, plan.overrides(variant), text=text)
    return plan


def _task(plan: SweepPlan, variant: Variant, threads: int | None) -> VariantTask:
    options = plan.train_options(variant)
    if threads is not None:
        options["threads"] = threads
    return VariantTask(
        name=variant.name,
        config_path=plan.config_path,
        config_text=plan.config_text,
        overrides=plan.overrides(variant),
        options=options,
        run_dir=str(run_dir(plan.sweep_dir, variant.name).resolve()),
        threads=threads,
    )


def dask_task(task: VariantTask, topic: str, stop_name: str) -> dict[str, Any]:
    """The function a Dask worker runs: :func:`run_variant` with progress sent as the
    worker's log events on ``topic`` and the stop request read from the Event ``stop_name``."""
    from distributed import Event, get_worker

    worker = get_worker()
    stop_event = Event(stop_name)
    state: dict[str, Any] = {"checked": 0.0, "signal": None}

    def report(kind: str, payload: dict[str, Any]) -> None:
        if kind != "finished":  # the future's result carries the end
            worker.log_event(topic, {"variant": task.name, "kind": kind, **payload})

    def stop() -> str | None:
        now = time.monotonic()
        if state["signal"] is None and now - state["checked"] >= STOP_POLL_S:
            state["checked"] = now
            if stop_event.is_set():
                state["signal"] = "SIGINT"
        return state["signal"]

    return run_variant(task, report, stop)


def default_workers() -> int:
    """One worker process per two cores (at least one)."""
    return max(1, (os.cpu_count() or 2) // 2)


@dataclass
class _Cluster:
    client: Any
    #: the ``distributed`` logger's level before the sweep raised it, put back after the close
    #: (whose own messages stay quiet): an application running sweeps keeps its logging
    log_level: int | None = None

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            if self.log_level is not None:
                logging.getLogger("distributed").setLevel(self.log_level)


#: what Dask's own loggers may print on the sweep's terminal (a worker killed at close after
#: its grace period is no news)
DASK_LOG_LEVEL = logging.ERROR


def _connect(scheduler: str) -> _Cluster:
    """A client of an existing scheduler (``tcp://…`` or a scheduler file). Dask's own log
    lines below :data:`DASK_LOG_LEVEL` stay off the terminal until the client is closed."""
    logger = logging.getLogger("distributed")
    previous = logger.level
    logger.setLevel(DASK_LOG_LEVEL)
    try:
        return _connected(scheduler, previous)
    except BaseException:
        logger.setLevel(previous)
        raise


def _connected(scheduler: str, log_level: int) -> _Cluster:
    """:func:`_connect`'s client, carrying the logger level to put back."""
    from distributed import Client

    if scheduler.startswith(("tcp://", "tls://", "inproc://", "ucx://")):
        return _Cluster(Client(scheduler, timeout="30s"), log_level=log_level)
    return _Cluster(Client(scheduler_file=scheduler, timeout="30s"), log_level=log_level)


def run_sweep(
    plan: SweepPlan,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    threads: int | None = None,
    stop: Callable[[], str | None] = lambda: None,
) -> Iterator[SweepEvent]:
    """Run the plan's variants (see the module docstring); ends with ``sweep_finished``
    (``counts`` per status)."""
    plan.sweep_dir.mkdir(parents=True, exist_ok=True)
    write_sweep_info(plan.sweep_dir, plan.info())
    results: dict[str, dict | None] = {}
    for variant in plan.variants:
        results[variant.name] = finished_result(variant.name, run_dir(plan.sweep_dir, variant.name))
    todo = [v for v in plan.variants if results[v.name] is None]
    _write(plan, results)
    yield SweepEvent("sweep_started", data={
        "sweep_dir": str(plan.sweep_dir), "variants": len(plan.variants), "to_run": len(todo),
        "names": [v.name for v in plan.variants],
    })  # fmt: skip
    for variant in plan.variants:
        if results[variant.name] is not None:
            yield _finished_event(plan, variant, results[variant.name])
    if todo and scheduler:
        yield from _run_on_cluster(plan, todo, results, scheduler, threads, stop)
    elif todo:
        yield from _run_locally(plan, todo, results, workers, threads, stop)
    counts: dict[str, int] = {}
    for result in results.values():
        status = (result or {}).get("status", "pending")
        counts[status] = counts.get(status, 0) + 1
    yield SweepEvent("sweep_finished", data={"counts": counts})


def _finished_event(plan: SweepPlan, variant: Variant, result: dict) -> SweepEvent:
    data = row(variant.values, variant.name, result)
    data["skipped"] = bool(result.get("skipped"))
    return SweepEvent("variant_finished", variant.name, data)


def _write(plan: SweepPlan, results: dict[str, dict | None]) -> None:
    rows = [row(v.values, v.name, results[v.name]) for v in plan.variants]
    write_results(plan.sweep_dir, rows)


def _run_locally(plan, todo, results, workers, threads, stop):
    """Run ``todo`` on local worker processes, relay progress, record each result."""
    from dnupdate.engine.experiments.local_workers import LocalWorkers

    workers = min(workers or default_workers(), len(todo))
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    yield SweepEvent(
        "status",
        data={
            "message": f"starting {len(todo)} variant(s) on "
            f"{workers} local worker process(es) × {threads} thread(s)"
        },
    )
    pool = LocalWorkers(workers, threads)
    by_name = {v.name: v for v in todo}
    try:
        pool.start([_task(plan, v, threads) for v in todo])
        stopping = False
        while not pool.finished():
            message = pool.next_message(0.2)
            if message is not None and message["kind"] == "result":
                name = message["variant"]
                results[name] = message["result"]
                _write(plan, results)
                yield _finished_event(plan, by_name[name], results[name])
            elif message is not None:
                yield _progress_event(message)
            if not stopping and stop():
                stopping = True
                pool.request_stop()
                yield _stopping_event()
    finally:
        pool.close()


def _stopping_event() -> SweepEvent:
    return SweepEvent("status", data={
        "message": "stopping: the running variants checkpoint and end "
                   "(run the same command again to resume them)"})  # fmt: skip


def _run_on_cluster(plan, todo, results, scheduler, threads, stop):
    """Submit ``todo`` to the Dask cluster, relay progress, record each result as its future
    ends."""
    yield SweepEvent("status", data={"message": f"starting {len(todo)} variant(s) on {scheduler}"})
    cluster = _connect(scheduler)
    sweep_id = uuid.uuid4().hex[:12]
    topic, stop_name = f"dnupdate-sweep-{sweep_id}", f"dnupdate-sweep-stop-{sweep_id}"
    inbox: queue.Queue = queue.Queue()
    by_name = {v.name: v for v in todo}
    try:
        from distributed import Event

        cluster.client.subscribe_topic(topic, lambda event: inbox.put(event[1]))
        stop_event = Event(stop_name, client=cluster.client)
        futures = {
            cluster.client.submit(dask_task, _task(plan, v, threads), topic, stop_name,
                                  key=f"{v.name}-{sweep_id}", pure=False): v.name
            for v in todo
        }  # fmt: skip
        stopping = False
        while futures:
            try:
                message = inbox.get(timeout=0.2)
            except queue.Empty:
                message = None
            if message is not None:  # then the stop and the ended futures: none waits
                yield _progress_event(message)
            if not stopping and stop():
                stopping = True
                stop_event.set()
                yield _stopping_event()
            for future in [f for f in futures if f.done()]:
                name = futures.pop(future)
                results[name] = _outcome(future, name)
                _write(plan, results)
                yield _finished_event(plan, by_name[name], results[name])
        while not inbox.empty():
            inbox.get_nowait()
    finally:
        cluster.close()


def _outcome(future, name: str) -> dict[str, Any]:
    """The variant's result, or a failure when the task itself raised (worker lost, …)."""
    if future.status == "finished":
        return future.result()
    try:
        error = future.exception()
        reason = f"{type(error).__name__}: {error}"
    except Exception as exc:  # cancelled
        reason = f"{type(exc).__name__}: {exc}"
    return {"name": name, "status": "failed", "reason": reason, "summary": {}, "skipped": False}


def _progress_event(message: dict[str, Any]) -> SweepEvent:
    kind = {"started": "variant_started", "step": "variant_progress", "eval": "variant_eval"}
    data = {k: v for k, v in message.items() if k not in ("variant", "kind")}
    return SweepEvent(kind.get(message.get("kind", ""), "status"), message.get("variant", ""),
                      data)  # fmt: skip


__all__ = ["SweepEvent", "SweepPlan", "default_workers", "plan_sweep", "run_sweep"]
