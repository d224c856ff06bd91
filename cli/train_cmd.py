"""``dnupdate train``: run a darknet ``.cfg`` or Caffe solver with its framework's loop.

The engine's :class:`engine.training.session.TrainingSession` yields events; this module sets it up
from
the options, picks the sinks (Rich dashboard or plain lines on stderr, ``--json`` lines on
stdout), turns SIGINT/SIGTERM into a checkpoint and exit 130, and maps endings to exit codes:
0 done, 1 bad input (config, data, weights, no CUDA device), 2 usage, 3 diverged,
130 interrupted.

``--threads N`` sets BLAS threads through ``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS``/
``MKL_NUM_THREADS`` (read when NumPy loads, which on the command line happens after option
parsing) and, when NumPy is already loaded, through OpenBLAS's ``openblas_set_num_threads``
found in the process; Numba's threads through ``NUMBA_NUM_THREADS`` and the CPU backend.
"""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path

import typer

from dnupdate.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_DIVERGED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    Device,
    Semantics,
    busy,
    checkpoint_every_option,
    data_dir_option,
    data_option,
    data_status,
    device_option,
    eval_every_option,
    fail,
    fail_config,
    json_option,
    lr_scaling_option,
    lr_warmup_option,
    max_iters_option,
    out_option,
    quiet_option,
    report_diagnostics,
    scaling_sets,
    seed_option,
    semantics_option,
    set_option,
    shuffle_option,
    stderr_console,
    threads_option,
    weights_option,
)
from dnupdate.cli.help_format import help_text

TRAIN_HELP = help_text(
    "Train a network from a darknet .cfg or a Caffe solver (.prototxt/.yaml).",
    """CONFIG may be - to read the config from standard input. The loop follows the config's
    framework (or --semantics): darknet counts images seen, accumulates subdivisions and shows
    avg = .9*avg + .1*loss; Caffe counts iterations, accumulates iter_size passes, tests every
    test_interval for test_iter batches and averages the shown loss over average_loss
    updates.""",
    """Everything goes to a run folder (--out, default runs/CONFIG-TIME): the config as given
    and resolved, metrics.jsonl and metrics.csv, checkpoints, state.npz for --resume,
    final.npz plus final.weights (darknet) or final.caffemodel (Caffe), summary.json.""",
    """Exit codes: 0 done, 1 bad input (config, data, weights, no CUDA device), 2 usage,
    3 diverged (non-finite loss or weights), 130 interrupted (a checkpoint is written
    first).""",
    examples=(
        "dnupdate train configs/quickstart.cfg",
        "dnupdate train configs/quickstart.cfg --set learning_rate=0.02 --json",
        """dnupdate train configs/lenet_solver.prototxt --data-dir ../shared/data \\
          --max-iters 500""",
        "dnupdate train --resume runs/quickstart-20260101-120000 --max-iters 400",
    ),
)

EXIT_FOR_STATUS = {"done": EXIT_OK, "diverged": EXIT_DIVERGED, "interrupted": EXIT_INTERRUPTED}


# --------------------------------------------------------------------------------------------
# Threads
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Signals
# --------------------------------------------------------------------------------------------


class StopRequest:
    """SIGINT/SIGTERM handler: the first signal asks the loop to checkpoint and stop (the
    loop calls this object after each update and gets the signal's name); a second one
    aborts at once (KeyboardInterrupt, no checkpoint)."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def __call__(self) -> str | None:
        return self.signal_name

    def _handle(self, signum, frame) -> None:
        if self.signal_name is not None:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                return

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()


# --------------------------------------------------------------------------------------------
# Setting up
# --------------------------------------------------------------------------------------------


def _load_new(config: str, sets: list[str], data: str | None = None):
    """(RunSpec, overrides, config text) for a new run; ConfigError on bad input. ``data``
    (``--data``) decides a Caffe data layer's input shape in place of its source."""
    from dnupdate.engine.config import load_config, parse_overrides, read_config_text

    overrides = parse_overrides(sets)
    text = read_config_text(config)
    run = load_config(config, overrides, text=text, data=data)
    return run, tuple(overrides), text


