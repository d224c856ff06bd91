"""Caffe configs written as YAML → the same schema-free tree the text-format parser builds.

The keys are protobuf's field names: a mapping is a message, a list is a repeated field (one
element per repetition), and a scalar is lexed with the text-format rules (so ``5e-05`` is a
float here too, where YAML 1.1 alone would read a string). Line numbers come from PyYAML's
node marks: the composed node tree keeps ``start_mark.line`` (0-based), we store ``+ 1``.
"""

from __future__ import annotations

import re

import yaml

from dnupdate.engine.config.prototxt import TextField, TextMessage, TextScalar, number_scalar
from dnupdate.engine.spec import ConfigError, Diagnostic

_NUMBER_TEXT = re.compile(
    r"-?(?:0[xX][0-9a-fA-F]+|(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?[fF]?)"
)
_IDENT_TEXT = re.compile(r"-?[A-Za-z_][A-Za-z0-9_]*")
MAX_DEPTH = 100  # as the text format (engine.config.prototxt.MAX_DEPTH)
MAX_NODES = 200_000  # nodes after alias expansion: bounds "billion laughs" documents


def loose_scalar(text: str, line: int | None, quoted: bool = False) -> TextScalar:
    """A YAML scalar or ``--set`` value → TextScalar, lexed like the text format.

    Quoted text stays a string; otherwise a number spelling is an int or float, an identifier
    an ident (``inv``, ``MAX``, ``true``), anything else a string. The result is ``loose``:
    string fields accept any spelling, enum fields accept a quoted name.
    """
    stripped = text.strip()
    if not quoted and _NUMBER_TEXT.fullmatch(stripped):
        negative = stripped.startswith("-")
        try:
            return number_scalar(stripped.lstrip("-"), line, negative, loose=True)
        except ValueError:
            pass
    if not quoted and _IDENT_TEXT.fullmatch(stripped):
        return TextScalar("ident", stripped, stripped, line, loose=True)
    return TextScalar("string", text, text, line, loose=True)


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _error(file: str, line: int | None, key: str | None, message: str) -> ConfigError:
    return ConfigError([Diagnostic("error", file, line, key, message)])


class _Expander:
    """Walks PyYAML's composed node graph into TextMessages. Aliases make that graph
    shared or cyclic: a node met again on its own path is a recursive alias (an error), and
    the total number of nodes visited is capped (:data:`MAX_NODES`)."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.path: set[int] = set()
        self.visited = 0

    def _enter(self, node: yaml.Node, name: str | None) -> None:
        if id(node) in self.path:
            raise _error(
                self.file,
                _line(node),
                name,
                "recursive YAML alias: an anchor (&name) is used inside itself",
            )
        self.visited += 1
        if self.visited > MAX_NODES:
            raise _error(
                self.file,
                _line(node),
                name,
                f"YAML aliases expand to more than {MAX_NODES:,} values",
            )

    def mapping(self, node: yaml.MappingNode, name: str | None = None) -> TextMessage:
        self._enter(node, name)
        self.path.add(id(node))
        fields: list[TextField] = []
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise _error(self.file, _line(key_node), None, "a key must be a plain field name")
            field_name = str(key_node.value)
            fields.extend(self.field(field_name, _line(key_node), value_node))
        self.path.discard(id(node))
        return TextMessage(tuple(fields), _line(node))

    def field(self, name: str, line: int, node: yaml.Node) -> list[TextField]:
        file = self.file
        if isinstance(node, yaml.SequenceNode):
            self._enter(node, name)
            out: list[TextField] = []
            for item in node.value:
                if isinstance(item, yaml.SequenceNode):
                    raise _error(
                        file, _line(item), name, "a list inside a list is not a field value"
                    )
                out.extend(self.field(name, _line(item), item))
            return out
        if isinstance(node, yaml.MappingNode):
            return [TextField(name, self.mapping(node, name), line)]
        self._enter(node, name)
        scalar: yaml.ScalarNode = node  # type: ignore[assignment]
        if scalar.tag == "tag:yaml.org,2002:null" and scalar.value in ("", "~", "null"):
            # ``include:`` with nothing after it: an empty message (or a missing value, which
            # the schema reports for scalar fields).
            return [TextField(name, TextMessage((), line), line)]
        quoted = scalar.style in ("'", '"')
        return [TextField(name, loose_scalar(str(scalar.value), _line(scalar), quoted), line)]


def _syntax_error(exc: yaml.YAMLError, file: str) -> ConfigError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None) or str(exc)
    return _error(file, line, None, f"YAML syntax error: {problem}")


def check_depth(text: str, file: str) -> None:
    """Refuse collections nested deeper than :data:`MAX_DEPTH` before composing (PyYAML's
    composer recurses once per level). Reads the event stream, which is iterative."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1
                message = f"collections nested more than {MAX_DEPTH} levels deep"
                raise _error(file, line, None, message)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def compose(text: str, file: str) -> yaml.Node | None:
    """PyYAML's node graph of ``text`` (depth-checked), or a ConfigError."""
    try:
        check_depth(text, file)
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise _syntax_error(exc, file) from None


def parse_yaml(text: str, file: str) -> TextMessage:
    """Parse a YAML Caffe config into the schema-free tree; the document must be a mapping."""
    root = compose(text, file)
    if root is None:
        return TextMessage((), 1)
    if not isinstance(root, yaml.MappingNode):
        raise _error(file, _line(root), None, "a YAML Caffe config must be a mapping of keys")
    return _Expander(file).mapping(root)


def looks_like_yaml(text: str) -> bool:
    """True when ``text`` is not text format but parses as a YAML mapping (for files whose
    suffix does not tell, e.g. standard input)."""
    try:
        root = compose(text, "<text>")
    except ConfigError:
        return False
    return isinstance(root, yaml.MappingNode)
