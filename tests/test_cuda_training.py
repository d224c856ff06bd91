"""Training on the CUDA backend agrees with the CPU backend (1e-5 relative after several
updates), for a small darknet net and a small Caffe net, every update rule, and darknet SGD
against libdarknet. Tiny shapes: these run under the numba-cuda simulator in CI."""

from __future__ import annotations

import numpy as np
import pytest

from dnupdate.engine.config import load_config
from dnupdate.engine.model.network import Network
from dnupdate.engine.training.step import Trainer
from dnupdate.engine.update.rules import make_optimizer
from tests import libdarknet as dn
from tests.test_cuda_support import backends, requires_cuda
from tests.test_optim_conformance import CFG as CONFORMANCE_CFG
from tests.test_optim_conformance import LRS as CONFORMANCE_LRS
from tests.test_optim_conformance import UPDATE_BUFFER, segments
from tests.test_optim_rules import CAFFE_TYPES, caffe_solver, darknet_solver, layout

pytestmark = requires_cuda

RTOL, ATOL = 1e-5, 1e-6

DARKNET_CFG = """[net]
batch=4
subdivisions=2
height=6
width=6
channels=2
learning_rate=0.1
momentum=0.9
decay=0.0005
policy=constant
max_batches=10
{extra}

[convolutional]
filters=3
size=3
stride=1
pad=1
batch_normalize=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
filters=4
size=1
stride=1
pad=0
activation=logistic

[connected]
output=5
activation=relu

[dropout]
probability=.3

[connected]
output=3
activation=linear

[softmax]
"""

CAFFE_SOLVER = """base_lr: 0.05
lr_policy: "fixed"
momentum: 0.9
weight_decay: 0.004
max_iter: 10
iter_size: 2
type: "{solver}"
random_seed: 3
net_param {{
  name: "tiny"
  layer {{ name: "data" type: "Input" top: "data" top: "label"
          input_param {{ shape {{ dim: 2 dim: 2 dim: 5 dim: 5 }} shape {{ dim: 2 }} }} }}
  layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"
          convolution_param {{ num_output: 3 kernel_size: 3 pad: 1 bias_term: false
                              weight_filler {{ type: "gaussian" std: 0.3 }} }} }}
  layer {{ name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }}
  layer {{ name: "scale" type: "Scale" bottom: "conv" top: "conv"
          scale_param {{ bias_term: true }} }}
  layer {{ name: "relu" type: "ReLU" bottom: "conv" top: "conv"
          relu_param {{ negative_slope: 0.1 }} }}
  layer {{ name: "pool" type: "Pooling" bottom: "conv" top: "pool"
          pooling_param {{ pool: AVE kernel_size: 3 stride: 2 pad: 1 }} }}
  layer {{ name: "drop" type: "Dropout" bottom: "pool" top: "pool"
          dropout_param {{ dropout_ratio: 0.25 }} }}
  layer {{ name: "ip1" type: "InnerProduct" bottom: "pool" top: "ip1"
          inner_product_param {{ num_output: 4 weight_filler {{ type: "xavier" }} }} }}
  layer {{ name: "tanh" type: "TanH" bottom: "ip1" top: "ip1" }}
  layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
          inner_product_param {{ num_output: 3 weight_filler {{ type: "xavier" }} }} }}
  layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }}
  layer {{ name: "acc" type: "Accuracy" bottom: "ip2" bottom: "label" top: "acc"
          include {{ phase: TEST }} }}
}}
"""


def train_both(run, steps: int, batch, semantics: str | None = None):
    """Train ``steps`` updates on each backend from the same seed; returns
    ``{name: (params, grads, losses, trainer)}`` with host arrays."""
    out = {}
    for name, backend in backends().items():
        trainer = Trainer(run, seed=3, backend=backend, semantics=semantics)
        losses = [trainer.train_iteration(batch).loss for _ in range(steps)]
        host = backend.to_host
        out[name] = (host(trainer.network.params), host(trainer.network.grads), losses, trainer)
    return out


