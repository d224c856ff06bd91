"""Caffe configs → RunSpec: a ``solver.prototxt`` (protobuf text format) or the same keys as
YAML, with the net from ``net: "file"`` or inline ``net_param { ... }``.

Flow: text → schema-free tree (``prototxt.parse_text_format`` or ``caffe_yaml.parse_yaml``) →
typed messages (``caffe_schema.validate``) → ``--set`` overrides → specs
(``caffe_solver``, ``caffe_net``). Every problem is a Diagnostic with file, line and key; any
error raises :class:`engine.spec.ConfigError` carrying all of them.

Public API (called by ``engine.config``): :func:`load_caffe`, :data:`CAFFE_SCHEDULE_KEYS`,
:func:`caffe_schedule_from_options`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from dnupdate.engine.config.caffe_net import BuiltNet, NetState, build_net
from dnupdate.engine.config.caffe_schema import (
    SOLVER,
    FieldDef,
    Msg,
    Reporter,
    convert_scalar,
    validate,
)
from dnupdate.engine.config.caffe_solver import (
    CAFFE_SCHEDULE_KEYS,
    OVERRIDE,
    apply_overrides,
    check_schedule,
    raw_values,
    schedule_from_solver,
    solver_from_msg,
)
from dnupdate.engine.config.caffe_yaml import looks_like_yaml, loose_scalar, parse_yaml
from dnupdate.engine.config.files import UnreadableFile, read_config_file
from dnupdate.engine.config.prototxt import TextMessage, parse_text_format
from dnupdate.engine.spec import ConfigError, Diagnostic, Origin, RunSpec, ScheduleSpec

__all__ = [
    "CAFFE_SCHEDULE_KEYS",
    "caffe_schedule_from_options",
    "caffe_schedule_of_solver",
    "load_caffe",
]

YAML_SUFFIXES = (".yaml", ".yml")
BATCH_SIZE_FIELD = FieldDef("uint32")
TEXT_SUFFIXES = (".prototxt", ".pt", ".pbtxt", ".txt")
NET_SOURCES = ("net", "net_param", "train_net", "train_net_param")


def parse_tree(path: str, text: str) -> TextMessage:
    """Parse a Caffe file as YAML (by suffix) or text format (by suffix, or else by trying the
    text format first and falling back to YAML when only YAML accepts the text)."""
    suffix = Path(path).suffix.lower()
    if suffix in YAML_SUFFIXES:
        return parse_yaml(text, path)
    if suffix in TEXT_SUFFIXES:
        return parse_text_format(text, path)
    try:
        return parse_text_format(text, path)
    except ConfigError:
        if looks_like_yaml(text):
            return parse_yaml(text, path)
        raise


def _reject_bare_net(tree: TextMessage, path: str) -> None:
    names = {f.name for f in tree.fields}
    if names & {"layer", "layers"} and not names & set(SOLVER):
        message = (
            "this is a net definition, not a solver; point dnupdate at the solver file "
            '(which names this net with net: "...")'
        )
        layer = next(f for f in tree.fields if f.name in ("layer", "layers"))
        raise ConfigError([Diagnostic("error", path, layer.line, layer.name, message)])


def test_phase(index: int) -> str:
    """The phase tag of Caffe test net ``index``: ``test`` for #0, ``test1``, ``test2``, ..."""
    return "test" if index == 0 else f"test{index}"


def _test_states(solver: Msg, reporter: Reporter) -> list[Msg]:
    """One ``test_state`` per test net (``Solver::InitTestNets``: one net per ``test_iter``;
    ``test_state`` is absent or given once per test net, else Caffe's CHECK fails)."""
    tests, iters = solver.get("test_state"), solver.get("test_iter")
    if tests and len(tests) != max(len(iters), 1):
        reporter.error(
            solver.origin_of("test_state"),
            "test_state",
            f"test_state must be unspecified or specified once per test net "
            f"({len(tests)} test_state for {len(iters)} test_iter)",
        )
    count = max(len(iters), 1)
    return [tests[i] if i < len(tests) else Msg("NetState", solver.origin) for i in range(count)]


