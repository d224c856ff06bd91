"""Dataset-level ``fetch`` and ``verify`` for the catalog datasets."""

from __future__ import annotations

import json
import os
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from dnupdate.engine.data.catalog import CATALOG, CatalogEntry, canonical_name
from dnupdate.engine.data.checksums import FileCheck, check_file, file_digest
from dnupdate.engine.data.download import EventSink, FileReady, download_file
from dnupdate.engine.data.errors import DataError
from dnupdate.engine.data.locate import write_root
from dnupdate.engine.data.named import locate_split, placement_hint

MANIFEST = ".dnupdate-manifest.json"


def catalog_entry(name: str) -> CatalogEntry:
    """The catalog entry for a dataset name, or a DataError listing the known names."""
    canonical = canonical_name(name)
    if canonical is None:
        raise DataError(name, f"unknown dataset (known: {', '.join(CATALOG)})")
    return CATALOG[canonical]


def _safe_member(member: tarfile.TarInfo, archive_dir: str) -> str | None:
    """The member's file name inside ``archive_dir``, or None to skip it (not a regular
    file, outside that folder, or a path that could escape the target)."""
    if not member.isfile():
        return None
    parts = PurePosixPath(member.name).parts
    if len(parts) != 2 or parts[0] != archive_dir or parts[1] in ("", ".", ".."):
        return None
    return parts[1]


def extract_archive(archive: Path, archive_dir: str, target: Path) -> list[Path]:
    """Extract the regular files of ``archive_dir/`` from a .tar.gz into ``target`` (each
    atomically) and record their sha256 in a manifest for later ``verify`` runs."""
    target.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = _safe_member(member, archive_dir)
                source = tar.extractfile(member) if name else None
                if not name or source is None:
                    continue
                fd, temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=target)
                try:
                    with os.fdopen(fd, "wb") as handle:
                        while block := source.read(1 << 20):
                            handle.write(block)
                    os.replace(temp, target / name)
                finally:
                    Path(temp).unlink(missing_ok=True)
                written.append(target / name)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(str(archive), f"cannot extract the archive ({exc})") from None
    manifest = {p.name: file_digest(p, "sha256") for p in written}
    (target / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return written


def fetch_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    mirrors: Sequence[str] = (),
    on_event: EventSink | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download a catalog dataset into the data directory; return the folder holding it.

    ``mirrors`` (base URLs) are tried before the canonical ones. Files already present and
    intact are not downloaded again. Archives (CIFAR) are verified, extracted, then deleted.
    """
    entry = catalog_entry(name)
    if entry.synthetic:
        raise DataError(entry.name, "built in (generated on demand): nothing to download")
    target = write_root(data_dir) / entry.cache_folder
    if all(check.status == "ok" for check in verify_dataset(entry.name, target, only=True)):
        for split in ("train", "test"):
            found = locate_split(entry, split, target, only=True)
            for path in (p for paths in (found.files.values() if found else ()) for p in paths):
                (on_event or (lambda _e: None))(FileReady(path.name, path, cached=True))
        return target
    made = _missing_folders(target)
    try:
        _download_all(entry, target, data_dir, mirrors, on_event, timeout)
    except BaseException:
        _remove_if_empty(made)
        raise
    return target


def _download_all(entry, target, data_dir, mirrors, on_event, timeout) -> None:
    hint = placement_hint(entry, data_dir, suggest_fetch=False)  # fetch is what just failed
    for item in entry.downloads:
        path = download_file(
            item.filename,
            target,
            (*mirrors, *item.mirrors),
            item.checksums,
            timeout=timeout,
            on_event=on_event,
            hint=hint,
        )
        if item.archive_dir:
            extract_archive(path, item.archive_dir, target / item.archive_dir)
            path.unlink()


def _missing_folders(target: Path) -> list[Path]:
    """``target`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for folder in (target, *target.parents):
        if folder.exists():
            break
        missing.append(folder)
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders a failed fetch created, deepest first, where nothing is in them."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (a partial download is kept for resuming) or already gone
            return


def _manifest_checksums(path: Path) -> tuple[tuple[str, str], ...]:
    manifest = path.parent / MANIFEST
    if not manifest.is_file():
        return ()
    try:
        digest = json.loads(manifest.read_text()).get(path.name)
    except (ValueError, OSError):
        return ()
    return (("sha256", digest),) if digest else ()


def verify_dataset(
    name: str, data_dir: str | Path | None = None, *, only: bool = False
) -> list[FileCheck]:
    """Check every file of both splits against the published checksums (or, where none is
    published, the manifest written when its verified archive was extracted)."""
    entry = catalog_entry(name)
    if entry.synthetic:
        return []
    checks: list[FileCheck] = []
    for split in ("train", "test"):
        found = locate_split(entry, split, data_dir, only=only)
        if found is None:
            checks.append(FileCheck(Path(f"({split} split)"), "missing", "not on this machine"))
            continue
        for path in (p for paths in found.files.values() for p in paths):
            known = entry.checksums.get(path.name, ()) or _manifest_checksums(path)
            checks.append(check_file(path, known))
    return checks
