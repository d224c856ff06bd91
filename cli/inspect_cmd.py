"""``dnupdate inspect CONFIG``: the resolved spec, where each value came from, the layer table,
the effective update rule written out with the config's numbers, and all diagnostics."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import typer

from cli.common import (
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
from cli.help_format import help_from_doc

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
    from engine import spec

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
    if isinstance(layer, spec.RouteSpec):
        return "concat " + ",".join(layer.sources)
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
    from engine.model.shapes import infer_shapes

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


def update_rule_lines(run) -> tuple[list[str], list[str]]:
    """The effective update rule with the config's numbers (the first update's rate), and the
    darknet↔Caffe mapping. ``lr_series`` evaluates one iteration with the schedule's own state
    (darknet ``random`` draws from a fresh glibc stream seeded with the config's seed)."""
    from engine.update.rules import describe_mapping, effective_update_lines
    from engine.update.schedule import first_iteration, lr_series

    first = first_iteration(run.schedule)
    lr = float(lr_series(run.schedule, first, first)[0])
    return effective_update_lines(run.solver, lr), describe_mapping(run.solver)


def memory_line(run) -> tuple[str, int]:
    """One line estimating training memory (see ``engine.model.shapes``) and the byte count."""
    from engine.model.shapes import estimate_training_memory, format_bytes, infer_shapes

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


def _render_text(run, rows, layers, update, mapping, convention, memory) -> None:
    """Config values are escaped (a layer named ``[/]`` is text, not Rich markup)."""
    from rich.markup import escape
    from rich.table import Table

    out = stdout_console()
    out.print(
        f"[bold]{escape(clip_text(run.config_path))}[/bold]  format [cyan]{run.format}[/cyan]  "
        f"semantics [cyan]{run.solver.semantics}[/cyan]  "
        f"net [cyan]{escape(clip_text(run.net.name, 80))}[/cyan]  "
        f"input {run.net.input.channels}×{run.net.input.height}×{run.net.input.width}"
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
    from engine.config import load_config, parse_overrides
    from engine.spec import ConfigError

    if output_format not in ("text", "json"):
        raise typer.BadParameter("must be text or json", param_hint="--format")
    output_format = machine_format(as_json, output_format, "text")
    try:
        run = load_config(config, parse_overrides([*set_, *scaling_sets(lr_scaling, lr_warmup)]))
        if semantics is not None:
            run = with_semantics(run, semantics)
        rows = settings_rows(run)
        layers = layer_rows(run)
        memory, memory_bytes = memory_line(run)
    except ConfigError as error:
        fail_config(error)
    from engine.update.schedule import ScheduleError, convention_note

    try:
        update, mapping = update_rule_lines(run)
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
            "settings": [{"field": k, "value": v, "origin": o} for k, v, o in rows],
            "layers": layers,
            "total_params": sum(r["params"] for r in layers),
            "total_flops": sum(r["flops"] for r in layers),
            "update_rule": update,
            "mapping": mapping,
            "schedule_convention": convention,
            "memory_bytes": memory_bytes,
            "diagnostics": diagnostic_lines(run.diagnostics),
        }
        print(json.dumps(document, indent=2))
        return
    _render_text(run, rows, layers, update, mapping, convention, memory)
    if any(d.severity == "error" for d in run.diagnostics):
        stderr_console().print("config has errors")
        raise typer.Exit(EXIT_BAD_INPUT)


def with_semantics(run, semantics: str):
    """The run with its update rule switched to the other framework's conventions."""
    from engine.update.semantics import with_semantics as solver_with

    return dataclasses.replace(run, solver=solver_with(run.solver, semantics))
