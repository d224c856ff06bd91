"""darknet SGD against the real darknet library (``update_network`` in libdarknet).

A cfg with a batch-normalised conv layer and a connected layer with ``learning_rate=0.3`` is
parsed both by libdarknet and by our config reader; the parameter blobs (``engine.model.shapes``)
become our segment table, with darknet's multipliers (biases/scales undecayed, the layer lr
scale as ``lr_mult``). Both sides get the same random ``*_updates`` contributions; after each
``update_network`` with a changing ``learning_rate`` the weights, biases, scales and the
``m·U`` buffers must be identical BIT FOR BIT (the Debian build has no FMA; darknet's CPU
update is element-wise, so there is no summation order to differ).

Also checks the quirk that dnupdate deliberately does not copy: with ``adam=1`` the CPU build
still runs SGD.
"""

from __future__ import annotations

import numpy as np
import pytest

from dnupdate.engine.config import load_config
from dnupdate.engine.model.shapes import infer_shapes
from dnupdate.engine.update.rules import make_optimizer
from tests import libdarknet as dn

pytestmark = pytest.mark.darknet

CFG = """[net]
batch=6
subdivisions=2
height=5
width=5
channels=2
learning_rate=0.01
momentum=0.9
decay=0.0005
policy=constant
{extra}

[convolutional]
filters=3
size=3
stride=1
pad=1
batch_normalize=1
activation=leaky

[connected]
output=4
learning_rate=0.3
activation=linear

[softmax]
"""

UPDATE_BUFFER = {"biases": "bias_updates", "scales": "scale_updates", "weights": "weight_updates"}
LRS = (0.01, 0.01, 0.1, 0.003, 0.0, 0.05)


class Seg:
    def __init__(self, offset, blob, layer_index):
        self.offset, self.size = offset, blob.size
        self.lr_mult, self.decay_mult = blob.mult.lr_mult, blob.mult.decay_mult
        self.learnable, self.name, self.layer = blob.learnable, blob.name, layer_index


def segments(spec) -> tuple[list[Seg], int]:
    segs, offset = [], 0
    for shape in infer_shapes(spec.net):
        for blob in shape.blobs:
            segs.append(Seg(offset, blob, shape.index))
            offset += blob.size
    return segs, offset


@pytest.fixture
def darknet_net(libdarknet):
    made = []

    def parse(text: str):
        net = dn.parse_cfg_text(libdarknet, text)
        made.append(net)
        return net

    yield parse
    for net in made:
        libdarknet.free_network(net)


def run_both(libdarknet, net, spec, steps: int, seed: int = 0):
    segs, total = segments(spec)
    rng = np.random.default_rng(seed)
    params = np.zeros(total, np.float32)
    grads = np.zeros(total, np.float32)
    for s in segs:  # start from darknet's own initial values, random biases/scales
        view = dn.layer_array(net, s.layer, s.name)
        if s.name != "weights":
            view[:] = rng.normal(0, 0.5, s.size).astype(np.float32)
        params[s.offset : s.offset + s.size] = view
    opt = make_optimizer(spec.solver, segs, total)
    for it in range(steps):
        lr = LRS[it % len(LRS)]
        for s in segs:
            if s.learnable:
                g = rng.normal(0, 1, s.size).astype(np.float32)
                dn.layer_array(net, s.layer, UPDATE_BUFFER[s.name])[:] += g
                grads[s.offset : s.offset + s.size] += g
        net.contents.learning_rate = lr
        libdarknet.update_network(net)
        opt.step(params, grads, lr, it)
    return segs, params, grads


def test_darknet_sgd_bit_exact_against_libdarknet(libdarknet, darknet_net):
    text = CFG.format(extra="")
    spec = load_config("conformance.cfg", text=text)
    net = darknet_net(text)
    segs, params, grads = run_both(libdarknet, net, spec, steps=6)
    for s in segs:
        ours = params[s.offset : s.offset + s.size]
        theirs = dn.layer_array(net, s.layer, s.name)
        assert ours.tobytes() == theirs.tobytes(), f"layer {s.layer} {s.name}"
        if s.learnable:
            buffer = dn.layer_array(net, s.layer, UPDATE_BUFFER[s.name])
            ours_u = grads[s.offset : s.offset + s.size]
            assert ours_u.tobytes() == buffer.tobytes(), f"layer {s.layer} {s.name} m·U"


def test_libdarknet_cpu_runs_sgd_when_adam_is_set(libdarknet, darknet_net):
    """darknet quirk (spec §6.2): the CPU build ignores adam=1; our darknet SGD reproduces
    it exactly, so the difference of our CPU Adam is deliberate."""
    text = CFG.format(extra="adam=1")
    net = darknet_net(text)
    assert net.contents.adam == 1
    spec = load_config("conformance.cfg", text=CFG.format(extra=""))  # SGD on our side
    segs, params, _ = run_both(libdarknet, net, spec, steps=3)
    for s in segs:
        theirs = dn.layer_array(net, s.layer, s.name)
        assert params[s.offset : s.offset + s.size].tobytes() == theirs.tobytes()
