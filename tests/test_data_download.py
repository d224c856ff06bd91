"""Downloads against a local HTTP server on 127.0.0.1 (never the real network)."""

from __future__ import annotations

import hashlib
import io
import tarfile

import numpy as np
import pytest

from dnupdate.engine.data import DownloadError, fetch_dataset, open_dataset, verify_dataset
from dnupdate.engine.data import catalog as catalog_module
from dnupdate.engine.data.catalog import CatalogEntry, Download
from dnupdate.engine.data.download import (
    DownloadProgress,
    DownloadStarted,
    FileReady,
    MirrorFailed,
    download_file,
)
from dnupdate.engine.data.idx import write_idx
from tests.data_fixtures import (
    http_server,
    random_images,
    serve_bytes,
    serve_truncated,
    unused_port_url,
)

PAYLOAD = bytes(range(256)) * 400


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_good_file_is_downloaded_with_progress(tmp_path):
    events = []
    with http_server({"/m/f.bin": serve_bytes(PAYLOAD)}) as base:
        path = download_file(
            "f.bin", tmp_path, [f"{base}/m"], [("md5", md5(PAYLOAD))], on_event=events.append
        )
    assert path.read_bytes() == PAYLOAD
    assert isinstance(events[0], DownloadStarted) and events[0].total == len(PAYLOAD)
    progress = [e.done for e in events if isinstance(e, DownloadProgress)]
    assert progress == sorted(progress) and progress[-1] == len(PAYLOAD)
    assert isinstance(events[-1], FileReady) and not events[-1].cached
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_present_and_verified_file_is_not_downloaded_again(tmp_path):
    (tmp_path / "f.bin").write_bytes(PAYLOAD)
    events = []
    path = download_file(
        "f.bin", tmp_path, [unused_port_url()], [("md5", md5(PAYLOAD))], on_event=events.append
    )
    assert path.read_bytes() == PAYLOAD
    assert events == [FileReady("f.bin", path, cached=True)]


def test_checksum_mismatch_is_rejected_and_nothing_is_left(tmp_path):
    with (
        http_server({"/f.bin": serve_bytes(PAYLOAD)}) as base,
        pytest.raises(DownloadError) as info,
    ):
        download_file("f.bin", tmp_path, [base], [("md5", "0" * 32)], hint="place it by hand")
    assert "checksum mismatch" in str(info.value) and md5(PAYLOAD) in str(info.value)
    assert "place it by hand" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_transfer_leaves_nothing(tmp_path):
    with (
        http_server({"/f.bin": serve_truncated(PAYLOAD, 5000)}) as base,
        pytest.raises(DownloadError) as info,
    ):
        download_file("f.bin", tmp_path, [base], [("md5", md5(PAYLOAD))], timeout=5)
    assert "interrupted" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_first_mirror_down_second_used(tmp_path):
    events = []
    dead = unused_port_url()
    with http_server({"/b/f.bin": serve_bytes(PAYLOAD)}) as base:
        path = download_file(
            "f.bin",
            tmp_path,
            [dead, f"{base}/a/", f"{base}/b"],
            [("md5", md5(PAYLOAD))],
            on_event=events.append,
        )
    assert path.read_bytes() == PAYLOAD
    failures = [e for e in events if isinstance(e, MirrorFailed)]
    assert [f.url for f in failures] == [f"{dead}/f.bin", f"{base}/a/f.bin"]
    assert "cannot connect" in failures[0].reason and "HTTP 404" in failures[1].reason


def test_bad_then_good_mirror_replaces_corrupt_local_copy(tmp_path):
    (tmp_path / "f.bin").write_bytes(b"corrupt")
    with http_server(
        {"/bad/f.bin": serve_bytes(b"x" * 10), "/ok/f.bin": serve_bytes(PAYLOAD)}
    ) as b:
        download_file("f.bin", tmp_path, [f"{b}/bad", f"{b}/ok"], [("md5", md5(PAYLOAD))])
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


# ------------------------------------------------------------------ dataset-level fetch


