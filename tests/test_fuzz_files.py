"""Fuzz suite for damaged files (issue 18): data files (IDX raw and gzipped, CIFAR binary and
pickle, npz with uint8 and float32 images, HDF5Data ``.h5`` files, LMDB-free), parameter files
for ``--weights`` (darknet ``.weights``, ``.npz``, ``.caffemodel``) and whole run folders for
``--resume``, each damaged by byte-level operators (truncation, bit flips, inserted and
overwritten garbage, zeroed runs) and, for run folders, by file-level ones (deleted, replaced
by a folder, garbage JSON/CSV lines, wrong JSON types, a state with wrong member types).

The properties: a reader returns a consistent dataset or raises its typed error
(:class:`engine.data.DataError`, :class:`engine.formats.weights.WeightsFileError`); ``dnupdate
train`` ends with exit 0 or 1, never a traceback; a refused ``--resume`` leaves every file of
the folder as it was (nothing written is lost). Hypothesis runs derandomized with no example
database, so every run tries the same few hundred cases.
"""

from __future__ import annotations

import gzip
import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dnupdate.cli.main import app
from dnupdate.engine.config import load_config
from dnupdate.engine.data import DataError, open_dataset
from dnupdate.engine.data.cifar import read_cifar_binary, read_cifar_pickle
from dnupdate.engine.data.idx import read_idx_pair, write_idx
from dnupdate.engine.data.npz import read_npz
from dnupdate.engine.formats.caffemodel import write_caffemodel
from dnupdate.engine.formats.weights import (
    WeightsFileError,
    save_npz_weights,
    write_darknet_weights,
)
from dnupdate.engine.training.runfolder import load_state, save_state
from dnupdate.engine.training.step import Trainer
from tests.data_fixtures import random_images, write_mnist_split
from tests.test_train_loop import caffe_config, darknet_config, write_quadrants

runner = CliRunner()


def fuzz(examples: int):
    """Deterministic Hypothesis settings: ``examples`` cases, no database, no deadline."""
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


# ---- byte-level damage ----------------------------------------------------------------------

#: one damage operation: (name, position as a fraction of the file or an absolute offset in
#: the first 64 bytes (headers), payload)
_position = st.one_of(st.floats(0.0, 1.0), st.integers(0, 63))
_operation = st.one_of(
    st.tuples(st.just("truncate"), _position, st.just(b"")),
    st.tuples(st.just("flip"), _position, st.integers(0, 7).map(lambda b: bytes([1 << b]))),
    st.tuples(st.just("insert"), _position, st.binary(min_size=1, max_size=24)),
    st.tuples(st.just("overwrite"), _position, st.binary(min_size=1, max_size=24)),
    st.tuples(st.just("overwrite"), _position, st.sampled_from([b"\xff" * 4, b"\x7f\xff\xff\xff"])),
    st.tuples(st.just("zero"), _position, st.integers(1, 4096).map(lambda n: bytes(n))),
)
damages = st.lists(_operation, min_size=1, max_size=3)


def damage(data: bytes, operations) -> bytes:
    """Apply the operations in order; positions past the end land on the last byte."""
    out = bytearray(data)
    for name, where, payload in operations:
        at = int(where * len(out)) if isinstance(where, float) else where
        at = min(at, max(len(out) - 1, 0))
        if name == "truncate":
            del out[at:]
        elif name == "flip" and out:
            out[at] ^= payload[0]
        elif name == "insert":
            out[at:at] = payload
        elif name in ("overwrite", "zero"):
            out[at : at + len(payload)] = payload
    return bytes(out)


def damaged_copy(source: Path, target: Path, operations) -> Path:
    target.write_bytes(damage(source.read_bytes(), operations))
    return target


