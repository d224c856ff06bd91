"""Line plots for the CLI: in the terminal (plotille), and to files (PNG/SVG via matplotlib,
an optional extra; SVG falls back to a small hand-written writer; CSV needs nothing).

Generic over what is plotted: a plot is a list of :class:`Curve` (x, y, label) plus vertical
:class:`Marker` lines (e.g. burn-in end, step boundaries). Large curves are decimated for
drawing, always keeping the marked points.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

MAX_DRAWN_POINTS = 4000
MAX_MARKERS = 40
TERMINAL_COLORS = ("bright_blue", "bright_red", "bright_green", "bright_yellow", "bright_magenta")
MARKER_COLOR = "bright_black"
CURVE_MARKS = ("o", "x", "+", "*", "#")


class PlotError(Exception):
    """A plot cannot be written (missing optional dependency, unsupported file type)."""


@dataclass(frozen=True)
class Marker:
    """A vertical line at ``x`` with a short ``label`` ("burn-in end", "step", ...)."""

    x: float
    label: str


@dataclass(frozen=True)
class Curve:
    """One series: ``y`` against ``x`` (equal-length 1-D arrays), with its vertical marker
    lines; ``points``: also draw a dot at each value (sparse series such as tests)."""

    label: str
    x: np.ndarray
    y: np.ndarray
    markers: tuple[Marker, ...] = field(default=())
    points: bool = False  # sparse values (tests): a dot at each point


def decimate(x: np.ndarray, y: np.ndarray, keep: Sequence[float] = (), limit: int = 0):
    """At most about ``limit`` evenly spaced points of (x, y), plus the points at ``keep``
    x-values and their left neighbours (so steps stay sharp). ``limit = 0``: no decimation."""
    n = len(x)
    if not limit or n <= limit:
        return x, y
    chosen = set(np.linspace(0, n - 1, limit).astype(np.int64).tolist())
    positions = np.searchsorted(x, np.asarray(keep, dtype=np.float64))
    for position in positions.tolist():
        for index in (position - 1, position):
            if 0 <= index < n:
                chosen.add(index)
    order = np.array(sorted(chosen), dtype=np.int64)
    return x[order], y[order]


def _transform(y: np.ndarray, log_y: bool) -> np.ndarray:
    values = y.astype(np.float64)
    if not log_y:
        return values
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, np.log10(np.where(values > 0, values, 1.0)), np.nan)


def _finite(x: np.ndarray, y: np.ndarray):
    keep = np.isfinite(y)
    return x[keep], y[keep]


def _limits(values: list[np.ndarray], pad_fraction: float = 0.0) -> tuple[float, float]:
    joined = np.concatenate([v for v in values if len(v)]) if any(len(v) for v in values) else []
    if len(joined) == 0:
        return 0.0, 1.0
    low, high = float(np.min(joined)), float(np.max(joined))
    if low == high:
        span = abs(low) * 0.05 or 1.0
        return low - span, high + span
    pad = (high - low) * pad_fraction
    bottom = max(low - pad, 0.0) if low >= 0 else low - pad  # non-negative data stays >= 0
    return bottom, high + pad


def _drawn_points(curves: Sequence[Curve], log_y: bool):
    """What the terminal and plain-SVG plots draw: each curve decimated to
    ``MAX_DRAWN_POINTS`` (marked points kept), ``log10`` applied when ``log_y``, non-finite
    points dropped; with the x range and the y range (padded 2%)."""
    drawn = []
    for curve in curves:
        x, y = decimate(curve.x, curve.y, [m.x for m in curve.markers], MAX_DRAWN_POINTS)
        drawn.append(_finite(x.astype(np.float64), _transform(y, log_y)))
    x_range = _limits([x for x, _ in drawn])
    y_range = _limits([y for _, y in drawn], 0.02)
    return drawn, x_range, y_range


def terminal_plot(
    curves: Sequence[Curve],
    *,
    width: int | None = None,
    height: int = 18,
    log_y: bool = False,
    color: bool = True,
    x_label: str = "iteration",
    y_label: str = "lr",
) -> str:
    """The curves overlaid in one braille plot (plotille), markers as vertical lines, with
    a legend naming each curve and listing the markers. Returns the text."""
    import plotille

    columns = width or max(40, min(shutil_columns() - 20, 120))
    figure = plotille.Figure()
    figure.color_mode = "names"
    figure.with_colors = color
    figure.x_label, figure.y_label = x_label, ("log10 " + y_label) if log_y else y_label
    markers = _unique_markers(curves)
    drawn, x_range, y_range = _drawn_points(curves, log_y)
    # plotille labels every row and every 10th column: make each of those a round value
    x_low, x_step, x_cells = round_axis(*x_range, max(columns // 10, 4))
    y_low, y_step, y_cells = round_axis(*y_range, height, ROW_STEPS)
    x_high, y_high = x_low + x_cells * x_step, y_low + y_cells * y_step
    figure.width, figure.height = 10 * x_cells, y_cells
    figure.set_x_limits(min_=x_low, max_=x_high)
    figure.set_y_limits(min_=y_low, max_=y_high)
    figure.x_ticks_fkt = lambda value, _next: tick_label(round(value / x_step) * x_step, x_step)
    figure.y_ticks_fkt = lambda value, _next: tick_label(round(value / y_step) * y_step, y_step)
    for marker in markers[:MAX_MARKERS]:
        if x_low <= marker.x <= x_high:
            figure.axvline((marker.x - x_low) / (x_high - x_low), lc=MARKER_COLOR)
    tag_curves = len(curves) > 1 and not color  # without colour, tell curves apart by marks
    for index, (x, y) in enumerate(drawn):
        if not len(x):
            continue
        lc = TERMINAL_COLORS[index % len(TERMINAL_COLORS)]
        figure.plot(x.tolist(), y.tolist(), lc=lc)
        if curves[index].points:  # sparse values: mark each one (with its tag without colour)
            mark = CURVE_MARKS[index % len(CURVE_MARKS)] if tag_curves else "o"
            figure.scatter(x.tolist(), y.tolist(), lc=lc, marker=mark)
        elif tag_curves:
            picks = np.linspace(0, len(x) - 1, min(len(x), 12)).astype(np.int64)
            mark = CURVE_MARKS[index % len(CURVE_MARKS)]
            figure.scatter(x[picks].tolist(), y[picks].tolist(), marker=mark)
    text = figure.show(legend=False)
    if len(curves) > 1:
        text += "\n" + _legend(curves, tag_curves, color)
    if markers:
        listed = ", ".join(f"{m.label} @ {m.x:g}" for m in markers[:MAX_MARKERS])
        more = f" (+{len(markers) - MAX_MARKERS} more)" if len(markers) > MAX_MARKERS else ""
        text += f"\nvertical lines: {listed}{more}"
    return text


def _legend(curves: Sequence[Curve], tag_curves: bool, color: bool) -> str:
    """One line per curve: its colour (or, without colour, its point mark) and label."""
    import plotille

    lines = []
    for index, curve in enumerate(curves):
        if tag_curves:
            sample = f"─{CURVE_MARKS[index % len(CURVE_MARKS)]}─"
        else:
            lc = TERMINAL_COLORS[index % len(TERMINAL_COLORS)]
            sample = plotille.color("───", fg=lc, mode="names", no_color=not color)
        lines.append(f"{sample} {curve.label}")
    return "\n".join(lines)


def shutil_columns() -> int:
    import shutil

    return shutil.get_terminal_size((100, 24)).columns


def _unique_markers(curves: Sequence[Curve]) -> list[Marker]:
    seen: dict[float, Marker] = {}
    for curve in curves:
        for marker in curve.markers:
            seen.setdefault(marker.x, marker)
    return [seen[x] for x in sorted(seen)]


def color_wanted(stream: IO[str]) -> bool:
    """Colour only on a terminal, and never with ``NO_COLOR`` set (FORCE_COLOR forces it)."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return bool(getattr(stream, "isatty", lambda: False)())


