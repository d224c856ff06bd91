"""Pooling layer: max (darknet ``[maxpool]`` and Caffe MAX) and average (darknet global
``[avgpool]``, Caffe AVE with its divisor rule, ``global_pooling``).

Window sizes, offsets and output sizes come from :func:`engine.model.shapes.pool_geometry`.
"""

from __future__ import annotations

import numpy as np

from dnupdate.engine.model.layers.base import Layer, LayerContext
from dnupdate.engine.model.shapes import LayerShape, pool_geometry
from dnupdate.engine.spec import PoolSpec


class PoolLayer(Layer):
    """See the module docstring. Max pooling keeps the argmax (int32 plane index) for backward."""

    def __init__(self, shape: LayerShape, ctx: LayerContext):
        super().__init__(shape, ctx)
        spec: PoolSpec = shape.layer
        kh, kw, off_h, off_w, _, _ = pool_geometry(spec, *shape.input)
        self.kernel = (kh, kw)
        self.stride = (1, 1) if spec.global_pooling else (spec.stride_h, spec.stride_w)
        self.offset = (off_h, off_w)
        self.is_max = spec.method == "max"
        self.argmax = (
            ctx.backend.zeros((ctx.batch, *shape.output), dtype=np.int32) if self.is_max else None
        )

    def forward(self, x, train: bool) -> None:
        if self.is_max:
            self.backend.maxpool_forward(
                x, self.output, self.argmax, self.kernel, self.stride, self.offset
            )
        else:
            self.backend.avepool_forward(x, self.output, self.kernel, self.stride, self.offset)

    def can_assign_dx(self) -> bool:
        return self.is_max and self.backend.maxpool_assigns_dx

    def backward(self, x, dx) -> None:
        if dx is None:
            return
        if self.is_max and self.assign_dx:
            self.backend.maxpool_backward(self.delta, self.argmax, dx, assign=True)
        elif self.is_max:
            self.backend.maxpool_backward(self.delta, self.argmax, dx)
        else:
            self.backend.avepool_backward(self.delta, dx, self.kernel, self.stride, self.offset)
