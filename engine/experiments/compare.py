"""``dnupdate compare``: several variants of one config trained in lockstep, from the same
initial parameters and on the same batches in the same order, with the distance between their
trajectories after every update.

Each variant is a :class:`engine.training.session.TrainingSession` (no run folder) of the
config with its own ``--semantics``/``--set``/``--lr-scaling``/``--lr-warmup``. The first
variant draws the batches; the others are handed copies of the same batches, so they must take
the same images per pass and passes per update. Their parameters start as copies of the first
variant's. After each update the distance of variant v to the first variant a is
``‖θ_a − θ_v‖ / ‖θ_a‖`` over each layer's learnable blobs (and over the whole net), in float64
on host copies. ``parted_at``: the first update where the whole-net distance exceeds
:data:`PARTED` (float32 rounding alone keeps it far below that while the rules agree).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dnupdate.engine.experiments.sweep import SweepEvent

#: relative whole-net distance above which two trajectories count as parted
PARTED = 1e-4


class CompareError(ValueError):
    """A ``--variant`` that cannot be compared (bad options, another batch or net)."""


@dataclass(frozen=True)
class CompareVariant:
    """``NAME='OPTIONS'``: its ``--set`` pairs and training options."""

    name: str
    sets: tuple[tuple[str, str], ...] = ()
    options: dict = field(default_factory=dict, hash=False, compare=False)


def _value(tokens: list[str], i: int, flag: str) -> str:
    if i + 1 >= len(tokens):
        raise CompareError(f"{flag} needs a value")
    return tokens[i + 1]


def parse_variant(text: str) -> CompareVariant:
    """``darknet='--semantics darknet --set learning_rate=0.01'`` → CompareVariant. Known:
    ``--semantics``, ``--set``/``-s``, ``--lr-scaling``, ``--lr-warmup``."""
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise CompareError(f"--variant {text!r}: expected NAME='OPTIONS'")
    try:
        tokens = shlex.split(rest)
    except ValueError as exc:
        raise CompareError(f"--variant {name}: {exc}") from None
    sets: list[tuple[str, str]] = []
    options: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        flag = tokens[i]
        value = _value(tokens, i, flag)
        if flag == "--semantics":
            if value not in ("darknet", "caffe"):
                raise CompareError(f"--variant {name}: --semantics {value!r} (darknet or caffe)")
            options["semantics"] = value
        elif flag in ("--set", "-s"):
            key, eq, val = value.partition("=")
            if not eq or not key:
                raise CompareError(f"--variant {name}: --set {value!r}: expected KEY=VALUE")
            sets.append((key.strip(), val.strip()))
        elif flag in ("--lr-scaling", "--lr-warmup"):
            sets.append((flag[2:].replace("-", "_"), value))
        else:
            raise CompareError(
                f"--variant {name}: {flag!r} is not a per-variant option (--semantics, --set, "
                "--lr-scaling, --lr-warmup)"
            )
        i += 2
    return CompareVariant(name, tuple(sets), options)


class _Replay:
    """The first variant's batches, recorded per update and replayed to the others."""

    def __init__(self, source) -> None:
        self.source = source
        self.recorded: list[tuple[np.ndarray, np.ndarray]] = []
        self.position = 0

    def draw(self):
        images, labels = self.source()
        self.recorded.append((images.copy(), labels.copy()))
        return images, labels

    def replay(self):
        if self.position >= len(self.recorded):
            raise CompareError("a variant asked for more batches per update than the first")
        batch = self.recorded[self.position]
        self.position += 1
        return batch

    def next_update(self) -> None:
        self.recorded.clear()
        self.position = 0


def _layer_index(segments) -> dict[str, list[tuple[int, int]]]:
    """Layer → ``[(offset, size)]`` of its learnable blobs, in segment order."""
    layers: dict[str, list[tuple[int, int]]] = {}
    for segment in segments:
        if segment.learnable:
            layers.setdefault(segment.layer, []).append((segment.offset, segment.size))
    return layers


def distances(a: np.ndarray, b: np.ndarray, layers: dict[str, list]) -> dict[str, float]:
    """``‖a − b‖/‖a‖`` per layer and over all layers (``"net"``), in float64 (0 when
    ``‖a‖ = 0`` and a = b, inf when only ``‖a‖ = 0``)."""
    out: dict[str, float] = {}
    total_diff = total_ref = 0.0
    for name, spans in layers.items():
        diff = ref = 0.0
        for offset, size in spans:
            x = a[offset : offset + size].astype(np.float64)
            y = b[offset : offset + size].astype(np.float64)
            diff += float(np.sum((x - y) ** 2))
            ref += float(np.sum(x * x))
        out[name] = _ratio(diff, ref)
        total_diff += diff
        total_ref += ref
    out["net"] = _ratio(total_diff, total_ref)
    return out


def _ratio(diff: float, ref: float) -> float:
    if ref > 0:
        return float(np.sqrt(diff / ref))
    return 0.0 if diff == 0 else float("inf")


