"""``dnupdate inspect CONFIG``: the resolved spec, where each value came from, the layer table,
the effective update rule written out with the config's numbers, and all diagnostics."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import typer

from dnupdate.cli.common import (
    EXIT_BAD_INPUT,
    clip_text,
    diagnostic_lines,
    fail,
    fail_config,
    json_option,
    lr_scaling_option,
    lr_warmup_option,
    machine_format,
    scaling_sets,
    semantics_option,
    set_option,
    stderr_console,
    stdout_console,
)
from dnupdate.cli.help_format import help_from_doc

INSPECT_HELP = help_from_doc(
    """Show the resolved config, layer shapes and the exact update rule.

Prints every setting with its origin (file:line, --set or default), the layer table (output
shape, parameters, FLOPs per image), the update rule written out with the config's own numbers,
the darknet ↔ Caffe mapping and all diagnostics.

Examples:

  dnupdate inspect configs/lenet_solver.prototxt

  dnupdate inspect configs/mnist_lenet.cfg -s batch=128 -s subdivisions=2

  dnupdate inspect configs/cifar10_quick_solver.prototxt --json | jq .layers
"""
)


def _bn_and_activation(layer) -> str:
    """The suffix conv and connected layers share: `` +BN`` and the activation unless linear."""
    bn = " +BN" if layer.batch_normalize else ""
    return bn + (f" {layer.activation}" if layer.activation != "linear" else "")


def layer_summary(layer) -> str:
    """A one-line description of a layer's settings in our own vocabulary."""
    from dnupdate.engine import spec

    if isinstance(layer, spec.ConvSpec):
        text = f"{layer.filters} {layer.kernel_h}×{layer.kernel_w}/{layer.stride_h}"
        if layer.pad_h or layer.pad_w:
            text += f" pad {layer.pad_h}" + (
                f",{layer.pad_w}" if layer.pad_w != layer.pad_h else ""
            )
        if layer.groups > 1:
            text += f" groups {layer.groups}"
        return text + _bn_and_activation(layer)
    if isinstance(layer, spec.ConnectedSpec):
        return f"{layer.outputs}{_bn_and_activation(layer)}"
    if isinstance(layer, spec.PoolSpec):
        if layer.global_pooling:
            return f"{layer.method} global"
        pad = f" pad {layer.pad_h}" if layer.pad_h else ""
        rule = {"darknet": " (total pad)", "ceil": " ceil", "floor": " floor"}[layer.size_rule]
        return f"{layer.method} {layer.kernel_h}×{layer.kernel_w}/{layer.stride_h}{pad}{rule}"
    if isinstance(layer, spec.DropoutSpec):
        return f"p={layer.probability:g} ({layer.style})"
    if isinstance(layer, spec.ActivationSpec):
        slope = f" slope {layer.negative_slope:g}" if layer.negative_slope else ""
        return f"{layer.activation}{slope}"
    if isinstance(layer, spec.SoftmaxSpec):
        extra = f" groups {layer.groups}" if layer.groups != 1 else ""
        extra += f" T={layer.temperature:g}" if layer.temperature != 1 else ""
        return f"cross-entropy{extra}" + (" (noloss)" if layer.noloss else "")
    if isinstance(layer, spec.CostSpec):
        return f"{layer.cost_type} scale {layer.scale:g}"
    if isinstance(layer, spec.SoftmaxLossSpec):
        return f"normalization {layer.normalization}"
    if isinstance(layer, spec.AccuracySpec):
        return f"top-{layer.top_k}"
    if isinstance(layer, spec.BatchNormSpec):
        return f"{layer.style}, λ={layer.moving_average_fraction:g}, eps={layer.eps:g}"
    if isinstance(layer, spec.ScaleSpec):
        return "γ, β" if layer.bias_term else "γ"
    if isinstance(layer, spec.ShortcutSpec):
        weights = (
            ""
            if (layer.alpha, layer.beta) == (1.0, 1.0)
            else (f" {layer.alpha:g}·prev + {layer.beta:g}·from")
        )
        act = f" {layer.activation}" if layer.activation != "linear" else ""
        return f"+ layer {layer.source}{weights}{act}"
    if isinstance(layer, spec.ConcatSpec):  # the axis as written (negative: from the end)
        key = "concat_dim" if layer.axis_key == "concat_dim" else "axis"
        return f"{key} {layer.axis}"
    if isinstance(layer, spec.RouteSpec):
        part = f" groups={layer.groups} group_id={layer.group_id}" if layer.groups > 1 else ""
        return "concat " + ",".join(layer.sources) + part
    if isinstance(layer, spec.ReorgSpec):
        if layer.mode == "extra":
            return f"flat copy + {layer.extra} zeros"
        way = " reverse" if layer.reverse else ""
        return f"flatten{way}" if layer.mode == "flatten" else f"/{layer.stride}{way}"
    if isinstance(layer, spec.CropSpec):
        extras = [
            "flip" if layer.flip else "",
            f"sat {layer.saturation:g}" if layer.saturation != 1 else "",
            f"exp {layer.exposure:g}" if layer.exposure != 1 else "",
            "" if layer.noadjust else "2x−1",
        ]
        return " ".join(["random crop", *filter(None, extras)])
    return ""


