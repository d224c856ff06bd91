"""Start-up costs: ``dnupdate --help``, ``dnupdate lr-schedule``, the first training iteration
with a warm JIT cache, and the total cold compile.

Usage::

    uv run python scripts/bench_startup.py [--runs N] [--workloads lenet,mlp,...]

* ``--help`` and ``lr-schedule``: the fastest of ``--runs`` runs of the installed console script
  (wall clock, process start to exit), and whether Numba got imported on those paths;
* cold compile: every workload's first training step and first inference pass in ONE process
  with an empty ``NUMBA_CACHE_DIR`` (kernels shared between workloads compile once), minus the
  steady step times: the total JIT compile a fresh install pays;
* warm first iteration: a new process with that now-filled cache: time from the start of
  ``import engine`` to the end of the first training step, per workload.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DNUPDATE = Path(sys.executable).with_name("dnupdate")

FIRST_STEPS = r"""
import json, sys, time
t0 = time.perf_counter()
from dnupdate.engine.bench.workloads import resolve_workload
from dnupdate.engine.bench.runner import fixed_batch
from dnupdate.engine.config import load_config
from dnupdate.engine.training.step import Trainer
out = {}
for name in sys.argv[1].split(","):
    start = time.perf_counter()
    trainer = Trainer(load_config(resolve_workload(name).config), seed=1)
    net = trainer.network
    x, y = fixed_batch(net.input_shape, max(2, net.output.size // net.batch), 1)
    built = time.perf_counter()
    trainer.train_iteration(lambda: (x, y))
    first = time.perf_counter()
    trainer.train_iteration(lambda: (x, y))
    steady = time.perf_counter()
    net.forward(x, train=False)
    infer_first = time.perf_counter()
    net.forward(x, train=False)
    infer_steady = time.perf_counter()
    out[name] = {
        "build_s": built - start,
        "first_step_s": first - built,
        "steady_step_s": steady - first,
        "compile_s": (first - built) - (steady - first)
        + (infer_first - steady) - (infer_steady - infer_first),
        "since_import_s": first - t0,
    }
print(json.dumps(out))
"""


def fastest(command: list[str], runs: int, env: dict | None = None) -> float:
    """The fastest wall time of ``runs`` runs of ``command`` (output discarded)."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        best = min(best, time.perf_counter() - start)
    return best


def imports_numba(args: list[str]) -> bool:
    """Whether running the CLI with ``args`` imports Numba."""
    code = (
        "import sys\nfrom dnupdate.cli.main import app\ntry:\n"
        f"    app({args!r})\nexcept SystemExit:\n    pass\n"
        "print('numba' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    return done.stdout.strip().endswith("True")


def first_steps(workloads: str, cache_dir: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    env.setdefault("NUMBA_THREADING_LAYER", "workqueue")
    done = subprocess.run(
        [sys.executable, "-c", FIRST_STEPS, workloads],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--workloads", default="lenet,cifar-small,cifar-small-bn,mlp")
    args = parser.parse_args()
    lr_args = ["lr-schedule", str(ROOT / "configs" / "lenet_solver.prototxt")]
    report = {
        # PYTHONDONTWRITEBYTECODE=1 makes every start recompile all imported sources (about
        # 0.2 s for --help, 0.4 s for lr-schedule); set PYTHONPYCACHEPREFIX to measure what an
        # ordinary install (bytecode cached) pays
        "bytecode_cached": not sys.flags.dont_write_bytecode,
        "help_s": fastest([str(DNUPDATE), "--help"], args.runs),
        "help_imports_numba": imports_numba(["--help"]),
        "lr_schedule_s": fastest([str(DNUPDATE), *lr_args], args.runs),
        "lr_schedule_imports_numba": imports_numba(lr_args),
    }
    with tempfile.TemporaryDirectory(prefix="dnupdate-cold-jit-") as cache:
        cold = first_steps(args.workloads, cache)
        warm = {name: first_steps(name, cache)[name] for name in args.workloads.split(",")}
    report["cold_compile_total_s"] = sum(v["compile_s"] for v in cold.values())
    report["cold"] = cold
    report["warm_first_iteration_s"] = {k: v["first_step_s"] for k, v in warm.items()}
    report["warm_import_to_first_update_s"] = {k: v["since_import_s"] for k, v in warm.items()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
