"""``dnupdate eval``: test a trained model without training (Caffe's ``caffe test -weights``,
darknet's ``classifier valid``).

The engine side is :mod:`engine.training.evaluate` (the engine's one test pass, plus the
confusion matrix); this module resolves the command line, renders the result as Rich tables on
stdout (or one JSON object with ``--json``) and reports bad input on stderr.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import typer

from dnupdate.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_USAGE,
    data_dir_option,
    data_option,
    device_option,
    fail,
    fail_config,
    json_option,
    report_diagnostics,
    seed_option,
    semantics_option,
    set_option,
    threads_option,
    weights_option,
)
from dnupdate.cli.help_format import help_text

EVAL_HELP = help_text(
    "Test a trained model: loss, top-1 (and top-5 with more than 5 classes), per-class "
    "accuracy and the confusion matrix, without training.",
    """CONFIG|RUN_DIR is a config (darknet .cfg or Caffe solver) with --weights FILE, or a run
    folder written by dnupdate train (its final.npz, else its latest checkpoint; --checkpoint
    N or FILE picks another). Every test image is used once, in order, preprocessed as the
    run's tests are; an image whose scores are not all finite counts as a wrong answer. A
    Caffe solver with several test nets (test_state repeated) is tested on each, a section
    per net (--test-net N: only Caffe's test net #N).""",
    examples=(
        "dnupdate eval runs/quickstart-20260101-120000",
        "dnupdate eval runs/quickstart-20260101-120000 --checkpoint 200 --json",
        "dnupdate eval configs/quickstart.cfg --weights final.weights",
        "dnupdate eval runs/autoencoder-20260101-120000 --test-net 1",
        """dnupdate eval configs/lenet_solver.prototxt \\
          --weights lenet_iter_10000.caffemodel""",
    ),
)

#: the confusion matrix is shown as a table up to this many classes (always in --json)
MAX_MATRIX_CLASSES = 20


def eval_command(
    target: str = typer.Argument(
        ..., metavar="CONFIG|RUN_DIR", help="A config file, or a dnupdate train run folder."
    ),
    weights: str | None = weights_option("darknet .weights, .caffemodel or .npz to test."),
    checkpoint: str | None = typer.Option(
        None,
        "--checkpoint",
        metavar="N|FILE",
        help="With RUN_DIR: checkpoints/iter_N.npz or a file (default: final.npz).",
    ),
    data: str | None = data_option(
        "Test data instead of the config's: a dataset name or npz:FILE."
    ),
    data_dir: str | None = data_dir_option(),
    images: int | None = typer.Option(
        None, "--images", min=1, metavar="N", help="Test only the first N images (default: all)."
    ),
    sets: list[str] = set_option("Override a config key (CONFIG only; repeatable)."),
    semantics: str | None = semantics_option(
        "Layer and loss conventions (CONFIG only; default: the config's)."
    ),
    seed: int | None = seed_option("Seed of a Caffe TEST mirror (default: the config's, else 0)."),
    device: str = device_option(),
    threads: int | None = threads_option(),
    allow_nonfinite: bool = typer.Option(
        False,
        "--allow-nonfinite",
        help="Test weights holding NaN/inf anyway (their non-finite scores count as wrong).",
    ),
    test_net: int | None = typer.Option(
        None,
        "--test-net",
        min=0,
        metavar="N",
        help="Only Caffe's test net #N (default: every test net, as train tests them).",
    ),
    as_json: bool = json_option(
        "One JSON object on stdout (several test nets: one object each under test_nets)."
    ),
) -> None:
    """Test a model (see EVAL_HELP); exits 0, 1 bad input, 2 usage."""
    from dnupdate.engine.training.evaluate import EvalOptions

    if semantics is not None and semantics not in ("darknet", "caffe"):
        fail(f"--semantics: {semantics!r} is not darknet or caffe", EXIT_USAGE)
    common = dict(
        data=data,
        data_dir=data_dir,
        images=images,
        device=device,
        threads=threads,
        allow_nonfinite=allow_nonfinite,
        test_net=test_net,
    )
    if Path(target).is_dir():
        given = [n for n, v in (("--weights", weights), ("--set", sets)) if v]
        given += ["--semantics"] if semantics is not None else []
        if given:
            fail(
                f"{target} is a run folder: its config and weights come from it; drop "
                f"{', '.join(given)} (pick a checkpoint with --checkpoint)",
                EXIT_USAGE,
            )
        run, options = _from_run_folder(target, checkpoint, seed, common)
    else:
        if checkpoint is not None:
            fail("--checkpoint needs a RUN_DIR; with a CONFIG give --weights FILE", EXIT_USAGE)
        if weights is None:
            fail(f"give --weights FILE to test with {target} (or a RUN_DIR)", EXIT_USAGE)
        run = _load_config(target, sets, semantics, data)
        options = EvalOptions(weights=weights, seed=seed, semantics=semantics, **common)
    evaluations = _evaluate(run, options)
    for evaluation in evaluations:
        for line in messages(evaluation):
            print(line, file=sys.stderr)
    if as_json:
        print(json.dumps(to_json(evaluations)))
    else:
        render_all(evaluations)


