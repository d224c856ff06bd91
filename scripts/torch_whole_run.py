"""A PyTorch re-creation of a whole ``dnupdate train`` run, for timing ours against it (issue 16,
"Whole runs"). Not a test and not part of the package: PyTorch is not a dependency; this script
imports it and exits 1 with a message where it is missing.

The run is the config's, read with dnupdate's own code so that both sides do the same work:

* the network: the bench's layer-for-layer twin (:func:`engine.bench.torch_twin.torch_model`),
  started from the weights dnupdate's initialisation gives the same seed
  (:func:`engine.model.initialisation.initialise`);
* the batches: dnupdate's datasets and samplers (:func:`engine.training.session.open_run_data`),
  so both sides read the same images in the same order with the same preprocessing (Caffe:
  in order from the start, ``(pixel − mean)·scale``); the conversion to float32 is the
  sampler's on both sides;
* the learning rate of update ``k``: dnupdate's schedule (:func:`engine.update.schedule.
  lr_series`; Caffe ``it = k − 1``, darknet ``b = k``), set into the optimizer before each step;
* the tests: where ``dnupdate train`` tests (Caffe ``Solver::Step``: before the update of every
  iteration that is a multiple of ``test_interval``, at 0 only with ``test_initialization``;
  the final weights unless ``--eval-every 0``), each test net's ``test_iter`` batches from
  where its last test stopped (darknet configs: the first 1,000 test images, 10,000 for the
  final test), forward only (``model.eval()``, ``torch.inference_mode``): mean loss and top-1
  accuracy over the test's images;
* Caffe's extra training-phase forward after the last update when ``iter % display == 0``.

The update rule (``--rule``): ``caffe`` (the default for a Caffe SGD solver) is Caffe's SGD
(spec ``caffe.md`` §5.3–5.4: ``g ← g + λ·decay_mult·w``, ``h ← μ·h + rate·lr_mult·g``,
``w ← w − h``: the rate inside the momentum history) in place on each parameter; ``torch`` is
the twin's optimizer (:func:`engine.bench.torch_twin.torch_optimizer`: ``torch.optim.SGD`` keeps
the rate outside its buffer, ``w ← w − rate·lr_mult·h``, the same work per step but another
trajectory where the rate changes, as ``inv`` does every step). Other solvers always use the
twin's optimizer.

What differs from ``dnupdate train`` (for speed, the same work per step is what matters): no run
folder (no metrics rows, checkpoints or final files are written), no per-layer norms, no loss
smoothing, no divergence check beyond the final loss; gradient clipping and L1 decay are not
re-created; PyTorch's own kernels (its float32 summation orders differ from ours, so the
trajectories part after the first updates even with ``--rule caffe``).

Prints one JSON object: ``wall_s`` (the training loop with its tests, as ``summary.json``'s
``wall_time_s``), ``setup_s``, ``train_s``/``test_s``, ``train_images_per_s``,
``test_images_per_s``, ``test_over_train``, the final training loss and the final test's
``test_loss``/``test_accuracy``.

Usage::

    /path/to/venv-with-torch/bin/python scripts/torch_whole_run.py configs/lenet_solver.prototxt
        --data-dir ../shared/data --threads 2 [--max-iters N] [--eval-every N] [--rule torch]
        [--seed N] [--set KEY=VALUE ...] [--data NAME]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from dnupdate.engine.config import load_config, parse_overrides
from dnupdate.engine.data import DataError
from dnupdate.engine.spec import ConfigError, RunSpec, ScheduleSpec
from dnupdate.engine.training.session import (
    TestNet,
    TrainOptions,
    TrainSetupError,
    batches_of_test,
    default_eval_every,
    open_run_data,
    resolve_seed,
)
from dnupdate.engine.update.schedule import lr_series

NO_TORCH = (
    "torch_whole_run.py needs PyTorch, which is not a dnupdate dependency: run it with a Python "
    "that has torch installed (e.g. uv venv /tmp/torchvenv && uv pip install --python "
    "/tmp/torchvenv/bin/python torch -e .)"
)

Batch = tuple[np.ndarray, np.ndarray]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring); ``--rule`` defaults to ``caffe`` for a
    Caffe SGD solver and ``torch`` otherwise (:func:`pick_rule`)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="a darknet .cfg or a Caffe solver .prototxt")
    parser.add_argument("--data-dir", default=None, help="where the datasets are (as train)")
    parser.add_argument("--data", default=None, help="a source for both splits (as train)")
    parser.add_argument("--max-iters", type=int, default=None, help="updates (default: config)")
    parser.add_argument("--eval-every", type=int, default=None,
                        help="test interval in updates; 0: no tests (default: config)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=None, help="default: the config's, else 0")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="a config key, as train --set")  # fmt: skip
    parser.add_argument("--rule", choices=("caffe", "torch"), default=None,
                        help="Caffe's SGD, or the twin's torch.optim")  # fmt: skip
    options = parser.parse_args(argv)
    for name in ("max_iters", "threads"):
        value = getattr(options, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    if options.eval_every is not None and options.eval_every < 0:
        parser.error(f"--eval-every must be 0 or more, got {options.eval_every}")
    return options


def pick_rule(run: RunSpec, asked: str | None) -> str:
    """``caffe`` (Caffe's SGD re-created, :class:`CaffeSGD`) or ``torch`` (the twin's
    optimizer): ``asked`` when given (``caffe`` only for a Caffe SGD solver: ValueError
    otherwise), else ``caffe`` for a Caffe SGD solver and ``torch`` for the rest."""
    caffe_sgd = run.format == "caffe" and run.solver.optimizer == "sgd"
    if asked == "caffe" and not caffe_sgd:
        raise ValueError(
            f"--rule caffe re-creates Caffe's SGD only; {run.config_path} is a "
            f"{run.format} {run.solver.optimizer} run"
        )
    return asked or ("caffe" if caffe_sgd else "torch")


def update_rates(schedule: ScheduleSpec, updates: int) -> np.ndarray:
    """float32 rates of updates ``1..updates`` (index ``k − 1``), from dnupdate's schedule in
    its convention: Caffe's update ``k`` uses ``it = k − 1``, darknet's batch number ``b = k``
    (``Trainer._schedule_index``)."""
    first = 1 if schedule.convention == "darknet" else 0
    return lr_series(schedule, first, first + updates - 1)


def test_points(
    max_iter: int, eval_every: int, *, test_initialization: bool, final: bool
) -> list[int]:
    """The update counts at which ``dnupdate train`` tests: every multiple of ``eval_every``
    below ``max_iter`` (0 only with ``test_initialization``, Caffe's ``Solver::Step``), then
    ``max_iter`` when ``final`` (the test of the final weights)."""
    points: list[int] = []
    if eval_every > 0:
        start = 0 if test_initialization else eval_every
        points = list(range(start, max_iter, eval_every))
    if final and (not points or points[-1] != max_iter):
        points.append(max_iter)
    return points


@dataclass
class Plan:
    """A run as ``dnupdate train`` would do it: the spec, the batches (training sampler and
    test nets), the rates of every update, the update counts with a test, the rule."""

    run: RunSpec
    seed: int
    max_iter: int
    accumulate: int
    next_batch: Callable[[], Batch]
    test_nets: list[TestNet]
    rates: np.ndarray
    tests_at: list[int]
    display_forward: bool
    rule: str


def make_plan(options: argparse.Namespace) -> Plan:
    """The :class:`Plan` of the command line's run (config errors raise as ``train``'s do)."""
    run = load_config(options.config, parse_overrides(options.overrides), data=options.data)
    train_options = TrainOptions(
        data=options.data,
        data_dir=options.data_dir,
        max_iters=options.max_iters,
        seed=options.seed,
        eval_every=options.eval_every,
    )
    seed = resolve_seed(options.seed, run)
    data = open_run_data(run, train_options, seed=seed, minibatch=run.solver.minibatch)
    max_iter = options.max_iters or run.solver.max_iter
    if max_iter <= 0:
        raise ValueError(f"{run.config_path}: no iteration limit; give --max-iters")
    tested = bool(data.test_nets)
    eval_every = (
        default_eval_every(run, max_iter) if options.eval_every is None else options.eval_every
    )
    tests_at = test_points(
        max_iter,
        eval_every if tested else 0,
        test_initialization=run.solver.test_initialization,
        final=tested and options.eval_every != 0,
    )
    display = run.solver.display
    return Plan(
        run=run,
        seed=seed,
        max_iter=max_iter,
        accumulate=run.solver.accumulate,
        next_batch=data.train_sampler.next_batch,
        test_nets=data.test_nets,
        rates=update_rates(run.schedule, max_iter),
        tests_at=tests_at,
        display_forward=run.format == "caffe" and bool(display) and max_iter % display == 0,
        rule=pick_rule(run, options.rule),
    )


def import_torch():
    """``torch``, or SystemExit(1) with :data:`NO_TORCH` on standard error."""
    try:
        import torch
    except ImportError:
        print(f"error: {NO_TORCH}", file=sys.stderr)
        raise SystemExit(1) from None
    return torch


class CaffeSGD:
    """Caffe's SGD on the twin's parameters (spec ``caffe.md`` §5.3–5.4), in place:
    ``g ← g + λ·decay_mult·w`` (``Regularize``), ``h ← μ·h + rate·lr_mult·g``
    (``ComputeUpdateValue``: the rate inside the history), ``w ← w − h`` (``Net::Update``).
    ``groups``: the twin's per-blob groups at rate 1 (``lr`` = ``lr_mult``)."""

    def __init__(self, torch, groups: list[dict], momentum: float) -> None:
        self.torch = torch
        self.momentum = momentum
        self.entries = [
            (p, torch.zeros_like(p), float(group["lr"]), float(group["weight_decay"]))
            for group in groups
            for p in group["params"]
        ]

    def zero_grad(self) -> None:
        for p, *_ in self.entries:
            p.grad = None

    def step(self, rate: float) -> None:
        with self.torch.no_grad():
            for p, history, lr_mult, decay in self.entries:
                grad = p.grad
                if grad is None:
                    continue
                if decay:
                    grad.add_(p, alpha=decay)
                history.mul_(self.momentum).add_(grad, alpha=rate * lr_mult)
                p.sub_(history)


