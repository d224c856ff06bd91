"""Download one file from a list of mirrors: checksum-verified, atomic, with progress events.

Each mirror is tried in order. The bytes go to a temporary file in the destination folder and
are hashed as they arrive; the file is renamed into place only when its size and checksum are
right. A failed, interrupted or mismatching transfer leaves nothing behind. The engine never
prints: progress is reported through ``on_event`` callbacks.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dnupdate.engine.data.errors import DownloadError

BLOCK = 1 << 16
USER_AGENT = "dnupdate-data/0.1 (+https://github.com/)"


@dataclass(frozen=True)
class DownloadStarted:
    """A transfer began: ``total`` bytes expected (None when the server does not say)."""

    filename: str
    url: str
    total: int | None


@dataclass(frozen=True)
class DownloadProgress:
    """``done`` bytes of ``filename`` received so far."""

    filename: str
    done: int
    total: int | None


@dataclass(frozen=True)
class MirrorFailed:
    """One mirror failed; the next one (if any) is tried."""

    filename: str
    url: str
    reason: str


@dataclass(frozen=True)
class FileReady:
    """The file is in place and verified (``cached``: it was already there)."""

    filename: str
    path: Path
    cached: bool = False


DownloadEvent = DownloadStarted | DownloadProgress | MirrorFailed | FileReady
EventSink = Callable[[DownloadEvent], None]


def _ignore(_: DownloadEvent) -> None:
    pass


class _Rejected(Exception):
    """This mirror's transfer is unusable (the reason is the message)."""


def _transfer(url: str, handle, filename: str, timeout: float, on_event: EventSink) -> int:
    """Stream ``url`` into ``handle``; return the byte count (raises _Rejected).

    The network modules are imported here, not at the top: ``fetch`` imports this module on
    every run's data path, and ``urllib.request`` brings ``ssl`` and OpenSSL's libcrypto
    (~3 MiB resident, ~10 ms) into runs that never download.
    """
    import http.client
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            on_event(DownloadStarted(filename, url, total))
            done = 0
            while block := response.read(BLOCK):
                handle.write(block)
                done += len(block)
                on_event(DownloadProgress(filename, done, total))
    except urllib.error.HTTPError as exc:
        raise _Rejected(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise _Rejected(f"cannot connect ({exc.reason})") from None
    except http.client.IncompleteRead as exc:
        raise _Rejected(
            f"transfer interrupted after {len(exc.partial)} more bytes "
            f"({exc.expected} still expected)"
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        raise _Rejected(f"transfer failed ({exc})") from None
    if total is not None and done != total:
        raise _Rejected(f"transfer interrupted: got {done} of {total} bytes")
    return done


def _fetch_one(
    url: str,
    dest: Path,
    checksums: Sequence[tuple[str, str]],
    timeout: float,
    on_event: EventSink,
) -> None:
    """Download ``url`` to ``dest`` through a temporary file (raises _Rejected)."""
    fd, temp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            _transfer(url, handle, dest.name, timeout, on_event)
            handle.flush()
            os.fsync(handle.fileno())
        _verify_temp(temp, checksums)
        os.replace(temp, dest)
    finally:
        temp.unlink(missing_ok=True)


def _verify_temp(temp: Path, checksums: Sequence[tuple[str, str]]) -> None:
    from dnupdate.engine.data.checksums import check_file

    if not checksums:
        return
    result = check_file(temp, checksums)
    if result.status != "ok":
        raise _Rejected(f"checksum mismatch: {result.detail}")


def download_file(
    filename: str,
    dest_dir: str | Path,
    mirrors: Sequence[str],
    checksums: Sequence[tuple[str, str]],
    *,
    timeout: float = 30.0,
    on_event: EventSink | None = None,
    hint: str = "",
) -> Path:
    """Fetch ``filename`` from the first mirror that delivers it intact into ``dest_dir``.

    A mirror is a base URL (``filename`` is appended; a trailing ``/`` is added when missing).
    A file already in place with a matching checksum is kept (``FileReady(cached=True)``).
    Raises :class:`DownloadError` listing every mirror's failure (plus ``hint``) when none works.
    """
    from dnupdate.engine.data.checksums import matches

    sink = on_event or _ignore
    dest_dir = Path(dest_dir)
    dest = dest_dir / filename
    if dest.is_file() and checksums and matches(dest, checksums):
        sink(FileReady(filename, dest, cached=True))
        return dest
    dest_dir.mkdir(parents=True, exist_ok=True)
    attempts: list[tuple[str, str]] = []
    for mirror in mirrors:
        url = mirror if mirror.endswith("/") else mirror + "/"
        url += filename
        try:
            _fetch_one(url, dest, checksums, timeout, sink)
        except _Rejected as exc:
            attempts.append((url, str(exc)))
            sink(MirrorFailed(filename, url, str(exc)))
            continue
        sink(FileReady(filename, dest))
        return dest
    raise DownloadError(filename, attempts, hint)
