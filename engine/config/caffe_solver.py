"""Caffe ``SolverParameter`` → :class:`SolverSpec` and :class:`ScheduleSpec`, and ``--set``.

Follows ``solver.cpp``/``sgd_solver.cpp``/``upgrade_proto.cpp`` (caffe spec sections 2 and 3):
proto2 defaults, the deprecated ``solver_type`` enum upgraded to ``type``, and the fatal checks
Caffe makes before or while training reported as errors up front.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from dnupdate.engine.config.caffe_schema import (
    SOLVER,
    Msg,
    Reporter,
    close_matches,
    convert_scalar,
    not_finite_problem,
)
from dnupdate.engine.config.caffe_yaml import loose_scalar
from dnupdate.engine.config.key_names import other_framework_hint
from dnupdate.engine.config.precision import PRECISION_KEYS
from dnupdate.engine.spec import DEFAULT, Origin, ScheduleSpec, SolverSpec

OVERRIDE = Origin("--set")


CAFFE_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")
# dnupdate extras a Caffe solver may name (engine.update.schedule implements them); Caffe itself
# would stop with "Unknown learning rate policy", so they come with a warning.
EXTRA_POLICIES = ("cosine",)
SCHEDULE_FIELDS = {
    "policy": "lr_policy",
    "base_lr": "base_lr",
    "gamma": "gamma",
    "power": "power",
    "step": "stepsize",
    "steps": "stepvalue",
    "max_iter": "max_iter",
}
CAFFE_SCHEDULE_KEYS = frozenset(SCHEDULE_FIELDS.values())

# Solver registry keys (case-sensitive in Caffe) → SolverSpec.optimizer.
SOLVER_TYPES = {
    "SGD": "sgd",
    "Nesterov": "nesterov",
    "AdaGrad": "adagrad",
    "RMSProp": "rmsprop",
    "AdaDelta": "adadelta",
    "Adam": "adam",
    "AdamW": "adamw",  # dnupdate extension (torch.optim.AdamW); BVLC Caffe has no such solver
}
# upgrade_proto.cpp: UpgradeSolverType, deprecated enum → registry key.
SOLVER_TYPE_ENUM = {
    "SGD": "SGD",
    "NESTEROV": "Nesterov",
    "ADAGRAD": "AdaGrad",
    "RMSPROP": "RMSProp",
    "ADADELTA": "AdaDelta",
    "ADAM": "Adam",
}

# SolverSpec field → solver key, for the fields that are a plain copy.
SOLVER_COPIES = {
    "momentum": "momentum",
    "decay": "weight_decay",
    "regularization": "regularization_type",
    "accumulate": "iter_size",
    "max_iter": "max_iter",
    "beta1": "momentum",
    "beta2": "momentum2",
    "eps": "delta",
    "rms_decay": "rms_decay",
    "clip_gradients": "clip_gradients",
    "display": "display",
    "average_loss": "average_loss",
    "test_interval": "test_interval",
    "test_initialization": "test_initialization",
    "snapshot": "snapshot",
    "random_seed": "random_seed",
}


# --------------------------------------------------------------------------------------------
# --set overrides
# --------------------------------------------------------------------------------------------


def _override_values(text: str, repeated: bool) -> list[str]:
    """``"5000,7000"`` or ``"[5000, 7000]"`` → items for a repeated field; one item else."""
    if not repeated:
        return [text]
    inner = text.strip()
    if inner.startswith("[") and inner.endswith("]"):
        inner = inner[1:-1]
    return [item.strip() for item in inner.split(",") if item.strip()]


def apply_overrides(
    solver: Msg,
    overrides: Sequence[tuple[str, str]],
    reporter: Reporter,
    allowed: frozenset[str] | None = None,
) -> None:
    """Apply ``--set key=value`` pairs (Caffe's own key names) to the solver message.

    They take precedence over the file. A repeated field (``stepvalue``, ``test_iter``)
    takes a comma list, and repeating ``--set`` for it appends; the result replaces the file's
    values. For a singular field the last ``--set`` wins. ``allowed`` restricts the keys.
    """
    names = set(allowed) if allowed is not None else set(SOLVER)
    collected: dict[str, list] = {}
    for key, text in overrides:
        definition = SOLVER.get(key) if key in names else None
        if definition is None:
            hint = other_framework_hint(key, "caffe") or close_matches(key, names)
            reporter.error(OVERRIDE, key, f"unknown solver key {key!r}{hint}")
            continue
        if definition.type == "message":
            reporter.error(OVERRIDE, key, f"{key!r} is a message and cannot be set with --set")
            continue
        values = []
        for item in _override_values(text, definition.repeated):
            value, problem = convert_scalar(loose_scalar(item, None), definition)
            if problem is None:
                problem = not_finite_problem(value, definition)
            if problem is not None:
                reporter.error(OVERRIDE, key, f"bad value for {key!r}: {problem}")
                break
            values.append(value)
        else:
            if definition.repeated:
                collected.setdefault(key, []).extend(values)
            else:
                collected[key] = values
    for key, values in collected.items():
        solver.set(key, values, OVERRIDE)


# --------------------------------------------------------------------------------------------
# Schedule
# --------------------------------------------------------------------------------------------


def check_schedule(solver: Msg, reporter: Reporter) -> None:
    """Caffe's fatal checks on the learning-rate policy (``SGDSolver::GetLearningRate``)."""
    policy = solver.get("lr_policy")
    where = solver.origin_of("lr_policy")
    if policy in EXTRA_POLICIES:
        reporter.warn(
            where,
            "lr_policy",
            f"lr_policy {policy!r} is a dnupdate extension; Caffe itself would reject it",
        )
    elif policy not in CAFFE_POLICIES:
        hint = close_matches(policy, CAFFE_POLICIES) if policy else ""
        shown = repr(policy) if policy else "(unset)"
        reporter.error(
            where if policy else Origin(solver.origin.file),
            "lr_policy",
            f"Unknown learning rate policy: {shown}; Caffe knows "
            + ", ".join(CAFFE_POLICIES)
            + hint,
        )
        return
    if policy in ("step", "sigmoid") and solver.get("stepsize") <= 0:
        reporter.error(
            solver.origin_of("stepsize") if solver.has("stepsize") else where,
            "stepsize",
            f"lr_policy {policy!r} needs stepsize > 0",
        )
    # GetLearningRate: CHECK_GE(gamma, 0) in these branches (not in fixed or poly)
    if policy in ("step", "exp", "inv", "multistep", "sigmoid") and solver.get("gamma") < 0:
        reporter.error(solver.origin_of("gamma"), "gamma", f"{policy!r} needs gamma >= 0")
    if solver.get("base_lr") < 0:
        reporter.warn(
            solver.origin_of("base_lr"),
            "base_lr",
            f"base_lr={solver.get('base_lr'):g} is negative: Caffe accepts it and every "
            "update climbs the loss instead of descending it",
        )
    steps = solver.get("stepvalue")
    for index in range(1, len(steps)):
        if steps[index] <= steps[index - 1]:
            reporter.error(
                solver.origin_of("stepvalue", index),
                "stepvalue",
                f"stepvalue must be ascending: {steps[index]} follows {steps[index - 1]}",
            )
    if policy == "poly" and solver.get("max_iter") <= 0:
        reporter.warn(where, "max_iter", "lr_policy 'poly' divides by max_iter, which is 0")


def schedule_from_solver(solver: Msg) -> tuple[ScheduleSpec, dict[str, Origin]]:
    """``lr_policy, base_lr, gamma, power, stepsize, stepvalue, max_iter`` → ScheduleSpec
    (convention ``"caffe"``: ``rate(it)`` with ``it`` = updates already applied).

    ``power`` is the proto value (0 when unset), not ScheduleSpec's darknet default of 4.
    """
    spec = ScheduleSpec(
        convention="caffe",
        policy=solver.get("lr_policy"),
        base_lr=solver.get("base_lr"),
        gamma=solver.get("gamma"),
        power=solver.get("power"),
        step=solver.get("stepsize"),
        steps=tuple(solver.get("stepvalue")),
        max_iter=solver.get("max_iter"),
    )
    origins = {
        f"schedule.{name}": solver.origin_or_default(key) for name, key in SCHEDULE_FIELDS.items()
    }
    return spec, origins


# --------------------------------------------------------------------------------------------
# Solver
# --------------------------------------------------------------------------------------------


def _optimizer(solver: Msg, reporter: Reporter) -> tuple[str, Origin]:
    """``type`` (registry key) or the deprecated ``solver_type`` enum → our optimizer name."""
    if solver.has("solver_type"):
        if solver.has("type"):
            reporter.error(
                solver.origin_of("solver_type"),
                "solver_type",
                "old solver_type field (enum) and new type field (string) cannot both be "
                "specified (upgrade_proto.cpp: UpgradeSolverType)",
            )
        key = SOLVER_TYPE_ENUM[solver.get("solver_type")]
        return SOLVER_TYPES[key], solver.origin_of("solver_type")
    name = solver.get("type")
    if name not in SOLVER_TYPES:
        reporter.error(
            solver.origin_of("type"),
            "type",
            f"Unknown solver type: {name!r} (known types: {', '.join(SOLVER_TYPES)})"
            + close_matches(name, SOLVER_TYPES),
        )
        return "sgd", solver.origin_or_default("type")
    if name == "AdamW":
        reporter.warn(
            solver.origin_of("type"),
            "type",
            "AdamW is a dnupdate extension (BVLC Caffe has no AdamW solver): torch.optim."
            "AdamW's update, momentum = β1, momentum2 = β2, delta = ε, weight_decay = the "
            "decoupled λ (θ ← θ·(1 − lr·λ)), not added to the gradient",
        )
    return SOLVER_TYPES[name], solver.origin_or_default("type")


def check_solver(solver: Msg, optimizer: str, has_test_nets: bool, reporter: Reporter) -> None:
    """Caffe's fatal solver checks (``Solver::Init``, ``InitTestNets``, solver constructors,
    ``SGDSolver::Regularize``)."""
    if optimizer in ("adagrad", "rmsprop") and solver.get("momentum") != 0:
        reporter.error(
            solver.origin_of("momentum"),
            "momentum",
            f"momentum must be 0 for {optimizer} (Caffe's solver checks it); got "
            f"{solver.get('momentum')}",
        )
    if optimizer == "rmsprop" and not 0 <= solver.get("rms_decay") < 1:
        reporter.error(solver.origin_of("rms_decay"), "rms_decay", "rms_decay must be in [0, 1)")
    if optimizer == "adamw" and solver.get("regularization_type") == "L1":
        reporter.error(
            solver.origin_of("regularization_type"),
            "regularization_type",
            "AdamW decays the weights directly (θ ← θ·(1 − lr·λ)); L1 has no AdamW form",
        )
    if solver.get("regularization_type") not in ("L1", "L2"):
        reporter.error(
            solver.origin_of("regularization_type"),
            "regularization_type",
            f"Unknown regularization type: {solver.get('regularization_type')!r} (L1 or L2)",
        )
    if solver.get("average_loss") < 1:
        reporter.error(solver.origin_of("average_loss"), "average_loss", "must be >= 1")
    if solver.get("iter_size") < 1:
        reporter.error(solver.origin_of("iter_size"), "iter_size", "must be >= 1")
    if has_test_nets and solver.get("test_interval") <= 0:
        reporter.error(
            solver.origin_of("test_interval" if solver.has("test_interval") else "test_iter"),
            "test_interval",
            "test_iter asks for testing, so test_interval must be > 0 (Solver::InitTestNets)",
        )


def snapshot_prefix(solver: Msg, solver_path: str) -> str:
    """Caffe's rule (``UpgradeSnapshotPrefixProperty``): unset → the solver path without its
    extension; an existing directory → ``dir/<solver stem>``; else as written."""
    if not solver.has("snapshot_prefix"):
        return str(Path(solver_path).with_suffix(""))
    prefix = solver.get("snapshot_prefix")
    if prefix and os.path.isdir(prefix):
        return str(Path(prefix) / Path(solver_path).stem)
    return prefix


def solver_from_msg(
    solver: Msg,
    solver_path: str,
    minibatch: tuple[int, Origin],
    has_test_nets: bool,
    reporter: Reporter,
) -> tuple[SolverSpec, dict[str, Origin]]:
    """SolverParameter → SolverSpec (``semantics="caffe"``: lr inside the momentum history,
    gradients averaged over the batch); ``minibatch`` is the TRAIN data layer's batch size."""
    optimizer, optimizer_origin = _optimizer(solver, reporter)
    check_solver(solver, optimizer, has_test_nets, reporter)
    copies = {name: solver.get(key) for name, key in SOLVER_COPIES.items()}
    test_iter = solver.get("test_iter")
    spec = SolverSpec(
        semantics="caffe",
        optimizer=optimizer,
        minibatch=minibatch[0],
        test_iter=test_iter[0] if test_iter else 0,
        test_iters=tuple(test_iter),
        snapshot_prefix=snapshot_prefix(solver, solver_path),
        momentum_style="lr_inside",
        grad_reduction="mean",
        **copies,
    )
    origins = {
        f"solver.{name}": solver.origin_or_default(key) for name, key in SOLVER_COPIES.items()
    }
    origins.update(precision_extensions(solver, reporter))
    origins["solver.optimizer"] = optimizer_origin
    origins["solver.minibatch"] = minibatch[1]
    origins["solver.test_iter"] = solver.origin_or_default("test_iter")
    origins["solver.test_iters"] = origins["solver.test_iter"]
    origins["solver.snapshot_prefix"] = solver.origin_or_default("snapshot_prefix")
    for name in ("semantics", "momentum_style", "grad_reduction"):
        origins[f"solver.{name}"] = DEFAULT
    return spec, origins


def precision_extensions(solver: Msg, reporter: Reporter) -> dict[str, Origin]:
    """The simulated mixed-precision extension keys the solver sets (``precision``,
    ``loss_scale``, ``scale_init``, ``scale_growth``, ``scale_backoff``,
    ``scale_growth_interval``, ``master_weights``: the darknet ``[net]`` keys of the same names)
    → ``{"precision.<key>": origin}``, each with a warning that BVLC Caffe has no such field.
    Their values reach :func:`engine.config.precision.apply_precision` through ``raw``."""
    origins: dict[str, Origin] = {}
    for key in PRECISION_KEYS:
        if not solver.has(key):
            continue
        where = solver.origin_of(key)
        origins[f"precision.{key}"] = where
        reporter.warn(
            where,
            key,
            f"{key} is a dnupdate extension (simulated mixed precision); Caffe itself would "
            "reject the solver",
        )
    return origins


def raw_values(solver: Msg) -> dict[str, str]:
    """The solver keys that were set (file or ``--set``) → their values as text."""
    raw: dict[str, str] = {}
    for key, values in solver.values.items():
        if SOLVER[key].type == "message" or not values:
            continue
        raw[key] = ",".join(_text(v) for v in values)
    return raw


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