# ---- data files -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_files(tmp_path_factory) -> dict[str, Path]:
    """One good file of every format, small."""
    root = tmp_path_factory.mktemp("data")
    write_mnist_split(root, "train", 6, gz=False)
    write_mnist_split(root, "t10k", 6, gz=True)
    images = random_images(5, (3, 32, 32))
    labels = np.arange(5) % 10
    records = np.hstack([labels.reshape(-1, 1).astype(np.uint8), images.reshape(5, -1)])
    (root / "cifar.bin").write_bytes(records.tobytes())
    with open(root / "cifar.pickle", "wb") as handle:
        pickle.dump({b"data": images.reshape(5, -1), b"labels": list(labels)}, handle)
    np.savez(root / "u8.npz", x=random_images(6, (1, 6, 6)), y=np.arange(6) % 4)
    x = np.random.default_rng(0).normal(size=(6, 1, 6, 6)).astype(np.float32)
    np.savez(root / "f32.npz", x=x, y=np.arange(6) % 4, classes=np.array(4))
    np.savez_compressed(root / "zip.npz", x=random_images(6, (1, 6, 6)), y=np.arange(6) % 4)
    return {
        "idx": root / "train-images-idx3-ubyte",
        "idx-labels": root / "train-labels-idx1-ubyte",
        "idx.gz": root / "t10k-images-idx3-ubyte.gz",
        "idx.gz-labels": root / "t10k-labels-idx1-ubyte.gz",
        "cifar.bin": root / "cifar.bin",
        "cifar.pickle": root / "cifar.pickle",
        "u8.npz": root / "u8.npz",
        "f32.npz": root / "f32.npz",
        "zip.npz": root / "zip.npz",
    }


def _read(kind: str, path: Path, other: Path | None):
    """Read ``path`` as a ``kind`` file; returns (images, labels, classes)."""
    if kind in ("idx", "idx.gz"):
        images, labels = read_idx_pair(path, other, classes=10)
        return images, labels, 10
    if kind in ("idx-labels", "idx.gz-labels"):
        images, labels = read_idx_pair(other, path, classes=10)
        return images, labels, 10
    if kind == "cifar.bin":
        images, labels = read_cifar_binary([path], label_bytes=1, label_index=0, classes=10)
        return images, labels, 10
    if kind == "cifar.pickle":
        images, labels = read_cifar_pickle([path], label_key="labels", classes=10)
        return images, labels, 10
    return read_npz(path)


def _partner(kind: str, files: dict[str, Path]) -> Path | None:
    """The good other half of an IDX pair."""
    if kind.endswith("-labels"):
        return files[kind.removesuffix("-labels")]
    if kind.startswith("idx"):
        return files[f"{kind}-labels"]
    return None


@fuzz(150)
@given(kind=st.sampled_from(sorted(["idx", "idx-labels", "idx.gz", "idx.gz-labels",
                                    "cifar.bin", "cifar.pickle", "u8.npz", "f32.npz",
                                    "zip.npz"])), operations=damages)  # fmt: skip
def test_damaged_data_files_read_consistently_or_raise_data_error(
    data_files, tmp_path, kind, operations
):
    source = data_files[kind]
    target = damaged_copy(source, tmp_path / source.name, operations)
    try:
        images, labels, classes = _read(kind, target, _partner(kind, data_files))
    except DataError as exc:
        assert exc.path and str(exc)
        return
    images, labels = np.asarray(images), np.asarray(labels)
    assert images.ndim == 4 and images.shape[0] == labels.shape[0]
    assert labels.size == 0 or 0 <= int(labels.min()) <= int(labels.max()) < classes
    if np.issubdtype(images.dtype, np.floating):
        assert np.isfinite(images).all()


@fuzz(15)
@given(operations=damages)
def test_train_on_a_damaged_npz_exits_0_or_1(data_files, tmp_path, operations):
    target = damaged_copy(data_files["f32.npz"], tmp_path / "d.npz", operations)
    config = darknet_config(tmp_path, batch=2, subdivisions=1, max_batches=1)
    out = tmp_path / "run"
    shutil.rmtree(out, ignore_errors=True)
    args = [str(config), "--data", f"npz:{target}", "--out", str(out), "--eval-every", "0"]
    result = runner.invoke(app, ["train", *args, "-q"], env={"NO_COLOR": "1"})
    assert result.exit_code in (0, 1), (result.output, result.exception)
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception


@pytest.fixture(scope="module")
def h5_files(tmp_path_factory) -> dict[str, Path]:
    """Three small HDF5Data files: contiguous float64 data, chunked gzip float32 data, and
    float regression targets (N×3 labels)."""
    import h5py

    root = tmp_path_factory.mktemp("h5")
    rng = np.random.default_rng(0)
    with h5py.File(root / "plain.h5", "w") as handle:
        handle["data"] = rng.normal(size=(6, 1, 4, 4))
        handle["label"] = (np.arange(6) % 3).astype(np.float32).reshape(6, 1)
    with h5py.File(root / "chunked.h5", "w") as handle:
        data = rng.normal(size=(6, 2, 3, 3)).astype(np.float32)
        handle.create_dataset("data", data=data, chunks=(2, 2, 3, 3), compression="gzip")
        handle.create_dataset("label", data=np.arange(6) % 2, chunks=(3,))
    with h5py.File(root / "targets.h5", "w") as handle:
        handle["data"] = rng.normal(size=(6, 1, 2, 2)).astype(np.float32)
        handle["label"] = rng.normal(size=(6, 3)).astype(np.float32)
    return {name: root / name for name in ("plain.h5", "chunked.h5", "targets.h5")}


