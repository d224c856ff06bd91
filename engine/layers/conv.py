"""Convolution layer (darknet ``[convolutional]`` with its batch norm and activation; Caffe
``Convolution``).

Forward per image and group: ``y = W_g · im2col(x_g)`` (BLAS), then darknet batch norm (the
biases are the BN shift) or ``+ bias``, then darknet's activation in place. Backward: activation
gradient from the output, BN backward or ``Σ delta`` into the bias gradient,
``dW_g += Σ_images delta_g · colᵀ``, and ``dx += col2im(W_gᵀ · delta_g)``.
"""

from __future__ import annotations

from engine.layers.base import (
    DarknetActivation,
    Layer,
    LayerContext,
    darknet_bn_state,
)
from engine.shapes import LayerShape
from engine.spec import ConvSpec


class ConvLayer(Layer):
    """See the module docstring. ``col`` (``(B, G, K, N)``) is kept from forward to backward."""

    def __init__(self, shape: LayerShape, ctx: LayerContext):
        super().__init__(shape, ctx)
        spec: ConvSpec = shape.layer
        batch, (c, h, w), (f, oh, ow) = ctx.batch, shape.input, shape.output
        groups = spec.groups
        self.k = (c // groups) * spec.kernel_h * spec.kernel_w
        self.n = oh * ow
        m = f // groups
        self.geometry = (
            (spec.kernel_h, spec.kernel_w),
            (spec.stride_h, spec.stride_w),
            (spec.pad_h, spec.pad_w),
            spec.dilation,
            (oh, ow),
        )
        self.col_shape = (batch, groups, self.k, self.n)
        one_by_one = spec.kernel_h == 1 and spec.kernel_w == 1
        steps = (spec.stride_h, spec.stride_w, spec.pad_h, spec.pad_w)
        plain = one_by_one and steps == (1, 1, 0, 0)
        # a 1×1 stride-1 unpadded conv reads the input itself as the column matrix
        self.col_is_input = plain and (h, w) == (oh, ow)
        # darknet quirk: its CPU 1×1 shortcut ignores stride and padding (garbage, but kept)
        self.flat_quirk = spec.darknet_1x1_shortcut and one_by_one and not self.col_is_input
        backend = ctx.backend
        self.col = None if self.col_is_input else backend.zeros(self.col_shape)
        self.weights = ctx.params["weights"].reshape(groups, m, self.k)
        self.weights_t = self.weights.swapaxes(1, 2)
        self.dweights = ctx.grads["weights"].reshape(groups, m, self.k)
        self.wgrad_stack = backend.zeros((batch, groups, m, self.k))
        self.wgrad_sum = backend.zeros((groups, m, self.k))
        bias_name = "biases" if spec.param_order == "darknet" else "bias"
        self.bias = ctx.params.get(bias_name)
        self.dbias = ctx.grads.get(bias_name)
        self.out4 = self.output.reshape(batch, groups, m, self.n)
        self.out3 = self.output.reshape(batch, f, self.n)
        self.delta4 = self.delta.reshape(batch, groups, m, self.n)
        self.delta3 = self.delta.reshape(batch, f, self.n)
        self.bn = darknet_bn_state(ctx, f, self.out3.shape) if spec.batch_normalize else None
        self.act = DarknetActivation(backend, spec.activation)
        self.col_delta = None

    def workspace_size(self) -> int:
        return self.col_shape[0] * self.col_shape[1] * self.k * self.n

    def bind_workspace(self, workspace) -> None:
        size = self.workspace_size()
        self.col_delta = workspace[:size].reshape(self.col_shape)

    def _columns(self, x):
        if self.col_is_input:
            return x.reshape(self.col_shape)
        if self.flat_quirk:
            self.backend.flat_as_col(x, self.col)
        else:
            self.backend.im2col(x, self.col, *self.geometry)
        return self.col

    def forward(self, x, train: bool) -> None:
        backend = self.backend
        col = self._columns(x)
        backend.matmul(self.weights, col, self.out4)
        if self.bn is not None:
            backend.darknet_bn_forward(self.out3, self.bn, train)
        elif self.bias is not None:
            backend.bias_add(self.out3, self.bias)
        self.act.forward(self.output)

    def backward(self, x, dx) -> None:
        backend = self.backend
        alpha = self.grad_alpha
        self.act.backward(self.output, self.delta)
        if self.bn is not None:
            backend.darknet_bn_backward(self.delta3, self.bn, alpha)
        elif self.bias is not None:
            backend.bias_grad(self.delta3, self.dbias, alpha)
        col = x.reshape(self.col_shape) if self.col_is_input else self.col
        backend.matmul(self.delta4, col.swapaxes(2, 3), self.wgrad_stack)
        backend.sum_leading_add(self.wgrad_stack, self.dweights, self.wgrad_sum, alpha)
        if dx is None:
            return
        backend.matmul(self.weights_t, self.delta4, self.col_delta)
        if self.col_is_input:
            backend.accumulate(dx.reshape(self.col_shape), self.col_delta, 1.0)
        elif self.flat_quirk:
            backend.flat_as_col_add(self.col_delta, dx)
        else:
            backend.col2im_add(self.col_delta, dx, *self.geometry)
