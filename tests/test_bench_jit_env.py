"""Numba's process-wide defaults (``engine.backends.jit_env``): the threading layer and the JIT
cache folder for a read-only install; user settings always win."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dnupdate.engine.backends import jit_env


def test_defaults_pick_the_threading_layer_and_keep_the_in_tree_cache_when_writable(
    tmp_path: Path,
):
    for layer in ("omp", "tbb", "workqueue"):
        env: dict[str, str] = {}
        chosen = jit_env.configure_numba_environment(
            env,
            source_dir=tmp_path,
            writable=lambda _: True,
            threading_layer=lambda layer=layer: layer,
        )
        assert chosen == {"NUMBA_THREADING_LAYER": layer}
        assert env == chosen


def test_omp_when_numba_can_load_it_else_tbb_else_workqueue(monkeypatch):
    assert jit_env.default_threading_layer() in ("omp", "tbb", "workqueue")
    monkeypatch.setattr(jit_env, "omp_usable", lambda: False)
    assert jit_env.default_threading_layer() == ("tbb" if jit_env.tbb_usable() else "workqueue")
    monkeypatch.setattr(jit_env.importlib.util, "find_spec", lambda name: None)
    assert not jit_env.tbb_usable()
    monkeypatch.undo()
    monkeypatch.setattr(jit_env.importlib.util, "find_spec", lambda name: None)
    assert not jit_env.omp_usable()
    assert jit_env.default_threading_layer() == "workqueue"


def test_omp_is_usable_where_gnu_openmp_loads():
    """The CI image installs ``libgomp1``: there the default is OpenMP."""
    import ctypes.util

    if ctypes.util.find_library("gomp") is None:
        return
    assert jit_env.omp_usable()
    assert jit_env.default_threading_layer() == "omp"


def test_read_only_install_sends_the_cache_to_the_user_cache_folder(tmp_path: Path):
    (tmp_path / "cpu").mkdir()
    env: dict[str, str] = {}
    jit_env.configure_numba_environment(env, source_dir=tmp_path, writable=lambda _: False)
    assert env["NUMBA_CACHE_DIR"] == jit_env.user_jit_cache_dir()
    assert Path(env["NUMBA_CACHE_DIR"]).parts[-2:] == ("dnupdate", "numba")


def test_user_settings_win(tmp_path: Path):
    (tmp_path / "cpu").mkdir()
    env = {"NUMBA_THREADING_LAYER": "tbb", "NUMBA_CACHE_DIR": "/somewhere"}
    chosen = jit_env.configure_numba_environment(env, source_dir=tmp_path, writable=lambda _: False)
    assert chosen == {}
    assert env == {"NUMBA_THREADING_LAYER": "tbb", "NUMBA_CACHE_DIR": "/somewhere"}


def test_writable_probe_looks_at_the_pycache_folder(tmp_path: Path):
    assert jit_env._writable(tmp_path)
    (tmp_path / "__pycache__").mkdir()
    assert jit_env._writable(tmp_path)


def _threading_layer_in_fresh_process(env: dict[str, str]) -> str:
    code = (
        "import dnupdate.engine.backends.cpu, numba, numpy as np\n"
        "from numba import njit, prange\n"
        "@njit(parallel=True)\n"
        "def bump(a):\n"
        "    for i in prange(a.size):\n"
        "        a[i] += 1\n"
        "bump(np.zeros(4))\n"
        "print(numba.threading_layer())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return done.stdout.strip()


def test_importing_the_backends_selects_the_default_layer_unless_the_user_chose():
    base = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    assert _threading_layer_in_fresh_process(base) == jit_env.default_threading_layer()
    chosen = _threading_layer_in_fresh_process({**base, "NUMBA_THREADING_LAYER": "workqueue"})
    assert chosen == "workqueue"


def test_a_changed_backend_source_drops_every_cached_kernel(tmp_path: Path):
    """Numba checks a cached kernel against its own file only: a change in a module it inlines
    from must drop the caches of every backend module."""
    for name in ("cpu", "cuda"):
        (tmp_path / name / "__pycache__").mkdir(parents=True)
        (tmp_path / name / "kernels.py").write_text("x = 1\n")
        for suffix in ("nbi", "nbc"):
            (tmp_path / name / "__pycache__" / f"kernels.f-1.py311.{suffix}").write_bytes(b"c")
    (tmp_path / "cpu" / "__pycache__" / "kernels.cpython-311.pyc").write_bytes(b"bytecode")
    assert jit_env.drop_stale_kernel_caches(tmp_path)  # no fingerprint yet: caches of unknown age
    assert not list(tmp_path.rglob("*.nb?"))
    assert (tmp_path / "cpu" / "__pycache__" / "kernels.cpython-311.pyc").exists()
    (tmp_path / "cpu" / "__pycache__" / "kernels.f-1.py311.nbi").write_bytes(b"fresh")
    assert not jit_env.drop_stale_kernel_caches(tmp_path)  # unchanged sources: caches kept
    assert (tmp_path / "cpu" / "__pycache__" / "kernels.f-1.py311.nbi").exists()
    (tmp_path / "cuda" / "kernels.py").write_text("x = 2\n")  # another module changes
    assert jit_env.drop_stale_kernel_caches(tmp_path)
    assert not list(tmp_path.rglob("*.nb?"))
    assert not list(tmp_path.rglob("*.tmp"))


def test_the_check_waits_for_the_kernels_and_runs_once(tmp_path: Path, monkeypatch):
    """``configure_numba_environment`` only queues the in-tree check (``lr-schedule`` never
    compiles); importing the CPU kernels runs it, once."""
    (tmp_path / "cpu" / "__pycache__").mkdir(parents=True)
    (tmp_path / "cpu" / "kernels.py").write_text("x = 1\n")
    monkeypatch.setattr(jit_env, "_UNCHECKED_CACHES", [tmp_path])
    marker = tmp_path / "__pycache__" / jit_env.FINGERPRINT_FILE
    assert not marker.exists()
    jit_env.drop_stale_kernel_caches_once()
    assert marker.read_text().strip() == jit_env.kernel_sources_fingerprint(tmp_path)
    assert jit_env._UNCHECKED_CACHES == []
