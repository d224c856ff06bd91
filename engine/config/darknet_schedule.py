"""The learning-rate keys of a darknet ``[net]`` section → :class:`engine.spec.ScheduleSpec`.

Follows ``parser.c:parse_net_options`` (pjreddie 61c9d02e): ``policy`` (default constant;
unknown → constant with a warning), ``burn_in`` (0) and ``power`` (4) for every policy, then
only the keys the policy reads: ``step``/``scale`` (step), ``steps``/``scales`` (steps, both
required), ``gamma`` (exp, sigmoid), ``gamma``/``step`` (sigmoid); ``max_batches`` (0).

Extensions beyond pjreddie, documented as such:

* ``sgdr`` (AlexeyAB/darknet) with ``sgdr_cycle`` (default ``max_batches``), ``sgdr_mult`` (2)
  and ``learning_rate_min`` (1e-5);
* ``cosine`` (dnupdate): cosine annealing with warm restarts, same keys as ``sgdr``;
* ``warmup`` (dnupdate): linear warm-up batches composed in front of any policy (default 0);
* ``seed`` (dnupdate): seeds the glibc ``rand()`` stream of the ``random`` policy.
"""

from __future__ import annotations

import math

from dnupdate.engine.config.darknet_options import (
    OptionTable,
    not_a_number_message,
    not_finite_message,
)
from dnupdate.engine.config.darknet_values import INT32_MAX, INT32_MIN, c_atof, c_atoi, float32
from dnupdate.engine.spec import ScheduleSpec

PJREDDIE_POLICIES = ("constant", "step", "steps", "exp", "poly", "sigmoid", "random")
EXTRA_POLICIES = ("sgdr", "cosine")
COSINE_POLICIES = ("sgdr", "cosine")

# [net] schedule key → the ScheduleSpec field it sets.
SCHEDULE_FIELDS = {
    "learning_rate": "base_lr",
    "policy": "policy",
    "burn_in": "burn_in",
    "power": "power",
    "step": "step",
    "scale": "scale",
    "steps": "steps",
    "scales": "scales",
    "gamma": "gamma",
    "max_batches": "max_iter",
    "sgdr_cycle": "cycle",
    "sgdr_mult": "cycle_mult",
    "learning_rate_min": "lr_min",
    "warmup": "warmup",
    "seed": "seed",
}

# Keys read only under some settings, and the reason given when they are present but unread.
CONDITIONAL_KEYS = {
    "step": "is read only with policy=step or policy=sigmoid",
    "scale": "is read only with policy=step",
    "steps": "is read only with policy=steps",
    "scales": "is read only with policy=steps",
    "gamma": "is read only with policy=exp or policy=sigmoid",
    "sgdr_cycle": "is read only with policy=sgdr or policy=cosine",
    "sgdr_mult": "is read only with policy=sgdr or policy=cosine",
    "learning_rate_min": "is read only with policy=sgdr or policy=cosine",
    "B1": "is read only when adam=1 or adamw=1",
    "B2": "is read only when adam=1 or adamw=1",
    "eps": "is read only when adam=1 or adamw=1",
}


def read_policy(table: OptionTable) -> str:
    """``get_policy``: exact names; an unknown one falls back to constant with a warning."""
    name = table.get_str("policy", "constant")
    assert name is not None
    if name in PJREDDIE_POLICIES or name in EXTRA_POLICIES:
        return name
    table.warning(
        "policy",
        f"unknown policy '{name}': darknet says \"Couldn't find policy {name}, going with "
        f'constant" and so do we (known: {", ".join(PJREDDIE_POLICIES + EXTRA_POLICIES)})',
    )
    return "constant"


def read_steps(table: OptionTable) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """``steps``/``scales`` as ``parse_net_options`` reads them: n = commas in ``steps`` + 1,
    each entry by ``atoi``/``atof``; both keys are required and ``scales`` needs n entries."""
    steps_text = table.get_str("steps", None)
    scales_text = table.get_str("scales", None)
    if steps_text is None or scales_text is None:
        missing = "steps" if steps_text is None else "scales"
        table.error(
            missing,
            f"policy=steps needs both steps and scales; '{missing}' is missing (darknet: "
            '"STEPS policy must have steps and scales in cfg file")',
        )
        return (), ()
    step_items = steps_text.split(",")
    scale_items = scales_text.split(",")
    if len(scale_items) < len(step_items):
        table.error(
            "scales",
            f"scales has {len(scale_items)} entries but steps has {len(step_items)} "
            "(darknet would read past the end of scales and crash)",
        )
        return (), ()
    if len(scale_items) > len(step_items):
        table.warning(
            "scales",
            f"scales has {len(scale_items)} entries, steps only {len(step_items)}: "
            "the extra scales are ignored",
        )
    steps = tuple(read_list_int(table, "steps", item) for item in step_items)
    scales = tuple(
        float32(read_list_float(table, "scales", item)) for item in scale_items[: len(steps)]
    )
    if any(step < 0 for step in steps):
        table.warning(
            "steps",
            "darknet quirk: pjreddie compares steps as unsigned 64-bit, so a negative entry "
            "never passes and no scale (not even a later one) is ever applied",
        )
    return steps, scales


