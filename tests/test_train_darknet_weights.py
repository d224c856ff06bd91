"""``final.weights`` written by ``dnupdate train`` loads in the real darknet (libdarknet via
ctypes; skipped where it is not installed): the same floats in every layer, the same ``seen``,
and darknet saves back the very same bytes."""

from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from dnupdate.cli.main import app
from tests import libdarknet as dn
from tests.test_train_loop import darknet_config, write_quadrants


def test_darknet_loads_final_weights(libdarknet, tmp_path):
    data = write_quadrants(tmp_path / "quadrants.npz")
    config = darknet_config(tmp_path)
    out = tmp_path / "run"
    args = ["train", str(config), "--data", f"npz:{data}", "--out", str(out), "--max-iters", "5"]
    result = CliRunner().invoke(app, [*args, "-q"])
    assert result.exit_code == 0, result.output
    net = dn.parse_cfg_text(libdarknet, config.read_text())
    try:
        libdarknet.load_weights(net, str(out / "final.weights").encode())
        assert dn.get_seen(net) == 5 * 8  # five updates of batch 8
        final = np.load(out / "final.npz")
        # darknet blob order: conv biases (0/0) then weights (0/1); connected likewise (3/*)
        for layer, name, key in [
            (0, "biases", "0/0"),
            (0, "weights", "0/1"),
            (3, "biases", "3/0"),
            (3, "weights", "3/1"),
        ]:
            theirs = dn.layer_array(net, layer, name)
            assert theirs.tobytes() == final[key].ravel().tobytes(), key
        resaved = tmp_path / "resaved.weights"
        libdarknet.save_weights(net, str(resaved).encode())
        assert resaved.read_bytes() == (out / "final.weights").read_bytes()
    finally:
        libdarknet.free_network(net)
