"""The human view of a training run, on stderr.

* :class:`Dashboard` — a Rich live display when stderr is a terminal: progress (iteration of
  max, epoch, ETA, images/s), the raw and smoothed loss with their definitions, lr, the last
  test, a loss sparkline and a per-layer table (‖w‖, ‖Δw‖, ‖Δw‖/‖w‖), refreshed at most
  :data:`REFRESH_SECONDS` apart; a spinner with a message while kernels compile.
* :class:`PlainLines` — one plain line per display interval (Caffe ``display``; darknet prints
  every update) plus a line per test, checkpoint and ending, for logs and pipes.

A run with simulated mixed precision (``precision_reported`` events) shows its loss scale,
the updates skipped so far and the worst layer's grad/delta underflow and lost-update fraction
(the metrics row's numbers): a row group and per-layer columns in the dashboard, a
``precision`` line per display interval and one per skipped update in the plain lines, and
the skipped updates and final scale in the summary line (also under ``--quiet``).

Both honour ``NO_COLOR`` (through :func:`cli.common.stderr_console`).
"""

from __future__ import annotations

import time
from collections import deque
from typing import IO

from dnupdate.engine.training.session import display_label

REFRESH_SECONDS = 0.25
SPARK_BLOCKS = "▁▂▃▄▅▆▇█"
SPARK_LENGTH = 60
MAX_TABLE_LAYERS = 16
#: a test line says darknet's batch-norm statistics are warming up while their zero start
#: still weighs this much (``EvalFinished.rolling_stats_weight``)
ROLLING_WARMUP_SHOWN = 0.05


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
        #: the last test of each test net (Caffe runs may have several), by index
        self.tests: dict[int, object] = {}
        self.precision = None
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
            self.tests[event.test_net] = event
        elif kind == "precision_reported":
            self.precision = event

    def layer_kinds(self) -> dict[str, str]:
        """``{layer name: kind}`` from the resolved config of ``run_started``."""
        if self.started is None:
            return {}
        layers = self.started.config.get("net", {}).get("layers", [])
        return {str(item.get("name")): str(item.get("kind")) for item in layers}

    def eta_seconds(self) -> float:
        """Remaining time as the engine estimates it (``StepFinished.eta_s``: the recent
        pace); NaN while unknown."""
        if self.step is None or self.step.eta_s is None:
            return float("nan")
        return self.step.eta_s


def updates_of(step) -> int:
    """Updates applied after a ``step_finished`` event (``updates``, or ``iteration`` for
    events without it)."""
    return step.iteration if step.updates is None else step.updates


def speed_text(images_per_s) -> str:
    """``4012 img/s``, or ``- img/s`` before the steady-state rate is known."""
    return "- img/s" if images_per_s is None else f"{images_per_s:.0f} img/s"


def images_text(e) -> str:
    """``1000 images``, or ``10000 predictions over 1000 distinct images`` when Caffe's
    ``test_iter`` wrapped around the test set."""
    distinct = e.images if e.distinct_images is None else e.distinct_images
    if distinct < e.images:
        return f"{e.images} predictions over {distinct} distinct images"
    return f"{e.images} images"


def eval_warnings(e) -> list[str]:
    """What makes a test figure unlike the usual: non-finite scores, darknet's batch-norm
    statistics warming up."""
    out = []
    if e.non_finite:
        text = f"{e.non_finite} of {e.images} predictions had non-finite scores, counted wrong"
        if e.framework_accuracy is not None:  # Caffe's Accuracy, darknet's top_k
            text += f" (the framework's own rule would report {_g(e.framework_accuracy, 4)})"
        out.append(text)
    weight = e.rolling_stats_weight
    if weight is not None and weight >= ROLLING_WARMUP_SHOWN:
        out.append(
            "batch-norm rolling statistics still warming up (they start at 0 as in darknet; "
            f"the zero start still weighs {weight:.0%}), so test figures lag training"
        )
    return out


def eval_line(e) -> str:
    """The plain line of an ``eval_finished`` event, with its warnings: the test net when the
    run has several (Caffe's ``Testing net (#i)``), the accuracy when the net reports one,
    the loss, and each Caffe loss output when there are several (``name = value``, with
    Caffe's ``(* w = w·value loss)`` where the weight is neither 0 nor 1)."""
    net = getattr(e, "test_net_name", "")
    where = f"test net #{e.test_net} ({net})" if net else "test"
    figures = [] if e.accuracy is None else [f"accuracy {_g(e.accuracy, 4)}"]
    figures.append(f"loss {_g(e.loss)}")
    outputs = getattr(e, "outputs", ())
    if len(outputs) > 1:
        figures.append(", ".join(output_text(out) for out in outputs))
    text = f"{where} after {e.iteration} updates: {', '.join(figures)} ({images_text(e)})"
    return text + "".join(f"; WARNING: {w}" for w in eval_warnings(e))