def input_names(shapes, shape) -> list[str]:
    """The names of the layers a layer reads (``input``: the network input), chain first."""
    return [shapes[b].layer.name if b >= 0 else "input" for b in shape.bottoms]


def settings_rows(run) -> list[tuple[str, str, str]]:
    """(field, value, origin) for every solver and schedule field of the resolved spec."""
    rows = []
    for section, obj in (("solver", run.solver), ("schedule", run.schedule)):
        for f in dataclasses.fields(obj):
            key = f"{section}.{f.name}"
            value = getattr(obj, f.name)
            origin = run.origins.get(key)
            rows.append((key, _format_value(value), str(origin) if origin else "default"))
    return rows


#: PrecisionSpec field → the key that sets it (``precision.<key>`` in ``run.origins``)
PRECISION_ORIGIN_KEYS = {
    "precision": "precision",
    "loss_scale": "loss_scale",
    "growth": "scale_growth",
    "backoff": "scale_backoff",
    "growth_interval": "scale_growth_interval",
    "master_weights": "master_weights",
}

#: per storage format: (largest finite, smallest normal, smallest subnormal, spacing at 1)
FORMAT_LIMITS = {
    "fp16": (65504.0, 2.0**-14, 2.0**-24, 2.0**-10),
    "bf16": (3.3895313892515355e38, 2.0**-126, 2.0**-133, 2.0**-7),
}


def precision_rows(run) -> list[tuple[str, str, str]]:
    """(field, value, origin) of the simulated-precision settings; none for a plain float32
    run. ``scale`` comes from ``loss_scale`` (static) or ``scale_init`` (dynamic)."""
    spec = run.precision
    if not spec.active:
        return []
    keys = dict(PRECISION_ORIGIN_KEYS)
    keys["scale"] = "scale_init" if spec.loss_scale == "dynamic" else "loss_scale"
    rows = []
    for f in dataclasses.fields(spec):
        origin = run.origins.get(f"precision.{keys[f.name]}")
        value = _format_value(getattr(spec, f.name))
        rows.append((f"precision.{f.name}", value, str(origin) if origin else "default"))
    return rows


def _n(value: float) -> str:
    """A float32 number as its shortest round-tripping text."""
    import numpy as np

    return str(np.float32(value))


