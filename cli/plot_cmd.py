"""``dnupdate plot RUN_DIR [RUN_DIR...]``: a run's curves against the iteration, or several
runs overlaid.

Reads each run folder's ``metrics.jsonl`` (a run still in progress works: a row being written
is skipped) and draws six panels: loss (raw, smoothed, test; ``--log`` for a log scale),
learning rate, test accuracy, and per layer ‖w‖, ‖g‖ and ‖Δw‖/‖w‖ (log scale: the ratio spans
decades); a run with simulated mixed precision (a ``loss_scale`` column) adds a seventh, the
loss scale each update used (log scale), with a marker at each skipped update (``overflow``).
Test values, sparse, get a dot at each point. In the terminal (plotille), or to one
``.svg`` (the built-in writer of :mod:`cli.plotting`: axes, ticks, labels, legend; no
dependency) or ``.png`` (matplotlib, an optional extra). With several runs, each curve is
labelled by its run: the folder name and the settings in which the runs differ (``--set``
overrides, seed, semantics, data, config), and the loss panel leaves out the noisy raw loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from dnupdate.cli.common import EXIT_BAD_INPUT, EXIT_USAGE, fail
from dnupdate.cli.help_format import help_text

if TYPE_CHECKING:  # NumPy and cli.plotting load lazily: --help stays light
    import numpy as np

    from dnupdate.cli.plotting import Curve, Marker

PLOT_HELP = help_text(
    "Plot runs' loss, learning rate, test accuracy and per-layer norms.",
    """Each RUN_DIR is a folder written by dnupdate train (it may still be running); with
    several, their curves are overlaid and labelled by run name and differing settings. A
    SWEEP_DIR (written by dnupdate sweep) stands for its variants: their loss, learning rate
    and test accuracy overlaid, each labelled by its grid values.
    Panels: loss (raw, smoothed, test), learning rate, test accuracy, and per layer the weight
    norm, the gradient norm and the update ratio; a run trained with --precision or a loss
    scale adds the loss scale, skipped updates marked. Without --output the plots are drawn in the
    terminal; --output FILE.svg or FILE.png writes them to a file (PNG needs matplotlib).""",
    examples=(
        "dnupdate plot runs/quickstart-20260101-120000",
        "dnupdate plot runs/quickstart-20260101-120000 --output curves.svg --log",
        "dnupdate plot runs/lr-0.05 runs/lr-0.02 --output compare.svg",
        "dnupdate plot sweeps/lr-batch --output sweep.svg",
    ),
)

#: the per-layer panels: (metrics field, title, y label, log scale)
NORM_PANELS = (
    ("w_norm", "weight norm ‖w‖ per layer (before the update)", "‖w‖", False),
    ("g_norm", "gradient norm ‖g‖ per layer", "‖g‖", False),
    ("ratio", "update ratio ‖Δw‖/‖w‖ per layer", "‖Δw‖/‖w‖", True),
)


@dataclass(frozen=True)
class Panel:
    """One plot: a title, a y label, its curves and whether its y axis is logarithmic."""

    title: str
    y_label: str
    curves: tuple[Curve, ...]
    log_y: bool = False

    @property
    def empty(self) -> bool:
        return not any(len(curve.x) for curve in self.curves)


@dataclass(frozen=True)
class Run:
    """One run's metrics rows and the label its curves carry."""

    label: str
    rows: list[dict]


def _series(
    rows: list[dict], kind: str, key: str, test_net: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    xs, ys = [], []
    for row in rows:
        if row.get("kind") != kind or row.get(key) in (None, ""):
            continue
        if test_net is not None and str(row.get("test_net", "")) != test_net:
            continue
        xs.append(float(row["iteration"]))
        ys.append(float(row[key]))  # non-finite values are stored as "nan"/"inf"
    return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)


def _curve(
    label: str, rows: list[dict], kind: str, key: str, test_net: str | None = None
) -> Curve | None:
    """The ``key`` values of ``kind`` rows (of one Caffe test net when ``test_net`` is
    given) against the iteration (None when there are none); test values get points."""
    from dnupdate.cli.plotting import Curve

    x, y = _series(rows, kind, key, test_net)
    return Curve(label, x, y, points=kind == "test") if len(x) else None


