"""The CUDA backend on numba-cuda (optional extra ``cuda``): ``--device cuda``.

:func:`is_available` says whether kernels can run here: a CUDA driver with at least one GPU,
or the numba-cuda simulator (``NUMBA_ENABLE_CUDASIM=1``, every kernel run as Python threads:
slow, for tests). :func:`list_devices` describes the GPUs without raising when there is no
driver. :class:`CudaBackend` (``engine.backends.cuda.backend``) is imported on first use, so
importing this package does not initialise CUDA.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CudaDevice:
    """One GPU as numba-cuda reports it: ``index``, ``name``, compute capability
    ``(major, minor)`` and total memory in bytes (0 when unknown)."""

    index: int
    name: str
    compute_capability: tuple[int, int]
    memory_bytes: int


def _cuda():
    """numba's CUDA module, or None when numba-cuda (the ``cuda`` extra) is not installed."""
    try:
        from numba import cuda
    except ImportError:
        return None
    return cuda


def simulator_enabled() -> bool:
    """Whether numba-cuda runs its simulator (``NUMBA_ENABLE_CUDASIM=1``) in this process."""
    try:
        from numba import config
    except ImportError:
        return False
    return bool(getattr(config, "ENABLE_CUDASIM", False))


def is_available() -> bool:
    """True when CUDA kernels can run: numba-cuda with a driver and a GPU, or the simulator.

    Never raises: a missing package, driver or device all give False.
    """
    cuda = _cuda()
    if cuda is None:
        return False
    try:
        return bool(cuda.is_available())
    except Exception:
        return False


def unavailable_reason() -> str:
    """Why :func:`is_available` is False, in one line for an error message."""
    if _cuda() is None:
        return (
            "numba-cuda is not installed (install the 'cuda' extra: pip install 'dnupdate[cuda]')"
        )
    return "no CUDA driver or GPU found by numba-cuda"


def list_devices() -> list[CudaDevice]:
    """The GPUs numba-cuda sees (empty without numba-cuda, driver or device; the simulator
    reports its one fake device)."""
    if not is_available():
        return []
    cuda = _cuda()
    found = []
    try:
        for index, gpu in enumerate(cuda.gpus):
            with gpu:
                device = cuda.get_current_device()
                name = device.name.decode() if isinstance(device.name, bytes) else device.name
                memory = 0
                try:
                    memory = int(cuda.current_context().get_memory_info()[1])
                except Exception:
                    memory = 0
                capability = tuple(getattr(device, "compute_capability", (0, 0)))
                found.append(CudaDevice(index, str(name), capability, memory))
    except Exception:
        return found
    return found


def __getattr__(name: str):
    if name == "CudaBackend":
        from dnupdate.engine.backends.cuda.backend import CudaBackend

        return CudaBackend
    raise AttributeError(name)


__all__ = [
    "CudaBackend",
    "CudaDevice",
    "is_available",
    "list_devices",
    "simulator_enabled",
    "unavailable_reason",
]
