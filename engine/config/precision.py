"""Simulated mixed precision settings (``--precision``, ``--loss-scale``, ``--scale-*``,
``--master-weights``): our own keys, read from darknet's ``[net]`` section, a Caffe solver's
extension fields (``precision: "fp16"``, ``loss_scale: 128``) and ``--set`` (both formats; the
options are ``--set`` pseudo-keys, so a run folder's saved overrides reproduce them on resume
and a sweep can grid them).

Keys: ``loss_scale`` (AlexeyAB darknet's ``[net] loss_scale=``: a number is a static scale;
``dynamic`` and ``none`` are our extensions), ``precision`` (``fp32``/``fp16``/``bf16``),
``scale_init`` (the dynamic scale's start, default 65536 = torch's), ``scale_growth`` (2),
``scale_backoff`` (0.5), ``scale_growth_interval`` (2000), ``master_weights`` (1/0).
A static ``loss_scale=1`` is no scaling (AlexeyAB's default).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence

from dnupdate.engine.spec import ConfigError, Diagnostic, Origin, PrecisionSpec, RunSpec

#: the simulated mixed-precision keys: darknet ``[net]`` keys, and a Caffe solver's extensions
PRECISION_KEYS = (
    "precision",
    "loss_scale",
    "scale_init",
    "scale_growth",
    "scale_backoff",
    "scale_growth_interval",
    "master_weights",
)
PRECISIONS = ("fp32", "fp16", "bf16")
DEFAULT_DYNAMIC_SCALE = 65536.0

Override = tuple[str, str]


def split_precision(overrides: Sequence[Override]) -> tuple[list[Override], dict[str, str]]:
    """``(other overrides, {key: value})`` for the precision keys among ``--set`` (last wins)."""
    rest: list[Override] = []
    found: dict[str, str] = {}
    for key, value in overrides:
        if key in PRECISION_KEYS:
            found[key] = value
        else:
            rest.append((key, value))
    return rest, found


def _line_of(text: str, key: str) -> int | None:
    """The 1-based line of ``key=`` in a darknet cfg's ``[net]`` section (None if absent)."""
    section = ""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped
        elif section in ("[net]", "[network]") and re.match(rf"{key}\s*=", stripped):
            return number
    return None


class _Reader:
    """Typed values with errors naming where each came from (``FILE:LINE`` or ``--set``)."""

    def __init__(self, values: dict[str, tuple[str, Origin]]) -> None:
        self.values = values
        self.errors: list[Diagnostic] = []

    def error(self, key: str, message: str) -> None:
        origin = self.values[key][1]
        self.errors.append(Diagnostic("error", origin.file, origin.line, key, message))

    def number(self, key: str, default: float, *, positive: bool = True) -> float:
        if key not in self.values:
            return default
        text = self.values[key][0]
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or (positive and value <= 0):
            self.error(key, f"{text!r}: expected a finite number > 0")
            return default
        return value

    def count(self, key: str, default: int) -> int:
        if key not in self.values:
            return default
        text = self.values[key][0]
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            self.error(key, f"{text!r}: expected a whole number of updates >= 1")
            return default
        return value


def _collect(run: RunSpec, text: str | None, found: dict[str, str]) -> dict:
    values: dict[str, tuple[str, Origin]] = {}
    if run.format == "darknet":
        for key in PRECISION_KEYS:
            if key in run.raw:
                line = None if text is None else _line_of(text, key)
                values[key] = (run.raw[key].strip(), Origin(run.config_path, line))
    else:  # Caffe: solver extension keys (engine.config.caffe_solver records their origins)
        for key in PRECISION_KEYS:
            if key in run.raw:
                origin = run.origins.get(f"precision.{key}", Origin(run.config_path))
                values[key] = (run.raw[key].strip(), origin)
    for key, value in found.items():
        values[key] = (value.strip(), Origin("--set"))
    return values


def apply_precision(run: RunSpec, found: dict[str, str], text: str | None = None) -> RunSpec:
    """``run`` with its :class:`PrecisionSpec` from the config's ``[net]`` keys and the
    ``--set`` ones (which win). Nothing set: ``run`` unchanged. Bad values: ConfigError."""
    values = _collect(run, text, found)
    if not values:
        return run
    read = _Reader(values)
    precision = values.get("precision", ("fp32", None))[0].lower()
    if precision not in PRECISIONS:
        read.error("precision", f"{precision!r}: expected one of {', '.join(PRECISIONS)}")
        precision = "fp32"
    mode, scale = "none", 1.0
    loss_scale = values.get("loss_scale", ("none", None))[0].lower()
    if loss_scale == "dynamic":
        mode, scale = "dynamic", read.number("scale_init", DEFAULT_DYNAMIC_SCALE)
    elif loss_scale != "none":
        scale = read.number("loss_scale", 1.0)
        mode = "static" if scale != 1.0 else "none"
    master = values.get("master_weights", ("1", None))[0].lower()
    if master not in ("1", "0", "true", "false", "yes", "no"):
        read.error("master_weights", f"{master!r}: expected 1 or 0")
    backoff = read.number("scale_backoff", 0.5)
    if "scale_backoff" in values and backoff >= 1:
        read.error("scale_backoff", f"{backoff}: the backoff factor must lie in (0, 1)")
    spec = PrecisionSpec(
        precision=precision,  # type: ignore[arg-type]
        loss_scale=mode,  # type: ignore[arg-type]
        scale=scale,
        growth=read.number("scale_growth", 2.0),
        backoff=backoff,
        growth_interval=read.count("scale_growth_interval", 2000),
        master_weights=master in ("1", "true", "yes"),
    )
    if read.errors:
        raise ConfigError(read.errors)
    origins = dict(run.origins)
    for key, (_, origin) in values.items():
        origins[f"precision.{key}"] = origin
    return dataclasses.replace(run, precision=spec, origins=origins)