def _load_resumed(run_dir: str):
    """(RunSpec, overrides, saved options, folder) rebuilt from a run folder's files; the
    folder is locked for the resumed run."""
    from dnupdate.engine.training.runfolder import RunFolder

    folder = RunFolder.open(run_dir)
    try:
        run, overrides, saved = run_from_folder(folder)
    except BaseException:
        folder.unlock()
        raise
    return run, overrides, saved, folder


def run_from_folder(folder):
    """(RunSpec, overrides, saved options) of a run folder: its config as given, with the
    run's overrides; ConfigError, RunFolderError or KeyError/ValueError on damage."""
    from dnupdate.engine.config import load_config
    from dnupdate.engine.training.session import TrainOptions

    info = folder.read_run_info()
    saved = TrainOptions.check_saved(info.get("options", {}), str(folder.path / "run.json"))
    overrides = tuple((str(k), str(v)) for k, v in info.get("overrides", []))
    text = folder.original_config_text()
    config_path = info["config_path"]
    source = "-" if config_path == "<stdin>" else config_path
    copies = sorted(folder.path.glob("config.original*"))  # problems are in the saved copy
    shown = str(copies[0]) if copies else None
    run = load_config(source, overrides, text=text, shown_as=shown, data=saved.get("data"))
    return run, overrides, saved


def _resume_conflicts(
    config, sets, data, weights, seed, semantics, clear, allow_nonfinite=False
) -> list[str]:
    given = {
        "CONFIG": config is not None,
        "--set": bool(sets),
        "--data": data is not None,
        "--weights": weights is not None,
        "--seed": seed is not None,
        "--semantics": semantics is not None,
        "--clear": clear,
        "--allow-nonfinite": allow_nonfinite,
    }
    return [name for name, present in given.items() if present]


def _print_warnings(run) -> None:
    warnings = [d for d in run.diagnostics if d.severity == "warning"]
    if warnings:
        report_diagnostics(warnings)


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


PRECISION_PANEL = "Mixed precision (simulated)"