def _test_curves(label: str, rows: list[dict], key: str) -> list[Curve | None]:
    """The test ``key`` curve; one per test net (``label #i``) for a Caffe run with several
    (rows with a ``test_net`` column), whose tests would otherwise interleave."""
    nets = dict.fromkeys(str(r["test_net"]) for r in rows if r.get("test_net") not in (None, ""))
    if len(nets) < 2:
        return [_curve(label, rows, "test", key)]
    return [_curve(f"{label} #{net}", rows, "test", key, net) for net in nets]


def smoothed_key(rows: list[dict]) -> str | None:
    """The smoothed-loss column of these rows (``avg_loss_ema``, ``smoothed_loss_window<N>``)."""
    for row in rows:
        for key in row:
            if key == "avg_loss_ema" or key.startswith("smoothed_loss"):
                return key
    return None


def layer_names(rows: list[dict]) -> list[str]:
    """The layers with norm columns (``<layer>.w_norm``), in column order."""
    names: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key.endswith(".w_norm"):
                names.setdefault(key[: -len(".w_norm")])
    return list(names)


def skipped_markers(rows: list[dict]) -> tuple[Marker, ...]:
    """A ``skipped`` marker at the iteration of each train row with ``overflow`` 1 (a
    non-finite gradient: GradScaler skipped the update)."""
    from dnupdate.cli.plotting import Marker

    return tuple(
        Marker(float(row["iteration"]), "skipped")
        for row in rows
        if row.get("kind") == "train" and row.get("overflow") in (1, "1", True)
    )


def scale_curve(label: str, rows: list[dict]) -> Curve | None:
    """The ``loss_scale`` column against the iteration with the skipped-update markers (None
    for a run without simulated precision)."""
    import dataclasses

    curve = _curve(label, rows, "train", "loss_scale")
    return None if curve is None else dataclasses.replace(curve, markers=skipped_markers(rows))


def panels_from_runs(runs: list[Run], log_loss: bool = False) -> list[Panel]:
    """The six panels (see the module docstring) of one run or several overlaid, and the
    loss-scale panel when a run has one."""
    several = len(runs) > 1

    def named(run: Run, what: str) -> str:
        return f"{run.label}: {what}" if several else what

    loss, lr, accuracy, scale = [], [], [], []
    norms: dict[str, list] = {field: [] for field, *_ in NORM_PANELS}
    for run in runs:
        rows, smooth = run.rows, smoothed_key(run.rows)
        if not several:
            loss.append(_curve(named(run, "loss (raw)"), rows, "train", "loss"))
        if smooth:
            loss.append(_curve(named(run, smooth), rows, "train", smooth))
        loss += _test_curves(named(run, "test loss"), rows, "test_loss")
        lr.append(_curve(named(run, "lr"), rows, "train", "lr"))
        accuracy += _test_curves(named(run, "top-1"), rows, "test_accuracy")
        scale.append(scale_curve(named(run, "loss scale"), rows))
        for field in norms:
            for layer in layer_names(rows):
                label = named(run, f"layer {layer}")
                norms[field].append(_curve(label, rows, "train", f"{layer}.{field}"))

    def kept(curves: list) -> tuple[Curve, ...]:
        return tuple(curve for curve in curves if curve is not None)

    panels = [
        Panel("loss", "loss", kept(loss), log_loss),
        Panel("learning rate", "lr", kept(lr)),
        Panel("test accuracy", "accuracy", kept(accuracy)),
        *(Panel(title, y, kept(norms[field]), log) for field, title, y, log in NORM_PANELS),
    ]
    if kept(scale):
        title = "loss scale S per update (marked: skipped updates, non-finite gradient)"
        panels.append(Panel(title, "S", kept(scale), True))
    return panels


# ---- runs and their labels -------------------------------------------------------------------


def run_settings(run_dir: Path) -> dict[str, str]:
    """What a run was trained with, from its ``run.json``: the ``--set`` overrides, seed,
    semantics, data and config file (empty when the folder has no ``run.json``)."""
    from dnupdate.engine.training.runfolder import RunFolderError, read_json

    try:
        info = read_json(run_dir / "run.json")
    except (RunFolderError, OSError, ValueError):
        return {}
    if not isinstance(info, dict):
        return {}
    settings = {str(k): str(v) for k, v in info.get("overrides", [])}
    options = info.get("options") or {}
    for key in ("seed", "semantics", "data"):
        if options.get(key) is not None:
            settings.setdefault(key, str(options[key]))
    if info.get("config_path"):
        settings["config"] = Path(str(info["config_path"])).name
    return settings


