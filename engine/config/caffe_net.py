"""A Caffe ``NetParameter`` → :class:`NetSpec` + :class:`DataSpec`.

* Phases: ``include``/``exclude`` rules are evaluated for the TRAIN and the TEST net state
  (``net.cpp: Net::FilterNet``, ``StateMeetsRule``); a layer's ``phases`` are those it is in.
* Data layers (``Data``, ``Input``, ``HDF5Data``) become the ``DataSpec`` and fix the input
  shape; all other layers become layer specs in file order.
* The net is a graph of named blobs: each bottom must be a top of an earlier layer of the same
  phase or of the data layer (in-place tops allowed: the last writer wins); a top read by
  several layers gets their gradients added (Caffe's implicit Split). ``SoftmaxWithLoss``/
  ``Accuracy`` take scores and the data layer's label.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from dnupdate.engine.config.caffe_layers import (
    BUILDERS,
    CAFFE_LAYER_TYPES,
    DATA_TYPES,
    LOSS_TYPES,
    SINK_TYPES,
    LayerReader,
)
from dnupdate.engine.config.caffe_schema import Msg, Reporter, close_matches
from dnupdate.engine.config.caffe_upgrade import net_layers
from dnupdate.engine.spec import (
    DEFAULT,
    ConnectedSpec,
    DataSourceSpec,
    DataSpec,
    InputSpec,
    LayerSpec,
    NetSpec,
    Origin,
    TestNetSpec,
)

MULTI_BOTTOM_TYPES = frozenset({"Eltwise", "Concat"})
SHAPES_BY_NAME = (("mnist", (1, 28, 28)), ("cifar", (3, 32, 32)))


@dataclass(frozen=True)
class NetState:
    """The state a net is instantiated in: phase, level and stages (caffe.proto NetState)."""

    phase: str
    level: int = 0
    stages: frozenset[str] = frozenset()


@dataclass
class BuiltNet:
    """What the net contributes to the RunSpec."""

    net: NetSpec
    data: DataSpec
    minibatch: tuple[int, Origin]
    has_test_phase: bool
    origins: dict[str, Origin] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------------------------


def _meets_rule(state: NetState, rule: Msg) -> bool:
    """``Net::StateMeetsRule``: every condition the rule sets must hold."""
    if rule.has("phase") and rule.get("phase").lower() != state.phase:
        return False
    if rule.has("min_level") and state.level < rule.get("min_level"):
        return False
    if rule.has("max_level") and state.level > rule.get("max_level"):
        return False
    if any(stage not in state.stages for stage in rule.get("stage")):
        return False
    return not any(stage in state.stages for stage in rule.get("not_stage"))


def layer_phases(layer: Msg, states: dict[str, NetState], reporter: Reporter) -> frozenset[str]:
    """The phases whose net includes the layer (``Net::FilterNet``): with include rules, a
    layer is in when some rule matches; otherwise it is in unless an exclude rule matches."""
    includes, excludes = layer.all("include"), layer.all("exclude")
    if includes and excludes:
        reporter.error(
            layer.origin_of("exclude"),
            "exclude",
            f"layer {layer.get('name')!r}: specify either include rules or exclude rules; not both",
        )
    found = set()
    for phase, state in states.items():
        included = not includes
        if any(_meets_rule(state, rule) for rule in excludes):
            included = False
        if any(_meets_rule(state, rule) for rule in includes):
            included = True
        if included:
            found.add(phase)
    return frozenset(found)


# --------------------------------------------------------------------------------------------
# Data layers and input shape
# --------------------------------------------------------------------------------------------


def _probe_shape(source: str) -> tuple[tuple[int, int, int] | None, str]:
    """Ask ``engine.data.probe_shape`` (when it exists) for a source's (C, H, W)."""
    try:
        from dnupdate.engine.data import probe_shape  # type: ignore[attr-defined]
    except ImportError:
        return None, ""
    try:
        shape = probe_shape(source)
    except Exception as exc:  # a data-layer problem is reported as a config diagnostic
        return None, f" ({exc})"
    return (tuple(int(d) for d in shape), "") if shape else (None, "")


def _resolve_mean_file(mean_file: str, net_dir: Path) -> str:
    """A relative ``mean_file`` that exists next to the net file resolves there; else kept."""
    if not mean_file or os.path.isabs(mean_file):
        return mean_file
    candidate = net_dir / mean_file
    return str(candidate) if candidate.exists() else mean_file


