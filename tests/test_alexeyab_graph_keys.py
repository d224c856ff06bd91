"""AlexeyAB-only keys of darknet's graph sections. ``[route] groups=G group_id=I`` (CSP nets):
forward and backward against a NumPy transcription of AlexeyAB's ``route_layer.c`` (Debian's
libdarknet is pjreddie's and lacks it), shapes, and a net's gradients by finite differences.
``[shortcut] weights_type`` (a learned weighted sum, not simulated) is an error,
``weights_normalization`` alone a warning; both name file, line and key."""

from __future__ import annotations

import numpy as np
import pytest

from dnupdate.engine.backends.cpu import CpuBackend
from dnupdate.engine.backends.cpu import graph as kernels
from dnupdate.engine.config.darknet import load_darknet
from dnupdate.engine.model.network import Network
from dnupdate.engine.spec import ConfigError, RouteSpec
from tests.gradcheck import loss_slopes
from tests.reference import graph as ref

NET = "[net]\nbatch=2\nheight=4\nwidth=4\nchannels=3\nmax_batches=5\n"
GROUPED = (
    NET
    + "[convolutional]\nfilters=4\nsize=3\npad=1\nactivation=leaky\n"  # 0: 4×4×4
    + "[convolutional]\nfilters=6\nsize=3\npad=1\nactivation=linear\n"  # 1: 4×4×6
    + "[route]\nlayers=-1\ngroups=2\ngroup_id=1\n"  # 2: channels 3..5 of 1
    + "[route]\nlayers=0,-2\ngroups=2\ngroup_id=0\nstream=1\n"  # 3: 0..1 of 0, 0..2 of 1
    + "[convolutional]\nfilters=3\nsize=3\npad=1\nactivation=linear\n"  # 4 reads 3
    + "[shortcut]\nfrom=2\nweights_type=none\n"  # 5: 4 + 2
    + "[avgpool]\n[softmax]\n"
)


