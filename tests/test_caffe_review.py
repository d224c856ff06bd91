"""Findings of the Caffe fidelity review: small exact cases derived from BVLC/caffe's source.

Each test names the Caffe file and function it transcribes (``src/caffe/...`` of
BVLC/caffe master); the expected values are computed here from that source's arithmetic, not
by the code under test.
"""

from __future__ import annotations

import math

import numpy as np

from engine.shapes import pool_geometry
from engine.spec import PoolSpec

F32 = np.float32


# --------------------------------------------------------------------------------------------
# pooling_layer.cpp: PoolingLayer::Reshape — the clip rule is guarded by `pad_h_ || pad_w_`
# --------------------------------------------------------------------------------------------


def _caffe_pooled(size: int, kernel: int, stride: int, pad: int, any_pad: bool) -> int:
    """PoolingLayer::Reshape (CEIL): ``ceil(float(in + 2p − k)/s) + 1``, then
    ``if (pad_h_ || pad_w_) { if ((pooled − 1)·s >= in + p) --pooled; }`` for BOTH axes."""
    pooled = math.ceil(float(F32(size + 2 * pad - kernel) / F32(stride))) + 1
    if any_pad and (pooled - 1) * stride >= size + pad:
        pooled -= 1
    return pooled


def test_pool_clip_rule_applies_to_both_axes_when_either_is_padded():
    # pad_h = 1, pad_w = 0, kernel 2, stride 3 over 6×6: the width's last window would start
    # at 6 = W + pad_w (an empty window: AVE would divide by a zero pool_size). Caffe drops it
    # because pad_h is nonzero, although pad_w is 0.
    spec = PoolSpec(
        name="p", method="ave", kernel_h=2, kernel_w=2, stride_h=3, stride_w=3, pad_h=1, pad_w=0
    )
    _, _, _, _, out_h, out_w = pool_geometry(spec, 1, 6, 6)
    assert (out_h, out_w) == (_caffe_pooled(6, 2, 3, 1, True), _caffe_pooled(6, 2, 3, 0, True))
    assert (out_h, out_w) == (3, 2)


def test_pool_without_any_padding_keeps_the_ceil_overhang():
    # No padding on either axis: no clip, the ceil rule alone (Caffe keeps an empty last window).
    spec = PoolSpec(name="p", method="max", kernel_h=2, kernel_w=2, stride_h=3, stride_w=3)
    _, _, _, _, out_h, out_w = pool_geometry(spec, 1, 6, 6)
    assert (out_h, out_w) == (_caffe_pooled(6, 2, 3, 0, False),) * 2 == (3, 3)
