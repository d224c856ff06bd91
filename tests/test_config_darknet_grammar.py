"""darknet .cfg line grammar: stripping, comments, duplicates, CRLF, malformed lines."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnupdate.engine.config import load_config
from dnupdate.engine.config.cfg_reader import read_cfg, strip_line
from dnupdate.engine.config.darknet_diagnostics import DiagnosticSink
from dnupdate.engine.spec import ConfigError
from tests.darknet_fixtures import cfg_errors, f32, load_cfg

NET = "[net]\nheight=8\nwidth=8\nchannels=1\nmax_batches=10\n"
TAIL = "[connected]\noutput=2\nactivation=linear\n[softmax]\n"


def warnings_for(spec, key: str) -> list:
    return [d for d in spec.diagnostics if d.key == key]


def test_whitespace_anywhere_is_removed():
    text = NET + "learn ing_rate = 0 .25\t\npolicy = st eps\nsteps = 10, 20\nscales=.5 , .5\n"
    spec = load_cfg(text + TAIL)
    assert spec.schedule.base_lr == 0.25
    assert spec.schedule.policy == "steps"
    assert spec.schedule.steps == (10, 20)
    assert spec.schedule.scales == (0.5, 0.5)


def test_whole_line_comments_hash_and_semicolon_are_skipped():
    text = NET + "# learning_rate=0.5\n  ; momentum=0.1\nlearning_rate=0.125\n" + TAIL
    spec = load_cfg(text)
    assert spec.schedule.base_lr == 0.125
    assert spec.solver.momentum == f32(0.9)
    assert not spec.diagnostics


def test_inline_hash_in_number_is_read_as_atoi_with_a_warning():
    spec = load_cfg(NET + "batch=64 # images\n" + TAIL)
    assert spec.solver.minibatch == 64
    (warning,) = warnings_for(spec, "batch")
    assert warning.severity == "warning"
    assert warning.line == 6 and warning.file == "t.cfg"
    assert "#images" in warning.message


def test_inline_hash_in_string_makes_an_unknown_activation_which_falls_back_to_relu():
    spec = load_cfg(NET + "[connected]\noutput=2\nactivation=leaky # slope .1\n[softmax]\n")
    assert spec.net.layers[0].activation == "relu"
    (warning,) = warnings_for(spec, "activation")
    assert warning.line == 8 and "leaky#slope.1" in warning.message


def test_first_duplicate_wins_and_the_later_one_is_reported():
    spec = load_cfg(NET + "learning_rate=0.5\nlearning_rate=0.25\n" + TAIL)
    assert spec.schedule.base_lr == 0.5
    (warning,) = warnings_for(spec, "learning_rate")
    assert warning.line == 7 and "line 6" in warning.message


def test_duplicate_in_a_layer_section_first_wins():
    spec = load_cfg(NET + "[connected]\noutput=3\noutput=7\nactivation=linear\n[softmax]\n")
    assert spec.net.layers[0].outputs == 3
    assert [d.line for d in warnings_for(spec, "output")] == [8]


def test_crlf_file_reads_like_lf_with_one_warning_and_no_error():
    lf = NET + "activation=x\n" + "[convolutional]\nfilters=4\nsize=3\nactivation=leaky\n" + TAIL
    crlf = lf.replace("\n", "\r\n")
    plain, windows = load_cfg(lf), load_cfg(crlf)
    assert windows.net == plain.net
    assert windows.solver == plain.solver
    crlf_warnings = [d for d in windows.diagnostics if "CR" in d.message]
    assert len(crlf_warnings) == 1 and crlf_warnings[0].severity == "warning"
    assert windows.net.layers[0].activation == "leaky"


def test_key_with_empty_value_is_ignored_with_a_diagnostic():
    spec = load_cfg(NET + "momentum=\n" + TAIL)
    assert spec.solver.momentum == f32(0.9)
    (warning,) = warnings_for(spec, "momentum")
    assert warning.line == 6 and "no value" in warning.message


def test_line_without_equals_is_a_key_without_value_so_the_default_is_used():
    spec = load_cfg(NET + "[convolutional]\nfilters=2\nsize=3\npad\npad=1\n" + TAIL)
    conv = spec.net.layers[0]
    # darknet quirk: the first 'pad' (no value) wins the lookup, so pad=1 is never read
    assert conv.pad_h == 0
    assert any(d.key == "pad" and d.line == 9 for d in spec.diagnostics)
    assert any(
        d.key == "pad" and d.line == 10 and "duplicate" in d.message for d in spec.diagnostics
    )


def test_key_before_any_section_is_an_error_with_its_line():
    (error,) = cfg_errors("\n# header\nbatch=1\n" + NET + TAIL)
    assert (error.file, error.line, error.key) == ("t.cfg", 3, "batch")


def test_first_section_must_be_net():
    (error,) = cfg_errors("[convolutional]\nfilters=1\n" + NET + TAIL)
    assert error.line == 1 and "[net] or [network]" in error.message


def test_network_is_an_alias_of_net():
    spec = load_cfg(NET.replace("[net]", "[network]") + TAIL)
    assert spec.net.input.height == 8


def test_net_with_inline_comment_is_not_net():
    (error, *_) = cfg_errors("[net] # main\nheight=8\n" + TAIL)
    assert error.line == 1 and "[net]#main" in error.message


def test_empty_file_is_an_error():
    (error,) = cfg_errors("# nothing\n\n")
    assert "no sections" in error.message


def test_strip_removes_spaces_tabs_and_cr_only():
    assert strip_line(" a =\tb c\r") == "a=bc"
    assert strip_line("a=\x0cb") == "a=\x0cb"


def test_form_feed_is_not_a_line_break():
    sink = DiagnosticSink()
    sections = read_cfg("t.cfg", "[net]\nbatch=1\x0cx=2\n", sink)
    assert [(o.key, o.value) for o in sections[0].options] == [("batch", "1\x0cx=2")]


def test_dispatcher_reads_darknet_text(tmp_path):
    path = tmp_path / "small.cfg"
    path.write_text(NET + "learning_rate=0.5\n" + TAIL)
    spec = load_config(str(path))
    assert spec.format == "darknet" and spec.net.name == "small"
    assert spec.schedule.base_lr == 0.5
    from_text = load_config("x.cfg", [("batch", "4")], text=NET + TAIL)
    assert from_text.solver.minibatch == 4
    from_stdin = load_config("-", text="# darknet\n" + NET + TAIL)
    assert from_stdin.config_path == "<stdin>" and from_stdin.net.name == "stdin"


def test_dispatcher_errors_are_config_errors_with_locations(tmp_path):
    path = tmp_path / "bad.cfg"
    path.write_text(NET + "[yolo]\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    (error,) = info.value.diagnostics
    assert error.file == str(path) and error.line == 6


# -- property tests ---------------------------------------------------------------------------

KEYS = st.sampled_from(["learning_rate", "momentum", "decay"])
VALUES = st.floats(min_value=1e-4, max_value=10, allow_nan=False).map(lambda v: f"{v:.6g}")
BLANKS = st.text(alphabet=" \t", max_size=3)


@st.composite
def spaced(draw, text: str) -> str:
    """Insert random spaces/tabs between the characters of ``text``."""
    return "".join(draw(BLANKS) + ch for ch in text) + draw(BLANKS)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), key=KEYS, value=VALUES)
def test_spaces_and_tabs_anywhere_never_change_the_value(data, key, value):
    line = data.draw(spaced(f"{key}={value}"))
    spaced_spec = load_cfg(NET + line + "\n" + TAIL)
    plain_spec = load_cfg(NET + f"{key}={value}\n" + TAIL)
    assert spaced_spec.schedule == plain_spec.schedule
    assert spaced_spec.solver == plain_spec.solver


@settings(max_examples=60, deadline=None)
@given(values=st.lists(VALUES, min_size=1, max_size=4), comment=st.text(max_size=20))
def test_first_occurrence_wins_and_comment_lines_are_inert(values, comment):
    comment_line = "#" + comment.replace("\n", " ").replace("\r", " ")
    lines = [f"learning_rate={v}\n{comment_line}\n" for v in values]
    spec = load_cfg(NET + "".join(lines) + TAIL)
    assert spec.schedule.base_lr == f32(float(values[0]))
    duplicates = [d for d in spec.diagnostics if d.key == "learning_rate"]
    assert len(duplicates) == len(values) - 1


@settings(max_examples=40, deadline=None)
@given(number=st.integers(min_value=1, max_value=10_000), garbage=st.text("#x;a.,", min_size=1))
def test_trailing_garbage_reads_the_numeric_prefix_with_a_warning(number, garbage):
    if garbage[0] in ".,":
        garbage = "#" + garbage
    spec = load_cfg(NET + f"burn_in={number}{garbage}\n" + TAIL)
    assert spec.schedule.burn_in == number
    assert any(d.key == "burn_in" and "trailing" in d.message for d in spec.diagnostics)


SECTION_NAMES = st.sampled_from(
    ["[net]", "[convolutional]", "[connected]", "[maxpool]", "[avgpool]", "[dropout]",
     "[softmax]", "[cost]", "[batchnorm]", "[yolo]", "[bogus]", "[net]#x"]
)  # fmt: skip
KEY_NAMES = st.sampled_from(
    ["batch", "subdivisions", "height", "width", "channels", "inputs", "filters", "size",
     "stride", "pad", "padding", "groups", "output", "probability", "policy", "steps",
     "scales", "learning_rate", "activation", "type", "data", "x", ""]
)  # fmt: skip
RAW_VALUES = st.one_of(
    st.integers(-3, 40).map(str), st.sampled_from(["", "leaky", "steps", "1,2", ".5", "#"])
)


@st.composite
def random_cfg(draw) -> str:
    lines = []
    for _ in range(draw(st.integers(0, 25))):
        choice = draw(st.integers(0, 5))
        if choice == 0:
            lines.append(draw(SECTION_NAMES))
        elif choice == 1:
            lines.append(draw(st.sampled_from(["# c", "; c", "", "  ", "novalue", "\r"])))
        else:
            lines.append(f"{draw(KEY_NAMES)}={draw(RAW_VALUES)}")
    return "\n".join(lines)


@settings(max_examples=150, deadline=None)
@given(text=random_cfg())
def test_any_text_gives_a_spec_or_a_config_error_never_a_crash(text):
    try:
        spec = load_cfg(text)
    except ConfigError as error:
        assert any(d.severity == "error" for d in error.diagnostics)
        assert all(d.file == "t.cfg" and d.message for d in error.diagnostics)
    else:
        assert spec.net.layers
