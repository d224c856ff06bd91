"""Shared pytest fixtures: the real darknet library (skipped where absent) and libc."""

from __future__ import annotations

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
