"""The same network in PyTorch eager mode, for ``dnupdate bench --vs torch`` (PyTorch is
optional; this module is imported only inside a benchmark worker that asked for it).

:func:`torch_model` translates a :class:`~engine.spec.NetSpec` layer by layer:

* conv → ``Conv2d`` (no bias under batch norm) [+ ``BatchNorm2d``] [+ activation];
* connected → ``Flatten`` + ``Linear`` [+ ``BatchNorm1d``] [+ activation];
* pooling → ``MaxPool2d``/``AvgPool2d`` with the padding and ``ceil_mode`` that reproduce our
  output size (darknet's and Caffe's rules), global pooling → ``AdaptiveAvg/MaxPool2d(1)``;
* Caffe BatchNorm (+ Scale) → ``BatchNorm2d`` without (with) the affine part; dropout →
  ``Dropout``; darknet ``leaky`` → ``LeakyReLU(0.1)``;
* darknet ``[softmax]`` / Caffe ``SoftmaxWithLoss`` → ``CrossEntropyLoss`` on the logits;
* darknet ``[shortcut]`` → ``y = alpha·x + beta·a`` with darknet's index map: equal shapes add
  whole tensors; where the ``from`` layer is larger and has fewer channels (a ResNet stage that
  halves the size and doubles the channels) ``a[:, :, ::stride, ::stride]`` zero-padded to the
  channels, He et al.'s option A as PyTorch CIFAR ResNets write it; other overlaps are added
  into a copy of ``x`` over darknet's region; then the activation;
* darknet ``[route]`` → ``torch.cat`` along the channels (flat per-image vectors where the
  sources' H×W differ).

A chain net becomes an ``nn.Sequential``; a net with graph layers a module that keeps every
layer's output and feeds each layer its ``bottoms`` (``engine.model.shapes.LayerShape``).

The optimizer is ``torch.optim.SGD`` (momentum, weight decay, Nesterov), ``Adam``, ``AdamW``
(decoupled decay, ``type: "AdamW"`` / ``adamw=1``) or AdaGrad/RMSprop/Adadelta as the solver
says, with one parameter group per blob: ``lr = rate·lr_mult`` and ``weight_decay =
λ·decay_mult`` (:func:`twin_blobs` maps each PyTorch parameter to its ``LAYER/INDEX`` blob).
darknet quirk kept: darknet Adam decays every blob (its GPU ``adam_update_gpu`` ignores the
zero decay of biases and scales), so under darknet semantics Adam's groups get ``λ`` whatever
``decay_mult`` says. A training step is ``zero_grad``, forward, loss, ``backward``, ``step`` —
PyTorch eager's ordinary loop.

Where the conventions agree, a twin step is our update on the mean gradient: Caffe's losses
average over the batch as ``CrossEntropyLoss`` does, and darknet's rules divide their summed
gradient by ``batch`` (``lr/batch``, ``decay·batch``), so AdamW and SGD follow the same
trajectory to float32 rounding (``tests/test_bench.py``). Caffe's Adam adds ε to ``sqrt(v)``
before the bias correction, PyTorch's to ``sqrt(v̂)``: the same update to within that ε.
"""

from __future__ import annotations

from dataclasses import dataclass

from dnupdate.engine.bench.runner import Runner
from dnupdate.engine.model.blobs import blob_key
from dnupdate.engine.spec import (
    AccuracySpec,
    ActivationSpec,
    BatchNormSpec,
    ConnectedSpec,
    ConvSpec,
    CostSpec,
    DropoutSpec,
    NetSpec,
    PoolSpec,
    RouteSpec,
    ScaleSpec,
    ShortcutSpec,
    SoftmaxLossSpec,
    SoftmaxSpec,
    SolverSpec,
)

DARKNET_LEAKY_SLOPE = 0.1


class TorchTranslationError(ValueError):
    """A layer has no PyTorch counterpart in this translation (named layer and kind)."""


def _activation(nn, name: str, negative_slope: float = 0.0):
    if name == "linear":
        return None
    if name == "relu":
        return nn.LeakyReLU(negative_slope) if negative_slope else nn.ReLU()
    if name == "leaky":
        return nn.LeakyReLU(DARKNET_LEAKY_SLOPE)
    if name == "logistic":
        return nn.Sigmoid()
    if name == "tanh":
        return nn.Tanh()
    raise TorchTranslationError(f"activation {name!r} has no PyTorch counterpart here")


