"""Compiling the CPU backend's per-element Python functions for the GPU, and launch sizes.

The per-element math is written once, as small Python functions in the CPU kernel modules
(``engine.backends.cpu.activations``: ``leaky_activate``, ``darknet_activate``, …;
``engine.backends.cpu.update``: ``darknet_sgd_element``, ``caffe_adam_element``, …). The CPU
backend compiles them with ``@njit(inline="always")``; :func:`device_function` compiles the same
Python source with ``cuda.jit(device=True)``. numba-cuda cannot call a CPU dispatcher from a
kernel, so the function's globals are rebound: every ``@njit`` function it calls is replaced by
that function's own device build (recursively), everything else (constants, ``np``, ``math``)
is kept.

Launch sizes: kernels use grid-stride loops, so any grid is correct. On a GPU a grid covers the
work with 256-thread blocks; under the simulator (``NUMBA_ENABLE_CUDASIM=1``, every CUDA thread
is a Python thread) one block of 8 threads keeps the tests fast.
"""

from __future__ import annotations

from types import FunctionType

from numba import config, cuda
from numba.core.dispatcher import Dispatcher

SIMULATOR = bool(config.ENABLE_CUDASIM)

THREADS = 8 if SIMULATOR else 256
MAX_BLOCKS = 1 if SIMULATOR else 4096

_DEVICE_FUNCTIONS: dict[FunctionType, object] = {}


def device_function(func):
    """The CUDA device build of ``func`` (a Python function or an ``@njit`` dispatcher).

    Calls from ``func`` to other ``@njit`` functions are rebound to their device builds, so a
    dispatch function such as ``darknet_activate`` compiles together with all its leaves.
    """
    py_func = func.py_func if isinstance(func, Dispatcher) else func
    built = _DEVICE_FUNCTIONS.get(py_func)
    if built is not None:
        return built
    namespace = dict(py_func.__globals__)
    for name in py_func.__code__.co_names:
        value = namespace.get(name)
        if isinstance(value, Dispatcher) or (
            isinstance(value, FunctionType) and value.__module__ == py_func.__module__
        ):
            namespace[name] = device_function(value)
    clone = FunctionType(
        py_func.__code__, namespace, py_func.__name__, py_func.__defaults__, py_func.__closure__
    )
    clone.__qualname__ = py_func.__qualname__
    clone.__doc__ = py_func.__doc__
    clone.__module__ = py_func.__module__
    built = cuda.jit(device=True)(clone)
    _DEVICE_FUNCTIONS[py_func] = built
    return built


def grid(work: int) -> tuple[int, int]:
    """``(blocks, threads)`` for a grid-stride kernel over ``work`` items."""
    blocks = max(1, min(MAX_BLOCKS, -(-max(work, 1) // THREADS)))
    return blocks, THREADS


def launch(kernel, work: int):
    """``kernel[grid(work)]``: the kernel configured for ``work`` items."""
    return kernel[grid(work)]
