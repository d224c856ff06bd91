"""Shared pytest fixtures: the real darknet library (skipped where absent) and libc.

GNU OpenMP's workers (Numba's default threading layer here, ``engine.backends.jit_env``) wait
passively in the tests: the suite runs two pytest processes on two cores, and each one's
spinning workers took the cores from the other's (2:24 against 1:58 for the whole suite). The
spin changes when a parallel region starts, never what it computes.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")  # before GNU OpenMP loads (docstring)

import pytest

from tests import libdarknet as _binding


@pytest.fixture(scope="session")
def libdarknet():
    """The ctypes-loaded ``libdarknet.so`` with prototypes set; skips the test where the
    library is not installed (CI installs Debian's ``darknet`` package)."""
    lib = _binding.load_library()
    if lib is None:
        pytest.skip(f"libdarknet not found at {_binding.LIBRARY_PATH}")
    return lib


@pytest.fixture(scope="session")
def libc():
    """The process's C library (``srand``/``rand``; ``libc.libm`` has ``powf``/``expf``)."""
    return _binding.libc()
