"""Graph layers in the darknet reader, shape inference and ``inspect``: ``[shortcut]``
(``from=``) and ``[route]`` (``layers=``) resolve indices as pjreddie's parser does, shapes
follow darknet's rules, and bad references are one clean error naming file, line and key."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dnupdate.cli.main import app
from dnupdate.engine.config.darknet import load_darknet
from dnupdate.engine.model.shapes import infer_shapes, shortcut_geometry
from dnupdate.engine.spec import (
    ConfigError,
    ConvSpec,
    InputSpec,
    NetSpec,
    RouteSpec,
    ShortcutSpec,
)

NET = "[net]\nbatch=2\nheight=8\nwidth=8\nchannels=3\nmax_batches=5\n"
CONV = "[convolutional]\nfilters={f}\nsize=3\npad=1\nstride={s}\n"


def cfg(*sections: str) -> str:
    return NET + "".join(sections)


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_darknet("g.cfg", text, ())
    return [str(d) for d in caught.value.diagnostics if d.severity == "error"]


def test_indices_relative_and_absolute_resolve_to_layer_names():
    text = cfg(
        CONV.format(f=4, s=1),
        CONV.format(f=4, s=1),
        "[shortcut]\nfrom=-2\nalpha=.5\nbeta=2\nactivation=leaky\n",
        "[route]\nlayers=-1,0\n",
        "[shortcut]\nfrom=2\n",
    )
    layers = load_darknet("g.cfg", text, ()).net.layers
    assert isinstance(layers[2], ShortcutSpec)
    assert (layers[2].source, layers[2].alpha, layers[2].beta) == ("0", 0.5, 2.0)
    assert layers[2].activation == "leaky"
    assert isinstance(layers[3], RouteSpec) and layers[3].sources == ("2", "0")
    assert layers[4].activation == "linear"  # darknet's shortcut default, not logistic


@pytest.mark.parametrize(
    ("section", "line", "key", "words"),
    [
        ("[shortcut]\n", 12, None, "needs from="),
        ("[shortcut]\nfrom=1\n", 13, "from", "can only read layers 0..0"),
        ("[shortcut]\nfrom=-2\n", 13, "from", "points at layer -1"),
        ("[route]\n", 12, None, "must specify input layers"),
        ("[route]\nlayers=-1,x\n", 13, "layers", "'x' is not a layer index"),
        ("[route]\nlayers=0,3\n", 13, "layers", "points at layer 3"),
    ],
)
def test_bad_references_are_errors_with_file_line_and_key(section, line, key, words):
    errors = errors_of(cfg(CONV.format(f=4, s=1), section))
    assert len(errors) == 1, errors
    where = f"g.cfg:{line}: error" + (f" [{key}]" if key else "")
    assert errors[0].startswith(where), errors[0]
    assert words in errors[0]


def test_shortcut_needs_equal_width_and_height_ratios():
    text = cfg(
        CONV.format(f=4, s=1),
        "[maxpool]\nsize=2\nstride=2\n",
        "[convolutional]\nfilters=4\nsize=1\n",
    )
    # 8×8 into 4×4: fine (stride 2); a 4×8 layer cannot be built from [net], so check directly
    load_darknet("g.cfg", text + "[shortcut]\nfrom=0\n", ())
    assert shortcut_geometry((4, 8, 4), (4, 4, 4)) is None
    geometry = shortcut_geometry((6, 8, 8), (4, 4, 4))
    assert (geometry.stride, geometry.sample, geometry.channels) == (2, 1, 4)
    up = shortcut_geometry((2, 3, 3), (5, 7, 7))
    assert (up.stride, up.sample, up.channels, up.height, up.width) == (1, 2, 2, 3, 3)


def test_shapes_graph_bottoms_and_flat_route():
    text = cfg(
        CONV.format(f=4, s=1),
        CONV.format(f=6, s=2),
        "[shortcut]\nfrom=0\n",
        "[route]\nlayers=-1,1\n",
        "[route]\nlayers=0,1\n",
        "[connected]\noutput=3\n",
        "[softmax]\n",
    )
    shapes = infer_shapes(load_darknet("g.cfg", text, ()).net)
    assert [s.bottoms for s in shapes] == [(-1,), (0,), (1, 0), (2, 1), (0, 1), (4,), (5,)]
    assert shapes[2].output == (6, 4, 4)
    assert shapes[3].output == (12, 4, 4) and shapes[3].image_out
    assert shapes[4].output == (4 * 64 + 6 * 16, 1, 1) and not shapes[4].image_out
    assert shapes[5].blobs[1].shape == (3, 4 * 64 + 6 * 16)


def test_conv_after_a_flat_route_is_an_error():
    text = cfg(CONV.format(f=4, s=1), CONV.format(f=6, s=2), "[route]\nlayers=0,1\n",
               CONV.format(f=2, s=1))  # fmt: skip
    errors = errors_of(text)
    assert "must output image" in errors[0] and errors[0].startswith("g.cfg:19")


def test_infer_shapes_names_an_unknown_source():
    net = NetSpec(
        "n",
        InputSpec(2, 4, 4),
        (
            ConvSpec(name="a", filters=2, kernel_h=1, kernel_w=1),
            ShortcutSpec(name="b", source="zz"),
        ),
    )
    with pytest.raises(ConfigError, match="reads layer 'zz'"):
        infer_shapes(net)


def test_inspect_shows_each_layers_inputs(tmp_path):
    path = tmp_path / "g.cfg"
    path.write_text(cfg(CONV.format(f=4, s=1), CONV.format(f=4, s=1), "[shortcut]\nfrom=-2\n",
                        "[route]\nlayers=-1,0\n", "[avgpool]\n", "[connected]\noutput=2\n",
                        "[softmax]\n"))  # fmt: skip
    result = CliRunner().invoke(app, ["inspect", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    layers = json.loads(result.stdout)["layers"]
    assert [row["inputs"] for row in layers[:4]] == [["input"], ["0"], ["1", "0"], ["2", "0"]]
    assert layers[3]["output"] == [8, 8, 8]
    text = CliRunner().invoke(app, ["inspect", str(path)]).stdout
    assert "reads" in text and "1,0" in text


def test_cifar_resnet_is_he_et_als_resnet20():
    """configs/cifar_resnet.cfg: 19 convolutions + 1 fully connected layer, nine identity
    shortcuts (two across a stride-2 stage: darknet's subsample-and-zero-pad rule), 0.27M
    parameters, 10 classes, trains with He et al.'s solver numbers."""
    from pathlib import Path

    from dnupdate.engine.config import load_config

    path = Path(__file__).resolve().parent.parent / "configs" / "cifar_resnet.cfg"
    run = load_config(str(path))
    assert not [d for d in run.diagnostics if d.severity == "warning"]
    shapes = infer_shapes(run.net)
    kinds = [s.layer.kind for s in shapes]
    assert kinds.count("conv") == 19 and kinds.count("connected") == 1
    shortcuts = [s for s in shapes if s.layer.kind == "shortcut"]
    assert len(shortcuts) == 9
    assert all(int(s.layer.source) == s.index - 3 for s in shortcuts)
    across = [s for s in shortcuts if shapes[int(s.layer.source)].output != s.output]
    assert [(shapes[int(s.layer.source)].output, s.output) for s in across] == [
        ((16, 32, 32), (32, 16, 16)),
        ((32, 16, 16), (64, 8, 8)),
    ]
    assert sum(s.param_count for s in shapes) == 269_722
    assert shapes[-1].output == (10, 1, 1)
    assert (run.schedule.base_lr, run.solver.momentum, run.solver.decay) == (
        pytest.approx(0.1),
        pytest.approx(0.9),
        pytest.approx(1e-4),
    )
    assert run.solver.batch == 128 and run.schedule.steps == (32000, 48000)


DEBIAN = "/usr/share/darknet/cfg"
GRAPH_CFGS = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50",
    "resnext101-32x4d", "resnext152-32x4d", "darknet53", "darknet53_448", "densenet201",
)  # fmt: skip


@pytest.mark.parametrize("name", GRAPH_CFGS)
def test_debians_residual_and_dense_cfgs_give_a_full_report(name):
    from pathlib import Path

    path = Path(DEBIAN) / f"{name}.cfg"
    if not path.exists():
        pytest.skip("Debian's darknet package is not installed")
    result = CliRunner().invoke(app, ["inspect", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    layers = json.loads(result.stdout)["layers"]
    kinds = {row["kind"] for row in layers}
    assert kinds & {"shortcut", "route"}
    softmax = [row for row in layers if row["kind"] == "softmax"]  # resnet101 adds a [cost]
    assert len(softmax) == 1 and softmax[0]["output"] == [1000, 1, 1]
