"""``dnupdate devices``: the CPU (cores, Numba threads, BLAS) and the CUDA devices found.

The engine does the probing (``engine.backends.cpu_info``, ``engine.backends.cuda``); a
machine without numba-cuda, a driver or a GPU prints ``CUDA: none`` and the reason, never a
traceback.
"""

from __future__ import annotations

import json

from dnupdate.cli.common import json_option
from dnupdate.cli.help_format import help_text

DEVICES_HELP = help_text(
    "List the CPU and the CUDA devices that --device cpu|cuda can use.",
    examples=("dnupdate devices", "dnupdate devices --json"),
)


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size else "memory unknown"


def devices(
    as_json: bool = json_option("One JSON object on stdout."),
) -> None:
    """List the CPU and the CUDA devices (see DEVICES_HELP)."""
    from dnupdate.engine.backends import cpu_info
    from dnupdate.engine.backends import cuda as cuda_backend

    cpu = cpu_info()
    gpus = cuda_backend.list_devices()
    simulator = cuda_backend.simulator_enabled() and cuda_backend.is_available()
    reason = None if gpus or simulator else cuda_backend.unavailable_reason()
    if as_json:
        record = {
            "cpu": {
                "cores": cpu.cores,
                "numba_threads": cpu.numba_threads,
                "threading_layer": cpu.threading_layer,
                "blas": cpu.blas,
            },
            "cuda": [
                {
                    "index": gpu.index,
                    "name": gpu.name,
                    "compute_capability": list(gpu.compute_capability),
                    "memory_bytes": gpu.memory_bytes,
                }
                for gpu in gpus
            ],
            "cuda_simulator": simulator,
            "cuda_unavailable": reason,
        }
        print(json.dumps(record))
        return
    print(
        f"CPU: {cpu.cores} cores, {cpu.numba_threads} Numba threads "
        f"({cpu.threading_layer} layer), BLAS {cpu.blas}"
    )
    if simulator:
        print("CUDA: simulator (NUMBA_ENABLE_CUDASIM=1: kernels run as Python threads, slow)")
    for gpu in gpus:
        major, minor = gpu.compute_capability
        print(f"CUDA {gpu.index}: {gpu.name}, compute {major}.{minor}, {_gib(gpu.memory_bytes)}")
    if not gpus and not simulator:
        print(f"CUDA: none ({reason})")
