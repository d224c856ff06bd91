"""Initial weights against the real darknet library: ``srand(seed)`` + ``parse_network_cfg``
in libdarknet versus :func:`engine.model.initialisation.initialise` with the same seed →
byte-identical
float32 arrays for every blob (spec darknet.md 9.4/9.5), and the ``rand()`` stream and the
Box–Muller spare continue identically afterwards.

Also home of :func:`darknet_net`, which writes one layer list both as a cfg for libdarknet and
as our :class:`~engine.spec.NetSpec` (the darknet config reader is tested elsewhere)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dnupdate.engine.config import load_config
from dnupdate.engine.model.initialisation import allocate_blobs, initialise
from dnupdate.engine.model.shapes import infer_shapes
from dnupdate.engine.spec import (
    BatchNormSpec,
    ConnectedSpec,
    ConvSpec,
    DropoutSpec,
    FillerSpec,
    InputSpec,
    NetSpec,
    PoolSpec,
    SoftmaxSpec,
)
from tests import libdarknet as dn

pytestmark = pytest.mark.darknet

Layer = tuple[str, dict]


def conv(filters, size, *, stride=1, pad=1, groups=1, bn=0, activation="leaky") -> Layer:
    opts = {"filters": filters, "size": size, "stride": stride, "pad": pad, "groups": groups}
    return "convolutional", {**opts, "batch_normalize": bn, "activation": activation}


def connected(output, *, bn=0, activation="linear") -> Layer:
    return "connected", {"output": output, "batch_normalize": bn, "activation": activation}


def maxpool(size, stride) -> Layer:
    return "maxpool", {"size": size, "stride": stride}


def _layer_spec(i: int, kind: str, o: dict):
    name = str(i)
    if kind == "convolutional":
        pad = o["size"] // 2 if o["pad"] else 0
        return ConvSpec(
            name=name,
            param_order="darknet",
            filters=o["filters"],
            kernel_h=o["size"],
            kernel_w=o["size"],
            stride_h=o["stride"],
            stride_w=o["stride"],
            pad_h=pad,
            pad_w=pad,
            groups=o["groups"],
            batch_normalize=bool(o["batch_normalize"]),
            activation=o["activation"],
            weight_filler=FillerSpec(type="darknet_conv"),
            darknet_1x1_shortcut=True,
        )
    if kind == "connected":
        return ConnectedSpec(
            name=name,
            param_order="darknet",
            outputs=o["output"],
            batch_normalize=bool(o["batch_normalize"]),
            activation=o["activation"],
            weight_filler=FillerSpec(type="darknet_connected"),
        )
    if kind == "maxpool":
        size, stride = o["size"], o["stride"]
        return PoolSpec(
            name=name,
            method="max",
            kernel_h=size,
            kernel_w=size,
            stride_h=stride,
            stride_w=stride,
            pad_h=size - 1,
            pad_w=size - 1,
            size_rule="darknet",
        )
    if kind == "dropout":
        return DropoutSpec(name=name, probability=o.get("probability", 0.5), style="darknet")
    if kind == "batchnorm":
        return BatchNormSpec(name=name, style="darknet")
    if kind == "softmax":
        return SoftmaxSpec(name=name)
    raise ValueError(kind)


def darknet_net(chw: tuple[int, int, int], layers: list[Layer]) -> tuple[str, NetSpec]:
    """The same network as darknet cfg text (batch 1) and as our NetSpec."""
    c, h, w = chw
    lines = ["[net]", "batch=1", f"height={h}", f"width={w}", f"channels={c}", ""]
    for kind, options in layers:
        lines += [f"[{kind}]", *(f"{k}={v}" for k, v in options.items()), ""]
    specs = tuple(_layer_spec(i, kind, o) for i, (kind, o) in enumerate(layers))
    return "\n".join(lines), NetSpec("conformance", InputSpec(c, h, w), specs)


# Odd weight counts carry the Box–Muller spare across layers (5·3·3·3 = 135, 5·1·3·3 = 45).
NET_GROUPS = (
    (3, 11, 11),
    [
        conv(5, 3, bn=1),
        conv(5, 3, groups=5, activation="relu"),
        conv(6, 5, stride=2, bn=1),
        conv(3, 1, activation="linear"),
        maxpool(2, 2),
        ("dropout", {"probability": 0.25}),
        connected(7, bn=1, activation="leaky"),
        connected(5),
        ("softmax", {}),
    ],
)
NET_ODD = (
    (2, 7, 5),
    [
        conv(3, 3, stride=2, bn=1),
        ("batchnorm", {}),
        connected(9, bn=1, activation="logistic"),
        connected(4),
    ],
)

SEEDS = (0, 1, 42, 2**32 - 1)


def parse_seeded(lib, cfg: str, seed: int):
    """darknet: clear the static spare, ``srand(seed)``, ``parse_network_cfg``."""
    dn.reset_rand_normal_spare(lib)
    dn.srand(seed)
    return dn.parse_cfg_text(lib, cfg)


def darknet_blobs(net, spec: NetSpec) -> dict[str, np.ndarray]:
    """Copies of libdarknet's parameter buffers keyed like ours (blob names = struct fields)."""
    out = {}
    for shape in infer_shapes(spec):
        for index, blob in enumerate(shape.blobs):
            view = dn.layer_array(net, shape.index, blob.name)
            out[f"{shape.layer.name}/{index}"] = view.copy().reshape(blob.shape)
    return out


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("net_def", [NET_GROUPS, NET_ODD], ids=["groups", "odd"])
def test_initial_weights_are_byte_identical(libdarknet, net_def, seed):
    cfg, spec = darknet_net(*net_def)
    net = parse_seeded(libdarknet, cfg, seed)
    try:
        theirs = darknet_blobs(net, spec)
        ours = allocate_blobs(spec)
        initialise(spec, ours, seed=seed)
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert ours[key].tobytes() == theirs[key].tobytes(), f"blob {key} differs"
    finally:
        libdarknet.free_network(net)


