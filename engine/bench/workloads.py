"""The benchmark workloads (``dnupdate bench``) and how they are measured: the built-in
configs, a config path as a workload, the settings of a measurement, and the GEMM work per image
that turns images/s into GFLOP/s. See :mod:`engine.bench.measure` for the measurement itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dnupdate.engine.config.builtin import configs_dir

#: where the built-in workload configs live (``configs/bench``, shipped in the wheel too)
BENCH_CONFIG_DIR = configs_dir() / "bench"


class BenchError(ValueError):
    """A benchmark cannot run as asked (unknown workload, missing PyTorch, bad setting)."""


#: the storage formats ``--precision`` takes (fp32: no second worker)
PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class Workload:
    """A named benchmark: ``config`` is a darknet ``.cfg`` or Caffe solver path."""

    name: str
    config: str
    description: str


BUILTIN_WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            "lenet",
            str(BENCH_CONFIG_DIR / "lenet_solver.prototxt"),
            "Caffe LeNet, 1x28x28, batch 64, SGD momentum 0.9, decay 5e-4 (Caffe rule)",
        ),
        Workload(
            "cifar-small",
            str(BENCH_CONFIG_DIR / "cifar_small.cfg"),
            "conv 32/64/128 3x3 leaky + maxpool, 1x1 conv 10, avgpool, softmax; batch 128",
        ),
        Workload(
            "cifar-small-bn",
            str(BENCH_CONFIG_DIR / "cifar_small_bn.cfg"),
            "cifar-small with darknet batch norm on the 3x3 convolutions; batch 128",
        ),
        Workload(
            "mlp",
            str(BENCH_CONFIG_DIR / "mlp.cfg"),
            "784-1024-1024-10 ReLU, softmax; batch 128 (darknet rule)",
        ),
        Workload(
            "cifar-resnet",
            str(BENCH_CONFIG_DIR / "cifar_resnet.cfg"),
            "CIFAR ResNet-20: conv 16, 3x3 basic blocks 16/32/64 with darknet batch norm, "
            "option-A shortcuts, avgpool, fc 10; batch 128",
        ),
    )
}

MODES = ("train", "infer")


def resolve_workload(name_or_path: str) -> Workload:
    """A built-in workload by name, or a config file path (its stem names it)."""
    if name_or_path in BUILTIN_WORKLOADS:
        workload = BUILTIN_WORKLOADS[name_or_path]
        if not Path(workload.config).is_file():
            raise BenchError(
                f"workload {workload.name}: its config {workload.config} is missing (the "
                "built-in workloads ship in configs/bench); pass a config path"
            )
        return workload
    path = Path(name_or_path)
    if path.is_file():
        return Workload(path.stem, str(path), f"config {path}")
    names = ", ".join(BUILTIN_WORKLOADS)
    raise BenchError(f"no workload or config file {name_or_path!r} (built-in: {names})")


def default_threads() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def torch_available() -> bool:
    """Whether PyTorch can be imported (it is optional: ``pip install torch``)."""
    import importlib.util

    return importlib.util.find_spec("torch") is not None


# --------------------------------------------------------------------------------------------
# Work per image
# --------------------------------------------------------------------------------------------


def gemm_flops(net, phase: str = "train") -> tuple[float, float]:
    """``(inference, training)`` floating-point operations per image of the net's GEMMs.

    Convolution: ``2·F·K·N`` with ``K = (C/G)·kh·kw``, ``N = out_h·out_w`` (im2col GEMM over
    all groups); connected: ``2·inputs·outputs``. Training adds the weight gradient (same
    count) and the input gradient (same count) except for the first layer, which computes no
    input gradient (darknet's NULL ``net.delta``; Caffe's ``propagate_down`` false for data).
    Element-wise work (activations, pooling, batch norm, updates) is not counted.
    """
    from dnupdate.engine.model.shapes import infer_shapes
    from dnupdate.engine.spec import ConnectedSpec, ConvSpec

    forward = training = 0.0
    for index, shape in enumerate(infer_shapes(net, phase)):
        layer = shape.layer
        if isinstance(layer, ConvSpec):
            c, _, _ = shape.input
            f, oh, ow = shape.output
            flops = 2.0 * f * (c // layer.groups) * layer.kernel_h * layer.kernel_w * oh * ow
        elif isinstance(layer, ConnectedSpec):
            flops = 2.0 * shape.inputs * layer.outputs
        else:
            continue
        forward += flops
        training += flops * (2 if index == 0 else 3)
    return forward, training


@dataclass(frozen=True)
class BenchSettings:
    """How to measure: ``threads`` (Numba + BLAS; PyTorch's intra-op), ``iters`` steps per
    timed window (None: about ``window_s`` seconds each, calibrated on the warm-up), ``windows``
    timed windows per mode, ``warmup`` untimed steps, ``vs_torch``, ``device`` (``cpu`` or a
    backend name ``engine.backends.get_backend`` knows), ``cold_cache`` (an empty JIT cache
    directory: ``compile_s`` is then the cold compile), ``modes``, ``seed``, ``precision``
    (``fp16``/``bf16``: a second worker trains the same workload in that simulated precision
    with dynamic loss scaling, windows interleaved with the float32 one), ``blas`` (our
    workers' ``DNUPDATE_BLAS``: ``openblas``, ``mkl``, ``auto``; None: the environment's)."""

    threads: int
    iters: int | None = None
    windows: int = 5
    warmup: int = 3
    vs_torch: bool = False
    device: str = "cpu"
    cold_cache: bool = False
    window_s: float = 0.5
    modes: tuple[str, ...] = MODES
    seed: int = 1
    precision: str = "fp32"
    blas: str | None = None

    def check(self) -> None:
        """Raise :class:`BenchError` for settings that cannot run."""
        if self.threads < 1:
            raise BenchError(f"--threads must be at least 1, got {self.threads}")
        if self.iters is not None and self.iters < 1:
            raise BenchError(f"--iters must be at least 1, got {self.iters}")
        if self.windows < 1:
            raise BenchError(f"--windows must be at least 1, got {self.windows}")
        if self.warmup < 1:
            raise BenchError(f"--warmup must be at least 1, got {self.warmup}")
        for mode in self.modes:
            if mode not in MODES:
                raise BenchError(f"unknown mode {mode!r} (train, infer)")
        self._check_blas()
        if self.precision not in PRECISIONS:
            raise BenchError(f"--precision {self.precision}: expected one of fp16, bf16")
        if self.precision != "fp32" and self.vs_torch:
            raise BenchError(
                "--precision and --vs torch are two comparisons: run them one at a time"
            )
        if self.vs_torch and not torch_available():
            raise BenchError(
                "--vs torch needs PyTorch, which is not installed (it is optional: "
                "pip install torch; CPU wheels: --index-url https://download.pytorch.org/whl/cpu)"
            )

    def _check_blas(self) -> None:
        """``blas`` (or, unset, ``DNUPDATE_BLAS``) names a known BLAS, and MKL is installed
        where it is asked for by name."""
        from dnupdate.engine.backends.mkl import BLAS_ENV, BlasChoiceError, blas_choice, load_mkl

        try:
            choice = blas_choice(None if self.blas is None else {BLAS_ENV: self.blas})
        except BlasChoiceError as error:
            name = "--blas" if self.blas is not None else BLAS_ENV
            raise BenchError(f"{name}: {error}") from None
        if choice == "mkl" and load_mkl() is None:
            raise BenchError(
                "--blas mkl needs Intel MKL, which is not installed (it is optional: "
                "pip install 'dnupdate[mkl]', or pip install mkl)"
            )
