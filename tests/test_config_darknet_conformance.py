"""The darknet cfg reader against the real library: ``parse_network_cfg`` on the same text
must give the same [net] values, layer hyper-parameters and layer output shapes.

Only cfgs darknet itself accepts are fed to it (it calls ``exit()`` on errors). Batches are
shrunk to keep the library's buffers small.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dnupdate.engine.config.darknet import darknet_output_shapes, load_darknet
from tests import libdarknet as binding

pytestmark = pytest.mark.darknet

REPO = Path(__file__).resolve().parent.parent
DEBIAN_DIR = Path("/usr/share/darknet/cfg")

KIND_TO_TYPE = {
    "conv": "CONVOLUTIONAL",
    "connected": "CONNECTED",
    "dropout": "DROPOUT",
    "softmax": "SOFTMAX",
    "cost": "COST",
    "batchnorm": "BATCHNORM",
    "shortcut": "SHORTCUT",
    "route": "ROUTE",
}

NET = "[net]\nbatch=4\nheight=10\nwidth=10\nchannels=3\nmax_batches=20\n"
EDGE_CASES = {
    "whitespace": NET.replace("batch=4", " ba tch = 4 ")
    + "learning_rate = 0 .5\npolicy = steps\nsteps = 3 , 6\nscales = .1, .2\n"
    "[convolutional]\nfilters = 4\nsize= 3\npad =1\nactivation = leaky\n[softmax]\n",
    "duplicates": NET + "momentum=.5\nmomentum=.7\n"
    "[connected]\noutput=3\noutput=5\nactivation=linear\n[softmax]\n",
    "inline_hash_number": NET + "decay=.01#x\nburn_in=7;y\n"
    "[convolutional]\nfilters=2#three\nsize=3\n[softmax]\n",
    "comments_and_empty_value": NET + "# policy=poly\n;momentum=.1\ngamma=\n"
    "[connected]\noutput=2\n[softmax]\n",
    "valueless_key": NET + "[convolutional]\nsize=3\npad\npad=1\nfilters=2\n[softmax]\n",
    "aliases": NET + "[conv]\nfilters=3\nsize=3\nstride=2\n[max]\n[avg]\n[conn]\noutput=4\n"
    "[soft]\ngroups=2\n",
    "pad_beats_padding": NET + "[convolutional]\nsize=5\npad=1\npadding=4\n"
    "[convolutional]\nsize=1\npad=1\n[convolutional]\nsize=3\npadding=2\nstride=3\n[softmax]\n",
    "maxpool_defaults": NET + "[maxpool]\nsize=2\nstride=2\n[maxpool]\nstride=3\n"
    "[maxpool]\nsize=3\n[maxpool]\nsize=2\nstride=1\npadding=0\n[softmax]\n",
    "odd_batch": NET.replace("batch=4", "batch=10") + "subdivisions=3\ntime_steps=2\n"
    "[connected]\n[softmax]\n",
    "unknown_names": NET + "policy=cosinus\n[connected]\nactivation=swish\n[cost]\ntype=huber\n",
    "policies_step": NET + "policy=step\nstep=5\nscale=.5\n[connected]\n[softmax]\n",
    "policies_sigmoid": NET + "policy=sigmoid\ngamma=.1\nstep=9\n[connected]\n[softmax]\n",
    "policies_exp_adam": NET + "policy=exp\ngamma=.9\nadam=1\nB1=.8\neps=.001\n"
    "[connected]\n[softmax]\n",
    "inputs_only": "[net]\ninputs=6\nbatch=2\n[connected]\noutput=3\nbatch_normalize=1\n"
    "learning_rate=.5\nstopbackward=1\n[dropout]\nprobability=.3\n[softmax]\nnoloss=1\n"
    "temperature=2\n[cost]\ntype=smooth\nscale=.5\n",
    "dontsave": NET + "[convolutional]\nbatch_normalize=1\ngroups=3\nfilters=6\ndontsave=1\n"
    "dontload=1\n[batchnorm]\n[avgpool]\n[softmax]\n",
    # graph layers: relative and absolute indices, shortcut across sizes and channel counts
    # (darknet's stride/sample rule), routes of one or several layers, a flat route
    "graph": NET + "[convolutional]\nfilters=4\nsize=3\npad=1\n[convolutional]\nfilters=6\n"
    "size=3\nstride=2\npad=1\n[shortcut]\nfrom=0\nactivation=leaky\nalpha=.5\nbeta=2\n"
    "[convolutional]\nfilters=3\nsize=1\n[shortcut]\nfrom=-4\n[route]\nlayers=-1,1\n"
    "[route]\nlayers=0\n[route]\nlayers=1, -2,4\n[connected]\noutput=3\n[softmax]\n",
    "graph_flat_route": NET + "[convolutional]\nfilters=2\nsize=3\npad=1\n[maxpool]\nsize=2\n"
    "stride=2\n[route]\nlayers=-1,-2\n[connected]\noutput=2\n[softmax]\n",
}


def shrink_batch(text: str) -> str:
    """batch=2, subdivisions=1 in [net]: the same layers with small buffers."""
    text = re.sub(r"(?m)^[ \t]*batch[ \t]*=.*$", "batch=2", text)
    return re.sub(r"(?m)^[ \t]*subdivisions[ \t]*=.*$", "subdivisions=1", text)


def cases() -> list[tuple[str, str]]:
    out = list(EDGE_CASES.items())
    for path in sorted((REPO / "configs").glob("*.cfg")):
        out.append((path.name, shrink_batch(path.read_text())))
    for name in ("cifar.cfg", "cifar.test.cfg", "tiny.cfg", "darknet.cfg"):
        if (DEBIAN_DIR / name).exists():
            out.append((name, shrink_batch((DEBIAN_DIR / name).read_text())))
    return out


def assert_net_matches(net, spec) -> None:
    solver, schedule = spec.solver, spec.schedule
    assert net.batch == solver.minibatch and net.subdivisions == solver.accumulate
    assert (net.learning_rate, net.momentum, net.decay) == (
        schedule.base_lr,
        solver.momentum,
        solver.decay,
    )
    assert (net.power, net.burn_in, net.max_batches) == (
        schedule.power,
        schedule.burn_in,
        schedule.max_iter,
    )
    assert binding.POLICIES[net.policy] == schedule.policy
    if schedule.policy == "steps":
        count = net.num_steps
        assert tuple(net.steps[i] for i in range(count)) == schedule.steps
        assert tuple(net.scales[i] for i in range(count)) == schedule.scales
    if schedule.policy in ("step", "sigmoid"):
        assert net.step == schedule.step
    if schedule.policy == "step":
        assert net.scale == schedule.scale
    if schedule.policy in ("exp", "sigmoid"):
        assert net.gamma == schedule.gamma
    assert bool(net.adam) == (solver.optimizer == "adam")
    if net.adam:
        assert (net.B1, net.B2, net.eps) == (solver.beta1, solver.beta2, solver.eps)
    if net.h and net.w and net.c:
        shape = spec.net.input
        assert (net.c, net.h, net.w) == (shape.channels, shape.height, shape.width)
    else:
        assert net.inputs == spec.net.input.channels


def assert_layer_matches(lay, ours, shape) -> None:
    kind = ours.kind
    if kind == "pool":
        expected = "MAXPOOL" if ours.method == "max" else "AVGPOOL"
    else:
        expected = KIND_TO_TYPE[kind]
    assert binding.LAYER_TYPES[lay.type] == expected
    assert (lay.out_h, lay.out_w, lay.out_c, lay.outputs) == shape
    assert lay.stopbackward == ours.stop_backward
    assert (lay.dontsave, lay.dontload) == (ours.dontsave, ours.dontload)
    if kind == "conv":
        assert (lay.n, lay.size, lay.stride, lay.pad, lay.groups) == (
            ours.filters,
            ours.kernel_h,
            ours.stride_h,
            ours.pad_h,
            ours.groups,
        )
    if kind in ("conv", "connected"):
        assert lay.batch_normalize == ours.batch_normalize
        assert binding.ACTIVATIONS.split()[lay.activation].lower() == ours.activation
        assert lay.learning_rate_scale == ours.params[0].lr_mult
    if kind == "connected":
        assert lay.outputs == ours.outputs
    if kind == "pool" and ours.method == "max":
        assert (lay.size, lay.stride, lay.pad) == (ours.kernel_h, ours.stride_h, ours.pad_h)
    if kind == "dropout":
        assert lay.probability == ours.probability
    if kind == "softmax":
        assert (lay.groups, lay.temperature, lay.noloss) == (
            ours.groups,
            ours.temperature,
            ours.noloss,
        )
    if kind == "cost":
        assert binding.COST_TYPES[lay.cost_type] == ours.cost_type
        assert lay.scale == ours.scale
    if kind == "shortcut":
        assert (str(lay.index), lay.alpha, lay.beta) == (ours.source, ours.alpha, ours.beta)
        assert binding.ACTIVATIONS.split()[lay.activation].lower() == ours.activation
    if kind == "route":
        assert tuple(str(lay.input_layers[i]) for i in range(lay.n)) == ours.sources


@pytest.mark.parametrize("name, text", cases(), ids=[name for name, _ in cases()])
def test_reader_matches_parse_network_cfg(libdarknet, name, text):
    spec = load_darknet(f"{name}.cfg", text, ())
    shapes = darknet_output_shapes(f"{name}.cfg", text)
    net = binding.parse_cfg_text(libdarknet, text)
    try:
        assert net.contents.n == len(spec.net.layers)
        assert_net_matches(net.contents, spec)
        for index, ours in enumerate(spec.net.layers):
            assert_layer_matches(binding.layer(net, index), ours, shapes[index])
    finally:
        libdarknet.free_network(net)
