"""One variant of a sweep, run in the current process (a Dask worker's, or any other).

:func:`run_variant` builds the run exactly as ``dnupdate train`` does (``load_config`` with the
config's text and the ``--set`` overrides, a :class:`RunFolder`, a :class:`TrainingSession` with
the same :class:`TrainOptions`), so its ``final.npz`` equals the standalone run's. A folder that
already holds a finished (or diverged) run is reported as it is, one holding a checkpoint is
resumed (as ``dnupdate train --resume``), and one with nothing to resume is started afresh.
Nothing here imports Dask: progress goes to a ``report(kind, payload)`` callback and the stop
request comes from a ``stop()`` callback.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FINISHED = ("done", "diverged")
#: seconds between two progress reports of one variant
REPORT_EVERY_S = 0.5

Report = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class VariantTask:
    """Everything a worker needs to run one variant (picklable, plain values).

    ``config_path``: the config as given to ``train`` (absolute); ``config_text``: its text
    (read once by the client); ``overrides``: the ``--set`` pairs; ``options``: the
    :class:`engine.training.session.TrainOptions` fields; ``run_dir``: the variant's run
    folder; ``threads``: Numba/BLAS threads for this process (None: leave them)."""

    name: str
    config_path: str
    config_text: str
    overrides: tuple[tuple[str, str], ...]
    options: dict = field(default_factory=dict)
    run_dir: str = ""
    threads: int | None = None


def read_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """The run folder's ``summary.json``, or None when it has none (or it is unreadable)."""
    from dnupdate.engine.training.runfolder import SUMMARY_FILE, RunFolderError, read_json

    path = Path(run_dir) / SUMMARY_FILE
    if not path.exists():
        return None
    try:
        return read_json(path)
    except RunFolderError:
        return None


def finished_result(name: str, run_dir: str | Path) -> dict[str, Any] | None:
    """The result of a variant whose folder already holds a finished or diverged run."""
    summary = read_summary(run_dir)
    if summary is None or summary.get("status") not in FINISHED:
        return None
    reason = summary.get("reason", "") if summary["status"] != "done" else ""
    return {"name": name, "status": summary["status"], "reason": reason, "summary": summary,
            "skipped": True}  # fmt: skip


def _session(task: VariantTask):
    """A new or resumed TrainingSession for the task's folder (``dnupdate train``'s setup)."""
    from dnupdate.engine.config import load_config
    from dnupdate.engine.training.runfolder import RUN_FILE, STATE_FILE, RunFolder, net_file_text
    from dnupdate.engine.training.session import TrainingSession, TrainOptions

    path = Path(task.run_dir)
    if (path / STATE_FILE).exists() and (path / RUN_FILE).exists():
        folder = RunFolder.open(path)
        info = folder.read_run_info()
        overrides = tuple((str(k), str(v)) for k, v in info.get("overrides", []))
        run = load_config(info["config_path"], overrides, text=folder.original_config_text())
        merged = {**info.get("options", {}), "max_iters": task.options.get("max_iters")}
        merged["threads"] = task.options.get("threads")
        return TrainingSession(run, TrainOptions(**merged), folder=folder, resume=True), True
    if path.exists():  # a start that never reached a checkpoint: nothing to resume
        shutil.rmtree(path)
    run = load_config(task.config_path, task.overrides, text=task.config_text)
    folder = RunFolder.create(path)
    session = TrainingSession(
        run,
        TrainOptions(**task.options),
        folder=folder,
        overrides=task.overrides,
        config_text=task.config_text,
        net_text=net_file_text(run),
    )
    return session, False


def _failure(error: BaseException) -> str:
    diagnostics = getattr(error, "diagnostics", None)
    if diagnostics:
        return "; ".join(str(d) for d in diagnostics)
    return f"{type(error).__name__}: {error}"


def run_variant(
    task: VariantTask,
    report: Report | None = None,
    stop: Callable[[], str | None] | None = None,
) -> dict[str, Any]:
    """Run (or resume, or skip) one variant; returns ``{"name", "status", "reason",
    "summary", "skipped"}`` with ``status`` done / diverged / interrupted / failed. Never
    raises for a bad variant: its failure is the result."""
    report = report or (lambda kind, payload: None)
    stop = stop or (lambda: None)
    done = finished_result(task.name, task.run_dir)
    if done is not None:
        return done
    if task.threads is not None:
        from dnupdate.engine.backends.jit_env import limit_threads

        limit_threads(task.threads)
    try:
        session, resumed = _session(task)
        return _drive(task, session, resumed, report, stop)
    except Exception as error:  # a failed variant is recorded; the others go on
        result = {"name": task.name, "status": "failed", "reason": _failure(error),
                  "summary": read_summary(task.run_dir) or {}, "skipped": False}  # fmt: skip
        report("finished", result)
        return result


def _drive(task, session, resumed: bool, report: Report, stop) -> dict[str, Any]:
    """Run the session's events, reporting progress at most every :data:`REPORT_EVERY_S`."""
    last = 0.0
    reason = ""
    status = "failed"
    summary: dict[str, Any] = {}
    for event in session.events(stop):
        kind = event.kind
        if kind == "run_started":
            report("started", {"iteration": event.start_iteration, "max_iter": event.max_iter,
                               "resumed": resumed})  # fmt: skip
        elif kind == "step_finished" and time.monotonic() - last >= REPORT_EVERY_S:
            last = time.monotonic()
            report("step", {"iteration": event.iteration, "loss": event.loss, "lr": event.lr,
                            "smoothed_loss": event.smoothed_loss,
                            "images_per_s": event.images_per_s,
                            "elapsed_s": event.elapsed_s})  # fmt: skip
        elif kind == "eval_finished":
            report("eval", {"iteration": event.iteration, "loss": event.loss,
                            "accuracy": event.accuracy})  # fmt: skip
        elif kind == "diverged":
            reason = f"non-finite {event.what} in {event.layer} at iteration {event.iteration}"
        elif kind == "interrupted":
            reason = f"{event.signal} at iteration {event.iteration}"
        elif kind == "run_finished":
            status, summary = event.status, dict(event.summary)
    if reason and status == "diverged":
        summary["reason"] = reason
        session.folder.write_summary(summary)
    result = {"name": task.name, "status": status, "reason": reason, "summary": summary,
              "skipped": False}  # fmt: skip
    report("finished", result)
    return result
