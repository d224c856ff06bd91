"""The human view of a training run, on stderr.

* :class:`Dashboard` — a Rich live display when stderr is a terminal: progress (iteration of
  max, epoch, ETA, images/s), the raw and smoothed loss with their definitions, lr, the last
  test, a loss sparkline and a per-layer table (‖w‖, ‖Δw‖, ‖Δw‖/‖w‖), refreshed at most
  :data:`REFRESH_SECONDS` apart; a spinner with a message while kernels compile.
* :class:`PlainLines` — one plain line per display interval (Caffe ``display``; darknet prints
  every update) plus a line per test, checkpoint and ending, for logs and pipes.

Both honour ``NO_COLOR`` (through :func:`cli.common.stderr_console`).
"""

from __future__ import annotations

import time
from collections import deque
from typing import IO

from engine.training.session import display_label

REFRESH_SECONDS = 0.25
SPARK_BLOCKS = "▁▂▃▄▅▆▇█"
SPARK_LENGTH = 60
MAX_TABLE_LAYERS = 16


def sparkline(values, length: int = SPARK_LENGTH) -> str:
    """The last ``length`` values as block characters scaled between their min and max
    (non-finite values drawn as ``!``)."""
    tail = list(values)[-length:]
    finite = [v for v in tail if v == v and abs(v) != float("inf")]
    if not finite:
        return "!" * len(tail)
    low, high = min(finite), max(finite)
    span = high - low or 1.0
    top = len(SPARK_BLOCKS) - 1
    out = []
    for value in tail:
        if value != value or abs(value) == float("inf"):
            out.append("!")
        else:
            out.append(SPARK_BLOCKS[round((value - low) / span * top)])
    return "".join(out)


def format_seconds(seconds: float) -> str:
    """``h:mm:ss`` (or ``m:ss``)."""
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "?"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _g(value, digits: int = 5) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:.{digits}g}"


class RunView:
    """What both displays know about the run, updated event by event."""

    def __init__(self) -> None:
        self.started = None
        self.step = None
        self.norms = None
        self.last_eval = None
        self.status = ""
        self.busy = False
        self.losses: deque[float] = deque(maxlen=SPARK_LENGTH)
        self.start_iteration = 0
        self.t0 = time.perf_counter()

    def update(self, event) -> None:
        kind = event.kind
        if kind == "run_started":
            self.started = event
            self.start_iteration = event.start_iteration
        elif kind == "status":
            self.status, self.busy = event.message, event.busy
        elif kind == "step_finished":
            self.step = event
            self.losses.append(event.loss)
        elif kind == "norms_reported":
            self.norms = event
        elif kind == "eval_finished":
            self.last_eval = event

    def layer_kinds(self) -> dict[str, str]:
        """``{layer name: kind}`` from the resolved config of ``run_started``."""
        if self.started is None:
            return {}
        layers = self.started.config.get("net", {}).get("layers", [])
        return {str(item.get("name")): str(item.get("kind")) for item in layers}

    def eta_seconds(self) -> float:
        """Remaining time from the session's pace so far."""
        if self.step is None or self.started is None:
            return float("nan")
        done = self.step.iteration - self.start_iteration
        seconds = time.perf_counter() - self.t0
        if done <= 0:
            return float("nan")
        return (self.started.max_iter - self.step.iteration) * seconds / done


# --------------------------------------------------------------------------------------------
# Plain lines
# --------------------------------------------------------------------------------------------


def diverged_line(event) -> str:
    """``DIVERGED: <what> (layer L); last good checkpoint: <file>``; the layer is left out
    when ``what`` already names it (a non-finite loss names its loss layer)."""
    kept = event.last_checkpoint or "none written yet"
    layer = "" if f"layer {event.layer}" in event.what else f" (layer {event.layer})"
    return f"DIVERGED: {event.what}{layer}; last good checkpoint: {kept}"


