"""Conformance against the real darknet library (ctypes): for a small net of each layer kind,
identical weights and input, darknet's ``forward_network``/``backward_network`` against ours.

Compared per layer: outputs, deltas, parameter gradients (``*_updates``), rolling statistics,
and the network cost. darknet sums in its own order (gemm loops, sequential sums), so equality
is to float32 rounding: relative 1e-5 of each array's scale (spec/darknet.md section 0).
Skipped where libdarknet is not installed.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from dnupdate.engine.backends.cpu import CpuBackend
from dnupdate.engine.config import load_config
from dnupdate.engine.model.network import Network
from dnupdate.engine.rng import DarknetRandom
from tests import libdarknet as dn

pytestmark = pytest.mark.darknet

HEADER = """[net]
batch={batch}
subdivisions=1
height={h}
width={w}
channels={c}
learning_rate=0.1
momentum=0.9
decay=0.0005
"""

NETS = {
    # 8 and 16 input channels on rows of 17 pixels: the register-blocked micro-kernel's
    # forward, input and weight gradient (engine.backends.cpu.conv_direct), a partial vector
    "conv_micro_kernel": (
        (8, 5, 17),
        """
[convolutional]
filters=16
size=3
stride=1
pad=1
activation=leaky
[convolutional]
batch_normalize=1
filters=10
size=3
stride=1
pad=1
activation=relu
[avgpool]
[softmax]
""",
    ),
    "conv_stride_pad": (
        (3, 7, 7),
        """
[convolutional]
filters=4
size=3
stride=2
pad=1
activation=leaky
[avgpool]
[softmax]
""",
    ),
    "conv_groups_and_1x1": (
        (4, 6, 5),
        """
[convolutional]
filters=6
size=3
stride=1
pad=1
groups=2
activation=relu
[convolutional]
filters=3
size=1
stride=1
activation=linear
[avgpool]
[softmax]
""",
    ),
    "conv_padding_key_stride3": (
        (2, 9, 8),
        """
[convolutional]
filters=3
size=4
stride=3
padding=2
activation=logistic
[connected]
output=4
activation=linear
[softmax]
""",
    ),
    "conv_batchnorm": (
        (3, 6, 6),
        """
[convolutional]
filters=4
size=3
stride=1
pad=1
batch_normalize=1
activation=leaky
[maxpool]
size=2
stride=2
[connected]
output=5
activation=linear
[softmax]
""",
    ),
    "connected_batchnorm": (
        (6, 1, 1),
        """
[connected]
output=7
activation=logistic
[connected]
output=5
batch_normalize=1
activation=tanh
[connected]
output=3
activation=linear
[softmax]
""",
    ),
    "maxpool_odd_default_padding": (
        (2, 7, 7),
        """
[convolutional]
filters=3
size=3
stride=1
pad=1
activation=linear
[maxpool]
size=3
stride=2
[maxpool]
size=2
stride=1
[connected]
output=4
activation=linear
[softmax]
""",
    ),
    "dropout": (
        (5, 1, 1),
        """
[connected]
output=8
activation=leaky
[dropout]
probability=.4
[connected]
output=3
activation=linear
[softmax]
""",
    ),
    "softmax_groups_temperature_cost": (
        (4, 1, 1),
        """
[connected]
output=6
activation=linear
[softmax]
groups=2
temperature=2
[cost]
type=sse
""",
    ),
    # graph layers: layer 0 feeds a 1x1 conv and a shortcut (darknet's 1x1 backward overwrites
    # its delta), a shortcut from a larger layer (stride 2, fewer channels), a route concat
    "graph_residual_1x1_route": (
        (3, 8, 8),
        """
[convolutional]
batch_normalize=1
filters=4
size=3
pad=1
activation=leaky
[convolutional]
filters=4
size=1
activation=leaky
[convolutional]
batch_normalize=1
filters=4
size=3
pad=1
activation=linear
[shortcut]
from=0
activation=leaky
alpha=.5
beta=1.5
[convolutional]
filters=6
size=3
stride=2
pad=1
activation=leaky
[shortcut]
from=-2
[route]
layers=-1,-2
[convolutional]
filters=3
size=1
activation=linear
[avgpool]
[softmax]
""",
    ),
    # a shortcut from a smaller layer (sample 2, fewer channels), a copy route, a flat route
    "graph_upsample_flat_route": (
        (3, 8, 8),
        """
[convolutional]
filters=2
size=3
pad=1
activation=leaky
[convolutional]
filters=5
size=3
stride=2
pad=1
activation=leaky
[route]
layers=0
[shortcut]
from=1
activation=logistic
[route]
layers=-1,1
[connected]
output=4
activation=linear
[softmax]
""",
    ),
    # [reorg] in every mode; layer 0 feeds a reorg and a route (darknet's reorg backward
    # assigns its input delta, wiping what the route added before it)
    "reorg_modes_clobber": (
        (2, 8, 8),
        """
[convolutional]
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
[route]
layers=-1,0
[reorg]
flatten=1
[convolutional]
filters=3
size=1
activation=linear
[reorg]
flatten=1
reverse=1
[reorg]
extra=5
[connected]
output=4
activation=linear
[softmax]
""",
    ),
    # [crop] after a layer: a full-size window without flip is deterministic in training too
    # (2x - 1), and darknet's empty crop backward leaves layer 0 without any gradient
    "crop_full_window_no_gradient_before": (
        (3, 6, 6),
        """
