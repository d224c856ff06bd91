"""How a network's parameter arrays are named and handed around, shared by the model and every
parameter-file format: ``"LAYER/INDEX"`` keys (the layer's blobs in framework order), the
mapping-like sources of such arrays, and which layers keep darknet's blob order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np

from dnupdate.engine.spec import BatchNormSpec, ConnectedSpec, ConvSpec


def blob_key(layer_name: str, index: int) -> str:
    """The ``"LAYER/INDEX"`` key of a layer's ``index``-th blob (framework order)."""
    return f"{layer_name}/{index}"


def has_darknet_layout(layer) -> bool:
    """Whether a layer's blobs are stored in darknet's order (conv, connected, batchnorm)."""
    if isinstance(layer, ConvSpec | ConnectedSpec):
        return layer.param_order == "darknet"
    return isinstance(layer, BatchNormSpec) and layer.style == "darknet"


ArraySource = (
    Mapping[str, np.ndarray]
    | Iterable[tuple[str, np.ndarray]]
    | Callable[[], Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]]]
)


def as_mapping(arrays: ArraySource) -> Mapping[str, np.ndarray]:
    """``{"LAYER/INDEX": array}`` from a mapping, ``(key, array)`` pairs, or a callable
    returning either (e.g. ``Network.named_blobs``)."""
    if callable(arrays):
        arrays = arrays()
    return arrays if isinstance(arrays, Mapping) else dict(arrays)
