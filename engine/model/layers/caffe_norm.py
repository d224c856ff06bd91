"""Caffe ``LRN``, ``Power`` and ``Softmax`` (as a layer), on ``Backend`` kernels.

``LRN`` ACROSS_CHANNELS is ``lrn_layer.cpp``'s own loop (``Backend.lrn_forward``/
``lrn_backward``). WITHIN_CHANNEL is Caffe's composition, step by step with its rounding:
``sq = x²`` (Power 2), ``pooled = AVE pool(sq, size, pad (size−1)/2, stride 1)`` (padded cells
count in the divisor), ``pw = (1 + alpha·pooled)^-beta`` (Power; Caffe quirk: ``k`` is not
used in this mode), ``y = x·pw`` (Eltwise PROD); backward through the same steps, the two
paths into ``x`` added as Caffe's internal Split does.
"""

from __future__ import annotations

from dnupdate.engine.model.layers.base import Layer, LayerContext
from dnupdate.engine.model.shapes import LayerShape
from dnupdate.engine.spec import LRNSpec, PowerSpec


def _bcs(array, batch: int, channels: int):
    return array.reshape(batch, channels, -1)


class LRNLayer(Layer):
    """See the module docstring."""

    def __init__(self, shape: LayerShape, ctx: LayerContext):
        super().__init__(shape, ctx)
        spec: LRNSpec = shape.layer
        self.size, self.alpha, self.beta, self.k = spec.local_size, spec.alpha, spec.beta, spec.k
        self.region = spec.region
        zeros = ctx.backend.zeros
        full = self.output.shape
        self.scale = zeros(full)
        if self.region == "within":
            self.sq, self.pooled = zeros(full), zeros(full)
            self.d_pw, self.d_pooled, self.d_sq = zeros(full), zeros(full), zeros(full)
            pad = (self.size - 1) // 2
            self.window = ((self.size, self.size), (1, 1), (pad, pad))

    def _view(self, array):
        return _bcs(array, self.batch, self.shape.output[0])

    def forward(self, x, train: bool) -> None:
        backend = self.backend
        if self.region == "across":
            backend.lrn_forward(
                self._view(x), self._view(self.scale), self._view(self.output), self.size,
                self.alpha, self.beta, self.k,
            )  # fmt: skip
            return
        backend.power_forward(x, self.sq, 2.0, 1.0, 0.0)
        backend.avepool_forward(self.sq, self.pooled, *self.window)
        backend.power_forward(self.pooled, self.scale, -self.beta, self.alpha, 1.0)
        backend.multiply(x, self.scale, self.output)

    def backward(self, x, dx) -> None:
        if dx is None:
            return
        backend = self.backend
        if self.region == "across":
            backend.lrn_backward(
                self._view(x), self._view(self.output), self._view(self.scale),
                self._view(self.delta), self._view(dx), self.size, self.alpha, self.beta,
            )  # fmt: skip
            return
        backend.multiply(self.delta, x, self.d_pw)  # product → the power output's diff
        for buffer in (self.d_pooled, self.d_sq):
            backend.fill(buffer, 0.0)
        backend.power_backward(
            self.pooled, self.scale, self.d_pw, self.d_pooled, -self.beta, self.alpha, 1.0
        )
        backend.avepool_backward(self.d_pooled, self.d_sq, *self.window)
        backend.multiply(self.delta, self.scale, self.d_pw)  # product → x's diff
        backend.power_backward(x, self.sq, self.d_sq, self.d_pw, 2.0, 1.0, 0.0)
        backend.accumulate(dx, self.d_pw, 1.0)


class PowerLayer(Layer):
    """Caffe ``Power``: ``y = (shift + scale·x)^power``; backward by Caffe's cases."""

    def __init__(self, shape: LayerShape, ctx: LayerContext):
        super().__init__(shape, ctx)
        spec: PowerSpec = shape.layer
        self.args = (spec.power, spec.scale, spec.shift)

    def forward(self, x, train: bool) -> None:
        self.backend.power_forward(x, self.output, *self.args)

    def backward(self, x, dx) -> None:
        if dx is not None:
            self.backend.power_backward(x, self.output, self.delta, dx, *self.args)


class CaffeSoftmaxLayer(Layer):
    """Caffe ``Softmax`` over the channels at each position."""

    def _view(self, array):
        return _bcs(array, self.batch, self.shape.output[0])

    def forward(self, x, train: bool) -> None:
        self.backend.caffe_softmax_forward(self._view(x), self._view(self.output))

    def backward(self, x, dx) -> None:
        if dx is not None:
            self.backend.caffe_softmax_backward(
                self._view(self.output), self._view(self.delta), self._view(dx)
            )
