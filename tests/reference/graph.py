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