def test_row(test) -> tuple[str, str, str]:
    """The dashboard's row of one test net's last test: its accuracy (when the net reports
    one, else its loss), what it is and the rest of the figures."""
    warned = " (see the warning above)" if eval_warnings(test) else ""
    net = f" #{test.test_net}" if test.test_net_name else ""
    where = f"{test.test_net_name}, " if test.test_net_name else ""
    if test.accuracy is None:
        outputs = ", ".join(output_text(out) for out in test.outputs if len(test.outputs) > 1)
        rest = f", {outputs}" if outputs else ""
        detail = f"{where}after {test.iteration} updates, {images_text(test)}{rest}{warned}"
        return f"test loss{net}", _g(test.loss), detail
    detail = (
        f"{where}top-1 after {test.iteration} updates, {images_text(test)}, "
        f"loss {_g(test.loss)}{warned}"
    )
    return f"test accuracy{net}", _g(test.accuracy, 4), detail


def output_text(out) -> str:
    """One Caffe test output: ``name = value`` plus ``(* w = w·value loss)`` where ``w`` is
    neither 0 (Caffe prints nothing then) nor 1 (Caffe prints ``(* 1 = value loss)``; here
    left out, as it only repeats the value)."""
    text = f"{out.name} = {_g(out.value)}"
    if out.loss_weight not in (0.0, 1.0):
        text += f" (* {_g(out.loss_weight)} = {_g(out.weighted)} loss)"
    return text


def worst_layer(event, field: str) -> tuple[str, float] | None:
    """``(layer, value)`` of the layer with the largest ``field`` (``grad_underflow``,
    ``delta_underflow`` or ``update_lost``) in a ``precision_reported`` event; the first such
    layer on ties; None when no layer has the value."""
    best = None
    for layer in event.layers:
        value = getattr(layer, field)
        if value is not None and (best is None or value > best[1]):
            best = (layer.layer, value)
    return best


def worst_text(event, field: str) -> str:
    """``0.125 (conv1)`` for the worst layer's ``field``, ``-`` when none has it."""
    worst = worst_layer(event, field)
    return "-" if worst is None else f"{_g(worst[1], 4)} ({worst[0]})"


def precision_line(event) -> str:
    """The plain line of a ``precision_reported`` event: storage format, the scale this update
    used, skipped updates so far and the worst layer of each measured fraction."""
    skipped = " (this update skipped: non-finite gradient)" if event.skipped else ""
    zeroed = event.overflow and not event.skipped  # AlexeyAB's static scale zeroes them
    overflow = " (non-finite gradient values zeroed)" if zeroed else ""
    return (
        f"precision {event.precision} at iter {event.iteration}: loss scale "
        f"{_g(event.loss_scale, 6)}{skipped}{overflow}, next {_g(event.next_scale, 6)}, "
        f"{event.skipped_updates} skipped updates; worst grad underflow "
        f"{worst_text(event, 'grad_underflow')}, delta underflow "
        f"{worst_text(event, 'delta_underflow')}, update lost {worst_text(event, 'update_lost')}"
    )


