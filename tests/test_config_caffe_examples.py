"""The Caffe example configs in configs/ load with the values of caffe spec section 11, and
their YAML versions give the same spec."""

from pathlib import Path

import pytest

from dnupdate.engine.config import load_config
from dnupdate.engine.spec import (
    AccuracySpec,
    ActivationSpec,
    ConnectedSpec,
    ConvSpec,
    FillerSpec,
    InputSpec,
    Origin,
    ParamMult,
    PoolSpec,
    SoftmaxLossSpec,
)

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
BIAS_2X = (ParamMult(1.0, 1.0), ParamMult(2.0, 1.0))
CONSTANT_0 = FillerSpec(type="constant", value=0.0)


def load(name: str):
    return load_config(str(CONFIGS / name))


def by_name(run):
    return {layer.name: layer for layer in run.net.layers}


def line_of(path: Path, needle: str, after: str | None = None) -> int:
    """1-based line of the first line containing ``needle`` (after the line containing
    ``after``), computed from the file so that the test does not trust the parser."""
    lines = path.read_text().splitlines()
    start = 0
    if after is not None:
        start = next(i for i, line in enumerate(lines) if after in line)
    return next(i + 1 for i in range(start, len(lines)) if needle in lines[i])


def test_lenet_solver_values():
    run = load("lenet_solver.prototxt")
    solver, schedule = run.solver, run.schedule
    assert run.format == "caffe"
    assert (schedule.policy, schedule.base_lr, schedule.gamma, schedule.power) == (
        "inv",
        0.01,
        0.0001,
        0.75,
    )
    assert schedule.convention == "caffe"
    assert schedule.max_iter == 10000 and solver.max_iter == 10000
    assert solver.semantics == "caffe" and solver.optimizer == "sgd"
    assert (solver.momentum, solver.decay) == (0.9, 0.0005)
    assert (solver.momentum_style, solver.grad_reduction) == ("lr_inside", "mean")
    assert (solver.test_iter, solver.test_interval, solver.display) == (100, 500, 100)
    assert (solver.snapshot, solver.snapshot_prefix) == (5000, "examples/mnist/lenet")
    assert (solver.minibatch, solver.accumulate, solver.batch) == (64, 1, 64)
    assert run.raw["lr_policy"] == "inv" and run.raw["base_lr"] == "0.01"


def test_lenet_net_layers():
    run = load("lenet_solver.prototxt")
    assert run.net.name == "LeNet"
    assert run.net.input == InputSpec(1, 28, 28)
    layers = by_name(run)
    assert list(layers) == [
        "conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2", "accuracy", "loss"
    ]  # fmt: skip
    for name, filters in (("conv1", 20), ("conv2", 50)):
        conv = layers[name]
        assert isinstance(conv, ConvSpec)
        assert (conv.filters, conv.kernel_h, conv.kernel_w, conv.stride_h, conv.pad_h) == (
            filters, 5, 5, 1, 0
        )  # fmt: skip
        assert conv.weight_filler.type == "xavier" and conv.bias_filler == CONSTANT_0
        assert conv.params == BIAS_2X and conv.activation == "linear"
        assert conv.param_order == "caffe"
    for name in ("pool1", "pool2"):
        pool = layers[name]
        assert isinstance(pool, PoolSpec)
        assert (pool.method, pool.kernel_h, pool.stride_h, pool.size_rule) == ("max", 2, 2, "ceil")
    for name, outputs in (("ip1", 500), ("ip2", 10)):
        ip = layers[name]
        assert isinstance(ip, ConnectedSpec)
        assert ip.outputs == outputs and ip.params == BIAS_2X
        assert ip.weight_filler.type == "xavier"
    assert isinstance(layers["relu1"], ActivationSpec) and layers["relu1"].activation == "relu"
    assert isinstance(layers["accuracy"], AccuracySpec)
    assert layers["accuracy"].phases == frozenset({"test"})
    assert isinstance(layers["loss"], SoftmaxLossSpec)
    assert layers["loss"].phases == frozenset({"train", "test"})
    assert layers["loss"].normalization == "valid" and layers["loss"].loss_weight == 1.0


def test_lenet_data():
    data = load("lenet_solver.prototxt").data
    assert data.train.source == "examples/mnist/mnist_train_lmdb"
    assert (data.train.batch_size, data.train.backend, data.train.scale) == (64, "lmdb", 0.00390625)
    assert data.test.source == "examples/mnist/mnist_test_lmdb"
    assert data.test.batch_size == 100
    assert data.train.shuffle is False and data.train.mean_file is None
    assert data.classes == 10