class TorchOptimizer:
    """The twin's ``torch.optim`` optimizer with the rate set before each step
    (``lr = rate·lr_mult`` per blob group)."""

    def __init__(self, torch_twin, model, solver) -> None:
        self.inner = torch_twin.torch_optimizer(model, solver, lr=1.0)
        self.mults = [group["lr"] for group in self.inner.param_groups]

    def zero_grad(self) -> None:
        self.inner.zero_grad(set_to_none=True)

    def step(self, rate: float) -> None:
        for group, mult in zip(self.inner.param_groups, self.mults, strict=True):
            group["lr"] = rate * mult
        self.inner.step()


def load_our_init(torch, model, run: RunSpec, seed: int) -> None:
    """Copy dnupdate's initial weights of ``seed`` into the twin (blob by blob)."""
    from dnupdate.engine.bench.torch_twin import twin_blobs
    from dnupdate.engine.model.initialisation import allocate_blobs, initialise

    blobs = allocate_blobs(run.net)
    initialise(run.net, blobs, seed=seed)
    with torch.no_grad():
        for blob in twin_blobs(model):
            values = torch.from_numpy(blobs[blob.key]).reshape(blob.parameter.shape)
            blob.parameter.copy_(values)


@dataclass
class TestResult:
    """One test: mean loss and top-1 accuracy over its images, its seconds, and the number of
    updates done before it (set by :func:`run`)."""

    loss: float
    accuracy: float | None
    images: int
    seconds: float
    iteration: int = 0