def _transform(layer: Msg, net_dir: Path, reporter: Reporter) -> dict[str, object]:
    """``transform_param`` → DataSourceSpec preprocessing fields; warns about the deprecated
    ``data_param`` copies Caffe ignores in a V2 net."""
    t = layer.get("transform_param")
    if t.has("mean_file") and t.has("mean_value"):
        reporter.error(
            t.origin_of("mean_value"),
            "mean_value",
            "Cannot specify mean_file and mean_value at the same time",
        )
    data = layer.get("data_param")
    for name in ("scale", "mean_file", "crop_size", "mirror"):
        if data.has(name):
            reporter.warn(
                data.origin_of(name),
                name,
                f"data_param.{name} is deprecated and ignored by Caffe; use transform_param",
            )
    return {
        "scale": t.get("scale"),
        "mean_file": _resolve_mean_file(t.get("mean_file"), net_dir) or None,
        "mean_values": tuple(t.get("mean_value")),
        "mirror": t.get("mirror"),
        "crop_size": t.get("crop_size"),
    }


def _h5_source(source: str, tops: list[str]) -> str:
    """An HDF5Data ``source`` list read into ``tops`` → the ``h5:`` data source that names
    them (:mod:`engine.data.hdf5`; the data layer may not import engine.data at load time,
    so the text form is built here: ``h5:PATH``, plus ``#DATA,LABEL`` for other top names)."""
    names = (list(tops) + ["data", "label"][len(tops) :])[:2]
    suffix = "" if names == ["data", "label"] else "#" + ",".join(names)
    return "h5:" + source + suffix


def data_source(layer: Msg, net_dir: Path, reporter: Reporter) -> DataSourceSpec:
    """A data layer → DataSourceSpec (source, batch size, backend, preprocessing)."""
    kind, origin = layer.get("type"), layer.origin
    if kind == "Input":
        shapes = layer.get("input_param").get("shape")
        dims = shapes[0].get("dim") if shapes else []
        return DataSourceSpec(source=None, batch_size=dims[0] if dims else 1, origin=origin)
    if kind == "HDF5Data":
        p = layer.get("hdf5_data_param")
        if p.get("batch_size") <= 0:
            reporter.error(p.origin_of("batch_size"), "batch_size", "batch_size must be > 0")
        source = p.get("source")
        return DataSourceSpec(
            source=_h5_source(source, layer.get("top")) if source else None,
            batch_size=p.get("batch_size"),
            backend="hdf5",
            shuffle=p.get("shuffle"),
            origin=origin,
        )
    p = layer.get("data_param")
    if not p.get("source"):
        reporter.error(p.origin, "source", f"data layer {layer.get('name')!r} has no source")
    if p.get("batch_size") <= 0:
        reporter.error(p.origin_of("batch_size"), "batch_size", "batch_size must be > 0")
    return DataSourceSpec(
        source=p.get("source") or None,
        batch_size=p.get("batch_size"),
        backend=p.get("backend").lower(),
        shuffle=False,  # Caffe's Data layer reads records in key order
        origin=origin,
        **_transform(layer, net_dir, reporter),
    )


def input_shape(layer: Msg, source: DataSourceSpec, reporter: Reporter, data: str | None = None):
    """(InputSpec, Origin) from a data layer, or (None, origin) after reporting why not.

    ``Input``: ``input_param { shape { dim: N dim: C dim: H dim: W } }`` (or N, D).
    ``Data``: (C, H, W) from the source name (``mnist`` → 1×28×28, ``cifar`` → 3×32×32) or
    ``engine.data.probe_shape``; ``crop_size`` replaces H and W.
    ``HDF5Data``: from ``probe_shape`` only (the data dataset of its first file).
    ``data`` (``--data``, replacing the layer's source): the shape of that source instead.
    """
    kind = layer.get("type")
    if kind == "Input":
        p = layer.get("input_param")
        shapes = p.get("shape")
        dims = shapes[0].get("dim") if shapes else []
        where = p.origin_of("shape") if shapes else layer.origin
        if len(dims) == 4 and min(dims) > 0:
            return InputSpec(dims[1], dims[2], dims[3]), where
        if len(dims) == 2 and min(dims) > 0:
            return InputSpec(dims[1], 1, 1), where
        reporter.error(where, "shape", "Input needs a shape { dim: N dim: C dim: H dim: W }")
        return None, where
    name = data or source.source or ""
    is_h5 = name.startswith("h5:") or name.lower().endswith((".h5", ".hdf5"))
    by_name = (kind == "Data" or data) and not is_h5  # an h5 file's name says nothing of it
    shape = next((s for key, s in SHAPES_BY_NAME if key in name.lower()), None) if by_name else None
    why = ""
    if shape is None and name:
        shape, why = _probe_shape(name)
    param = layer.get("data_param" if kind == "Data" else "hdf5_data_param")
    where = param.origin_of("source") if param.has("source") else layer.origin
    if shape is None:
        given = f"--data {name!r}" if data else f"source {name!r}"
        reporter.error(where, "source", f"cannot tell the input shape of {given}{why}")
        return None, where
    channels, height, width = shape
    if source.crop_size:
        t = layer.get("transform_param")
        return InputSpec(channels, source.crop_size, source.crop_size), t.origin_of("crop_size")
    return InputSpec(channels, height, width), where


