"""What every layer shares: the build context, the buffers and the forward/backward contract.

A layer owns (or, for darknet's in-place dropout, aliases) an ``output`` and a ``delta`` array of
shape ``(B, *output_shape)``. ``forward(x, train)`` reads the producer's output ``x`` and writes
``output``; ``backward(x, dx)`` reads ``delta`` (the loss gradient at the output, in the
network's delta convention) and **adds** into ``dx``, the producer's delta (``None`` where no
input gradient is wanted: the first layer, as darknet's NULL ``net.delta``). Parameter gradients
accumulate ``grad_alpha · Σ_images delta ⊗ input`` into the network's flat ``grads`` buffer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dnupdate.engine.backends.base import Array, Backend, DarknetBNState
from dnupdate.engine.model.shapes import LayerShape


class NetworkError(ValueError):
    """A network cannot be built or run as asked (named layer, clear reason)."""


UniformSource = Callable[[int], np.ndarray]


@dataclass
class LayerContext:
    """What a layer needs at build time.

    ``params``/``grads``: the layer's blob views by blob name (``engine.model.shapes`` names).
    ``grad_alpha``: factor on every parameter-gradient accumulation (sign convention).
    ``source_output``/``source_delta``: the producer's buffers (darknet dropout aliases them).
    ``uniforms``: draws ``n`` float32 uniforms in ``[0, 1)`` (dropout masks).
    ``bottoms``: ``(output, delta)`` of every producer the layer reads, chain input first
    (``(None, None)`` for the network input), for layers with several inputs.
    """

    backend: Backend
    batch: int
    params: dict[str, Array]
    grads: dict[str, Array]
    grad_alpha: float
    source_output: Array | None
    source_delta: Array | None
    uniforms: UniformSource
    bottoms: tuple[tuple[Array | None, Array | None], ...] = ()


class Layer:
    """Base class; see the module docstring. ``is_sink``: a loss/accuracy layer whose output
    does not feed the next layer (Caffe's ``SoftmaxWithLoss``/``Accuracy``)."""

    is_sink = False
    has_loss = False
    #: set by the network where this layer is its producer's only consumer and
    #: :meth:`can_assign_dx` holds: backward then *writes* ``dx`` instead of adding into it, and
    #: the network skips zeroing that delta in forward (darknet zeroes every delta first; with
    #: one writer, ``0 + v`` and ``v`` are the same float, so results are unchanged)
    assign_dx = False
    #: darknet quirk (its 1×1 convolution): backward *overwrites* ``dx`` even where other
    #: layers reading the same producer have already added into it (True on such layers)
    clobbers_dx = False
    #: set by the network when the producer has several consumers and this layer clobbers:
    #: backward then overwrites ``dx`` as darknet does (where it would otherwise add)
    clear_dx = False

    def __init__(self, shape: LayerShape, ctx: LayerContext):
        self.shape = shape
        self.spec = shape.layer
        self.name = shape.layer.name
        self.backend = ctx.backend
        self.batch = ctx.batch
        self.grad_alpha = ctx.grad_alpha
        self.loss = 0.0
        self.output = ctx.backend.zeros((ctx.batch, *shape.output))
        self.delta = ctx.backend.zeros((ctx.batch, *shape.output))

    def workspace_size(self) -> int:
        """Floats of shared scratch this layer needs during backward (0: none)."""
        return 0

    def can_assign_dx(self) -> bool:
        """Whether :meth:`backward` can overwrite the whole of ``dx`` (see ``assign_dx``)."""
        return False

    def can_assign_bottom(self, position: int) -> bool:
        """Whether :meth:`backward` can overwrite the whole delta of its ``position``-th
        bottom (0: the chain input ``dx``, :meth:`can_assign_dx`; others: layers reading
        several outputs, e.g. a ``[shortcut]``'s ``from``)."""
        return position == 0 and self.can_assign_dx()

    def assign_bottom(self, position: int) -> None:
        """Make :meth:`backward` overwrite that bottom's delta (the network then skips its
        zeroing); only where :meth:`can_assign_bottom` holds."""
        if not self.can_assign_bottom(position):
            raise ValueError(f"layer {self.name}: cannot overwrite the delta of bottom {position}")
        self.assign_dx = True

    def bind_workspace(self, workspace: Array) -> None:
        """Receive the network's shared scratch (at least :meth:`workspace_size` floats)."""

    def forward(self, x: Array, train: bool) -> None:
        raise NotImplementedError

    def carries_shortcut(self) -> bool:
        """Whether a training :meth:`forward_carrying` can also run the ``[shortcut]`` that
        reads this layer's output next (the network asks; see ``Network._carried``)."""
        return False

    def forward_carrying(self, x: Array, shortcut) -> None:
        """A training :meth:`forward`, then ``shortcut``'s forward in the same pass where the
        backend fuses them (:attr:`Backend.BN_CARRIES_SHORTCUT`): this layer's output is
        written as ever, ``shortcut``'s too, with the same bits as the two forwards."""
        raise NotImplementedError

    def backward(self, x: Array, dx: Array | None) -> None:
        raise NotImplementedError


def error(shape: LayerShape, message: str) -> NetworkError:
    """A :class:`NetworkError` naming the layer and where it was defined."""
    return NetworkError(f"{shape.layer.origin}: layer {shape.layer.name}: {message}")


def darknet_bn_state(ctx: LayerContext, channels: int, out_shape: tuple[int, ...]):
    """The :class:`DarknetBNState` of a darknet conv/connected layer with ``batch_normalize``."""
    backend = ctx.backend
    return DarknetBNState(
        scales=ctx.params["scales"],
        biases=ctx.params["biases"],
        rolling_mean=ctx.params["rolling_mean"],
        rolling_variance=ctx.params["rolling_variance"],
        scale_updates=ctx.grads["scales"],
        bias_updates=ctx.grads["biases"],
        mean=backend.zeros((channels,)),
        variance=backend.zeros((channels,)),
        mean_delta=backend.zeros((channels,)),
        variance_delta=backend.zeros((channels,)),
        x=backend.zeros(out_shape),
        x_norm=backend.zeros(out_shape),
    )


class DarknetActivation:
    """darknet's in-layer activation: forward in place, gradient from the output."""

    def __init__(self, backend: Backend, activation: str):
        self.linear = activation == "linear"
        self.code = 0 if self.linear else backend.activation_code(activation)
        #: the code for fused kernels: None for linear
        self.tail_code = None if self.linear else self.code
        self._activate = backend.activate
        self._gradient = backend.activation_gradient

    def forward(self, y: Array) -> None:
        if not self.linear:
            self._activate(y, self.code)

    def backward(self, y: Array, delta: Array) -> None:
        if not self.linear:
            self._gradient(y, self.code, delta)


class DarknetEpilogue:
    """The tail darknet's convolutional and connected layers share (``forward_*_layer``):
    batch norm (its biases are the BN shift) or a plain bias add, then the activation in place;
    backward in reverse order: activation gradient from the output, then the BN or bias
    gradient. Needs ``backend``, ``bn``, ``bias``/``dbias``, ``act``, ``output``/``out3``,
    ``delta``/``delta3`` and ``grad_alpha`` on the layer."""

    def pre_bn_output(self, train: bool):
        """Where the layer writes its product ``(B, C, N)``: the batch norm's ``x`` when
        training on a backend that normalises from there (``darknet_bn_reads_x``: darknet's
        ``copy_cpu(output → x)`` made unnecessary), else ``out3``."""
        if train and self.bn is not None and self.backend.darknet_bn_reads_x:
            return self.bn.x
        return self.out3

    def epilogue_forward(self, train: bool, in_x: bool = False) -> None:
        """The tail on ``out3``, or (``in_x``) on the product the layer wrote into the batch
        norm's ``x`` (:meth:`pre_bn_output`)."""
        if self.bn is None:  # bias and activation in one pass
            self.backend.darknet_tail_forward(self.out3, self.bias, self.act.tail_code)
            return
        if in_x:
            self.backend.darknet_bn_act_forward_from_x(self.out3, self.bn, self.act.tail_code)
            return
        self.backend.darknet_bn_act_forward(self.out3, self.bn, train, self.act.tail_code)

    def epilogue_backward(self) -> None:
        if self.bn is None:
            dbias = None if self.bias is None else self.dbias
            self.backend.darknet_tail_backward(
                self.out3, self.delta3, dbias, self.act.tail_code, self.grad_alpha
            )
            return
        self.backend.darknet_bn_act_backward(
            self.out3, self.delta3, self.bn, self.grad_alpha, self.act.tail_code
        )