def _sessions(config: str, variants, sets, options):
    from dnupdate.engine.config import load_config
    from dnupdate.engine.training.session import TrainingSession, TrainOptions

    sessions = []
    for variant in variants:
        own = {k for k, _ in variant.sets}
        overrides = [p for p in sets if p[0] not in own] + list(variant.sets)
        run = load_config(config, overrides)
        sessions.append(TrainingSession(run, TrainOptions(**{**options, **variant.options})))
    first = sessions[0].trainer
    for variant, session in zip(variants[1:], sessions[1:], strict=True):
        trainer = session.trainer
        if (trainer.minibatch, trainer.accumulate) != (first.minibatch, first.accumulate):
            raise CompareError(
                f"--variant {variant.name}: {trainer.minibatch} images × {trainer.accumulate} "
                f"passes per update, the first variant {first.minibatch} × {first.accumulate}: "
                "compared variants must see the same batches"
            )
        keys = [(s.key, s.shape) for s in trainer.network.segments]
        if keys != [(s.key, s.shape) for s in first.network.segments]:
            raise CompareError(f"--variant {variant.name}: another network than the first")
    return sessions


def compare_runs(
    config: str,
    variants: Sequence[CompareVariant],
    *,
    sets: Sequence[tuple[str, str]] = (),
    options: dict | None = None,
    stop=lambda: None,
) -> Iterator[SweepEvent]:
    """Train the variants in lockstep; yields ``compare_started``, one ``compare_step`` per
    update (``losses``, ``lrs``, ``distances`` per variant against the first), and
    ``compare_finished`` (``parted_at``, ``max_distance``, ``status``)."""
    if len(variants) < 2:
        raise CompareError("give at least two --variant NAME='OPTIONS'")
    if len({v.name for v in variants}) != len(variants):
        raise CompareError("--variant names must differ")
    sessions = _sessions(config, list(variants), list(sets), dict(options or {}))
    trainers = [s.trainer for s in sessions]
    backend = sessions[0].backend
    start = backend.to_host(trainers[0].network.params)
    for session, trainer in zip(sessions[1:], trainers[1:], strict=True):
        session.backend.copy_from_host(start, trainer.network.params)
    layers = _layer_index(trainers[0].network.segments)
    max_iter = min(s.max_iter for s in sessions)
    names = [v.name for v in variants]
    yield SweepEvent("compare_started", data={
        "variants": names, "layers": list(layers), "max_iter": max_iter,
        "semantics": [s.semantics for s in sessions],
    })  # fmt: skip
    parted: dict[str, int | None] = dict.fromkeys(names[1:])
    largest = dict.fromkeys(names[1:], 0.0)
    replay = _Replay(sessions[0].train_sampler.next_batch)
    status = "done"
    while trainers[0].iteration < max_iter:
        if stop():
            status = "interrupted"
            break
        replay.next_update()
        results = [trainers[0].train_iteration(replay.draw)]
        results += [t.train_iteration(replay.replay) for t in trainers[1:]]
        reference = backend.to_host(trainers[0].network.params)
        step = {"iteration": results[0].iteration, "losses": {}, "lrs": {}, "distances": {}}
        for name, result in zip(names, results, strict=True):
            step["losses"][name], step["lrs"][name] = result.loss, result.lr
        for name, session, trainer in zip(names[1:], sessions[1:], trainers[1:], strict=True):
            d = distances(reference, session.backend.to_host(trainer.network.params), layers)
            step["distances"][name] = d
            largest[name] = max(largest[name], d["net"])
            if parted[name] is None and d["net"] > PARTED:
                parted[name] = results[0].iteration
        yield SweepEvent("compare_step", data=step)
        bad = [n for n, r in zip(names, results, strict=True) if r.non_finite is not None]
        if bad:
            status = f"diverged ({', '.join(bad)})"
            break
    yield SweepEvent("compare_finished", data={
        "status": status, "iteration": trainers[0].iteration, "parted_at": parted,
        "max_distance": largest, "threshold": PARTED,
    })  # fmt: skip


def step_row(step: dict[str, Any]) -> dict[str, Any]:
    """One ``compare.csv`` row: ``iteration``, ``loss_<v>`` and ``lr_<v>`` per variant,
    ``dist_<v>`` (whole net) and ``dist_<v>_<layer>`` per later variant."""
    out: dict[str, Any] = {"iteration": step["iteration"]}
    for name, loss in step["losses"].items():
        out[f"loss_{name}"] = loss
    for name, lr in step["lrs"].items():
        out[f"lr_{name}"] = lr
    for name, per_layer in step["distances"].items():
        out[f"dist_{name}"] = per_layer["net"]
        for layer, value in per_layer.items():
            if layer != "net":
                out[f"dist_{name}_{layer}"] = value
    return out


def write_compare(folder, rows: Sequence[dict[str, Any]], events: Sequence[SweepEvent]) -> None:
    """``DIR/compare.csv`` (one row per update) and ``DIR/compare.jsonl`` (the events),
    written atomically."""
    import csv
    import io
    import json
    from pathlib import Path

    from dnupdate.engine.training.events import json_value
    from dnupdate.engine.training.runfolder import write_text

    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    write_text(path / "compare.csv", buffer.getvalue())
    lines = "".join(json.dumps(json_value(e.to_json())) + "\n" for e in events)
    write_text(path / "compare.jsonl", lines)