def _load_config(config: str, sets: list[str], semantics: str | None, data: str | None = None):
    """The RunSpec of ``config`` with ``--set`` applied (``data``: ``--data``, which decides a
    Caffe data layer's input shape in place of its source); warnings to stderr, errors exit 1."""
    from dnupdate.engine.config import load_config, parse_overrides
    from dnupdate.engine.spec import ConfigError

    try:
        run = load_config(config, parse_overrides(sets), data=data)
    except ConfigError as error:
        fail_config(error)
    report_diagnostics(d for d in run.diagnostics if d.severity == "warning")
    return run


def _from_run_folder(run_dir: str, checkpoint: str | None, seed: int | None, common: dict):
    """(RunSpec, EvalOptions) of a run folder: its config, overrides, data, semantics and seed
    as trained, the command line's data choices on top."""
    from dnupdate.cli.train_cmd import run_from_folder
    from dnupdate.engine.spec import ConfigError
    from dnupdate.engine.training.evaluate import EvalOptions, run_checkpoint
    from dnupdate.engine.training.runfolder import RunFolder, RunFolderError

    try:
        run, _, saved = run_from_folder(RunFolder.read(run_dir))
        path, iteration = run_checkpoint(run_dir, checkpoint)
    except ConfigError as error:
        fail_config(error)
    except RunFolderError as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    except (KeyError, OSError, ValueError) as exc:
        fail(f"{run_dir}: cannot read the run folder ({exc})", EXIT_BAD_INPUT)
    chosen = {k: v for k, v in common.items() if v is not None}
    return run, EvalOptions(
        weights=str(path),
        iteration=iteration,
        data=chosen.get("data", saved.get("data")),
        data_dir=chosen.get("data_dir", saved.get("data_dir")),
        images=common["images"] or saved.get("test_size"),
        semantics=saved.get("semantics"),
        seed=saved.get("seed") if seed is None else seed,
        device=common["device"],
        threads=common["threads"],
        allow_nonfinite=common["allow_nonfinite"],
        test_net=common["test_net"],
    )


def _evaluate(run, options) -> list:
    """Run the test pass of each test net (or of ``--test-net``'s); a test net the config
    does not have is a usage error (exit 2), bad input exits 1 with the file and the problem."""
    from dnupdate.engine.data import DataError
    from dnupdate.engine.formats.weights import WeightsFileError
    from dnupdate.engine.model.network import NetworkError
    from dnupdate.engine.training.evaluate import evaluate_test_nets, test_nets_of
    from dnupdate.engine.training.session import TrainSetupError

    try:
        count = len(test_nets_of(run))
        if options.test_net is not None and options.test_net >= count:
            fail(
                f"--test-net {options.test_net}: {run.config_path} has {count} test "
                f"net{'s' if count > 1 else ''} (#0{f'..#{count - 1}' if count > 1 else ''})",
                EXIT_USAGE,
            )
        return evaluate_test_nets(run, options)
    except (DataError, WeightsFileError, NetworkError, TrainSetupError) as exc:
        fail(str(exc), EXIT_BAD_INPUT)


def to_json(evaluations: list) -> dict:
    """One test net: its object; several: the common fields and one object per net under
    ``test_nets`` (each with its ``test_net`` index and ``test_net_name``)."""
    if len(evaluations) == 1:
        return evaluations[0].to_json()
    first = evaluations[0].to_json()
    common = {k: first[k] for k in ("config_path", "weights", "iteration", "semantics")}
    return {**common, "test_nets": [e.to_json() for e in evaluations]}


# ---- rendering ---------------------------------------------------------------------------------


