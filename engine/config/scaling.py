"""Batch-size learning-rate scaling (``--lr-scaling``, ``--lr-warmup``): our own settings, read
as the two pseudo-keys ``lr_scaling`` and ``lr_warmup`` among the ``--set`` overrides (so a run
folder's saved overrides reproduce them on resume, and a sweep can put them on a grid).

The reference batch B0 is the config's own images per update (darknet ``batch`` =
minibatch·subdivisions, Caffe ``batch_size``·``iter_size``), read from the file without any
override; B is the batch after the overrides. ``linear`` multiplies every rate by B/B0 (Goyal
et al. 2017), ``sqrt`` by sqrt(B/B0) (Krizhevsky 2014, Hoffer et al. 2017); the factor and the
warm-up land in :class:`engine.spec.ScheduleSpec`, so the schedule, ``inspect`` and training see
the same rates.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

from dnupdate.engine.spec import ConfigError, Diagnostic, Origin, RunSpec

SCALING_KEYS = ("lr_scaling", "lr_warmup")
SCALING_RULES = ("none", "linear", "sqrt")

Override = tuple[str, str]


def _error(key: str, value: str, message: str) -> ConfigError:
    return ConfigError([Diagnostic("error", f"--{key.replace('_', '-')}", None, key, message)])


def split_scaling(overrides: Sequence[Override]) -> tuple[list[Override], dict[str, object]]:
    """``(other overrides, {"lr_scaling": rule, "lr_warmup": N})`` (last one wins); a bad rule
    or warm-up is a ConfigError naming the option."""
    rest: list[Override] = []
    options: dict[str, object] = {}
    for key, value in overrides:
        if key == "lr_scaling":
            if value not in SCALING_RULES:
                raise _error(key, value, f"{value!r}: expected one of {', '.join(SCALING_RULES)}")
            options[key] = value
        elif key == "lr_warmup":
            try:
                updates = int(value)
            except ValueError:
                updates = -1
            if updates < 0:
                raise _error(key, value, f"{value!r}: expected a number of updates >= 0")
            options[key] = updates
        else:
            rest.append((key, value))
    return rest, options


def scaling_factor(rule: str, batch: int, reference_batch: int) -> float:
    """B/B0 (``linear``), sqrt(B/B0) (``sqrt``) or 1 (``none``), in double."""
    if rule == "linear":
        return batch / reference_batch
    if rule == "sqrt":
        return math.sqrt(batch / reference_batch)
    return 1.0


def apply_scaling(
    run: RunSpec, options: dict[str, object], load_reference: Callable[[], RunSpec]
) -> RunSpec:
    """``run`` with the scaling settings in its schedule (``load_reference()`` gives the config
    without overrides, for B0). No options: ``run`` unchanged."""
    if not options:
        return run
    rule = str(options.get("lr_scaling", "none"))
    warmup = int(options.get("lr_warmup", 0))
    reference = load_reference().solver.batch
    factor = scaling_factor(rule, run.solver.batch, reference)
    schedule = dataclasses.replace(
        run.schedule,
        lr_scaling=rule,
        reference_batch=reference,
        scaled_batch=run.solver.batch,
        lr_factor=factor,
        lr_warmup=warmup,
    )
    origins = dict(run.origins)
    for field in ("lr_scaling", "lr_factor", "reference_batch", "scaled_batch"):
        origins[f"schedule.{field}"] = Origin("--lr-scaling")
    origins["schedule.lr_warmup"] = Origin("--lr-warmup")
    diagnostics = run.diagnostics
    if warmup > 0 and factor == 1.0:
        note = (
            f"--lr-warmup {warmup} ramps from the unscaled rate to the scaled one, and the "
            f"factor is 1 (batch {run.solver.batch} = reference {reference}, --lr-scaling "
            f"{rule}): it changes nothing; darknet's warmup= key ramps from 0"
        )
        diagnostics = (*diagnostics, Diagnostic("warning", "--lr-warmup", None, "lr_warmup", note))
    return dataclasses.replace(run, schedule=schedule, origins=origins, diagnostics=diagnostics)