def read_list_int(table: OptionTable, key: str, item: str) -> int:
    """One ``atoi`` list entry; no digits → error, trailing garbage → warning."""
    number, rest = c_atoi(item)
    if number is None:
        table.error(key, "entry " + not_a_number_message(item, "an integer"))
        return 0
    if not INT32_MIN <= number <= INT32_MAX:
        table.error(key, f"entry '{item}' does not fit in a C int")
        return 0
    if rest:
        table.warning(key, f"trailing '{rest}' after {number} is ignored, as atoi does")
    return number


def read_list_float(table: OptionTable, key: str, item: str) -> float:
    """One ``atof`` list entry; no number → error, trailing garbage → warning."""
    number, rest = c_atof(item)
    if number is None:
        table.error(key, "entry " + not_a_number_message(item, "a number"))
        return 0.0
    if not math.isfinite(float32(number)):
        table.error(key, "entry " + not_finite_message(item, number))
        return 0.0
    if rest:
        table.warning(key, f"trailing '{rest}' after {number!r} is ignored, as atof does")
    return number


def read_schedule(table: OptionTable) -> ScheduleSpec:
    """Read the schedule keys of ``table`` in darknet's order, with darknet's defaults."""
    base_lr = table.get_float("learning_rate", 0.001)
    policy = read_policy(table)
    burn_in = table.get_int("burn_in", 0)
    power = table.get_float("power", 4.0)
    fields: dict = {}
    if policy == "step":
        fields["step"] = table.get_int("step", 1)
        fields["scale"] = table.get_float("scale", 1.0)
    elif policy == "steps":
        fields["steps"], fields["scales"] = read_steps(table)
    elif policy == "exp":
        fields["gamma"] = table.get_float("gamma", 1.0)
    elif policy == "sigmoid":
        fields["gamma"] = table.get_float("gamma", 1.0)
        fields["step"] = table.get_int("step", 1)
    max_batches = table.get_int("max_batches", 0)
    if policy in COSINE_POLICIES:
        fields["cycle"] = table.get_int("sgdr_cycle", max_batches)
        fields["cycle_mult"] = table.get_float("sgdr_mult", 2.0)
        fields["lr_min"] = table.get_float("learning_rate_min", 1e-5)
    warmup = table.get_int("warmup", 0)
    seed = table.get_int("seed", 0)
    warn_schedule_quirks(
        table, policy, burn_in, max_batches, warmup, {**fields, "base_lr": base_lr}
    )
    return ScheduleSpec(
        convention="darknet",
        policy=policy,
        base_lr=base_lr,
        power=power,
        max_iter=max_batches,
        burn_in=burn_in,
        warmup=warmup,
        seed=seed,
        **fields,
    )


def warn_schedule_quirks(
    table: OptionTable, policy: str, burn_in: int, max_batches: int, warmup: int, fields: dict
) -> None:
    """Errors for schedule values darknet cannot evaluate (it would crash or loop), and
    warnings for values it accepts but that rarely mean what users think."""
    base_lr = fields.get("base_lr", 0.0)
    if base_lr < 0:
        table.warning(
            "learning_rate",
            f"learning_rate={base_lr:g} is negative: darknet accepts it and every update "
            "climbs the loss instead of descending it",
        )
    if policy == "step" and fields.get("step") == 0:
        table.error(
            "step",
            "policy=step needs step != 0: darknet computes batch / step and would crash with "
            "a division by zero (SIGFPE)",
        )
    if policy in COSINE_POLICIES and fields.get("cycle_mult", 1.0) < 1:
        table.error(
            "sgdr_mult",
            f"sgdr_mult={fields['cycle_mult']:g} shrinks each cycle until it is 0 "
            "(AlexeyAB's loop would never end): use sgdr_mult >= 1",
        )
    if burn_in < 0:
        table.warning(
            "burn_in",
            "darknet quirk: a negative burn_in is compared unsigned, so every batch is burn-in",
        )
    if warmup < 0:
        table.error("warmup", "warmup must be >= 0")
    if policy == "poly" and max_batches == 0:
        table.warning(
            "max_batches",
            "policy=poly with max_batches=0 divides by zero: darknet's rate becomes inf/NaN",
        )
    if policy == "sigmoid" and fields.get("gamma", 0.0) > 0 and fields.get("step", 0) > 0:
        table.warning(
            "policy",
            "darknet quirk: pjreddie computes b - step unsigned, so the sigmoid rate is exactly "
            f"0 until batch {fields['step']} (then lr/2, decaying)",
        )
    if policy in COSINE_POLICIES and fields.get("cycle", 0) <= 0:
        table.error(
            "sgdr_cycle",
            f"policy={policy} needs a cycle > 0: set sgdr_cycle or max_batches",
        )