@pytest.mark.parametrize(("groups", "group_id"), [(1, 0), (2, 1), (4, 3)])
def test_route_kernels_match_alexeyabs_route_layer(groups, group_id):
    rng = np.random.default_rng(groups)
    sources = [rng.normal(size=(2, 4, 2, 2)).astype(np.float32),
               rng.normal(size=(2, 8, 2, 2)).astype(np.float32)]  # fmt: skip
    out = np.zeros((2, 12 * 4 // groups), np.float32)
    offset = 0
    for source in sources:
        kernels.route_copy(source, out, offset, group_id, groups)
        offset += source[0].size // groups
    np.testing.assert_array_equal(out, ref.route_groups_forward(sources, groups, group_id))
    delta = rng.normal(size=out.shape).astype(np.float32)
    deltas = [rng.normal(size=s.shape).astype(np.float32) for s in sources]
    want = ref.route_groups_backward(delta, deltas, groups, group_id)
    offset = 0
    for source in deltas:
        kernels.route_add(delta, source, offset, group_id, groups)
        offset += source[0].size // groups
    for got, expected in zip(deltas, want, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_inspect_shows_a_routes_group(tmp_path):
    """The layer table names the part a grouped route reads (it sets the output's size)."""
    from typer.testing import CliRunner

    from dnupdate.cli.main import app

    path = tmp_path / "g.cfg"
    path.write_text(GROUPED)
    result = CliRunner().invoke(app, ["inspect", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "groups=2 group_id=1" in result.output and "groups=2 group_id=0" in result.output


def _grouped_net() -> Network:
    run = load_darknet("g.cfg", GROUPED, ())
    net = Network(run.net, CpuBackend(), 2, "darknet")
    rng = np.random.default_rng(3)
    net.params[...] = rng.normal(0, 0.3, net.params.size).astype(np.float32)
    net.set_truth(np.array([0, 2]))
    return net


def test_grouped_routes_read_their_slices_and_shapes():
    run = load_darknet("g.cfg", GROUPED, ())
    routes = [layer for layer in run.net.layers if isinstance(layer, RouteSpec)]
    assert [(r.groups, r.group_id) for r in routes] == [(2, 1), (2, 0)]
    net = _grouped_net()
    assert [net.shapes[i].output for i in (2, 3)] == [(3, 4, 4), (5, 4, 4)]
    x = np.random.default_rng(1).random((2, 3, 4, 4), dtype=np.float32)
    net.forward(x, train=True)
    out = [layer.output.reshape(2, *layer.shape.output) for layer in net.layers]
    np.testing.assert_array_equal(out[2], out[1][:, 3:6])
    want = ref.route_groups_forward([out[0], out[1]], 2, 0)
    np.testing.assert_array_equal(out[3].reshape(2, -1), want)
    np.testing.assert_array_equal(out[3], np.concatenate([out[0][:, :2], out[1][:, :3]], 1))


def test_grouped_route_backward_matches_alexeyab_and_the_derivative():
    net = _grouped_net()
    x = np.random.default_rng(1).random((2, 3, 4, 4), dtype=np.float32)
    net.forward(x, train=True)
    route = net.layers[3]
    delta = np.random.default_rng(2).normal(size=route.delta.shape).astype(np.float32)
    route.delta[...] = delta
    before = [net.layers[i].delta.copy() for i in (0, 1)]
    route.backward(None, None)
    want = ref.route_groups_backward(delta.reshape(2, -1), before, 2, 0)
    for i, expected in zip((0, 1), want, strict=True):
        np.testing.assert_array_equal(net.layers[i].delta, expected)
    # the whole net: every parameter's gradient against central differences of the loss
    net = _grouped_net()
    net.zero_grads()
    net.forward(x, train=True)
    net.backward()
    analytic = net.grads.copy()
    for i, slope in zip(*loss_slopes(net, x, 30, seed=4), strict=True):
        # darknet's gradient is the negative derivative (delta = truth - output)
        assert -analytic[i] == pytest.approx(slope, rel=3e-2, abs=3e-3), i


def _diagnostics(text: str, severity: str) -> list[str]:
    try:
        run = load_darknet("g.cfg", text, ())
    except ConfigError as caught:
        found = caught.diagnostics
    else:
        found = run.diagnostics
    return [str(d) for d in found if d.severity == severity]


@pytest.mark.parametrize(
    ("section", "key", "words"),
    [
        ("[route]\nlayers=-1\ngroups=2\ngroup_id=2\n", "group_id", "must be in 0..1"),
        ("[route]\nlayers=-1\ngroups=3\n", "groups", "split into 3 equal"),
        ("[route]\nlayers=-1\ngroups=0\n", "groups", ""),
        ("[shortcut]\nfrom=-2\nweights_type=per_channel\n", "weights_type",
         "AlexeyAB's weighted shortcut is not simulated"),
        ("[shortcut]\nfrom=-2\nweights_type=per_layer\nweights_normalization=softmax\n",
         "weights_type", "would change the results"),
        ("[shortcut]\nfrom=-2\nweights_type=sum\n", "weights_type", "AlexeyAB accepts none"),
        ("[shortcut]\nfrom=-2\nweights_type=per_channel\nweights_normalization=bogus\n",
         "weights_normalization", "AlexeyAB accepts none, relu"),
    ],
)  # fmt: skip
def test_alexeyab_keys_that_cannot_be_simulated_are_errors(section, key, words):
    text = NET + "[convolutional]\nfilters=4\nsize=3\npad=1\n" * 2 + section
    errors = _diagnostics(text, "error")
    assert len(errors) == 1, errors
    assert errors[0].startswith("g.cfg:") and f"error [{key}]" in errors[0], errors[0]
    assert words in errors[0]


@pytest.mark.parametrize("norm", ["relu", "bogus"])
def test_weights_normalization_alone_is_a_warning_and_the_sum_is_unweighted(norm):
    """Even an unknown name: AlexeyAB checks it only when weights_type is not none."""
    text = GROUPED.replace("weights_type=none\n", f"weights_normalization={norm}\n")
    assert _diagnostics(text, "error") == []
    warnings = _diagnostics(text, "warning")
    found = [w for w in warnings if "[weights_normalization]" in w]
    assert len(found) == 1 and found[0].startswith("g.cfg:33: warning"), warnings
    assert "the inputs are added unweighted" in found[0]
    assert not any("unused field" in w for w in warnings)  # groups, group_id, stream are read


def test_several_from_layers_read_the_first_with_a_specific_warning():
    text = NET + "[convolutional]\nfilters=4\nsize=3\npad=1\n" * 2 + "[shortcut]\nfrom=-2,-3\n"
    run = load_darknet("g.cfg", text, ())
    assert run.net.layers[2].source == "0"
    warnings = [str(d) for d in run.diagnostics if d.severity == "warning"]
    found = [w for w in warnings if "[from]" in w]
    assert len(found) == 1 and found[0].startswith("g.cfg:16: warning [from]"), warnings
    assert "AlexeyAB's multi-input shortcut is not simulated: only layer -2 is added" in found[0]
