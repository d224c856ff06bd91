"""Testing a trained model without training (``dnupdate eval``; Caffe's ``caffe test
-weights``, darknet's ``classifier valid``).

:func:`evaluate_test_nets` builds the :class:`~engine.training.step.Trainer` (the weights loaded
as ``train --weights`` loads them), reads the test split through the same data resolution and
:class:`~engine.data.BatchSampler` as a run's tests, and runs
:meth:`~engine.training.step.Trainer.evaluate` (the one test-mode forward pass of the engine:
its loss is the figure a run's test line shows) over every test image once, in order, the last
batch cut short. While that pass runs it sees each batch's output scores and builds, from
them:

* the **confusion matrix** ``C[t, p]`` = images of true class ``t`` predicted as ``p``;
* **top-1** = ``trace(C) / images``, and per class ``C[k, k] / images of class k``;
* **top-5** (nets with more than 5 outputs): the true class is among the 5 best.

Rules (Caffe's ``AccuracyLayer``, which a run's tests follow too): an image counts as correct
for top-k when fewer than k *other* classes score ``>=`` its true class, so a tie at the top
counts against the prediction; the predicted class in ``C`` is then the first best-scoring
class other than the true one (so the diagonal is exactly the top-1 hits). Unlike Caffe
(every comparison with NaN is false, so a NaN score counts as a hit) and darknet (``top_k``
picks some class from NaNs), **an image with any non-finite score is a wrong answer**: it is
in no column of ``C`` and counted in ``non_finite`` of its true class.

A Caffe solver with several test nets (``test_state``/``test_iter`` repeated, e.g. the
autoencoder's test-on-train and test-on-test) is tested on each, as a run's tests are: test net
``#i`` runs the layers its NetState keeps, reads its own data layer's source (a path naming a
split, such as ``mnist_train_lmdb``, is read as that split) with its own seed (``seed + 1 +
i``); :func:`evaluate_test_nets` gives one :class:`Evaluation` per net (``test_net`` picks one).

Nothing here prints or writes: the result is plain data (:meth:`Evaluation.to_json`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dnupdate.engine.data import BatchSampler, Dataset, open_dataset
from dnupdate.engine.data.errors import DataError
from dnupdate.engine.data.sampler import mean_for
from dnupdate.engine.spec import DataSourceSpec, RunSpec
from dnupdate.engine.training.runfolder import (
    CHECKPOINT_DIR,
    SUMMARY_FILE,
    RunFolderError,
    parameter_checkpoints,
    read_json,
)
from dnupdate.engine.training.session import (
    TrainSetupError,
    _check_shape,
    _check_targets,
    _read_split,
    make_backend,
    resolve_seed,
)

__all__ = [
    "TOP_K",
    "EvalOptions",
    "EvalTestNet",
    "Evaluation",
    "evaluate_test_nets",
    "run_checkpoint",
    "test_nets_of",
]

#: the second accuracy reported, for nets with more outputs than this
TOP_K = 5


@dataclass(frozen=True)
class EvalOptions:
    """What to test and how.

    ``weights``: a ``.weights``/``.npz``/``.caffemodel`` file (required: testing the random
    initialisation is not what anyone means); ``data``: a source replacing the config's test
    source (``NAME``, ``npz:PATH``, a folder); ``images``: test only the first N images;
    ``seed``: None = the config's (a Caffe TEST ``mirror`` draws from it, as a run's tests);
    ``iteration``: the update count the weights were saved after, when the caller knows it
    (a run folder's checkpoint), else the ``.weights`` header's; ``allow_nonfinite``: load
    weights holding NaN/inf (refused otherwise, as by ``train``); ``test_net``: test only
    Caffe's test net #N (None: every test net).
    """

    weights: str
    data: str | None = None
    data_dir: str | None = None
    images: int | None = None
    semantics: str | None = None
    device: str = "cpu"
    threads: int | None = None
    seed: int | None = None
    iteration: int | None = None
    allow_nonfinite: bool = False
    test_net: int | None = None


@dataclass(frozen=True)
class EvalTestNet:
    """One test net of a config: Caffe's test net #``index``, its ``name`` (``test_state``
    stages; empty when the config has one test net), the ``phase`` tag of its layers and its
    data layer's spec (``source`` and preprocessing)."""

    index: int
    name: str
    phase: str
    spec: DataSourceSpec


