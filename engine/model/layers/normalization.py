"""Caffe ``BatchNorm`` (no affine part; running sums with a scale factor) and ``Scale``.

BatchNorm: training normalises with the batch mean and biased variance and updates
``s ← λs + 1``, ``M ← λM + μ``, ``V ← λV + m/(m−1)·var``; with ``use_global_stats`` (unset:
True outside training) it normalises with ``M/s`` and ``V/s``. Scale: ``y = γ·x (+ β)``.
"""

from __future__ import annotations

from dnupdate.engine.backends.base import CaffeBNState
from dnupdate.engine.model.layers.base import Layer, LayerContext, error
from dnupdate.engine.model.shapes import LayerShape
from dnupdate.engine.spec import BatchNormSpec, ScaleSpec


def _per_channel(array, batch: int, channels: int):
    return array.reshape(batch, channels, -1)


class BatchNormLayer(Layer):
    """See the module docstring."""

    def __init__(self, shape: LayerShape, ctx: LayerContext):
        spec: BatchNormSpec = shape.layer
        if spec.style == "darknet":
            raise error(
                shape,
                "darknet's standalone [batchnorm] is unusable on darknet's CPU path (it writes "
                "through unallocated buffers); use batch_normalize=1 in the conv/connected layer",
            )
        super().__init__(shape, ctx)
        channels = shape.input[0]
        backend = ctx.backend
        self.out3 = _per_channel(self.output, ctx.batch, channels)
        self.delta3 = _per_channel(self.delta, ctx.batch, channels)
        self.shape3 = self.out3.shape
        self.state = CaffeBNState(
            mean_sum=ctx.params["mean"],
            variance_sum=ctx.params["variance"],
            scale_factor=ctx.params["scale_factor"],
            mean=backend.zeros((channels,)),
            std=backend.zeros((channels,)),
            moving_average_fraction=spec.moving_average_fraction,
            eps=spec.eps,
        )
        self.use_global_stats = spec.use_global_stats
        self.global_now = False

    def forward(self, x, train: bool) -> None:
        ugs = self.use_global_stats
        self.global_now = (not train) if ugs is None else ugs
        self.backend.caffe_bn_forward(
            x.reshape(self.shape3), self.out3, self.state, self.global_now
        )

    def backward(self, x, dx) -> None:
        if dx is not None:
            self.backend.caffe_bn_backward(
                self.out3, self.delta3, dx.reshape(self.shape3), self.state, self.global_now
            )


class ScaleLayer(Layer):
    """See the module docstring. ``γ`` and ``β`` gradients accumulate (times ``grad_alpha``)."""

    def __init__(self, shape: LayerShape, ctx: LayerContext):
        super().__init__(shape, ctx)
        spec: ScaleSpec = shape.layer
        channels = shape.input[0]
        self.out3 = _per_channel(self.output, ctx.batch, channels)
        self.delta3 = _per_channel(self.delta, ctx.batch, channels)
        self.shape3 = self.out3.shape
        self.gamma = ctx.params["gamma"]
        self.dgamma = ctx.grads["gamma"]
        self.beta = ctx.params.get("beta") if spec.bias_term else None
        self.dbeta = ctx.grads.get("beta") if spec.bias_term else None

    def forward(self, x, train: bool) -> None:
        self.backend.scale_forward(x.reshape(self.shape3), self.out3, self.gamma, self.beta)

    def backward(self, x, dx) -> None:
        self.backend.scale_backward(
            x.reshape(self.shape3),
            self.delta3,
            None if dx is None else dx.reshape(self.shape3),
            self.gamma,
            self.dgamma,
            self.dbeta,
            self.grad_alpha,
        )
