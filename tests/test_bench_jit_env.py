"""Numba's process-wide defaults (``engine.backends.jit_env``): the threading layer and the JIT
cache folder for a read-only install; user settings always win."""

from __future__ import annotations

from pathlib import Path

from engine.backends import jit_env


def test_defaults_pick_workqueue_and_keep_the_in_tree_cache_when_writable(tmp_path: Path):
    env: dict[str, str] = {}
    chosen = jit_env.configure_numba_environment(env, source_dir=tmp_path, writable=lambda _: True)
    assert chosen == {"NUMBA_THREADING_LAYER": "workqueue"}
    assert env == chosen


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
