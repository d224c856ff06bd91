"""Config readers: darknet ``.cfg`` and Caffe solver/net (prototxt text format or YAML).

This package is the only code that knows foreign key names. Everything it returns is an
``engine.spec`` object; every problem is a :class:`engine.spec.Diagnostic` with file, line and
key, raised inside :class:`engine.spec.ConfigError` when any of them is an error.

Public API:

* :func:`load_config` — a config file (or its text) plus ``--set`` overrides → ``RunSpec``;
* :func:`load_schedule` — a config's schedule alone (its solver or ``[net]``; the net is not
  built), for ``dnupdate lr-schedule``;
* :func:`schedule_from_options` — ``--set`` options alone → ``ScheduleSpec`` (for
  ``dnupdate lr-schedule`` without a file); the framework is told by the key names;
* :func:`detect_format`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from dnupdate.engine.config.builtin import builtin_names, locate_config
from dnupdate.engine.spec import ConfigError, Diagnostic, Framework, RunSpec, ScheduleSpec

Override = tuple[str, str]

DARKNET_SUFFIXES = {".cfg"}
CAFFE_SUFFIXES = {".prototxt", ".pt", ".pbtxt", ".yaml", ".yml"}


def parse_overrides(items: Sequence[str]) -> list[Override]:
    """``["key=value", ...]`` → ``[(key, value), ...]``; a malformed item is a ConfigError."""
    out: list[Override] = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                [Diagnostic("error", "--set", None, item, "expected KEY=VALUE, e.g. batch=32")]
            )
        out.append((key.strip(), value.strip()))
    return out


def detect_format(path: str, text: str) -> Framework:
    """darknet when the file is a ``.cfg`` or starts with a ``[net]``/``[network]`` section;
    Caffe for ``.prototxt``/``.yaml`` and anything else that is not sectioned."""
    suffix = Path(path).suffix.lower()
    if suffix in DARKNET_SUFFIXES:
        return "darknet"
    if suffix in CAFFE_SUFFIXES:
        return "caffe"
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        return "darknet" if stripped.startswith("[") else "caffe"
    return "caffe"


def read_config_text(path: str) -> str:
    """Read a config file (``-`` = standard input, a built-in name such as ``quickstart``: the
    shipped file, :mod:`engine.config.builtin`) as text, or raise a ConfigError."""
    path = locate_config(path)
    if path == "-":
        import sys

        return sys.stdin.read()
    from dnupdate.engine.config.files import UnreadableFile, read_config_file

    try:
        return read_config_file(path)
    except UnreadableFile as exc:
        message = str(exc)
        if message == "no such file":
            message += " (nor a built-in config: " + ", ".join(builtin_names()) + ")"
        raise ConfigError([Diagnostic("error", path, None, None, message)]) from None


def load_config(
    path: str,
    overrides: Sequence[Override] = (),
    *,
    text: str | None = None,
    check_memory: bool = True,
    shown_as: str | None = None,
    data: str | None = None,
) -> RunSpec:
    """Parse a config into a RunSpec, applying ``--set`` overrides (the config's own key
    names). ``path == "-"`` reads standard input (``text`` may be given instead); a built-in
    name reads the shipped config (:func:`engine.config.builtin.locate_config`). The pseudo-keys
    ``lr_scaling``/``lr_warmup`` (``--lr-scaling``/``--lr-warmup``) set the batch-size scaling
    (:mod:`engine.config.scaling`) against the config's own batch.

    With ``check_memory`` (the default), a net whose training would need more memory than
    this machine has is a ConfigError naming its largest layer (``[connected] output=
    2147483647`` asks for TiB): ``train`` refuses it before creating anything.

    ``shown_as`` names the file that diagnostics about the config text report (a run folder's
    saved ``config.original.cfg`` read for ``--resume``, rather than the original path whose
    file may since have changed); relative paths still resolve from ``path``.

    ``data`` (``--data``) replaces the config's data source where that decides the input shape
    (a Caffe ``Data``/``HDF5Data`` layer's source); darknet's shape is ``[net]``'s."""
    if shown_as is None:
        return _load(path, overrides, text, check_memory, data)
    shown = "<stdin>" if path == "-" else path
    try:
        run = _load(path, overrides, text, check_memory, data)
    except ConfigError as error:
        raise ConfigError(_relabel(error.diagnostics, shown, shown_as)) from None
    return dataclasses.replace(run, diagnostics=_relabel(run.diagnostics, shown, shown_as))


def _relabel(diagnostics, old: str, new: str) -> tuple[Diagnostic, ...]:
    return tuple(dataclasses.replace(d, file=new) if d.file == old else d for d in diagnostics)


def _load(
    path: str,
    overrides: Sequence[Override],
    text: str | None,
    check_memory: bool,
    data: str | None = None,
):
    """:func:`load_config` without relabelling."""
    from dnupdate.engine.config.precision import apply_precision, split_precision
    from dnupdate.engine.config.scaling import apply_scaling, split_scaling

    path = locate_config(path)
    if text is None:
        text = read_config_text(path)
    display_path = "<stdin>" if path == "-" else path
    rest, scaling = split_scaling(overrides)
    rest, precision = split_precision(rest)
    run = _load_format(path, display_path, text, rest, data)
    run = apply_scaling(run, scaling, lambda: _load_format(path, display_path, text, (), data))
    run = apply_precision(run, precision, text)
    if check_memory:
        from dnupdate.engine.model.shapes import check_training_memory

        check_training_memory(run.net, run.solver.minibatch, run.solver.optimizer)
    return run


def _load_format(
    path: str,
    display_path: str,
    text: str,
    overrides: Sequence[Override],
    data: str | None = None,
) -> RunSpec:
    """The darknet or Caffe reader, by :func:`detect_format`."""
    if detect_format(path, text) == "darknet":
        from dnupdate.engine.config.darknet import load_darknet

        return load_darknet(display_path, text, overrides)
    from dnupdate.engine.config.caffe import load_caffe

    return load_caffe(display_path, text, overrides, data=data)


@dataclasses.dataclass(frozen=True)
class ConfigSchedule:
    """What ``dnupdate lr-schedule`` needs from a config: the schedule, the number of updates
    the config asks for (darknet ``max_batches``, Caffe ``max_iter``; 0 when unset) and the
    warnings about the keys read."""

    schedule: ScheduleSpec
    updates: int
    diagnostics: tuple[Diagnostic, ...]


def load_schedule(path: str, overrides: Sequence[Override] = ()) -> ConfigSchedule:
    """A config's learning-rate schedule from its Caffe solver or darknet ``[net]`` alone: a net
    that cannot be built (a missing or unreadable net file, an unknown data source, a layer
    dnupdate lacks) is not the schedule's business. With ``--lr-scaling``/``--lr-warmup``
    (the pseudo-keys ``lr_scaling``/``lr_warmup``) the whole config is loaded, since the
    reference batch of a Caffe config is its net's data layer ``batch_size``."""
    from dnupdate.engine.config.scaling import split_scaling

    if split_scaling(overrides)[1]:
        run = load_config(path, overrides, check_memory=False)
        updates = run.solver.max_iter or run.schedule.max_iter
        return ConfigSchedule(run.schedule, updates, run.diagnostics)
    path = locate_config(path)
    text = read_config_text(path)
    shown = "<stdin>" if path == "-" else path
    if detect_format(path, text) == "darknet":
        from dnupdate.engine.config.darknet import darknet_schedule_of_cfg

        schedule, diagnostics = darknet_schedule_of_cfg(shown, text, overrides)
    else:
        from dnupdate.engine.config.caffe import caffe_schedule_of_solver

        schedule, diagnostics = caffe_schedule_of_solver(shown, text, overrides)
    return ConfigSchedule(schedule, schedule.max_iter, diagnostics)


def schedule_from_options(overrides: Sequence[Override]) -> ScheduleSpec:
    """Build a schedule from options alone, in either framework's key names
    (darknet: ``policy``, ``learning_rate``, ``steps``...; Caffe: ``lr_policy``, ``base_lr``,
    ``stepvalue``...). Mixing the two vocabularies is an error."""
    from dnupdate.engine.config.caffe import CAFFE_SCHEDULE_KEYS, caffe_schedule_from_options
    from dnupdate.engine.config.darknet import DARKNET_SCHEDULE_KEYS, darknet_schedule_from_options

    keys = {k for k, _ in overrides}
    caffe_only = keys & (CAFFE_SCHEDULE_KEYS - DARKNET_SCHEDULE_KEYS)
    darknet_only = keys & (DARKNET_SCHEDULE_KEYS - CAFFE_SCHEDULE_KEYS)
    if caffe_only and darknet_only:
        raise ConfigError(
            [
                Diagnostic(
                    "error",
                    "--set",
                    None,
                    None,
                    "options mix darknet keys ("
                    + ", ".join(sorted(darknet_only))
                    + ") with Caffe keys ("
                    + ", ".join(sorted(caffe_only))
                    + "); use one framework's names",
                )
            ]
        )
    if caffe_only:
        return caffe_schedule_from_options(overrides)
    return darknet_schedule_from_options(overrides)
