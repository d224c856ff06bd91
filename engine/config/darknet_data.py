"""The ``data=`` key of ``[net]`` (a dnupdate extension) → :class:`engine.spec.DataSpec`.

``data=`` names a dataset (``mnist``, ``cifar10``, ``synthetic-digits``, ...), a ``.npz`` path,
or a darknet ``.data`` file, which is read with the same line grammar as a ``.cfg``
(``option_list.c:read_data_cfg``): ``train=`` (darknet default ``data/train.list``), ``valid=``
and ``classes=`` (darknet default 2). Images are scaled by float32(1/255) as darknet loads them
in [0, 1]; darknet samples training images at random (``shuffle``), the test split is read in
order. Relative paths that do not exist from the working directory are looked up next to the
file that names them.
"""

from __future__ import annotations

import os
from pathlib import Path

from dnupdate.engine.config.cfg_reader import read_data_options
from dnupdate.engine.config.darknet_diagnostics import DiagnosticSink
from dnupdate.engine.config.darknet_options import OptionTable
from dnupdate.engine.config.darknet_values import c_atoi, float32
from dnupdate.engine.config.files import UnreadableFile, read_config_file
from dnupdate.engine.spec import DEFAULT, DataSourceSpec, DataSpec, Origin

# Built-in dataset names and their number of classes.
DATASET_CLASSES = {
    "mnist": 10,
    "fashion-mnist": 10,
    "cifar10": 10,
    "cifar100": 100,
    "cifar100-coarse": 20,
    "synthetic-digits": 10,
    "synthetic-shapes": 10,
}
# Keys darknet's classifier/detector drivers read from a .data file.
DATA_FILE_KEYS = frozenset(
    {"train", "valid", "test", "classes", "names", "labels", "backup", "top", "tag", "tree",
     "results", "eval", "map", "hierarchy"}
)  # fmt: skip
PIXEL_SCALE = float32(1.0 / 255.0)


def resolve_path(value: str, base_dir: Path | None) -> str:
    """``value`` as given when absolute or present from the working directory; otherwise the
    same path next to ``base_dir`` when it exists there."""
    if os.path.isabs(value) or base_dir is None or os.path.exists(value):
        return value
    candidate = base_dir / value
    return str(candidate) if os.path.exists(candidate) else value


def is_path_like(value: str) -> bool:
    return value.startswith("npz:") or "/" in value or value.endswith((".npz", ".data"))


def read_data_file(path: str, where: Origin, sink: DiagnosticSink) -> tuple[str, str | None, int]:
    """(train source, valid source or None, classes) from a darknet ``.data`` file."""
    try:
        text = read_config_file(path)
    except UnreadableFile as exc:
        sink.error(where.file, where.line, "data", f"cannot read .data file {path}: {exc}")
        return path, None, 0
    options = {}
    for option in read_data_options(path, text, sink):
        if option.value is None:
            continue
        options.setdefault(option.key, option)
        if option.key not in DATA_FILE_KEYS:
            sink.warning(path, option.line, option.key, f"unknown .data key '{option.key}'")
    base = Path(path).parent
    train_option = options.get("train")
    if train_option is None:
        sink.warning(path, None, "train", "no train= key: darknet uses data/train.list")
    train = resolve_path(train_option.value if train_option else "data/train.list", base)
    valid_option = options.get("valid")
    valid = resolve_path(valid_option.value, base) if valid_option else None
    classes = 2
    if "classes" in options:
        number, rest = c_atoi(options["classes"].value or "")
        line = options["classes"].line
        if number is None or number <= 0:
            sink.error(path, line, "classes", "classes must be a positive integer")
        else:
            classes = number
            if rest:
                sink.warning(path, line, "classes", f"trailing '{rest}' is ignored (atoi)")
    return train, valid, classes


def read_data(table: OptionTable, minibatch: int, base_dir: Path | None) -> DataSpec:
    """Build the DataSpec from ``[net] data=`` (None sources when the key is absent)."""
    value = table.get_str("data", None)
    origin = table.origin("data") if value is not None else DEFAULT
    train: str | None = value
    test: str | None = value
    classes = 0
    if value is not None and is_path_like(value):
        train = test = resolve_path(value, base_dir)
        if value.endswith(".data"):
            train, test, classes = read_data_file(train, origin, table.sink)
    elif value is not None:
        classes = DATASET_CLASSES.get(value, 0)
    common = dict(batch_size=minibatch, scale=PIXEL_SCALE, origin=origin)
    return DataSpec(
        train=DataSourceSpec(source=train, shuffle=True, **common),
        test=DataSourceSpec(source=test, shuffle=False, **common),
        classes=classes,
    )
