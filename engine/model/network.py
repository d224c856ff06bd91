"""A network built from a :class:`~engine.spec.NetSpec`: flat parameter buffers,
preallocated activations and deltas, forward in file order and backward in reverse.

The network is a graph: each layer reads the outputs of its ``bottoms``
(``engine.model.shapes.LayerShape.bottoms``), the chain input (the last non-sink layer before
it, or the network input) first, then any others (``[shortcut]``'s ``from``, ``[route]``'s
``layers``). Backward runs every layer once in reverse file order and each consumer adds its
share into its producers' deltas, so a delta read by several layers collects all their shares
in darknet's order (the later consumer first). A chain is the one-input case.

Buffers (all device arrays of the chosen backend):

* ``params``: ONE flat float32 array holding every blob of every layer, in layer order and, per
  layer, in the framework's blob order (``engine.model.shapes.param_blobs``); ``grads`` has the same
  layout. ``segments`` lists ``(key "LAYER/INDEX", offset, size, shape, lr_mult, decay_mult,
  learnable)`` for the update rules, norms and checkpoints. Running statistics (darknet
  ``rolling_mean``/``rolling_variance``, Caffe BatchNorm sums) are non-learnable segments of
  ``params``; their ``grads`` stay zero.
* one output and one delta array per layer, shaped ``(batch, C, H, W)``, allocated once; darknet
  ``[dropout]`` aliases its producer's (darknet quirk: it works in place).

Gradient convention (``grad_sign``), as the update rules of ``engine.update.rules`` consume it:

* ``semantics="darknet"``: ``grad_sign = −1``. ``grads`` accumulates darknet's ``*_updates``:
  ``Σ over the images of −∂L/∂θ``, summed over the mini-batch and over subdivisions — the
  network never zeroes it (darknet's update scales it by the momentum instead).
* ``semantics="caffe"``: ``grad_sign = +1``. ``grads`` accumulates Caffe's diffs: ``+∂L/∂θ`` of
  the (batch-normalised) loss, summed over ``iter_size`` passes; call :meth:`zero_grads` once
  per iteration (``Net::ClearParamDiffs``).

Inside, deltas follow the net's own loss layers: darknet's ``[softmax]``/``[cost]`` write
``−∂L/∂y`` (``delta_sign = −1``), Caffe's ``SoftmaxWithLoss`` writes ``+∂L/∂y``. Every
parameter-gradient accumulation is multiplied by ``grad_alpha = grad_sign·delta_sign·r`` where
``r`` converts the loss reduction when the semantics differ from the net's framework (a darknet
net under Caffe semantics: ``r = 1/batch``, darknet's summed loss becomes a mean; a Caffe net
under darknet semantics: ``r = batch``).

Use::

    net = Network(spec.net, CpuBackend(), batch=Bm, semantics="darknet")
    net.set_truth(labels_or_targets)
    out = net.forward(x, train=True)      # net.loss now holds the loss
    net.backward()                         # grads accumulate
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from dnupdate.engine.backends.base import Array, Backend
from dnupdate.engine.model.layers import (
    Layer,
    LayerContext,
    NetworkError,
    ShortcutLayer,
    TruthLayer,
    build_layer,
)
from dnupdate.engine.model.shapes import LayerShape, infer_shapes
from dnupdate.engine.spec import (
    ConnectedSpec,
    ConvSpec,
    CostSpec,
    Framework,
    NetSpec,
    SoftmaxLossSpec,
    SoftmaxSpec,
)

__all__ = ["Network", "NetworkError", "Segment", "native_framework"]


@dataclass(frozen=True)
class Segment:
    """One parameter blob's place in the flat buffers.

    ``key`` is ``"LAYER/INDEX"`` (layer name, blob index in framework order); ``name`` the blob
    name (``weights``, ``biases``, ``rolling_mean``, ...); ``learnable`` is False for running
    statistics.
    """

    key: str
    layer: str
    index: int
    name: str
    offset: int
    size: int
    shape: tuple[int, ...]
    lr_mult: float
    decay_mult: float
    learnable: bool


def native_framework(net: NetSpec) -> Framework:
    """The framework whose loss and delta conventions the net's layers follow: darknet when it
    has a darknet ``[softmax]``/``[cost]`` or darknet-ordered conv/connected layers."""
    for layer in net.layers:
        if isinstance(layer, SoftmaxSpec | CostSpec):
            return "darknet"
        if isinstance(layer, SoftmaxLossSpec):
            return "caffe"
        if isinstance(layer, ConvSpec | ConnectedSpec) and layer.param_order == "darknet":
            return "darknet"
    return "caffe"


def _segments(shapes: list[LayerShape]) -> list[Segment]:
    segments: list[Segment] = []
    offset = 0
    for shape in shapes:
        for index, blob in enumerate(shape.blobs):
            segments.append(
                Segment(
                    key=f"{shape.layer.name}/{index}",
                    layer=shape.layer.name,
                    index=index,
                    name=blob.name,
                    offset=offset,
                    size=blob.size,
                    shape=blob.shape,
                    lr_mult=blob.mult.lr_mult,
                    decay_mult=blob.mult.decay_mult,
                    learnable=blob.learnable,
                )
            )
            offset += blob.size
    return segments


class Network:
    """See the module docstring.

    ``batch``: images per forward pass (darknet ``Bm``, Caffe ``batch_size``). ``phase``: which
    layers exist (Caffe ``include``). ``uniforms``: ``n → float32 uniforms in [0, 1)`` for
    dropout masks (darknet: pass the glibc ``rand_uniform`` stream); default a seeded NumPy
    generator. ``share_params_with``: use another network's ``params`` (a Caffe test net
    sharing the train net's blobs); the parameter layouts must match.
    """

    def __init__(
        self,
        net: NetSpec,
        backend: Backend,
        batch: int,
        semantics: Framework,
        *,
        phase: str = "train",
        uniforms: Callable[[int], np.ndarray] | None = None,
        share_params_with: Network | None = None,
    ):
        if batch <= 0:
            raise NetworkError(f"network {net.name}: batch must be positive, got {batch}")
        self.spec = net
        self.backend = backend
        self.batch = batch
        self.semantics = semantics
        self.phase = phase
        self.shapes = infer_shapes(net, phase)
        if not self.shapes:
            raise NetworkError(f"network {net.name}: no layers in phase {phase!r}")
        self.native = native_framework(net)
        self.grad_sign = -1 if semantics == "darknet" else 1
        self.delta_sign = -1 if self.native == "darknet" else 1
        reduction = 1.0
        if semantics != self.native:
            reduction = float(batch) if semantics == "darknet" else 1.0 / batch
        self.grad_alpha = self.grad_sign * self.delta_sign * reduction
        self.segments = _segments(self.shapes)
        self._allocate_parameters(share_params_with)
        self.uniform_source = uniforms or _default_uniforms()
        self.input_shape = (batch, net.input.channels, net.input.height, net.input.width)
        self._input_buffer: Array | None = None
        self._build_layers()
        self.loss = 0.0
        self._x: Array | None = None
        #: simulated storage precision (``engine.training.mixed.StorageHooks``): None runs the
        #: plain float32 engine; else ``storage.output(index, layer)`` is called after each
        #: layer's forward and ``storage.delta(index, layer)`` before each layer's backward
        self.storage = None

    # ---- construction ---------------------------------------------------------------------
    def _allocate_parameters(self, other: Network | None) -> None:
        total = sum(s.size for s in self.segments)
        if other is not None:
            mine = [(s.key, s.shape) for s in self.segments]
            theirs = [(s.key, s.shape) for s in other.segments]
            if mine != theirs:
                raise NetworkError(
                    f"network {self.spec.name}: phase {self.phase!r} has other parameter blobs "
                    f"than phase {other.phase!r}; they cannot share weights"
                )
            self.params, self.grads = other.params, other.grads
        else:
            self.params = self.backend.zeros((total,))
            self.grads = self.backend.zeros((total,))
        self._param_views = {s.key: self._view(self.params, s) for s in self.segments}
        self._grad_views = {s.key: self._view(self.grads, s) for s in self.segments}

    @staticmethod
    def _view(buffer: Array, segment: Segment) -> Array:
        return buffer[segment.offset : segment.offset + segment.size].reshape(segment.shape)

    def _build_layers(self) -> None:
        """One layer object per shape; each reads its ``bottoms`` (the chain input first,
        ``-1`` = the network input). ``sources`` keeps each layer's chain input."""
        self.layers: list[Layer] = []
        self.bottoms = [shape.bottoms for shape in self.shapes]
        self.sources = [bottoms[0] for bottoms in self.bottoms]
        # a layer reading the network input as a second (or later) bottom needs it in a fixed
        # buffer (Caffe: the data top read by several layers, e.g. the autoencoder's Flatten)
        pinned = any(-1 in bottoms[1:] for bottoms in self.bottoms)
        if pinned:
            self._input_buffer = self.backend.zeros(self.input_shape)
        self._input_pinned = pinned
        for shape in self.shapes:
            name = shape.layer.name
            keys = {s.name: s.key for s in self.segments if s.layer == name}
            producers = [self.layers[b] if b >= 0 else None for b in shape.bottoms]
            bottoms = [_buffers(producer) for producer in producers]
            for slot, bottom in enumerate(shape.bottoms):
                if bottom == -1 and pinned:
                    bottoms[slot] = (self._input_buffer, None)
            source_layer = producers[0]
            ctx = LayerContext(
                backend=self.backend,
                batch=self.batch,
                params={blob: self._param_views[key] for blob, key in keys.items()},
                grads={blob: self._grad_views[key] for blob, key in keys.items()},
                grad_alpha=self.grad_alpha,
                source_output=None if source_layer is None else source_layer.output,
                source_delta=None if source_layer is None else source_layer.delta,
                uniforms=self._draw_uniforms,
                bottoms=tuple(bottoms),
            )
            self.layers.append(build_layer(shape, ctx))
        self.output_index = self._output_index()
        self.work = max(layer.output.size for layer in self.layers)
        need = max(layer.workspace_size() for layer in self.layers)
        workspace = self.backend.zeros((max(need, 1),))
        for layer in self.layers:
            layer.bind_workspace(workspace)
        self._filled = self._deltas_to_zero()
        self._carried = self._carried_shortcuts()
        self._truth_layers = [
            layer for layer in self.layers if isinstance(layer, TruthLayer) and layer.reads_truth
        ]
        self._truth_buffers = [self._truth_buffer(layer) for layer in self._truth_layers]
        self._loss_layers = [layer for layer in self.layers if layer.has_loss]

    def _carried_shortcuts(self) -> dict[int, ShortcutLayer]:
        """Per producer index, the ``[shortcut]`` right after it that its training forward runs
        in the same pass (:meth:`Layer.forward_carrying`; the backend's
        ``BN_CARRIES_SHORTCUT``): the shortcut's chain input is that producer, and its ``from``
        output, its own output and the producer's have one shape. Both outputs are written
        with the bits of the two forwards; test passes and the low-precision storage
        simulation (which rounds the producer's output before the shortcut reads it) run them
        apart (:meth:`forward`)."""
        if not self.backend.BN_CARRIES_SHORTCUT:
            return {}
        carried = {}
        for index, layer in enumerate(self.layers):
            producer = self.sources[index]
            if (
                isinstance(layer, ShortcutLayer)
                and producer == index - 1
                and self.layers[producer].carries_shortcut()
                and layer.add_output.shape == layer.output.shape
                and self.layers[producer].output.shape == layer.output.shape
            ):
                carried[producer] = layer
        return carried

    def _deltas_to_zero(self) -> list[bool]:
        """Per layer, whether forward must zero its delta (darknet zeroes every delta before
        each forward): not where the layer whose backward reaches that delta first (its reader
        with the highest index: backward runs in reverse order) can overwrite all of it
        (``Layer.can_assign_bottom``: e.g. ``assign_dx``, or a ``[shortcut]``'s ``from``),
        runs backward at all (after the last ``stop_backward``), reads the delta once, and no
        other layer shares the delta's memory (darknet's in-place dropout aliases its
        producer's). That reader then writes ``0 + v`` where darknet adds ``v`` into zeros:
        the same bits; the later readers add as before. A layer that clobbers its input delta
        (darknet's 1×1 convolution) is told to do so (``Layer.clear_dx``) where its producer
        has other readers."""
        layers = self.layers
        readers: list[list[tuple[int, int]]] = [[] for _ in layers]
        for index, bottoms in enumerate(self.bottoms):
            for position, bottom in enumerate(bottoms):
                if bottom >= 0:
                    readers[bottom].append((index, position))
        stops = [index for index, layer in enumerate(layers) if layer.spec.stop_backward]
        last_stop = max(stops, default=-1)
        for index, (layer, source) in enumerate(zip(layers, self.sources, strict=True)):
            if source >= 0 and index > last_stop and len(readers[source]) != 1:
                self._clear_if_clobbering(layer)
        return [
            not self._first_reader_writes(source, readers[source], last_stop)
            for source in range(len(layers))
        ]

    def _first_reader_writes(
        self, source: int, readers: list[tuple[int, int]], last_stop: int
    ) -> bool:
        """Make the first reader in backward order of ``source``'s delta overwrite it, where
        it can (see :meth:`_deltas_to_zero`); whether it does."""
        if not readers:
            return False
        index, position = max(readers)
        if index <= last_stop or sum(1 for reader, _ in readers if reader == index) > 1:
            return False
        layers = self.layers
        delta = layers[source].delta
        shared = any(
            other is not layers[source] and _same_memory(other.delta, delta) for other in layers
        )
        if shared or not layers[index].can_assign_bottom(position):
            return False
        layers[index].assign_bottom(position)
        return True

    def _clear_if_clobbering(self, layer: Layer) -> None:
        if not layer.clobbers_dx:
            return
        if getattr(layer, "flat_quirk", False):
            raise NetworkError(
                f"{layer.spec.origin}: layer {layer.name}: a darknet 1x1 convolution with "
                "stride or padding (its CPU quirk overwrites part of the input delta) cannot "
                "read a layer that other layers also read"
            )
        layer.clear_dx = True

    def _output_index(self) -> int:
        """darknet: the last layer that is not a ``[cost]``; Caffe: the last non-sink layer."""
        for index in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[index]
            if not layer.is_sink and not isinstance(layer.spec, CostSpec):
                return index
        return len(self.layers) - 1

    def _truth_buffer(self, layer: TruthLayer) -> Array:
        source = self.sources[self.layers.index(layer)]
        c, h, w = self.shapes[source].output if source >= 0 else self.input_shape[1:]
        if layer.truth_kind == "label":
            return self.backend.zeros((self.batch, h * w), dtype=np.int32)
        return self.backend.zeros((self.batch, c * h * w))

    def _draw_uniforms(self, n: int) -> np.ndarray:
        return self.uniform_source(n)

    # ---- running --------------------------------------------------------------------------
    @property
    def output(self) -> Array:
        """The network output: darknet's ``net->output`` (softmax probabilities), Caffe's last
        non-loss blob (the logits before ``SoftmaxWithLoss``)."""
        return self.layers[self.output_index].output

    def set_truth(self, truth: np.ndarray | None) -> None:
        """Targets for the loss layers of the next forward.

        Class labels (integers, shape ``(B,)`` or ``(B, H·W)``) feed Caffe's label layers
        directly and become one-hot rows for darknet's ``[softmax]``/``[cost]``; a float array
        ``(B, outputs)`` is used as darknet's ``net.truth`` as is. ``None`` removes the truth
        (inference: no loss).
        """
        for layer, buffer in zip(self._truth_layers, self._truth_buffers, strict=True):
            if truth is None:
                layer.set_truth(None)
                continue
            host = np.asarray(truth)
            self.backend.copy_from_host(self._truth_for(layer, buffer, host), buffer)
            layer.set_truth(buffer)

    def _truth_for(self, layer: TruthLayer, buffer: Array, host: np.ndarray) -> np.ndarray:
        batch, width = buffer.shape
        if host.shape[0] != batch:
            raise NetworkError(
                f"layer {layer.name}: truth has {host.shape[0]} rows for a batch of {batch}"
            )
        integral = np.issubdtype(host.dtype, np.integer)
        if layer.truth_kind == "label":
            labels = host if integral else np.rint(host).astype(np.int64)
            return labels.reshape(batch, -1)
        if host.ndim == 1 and width == 1 and self.native == "caffe":
            # Caffe's EuclideanLoss/SigmoidCrossEntropyLoss read the label blob's float values
            # as they are (CHECK_EQ of the counts: one value per image here), never a one-hot
            # row: a label 0 is the target 0 (HDF5Data N×1 binary/regression targets)
            return host.astype(np.float32).reshape(batch, 1)
        if integral and host.ndim == 1:
            if host.min() < 0 or host.max() >= width:
                raise NetworkError(
                    f"layer {layer.name}: labels must lie in [0, {width}), got "
                    f"{host.min()}..{host.max()}"
                )
            onehot = np.zeros((batch, width), dtype=np.float32)
            onehot[np.arange(batch), host] = 1.0
            return onehot
        if host.size != buffer.size:
            raise NetworkError(
                f"layer {layer.name}: truth has {host.size // batch} values per image, "
                f"expected {width}"
            )
        return host.reshape(batch, width)

    def _accept_input(self, x) -> Array:
        on_device = (
            isinstance(x, type(self.params))  # a device array of this backend: used in place
            and x.dtype == np.float32
            and x.flags.c_contiguous
            and x.size == math.prod(self.input_shape)
        )
        if on_device and not self._input_pinned:
            return x.reshape(self.input_shape)
        if on_device:
            self.backend.copy(x.reshape(self.input_shape), self._input_buffer)
            return self._input_buffer
        if x.shape[0] != self.batch or x.size != math.prod(self.input_shape):
            want = "×".join(map(str, self.input_shape))
            raise NetworkError(
                f"network {self.spec.name}: input has shape {'×'.join(map(str, x.shape))}, "
                f"expected {want}"
            )
        if self._input_buffer is None:
            self._input_buffer = self.backend.zeros(self.input_shape)
        self.backend.copy_from_host(np.asarray(x).reshape(self.input_shape), self._input_buffer)
        return self._input_buffer

    def forward(self, x, train: bool) -> Array:
        """Run every layer in order (training: each layer's delta is zeroed first, as darknet,
        except those their only consumer overwrites in backward); returns :attr:`output`.
        ``train`` selects batch statistics and active dropout. The loss of the truth set by
        :meth:`set_truth` is left in :attr:`loss`: darknet's ``Σ layer costs / number of cost
        layers`` (a sum over the mini-batch), Caffe's ``Σ loss_weight·loss``."""
        x = self._accept_input(x)
        self._x = x
        self.backend.configure(self.work)
        fill = self.backend.fill
        layers = self.layers
        storage = self.storage
        carried = self._carried if train and storage is None else {}
        done = -1  # a shortcut whose producer's forward ran it
        for index, (layer, source, zero) in enumerate(
            zip(layers, self.sources, self._filled, strict=True)
        ):
            if zero and train:  # a test-mode pass never reads or writes the deltas
                fill(layer.delta, 0.0)
            if index == done:
                continue
            bottom = x if source < 0 else layers[source].output
            shortcut = carried.get(index)
            if shortcut is None:
                layer.forward(bottom, train)
            else:
                layer.forward_carrying(bottom, shortcut)
                done = index + 1
            if storage is not None:
                storage.output(index, layer)
        self.loss = self._total_loss()
        return self.output

    def _total_loss(self) -> float:
        if not self._loss_layers:
            return 0.0
        if self.native == "darknet":
            total = sum(layer.loss for layer in self._loss_layers)
            return total / len(self._loss_layers)
        caffe_total = np.float32(0.0)  # Net::ForwardFromTo: Dtype loss += layer_loss
        for layer in self._loss_layers:
            caffe_total = np.float32(caffe_total + np.float32(layer.loss))
        return float(caffe_total)

    def backward(self) -> None:
        """Back-propagate the last forward's deltas in reverse layer order, accumulating
        parameter gradients into :attr:`grads`. Stops at a layer with ``stop_backward``
        (that layer does not run, as darknet); the first layer computes no input delta."""
        if self._x is None:
            raise NetworkError(f"network {self.spec.name}: backward() before forward()")
        layers = self.layers
        storage = self.storage
        self.backend.configure(self.work)
        for index in range(len(layers) - 1, -1, -1):
            layer = layers[index]
            if layer.spec.stop_backward:
                break
            if storage is not None:
                storage.delta(index, layer)
            source = self.sources[index]
            if source < 0:
                layer.backward(self._x, None)
            else:
                producer = layers[source]
                layer.backward(producer.output, producer.delta)

    def zero_grads(self) -> None:
        """``grads ← 0`` (Caffe's ``ClearParamDiffs``; darknet never calls it)."""
        self.backend.fill(self.grads, 0.0)

    # ---- access ---------------------------------------------------------------------------
    def blob(self, layer_name: str, index: int) -> Array:
        """The parameter view ``LAYER/INDEX`` (framework blob order)."""
        key = f"{layer_name}/{index}"
        try:
            return self._param_views[key]
        except KeyError:
            raise NetworkError(f"network {self.spec.name}: no parameter blob {key}") from None

    def grad(self, layer_name: str, index: int) -> Array:
        """The gradient view of blob ``LAYER/INDEX``."""
        key = f"{layer_name}/{index}"
        try:
            return self._grad_views[key]
        except KeyError:
            raise NetworkError(f"network {self.spec.name}: no parameter blob {key}") from None

    def named_blobs(self) -> Iterator[tuple[str, Array]]:
        """``("LAYER/INDEX", view)`` for every blob, in buffer order."""
        for segment in self.segments:
            yield segment.key, self._param_views[segment.key]

    def state_arrays(self) -> dict[str, Array]:
        """The non-learnable blobs (BN running statistics) by ``"LAYER/INDEX"``."""
        return {s.key: self._param_views[s.key] for s in self.segments if not s.learnable}

    def layer(self, name: str) -> Layer:
        """The layer object called ``name``."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise NetworkError(f"network {self.spec.name}: no layer {name!r}")

    @property
    def scalars(self) -> dict[str, float]:
        """Scalar outputs of the last forward: each loss layer's loss and each accuracy."""
        out: dict[str, float] = {}
        for layer in self.layers:
            key = layer.spec.tops[0] if layer.spec.tops else layer.name  # Caffe: the top blob
            if layer.has_loss:
                out[key] = float(layer.loss)
            elif hasattr(layer, "value"):
                out[key] = float(layer.value)
        return out


def _default_uniforms() -> Callable[[int], np.ndarray]:
    generator = np.random.default_rng(0)

    def draw(n: int) -> np.ndarray:
        return generator.random(n, dtype=np.float32)

    return draw


def _buffers(producer: Layer | None) -> tuple[Array | None, Array | None]:
    """``(output, delta)`` of a producer, ``(None, None)`` for the network input."""
    return (None, None) if producer is None else (producer.output, producer.delta)


def _same_memory(a: Array, b: Array) -> bool:
    """Whether two buffers overlap (NumPy arrays), or are the same object (device arrays)."""
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return bool(np.shares_memory(a, b))
    return a is b
