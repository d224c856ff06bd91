"""``dnupdate bench`` and ``engine.bench``: workloads, work counts, result records, the worker
round trip on a tiny net and the PyTorch comparison's messages. No timing is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dnupdate.cli.main import app
from dnupdate.engine.backends import jit_env
from dnupdate.engine.backends.cpu import microkernel
from dnupdate.engine.bench import workloads as bench
from dnupdate.engine.bench.measure import BenchResult, summarise_windows, worker_environment
from dnupdate.engine.bench.worker import cpu_model
from dnupdate.engine.bench.workloads import (
    BUILTIN_WORKLOADS,
    BenchError,
    BenchSettings,
    gemm_flops,
    resolve_workload,
)
from dnupdate.engine.config import load_config

runner = CliRunner()

ISSUE_FIELDS = {
    "workload",
    "mode",
    "threads",
    "batch",
    "images_per_s",
    "images_per_s_min",
    "images_per_s_max",
    "gflops",
    "peak_fraction",
    "compile_s",
    "peak_rss_mib",
    "blas",  # the library our GEMMs went to (openblas, or mkl with --blas mkl)
    "cpu",  # the CPU's model name
    "conv_micro_kernel",  # whether stride-1 convolutions could take the micro-kernel
    "threading_layer",  # Numba's threading layer in our worker
}

TINY_CFG = """\
[net]
batch=4
subdivisions=1
height=8
width=8
channels=3
learning_rate=0.01
momentum=0.9
decay=0.0005
max_batches=10

[convolutional]
batch_normalize=1
filters=4
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[connected]
output=5
activation=linear

