"""Whole-training conformance against the real darknet library (ctypes).

For each net: the same cfg text goes to libdarknet (``srand(seed)`` + ``parse_network_cfg``,
then ``train_network`` on one fixed ``data`` of ``B = batch`` rows per update) and to our config
reader + :class:`engine.training.step.Trainer` with the same seed (initial weights are
bit-identical,
``test_conformance_init.py``). After every update the loss is compared, and after the last one
every parameter blob (weights, biases, BN scales and rolling statistics), the momentum buffers
(``*_updates`` = our ``grads``) and the ``seen`` counter.

darknet sums in its own order (gemm loops), so agreement is to float32 rounding, not bits: the
acceptance bound is 1e-5 absolute on every parameter (spec ``darknet.md`` §0). The dropout case
also checks that the glibc ``rand()`` stream is shared exactly: masks after init, the ``random``
policy after the masks, all on one stream as in one darknet process.

Skipped where libdarknet is not installed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from dnupdate.engine.config import load_config
from dnupdate.engine.model.shapes import infer_shapes
from dnupdate.engine.training.step import Trainer, run_fixed_batch
from tests import libdarknet as dn

pytestmark = pytest.mark.darknet

TOLERANCE = 1e-5
ITERATIONS = 12


@dataclass(frozen=True)
class Case:
    """A cfg (``{body}`` filled in), its input shape, classes and seed."""

    cfg: str
    chw: tuple[int, int, int]
    classes: int
    seed: int


CASES = {
    "connected_leaky_softmax_steps": Case(
        """[net]
batch=6
subdivisions=1
height=4
width=4
channels=2
learning_rate=0.1
momentum=0.9
decay=0.0005
policy=steps
steps=3,7
scales=.5,.2
max_batches=100

[connected]
output=10
activation=leaky

[connected]
output=4
activation=leaky

[softmax]
""",
        (2, 4, 4),
        4,
        7,
    ),
    "conv_bn_maxpool_connected_subdiv2_burnin_poly": Case(
        """[net]
batch=8
subdivisions=2
height=7
width=7
channels=3
learning_rate=0.05
momentum=0.9
decay=0.0005
burn_in=4
policy=poly
power=2
max_batches=30

[convolutional]
batch_normalize=1
filters=5
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[connected]
output=3
activation=linear

[softmax]
""",
        (3, 7, 7),
        3,
        11,
    ),
    "conv1x1_avgpool_softmax_exp": Case(
        """[net]
batch=4
subdivisions=1
height=5
width=5
channels=3
learning_rate=0.2
momentum=0.8
decay=0.001
policy=exp
gamma=0.9
max_batches=100

[convolutional]
filters=6
size=1
stride=1
pad=1
activation=relu

[avgpool]

[softmax]
""",
        (3, 5, 5),
        6,
        5,
    ),
    "connected_dropout_random_policy": Case(
        """[net]
batch=6
subdivisions=2
height=3
width=3
channels=4
learning_rate=0.1
momentum=0.9
decay=0.0005
policy=random
power=1
max_batches=100

[connected]
output=12
activation=leaky

[dropout]
probability=.3

[connected]
output=5
activation=linear

[softmax]
""",
        (4, 3, 3),
        5,
        3,
    ),
    # a small residual net: batch norm, subdivisions, shortcuts (one across a stride-2 stage,
    # fewer channels), a 1x1 conv reading a shortcut another layer also reads, a route
    "residual_bn_subdiv2_shortcut_route": Case(
        """[net]
batch=8
subdivisions=2
height=8
width=8
channels=3
learning_rate=0.05
momentum=0.9
decay=0.0005
policy=steps
steps=5
scales=.5
max_batches=100

[convolutional]
batch_normalize=1
filters=4
size=3
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=4
size=3
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=4
size=3
pad=1
activation=linear

[shortcut]
from=-3
activation=leaky

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=8
size=3
pad=1
activation=linear

[shortcut]
from=-3
activation=leaky

[convolutional]
batch_normalize=1
filters=8
size=1
activation=leaky

[route]
layers=-1,-2

[avgpool]

[connected]
output=3
activation=linear

[softmax]
""",
        (3, 8, 8),
        3,
        23,
    ),
    # [reorg] in a residual net with batch norm and subdivisions: space-to-depth (darknet's
    # inverse map), back, and a shortcut around both; its backward assigns the delta of a
    # layer the shortcut also reads
    "residual_bn_subdiv2_reorg": Case(
        """[net]
batch=6
subdivisions=2
height=8
width=8
channels=3
learning_rate=0.05
momentum=0.9
decay=0.0005
policy=poly
power=2
max_batches=50

[convolutional]
batch_normalize=1
filters=4
size=3
pad=1
activation=leaky

[reorg]
stride=2

[convolutional]
batch_normalize=1
filters=8
size=3
pad=1
activation=leaky

[reorg]
stride=2
reverse=1

[shortcut]
from=0
activation=leaky

[reorg]
extra=2

[connected]
output=3
activation=linear