def precision_summary_text(summary: dict) -> str | None:
    """``fp16: 12 skipped updates, final loss scale 32768`` from ``summary.json``'s
    ``precision`` (None for a run without one)."""
    p = summary.get("precision")
    if not p:
        return None
    return (
        f"{p['precision']}: {p['skipped_updates']} skipped updates, "
        f"final loss scale {_g(p['final_scale'], 6)}"
    )


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
        if e.iteration_convention:
            self._print(e.iteration_convention)
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
        convention = started.convention if started else "darknet"
        updates = updates_of(e)
        last = started is not None and updates >= started.max_iter
        if display_label(convention, updates, every) is None and not last:
            return
        name = started.smoothed_loss_name if started else "smoothed"
        total = started.max_iter if started else "?"
        self._print(
            f"iter {e.iteration} (update {updates}/{total}) epoch {e.epoch:.3f}: "
            f"loss {_g(e.loss)}, {name} {_g(e.smoothed_loss)}, lr {_g(e.lr, 6)}, "
            f"{speed_text(e.images_per_s)}, {format_seconds(e.elapsed_s)} elapsed, "
            f"ETA {format_seconds(self.view.eta_seconds())}"
        )

    def _on_precision_reported(self, e) -> None:
        started = self.view.started
        every = started.display_every if started else 1
        convention = started.convention if started else "darknet"
        updates = updates_of(self.view.step) if self.view.step is not None else e.iteration
        last = started is not None and updates >= started.max_iter
        shown = display_label(convention, updates, every) is not None or last
        if shown or e.skipped:  # a skipped update is always worth a line
            self._print(precision_line(e))

    def _on_eval_finished(self, e) -> None:
        self._print(eval_line(e))

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
    """One line summing up a :class:`engine.training.events.RunFinished`: the figures of
    ``summary.json``; a test of older weights than the final ones is named as such."""
    s = event.summary
    parts = [f"{event.status} after {event.iteration} updates"]
    if s.get("final_loss") is not None:
        parts.append(f"loss {_g(s['final_loss'])}")
    if s.get("test_accuracy") is not None:
        accuracy = _g(s["test_accuracy"], 4)
        tested = s.get("test_iteration")
        if tested is None or tested == event.iteration:
            parts.append(f"test accuracy {accuracy}")
        else:
            parts.append(f"last test after {tested} updates: accuracy {accuracy}")
    precision = precision_summary_text(s)
    if precision is not None:
        parts.append(precision)
    if s.get("images_per_s") is not None:
        speed = f"{s['images_per_s']:.0f} img/s"
        if s.get("startup_s") is not None:
            speed += f" (after {s['startup_s']:.1f} s of start-up and kernel compilation)"
        parts.append(speed)
    parts.append(f"{format_seconds(s.get('wall_time_s', 0.0))} wall time")
    return "; ".join(parts)