def train(
    config: str | None = typer.Argument(
        None, metavar="CONFIG", help="darknet .cfg or Caffe solver; - reads standard input."
    ),
    data: str | None = data_option(),
    data_dir: str | None = data_dir_option(),
    weights: str | None = weights_option(),
    clear: bool = typer.Option(
        False, "--clear", help="Ignore the .weights header's images-seen count (darknet -clear)."
    ),
    allow_nonfinite: bool = typer.Option(
        False,
        "--allow-nonfinite",
        help="Load --weights holding NaN/inf (with a warning) instead of refusing them.",
    ),
    resume: str | None = typer.Option(
        None, "--resume", metavar="RUN_DIR", help="Continue a run exactly from its last state."
    ),
    max_iters: int | None = max_iters_option(),
    seed: int | None = seed_option(),
    semantics: Semantics | None = semantics_option(),
    device: Device = device_option(),
    threads: int | None = threads_option(),
    out: str | None = out_option("Run folder (default: runs/CONFIG-TIME)."),
    sets: list[str] = set_option(),
    shuffle: bool | None = shuffle_option(),
    eval_every: int | None = eval_every_option(),
    checkpoint_every: int | None = checkpoint_every_option(),
    display_every: int | None = typer.Option(
        None,
        "--display-every",
        min=1,
        metavar="N",
        help="Plain log line every N updates (default: Caffe display; darknet every update).",
    ),
    as_json: bool = json_option(),
    quiet: bool = quiet_option(),
    lr_scaling: str | None = lr_scaling_option(),
    lr_warmup: int | None = lr_warmup_option(),
    precision: str | None = typer.Option(
        None,
        "--precision",
        metavar="fp32|fp16|bf16",
        help="Simulated storage precision of weights, outputs, deltas, gradients (fp32).",
        rich_help_panel=PRECISION_PANEL,
    ),
    loss_scale: str | None = typer.Option(
        None,
        "--loss-scale",
        metavar="MODE",
        help="Loss scaling: none, dynamic (torch GradScaler) or a static value.",
        rich_help_panel=PRECISION_PANEL,
    ),
    scale_init: float | None = typer.Option(
        None,
        "--scale-init",
        metavar="S",
        help="Dynamic loss scale's start (65536).",
        rich_help_panel=PRECISION_PANEL,
    ),
    scale_growth: float | None = typer.Option(
        None,
        "--scale-growth",
        metavar="F",
        help="Dynamic scale's growth factor (2).",
        rich_help_panel=PRECISION_PANEL,
    ),
    scale_backoff: float | None = typer.Option(
        None,
        "--scale-backoff",
        metavar="F",
        help="Dynamic scale's factor on overflow (0.5).",
        rich_help_panel=PRECISION_PANEL,
    ),
    scale_growth_interval: int | None = typer.Option(
        None,
        "--scale-growth-interval",
        min=1,
        metavar="N",
        help="Grow the dynamic scale after N clean updates (2000).",
        rich_help_panel=PRECISION_PANEL,
    ),
    master_weights: bool = typer.Option(
        False,
        "--master-weights",
        help="Update a float32 master copy of the weights (the default).",
        rich_help_panel=PRECISION_PANEL,
    ),
    no_master_weights: bool = typer.Option(
        False,
        "--no-master-weights",
        help="Update the low-precision weights themselves (lost updates are real).",
        rich_help_panel=PRECISION_PANEL,
    ),
) -> None:
    """Train (see TRAIN_HELP); exits 0 done, 1 bad input, 2 usage, 3 diverged, 130 stopped."""
    if master_weights and no_master_weights:
        fail("--master-weights and --no-master-weights: give one", EXIT_USAGE)
    mixed = {
        "precision": precision,
        "loss_scale": loss_scale,
        "scale_init": scale_init,
        "scale_growth": scale_growth,
        "scale_backoff": scale_backoff,
        "scale_growth_interval": scale_growth_interval,
        "master_weights": 1 if master_weights else 0 if no_master_weights else None,
    }
    if resume is None and config is None:
        fail("give a CONFIG file (or - for standard input), or --resume RUN_DIR", EXIT_USAGE)
    if resume is not None:
        conflicts = _resume_conflicts(
            config, sets, data, weights, seed, semantics, clear, allow_nonfinite
        )
        scaling = (("--lr-scaling", lr_scaling), ("--lr-warmup", lr_warmup))
        conflicts += [name for name, value in scaling if value is not None]
        conflicts += ["--" + k.replace("_", "-") for k, v in mixed.items() if v is not None]
        if conflicts:
            fail(
                f"--resume takes the config and its options from the run folder; drop "
                f"{', '.join(conflicts)}",
                EXIT_USAGE,
            )
    sets = [*sets, *scaling_sets(lr_scaling, lr_warmup)]
    sets += [f"{key}={value}" for key, value in mixed.items() if value is not None]
    from dnupdate.engine.backends.jit_env import limit_threads

    numba_threads = limit_threads(threads) if threads else None
    try:
        session = _set_up(
            config=config,
            resume=resume,
            sets=sets,
            out=out,
            console=None if quiet else stderr_console(),
            options={
                "data": data,
                "data_dir": data_dir,
                "weights": weights,
                "clear": clear,
                "allow_nonfinite": allow_nonfinite,
                "max_iters": max_iters,
                "seed": seed,  # None: the config's random_seed / seed=, else 0
                "semantics": None if semantics is None else semantics.value,
                "device": device.value,
                "threads": numba_threads,
                "shuffle": shuffle,
                "eval_every": eval_every,
                "checkpoint_every": checkpoint_every,
                "display_every": display_every,
            },
        )
    except KeyboardInterrupt:
        print("dnupdate: interrupted before training started", file=sys.stderr)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    raise typer.Exit(_run(session, as_json=as_json, quiet=quiet))