def run_labels(run_dirs: list[Path]) -> list[str]:
    """Each run's folder name, plus ``key=value`` for the settings in which the runs differ
    (a setting one run lacks counts as different)."""
    settings = [run_settings(path) for path in run_dirs]
    keys = sorted({key for s in settings for key in s})
    differing = [key for key in keys if len({s.get(key) for s in settings}) > 1]
    labels = []
    for path, s in zip(run_dirs, settings, strict=True):
        name = path.resolve().name
        shown = ", ".join(f"{key}={s[key]}" for key in differing if key in s)
        labels.append(f"{name} ({shown})" if shown and len(run_dirs) > 1 else name)
    return labels


# ---- sweeps ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A run folder to plot, with its label when it is a sweep's variant (else None: the
    label comes from :func:`run_labels`)."""

    path: Path
    label: str | None = None


def sweep_variants(sweep_dir: Path) -> tuple[list[Target], list[str]] | None:
    """A sweep folder's variants that have started (their run folders hold metrics), each
    labelled by its grid values (``learning_rate=0.05, batch=32``), and the names of those
    not started yet; None when ``sweep_dir`` holds no ``sweep.json``."""
    from dnupdate.engine.experiments.results import SWEEP_FILE
    from dnupdate.engine.training.runfolder import RunFolderError, read_json

    if not (sweep_dir / SWEEP_FILE).is_file():
        return None
    try:
        info = read_json(sweep_dir / SWEEP_FILE)
    except (RunFolderError, OSError, ValueError) as exc:
        fail(f"{sweep_dir / SWEEP_FILE}: {exc}", EXIT_BAD_INPUT)
    variants = info.get("variants") if isinstance(info, dict) else None
    if not isinstance(variants, list):
        fail(f"{sweep_dir / SWEEP_FILE}: no variants listed", EXIT_BAD_INPUT)
    targets, waiting = [], []
    for variant in variants:
        name = str(variant.get("name", ""))
        path = sweep_dir / str(variant.get("run_dir") or f"runs/{name}")
        values = variant.get("values") or {}
        label = ", ".join(f"{key}={value}" for key, value in values.items()) or name
        if any(path.glob("metrics.*")):
            targets.append(Target(path, label))
        else:
            waiting.append(name)
    return targets, waiting


def expand_targets(run_dirs: list[str]) -> tuple[list[Target], list[str], bool]:
    """The run folders to plot: each RUN_DIR as given, each SWEEP_DIR as its started
    variants. Also the notes on variants not started, and whether any sweep was given."""
    targets: list[Target] = []
    notes: list[str] = []
    any_sweep = False
    for given in run_dirs:
        expanded = sweep_variants(Path(given))
        if expanded is None:
            targets.append(Target(Path(given)))
            continue
        any_sweep = True
        variants, waiting = expanded
        if not variants:
            fail(f"{given}: no variant of this sweep has started yet", EXIT_BAD_INPUT)
        prefix = f"{Path(given).resolve().name}: " if len(run_dirs) > 1 else ""
        targets += [Target(t.path, f"{prefix}{t.label}") for t in variants]
        if waiting:
            notes.append(f"{given}: {len(waiting)} variant(s) not started yet, not plotted")
    return targets, notes, any_sweep


def target_labels(targets: list[Target]) -> list[str]:
    """Sweep variants keep their grid labels; plain runs get :func:`run_labels`'s."""
    if all(t.label is None for t in targets):
        return run_labels([t.path for t in targets])
    return [t.label or t.path.resolve().name for t in targets]


def _terminal(panels: list[Panel], color: bool) -> str:
    from dnupdate.cli.plotting import terminal_plot

    out = []
    for panel in panels:
        if panel.empty:
            out.append(f"{panel.title}: no values yet")
            continue
        out.append(panel.title)
        out.append(
            terminal_plot(
                panel.curves, height=12, color=color, y_label=panel.y_label, log_y=panel.log_y
            )
        )
    return "\n".join(out)


# ---- files -----------------------------------------------------------------------------------


