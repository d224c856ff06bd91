"""Issue 18's fuzz suite, config half: Hypothesis mutates real configs (ours in configs/,
Debian's darknet cfgs when installed, and seeds embedded here so the suite runs anywhere) with
the operators that broke the readers (byte flips, truncation, duplicated and deleted lines,
deep nesting, recursive YAML, Unicode digits, huge and non-finite numbers, long lines and
paths, binary inserts) and checks ``inspect``, ``lr-schedule`` and ``load_config``: exit 0 or
1 (or a RunSpec / ConfigError), never a traceback, bounded output, no hang.

The CLI runs in-process (Typer's CliRunner) to stay fast; a few subprocess tests check the
real exit codes. Examples are derandomized (no database), a few hundred per run in all.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dnupdate.cli.main import app
from dnupdate.engine.config import load_config
from dnupdate.engine.spec import ConfigError, RunSpec

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()

MAX_OUTPUT = 256_000  # bytes of stdout + stderr one fuzzed call may print, plus
PER_LINE = 500  # per input line (a net of 1,000 layers legitimately prints 1,000 table rows)
HANG_SECONDS = 60  # a guard against hangs, not a timing assertion

# ---- seeds ---------------------------------------------------------------------------------

DARKNET_SEED = """[net]
batch=8
subdivisions=1
height=8
width=8
channels=1
learning_rate=0.1
momentum=0.9
decay=0.0005
policy=steps
steps=20,40
scales=.1,.1
burn_in=5
max_batches=60

[convolutional]
filters=4
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[connected]
output=10
activation=linear

[softmax]
groups=1
"""

CAFFE_NET_SEED = """name: "n"
layer { name: "d" type: "Data" top: "data" top: "label"
  data_param { source: "mnist" batch_size: 8 backend: LMDB }
  transform_param { scale: 0.00390625 } }
layer { name: "c" type: "Convolution" bottom: "data" top: "c"
  convolution_param { num_output: 4 kernel_size: 5 weight_filler { type: "xavier" } } }