@fuzz(60)
@given(kind=st.sampled_from(["plain.h5", "chunked.h5", "targets.h5"]), operations=damages)
def test_damaged_h5_files_read_consistently_or_raise_data_error(
    h5_files, tmp_path, kind, operations
):
    """HDF5Data files damaged byte by byte: a consistent float set or a DataError naming the
    file (never another exception)."""
    from dnupdate.engine.data.hdf5 import read_h5

    target = damaged_copy(h5_files[kind], tmp_path / kind, operations)
    try:
        images, labels, classes, rows, _ = read_h5(f"h5:{target}")
    except DataError as exc:
        assert str(target) in str(exc)
        return
    assert images.dtype == np.float32 and images.ndim == 4
    assert images.shape[0] == labels.shape[0] == sum(rows)
    assert np.isfinite(images).all()
    if classes == 0:  # float targets: passed to the loss as they are, finite
        assert labels.dtype == np.float32 and labels.ndim >= 2 and np.isfinite(labels).all()
        return
    assert 0 <= int(labels.min()) <= int(labels.max()) < classes


def test_open_dataset_of_a_damaged_idx_folder_is_a_data_error(data_files, tmp_path):
    """The named-dataset path (catalog checks, label names) on a folder with damaged files."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    for kind in ("idx", "idx-labels"):
        shutil.copy(data_files[kind], folder / data_files[kind].name)
    images = folder / "train-images-idx3-ubyte"
    head = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (2**31 - 1, 28, 28))
    images.write_bytes(head + images.read_bytes()[16:])
    with pytest.raises(DataError, match="truncated"):
        open_dataset(str(folder), "train")
    write_idx(images.with_name("x.gz"), np.zeros((2, 3, 3), np.uint8))
    gz = images.with_name("x.gz")
    gz.write_bytes(gzip.compress(gzip.decompress(gz.read_bytes())[:-3]))
    with pytest.raises(DataError):
        read_idx_pair(gz, folder / "train-labels-idx1-ubyte", classes=10)


# ---- parameter files (--weights) -------------------------------------------------------------


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    """A tiny darknet net and a tiny Caffe net, a trainer for each and their saved parameters
    in every format."""
    root = tmp_path_factory.mktemp("weights")
    data = write_quadrants(root / "q.npz", count=8)
    darknet = load_config(str(darknet_config(root)))
    caffe = load_config(str(caffe_config(root, data)))
    files, trainers = {}, {}
    for name, run in (("darknet", darknet), ("caffe", caffe)):
        trainer = Trainer(run)
        arrays = dict(trainer.network.named_blobs())
        trainers[name] = trainer
        files[f"{name}.npz"] = root / f"{name}.npz"
        save_npz_weights(files[f"{name}.npz"], run.net, arrays)
    files["darknet.weights"] = root / "darknet.weights"
    write_darknet_weights(
        files["darknet.weights"], darknet.net, trainers["darknet"].network.named_blobs, 5
    )
    files["caffe.caffemodel"] = root / "caffe.caffemodel"
    write_caffemodel(files["caffe.caffemodel"], caffe.net, trainers["caffe"].network.named_blobs)
    return files, trainers


@fuzz(120)
@given(
    name=st.sampled_from(["darknet.npz", "darknet.weights", "caffe.npz", "caffe.caffemodel"]),
    operations=damages,
)
def test_damaged_weights_load_finite_or_raise_weights_file_error(
    weight_files, tmp_path, name, operations
):
    files, trainers = weight_files
    target = damaged_copy(files[name], tmp_path / name, operations)
    trainer = trainers[name.split(".")[0]]
    try:
        trainer.load_weights(str(target), clear=True)
    except WeightsFileError as exc:
        assert str(target) in str(exc)
        return
    assert np.isfinite(trainer.backend.to_host(trainer.network.params)).all()


# ---- run folders (--resume) ------------------------------------------------------------------


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory) -> Path:
    """A darknet run stopped after 4 of 8 updates with checkpoints at 2 and 4."""
    root = tmp_path_factory.mktemp("run")
    data = write_quadrants(root / "q.npz", count=32)
    config = darknet_config(root, max_batches=6)
    out = root / "run"
    args = [str(config), "--data", f"npz:{data}", "--out", str(out), "-q"]
    result = runner.invoke(app, ["train", *args, "--max-iters", "4", "--checkpoint-every", "2"])
    assert result.exit_code == 0, result.output
    return out


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file's bytes but the lock file's (its content is the holder, rewritten by each
    run) and those a refused resume may remove (temporaries)."""
    return {
        name: (folder / name).read_bytes()
        for name in _files(folder)
        if name != "run.lock" and not name.endswith(".tmp")
    }


