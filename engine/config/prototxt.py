"""Protocol-buffer text format (the syntax of Caffe's ``.prototxt``), parsed with line numbers.

The parser is schema-free: it turns text into a tree of :class:`TextMessage` / :class:`TextField`
/ :class:`TextScalar` and leaves types to ``engine.config.caffe_schema`` (as protobuf's
``TextFormat::Parse`` does in one pass; splitting it lets YAML share the typing rules).

Grammar (https://protobuf.dev/reference/protobuf/textformat-spec/; caffe spec section 10)::

    message := { field [ "," | ";" ] }
    field   := name ":" ( scalar | list )
             | name [":"] ( "{" message "}" | "<" message ">" | list-of-messages )
    list    := "[" [ value { "," value } ] "]"
    scalar  := ["-"] number | ["-"] identifier | string { string }

* numbers: decimal, octal (``017``), hex (``0x1F``) integers; floats ``1.``, ``.999``,
  ``5e-05``, with an optional ``f`` suffix; ``inf``/``nan`` are identifiers;
* strings: double or single quotes, C escapes (``\\n``, ``\\x41``, ``\\101``, ``\\u00e9``);
  adjacent literals concatenate (``"a" 'b'`` is ``"ab"``);
* ``#`` starts a comment that runs to the end of the line.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

from dnupdate.engine.spec import ConfigError, Diagnostic

ScalarKind = Literal["int", "float", "ident", "string"]


@dataclass(frozen=True)
class TextScalar:
    """One scalar as written: ``kind`` is how it was spelt, ``value`` its decoded value
    (``int`` for ints, ``float`` for floats, ``str`` otherwise), ``text`` the source spelling.

    ``loose`` marks values from YAML or ``--set``, where ``inv`` may mean the string
    ``"inv"`` and ``"MAX"`` the enum ``MAX`` (protobuf's own text format is stricter).
    """

    kind: ScalarKind
    value: int | float | str
    text: str
    line: int | None
    loose: bool = False


@dataclass(frozen=True)
class TextMessage:
    """A message body: its fields in file order (repeated fields appear several times)."""

    fields: tuple[TextField, ...]
    line: int | None


@dataclass(frozen=True)
class TextField:
    """``name: value`` or ``name { ... }``; ``line`` is the line of the field name."""

    name: str
    value: TextScalar | TextMessage
    line: int | None


# --------------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------------

_NUMBER = re.compile(
    r"0[xX][0-9a-fA-F]+|(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?[fF]?"
)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PUNCT = set("{}<>:,;[]-./")
_DIGITS = "0123456789"
_DIGITS_SET = set(_DIGITS)  # ASCII only: str.isdigit() is true for ٣ and ６, protobuf's lexer
# reads 0-9 only
MAX_DEPTH = 100  # messages nested deeper than this are refused (no Caffe net nests past 4)
MAX_INT_DIGITS = 40  # longer decimal integers are out of every proto integer's range
_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "?": "?",
}


@dataclass(frozen=True)
class _Token:
    kind: Literal["number", "ident", "string", "punct", "eof", "bad"]
    text: str
    line: int
    value: str = ""


class _Lexer:
    """Splits text-format source into tokens, tracking 1-based line numbers."""

    def __init__(self, text: str, file: str):
        self.text = text
        self.file = file
        self.pos = 0
        self.line = 1

    def error(self, line: int, message: str, key: str | None = None) -> ConfigError:
        return ConfigError([Diagnostic("error", self.file, line, key, message)])

    def _skip_space(self) -> None:
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char == "\n":
                self.line += 1
                self.pos += 1
            elif char in " \t\r\f\v":
                self.pos += 1
            elif char == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            else:
                return

    def tokens(self) -> list[_Token]:
        """Every token up to the end, or up to a lexical error, which becomes a ``bad`` token
        (its message in ``value``) so the parser can name the field it interrupts."""
        out: list[_Token] = []
        while True:
            self._skip_space()
            if self.pos >= len(self.text):
                out.append(_Token("eof", "end of file", self.line))
                return out
            try:
                out.append(self._next())
            except ConfigError as error:
                bad = error.diagnostics[0]
                out.append(_Token("bad", "", bad.line or self.line, bad.message))
                return out

    def _next(self) -> _Token:
        text, start, char = self.text, self.pos, self.text[self.pos]
        if char in "\"'":
            return self._string(char)
        if char in _DIGITS or (char == "." and text[start + 1 : start + 2] in _DIGITS_SET):
            match = _NUMBER.match(text, start)
            assert match is not None
            end = match.end()
            if end < len(text) and (text[end].isalnum() or text[end] in "_."):
                tail = _IDENT.match(text, end)
                bad = text[start : tail.end() if tail else end + 1]
                raise self.error(self.line, f"invalid number {bad!r}")
            self.pos = end
            return _Token("number", match.group(), self.line)
        match = _IDENT.match(text, start)
        if match:
            self.pos = match.end()
            return _Token("ident", match.group(), self.line)
        if char in _PUNCT:
            self.pos += 1
            return _Token("punct", char, self.line)
        if unicodedata.digit(char, None) is not None:
            raise self.error(
                self.line, f"{char!r} is not an ASCII digit (protobuf reads numbers in 0-9 only)"
            )
        raise self.error(self.line, f"unexpected character {char!r}")

    def _string(self, quote: str) -> _Token:
        text, line, start = self.text, self.line, self.pos
        pos = start + 1
        chars: list[str] = []
        while True:
            if pos >= len(text) or text[pos] == "\n":
                raise self.error(line, "string is not closed before the end of the line")
            char = text[pos]
            if char == quote:
                self.pos = pos + 1
                return _Token("string", text[start : pos + 1], line, "".join(chars))
            if char == "\\":
                decoded, pos = self._escape(pos + 1, line)
                chars.append(decoded)
                continue
            chars.append(char)
            pos += 1

    def _escape(self, pos: int, line: int) -> tuple[str, int]:
        """Decode the C escape after a backslash at ``pos``; return (text, next position)."""
        text = self.text
        if pos >= len(text):
            raise self.error(line, "string ends with a backslash")
        char = text[pos]
        if char in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[char], pos + 1
        octal = re.match(r"[0-7]{1,3}", text[pos : pos + 3])
        if octal:
            return chr(int(octal.group(), 8)), pos + len(octal.group())
        patterns = {"x": r"[0-9a-fA-F]{1,2}", "u": r"[0-9a-fA-F]{4}", "U": r"[0-9a-fA-F]{8}"}
        if char in patterns:
            digits = re.match(patterns[char], text[pos + 1 : pos + 9])
            if digits:
                code = int(digits.group(), 16)
                if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                    raise self.error(
                        line,
                        f"escape '\\{char}{digits.group()}' is not a Unicode character "
                        "(past U+10FFFF, or a surrogate)",
                    )
                return chr(code), pos + 1 + len(digits.group())
        raise self.error(line, f"invalid escape sequence '\\{char}' in string")


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------


def number_scalar(text: str, line: int | None, negative: bool = False, loose: bool = False):
    """A number token → TextScalar: ``int`` for decimal/octal/hex integers, ``float`` when the
    spelling has a point, an exponent or an ``f`` suffix (protobuf's rule)."""
    sign = "-" if negative else ""
    lower = text.lower()
    if lower.startswith("0x"):
        value: int | float = int(text, 16)
        kind: ScalarKind = "int"
    elif "." in text or "e" in lower or lower.endswith("f"):
        value, kind = float(text.rstrip("fF")), "float"
    elif len(text) > 1 and text.startswith("0"):
        if not re.fullmatch(r"0[0-7]+", text):
            raise ValueError(f"invalid octal number {text!r}")
        value, kind = int(text, 8), "int"
    elif len(text.lstrip("0")) > MAX_INT_DIGITS:
        # out of range for every integer field (and Python refuses int() past 4300 digits):
        # a stand-in that the schema reports as out of range (or reads as a huge float)
        value, kind = 10**MAX_INT_DIGITS, "int"
    else:
        value, kind = int(text), "int"
    return TextScalar(kind, -value if negative else value, sign + text, line, loose)


class _Parser:
    """Recursive descent over the token list; raises ConfigError on the first syntax error."""

    def __init__(self, text: str, file: str):
        self.lexer = _Lexer(text, file)
        self.tokens = self.lexer.tokens()
        self.index = 0
        self.file = file
        self.key: str | None = None  # the field being read (or the last one), for errors
        self.depth = 0

    @property
    def peek(self) -> _Token:
        token = self.tokens[self.index]
        if token.kind == "bad":
            raise self.fail(token.value, key=self.key, token=token)
        return token

    def take(self) -> _Token:
        token = self.peek
        self.index += 1
        return token

    def at(self, *punct: str) -> bool:
        return self.peek.kind == "punct" and self.peek.text in punct

    def fail(self, message: str, key: str | None = None, token: _Token | None = None):
        token = token or self.peek
        return ConfigError([Diagnostic("error", self.file, token.line, key, message)])

    def message(self, closer: str | None, line: int | None) -> TextMessage:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(
                f"messages nested more than {MAX_DEPTH} levels deep (dnupdate's limit; Caffe's "
                "nets nest a few levels)",
                key=self.key,
            )
        try:
            return self._message_body(closer, line)
        finally:
            self.depth -= 1

    def _message_body(self, closer: str | None, line: int | None) -> TextMessage:
        fields: list[TextField] = []
        while True:
            if closer is None and self.peek.kind == "eof":
                return TextMessage(tuple(fields), line)
            if closer is not None and self.at(closer):
                self.take()
                return TextMessage(tuple(fields), line)
            if self.peek.kind == "eof":
                raise self.fail(f"missing '{closer}' for the message opened on line {line}")
            fields.extend(self.field())
            if self.at(",", ";"):
                self.take()

    def field(self) -> list[TextField]:
        name_token = self.take()
        if name_token.kind != "ident":
            if name_token.kind == "punct" and name_token.text == "[":
                message = "extension and Any fields ([...]) are not supported"
                raise self.fail(message, token=name_token)
            raise self.fail(f"expected a field name, got {name_token.text!r}", token=name_token)
        name, line = name_token.text, name_token.line
        self.key = name
        colon = self.at(":")
        if colon:
            self.take()
        if self.at("{", "<"):
            opener = self.take().text
            closer = "}" if opener == "{" else ">"
            return [TextField(name, self.message(closer, line), line)]
        if self.at("["):
            return [TextField(name, value, value.line) for value in self.list_values(name)]
        if not colon:
            raise self.fail(f"expected ':' or '{{' after field name {name!r}", key=name)
        return [TextField(name, self.scalar(name), line)]

    def list_values(self, name: str) -> list[TextScalar | TextMessage]:
        self.take()
        values: list[TextScalar | TextMessage] = []
        if self.at("]"):
            self.take()
            return values
        while True:
            if self.at("{", "<"):
                opener = self.take()
                closer = "}" if opener.text == "{" else ">"
                values.append(self.message(closer, opener.line))
            else:
                values.append(self.scalar(name))
            if self.at("]"):
                self.take()
                return values
            if not self.at(","):
                raise self.fail(f"expected ',' or ']' in the list of {name!r}", key=name)
            self.take()

    def scalar(self, name: str) -> TextScalar:
        token = self.take()
        negative = token.kind == "punct" and token.text == "-"
        if negative:
            token = self.take()
        if token.kind == "number":
            try:
                return number_scalar(token.text, token.line, negative)
            except ValueError as exc:
                raise self.fail(str(exc), key=name, token=token) from None
        if token.kind == "ident":
            if negative and token.text.lower() not in ("inf", "infinity"):
                message = f"'-' must be followed by a number, got {token.text!r}"
                raise self.fail(message, name, token)
            text = ("-" if negative else "") + token.text
            return TextScalar("ident", text, text, token.line)
        if token.kind == "string" and not negative:
            parts, texts = [token.value], [token.text]
            while self.peek.kind == "string":
                nxt = self.take()
                parts.append(nxt.value)
                texts.append(nxt.text)
            return TextScalar("string", "".join(parts), " ".join(texts), token.line)
        raise self.fail(f"expected a value for {name!r}, got {token.text!r}", key=name, token=token)


def parse_text_format(text: str, file: str) -> TextMessage:
    """Parse a whole text-format file into a schema-free tree (fields keep their lines).

    Raises :class:`engine.spec.ConfigError` naming file, line and field on a syntax error.
    """
    return _Parser(text, file).message(None, 1)