def _fraction(value: float | None) -> str:
    """Accuracies as a run's test line shows them (4 significant digits)."""
    return "-" if value is None or math.isnan(value) else f"{value:.4g}"


def images_read(evaluation) -> str:
    """``N test images``, or what else was read: ``N images of the training split`` (a Caffe
    test net reading the training LMDB, test-on-train)."""
    if evaluation.split == "test":
        return f"{evaluation.images} test images"
    name = "training" if evaluation.split == "train" else evaluation.split
    return f"{evaluation.images} images of the {name} split"


def headline(evaluation) -> list[str]:
    """The lines above the tables: what was tested, on what, and the overall figures."""
    e = evaluation
    after = "" if e.iteration is None else f" (after {e.iteration} updates)"
    hits = int(e.confusion.trace())
    head = f"eval {e.config_path} with {e.weights}{after}, {e.semantics} semantics"
    if not e.classifier:  # no Accuracy layer (Caffe) or [softmax] (darknet): the loss alone
        return [
            head,
            f"data {e.dataset}: {images_read(e)}",
            f"loss {e.loss:.5g} (not a classifier: the net reports no accuracy)",
        ]
    return [
        head,
        f"data {e.dataset}: {images_read(e)}, {e.classes} classes",
        f"loss {e.loss:.5g}; top-1 accuracy {_fraction(e.top1)} ({hits}/{e.images})"
        + ("" if e.top5 is None else f"; top-5 accuracy {_fraction(e.top5)}"),
    ]


def messages(evaluation) -> list[str]:
    """What goes to stderr: the data notes and a warning about non-finite scores."""
    lines = [f"note: {note}" for note in evaluation.notes]
    bad = int(evaluation.non_finite.sum())
    if bad:
        lines.append(
            f"warning: {bad} of {evaluation.images} images gave non-finite scores (NaN or "
            "inf); they count as wrong answers"
        )
    return lines


def class_table(evaluation):
    """Per class: images, correct, accuracy (non-finite when any) and, up to
    :data:`MAX_MATRIX_CLASSES` classes, the confusion row (columns: predicted class)."""
    from rich.table import Table

    e = evaluation
    matrix = e.classes <= MAX_MATRIX_CLASSES
    caption = "rows: true class" + ("; columns 0…: predicted class" if matrix else "")
    table = Table(title="per class", caption=caption, show_edge=False)
    table.add_column("class")
    for name in ("images", "correct", "accuracy"):
        table.add_column(name, justify="right")
    show_bad = bool(e.non_finite.sum())
    if show_bad:
        table.add_column("non-finite", justify="right")
    if matrix:
        for k in range(e.classes):
            table.add_column(str(k), justify="right")
    totals, accuracy = e.class_images(), e.class_accuracy()
    for k in range(e.classes):
        cells = [e.class_name(k), str(totals[k]), str(e.confusion[k, k]), _fraction(accuracy[k])]
        cells += [str(e.non_finite[k])] if show_bad else []
        cells += [str(v) for v in e.confusion[k]] if matrix else []
        table.add_row(*cells)
    return table


def net_title(evaluation) -> str:
    """A test net's section title, as a run's test lines name it: ``test net #1
    (test-on-test)``."""
    name = f" ({evaluation.test_net_name})" if evaluation.test_net_name else ""
    return f"test net #{evaluation.test_net}{name}"


def render_all(evaluations: list) -> None:
    """One test net: :func:`render`; several: the shared first line, then a section per net
    (its title, data and figures, and its per-class table)."""
    if len(evaluations) == 1:
        render(evaluations[0])
        return
    from dnupdate.cli.common import stdout_console

    console = stdout_console()
    console.print(headline(evaluations[0])[0], highlight=False, markup=False, soft_wrap=True)
    for evaluation in evaluations:
        console.print()
        console.rule(net_title(evaluation), style="none")
        render(evaluation, with_head=False)


def render(evaluation, with_head: bool = True) -> None:
    """The headline (without its first line when ``with_head`` is False) and the per-class
    table on stdout."""
    from dnupdate.cli.common import stdout_console

    console = stdout_console()
    lines = headline(evaluation)
    for line in lines if with_head else lines[1:]:
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    if not evaluation.classifier:
        return
    console.print(class_table(evaluation))
    if evaluation.classes > MAX_MATRIX_CLASSES:
        console.print(f"({evaluation.classes} classes: the confusion matrix is in --json)")