def write_svg(path: Path, panels: list[Panel], title: str) -> None:
    """The panels stacked in one SVG (the built-in writer, with axes), written atomically."""
    from dnupdate.cli.plotting import SVG_LEFT, _escape, svg_document, svg_panel
    from dnupdate.engine.training.runfolder import write_text

    lines = title.splitlines()[:6]
    parts = [
        f'<text x="{SVG_LEFT}" y="{18 + 14 * row}">{_escape(line)}</text>'
        for row, line in enumerate(lines)
    ]
    top = 14.0 + 14 * len(lines)
    for panel in panels:
        if panel.empty:
            parts += [
                f'<text x="{SVG_LEFT}" y="{top + 18}" font-weight="bold">{panel.title}</text>',
                f'<text x="{SVG_LEFT}" y="{top + 38}">no values yet</text>',
            ]
            top += 50
            continue
        drawn, height = svg_panel(
            panel.curves,
            top=top,
            title=panel.title,
            x_label="iteration",
            y_label=panel.y_label,
            log_y=panel.log_y,
        )
        parts += drawn
        top += height
    write_text(path, svg_document(top + 10, parts))


def write_png(path: Path, panels: list[Panel], title: str) -> None:
    """The panels as a PNG through matplotlib (Agg): log scales and test points as in the
    SVG; :func:`cli.plotting.check_output` has made sure matplotlib is there."""
    import matplotlib
    import numpy as np

    from dnupdate.cli.plotting import MAX_MARKERS, _unique_markers

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(panels), 1, figsize=(10, 2.8 * len(panels)), dpi=120)
    for axis, panel in zip(np.atleast_1d(axes), panels, strict=True):
        for curve in panel.curves:
            style = {"marker": "o", "markersize": 3} if curve.points else {}
            axis.plot(curve.x, curve.y, label=curve.label, linewidth=1.0, **style)
        for marker in _unique_markers(panel.curves)[:MAX_MARKERS]:
            axis.axvline(marker.x, color="0.6", linewidth=0.8, linestyle="--")
        if panel.log_y and not panel.empty:
            axis.set_yscale("log")
        axis.set_title(panel.title, fontsize=9)
        axis.set_ylabel(panel.y_label)
        axis.set_xlabel("iteration")
        axis.grid(alpha=0.3)
        if len(panel.curves) > 1:
            axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.suptitle(title, fontsize=9)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.05 / len(panels)))
    figure.savefig(path)
    plt.close(figure)


def plot(
    run_dirs: list[str] = typer.Argument(
        ...,
        metavar="RUN_DIR|SWEEP_DIR",
        help="dnupdate train run folders or dnupdate sweep folders (all overlaid).",
    ),
    output: str | None = typer.Option(
        None, "--output", "-o", metavar="FILE", help="Write .svg or .png instead of drawing."
    ),
    log_loss: bool = typer.Option(False, "--log", help="Logarithmic loss axis."),
) -> None:
    """Plot runs' curves (see PLOT_HELP)."""
    import sys

    from dnupdate.cli.plotting import PlotError, check_output, color_wanted
    from dnupdate.engine.training.runfolder import RunFolderError, read_metrics

    path = None if output is None else Path(output)
    if path is not None:
        try:
            check_output(path, (".svg", ".png"))
        except PlotError as exc:
            fail(str(exc), EXIT_USAGE if path.suffix.lower() != ".png" else EXIT_BAD_INPUT)
    targets, notes, any_sweep = expand_targets(run_dirs)
    labels = target_labels(targets)
    runs = []
    for target, label in zip(targets, labels, strict=True):
        try:
            runs.append(Run(label, read_metrics(target.path)))
        except RunFolderError as exc:
            fail(str(exc), EXIT_BAD_INPUT)
    for note in notes:
        print(f"dnupdate: {note}", file=sys.stderr)
    panels = panels_from_runs(runs, log_loss)
    if any_sweep:  # a sweep's variants: loss, learning rate, test accuracy (no layer norms)
        panels = panels[: len(panels) - len(NORM_PANELS)]
    names = labels if len(runs) > 1 else [str(t.path) for t in targets]
    title = "\n".join(
        f"{name}: {sum(1 for r in run.rows if r.get('kind') == 'train')} updates"
        for name, run in zip(names, runs, strict=True)
    )
    if path is None:
        print(title)
        print(_terminal(panels, color_wanted(sys.stdout)))
        return
    try:
        (write_svg if path.suffix.lower() == ".svg" else write_png)(path, panels, title)
    except OSError as exc:
        fail(f"{output}: {exc.strerror or exc}", EXIT_BAD_INPUT)
    print(f"wrote {path}", file=sys.stderr)