def precision_lines(run, lr: float) -> list[str]:
    """The simulated precision model and the effective loss-scaling rule with the config's
    numbers (``lr``: the first update's rate), as :class:`engine.training.mixed.MixedPrecision`
    and :class:`engine.update.scaler.LossScaler` apply them."""
    import numpy as np

    spec = run.precision
    if not spec.active:
        return ["float32 throughout (no --precision, loss scale or --no-master-weights)"]
    lines = [_storage_line(spec.precision)]
    if spec.master_weights:
        lines.append(
            "master weights: the rule updates a float32 copy; forward/backward use it rounded"
        )
    else:
        lines.append(
            f"no master weights: the weights are stored in {spec.precision}; an update smaller "
            "than half the spacing at the weight is lost"
        )
    solver = run.solver
    S = np.float32(spec.scale)
    alexeyab = spec.loss_scale == "static" and (
        solver.semantics == "darknet" and solver.optimizer == "sgd"
    )
    if spec.loss_scale == "none":
        tiny = FORMAT_LIMITS.get(spec.precision, (0, 0, 0, 0))[2]
        flush = f": gradient values below {tiny:.3g} flush to zero" if tiny else ""
        lines.append(f"no loss scaling (S = 1){flush}")
    elif alexeyab:
        eta = np.float32(np.float32(lr) / S)
        batch = np.float32(solver.batch)
        decay = np.float32(np.float32(-np.float32(solver.decay) * batch) * S)
        lines += [
            f"static loss scale S = {_n(S)} (AlexeyAB darknet loss_scale): loss deltas × S; "
            "gradients stay scaled in the momentum buffer",
            f"η = lr/S = {_n(lr)}/{_n(S)} = {_n(eta)}; decay axpy −decay·batch·S = "
            f"−{_n(solver.decay)}·{solver.batch}·{_n(S)} = {_n(decay)}; step "
            f"W ← W + (η/B = {_n(np.float32(eta / batch))})·U",
            "non-finite gradient values are set to 0 (reset_nan_and_inf) and counted as overflow",
        ]
    else:
        inv = np.float32(1.0 / float(S))
        kind = "static" if spec.loss_scale == "static" else "dynamic"
        lines.append(
            f"{kind} loss scale (torch.amp.GradScaler): loss deltas × S, weight gradients × "
            f"float32(1/S) (= {_n(inv)} at S = {_n(S)}) before the {solver.optimizer} rule; an "
            "update with any non-finite gradient is skipped (weights and momentum untouched)"
        )
        if kind == "dynamic":
            lines.append(
                f"S starts at {_n(S)}; on a skipped update S ← S·{_n(spec.backoff)}; after "
                f"{spec.growth_interval} consecutive clean updates S ← S·{_n(spec.growth)}"
            )
    return lines


def _storage_line(precision: str) -> str:
    """What is rounded to the storage format, and the format's limits."""
    if precision == "fp32":
        return "storage float32: nothing is rounded"
    largest, normal, subnormal, spacing = FORMAT_LIMITS[precision]
    return (
        f"storage {precision} (max {largest:.5g}, smallest normal {normal:.3g}, smallest "
        f"subnormal {subnormal:.3g}, spacing at 1 {spacing:.3g}): weights used by "
        "forward/backward, layer outputs, deltas and weight gradients rounded to nearest even; "
        "products and sums accumulate in float32; loss, softmax, batch-norm statistics and the "
        "input stay float32"
    )


def _format_value(value: Any) -> str:
    """Floats as the shortest text that gives back the same float32 (darknet stores float32,
    so ``momentum=0.8`` shows as 0.8, not 0.800000012)."""
    if isinstance(value, float):
        import numpy as np

        return str(np.float32(value)) if np.isfinite(value) else str(value)
    if isinstance(value, tuple):
        return clip_text(",".join(_format_value(v) for v in value) or "—")
    return clip_text(str(value))


def layer_rows(run) -> list[dict[str, Any]]:
    """One dict per layer of the union of phases: shapes, parameter counts, FLOPs."""
    from dnupdate.engine.model.shapes import infer_shapes

    rows = []
    shapes = infer_shapes(run.net)
    for shape in shapes:
        layer = shape.layer
        rows.append(
            {
                "index": shape.index,
                "name": clip_text(layer.name, 80),
                "kind": layer.kind,
                "settings": layer_summary(layer),
                "phases": sorted(layer.phases),
                "input": list(shape.input),
                "inputs": input_names(shapes, shape),
                "output": list(shape.output),
                "params": shape.param_count,
                "stored": shape.stored_count,
                "flops": shape.flops,
                "origin": clip_text(str(layer.origin)),
                "blobs": [
                    {
                        "key": f"{layer.name}/{i}",
                        "name": clip_text(b.name, 80),
                        "shape": list(b.shape),
                        "learnable": b.learnable,
                        "lr_mult": b.mult.lr_mult,
                        "decay_mult": b.mult.decay_mult,
                    }
                    for i, b in enumerate(shape.blobs)
                ],
            }
        )
    return rows