# --------------------------------------------------------------------------------------------
# The chain
# --------------------------------------------------------------------------------------------


@dataclass
class _Blobs:
    """The blobs each phase's net has produced so far (the data layer's tops first), to check
    that every bottom names an earlier top (``Net::AppendBottom``: "Unknown bottom blob")."""

    known: dict[str, set[str]]
    label_tops: frozenset[str]
    reporter: Reporter

    def step(self, layer: Msg, phases: frozenset[str]) -> None:
        name, kind = layer.get("name"), layer.get("type")
        bottoms, tops = layer.get("bottom"), layer.get("top")
        if not bottoms:
            self.reporter.error(layer.origin, "bottom", f"layer {name!r} has no bottom")
        for index, bottom in enumerate(bottoms):
            missing = [phase for phase in sorted(phases) if bottom not in self.known[phase]]
            if missing:
                self.reporter.error(
                    layer.origin_of("bottom", index),
                    "bottom",
                    f"layer {name!r} reads blob {bottom!r}, which no earlier layer produces "
                    f"in the {'/'.join(p.upper() for p in missing)} net",
                )
        self._check_label(layer, name, kind, bottoms)
        if kind not in SINK_TYPES and kind not in MULTI_BOTTOM_TYPES and len(bottoms) > 1:
            self.reporter.error(
                layer.origin, "top", f"layer {name!r} ({kind}) must have one bottom and one top"
            )
        elif kind not in SINK_TYPES and kind != "Split" and len(tops) != 1:
            self.reporter.error(layer.origin, "top", f"layer {name!r} must have one top")
        for phase in phases:
            self.known[phase].update(tops)

    def _check_label(self, layer: Msg, name: str, kind: str, bottoms: list[str]) -> None:
        if kind not in LOSS_TYPES:
            return
        if not self.label_tops:
            self.reporter.error(
                layer.origin,
                "bottom",
                f"layer {name!r} needs a label, but the data layer has no second top",
            )
        elif len(bottoms) != 2 or bottoms[1] not in self.label_tops:
            self.reporter.error(
                layer.origin_of("bottom"),
                "bottom",
                f"layer {name!r} must take the scores and the data layer's label "
                f"({sorted(self.label_tops)[0]!r}); got {bottoms}",
            )


def _data_layers(layers, reporter: Reporter) -> dict[str, Msg]:
    """The data layer of each phase (at most one per phase)."""
    by_phase: dict[str, Msg] = {}
    for layer, phases in layers:
        if layer.get("type") not in DATA_TYPES:
            continue
        for phase in sorted(phases):
            if phase in by_phase:
                reporter.error(
                    layer.origin,
                    "type",
                    f"a second data layer in the {phase} "
                    f"phase ({layer.get('name')!r}); one per phase is supported",
                )
                continue
            by_phase[phase] = layer
    return by_phase


def _check_type(layer: Msg, reporter: Reporter) -> bool:
    kind = layer.get("type")
    if kind in BUILDERS or kind in DATA_TYPES:
        return True
    where = layer.origin_of("type")
    if kind in CAFFE_LAYER_TYPES:
        reporter.error(
            where,
            "type",
            f"unsupported layer type {kind!r} "
            f"(layer {layer.get('name')!r}); dnupdate trains "
            + ", ".join(sorted({*BUILDERS, *DATA_TYPES})),
        )
    else:
        hint = close_matches(kind, CAFFE_LAYER_TYPES)
        reporter.error(where, "type", f"unknown layer type {kind!r}{hint}")
    return False