def _net_states(solver: Msg, net: Msg, reporter: Reporter) -> dict[str, NetState]:
    """TRAIN and TEST states: the net's own ``state`` merged with the solver's
    ``train_state`` / each ``test_state`` (``Solver::InitTrainNet``/``InitTestNets``): the
    train net under ``train``, test net #i under :func:`test_phase` (i)."""
    base = net.get("state")
    extras = [("train", solver.get("train_state"))]
    extras += [(test_phase(i), m) for i, m in enumerate(_test_states(solver, reporter))]
    states = {}
    for phase, extra in extras:
        level = extra.get("level") if extra.has("level") else base.get("level")
        stages = frozenset(base.get("stage")) | frozenset(extra.get("stage"))
        states[phase] = NetState("train" if phase == "train" else "test", level, stages)
    return states


def test_net_names(solver: Msg) -> list[str]:
    """Each test net's name: its ``test_state`` stages joined by ``+``, else ``#i``."""
    tests = solver.get("test_state")
    names = []
    for i in range(max(len(solver.get("test_iter")), 1)):
        stages = list(tests[i].get("stage")) if i < len(tests) else []
        names.append("+".join(stages) if stages else f"#{i}")
    return names


def _read_net_file(solver: Msg, key: str, solver_path: str, reporter: Reporter):
    """Resolve ``net:`` relative to the solver's directory (then to the working directory, as
    Caffe does), read and parse it."""
    name = solver.get(key)
    where = solver.origin_of(key)
    candidates = [str(Path(solver_path).parent / name), name]
    found = next((c for c in candidates if os.path.exists(c)), None)
    if found is None:
        tried = " or ".join(dict.fromkeys(candidates))
        reporter.error(where, key, f"net file {name!r} not found (looked for {tried})")
        return None, ""
    net_path = found
    try:
        text = read_config_file(net_path)
    except UnreadableFile as exc:
        reporter.error(where, key, f"cannot read net file {net_path}: {exc}")
        return None, ""
    tree = parse_tree(net_path, text)
    return validate(tree, "NetParameter", net_path, reporter), net_path


def load_net(solver: Msg, solver_path: str, reporter: Reporter) -> tuple[Msg | None, str]:
    """The train net: exactly one of ``net``, ``net_param``, ``train_net``,
    ``train_net_param`` (``Solver::InitTrainNet``); returns (NetParameter, its file)."""
    given = [key for key in NET_SOURCES if solver.has(key)]
    for key in ("test_net", "test_net_param"):
        if solver.has(key):
            reporter.warn(
                solver.origin_of(key),
                key,
                f"{key} is not supported and is ignored; put TEST-phase layers in the net instead",
            )
    if len(given) != 1:
        where = solver.origin_of(given[1]) if len(given) > 1 else solver.origin
        reporter.error(
            where,
            given[1] if len(given) > 1 else "net",
            "give exactly one of net, net_param, train_net, train_net_param"
            + (f" (found {', '.join(given)})" if given else ' (e.g. net: "train_test.prototxt")'),
        )
        return None, ""
    key = given[0]
    if key.endswith("_param"):
        return solver.get(key), solver.origin.file
    return _read_net_file(solver, key, solver_path, reporter)


# --set keys that change the net rather than the solver.
NET_OVERRIDES = frozenset({"batch_size"})


def with_batch_size(built: BuiltNet, text: str, reporter: Reporter) -> BuiltNet:
    """``--set batch_size=N``: the TRAIN data layer's ``batch_size`` (``data_param``,
    ``hdf5_data_param`` or an ``Input`` shape's first dimension) becomes N; the TEST layer
    keeps its own."""
    value, problem = convert_scalar(loose_scalar(text, None), BATCH_SIZE_FIELD)
    if problem is None and value <= 0:
        problem = "must be > 0"
    if problem is not None:
        reporter.error(OVERRIDE, "batch_size", f"bad value for 'batch_size': {problem}")
        return built
    data = built.data
    train = dataclasses.replace(data.train, batch_size=value)
    test = train if data.test is data.train else data.test
    origins = {**built.origins, "data.train.batch_size": OVERRIDE}
    return dataclasses.replace(
        built,
        data=dataclasses.replace(data, train=train, test=test),
        minibatch=(value, OVERRIDE),
        origins=origins,
    )


