"""Typed lookups in one cfg section, as darknet's ``option_find_int/float/str`` do them.

A lookup returns the **first** occurrence of a key and marks it used (``option_find``); a
missing key, or a key written without ``=``, gives the default. ``--set`` overrides are looked
up before the file. Every value keeps its :class:`engine.spec.Origin`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from dnupdate.engine.config.cfg_reader import CfgOption, CfgSection
from dnupdate.engine.config.darknet_diagnostics import DiagnosticSink
from dnupdate.engine.config.darknet_values import (
    INT32_MAX,
    INT32_MIN,
    c_atof,
    c_atoi,
    float32,
    non_ascii_digit,
)
from dnupdate.engine.spec import DEFAULT, Origin

OVERRIDE_FILE = "--set"


class OptionTable:
    """The options of one section (plus ``--set`` overrides for ``[net]``).

    ``get_int``/``get_float``/``get_str`` follow darknet: first occurrence wins, ``atoi`` /
    ``atof`` read the numeric prefix (trailing garbage → warning; no number → error), floats
    are rounded to float32 like darknet's ``float`` fields. ``origins`` records where each
    looked-up key's value came from.
    """

    def __init__(
        self,
        path: str,
        section: CfgSection,
        sink: DiagnosticSink,
        overrides: Mapping[str, str] | None = None,
    ) -> None:
        self.path = path
        self.section = section
        self.sink = sink
        self.overrides = dict(overrides or {})
        self.used: set[str] = set()
        self.origins: dict[str, Origin] = {}
        self.first: dict[str, CfgOption] = {}
        for option in section.options:
            self.first.setdefault(option.key, option)

    # -- raw lookup ---------------------------------------------------------------------------

    def find(self, key: str) -> tuple[str | None, Origin, int | None]:
        """``option_find``: (value or None, origin, line) for the first occurrence of ``key``;
        an override beats the file."""
        self.used.add(key)
        if key in self.overrides:
            origin = Origin(OVERRIDE_FILE)
            self.origins[key] = origin
            return self.overrides[key], origin, None
        option = self.first.get(key)
        if option is None or option.value is None:
            self.origins[key] = DEFAULT
            return None, DEFAULT, None
        origin = Origin(self.path, option.line)
        self.origins[key] = origin
        return option.value, origin, option.line

    def has(self, key: str) -> bool:
        """True when the key has a value in the overrides or the file (does not mark it used)."""
        option = self.first.get(key)
        return key in self.overrides or (option is not None and option.value is not None)

    def origin(self, key: str) -> Origin:
        """Where the last lookup of ``key`` took its value from (DEFAULT if never looked up)."""
        return self.origins.get(key, DEFAULT)

    def _where(self, key: str, line: int | None) -> tuple[str, int | None]:
        if key in self.overrides:
            return OVERRIDE_FILE, None
        return self.path, line

    def where(self, key: str) -> tuple[str, int | None]:
        """(file, line) to name in a diagnostic about ``key``: the override, the key's first
        line, or the section header when the key is absent."""
        if key in self.overrides:
            return OVERRIDE_FILE, None
        option = self.first.get(key)
        if option is not None:
            return self.path, option.line
        return self.path, self.section.line if self.section.line > 0 else None

    def error(self, key: str, message: str) -> None:
        """Record an error about ``key`` at its location."""
        self.sink.error(*self.where(key), key, message)

    def warning(self, key: str, message: str) -> None:
        """Record a warning about ``key`` at its location."""
        self.sink.warning(*self.where(key), key, message)

    # -- typed lookups ------------------------------------------------------------------------

    def get_str(self, key: str, default: str | None) -> str | None:
        """``option_find_str``: the value string, or the default."""
        value, _, _ = self.find(key)
        return default if value is None else value

    def get_int(self, key: str, default: int) -> int:
        """``option_find_int``: ``atoi`` of the value, or the default."""
        value, _, line = self.find(key)
        if value is None:
            return default
        number, rest = c_atoi(value)
        if not self._check_number(key, line, value, number, rest, "an integer", default):
            return default
        assert number is not None
        if not INT32_MIN <= number <= INT32_MAX:
            file, where = self._where(key, line)
            self.sink.error(file, where, key, f"'{value}' does not fit in a C int")
            return default
        return number

    def get_float(self, key: str, default: float) -> float:
        """``option_find_float``: ``atof`` of the value rounded to float32, or the default
        (also rounded to float32, as darknet stores it in a ``float``).

        ``nan``, ``inf`` and values past float32's range (``1e39`` → inf) are errors: darknet's
        ``atof`` accepts them, but no hyper-parameter is meaningful as one (a NaN rate makes
        every weight NaN at the first update, which would look like divergence)."""
        value, _, line = self.find(key)
        if value is None:
            return float32(default)
        number, rest = c_atof(value)
        if not self._check_number(key, line, value, number, rest, "a number", default):
            return float32(default)
        assert number is not None
        rounded = float32(number)
        if not math.isfinite(rounded):
            file, where = self._where(key, line)
            self.sink.error(file, where, key, not_finite_message(value, number))
            return float32(default)
        return rounded

    def get_flag(self, key: str) -> bool:
        """An int key used as a boolean (darknet tests ``if (x)``): nonzero is true."""
        return self.get_int(key, 0) != 0

    def _check_number(self, key, line, value, number, rest, what, default) -> bool:
        """Report a value that is not (only) a number. Returns False when it has none."""
        file, where = self._where(key, line)
        if number is None:
            self.sink.error(file, where, key, not_a_number_message(value, what))
            return False
        if rest:
            if file == OVERRIDE_FILE:
                self.sink.error(file, where, key, f"'{value}' is not {what}")
                return False
            self.sink.warning(
                file,
                where,
                key,
                f"trailing '{rest}' after {number!r} is ignored, as darknet's "
                f"{'atoi' if what == 'an integer' else 'atof'} does (inline comments are "
                "not comments in a .cfg)",
            )
        return True

    # -- leftovers ----------------------------------------------------------------------------

    def unused(self) -> list[CfgOption]:
        """First occurrences (with a value) of keys that were never looked up."""
        return [
            option
            for key, option in self.first.items()
            if key not in self.used and option.value is not None
        ]


def not_a_number_message(value: str, what: str) -> str:
    """'... is not an integer', naming a non-ASCII digit (which C's atoi/atof do not read)."""
    digit = non_ascii_digit(value)
    if digit is not None:
        return (
            f"'{value}' is not {what}: {digit!r} is not an ASCII digit (darknet's atoi/atof "
            "read only 0-9, so darknet would silently read 0)"
        )
    return f"'{value}' is not {what} (darknet would silently read 0)"


def not_finite_message(value: str, number: float) -> str:
    """Why a non-finite (or float32-overflowing) value is refused."""
    if math.isnan(number):
        return f"'{value}' is NaN: a hyper-parameter must be a finite number"
    if math.isinf(number):
        return f"'{value}' is infinite: a hyper-parameter must be a finite number"
    return f"'{value}' overflows float32 (darknet's float) to infinity"
