"""Reading config files (a cfg, a solver, a Caffe net, a darknet ``.data``) defensively: a
path that is too long, holds a NUL, names a device (``/dev/zero``), a directory or a huge file
is one clear message, never an ``OSError`` traceback, a hang or an unbounded read."""

from __future__ import annotations

import os
import stat

MAX_CONFIG_BYTES = 64 << 20  # configs are a few kB; a bigger file is not a config


class UnreadableFile(Exception):
    """A config file cannot be read; ``str()`` says why (without the path)."""


def _stat(path: str) -> os.stat_result:
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise UnreadableFile("no such file") from None
    except ValueError:
        raise UnreadableFile("the path contains a NUL character") from None
    except OSError as exc:
        raise UnreadableFile(exc.strerror or str(exc)) from None


def check_readable(path: str) -> None:
    """Raise :class:`UnreadableFile` unless ``path`` is a regular file (or a pipe, as from
    ``<(...)``) of at most :data:`MAX_CONFIG_BYTES`."""
    mode = _stat(path)
    if stat.S_ISDIR(mode.st_mode):
        raise UnreadableFile("is a directory")
    if not (stat.S_ISREG(mode.st_mode) or stat.S_ISFIFO(mode.st_mode)):
        raise UnreadableFile("is not a regular file (a device or socket)")
    if mode.st_size > MAX_CONFIG_BYTES:
        raise UnreadableFile(
            f"is {mode.st_size:,} bytes: too large for a config (limit {MAX_CONFIG_BYTES:,})"
        )


def read_config_file(path: str) -> str:
    """The file's text (UTF-8; undecodable bytes kept as surrogates so that their line can
    be reported), read at most :data:`MAX_CONFIG_BYTES` bytes. Raises UnreadableFile."""
    check_readable(path)
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise UnreadableFile(exc.strerror or str(exc)) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise UnreadableFile(f"is larger than {MAX_CONFIG_BYTES:,} bytes: too large for a config")
    return data.decode("utf-8", errors="surrogateescape")


def is_readable_file(path: str) -> bool:
    """True when :func:`read_config_file` would get past the checks (never raises)."""
    try:
        check_readable(path)
    except UnreadableFile:
        return False
    return True