@dataclass(frozen=True)
class Evaluation:
    """One test pass's results (see the module docstring for the rules).

    ``loss``: mean per-image loss as a run's test reports it (Caffe: ``Solver::Test``'s mean
    of the batch losses); ``top1``/``top5``: fractions of ``images`` (``top5`` None for nets
    with at most :data:`TOP_K` outputs); ``confusion``: classes × classes counts, rows the true
    class; ``non_finite``: per true class, images whose scores were not all finite (wrong
    answers, in no column of ``confusion``).
    """

    config_path: str
    weights: str
    iteration: int | None
    semantics: str
    dataset: str
    images: int
    loss: float
    top1: float
    top5: float | None
    confusion: np.ndarray
    non_finite: np.ndarray
    label_names: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: whether the net is a classifier its framework reports an accuracy for (Caffe: an
    #: ``Accuracy`` layer; darknet: a ``[softmax]``); else only the loss is tested
    classifier: bool = True
    #: which test net (Caffe's ``#i``) and its name (``test_state`` stages, or empty)
    test_net: int = 0
    test_net_name: str = ""
    #: the split the images came from: ``test``, or ``train`` for a Caffe test net whose data
    #: layer names the training LMDB (the autoencoder's ``test-on-train``)
    split: str = "test"

    @property
    def classes(self) -> int:
        return int(self.confusion.shape[0])

    def class_images(self) -> np.ndarray:
        """Test images per true class (non-finite ones included)."""
        return self.confusion.sum(axis=1) + self.non_finite

    def class_accuracy(self) -> list[float]:
        """Per class ``C[k, k] / images of class k`` (NaN for a class with no images)."""
        totals = self.class_images()
        diagonal = np.diagonal(self.confusion)
        pairs = zip(diagonal.tolist(), totals.tolist(), strict=True)
        return [d / n if n else math.nan for d, n in pairs]

    def class_name(self, index: int) -> str:
        """The dataset's name for class ``index``, else its number."""
        return self.label_names[index] if index < len(self.label_names) else str(index)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-ready data; non-finite figures become null."""
        accuracy = self.class_accuracy()
        totals = self.class_images().tolist()
        return {
            "config_path": self.config_path,
            "weights": self.weights,
            "iteration": self.iteration,
            "semantics": self.semantics,
            "test_net": self.test_net,
            "test_net_name": self.test_net_name,
            "dataset": self.dataset,
            "split": self.split,
            "images": self.images,
            "classes": self.classes,
            "loss": _number(self.loss),
            "classifier": self.classifier,
            "top1": _number(self.top1) if self.classifier else None,
            "top5": None if self.top5 is None else _number(self.top5),
            "non_finite_images": int(self.non_finite.sum()),
            "per_class": [
                {
                    "class": k,
                    "name": self.class_name(k),
                    "images": int(totals[k]),
                    "correct": int(self.confusion[k, k]),
                    "accuracy": _number(accuracy[k]),
                    "non_finite": int(self.non_finite[k]),
                }
                for k in range(self.classes)
            ],
            "confusion": self.confusion.tolist(),
            "notes": list(self.notes),
        }


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------------


class _Counter:
    """Accumulates the confusion matrix, non-finite images and top-k hits batch by batch."""

    def __init__(self, classes: int, framework: str = "caffe") -> None:
        self.confusion = np.zeros((classes, classes), dtype=np.int64)
        self.non_finite = np.zeros(classes, dtype=np.int64)
        self.top_k_hits = 0
        self.framework = framework

    def __call__(self, scores: np.ndarray, labels: np.ndarray) -> None:
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        classes = self.confusion.shape[0]
        if scores.shape[1] != classes:
            raise DataError(
                "", f"the net gives {scores.shape[1]} outputs per image, expected {classes}"
            )
        if labels.size and (labels.min() < 0 or labels.max() >= classes):
            raise DataError(
                "",
                f"label {int(labels.max())} is out of range for a net with {classes} outputs",
            )
        finite = np.isfinite(scores).all(axis=1)
        np.add.at(self.non_finite, labels[~finite], 1)
        scores, labels = scores[finite].astype(np.float64), labels[finite]
        if self.framework == "darknet":
            better = _ahead_count(scores, labels)
            predicted = np.argmax(scores, axis=1)  # darknet's top_k: the first of equal maxima
        else:
            better = _better_count(scores, labels)
            predicted = _predictions(scores, labels, better)
        np.add.at(self.confusion, (labels, predicted), 1)
        self.top_k_hits += int((better < TOP_K).sum())


def _better_count(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per image, the classes other than the true one scoring ``>=`` it (Caffe's
    ``num_better_predictions``)."""
    truth = scores[np.arange(labels.size), labels]
    return (scores >= truth[:, None]).sum(axis=1) - 1


def _ahead_count(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per image, the classes darknet's ``top_k`` ranks before the true one: those scoring
    more, and those scoring the same with a lower index (its pick moves on only for ``>``)."""
    truth = scores[np.arange(labels.size), labels]
    earlier = np.arange(scores.shape[1])[None, :] < labels[:, None]
    return (scores > truth[:, None]).sum(axis=1) + ((scores == truth[:, None]) & earlier).sum(
        axis=1
    )


def _predictions(scores: np.ndarray, labels: np.ndarray, better: np.ndarray) -> np.ndarray:
    """The predicted class: the true one when nothing else scores ``>=`` it, else the first
    best-scoring class other than the true one (so a tie at the top counts against)."""
    others = scores.copy()
    others[np.arange(labels.size), labels] = -np.inf
    return np.where(better == 0, labels, np.argmax(others, axis=1))


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def test_nets_of(run: RunSpec) -> list[EvalTestNet]:
    """The config's test nets, as a run's tests: #0 (the first TEST data layer, else the
    training one), then Caffe's further test nets (``DataSpec.more_tests``, each its own data
    layer, else test net #0's)."""
    first = run.data.test or run.data.train
    if first is None:
        raise TrainSetupError(f"{run.config_path}: the config names no data; give --data")
    nets = [EvalTestNet(0, run.data.test_name, "test", first)]
    for index, more in enumerate(run.data.more_tests, start=1):
        nets.append(EvalTestNet(index, more.name, more.phase, more.source or first))
    return nets


def _test_sampler(
    run: RunSpec, options: EvalOptions, seed: int, net: EvalTestNet
) -> tuple[BatchSampler, Dataset]:
    """Test net ``net``'s data and sampler, preprocessing as a run's tests (``--data`` beats
    the config's source; a Caffe source naming a split is read as that split); a missing Caffe
    ``mean_file`` is replaced by the training set's mean, as in training."""
    spec = net.spec
    source = options.data or spec.source
    split = _read_split(run, options, source, "test")  # type: ignore[arg-type]
    dataset = open_dataset(source, split, options.data_dir, size=options.images)
    mean, notes = None, list(dataset.notes)
    if spec.mean_file and not spec.mean_values and not Path(spec.mean_file).exists():
        train_spec = run.data.train or spec
        train = open_dataset(options.data or train_spec.source, "train", options.data_dir)
        mean, note = mean_for(spec, train)
        notes.append(str(note))
    framework = "darknet" if run.format == "darknet" else "caffe"
    sampler = BatchSampler(
        dataset,
        spec,
        framework=framework,
        phase="test",
        seed=seed + 1 + net.index,
        shuffle=False,
        mean=mean,
    )
    sampler.notes.extend(notes)
    _check_shape(run, sampler, dataset)
    return sampler, dataset


def _every_image_once(sampler: BatchSampler) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The whole test set in order, in the sampler's batches, the last one cut short."""
    sampler.position = 0
    remaining = len(sampler.dataset)
    while remaining > 0:
        images, labels = sampler.next_batch()
        take = min(remaining, len(labels))
        yield images[:take], labels[:take]
        remaining -= take


# --------------------------------------------------------------------------------------------
# The command's engine side
# --------------------------------------------------------------------------------------------


def evaluate_test_nets(run: RunSpec, options: EvalOptions) -> list[Evaluation]:
    """Test ``options.weights`` on each test net's data (only ``options.test_net`` when
    given; see the module docstring).

    Raises :class:`TrainSetupError` (also for a ``test_net`` the config does not have),
    :class:`engine.data.DataError`, :class:`engine.formats.weights.WeightsFileError` or
    :class:`engine.model.network.NetworkError`, each naming the file and the problem.
    """
    from dnupdate.engine.training.step import Trainer

    nets = test_nets_of(run)
    if options.test_net is not None:
        if not 0 <= options.test_net < len(nets):
            raise TrainSetupError(
                f"{run.config_path}: no test net #{options.test_net}: the config has "
                f"{len(nets)} (#0" + (f"..#{len(nets) - 1})" if len(nets) > 1 else ")")
            )
        nets = [nets[options.test_net]]
    seed = resolve_seed(options.seed, run)
    trainer = Trainer(
        run,
        seed=seed,
        backend=make_backend(options.device, options.threads),
        semantics=options.semantics,
        weights=options.weights,
        allow_nonfinite=options.allow_nonfinite,
    )
    iteration = options.iteration
    if iteration is None and trainer.seen:
        iteration = trainer.iteration
    return [_evaluate_net(run, options, trainer, net, seed, iteration) for net in nets]


def _evaluate_net(
    run: RunSpec, options: EvalOptions, trainer, net: EvalTestNet, seed: int, iteration
) -> Evaluation:
    """One test net's pass over its whole test set (the trainer's test net of its phase)."""
    from dnupdate.engine.training.step import reports_accuracy

    sampler, dataset = _test_sampler(run, options, seed, net)
    network = trainer.network
    if dataset.has_targets:  # float targets: only for losses comparing as many values
        _check_targets(network, dataset)
    classifier = reports_accuracy(run.net, net.phase)
    outputs = int(np.prod(network.shapes[network.output_index].output)) if classifier else 0
    counter = _Counter(outputs, network.native)
    try:
        result = trainer.evaluate(
            _every_image_once(sampler), counter if classifier else None, phase=net.phase
        )
    except DataError as exc:
        raise DataError(dataset.path or dataset.name, exc.problem) from None
    trainer.release_eval_networks()
    hits = int(np.trace(counter.confusion))
    images = result.images
    return Evaluation(
        config_path=run.config_path,
        weights=str(options.weights),
        iteration=iteration,
        semantics=trainer.semantics,
        dataset=dataset.name if dataset.synthetic else dataset.path or dataset.name,
        images=images,
        loss=result.loss,
        top1=hits / images if images and classifier else math.nan,
        top5=counter.top_k_hits / images if counter.confusion.shape[0] > TOP_K else None,
        confusion=counter.confusion,
        non_finite=counter.non_finite,
        label_names=tuple(dataset.label_names),
        notes=tuple(dict.fromkeys(sampler.notes)),
        classifier=classifier,
        test_net=net.index,
        test_net_name=net.name,
        split=dataset.split,
    )


_CHECKPOINT_NAME = re.compile(r"iter_(\d+)\.npz$")


def run_checkpoint(run_dir: str | Path, checkpoint: str | None) -> tuple[Path, int | None]:
    """The parameter file of a run folder to test, and the update count it was saved after.

    ``checkpoint``: None = ``final.npz`` (the run's end, its iteration from ``summary.json``),
    else the latest ``checkpoints/iter_<N>.npz``; a number N = ``checkpoints/iter_<N>.npz``;
    otherwise a file path (relative to the run folder, or as given).
    """
    folder = Path(run_dir)
    checkpoints = folder / CHECKPOINT_DIR
    if checkpoint is None:
        final = folder / "final.npz"
        if final.is_file():
            summary = folder / SUMMARY_FILE
            info = read_json(summary) if summary.is_file() else {}
            return final, info.get("iteration") if isinstance(info, dict) else None
        saved = parameter_checkpoints(folder)
        if not saved:
            raise RunFolderError(folder, "holds no final.npz and no checkpoints/iter_*.npz yet")
        iteration, path = saved[-1]
        return path, iteration
    if checkpoint.isdigit():
        path = checkpoints / f"iter_{int(checkpoint):06d}.npz"
        if not path.is_file():
            have = ", ".join(str(n) for n, _ in parameter_checkpoints(folder))
            raise RunFolderError(
                folder, f"no checkpoint after {int(checkpoint)} updates (have: {have or 'none'})"
            )
        return path, int(checkpoint)
    for path in (folder / checkpoint, Path(checkpoint)):
        if path.is_file():
            return path, _iteration_of(path)
    raise RunFolderError(folder, f"--checkpoint {checkpoint}: no such file")


def _iteration_of(path: Path) -> int | None:
    match = _CHECKPOINT_NAME.search(path.name)
    return int(match.group(1)) if match else None
