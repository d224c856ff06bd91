"""darknet ``.weights`` files against the real darknet library (spec darknet.md 10).

* ours → darknet: a file we write, loaded by ``load_weights``, puts every float where darknet
  keeps it (buffers equal byte for byte), predicts exactly like a net whose buffers were set
  directly, and darknet's ``save_weights`` of it reproduces our file byte for byte;
* darknet → ours: a file darknet saves reads back equal to its buffers, byte for byte;
* header variants (4-byte ``seen``, the transpose flag) crafted here load in darknet.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from dnupdate.engine.formats.weights import (
    WeightsHeader,
    read_darknet_weights,
    write_darknet_weights,
)
from dnupdate.engine.model.initialisation import allocate_blobs, initialise
from dnupdate.engine.model.shapes import infer_shapes
from tests import libdarknet as dn
from tests.test_conformance_init import NET_GROUPS, NET_ODD, darknet_blobs, darknet_net

pytestmark = pytest.mark.darknet


def random_blobs(spec, seed: int) -> dict[str, np.ndarray]:
    """darknet's init, then every blob made distinct: random biases, scales and rolling
    means, positive rolling variances, so a misplaced float shows."""
    blobs = allocate_blobs(spec)
    initialise(spec, blobs, seed=seed)
    gen = np.random.default_rng(seed)
    for shape in infer_shapes(spec):
        for index, blob in enumerate(shape.blobs):
            key = f"{shape.layer.name}/{index}"
            if blob.name == "rolling_variance":
                blobs[key][...] = gen.uniform(0.25, 2.0, blob.shape)
            elif blob.name != "weights":
                blobs[key][...] = gen.normal(0.0, 0.5, blob.shape)
    return blobs


def set_darknet_blobs(net, spec, blobs) -> None:
    for shape in infer_shapes(spec):
        for index, blob in enumerate(shape.blobs):
            view = dn.layer_array(net, shape.index, blob.name)
            view[:] = blobs[f"{shape.layer.name}/{index}"].ravel()


def predict(lib, net, x: np.ndarray) -> np.ndarray:
    pointer = x.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    out = lib.network_predict(net, pointer)
    return dn.float_array(out, net.contents.outputs).copy()


@pytest.fixture
def nets(libdarknet):
    """Parse cfgs in libdarknet and free them afterwards."""
    made = []

    def parse(cfg: str):
        net = dn.parse_cfg_text(libdarknet, cfg)
        made.append(net)
        return net

    yield parse
    for net in made:
        libdarknet.free_network(net)


def test_darknet_loads_our_file_and_predicts_the_same(libdarknet, nets, tmp_path):
    cfg, spec = darknet_net(*NET_GROUPS)
    blobs = random_blobs(spec, seed=3)
    path = tmp_path / "ours.weights"
    write_darknet_weights(path, spec, blobs, seen=1234)

    loaded, direct = nets(cfg), nets(cfg)
    libdarknet.load_weights(loaded, str(path).encode())
    set_darknet_blobs(direct, spec, blobs)

    assert dn.get_seen(loaded) == 1234
    theirs = darknet_blobs(loaded, spec)
    for key, value in blobs.items():
        assert theirs[key].tobytes() == value.tobytes(), f"blob {key} misplaced"

    x = np.random.default_rng(0).uniform(0, 1, 3 * 11 * 11).astype(np.float32)
    from_file = predict(libdarknet, loaded, x)
    from_buffers = predict(libdarknet, direct, x)
    assert from_file.tobytes() == from_buffers.tobytes()
    assert np.all(np.isfinite(from_file)) and abs(float(from_file.sum()) - 1.0) < 1e-5

    resaved = tmp_path / "resaved.weights"
    libdarknet.save_weights(loaded, str(resaved).encode())
    assert resaved.read_bytes() == path.read_bytes()


@pytest.mark.parametrize("net_def", [NET_GROUPS, NET_ODD], ids=["groups", "odd"])
def test_we_read_what_darknet_saves(libdarknet, nets, tmp_path, net_def):
    cfg, spec = darknet_net(*net_def)
    net = nets(cfg)
    set_darknet_blobs(net, spec, random_blobs(spec, seed=11))
    dn.set_seen(net, 2**40 + 7)  # needs the 8-byte size_t field
    path = tmp_path / "theirs.weights"
    libdarknet.save_weights(net, str(path).encode())

    header, arrays = read_darknet_weights(path, spec)
    assert header == WeightsHeader(0, 2, 0, 2**40 + 7)
    theirs = darknet_blobs(net, spec)
    assert arrays.keys() == theirs.keys()
    for key in theirs:
        assert arrays[key].tobytes() == theirs[key].tobytes(), f"blob {key} differs"


@pytest.mark.parametrize(
    ("major", "minor", "seen_bytes", "transpose"),
    [
        (0, 1, 4, False),
        (1, 0, 8, False),
        (1000, 0, 4, False),
        (0, 1001, 4, True),
        (1001, 5, 4, True),
    ],
)
def test_header_variants_load_in_darknet(
    libdarknet, nets, tmp_path, major, minor, seen_bytes, transpose
):
    cfg, spec = darknet_net(*NET_ODD)
    blobs = random_blobs(spec, seed=5)
    path = tmp_path / "variant.weights"
    write_darknet_weights(path, spec, blobs, seen=777, major=major, minor=minor, revision=3)
    header, arrays = read_darknet_weights(path, spec)
    assert (header.seen_bytes, header.transpose, header.seen) == (seen_bytes, transpose, 777)

    net = nets(cfg)
    libdarknet.load_weights(net, str(path).encode())
    assert dn.get_seen(net) == 777
    theirs = darknet_blobs(net, spec)
    for key in blobs:
        assert theirs[key].tobytes() == blobs[key].tobytes(), f"blob {key} differs"
        assert arrays[key].tobytes() == blobs[key].tobytes()
