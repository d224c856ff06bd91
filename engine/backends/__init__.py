"""Backends by name: ``get_backend("cpu")`` (NumPy/Numba) or ``get_backend("cuda")``
(numba-cuda, the optional ``cuda`` extra). Both implement :class:`engine.backends.base.Backend`
with the same method names, so layers and update rules never branch on the device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from dnupdate.engine.backends.base import Backend, BackendError
from dnupdate.engine.backends.jit_env import configure_numba_environment

configure_numba_environment()  # before any backend imports Numba (engine.backends.jit_env)

BACKEND_NAMES = ("cpu", "cuda")


class BackendUnavailable(BackendError):
    """The requested backend cannot run here (no CUDA device, numba-cuda not installed, or
    an unknown name); the message says which and what to do. The train command exits 1."""


def get_backend(name: str, *, threads: int | None = None) -> Backend:
    """The backend called ``name``: ``cpu`` (``threads`` Numba threads, None = automatic) or
    ``cuda`` (raises :class:`BackendUnavailable` when no GPU or simulator is usable)."""
    if name == "cpu":
        from dnupdate.engine.backends.cpu import CpuBackend

        return CpuBackend(threads=threads)
    if name == "cuda":
        from dnupdate.engine.backends import cuda

        if not cuda.is_available():
            raise BackendUnavailable(f"--device cuda: {cuda.unavailable_reason()}")
        return cuda.CudaBackend()
    raise BackendUnavailable(f"unknown device {name!r} (known: {', '.join(BACKEND_NAMES)})")


def backend_for(array) -> Backend:
    """A backend whose device arrays are of ``array``'s kind (CPU for NumPy arrays)."""
    if type(array).__name__ == "CudaArray":
        return get_backend("cuda")
    return get_backend("cpu")


@dataclass(frozen=True)
class CpuInfo:
    """The host: logical ``cores``, Numba's thread count and threading layer (as configured:
    ``engine.backends.jit_env``) and the BLAS NumPy was built with."""

    cores: int
    numba_threads: int
    blas: str
    threading_layer: str = ""


def _gemm_blas(numpy_blas: str) -> str:
    """NumPy's BLAS, or Intel MKL where ``DNUPDATE_BLAS`` asks for it and it is installed
    (``engine.backends.mkl``: then the CPU backend's GEMMs go to MKL)."""
    from dnupdate.engine.backends import mkl

    try:
        choice = mkl.blas_choice()
    except mkl.BlasChoiceError:
        return numpy_blas
    if choice == "openblas" or mkl.load_mkl() is None:
        return numpy_blas
    return f"Intel MKL for our GEMMs ({mkl.BLAS_ENV}={choice}; NumPy's: {numpy_blas})"


def cpu_info() -> CpuInfo:
    """What ``dnupdate devices`` reports for the CPU (cheap: no benchmark, no BLAS probing)."""
    import numba
    import numpy as np

    blas = "unknown"
    try:
        build = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{build.get('name', '?')} {build.get('version', '')}".strip()
    except Exception:
        blas = "unknown"
    blas = _gemm_blas(blas)
    layer = str(numba.config.THREADING_LAYER)
    return CpuInfo(os.cpu_count() or 1, int(numba.config.NUMBA_NUM_THREADS), blas, layer)


__all__ = [
    "BACKEND_NAMES",
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "CpuInfo",
    "backend_for",
    "cpu_info",
    "get_backend",
]