def test_lenet_origins_point_at_solver_and_net_lines():
    run = load("lenet_solver.prototxt")
    solver_file = CONFIGS / "lenet_solver.prototxt"
    net_file = CONFIGS / "lenet_train_test.prototxt"
    momentum_line = line_of(solver_file, "momentum:")
    assert run.origins["solver.momentum"] == Origin(str(solver_file), momentum_line)
    assert run.origins["schedule.base_lr"].line == line_of(solver_file, "base_lr:")
    assert str(run.origins["solver.optimizer"]) == "default"
    assert str(run.origins["schedule.step"]) == "default"
    conv2_kernel = line_of(net_file, "kernel_size", after='name: "conv2"')
    assert run.origins["net.layers.2.kernel_h"] == Origin(str(net_file), conv2_kernel)
    assert run.origins["solver.minibatch"].line == line_of(net_file, "batch_size: 64")
    conv1_line = line_of(net_file, 'name: "conv1"') - 1
    assert run.net.layers[0].origin == Origin(str(net_file), conv1_line)


def test_cifar10_quick_values():
    run = load("cifar10_quick_solver.prototxt")
    assert (run.schedule.policy, run.schedule.base_lr, run.schedule.power) == ("fixed", 0.001, 0.0)
    assert (run.solver.decay, run.solver.max_iter, run.solver.snapshot) == (0.004, 4000, 4000)
    assert run.solver.minibatch == 100
    assert run.net.name == "CIFAR10_quick" and run.net.input == InputSpec(3, 32, 32)
    layers = by_name(run)
    assert list(layers) == [
        "conv1", "pool1", "relu1", "conv2", "relu2", "pool2", "conv3", "relu3", "pool3",
        "ip1", "ip2", "accuracy", "loss",
    ]  # fmt: skip
    stds = {"conv1": 0.0001, "conv2": 0.01, "conv3": 0.01, "ip1": 0.1, "ip2": 0.1}
    for name, std in stds.items():
        filler = layers[name].weight_filler
        assert (filler.type, filler.std) == ("gaussian", std)
        assert layers[name].params == BIAS_2X
    for name, filters in (("conv1", 32), ("conv2", 32), ("conv3", 64)):
        conv = layers[name]
        assert (conv.filters, conv.kernel_h, conv.pad_h, conv.pad_w, conv.stride_h) == (
            filters, 5, 2, 2, 1
        )  # fmt: skip
    methods = {name: layers[name].method for name in ("pool1", "pool2", "pool3")}
    assert methods == {"pool1": "max", "pool2": "ave", "pool3": "ave"}
    assert all(layers[n].kernel_h == 3 and layers[n].stride_h == 2 for n in methods)
    assert (layers["ip1"].outputs, layers["ip2"].outputs) == (64, 10)
    data = run.data
    assert data.train.mean_file == "examples/cifar10/mean.binaryproto"
    assert data.train.scale == 1.0 and data.train.source.endswith("cifar10_train_lmdb")
    assert data.test.source.endswith("cifar10_test_lmdb") and data.classes == 10


def test_cifar10_quick_lr1_solver():
    first = load("cifar10_quick_solver.prototxt")
    second = load("cifar10_quick_solver_lr1.prototxt")
    assert second.schedule.base_lr == 0.0001
    assert (second.solver.max_iter, second.solver.snapshot) == (5000, 5000)
    assert second.raw["snapshot_format"] == "HDF5"
    assert second.net == first.net and second.data == first.data


@pytest.mark.parametrize("stem", ["lenet_solver", "cifar10_quick_solver"])
def test_yaml_version_equals_prototxt(stem):
    text_run = load(f"{stem}.prototxt")
    yaml_run = load(f"{stem}.yaml")
    assert yaml_run.net == text_run.net
    assert yaml_run.solver == text_run.solver
    assert yaml_run.schedule == text_run.schedule
    assert yaml_run.data == text_run.data
    assert yaml_run.raw == text_run.raw
    assert yaml_run.origins["schedule.base_lr"].file.endswith(".yaml")
    assert yaml_run.origins["schedule.base_lr"].line == line_of(CONFIGS / f"{stem}.yaml", "base_lr")
