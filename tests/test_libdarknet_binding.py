"""The ctypes binding's struct layout, cross-checked on a parsed network.

If a field were misplaced, the values below (read from ``network`` and from each ``layer`` of
the array, whose stride is ``sizeof(layer)``) would be garbage.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests import libdarknet as dn

pytestmark = pytest.mark.darknet

CFG = """[net]
batch=8
subdivisions=2
height=8
width=8
channels=3
learning_rate=0.05
momentum=0.8
decay=0.0005
policy=steps
steps=10,20,30
scales=.1,.2,.3
burn_in=7
power=3
max_batches=40

[convolutional]
batch_normalize=1
filters=6
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[dropout]
probability=.25

[connected]
output=10
activation=relu

[softmax]
groups=1
"""


@pytest.fixture()
def net(libdarknet):
    handle = dn.parse_cfg_text(libdarknet, CFG)
    yield handle
    libdarknet.free_network(handle)


def test_network_fields(net):
    n = net.contents
    assert (n.n, n.batch, n.subdivisions) == (5, 4, 2)
    assert (n.h, n.w, n.c, n.inputs) == (8, 8, 3, 192)
    assert n.outputs == 10
    assert n.policy == dn.POLICY["steps"]
    assert n.learning_rate == np.float32(0.05)
    assert (n.momentum, n.decay, n.power) == (np.float32(0.8), np.float32(0.0005), 3.0)
    assert (n.burn_in, n.max_batches, n.num_steps) == (7, 40, 3)
    assert list(n.steps[:3]) == [10, 20, 30]
    assert list(n.scales[:3]) == pytest.approx([0.1, 0.2, 0.3])
    assert dn.get_seen(net) == 0


def test_layer_fields(net):
    types = [dn.LAYER_TYPES[dn.layer(net, i).type] for i in range(5)]
    assert types == ["CONVOLUTIONAL", "MAXPOOL", "DROPOUT", "CONNECTED", "SOFTMAX"]
    conv, pool, drop, fc, soft = (dn.layer(net, i) for i in range(5))
    assert (conv.batch, conv.n, conv.size, conv.stride, conv.pad) == (4, 6, 3, 1, 1)
    assert (conv.out_h, conv.out_w, conv.out_c, conv.outputs) == (8, 8, 6, 384)
    assert (conv.nweights, conv.nbiases, conv.batch_normalize) == (162, 6, 1)
    assert conv.activation == dn.ACTIVATION["leaky"]
    assert conv.learning_rate_scale == 1.0
    assert (pool.out_h, pool.out_w, pool.outputs, pool.size) == (4, 4, 96, 2)
    assert drop.probability == np.float32(0.25)
    assert drop.scale == np.float32(1 / (1 - 0.25))
    assert (fc.inputs, fc.outputs, fc.activation) == (96, 10, dn.ACTIVATION["relu"])
    assert (soft.inputs, soft.outputs, soft.groups) == (10, 10, 1)


def test_layer_arrays(net):
    weights = dn.layer_array(net, 0, "weights")
    assert weights.shape == (162,) and weights.dtype == np.float32
    assert np.all(np.isfinite(weights)) and weights.std() > 0
    np.testing.assert_array_equal(dn.layer_array(net, 0, "scales"), np.ones(6, np.float32))
    np.testing.assert_array_equal(dn.layer_array(net, 0, "biases"), np.zeros(6, np.float32))
    fc = dn.layer_array(net, 3, "weights")
    assert fc.shape == (960,)
    bound = np.sqrt(2.0 / 96) * (1 + 1e-6)
    assert np.abs(fc).max() <= bound and fc.std() > 0
    weights[0] = 1.5  # a view, not a copy
    assert dn.layer_array(net, 0, "weights")[0] == np.float32(1.5)
    with pytest.raises(ValueError):
        dn.layer_array(net, 1, "weights")


def test_seen_and_rate(libdarknet, net):
    dn.set_seen(net, 12 * 8 + 5)
    assert libdarknet.get_current_batch(net) == 12
    rate = libdarknet.get_current_rate(net)
    assert rate == pytest.approx(0.05 * 0.1, rel=1e-6)


def test_predict_and_train_run(libdarknet, net):
    """network_predict returns the softmax output; train_network runs one update."""
    libdarknet.set_batch_network(net, 1)
    image = np.linspace(0, 1, 192, dtype=np.float32)
    out = libdarknet.network_predict(net, image.ctypes.data_as(dn.POINTER(dn.c_float)))
    probabilities = dn.float_array(out, 10)
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    libdarknet.set_batch_network(net, 4)
    inputs = np.random.default_rng(0).random((8, 192), dtype=np.float32)
    targets = np.eye(10, dtype=np.float32)[np.arange(8) % 10]
    data, _owners = dn.make_data(inputs, targets)
    loss = libdarknet.train_network(net, data)
    assert np.isfinite(loss) and loss > 0
    assert dn.get_seen(net) == 8
    assert net.contents.t[0] == 1
