"""darknet ``.cfg`` → :class:`engine.spec.RunSpec`, as pjreddie/darknet (61c9d02e) reads it.

The pieces:

* :mod:`engine.config.cfg_reader` — the line grammar (sections, ``key=value``, stripping,
  comments, duplicates, CRLF);
* :mod:`engine.config.darknet_options` — typed first-match lookups with ``atoi``/``atof``;
* :mod:`engine.config.darknet_net` / :mod:`engine.config.darknet_schedule` — ``[net]``;
* :mod:`engine.config.darknet_layers` — the layer sections;
* :mod:`engine.config.darknet_data` — ``data=`` (our extension).

Every problem is a :class:`engine.spec.Diagnostic` with file, line and key; errors are raised
together in one :class:`engine.spec.ConfigError`, warnings travel in ``RunSpec.diagnostics``.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from pathlib import Path

from dnupdate.engine.config.cfg_reader import CfgSection, read_cfg
from dnupdate.engine.config.darknet_data import read_data
from dnupdate.engine.config.darknet_diagnostics import DiagnosticSink
from dnupdate.engine.config.darknet_layers import (
    LAYER_PARSERS,
    NET_SECTIONS,
    SECTION_ALIASES,
    SUPPORTED_SECTIONS,
    UNSUPPORTED_SECTIONS,
    LayerContext,
    Shape,
    layer_origins,
    read_common,
    warn_unused,
)
from dnupdate.engine.config.darknet_net import (
    KNOWN_NET_KEYS,
    check_override_keys,
    read_minibatch,
    read_net,
    warn_unread_keys,
)
from dnupdate.engine.config.darknet_options import OptionTable
from dnupdate.engine.config.darknet_schedule import SCHEDULE_FIELDS, read_schedule
from dnupdate.engine.spec import (
    Diagnostic,
    InputSpec,
    LayerSpec,
    NetSpec,
    Origin,
    RunSpec,
    ScheduleSpec,
)

# The [net] keys that define a learning-rate schedule (plus batch/subdivisions, which turn
# batches into images seen).
_BATCH_KEYS = ("batch", "subdivisions", "time_steps")
DARKNET_SCHEDULE_KEYS: frozenset[str] = frozenset(SCHEDULE_FIELDS) | set(_BATCH_KEYS)
DARKNET_NET_KEYS: frozenset[str] = KNOWN_NET_KEYS

Override = tuple[str, str]


def overrides_dict(overrides: Sequence[Override]) -> dict[str, str]:
    """``--set`` pairs → dict (the last one of a repeated key wins, as on a command line);
    values are stripped like cfg lines."""
    return {key.strip(): "".join(value.split()) for key, value in overrides}


def base_directory(path: str) -> Path | None:
    """The directory relative data paths are looked up in (None for standard input)."""
    return None if path.startswith("<") else Path(path).parent


def network_name(path: str) -> str:
    """The cfg's stem (``configs/quickstart.cfg`` → ``quickstart``; ``<stdin>`` → ``stdin``)."""
    return path.strip("<>") if path.startswith("<") else Path(path).stem


def section_key(section: CfgSection) -> str:
    """The key a diagnostic about a whole section names: its type without brackets,
    shortened (a garbled header can be a whole long line)."""
    name = section.name
    return name if len(name) <= 40 else name[:40] + "…"


def check_first_section(path: str, sections: list[CfgSection], sink: DiagnosticSink) -> bool:
    """darknet: the first section must be ``[net]`` or ``[network]``."""
    if not sections:
        sink.error(path, 1, "net", "no sections: a darknet cfg starts with [net]")
        return False
    first = sections[0]
    if first.name in NET_SECTIONS:
        return True
    sink.error(
        path,
        first.line,
        section_key(first),
        f"first section is {first.type}: it must be [net] or [network] (darknet: "
        '"First section must be [net] or [network]")',
    )
    return False


