"""Intel MKL's ``sgemm``, an optional alternative to NumPy's OpenBLAS (ctypes, no Numba import).

``pip install 'dnupdate[mkl]'`` installs the ``mkl`` runtime (``libmkl_rt``). The BLAS the CPU
backend's GEMMs go to is chosen at import by the ``DNUPDATE_BLAS`` environment variable
(:data:`BLAS_ENV`): ``openblas`` (the default: NumPy's own), ``mkl`` (MKL where it is found,
OpenBLAS otherwise; ``auto`` says the same). MKL runs in its sequential threading layer (no
OpenMP pool of its own): our tiles and convolution chunks already share the work out to the
threads, one single-threaded call each with the same shapes whatever the thread count, so
results do not depend on the thread count with MKL either. MKL's code path is its automatic
one for the CPU (its strict reproducibility mode, which promises results independent of the
operands' alignment, cost 10–15% on the convolutions' small GEMMs; the tests check that
results do not move with alignment or threads on our shapes instead). The two libraries sum a
product's terms in different orders: results may differ between them in the last bits (both
are valid float32 orderings; darknet's own ``gemm_cpu`` differs from both).
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
from collections.abc import Mapping
from functools import cache

#: the environment variable that picks the BLAS: ``openblas`` (default), ``mkl``, ``auto``
BLAS_ENV = "DNUPDATE_BLAS"
CHOICES = ("openblas", "mkl", "auto")
#: ``MKL_THREADING_SEQUENTIAL`` (mkl_service.h)
_SEQUENTIAL = 1


class BlasChoiceError(ValueError):
    """``DNUPDATE_BLAS`` names no known BLAS."""


def blas_choice(environ: Mapping[str, str] | None = None) -> str:
    """The BLAS ``DNUPDATE_BLAS`` asks for (``openblas`` when unset); raises
    :class:`BlasChoiceError` for an unknown name."""
    value = (os.environ if environ is None else environ).get(BLAS_ENV, "").strip().lower()
    if value == "":
        return "openblas"
    if value not in CHOICES:
        raise BlasChoiceError(f"{BLAS_ENV}={value!r}: expected one of {', '.join(CHOICES)}")
    return value


def _library_paths() -> list[str]:
    """``libmkl_rt`` where the ``mkl`` wheel puts it (the environment's ``lib``), newest first."""
    found: list[str] = []
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        found += sorted(glob.glob(os.path.join(prefix, "lib", "libmkl_rt.so*")), reverse=True)
    return found


@cache
def load_mkl():
    """MKL's runtime library in its sequential threading layer, or None where absent. (The
    C entry points have mixed-case names, ``MKL_Set_Threading_Layer``: the lower-case ones
    of ``libmkl_rt`` are the Fortran interface, arguments by reference.)"""
    for path in _library_paths():
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        if getattr(library, "cblas_sgemm_64", None) is None:
            continue
        library.MKL_Set_Threading_Layer.argtypes = [ctypes.c_int]
        library.MKL_Set_Threading_Layer(_SEQUENTIAL)
        return library
    return None


def mkl_sgemm():
    """MKL's ILP64 ``cblas_sgemm_64`` (64-bit integer arguments, as NumPy's OpenBLAS), or None."""
    library = load_mkl()
    return None if library is None else library.cblas_sgemm_64


def mkl_version() -> str:
    """MKL's version string (``Intel(R) oneAPI Math Kernel Library Version 2026.2…``), or ""."""
    library = load_mkl()
    if library is None:
        return ""
    buffer = ctypes.create_string_buffer(256)
    library.MKL_Get_Version_String(buffer, len(buffer))
    return buffer.value.decode(errors="replace").strip()
