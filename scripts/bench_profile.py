"""Where a training step's time goes: per-layer forward and backward, the update, the rest.

Usage::

    uv run python scripts/bench_profile.py [WORKLOAD|CONFIG ...] [--threads N] [--steps N]

Times each layer's ``forward``/``backward`` of the workload's network (wrapping the layer
methods with a timer), the optimizer step and the trainer's own overhead
(``Trainer.train_iteration`` minus the above), over ``--steps`` steps after warm-up, and prints
milliseconds per step and shares. Threads are set in the environment before NumPy loads.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _timed(table: dict, key: str, method):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        result = method(*args, **kwargs)
        table[key] += time.perf_counter() - start
        return result

    return wrapper


def profile(workload: str, steps: int) -> list[tuple[str, float]]:
    """``[(part, seconds per step)]`` for one workload."""
    from dnupdate.engine.bench.runner import fixed_batch
    from dnupdate.engine.bench.workloads import resolve_workload
    from dnupdate.engine.config import load_config
    from dnupdate.engine.training.step import Trainer

    run = load_config(resolve_workload(workload).config)
    trainer = Trainer(run, seed=1)
    net = trainer.network
    x, y = fixed_batch(net.input_shape, max(2, net.output.size // net.batch), 1)
    table: dict[str, float] = defaultdict(float)
    for layer in net.layers:
        label = f"{layer.name} ({layer.spec.kind})"
        layer.forward = _timed(table, f"forward  {label}", layer.forward)
        layer.backward = _timed(table, f"backward {label}", layer.backward)
    optimizer = trainer.optimizer
    optimizer.step = _timed(table, "update (fused, flat buffer)", optimizer.step)
    for _ in range(3):
        trainer.train_iteration(lambda: (x, y))
    table.clear()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_iteration(lambda: (x, y))
    total = time.perf_counter() - start
    parts = [(key, value / steps) for key, value in table.items()]
    parts.append(("trainer/network overhead", (total - sum(table.values())) / steps))
    parts.append(("TOTAL step", total / steps))
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "workloads", nargs="*", default=["lenet", "cifar-small", "cifar-small-bn", "mlp"]
    )
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    for key in ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ[key] = str(args.threads)
    # the threading layer `dnupdate bench` uses (GNU OpenMP where Numba can load it, else
    # TBB): other layers' launches are slower and distort the parallel passes' share
    from dnupdate.engine.backends.jit_env import default_threading_layer

    os.environ.setdefault("NUMBA_THREADING_LAYER", default_threading_layer())
    for workload in args.workloads:
        parts = profile(workload, args.steps)
        total = parts[-1][1]
        print(f"\n{workload}: {total * 1e3:.2f} ms per training step ({args.threads} threads)")
        for name, seconds in sorted(parts[:-1], key=lambda p: -p[1]):
            print(f"  {seconds * 1e3:8.3f} ms  {100 * seconds / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()
