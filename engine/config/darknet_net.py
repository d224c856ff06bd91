"""A darknet ``[net]`` section → input shape, :class:`SolverSpec` and :class:`ScheduleSpec`.

Follows ``parser.c:parse_net_options`` (pjreddie 61c9d02e) key by key, with darknet's defaults:
``batch`` 1, ``learning_rate`` .001, ``momentum`` .9, ``decay`` .0001, ``subdivisions`` 1,
``time_steps`` 1, ``adam`` 0 (then ``B1`` .9, ``B2`` .999, ``eps`` 1e-7), ``height``/``width``/
``channels`` 0, ``inputs`` h·w·c, augmentation keys, then the schedule keys
(:mod:`engine.config.darknet_schedule`). The mini-batch is ``batch / subdivisions`` (C integer
division) times ``time_steps``.

darknet never reports unknown ``[net]`` keys; we warn about keys dnupdate does not know and
about known keys the configuration never reads (e.g. ``step`` with ``policy=poly``).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field

from dnupdate.engine.config.darknet_options import OVERRIDE_FILE, OptionTable
from dnupdate.engine.config.darknet_schedule import CONDITIONAL_KEYS, SCHEDULE_FIELDS, read_schedule
from dnupdate.engine.config.darknet_values import float32
from dnupdate.engine.config.key_names import other_framework_hint
from dnupdate.engine.spec import (
    ConfigError,
    DarknetAugmentSpec,
    Diagnostic,
    InputSpec,
    Origin,
    ScheduleSpec,
    SolverSpec,
)

# Every [net] key pjreddie's parse_net_options reads.
PJREDDIE_NET_KEYS = frozenset(
    {
        "batch", "learning_rate", "momentum", "decay", "subdivisions", "time_steps", "notruth",
        "random", "adam", "B1", "B2", "eps", "height", "width", "channels", "inputs",
        "max_crop", "min_crop", "max_ratio", "min_ratio", "center", "clip", "angle", "aspect",
        "saturation", "exposure", "hue", "policy", "burn_in", "power", "step", "scale",
        "steps", "scales", "gamma", "max_batches",
    }
)  # fmt: skip
# AlexeyAB/darknet's SGDR keys and its static loss scale (engine.config.precision reads it).
ALEXEYAB_NET_KEYS = frozenset({"sgdr_cycle", "sgdr_mult", "learning_rate_min", "loss_scale"})
# dnupdate extensions: dataset, linear warm-up, rand() seed, AdamW; simulated mixed precision
# (precision, scale_*, master_weights: read by engine.config.precision).
EXTENSION_NET_KEYS = frozenset(
    {"data", "warmup", "seed", "adamw", "precision", "scale_init", "scale_growth"}
    | {"scale_backoff", "scale_growth_interval", "master_weights"}
)
KNOWN_NET_KEYS = PJREDDIE_NET_KEYS | ALEXEYAB_NET_KEYS | EXTENSION_NET_KEYS

# Keys that change data loading or the GPU path only: read, reported when not at default.
NOT_APPLIED_DEFAULTS = {
    "angle": 0.0,
    "aspect": 1.0,
    "saturation": 1.0,
    "exposure": 1.0,
    "hue": 0.0,
    "center": 0,
    "random": 0,
    "notruth": 0,
    "clip": 0.0,
}

# [net] key → spec field paths it sets (for RunSpec.origins).
NET_FIELD_PATHS: dict[str, tuple[str, ...]] = {
    **{key: (f"schedule.{name}",) for key, name in SCHEDULE_FIELDS.items()},
    "batch": ("solver.minibatch", "data.train.batch_size", "data.test.batch_size"),
    "subdivisions": ("solver.accumulate",),
    "momentum": ("solver.momentum",),
    "decay": ("solver.decay",),
    "adam": ("solver.optimizer",),
    "adamw": ("solver.optimizer",),
    "B1": ("solver.beta1",),
    "B2": ("solver.beta2",),
    "eps": ("solver.eps",),
    "max_batches": ("solver.max_iter", "schedule.max_iter"),
    "seed": ("solver.random_seed", "schedule.seed"),
    "height": ("net.input.height",),
    "width": ("net.input.width",),
    "channels": ("net.input.channels",),
}


@dataclass
class NetOptions:
    """What the ``[net]`` section resolves to."""

    input: InputSpec
    input_is_image: bool
    solver: SolverSpec
    schedule: ScheduleSpec
    origins: dict[str, Origin] = field(default_factory=dict)
    raw: dict[str, str] = field(default_factory=dict)
    augment: DarknetAugmentSpec | None = None


def check_override_keys(overrides: Mapping[str, str], known: frozenset[str]) -> None:
    """Unknown ``--set`` keys are errors naming the key and its close matches."""
    diagnostics = []
    for key in overrides:
        if key in known:
            continue
        close = difflib.get_close_matches(key[:100], sorted(known), n=3, cutoff=0.6)
        hint = other_framework_hint(key, "darknet")
        if not hint and close:
            hint = f"; did you mean {', '.join(close)}?"
        diagnostics.append(
            Diagnostic(
                "error",
                OVERRIDE_FILE,
                None,
                key,
                f"unknown darknet [net] key '{key}'{hint}",
            )
        )
    for key, value in overrides.items():
        if value == "":
            diagnostics.append(
                Diagnostic("error", OVERRIDE_FILE, None, key, f"'{key}=' needs a value")
            )
    if diagnostics:
        raise ConfigError(diagnostics)


def read_minibatch(table: OptionTable) -> tuple[int, int]:
    """(mini-batch, subdivisions): ``batch / subdivisions`` (C integer division) ·
    ``time_steps``, as ``parse_net_options`` computes ``net->batch``."""
    batch = table.get_int("batch", 1)
    subdivisions = table.get_int("subdivisions", 1)
    time_steps = table.get_int("time_steps", 1)
    if subdivisions <= 0:
        table.error("subdivisions", f"subdivisions must be >= 1, got {subdivisions}")
        return 1, 1
    if batch <= 0 or time_steps <= 0:
        key = "batch" if batch <= 0 else "time_steps"
        table.error(key, f"{key} must be >= 1")
        return 1, subdivisions
    minibatch = batch // subdivisions
    if minibatch == 0:
        table.error(
            "batch",
            f"batch={batch} / subdivisions={subdivisions} is 0 images per pass "
            "(darknet divides with truncation)",
        )
        return 1, subdivisions
    if batch % subdivisions:
        table.warning(
            "batch",
            f"darknet truncates batch/subdivisions: {batch}/{subdivisions} = {minibatch} "
            f"images per pass, {minibatch * subdivisions} per update",
        )
    return minibatch * time_steps, subdivisions


def read_input(table: OptionTable) -> tuple[InputSpec, bool]:
    """(input shape, whether it is an image): ``height``/``width``/``channels``, or
    ``inputs`` alone as (inputs, 1, 1) that no convolution can take."""
    height = table.get_int("height", 0)
    width = table.get_int("width", 0)
    channels = table.get_int("channels", 0)
    inputs = table.get_int("inputs", height * width * channels)
    for key, value in (("height", height), ("width", width), ("channels", channels)):
        if value < 0:
            table.error(key, f"{key} must be >= 0, got {value}")
    if height > 0 and width > 0 and channels > 0:
        if inputs != height * width * channels:
            table.warning(
                "inputs",
                f"inputs={inputs} differs from height*width*channels="
                f"{height * width * channels}; the layers use height, width and channels",
            )
        return InputSpec(channels, height, width), True
    if inputs <= 0:
        table.error(
            "height",
            "no input size: set height, width and channels (or inputs) in [net] "
            '(darknet: "No input parameters supplied")',
        )
        return InputSpec(1, 1, 1), False
    return InputSpec(inputs, 1, 1), False


# [net] keys of darknet's classifier augmentation that dnupdate simulates when the data images
# are larger than the net (engine.data.darknet_augment), with darknet's defaults
AUGMENT_DEFAULTS = {"angle": 0.0, "aspect": 1.0, "saturation": 1.0, "exposure": 1.0, "hue": 0.0}
AUGMENT_NOTE = (
    "applied only when the data images are larger than the net (darknet's classifier crop "
    "and augmentation, simulated by the sampler); at the net's own size it is ignored"
)


def read_augmentation(table: OptionTable, spec: InputSpec, is_image: bool) -> DarknetAugmentSpec:
    """darknet's augmentation keys (``parse_net_options``: ``max_crop`` = 2·width,
    ``min_crop`` = width, ``max_ratio``/``min_ratio`` = crop ÷ width, ``center``, ``angle``,
    ``aspect``, ``hue``, ``saturation``, ``exposure``, all read quietly) → the spec the sampler
    applies to images larger than the net; a key set to a non-default value gets a note saying
    when it applies. ``random``, ``notruth``, ``clip`` (detection/GPU) are not applied."""
    width = spec.width if is_image else 0
    max_crop = table.get_int("max_crop", width * 2)
    min_crop = table.get_int("min_crop", width)
    ratios = (
        table.get_float("min_ratio", float32(min_crop) / float32(width)) if width else 1.0,
        table.get_float("max_ratio", float32(max_crop) / float32(width)) if width else 2.0,
    )
    values = {key: table.get_float(key, default) for key, default in AUGMENT_DEFAULTS.items()}
    center = table.get_int("center", 0)
    for key, default in {**AUGMENT_DEFAULTS, "center": 0}.items():
        if table.has(key) and (center if key == "center" else values[key]) != default:
            table.warning(key, f"{key}: {AUGMENT_NOTE}")
    for key in ("max_crop", "min_crop", "max_ratio", "min_ratio"):
        if table.has(key):
            table.warning(key, f"{key} (random crop size): {AUGMENT_NOTE}")
    for key, default in NOT_APPLIED_DEFAULTS.items():
        if key in AUGMENT_DEFAULTS or key == "center":
            continue
        value = table.get_int(key, 0) if isinstance(default, int) else table.get_float(key, 0)
        if table.has(key) and value != default:
            table.warning(key, f"{key}={value:g} is not applied by dnupdate (darknet: random "
                          "resize / detection / GPU-only); it is ignored")  # fmt: skip
    return DarknetAugmentSpec(
        width=spec.width,
        height=spec.height,
        min_ratio=float(ratios[0]),
        max_ratio=float(ratios[1]),
        center=bool(center),
        **values,
    )


def read_solver(table: OptionTable, minibatch: int, subdivisions: int) -> SolverSpec:
    """``momentum``, ``decay``, ``adam`` (``B1``/``B2``/``eps`` read only then), loop keys."""
    momentum = table.get_float("momentum", 0.9)
    decay = table.get_float("decay", 0.0001)
    adam = table.get_flag("adam")
    # dnupdate extension: adamw=1 runs torch.optim.AdamW on the per-image-mean gradient, with
    # `decay` as AdamW's decoupled λ and B1/B2/eps as its betas and ε
    adamw = table.get_flag("adamw") if table.has("adamw") else 0
    beta1, beta2, eps = float32(0.9), float32(0.999), float32(1e-7)
    if adam and adamw:
        table.error("adamw", "adam=1 and adamw=1 cannot both be set: pick one update rule")
    if adamw:
        beta1 = table.get_float("B1", beta1)
        beta2 = table.get_float("B2", beta2)
        eps = table.get_float("eps", eps)
        table.warning(
            "adamw",
            "adamw=1 is a dnupdate extension (no darknet has it): torch.optim.AdamW on the "
            "per-image-mean gradient, decay = the decoupled λ, rate not divided by batch",
        )
    elif adam:
        beta1 = table.get_float("B1", beta1)
        beta2 = table.get_float("B2", beta2)
        eps = table.get_float("eps", eps)
        table.warning(
            "adam",
            "adam=1: pjreddie darknet's CPU build silently runs SGD; dnupdate runs darknet's "
            "GPU Adam formula (rate not divided by batch, decay on every blob)",
        )
    seed = table.get_int("seed", -1) if table.has("seed") else -1
    return SolverSpec(
        semantics="darknet",
        optimizer="adamw" if adamw else "adam" if adam else "sgd",
        momentum=momentum,
        decay=decay,
        minibatch=minibatch,
        accumulate=subdivisions,
        max_iter=table.get_int("max_batches", 0),
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        momentum_style="lr_outside",
        grad_reduction="sum",
        display=1,
        random_seed=seed,
    )


def warn_unread_keys(table: OptionTable) -> None:
    """Unknown [net] keys and known keys this configuration never reads → warnings."""
    keys = list(table.first) + [k for k in table.overrides if k not in table.first]
    for key in keys:
        if key in table.used or not table.has(key):
            continue
        if key in CONDITIONAL_KEYS:
            table.warning(key, f"'{key}' is ignored: it {CONDITIONAL_KEYS[key]}")
        elif key not in KNOWN_NET_KEYS:
            close = difflib.get_close_matches(key, sorted(KNOWN_NET_KEYS), n=1, cutoff=0.75)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            table.warning(
                key,
                f"unknown [net] key '{key}' is ignored{hint}; darknet ignores unknown [net] "
                "keys silently",
            )


def net_origins(table: OptionTable) -> dict[str, Origin]:
    """Spec field path → origin of the [net] key that set it."""
    origins: dict[str, Origin] = {}
    for key, paths in NET_FIELD_PATHS.items():
        for path in paths:
            origins[path] = table.origin(key)
    return origins


def raw_values(table: OptionTable) -> dict[str, str]:
    """The [net] keys as written (first occurrence), overrides replacing them."""
    raw = {key: option.value for key, option in table.first.items() if option.value is not None}
    raw.update(table.overrides)
    return raw


def read_net(table: OptionTable) -> NetOptions:
    """Resolve a ``[net]``/``[network]`` section (its OptionTable carries the overrides)."""
    minibatch, subdivisions = read_minibatch(table)
    input_spec, is_image = read_input(table)
    augment = read_augmentation(table, input_spec, is_image)
    solver = read_solver(table, minibatch, subdivisions)
    schedule = read_schedule(table)
    table.get_str("data", None)
    if solver.max_iter == 0:
        table.warning(
            "max_batches",
            "max_batches=0: darknet trains forever; give the run another limit",
        )
    warn_unread_keys(table)
    origins = net_origins(table)
    if not is_image and table.has("inputs"):
        origins["net.input.channels"] = table.origin("inputs")
    return NetOptions(input_spec, is_image, solver, schedule, origins, raw_values(table), augment)