def first_lr(run) -> float:
    """The first update's rate. ``lr_series`` evaluates one iteration with the schedule's own
    state (darknet ``random`` draws from a fresh glibc stream seeded with the config's seed)."""
    from dnupdate.engine.update.schedule import first_iteration, lr_series

    first = first_iteration(run.schedule)
    return float(lr_series(run.schedule, first, first)[0])


def update_rule_lines(run) -> tuple[list[str], list[str]]:
    """The effective update rule with the config's numbers (the first update's rate), and the
    darknet↔Caffe mapping."""
    from dnupdate.engine.update.rules import describe_mapping, effective_update_lines

    return effective_update_lines(run.solver, first_lr(run)), describe_mapping(run.solver)


def memory_line(run) -> tuple[str, int]:
    """One line estimating training memory (see ``engine.model.shapes``) and the byte count."""
    from dnupdate.engine.model.shapes import estimate_training_memory, format_bytes, infer_shapes

    batch = run.solver.minibatch
    estimate = estimate_training_memory(infer_shapes(run.net), batch, run.solver.optimizer)
    text = (
        f"about {format_bytes(estimate.total)} at batch {batch} (parameters, gradients and "
        f"history {format_bytes(estimate.parameters)}, activations and deltas "
        f"{format_bytes(estimate.activations)}, conv scratch {format_bytes(estimate.scratch)})"
    )
    return text, estimate.total


def _shape_text(shape: list[int]) -> str:
    c, h, w = shape
    return f"{c}" if h == 1 and w == 1 else f"{c}×{h}×{w}"


def label_shape(run) -> list[int] | None:
    """The per-image shape of the training data's labels: ``[]`` for class indices, ``[k, …]``
    for an HDF5 source's float targets; None when the source cannot be read here."""
    from dnupdate.engine.data import DataError, probe_label_shape

    source = run.data.train.source if run.data.train else None
    if not source:
        return None
    try:
        return list(probe_label_shape(source))
    except (DataError, OSError):
        return None


def _label_text(shape: list[int] | None) -> str:
    """``  label 3 (float targets)``, ``  label class index``, or nothing when unknown."""
    if shape is None:
        return ""
    if not shape:
        return "  label class index"
    return f"  label {'×'.join(map(str, shape))} (float targets)"


def _render_text(run, rows, layers, update, mapping, convention, memory, precision) -> None:
    """Config values are escaped (a layer named ``[/]`` is text, not Rich markup)."""
    from rich.markup import escape
    from rich.table import Table

    out = stdout_console()
    out.print(
        f"[bold]{escape(clip_text(run.config_path))}[/bold]  format [cyan]{run.format}[/cyan]  "
        f"semantics [cyan]{run.solver.semantics}[/cyan]  "
        f"net [cyan]{escape(clip_text(run.net.name, 80))}[/cyan]  "
        f"input {run.net.input.channels}×{run.net.input.height}×{run.net.input.width}"
        + _label_text(label_shape(run))
    )
    settings = Table(title="Resolved settings", title_justify="left", show_edge=False)
    for column in ("field", "value", "origin"):
        settings.add_column(column)
    for key, value, origin in rows:
        style = "dim" if origin == "default" else None
        settings.add_row(key, escape(value), escape(origin), style=style)
    out.print(settings)

    # a chain shows each layer's input shape; a graph (some layer reads other than the layer
    # before it) shows what each layer reads instead (--json always has both)
    graph = any(
        row["inputs"] != ([layers[i - 1]["name"]] if i else ["input"])
        for i, row in enumerate(layers)
    )
    table = Table(title="Layers", title_justify="left", show_edge=False)
    for column, justify in (
        ("#", "right"),
        ("name", "left"),
        ("type", "left"),
        ("settings", "left"),
        ("reads" if graph else "input", "left" if graph else "right"),
        ("output", "right"),
        ("params", "right"),
        ("MFLOPs/img", "right"),
    ):
        table.add_column(column, justify=justify)
    for row in layers:
        phases = row["phases"]
        phase = "" if {"train", "test"} <= set(phases) else f" [{phases[-1]}]"
        table.add_row(
            str(row["index"]),
            escape(row["name"]),
            row["kind"] + phase,
            escape(row["settings"]),
            escape(",".join(row["inputs"])) if graph else _shape_text(row["input"]),
            _shape_text(row["output"]),
            f"{row['params']:,}",
            f"{row['flops'] / 1e6:.3f}",
        )
    total_params = sum(r["params"] for r in layers)
    total_flops = sum(r["flops"] for r in layers)
    table.add_section()
    table.add_row("", "total", "", "", "", "", f"{total_params:,}", f"{total_flops / 1e6:.3f}")
    out.print(table)

    out.print("[bold]Update rule[/bold] (with this config's numbers)")
    for line in update:
        out.print(f"  {line}", highlight=False)
    out.print("[bold]Precision[/bold] (simulated; with this config's numbers)")
    for line in precision:
        out.print(f"  {line}", highlight=False, markup=False)
    out.print("[bold]darknet ↔ Caffe[/bold]")
    for line in mapping:
        out.print(f"  {line}", highlight=False)
    out.print(f"[bold]Schedule[/bold]: {convention}", highlight=False)
    out.print(f"[bold]Memory[/bold] (training): {memory}", highlight=False)
    if run.diagnostics:
        out.print(f"[bold]Diagnostics[/bold] ({len(run.diagnostics)})")
        for line in diagnostic_lines(run.diagnostics):
            out.print(f"  {line}", highlight=False, markup=False)
    else:
        out.print("[bold]Diagnostics[/bold]: none")