layer { name: "p" type: "Pooling" bottom: "c" top: "p"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "p" top: "ip"
  inner_product_param { num_output: 10 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""

CAFFE_SOLVER_SEED = """net: "net.prototxt"
base_lr: 0.01
momentum: 0.9
weight_decay: 0.0005
lr_policy: "multistep"
gamma: 0.1
stepvalue: 20
stepvalue: 40
max_iter: 60
display: 10
snapshot_prefix: "snap"
"""

YAML_SOLVER_SEED = """net: net.prototxt
base_lr: 0.01
momentum: 0.9
lr_policy: inv
gamma: 0.0001
power: 0.75
max_iter: 60
"""


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="surrogateescape")


def darknet_seeds() -> list[str]:
    """The embedded seed, ours, and a few of Debian's (when installed)."""
    ours = sorted((ROOT / "configs").glob("*.cfg"))
    debian = sorted(Path("/usr/share/darknet/cfg").glob("*.cfg"))[:6]
    return [DARKNET_SEED, *(_read(p) for p in ours + debian)]


def caffe_seeds() -> list[tuple[str, str]]:
    """(solver, net) text pairs: the embedded one and ours (the net inlined by file name)."""
    pairs = [(CAFFE_SOLVER_SEED, CAFFE_NET_SEED)]
    for solver in sorted((ROOT / "configs").glob("*solver*.prototxt")):
        text = _read(solver)
        for net in (ROOT / "configs").glob("*train_test.prototxt"):
            if net.name in text:
                pairs.append((text.replace(net.name, "net.prototxt"), _read(net)))
    return pairs


def yaml_seeds() -> list[str]:
    texts = [YAML_SOLVER_SEED]
    texts += [_read(p) for p in sorted((ROOT / "configs").glob("*.yaml"))]
    return [t.replace("lenet_train_test.prototxt", "net.prototxt") for t in texts]


# ---- mutation operators ----------------------------------------------------------------------

UNICODE_DIGITS = "٠١٢٣٤٥٦٧٨٩０１２３４５６７８９߀०"
HOSTILE_NUMBERS = [
    "nan", "-nan", "inf", "-inf", "1e999", "-1e999", "1e39", "0", "-0", "-1", "-2147483648",
    "2147483647", "2147483648", "9" * 5000, "0x7fffffff", "1e-45", "4294967296",
    "18446744073709551616", "0.", ".", "-", "+",
]  # fmt: skip
BINARY = [b"\x00", b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x1b[31m", b"\r", b"\x0c"]


@st.composite
def mutate(draw, text: str, yaml_like: bool = False) -> bytes:
    """One to three mutations of ``text``, returned as the bytes to write."""
    data = text.encode("utf-8", "surrogateescape")
    for _ in range(draw(st.integers(1, 3))):
        data = draw(st.sampled_from(OPERATORS))(draw, data, yaml_like)
    return data


def _position(draw, data: bytes) -> int:
    return draw(st.integers(0, len(data)))


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def byte_flip(draw, data: bytes, _yaml: bool) -> bytes:
    if not data:
        return data
    index = draw(st.integers(0, len(data) - 1))
    return data[:index] + bytes([draw(st.integers(0, 255))]) + data[index + 1 :]


def truncate(draw, data: bytes, _yaml: bool) -> bytes:
    return data[: _position(draw, data)]


def duplicate_line(draw, data: bytes, _yaml: bool) -> bytes:
    lines = _lines(data)
    index = draw(st.integers(0, len(lines) - 1))
    times = draw(st.sampled_from([1, 2, 1000]))
    return b"\n".join(lines[: index + 1] + [lines[index]] * times + lines[index + 1 :])


def delete_line(draw, data: bytes, _yaml: bool) -> bytes:
    lines = _lines(data)
    index = draw(st.integers(0, len(lines) - 1))
    return b"\n".join(lines[:index] + lines[index + 1 :])


def deep_nesting(draw, data: bytes, yaml_like: bool) -> bytes:
    depth = draw(st.sampled_from([50, 101, 600, 3000]))
    if yaml_like:
        nested = b"deep: " + b"[" * depth + b"]" * depth + b"\n"
    else:
        nested = b"a {" * depth + b"}" * depth + b"\n"
    spot = _position(draw, data)
    return data[:spot] + b"\n" + nested + data[spot:]


def recursive_yaml(draw, data: bytes, _yaml: bool) -> bytes:
    loop = draw(
        st.sampled_from([b"loop: &l {a: *l}\n", b"net_param: &n {layer: [*n]}\n", b"x: &x [*x]\n"])
    )
    return loop + data if draw(st.booleans()) else data + b"\n" + loop


def unicode_digits(draw, data: bytes, _yaml: bool) -> bytes:
    digits = [i for i, b in enumerate(data) if 0x30 <= b <= 0x39]
    if not digits:
        return data
    index = draw(st.sampled_from(digits))
    replacement = draw(st.sampled_from(UNICODE_DIGITS)).encode("utf-8")
    return data[:index] + replacement + data[index + 1 :]


def hostile_number(draw, data: bytes, _yaml: bool) -> bytes:
    digits = [i for i, b in enumerate(data) if 0x30 <= b <= 0x39]
    if not digits:
        return data
    start = draw(st.sampled_from(digits))
    end = start
    while end < len(data) and (0x30 <= data[end] <= 0x39 or data[end] in b".eE-"):
        end += 1
    number = draw(st.sampled_from(HOSTILE_NUMBERS)).encode()
    return data[:start] + number + data[end:]


def long_line(draw, data: bytes, _yaml: bool) -> bytes:
    lines = _lines(data)
    index = draw(st.integers(0, len(lines) - 1))
    length = draw(st.sampled_from([300, 5000, 200_000]))
    lines[index] = lines[index] + draw(st.sampled_from([b"x", b"9", b"/", b" "])) * length
    return b"\n".join(lines)


def long_path(draw, data: bytes, _yaml: bool) -> bytes:
    name = b"d/" * draw(st.sampled_from([10, 200])) + b"x" * draw(st.sampled_from([50, 300]))
    for key in (b'net: "', b"net: ", b"data=", b'source: "'):
        if key in data:
            return data.replace(key, key + name + b"/", 1)
    return data + b'\nnet: "' + name + b'"\n'


def binary_insert(draw, data: bytes, _yaml: bool) -> bytes:
    spot = _position(draw, data)
    return data[:spot] + draw(st.sampled_from(BINARY)) * draw(st.integers(1, 3)) + data[spot:]


OPERATORS = [
    byte_flip, truncate, duplicate_line, delete_line, deep_nesting, recursive_yaml,
    unicode_digits, hostile_number, long_line, long_path, binary_insert,
]  # fmt: skip


# ---- the checks ------------------------------------------------------------------------------


@contextlib.contextmanager
def hang_guard(seconds: int = HANG_SECONDS):
    """Fail (instead of hanging the suite) when a call runs past ``seconds``."""

    def expired(signum, frame):
        raise AssertionError(f"a fuzzed config ran past {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def check_cli(args: list[str], lines: int = 0) -> None:
    """Exit 0 or 1, no exception escaping the command, output bounded by the input's number
    of ``lines`` (never by its length: a 5 MB line is not echoed)."""
    with hang_guard():
        result = runner.invoke(app, args)
    escaped = result.exception
    if escaped is not None and not isinstance(escaped, SystemExit):
        raise AssertionError(f"{args[0]} raised {type(escaped).__name__}: {escaped}") from escaped
    assert result.exit_code in (0, 1), (result.exit_code, result.output[-2000:])
    assert "Traceback" not in result.output
    size = len(result.stdout_bytes) + len(result.stderr_bytes or b"")
    assert size < MAX_OUTPUT + PER_LINE * lines, f"{args[0]} printed {size:,} bytes"
    if result.exit_code == 1:
        assert result.stderr.strip(), "exit 1 says why on stderr"


def check_load(path: Path) -> None:
    """load_config gives a RunSpec or a ConfigError carrying at least one error."""
    with hang_guard():
        try:
            run = load_config(str(path))
        except ConfigError as error:
            assert any(d.severity == "error" for d in error.diagnostics)
            return
    assert isinstance(run, RunSpec)


def check_all(path: Path, *others: Path) -> None:
    lines = sum(p.read_bytes().count(b"\n") for p in (path, *others))
    check_load(path)
    check_cli(["inspect", str(path)], lines)
    check_cli(["inspect", str(path), "--format", "json"], lines)
    check_cli(["lr-schedule", str(path), "--iters", "300"], lines)


FUZZ = settings(
    max_examples=90,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(data=st.data())
def test_fuzzed_darknet_cfgs_exit_0_or_1(data):
    seed = data.draw(st.sampled_from(darknet_seeds()), label="seed")
    mutated = data.draw(mutate(seed), label="mutated")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.cfg"
        path.write_bytes(mutated)
        check_all(path)


@FUZZ
@given(data=st.data())
def test_fuzzed_caffe_solver_and_net_exit_0_or_1(data):
    solver, net = data.draw(st.sampled_from(caffe_seeds()), label="seed")
    which = data.draw(st.sampled_from(["solver", "net"]), label="which")
    with tempfile.TemporaryDirectory() as folder:
        solver_path, net_path = Path(folder) / "solver.prototxt", Path(folder) / "net.prototxt"
        solver_bytes, net_bytes = solver.encode(), net.encode()
        if which == "solver":
            solver_bytes = data.draw(mutate(solver), label="solver")
        else:
            net_bytes = data.draw(mutate(net), label="net")
        solver_path.write_bytes(solver_bytes)
        net_path.write_bytes(net_bytes)
        check_all(solver_path, net_path)


@settings(FUZZ, max_examples=60)
@given(data=st.data())
def test_fuzzed_yaml_solvers_exit_0_or_1(data):
    seed = data.draw(st.sampled_from(yaml_seeds()), label="seed")
    mutated = data.draw(mutate(seed, yaml_like=True), label="mutated")
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "net.prototxt").write_text(CAFFE_NET_SEED)
        path = Path(folder) / "solver.yaml"
        path.write_bytes(mutated)
        check_all(path)


SET_VALUES = st.sampled_from([*HOSTILE_NUMBERS, "６４", "٠.٥", "x" * 5000, "", "=", "1,2,,3"])
DARKNET_KEYS = ["learning_rate", "momentum", "decay", "batch", "max_batches", "policy", "step",
                "steps", "scales", "power", "gamma", "burn_in", "sgdr_cycle", "sgdr_mult",
                "warmup", "seed"]  # fmt: skip
CAFFE_KEYS = ["base_lr", "momentum", "weight_decay", "lr_policy", "stepsize", "stepvalue",
              "gamma", "power", "max_iter", "clip_gradients", "momentum2", "iter_size"]  # fmt: skip


@settings(FUZZ, max_examples=60)
@given(
    darknet=st.booleans(),
    pairs=st.lists(st.tuples(st.sampled_from(DARKNET_KEYS + CAFFE_KEYS), SET_VALUES), max_size=3),
    policy=st.sampled_from(["steps", "step", "random", "sgdr", "cosine", "poly", "multistep"]),
)
def test_fuzzed_set_options_exit_0_or_1(darknet, pairs, policy):
    key = "policy" if darknet else "lr_policy"
    sets = [f"{key}={policy}"] + [f"{k}={v}" for k, v in pairs]
    options = [part for item in sets for part in ("--set", item)]
    check_cli(["lr-schedule", *options, "--iters", "200"])
    config = ROOT / "configs" / ("quickstart.cfg" if darknet else "lenet_solver.prototxt")
    if config.exists():
        check_cli(["inspect", str(config), *options])


# ---- real exit codes, in a subprocess --------------------------------------------------------


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from dnupdate.cli.main import app; app()", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
    )


@pytest.mark.parametrize(
    "name, text, args, code",
    [
        ("r.yaml", "loop: &l {a: *l}\n", ["inspect"], 1),
        ("n.prototxt", "a {" * 600 + "}" * 600, ["inspect"], 1),
        ("q.cfg", DARKNET_SEED.replace("policy=steps", "policy=random"), ["inspect"], 0),
        ("s.cfg", DARKNET_SEED.replace("policy=steps", "policy=step\nstep=0"), ["inspect"], 1),
        ("u.cfg", DARKNET_SEED.replace("batch=8", "batch=６４"), ["lr-schedule"], 1),
    ],
)
def test_exit_codes_in_a_real_process(tmp_path, name, text, args, code):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    result = run_cli(*args, str(path))
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    if code == 1:
        assert result.stderr.startswith(str(path)), result.stderr


def test_binary_config_on_stdin_is_exit_1_in_a_real_process():
    result = run_cli("inspect", "-", stdin="\x00\x01[net]\x7f")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