class PlainLines:
    """One line per display interval, and per test/checkpoint/ending (no colour, no cursor
    movement: safe for files and batch-job logs)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.view = RunView()

    def _print(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def handle(self, event) -> None:
        self.view.update(event)
        method = getattr(self, f"_on_{event.kind}", None)
        if method is not None:
            method(event)

    def close(self) -> None:
        self.stream.flush()

    def _on_run_started(self, e) -> None:
        self._print(
            f"dnupdate train: {e.config_path} ({e.format} config, net {e.net}) under {e.semantics} "
            f"semantics, {e.optimizer}; {e.images_per_update} images per update "
            f"({e.minibatch} x {e.accumulate}); iterations {e.start_iteration} -> {e.max_iter}"
            + (" (resumed)" if e.resumed else "")
        )
        self._print(f"data: {e.dataset}; {e.train_images} train / {e.test_images} test images")
        self._print(f"{e.smoothed_loss_name} = {e.smoothed_loss_definition}")
        if e.out_dir:
            self._print(f"run folder: {e.out_dir}")

    def _on_status(self, e) -> None:
        if e.busy:
            self._print(e.message + " ...")
        elif e.message != "training":
            self._print(e.message)

    def _on_step_finished(self, e) -> None:
        started = self.view.started
        every = started.display_every if started else 1
        semantics = started.semantics if started else "darknet"
        last = started is not None and e.iteration >= started.max_iter
        label = display_label(semantics, e.iteration, every)
        if label is None and not last:
            return
        if label is None:  # the last update, off the display grid: the framework's number
            label = display_label(semantics, e.iteration, 1)
        name = started.smoothed_loss_name if started else "smoothed"
        total = started.max_iter if started else "?"
        self._print(
            f"iter {label}/{total} epoch {e.epoch:.3f}: loss {_g(e.loss)}, "
            f"{name} {_g(e.smoothed_loss)}, lr {_g(e.lr, 6)}, {e.images_per_s:.0f} img/s, "
            f"{format_seconds(e.elapsed_s)} elapsed, ETA {format_seconds(self.view.eta_seconds())}"
        )

    def _on_eval_finished(self, e) -> None:
        self._print(
            f"test after {e.iteration} updates: accuracy {_g(e.accuracy, 4)}, loss {_g(e.loss)} "
            f"({e.images} images)"
        )

    def _on_checkpoint_saved(self, e) -> None:
        if e.files:
            self._print(f"checkpoint ({e.reason}) after {e.iteration} updates: {e.files[0]}")

    def _on_diverged(self, e) -> None:
        self._print(diverged_line(e))

    def _on_interrupted(self, e) -> None:
        self._print(
            f"interrupted by {e.signal} after {e.iteration} updates; checkpoint: "
            f"{e.checkpoint or '(no run folder)'}"
        )

    def _on_run_finished(self, e) -> None:
        self._print(summary_line(e))


def summary_line(event) -> str:
    """One line summing up a :class:`engine.training.events.RunFinished`."""
    s = event.summary
    parts = [f"{event.status} after {event.iteration} updates"]
    if s.get("final_loss") is not None:
        parts.append(f"loss {_g(s['final_loss'])}")
    if s.get("test_accuracy") is not None:
        parts.append(f"test accuracy {_g(s['test_accuracy'], 4)}")
    parts.append(f"{s.get('images_per_s', 0):.0f} img/s")
    parts.append(f"{format_seconds(s.get('wall_time_s', 0.0))} wall time")
    return "; ".join(parts)


# --------------------------------------------------------------------------------------------
# Rich live dashboard
# --------------------------------------------------------------------------------------------


class Dashboard:
    """The Rich live display (see the module docstring). ``console``: a Rich console on
    stderr. Refreshes at most every :data:`REFRESH_SECONDS`, and always on a test, an ending
    or a status change."""

    def __init__(self, console) -> None:
        from rich.live import Live

        self.console = console
        self.view = RunView()
        # auto refresh keeps the spinner turning while the loop is busy compiling kernels
        self.live = Live(console=console, auto_refresh=True, refresh_per_second=4)
        self._last_refresh = 0.0
        self._started = False
        self._spinner = None
        self._finished = None

    def handle(self, event) -> None:
        self.view.update(event)
        kind = event.kind
        if kind == "run_finished":
            self._finished = event
        if not self._started:
            self.live.start()
            self._started = True
        if kind in ("checkpoint_saved", "diverged", "interrupted"):
            self.live.console.print(self._event_line(event))
        forced = kind in ("status", "eval_finished", "run_finished", "diverged", "run_started")
        now = time.perf_counter()
        if forced or now - self._last_refresh >= REFRESH_SECONDS:
            self.live.update(self.render(), refresh=forced)
            self._last_refresh = now

    def close(self) -> None:
        if self._started:
            self.live.update(self.render(), refresh=True)
            self.live.stop()
            self._started = False
            if self._finished is not None:
                self.console.print(summary_line(self._finished))

    def _event_line(self, event):
        from rich.text import Text

        if event.kind == "checkpoint_saved":
            target = event.files[0] if event.files else "(no run folder)"
            return Text(f"checkpoint ({event.reason}) after {event.iteration} updates: {target}")
        if event.kind == "diverged":
            return Text(diverged_line(event), style="bold red")
        return Text(f"interrupted by {event.signal}; checkpoint: {event.checkpoint}")

    # ---- rendering ----------------------------------------------------------------------------
    def render(self):
        """The whole view as one Rich renderable."""
        from rich.console import Group

        parts = [self._header(), self._progress(), self._numbers()]
        if self.view.norms is not None:
            parts.append(self._table())
        if self.view.busy:
            from rich.spinner import Spinner

            if self._spinner is None:
                self._spinner = Spinner("dots", text=self.view.status)
            parts.append(self._spinner)
        return Group(*[p for p in parts if p is not None])

    def _header(self):
        from rich.text import Text

        s = self.view.started
        if s is None:
            return Text("dnupdate train: starting")
        text = Text()
        text.append("dnupdate train ", style="bold")
        text.append(f"{s.config_path} · net {s.net} · {s.semantics} semantics · {s.optimizer}")
        text.append(f"\n{s.dataset}", style="dim")
        if s.out_dir:
            text.append(f"\nrun folder {s.out_dir}", style="dim")
        return text

    def _progress(self):
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        s, step = self.view.started, self.view.step
        total = s.max_iter if s else 1
        done = step.iteration if step else (s.start_iteration if s else 0)
        grid = Table.grid(padding=(0, 1))
        bar = ProgressBar(total=max(total, 1), completed=done, width=40)
        epoch = f"epoch {step.epoch:.3f}" if step else "epoch 0"
        speed = f"{step.images_per_s:.0f} img/s" if step else "- img/s"
        eta = format_seconds(self.view.eta_seconds())
        grid.add_row(bar, f"{done}/{total}", epoch, f"ETA {eta}", speed)
        return grid

    def _numbers(self):
        from rich.table import Table

        s, step, test = self.view.started, self.view.step, self.view.last_eval
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        grid.add_column(style="dim")
        if step is not None:
            grid.add_row("loss", _g(step.loss), "raw loss of the last update (per image)")
            name = s.smoothed_loss_name if s else "smoothed"
            definition = s.smoothed_loss_definition if s else ""
            grid.add_row(name, _g(step.smoothed_loss), definition)
            grid.add_row("lr", _g(step.lr, 6), "rate the last update used")
            length = max(10, min(SPARK_LENGTH, self.console.width - 50))
            grid.add_row(
                "loss trend",
                sparkline(self.view.losses, length),
                f"raw loss, last {min(length, len(self.view.losses))} updates",
            )
        if test is not None:
            grid.add_row(
                "test accuracy",
                _g(test.accuracy, 4),
                f"top-1 after {test.iteration} updates, {test.images} images, loss {_g(test.loss)}",
            )
        return grid

    def _table(self):
        from rich.table import Table

        norms = self.view.norms
        table = Table(
            title=f"per-layer norms, update {norms.iteration}",
            title_justify="left",
            show_edge=False,
            pad_edge=False,
        )
        table.add_column("layer")
        table.add_column("‖w‖ (before)", justify="right")
        table.add_column("‖g‖ (gradient)", justify="right")
        table.add_column("‖Δw‖ (applied)", justify="right")
        table.add_column("‖Δw‖/‖w‖", justify="right")
        kinds = self.view.layer_kinds()
        for layer in norms.layers[:MAX_TABLE_LAYERS]:
            name = f"{layer.layer} ({kinds[layer.layer]})" if layer.layer in kinds else layer.layer
            grad = "-" if layer.g_norm is None else _g(layer.g_norm)
            table.add_row(name, _g(layer.w_norm), grad, _g(layer.dw_norm), f"{layer.ratio:.2e}")
        if len(norms.layers) > MAX_TABLE_LAYERS:
            table.add_row(f"(+{len(norms.layers) - MAX_TABLE_LAYERS} more)", "", "", "", "")
        if norms.grad_norm is not None:
            scale = "" if norms.clip_scale is None else f", clipped x{norms.clip_scale:.3g}"
            table.caption = f"global gradient norm {_g(norms.grad_norm)}{scale}"
        return table


def make_display(console, *, quiet: bool):
    """The display for this console: None when quiet, the Rich dashboard on a terminal,
    plain lines otherwise."""
    if quiet:
        return None
    if console.is_terminal:
        return Dashboard(console)
    return PlainLines(console.file)