@pytest.fixture
def tiny_catalog(monkeypatch, tmp_path):
    """Replace mnist's and cifar10's downloads with small files served locally."""
    files = {}
    for prefix, count in (("train", 20), ("t10k", 5)):
        for kind, array in (
            ("images", random_images(count, (28, 28))),
            ("labels", np.arange(count, dtype=np.uint8) % 10),
        ):
            path = tmp_path / "src" / f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz"
            path.parent.mkdir(exist_ok=True)
            write_idx(path, array)
            files[path.name] = path.read_bytes()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for index, name in enumerate(
            [*(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin"]
        ):
            record = bytes([index]) + bytes(random_images(1, (3072,), index)[0])
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(record * 2)
            tar.addfile(info, io.BytesIO(record * 2))
        evil = tarfile.TarInfo("../evil.txt")
        evil.size = 4
        tar.addfile(evil, io.BytesIO(b"evil"))
    files["cifar-10-binary.tar.gz"] = archive.getvalue()
    mnist = catalog_module.CATALOG["mnist"]
    cifar = catalog_module.CATALOG["cifar10"]
    patched = {
        "mnist": CatalogEntry(
            **{
                **mnist.__dict__,
                "checksums": {},
                "downloads": tuple(
                    Download(d.filename, (("md5", md5(files[d.filename])),), ("http://mirror/",))
                    for d in mnist.downloads
                ),
            }
        ),
        "cifar10": CatalogEntry(
            **{
                **cifar.__dict__,
                "checksums": {},
                "downloads": (
                    Download(
                        "cifar-10-binary.tar.gz",
                        (("md5", md5(files["cifar-10-binary.tar.gz"])),),
                        ("http://mirror/",),
                        archive_dir="cifar-10-batches-bin",
                    ),
                ),
            }
        ),
    }
    monkeypatch.setitem(catalog_module.CATALOG, "mnist", patched["mnist"])
    monkeypatch.setitem(catalog_module.CATALOG, "cifar10", patched["cifar10"])
    return {f"/{name}": serve_bytes(data) for name, data in files.items()}


def test_fetch_mnist_into_data_dir_then_open(tmp_path, tiny_catalog):
    target = tmp_path / "data"
    with http_server(tiny_catalog) as base:
        folder = fetch_dataset("mnist", target, mirrors=[base])
    assert folder == target / "mnist"
    assert len(open_dataset("mnist", "train", str(target))) == 20
    assert len(open_dataset("mnist", "test", str(target))) == 5


def test_fetch_cifar_extracts_archive_safely_and_verifies(tmp_path, tiny_catalog, monkeypatch):
    monkeypatch.setenv("DNUPDATE_DATA_DIR", str(tmp_path / "cache"))
    with http_server(tiny_catalog) as base:
        folder = fetch_dataset("cifar10", mirrors=[base])
    assert folder == tmp_path / "cache" / "cifar10"
    assert not (folder / "cifar-10-binary.tar.gz").exists()
    assert not any(p.name == "evil.txt" for p in tmp_path.rglob("*"))
    train = open_dataset("cifar10", "train")
    assert len(train) == 10 and train.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    checks = verify_dataset("cifar10")
    assert [c.status for c in checks] == ["ok"] * 6  # against the extraction manifest
    (folder / "cifar-10-batches-bin" / "data_batch_2.bin").write_bytes(bytes(3073 * 2))
    assert [c.status for c in verify_dataset("cifar10")].count("mismatch") == 1


def mnist_with_mirror(monkeypatch, mirror: str) -> None:
    """The catalog's MNIST with ``mirror`` as its only download mirror."""
    mnist = catalog_module.CATALOG["mnist"]
    downloads = tuple(Download(d.filename, d.checksums, (mirror,)) for d in mnist.downloads)
    monkeypatch.setitem(
        catalog_module.CATALOG, "mnist", CatalogEntry(**{**mnist.__dict__, "downloads": downloads})
    )


def test_fetch_with_every_mirror_down_says_where_to_place_files(tmp_path, monkeypatch):
    mnist_with_mirror(monkeypatch, unused_port_url())
    with pytest.raises(DownloadError) as info:
        fetch_dataset("mnist", tmp_path)
    text = str(info.value)
    assert "cannot connect" in text and str(tmp_path / "mnist") in text
    assert not any(tmp_path.rglob("*.gz"))


def test_offline_fetch_names_every_file_and_leaves_no_empty_folder(tmp_path, monkeypatch):
    mnist_with_mirror(monkeypatch, unused_port_url())
    target = tmp_path / "new" / "deeper"
    with pytest.raises(DownloadError) as info:
        fetch_dataset("mnist", target)
    text = str(info.value)
    for name in ("train-images", "train-labels", "t10k-images", "t10k-labels"):
        assert f"{name}-idx" in text  # the test files too
    assert "dnupdate data fetch" not in text  # not the command that just failed
    assert not (tmp_path / "new").exists()  # the folders it made are gone again
    kept = tmp_path / "mine"
    kept.mkdir()
    with pytest.raises(DownloadError):
        fetch_dataset("mnist", kept)
    assert kept.is_dir() and not any(kept.iterdir())  # the user's own folder stays


def test_offline_cli_fetch_never_breaks_a_url_across_lines(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from dnupdate.cli.main import app

    mnist_with_mirror(monkeypatch, unused_port_url() + "/a-long-mirror-path/" + "x" * 60 + "/")
    monkeypatch.setenv("COLUMNS", "60")
    result = CliRunner().invoke(app, ["data", "fetch", "mnist", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    tried = [line for line in result.stderr.splitlines() if "trying the next mirror" in line]
    assert tried and all("x" * 60 in line for line in tried)  # whole, however narrow
    assert "Traceback" not in result.output
