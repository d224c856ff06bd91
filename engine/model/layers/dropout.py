"""Dropout (darknet ``[dropout]`` in place; Caffe ``Dropout``): inverted dropout with
``scale = 1/(1 − p)``, identity at inference.

darknet quirk: the layer's output and delta ARE the previous layer's (the parser aliases them),
so the mask is applied in place and the previous layer's activation gradient later sees the
dropped, scaled values. One uniform draw per element in flat order on every training forward.
"""

from __future__ import annotations

import numpy as np

from dnupdate.engine.model.layers.base import Layer, LayerContext, error
from dnupdate.engine.model.shapes import LayerShape
from dnupdate.engine.spec import DropoutSpec


class DropoutLayer(Layer):
    """See the module docstring. ``uniforms`` keeps this pass's draws for backward."""

    def __init__(self, shape: LayerShape, ctx: LayerContext):
        spec: DropoutSpec = shape.layer
        self.in_place = spec.style == "darknet"
        if self.in_place and ctx.source_output is None:
            raise error(shape, "darknet dropout cannot be the first layer (it works in place)")
        super().__init__(shape, ctx)
        if self.in_place:
            self.output = ctx.source_output
            self.delta = ctx.source_delta
        self.probability = spec.probability
        self.style = spec.style
        self.draw = ctx.uniforms
        self.count = self.output.size
        self.uniforms = ctx.backend.zeros((self.count,))
        self.mask = ctx.backend.zeros((self.count,), dtype=np.uint32)
        self.trained = False

    def forward(self, x, train: bool) -> None:
        self.trained = train
        if not train:
            if not self.in_place:
                self.backend.copy(x, self.output)
            return
        self.backend.copy_from_host(self.draw(self.count), self.uniforms)
        self.backend.dropout_forward(
            x, self.output, self.uniforms, self.mask, self.probability, self.style
        )

    def backward(self, x, dx) -> None:
        if dx is None:
            return
        if not self.trained:
            if not self.in_place:
                self.backend.accumulate(dx, self.delta, 1.0)
            return
        self.backend.dropout_backward(
            self.delta, dx, self.uniforms, self.mask, self.probability, self.style
        )
