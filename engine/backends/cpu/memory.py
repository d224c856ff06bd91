"""Large CPU buffers on transparent huge pages (Linux), everything else as NumPy allocates it.

A training step walks hundreds of megabytes of activations, deltas and batch-norm buffers
(cifar-resnet: ~650 MB) in a cache-cold order, and on a virtual machine every TLB miss is a
two-level page walk. NumPy asks for huge pages only on allocations of 4 MiB or more and does
not align them, so a 2 MiB buffer (a ResNet's 128×64×8×8 activation) stays on 4 KiB pages and
larger ones lose their unaligned ends. :func:`zeros` maps a buffer of at least
:data:`HUGE_MIN` bytes on its own, 2 MiB-aligned, private and anonymous (zero-filled by the
kernel), with ``madvise(MADV_HUGEPAGE)``: with the kernel's ``transparent_hugepage`` set to
``madvise`` or ``always`` its whole 2 MiB extents take huge pages as they are first touched.
The mapping ends where the buffer ends (rounded to 4 KiB), so a partial last extent stays on
small pages and nothing is resident beyond what NumPy's allocation would hold. The mapping is
unmapped when the array (and every view of it) is gone, never at interpreter exit. Measured on
the 2-core VM, same minute, alternating (steps in process): cifar-resnet 254–256 → 238–242
ms, cifar-small 45.7–46.6 → 42.4–43.3, the MLP 8.15–8.49 → 7.85–7.97, LeNet 6.38–6.48 →
6.21–6.45; the same bits. Elsewhere (no ``MADV_HUGEPAGE``, a failed mapping) the buffer is
NumPy's own.
"""

from __future__ import annotations

import ctypes
import mmap
import weakref

import numpy as np

#: the huge page size (x86-64 and arm64 with 4 KiB base pages)
HUGE_PAGE = 2 << 20
#: buffers of at least one huge page get a mapping of their own
HUGE_MIN = HUGE_PAGE
_PAGE = mmap.PAGESIZE
_MAP_FAILED = ctypes.c_void_p(-1).value


def _libc():
    """libc's ``mmap``/``munmap``/``madvise`` with their C signatures, or None."""
    if not hasattr(mmap, "MADV_HUGEPAGE"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long)  # fmt: skip
        libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
        libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def _huge_mapping(nbytes: int):
    """A writable ctypes byte array of ``nbytes`` (rounded up to a page) on a fresh 2 MiB
    aligned private anonymous mapping advised for huge pages, unmapped when collected; None
    where that cannot be had."""
    size = _round_up(nbytes, _PAGE)
    span = size + HUGE_PAGE
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    raw = _LIBC.mmap(None, span, mmap.PROT_READ | mmap.PROT_WRITE, flags, -1, 0)
    if raw is None or raw == _MAP_FAILED:
        return None
    start = _round_up(raw, HUGE_PAGE)
    if start > raw:  # the unaligned head and the tail past the buffer go back at once
        _LIBC.munmap(raw, start - raw)
    if raw + span > start + size:
        _LIBC.munmap(start + size, raw + span - (start + size))
    _LIBC.madvise(start, size, mmap.MADV_HUGEPAGE)  # advice only: ignored where unsupported
    buffer = (ctypes.c_char * size).from_address(start)
    # unmapped once nothing refers to it; never at interpreter exit, where atexit handlers and
    # teardown may still read arrays on it (the process's exit returns the memory anyway)
    weakref.finalize(buffer, _LIBC.munmap, start, size).atexit = False
    return buffer


def _allocate(shape, dtype, small) -> np.ndarray:
    """A buffer on its own huge-page mapping when it spans at least :data:`HUGE_MIN` bytes
    (zero-filled by the kernel), else (or where the mapping fails) ``small(shape, dtype)``."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    nbytes = count * dtype.itemsize
    buffer = None if _LIBC is None or nbytes < HUGE_MIN else _huge_mapping(nbytes)
    if buffer is None:
        return small(shape, dtype=dtype)
    return np.frombuffer(buffer, dtype=dtype, count=count).reshape(shape)


def zeros(shape, dtype=np.float32) -> np.ndarray:
    """``np.zeros(shape, dtype)``, large ones on huge pages (module docstring)."""
    return _allocate(shape, dtype, np.zeros)


def empty(shape, dtype=np.float32) -> np.ndarray:
    """``np.empty(shape, dtype)``, large ones on huge pages (then zeroed, as every fresh
    mapping is)."""
    return _allocate(shape, dtype, np.empty)
