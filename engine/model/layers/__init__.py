"""Layers: one module per kind, each a class with ``forward(x, train)`` and ``backward(x, dx)``
calling only :class:`engine.backends.base.Backend` methods (see :mod:`engine.model.layers.base`).

:func:`build_layer` maps a resolved :class:`engine.model.shapes.LayerShape` to its layer class.
"""

from __future__ import annotations

from dnupdate.engine.model.layers.activation import ActivationLayer
from dnupdate.engine.model.layers.base import Layer, LayerContext, NetworkError, error
from dnupdate.engine.model.layers.caffe_graph import (
    ConcatLayer,
    EltwiseLayer,
    ReshapeLayer,
    SilenceLayer,
)
from dnupdate.engine.model.layers.caffe_loss import EuclideanLossLayer, SigmoidCrossEntropyLossLayer
from dnupdate.engine.model.layers.caffe_norm import CaffeSoftmaxLayer, LRNLayer, PowerLayer
from dnupdate.engine.model.layers.connected import ConnectedLayer
from dnupdate.engine.model.layers.conv import ConvLayer
from dnupdate.engine.model.layers.dropout import DropoutLayer
from dnupdate.engine.model.layers.graph import RouteLayer, ShortcutLayer
from dnupdate.engine.model.layers.loss import (
    AccuracyLayer,
    DarknetCostLayer,
    DarknetSoftmaxLayer,
    SoftmaxLossLayer,
    TruthLayer,
)
from dnupdate.engine.model.layers.normalization import BatchNormLayer, ScaleLayer
from dnupdate.engine.model.layers.pool import PoolLayer
from dnupdate.engine.model.layers.reshape import CropLayer, ReorgLayer
from dnupdate.engine.model.shapes import LayerShape

LAYER_CLASSES: dict[str, type[Layer]] = {
    "conv": ConvLayer,
    "connected": ConnectedLayer,
    "pool": PoolLayer,
    "dropout": DropoutLayer,
    "activation": ActivationLayer,
    "batchnorm": BatchNormLayer,
    "scale": ScaleLayer,
    "softmax": DarknetSoftmaxLayer,
    "cost": DarknetCostLayer,
    "softmax_loss": SoftmaxLossLayer,
    "accuracy": AccuracyLayer,
    "shortcut": ShortcutLayer,
    "route": RouteLayer,
    "eltwise": EltwiseLayer,
    "concat": ConcatLayer,
    "reshape": ReshapeLayer,
    "split": ReshapeLayer,
    "silence": SilenceLayer,
    "lrn": LRNLayer,
    "power": PowerLayer,
    "caffe_softmax": CaffeSoftmaxLayer,
    "euclidean_loss": EuclideanLossLayer,
    "sigmoid_ce_loss": SigmoidCrossEntropyLossLayer,
    "reorg": ReorgLayer,
    "crop": CropLayer,
}


def build_layer(shape: LayerShape, ctx: LayerContext) -> Layer:
    """The layer object for ``shape.layer`` (by its ``kind``)."""
    cls = LAYER_CLASSES.get(shape.layer.kind)
    if cls is None:
        raise error(shape, f"no implementation for layer kind {shape.layer.kind!r}")
    return cls(shape, ctx)


__all__ = [
    "LAYER_CLASSES",
    "AccuracyLayer",
    "ActivationLayer",
    "BatchNormLayer",
    "ConnectedLayer",
    "ConvLayer",
    "CropLayer",
    "DarknetCostLayer",
    "DarknetSoftmaxLayer",
    "DropoutLayer",
    "Layer",
    "LayerContext",
    "NetworkError",
    "PoolLayer",
    "ReorgLayer",
    "RouteLayer",
    "ScaleLayer",
    "ShortcutLayer",
    "SoftmaxLossLayer",
    "TruthLayer",
    "build_layer",
]
