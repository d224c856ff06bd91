"""Whole training runs on real data (MNIST, CIFAR-10) — not a unit test; run it yourself.

Each run goes through the real command line (``dnupdate train ... --json``) into its own run
folder and prints the final test accuracy and the wall time next to the figure the framework
publishes:

* ``lenet``: Caffe's LeNet solver (``configs/lenet_solver.prototxt``) on MNIST, 10,000
  iterations; Caffe's MNIST example reports test accuracy 0.9897 at iteration 10,000.
* ``cifar``: Caffe's CIFAR-10 quick solver to 5,000 iterations, as ``train_quick.sh`` runs it:
  4,000 iterations at lr 0.001, then 1,000 at 0.0001 (there a resume with the ``_lr1``
  solver, momentum history kept; here one run with ``multistep`` at 4,000 and ``gamma`` 0.1,
  the same schedule up to the rounding of 0.001·0.1 against 0.0001). Trained on the five
  training batches, tested on the 1,000 test images provided (``test_iter`` 10 × 100).
  Caffe reports 0.7533 on the full 10,000-image test set.
* ``darknet``: the darknet LeNet-style cfg (``configs/mnist_lenet.cfg``) on MNIST, 10,000 updates.
* ``autoencoder``: Caffe's ``examples/mnist/mnist_autoencoder_solver.prototxt``, unmodified,
  from a Caffe root (``--caffe-root``), 10,000 iterations; its two test nets (test-on-train,
  test-on-test) report their losses (Caffe publishes no figure).
* ``cifar_full``: Caffe's ``examples/cifar10/cifar10_full_solver.prototxt``, unmodified, from a
  Caffe root, 5,000 iterations (of its 60,000), tested on the 1,000 test images provided.
* ``resnet``: ``configs/cifar_resnet.cfg`` (ResNet-20 in He et al.'s CIFAR style, darknet
  semantics) on CIFAR-10, 1,955 updates of 128 images (5 epochs), tested after every epoch.
* ``cifar_fp16_dynamic``, ``cifar_fp16_none``, ``cifar_fp16_nomaster``: the ``cifar`` run with
  ``--precision fp16`` and dynamic loss scaling, no scaling, and dynamic scaling without master
  weights (README, "Simulated mixed precision").

Each report also gives the test throughput next to the training throughput, from the run's
``metrics.jsonl``: a test's time is the gap between its row and the row before it (the training
row of the same iteration, or the start for a test before the first update); training images/s
is taken between the first and the last training row, minus the tests in between.

With ``--vs-torch PYTHON`` each of our runs is followed by the same run re-created in PyTorch
(``scripts/torch_whole_run.py`` run by ``PYTHON``, a Python with torch; same config, data,
iterations, threads and tests), and ``--repeat N`` runs each pair N times, ours and PyTorch's
alternating, then prints the median and range of each side's wall time, training and test
images/s and the ratio ours/PyTorch (of the medians). ``--eval-every N`` is given to both sides
(0: no tests).

Usage::

    uv run python scripts/whole_runs.py [lenet cifar darknet] [--data-dir ../shared/data]
        [--out-root runs/whole] [--max-iters N] [--threads N] [--eval-every N]
        [--caffe-root DIR] [--vs-torch PYTHON] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CIFAR_QUICK_ARGS = [
    "--set", "lr_policy=multistep",
    "--set", "stepvalue=4000",
    "--set", "gamma=0.1",
    "--set", "max_iter=5000",
    "--set", "test_iter=10",
]  # fmt: skip

RUNS = {
    "lenet": {
        "config": "configs/lenet_solver.prototxt",
        "args": [],
        "published": "0.9897 (Caffe examples/mnist, iteration 10000)",
    },
    "cifar": {
        "config": "configs/cifar10_quick_solver.prototxt",
        "args": CIFAR_QUICK_ARGS,
        "published": "0.7533 (Caffe examples/cifar10, iteration 5000, full 10000-image test set)",
    },
    "darknet": {
        "config": "configs/mnist_lenet.cfg",
        "args": [],
        "published": "none (darknet publishes no MNIST figure)",
    },
    "autoencoder": {
        "config": "examples/mnist/mnist_autoencoder_solver.prototxt",
        "caffe_root": True,
        "args": ["--max-iters", "10000"],
        "published": "none (Caffe publishes no autoencoder figure)",
    },
    "cifar_full": {
        "config": "examples/cifar10/cifar10_full_solver.prototxt",
        "caffe_root": True,
        "args": ["--max-iters", "5000"],
        "published": "none at 5,000 iterations (Caffe's cifar10 readme: ~0.81 after 60,000+)",
    },
    "resnet": {
        "config": "configs/cifar_resnet.cfg",
        "args": ["--max-iters", "1955", "--eval-every", "391"],
        "published": "none at 5 epochs (He et al.: 8.75% error for ResNet-20 after 64k updates)",
    },
    **{
        f"cifar_fp16_{case}": {
            "config": "configs/cifar10_quick_solver.prototxt",
            "args": [*CIFAR_QUICK_ARGS, "--precision", "fp16", *flags],
            "published": "the fp32 cifar run",
        }
        for case, flags in (
            ("dynamic", ["--loss-scale", "dynamic"]),
            ("none", ["--loss-scale", "none"]),
            ("nomaster", ["--loss-scale", "dynamic", "--no-master-weights"]),
        )
    },
}  # fmt: skip


def run_one(name: str, options: argparse.Namespace) -> dict:
    """Train one run through the CLI; returns its summary.json plus the exit code."""
    spec = RUNS[name]
    out = Path(options.out_root).resolve() / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    cwd = ROOT
    if spec.get("caffe_root"):
        if not options.caffe_root:
            raise SystemExit(f"{name}: runs Caffe's own example; give --caffe-root DIR")
        cwd = Path(options.caffe_root)
    data_dir = str(Path(options.data_dir).resolve())
    command = [
        sys.executable, "-c", "from dnupdate.cli.main import app; app()", "train", spec["config"],
        "--data-dir", data_dir, "--out", str(out), "--quiet", *spec["args"],
    ]  # fmt: skip
    if options.max_iters:
        command += ["--max-iters", str(options.max_iters)]
    if options.threads:
        command += ["--threads", str(options.threads)]
    if options.eval_every is not None:
        command += ["--eval-every", str(options.eval_every)]
    started = time.perf_counter()
    code = subprocess.run(command, cwd=cwd).returncode
    seconds = time.perf_counter() - started
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return {**summary, "exit_code": code, "process_seconds": seconds, "out": str(out)}


def torch_command(name: str, options: argparse.Namespace) -> list[str]:
    """The command of the PyTorch re-creation of run ``name`` (``scripts/torch_whole_run.py``
    under ``options.vs_torch``), with the run's arguments and the options both sides share."""
    spec = RUNS[name]
    if spec.get("caffe_root"):
        raise SystemExit(f"{name}: --vs-torch re-creates the runs of configs/ only")
    command = [
        options.vs_torch, str(ROOT / "scripts" / "torch_whole_run.py"), spec["config"],
        "--data-dir", str(Path(options.data_dir).resolve()), *spec["args"],
    ]  # fmt: skip
    for flag, value in (
        ("--max-iters", options.max_iters),
        ("--threads", options.threads),
        ("--eval-every", options.eval_every),
    ):
        if value is not None:
            command += [flag, str(value)]
    return command