def assert_agree(found) -> None:
    cpu, gpu = found["cpu"], found["cuda"]
    np.testing.assert_allclose(gpu[0], cpu[0], rtol=RTOL, atol=ATOL, err_msg="params")
    np.testing.assert_allclose(gpu[1], cpu[1], rtol=RTOL, atol=ATOL, err_msg="grads")
    np.testing.assert_allclose(gpu[2], cpu[2], rtol=RTOL, err_msg="losses")
    assert not np.array_equal(cpu[0], found["cpu"][3].network.params * 0)  # trained something


def fixed_batch(shape, classes: int, count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.random((count, *shape), dtype=np.float32)
    y = rng.integers(0, classes, count)
    return lambda: (x, y)


@pytest.mark.parametrize("extra", ["", "adam=1"])
def test_darknet_net_trains_the_same_on_both_backends(extra):
    run = load_config("tiny.cfg", text=DARKNET_CFG.format(extra=extra))
    found = train_both(run, 3, fixed_batch((2, 6, 6), 3, 2))
    assert_agree(found)
    assert found["cuda"][2][0] != found["cuda"][2][-1]


@pytest.mark.parametrize("solver", ["SGD", "Adam"])
def test_caffe_net_trains_the_same_on_both_backends(tmp_path, solver):
    path = tmp_path / "solver.prototxt"
    path.write_text(CAFFE_SOLVER.format(solver=solver))
    run = load_config(str(path))
    found = train_both(run, 3, fixed_batch((2, 5, 5), 3, 2))
    assert_agree(found)
    state = {}
    for name, (_, _, _, trainer) in found.items():  # BN running sums live on the device too
        state[name] = {
            k: trainer.backend.to_host(v) for k, v in trainer.network.state_arrays().items()
        }
    for key, value in state["cpu"].items():
        np.testing.assert_allclose(state["cuda"][key], value, rtol=RTOL, atol=ATOL, err_msg=key)


def test_caffe_test_phase_shares_weights_and_reports_accuracy(tmp_path):
    path = tmp_path / "solver.prototxt"
    path.write_text(CAFFE_SOLVER.format(solver="SGD"))
    run = load_config(str(path))
    rng = np.random.default_rng(1)
    x = rng.random((2, 2, 5, 5), dtype=np.float32)
    labels = np.array([0, 2])
    scalars = {}
    for name, backend in backends().items():
        train = Network(run.net, backend, 2, "caffe")
        values = np.abs(rng.normal(0, 0.3, train.params.size)).astype(np.float32)
        backend.copy_from_host(values, train.params)  # positive: BN variance sums
        test = Network(run.net, backend, 2, "caffe", phase="test", share_params_with=train)
        test.set_truth(labels)
        test.forward(x, train=False)
        scalars[name] = test.scalars
        rng = np.random.default_rng(1)
        rng.random((2, 2, 5, 5), dtype=np.float32)
    assert set(scalars["cuda"]) == {"loss", "acc"}
    for key, value in scalars["cpu"].items():
        assert scalars["cuda"][key] == pytest.approx(value, rel=RTOL)


# ---- update rules (the update-rule issue's conformance cases, on the device) -----------------


def run_rule(solver, kind: str, backend, steps: int = 5):
    """The optimizer on ``backend`` driven by a fixed random gradient stream."""
    rng = np.random.default_rng(11)
    segs = layout(kind)
    total = segs[-1].offset + segs[-1].size
    params, grads = backend.zeros((total,)), backend.zeros((total,))
    backend.copy_from_host(rng.normal(0, 0.5, total).astype(np.float32), params)
    opt = make_optimizer(solver, segs, total, backend=backend)
    stats = []
    for it in range(steps):
        host = backend.to_host(grads) if kind == "darknet" else np.zeros(total, np.float32)
        for _ in range(solver.accumulate):
            host += rng.normal(0, 1, total).astype(np.float32)
        backend.copy_from_host(host, grads)
        stats.append(opt.step(params, grads, (0.1, 0.02, 0.05)[it % 3], it))
    return backend.to_host(params), backend.to_host(grads), opt.state_arrays(), stats


def assert_rule_agrees(solver, kind: str) -> None:
    (cpu, gpu) = (run_rule(solver, kind, b) for b in backends().values())
    for what, a, b in (("params", cpu[0], gpu[0]), ("grads", cpu[1], gpu[1])):
        np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL, err_msg=what)
    assert cpu[2].keys() == gpu[2].keys()
    for key in cpu[2]:
        np.testing.assert_allclose(gpu[2][key], cpu[2][key], rtol=RTOL, atol=ATOL, err_msg=key)
    for a, b in zip(cpu[3], gpu[3], strict=True):
        np.testing.assert_allclose(b.step_norms, a.step_norms, rtol=RTOL)
        np.testing.assert_allclose(b.weight_norms, a.weight_norms, rtol=RTOL)
        assert (a.grad_norm is None) == (b.grad_norm is None)
        if a.grad_norm is not None:
            assert b.grad_norm == pytest.approx(a.grad_norm, rel=RTOL)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_darknet_rules_on_device(optimizer):
    assert_rule_agrees(darknet_solver(optimizer), "darknet")


