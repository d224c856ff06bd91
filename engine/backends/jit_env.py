"""Process-wide Numba settings that must be chosen before Numba loads (``engine.backends``
applies them on import, before any backend imports Numba). Each one yields to a value the user
already set in the environment.

* ``NUMBA_THREADING_LAYER``: ``omp`` (GNU OpenMP) where Numba can load it (:func:`omp_usable`),
  else ``tbb`` where it can load TBB (:func:`tbb_usable`), else ``workqueue``. Every parallel
  pass of the CPU backend runs on this layer's threads, the GEMM tiles and the per-image
  convolution chunks included (``engine.backends.cpu.share``), and OpenBLAS stays on one thread
  (``engine.backends.cpu.blas``): one pool, no second set of workers competing for the cores.
  OpenMP because its workers spin for a while at each region's end (libgomp's default spin,
  ~ms), so the next region starts in ~2–10 µs, where TBB's and ``workqueue``'s sleeping
  workers must be woken: on a VM that costs ~75–100 µs per region (2 vCPUs, measured: a
  parallel loop after 160 µs of serial work started 10 µs late under OpenMP, 100 µs under TBB,
  190 µs under ``workqueue``), and a training step runs dozens of regions. (The spin was the
  reason to avoid OpenMP while OpenBLAS and a pool of Python threads ran beside Numba's
  workers: LeNet then trained 5–7× slower on 2 cores.) GNU OpenMP cannot be used in a child
  forked after the parent used it (Numba terminates the child): a program that forks and trains
  in the child should start it by ``spawn`` or set ``NUMBA_THREADING_LAYER=tbb`` (dnupdate
  itself starts its bench workers by ``spawn``, and Dask's workers are spawned). Our kernels
  never nest parallel regions and one thread launches them, which is all ``workqueue``
  supports.
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
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager, suppress
from pathlib import Path

FALLBACK_THREADING_LAYER = "workqueue"
BACKENDS_DIR = Path(__file__).resolve().parent
#: the oldest TBB interface Numba's ``tbbpool`` accepts (``numba/np/ufunc/parallel.py``)
TBB_MIN_INTERFACE = 12060


def _load_pool(prefix: str) -> bool:
    """Whether Numba's ``<prefix>*.so`` threading-layer extension (``np/ufunc``) loads, found
    without importing Numba: loading it pulls in its runtime library by its own search path."""
    spec = importlib.util.find_spec("numba")
    if spec is None or spec.origin is None:
        return False
    pools = sorted((Path(spec.origin).parent / "np" / "ufunc").glob(f"{prefix}*.so"))
    if not pools:
        return False
    try:
        ctypes.CDLL(str(pools[0]))
    except OSError:
        return False
    return True


def tbb_usable() -> bool:
    """Whether Numba's TBB threading layer would load: its ``tbbpool`` loads (with
    ``libtbb``) and TBB's interface version is one Numba accepts, as Numba checks."""
    if not _load_pool("tbbpool"):
        return False
    try:
        version = ctypes.CDLL("libtbb.so.12").TBB_runtime_interface_version
    except (OSError, AttributeError):
        return False
    version.restype = ctypes.c_int
    return version() >= TBB_MIN_INTERFACE


def omp_usable() -> bool:
    """Whether Numba's OpenMP threading layer would load: its ``omppool`` loads (with GNU
    OpenMP, ``libgomp``)."""
    return _load_pool("omppool")


def default_threading_layer() -> str:
    """``omp`` where usable, else ``tbb`` where usable, else ``workqueue`` (module
    docstring)."""
    if omp_usable():
        return "omp"
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


@contextmanager
def child_environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in ``os.environ`` meanwhile, the previous ones (or their absence) put back
    after: a process spawned meanwhile starts with them (thread counts must be in a worker's
    environment before its NumPy, BLAS and Numba load)."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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