def _pool(nn, torch, spec: PoolSpec, shape):
    c, h, w = shape.input
    _, oh, ow = shape.output
    if spec.global_pooling or ((oh, ow) == (1, 1) and spec.kernel_h in (1, h)):
        return nn.AdaptiveMaxPool2d(1) if spec.method == "max" else nn.AdaptiveAvgPool2d(1)
    kind = nn.MaxPool2d if spec.method == "max" else nn.AvgPool2d
    kernel = (spec.kernel_h, spec.kernel_w)
    stride = (spec.stride_h, spec.stride_w)
    pads = {(spec.pad_h, spec.pad_w), (spec.pad_h // 2, spec.pad_w // 2)}
    probe = torch.zeros((1, c, h, w))
    for pad in sorted(pads):
        if 2 * pad[0] > kernel[0] or 2 * pad[1] > kernel[1]:
            continue
        for ceil in (False, True):
            module = kind(kernel, stride, pad, ceil_mode=ceil)
            if tuple(module(probe).shape[2:]) == (oh, ow):
                return module
    raise TorchTranslationError(
        f"layer {spec.name}: no PyTorch pooling gives {oh}x{ow} from {h}x{w}"
    )


class _ChannelAffine:
    """Factory of a Caffe ``Scale`` module (``y = γ[c]·x (+ β[c])``)."""

    @staticmethod
    def make(nn, torch, channels: int, bias: bool):
        class ChannelAffine(nn.Module):
            def __init__(self):
                super().__init__()
                self.gamma = nn.Parameter(torch.ones(channels))
                self.beta = nn.Parameter(torch.zeros(channels)) if bias else None

            def forward(self, x):
                view = (1, -1) + (1,) * (x.dim() - 2)
                y = x * self.gamma.view(view)
                return y if self.beta is None else y + self.beta.view(view)

        return ChannelAffine()


def _layer_modules(nn, torch, shape) -> list:
    spec = shape.layer
    if isinstance(spec, ConvSpec):
        c = shape.input[0]
        conv = nn.Conv2d(
            c,
            spec.filters,
            (spec.kernel_h, spec.kernel_w),
            stride=(spec.stride_h, spec.stride_w),
            padding=(spec.pad_h, spec.pad_w),
            dilation=spec.dilation,
            groups=spec.groups,
            bias=spec.bias and not spec.batch_normalize,
        )
        mods = [conv]
        if spec.batch_normalize:
            mods.append(nn.BatchNorm2d(spec.filters))
        return [*mods, _activation(nn, spec.activation)]
    if isinstance(spec, ConnectedSpec):
        mods = [nn.Flatten(), nn.Linear(shape.inputs, spec.outputs, bias=spec.bias)]
        if spec.batch_normalize:
            mods.append(nn.BatchNorm1d(spec.outputs))
        return [*mods, _activation(nn, spec.activation)]
    if isinstance(spec, PoolSpec):
        return [_pool(nn, torch, spec, shape)]
    if isinstance(spec, ActivationSpec):
        return [_activation(nn, spec.activation, spec.negative_slope)]
    if isinstance(spec, BatchNormSpec):
        return [nn.BatchNorm2d(shape.input[0], affine=False, eps=spec.eps)]
    if isinstance(spec, ScaleSpec):
        return [_ChannelAffine.make(nn, torch, shape.input[0], spec.bias_term)]
    if isinstance(spec, DropoutSpec):
        return [nn.Dropout(spec.probability)]
    if isinstance(spec, SoftmaxSpec | SoftmaxLossSpec | AccuracySpec | CostSpec):
        return []
    raise TorchTranslationError(f"layer {spec.name}: kind {spec.kind!r} is not translated")


@dataclass(frozen=True)
class TwinBlob:
    """A PyTorch parameter of the twin and the blob it stands for: ``key`` (``LAYER/INDEX``)
    and the blob's ``lr_mult``/``decay_mult``."""

    key: str
    parameter: object
    lr_mult: float
    decay_mult: float


def _layer_blobs(shape, mods: list) -> list[TwinBlob]:
    """The learnable blobs of one layer found among its modules: conv/connected ``weights``
    → ``weight``; ``bias``/darknet ``biases`` → the layer's bias, or under batch norm the
    norm's ``bias`` (darknet's biases are BN's β); darknet ``scales`` → the norm's
    ``weight``; Caffe Scale ``gamma``/``beta``."""
    spec = shape.layer
    found: dict[str, object] = {}
    if isinstance(spec, ConvSpec | ConnectedSpec):
        core = next(m for m in mods if type(m).__name__ in ("Conv2d", "Linear"))
        norm = next((m for m in mods if type(m).__name__.startswith("BatchNorm")), None)
        found = {"weights": core.weight, "bias": core.bias, "biases": core.bias}
        if norm is not None:
            found.update(biases=norm.bias, scales=norm.weight)
    elif isinstance(spec, ScaleSpec):
        found = {"gamma": mods[0].gamma, "beta": mods[0].beta}
    blobs = []
    for index, blob in enumerate(shape.blobs):
        parameter = found.get(blob.name)
        if blob.learnable and parameter is not None:
            key = blob_key(spec.name, index)
            blobs.append(TwinBlob(key, parameter, blob.mult.lr_mult, blob.mult.decay_mult))
    return blobs


def twin_blobs(model) -> list[TwinBlob]:
    """The twin's learnable parameters as blobs, in the net's blob order (set by
    :func:`torch_model`)."""
    return list(getattr(model, "dnupdate_blobs", ()))


def _shortcut_add(torch, x, a, spec: ShortcutSpec):
    """darknet's ``shortcut_cpu`` forward on ``(B, C, H, W)`` tensors (``x`` the previous
    layer's output, ``a`` the ``from`` layer's): ``y = x``, then over the overlap
    ``y[k, j·sample, i·sample] = alpha·y + beta·a[k, j·stride, i·stride]``."""
    alpha, beta = spec.alpha, spec.beta
    if a.shape == x.shape:
        if alpha == 1.0 and beta == 1.0:
            return x + a
        return alpha * x + beta * a
    c1, h1, w1 = a.shape[1:]
    c2, h2, w2 = x.shape[1:]
    stride, sample = max(1, w1 // w2), max(1, w2 // w1)
    minc, minh, minw = min(c1, c2), min(h1, h2), min(w1, w2)
    part = a[:, :minc, : minh * stride : stride, : minw * stride : stride]
    if beta != 1.0:
        part = beta * part
    if sample == 1 and (minh, minw) == (h2, w2) and alpha == 1.0:
        # option A: the subsampled identity, zero-padded to the output's channels
        return x + torch.nn.functional.pad(part, (0, 0, 0, 0, 0, c2 - minc))
    y = x.clone()
    region = (slice(None), slice(0, minc), slice(0, minh * sample, sample))
    region += (slice(0, minw * sample, sample),)
    y[region] = alpha * y[region] + part
    return y


def _graph_model(nn, torch, shapes):
    """A module running the layers of a graph net: each layer reads its ``bottoms`` (-1: the
    input); shortcut and route layers combine them, the others run their modules on the
    first."""

    class GraphNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.shapes = shapes
            self.dnupdate_blobs: list[TwinBlob] = []
            self.stages = nn.ModuleList()
            for shape in shapes:
                if isinstance(shape.layer, ShortcutSpec):
                    mods = [_activation(nn, shape.layer.activation)]
                elif isinstance(shape.layer, RouteSpec):
                    mods = []
                else:
                    mods = _layer_modules(nn, torch, shape)
                mods = [m for m in mods if m is not None]
                self.stages.append(nn.Sequential(*mods))
                self.dnupdate_blobs.extend(_layer_blobs(shape, mods))

        def forward(self, x):
            outputs = []
            for shape, stage in zip(self.shapes, self.stages, strict=True):
                ins = [x if b < 0 else outputs[b] for b in shape.bottoms]
                if isinstance(shape.layer, ShortcutSpec):
                    y = _shortcut_add(torch, ins[0], ins[1], shape.layer)
                elif isinstance(shape.layer, RouteSpec):
                    y = _route(torch, ins, shape.image_out)
                else:
                    y = ins[0]
                outputs.append(stage(y))
            return torch.flatten(outputs[-1], 1)

    return GraphNet()


def _route(torch, inputs, image_out: bool):
    """darknet's ``[route]``: the sources' per-image outputs end to end."""
    if image_out:
        return torch.cat(inputs, dim=1)
    return torch.cat([torch.flatten(t, 1) for t in inputs], dim=1)


def torch_model(net: NetSpec):
    """``(model, loss)``: an ``nn.Sequential`` of the net's layers (training phase), or for a
    net with shortcut/route layers a module that follows its graph, and the loss module
    (``CrossEntropyLoss`` on flattened logits; ``MSELoss`` for a darknet ``[cost]`` net)."""
    import torch
    from torch import nn

    from dnupdate.engine.model.shapes import infer_shapes

    shapes = infer_shapes(net, "train")
    mse = any(isinstance(shape.layer, CostSpec) for shape in shapes)
    loss = nn.MSELoss() if mse else nn.CrossEntropyLoss()
    if any(isinstance(shape.layer, ShortcutSpec | RouteSpec) for shape in shapes):
        return _graph_model(nn, torch, shapes), loss
    modules, blobs = [], []
    for shape in shapes:
        mods = [m for m in _layer_modules(nn, torch, shape) if m is not None]
        modules.extend(mods)
        blobs.extend(_layer_blobs(shape, mods))
    modules.append(nn.Flatten())
    model = nn.Sequential(*modules)
    model.dnupdate_blobs = blobs
    return model, loss


def param_groups(model, solver: SolverSpec, lr: float) -> list[dict]:
    """One PyTorch parameter group per blob: ``lr = lr·lr_mult``, ``weight_decay =
    λ·decay_mult`` (darknet Adam: ``λ`` on every blob, see the module docstring); parameters
    that stand for no blob get ``lr`` and ``λ``."""
    ignore_mult = solver.semantics == "darknet" and solver.optimizer == "adam"
    groups, mapped = [], set()
    for blob in twin_blobs(model):
        mapped.add(id(blob.parameter))
        decay = solver.decay * (1.0 if ignore_mult else float(blob.decay_mult))
        groups.append({"params": [blob.parameter], "lr": lr * float(blob.lr_mult),
                       "weight_decay": decay})  # fmt: skip
    rest = [p for p in model.parameters() if id(p) not in mapped]
    if rest:
        groups.append({"params": rest, "lr": lr, "weight_decay": solver.decay})
    return groups


def torch_optimizer(model, solver: SolverSpec, lr: float):
    """The PyTorch optimizer of the solver's rule over ``model``'s parameters, one group per
    blob (:func:`param_groups`)."""
    import torch

    params = param_groups(model, solver, lr)
    opt = solver.optimizer
    if opt in ("sgd", "nesterov"):
        return torch.optim.SGD(params, lr=lr, momentum=solver.momentum, nesterov=opt == "nesterov")
    if opt in ("adam", "adamw"):
        kind = torch.optim.AdamW if opt == "adamw" else torch.optim.Adam
        return kind(params, lr=lr, betas=(solver.beta1, solver.beta2), eps=solver.eps)
    if opt == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, eps=solver.eps)
    if opt == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=solver.rms_decay, eps=solver.eps)
    return torch.optim.Adadelta(params, lr=lr, eps=solver.eps)


def torch_runner(config_path: str, settings):
    """A :class:`engine.bench.runner.Runner` for the config's net in PyTorch (threads:
    ``torch.set_num_threads(settings.threads)``), on one fixed random batch."""
    import torch

    from dnupdate.engine.config import load_config

    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    run = load_config(config_path)
    net = run.net
    model, criterion = torch_model(net)
    optimizer = torch_optimizer(model, run.solver, lr=min(run.schedule.base_lr, 0.01))
    batch = run.solver.minibatch
    shape = (batch, net.input.channels, net.input.height, net.input.width)
    generator = torch.Generator().manual_seed(settings.seed)
    x = torch.rand(shape, generator=generator)
    with torch.no_grad():
        classes = model(x).shape[1]
    y = torch.randint(0, classes, (batch,), generator=generator)
    if isinstance(criterion, torch.nn.MSELoss):
        y = torch.nn.functional.one_hot(y, classes).float()
    model.train()

    def train() -> None:
        if not model.training:
            model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()

    def infer() -> None:
        if model.training:
            model.eval()
        with torch.inference_mode():
            model(x)

    return Runner({"train": train, "infer": infer}, batch)
