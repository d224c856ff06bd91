"""File checksums: md5, sha256, git blob SHA-1, and md5 of a gzip file's decompressed bytes."""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 20


def _digest(path: Path, algorithm: str) -> str:
    if algorithm == "gitblob":
        # git hash-object: sha1(b"blob <size>\0" + content)
        hasher = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    elif algorithm == "md5-gunzip":
        hasher = hashlib.md5(usedforsecurity=False)
    else:
        hasher = hashlib.new(algorithm, usedforsecurity=False)
    opened = gzip.open(path, "rb") if algorithm == "md5-gunzip" else path.open("rb")  # noqa: SIM115
    with opened as handle:
        while chunk := handle.read(CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def file_digest(path: str | Path, algorithm: str) -> str | None:
    """Hex digest of a file (None when it cannot be read, e.g. a corrupt gzip stream)."""
    try:
        return _digest(Path(path), algorithm)
    except (OSError, EOFError, zlib.error):
        return None


@dataclass(frozen=True)
class FileCheck:
    """The result of checking one file: ``status`` is ``ok``, ``mismatch``, ``missing`` or
    ``unchecked`` (no known checksum); ``detail`` explains it."""

    path: Path
    status: str
    detail: str


def check_file(path: str | Path, checksums: Iterable[tuple[str, str]]) -> FileCheck:
    """Compare a file with its known checksums: any one match is enough."""
    path = Path(path)
    checksums = tuple(checksums)
    if not path.is_file():
        return FileCheck(path, "missing", "no such file")
    if not checksums:
        return FileCheck(path, "unchecked", "no published checksum for this file")
    seen = []
    for algorithm, expected in checksums:
        actual = file_digest(path, algorithm)
        if actual == expected.lower():
            return FileCheck(path, "ok", f"{algorithm} {actual}")
        seen.append(f"{algorithm} {actual} (expected {expected})")
    return FileCheck(path, "mismatch", "; ".join(seen))


def matches(path: str | Path, checksums: Iterable[tuple[str, str]]) -> bool:
    """True when the file matches one of the checksums."""
    return check_file(path, checksums).status == "ok"