def test_random_stream_continues_like_darknet(libdarknet):
    """After parsing, rand() and rand_normal() (with its pending spare) go on identically."""
    cfg, spec = darknet_net(*NET_GROUPS)
    net = parse_seeded(libdarknet, cfg, 9)
    try:
        rng = initialise(spec, allocate_blobs(spec), seed=9)
        theirs_normal = [libdarknet.rand_normal() for _ in range(3)]
        ours_normal = [np.float32(rng.rand_normal()) for _ in range(3)]
        assert (
            np.array(ours_normal, np.float32).tobytes()
            == np.array(theirs_normal, np.float32).tobytes()
        )
        ours_uniform = [rng.rand_uniform(0, 1) for _ in range(5)]
        theirs_uniform = [libdarknet.rand_uniform(0, 1) for _ in range(5)]
        assert (
            np.array(ours_uniform, np.float32).tobytes()
            == np.array(theirs_uniform, np.float32).tobytes()
        )
    finally:
        libdarknet.free_network(net)


def test_our_first_weight_count_is_odd_so_the_spare_matters():
    """Guard on the fixture: the first conv leaves a spare pending for the second."""
    _, spec = darknet_net(*NET_GROUPS)
    first = infer_shapes(spec)[0].blobs[-1]
    assert first.name == "weights" and first.size % 2 == 1


REPO_CFGS = sorted(
    str(p)
    for p in Path(__file__).resolve().parent.parent.joinpath("configs").glob("*.cfg")
    if p.name != "darknet_cifar.cfg"  # 7.7M weights: a couple of seconds, covered by tiny.cfg
)
DEBIAN_TINY = "/usr/share/darknet/cfg/tiny.cfg"


@pytest.mark.parametrize("cfg_path", [*REPO_CFGS, DEBIAN_TINY], ids=lambda p: Path(p).name)
def test_configs_through_the_cfg_reader_init_like_darknet(libdarknet, cfg_path):
    """The whole path a user takes: our cfg reader → NetSpec → initialise, against
    ``parse_network_cfg`` of the very same file."""
    if not Path(cfg_path).exists():
        pytest.skip(f"{cfg_path} not installed")
    spec = load_config(cfg_path).net
    ours = allocate_blobs(spec)
    initialise(spec, ours, seed=2024)
    net = parse_seeded(libdarknet, Path(cfg_path).read_text(), 2024)
    try:
        theirs = darknet_blobs(net, spec)
        for key in ours:
            assert ours[key].tobytes() == theirs[key].tobytes(), f"{cfg_path}: blob {key}"
    finally:
        libdarknet.free_network(net)
