"""Switching a solver between darknet's and Caffe's update conventions (``--semantics``).

Either update rule may drive any net. Switching keeps the config's numbers (learning rate,
momentum, decay, batch) and changes only the named conventions:

* darknet: ``momentum_style = "lr_outside"`` (``U ← m·U + Σ(−g) − decay·B·W``,
  ``W ← W + (lr/B)·U``) and ``grad_reduction = "sum"``;
* Caffe: ``momentum_style = "lr_inside"`` (``h ← m·h + lr·(g + decay·w)``, ``w ← w − h``)
  and ``grad_reduction = "mean"``.

With a constant rate the two coincide (darknet's decay is applied per image-mean, like Caffe's
weight_decay); they differ as soon as the rate changes, because Caffe keeps the old rate inside
its history.
"""

from __future__ import annotations

import dataclasses

from dnupdate.engine.spec import ConfigError, Diagnostic, Framework, SolverSpec
from dnupdate.engine.update.rules import DARKNET_OPTIMIZERS

CONVENTIONS: dict[str, dict[str, str]] = {
    "darknet": {"momentum_style": "lr_outside", "grad_reduction": "sum"},
    "caffe": {"momentum_style": "lr_inside", "grad_reduction": "mean"},
}


def with_semantics(solver: SolverSpec, semantics: Framework) -> SolverSpec:
    """The solver under ``semantics``; darknet knows SGD, Adam and (our extension) AdamW."""
    if semantics not in CONVENTIONS:
        raise ConfigError(
            [Diagnostic("error", "--semantics", None, None, "must be darknet or caffe")]
        )
    if semantics == "darknet" and solver.optimizer not in DARKNET_OPTIMIZERS:
        raise ConfigError(
            [
                Diagnostic(
                    "error",
                    "--semantics",
                    None,
                    None,
                    f"darknet has no {solver.optimizer} solver; darknet semantics support "
                    + " and ".join(DARKNET_OPTIMIZERS),
                )
            ]
        )
    return dataclasses.replace(solver, semantics=semantics, **CONVENTIONS[semantics])
