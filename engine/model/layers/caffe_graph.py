"""Caffe layers that read several blobs or re-label one: ``Eltwise``, ``Concat``, ``Flatten``
/``Reshape``, ``Split`` and ``Silence``.

Inputs are the layer's ``bottoms`` (``engine.model.shapes``): the first handed to
``forward``/``backward`` as ``x``/``dx``, the others taken from the build context. Backward
ADDS each bottom's gradient into its delta (Caffe writes a bottom diff and sums several
consumers' diffs in the Split it inserts; with one consumer the sum is the same float).

* ``Eltwise`` (``eltwise_layer.cpp``): SUM ``y = 0; y += c_i·x_i`` (``caffe_axpy`` in bottom
  order), ``dx_i += c_i·dy``; PROD ``y = x_0·x_1·…``, ``dx_i += dy·Π_{j≠i} x_j`` (stable) or
  ``dy·y/x_i``; MAX keeps the winning bottom's index per element (Caffe quirk: bottom 1 wins
  ties with bottom 0, later bottoms need to be strictly greater) and routes ``dy`` there.
* ``Concat`` (``concat_layer.cpp``): with ``k`` the joined per-image dim, ``outer`` the
  product of the dims before it and ``inner`` of those after, each of the ``N·outer`` rows of
  bottom ``i`` (``d_i·inner`` values) goes to columns ``offset_i·inner`` on of the top's row
  (``D·inner`` values), ``offset_i`` the sum of the earlier bottoms' ``d``; backward adds the
  same ranges back (Caffe copies them into the bottom diff; one consumer: the same floats).
* ``Flatten``/``Reshape``: the values unchanged, a new shape; ``Split``: a copy (every top
  is the same blob here; the consumers' gradients add up in its delta).
* ``Silence``: nothing forward or backward.
"""

from __future__ import annotations

import math

import numpy as np

from dnupdate.engine.model.layers.base import Layer, LayerContext
from dnupdate.engine.model.shapes import LayerShape, concat_axis
from dnupdate.engine.spec import ConcatSpec, EltwiseSpec


class _MultiInput(Layer):
    """A layer whose bottoms after the first come from the build context."""

    def __init__(self, shape: LayerShape, ctx: LayerContext):
        super().__init__(shape, ctx)
        self.others = ctx.bottoms[1:]

    def inputs(self, x) -> list:
        """Every bottom's output, in bottom order."""
        return [x, *(output for output, _ in self.others)]

    def input_deltas(self, dx) -> list:
        """Every bottom's delta (None: no gradient wanted), in bottom order."""
        return [dx, *(delta for _, delta in self.others)]


class EltwiseLayer(_MultiInput):
    """See the module docstring."""

    def __init__(self, shape: LayerShape, ctx: LayerContext):
        super().__init__(shape, ctx)
        spec: EltwiseSpec = shape.layer
        count = len(shape.bottoms)
        self.operation = spec.operation
        self.coeffs = spec.coeffs or (1.0,) * count
        self.stable = spec.stable_prod_grad
        self.mask = None
        self.scratch = None
        if self.operation == "max":
            self.mask = ctx.backend.zeros(self.output.shape, dtype=np.int32)
        if self.operation == "prod":
            self.scratch = ctx.backend.zeros(self.output.shape)

    def forward(self, x, train: bool) -> None:
        backend, inputs, out = self.backend, self.inputs(x), self.output
        if self.operation == "sum":
            backend.fill(out, 0.0)
            for value, coeff in zip(inputs, self.coeffs, strict=True):
                backend.accumulate(out, value, coeff)
        elif self.operation == "prod":
            backend.multiply(inputs[0], inputs[1], out)
            for value in inputs[2:]:
                backend.multiply(out, value, out)
        else:
            for index, value in enumerate(inputs):
                backend.eltwise_max(value, out, self.mask, index)

    def backward(self, x, dx) -> None:
        backend, inputs = self.backend, self.inputs(x)
        for index, target in enumerate(self.input_deltas(dx)):
            if target is None:
                continue
            if self.operation == "sum":
                backend.accumulate(target, self.delta, self.coeffs[index])
            elif self.operation == "max":
                backend.eltwise_max_backward(self.delta, self.mask, index, target)
            else:
                self._prod_backward(inputs, index, target)

    def _prod_backward(self, inputs: list, index: int, target) -> None:
        backend, scratch = self.backend, self.scratch
        if self.stable:
            others = [value for j, value in enumerate(inputs) if j != index]
            backend.copy(others[0], scratch)
            for value in others[1:]:
                backend.multiply(value, scratch, scratch)
        else:
            backend.divide(self.output, inputs[index], scratch)
        backend.multiply(scratch, self.delta, scratch)
        backend.accumulate(target, scratch, 1.0)


class ConcatLayer(_MultiInput):
    """See the module docstring: rows of ``N·outer`` ranges laid end to end, through the
    backend's per-row ``route_copy``/``route_add`` on ``(N·outer, d·inner)`` views."""

    def __init__(self, shape: LayerShape, ctx: LayerContext):
        super().__init__(shape, ctx)
        spec: ConcatSpec = shape.layer
        k = concat_axis(spec, shape.axes)
        out = shape.output
        outer = math.prod(out[:k])
        self.rows = ctx.batch * outer
        sizes = [math.prod(shape.input), *(math.prod(o.shape[1:]) for o, _ in self.others)]
        self.offsets: list[int] = []
        offset = 0
        for size in sizes:  # a bottom's per-image count is outer·d_i·inner; a row d_i·inner
            self.offsets.append(offset)
            offset += size // outer

    def _rows(self, array):
        """``array`` as ``(N·outer, d·inner)``: one row per concatenated range."""
        return array.reshape(self.rows, -1)

    def forward(self, x, train: bool) -> None:
        out = self._rows(self.output)
        for value, offset in zip(self.inputs(x), self.offsets, strict=True):
            self.backend.route_copy(self._rows(value), out, offset)

    def backward(self, x, dx) -> None:
        delta = self._rows(self.delta)
        for target, offset in zip(self.input_deltas(dx), self.offsets, strict=True):
            if target is not None:
                self.backend.route_add(delta, self._rows(target), offset)


class ReshapeLayer(Layer):
    """``Flatten``/``Reshape``/``Split``: a copy under a new shape; backward adds the delta
    back under the input's shape."""

    def forward(self, x, train: bool) -> None:
        self.backend.copy(x.reshape(self.output.shape), self.output)

    def backward(self, x, dx) -> None:
        if dx is not None:
            self.backend.accumulate(dx, self.delta.reshape(dx.shape), 1.0)


class SilenceLayer(Layer):
    """Caffe ``Silence``: a sink with no effect."""

    is_sink = True

    def forward(self, x, train: bool) -> None:
        """Nothing: Silence only marks its bottoms as used."""

    def backward(self, x, dx) -> None:
        """Nothing: Caffe's Silence gives its bottoms a zero diff (here: adds nothing)."""
