"""Standalone activation layer (Caffe ``ReLU`` with ``negative_slope``, ``Sigmoid``, ``TanH``).

``y = f(x)`` into its own buffer; backward ``dx = dy·f'`` (ReLU from the input, Sigmoid and
TanH from the output, as Caffe).
"""

from __future__ import annotations

from dnupdate.engine.backends.base import BackendError
from dnupdate.engine.model.layers.base import Layer, LayerContext, error
from dnupdate.engine.model.shapes import LayerShape
from dnupdate.engine.spec import ActivationSpec


class ActivationLayer(Layer):
    """See the module docstring."""

    def __init__(self, shape: LayerShape, ctx: LayerContext):
        super().__init__(shape, ctx)
        spec: ActivationSpec = shape.layer
        if spec.activation not in ("relu", "logistic", "tanh"):
            raise error(shape, f"activation {spec.activation!r} must be relu, logistic or tanh")
        self.activation = spec.activation
        self.negative_slope = spec.negative_slope

    def forward(self, x, train: bool) -> None:
        try:
            self.backend.caffe_activation_forward(
                x, self.output, self.activation, self.negative_slope
            )
        except BackendError as exc:
            raise error(self.shape, str(exc)) from exc

    def backward(self, x, dx) -> None:
        if dx is not None:
            self.backend.caffe_activation_backward(
                x, self.output, self.delta, dx, self.activation, self.negative_slope
            )
