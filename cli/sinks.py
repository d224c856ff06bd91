"""Event sinks for ``dnupdate train``: where the loop's events go.

* :class:`JsonLinesSink` — ``--json``: one strict-JSON object per event on stdout
  (``Event.to_json()``), flushed per line so a pipe sees events as they happen;
* :class:`cli.dashboard.Dashboard` / :class:`cli.dashboard.PlainLines` — the human display on
  stderr (Rich live view on a terminal, plain lines otherwise);
* :func:`fan_out` — hands each event to every sink in turn.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import IO, Protocol


class Sink(Protocol):
    """Anything that takes events: ``handle(event)`` then ``close()`` once at the end."""

    def handle(self, event) -> None: ...

    def close(self) -> None: ...


class JsonLinesSink:
    """Writes ``json.dumps(event.to_json())`` and a newline per event (strict JSON: non-finite
    floats are spelled ``"nan"``/``"inf"``), flushing after each line."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdout
        self.broken = False

    def handle(self, event) -> None:
        if self.broken:
            return
        try:
            self.stream.write(json.dumps(event.to_json(), allow_nan=False) + "\n")
            self.stream.flush()
        except BrokenPipeError:
            # the reader went away (``| head``): keep training, stop writing, and point the
            # descriptor at /dev/null so that the interpreter's final flush does not fail
            self.broken = True
            _silence(self.stream)

    def close(self) -> None:
        if not self.broken:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self.broken = True
                _silence(self.stream)


def _silence(stream: IO[str]) -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, io.UnsupportedOperation):
        pass


def fan_out(events: Iterable, sinks: Sequence[Sink]):
    """Pass every event to every sink; yields the events on (the caller keeps the last)."""
    for event in events:
        for sink in sinks:
            sink.handle(event)
        yield event