class TorchRun:
    """The twin, its loss, its optimizer and the plan's batches, run step by step."""

    def __init__(self, torch, plan: Plan) -> None:
        from dnupdate.engine.bench import torch_twin

        self.torch, self.plan = torch, plan
        self.model, self.criterion = torch_twin.torch_model(plan.run.net)
        load_our_init(torch, self.model, plan.run, plan.seed)
        self.mse = isinstance(self.criterion, torch.nn.MSELoss)
        if plan.rule == "caffe":
            groups = torch_twin.param_groups(self.model, plan.run.solver, 1.0)
            self.optimizer = CaffeSGD(torch, groups, plan.run.solver.momentum)
        else:
            self.optimizer = TorchOptimizer(torch_twin, self.model, plan.run.solver)
        self.model.train()

    def _loss(self, batch: Batch):
        images, labels = batch
        out = self.model(self.torch.from_numpy(images))
        target = self.torch.from_numpy(labels)
        if self.mse and labels.ndim == 1:
            target = self.torch.nn.functional.one_hot(target, out.shape[1]).float()
        return out, target, self.criterion(out, target)

    def train_step(self, rate: float) -> float:
        """One update: ``accumulate`` forward/backward passes (loss ``/ accumulate``, Caffe's
        ``iter_size`` normalisation), then the rule at ``rate``; returns the mean loss."""
        self.optimizer.zero_grad()
        total = 0.0
        passes = self.plan.accumulate
        for _ in range(passes):
            _, _, loss = self._loss(self.plan.next_batch())
            (loss / passes if passes > 1 else loss).backward()
            total += float(loss.item())
        self.optimizer.step(rate)
        return total / passes

    def display_forward(self) -> float:
        """Caffe's training-phase forward after the last update (no gradient)."""
        with self.torch.no_grad():
            return float(self._loss(self.plan.next_batch())[2].item())

    def test(self, batches: Iterable[Batch]) -> TestResult:
        """Forward only over ``batches``: image-weighted mean loss, top-1 accuracy."""
        started = time.perf_counter()
        self.model.eval()
        loss_sum, correct, images = 0.0, 0, 0
        with self.torch.inference_mode():
            for batch in batches:
                out, target, loss = self._loss(batch)
                count = len(batch[1])
                loss_sum += float(loss.item()) * count
                if not self.mse:
                    correct += int((out.argmax(1) == target).sum().item())
                images += count
        self.model.train()
        accuracy = None if self.mse else correct / max(images, 1)
        return TestResult(
            loss_sum / max(images, 1), accuracy, images, time.perf_counter() - started
        )


