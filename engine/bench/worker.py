"""The benchmark worker: one process that builds one workload (ours or PyTorch's) and times it
on request; :class:`WorkerProcess` is the parent's handle.

A worker is a ``spawn`` child started with the thread caps (and, for a cold run, the JIT cache
directory) in its environment, so they hold before NumPy, OpenBLAS and Numba load. The parent
sends ``(request, args)`` over a pipe; the worker answers ``("ok", value)`` or
``("error", message)``. Requests: ``setup``, ``sgemm_peak``, ``warmup``, ``calibrate``,
``window``, ``peak_rss_mib``, ``stop``.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import resource
import time
import traceback
from typing import Any

from dnupdate.engine.backends.jit_env import child_environment
from dnupdate.engine.bench.runner import Runner, dnupdate_runner
from dnupdate.engine.bench.workloads import BenchError, gemm_flops

SGEMM_SIZE = 2048
SGEMM_REPEATS = 5


class WorkerProcess:
    """Parent side: start a worker for ``kind`` (``"dnupdate"`` or ``"torch"``) on the config
    at ``config_path`` with ``overrides`` (``--set`` pairs, ours only); :meth:`call` sends one
    request and returns its answer."""

    def __init__(self, kind: str, config_path: str, settings, env: dict[str, str], overrides=()):
        self._error = BenchError
        self.kind = kind
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=worker_main,
            args=(child, kind, config_path, settings, tuple(overrides)),
            daemon=True,
        )
        with child_environment(env):
            self._process.start()
        child.close()

    def call(self, request: str, *args: Any) -> Any:
        """Send ``request`` and wait for its answer; a worker error becomes a BenchError."""
        try:
            self._conn.send((request, args))
            status, value = self._conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            code = self._process.exitcode
            raise self._error(f"the {self.kind} benchmark worker died (exit code {code})") from None
        if status != "ok":
            raise self._error(value)
        return value

    def close(self) -> None:
        """Stop the worker (politely, then by force)."""
        with contextlib.suppress(BrokenPipeError, OSError):
            self._conn.send(("stop", ()))
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()


# --------------------------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------------------------


def peak_rss_mib() -> float:
    """This process's peak resident set size in MiB (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def sgemm_peak_gflops(size: int = SGEMM_SIZE, repeats: int = SGEMM_REPEATS) -> float:
    """Best GFLOP/s of ``np.matmul`` on two ``size×size`` float32 matrices (``2·size³`` flops),
    with the BLAS threads of this process."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.random((size, size), dtype=np.float32)
    b = rng.random((size, size), dtype=np.float32)
    out = np.empty((size, size), dtype=np.float32)
    np.matmul(a, b, out=out)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best / 1e9


def blas_core_name() -> str:
    """The kernel set NumPy's OpenBLAS chose for this CPU (see ``engine.backends.openblas``)."""
    from dnupdate.engine.backends.openblas import core_name

    return core_name()


def blas_name() -> str:
    """The library our GEMMs go to in this process: ``openblas`` or ``mkl``
    (``engine.backends.cpu.sgemm.BLAS_NAME``)."""
    from dnupdate.engine.backends.cpu.sgemm import BLAS_NAME

    return BLAS_NAME


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``; elsewhere ``platform.processor()``, or
    the machine type): rates from different CPUs do not compare."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def conv_micro_kernel() -> bool:
    """Whether the CPU backend's convolution micro-kernel runs in this process (the JIT
    target has FMA and AVX-512F: ``engine.backends.cpu.microkernel.AVAILABLE``); without it
    stride-1 convolutions take the OpenBLAS paths, with other speed and last bits."""
    from dnupdate.engine.backends.cpu.microkernel import AVAILABLE

    return AVAILABLE


def threading_layer() -> str:
    """Numba's threading layer for this process's parallel passes (``omp``, ``tbb`` or
    ``workqueue``, as ``engine.backends.jit_env`` configured it): how fast a parallel pass
    starts depends on it (a VM's sleeping threads take ~0.1 ms to wake)."""
    from dnupdate.engine.backends import cpu_info

    return cpu_info().threading_layer


def worker_main(conn, kind: str, config_path: str, settings, overrides=()) -> None:
    """The worker loop (see the module docstring)."""
    state: dict[str, Any] = {}
    while True:
        try:
            request, args = conn.recv()
        except EOFError:
            return
        if request == "stop":
            conn.send(("ok", None))
            return
        try:
            value = _handle(state, kind, config_path, settings, request, args, overrides)
        except Exception as exc:  # passed to the parent as a message
            message = f"{kind} worker, {request}: {type(exc).__name__}: {exc}"
            if os.environ.get("DNUPDATE_BENCH_DEBUG"):
                message += "\n" + traceback.format_exc()
            conn.send(("error", message))
            continue
        conn.send(("ok", value))


def _handle(state, kind, config_path, settings, request, args, overrides=()):
    if request == "sgemm_peak":
        return (sgemm_peak_gflops(), blas_core_name(), blas_name(), cpu_model(),
                conv_micro_kernel(), threading_layer())  # fmt: skip
    if request == "peak_rss_mib":
        return peak_rss_mib()
    if request == "setup":
        return _setup(state, kind, config_path, settings, overrides)
    runner: Runner = state["runner"]
    if request == "warmup":
        (mode,) = args
        first = runner.timed(mode, 1)
        runner.timed(mode, max(0, settings.warmup - 1))
        steady = runner.timed(mode, 1)
        return max(0.0, first - steady)
    if request == "calibrate":
        (mode,) = args
        seconds = runner.timed(mode, 2) / 2
        return max(1, math.ceil(settings.window_s / max(seconds, 1e-6)))
    if request == "window":
        mode, count = args
        return count * runner.batch / runner.timed(mode, count)
    raise ValueError(f"unknown request {request!r}")


def _setup(state, kind, config_path, settings, overrides=()) -> dict:
    from dnupdate.engine.config import load_config

    if kind == "torch":
        from dnupdate.engine.bench.torch_twin import torch_runner

        state["runner"] = torch_runner(config_path, settings)
    else:
        state["runner"] = dnupdate_runner(config_path, settings, overrides)
    flops_infer, flops_train = gemm_flops(load_config(config_path).net)
    return {
        "batch": state["runner"].batch,
        "flops_infer": flops_infer,
        "flops_train": flops_train,
    }
