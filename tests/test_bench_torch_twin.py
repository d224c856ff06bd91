"""The PyTorch twin's optimizer (``engine.bench.torch_twin``): one parameter group per blob
with the blob's ``lr_mult``/``decay_mult``, AdamW/Adam from the solver, and our training step's
trajectory equal to the twin's over a few updates on a tiny net (float32 tolerance: the same
rule, different summation orders). Skipped where PyTorch is not installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dnupdate.engine.config import load_config
from dnupdate.engine.training.step import Trainer

torch = pytest.importorskip("torch")

from dnupdate.engine.bench.torch_twin import (  # noqa: E402
    torch_model,
    torch_optimizer,
    twin_blobs,
)

DARKNET = """\
[net]
batch=6
subdivisions=1
height=6
width=6
channels=2
learning_rate=0.003
policy=constant
momentum=0.9
decay=0.05
{rule}
max_batches=20

[convolutional]
filters=3
size=3
stride=1
pad=1
activation=relu

[connected]
output=4
activation=linear

[softmax]
"""

CAFFE_NET = """\
name: "tiny"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 6 dim: 2 dim: 6 dim: 6 } shape { dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 3 kernel_size: 3 pad: 1
    weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
  param { lr_mult: 0.5 decay_mult: 3 } param { lr_mult: 2 decay_mult: 0 }
  inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
CAFFE_SOLVER = """\
net: "net.prototxt"
base_lr: 0.003
lr_policy: "fixed"
type: "{rule}"
momentum: 0.9
momentum2: 0.999
weight_decay: 0.05
max_iter: 20
"""

STEPS = 6


def _darknet(tmp_path: Path, rule: str) -> str:
    path = tmp_path / "tiny.cfg"
    path.write_text(DARKNET.format(rule=rule))
    return str(path)


def _caffe(tmp_path: Path, rule: str) -> str:
    (tmp_path / "net.prototxt").write_text(CAFFE_NET)
    path = tmp_path / "solver.prototxt"
    path.write_text(CAFFE_SOLVER.format(rule=rule))
    return str(path)


def _trajectories(config: str, steps: int = STEPS):
    """Our parameters and the twin's after each of ``steps`` updates on one fixed batch,
    both started from our initial parameters."""
    run = load_config(config)
    trainer = Trainer(run, seed=3)
    ours = dict(trainer.network.named_blobs())
    model, criterion = torch_model(run.net)
    blobs = twin_blobs(model)
    with torch.no_grad():
        for blob in blobs:
            blob.parameter.copy_(torch.from_numpy(np.array(ours[blob.key])).reshape(
                blob.parameter.shape))  # fmt: skip
    lr = trainer.lr()
    optimizer = torch_optimizer(model, trainer.solver, lr)
    rng = np.random.default_rng(7)
    n = trainer.minibatch
    chw = (run.net.input.channels, run.net.input.height, run.net.input.width)
    x = rng.uniform(0, 1, (n, *chw)).astype(np.float32)
    y = rng.integers(0, 4, n)
    history = []
    for _ in range(steps):
        assert trainer.lr() == lr, "the test needs a constant rate"
        trainer.train_iteration(lambda: (x, y))
        optimizer.zero_grad()
        criterion(model(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        optimizer.step()
        history.append({
            b.key: (np.array(ours[b.key]).ravel(), b.parameter.detach().numpy().ravel().copy())
            for b in blobs
        })  # fmt: skip
    return history, blobs


@pytest.mark.parametrize(
    "make,rule",
    [(_darknet, "adamw=1"), (_caffe, "AdamW"), (_darknet, "adamw=0"), (_caffe, "SGD")],
    ids=["darknet-adamw", "caffe-adamw", "darknet-sgd", "caffe-sgd"],
)
def test_our_trajectory_equals_the_torch_twins(tmp_path, make, rule):
    history, blobs = _trajectories(make(tmp_path, rule))
    assert len(blobs) == 4, "conv and connected: weights and biases each"
    for step, params in enumerate(history, start=1):
        for key, (ours, theirs) in params.items():
            np.testing.assert_allclose(
                ours, theirs, rtol=2e-5, atol=2e-6, err_msg=f"{key} after update {step}"
            )
    first, last = history[0], history[-1]
    assert any(not np.array_equal(first[k][0], last[k][0]) for k in first), "nothing moved"


def test_twin_groups_carry_each_blobs_multipliers(tmp_path):
    run = load_config(_caffe(tmp_path, "AdamW"))
    model, _ = torch_model(run.net)
    optimizer = torch_optimizer(model, run.solver, 0.01)
    assert isinstance(optimizer, torch.optim.AdamW)
    blobs = twin_blobs(model)
    assert [b.key for b in blobs] == ["conv/0", "conv/1", "ip/0", "ip/1"]
    lrs = [g["lr"] for g in optimizer.param_groups]
    decays = [g["weight_decay"] for g in optimizer.param_groups]
    assert lrs == pytest.approx([0.01, 0.02, 0.005, 0.02])
    assert decays == pytest.approx([0.05, 0.0, 0.15, 0.0])
    assert optimizer.defaults["betas"] == (0.9, pytest.approx(0.999))
    adam = torch_optimizer(model, load_config(_caffe(tmp_path, "Adam")).solver, 0.01)
    assert type(adam) is torch.optim.Adam, "Adam + L2 is not AdamW"


def test_darknet_adam_twin_decays_every_blob(tmp_path):
    """darknet quirk: GPU Adam ignores decay_mult (biases are decayed too)."""
    run = load_config(_darknet(tmp_path, "adam=1"))
    model, _ = torch_model(run.net)
    optimizer = torch_optimizer(model, run.solver, 0.01)
    assert type(optimizer) is torch.optim.Adam
    decays = [g["weight_decay"] for g in optimizer.param_groups]
    assert decays == pytest.approx([0.05] * 4), "biases decayed too"
    sgd = torch_optimizer(model, load_config(_darknet(tmp_path, "adam=0")).solver, 0.01)
    sgd_decays = [g["weight_decay"] for g in sgd.param_groups]
    assert sgd_decays == pytest.approx([0.0, 0.05, 0.0, 0.05]), "darknet SGD: weights only"
