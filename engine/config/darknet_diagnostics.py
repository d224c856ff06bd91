"""Collects the diagnostics of one darknet config read (errors and warnings, in order)."""

from __future__ import annotations

from dnupdate.engine.spec import ConfigError, Diagnostic


class DiagnosticSink:
    """An ordered list of :class:`engine.spec.Diagnostic`; ``raise_if_errors`` stops a read
    with a :class:`engine.spec.ConfigError` carrying every diagnostic collected so far."""

    def __init__(self) -> None:
        self.items: list[Diagnostic] = []
        self._seen: set[Diagnostic] = set()

    def _add(self, diagnostic: Diagnostic) -> None:
        """Record once: a key looked up twice (``max_batches`` by the schedule and the
        solver) must not report the same problem twice."""
        if diagnostic not in self._seen:
            self._seen.add(diagnostic)
            self.items.append(diagnostic)

    def error(self, file: str, line: int | None, key: str | None, message: str) -> None:
        """Record an error (the read will fail)."""
        self._add(Diagnostic("error", file, line, key, message))

    def warning(self, file: str, line: int | None, key: str | None, message: str) -> None:
        """Record a warning (reported, the read goes on)."""
        self._add(Diagnostic("warning", file, line, key, message))

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.items)

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.items if d.severity == "warning")

    def raise_if_errors(self) -> None:
        """Raise a ConfigError with all diagnostics when any error was recorded."""
        if self.has_errors:
            raise ConfigError(self.items)
