"""``[reorg]`` and ``[crop]`` kernels and layers against the NumPy transcriptions of darknet's
C code in ``tests/reference/reshape.py`` (bit for bit), and the layers' darknet quirks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnupdate.engine.backends.cpu import CpuBackend, reshape
from dnupdate.engine.config import load_config
from dnupdate.engine.model.network import Network
from tests.reference import reshape as ref

RNG = np.random.default_rng(5)


def normal(*shape) -> np.ndarray:
    return RNG.normal(size=shape).astype(np.float32)


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(
    batch=st.integers(1, 2),
    stride=st.integers(1, 3),
    groups=st.integers(1, 3),
    h=st.integers(1, 3),
    w=st.integers(1, 3),
    forward=st.booleans(),
)
def test_reorg_matches_reorg_cpu_bit_for_bit(batch, stride, groups, h, w, forward):
    c = groups * stride * stride
    x = normal(batch, c, h * stride, w * stride)
    dims = (w * stride, h * stride, c)
    expected = ref.reorg_cpu(x, *dims, batch, stride, forward)
    out = np.empty_like(x)
    reshape.reorg(x, out, *dims, stride, forward)
    assert not np.isnan(expected).any()  # a permutation: every element written
    np.testing.assert_array_equal(out.reshape(-1), expected)
    back = np.empty_like(x)
    reshape.reorg(out, back, *dims, stride, not forward)
    np.testing.assert_array_equal(back, x)  # the two directions are inverse maps


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("colour", [False, True])
def test_crop_matches_forward_crop_layer(flip, colour):
    x = RNG.uniform(0, 1, (2, 3, 7, 6)).astype(np.float32)
    x[0, :, 2, 3] = 0.25  # a grey pixel (hue 0/0 in darknet)
    x[1, :, 1, 1] = 0.0  # black
    factors = np.array([[1.4, 0.7], [0.6, 1.3]], np.float32) if colour else None
    expected = ref.crop(x, 4, 3, 2, 1, flip, 2.0, -1.0, factors)
    out = np.zeros((2, 3, 4, 3), np.float32)
    none = np.zeros((0, 2), np.float32)
    reshape.crop_forward(x, out, 2, 1, flip, 2.0, -1.0, factors if colour else none)
    np.testing.assert_array_equal(out, expected)


REORG_CFG = """[net]
batch=2
subdivisions=1
height=4
width=4
channels=2
[convolutional]
filters=8
size=1
activation=linear
{section}
[connected]
output=3
activation=linear
[softmax]
"""


def build(section: str, batch: int = 2) -> Network:
    run = load_config("r.cfg", text=REORG_CFG.format(section=section))
    return Network(run.net, CpuBackend(), batch, "darknet", uniforms=lambda n: RNG.random(n))


@pytest.mark.parametrize(
    ("section", "shape"),
    [
        ("[reorg]\nstride=2", (32, 2, 2)),
        ("[reorg]\nstride=2\nreverse=1", (2, 8, 8)),
        ("[reorg]\nflatten=1", (8, 4, 4)),
        ("[reorg]\nflatten=1\nreverse=1", (8, 4, 4)),
        ("[reorg]\nextra=3", (131, 1, 1)),
    ],
)
def test_reorg_layer_modes_forward_and_assign_backward(section, shape):
    """Each mode's forward against the transcription; backward writes (not adds) the
    previous layer's delta with the inverse map."""
    net = build(section)
    layer = net.layers[1]
    assert tuple(layer.output.shape[1:]) == shape
    x = normal(2, 8, 4, 4)
    layer.forward(x, True)
    spec = layer.spec
    if spec.mode == "reorg":
        expected = ref.reorg_cpu(x, 4, 4, 8, 2, spec.stride, spec.reverse)
    elif spec.mode == "flatten":
        expected = ref.flatten(x, 16, 8, 2, not spec.reverse)
    else:
        expected = np.concatenate([x.reshape(2, -1), np.zeros((2, 3), np.float32)], 1)
    np.testing.assert_array_equal(layer.output.reshape(-1), expected.reshape(-1))
    layer.delta[...] = normal(*layer.delta.shape)
    dx = np.full_like(x, 7.0)  # darknet assigns: the 7s must be gone
    layer.backward(x, dx)
    if spec.mode == "reorg":
        back = ref.reorg_cpu(layer.delta, 4, 4, 8, 2, spec.stride, not spec.reverse)
    elif spec.mode == "flatten":
        back = ref.flatten(layer.delta, 16, 8, 2, spec.reverse)
    else:
        back = layer.delta.reshape(2, -1)[:, :128]
    np.testing.assert_array_equal(dx.reshape(-1), back.reshape(-1))


