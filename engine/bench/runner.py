"""A workload's two step functions (train, infer) as one timed :class:`Runner`, and ours: the
training step of :class:`~engine.training.step.Trainer` on one fixed random batch. The PyTorch
twin (:mod:`engine.bench.torch_twin`) builds the same kind of runner."""

from __future__ import annotations

import time
from collections.abc import Callable


class Runner:
    """A workload's two step functions (``train``, ``infer``) and its batch size."""

    def __init__(self, steps: dict[str, Callable[[], None]], batch: int):
        self.steps = steps
        self.batch = batch

    def timed(self, mode: str, count: int) -> float:
        """Seconds for ``count`` steps of ``mode``."""
        step = self.steps[mode]
        start = time.perf_counter()
        for _ in range(count):
            step()
        return time.perf_counter() - start


def precision_overrides(precision: str) -> tuple[tuple[str, str], ...]:
    """The ``--set`` pseudo-keys of a simulated-precision run (``fp32``: none): the storage
    format with dynamic loss scaling, GradScaler's defaults (the usual mixed-precision run)."""
    if precision == "fp32":
        return ()
    return (("precision", precision), ("loss_scale", "dynamic"))


def dnupdate_runner(config_path: str, settings, overrides=()) -> Runner:
    """Our training step (``Trainer.train_iteration`` on one fixed random batch) and test-mode
    forward, on the backend ``settings.device`` names; ``overrides``: ``--set`` pairs (the
    simulated precision of :func:`precision_overrides`)."""
    from dnupdate.engine.config import load_config
    from dnupdate.engine.training.step import Trainer

    run = load_config(config_path, list(overrides))
    trainer = Trainer(run, seed=settings.seed, backend=_backend(settings.device))
    net = trainer.network
    x, y = fixed_batch(net.input_shape, _classes(net), settings.seed)
    net.set_truth(y)

    def next_batch():
        return x, y

    def train() -> None:
        trainer.train_iteration(next_batch)

    def infer() -> None:
        net.forward(x, train=False)

    return Runner({"train": train, "infer": infer}, net.batch)


def _backend(device: str):
    """The CPU backend, or ``engine.backends.get_backend(device)`` where that exists."""
    if device == "cpu":
        from dnupdate.engine.backends.cpu import CpuBackend

        return CpuBackend()
    from dnupdate.engine import backends

    getter = getattr(backends, "get_backend", None)
    if getter is None:
        raise RuntimeError(f"device {device!r}: this build has no backend other than the CPU")
    return getter(device)


def _classes(net) -> int:
    """The number of classes of the net's output (its last layer's output size per image)."""
    return max(2, int(net.output.size // net.batch))


def fixed_batch(input_shape: tuple[int, ...], classes: int, seed: int):
    """One random batch: float32 images in [0, 1) and integer labels in ``[0, classes)``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.random(input_shape, dtype=np.float32)
    y = rng.integers(0, classes, size=input_shape[0]).astype(np.int64)
    return x, y
