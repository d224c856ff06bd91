"""``dnupdate devices`` and choosing a backend by name (no GPU needed)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dnupdate.cli.main import app
from dnupdate.engine import backends
from dnupdate.engine.backends import BackendUnavailable, get_backend
from dnupdate.engine.backends import cuda as cuda_backend
from dnupdate.engine.backends.cuda import CudaDevice

RUNNER = CliRunner()


def test_get_backend_cpu_and_unknown_name():
    assert get_backend("cpu").name == "cpu"
    with pytest.raises(BackendUnavailable, match="unknown device 'tpu'"):
        get_backend("tpu")


def test_get_backend_cuda_without_a_device_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(cuda_backend, "is_available", lambda: False)
    with pytest.raises(BackendUnavailable, match=r"--device cuda: .*(numba-cuda|GPU)"):
        get_backend("cuda")


def test_devices_lists_cpu_and_says_none_without_cuda(monkeypatch):
    monkeypatch.setattr(cuda_backend, "list_devices", lambda: [])
    monkeypatch.setattr(cuda_backend, "simulator_enabled", lambda: False)
    result = RUNNER.invoke(app, ["devices"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    cpu = backends.cpu_info()
    assert lines[0].startswith(
        f"CPU: {cpu.cores} cores, {cpu.numba_threads} Numba threads ({cpu.threading_layer} layer)"
    )
    assert cpu.threading_layer  # what jit_env chose (tbb or workqueue) or the user's choice
    assert lines[-1].startswith("CUDA: none (")
    record = json.loads(RUNNER.invoke(app, ["devices", "--json"]).output)
    assert record["cpu"]["threading_layer"] == cpu.threading_layer


def test_devices_lists_each_gpu(monkeypatch):
    gpus = [CudaDevice(0, "Tesla T4", (7, 5), 16 * 2**30), CudaDevice(1, "A100", (8, 0), 0)]
    monkeypatch.setattr(cuda_backend, "list_devices", lambda: gpus)
    monkeypatch.setattr(cuda_backend, "simulator_enabled", lambda: False)
    result = RUNNER.invoke(app, ["devices"])
    assert result.exit_code == 0, result.output
    assert "CUDA 0: Tesla T4, compute 7.5, 16.0 GiB" in result.output
    assert "CUDA 1: A100, compute 8.0, memory unknown" in result.output
    assert "none" not in result.output
    record = json.loads(RUNNER.invoke(app, ["devices", "--json"]).output)
    assert [g["name"] for g in record["cuda"]] == ["Tesla T4", "A100"]
    assert record["cuda"][0]["compute_capability"] == [7, 5]
    assert record["cuda_unavailable"] is None


def test_list_devices_never_raises_without_numba_cuda(monkeypatch):
    monkeypatch.setattr(cuda_backend, "_cuda", lambda: None)
    assert cuda_backend.is_available() is False
    assert cuda_backend.list_devices() == []
    assert "cuda" in cuda_backend.unavailable_reason()