CROP_CFG = """[net]
batch=4
subdivisions=1
height=6
width=7
channels=3
[crop]
crop_height=4
crop_width=5
flip=1
{extra}
[connected]
output=2
activation=linear
[softmax]
"""


def crop_net(extra: str = "", uniforms=None) -> Network:
    run = load_config("c.cfg", text=CROP_CFG.format(extra=extra))
    draw = uniforms or (lambda n: RNG.random(n).astype(np.float32))
    return Network(run.net, CpuBackend(), 4, "darknet", uniforms=draw)


def test_crop_test_time_is_the_centre_window_mapped_to_minus_one_one():
    net = crop_net()
    x = RNG.uniform(0, 1, (4, 3, 6, 7)).astype(np.float32)
    net.layers[0].forward(x, False)
    expected = ref.crop(x, 4, 5, 1, 1, False, 2.0, -1.0)
    np.testing.assert_array_equal(net.layers[0].output, expected)
    noadjust = crop_net("noadjust=1")
    noadjust.layers[0].forward(x, False)
    np.testing.assert_array_equal(noadjust.layers[0].output, x[:, :, 1:5, 1:6])


def test_crop_training_draws_one_window_per_batch_and_passes_no_gradient():
    draws = iter([np.float32([0.2]), np.float32([0.99, 0.0])])  # flip, then (top, left)
    net = crop_net(uniforms=lambda n: next(draws))
    layer = net.layers[0]
    x = RNG.uniform(0, 1, (4, 3, 6, 7)).astype(np.float32)
    layer.forward(x, True)
    expected = ref.crop(x, 4, 5, 2, 0, True, 2.0, -1.0)  # top = floor(.99·3) = 2
    np.testing.assert_array_equal(layer.output, expected)
    dx = np.full_like(x, 3.0)
    layer.delta[...] = 1.0
    layer.backward(x, dx)
    assert (dx == 3.0).all()  # darknet quirk: backward_crop_layer is empty


def test_crop_recolours_each_training_image_with_its_own_factors():
    r = np.float32([0.5, 0.9, 0.25, 0.1] * 4)  # sat: 1 + .5·.5 = 1.25, inverted; exp 1.125
    draws = iter([np.float32([0.9]), np.float32([0.0, 0.0]), r])
    net = crop_net("saturation=1.5\nexposure=1.5", uniforms=lambda n: next(draws))
    layer = net.layers[0]
    x = RNG.uniform(0, 1, (4, 3, 6, 7)).astype(np.float32)
    layer.forward(x, True)
    factors = np.tile(np.float32([1 / np.float32(1.25), 1.125]), (4, 1)).astype(np.float32)
    expected = ref.crop(x, 4, 5, 0, 0, False, 2.0, -1.0, factors)
    np.testing.assert_allclose(layer.output, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("[reorg]\nstride=3", "stride=3 needs c=8 by 9"),
        ("[reorg]\nextra=2\nreverse=1", "extra with reverse"),
        ("[reorg]\nflatten=1\nstride=2", "flatten needs stride=1"),
        ("[crop]\ncrop_height=9\ncrop_width=2", "does not fit"),
    ],
)
def test_impossible_sections_are_config_errors(section, message):
    with pytest.raises(Exception, match=message) as info:
        load_config("r.cfg", text=REORG_CFG.format(section=section))
    assert "r.cfg:" in str(info.value)


def test_crop_angle_and_grey_colour_are_warned_about():
    text = CROP_CFG.format(extra="angle=7\nshift=.1").replace("channels=3", "channels=1")
    run = load_config("c.cfg", text=text.replace("flip=1", "flip=1\nsaturation=1.5"))
    messages = " ".join(d.message for d in run.diagnostics)
    assert "rotation" in messages and "colour shift" in messages
    assert "need 3 channels" in messages
