"""The optional Intel MKL sgemm (``DNUPDATE_BLAS``, ``dnupdate bench --blas``): the choice,
its messages, and, where MKL is installed, the same thread-count bit-identity as OpenBLAS (the
GEMM, convolution and per-tap tests run again in a process bound to MKL) and results that do
not move with the operands' alignment."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dnupdate.cli.main import app
from dnupdate.engine.backends import mkl
from dnupdate.engine.backends.cpu import sgemm

ROOT = Path(__file__).resolve().parent.parent
needs_mkl = pytest.mark.skipif(mkl.load_mkl() is None, reason="Intel MKL is not installed")
runner = CliRunner()


def test_the_choice_is_read_from_the_environment():
    assert mkl.blas_choice({}) == "openblas"
    assert mkl.blas_choice({mkl.BLAS_ENV: " MKL "}) == "mkl"
    assert mkl.blas_choice({mkl.BLAS_ENV: "auto"}) == "auto"
    with pytest.raises(mkl.BlasChoiceError, match=r"DNUPDATE_BLAS='blis'.*openblas, mkl, auto"):
        mkl.blas_choice({mkl.BLAS_ENV: "blis"})


def test_the_requested_blas_is_bound():
    """What this process asked for is what the GEMMs call (run again under MKL below)."""
    wanted = os.environ.get(mkl.BLAS_ENV, "").strip().lower()
    if not sgemm.AVAILABLE:
        pytest.skip("NumPy has no OpenBLAS sgemm")
    if wanted in ("mkl", "auto") and mkl.load_mkl() is not None:
        assert sgemm.BLAS_NAME == "mkl"
    else:
        assert sgemm.BLAS_NAME == "openblas"


def test_bench_refuses_an_unknown_blas():
    result = runner.invoke(app, ["bench", "mlp", "--blas", "blis"])
    assert result.exit_code == 2
    assert "--blas blis: expected one of openblas, mkl, auto" in result.output


def test_bench_refuses_an_unknown_blas_in_the_environment():
    result = runner.invoke(app, ["bench", "mlp"], env={mkl.BLAS_ENV: "blis"})
    assert result.exit_code == 1
    assert "DNUPDATE_BLAS='blis': expected one of openblas, mkl, auto" in result.output


@pytest.mark.parametrize(
    "args", [["lr-schedule", str(ROOT / "configs/quickstart.cfg")], ["devices"], ["data", "list"]]
)
def test_every_command_refuses_an_unknown_blas_in_the_environment(args):
    """Not only ``bench``: the GEMM binding would take an unknown name as OpenBLAS silently."""
    result = runner.invoke(app, args, env={mkl.BLAS_ENV: "blis"})
    assert result.exit_code == 1
    assert "dnupdate: error: DNUPDATE_BLAS='blis': expected one of" in result.output
    assert "Traceback" not in result.output


def test_help_is_shown_whatever_the_blas_variable_says():
    for args in (["--help"], ["train", "--help"], ["data", "list", "-h"]):
        result = runner.invoke(app, args, env={mkl.BLAS_ENV: "blis"})
        assert result.exit_code == 0, args
        assert "Usage" in result.output


def test_a_known_blas_in_the_environment_is_accepted():
    result = runner.invoke(
        app, ["lr-schedule", str(ROOT / "configs/quickstart.cfg")], env={mkl.BLAS_ENV: "OpenBLAS"}
    )
    assert result.exit_code == 0, result.output


def test_bench_says_when_mkl_is_missing(monkeypatch):
    monkeypatch.setattr(mkl, "load_mkl", lambda: None)
    result = runner.invoke(app, ["bench", "mlp", "--blas", "mkl"])
    assert result.exit_code == 1
    assert "pip install 'dnupdate[mkl]'" in result.output


def test_devices_names_mkl_where_it_is_chosen(monkeypatch):
    from dnupdate.engine.backends import cpu_info

    monkeypatch.setattr(mkl, "load_mkl", lambda: object())
    monkeypatch.setenv(mkl.BLAS_ENV, "mkl")
    assert cpu_info().blas.startswith("Intel MKL for our GEMMs (DNUPDATE_BLAS=mkl; NumPy's: ")
    monkeypatch.setenv(mkl.BLAS_ENV, "openblas")
    assert "MKL" not in cpu_info().blas
    monkeypatch.setattr(mkl, "load_mkl", lambda: None)
    monkeypatch.setenv(mkl.BLAS_ENV, "auto")
    assert "MKL" not in cpu_info().blas


@needs_mkl
def test_mkl_results_do_not_move_with_alignment():
    """Convolution and fully connected shapes, operands at 64-byte and at odd 4-byte offsets:
    the same bits (scratch buffers are placed differently from run to run)."""
    function = mkl.mkl_sgemm()
    function.argtypes = [ctypes.c_int] * 3 + [ctypes.c_int64] * 3 + [
        ctypes.c_float, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
        ctypes.c_float, ctypes.c_void_p, ctypes.c_int64,
    ]  # fmt: skip
    rng = np.random.default_rng(0)
    for m, n, k in [(16, 1024, 144), (32, 256, 288), (64, 64, 576), (128, 128, 784)]:
        outs = []
        for shift in (0, 1, 3):
            a = np.zeros(m * k + 16, np.float32)[shift : shift + m * k].reshape(m, k)
            b = np.zeros(k * n + 16, np.float32)[shift : shift + k * n].reshape(k, n)
            a[...] = np.random.default_rng(m).standard_normal((m, k))
            b[...] = np.random.default_rng(n).standard_normal((k, n))
            c = rng.standard_normal((m, n)).astype(np.float32)
            function(sgemm.ROW_MAJOR, sgemm.NO_TRANS, sgemm.NO_TRANS, m, n, k, 1.0,
                     a.ctypes.data, k, b.ctypes.data, n, 0.0, c.ctypes.data, n)  # fmt: skip
            outs.append(c)
        assert all(np.array_equal(outs[0], other) for other in outs[1:])


@needs_mkl
def test_thread_count_bit_identity_holds_under_mkl():
    """The GEMM, convolution and per-tap thread-count tests, in a process bound to MKL."""
    env = {**os.environ, mkl.BLAS_ENV: "mkl"}
    tests = [
        "tests/test_blas_mkl.py::test_the_requested_blas_is_bound",
        "tests/test_kernels_gemm.py::test_thread_count_changes_no_bit",
        "tests/test_kernels_conv.py::test_per_image_results_do_not_depend_on_the_thread_count",
        "tests/test_kernels_conv_taps.py::test_taps_do_not_depend_on_the_thread_count",
        "tests/test_kernels_conv_taps.py::test_taps_backward_does_not_depend_on_the_thread_count",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", *tests],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout
