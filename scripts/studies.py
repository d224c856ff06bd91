"""The README's worked studies, each a ``dnupdate sweep`` (the command line itself, ``--json``)
whose results the script prints as the README's table — not a unit test; run it yourself.

* ``scaling``: Caffe's LeNet (``configs/lenet_solver.prototxt``) on real MNIST at batch 64, 256
  and 1024 with ``--lr-scaling none|linear|sqrt``, trained for the same number of epochs
  (``--epochs``, default 1: 938, 234 and 59 updates), final test accuracy on the 10,000 test
  images. One sweep per batch (a sweep's ``--max-iters`` is shared by its variants, and equal
  epochs need fewer updates for a larger batch), the grid over the scaling rule.
* ``semantics``: the darknet LeNet cfg (``configs/mnist_lenet.cfg``) under darknet and Caffe
  semantics with a ``steps`` policy (rate ÷10 at ``--step`` and ÷10 again at twice that): a
  sweep over ``semantics`` for the final figures, and ``dnupdate compare`` for where the two
  trajectories part (the same initial weights and batches; ``‖θ_darknet − θ_caffe‖/‖θ_darknet‖``).
* ``adamw``: Caffe's CIFAR-10 quick solver with ``type`` Adam (L2: the decay is added to the
  gradient, then normalised by Adam) against AdamW (decoupled: ``W ← W·(1 − lr·λ)``), each at
  two decays, ``--adamw-iters`` updates (default 1000: two epochs at batch 100).

Usage::

    uv run python scripts/studies.py [scaling semantics adamw] --data-dir ../shared/data
        [--out-root runs/studies] [--workers N] [--max-iters N] [--epochs E]

``--max-iters N`` caps every run at N updates (a quick check of the commands, not the study).
The commands are echoed before they run; a finished sweep is not rerun (the same command
again resumes or skips its variants).
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "from dnupdate.cli.main import app; app()"]
MNIST_TRAIN_IMAGES = 60000
BATCHES = (64, 256, 1024)
RULES = ("none", "linear", "sqrt")


def run(args: list[str]) -> None:
    """Run ``dnupdate ARGS`` from the repository root; exit with its code when it fails."""
    print("$ dnupdate " + shlex.join(args), file=sys.stderr, flush=True)
    code = subprocess.run([*CLI, *args], cwd=ROOT, stdout=subprocess.DEVNULL).returncode
    if code != 0:
        sys.exit(f"dnupdate {args[0]} exited {code}")


def results(sweep_dir: Path) -> list[dict[str, str]]:
    """The sweep's ``results.csv`` rows."""
    with open(sweep_dir / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def summary(sweep_dir: Path, row: dict[str, str]) -> dict:
    """The variant's ``summary.json``."""
    return json.loads((sweep_dir / row["run_dir"] / "summary.json").read_text())


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _cap(updates: int, options) -> int:
    return min(updates, options.max_iters) if options.max_iters else updates


def _figure(value: str, digits: int = 4) -> str:
    return f"{float(value):.{digits}f}" if value not in ("", None) else "–"


def scaling(options) -> str:
    """Study 1: batch 64/256/1024 × none/linear/sqrt at equal epochs."""
    rows = []
    for batch in BATCHES:
        updates = _cap(round(options.epochs * MNIST_TRAIN_IMAGES / batch), options)
        out = options.out_root / "scaling" / f"batch-{batch}"
        run(["sweep", "configs/lenet_solver.prototxt", "--grid", "lr_scaling=" + ",".join(RULES),
             "--set", f"batch_size={batch}", "--max-iters", str(updates),
             "--data-dir", str(options.data_dir), "--workers", str(options.workers),
             "--out", str(out), "--json", "-q"])  # fmt: skip
        for row in results(out):
            info = summary(out, row)
            factor = {
                "none": 1.0,
                "linear": batch / BATCHES[0],
                "sqrt": (batch / BATCHES[0]) ** 0.5,
            }
            rows.append([str(batch), row["lr_scaling"], f"×{factor[row['lr_scaling']]:g}",
                         f"{info['final_lr']:.4g}", str(info["iteration"]),
                         _figure(row["test_loss"]), _figure(row["test_accuracy"])])  # fmt: skip
    header = ["batch", "scaling", "rate", "final lr", "updates", "test loss", "test accuracy"]
    return table(header, rows)


def semantics(options) -> str:
    """Study 2: darknet against Caffe semantics with a steps policy, and where they part."""
    step = options.step
    updates = _cap(3 * step, options)
    sets = ["--set", "policy=steps", "--set", f"steps={step},{2 * step}", "--set", "scales=.1,.1"]
    common = ["configs/mnist_lenet.cfg", *sets, "--max-iters", str(updates),
              "--data-dir", str(options.data_dir)]  # fmt: skip
    out = options.out_root / "semantics"
    run(["sweep", *common, "--grid", "semantics=darknet,caffe", "--workers",
         str(options.workers), "--out", str(out / "sweep"), "--json", "-q"])  # fmt: skip
    finals = [[row["semantics"], _figure(row["final_loss"]), _figure(row["test_loss"]),
               _figure(row["test_accuracy"])] for row in results(out / "sweep")]  # fmt: skip
    run(["compare", *common, "--variant", "darknet=--semantics darknet",
         "--variant", "caffe=--semantics caffe", "--out", str(out / "compare"), "-q"])  # fmt: skip
    with open(out / "compare" / "compare.csv", newline="") as handle:
        steps = {int(r["iteration"]): r for r in csv.DictReader(handle)}
    marks = sorted({1, step - 1, step, step + 1, step + 10, 2 * step, 2 * step + 10, updates})
    trajectory = [[str(i), f"{float(r['lr_darknet']):.4g}", _figure(r["loss_darknet"]),
                   _figure(r["loss_caffe"]), f"{float(r['dist_caffe']):.3g}"]
                  for i in marks if (r := steps.get(i))]  # fmt: skip
    return "\n\n".join([
        table(["semantics", "final loss", "test loss", "test accuracy"], finals),
        table(["update", "lr", "loss darknet", "loss caffe", "‖θ_d − θ_c‖/‖θ_d‖"], trajectory),
    ])  # fmt: skip


def adamw(options) -> str:
    """Study 3: Adam + L2 against AdamW on CIFAR-10 quick."""
    updates = _cap(options.adamw_iters, options)
    out = options.out_root / "adamw"
    run(["sweep", "configs/cifar10_quick_solver.prototxt", "--grid", "optimizer=Adam,AdamW",
         "--grid", "weight_decay=0.0005,0.05", "--max-iters", str(updates),
         "--data-dir", str(options.data_dir), "--workers", str(options.workers),
         "--out", str(out), "--json", "-q"])  # fmt: skip
    rows = [[row["optimizer"], row["weight_decay"], _figure(row["final_loss"]),
             _figure(row["test_loss"]), _figure(row["test_accuracy"])]
            for row in results(out)]  # fmt: skip
    return table(["type", "weight_decay", "final loss", "test loss", "test accuracy"], rows)


STUDIES = {"scaling": scaling, "semantics": semantics, "adamw": adamw}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("studies", nargs="*", metavar="STUDY", help=", ".join(STUDIES))
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out-root", type=Path, default=ROOT / "runs" / "studies")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-iters", type=int, default=None)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--step", type=int, default=100, help="semantics: first rate step")
    parser.add_argument("--adamw-iters", type=int, default=1000)
    options = parser.parse_args(argv)
    unknown = [name for name in options.studies if name not in STUDIES]
    if unknown:
        parser.error(f"unknown study {', '.join(unknown)} (choose from {', '.join(STUDIES)})")
    options.out_root = options.out_root.resolve()
    options.data_dir = options.data_dir.resolve()
    for name in options.studies or STUDIES:
        print(f"## {name}\n\n{STUDIES[name](options)}\n", flush=True)


if __name__ == "__main__":
    main()