def load_caffe(
    path: str, text: str, overrides: Sequence[tuple[str, str]], *, data: str | None = None
) -> RunSpec:
    """A Caffe solver (text format or YAML) plus ``--set`` overrides → RunSpec. ``data``
    (``--data``) replaces the data layers' sources when the input shape is resolved.

    Raises :class:`engine.spec.ConfigError` with every diagnostic when anything is wrong;
    warnings ride along in ``RunSpec.diagnostics``.
    """
    reporter = Reporter(fallback=Origin(path))
    tree = parse_tree(path, text)
    _reject_bare_net(tree, path)
    solver = validate(tree, "SolverParameter", path, reporter)
    net_overrides = [(k, v) for k, v in overrides if k in NET_OVERRIDES]
    overrides = [(k, v) for k, v in overrides if k not in NET_OVERRIDES]
    apply_overrides(solver, overrides, reporter)
    check_schedule(solver, reporter)
    if solver.has("weights"):
        reporter.warn(
            solver.origin_of("weights"),
            "weights",
            "fine-tuning from .caffemodel "
            "weights is not supported; training starts from the fillers",
        )
    net_msg, net_path = load_net(solver, path, reporter)
    built: BuiltNet | None = None
    if net_msg is not None:
        built = build_net(
            net_msg,
            net_path,
            _net_states(solver, net_msg, reporter),
            reporter,
            data,
            test_net_names(solver),
        )
    if built is not None:
        for _, value in net_overrides:
            built = with_batch_size(built, value, reporter)
    reporter.check()
    if built is None:  # pragma: no cover - build_net reports an error whenever it gives up
        raise ConfigError(reporter.items)
    has_test_nets = bool(solver.get("test_iter"))
    solver_spec, solver_origins = solver_from_msg(
        solver, path, built.minibatch, has_test_nets, reporter
    )
    schedule, schedule_origins = schedule_from_solver(solver)
    reporter.check()
    origins: dict[str, Origin] = {**solver_origins, **schedule_origins, **built.origins}
    return RunSpec(
        format="caffe",
        config_path=path,
        net=built.net,
        solver=solver_spec,
        schedule=schedule,
        data=built.data,
        origins=origins,
        raw=raw_values(solver),
        diagnostics=reporter.warnings(),
    )


def caffe_schedule_of_solver(
    path: str, text: str, overrides: Sequence[tuple[str, str]]
) -> tuple[ScheduleSpec, tuple[Diagnostic, ...]]:
    """The schedule of a Caffe solver without its net (``dnupdate lr-schedule``): the solver is
    parsed, validated and overridden as by :func:`load_caffe`, but ``net``/``net_param`` are
    not read, so a net that is missing, unreadable or fed by an unknown source still gives its
    schedule. ``--set batch_size`` (a net key) is accepted and changes nothing here."""
    reporter = Reporter(fallback=Origin(path))
    tree = parse_tree(path, text)
    _reject_bare_net(tree, path)
    solver = validate(tree, "SolverParameter", path, reporter)
    apply_overrides(solver, [(k, v) for k, v in overrides if k not in NET_OVERRIDES], reporter)
    check_schedule(solver, reporter)
    reporter.check()
    return schedule_from_solver(solver)[0], reporter.warnings()


def caffe_schedule_from_options(overrides: Sequence[tuple[str, str]]) -> ScheduleSpec:
    """A schedule from ``--set`` options alone, in Caffe's key names (``lr_policy``,
    ``base_lr``, ``gamma``, ``power``, ``stepsize``, ``stepvalue``, ``max_iter``); stepvalue
    takes comma lists or repeated options. Raises ConfigError naming a bad key or value."""
    reporter = Reporter(fallback=OVERRIDE)
    solver = Msg("SolverParameter", OVERRIDE)
    apply_overrides(solver, overrides, reporter, allowed=CAFFE_SCHEDULE_KEYS)
    check_schedule(solver, reporter)
    reporter.check()
    return schedule_from_solver(solver)[0]
