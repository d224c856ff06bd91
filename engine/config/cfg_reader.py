"""darknet's ``.cfg`` / ``.data`` line grammar (``parser.c:read_cfg``, ``utils.c:strip``,
``option_list.c:read_option``), with every problem recorded as a diagnostic.

The grammar, exactly as darknet reads it:

* a line is what ``fgetl`` returns: the text up to ``'\\n'``;
* ``strip`` deletes every space, tab and newline *anywhere* in the line, so
  ``steps = 100, 200`` reads as ``steps=100,200``. We also delete ``'\\r'`` (darknet does not:
  in a CRLF file it fails to recognise ``[net]\\r``); a CRLF file gets one warning;
* after stripping, the first character decides: ``[`` opens a section whose type is the whole
  stripped line; empty, ``#`` and ``;`` lines are skipped (whole-line comments only: an inline
  ``#`` stays part of the value); anything else is ``key=value`` split at the first ``=``;
* ``key=`` with nothing after ``=`` is ignored (darknet: "Config file error ... could parse");
* a line without ``=`` is stored as a key with no value (darknet: its default is used);
* lookups return the first occurrence of a key, so later duplicates are ignored (warned here);
* a key/value line before any section crashes darknet; here it is an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from dnupdate.engine.config.darknet_diagnostics import DiagnosticSink

# Characters darknet's strip() deletes anywhere in a line, plus '\r' (our improvement).
STRIPPED_CHARACTERS = str.maketrans("", "", " \t\n\r")
COMMENT_STARTS = ("#", ";")


@dataclass
class CfgOption:
    """One ``key=value`` line after stripping; ``value`` is None for a line without ``=``."""

    key: str
    value: str | None
    line: int


@dataclass
class CfgSection:
    """A ``[type]`` header and the options below it, in file order."""

    type: str
    line: int
    options: list[CfgOption] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The type without brackets when it is bracketed (``"[net]"`` → ``"net"``)."""
        if self.type.startswith("[") and self.type.endswith("]"):
            return self.type[1:-1]
        return self.type


def strip_line(raw: str) -> str:
    """darknet ``strip``: delete every space, tab and newline anywhere (and ``'\\r'``)."""
    return raw.translate(STRIPPED_CHARACTERS)


def split_lines(text: str) -> list[str]:
    """Lines as ``fgetl`` returns them: split on ``'\\n'`` only (never on form feeds etc.)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def content_lines(text: str) -> Iterator[tuple[int, str]]:
    """``(line number, stripped line)`` for every line darknet interprets: empty lines and
    whole-line ``#``/``;`` comments are skipped."""
    for number, raw in enumerate(split_lines(text), start=1):
        stripped = strip_line(raw)
        if stripped and not stripped.startswith(COMMENT_STARTS):
            yield number, stripped


def parse_option_line(stripped: str, number: int, path: str, sink: DiagnosticSink):
    """``read_option``: split at the first ``=``. Returns a CfgOption, or None when the line
    is ``key=`` (ignored with a warning, as darknet does)."""
    key, sep, value = stripped.partition("=")
    if not sep:
        sink.warning(
            path,
            number,
            key,
            f"line '{key}' has no '=': darknet stores the key with no value, so the key's "
            "default is used",
        )
        return CfgOption(key, None, number)
    if value == "":
        sink.warning(
            path,
            number,
            key or None,
            f"'{key}=' has no value: the line is ignored (darknet: \"Config file error line "
            f'{number}, could parse: {key}")',
        )
        return None
    if key == "":
        sink.warning(path, number, None, f"'={value}' has no key: the line is never read")
    return CfgOption(key, value, number)


def warn_crlf(text: str, path: str, sink: DiagnosticSink) -> None:
    """One warning for a file with ``\\r\\n`` line ends (we strip ``\\r``; darknet does not)."""
    index = text.find("\r")
    if index >= 0:
        line = text.count("\n", 0, index) + 1
        sink.warning(
            path,
            line,
            None,
            "the file has CR characters (CRLF line ends): dnupdate strips them, but pjreddie "
            "darknet does not and would misread section names and string values",
        )


def warn_duplicates(options: list[CfgOption], path: str, sink: DiagnosticSink) -> None:
    """darknet's ``option_find`` returns the first match: later duplicates are never read."""
    first_line: dict[str, int] = {}
    for option in options:
        if option.key in first_line:
            sink.warning(
                path,
                option.line,
                option.key,
                f"duplicate key '{option.key}' is ignored: darknet uses the first one "
                f"(line {first_line[option.key]})",
            )
        else:
            first_line[option.key] = option.line


def read_cfg(path: str, text: str, sink: DiagnosticSink) -> list[CfgSection]:
    """Read a sectioned ``.cfg`` text into sections, recording diagnostics in ``sink``."""
    warn_crlf(text, path, sink)
    sections: list[CfgSection] = []
    for number, stripped in content_lines(text):
        if stripped.startswith("["):
            sections.append(CfgSection(stripped, number))
            continue
        option = parse_option_line(stripped, number, path, sink)
        if option is None:
            continue
        if not sections:
            sink.error(
                path,
                number,
                option.key or None,
                f"'{stripped}' comes before any section: the file must start with [net]",
            )
            continue
        sections[-1].options.append(option)
    for section in sections:
        warn_duplicates(section.options, path, sink)
    return sections


def read_data_options(path: str, text: str, sink: DiagnosticSink) -> list[CfgOption]:
    """Read a darknet ``.data`` file (``option_list.c:read_data_cfg``): the same line grammar
    without sections. A section header line is an error."""
    warn_crlf(text, path, sink)
    options: list[CfgOption] = []
    for number, stripped in content_lines(text):
        if stripped.startswith("["):
            sink.error(path, number, stripped.strip("[]")[:40], "a .data file has no sections")
            continue
        option = parse_option_line(stripped, number, path, sink)
        if option is not None:
            options.append(option)
    warn_duplicates(options, path, sink)
    return options
