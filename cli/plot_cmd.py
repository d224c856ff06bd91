"""``dnupdate plot RUN_DIR``: loss (raw and smoothed), lr and test accuracy against iteration.

Reads the run folder's ``metrics.jsonl`` (a run still in progress works: a row being written is
skipped) and draws three panels in the terminal (plotille), or writes them to one ``.svg``
(hand-written, no dependency) or ``.png`` (matplotlib, an optional extra).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import typer

from cli.common import EXIT_BAD_INPUT, fail

PLOT_HELP = """Plot a run's loss (raw and smoothed), learning rate and test accuracy.

RUN_DIR is a folder written by dnupdate train (it may still be running). Without --output the
plots are drawn in the terminal; --output FILE.svg or FILE.png writes them to a file (PNG
needs matplotlib).

Examples:

  dnupdate plot runs/quickstart-20260101-120000

  dnupdate plot runs/quickstart-20260101-120000 --output curves.svg
"""

PANEL_WIDTH, PANEL_HEIGHT, MARGIN = 900, 260, 70
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e")


@dataclass(frozen=True)
class Panel:
    """One plot: a title, a y label and its curves (label, x values, y values)."""

    title: str
    y_label: str
    curves: tuple[tuple[str, list[float], list[float]], ...]

    @property
    def empty(self) -> bool:
        return not any(xs for _, xs, _ in self.curves)


def _series(rows: list[dict], kind: str, key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for row in rows:
        if row.get("kind") != kind or key not in row or row[key] is None:
            continue
        value = row[key]
        xs.append(float(row["iteration"]))
        ys.append(float(value))  # non-finite values are stored as "nan"/"inf"
    return xs, ys


def smoothed_key(rows: list[dict]) -> str | None:
    """The smoothed-loss column of these rows (``avg_loss_ema``, ``smoothed_loss_window<N>``)."""
    for row in rows:
        for key in row:
            if key == "avg_loss_ema" or key.startswith("smoothed_loss"):
                return key
    return None


def panels_from_rows(rows: list[dict]) -> list[Panel]:
    """Loss (raw + smoothed), lr, and test accuracy panels from metrics rows."""
    loss = [("loss (raw)", *_series(rows, "train", "loss"))]
    smooth = smoothed_key(rows)
    if smooth:
        loss.append((smooth, *_series(rows, "train", smooth)))
    test_loss = _series(rows, "test", "test_loss")
    if test_loss[0]:
        loss.append(("test loss", *test_loss))
    return [
        Panel("loss", "loss", tuple(loss)),
        Panel("learning rate", "lr", (("lr", *_series(rows, "train", "lr")),)),
        Panel("test accuracy", "accuracy", (("top-1", *_series(rows, "test", "test_accuracy")),)),
    ]


def _terminal(panels: list[Panel], color: bool) -> str:
    import numpy as np

    from cli.plotting import Curve, terminal_plot

    out = []
    for panel in panels:
        if panel.empty:
            out.append(f"{panel.title}: no values yet")
            continue
        curves = [
            Curve(label, np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64))
            for label, xs, ys in panel.curves
            if xs
        ]
        out.append(panel.title)
        out.append(terminal_plot(curves, height=12, color=color, y_label=panel.y_label))
    return "\n".join(out)


# ---- files -----------------------------------------------------------------------------------


def _finite_pairs(xs: list[float], ys: list[float]) -> list[tuple[float, float]]:
    return [(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(y)]


def _svg_panel(panel: Panel, top: float) -> list[str]:
    pairs = [_finite_pairs(xs, ys) for _, xs, ys in panel.curves]
    flat = [p for curve in pairs for p in curve]
    parts = [f'<text x="{MARGIN}" y="{top + 18}" font-weight="bold">{panel.title}</text>']
    if not flat:
        return [*parts, f'<text x="{MARGIN}" y="{top + 40}">no values yet</text>']
    x_low, x_high = min(p[0] for p in flat), max(p[0] for p in flat)
    y_low, y_high = min(p[1] for p in flat), max(p[1] for p in flat)
    x_span, y_span = (x_high - x_low) or 1.0, (y_high - y_low) or 1.0
    inner_w, inner_h = PANEL_WIDTH - 2 * MARGIN, PANEL_HEIGHT - 70

    def sx(v: float) -> float:
        return MARGIN + (v - x_low) / x_span * inner_w

    def sy(v: float) -> float:
        return top + 30 + inner_h - (v - y_low) / y_span * inner_h

    parts.append(
        f'<rect x="{MARGIN}" y="{top + 30}" width="{inner_w}" height="{inner_h}" '
        'fill="none" stroke="#ccc"/>'
    )
    for index, ((label, _, _), curve) in enumerate(zip(panel.curves, pairs, strict=True)):
        colour = PALETTE[index % len(PALETTE)]
        points = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in curve)
        parts.append(f'<polyline fill="none" stroke="{colour}" points="{points}"/>')
        parts.append(
            f'<text x="{PANEL_WIDTH - MARGIN - 220}" y="{top + 18 + 14 * index}" '
            f'fill="{colour}">{label}</text>'
        )
    parts.append(
        f'<text x="{MARGIN}" y="{top + PANEL_HEIGHT - 22}" font-size="11">iteration '
        f"{x_low:g} … {x_high:g}; {panel.y_label} {y_low:.4g} … {y_high:.4g}</text>"
    )
    return parts


def write_svg(path: Path, panels: list[Panel], title: str) -> None:
    """The panels stacked in one dependency-free SVG, written atomically."""
    from engine.training.runfolder import write_text

    height = 30 + PANEL_HEIGHT * len(panels)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{PANEL_WIDTH}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{PANEL_WIDTH}" height="{height}" fill="white"/>',
        f'<text x="{MARGIN}" y="20">{_escape(title)}</text>',
    ]
    for index, panel in enumerate(panels):
        parts += _svg_panel(panel, 30 + index * PANEL_HEIGHT)
    write_text(path, "\n".join([*parts, "</svg>"]) + "\n")


def write_png(path: Path, panels: list[Panel], title: str) -> None:
    """The panels as a PNG through matplotlib (Agg); PlotError without matplotlib."""
    from cli.plotting import PlotError

    try:
        import matplotlib
    except ImportError:
        raise PlotError(
            f"{path}: writing PNG needs matplotlib, an optional extra "
            "(pip install 'dnupdate[plot]'); .svg works without it"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(panels), 1, figsize=(9, 2.6 * len(panels)), dpi=120)
    for axis, panel in zip(axes, panels, strict=True):
        for label, xs, ys in panel.curves:
            axis.plot(xs, ys, label=label, linewidth=1.0)
        axis.set_title(panel.title, fontsize=9)
        axis.set_ylabel(panel.y_label)
        axis.grid(alpha=0.3)
        if len(panel.curves) > 1:
            axis.legend(fontsize=7)
    axes[-1].set_xlabel("iteration")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def plot(
    run_dir: str = typer.Argument(..., metavar="RUN_DIR", help="A dnupdate train run folder."),
    output: str | None = typer.Option(
        None, "--output", "-o", metavar="FILE", help="Write .svg or .png instead of drawing."
    ),
) -> None:
    """Plot a run's curves (see PLOT_HELP)."""
    import sys

    from cli.plotting import PlotError, color_wanted
    from engine.training.runfolder import RunFolderError, read_metrics

    try:
        rows = read_metrics(run_dir)
    except RunFolderError as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    panels = panels_from_rows(rows)
    title = f"{run_dir}: {sum(1 for r in rows if r.get('kind') == 'train')} updates"
    if output is None:
        print(title)
        print(_terminal(panels, color_wanted(sys.stdout)))
        return
    path = Path(output)
    suffix = path.suffix.lower()
    try:
        if suffix == ".svg":
            write_svg(path, panels, title)
        elif suffix == ".png":
            write_png(path, panels, title)
        else:
            fail(f"{output}: unsupported output type '{suffix}' (use .svg or .png)", 2)
    except PlotError as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    except OSError as exc:
        fail(f"{output}: {exc.strerror or exc}", EXIT_BAD_INPUT)
    print(f"wrote {path}", file=sys.stderr)