# ---- files -----------------------------------------------------------------------------------

IMAGE_SUFFIXES = (".png", ".svg")
SUFFIXES = (*IMAGE_SUFFIXES, ".csv")


def check_output(path: Path, suffixes: Sequence[str] = SUFFIXES) -> str:
    """The lower-case suffix of ``path`` when a file of that type can be written here; else
    :class:`PlotError` (an unsupported type, or PNG without matplotlib). Commands call it
    before printing anything, so a bad ``--output`` fails first, not after the output."""
    suffix = path.suffix.lower()
    if suffix not in suffixes:
        names = ", ".join(suffixes[:-1]) + f" or {suffixes[-1]}"
        raise PlotError(f"{path}: unsupported output type '{suffix}' (use {names})")
    if suffix == ".png":
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise PlotError(
                f"{path}: writing PNG needs matplotlib, an optional extra: "
                "pip install 'dnupdate[plot]' (or: uv sync --extra plot). "
                ".svg and .csv work without it."
            ) from None
    return suffix


def write_plot_file(
    path: Path,
    curves: Sequence[Curve],
    *,
    title: str = "",
    log_y: bool = False,
    x_label: str = "iteration",
    y_label: str = "lr",
) -> None:
    """Write ``.png``/``.svg`` (matplotlib; SVG without it falls back to a plain writer) or
    ``.csv`` (long format ``curve,x,y``; ``x,y`` with one curve)."""
    suffix = check_output(path)
    if suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            write_csv(f, curves, x_label=x_label, y_label=y_label)
        return
    try:
        import matplotlib
    except ImportError:  # only .svg gets here without matplotlib (see check_output)
        write_plain_svg(path, curves, title=title, log_y=log_y, x_label=x_label, y_label=y_label)
        return
    matplotlib.use("Agg")
    _write_matplotlib(path, curves, title=title, log_y=log_y, x_label=x_label, y_label=y_label)


