"""Typing scalars against caffe.proto field types (protobuf text-format rules), YAML and
``--set`` scalar lexing, and the typed message's proto2 defaults."""

import math

import pytest

from dnupdate.engine.config.caffe_schema import (
    MESSAGES,
    FieldDef,
    Reporter,
    convert_scalar,
    validate,
)
from dnupdate.engine.config.caffe_yaml import loose_scalar, parse_yaml
from dnupdate.engine.config.prototxt import TextScalar, parse_text_format

FLOAT = FieldDef("float")
INT32 = FieldDef("int32")
UINT32 = FieldDef("uint32")
BOOL = FieldDef("bool")
STRING = FieldDef("string")
POOL = MESSAGES["PoolingParameter"]["pool"]
V1_TYPE = MESSAGES["V1LayerParameter"]["type"]


def strict(text: str) -> TextScalar:
    """The scalar the text-format parser makes of ``v: <text>``."""
    return parse_text_format(f"v: {text}", "t").fields[0].value


@pytest.mark.parametrize(
    ("definition", "text", "value"),
    [
        (FLOAT, "3", 3.0),
        (FLOAT, "5e-05", 5e-05),
        (FLOAT, "-inf", -math.inf),
        (FLOAT, "Infinity", math.inf),
        (INT32, "0x10", 16),
        (INT32, "-7", -7),
        (BOOL, "true", True),
        (BOOL, "False", False),
        (BOOL, "t", True),
        (BOOL, "0", False),
        (STRING, "'inv'", "inv"),
        (POOL, "AVE", "AVE"),
        (POOL, "1", "AVE"),
        (V1_TYPE, "4", "CONVOLUTION"),
        (V1_TYPE, "RELU", "RELU"),
    ],
)
def test_text_format_conversions(definition, text, value):
    assert convert_scalar(strict(text), definition) == (value, None)


def test_nan_converts_to_nan():
    value, problem = convert_scalar(strict("nan"), FLOAT)
    assert problem is None and math.isnan(value)


@pytest.mark.parametrize(
    ("definition", "text", "words"),
    [
        (INT32, "1.0", "expected an integer"),
        (INT32, "2147483648", "out of range"),
        (UINT32, "-1", "out of range"),
        (FLOAT, "fast", "expected a number"),
        (FLOAT, '"1"', "expected a number"),
        (BOOL, "2", "expected true or false"),
        (BOOL, "yes", "expected true or false"),
        (STRING, "inv", "expected a quoted string"),
        (POOL, "MEDIAN", "unknown value 'MEDIAN'"),
        (POOL, '"MAX"', "expected one of"),
        (POOL, "9", "expected one of"),
    ],
)
def test_text_format_rejections(definition, text, words):
    value, problem = convert_scalar(strict(text), definition)
    assert value is None and words in problem


@pytest.mark.parametrize(
    ("text", "quoted", "definition", "value"),
    [
        ("inv", False, STRING, "inv"),
        ("examples/mnist/lenet", False, STRING, "examples/mnist/lenet"),
        ("0.01", False, STRING, "0.01"),
        ("5e-4", False, FLOAT, 5e-4),
        ("1e-8", False, FLOAT, 1e-8),
        ("-3", False, INT32, -3),
        ("MAX", True, POOL, "MAX"),
        ("LMDB", False, MESSAGES["DataParameter"]["backend"], "LMDB"),
    ],
)
def test_loose_scalars_from_yaml_and_set(text, quoted, definition, value):
    assert convert_scalar(loose_scalar(text, 1, quoted), definition) == (value, None)


def test_quoted_yaml_number_is_not_a_number():
    value, problem = convert_scalar(loose_scalar("5", 1, quoted=True), INT32)
    assert value is None and "expected an integer" in problem


def test_yaml_tree_lines_and_lists():
    tree = parse_yaml("a: 1\nb:\n  - 2\n  - 3\nc:\n  d: x\n", "f.yaml")
    assert [(f.name, f.line) for f in tree.fields] == [("a", 1), ("b", 3), ("b", 4), ("c", 5)]
    assert tree.fields[3].value.fields[0].name == "d"


def test_validate_defaults_and_has():
    reporter = Reporter()
    tree = parse_text_format("stride: 2", "p")
    msg = validate(tree, "PoolingParameter", "p", reporter)
    assert not reporter.items
    assert msg.has("stride") and not msg.has("pad")
    assert (msg.get("stride"), msg.get("pad"), msg.get("pool"), msg.get("round_mode")) == (
        2, 0, "MAX", "CEIL"
    )  # fmt: skip
    solver = validate(parse_text_format("", "s"), "SolverParameter", "s", reporter)
    assert solver.get("type") == "SGD" and solver.get("delta") == 1e-8
    assert solver.get("test_iter") == [] and solver.get("regularization_type") == "L2"
    assert solver.get("random_seed") == -1 and solver.get("test_initialization") is True


def test_unknown_layer_param_of_unsupported_type_is_not_an_unknown_field():
    reporter = Reporter()
    tree = parse_text_format('type: "LRN" lrn_param { local_size: 5 alpha: 1 }', "n")
    validate(tree, "LayerParameter", "n", reporter)
    assert reporter.items == []
