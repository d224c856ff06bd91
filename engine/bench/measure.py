"""The measurement behind ``dnupdate bench``: workers, interleaved windows, results; never prints.

A workload is a config (darknet ``.cfg`` or Caffe solver) trained on ONE fixed random batch, so
that only the network's arithmetic is timed (no data loading). Built-in workloads live in
``configs/bench/``: ``lenet`` (Caffe LeNet, 1×28×28, batch 64, SGD momentum 0.9, decay 5e-4),
``cifar-small`` and ``cifar-small-bn`` (3×32×32, three 3×3 conv blocks and a 1×1 conv to 10
classes, global average pooling, batch 128; the second with darknet batch norm) and ``mlp``
(784-1024-1024-10 ReLU, batch 128).

Measurement (one worker process per workload and framework, so that peak RSS, JIT compile time
and thread pools are each the workload's own):

* ``train``: one weight update per step (``Trainer.train_iteration``: forward, backward, the
  fused flat-buffer update); ``infer``: one test-mode forward;
* after ``warmup`` steps, ``windows`` timed windows of ``iters`` steps each; images/s is
  ``iters·batch / window time``; the result is the median over the windows and their min–max;
* with PyTorch (``vs_torch``) the same net runs in eager mode in a second worker, windows
  interleaved with ours (ours, theirs, theirs, ours, ...) so that machine drift hits both;
  ``ratio = ours / PyTorch`` is the ratio of the two medians;
* ``gflops``: the net's GEMM work (conv and connected layers: ``2·M·K·N`` per product; a
  training step is forward + weight gradient + input gradient, no input gradient for the first
  layer) times images/s; ``peak_fraction``: that over a measured sgemm peak (NumPy ``matmul``
  of two 2048×2048 float32 matrices with the same threads);
* ``compile_s``: time of the first step beyond a steady one (Numba compiles or loads its cache;
  with ``cold_cache`` the cache directory starts empty, so this is the cold compile time);
* ``peak_rss_mib``: the worker's peak resident set size;
* with a simulated precision (``settings.precision`` fp16 or bf16) a second worker of ours
  trains the same workload in that precision with dynamic loss scaling (the rounding and
  counting passes of ``engine.training.mixed``), windows interleaved with the float32 worker
  as PyTorch's are: ``precision_images_per_s`` is its median, ``step_time_ratio`` the ratio
  of the step times (float32 images/s over the low precision's; the issue's target: ≤ 1.5).

Threads: ``threads`` caps both Numba's threads (``NUMBA_NUM_THREADS``) and BLAS's
(``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS``), set in the worker's environment before NumPy
loads, so the two pools never exceed the cores asked for; PyTorch gets
``torch.set_num_threads(threads)``.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

from dnupdate.engine.bench.runner import precision_overrides
from dnupdate.engine.bench.worker import WorkerProcess
from dnupdate.engine.bench.workloads import BenchError, BenchSettings, Workload

# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchResult:
    """One workload in one mode (see the module docstring for every field). ``torch_*`` and
    ``ratio`` are None without the PyTorch comparison; ``blas_core`` is the kernel set NumPy's
    OpenBLAS chose (display only, not in the JSON); ``blas`` the library our GEMMs went to
    (``openblas`` or ``mkl``; in the JSON); ``cpu`` the CPU's model name and
    ``conv_micro_kernel`` whether our stride-1 convolutions could use the micro-kernel (FMA +
    AVX-512F) and ``threading_layer`` Numba's layer in our worker, all in the JSON: rates
    from other CPUs, kernel paths or layers do not compare."""

    workload: str
    mode: str
    threads: int
    batch: int
    images_per_s: float
    images_per_s_min: float
    images_per_s_max: float
    gflops: float
    peak_fraction: float
    compile_s: float
    peak_rss_mib: float
    torch_images_per_s: float | None = None
    ratio: float | None = None
    device: str = "cpu"
    blas_core: str = ""
    blas: str = "openblas"
    cpu: str = ""
    conv_micro_kernel: bool = False
    threading_layer: str = ""
    windows: tuple[float, ...] = field(default=(), repr=False)
    torch_windows: tuple[float, ...] = field(default=(), repr=False)
    precision: str | None = None
    precision_images_per_s: float | None = None
    step_time_ratio: float | None = None
    precision_windows: tuple[float, ...] = field(default=(), repr=False)

    def as_json(self) -> dict:
        """The ``--json`` object: the issue's fields, ``blas``, ``cpu``,
        ``conv_micro_kernel`` and ``threading_layer``, plus ``torch_images_per_s`` and
        ``ratio`` when PyTorch was compared."""
        data = asdict(self)
        for name in ("windows", "torch_windows", "precision_windows", "device", "blas_core"):
            data.pop(name)
        if self.torch_images_per_s is None:
            data.pop("torch_images_per_s")
            data.pop("ratio")
        if self.precision is None:
            for name in ("precision", "precision_images_per_s", "step_time_ratio"):
                data.pop(name)
        for key, value in data.items():
            if isinstance(value, float):
                data[key] = round(value, 4)
        return data

    def json_line(self) -> str:
        """:meth:`as_json` as one line of JSON."""
        return json.dumps(self.as_json())


def summarise_windows(images_per_s: Sequence[float]) -> tuple[float, float, float]:
    """``(median, min, max)`` of per-window images/s."""
    if not images_per_s:
        raise BenchError("no timed windows")
    return statistics.median(images_per_s), min(images_per_s), max(images_per_s)


# --------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------


def worker_environment(threads: int, cache_dir: str | None) -> dict[str, str]:
    """Environment variables a worker needs before NumPy/Numba load: thread caps for Numba,
    OpenBLAS and OpenMP (so the pools together never exceed ``threads`` cores), Numba's
    threading layer unless the user chose one (``omp`` where usable, else ``tbb``, else
    ``workqueue``: ``engine.backends.jit_env``) and, for a cold-cache run, ``NUMBA_CACHE_DIR``."""
    from dnupdate.engine.backends.jit_env import default_threading_layer

    layer = os.environ.get("NUMBA_THREADING_LAYER") or default_threading_layer()
    env = {
        "NUMBA_THREADING_LAYER": layer,
        "NUMBA_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    return env


#: seconds between two interleaved windows: the workers' idle thread pools (PyTorch's OpenMP,
#: Numba's TBB) busy-wait a while after their last parallel region, and would otherwise eat
#: into the start of the other worker's window
SETTLE_S = 0.2


def _interleaved_windows(
    ours: Callable[[], float],
    theirs: Callable[[], float] | None,
    windows: int,
    settle: Callable[[], None] = lambda: time.sleep(SETTLE_S),
) -> tuple[list[float], list[float]]:
    """Run ``windows`` windows of each, alternating who goes first (ABBA...), with a pause
    (``settle``) before each window when there are two workers."""
    mine: list[float] = []
    other: list[float] = []
    for index in range(windows):
        if theirs is None:
            mine.append(ours())
            continue
        order = (ours, theirs) if index % 2 == 0 else (theirs, ours)
        for run in order:
            settle()
            (mine if run is ours else other).append(run())
    return mine, other


def run_bench(workloads: Sequence[Workload], settings: BenchSettings) -> Iterator[BenchResult]:
    """Measure each workload in each mode; yields one :class:`BenchResult` per workload and
    mode as soon as it is measured. Raises :class:`BenchError` for bad settings or a
    workload that fails to build (the worker's message is passed on)."""
    settings.check()
    cache = (
        tempfile.TemporaryDirectory(prefix="dnupdate-bench-jit-") if settings.cold_cache else None
    )
    env = worker_environment(settings.threads, cache.name if cache else None)
    if settings.blas is not None:
        from dnupdate.engine.backends.mkl import BLAS_ENV

        env[BLAS_ENV] = settings.blas
    peak: tuple[float, str, str, str, bool, str] | None = None
    try:
        for workload in workloads:
            ours = WorkerProcess("dnupdate", workload.config, settings, env)
            theirs = _second_worker(workload, settings, env)
            try:
                if peak is None:
                    peak = tuple(ours.call("sgemm_peak"))
                yield from _measure_workload(workload, settings, ours, theirs, peak)
            finally:
                ours.close()
                if theirs is not None:
                    theirs.close()
    finally:
        if cache is not None:
            cache.cleanup()


def _second_worker(workload, settings, env) -> WorkerProcess | None:
    """PyTorch's twin (``vs_torch``), ours in a simulated precision, or None."""
    if settings.vs_torch:
        return WorkerProcess("torch", workload.config, settings, env)
    overrides = precision_overrides(settings.precision)
    if overrides:
        return WorkerProcess("dnupdate", workload.config, settings, env, overrides)
    return None


def _compared(settings, median: float, other: list[float]) -> dict:
    """The result fields of the second worker's windows: PyTorch's or the low precision's."""
    if not other:
        return {}
    theirs = statistics.median(other)
    if settings.vs_torch:
        return {
            "torch_images_per_s": theirs,
            "ratio": median / theirs,
            "torch_windows": tuple(other),
        }
    return {
        "precision": settings.precision,
        "precision_images_per_s": theirs,
        "step_time_ratio": median / theirs,
        "precision_windows": tuple(other),
    }


def _measure_workload(workload, settings, ours, theirs, peak) -> Iterator[BenchResult]:
    peak_gflops, blas_core, blas, cpu, micro, layer = peak
    info = ours.call("setup")
    if theirs is not None:
        theirs.call("setup")
    flops = {"infer": info["flops_infer"], "train": info["flops_train"]}
    for mode in settings.modes:
        compile_s = ours.call("warmup", mode)
        if theirs is not None:
            theirs.call("warmup", mode)
        iters_ours = settings.iters or ours.call("calibrate", mode)
        iters_theirs = settings.iters or (theirs.call("calibrate", mode) if theirs else 0)
        mine, other = _interleaved_windows(
            lambda m=mode, n=iters_ours: ours.call("window", m, n),
            None if theirs is None else lambda m=mode, n=iters_theirs: theirs.call("window", m, n),
            settings.windows,
        )
        median, low, high = summarise_windows(mine)
        compared = _compared(settings, median, other)
        gflops = flops[mode] * median / 1e9
        yield BenchResult(
            workload=workload.name,
            mode=mode,
            threads=settings.threads,
            batch=info["batch"],
            images_per_s=median,
            images_per_s_min=low,
            images_per_s_max=high,
            gflops=gflops,
            peak_fraction=gflops / peak_gflops if peak_gflops else 0.0,
            compile_s=compile_s,
            peak_rss_mib=ours.call("peak_rss_mib"),
            device=settings.device,
            blas_core=blas_core,
            blas=blas,
            cpu=cpu,
            conv_micro_kernel=micro,
            threading_layer=layer,
            windows=tuple(mine),
            **compared,
        )