def _write_matplotlib(path: Path, curves, *, title, log_y, x_label, y_label) -> None:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 4.8), dpi=120)
    for curve in curves:
        x, y = decimate(curve.x, curve.y, [m.x for m in curve.markers], 20000)
        style = {"marker": "o", "markersize": 3} if curve.points else {"drawstyle": "steps-post"}
        axes.plot(x, y, label=curve.label, linewidth=1.2, **style)
    for marker in _unique_markers(curves)[:MAX_MARKERS]:
        axes.axvline(marker.x, color="0.6", linewidth=0.8, linestyle="--")
        axes.annotate(
            marker.label,
            (marker.x, 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=7,
            va="top",
            ha="right",
            color="0.4",
        )
    if log_y:
        axes.set_yscale("log")
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    if title:
        axes.set_title(title, fontsize=9)
    if len(curves) > 1:
        axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def write_csv(
    stream: IO[str], curves: Sequence[Curve], *, x_label: str = "iteration", y_label: str = "lr"
) -> None:
    """One curve: ``x_label,y_label`` rows; several: long format ``curve,x_label,y_label``.
    Values use 9 significant digits (enough to identify any float32 exactly)."""
    writer = csv.writer(stream, lineterminator="\n")
    several = len(curves) > 1
    writer.writerow(["config", x_label, y_label] if several else [x_label, y_label])
    for curve in curves:
        ys = [format_value(v) for v in curve.y.tolist()]
        for x, y in zip(curve.x.tolist(), ys, strict=True):
            writer.writerow([curve.label, x, y] if several else [x, y])


def format_value(value: float) -> str:
    """9 significant digits: round-trips every float32; ``nan``/``inf`` spelled out."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.9g}"


def write_plain_svg(
    path: Path, curves: Sequence[Curve], *, title: str, log_y: bool, x_label: str, y_label="lr"
) -> None:
    """A dependency-free SVG of one panel (see :func:`svg_panel`), the title above it."""
    lines = title.splitlines()[:3]
    top = 10 + 14 * len(lines)
    parts, height = svg_panel(
        curves, top=top, title="", x_label=x_label, y_label=y_label, log_y=log_y
    )
    header = [
        f'<text x="{SVG_LEFT}" y="{16 + 14 * row}" font-size="11">{_escape(line)}</text>'
        for row, line in enumerate(lines)
    ]
    path.write_text(svg_document(top + height, [*header, *parts]), encoding="utf-8")


# ---- the built-in SVG writer -------------------------------------------------------------------

SVG_WIDTH, SVG_LEFT, SVG_LEGEND = 1120, 80, 380  # figure width, y-axis room, legend column
SVG_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")
SVG_TICKS = 5


def svg_document(height: float, parts: Sequence[str]) -> str:
    """The SVG text around ``parts``: white background, sans-serif 12 px."""
    head = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_WIDTH}" height="{height:.0f}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{SVG_WIDTH}" height="{height:.0f}" fill="white"/>',
    ]
    return "\n".join([*head, *parts, "</svg>"]) + "\n"


def nice_ticks(low: float, high: float, count: int = SVG_TICKS) -> tuple[list[float], float]:
    """About ``count`` round tick values in ``[low, high]`` (steps 1, 2, 2.5 or 5 × 10^k)
    and the step."""
    span = high - low
    if not (math.isfinite(span) and span > 0):
        return [low], 1.0
    magnitude = 10.0 ** math.floor(math.log10(span / count))
    step = magnitude
    for factor in (1.0, 2.0, 2.5, 5.0, 10.0):
        step = factor * magnitude
        if span / step <= count:
            break
    first = math.ceil(low / step - 1e-9)
    last = math.floor(high / step + 1e-9)
    return [k * step for k in range(first, last + 1)], step


ROUND_STEPS = (1.0, 2.0, 2.5, 5.0)  # steps between labelled ticks: 1, 2, 2.5 or 5 × 10^k
ROW_STEPS = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)  # finer: rows are all labelled


def round_axis(
    low: float, high: float, max_cells: int, factors: Sequence[float] = ROUND_STEPS
) -> tuple[float, float, int]:
    """An axis of equal cells whose every boundary is a round number, covering
    ``[low, high]`` in at most ``max_cells`` cells: ``(start, step, cells)`` with the step
    ``factor × 10^k`` (the smallest that fits) and the start a multiple of it. The terminal
    plot labels each boundary, so its ticks read 0, 50, 100 or 0.003, 0.006 instead of
    50.833333."""
    span = high - low
    if not (math.isfinite(span) and span > 0 and max_cells > 0):
        return low, (span / max(max_cells, 1)) or 1.0, max(max_cells, 1)
    magnitude = 10.0 ** math.floor(math.log10(span / max_cells))
    for scale in (magnitude, 10.0 * magnitude, 100.0 * magnitude):
        for factor in factors:
            step = factor * scale
            start = math.floor(low / step + 1e-9) * step
            cells = max(1, math.ceil((high - start) / step - 1e-9))
            if cells <= max_cells:
                return start, step, cells
    return low, span / max_cells, max_cells  # not reached: 100 × magnitude always fits


def tick_label(value: float, step: float) -> str:
    """A tick value with just the decimals its step needs (``0.25``, ``1500``, ``2e-05``)."""
    if value == 0:
        return "0"
    if abs(value) >= 1e6 or step < 1e-4:
        return f"{value:.3g}"
    exponent = math.floor(math.log10(step) + 1e-9)
    decimals = max(0, -exponent)
    mantissa = round(step / 10.0**exponent, 6)  # 1.5, 2.5: one more decimal than 1, 2, 5
    if mantissa != round(mantissa) and exponent <= 0:
        decimals += 1
    return f"{value:.{decimals}f}"


def _y_ticks(low: float, high: float, log_y: bool) -> list[tuple[float, str]]:
    """(position in plotted units, label): on a log axis the decades inside the range (or
    round values of log10 y when it spans less than two), labelled as y itself."""
    if log_y:
        decades = list(range(math.ceil(low), math.floor(high) + 1))
        if len(decades) >= 2:
            every = max(1, math.ceil(len(decades) / 8))
            return [(float(e), f"{10.0**e:g}") for e in decades[::every]]
        round_values = [
            m * 10.0**e
            for e in range(math.floor(low), math.ceil(high) + 1)
            for m in (1, 2, 5)
            if low <= math.log10(m * 10.0**e) <= high
        ]
        if len(round_values) >= 2:
            return [(math.log10(v), f"{v:g}") for v in round_values]
        return [(v, f"{10.0**v:.3g}") for v in nice_ticks(low, high)[0]]
    ticks, step = nice_ticks(low, high)
    return [(v, tick_label(v, step)) for v in ticks]


def svg_panel(
    curves: Sequence[Curve],
    *,
    top: float,
    title: str,
    x_label: str,
    y_label: str,
    log_y: bool = False,
) -> tuple[list[str], float]:
    """One plot with axes: a frame, x and y ticks with round labels and grid lines, axis
    labels, polylines (decimated, non-finite points dropped; ``log10`` when ``log_y``, points
    ``<= 0`` dropped), dots on ``points`` curves, dashed marker lines, and a legend column.
    Returns the SVG elements and the panel's height."""
    height = max(260.0, 90.0 + 15.0 * len(curves))
    left, right = SVG_LEFT, SVG_WIDTH - SVG_LEGEND
    plot_top, plot_bottom = top + 26, top + height - 46
    drawn, (x_low, x_high), (y_low, y_high) = _drawn_points(curves, log_y)

    def sx(v: float) -> float:
        return left + (v - x_low) / ((x_high - x_low) or 1.0) * (right - left)

    def sy(v: float) -> float:
        return plot_bottom - (v - y_low) / ((y_high - y_low) or 1.0) * (plot_bottom - plot_top)

    parts = []
    if title:
        parts.append(f'<text x="{left}" y="{top + 16}" font-weight="bold">{_escape(title)}</text>')
    x_ticks, x_step = nice_ticks(x_low, x_high)
    for value in x_ticks:
        px = sx(value)
        parts += [
            f'<line x1="{px:.1f}" y1="{plot_top}" x2="{px:.1f}" y2="{plot_bottom}" stroke="#eee"/>',
            f'<line x1="{px:.1f}" y1="{plot_bottom}" x2="{px:.1f}" y2="{plot_bottom + 5}" '
            'stroke="#333"/>',
            f'<text x="{px:.1f}" y="{plot_bottom + 18}" text-anchor="middle" font-size="11">'
            f"{tick_label(value, x_step)}</text>",
        ]
    for value, label in _y_ticks(y_low, y_high, log_y):
        py = sy(value)
        parts += [
            f'<line x1="{left}" y1="{py:.1f}" x2="{right}" y2="{py:.1f}" stroke="#eee"/>',
            f'<line x1="{left - 5}" y1="{py:.1f}" x2="{left}" y2="{py:.1f}" stroke="#333"/>',
            f'<text x="{left - 8}" y="{py + 4:.1f}" text-anchor="end" font-size="11">'
            f"{_escape(label)}</text>",
        ]
    parts += [
        f'<rect x="{left}" y="{plot_top}" width="{right - left}" '
        f'height="{plot_bottom - plot_top}" fill="none" stroke="#333"/>',
        f'<text x="{(left + right) / 2:.1f}" y="{plot_bottom + 36}" text-anchor="middle">'
        f"{_escape(x_label)}</text>",
        f'<text x="16" y="{(plot_top + plot_bottom) / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 16 {(plot_top + plot_bottom) / 2:.1f})">'
        f"{_escape(y_label + (' (log scale)' if log_y else ''))}</text>",
    ]
    for marker in _unique_markers(curves)[:MAX_MARKERS]:
        if x_low <= marker.x <= x_high:
            px = sx(marker.x)
            parts.append(
                f'<line x1="{px:.1f}" y1="{plot_top}" x2="{px:.1f}" y2="{plot_bottom}" '
                'stroke="#999" stroke-dasharray="4 3"/>'
            )
    for index, (curve, (x, y)) in enumerate(zip(curves, drawn, strict=True)):
        colour = SVG_PALETTE[index % len(SVG_PALETTE)]
        points = [(sx(a), sy(b)) for a, b in zip(x.tolist(), y.tolist(), strict=True)]
        if len(points) > 1:
            text = " ".join(f"{a:.1f},{b:.1f}" for a, b in points)
            parts.append(f'<polyline fill="none" stroke="{colour}" points="{text}"/>')
        if curve.points or len(points) == 1:
            parts += [
                f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{colour}"/>' for a, b in points
            ]
        parts.append(
            f'<text x="{right + 14}" y="{plot_top + 10 + 15 * index}" fill="{colour}">'
            f"{_escape(curve.label)}</text>"
        )
    return parts, height


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
