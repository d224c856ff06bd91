"""Layers that read several earlier outputs: darknet ``[shortcut]`` and ``[route]``.

A layer's inputs are its ``bottoms`` (``engine.model.shapes.LayerShape.bottoms``): the chain
input first, handed to ``forward``/``backward`` as ``x``/``dx`` like any layer, the others taken
from the build context (``LayerContext.bottoms``: each producer's output and delta).

``[shortcut]`` (``shortcut_layer.c``), with ``x`` the previous layer's output and ``a`` the
``from`` layer's:

* forward: ``y = x``; ``y = alpha·y + beta·a`` over the overlap (``Backend.shortcut``); then
  the activation in place (``Backend.shortcut_forward``; the CPU fuses the three passes where
  the shapes match). darknet quirk: where the shapes differ, the cells outside the
  overlap keep ``x`` unscaled by ``alpha``;
* backward: ``delta ← delta·g(y)``; ``dx += alpha·delta`` over the WHOLE output (darknet
  quirk: even the cells forward did not scale); ``da += beta·delta`` over the overlap
  (``shortcut_cpu`` with the index map read backwards). The previous layer's delta is
  updated first, then the ``from`` layer's, as darknet does.

``[route]`` (``route_layer.c``): forward copies each source's per-image output into its
column range; backward adds each range back into the source's delta, in source order. With
AlexeyAB's ``groups``/``group_id`` each source contributes only its ``group_id``-th of
``groups`` equal per-image parts (``input + j·input_size + part·group_id``), and backward adds
into that part only.
"""

from __future__ import annotations

import math

from dnupdate.engine.model.layers.base import DarknetActivation, Layer, LayerContext, error
from dnupdate.engine.model.shapes import LayerShape
from dnupdate.engine.spec import RouteSpec, ShortcutSpec


class ShortcutLayer(Layer):
    """See the module docstring."""

    def __init__(self, shape: LayerShape, ctx: LayerContext):
        super().__init__(shape, ctx)
        spec: ShortcutSpec = shape.layer
        if len(ctx.bottoms) != 2 or ctx.bottoms[1][0] is None:
            raise error(shape, "a shortcut reads the previous layer and one earlier layer")
        self.add_output, self.add_delta = ctx.bottoms[1]
        self.alpha, self.beta = spec.alpha, spec.beta
        self.act = DarknetActivation(ctx.backend, spec.activation)

    #: set by the network (:meth:`assign_bottom` 1): backward writes the ``from`` layer's
    #: delta, which forward then does not zero (this layer is the first to reach it)
    assign_da = False

    def forward(self, x, train: bool) -> None:
        self.backend.shortcut_forward(
            x, self.add_output, self.output, self.alpha, self.beta, self.act.tail_code
        )

    def can_assign_dx(self) -> bool:
        return True  # dx += alpha·delta over the whole output (dx has the output's shape)

    def can_assign_bottom(self, position: int) -> bool:
        if position == 1:  # da += beta·delta: the whole of da only where the shapes match
            return self.add_delta is not None and self.add_delta.shape == self.delta.shape
        return super().can_assign_bottom(position)

    def assign_bottom(self, position: int) -> None:
        if position != 1:
            super().assign_bottom(position)
        elif not self.can_assign_bottom(1):
            raise ValueError(f"layer {self.name}: cannot overwrite the from layer's delta")
        else:
            self.assign_da = True

    def backward(self, x, dx) -> None:
        self.backend.shortcut_backward(
            self.output, self.delta, dx, self.add_delta, self.alpha, self.beta,
            self.act.tail_code, assign_dx=self.assign_dx, assign_da=self.assign_da,
        )  # fmt: skip


class RouteLayer(Layer):
    """See the module docstring."""

    def __init__(self, shape: LayerShape, ctx: LayerContext):
        super().__init__(shape, ctx)
        spec: RouteSpec = shape.layer
        if len(ctx.bottoms) != len(spec.sources) or any(o is None for o, _ in ctx.bottoms):
            raise error(shape, "a route reads earlier layers only")
        self.sources = ctx.bottoms
        self.group = (spec.group_id, spec.groups)
        offsets, offset = [], 0
        for output, _ in ctx.bottoms:
            offsets.append(offset)
            offset += math.prod(output.shape[1:]) // spec.groups
        self.offsets = tuple(offsets)

    def forward(self, x, train: bool) -> None:
        for (output, _), offset in zip(self.sources, self.offsets, strict=True):
            self.backend.route_copy(output, self.output, offset, *self.group)

    def backward(self, x, dx) -> None:
        for (_, delta), offset in zip(self.sources, self.offsets, strict=True):
            if delta is not None:
                self.backend.route_add(self.delta, delta, offset, *self.group)
