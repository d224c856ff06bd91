"""Convolution layer (darknet ``[convolutional]`` with its batch norm and activation; Caffe
``Convolution``).

Forward: per image and group ``y_g = W_g · im2col(x_b)_g``, then darknet batch norm (the biases
are the BN shift) or ``+ bias``, then darknet's activation in place. Backward: activation
gradient from the output, BN backward or ``Σ delta`` into the bias gradient,
``dW_g += alpha · delta_g · colᵀ`` and ``dx += col2im(W_gᵀ · delta_g)``.

On the CPU (with OpenBLAS) this runs image by image as darknet and Caffe do, on every core at
once (``engine.backends.cpu.conv_images``), with bias and activation fused into the same pass
when there is no batch norm. Elsewhere the whole batch is unfolded into one matrix per group and
multiplied by one GEMM (the CUDA backend). The float32 sums are the same up to summation order.
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
from dnupdate.engine.spec import ConvSpec

# (B, G, m, N) ↔ (G, m, B, N)
_TO_GROUP_MAJOR = (1, 2, 0, 3)
_TO_BATCH_MAJOR = (2, 0, 1, 3)


class ConvLayer(DarknetEpilogue, Layer):
    """See the module docstring. Two strategies, picked by the backend:

    * per image (CPU with OpenBLAS): ``backend.conv_forward_images``/``conv_backward_images``
      unfold and multiply image by image on every core, chunk scratch in the network's shared
      workspace; the columns are unfolded again in backward instead of being kept;
    * whole batch (CUDA, darknet's 1×1 quirk, a NumPy without OpenBLAS): ``col``
      (``(G, K, B·N)``) is unfolded once per forward and kept for backward; the GEMM result
      and ``W_gᵀ·delta_g`` live in the shared workspace.
    """

    def __init__(self, shape: LayerShape, ctx: LayerContext):
        super().__init__(shape, ctx)
        spec: ConvSpec = shape.layer
        batch, (c, _, _), (f, oh, ow) = ctx.batch, shape.input, shape.output
        groups = spec.groups
        self.k = (c // groups) * spec.kernel_h * spec.kernel_w
        n = oh * ow
        m = f // groups
        self.geometry = (
            (spec.kernel_h, spec.kernel_w),
            (spec.stride_h, spec.stride_w),
            (spec.pad_h, spec.pad_w),
            spec.dilation,
            (oh, ow),
        )
        steps = (spec.stride_h, spec.stride_w, spec.pad_h, spec.pad_w)
        one_by_one = spec.kernel_h == 1 and spec.kernel_w == 1
        # darknet quirk: its CPU 1×1 shortcut ignores stride and padding (garbage, but kept)
        self.flat_quirk = spec.darknet_1x1_shortcut and one_by_one and steps != (1, 1, 0, 0)
        # darknet quirk: its 1×1 backward GEMM writes the input delta with beta = 0, wiping
        # what later layers reading the same input (a [shortcut], a [route]) added before it
        self.clobbers_dx = spec.darknet_1x1_shortcut and one_by_one
        backend = ctx.backend
        self.weights = ctx.params["weights"].reshape(groups, m, self.k)
        self.weights_t = self.weights.swapaxes(1, 2)
        self.dweights = ctx.grads["weights"].reshape(groups, m, self.k)
        bias_name = "biases" if spec.param_order == "darknet" else "bias"
        self.bias = ctx.params.get(bias_name)
        self.dbias = ctx.grads.get(bias_name)
        self.out3 = self.output.reshape(batch, f, n)
        self.delta3 = self.delta.reshape(batch, f, n)
        self.bn = darknet_bn_state(ctx, f, self.out3.shape) if spec.batch_normalize else None
        self.act = DarknetActivation(backend, spec.activation)
        # per image: scratch per chunk = col (K×N, or the backend's per-tap forward scratch
        # where larger) + dcol (K×N), the weight-gradient partial sum and the bias-gradient
        # one (F; used when the tail is fused: no batch norm)
        col_floats = backend.conv_col_floats(
            (batch, *shape.input), (groups, m, self.k), *self.geometry
        )
        self.chunk_shapes = ((col_floats,), (self.k, n), (groups, self.k, m), (f,))
        chunk_floats = col_floats + self.k * n + groups * m * self.k + f
        self.chunks = 0 if self.flat_quirk else backend.conv_image_chunks(batch, chunk_floats)
        # without batch norm, bias and activation ride along image by image (in cache)
        self.fused_tail = bool(self.chunks) and self.bn is None
        self.col = self.col_t = self.wgrad_scratch = None
        if not self.chunks:
            self.col = backend.zeros((groups, self.k, batch * n))
            self.col_t = self.col.swapaxes(1, 2)
            self.wgrad_scratch = backend.zeros((groups, m, self.k))
        self.out4 = self.output.reshape(batch, groups, m, n)
        self.delta4 = self.delta.reshape(batch, groups, m, n)
        self.gm_shape = (groups, m, batch, n)
        self.gemm_shape = (groups, m, batch * n)
        self.gm = self.gemm = self.col_delta = None
        self.chunk_col = self.chunk_dcol = self.partial = self.bias_partial = None

    def workspace_size(self) -> int:
        if self.chunks:
            return self.chunks * sum(_size(shape) for shape in self.chunk_shapes)
        return self.col.size + self.output.size

    def bind_workspace(self, workspace) -> None:
        if self.chunks:
            views, start = [], 0
            for shape in self.chunk_shapes:
                size = self.chunks * _size(shape)
                views.append(workspace[start : start + size].reshape(self.chunks, *shape))
                start += size
            self.chunk_col, self.chunk_dcol, self.partial, self.bias_partial = views
            return
        size = self.col.size
        self.col_delta = workspace[:size].reshape(self.col.shape)
        self.gm = workspace[size : size + self.output.size].reshape(self.gm_shape)
        self.gemm = self.gm.reshape(self.gemm_shape)

    def can_assign_dx(self) -> bool:
        return bool(self.chunks)  # the per-image kernels can; the whole-batch fold adds

    def forward(self, x, train: bool) -> None:
        backend = self.backend
        if self.fused_tail:
            backend.conv_forward_images(
                x, self.weights, self.out3, self.chunk_col, *self.geometry,
                bias=self.bias, activation=self.act.tail_code,
            )  # fmt: skip
            return
        if self.chunks:
            product = self._product_images(x, train)
            self.epilogue_forward(train, in_x=product is not self.out3)
            return
        if self.flat_quirk:
            backend.flat_as_col(x, self.col)
        else:
            backend.im2col(x, self.col, *self.geometry)
        backend.matmul(self.weights, self.col, self.gemm)
        backend.permute_copy(self.gm, self.out4, _TO_BATCH_MAJOR)
        self.epilogue_forward(train)

    def carries_shortcut(self) -> bool:
        """The per-image path with batch norm computed from its ``x`` (the CPU's)."""
        return bool(self.chunks) and self.bn is not None and self.backend.darknet_bn_reads_x

    def _product_images(self, x, train: bool):
        """The per-image convolution into :meth:`pre_bn_output` (returned)."""
        product = self.pre_bn_output(train)
        self.backend.conv_forward_images(x, self.weights, product, self.chunk_col, *self.geometry)
        return product

    def forward_carrying(self, x, shortcut) -> None:
        self._product_images(x, True)
        self.backend.darknet_bn_act_shortcut_forward(
            self.out3, self.bn, self.act.tail_code, shortcut.add_output, shortcut.output,
            shortcut.alpha, shortcut.beta, shortcut.act.tail_code,
        )  # fmt: skip

    def backward(self, x, dx) -> None:
        backend = self.backend
        alpha = self.grad_alpha
        if self.fused_tail:
            backend.conv_backward_images(
                x, self.weights, self.delta3, self.dweights, dx, self.chunk_col,
                self.chunk_dcol, self.partial, alpha, *self.geometry, output=self.output,
                activation=self.act.tail_code, dbias=self.dbias, bias_partial=self.bias_partial,
                assign_dx=self.assign_dx or self.clear_dx,
            )  # fmt: skip
            return
        self.epilogue_backward()
        if self.chunks:
            backend.conv_backward_images(
                x, self.weights, self.delta3, self.dweights, dx, self.chunk_col,
                self.chunk_dcol, self.partial, alpha, *self.geometry,
                assign_dx=self.assign_dx or self.clear_dx,
            )  # fmt: skip
            return
        backend.permute_copy(self.delta4, self.gm, _TO_GROUP_MAJOR)
        backend.matmul_add(self.gemm, self.col_t, self.dweights, self.wgrad_scratch, alpha)
        if dx is None:
            return
        backend.matmul(self.weights_t, self.gemm, self.col_delta)
        if self.clear_dx:  # darknet's 1×1 overwrite (the network rules out the flat quirk)
            backend.fill(dx, 0.0)
        if self.flat_quirk:
            backend.flat_as_col_add(self.col_delta, dx)
        else:
            backend.col2im_add(self.col_delta, dx, *self.geometry)


def _size(shape: tuple[int, ...]) -> int:
    size = 1
    for extent in shape:
        size *= extent
    return size