def _set_up(*, config, resume, sets, out, options, console=None):
    """Build the TrainingSession (and its run folder); every bad input exits with code 1.
    Opening the data (generating a synthetic set the first time) can take seconds: a spinner
    on ``console`` says so meanwhile."""
    from dnupdate.engine.data import DataError
    from dnupdate.engine.formats.weights import WeightsFileError
    from dnupdate.engine.model.network import NetworkError
    from dnupdate.engine.spec import ConfigError
    from dnupdate.engine.training.runfolder import (
        RunFolder,
        RunFolderError,
        default_run_dir,
        net_file_text,
    )
    from dnupdate.engine.training.session import TrainingSession, TrainOptions, TrainSetupError
    from dnupdate.engine.training.step import TrainerStateError

    bad_input = (
        DataError,
        WeightsFileError,
        NetworkError,
        RunFolderError,
        TrainSetupError,
        TrainerStateError,
    )
    created: Path | None = None
    folder = None
    try:
        if resume is not None:
            run, overrides, saved, folder = _load_resumed(resume)
            # this machine's choices; max_iters None = the config's end, not the last stop
            merged = {**saved, "max_iters": options["max_iters"]}
            merged.update({k: options[k] for k in ("device", "threads")})
            for key in ("eval_every", "display_every"):
                if options[key] is not None:
                    merged[key] = options[key]
            train_options = TrainOptions(**merged)
            _print_warnings(run)
            with busy(console, _setup_status(run, merged)):
                return TrainingSession(
                    run, train_options, folder=folder, resume=True, overrides=overrides
                )
        run, overrides, text = _load_new(config, sets, options["data"])
        _print_warnings(run)
        target = Path(out) if out else default_run_dir(config)
        folder = RunFolder.create(target)
        created = target if folder.created else None
        with busy(console, _setup_status(run, options)):
            return TrainingSession(
                run,
                TrainOptions(**options),
                folder=folder,
                overrides=overrides,
                config_text=text,
                net_text=net_file_text(run),
            )
    except ConfigError as exc:
        _release(folder, created)
        fail_config(exc)
    except bad_input as exc:
        _release(folder, created)
        fail(str(exc), EXIT_BAD_INPUT)
    except BaseException:
        _release(folder, created)
        raise


def _setup_status(run, options: dict) -> str:
    """The spinner's text while the session is built: what opening the training data does."""
    source = options.get("data") or run.data.train.source
    return data_status(source, "train", options.get("data_dir"))


def _release(folder, created: Path | None) -> None:
    """Unlock the run folder of a run that could not start, and remove it when this
    invocation created it (never a folder another run made or holds)."""
    if folder is not None:
        folder.unlock()
    if created is not None:
        shutil.rmtree(created, ignore_errors=True)


def _run(session, *, as_json: bool, quiet: bool) -> int:
    """Drive the session's events into the sinks; the exit code of the ending."""
    from dnupdate.cli.dashboard import make_display
    from dnupdate.cli.sinks import JsonLinesSink

    sinks = []
    display = make_display(stderr_console(), quiet=quiet)
    if display is not None:
        sinks.append(display)
    if as_json:
        sinks.append(JsonLinesSink(sys.stdout))
    stop = StopRequest()
    stop.install()
    status = "done"
    saved = ""  # the checkpoint a first signal wrote
    try:
        for event in session.events(stop):
            for sink in sinks:
                sink.handle(event)
            if event.kind == "run_finished":
                status = event.status
            elif event.kind == "interrupted":
                saved = event.checkpoint
    except KeyboardInterrupt:
        for sink in sinks:
            sink.close()
        if saved:
            print(f"dnupdate: interrupted twice; checkpoint written: {saved}", file=sys.stderr)
        else:
            print("dnupdate: interrupted twice; stopped without a checkpoint", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        stop.restore()
    for sink in sinks:
        sink.close()
    return EXIT_FOR_STATUS.get(status, EXIT_BAD_INPUT)
