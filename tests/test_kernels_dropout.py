"""Dropout kernels (engine.backends.cpu.dropout) against the NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest

from dnupdate.engine.backends.cpu import dropout as drop
from dnupdate.engine.backends.cpu.activations import KernelArgumentError
from tests.reference import dropout as ref

SHAPES = [(1,), (3, 7), (2, 3, 4, 5)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("probability", [0.0, 0.2, 0.5, 0.9])
def test_darknet_dropout(shape, probability):
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape).astype(np.float32)
    draws = rng.uniform(size=shape).astype(np.float32)
    expected = ref.darknet_dropout(x, draws, probability)
    ours = x.copy()
    drop.darknet_dropout_forward(ours, draws, probability)
    assert np.array_equal(ours, expected)
    delta = rng.normal(size=shape).astype(np.float32)
    e_delta = ref.darknet_dropout(delta, draws, probability)
    drop.darknet_dropout_backward(delta, draws, probability)
    assert np.array_equal(delta, e_delta)


def test_darknet_drop_rule_is_strict_less_than():
    x = np.ones(3, np.float32)
    draws = np.array([0.5, 0.49999997, 0.50000006], np.float32)
    drop.darknet_dropout_forward(x, draws, 0.5)
    assert list(x) == [2.0, 0.0, 2.0]


def test_caffe_masks():
    bits = np.array([0, 1, 2**31 - 1, 2**31, 2**31 + 1, 2**32 - 1], np.uint32)
    mask = np.empty(6, np.uint32)
    drop.caffe_dropout_mask_cpu_rule(bits, 0.5, mask)
    assert np.array_equal(mask, ref.caffe_mask_cpu(bits, 0.5))
    assert list(mask) == [1, 1, 1, 0, 0, 0]  # CPU keeps LOW draws: u <= 0.5·(2^32 − 1)
    drop.caffe_dropout_mask_gpu_rule(bits, 0.5, mask)
    assert np.array_equal(mask, ref.caffe_mask_gpu(bits, 0.5))
    assert list(mask) == [0, 0, 0, 0, 1, 1]  # GPU keeps HIGH draws: u > 2^31
    drop.caffe_dropout_mask_from_uniform(np.array([0.1, 0.5, 0.7], np.float32), 0.5, mask[:3])
    assert list(mask[:3]) == [0, 0, 1]


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.75])
def test_caffe_mask_keep_rate(ratio):
    bits = np.random.default_rng(2).integers(0, 2**32, size=200_000, dtype=np.uint32)
    mask = np.empty(bits.size, np.uint32)
    for rule in (drop.caffe_dropout_mask_cpu_rule, drop.caffe_dropout_mask_gpu_rule):
        rule(bits, ratio, mask)
        assert mask.mean() == pytest.approx(1 - ratio, abs=0.005)
        assert np.array_equal(
            mask,
            (
                ref.caffe_mask_cpu
                if rule is drop.caffe_dropout_mask_cpu_rule
                else ref.caffe_mask_gpu
            )(bits, ratio),
        )


@pytest.mark.parametrize("shape", SHAPES)
def test_caffe_dropout_forward_backward(shape):
    rng = np.random.default_rng(3)
    x = rng.normal(size=shape).astype(np.float32)
    mask = rng.integers(0, 2, size=shape).astype(np.uint32)
    y = np.empty_like(x)
    drop.caffe_dropout_forward(x, mask, 0.3, y)
    assert np.array_equal(y, ref.caffe_dropout(x, mask, 0.3))
    dx = np.empty_like(x)
    drop.caffe_dropout_backward(x, mask, 0.3, dx)
    assert np.array_equal(dx, ref.caffe_dropout(x, mask, 0.3))
    drop.caffe_dropout_forward(x, mask, 0.3, x)  # in place
    assert np.array_equal(x, y)


def test_bad_arguments_are_refused():
    x = np.ones(4, np.float32)
    with pytest.raises(KernelArgumentError, match="probability"):
        drop.darknet_dropout_forward(x, np.ones(4, np.float32), 1.0)
    with pytest.raises(KernelArgumentError, match="draws"):
        drop.darknet_dropout_forward(x, np.ones(3, np.float32), 0.5)
    with pytest.raises(KernelArgumentError, match="mask"):
        drop.caffe_dropout_forward(x, np.ones(4, np.int64), 0.5, x)
