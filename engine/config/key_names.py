"""The same setting under darknet's and Caffe's key names, for "did you mean" hints when a
``--set`` key belongs to the other framework (``--set base_lr=0.01`` on a darknet cfg:
"darknet calls it learning_rate"). Keys that both frameworks spell alike (``momentum``,
``gamma``, ``power``) need no entry."""

from __future__ import annotations

# Caffe key → what darknet calls it.
DARKNET_NAME = {
    "base_lr": "learning_rate",
    "lr_policy": "policy",
    "weight_decay": "decay",
    "max_iter": "max_batches",
    "stepsize": "step",
    "stepvalue": "steps (with one scales entry per step)",
    "batch_size": "batch",
    "random_seed": "seed",
    "iter_size": "subdivisions (darknet's batch is split into subdivisions; Caffe's "
    "batch_size is multiplied by iter_size)",
    "momentum2": "B2 (with adam=1)",
    "delta": "eps (with adam=1)",
}

# darknet key → what Caffe calls it.
CAFFE_NAME = {
    "learning_rate": "base_lr",
    "policy": "lr_policy",
    "decay": "weight_decay",
    "max_batches": "max_iter",
    "step": "stepsize",
    "steps": "stepvalue",
    "batch": "batch_size (the TRAIN data layer's; --set batch_size=N sets it)",
    "seed": "random_seed",
    "subdivisions": "iter_size (darknet's batch is split into subdivisions; Caffe's "
    "batch_size is multiplied by iter_size)",
    "B2": "momentum2",
    "eps": "delta",
    "scales": "nothing: Caffe's multistep multiplies by one gamma at every stepvalue",
    "burn_in": "nothing: Caffe has no burn-in",
}


def other_framework_hint(key: str, framework: str) -> str:
    """``"; darknet calls it learning_rate"`` when ``key`` is the other framework's name for
    a setting of ``framework`` (``"darknet"`` or ``"caffe"``), else ``""``."""
    names = DARKNET_NAME if framework == "darknet" else CAFFE_NAME
    other = names.get(key)
    if other is None:
        return ""
    mine, theirs = ("darknet", "Caffe") if framework == "darknet" else ("Caffe", "darknet")
    if other.startswith("nothing: "):
        return f"; {key!r} is a {theirs} key: {other.removeprefix('nothing: ')}"
    return f"; {key!r} is a {theirs} key, {mine} calls it {other}"


# An optimizer by name → the darknet [net] keys that choose it (darknet has no `type`).
DARKNET_OPTIMIZER_KEYS = {
    "sgd": (("adam", "0"),),
    "adam": (("adam", "1"),),
    "adamw": (("adamw", "1"),),
}


def optimizer_overrides(framework: str, name: str) -> tuple[tuple[str, str], ...] | None:
    """The ``--set`` overrides that pick optimizer ``name`` in ``framework``'s config: Caffe's
    ``type``, darknet's ``adam=``/``adamw=`` flags; None for a name darknet does not know."""
    if framework == "darknet":
        return DARKNET_OPTIMIZER_KEYS.get(name)
    return (("type", name),)
