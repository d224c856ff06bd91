"""Helpers for the CUDA backend tests (``tests/test_cuda_*.py``; no tests in this module).

The CUDA tests run where kernels can run: on a GPU, or under numba-cuda's simulator
(``NUMBA_ENABLE_CUDASIM=1``, which must be set before ``numba.cuda`` is first imported; in CI
``tests/test_cuda_simulator.py`` starts one pytest subprocess with it). Elsewhere they skip.

:func:`on_backend` runs one backend call on device copies of host arrays and returns host
copies of every array afterwards, so a test can run the same call on the CPU and the CUDA
backend and compare: the CPU backend is the reference (its kernels are tested against NumPy
transcriptions and libdarknet elsewhere).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pytest

SIMULATOR_ENV = "NUMBA_ENABLE_CUDASIM"


def cuda_ready() -> bool:
    """Whether CUDA kernels can run in this process (GPU or simulator)."""
    from dnupdate.engine.backends import cuda

    return cuda.is_available()


requires_cuda = pytest.mark.skipif(
    not cuda_ready(),
    reason="no CUDA device; tests/test_cuda_simulator.py runs these under NUMBA_ENABLE_CUDASIM=1",
)


def backends() -> dict:
    """``{"cpu": CpuBackend(), "cuda": CudaBackend()}``."""
    from dnupdate.engine.backends import get_backend

    return {"cpu": get_backend("cpu"), "cuda": get_backend("cuda")}


def on_backend(
    backend,
    arrays: Mapping[str, np.ndarray | None],
    call: Callable[..., object],
) -> tuple[dict[str, np.ndarray], object]:
    """Copy ``arrays`` to ``backend`` (None stays None), run ``call(backend, **device)``, and
    return ``(host copies of every array, call's return value)``."""
    device = {}
    for name, host in arrays.items():
        if host is None:
            device[name] = None
            continue
        target = backend.zeros(host.shape, dtype=host.dtype)
        backend.copy_from_host(host, target)
        device[name] = target
    result = call(backend, **device)
    out = {name: backend.to_host(arr) for name, arr in device.items() if arr is not None}
    return out, result


def compare_backends(
    arrays: Mapping[str, np.ndarray | None],
    call: Callable[..., object],
    *,
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> tuple[dict[str, np.ndarray], object]:
    """Run ``call`` on both backends (see :func:`on_backend`) and assert every array (but
    those named ``scratch``: their contents are unspecified) and the return value agree within
    ``rtol``/``atol``; returns the CUDA side."""
    found = {name: on_backend(b, arrays, call) for name, b in backends().items()}
    (cpu_arrays, cpu_result), (gpu_arrays, gpu_result) = found["cpu"], found["cuda"]
    for name, expected in cpu_arrays.items():
        if name == "scratch":
            continue
        np.testing.assert_allclose(
            gpu_arrays[name], expected, rtol=rtol, atol=atol, err_msg=f"array {name}"
        )
    if cpu_result is not None or gpu_result is not None:
        np.testing.assert_allclose(gpu_result, cpu_result, rtol=rtol, atol=atol)
    return gpu_arrays, gpu_result