def run_torch(name: str, options: argparse.Namespace) -> dict:
    """Run the PyTorch re-creation of ``name``; its JSON figures plus the exit code."""
    started = time.perf_counter()
    done = subprocess.run(torch_command(name, options), cwd=ROOT, stdout=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    lines = done.stdout.strip().splitlines()
    figures = json.loads(lines[-1]) if done.returncode == 0 and lines else {}
    return {**figures, "exit_code": done.returncode, "process_seconds": seconds}


def ours_figures(result: dict) -> dict:
    """Our run's figures in the PyTorch script's names: ``wall_s`` (``summary.json``'s
    ``wall_time_s``), ``train_images_per_s``, ``test_images_per_s`` (from ``metrics.jsonl``,
    :func:`throughput`; with no tests, training images/s is the summary's)."""
    rates = throughput(Path(result["out"]) / "metrics.jsonl")
    return {
        "wall_s": result.get("wall_time_s"),
        "process_seconds": result.get("process_seconds"),
        "train_images_per_s": rates.get("train_images_per_s", result.get("images_per_s")),
        "test_images_per_s": rates.get("test_images_per_s"),
    }


FIGURES = ("wall_s", "process_seconds", "train_images_per_s", "test_images_per_s")


def median_range(values: list[float | None]) -> str:
    """``median (min–max)`` of the values given (None ones left out), ``n/a`` when none."""
    present = [v for v in values if v is not None]
    if not present:
        return "n/a"
    return f"{statistics.median(present):.5g} ({min(present):.5g}–{max(present):.5g})"


def comparison(name: str, ours: list[dict], torch: list[dict]) -> str:
    """Median and range of each figure on both sides, and ours/PyTorch of the medians (speed:
    PyTorch's wall time over ours; rates: ours over PyTorch's)."""
    lines = [f"{name}: {len(ours)} runs each side, alternating"]
    for figure in FIGURES:
        a = [r.get(figure) for r in ours]
        b = [r.get(figure) for r in torch]
        ratio = ""
        a_present, b_present = [v for v in a if v], [v for v in b if v]
        if a_present and b_present:
            ma, mb = statistics.median(a_present), statistics.median(b_present)
            ratio = f", ours/PyTorch {(mb / ma if figure in FIGURES[:2] else ma / mb):.2f}x"
        lines.append(f"  {figure}: ours {median_range(a)}, PyTorch {median_range(b)}{ratio}")
    return "\n".join(lines)


def throughput(metrics_path: Path) -> dict:
    """``{"test_images_per_s", "train_images_per_s", "test_over_train"}`` of a run folder's
    ``metrics.jsonl`` (see the module docstring); empty when it has no tests after training
    started or fewer than two training rows."""
    if not metrics_path.exists():
        return {}
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    train = [(i, r) for i, r in enumerate(rows) if r.get("kind") != "test"]
    if len(train) < 2:
        return {}
    (first_index, first), (last_index, last) = train[0], train[-1]
    test_seconds = test_images = inner_test_seconds = 0.0
    for index, row in enumerate(rows):
        if row.get("kind") != "test" or index == 0:
            continue
        seconds = row["time_s"] - rows[index - 1]["time_s"]
        test_seconds += seconds
        test_images += row.get("test_images", 0)
        if first_index < index < last_index:
            inner_test_seconds += seconds
    train_seconds = last["time_s"] - first["time_s"] - inner_test_seconds
    if test_seconds <= 0 or train_seconds <= 0:
        return {}
    train_rate = (last["seen"] - first["seen"]) / train_seconds
    test_rate = test_images / test_seconds
    return {
        "test_images_per_s": test_rate,
        "train_images_per_s": train_rate,
        "test_over_train": test_rate / train_rate,
    }


def report(name: str, result: dict) -> str:
    return (
        f"{name}: exit {result['exit_code']}, {result.get('iteration', '?')} iterations, "
        f"{_tests_text(result)} "
        f"(published: {RUNS[name]['published']}), wall time {result.get('wall_time_s', 0):.0f} s "
        f"({result.get('images_per_s', 0):.0f} img/s), run folder {result['out']}"
    ) + _throughput_text(throughput(Path(result["out"]) / "metrics.jsonl"))


def _tests_text(result: dict) -> str:
    """The final test of each test net: accuracy where the net has one, else its loss ("no
    test" for a run that tested nothing, e.g. ``--eval-every 0``)."""
    nets = result.get("test_nets") or [result]
    if all(net.get("test_images") is None for net in nets):
        return "no test"
    parts = []
    for net in nets:
        label = f"test net {net['name']} " if net.get("name") else "test "
        if net.get("test_accuracy") is not None:
            figure = f"accuracy {net['test_accuracy']:.4f}"
        elif net.get("test_loss") is not None:
            figure = f"loss {net['test_loss']:.5g}"
        else:
            figure = "n/a"
        parts.append(f"{label}{figure} on {net.get('test_images', '?')} images")
    return "; ".join(parts)


def _throughput_text(rates: dict) -> str:
    if not rates:
        return ""
    return (
        f"; tests {rates['test_images_per_s']:.0f} img/s, training "
        f"{rates['train_images_per_s']:.0f} img/s ({rates['test_over_train']:.2f}x)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", metavar="RUN", help=f"any of {', '.join(RUNS)}")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--out-root", default=str(ROOT / "runs" / "whole"))
    parser.add_argument("--max-iters", type=int, default=None, help="shorter smoke runs")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--eval-every", type=int, default=None, help="0: no tests (both sides)")
    parser.add_argument("--caffe-root", default=None, help="a BVLC/caffe checkout (examples/)")
    parser.add_argument("--vs-torch", default=None, metavar="PYTHON",
                        help="a Python with torch: runs torch_whole_run.py too")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=1, help="runs per side, alternating")
    options = parser.parse_args(argv)
    if options.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {options.repeat}")
    unknown = [name for name in options.runs if name not in RUNS]
    if unknown:
        parser.error(f"unknown run(s): {', '.join(unknown)}")
    failed = 0
    default = [name for name in RUNS if options.caffe_root or not RUNS[name].get("caffe_root")]
    for name in options.runs or default:
        ours, torch = [], []
        for _ in range(options.repeat):
            result = run_one(name, options)
            print(report(name, result), flush=True)
            failed += result["exit_code"] != 0
            ours.append(ours_figures(result))
            if options.vs_torch:
                torch.append(run_torch(name, options))
                print(f"{name} in PyTorch: {json.dumps(torch[-1])}", flush=True)
                failed += torch[-1]["exit_code"] != 0
        if options.vs_torch or options.repeat > 1:
            print(comparison(name, ours, torch), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
