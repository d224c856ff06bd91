"""How ``--help`` looks: help texts that re-wrap to any terminal width, real metavars and
clean usage lines.

Typer's Rich help keeps every single newline of a help text (so text wrapped by hand in the
source breaks raggedly at 80 columns), shows a type label such as ``<bool>``, ``<str>`` or
``<int range>`` beside every parameter, and writes usage lines like ``{RUN_DIR}`` or
``[[WORKLOAD|CONFIG]...]...``. :func:`help_text` builds help texts as one line per paragraph
(Rich wraps them to the terminal) with examples kept verbatim; :class:`HelpCommand` and
:class:`HelpGroup` (passed as ``cls=``) show flags without a type, options with their metavar
(``FILE``, ``DIR``, ``N``, ``KEY=VALUE``, the choices ``cpu|cuda``) and arguments in usage
lines as ``CONFIG``, ``[CONFIG]...``.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Sequence

from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

EXAMPLE_INDENT = "  "
# Rich markup tags look like [bold] or [/]: escape them so [net] or [OPTIONS] stay text
_MARKUP_TAG = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])")


def _escape_markup(text: str) -> str:
    """``text`` with every ``[tag]``-like run escaped for Rich markup (``rich.markup.escape``)."""
    return _MARKUP_TAG.sub(lambda m: f"{m.group(1)}{m.group(1)}\\{m.group(2)}", text)


def reflow(paragraph: str) -> str:
    """A paragraph written over several source lines as one line (Rich re-wraps it)."""
    return " ".join(paragraph.split())


def help_text(summary: str, *paragraphs: str, examples: Sequence[str] = ()) -> str:
    """A command's help: the one-line ``summary`` (shown in the command list too), each
    paragraph as one line, then ``Examples:`` with each example as its own paragraph,
    indented and kept line for line (a long example continues with `` \\`` on the next line).
    Rich markup in the text is escaped: help texts are plain text."""
    parts = [reflow(summary), *(reflow(p) for p in paragraphs)]
    if examples:
        # Typer dedents the text after the summary by its common indentation, which would
        # take the examples' indentation when "Examples:" comes first: a blank line before it
        # keeps the heading out of that computation (Rich prints it as one blank line).
        parts.append("Examples:" if paragraphs else "\nExamples:")
        parts.extend(_example(example) for example in examples)
    return "\n\n".join(_escape_markup(part) for part in parts)


def _example(example: str) -> str:
    """One example, indented; its continuation lines (after a trailing `` \\``) twice as far."""
    lines = [line.strip() for line in example.strip().splitlines()]
    first, *rest = lines
    return "\n".join([EXAMPLE_INDENT + first, *(2 * EXAMPLE_INDENT + line for line in rest)])


def default_metavar(option: TyperOption) -> str:
    """The metavar of an option that names none: its choices (``cpu|cuda``), ``N`` for a
    whole number, ``X`` for a real one, ``PATH`` for a path, else ``VALUE``.

    Typer 0.29 describes a parameter by its ``type_descriptor`` (the annotation, behind a
    pass-through Click type); earlier Typers by the Click type itself."""
    descriptor = getattr(option, "type_descriptor", None)
    if descriptor is None:
        return _metavar_of_click_type(option.type)
    if descriptor.is_choice and descriptor.choices:
        return "|".join(str(getattr(c, "value", c)) for c in descriptor.choices)
    if descriptor.is_path:
        return "PATH"
    annotation = descriptor.annotation
    while getattr(annotation, "__args__", None) and annotation not in (int, float):
        annotation = annotation.__args__[0]  # list[int] → int
    return {int: "N", float: "X"}.get(annotation, "VALUE")


def _metavar_of_click_type(param_type) -> str:
    """:func:`default_metavar` from a Click type (Typer below 0.29)."""
    choices = getattr(param_type, "choices", None)
    if choices:
        return "|".join(str(getattr(c, "value", c)) for c in choices)
    kind = getattr(param_type, "name", "")
    by_kind = {"path": "PATH", "int": "N", "float": "X"}
    return by_kind.get(kind.removesuffix(" range"), "VALUE")


class _HelpOption(TyperOption):
    """An option shown with its metavar and never with a ``<type>`` label; flags with none."""

    def display_type_rich(self, ctx) -> str | None:
        if self.is_flag or self.count:
            return None
        return self.metavar if self.metavar is not None else default_metavar(self)

    def make_metavar(self, ctx=None, **kwargs) -> str:
        """Typer below 0.29 shows this in the help's type column (0.29 asks
        :meth:`display_type_rich`): the same metavar, without Click's ``<…>`` or ``[…]``."""
        if self.is_flag or self.count:
            return super().make_metavar(ctx=ctx, **kwargs)
        return self.display_type_rich(ctx) or ""


class _HelpArgument(TyperArgument):
    """An argument named by its metavar alone: no ``<str>`` beside it, and in the usage line
    ``NAME`` when required, ``[NAME]`` when optional, ``...`` after either when repeated."""

    def display_type_rich(self, ctx) -> str | None:
        return None

    def get_usage_pieces(self, ctx) -> list[str]:
        name = self.metavar or (self.name or "").upper()
        name = name if self.required else f"[{name}]"
        return [f"{name}..." if self.nargs != 1 else name]


@functools.cache
def _unlabelled_class(type_class: type) -> type:
    """``type_class`` with no metavar of its own: Typer below 0.29 labels an argument
    ``<str>`` from its Click type's ``get_metavar`` when that gives none (0.29 asks
    :meth:`_HelpArgument.display_type_rich`); an empty one shows nothing."""
    return type(f"Unlabelled{type_class.__name__}", (type_class,), {"get_metavar": _no_metavar})


def _no_metavar(self, param, ctx=None) -> str:
    return ""


def _tidied(params: list) -> list:
    """``params`` shown the dnupdate way (their classes narrowed to the help subclasses above,
    which change how they print and nothing else; an argument's Click type is a copy, as
    Click's types such as ``STRING`` are shared)."""
    for param in params:
        if type(param) is TyperOption:
            param.__class__ = _HelpOption
        elif type(param) is TyperArgument:
            param.__class__ = _HelpArgument
            param.type = copy.copy(param.type)
            param.type.__class__ = _unlabelled_class(type(param.type))
    return params


class HelpCommand(TyperCommand):
    """A Typer command whose help shows real metavars and clean usage lines."""

    def get_params(self, ctx) -> list:
        return _tidied(super().get_params(ctx))


class HelpGroup(TyperGroup):
    """A Typer group (``dnupdate``, ``dnupdate data``) with the same help conventions."""

    def get_params(self, ctx) -> list:
        return _tidied(super().get_params(ctx))


def help_from_doc(doc: str) -> str:
    """:func:`help_text` from a help written as a docstring: the first paragraph is the summary,
    paragraphs are separated by blank lines, and the blank-line-separated blocks after a line
    ``Examples:`` are the examples."""
    body, _, example_part = doc.strip().partition("\nExamples:\n")
    summary, *paragraphs = [p for p in body.split("\n\n") if p.strip()]
    examples = [block for block in example_part.split("\n\n") if block.strip()]
    return help_text(summary, *paragraphs, examples=examples)
