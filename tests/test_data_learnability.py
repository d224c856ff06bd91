"""Learnability of the synthetic sets with a small LeNet-style CNN written in plain NumPy.

The test (marked slow) trains on synthetic-digits for a fixed number of steps. Run the module
to reproduce the one-minute figures quoted in the README::

    OMP_NUM_THREADS=2 taskset -c 0,1 \
        uv run python -m tests.test_data_learnability synthetic-shapes 60

Net: conv5×5(C→8) ReLU maxpool2 → conv5×5(8→16) ReLU maxpool2 → fc 64 ReLU → fc 10 softmax,
He-initialised, SGD with momentum 0.9, batch 64 drawn with replacement, pixels scaled to [0, 1).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from dnupdate.engine.data import BatchSampler, open_dataset
from dnupdate.engine.spec import DataSourceSpec

F32 = np.float32


def _conv(x, w, b):
    cols = sliding_window_view(x, w.shape[-2:], axis=(2, 3))
    return np.einsum("nchwij,fcij->nfhw", cols, w, optimize=True) + b[None, :, None, None], cols


def _conv_back(dout, cols, w):
    k = w.shape[-1]
    grad_w = np.einsum("nfhw,nchwij->fcij", dout, cols, optimize=True)
    padded = np.pad(dout, ((0, 0), (0, 0), (k - 1, k - 1), (k - 1, k - 1)))
    windows = sliding_window_view(padded, (k, k), axis=(2, 3))
    grad_x = np.einsum("nfhwij,fcij->nchw", windows, w[:, :, ::-1, ::-1], optimize=True)
    return grad_x, grad_w, dout.sum(axis=(0, 2, 3))


def _pool(x):
    n, c, h, w = x.shape
    blocks = x[:, :, : h // 2 * 2, : w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2)
    out = blocks.max(axis=(3, 5))
    return out, blocks == out[:, :, :, None, :, None]


def _pool_back(dout, mask, shape):
    n, c, h, w = shape
    grad = np.zeros(shape, F32)
    spread = mask * dout[:, :, :, None, :, None]
    grad[:, :, : h // 2 * 2, : w // 2 * 2] = spread.reshape(n, c, h // 2 * 2, w // 2 * 2)
    return grad


class TinyLeNet:
    """The small CNN described in the module docstring."""

    def __init__(self, shape, seed=0):
        rng = np.random.default_rng(seed)
        c, h, w = shape
        flat = 16 * (((h - 4) // 2 - 4) // 2) * (((w - 4) // 2 - 4) // 2)
        sizes = {"w1": (8, c, 5, 5), "w2": (16, 8, 5, 5), "w3": (flat, 64), "w4": (64, 10)}
        fan_in = {"w1": c * 25, "w2": 200, "w3": flat, "w4": 64}
        self.params = {
            k: (rng.standard_normal(s) * np.sqrt(2 / fan_in[k])).astype(F32)
            for k, s in sizes.items()
        }
        self.params.update(b1=np.zeros(8, F32), b2=np.zeros(16, F32))
        self.params.update(b3=np.zeros(64, F32), b4=np.zeros(10, F32))
        self.velocity = {k: np.zeros_like(v) for k, v in self.params.items()}

    def forward(self, x):
        p = self.params
        a1, c1 = _conv(x, p["w1"], p["b1"])
        p1, m1 = _pool(np.maximum(a1, 0))
        a2, c2 = _conv(p1, p["w2"], p["b2"])
        p2, m2 = _pool(np.maximum(a2, 0))
        flat = p2.reshape(len(x), -1)
        a3 = flat @ p["w3"] + p["b3"]
        logits = np.maximum(a3, 0) @ p["w4"] + p["b4"]
        return logits, (a1, c1, m1, a2, c2, m2, p2.shape, flat, a3)

    def step(self, x, y, lr, momentum=0.9):
        """One SGD step on the mean cross-entropy; returns the loss."""
        logits, (a1, c1, m1, a2, c2, m2, p2_shape, flat, a3) = self.forward(x)
        prob = np.exp(logits - logits.max(1, keepdims=True))
        prob /= prob.sum(1, keepdims=True)
        loss = float(-np.log(prob[np.arange(len(y)), y] + 1e-12).mean())
        d = prob
        d[np.arange(len(y)), y] -= 1
        d = (d / len(y)).astype(F32)
        p, g = self.params, {}
        r3 = np.maximum(a3, 0)
        g["w4"], g["b4"] = r3.T @ d, d.sum(0)
        d3 = (d @ p["w4"].T) * (a3 > 0)
        g["w3"], g["b3"] = flat.T @ d3, d3.sum(0)
        d2 = _pool_back((d3 @ p["w3"].T).reshape(p2_shape), m2, a2.shape) * (a2 > 0)
        d1, g["w2"], g["b2"] = _conv_back(d2, c2, p["w2"])
        d1 = _pool_back(d1, m1, a1.shape) * (a1 > 0)
        _, g["w1"], g["b1"] = _conv_back(d1, c1, p["w1"])
        for k in p:
            self.velocity[k] = momentum * self.velocity[k] - lr * g[k]
            p[k] += self.velocity[k]
        return loss

    def accuracy(self, dataset):
        source = DataSourceSpec(batch_size=500, scale=1 / 256)
        sampler = BatchSampler(dataset, source)
        batches = len(dataset) // 500
        correct = sum(
            int((self.forward(x)[0].argmax(1) == y).sum())
            for x, y in (sampler.next_batch() for _ in range(batches))
        )
        return correct / (batches * 500)


def train(name, *, steps=None, seconds=None, lr=0.05, train_size=20000, test_size=2000):
    """Train for ``steps`` steps or ``seconds`` of wall clock (data generation included)."""
    start = time.time()
    train_set = open_dataset(name, "train", size=train_size)
    test_set = open_dataset(name, "test", size=test_size)
    net = TinyLeNet(train_set.shape)
    sampler = BatchSampler(
        train_set, DataSourceSpec(batch_size=64, scale=1 / 256, shuffle=True), seed=1
    )
    done = 0
    while (steps is None or done < steps) and (seconds is None or time.time() - start < seconds):
        net.step(*sampler.next_batch(), lr)
        done += 1
    return net.accuracy(test_set), done, time.time() - start


@pytest.mark.slow
def test_tiny_lenet_learns_synthetic_digits():
    accuracy, _, _ = train("synthetic-digits", steps=40, train_size=4000, test_size=1000)
    assert accuracy > 0.5  # chance is 0.1


if __name__ == "__main__":
    dataset_name = sys.argv[1] if len(sys.argv) > 1 else "synthetic-digits"
    budget = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    acc, count, elapsed = train(dataset_name, seconds=budget - 3)
    print(f"{dataset_name}: {count} steps of 64 in {elapsed:.1f} s, test accuracy {acc:.3f}")