def unknown_section_message(section: CfgSection) -> str:
    """'unknown section' with a close match when there is one."""
    known = [*SECTION_ALIASES, *UNSUPPORTED_SECTIONS, *NET_SECTIONS]
    close = difflib.get_close_matches(section.name, known, n=1, cutoff=0.6)
    hint = f"; did you mean [{close[0]}]?" if close else ""
    note = " (darknet has no inline comments)" if "#" in section.type or ";" in section.type else ""
    return (
        f'unknown section {section.type}{note}{hint} (darknet: "Type not recognized"); '
        f"supported: {', '.join(SUPPORTED_SECTIONS)}"
    )


def classify_section(path: str, section: CfgSection, sink: DiagnosticSink) -> str | None:
    """The canonical layer kind of a section, or None after recording why it cannot be one."""
    name = section.name
    if section.type.startswith("[") and section.type.endswith("]"):
        if name in SECTION_ALIASES:
            return SECTION_ALIASES[name]
        if name in UNSUPPORTED_SECTIONS:
            sink.error(
                path,
                section.line,
                section_key(section),
                f"unsupported layer type {section.type} (darknet knows it, dnupdate trains "
                f"classifiers only: {', '.join(SUPPORTED_SECTIONS)})",
            )
            return None
        if name in NET_SECTIONS:
            sink.error(path, section.line, name, f"a second {section.type} section")
            return None
    sink.error(path, section.line, section_key(section), unknown_section_message(section))
    return None


def parse_layers(
    path: str,
    sections: list[CfgSection],
    input_shape: Shape,
    sink: DiagnosticSink,
    shapes: list[Shape] | None = None,
    net_line: int | None = None,
) -> tuple[list[LayerSpec], dict[str, Origin]]:
    """Parse the layer sections in order, passing shapes along as darknet's parser does
    (each built layer's output shape is appended to ``shapes`` when given). After a layer
    that cannot be built, shape checks stop (there is no shape to check)."""
    layers: list[LayerSpec] = []
    origins: dict[str, Origin] = {}
    shape: Shape | None = input_shape
    previous: str | None = None
    earlier: list[Shape | None] = []  # each section's output shape, for [shortcut]/[route]
    for index, section in enumerate(sections):
        kind = classify_section(path, section, sink)
        if kind is None:
            shape = None
            earlier.append(None)
            continue
        table = OptionTable(path, section, sink)
        ctx = LayerContext(index, kind, table, shape or Shape(1, 1, 1, 1), previous, "padding",
                           earlier)  # fmt: skip
        common = read_common(ctx)
        built = LAYER_PARSERS[kind](ctx, common) if shape is not None else None
        previous = kind
        if built is None:
            shape = None  # no unused-key warnings: an unbuildable layer reads keys partly
            earlier.append(None)
            continue
        layer, shape = built
        earlier.append(shape)
        layers.append(layer)
        if shapes is not None:
            shapes.append(shape)
        origins.update(layer_origins(kind, ctx))
        warn_unused(table)
    if not sections:
        sink.error(path, net_line, "net", "the network has no layers after [net]")
    return layers, origins


def input_shape_of(spec: InputSpec, is_image: bool) -> Shape:
    if is_image:
        return Shape(
            spec.height, spec.width, spec.channels, spec.height * spec.width * spec.channels
        )
    return Shape.flat(spec.channels)


def load_darknet(path: str, text: str, overrides: Sequence[Override]) -> RunSpec:
    """Parse darknet cfg ``text`` (read from ``path``) with ``--set`` overrides on ``[net]``
    keys into a RunSpec; raise ConfigError with every diagnostic when any is an error."""
    return parse_darknet(path, text, overrides, None)


def darknet_output_shapes(path: str, text: str) -> list[tuple[int, int, int, int]]:
    """``(out_h, out_w, out_c, outputs)`` of every layer as darknet's parser hands them on
    (softmax and cost report h = w = c = 0). Used to check the parser against libdarknet."""
    shapes: list[Shape] = []
    parse_darknet(path, text, (), shapes)
    return [(s.h, s.w, s.c, s.outputs) for s in shapes]