[convolutional]
filters=3
size=3
pad=1
activation=logistic
[crop]
crop_height=6
crop_width=6
[convolutional]
filters=4
size=3
pad=1
activation=leaky
[avgpool]
[softmax]
""",
    ),
    # test-time [crop]: the centre window (odd margins: C division), 2x - 1
    "crop_centre": (
        (3, 9, 8),
        """
[crop]
crop_height=6
crop_width=5
flip=1
saturation=1.5
exposure=1.5
[convolutional]
filters=4
size=3
pad=1
activation=leaky
[avgpool]
[softmax]
""",
    ),
}

BATCH = 3
SEED = 12345


def _pointer(array: np.ndarray):
    return array.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


def _scale_diff(ours: np.ndarray, theirs: np.ndarray) -> float:
    """Largest difference relative to the array's scale (max |theirs|, at least 1e-3)."""
    ours = np.asarray(ours, np.float64).reshape(-1)
    theirs = np.asarray(theirs, np.float64).reshape(-1)
    return float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-3))


def run_pair(lib, name: str, train: bool = True):
    """Build both nets with darknet's initial weights, run one training forward/backward (or
    one inference forward) on a fixed input, return ``{what: relative difference}``."""
    (c, h, w), body = NETS[name]
    text = HEADER.format(batch=BATCH, c=c, h=h, w=w) + body
    theirs = dn.parse_cfg_text(lib, text)
    spec = load_config(f"{name}.cfg", text=text)
    randomness = DarknetRandom(SEED)
    ours = Network(
        spec.net,
        CpuBackend(),
        BATCH,
        "darknet",
        uniforms=lambda n: randomness.rand_uniform_array(n, 0.0, 1.0),
    )
    rng = np.random.default_rng(len(name))
    for segment in ours.segments:
        i = int(segment.layer)
        source = dn.layer_array(theirs, i, segment.name)
        if segment.name in ("scales", "rolling_variance"):
            source[:] = rng.uniform(0.5, 1.5, source.size)
        elif segment.name == "biases" or segment.name == "rolling_mean":
            source[:] = rng.uniform(-0.5, 0.5, source.size)
        ours.blob(segment.layer, segment.index)[...] = source.reshape(segment.shape)
    x = rng.standard_normal((BATCH, c, h, w)).astype(np.float32)
    classes = ours.shapes[-1].inputs if name.endswith("cost") else ours.shapes[-1].outputs
    labels = rng.integers(0, classes, BATCH)
    truth = np.eye(classes, dtype=np.float32)[labels]

    net = theirs.contents
    # free_network frees these: keep their addresses (a ctypes field read is a live view)
    saved = [ctypes.cast(p, ctypes.c_void_p).value for p in (net.input, net.truth, net.delta)]
    net.input = _pointer(x)
    net.truth = _pointer(truth)
    net.delta = None
    net.train = int(train)
    dn.srand(SEED)
    lib.forward_network(theirs)
    ours.set_truth(truth)
    ours.forward(x, train=train)
    if train:
        lib.backward_network(theirs)
        ours.backward()

    diffs: dict[str, float] = {"cost": _scale_diff([ours.loss], [net.cost[0]])}
    for i, layer in enumerate(ours.layers):
        diffs[f"{i}/output"] = _scale_diff(layer.output, dn.layer_array(theirs, i, "output"))
        if dn.layer(theirs, i).delta:  # darknet's [crop] has no delta buffer
            diffs[f"{i}/delta"] = _scale_diff(layer.delta, dn.layer_array(theirs, i, "delta"))
    grad_names = {"weights": "weight_updates", "biases": "bias_updates", "scales": "scale_updates"}
    for segment in ours.segments:
        i = int(segment.layer)
        ours_view = ours.grad(segment.layer, segment.index)
        if segment.name in grad_names:
            theirs_view = dn.layer_array(theirs, i, grad_names[segment.name])
            diffs[f"{i}/{grad_names[segment.name]}"] = _scale_diff(ours_view, theirs_view)
        else:  # rolling statistics after one training forward
            theirs_view = dn.layer_array(theirs, i, segment.name)
            diffs[f"{i}/{segment.name}"] = _scale_diff(
                ours.blob(segment.layer, segment.index), theirs_view
            )
    net.input, net.truth, net.delta = (ctypes.cast(a, dn._float_p) for a in saved)
    lib.free_network(theirs)
    return diffs


@pytest.mark.parametrize("name", sorted(set(NETS) - {"crop_centre"}))  # random in training
def test_forward_backward_match_libdarknet(libdarknet, name):
    diffs = run_pair(libdarknet, name)
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] < 2e-5, (worst, diffs[worst], diffs)


@pytest.mark.parametrize(
    "name",
    [
        "conv_batchnorm",
        "connected_batchnorm",
        "dropout",
        "graph_residual_1x1_route",
        "crop_centre",
    ],
)
def test_inference_forward_matches_libdarknet(libdarknet, name):
    """``train = 0``: batch norm with the rolling statistics, dropout the identity."""
    diffs = run_pair(libdarknet, name, train=False)
    outputs = {k: v for k, v in diffs.items() if k.endswith("/output") or k == "cost"}
    worst = max(outputs, key=outputs.get)
    assert outputs[worst] < 2e-5, (worst, outputs[worst], outputs)
