"""Real cfg files: the shipped examples in configs/ and Debian's /usr/share/darknet/cfg."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnupdate.engine.config import load_config
from dnupdate.engine.spec import ConfigError, RunSpec

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "configs").glob("*.cfg"))
DEBIAN_DIR = Path("/usr/share/darknet/cfg")
DEBIAN_CFGS = sorted(DEBIAN_DIR.glob("*.cfg")) if DEBIAN_DIR.is_dir() else []
# Debian cfgs made only of layers dnupdate trains: these must load.
DEBIAN_CLASSIFIERS = (
    "alexnet",
    "cifar",
    "cifar.test",
    "darknet",
    "darknet19",
    "extraction",
    "tiny",
)


def test_there_are_darknet_examples():
    names = {path.name for path in EXAMPLES}
    assert {"quickstart.cfg", "mnist_lenet.cfg", "cifar_small.cfg", "darknet_cifar.cfg"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_configs_load_without_any_diagnostic(path):
    spec = load_config(str(path))
    assert spec.format == "darknet"
    assert spec.diagnostics == ()
    assert spec.data.train.source is not None and spec.data.classes == 10
    assert spec.net.layers[-1].kind == "softmax"
    assert spec.solver.max_iter > 0


def test_example_configs_start_with_comment_headers():
    for path in EXAMPLES:
        first = path.read_text().splitlines()[0]
        assert first.startswith("# "), path.name


def test_quickstart_is_small():
    spec = load_config(str(REPO / "configs" / "quickstart.cfg"))
    assert spec.data.train.source == "synthetic-digits"
    assert spec.solver.max_iter <= 400 and spec.solver.batch <= 128
    assert (spec.net.input.channels, spec.net.input.height, spec.net.input.width) == (1, 28, 28)


def test_mnist_lenet_layers():
    spec = load_config(str(REPO / "configs" / "mnist_lenet.cfg"))
    kinds = [(layer.kind, getattr(layer, "filters", getattr(layer, "outputs", None)))
             for layer in spec.net.layers]  # fmt: skip
    assert kinds == [
        ("conv", 20), ("pool", None), ("conv", 50), ("pool", None),
        ("connected", 500), ("connected", 10), ("softmax", None),
    ]  # fmt: skip
    assert spec.net.layers[0].kernel_h == 5 and spec.data.train.source == "mnist"


def structure(spec: RunSpec) -> list[tuple]:
    """The layer kinds and the hyper-parameters that define a layer's shape."""
    rows = []
    for layer in spec.net.layers:
        fields = ("kind", "filters", "kernel_h", "stride_h", "pad_h", "batch_normalize",
                  "activation", "probability", "groups", "method", "outputs")  # fmt: skip
        rows.append(tuple(getattr(layer, name, None) for name in fields))
    return rows


@pytest.mark.skipif(not DEBIAN_CFGS, reason="Debian's darknet package is not installed")
def test_darknet_cifar_has_the_layers_of_debians_cifar_cfg():
    ours = load_config(str(REPO / "configs" / "darknet_cifar.cfg"))
    theirs = load_config(str(DEBIAN_DIR / "cifar.cfg"))
    assert structure(ours) == structure(theirs)
    assert ours.schedule == theirs.schedule


@pytest.mark.skipif(not DEBIAN_CFGS, reason="Debian's darknet package is not installed")
@pytest.mark.parametrize("path", DEBIAN_CFGS, ids=lambda p: p.name)
def test_every_debian_cfg_loads_or_fails_cleanly(path):
    try:
        spec = load_config(str(path))
    except ConfigError as error:
        errors = [d for d in error.diagnostics if d.severity == "error"]
        assert errors
        for diagnostic in errors:
            assert diagnostic.file == str(path)
            assert diagnostic.line is not None
            assert diagnostic.message
        assert path.stem not in DEBIAN_CLASSIFIERS
        return
    assert spec.net.layers
    assert all(d.severity == "warning" for d in spec.diagnostics)


@pytest.mark.skipif(not DEBIAN_CFGS, reason="Debian's darknet package is not installed")
def test_detector_cfgs_name_the_unsupported_layer():
    with pytest.raises(ConfigError) as info:
        load_config(str(DEBIAN_DIR / "yolov3-tiny.cfg"))
    messages = [d.message for d in info.value.diagnostics if d.severity == "error"]
    assert any("unsupported layer type [yolo]" in m for m in messages)


SHAPE_CFGS = [*EXAMPLES, *(p for p in DEBIAN_CFGS if p.stem in DEBIAN_CLASSIFIERS)]


@pytest.mark.parametrize("path", SHAPE_CFGS, ids=lambda p: p.name)
def test_parser_shapes_agree_with_engine_shapes(path):
    shapes_module = pytest.importorskip("dnupdate.engine.model.shapes")
    from dnupdate.engine.config.darknet import darknet_output_shapes

    spec = load_config(str(path))
    ours = darknet_output_shapes(str(path), path.read_text())
    theirs = shapes_module.infer_shapes(spec.net)
    assert len(ours) == len(theirs)
    for (h, w, c, outputs), shape in zip(ours, theirs, strict=True):
        assert outputs == shape.outputs
        if h:
            assert shape.output == (c, h, w)
