"""``dnupdate data list | fetch | verify | info`` through Typer's runner."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys

import numpy as np
from typer.testing import CliRunner

from dnupdate.cli.main import app
from dnupdate.engine.data import catalog as catalog_module
from dnupdate.engine.data.catalog import CatalogEntry, Download
from tests.data_fixtures import http_server, serve_bytes, write_mnist_split

runner = CliRunner()


def test_list_json_marks_synthetic_sets(tmp_path):
    result = runner.invoke(app, ["data", "list", "--json", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    records = {r["name"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert (
        records["synthetic-digits"]["synthetic"]
        and "SYNTHETIC" in records["synthetic-digits"]["title"]
    )
    assert not records["mnist"]["synthetic"]
    assert records["cifar10"]["train"] == 50000 and records["cifar100"]["classes"] == 100


def test_list_shows_a_present_dataset(tmp_path):
    write_mnist_split(tmp_path / "mnist", "train", 3)
    write_mnist_split(tmp_path / "mnist", "t10k", 3)
    result = runner.invoke(app, ["data", "list", "--json", "--data-dir", str(tmp_path)])
    mnist = next(r for r in map(json.loads, result.stdout.splitlines()) if r["name"] == "mnist")
    assert mnist["status"] == f"present: {tmp_path / 'mnist'}"


def test_info_reports_counts_and_histogram(tmp_path):
    write_mnist_split(tmp_path, "train", 30)
    write_mnist_split(tmp_path, "t10k", 7)
    result = runner.invoke(app, ["data", "info", "mnist", "--data-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    train, test = map(json.loads, result.stdout.splitlines())
    assert (train["count"], test["count"]) == (30, 7)
    assert train["label_histogram"] == [3] * 10
    assert test["label_histogram"] == [1] * 7 + [0] * 3
    assert train["shape"] == [1, 28, 28] and train["dtype"] == "uint8"


def test_info_text_for_synthetic_says_synthetic():
    result = runner.invoke(
        app, ["data", "info", "synthetic-digits", "--size", "50", "--split", "test"]
    )
    assert result.exit_code == 0, result.output
    assert "SYNTHETIC" in result.stdout and "50 × 1×28×28" in result.stdout


def test_info_npz_is_one_split(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 1, 2, 2), np.uint8), y=np.array([0, 1, 1, 0]))
    result = runner.invoke(app, ["data", "info", str(tmp_path / "d.npz"), "--json"])
    assert result.exit_code == 0, result.output
    (record,) = map(json.loads, result.stdout.splitlines())
    assert record["count"] == 4 and record["storage"] == "memory-mapped"


def test_info_missing_dataset_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DNUPDATE_DATA_DIR", str(tmp_path))
    result = runner.invoke(app, ["data", "info", "fashion-mnist", "--split", "train"])
    assert result.exit_code == 1
    assert "dnupdate: error: fashion-mnist:" in result.stderr
    assert "dnupdate data fetch fashion-mnist" in result.stderr
    assert "Traceback" not in result.output


def test_info_corrupt_file_names_file_and_problem(tmp_path):
    write_mnist_split(tmp_path, "train", 5)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01"))
    result = runner.invoke(
        app, ["data", "info", "mnist", "--data-dir", str(tmp_path), "--split", "train"]
    )
    assert result.exit_code == 1
    assert "train-labels-idx1-ubyte.gz: truncated IDX header" in result.stderr


def test_verify_reports_mismatch_with_exit_1(tmp_path):
    write_mnist_split(tmp_path, "train", 5)
    write_mnist_split(tmp_path, "t10k", 5)
    result = runner.invoke(app, ["data", "verify", "mnist", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["mismatch"] * 4
    assert "run: dnupdate data fetch mnist" in result.stderr


def test_fetch_with_local_mirror_then_verify(tmp_path, monkeypatch):
    source = tmp_path / "src"
    write_mnist_split(source, "train", 8)
    write_mnist_split(source, "t10k", 2)
    files = {p.name: p.read_bytes() for p in source.iterdir()}
    sums = {name: hashlib.md5(data).hexdigest() for name, data in files.items()}
    mnist = catalog_module.CATALOG["mnist"]
    patched = CatalogEntry(
        **{
            **mnist.__dict__,
            "checksums": {name: (("md5", md5),) for name, md5 in sums.items()},
            "downloads": tuple(
                Download(d.filename, (("md5", sums[d.filename]),), ("http://127.0.0.1:9/",))
                for d in mnist.downloads
            ),
        }
    )
    monkeypatch.setitem(catalog_module.CATALOG, "mnist", patched)
    target = tmp_path / "data"
    with http_server({f"/{n}": serve_bytes(d) for n, d in files.items()}) as base:
        result = runner.invoke(
            app, ["data", "fetch", "mnist", "--data-dir", str(target), "--mirror", base]
        )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(target / "mnist")
    assert "downloaded and verified" in result.stderr
    verified = runner.invoke(app, ["data", "verify", "mnist", "--data-dir", str(target)])
    assert verified.exit_code == 0 and verified.stdout.count("ok ") == 4


def test_fetch_synthetic_is_refused():
    result = runner.invoke(app, ["data", "fetch", "synthetic-digits"])
    assert result.exit_code == 1 and "nothing to download" in result.stderr


def test_data_help_does_not_import_numpy():
    code = (
        "import sys\n"
        "from dnupdate.cli.main import app\n"
        "try:\n"
        "    app(['data', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert 'numpy' not in sys.modules, 'numpy imported by data --help'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
