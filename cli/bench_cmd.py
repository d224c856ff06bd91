"""``dnupdate bench``: training and inference speed of built-in workloads or configs, optionally
side by side with PyTorch.

The measurement lives in :mod:`engine.bench.measure` (imported inside the command, so ``--help``
stays
fast); this module only parses options and shows results: a table on stdout (a progress line
per result on stderr) or, with ``--json``, one JSON object per workload and mode on stdout.
"""

from __future__ import annotations

import platform
import sys

import typer

from dnupdate.cli.common import EXIT_USAGE, device_option, fail, json_option, threads_option
from dnupdate.cli.help_format import help_from_doc

#: the names ``--blas`` takes (``engine.backends.mkl.CHOICES``; not imported: ``--help`` stays
#: fast)
BLAS_CHOICES = ("openblas", "mkl", "auto")

BENCH_HELP = help_from_doc(
    """Measure training and inference speed (images/s).

WORKLOAD is a built-in workload (lenet, cifar-small, cifar-small-bn, mlp, cifar-resnet;
default: all) or a darknet .cfg / Caffe solver file. Each runs on one fixed random batch in a
worker process of its own: after warm-up, several timed windows; the median images/s is
shown with the min-max over the windows, GFLOP/s of the GEMMs and their share of a measured
sgemm peak, the JIT compile time of the first step and the worker's peak RSS.

--vs torch runs the same nets in PyTorch eager mode (when installed), windows interleaved
with ours, same threads, and shows the ratio ours / PyTorch.

--precision fp16 (or bf16) trains each workload a second time in that simulated precision
with dynamic loss scaling, windows interleaved with the float32 run, and shows its images/s
and the step-time ratio low precision / float32 (target: at most 1.5).

--blas mkl sends our GEMMs to Intel MKL (optional: pip install 'dnupdate[mkl]') instead of
NumPy's OpenBLAS, as DNUPDATE_BLAS=mkl does for every command; the table names the BLAS.

Examples:

  dnupdate bench

  dnupdate bench lenet mlp --threads 1 --json

  dnupdate bench --vs torch

  dnupdate bench --precision fp16 --mode train

  dnupdate bench configs/mnist_lenet.cfg --windows 3 --iters 5
"""
)


def bench(
    workloads: list[str] = typer.Argument(
        None, metavar="WORKLOAD|CONFIG", help="Built-in workloads or config files."
    ),
    threads: int | None = threads_option(
        "Threads for Numba and BLAS (default: all cores).", short=True
    ),
    iters: int | None = typer.Option(
        None,
        "--iters",
        "-n",
        min=1,
        metavar="N",
        help="Steps per timed window (default: about 0.5 s).",
    ),
    windows: int = typer.Option(
        5, "--windows", "-w", min=1, metavar="N", help="Timed windows per mode."
    ),
    warmup: int = typer.Option(
        3, "--warmup", min=1, metavar="N", help="Untimed steps before timing."
    ),
    vs: str | None = typer.Option(
        None, "--vs", metavar="torch", help="Compare with another framework (torch)."
    ),
    mode: list[str] = typer.Option(
        [], "--mode", "-m", metavar="train|infer", help="Only these modes (default: both)."
    ),
    device: str = device_option("Backend: cpu (or cuda where built)."),
    precision: str = typer.Option(
        "fp32",
        "--precision",
        metavar="fp16|bf16",
        help="Also time a simulated fp16/bf16 run next to float32 (default: none).",
    ),
    cold_cache: bool = typer.Option(
        False, "--cold-cache", help="Start from an empty JIT cache (compile_s = cold compile)."
    ),
    blas: str | None = typer.Option(
        None,
        "--blas",
        metavar="openblas|mkl|auto",
        help="BLAS of our GEMMs (default: $DNUPDATE_BLAS, else openblas; mkl is optional).",
    ),
    as_json: bool = json_option("One JSON object per workload and mode on stdout."),
) -> None:
    from dnupdate.engine.bench.measure import run_bench
    from dnupdate.engine.bench.workloads import (
        BenchError,
        BenchSettings,
        default_threads,
        resolve_workload,
    )

    if vs is not None and vs != "torch":
        fail(f"--vs {vs}: only 'torch' can be compared", EXIT_USAGE)
    if blas is not None and blas.strip().lower() not in BLAS_CHOICES:
        fail(f"--blas {blas}: expected one of {', '.join(BLAS_CHOICES)}", EXIT_USAGE)
    try:
        chosen = [resolve_workload(name) for name in workloads or _default_workloads()]
        settings = BenchSettings(
            threads=threads or default_threads(),
            iters=iters,
            windows=windows,
            warmup=warmup,
            vs_torch=vs == "torch",
            device=device,
            cold_cache=cold_cache,
            modes=tuple(mode) or ("train", "infer"),
            precision=precision,
            blas=blas,
        )
        settings.check()
        results = []
        for result in run_bench(chosen, settings):
            results.append(result)
            if as_json:
                print(result.json_line(), flush=True)
            else:
                print(_progress_line(result), file=sys.stderr, flush=True)
    except BenchError as error:
        fail(str(error))
    if not as_json:
        _print_table(results, settings)