def test_all(torch_run: TorchRun, final: bool) -> Iterator[TestResult]:
    """Each test net in turn (``Solver::TestAll``), with dnupdate's batches of a test."""
    for net in torch_run.plan.test_nets:
        yield torch_run.test(batches_of_test(net.sampler, net.test_iter, final))


def run(torch, plan: Plan) -> dict[str, Any]:
    """Train the plan in PyTorch; the figures of the module docstring."""
    setup_started = time.perf_counter()
    torch_run = TorchRun(torch, plan)
    setup_s = time.perf_counter() - setup_started
    tests: list[TestResult] = []
    due = set(plan.tests_at)
    loss = float("nan")
    started = time.perf_counter()
    for update in range(plan.max_iter):
        if update in due:
            tests.extend(_at(update, test_all(torch_run, final=False)))
        loss = torch_run.train_step(float(plan.rates[update]))
    if plan.display_forward:
        torch_run.display_forward()
    if plan.max_iter in due:
        tests.extend(_at(plan.max_iter, test_all(torch_run, final=True)))
    wall_s = time.perf_counter() - started
    return figures(plan, tests, wall_s, setup_s, loss, torch.__version__)


def _at(iteration: int, results: Iterable[TestResult]) -> list[TestResult]:
    """The results, tagged with the update count they tested at."""
    return [dataclasses.replace(result, iteration=iteration) for result in results]


def figures(
    plan: Plan, tests: list[TestResult], wall_s: float, setup_s: float, loss: float, version: str
) -> dict[str, Any]:
    """The printed JSON object (rates as ``scripts/whole_runs.py`` computes ours: training
    images over the loop's time without its tests; test images over the tests' time, leaving
    out a test before the first update where there are others, as ``whole_runs.throughput``
    leaves out the first metrics row: its time includes the first forward's warm-up)."""
    test_s = sum(t.seconds for t in tests)
    test_images = sum(t.images for t in tests)
    timed = [t for t in tests if t.iteration > 0] or tests
    timed_s = sum(t.seconds for t in timed)
    train_images = plan.max_iter * plan.accumulate * plan.run.solver.minibatch
    train_s = wall_s - test_s
    train_rate = train_images / train_s if train_s > 0 else None
    test_rate = sum(t.images for t in timed) / timed_s if timed_s > 0 else None
    last = tests[-len(plan.test_nets)] if tests else None
    return {
        "config": plan.run.config_path,
        "framework": f"pytorch {version}",
        "threads": None,
        "rule": "caffe-sgd" if plan.rule == "caffe" else "torch.optim",
        "iterations": plan.max_iter,
        "batch": plan.run.solver.minibatch * plan.accumulate,
        "tests": len(tests),
        "tested_at": plan.tests_at,
        "setup_s": setup_s,
        "wall_s": wall_s,
        "train_s": train_s,
        "test_s": test_s,
        "train_images_per_s": train_rate,
        "test_images": test_images,
        "test_images_per_s": test_rate,
        "test_over_train": test_rate / train_rate if test_rate and train_rate else None,
        "final_loss": loss,
        "test_loss": None if last is None else last.loss,
        "test_accuracy": None if last is None else last.accuracy,
    }


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    torch = import_torch()
    if options.threads:
        torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed or 0)
    try:
        plan = make_plan(options)
    except (ConfigError, DataError, TrainSetupError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    result = run(torch, plan)
    result["threads"] = torch.get_num_threads()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