[softmax]
""",
        (3, 8, 8),
        3,
        31,
    ),
}


def fixed_batch(case: Case, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Images in [0, 1) and labels, reproducible per case."""
    rng = np.random.default_rng(case.seed)
    x = rng.random((rows, *case.chw), dtype=np.float32)
    y = rng.integers(0, case.classes, size=rows)
    return x, y


@dataclass
class DarknetRun:
    losses: list[float]
    blobs: dict[str, np.ndarray]
    updates: dict[str, np.ndarray]
    seen: int


UPDATE_BUFFERS = {"biases": "bias_updates", "weights": "weight_updates", "scales": "scale_updates"}


def train_darknet(lib, case: Case, spec, x, y, iterations: int) -> DarknetRun:
    """srand(seed) + parse, then ``train_network`` on the fixed ``data`` per update."""
    dn.reset_rand_normal_spare(lib)
    dn.srand(case.seed)
    net = dn.parse_cfg_text(lib, case.cfg)
    try:
        onehot = np.zeros((x.shape[0], case.classes), dtype=np.float32)
        onehot[np.arange(x.shape[0]), y] = 1.0
        data, owners = dn.make_data(x.reshape(x.shape[0], -1), onehot)
        losses = [float(lib.train_network(net, data)) for _ in range(iterations)]
        del owners
        blobs, updates = {}, {}
        for shape in infer_shapes(spec):
            for index, blob in enumerate(shape.blobs):
                key = f"{shape.layer.name}/{index}"
                view = dn.layer_array(net, shape.index, blob.name)
                blobs[key] = view.copy().reshape(blob.shape)
                if blob.name in UPDATE_BUFFERS:
                    grad = dn.layer_array(net, shape.index, UPDATE_BUFFERS[blob.name])
                    updates[key] = grad.copy().reshape(blob.shape)
        return DarknetRun(losses, blobs, updates, dn.get_seen(net))
    finally:
        lib.free_network(net)


def compare(case_name: str, libdarknet, iterations: int = ITERATIONS) -> dict[str, float]:
    """Train both, assert agreement, return the maximum differences (for the record)."""
    case = CASES[case_name]
    run = load_config(f"{case_name}.cfg", text=case.cfg)
    batch = run.solver.minibatch * run.solver.accumulate
    x, y = fixed_batch(case, batch)
    theirs = train_darknet(libdarknet, case, run.net, x, y, iterations)
    trainer = run_fixed_batch(run, x, y, iterations, seed=case.seed)
    ours = [r.loss for r in trainer.history]
    assert trainer.seen == theirs.seen == iterations * batch
    loss_diff = float(np.max(np.abs(np.array(ours) - np.array(theirs.losses))))
    param_diff = 0.0
    blobs = dict(trainer.network.named_blobs())
    for key, expected in theirs.blobs.items():
        diff = float(np.max(np.abs(blobs[key] - expected)))
        assert diff <= TOLERANCE, f"{case_name}: blob {key} differs by {diff:.3g}"
        param_diff = max(param_diff, diff)
    momentum_rel = 0.0
    for key, expected in theirs.updates.items():
        layer, index = key.rsplit("/", 1)
        grad = trainer.network.grad(layer, int(index))
        scale = max(float(np.max(np.abs(expected))), 1e-3)
        rel = float(np.max(np.abs(grad - expected))) / scale
        assert rel <= 1e-3, f"{case_name}: momentum buffer {key} differs (relative {rel:.3g})"
        momentum_rel = max(momentum_rel, rel)
    assert loss_diff <= TOLERANCE, f"{case_name}: losses {ours} vs darknet {theirs.losses}"
    # the run actually trained: the loss moved and the weights left their start
    assert theirs.losses[-1] != theirs.losses[0]
    return {"params": param_diff, "loss": loss_diff, "momentum_rel": momentum_rel}


@pytest.mark.parametrize("case_name", sorted(CASES))
def test_weights_after_training_match_darknet(libdarknet, case_name, record_property):
    diffs = compare(case_name, libdarknet)
    for what, value in diffs.items():
        record_property(f"max_diff_{what}", value)


def test_dropout_masks_come_from_the_init_stream(libdarknet):
    """Guard: training the dropout net from another seed's stream (same initial weights)
    would NOT match, so the dropout case really checks the shared glibc stream."""
    case = CASES["connected_dropout_random_policy"]
    run = load_config("dropout.cfg", text=case.cfg)
    x, y = fixed_batch(case, run.solver.minibatch * run.solver.accumulate)
    theirs = train_darknet(libdarknet, case, run.net, x, y, 3)
    trainer = Trainer(run, seed=case.seed)
    trainer.rng.srand(case.seed + 1)  # same weights, other masks and rates
    chunks = iter([(x[:3], y[:3]), (x[3:], y[3:])] * 3)
    for _ in range(3):
        trainer.train_iteration(lambda: next(chunks))
    blobs = dict(trainer.network.named_blobs())
    worst = max(float(np.max(np.abs(blobs[k] - v))) for k, v in theirs.blobs.items())
    assert worst > 1e-3