def _wrong_json_value(draw_value) -> Callable[[Path], None]:
    def change(path: Path) -> None:
        try:
            value = json.loads(path.read_text())
        except ValueError:
            return
        if isinstance(value, dict) and value:
            key = sorted(value)[draw_value[0] % len(value)]
            value[key] = draw_value[1]
        else:
            value = draw_value[1]
        path.write_text(json.dumps(value))

    return change


_json_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


def _state_member(choice) -> Callable[[Path], None]:
    """Set one member of a state file to another JSON value (valid archive, wrong content)."""

    def change(path: Path) -> None:
        try:
            state = load_state(path)
        except Exception:  # already damaged by an earlier operator: leave it
            return
        keys = sorted(k for k, v in state.items() if not isinstance(v, np.ndarray))
        if keys:
            state[keys[choice[0] % len(keys)]] = choice[1]
            save_state(path, state)

    return change


def _folder_damage():
    """(file choice, file-level operator) strategies for a run folder."""
    byte_level = damages.map(lambda ops: ("bytes", ops))
    file_level = st.one_of(
        st.just(("delete", None)),
        st.just(("folder", None)),
        st.just(("temporary", None)),
        st.sampled_from([b"[1, 2]\n", b"\x00\xff\xfe\n", b"{}\n", b"train,,,\n", b"\n\n"]).map(
            lambda line: ("append", line)
        ),
        st.tuples(st.integers(0, 50), _json_values).map(lambda c: ("json", c)),
        st.tuples(st.integers(0, 50), _json_values).map(lambda c: ("state", c)),
    )
    return st.tuples(st.integers(0, 10_000), st.one_of(byte_level, file_level))


def _apply(folder: Path, pick: int, operator) -> str:
    files = [n for n in _files(folder) if n != "run.lock"]
    name = files[pick % len(files)]
    path = folder / name
    kind, payload = operator
    if kind == "bytes":
        path.write_bytes(damage(path.read_bytes(), payload))
    elif kind == "delete":
        path.unlink()
    elif kind == "folder":
        path.unlink()
        path.mkdir()
    elif kind == "temporary":
        (path.parent / f".{path.name}.x1y2.tmp").write_bytes(b"half")
    elif kind == "append":
        with open(path, "ab") as handle:
            handle.write(payload)
    elif kind == "json":
        _wrong_json_value(payload)(folder / ("run.json" if pick % 2 else "summary.json"))
    elif kind == "state":
        states = ["state.npz", *(n for n in files if n.endswith(".state.npz"))]
        _state_member(payload)(folder / states[pick % len(states)])
    return name


@fuzz(40)
@given(damage_list=st.lists(_folder_damage(), min_size=1, max_size=2))
def test_resume_of_a_damaged_run_folder_exits_0_or_1_and_loses_nothing(
    stopped_run, tmp_path, damage_list
):
    folder = tmp_path / "run"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(stopped_run, folder)
    for pick, operator in damage_list:
        _apply(folder, pick, operator)
    before = _snapshot(folder)
    result = runner.invoke(app, ["train", "--resume", str(folder), "-q"], env={"NO_COLOR": "1"})
    assert result.exit_code in (0, 1), (result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    event(f"exit {result.exit_code}")  # --hypothesis-show-statistics shows the mix
    if result.exit_code == 1:
        assert result.stderr.strip() and "Traceback" not in result.stderr
        assert _snapshot(folder) == before  # a refused resume writes nothing
    else:
        assert (folder / "final.npz").is_file() and (folder / "summary.json").is_file()