def _default_workloads() -> list[str]:
    from dnupdate.engine.bench.workloads import BUILTIN_WORKLOADS

    return list(BUILTIN_WORKLOADS)


def _blas_label(blas: str) -> str:
    return {"mkl": "Intel MKL", "openblas": "OpenBLAS"}.get(blas, blas)


def _progress_line(result) -> str:
    text = f"{result.workload} {result.mode}: {result.images_per_s:,.0f} images/s"
    if result.ratio is not None:
        text += f" (PyTorch {result.torch_images_per_s:,.0f}, ratio {result.ratio:.2f})"
    if result.step_time_ratio is not None:
        text += (
            f" ({result.precision} {result.precision_images_per_s:,.0f} images/s, step time "
            f"{result.step_time_ratio:.2f}× float32)"
        )
    return text


def _machine() -> str:
    """The CPU model name (``/proc/cpuinfo``) or the platform's processor string."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _print_table(results, settings) -> None:
    from rich.table import Table

    from dnupdate.cli.common import stdout_console

    compare = any(r.ratio is not None for r in results)
    table = Table(title=f"dnupdate bench — {_machine()}, {settings.threads} thread(s)")
    for name in ("workload", "mode", "batch", "images/s", "min–max", "GFLOP/s", "of peak"):
        table.add_column(name, justify="left" if name in ("workload", "mode") else "right")
    if compare:
        table.add_column("PyTorch", justify="right")
        table.add_column("ratio", justify="right")
    precision = next((r.precision for r in results if r.precision), None)
    if precision:
        table.add_column(f"{precision} images/s", justify="right")
        table.add_column(f"{precision}/fp32 step", justify="right")
    table.add_column("compile s", justify="right")
    table.add_column("peak RSS MiB", justify="right")
    for r in results:
        row = [
            r.workload,
            r.mode,
            str(r.batch),
            f"{r.images_per_s:,.0f}",
            f"{r.images_per_s_min:,.0f}–{r.images_per_s_max:,.0f}",
            f"{r.gflops:.1f}",
            f"{100 * r.peak_fraction:.0f}%",
        ]
        if compare:
            torch_ips = "" if r.torch_images_per_s is None else f"{r.torch_images_per_s:,.0f}"
            row += [torch_ips, "" if r.ratio is None else f"{r.ratio:.2f}"]
        if precision:
            low = "" if r.precision_images_per_s is None else f"{r.precision_images_per_s:,.0f}"
            row += [low, "" if r.step_time_ratio is None else f"{r.step_time_ratio:.2f}×"]
        row += [f"{r.compile_s:.2f}", f"{r.peak_rss_mib:.0f}"]
        table.add_row(*row)
    peak = next((r.gflops / r.peak_fraction for r in results if r.peak_fraction), None)
    if peak:
        core = next((r.blas_core for r in results if r.blas_core), "")
        caption = f"sgemm peak {peak:.0f} GFLOP/s (NumPy, 2048×2048 float32, same threads)"
        if core:
            caption += f"; OpenBLAS core {core}"
        table.caption = f"{caption}; our GEMMs: {_blas_label(results[0].blas)}"
    first = results[0] if results else None
    if first is not None and first.device == "cpu" and first.cpu:
        micro = "on" if first.conv_micro_kernel else "off (no FMA + AVX-512F)"
        machine = f"CPU {first.cpu}; conv micro-kernel {micro}"
        if first.threading_layer:
            machine += f"; Numba {first.threading_layer} threads"
        table.caption = f"{table.caption}; {machine}" if table.caption else machine
    if precision:
        note = (
            f"{precision}: simulated, dynamic loss scaling; step time ratio = float32 images/s "
            "over the low precision's (target ≤ 1.5×)"
        )
        table.caption = f"{table.caption}; {note}" if table.caption else note
    stdout_console().print(table)
