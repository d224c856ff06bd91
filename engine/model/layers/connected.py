"""Fully connected layer (darknet ``[connected]`` with optional batch norm and activation;
Caffe ``InnerProduct``): ``y = x·Wᵀ + b`` with ``W (outputs, inputs)``, input flattened CHW.

Backward: activation gradient (darknet, from the output), BN backward or ``Σ_b delta`` into the
bias gradient, ``dW += alpha·deltaᵀ·x``, ``dx += delta·W``.
"""

from __future__ import annotations

from dnupdate.engine.model.layers.base import (
    DarknetActivation,
    DarknetEpilogue,
    Layer,
    LayerContext,
    darknet_bn_state,
)
from dnupdate.engine.model.shapes import LayerShape
from dnupdate.engine.spec import ConnectedSpec


class ConnectedLayer(DarknetEpilogue, Layer):
    """See the module docstring."""

    def __init__(self, shape: LayerShape, ctx: LayerContext):
        super().__init__(shape, ctx)
        spec: ConnectedSpec = shape.layer
        batch, inputs, outputs = ctx.batch, shape.inputs, spec.outputs
        backend = ctx.backend
        self.in_shape = (batch, inputs)
        self.weights = ctx.params["weights"]
        self.weights_t = self.weights.T
        self.dweights = ctx.grads["weights"]
        self.wgrad_scratch = backend.zeros((outputs, inputs))
        self.dx_scratch = backend.zeros((batch, inputs))
        bias_name = "biases" if spec.param_order == "darknet" else "bias"
        self.bias = ctx.params.get(bias_name)
        self.dbias = ctx.grads.get(bias_name)
        self.out2 = self.output.reshape(batch, outputs)
        self.out3 = self.output.reshape(batch, outputs, 1)
        self.delta2 = self.delta.reshape(batch, outputs)
        self.delta3 = self.delta.reshape(batch, outputs, 1)
        self.delta2_t = self.delta2.T
        self.bn = darknet_bn_state(ctx, outputs, self.out3.shape) if spec.batch_normalize else None
        self.act = DarknetActivation(backend, spec.activation)

    def can_assign_dx(self) -> bool:
        return True

    def forward(self, x, train: bool) -> None:
        product = self.pre_bn_output(train)
        in_x = product is not self.out3
        target = product.reshape(self.out2.shape) if in_x else self.out2
        self.backend.matmul(x.reshape(self.in_shape), self.weights_t, target)
        self.epilogue_forward(train, in_x=in_x)

    def backward(self, x, dx) -> None:
        backend = self.backend
        alpha = self.grad_alpha
        self.epilogue_backward()
        x2 = x.reshape(self.in_shape)
        backend.matmul_add(self.delta2_t, x2, self.dweights, self.wgrad_scratch, alpha)
        if dx is None:
            return
        if self.assign_dx:  # dx = delta·W, no zeroed delta to add into
            backend.matmul(self.delta2, self.weights, dx.reshape(self.in_shape))
        else:
            backend.matmul_add(
                self.delta2, self.weights, dx.reshape(self.in_shape), self.dx_scratch, 1.0
            )
