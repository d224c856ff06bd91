"""A whole training run of a linear softmax classifier in float64, written out plainly, under
darknet's and Caffe's loop semantics (spec ``darknet.md`` §4/§6, ``caffe.md`` §1/§5).

The model: ``logits = x Wᵀ + b``, softmax, cross-entropy with integer labels. One update sees
``passes`` mini-batches (darknet subdivisions / Caffe iter_size) of ``Bm`` images each.

* darknet: ``U ← U + Σ_images (t − p) xᵀ`` over every pass (never zeroed); then
  ``U_W ← U_W − decay·B·W``; ``W ← W + (lr/B)·U_W``; ``U ← m·U`` (biases: no decay when
  ``bias_decay`` is False, darknet's rule).
* Caffe: ``g = (1/passes)·Σ_passes mean_images (p − t) xᵀ``; ``g ← g + decay·W``;
  ``h ← m·h + lr·g``; ``W ← W − h``.

``rates[k]`` is the rate of the k-th update, taken from the schedule by the caller.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _softmax_rows(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _neg_grad_sum(w, b, x, y) -> tuple[np.ndarray, np.ndarray]:
    """``Σ_images (t − p) xᵀ`` and ``Σ_images (t − p)`` for one mini-batch."""
    p = _softmax_rows(x @ w.T + b)
    t = np.eye(w.shape[0])[y]
    return (t - p).T @ x, (t - p).sum(axis=0)


def train_linear_softmax(
    w: np.ndarray,
    b: np.ndarray,
    batches: Sequence[tuple[np.ndarray, np.ndarray]],
    rates: Sequence[float],
    *,
    passes: int,
    momentum: float,
    decay: float,
    bias_decay: bool,
    semantics: str,
) -> tuple[np.ndarray, np.ndarray]:
    """``(W, b)`` after ``len(rates)`` updates; ``batches`` holds ``passes`` mini-batches per
    update, in order (images flattened to rows)."""
    w, b = w.astype(np.float64).copy(), b.astype(np.float64).copy()
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    feed = iter(batches)
    for lr in rates:
        gw, gb = np.zeros_like(w), np.zeros_like(b)
        images = 0
        for _ in range(passes):
            x, y = next(feed)
            x = x.reshape(x.shape[0], -1).astype(np.float64)
            dw, db = _neg_grad_sum(w, b, x, y)
            images += x.shape[0]
            if semantics == "darknet":
                gw, gb = gw + dw, gb + db
            else:
                gw, gb = gw - dw / x.shape[0], gb - db / x.shape[0]
        if semantics == "darknet":
            vw += gw - decay * images * w
            vb += gb - (decay * images * b if bias_decay else 0.0)
            w, b = w + lr / images * vw, b + lr / images * vb
            vw, vb = momentum * vw, momentum * vb
        else:
            gw, gb = gw / passes + decay * w, gb / passes + (decay * b if bias_decay else 0.0)
            vw, vb = momentum * vw + lr * gw, momentum * vb + lr * gb
            w, b = w - vw, b - vb
    return w, b
