"""Process-wide Numba settings that must be chosen before Numba loads (``engine.backends``
applies them on import, before any backend imports Numba). Each one yields to a value the user
already set in the environment.

* ``NUMBA_THREADING_LAYER``: ``tbb`` where Numba can load TBB (:func:`tbb_usable`), else
  ``workqueue``, never OpenMP. The CPU backend keeps OpenBLAS on one thread and tiles GEMMs
  over Numba's threads itself (``engine.backends.cpu.blas``), so no second pool of spinning
  workers competes for the cores (when OpenBLAS ran its own threads, TBB's and OpenMP's
  spinning workers made LeNet training 5–7× slower on 2 cores). TBB then starts a parallel
  region far faster than ``workqueue``, whose sleeping workers take long to wake on a VM: on 2
  vCPUs a parallel loop gained nothing under ``workqueue`` until it ran ~30 ms, while TBB
  scaled ~1.9× from 0.5 ms (LeNet's convolutions: 3.1 vs 5.8 ms forward). GNU OpenMP's workers
  spin ~8 ms at every region's end. Our kernels never nest parallel regions and one thread
  launches them, which is all ``workqueue`` supports.
* ``NUMBA_CACHE_DIR``: the JIT cache lives next to the sources (``__pycache__``) when that
  folder is writable; when the install directory is read-only it goes to the user cache
  folder (``platformdirs.user_cache_dir("dnupdate")/numba``), so a second run still starts
  warm. (Numba would fall back to its own per-user folder; naming ours keeps ``dnupdate``'s
  files together and makes the choice visible.)
* Stale in-tree caches: Numba validates a cached kernel by its own source file's timestamp
  only, so a kernel that inlines an ``njit`` function of another module (``precision.py``
  inlining ``reduce.py``'s lane sums) kept running the old code when only that module changed.
  Where the caches live next to the sources, :func:`drop_stale_kernel_caches` compares a
  fingerprint of every backend source with the one the caches were written under and, when
  it differs, deletes every cached kernel of the backends (recompiled on first use). It runs
  when the CPU kernels are imported (:func:`drop_stale_kernel_caches_once`), not on paths
  that never compile (``lr-schedule``).
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import os
import sys
from collections.abc import Callable, MutableMapping
from contextlib import suppress
from pathlib import Path

FALLBACK_THREADING_LAYER = "workqueue"
BACKENDS_DIR = Path(__file__).resolve().parent
#: the oldest TBB interface Numba's ``tbbpool`` accepts (``numba/np/ufunc/parallel.py``)
TBB_MIN_INTERFACE = 12060


def tbb_usable() -> bool:
    """Whether Numba's TBB threading layer would load, checked without importing Numba: load
    its ``tbbpool`` extension library (which pulls in ``libtbb`` by its own search path) and
    ask TBB its interface version, as Numba does."""
    spec = importlib.util.find_spec("numba")
    if spec is None or spec.origin is None:
        return False
    pools = sorted((Path(spec.origin).parent / "np" / "ufunc").glob("tbbpool*.so"))
    if not pools:
        return False
    try:
        ctypes.CDLL(str(pools[0]))
        version = ctypes.CDLL("libtbb.so.12").TBB_runtime_interface_version
    except (OSError, AttributeError):
        return False
    version.restype = ctypes.c_int
    return version() >= TBB_MIN_INTERFACE


def default_threading_layer() -> str:
    """``tbb`` where usable, else ``workqueue`` (module docstring)."""
    return "tbb" if tbb_usable() else FALLBACK_THREADING_LAYER


def user_jit_cache_dir() -> str:
    """``<user cache dir>/dnupdate/numba`` (platformdirs' per-user cache folder)."""
    from platformdirs import user_cache_dir

    return os.path.join(user_cache_dir("dnupdate"), "numba")


def _writable(folder: Path) -> bool:
    """Whether JIT cache files can be written in ``folder/__pycache__``."""
    cache = folder / "__pycache__"
    target = cache if cache.is_dir() else folder
    return os.access(target, os.W_OK)


#: the file in ``<backends>/__pycache__`` naming the fingerprint of the backend sources the
#: in-tree JIT caches were written under
FINGERPRINT_FILE = "kernel_sources.sha256"


def kernel_sources_fingerprint(source_dir: Path) -> str:
    """SHA-256 over every ``*.py`` under ``source_dir`` (relative paths and contents, sorted)."""
    digest = hashlib.sha256()
    for path in sorted(source_dir.rglob("*.py")):
        digest.update(path.relative_to(source_dir).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def drop_stale_kernel_caches(source_dir: Path = BACKENDS_DIR) -> bool:
    """Delete every cached kernel (``__pycache__/*.nbi``/``*.nbc``) under ``source_dir`` when
    the backend sources changed since the caches were written (module docstring); returns
    whether it did. The fingerprint file is replaced atomically; a failure to write it (a
    read-only folder) leaves everything as it was."""
    marker = source_dir / "__pycache__" / FINGERPRINT_FILE
    current = kernel_sources_fingerprint(source_dir)
    with suppress(OSError):
        if marker.read_text(encoding="ascii").strip() == current:
            return False
    for pattern in ("__pycache__/*.nbi", "__pycache__/*.nbc"):
        for cached in source_dir.rglob(pattern):
            with suppress(OSError):
                cached.unlink()
    with suppress(OSError):
        marker.parent.mkdir(exist_ok=True)
        partial = marker.with_name(f"{marker.name}.{os.getpid()}.tmp")
        partial.write_text(current + "\n", encoding="ascii")
        os.replace(partial, marker)
    return True


#: the backend folders whose in-tree caches are still to be checked (set by
#: :func:`configure_numba_environment`, emptied by :func:`drop_stale_kernel_caches_once`)
_UNCHECKED_CACHES: list[Path] = []


def drop_stale_kernel_caches_once() -> None:
    """:func:`drop_stale_kernel_caches` for the in-tree caches this process uses, once (the
    CPU kernels' package calls it on import: Numba reads a cache at a kernel's first call)."""
    while _UNCHECKED_CACHES:
        drop_stale_kernel_caches(_UNCHECKED_CACHES.pop())


def configure_numba_environment(
    environ: MutableMapping[str, str] | None = None,
    *,
    source_dir: Path = BACKENDS_DIR,
    writable: Callable[[Path], bool] = _writable,
    threading_layer: Callable[[], str] = default_threading_layer,
) -> dict[str, str]:
    """Set the defaults of the module docstring in ``environ`` (default ``os.environ``) where
    the user has not; returns what was set. Does nothing once Numba is imported (its settings
    are read at import)."""
    env = os.environ if environ is None else environ
    chosen: dict[str, str] = {}
    if environ is None and "numba" in sys.modules:
        return chosen
    if "NUMBA_THREADING_LAYER" not in env:
        chosen["NUMBA_THREADING_LAYER"] = threading_layer()
    in_tree = "NUMBA_CACHE_DIR" not in env and all(
        writable(folder) for folder in (source_dir / "cpu", source_dir / "cuda") if folder.is_dir()
    )
    if "NUMBA_CACHE_DIR" not in env and not in_tree:
        chosen["NUMBA_CACHE_DIR"] = user_jit_cache_dir()
    if in_tree and environ is None:
        _UNCHECKED_CACHES.append(source_dir)
    env.update(chosen)
    return chosen


BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def limit_threads(threads: int) -> int:
    """Ask BLAS and Numba for ``threads`` threads in this process: the environment variables
    (effective before NumPy and Numba load) and, NumPy being loaded already, OpenBLAS's own
    setter. Returns the Numba thread count to use (capped at the cores when Numba is already
    loaded with its default pool)."""
    for name in BLAS_THREAD_VARIABLES:
        os.environ[name] = str(threads)
    if "numpy" in sys.modules:  # too late for the variables: tell the loaded OpenBLAS
        from dnupdate.engine.backends.openblas import set_blas_threads

        set_blas_threads(threads)
    if "numba" not in sys.modules:
        os.environ["NUMBA_NUM_THREADS"] = str(threads)
        return threads
    return min(threads, os.cpu_count() or threads)
