"""The protobuf text-format parser: every construct of caffe spec section 10, line numbers,
and syntax errors that name file, line and key."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnupdate.engine.config.prototxt import TextMessage, TextScalar, parse_text_format
from dnupdate.engine.spec import ConfigError


def parse(text: str) -> TextMessage:
    return parse_text_format(text, "t.prototxt")


def scalars(text: str) -> list[tuple[str, object, str]]:
    """(name, value, kind) of every top-level scalar field."""
    out = []
    for item in parse(text).fields:
        assert isinstance(item.value, TextScalar)
        out.append((item.name, item.value.value, item.value.kind))
    return out


def syntax_error(text: str):
    with pytest.raises(ConfigError) as info:
        parse(text)
    (diagnostic,) = info.value.diagnostics
    assert diagnostic.severity == "error"
    assert diagnostic.file == "t.prototxt"
    return diagnostic


def test_comments_and_separators():
    text = "# header\na: 1, b: 2; c: 3 # trailing\n\n  d: 4"
    assert scalars(text) == [("a", 1, "int"), ("b", 2, "int"), ("c", 3, "int"), ("d", 4, "int")]


def test_nested_messages_with_and_without_colon_and_angle_brackets():
    tree = parse("outer { x: 1 } other: { y: 2 } third < z: 3 >")
    names = [f.name for f in tree.fields]
    assert names == ["outer", "other", "third"]
    for item, inner in zip(tree.fields, ("x", "y", "z"), strict=True):
        assert isinstance(item.value, TextMessage)
        assert item.value.fields[0].name == inner


def test_strings_quotes_escapes_and_concatenation():
    text = r"""a: "double" b: 'single' c: "tab\tnl\n" d: "\x41\101\u00e9" e: "it's" 'x' "y"
f: 'say \"hi\"' g: "back\\slash" """
    values = {name: value for name, value, _ in scalars(text)}
    assert values["a"] == "double"
    assert values["b"] == "single"
    assert values["c"] == "tab\tnl\n"
    assert values["d"] == "AAé"
    assert values["e"] == "it'sxy"
    assert values["f"] == 'say "hi"'
    assert values["g"] == "back\\slash"


@pytest.mark.parametrize(
    ("literal", "value", "kind"),
    [
        ("100", 100, "int"),
        ("-1", -1, "int"),
        ("0x1F", 31, "int"),
        ("017", 15, "int"),
        ("0", 0, "int"),
        ("0.01", 0.01, "float"),
        (".999", 0.999, "float"),
        ("5e-05", 5e-05, "float"),
        ("1e-8", 1e-8, "float"),
        ("1.", 1.0, "float"),
        ("2.5f", 2.5, "float"),
        ("-0.5", -0.5, "float"),
    ],
)
def test_numbers(literal, value, kind):
    ((_, parsed, parsed_kind),) = scalars(f"v: {literal}")
    assert parsed_kind == kind
    assert parsed == value


def test_identifiers_for_enums_bools_inf_and_nan():
    parsed = scalars("pool: MAX ok: true no: false big: inf small: -inf odd: nan")
    assert parsed == [
        ("pool", "MAX", "ident"),
        ("ok", "true", "ident"),
        ("no", "false", "ident"),
        ("big", "inf", "ident"),
        ("small", "-inf", "ident"),
        ("odd", "nan", "ident"),
    ]


def test_repeated_by_repetition_and_list_syntax_keep_order():
    parsed = scalars("stepvalue: 5000 stepvalue: 7000 stepvalue: [8000, 9000] empty: []")
    assert [v for _, v, _ in parsed] == [5000, 7000, 8000, 9000]


def test_list_of_messages():
    tree = parse("param: [{ lr_mult: 1 }, { lr_mult: 2 }]")
    assert [f.name for f in tree.fields] == ["param", "param"]
    assert [f.value.fields[0].value.value for f in tree.fields] == [1, 2]


def test_line_numbers_of_fields_and_nested_fields():
    text = 'name: "n"\n\nlayer {\n  # comment\n  type: "Data"\n  top: "data"\n}\nlayer { }\n'
    tree = parse(text)
    assert [(f.name, f.line) for f in tree.fields] == [("name", 1), ("layer", 3), ("layer", 8)]
    inner = tree.fields[1].value
    assert [(f.name, f.line) for f in inner.fields] == [("type", 5), ("top", 6)]


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("layer {\n  name: 'x'\n", 3, "missing '}'"),
        ("a: 1\nb: 'open\n", 2, "not closed"),
        ("a: 1\nb:\n}", 3, "expected a value"),
        ("a: 1\n\nb 2", 3, "expected ':'"),
        ("a: 1.2.3", 1, "invalid number"),
        ("a: 12abc", 1, "invalid number"),
        ("a: 1\n@", 2, "unexpected character"),
        ("a: -foo", 1, "must be followed by a number"),
        ("a: [1, 2", 1, "expected ',' or ']'"),
        ('a: "bad \\q escape"', 1, "invalid escape"),
        ("x { a: 1 >", 1, "expected a field name"),
        ("[ext.field]: 1", 1, "not supported"),
        ("a: 09", 1, "octal"),
    ],
)
def test_syntax_errors_name_the_line(text, line, words):
    diagnostic = syntax_error(text)
    assert diagnostic.line == line
    assert words in diagnostic.message


def test_error_names_the_key():
    diagnostic = syntax_error("base_lr: }")
    assert diagnostic.key == "base_lr"


_names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
_values = st.one_of(
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(alphabet=st.characters(codec="ascii", exclude_characters="\n\r"), max_size=12),
)


def _render(value) -> str:
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    return repr(value) if isinstance(value, float) else str(value)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_names, _values), max_size=8), st.sampled_from([" ", "\n", ", ", ";"]))
def test_round_trip_of_rendered_scalars(pairs, separator):
    text = separator.join(f"{name}: {_render(value)}" for name, value in pairs)
    tree = parse(text)
    assert [f.name for f in tree.fields] == [name for name, _ in pairs]
    for item, (_, value) in zip(tree.fields, pairs, strict=True):
        parsed = item.value.value
        if isinstance(value, float):
            assert math.isclose(float(parsed), value, rel_tol=0, abs_tol=0) or parsed == value
        else:
            assert parsed == value