@pytest.mark.parametrize("optimizer", list(CAFFE_TYPES))
def test_caffe_rules_on_device_with_iter_size_l1_and_clipping(optimizer):
    solver = caffe_solver(optimizer, accumulate=2, regularization="L1", clip_gradients=3.0)
    assert_rule_agrees(solver, "caffe")


def test_caffe_sgd_lr_outside_on_device():
    assert_rule_agrees(caffe_solver("sgd", momentum_style="lr_outside"), "caffe")


def test_optimizer_made_without_backend_follows_device_arrays():
    cuda = backends()["cuda"]
    solver = caffe_solver("adam")
    segs = layout("caffe")
    total = segs[-1].offset + segs[-1].size
    params, grads = cuda.zeros((total,)), cuda.zeros((total,))
    cuda.fill(params, 0.5)
    cuda.fill(grads, 0.25)
    opt = make_optimizer(solver, segs, total)
    opt.step(params, grads, 0.1, 0)
    assert opt.backend.name == "cuda"
    assert np.all(opt.state_arrays()["history"][segs[0].offset : segs[0].size] != 0)


def test_darknet_sgd_on_device_against_libdarknet(libdarknet):
    text = CONFORMANCE_CFG.format(extra="")
    spec = load_config("conformance.cfg", text=text)
    net = dn.parse_cfg_text(libdarknet, text)
    try:
        cuda = backends()["cuda"]
        segs, total = segments(spec)
        rng = np.random.default_rng(0)
        params_host = np.zeros(total, np.float32)
        for s in segs:
            view = dn.layer_array(net, s.layer, s.name)
            if s.name != "weights":
                view[:] = rng.normal(0, 0.5, s.size).astype(np.float32)
            params_host[s.offset : s.offset + s.size] = view
        params, grads = cuda.zeros((total,)), cuda.zeros((total,))
        cuda.copy_from_host(params_host, params)
        opt = make_optimizer(spec.solver, segs, total, backend=cuda)
        for it in range(4):
            lr = CONFORMANCE_LRS[it % len(CONFORMANCE_LRS)]
            host = cuda.to_host(grads)
            for s in segs:
                if s.learnable:
                    g = rng.normal(0, 1, s.size).astype(np.float32)
                    dn.layer_array(net, s.layer, UPDATE_BUFFER[s.name])[:] += g
                    host[s.offset : s.offset + s.size] += g
            cuda.copy_from_host(host, grads)
            net.contents.learning_rate = lr
            libdarknet.update_network(net)
            opt.step(params, grads, lr, it)
        ours, ours_u = cuda.to_host(params), cuda.to_host(grads)
        for s in segs:
            theirs = dn.layer_array(net, s.layer, s.name)
            np.testing.assert_allclose(
                ours[s.offset : s.offset + s.size], theirs, rtol=RTOL, atol=ATOL
            )
            if s.learnable:
                buffer = dn.layer_array(net, s.layer, UPDATE_BUFFER[s.name])
                np.testing.assert_allclose(
                    ours_u[s.offset : s.offset + s.size], buffer, rtol=RTOL, atol=ATOL
                )
    finally:
        libdarknet.free_network(net)