def build_net(
    net: Msg,
    net_file: str,
    states: dict[str, NetState],
    reporter: Reporter,
    data: str | None = None,
    test_names: list[str] | None = None,
) -> BuiltNet | None:
    """Map a NetParameter; returns None when errors make the result meaningless. ``data``
    (``--data``) replaces the data layers' sources for the input shape. ``states``: the train
    net's state under ``train``, test net #0's under ``test``, further test nets' under
    ``test1``, ``test2``, ... (named by ``test_names``)."""
    layers = []
    for layer in net_layers(net, reporter):
        phases = layer_phases(layer, states, reporter)
        if not phases:
            reporter.warn(
                layer.origin,
                "include",
                f"layer {layer.get('name')!r} is in no phase (TRAIN or TEST) and is skipped",
            )
            continue
        if _check_type(layer, reporter):
            layers.append((layer, phases))
    data_layers = _data_layers(layers, reporter)
    if not data_layers:
        reporter.error(net.origin, "layer", "the net has no data layer (Data, Input, HDF5Data)")
        return None
    net_dir = Path(net_file).parent
    sources = {phase: data_source(layer, net_dir, reporter) for phase, layer in data_layers.items()}
    first = data_layers.get("train") or next(iter(data_layers.values()))
    shape, shape_origin = input_shape(
        first, sources.get("train") or sources[next(iter(sources))], reporter, data
    )
    tops = first.get("top")
    if not tops:
        reporter.error(first.origin, "top", "the data layer has no top")
        return None
    for layer in data_layers.values():
        if layer.get("top")[:2] != tops[:2]:
            reporter.error(
                layer.origin_of("top"),
                "top",
                "TRAIN and TEST data layers must produce the same tops",
            )
    known = {phase: set(tops) for phase in states}
    blobs = _Blobs(known, frozenset(tops[1:]), reporter)
    specs: list[LayerSpec] = []
    origins: dict[str, Origin] = {}
    for layer, phases in layers:
        if layer.get("type") in DATA_TYPES:
            continue
        blobs.step(layer, phases)
        reader = LayerReader(layer, phases, reporter)
        spec = BUILDERS[layer.get("type")](reader)
        prefix = f"net.layers.{len(specs)}."
        for spec_field in fields(spec):
            origins[prefix + spec_field.name] = reader.origins.get(spec_field.name, DEFAULT)
        origins[prefix + "name"] = layer.origin_or_default("name")
        origins[prefix + "origin"] = layer.origin
        rule = "include" if layer.has("include") else "exclude"
        origins[prefix + "phases"] = layer.origin_or_default(rule)
        specs.append(spec)
    if shape is None:
        return None
    _check_mean_values(sources, shape, data_layers, reporter)
    origins["net.name"] = net.origin_or_default("name")
    origins["net.input"] = shape_origin
    classes = next((s.outputs for s in reversed(specs) if isinstance(s, ConnectedSpec)), 0)
    names = test_names or ["#0"]
    tests = [phase for phase in states if phase.startswith("test")]  # test, test1, test2, ...
    more = tuple(
        TestNetSpec(names[i] if i < len(names) else f"#{i}", phase, sources.get(phase))
        for i, phase in enumerate(tests)
        if i > 0
    )
    data = DataSpec(
        train=sources.get("train") or sources[next(iter(sources))],
        test=sources.get("test"),
        classes=classes,
        more_tests=more,
        test_name=names[0] if more else "",
    )
    for phase, layer in data_layers.items():
        _data_origins(origins, phase, layer)
    train = data_layers.get("train") or first
    batch_origin = origins.get("data.train.batch_size", train.origin)
    return BuiltNet(
        net=NetSpec(name=net.get("name"), input=shape, layers=tuple(specs), input_tops=tuple(tops)),
        data=data,
        minibatch=(data.train.batch_size, batch_origin),
        has_test_phase="test" in data_layers,
        origins=origins,
    )


def _check_mean_values(sources, shape: InputSpec, data_layers, reporter: Reporter) -> None:
    for phase, source in sources.items():
        count = len(source.mean_values)
        if count not in (0, 1, shape.channels):
            t = data_layers[phase].get("transform_param")
            reporter.error(
                t.origin_of("mean_value"),
                "mean_value",
                f"give 1 or {shape.channels} mean_value entries, not {count}",
            )


def _data_origins(origins: dict[str, Origin], phase: str, layer: Msg) -> None:
    """``data.<phase>.<field>`` → the line each DataSourceSpec field came from."""
    prefix = f"data.{phase}."
    origins[prefix + "origin"] = layer.origin
    params = [layer.get(n) for n in ("data_param", "hdf5_data_param", "transform_param")]
    keys = {
        "source": "source",
        "batch_size": "batch_size",
        "backend": "backend",
        "shuffle": "shuffle",
        "scale": "scale",
        "mean_file": "mean_file",
        "mean_values": "mean_value",
        "mirror": "mirror",
        "crop_size": "crop_size",
    }
    for spec_field, key in keys.items():
        where = next((p.origin_of(key) for p in params if p.has(key)), DEFAULT)
        origins[prefix + spec_field] = where
    if layer.get("type") == "Input":
        p = layer.get("input_param")
        origins[prefix + "batch_size"] = p.origin_or_default("shape")
