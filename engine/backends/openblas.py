"""The OpenBLAS that NumPy uses, reached through ctypes (no Numba import).

NumPy's wheels bundle OpenBLAS under ``numpy.libs`` with prefixed symbol names
(``scipy_openblas_set_num_threads64_``...); a NumPy built against a system OpenBLAS has it
among the process's loaded libraries instead. :func:`openblas_function` finds an entry point
in either, for thread control (``--threads``) and for reporting the kernel set
(``openblas_get_corename``).
"""

from __future__ import annotations

import ctypes
import glob
import os
from collections.abc import Iterator
from functools import cache

import numpy as np

SET_NUM_THREADS = (
    "scipy_openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
)
GET_CORENAME = (
    "scipy_openblas_get_corename64_",
    "scipy_openblas_get_corename",
    "openblas_get_corename64_",
    "openblas_get_corename",
)


def _library_paths() -> Iterator[str]:
    """NumPy's bundled OpenBLAS files, then any OpenBLAS this process has loaded (Linux)."""
    folder = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    yield from sorted(glob.glob(os.path.join(folder, "*openblas*.so*")))
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            yield from sorted({line.split()[-1] for line in maps if "openblas" in line.lower()})
    except OSError:
        return


@cache
def openblas_function(names: tuple[str, ...]):
    """The first of ``names`` exported by NumPy's OpenBLAS (a ctypes function), or None."""
    for path in _library_paths():
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for name in names:
            function = getattr(library, name, None)
            if function is not None:
                return function
    return None


def set_blas_threads(count: int) -> bool:
    """Set OpenBLAS's process-wide thread count; False when no OpenBLAS was found."""
    setter = openblas_function(SET_NUM_THREADS)
    if setter is None:
        return False
    setter.argtypes = [ctypes.c_int]
    setter.restype = None
    setter(max(1, count))
    return True


def core_name() -> str:
    """The kernel set OpenBLAS chose for this CPU (``Haswell``, ``SkylakeX``, ``Zen``...;
    ``OPENBLAS_CORETYPE`` overrides it at load), or ``""`` where NumPy uses another BLAS."""
    getter = openblas_function(GET_CORENAME)
    if getter is None:
        return ""
    getter.restype = ctypes.c_char_p
    return getter().decode(errors="replace")
