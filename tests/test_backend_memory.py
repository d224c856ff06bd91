"""Large CPU buffers on their own huge-page mappings (engine.backends.cpu.memory): zeroed,
writable, 2 MiB-aligned, alive as long as any view, NumPy's own below the threshold or where
the mapping cannot be had."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from dnupdate.engine.backends.cpu import CpuBackend, memory

needs_mapping = pytest.mark.skipif(memory._LIBC is None, reason="no madvise(MADV_HUGEPAGE)")


@needs_mapping
@pytest.mark.parametrize("shape", [(128, 64, 8, 8), (3, 1 << 20), (1 << 19) + 5])
def test_a_large_buffer_is_a_zeroed_aligned_writable_mapping(shape):
    array = memory.zeros(shape, np.float32)
    assert array.shape == (shape if isinstance(shape, tuple) else (shape,))
    assert array.dtype == np.float32 and array.flags.c_contiguous and array.flags.writeable
    assert array.ctypes.data % memory.HUGE_PAGE == 0
    assert not array.any()
    array[...] = 1.5
    assert (array == 1.5).all()


@needs_mapping
def test_a_view_keeps_the_mapping_alive():
    array = memory.zeros((1 << 20,), np.float32)
    view = array[10:20]
    view[:] = np.arange(10)
    del array
    gc.collect()
    view += 1.0
    assert view.tolist() == [float(v) for v in range(1, 11)]


def test_small_buffers_and_a_missing_mapping_are_numpy_s(monkeypatch):
    small = memory.zeros((100, 100), np.float32)
    assert small.flags.owndata and not small.any()
    monkeypatch.setattr(memory, "_LIBC", None)
    large = memory.zeros((1 << 20,), np.float64)
    assert large.flags.owndata and large.dtype == np.float64 and not large.any()


def test_the_backend_s_large_buffers_start_zero_and_small_ones_are_plain():
    backend = CpuBackend()
    for make in (backend.zeros, backend.empty):
        large = make((1 << 20,))
        assert large.dtype == np.float32 and not large.any()
    assert backend.empty((16,)).shape == (16,)
    assert backend.zeros((16,), dtype=np.int64).dtype == np.int64


@needs_mapping
def test_arrays_on_mappings_outlive_the_interpreter_s_exit_handlers():
    """An exit handler reading a large buffer still finds it mapped (the finalizer does not
    run at exit), and the process exits cleanly."""
    import subprocess
    import sys

    code = (  # finalizers run at exit newest first: the array's own would go before this one
        "import weakref, numpy as np\n"
        "from dnupdate.engine.backends.cpu import memory\n"
        "class Holder: pass\n"
        "holder, held = Holder(), []\n"
        "weakref.finalize(holder, lambda: print(float(held[0].sum())))\n"
        "held.append(memory.zeros((1 << 20,), np.float32))\n"
        "held[0][:] = 2.0\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(float(2 << 20))


@needs_mapping
def test_a_large_empty_buffer_is_a_mapping_and_a_small_one_numpy_s():
    large = memory.empty((1 << 20,), np.float32)
    assert large.ctypes.data % memory.HUGE_PAGE == 0 and not large.any()
    assert memory.empty((16,), np.int64).flags.owndata