[softmax]
"""


@pytest.fixture
def tiny_cfg(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.cfg"
    path.write_text(TINY_CFG)
    return path


def test_builtin_workloads_load_with_the_issue_shapes_and_batches():
    expected = {
        "lenet": ((1, 28, 28), 64, "caffe", 5e-4),
        "cifar-small": ((3, 32, 32), 128, "darknet", 5e-4),
        "cifar-small-bn": ((3, 32, 32), 128, "darknet", 5e-4),
        "mlp": ((1, 28, 28), 128, "darknet", 5e-4),
        "cifar-resnet": ((3, 32, 32), 128, "darknet", 1e-4),  # He et al.'s decay
    }
    assert set(BUILTIN_WORKLOADS) == set(expected)
    for name, (chw, batch, semantics, decay) in expected.items():
        run = load_config(resolve_workload(name).config)
        net_input = run.net.input
        assert (net_input.channels, net_input.height, net_input.width) == chw
        assert run.solver.minibatch == batch and run.solver.accumulate == 1
        assert run.solver.semantics == semantics
        assert run.solver.momentum == pytest.approx(0.9)
        assert run.solver.decay == pytest.approx(decay)
    bn_kinds = [
        getattr(layer, "batch_normalize", False)
        for layer in load_config(resolve_workload("cifar-small-bn").config).net.layers
    ]
    assert sum(bn_kinds) == 3
    plain = load_config(resolve_workload("cifar-small").config).net.layers
    assert not any(getattr(layer, "batch_normalize", False) for layer in plain)
    resnet = load_config(resolve_workload("cifar-resnet").config).net.layers
    assert [layer.kind for layer in resnet].count("shortcut") == 9
    assert sum(getattr(layer, "batch_normalize", False) for layer in resnet) == 19


def test_resolve_workload_accepts_a_config_path_and_names_builtins_on_error(tiny_cfg):
    workload = resolve_workload(str(tiny_cfg))
    assert workload.name == "tiny" and workload.config == str(tiny_cfg)
    with pytest.raises(BenchError, match="lenet, cifar-small, cifar-small-bn, mlp"):
        resolve_workload("no-such-workload")


def test_gemm_flops_counts_conv_and_connected_products_by_hand(tiny_cfg):
    net = load_config(str(tiny_cfg)).net
    conv = 2 * 4 * (3 * 3 * 3) * (8 * 8)  # F·K·N
    connected = 2 * (4 * 4 * 4) * 5  # maxpool 8→4 (darknet size 2 stride 2)
    forward, training = gemm_flops(net)
    assert forward == conv + connected
    # first layer: forward + weight gradient; later layers also the input gradient
    assert training == 2 * conv + 3 * connected


def test_gemm_flops_of_lenet_matches_the_textbook_count():
    forward, _ = gemm_flops(load_config(resolve_workload("lenet").config).net)
    conv1 = 2 * 20 * 25 * 24 * 24
    conv2 = 2 * 50 * (20 * 25) * 8 * 8
    ip = 2 * 800 * 500 + 2 * 500 * 10
    assert forward == conv1 + conv2 + ip


def test_summarise_windows_gives_median_and_range():
    assert summarise_windows([3.0, 1.0, 2.0, 10.0]) == (2.5, 1.0, 10.0)
    with pytest.raises(BenchError):
        summarise_windows([])


def test_result_json_has_exactly_the_issue_fields_plus_torch_ones_when_compared():
    base = BenchResult("lenet", "train", 2, 64, 100.0, 90.0, 110.0, 1.5, 0.01, 0.2, 150.0)
    assert set(base.as_json()) == ISSUE_FIELDS
    compared = BenchResult(
        "lenet", "train", 2, 64, 100.0, 90.0, 110.0, 1.5, 0.01, 0.2, 150.0,
        torch_images_per_s=50.0, ratio=2.0,
    )  # fmt: skip
    data = json.loads(compared.json_line())
    assert set(data) == ISSUE_FIELDS | {"torch_images_per_s", "ratio"}
    assert data["ratio"] == 2.0


def test_worker_environment_caps_every_thread_pool():
    env = worker_environment(3, None)
    for key in ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        assert env[key] == "3"
    assert "NUMBA_CACHE_DIR" not in env
    assert worker_environment(1, "/tmp/x")["NUMBA_CACHE_DIR"] == "/tmp/x"


def test_settings_reject_impossible_values():
    for bad in (
        BenchSettings(threads=0),
        BenchSettings(threads=1, iters=0),
        BenchSettings(threads=1, windows=0),
        BenchSettings(threads=1, modes=("fit",)),
    ):
        with pytest.raises(BenchError):
            bad.check()


def test_vs_torch_without_torch_says_how_to_install(monkeypatch, tiny_cfg):
    monkeypatch.setattr(bench, "torch_available", lambda: False)
    result = runner.invoke(app, ["bench", str(tiny_cfg), "--vs", "torch"])
    assert result.exit_code == 1
    assert "PyTorch" in result.output and "not installed" in result.output
    assert "pip install torch" in result.output


def test_vs_other_framework_is_a_usage_error(tiny_cfg):
    result = runner.invoke(app, ["bench", str(tiny_cfg), "--vs", "caffe"])
    assert result.exit_code == 2
    assert "only 'torch'" in result.output


def test_unknown_workload_is_a_clear_error():
    result = runner.invoke(app, ["bench", "no-such-workload"])
    assert result.exit_code == 1
    assert "no workload or config file 'no-such-workload'" in result.output


def _bench_json(*args: str) -> list[dict]:
    command = [
        sys.executable,
        "-c",
        "from dnupdate.cli.main import app; app()",
        "bench",
        *args,
        "--json",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_bench_names_the_blas_it_ran(tiny_cfg):
    """``blas`` in every row: OpenBLAS by default, Intel MKL with ``--blas mkl`` where MKL is
    installed (``--blas auto``: MKL when installed)."""
    from dnupdate.engine.backends.mkl import load_mkl

    common = (str(tiny_cfg), "--threads", "1", "--windows", "1", "--iters", "1", "--mode", "train")
    assert [row["blas"] for row in _bench_json(*common, "--blas", "openblas")] == ["openblas"]
    want = "openblas" if load_mkl() is None else "mkl"
    assert [row["blas"] for row in _bench_json(*common, "--blas", "auto")] == [want]


def test_bench_json_runs_a_tiny_config_in_both_modes(tiny_cfg):
    rows = _bench_json(str(tiny_cfg), "--threads", "1", "--windows", "2", "--iters", "2")
    assert [row["mode"] for row in rows] == ["train", "infer"]
    for row in rows:
        assert set(row) == ISSUE_FIELDS
        assert row["workload"] == "tiny" and row["batch"] == 4 and row["threads"] == 1
        assert 0 < row["images_per_s_min"] <= row["images_per_s"] <= row["images_per_s_max"]
        assert row["gflops"] > 0 and row["peak_fraction"] > 0
        assert row["compile_s"] >= 0 and row["peak_rss_mib"] > 10
        # the machine facts come from the worker: this process's CPU and micro-kernel gate
        assert row["cpu"] == cpu_model() and row["cpu"]
        assert row["conv_micro_kernel"] is microkernel.AVAILABLE
        assert row["threading_layer"] == jit_env.default_threading_layer()


def test_bench_compares_with_torch_when_installed(tiny_cfg):
    pytest.importorskip("torch")
    rows = _bench_json(
        str(tiny_cfg), "--threads", "1", "--windows", "1", "--iters", "1", "--vs", "torch",
        "--mode", "train",
    )  # fmt: skip
    assert len(rows) == 1
    row = rows[0]
    assert row["torch_images_per_s"] > 0
    assert row["ratio"] == pytest.approx(row["images_per_s"] / row["torch_images_per_s"], 1e-3)


def test_torch_translation_reproduces_every_layer_shape():
    torch = pytest.importorskip("torch")
    from dnupdate.engine.bench.torch_twin import torch_model
    from dnupdate.engine.model.shapes import infer_shapes

    for name in BUILTIN_WORKLOADS:
        net = load_config(resolve_workload(name).config).net
        model, _ = torch_model(net)
        x = torch.zeros((2, net.input.channels, net.input.height, net.input.width))
        if not isinstance(model, torch.nn.Sequential):  # a graph net: see the tests below
            assert tuple(model(x).shape) == (2, 10), name
            continue
        pooled = [s.output for s in infer_shapes(net, "train") if s.layer.kind == "pool"]
        seen = []
        for module in model:
            x = module(x)
            if "Pool" in type(module).__name__:
                seen.append(tuple(x.shape[1:]))
        assert seen == pooled, name
        assert tuple(x.shape) == (2, 10), name


@pytest.mark.parametrize(
    ("add_shape", "out_shape", "alpha", "beta"),
    [
        ((2, 4, 6, 6), (2, 4, 6, 6), 1.0, 1.0),  # identity shortcut
        ((2, 4, 8, 8), (2, 8, 4, 4), 1.0, 1.0),  # option A: stride 2, channels doubled
        ((2, 8, 8, 8), (2, 4, 4, 4), 0.5, 2.0),  # fewer output channels, scaled
        ((2, 3, 4, 4), (2, 5, 8, 8), 1.0, 0.5),  # upsampling (sample 2)
        ((2, 4, 6, 6), (2, 4, 6, 6), 0.25, -1.0),
    ],
)
def test_torch_shortcut_is_darknets_shortcut(add_shape, out_shape, alpha, beta):
    torch = pytest.importorskip("torch")
    import numpy as np

    from dnupdate.engine.backends.cpu.graph import shortcut
    from dnupdate.engine.bench.torch_twin import _shortcut_add
    from dnupdate.engine.spec import ShortcutSpec

    rng = np.random.default_rng(3)
    a = rng.standard_normal(add_shape, dtype=np.float32)
    x = rng.standard_normal(out_shape, dtype=np.float32)
    spec = ShortcutSpec(name="s", source="0", alpha=alpha, beta=beta)
    ours = x.copy()
    shortcut(a, ours, alpha, beta)
    theirs = _shortcut_add(torch, torch.from_numpy(x), torch.from_numpy(a), spec).numpy()
    np.testing.assert_allclose(theirs, ours, rtol=1e-6, atol=1e-6)


def test_torch_twin_of_the_resnet_follows_its_graph():
    torch = pytest.importorskip("torch")
    from dnupdate.engine.bench.torch_twin import torch_model
    from dnupdate.engine.model.shapes import infer_shapes

    net = load_config(resolve_workload("cifar-resnet").config).net
    model, _ = torch_model(net)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(convs) == len(norms) == 19
    assert [c.out_channels for c in convs] == [16] * 7 + [32] * 6 + [64] * 6
    params = sum(s.param_count for s in infer_shapes(net, "train"))
    assert sum(p.numel() for p in model.parameters()) == params
    x = torch.rand((2, 3, 32, 32))
    out = model(x)
    assert tuple(out.shape) == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("same_size", [True, False])
def test_torch_route_is_darknets_route(same_size):
    torch = pytest.importorskip("torch")
    import numpy as np

    from dnupdate.engine.backends.cpu.graph import route_copy
    from dnupdate.engine.bench.torch_twin import _route

    rng = np.random.default_rng(4)
    first = rng.standard_normal((2, 3, 4, 4), dtype=np.float32)
    second = rng.standard_normal((2, 5, 4, 4) if same_size else (2, 2, 2, 2), dtype=np.float32)
    ours = np.zeros((2, first[0].size + second[0].size), dtype=np.float32)
    route_copy(first, ours, 0)
    route_copy(second, ours, first[0].size)
    inputs = [torch.from_numpy(first), torch.from_numpy(second)]
    theirs = _route(torch, inputs, image_out=same_size).numpy()
    np.testing.assert_array_equal(theirs.reshape(2, -1), ours)


def test_blas_core_name_is_a_word_or_empty():
    from dnupdate.engine.bench.worker import blas_core_name

    name = blas_core_name()
    assert name == "" or name.isidentifier()


def test_device_without_a_backend_is_a_clear_error(tiny_cfg):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    command = [
        sys.executable, "-c", "from dnupdate.cli.main import app; app()", "bench", str(tiny_cfg),
        "--device", "no-such-device", "--windows", "1", "--iters", "1", "--warmup", "1",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 1
    assert "no-such-device" in done.stderr and "Traceback" not in done.stderr


def test_table_output_names_every_workload_and_mode(tiny_cfg):
    command = [
        sys.executable, "-c", "from dnupdate.cli.main import app; app()", "bench", str(tiny_cfg),
        "--threads", "1", "--windows", "1", "--iters", "1", "--warmup", "1",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "tiny" in done.stdout and "train" in done.stdout and "infer" in done.stdout
    assert "sgemm peak" in done.stdout
    assert "tiny train:" in done.stderr  # progress lines go to stderr


def test_interleaved_windows_alternate_and_settle_between_workers():
    from dnupdate.engine.bench.measure import _interleaved_windows

    log: list[str] = []

    def runner(name):
        def run():
            log.append(name)
            return float(len(log))

        return run

    mine, other = _interleaved_windows(
        runner("ours"), runner("theirs"), 3, settle=lambda: log.append("pause")
    )
    assert log == ["pause", "ours", "pause", "theirs", "pause", "theirs", "pause", "ours",
                   "pause", "ours", "pause", "theirs"]  # fmt: skip
    assert len(mine) == len(other) == 3
    log.clear()
    alone, none = _interleaved_windows(runner("ours"), None, 2, settle=lambda: log.append("x"))
    assert log == ["ours", "ours"] and none == [] and len(alone) == 2


def test_whole_runs_test_throughput_from_metrics(tmp_path):
    """scripts/whole_runs.py: a test's time is the gap to the row before it; training time
    excludes the tests between the first and last training rows; the test before the first
    update (row 0) is not counted."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "whole_runs", Path(__file__).resolve().parent.parent / "scripts" / "whole_runs.py"
    )
    whole_runs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(whole_runs)
    rows = [
        {"kind": "test", "iteration": 0, "seen": 0, "time_s": 5.0, "test_images": 100},
        {"kind": "train", "iteration": 0, "seen": 10, "time_s": 6.0},
        {"kind": "train", "iteration": 1, "seen": 20, "time_s": 7.0},
        {"kind": "test", "iteration": 1, "seen": 20, "time_s": 7.5, "test_images": 100},
        {"kind": "train", "iteration": 2, "seen": 30, "time_s": 8.5},
        {"kind": "test", "iteration": 2, "seen": 30, "time_s": 8.75, "test_images": 50},
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    rates = whole_runs.throughput(path)
    assert rates["test_images_per_s"] == pytest.approx(150 / 0.75)
    assert rates["train_images_per_s"] == pytest.approx(20 / 2.0)
    assert rates["test_over_train"] == pytest.approx(20.0)
    assert whole_runs.throughput(tmp_path / "missing.jsonl") == {}


def test_cpu_model_reads_proc_cpuinfo_or_falls_back(monkeypatch, tmp_path):
    """The model name line of ``/proc/cpuinfo``; without one, ``platform``'s answer."""
    import builtins
    import platform

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: X\nmodel name\t: Test CPU 9000 @ 3.00GHz\n")
    real_open = builtins.open

    def fake_open(path, *args, **kwargs):
        return real_open(info if path == "/proc/cpuinfo" else path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    assert cpu_model() == "Test CPU 9000 @ 3.00GHz"
    info.write_text("processor\t: 0\n")
    monkeypatch.setattr(platform, "processor", lambda: "")
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert cpu_model() == "x86_64"
    info.unlink()  # unreadable: OSError
    assert cpu_model() == "x86_64"


def test_bench_table_caption_names_the_cpu_and_the_micro_kernel(tiny_cfg):
    result = runner.invoke(
        app, ["bench", str(tiny_cfg), "--threads", "1", "--windows", "1", "--iters", "1",
              "--mode", "train"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert f"CPU {cpu_model()}" in flat
    assert "conv micro-kernel on" in flat if microkernel.AVAILABLE else "micro-kernel off" in flat