def read_net_section(
    path: str, text: str, overrides: Sequence[Override]
) -> tuple[DiagnosticSink, list[CfgSection], OptionTable]:
    """The cfg's sections and its ``[net]`` table with the ``--set`` values applied (each
    ``--set`` key must be a ``[net]`` key); stops at a first section that is not ``[net]``."""
    override_map = overrides_dict(overrides)
    check_override_keys(override_map, KNOWN_NET_KEYS)
    sink = DiagnosticSink()
    sections = read_cfg(path, text, sink)
    if not check_first_section(path, sections, sink):
        sink.raise_if_errors()
    return sink, sections, OptionTable(path, sections[0], sink, override_map)


def parse_darknet(
    path: str, text: str, overrides: Sequence[Override], shapes: list[Shape] | None
) -> RunSpec:
    """:func:`load_darknet`, also collecting the layers' output shapes into ``shapes``."""
    sink, sections, net_table = read_net_section(path, text, overrides)
    net_options = read_net(net_table)
    data = read_data(net_table, net_options.solver.minibatch, base_directory(path))
    if net_options.input_is_image:  # darknet's crop/augmentation for larger data images
        data = dataclasses.replace(
            data,
            train=dataclasses.replace(data.train, augment=net_options.augment),
            test=dataclasses.replace(data.test, augment=net_options.augment),
        )
    shape = input_shape_of(net_options.input, net_options.input_is_image)
    layers, layer_origin_map = parse_layers(
        path, sections[1:], shape, sink, shapes, sections[0].line
    )
    sink.raise_if_errors()
    origins = {**net_options.origins, **layer_origin_map}
    origins["data.train.source"] = origins["data.test.source"] = data.train.origin
    return RunSpec(
        format="darknet",
        config_path=path,
        net=NetSpec(name=network_name(path), input=net_options.input, layers=tuple(layers)),
        solver=net_options.solver,
        schedule=net_options.schedule,
        data=data,
        origins=origins,
        raw=net_options.raw,
        diagnostics=sink.warnings,
    )


def darknet_schedule_with_diagnostics(
    overrides: Sequence[Override],
) -> tuple[ScheduleSpec, tuple[Diagnostic, ...]]:
    """A darknet schedule from ``--set`` options alone, with its warnings: the same keys,
    defaults and diagnostics as a cfg's ``[net]`` section. Keys outside
    :data:`DARKNET_SCHEDULE_KEYS` are errors."""
    override_map = overrides_dict(overrides)
    check_override_keys(override_map, DARKNET_SCHEDULE_KEYS)
    sink = DiagnosticSink()
    table = OptionTable("--set", CfgSection("[net]", 0), sink, override_map)
    for key in _BATCH_KEYS:
        if table.has(key):
            table.get_int(key, 1)
    schedule = read_schedule(table)
    warn_unread_keys(table)
    sink.raise_if_errors()
    return schedule, sink.warnings


def darknet_schedule_of_cfg(
    path: str, text: str, overrides: Sequence[Override]
) -> tuple[ScheduleSpec, tuple[Diagnostic, ...]]:
    """The schedule of a cfg from its ``[net]`` section alone (``dnupdate lr-schedule``): the
    layer sections are not read, so a net that cannot be built still gives its schedule. Reads
    the same keys, with the same defaults and diagnostics, as :func:`load_darknet` does for the
    schedule (``batch``/``subdivisions``, the policy keys, ``max_batches``); other ``[net]`` keys
    are neither checked nor warned about, but unknown keys are (as ``load_darknet`` warns).
    ``--set`` keys must still be ``[net]`` keys."""
    sink, _, table = read_net_section(path, text, overrides)
    read_minibatch(table)
    schedule = read_schedule(table)
    for option in table.unused():  # unknown keys (a misspelt learning_rate), as load_darknet
        if option.key not in KNOWN_NET_KEYS:
            sink.warning(
                path,
                option.line,
                option.key or None,
                f"unused field '{option.key} = {option.value}': [net] does not read it "
                '(darknet: "Unused field")',
            )
    sink.raise_if_errors()
    return schedule, sink.warnings


def darknet_schedule_from_options(overrides: Sequence[Override]) -> ScheduleSpec:
    """``dnupdate lr-schedule --set policy=steps --set steps=100,200 ...`` with no file:
    see :func:`darknet_schedule_with_diagnostics` (warnings are dropped here)."""
    return darknet_schedule_with_diagnostics(overrides)[0]
