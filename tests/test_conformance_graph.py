"""Graph networks against the real darknet library, beyond the per-layer and training cases
(``test_conformance_layers.py``/``test_conformance_training.py`` hold those): a ``.weights``
file of a residual net is placed as darknet places it (``[shortcut]``/``[route]`` store
nothing), and ``configs/cifar_resnet.cfg`` trains as darknet trains it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from dnupdate.engine.config import load_config
from dnupdate.engine.formats.weights import write_darknet_weights
from dnupdate.engine.training.step import run_fixed_batch
from tests import libdarknet as dn
from tests.test_conformance_init import darknet_blobs
from tests.test_conformance_training import CASES, Case, fixed_batch, train_darknet
from tests.test_conformance_weights import predict, random_blobs

pytestmark = pytest.mark.darknet

REPO = Path(__file__).resolve().parent.parent


def test_residual_weights_file_loads_in_darknet_and_predicts_the_same(libdarknet, tmp_path):
    text = re.sub(r"(?m)^batch=\d+$", "batch=1", CASES["residual_bn_subdiv2_shortcut_route"].cfg)
    text = re.sub(r"(?m)^subdivisions=\d+$", "subdivisions=1", text)
    spec = load_config("res.cfg", text=text).net
    blobs = random_blobs(spec, seed=5)
    path = tmp_path / "res.weights"
    write_darknet_weights(path, spec, blobs, seen=64)
    net = dn.parse_cfg_text(libdarknet, text)
    try:
        libdarknet.load_weights(net, str(path).encode())
        theirs = darknet_blobs(net, spec)
        for key, value in blobs.items():
            assert theirs[key].tobytes() == value.tobytes(), f"blob {key} misplaced"
        x = np.random.default_rng(1).uniform(0, 1, 3 * 8 * 8).astype(np.float32)
        probabilities = predict(libdarknet, net, x)
        resaved = tmp_path / "resaved.weights"
        libdarknet.save_weights(net, str(resaved).encode())
        assert resaved.read_bytes() == path.read_bytes()
    finally:
        libdarknet.free_network(net)
    assert abs(float(probabilities.sum()) - 1.0) < 1e-5


def test_cifar_resnet_trains_like_darknet(libdarknet):
    """The shipped ResNet-20 (batch cut to 4 in 2 subdivisions), 3 updates on a fixed batch:
    losses and every blob within 1e-5 of darknet's."""
    text = (REPO / "configs" / "cifar_resnet.cfg").read_text()
    text = re.sub(r"(?m)^batch=\d+$", "batch=4\nsubdivisions=2", text)
    text = re.sub(r"(?m)^subdivisions=1$", "", text)
    run = load_config("cifar_resnet.cfg", text=text)
    assert (run.solver.minibatch, run.solver.accumulate) == (2, 2)
    case = Case(text, (3, 32, 32), 10, 29)
    x, y = fixed_batch(case, 4)
    theirs = train_darknet(libdarknet, case, run.net, x, y, 3)
    trainer = run_fixed_batch(run, x, y, 3, seed=case.seed)
    np.testing.assert_allclose([r.loss for r in trainer.history], theirs.losses, atol=1e-5)
    blobs = dict(trainer.network.named_blobs())
    for key, expected in theirs.blobs.items():
        diff = float(np.max(np.abs(blobs[key] - expected)))
        assert diff <= 1e-5, f"blob {key} differs by {diff:.3g}"