def inspect_command(
    config: str = typer.Argument(
        ..., metavar="CONFIG", help="darknet .cfg or Caffe solver (.prototxt/.yaml); - = stdin."
    ),
    set_: list[str] = set_option(),
    semantics: str | None = semantics_option(
        "Update rule: darknet or caffe (default: the config's)."
    ),
    output_format: str = typer.Option(
        "text", "--format", metavar="text|json", help="Output format."
    ),
    as_json: bool = json_option("Same as --format json."),
    lr_scaling: str | None = lr_scaling_option(),
    lr_warmup: int | None = lr_warmup_option(),
) -> None:
    """Show the resolved spec, layer table, update rule and diagnostics of a config."""
    from dnupdate.engine.config import load_config, parse_overrides
    from dnupdate.engine.spec import ConfigError

    if output_format not in ("text", "json"):
        raise typer.BadParameter("must be text or json", param_hint="--format")
    output_format = machine_format(as_json, output_format, "text")
    try:
        run = load_config(config, parse_overrides([*set_, *scaling_sets(lr_scaling, lr_warmup)]))
        if semantics is not None:
            run = with_semantics(run, semantics)
        rows = settings_rows(run) + precision_rows(run)
        layers = layer_rows(run)
        memory, memory_bytes = memory_line(run)
    except ConfigError as error:
        fail_config(error)
    from dnupdate.engine.update.schedule import ScheduleError, convention_note

    try:
        update, mapping = update_rule_lines(run)
        precision = precision_lines(run, first_lr(run))
    except ScheduleError as error:  # the readers reject what cannot be evaluated; a backstop
        fail(f"{run.config_path}: {error}")
    convention = convention_note(run.schedule)
    if output_format == "json":
        document = {
            "config": run.config_path,
            "format": run.format,
            "semantics": run.solver.semantics,
            "net": run.net.name,
            "input": [run.net.input.channels, run.net.input.height, run.net.input.width],
            "label_shape": label_shape(run),
            "settings": [{"field": k, "value": v, "origin": o} for k, v, o in rows],
            "layers": layers,
            "total_params": sum(r["params"] for r in layers),
            "total_flops": sum(r["flops"] for r in layers),
            "update_rule": update,
            "precision": precision,
            "mapping": mapping,
            "schedule_convention": convention,
            "memory_bytes": memory_bytes,
            "diagnostics": diagnostic_lines(run.diagnostics),
        }
        print(json.dumps(document, indent=2))
        return
    _render_text(run, rows, layers, update, mapping, convention, memory, precision)
    if any(d.severity == "error" for d in run.diagnostics):
        stderr_console().print("config has errors")
        raise typer.Exit(EXIT_BAD_INPUT)


def with_semantics(run, semantics: str):
    """The run with its update rule switched to the other framework's conventions."""
    from dnupdate.engine.update.semantics import with_semantics as solver_with

    return dataclasses.replace(run, solver=solver_with(run.solver, semantics))
