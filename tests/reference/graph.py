"""Plain NumPy transcriptions of darknet's graph layers (``blas.c:shortcut_cpu``,
``shortcut_layer.c``, ``route_layer.c``), with strided slices instead of index loops.

``dtype`` float32 reproduces darknet's rounding (each product rounded, then the sum); float64
gives the exact function for finite differences.
"""

from __future__ import annotations

import numpy as np


def shortcut_add(add, out, s1, s2):
    """``shortcut_cpu``: a new array ``out`` with ``s1·out + s2·add`` over the strided
    overlap (``stride = max(1, w1/w2)``, ``sample = max(1, w2/w1)``)."""
    out = np.array(out, copy=True)
    dtype = out.dtype.type
    _, c1, h1, w1 = add.shape
    _, c2, h2, w2 = out.shape
    stride, sample = max(1, w1 // w2), max(1, w2 // w1)
    c, h, w = min(c1, c2), min(h1, h2), min(w1, w2)
    target = (slice(None), slice(0, c), slice(0, h * sample, sample), slice(0, w * sample, sample))
    source = (slice(None), slice(0, c), slice(0, h * stride, stride), slice(0, w * stride, stride))
    out[target] = dtype(s1) * out[target] + dtype(s2) * add[source].astype(out.dtype)
    return out


def shortcut_forward(x, a, alpha, beta, activate=lambda v: v):
    """The layer's output: ``activate(shortcut_add(a, x, alpha, beta))``."""
    return activate(shortcut_add(a, x, alpha, beta))


def route_forward(sources):
    """Per image, the sources' flat outputs end to end: ``(B, Σ n_i)``."""
    batch = sources[0].shape[0]
    return np.concatenate([s.reshape(batch, -1) for s in sources], axis=1)


def route_groups_forward(sources, groups, group_id):
    """AlexeyAB's ``forward_route_layer``: for each source ``i`` and image ``j``,
    ``copy_cpu(part, input + j·input_size + part·group_id, output + offset + j·outputs)`` with
    ``part = input_size/groups``; ``offset += part``."""
    batch = sources[0].shape[0]
    outputs = sum(s[0].size for s in sources) // groups
    out = np.zeros(batch * outputs, dtype=sources[0].dtype)
    offset = 0
    for source in sources:
        flat, input_size = source.reshape(-1), source[0].size
        part = input_size // groups
        for j in range(batch):
            start = j * input_size + part * group_id
            out[offset + j * outputs : offset + j * outputs + part] = flat[start : start + part]
        offset += part
    return out.reshape(batch, outputs)


def route_groups_backward(delta, deltas, groups, group_id):
    """AlexeyAB's ``backward_route_layer``: ``axpy_cpu(part, 1, l.delta + offset +
    j·outputs, delta + j·input_size + part·group_id)``; returns the updated source deltas."""
    batch, outputs = delta.shape[0], delta[0].size
    flat_delta = delta.reshape(-1)
    result, offset = [], 0
    for source in deltas:
        flat, input_size = source.reshape(-1).copy(), source[0].size
        part = input_size // groups
        for j in range(batch):
            start = j * input_size + part * group_id
            src = flat_delta[offset + j * outputs : offset + j * outputs + part]
            flat[start : start + part] += src
        result.append(flat.reshape(source.shape))
        offset += part
    return result