class EndingLines(PlainLines):
    """``--quiet``: no progress, but why the run stopped still goes to stderr (the divergence,
    the interruption and the final summary line)."""

    def _on_run_started(self, e) -> None:
        return

    def _on_status(self, e) -> None:
        return

    def _on_step_finished(self, e) -> None:
        return

    def _on_precision_reported(self, e) -> None:
        return

    def _on_eval_finished(self, e) -> None:
        return

    def _on_checkpoint_saved(self, e) -> None:
        return


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
        self._ending = False  # past the last update: lines wait until the live view stops
        self._pending: list = []

    def handle(self, event) -> None:
        self.view.update(event)
        kind = event.kind
        if kind == "run_finished":
            self._finished = event
        if not self._started:
            self.live.start()
            self._started = True
        if kind in ("diverged", "interrupted") or (
            kind == "checkpoint_saved" and event.reason != "periodic"
        ):
            self._ending = True
        line = self._event_line(event)
        if line is not None:
            if self._ending:
                self._pending.append(line)  # below the final view, not above it
            else:
                self.live.console.print(line)
        forced = kind in ("status", "eval_finished", "run_finished", "diverged", "run_started")
        now = time.perf_counter()
        if forced or now - self._last_refresh >= REFRESH_SECONDS:
            self.live.update(self.render(), refresh=forced)
            self._last_refresh = now

    def close(self) -> None:
        if self._started:
            self.view.busy = False
            self.live.update(self.render(), refresh=True)
            self.live.stop()
            self._started = False
            for line in self._pending:
                self.console.print(line)
            self._pending.clear()
            if self._finished is not None:
                self.console.print(summary_line(self._finished))

    def _event_line(self, event):
        """The log line an event prints above (or, at the end, below) the live view."""
        from rich.text import Text

        kind = event.kind
        if kind == "checkpoint_saved":
            target = event.files[0] if event.files else "(no run folder)"
            return Text(f"checkpoint ({event.reason}) after {event.iteration} updates: {target}")
        if kind == "diverged":
            return Text(diverged_line(event), style="bold red")
        if kind == "interrupted":
            return Text(f"interrupted by {event.signal}; checkpoint: {event.checkpoint}")
        if kind == "status" and not event.busy and event.message != "training":
            return Text(event.message, style="dim")
        if kind == "eval_finished" and (self._ending or eval_warnings(event)):
            return Text(eval_line(event), style="yellow" if eval_warnings(event) else "")
        return None

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
        if s.iteration_convention:
            text.append(f"\n{s.iteration_convention}", style="dim")
        if s.out_dir:
            text.append(f"\nrun folder {s.out_dir}", style="dim")
        return text

    def _progress(self):
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        s, step = self.view.started, self.view.step
        total = s.max_iter if s else 1
        done = updates_of(step) if step else (s.start_iteration if s else 0)
        grid = Table.grid(padding=(0, 1))
        bar = ProgressBar(total=max(total, 1), completed=done, width=40)
        label = f"iter {step.iteration}" if step else ""
        epoch = f"epoch {step.epoch:.3f}" if step else "epoch 0"
        speed = speed_text(step.images_per_s if step else None)
        eta = format_seconds(self.view.eta_seconds())
        grid.add_row(bar, f"{done}/{total} updates", label, epoch, f"ETA {eta}", speed)
        return grid

    def _numbers(self):
        from rich.table import Table

        s, step = self.view.started, self.view.step
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column(no_wrap=True)  # the sparkline keeps its newest points: never cut
        grid.add_column(style="dim", overflow="fold")  # definitions wrap instead
        if step is not None:
            grid.add_row("loss", _g(step.loss), "raw loss of the last update (per image)")
            name = s.smoothed_loss_name if s else "smoothed"
            definition = s.smoothed_loss_definition if s else ""
            grid.add_row(name, _g(step.smoothed_loss), definition)
            grid.add_row("lr", _g(step.lr, 6), "rate the last update used")
            # room left by the name column (~15) and a definition column of at least 30
            length = max(10, min(SPARK_LENGTH, self.console.width - 49))
            grid.add_row(
                "loss trend",
                sparkline(self.view.losses, length),
                f"raw loss, last {min(length, len(self.view.losses))} updates",
            )
        precision = self.view.precision
        if precision is not None:
            grid.add_row(
                "loss scale",
                _g(precision.loss_scale, 6),
                f"{precision.precision} storage; {precision.skipped_updates} skipped updates "
                f"(non-finite gradient); next scale {_g(precision.next_scale, 6)}",
            )
            grid.add_row(
                "underflow",
                f"grad {worst_text(precision, 'grad_underflow')}",
                f"delta {worst_text(precision, 'delta_underflow')}; worst layers, share of "
                "non-zero values that flush to zero",
            )
            grid.add_row(
                "update lost",
                worst_text(precision, "update_lost"),
                "worst layer, share of non-zero updates the stored weight does not show",
            )
        for test in self.view.tests.values():
            grid.add_row(*test_row(test))
        return grid

    def _table(self):
        from rich.table import Table

        norms = self.view.norms
        table = Table(
            title=f"per-layer norms, iteration {norms.iteration}",
            title_justify="left",
            show_edge=False,
            pad_edge=False,
        )
        table.add_column("layer")
        table.add_column("‖w‖ (before)", justify="right")
        table.add_column("‖g‖ (gradient)", justify="right")
        table.add_column("‖Δw‖ (applied)", justify="right")
        table.add_column("‖Δw‖/‖w‖", justify="right")
        fractions = self._precision_fractions()
        if fractions is not None:
            table.add_column("g underflow", justify="right")
            table.add_column("δ underflow", justify="right")
            table.add_column("update lost", justify="right")
        kinds = self.view.layer_kinds()
        for layer in norms.layers[:MAX_TABLE_LAYERS]:
            name = f"{layer.layer} ({kinds[layer.layer]})" if layer.layer in kinds else layer.layer
            grad = "-" if layer.g_norm is None else _g(layer.g_norm)
            row = [name, _g(layer.w_norm), grad, _g(layer.dw_norm), f"{layer.ratio:.2e}"]
            if fractions is not None:
                row += fractions.get(layer.layer, ["-", "-", "-"])
            table.add_row(*row)
        if len(norms.layers) > MAX_TABLE_LAYERS:
            more = f"(+{len(norms.layers) - MAX_TABLE_LAYERS} more)"
            table.add_row(more, *[""] * (len(table.columns) - 1))
        if norms.grad_norm is not None:
            scale = "" if norms.clip_scale is None else f", clipped x{norms.clip_scale:.3g}"
            table.caption = f"global gradient norm {_g(norms.grad_norm)}{scale}"
        return table

    def _precision_fractions(self) -> dict[str, list[str]] | None:
        """``{layer: [grad_underflow, delta_underflow, update_lost]}`` as shown in the norms
        table (None for a run without simulated precision)."""
        precision = self.view.precision
        if precision is None:
            return None
        return {
            p.layer: [_g(p.grad_underflow, 4), _g(p.delta_underflow, 4), _g(p.update_lost, 4)]
            for p in precision.layers
        }


def make_display(console, *, quiet: bool):
    """The display for this console: when quiet only the ending lines (why the run stopped),
    the Rich dashboard on a terminal, plain lines otherwise."""
    if quiet:
        return EndingLines(console.file)
    if console.is_terminal:
        return Dashboard(console)
    return PlainLines(console.file)
