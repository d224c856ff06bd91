"""NumPy's OpenBLAS ``cblas_sgemm``, callable from inside Numba kernels.

The per-image convolution kernels (:mod:`engine.backends.cpu.conv_images`) run one small GEMM
per image on every core at once, each core on its own images with its own im2col buffer kept
in cache, as darknet and Caffe do on one core. NumPy offers no GEMM that a Numba kernel can
call (``np.dot`` inside ``@njit`` needs SciPy), so the entry point of the OpenBLAS that NumPy
already loaded is registered with LLVM under a fixed symbol name (:data:`SYMBOL`) and declared
as a Numba external function: compiled kernels refer to the symbol by name, so Numba's on-disk
cache stays valid across processes (the address is bound again at every import).

Pointers are passed as ``intp`` (``array.ctypes.data``): on x86-64 and AArch64 a pointer and a
64-bit integer travel in the same registers. NumPy's wheels bundle an ILP64 OpenBLAS
(``scipy_cblas_sgemm64_``: 64-bit integer arguments); a NumPy built against a system
OpenBLAS has the LP64 ``cblas_sgemm`` (32-bit integers); each gets a symbol of its own so a
cached kernel can never call one with the other's argument widths. Where neither is found
(NumPy on MKL or Accelerate), :data:`AVAILABLE` is False and convolutions take the batched
NumPy ``matmul`` path instead. With ``DNUPDATE_BLAS=mkl`` and the optional ``mkl`` runtime
installed, Intel MKL's ILP64 ``cblas_sgemm_64`` takes the ILP64 symbol instead
(:mod:`engine.backends.mkl`); :data:`BLAS_NAME` says which library was bound.
"""

from __future__ import annotations

import ctypes

import llvmlite.binding as llvm
from numba import types

from dnupdate.engine.backends.mkl import BlasChoiceError, blas_choice, mkl_sgemm
from dnupdate.engine.backends.openblas import openblas_function

# cblas.h enums
ROW_MAJOR = 101
NO_TRANS = 111
TRANS = 112

_ILP64_NAMES = ("scipy_cblas_sgemm64_", "cblas_sgemm64_")
_LP64_NAMES = ("scipy_cblas_sgemm", "cblas_sgemm")


def _requested_blas() -> str:
    """``DNUPDATE_BLAS`` (:mod:`engine.backends.mkl`); an unknown name counts as the default
    here, at import, where nothing can be reported (every ``dnupdate`` command refuses it
    first, exit 1: ``cli.common.check_blas_environment``)."""
    try:
        return blas_choice()
    except BlasChoiceError:
        return "openblas"


def _entry_point(names: tuple[str, ...]) -> tuple[object, str]:
    """The ``sgemm`` of that integer width and the library's name: MKL's ILP64 one where it
    was asked for and is installed (it takes the ILP64 symbol: a cached kernel calls whichever
    library is bound at import), else OpenBLAS's."""
    if names is _ILP64_NAMES and _requested_blas() != "openblas":
        function = mkl_sgemm()
        if function is not None:
            return function, "mkl"
    return openblas_function(names), "openblas"


def _bind() -> tuple[bool, str, types.Type, str]:
    for names, symbol, integer in (
        (_ILP64_NAMES, "dnupdate_cblas_sgemm_ilp64", types.int64),
        (_LP64_NAMES, "dnupdate_cblas_sgemm_lp64", types.int32),
    ):
        function, library = _entry_point(names)
        if function is not None:
            llvm.add_symbol(symbol, ctypes.cast(function, ctypes.c_void_p).value)
            return True, symbol, integer, library
    return False, "dnupdate_cblas_sgemm_missing", types.int64, "numpy"


#: ``BLAS_NAME``: the library the GEMMs go to, ``openblas`` or ``mkl`` (``numpy``: neither
#: was found, ``np.matmul`` does the work)
AVAILABLE, SYMBOL, BLAS_INT, BLAS_NAME = _bind()

#: ``cblas_sgemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)``:
#: ``C = alpha·op(A)·op(B) + beta·C`` (row-major, pointers as ``intp``)
cblas_sgemm = types.ExternalFunction(
    SYMBOL,
    types.void(
        types.int32,
        types.int32,
        types.int32,
        BLAS_INT,
        BLAS_INT,
        BLAS_INT,
        types.float32,
        types.intp,
        BLAS_INT,
        types.intp,
        BLAS_INT,
        types.float32,
        types.intp,
        BLAS_INT,
    ),
)
