"""Runs the CUDA backend tests under numba-cuda's simulator, in one pytest subprocess.

``NUMBA_ENABLE_CUDASIM=1`` only takes effect when set before ``numba.cuda`` is first imported,
and this pytest process may already have imported it (or may have a real GPU), so the CUDA
test modules run again in a fresh interpreter with the variable set. Where this process is
itself the simulator run, the modules run directly and this test skips.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULES = (
    "tests/test_cuda_kernels.py",
    "tests/test_cuda_layers.py",
    "tests/test_cuda_training.py",
    "tests/test_cuda_precision.py",
)


@pytest.mark.skipif(
    os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", reason="already running under the simulator"
)
def test_cuda_backend_under_the_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    env.pop("PYTEST_XDIST_WORKER", None)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *MODULES]
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    tail = (done.stdout + done.stderr)[-6000:]
    assert done.returncode == 0, f"CUDA simulator tests failed:\n{tail}"
    summary = done.stdout.strip().splitlines()[-1]
    passed = int(summary.split(" passed")[0].split()[-1]) if " passed" in summary else 0
    assert passed >= 50, f"the CUDA tests did not run under the simulator:\n{tail}"