def test_resume_from_darknet_weights_continues_the_schedule(libdarknet, tmp_path):
    """A ``.weights`` saved by darknet after 5 updates resumes at b = 6 (``seen`` from the
    header); with ``clear`` the schedule restarts at b = 1."""
    case = CASES["connected_leaky_softmax_steps"]
    run = load_config("steps.cfg", text=case.cfg)
    x, y = fixed_batch(case, 6)
    dn.reset_rand_normal_spare(libdarknet)
    dn.srand(case.seed)
    net = dn.parse_cfg_text(libdarknet, case.cfg)
    try:
        onehot = np.eye(case.classes, dtype=np.float32)[y]
        data, owners = dn.make_data(x.reshape(6, -1), onehot)
        for _ in range(5):
            libdarknet.train_network(net, data)
        path = tmp_path / "five.weights"
        libdarknet.save_weights(net, str(path).encode())
        del owners
    finally:
        libdarknet.free_network(net)
    resumed = Trainer(run, seed=case.seed, weights=str(path))
    assert (resumed.seen, resumed.iteration) == (30, 5)
    assert resumed.lr() == pytest.approx(0.05, rel=1e-6)  # b = 6: past steps=3 (x.5)
    cleared = Trainer(run, seed=case.seed, weights=str(path), clear=True)
    assert (cleared.seen, cleared.iteration) == (0, 0)
    assert cleared.lr() == pytest.approx(0.1, rel=1e-6)


REPO_CFGS = ("quickstart.cfg", "mnist_lenet.cfg", "cifar_small.cfg")


@pytest.mark.parametrize("cfg_name", REPO_CFGS)
def test_example_configs_train_like_darknet(libdarknet, cfg_name):
    """The shipped example cfgs (batch cut to 8 to stay fast), 5 updates each."""
    path = Path(__file__).resolve().parent.parent / "configs" / cfg_name
    text = re.sub(r"(?m)^batch=\d+$", "batch=8", path.read_text())
    run = load_config(cfg_name, text=text)
    chw = (run.net.input.channels, run.net.input.height, run.net.input.width)
    classes = math.prod(infer_shapes(run.net)[-1].output)  # the softmax width
    case = Case(text, chw, classes, 17)
    x, y = fixed_batch(case, run.solver.minibatch * run.solver.accumulate)
    theirs = train_darknet(libdarknet, case, run.net, x, y, 5)
    trainer = run_fixed_batch(run, x, y, 5, seed=case.seed)
    np.testing.assert_allclose([r.loss for r in trainer.history], theirs.losses, atol=TOLERANCE)
    blobs = dict(trainer.network.named_blobs())
    for key, expected in theirs.blobs.items():
        diff = float(np.max(np.abs(blobs[key] - expected)))
        assert diff <= TOLERANCE, f"{cfg_name}: blob {key} differs by {diff:.3g}"


def test_training_on_from_a_darknet_weights_file_matches_darknet(libdarknet, tmp_path):
    """N updates from a given ``.weights`` on a fixed batch: darknet ``load_network`` (seen
    from the header, momentum restarting at 0) against ``run_fixed_batch(weights=...)``; the
    dropout/random-policy net, so the glibc stream must also line up after the reload."""
    case = CASES["connected_dropout_random_policy"]
    run = load_config("dropout.cfg", text=case.cfg)
    x, y = fixed_batch(case, run.solver.minibatch * run.solver.accumulate)
    onehot = np.eye(case.classes, dtype=np.float32)[y]
    data, owners = dn.make_data(x.reshape(x.shape[0], -1), onehot)
    weights = tmp_path / "start.weights"
    cfg = tmp_path / "dropout.cfg"
    cfg.write_text(case.cfg)
    dn.reset_rand_normal_spare(libdarknet)
    dn.srand(case.seed)
    net = dn.parse_cfg_text(libdarknet, case.cfg)
    try:
        for _ in range(4):
            libdarknet.train_network(net, data)
        libdarknet.save_weights(net, str(weights).encode())
    finally:
        libdarknet.free_network(net)
    dn.reset_rand_normal_spare(libdarknet)
    dn.srand(case.seed + 100)
    net = libdarknet.load_network(str(cfg).encode(), str(weights).encode(), 0)
    try:
        losses = [float(libdarknet.train_network(net, data)) for _ in range(10)]
        theirs = {}
        for shape in infer_shapes(run.net):
            for index, blob in enumerate(shape.blobs):
                view = dn.layer_array(net, shape.index, blob.name)
                theirs[f"{shape.layer.name}/{index}"] = view.copy().reshape(blob.shape)
        seen = dn.get_seen(net)
    finally:
        libdarknet.free_network(net)
    del owners
    trainer = run_fixed_batch(run, x, y, 10, seed=case.seed + 100, weights=str(weights))
    assert trainer.seen == seen == 14 * x.shape[0]
    np.testing.assert_allclose([r.loss for r in trainer.history], losses, atol=TOLERANCE)
    blobs = dict(trainer.network.named_blobs())
    for key, expected in theirs.items():
        diff = float(np.max(np.abs(blobs[key] - expected)))
        assert diff <= TOLERANCE, f"blob {key} differs by {diff:.3g}"
