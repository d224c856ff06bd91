"""The variants of a sweep: the cross product of ``--grid KEY=V1,V2,…`` (× ``--seeds N``).

``KEY`` is any ``--set`` key of the config (passed on as ``--set KEY=V``), or one of our own:
``semantics`` and ``seed`` (training options), ``lr_scaling``/``lr_warmup`` (the batch-size
scaling pseudo-keys of :mod:`engine.config.scaling`), ``precision``, ``loss_scale``, … (the
mixed-precision keys of :mod:`engine.config.precision`, as ``--precision`` sets them),
``optimizer`` (Caffe: ``--set type=V``; darknet: ``sgd`` → ``adam=0``, ``adam`` → ``adam=1``,
``adamw`` → ``adamw=1``) and ``type`` (Caffe's own key). A variant's name is its grid values,
``learning_rate=0.05,batch=32``, made filesystem-safe.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from dnupdate.engine.config.key_names import optimizer_overrides

OPTION_KEYS = ("semantics", "seed")
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]")
MAX_NAME = 120


class GridError(ValueError):
    """A ``--grid``/``--seeds`` value that cannot make variants (names the option)."""


@dataclass(frozen=True)
class Variant:
    """One run of a sweep: its name, its grid values (``values``, the results' columns), the
    ``--set`` overrides it adds and the training options it changes."""

    name: str
    values: tuple[tuple[str, str], ...]
    sets: tuple[tuple[str, str], ...] = ()
    options: dict = field(default_factory=dict, hash=False, compare=False)


def parse_grid(items: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``["learning_rate=0.01,0.05", …]`` → ``[("learning_rate", ["0.01", "0.05"]), …]``."""
    grid: list[tuple[str, list[str]]] = []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        values = [v.strip() for v in text.split(",") if v.strip()]
        if not sep or not key or not values:
            raise GridError(f"--grid {item!r}: expected KEY=V1,V2,… (e.g. learning_rate=0.01,0.05)")
        if any(key == other for other, _ in grid):
            raise GridError(f"--grid {key} is given twice; list all its values in one --grid")
        if len(set(values)) != len(values):
            raise GridError(f"--grid {key}: a value is repeated ({text})")
        grid.append((key, values))
    return grid


def safe_name(values: Sequence[tuple[str, str]]) -> str:
    """``k1=v1,k2=v2`` with every character outside ``[A-Za-z0-9._=,+-]`` replaced by ``_``
    (so ``/`` cannot make sub-folders); names over 120 characters are cut and get a hash."""
    text = ",".join(f"{k}={v}" for k, v in values) or "base"
    name = _UNSAFE.sub("_", text)
    if name.startswith("."):
        name = "_" + name[1:]
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(text.encode()).hexdigest()[:10]
        name = f"{name[: MAX_NAME - 11]}-{digest}"
    return name


def _apply(key: str, value: str, framework: str, sets: list, options: dict) -> None:
    """Route one grid value to ``--set`` overrides or to training options."""
    if key == "seed":
        try:
            options["seed"] = int(value)
        except ValueError:
            raise GridError(f"--grid seed: {value!r} is not an integer") from None
    elif key == "semantics":
        if value not in ("darknet", "caffe"):
            raise GridError(f"--grid semantics: {value!r} (darknet or caffe)")
        options["semantics"] = value
    elif key == "optimizer":
        chosen = optimizer_overrides(framework, value)
        if chosen is None:
            raise GridError(f"--grid optimizer: {value!r} (a darknet cfg: sgd, adam or adamw)")
        sets.extend(chosen)
    else:
        sets.append((key, value))


def make_variants(
    grid: Sequence[tuple[str, Sequence[str]]],
    *,
    framework: str,
    seeds: int | None = None,
    base_seed: int | None = None,
) -> list[Variant]:
    """The cross product of the grid (in the order given, last key fastest) × the seeds
    ``base_seed, base_seed + 1, …`` (``base_seed`` None: 0) when ``seeds`` is given."""
    keys = [key for key, _ in grid]
    axes = [list(values) for _, values in grid]
    if seeds is not None:
        if seeds < 1:
            raise GridError("--seeds must be at least 1")
        if "seed" in keys:
            raise GridError("give either --seeds N or --grid seed=…, not both")
        keys.append("seed")
        start = base_seed or 0
        axes.append([str(start + i) for i in range(seeds)])
    variants = []
    for combination in itertools.product(*axes):
        values = tuple(zip(keys, combination, strict=True))
        sets: list[tuple[str, str]] = []
        options: dict = {}
        for key, value in values:
            _apply(key, value, framework, sets, options)
        variants.append(Variant(safe_name(values), values, tuple(sets), options))
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise GridError("two variants get the same folder name; use distinct values")
    return variants
