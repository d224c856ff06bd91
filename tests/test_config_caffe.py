"""Caffe solver + net → RunSpec mapping rules: defaults, every layer type, data layers,
phases, inline nets, YAML, the V1 upgrade and ``--set`` overrides."""

import dataclasses
from pathlib import Path

import pytest

import dnupdate.engine.data
from dnupdate.engine.config import load_config, schedule_from_options
from dnupdate.engine.config.caffe import caffe_schedule_from_options, load_caffe
from dnupdate.engine.spec import (
    DEFAULT,
    ActivationSpec,
    BatchNormSpec,
    ConfigError,
    DropoutSpec,
    FillerSpec,
    InputSpec,
    Origin,
    ParamMult,
    ScaleSpec,
    ScheduleSpec,
)

DATA = """
layer { name: "d" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { scale: 0.5 }
  data_param { source: "mnist_train" batch_size: 8 backend: LMDB } }
layer { name: "t" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { scale: 0.5 }
  data_param { source: "mnist_test" batch_size: 4 backend: LMDB } }
"""
LOSS = """
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "%s" bottom: "label" top: "loss" }
"""
IP = """
layer { name: "ip" type: "InnerProduct" bottom: "%s" top: "ip"
  inner_product_param { num_output: 10 } }
"""
SOLVER = 'net: "net.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\n'


def net_text(body: str, last: str) -> str:
    """A Data pair, ``body``, an InnerProduct reading ``last`` and the loss."""
    return 'name: "n"\n' + DATA + body + IP % last + LOSS % "ip"


def write_net(tmp_path: Path, net: str, solver: str = SOLVER) -> Path:
    """Write ``net`` as ``net.prototxt`` and ``solver`` (which names it) as
    ``solver.prototxt``; return the solver's path."""
    (tmp_path / "net.prototxt").write_text(net)
    path = tmp_path / "solver.prototxt"
    path.write_text(solver)
    return path


def write_run(tmp_path: Path, body: str = "", last: str = "data", solver: str = SOLVER):
    return write_net(tmp_path, net_text(body, last), solver)


def load(tmp_path: Path, body: str = "", last: str = "data", solver: str = SOLVER, sets=()):
    path = write_run(tmp_path, body, last, solver)
    return load_config(str(path), list(sets))


def layer(run, name: str):
    return next(item for item in run.net.layers if item.name == name)


def strip_origins(value):
    """Replace every Origin inside frozen specs by DEFAULT (inline nets in two formats differ
    only in their line numbers)."""
    if isinstance(value, Origin):
        return DEFAULT
    if isinstance(value, tuple):
        return tuple(strip_origins(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: strip_origins(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return dataclasses.replace(value, **changes)
    return value


# --------------------------------------------------------------------------------------------
# Solver defaults and fields
# --------------------------------------------------------------------------------------------


def test_solver_defaults_follow_proto2(tmp_path):
    run = load(tmp_path)
    solver, schedule = run.solver, run.schedule
    assert solver.optimizer == "sgd"
    assert (solver.momentum, solver.decay, solver.regularization) == (0.0, 0.0, "L2")
    assert (solver.accumulate, solver.max_iter, solver.average_loss) == (1, 0, 1)
    assert (solver.beta2, solver.eps, solver.rms_decay, solver.clip_gradients) == (
        0.999, 1e-8, 0.99, -1.0
    )  # fmt: skip
    assert (solver.display, solver.test_interval, solver.test_iter, solver.snapshot) == (0, 0, 0, 0)
    assert solver.test_initialization is True and solver.random_seed == -1
    assert solver.beta1 == 0.0  # Adam's beta1 is momentum, which has no default
    assert solver.snapshot_prefix == str(tmp_path / "solver")
    assert (schedule.gamma, schedule.power, schedule.step, schedule.steps) == (0.0, 0.0, 0, ())
    assert run.origins["solver.momentum"] == DEFAULT
    assert run.raw == {"net": "net.prototxt", "base_lr": "0.1", "lr_policy": "fixed"}


def test_snapshot_prefix_directory_rule(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "snaps").mkdir()
    run = load(tmp_path, solver=SOLVER + 'snapshot_prefix: "snaps"\n')
    assert run.solver.snapshot_prefix == str(Path("snaps") / "solver")


@pytest.mark.parametrize(
    ("lines", "optimizer"),
    [
        ('type: "Adam"\nmomentum: 0.9', "adam"),
        ('type: "Nesterov"', "nesterov"),
        ('type: "AdaGrad"', "adagrad"),
        ('type: "RMSProp"', "rmsprop"),
        ('type: "AdaDelta"', "adadelta"),
        ("solver_type: ADAM", "adam"),
        ("solver_type: NESTEROV", "nesterov"),
    ],
)
def test_solver_type_and_deprecated_enum(tmp_path, lines, optimizer):
    assert load(tmp_path, solver=SOLVER + lines + "\n").solver.optimizer == optimizer


def test_adam_fields(tmp_path):
    extra = 'type: "Adam"\nmomentum: 0.8\nmomentum2: 0.99\ndelta: 1e-6\niter_size: 3\n'
    solver = load(tmp_path, solver=SOLVER + extra + "clip_gradients: 5\nrandom_seed: 7\n").solver
    assert (solver.beta1, solver.beta2, solver.eps) == (0.8, 0.99, 1e-6)
    assert (solver.accumulate, solver.batch, solver.clip_gradients) == (3, 24, 5.0)
    assert solver.random_seed == 7


def test_schedule_fields(tmp_path):
    extra = 'lr_policy: "multistep"\ngamma: 0.5\nstepvalue: 10\nstepvalue: 20\nmax_iter: 30\n'
    run = load(tmp_path, solver='net: "net.prototxt"\nbase_lr: 0.1\n' + extra)
    assert run.schedule == ScheduleSpec(
        convention="caffe", policy="multistep", base_lr=0.1, gamma=0.5, power=0.0,
        step=0, steps=(10, 20), max_iter=30,
    )  # fmt: skip
    assert run.raw["stepvalue"] == "10,20"


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------


def test_convolution_fields_and_fillers(tmp_path):
    body = """
layer { name: "c" type: "Convolution" bottom: "data" top: "c"
  param { lr_mult: 0.5 decay_mult: 0 }
  convolution_param { num_output: 6 kernel_h: 3 kernel_w: 5 stride_h: 2 stride_w: 1
    pad: 1 group: 2 dilation: 2 bias_term: true
    weight_filler { type: "msra" variance_norm: FAN_OUT }
    bias_filler { type: "uniform" min: -0.1 max: 0.2 } } }
"""
    conv = layer(load(tmp_path, body, "c"), "c")
    assert (conv.filters, conv.kernel_h, conv.kernel_w, conv.stride_h, conv.stride_w) == (
        6, 3, 5, 2, 1
    )  # fmt: skip
    assert (conv.pad_h, conv.pad_w, conv.groups, conv.dilation, conv.bias) == (1, 1, 2, 2, True)
    assert conv.weight_filler == FillerSpec(type="msra", variance_norm="fan_out")
    assert conv.bias_filler == FillerSpec(type="uniform", min=-0.1, max=0.2)
    assert conv.params == (ParamMult(0.5, 0.0), ParamMult(1.0, 1.0))


def test_convolution_two_value_kernel_and_no_bias(tmp_path):
    body = """
layer { name: "c" type: "Convolution" bottom: "data" top: "c"
  convolution_param { num_output: 4 kernel_size: 3 kernel_size: 1 bias_term: false } }
"""
    conv = layer(load(tmp_path, body, "c"), "c")
    assert (conv.kernel_h, conv.kernel_w, conv.stride_h, conv.pad_h, conv.bias) == (
        3, 1, 1, 0, False
    )  # fmt: skip
    assert conv.weight_filler == FillerSpec()  # unset filler: constant 0
    assert conv.params == (ParamMult(),)


def test_pooling_defaults_and_options(tmp_path):
    body = """
layer { name: "p1" type: "Pooling" bottom: "data" top: "p1" pooling_param { kernel_size: 3 } }
layer { name: "p2" type: "Pooling" bottom: "p1" top: "p2"
  pooling_param { pool: AVE kernel_h: 2 kernel_w: 3 stride: 2 pad: 1 round_mode: FLOOR } }
layer { name: "p3" type: "Pooling" bottom: "p2" top: "p3"
  pooling_param { pool: AVE global_pooling: true } }
"""
    run = load(tmp_path, body, "p3")
    p1, p2, p3 = (layer(run, n) for n in ("p1", "p2", "p3"))
    assert (p1.method, p1.kernel_h, p1.stride_h, p1.stride_w, p1.size_rule) == (
        "max", 3, 1, 1, "ceil"
    )  # fmt: skip
    assert (p2.method, p2.kernel_h, p2.kernel_w, p2.stride_h, p2.pad_h, p2.pad_w) == (
        "ave", 2, 3, 2, 1, 1
    )  # fmt: skip
    assert p2.size_rule == "floor"
    assert p3.global_pooling is True and p3.stride_h == 1 and p3.pad_h == 0


def test_activations_dropout_batchnorm_scale(tmp_path):
    body = """
layer { name: "r" type: "ReLU" bottom: "data" top: "data" relu_param { negative_slope: 0.1 } }
layer { name: "s" type: "Sigmoid" bottom: "data" top: "data" }
layer { name: "t" type: "TanH" bottom: "data" top: "data" }
layer { name: "dr" type: "Dropout" bottom: "data" top: "data" dropout_param { dropout_ratio: .3 } }
layer { name: "bn" type: "BatchNorm" bottom: "data" top: "data"
  param { lr_mult: 0 } batch_norm_param { use_global_stats: false eps: 1e-3 } }
layer { name: "sc" type: "Scale" bottom: "data" top: "data"
  param { lr_mult: 1 decay_mult: 0 } scale_param { bias_term: true } }
"""
    run = load(tmp_path, body)
    relu, sigmoid, tanh = (layer(run, n) for n in ("r", "s", "t"))
    assert isinstance(relu, ActivationSpec)
    assert (relu.activation, relu.negative_slope) == ("relu", 0.1)
    assert (sigmoid.activation, tanh.activation) == ("logistic", "tanh")
    dropout = layer(run, "dr")
    assert isinstance(dropout, DropoutSpec)
    assert (dropout.probability, dropout.style) == (0.3, "caffe")
    bn = layer(run, "bn")
    assert isinstance(bn, BatchNormSpec)
    assert (bn.style, bn.use_global_stats, bn.eps, bn.moving_average_fraction) == (
        "caffe", False, 1e-3, 0.999
    )  # fmt: skip
    assert [m.lr_mult for m in bn.params] == [0.0, 0.0, 0.0] and len(bn.params) == 3
    scale = layer(run, "sc")
    assert isinstance(scale, ScaleSpec)
    assert scale.bias_term is True
    assert scale.filler == FillerSpec(type="constant", value=1.0)
    assert scale.bias_filler == FillerSpec()
    assert scale.params == (ParamMult(1.0, 0.0), ParamMult(1.0, 1.0))


def test_batchnorm_use_global_stats_unset_is_none(tmp_path):
    body = 'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "data" }\n'
    assert layer(load(tmp_path, body), "bn").use_global_stats is None


def test_loss_normalization_rules_and_accuracy(tmp_path):
    solver_net = (
        'name: "n"\n'
        + DATA
        + IP % "data"
        + """
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc"
  include { phase: TEST } accuracy_param { top_k: 5 ignore_label: 3 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss"
  loss_weight: 2 loss_param { normalize: false ignore_label: -1 } }
"""
    )
    run = load_config(str(write_net(tmp_path, solver_net)))
    acc, loss = layer(run, "acc"), layer(run, "loss")
    assert (acc.top_k, acc.ignore_label, acc.phases) == (5, 3, frozenset({"test"}))
    assert (loss.normalization, loss.ignore_label, loss.loss_weight) == ("batch_size", -1, 2.0)


@pytest.mark.parametrize(
    ("param", "expected"),
    [("normalize: true", "valid"), ("normalization: FULL", "full"), ("", "valid"),
     ("normalization: NONE normalize: false", "none")],
)  # fmt: skip
def test_normalization(tmp_path, param, expected):
    text = 'name: "n"\n' + DATA + IP % "data"
    text += f"""layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label"
  loss_param {{ {param} }} }}"""
    assert layer(load_config(str(write_net(tmp_path, text))), "loss").normalization == expected


def test_exclude_rule_and_phases(tmp_path):
    body = """
layer { name: "dr" type: "Dropout" bottom: "data" top: "data" exclude { phase: TEST } }
"""
    assert layer(load(tmp_path, body), "dr").phases == frozenset({"train"})


def test_stage_rules_follow_solver_train_state(tmp_path):
    body = """
layer { name: "dr" type: "Dropout" bottom: "data" top: "data" include { stage: "extra" } }
"""
    run = load(tmp_path, body, solver=SOLVER + 'train_state { stage: "extra" }\n')
    assert layer(run, "dr").phases == frozenset({"train"})
    run = load(tmp_path, body)
    assert all(item.name != "dr" for item in run.net.layers)
    assert any("no phase" in d.message for d in run.diagnostics)


# --------------------------------------------------------------------------------------------
# Data layers and input shapes
# --------------------------------------------------------------------------------------------


def test_data_source_fields(tmp_path):
    (tmp_path / "mean.binaryproto").write_bytes(b"")
    net = (
        """name: "n"
layer { name: "d" type: "Data" top: "data" top: "label"
  transform_param { mean_file: "mean.binaryproto" mirror: true crop_size: 24 }
  data_param { source: "cifar_train" batch_size: 5 } }
"""
        + IP % "data"
        + LOSS % "ip"
    )
    run = load_config(str(write_net(tmp_path, net)))
    source = run.data.train
    assert run.net.input == InputSpec(3, 24, 24)
    assert source.mean_file == str(tmp_path / "mean.binaryproto")
    assert (source.mirror, source.crop_size, source.backend, source.batch_size) == (
        True, 24, "leveldb", 5
    )  # fmt: skip
    assert run.data.test == source  # one Data layer without rules serves both phases
    assert run.origins["net.input"].line == 3


def test_mean_values_are_kept(tmp_path):
    net = (
        """layer { name: "d" type: "Data" top: "data" top: "label"
  transform_param { mean_value: 104 mean_value: 117 mean_value: 123 }
  data_param { source: "cifar" batch_size: 5 backend: LMDB } }
"""
        + IP % "data"
        + LOSS % "ip"
    )
    run = load_config(str(write_net(tmp_path, net)))
    assert run.data.train.mean_values == (104.0, 117.0, 123.0)
    assert run.data.train.mean_file is None


def test_input_layer_shape(tmp_path):
    net = (
        """layer { name: "in" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 16 dim: 2 dim: 9 dim: 7 } shape { dim: 16 } } }
"""
        + IP % "data"
        + LOSS % "ip"
    )
    run = load_config(str(write_net(tmp_path, net)))
    assert run.net.input == InputSpec(2, 9, 7)
    assert run.solver.minibatch == 16 and run.data.train.source is None


def test_deprecated_net_input_fields(tmp_path):
    net = 'input: "data"\ninput_dim: 4\ninput_dim: 1\ninput_dim: 5\ninput_dim: 6\n'
    net += IP % "data"
    run = load_config(str(write_net(tmp_path, net)))
    assert run.net.input == InputSpec(1, 5, 6) and run.solver.minibatch == 4


def test_probe_shape_is_used_for_unknown_sources(tmp_path, monkeypatch):
    seen = []

    def probe(source):
        seen.append(source)
        return (2, 6, 6)

    monkeypatch.setattr(dnupdate.engine.data, "probe_shape", probe, raising=False)
    net = (
        """layer { name: "d" type: "HDF5Data" top: "data" top: "label"
  hdf5_data_param { source: "files.txt" batch_size: 3 shuffle: true } }
"""
        + IP % "data"
        + LOSS % "ip"
    )
    run = load_config(str(write_net(tmp_path, net)))
    assert seen == ["h5:files.txt"]  # HDF5Data sources are read as h5: sources
    assert run.net.input == InputSpec(2, 6, 6)
    assert (run.data.train.backend, run.data.train.shuffle, run.solver.minibatch) == (
        "hdf5", True, 3
    )  # fmt: skip


def test_unknown_source_shape_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(dnupdate.engine.data, "probe_shape", lambda source: None, raising=False)
    net = (
        """layer { name: "d" type: "Data" top: "data" top: "label"
  data_param { source: "mystery_lmdb" batch_size: 3 } }
"""
        + IP % "data"
        + LOSS % "ip"
    )
    solver_path = write_net(tmp_path, net)
    with pytest.raises(ConfigError) as info:
        load_config(str(solver_path))
    (error,) = [d for d in info.value.diagnostics if d.severity == "error"]
    assert "cannot tell the input shape of source 'mystery_lmdb'" in error.message
    assert (error.line, error.key) == (2, "source")


# --------------------------------------------------------------------------------------------
# Inline nets, YAML, legacy V1
# --------------------------------------------------------------------------------------------


def test_inline_net_param_equals_net_file(tmp_path):
    from_file = load(tmp_path)
    inline = "base_lr: 0.1\nlr_policy: 'fixed'\nnet_param {\n" + net_text("", "data") + "}\n"
    path = tmp_path / "inline.prototxt"
    path.write_text(inline)
    run = load_config(str(path))
    assert strip_origins(run.net) == strip_origins(from_file.net)
    assert strip_origins(run.data) == strip_origins(from_file.data)
    assert run.net.layers[0].origin.file == str(path)


def test_yaml_inline_net_param_equals_prototxt(tmp_path):
    text_path = tmp_path / "inline.prototxt"
    text_path.write_text(
        "base_lr: 0.1\nlr_policy: 'fixed'\nstepvalue: [3, 4]\nnet_param {\n"
        + net_text('layer { name: "r" type: "ReLU" bottom: "data" top: "data" }', "data")
        + "}\n"
    )
    yaml_path = tmp_path / "inline.yaml"
    yaml_path.write_text(
        """base_lr: 0.1
lr_policy: fixed
stepvalue: [3, 4]
net_param:
  name: n
  layer:
    - {name: d, type: Data, top: [data, label], include: {phase: TRAIN},
       transform_param: {scale: 0.5},
       data_param: {source: mnist_train, batch_size: 8, backend: LMDB}}
    - name: t
      type: Data
      top: [data, label]
      include: {phase: TEST}
      transform_param: {scale: 0.5}
      data_param: {source: mnist_test, batch_size: 4, backend: LMDB}
    - {name: r, type: ReLU, bottom: data, top: data}
    - name: ip
      type: InnerProduct
      bottom: data
      top: ip
      inner_product_param:
        num_output: 10
    - {name: loss, type: SoftmaxWithLoss, bottom: [ip, label], top: loss}
"""
    )
    text_run, yaml_run = load_config(str(text_path)), load_config(str(yaml_path))
    for part in ("net", "data", "solver", "schedule"):
        assert strip_origins(getattr(yaml_run, part)) == strip_origins(getattr(text_run, part))
    relu_line = (
        yaml_path.read_text()
        .splitlines()
        .index("    - {name: r, type: ReLU, bottom: data, top: data}")
    )
    assert yaml_run.net.layers[0].origin == Origin(str(yaml_path), relu_line + 1)
    assert yaml_run.origins["schedule.steps"] == Origin(str(yaml_path), 3)


def test_yaml_solver_from_stdin_text_is_detected():
    text = "net: 'n.prototxt'\nbase_lr: 1e-3\nlr_policy: inv\n"
    with pytest.raises(ConfigError) as info:
        load_caffe("<stdin>", text + "weird: [1\n", [])
    assert info.value.diagnostics  # neither format: a syntax error
    # valid YAML that is not text format (a list) is read as YAML
    with pytest.raises(ConfigError) as info:
        load_caffe("<stdin>", "base_lr: 0.1\nlr_policy: fixed\nstepvalue:\n  - 1\n  - 2\n", [])
    assert any("exactly one of net" in d.message for d in info.value.diagnostics)


V1_NET = """name: "n"
layers { name: "d" type: DATA top: "data" top: "label"
  data_param { source: "mnist" batch_size: 8 backend: LMDB scale: 0.5 } }
layers { name: "c" type: CONVOLUTION bottom: "data" top: "c"
  blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
  convolution_param { num_output: 4 kernel_size: 3
    weight_filler { type: "gaussian" std: 0.01 } } }
layers { name: "r" type: RELU bottom: "c" top: "c" }
layers { name: "ip" type: INNER_PRODUCT bottom: "c" top: "ip"
  inner_product_param { num_output: 10 } }
layers { name: "loss" type: SOFTMAX_LOSS bottom: "ip" bottom: "label" }
"""
V2_NET = """name: "n"
layer { name: "d" type: "Data" top: "data" top: "label" transform_param { scale: 0.5 }
  data_param { source: "mnist" batch_size: 8 backend: LMDB } }
layer { name: "c" type: "Convolution" bottom: "data" top: "c"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 4 kernel_size: 3
    weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "r" type: "ReLU" bottom: "c" top: "c" }
layer { name: "ip" type: "InnerProduct" bottom: "c" top: "ip"
  inner_product_param { num_output: 10 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" }
"""


def test_v1_net_is_upgraded(tmp_path):
    runs = []
    for text in (V1_NET, V2_NET):
        runs.append(load_config(str(write_net(tmp_path, text))))
    v1, v2 = runs
    assert strip_origins(v1.net) == strip_origins(v2.net)
    assert strip_origins(v1.data) == strip_origins(v2.data)
    assert v1.data.train.scale == 0.5
    assert layer(v1, "c").params == (ParamMult(1.0, 1.0), ParamMult(2.0, 0.0))
    assert any("V1" in d.message for d in v1.diagnostics)


# --------------------------------------------------------------------------------------------
# Overrides and schedules from options
# --------------------------------------------------------------------------------------------


def test_overrides_take_precedence_with_set_origin(tmp_path):
    sets = [("base_lr", "0.001"), ("lr_policy", "step"), ("stepsize", "100"), ("gamma", ".5")]
    run = load(tmp_path, sets=[*sets, ("type", "Nesterov"), ("momentum", "0.95")])
    assert (run.schedule.base_lr, run.schedule.policy, run.schedule.step) == (0.001, "step", 100)
    assert run.solver.optimizer == "nesterov" and run.solver.momentum == 0.95
    assert run.origins["schedule.base_lr"] == Origin("--set")
    assert run.origins["solver.momentum"] == Origin("--set")
    assert run.raw["base_lr"] == "0.001" and run.raw["lr_policy"] == "step"


def test_override_repeated_field_takes_comma_lists_and_repeats(tmp_path):
    solver = SOLVER.replace("fixed", "multistep") + "stepvalue: 1\n"
    run = load(tmp_path, solver=solver, sets=[("stepvalue", "10,20"), ("stepvalue", "30")])
    assert run.schedule.steps == (10, 20, 30)


def test_override_last_singular_wins(tmp_path):
    run = load(tmp_path, sets=[("base_lr", "0.5"), ("base_lr", "0.25")])
    assert run.schedule.base_lr == 0.25


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("base_lrr", "0.1", "did you mean 'base_lr'"),
        ("base_lr", "fast", "bad value for 'base_lr'"),
        ("max_iter", "1.5", "expected an integer"),
        ("solver_mode", "TPU", "unknown value 'TPU'"),
        ("net_param", "x", "is a message"),
        ("lr_policy", "stpe", "Unknown learning rate policy"),
    ],
)
def test_bad_overrides_are_errors(tmp_path, key, value, words):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, sets=[(key, value)])
    messages = [d for d in info.value.diagnostics if d.severity == "error"]
    assert any(words in d.message for d in messages)
    if key != "lr_policy":
        assert messages[0].file == "--set" and messages[0].key == key


def test_schedule_from_options():
    options = [("lr_policy", "inv"), ("base_lr", "0.01"), ("gamma", "1e-4"), ("power", ".75"),
               ("max_iter", "10000")]  # fmt: skip
    expected = ScheduleSpec(
        convention="caffe", policy="inv", base_lr=0.01, gamma=1e-4, power=0.75, step=0,
        max_iter=10000,
    )  # fmt: skip
    assert caffe_schedule_from_options(options) == expected
    assert schedule_from_options(options) == expected


def test_schedule_from_options_stepvalue_lists():
    options = [("lr_policy", "multistep"), ("base_lr", "1"), ("stepvalue", "5,7"),
               ("stepvalue", "9")]  # fmt: skip
    assert caffe_schedule_from_options(options).steps == (5, 7, 9)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ([("lr_policy", "fixed"), ("momentum", "0.9")], "unknown solver key 'momentum'"),
        ([("base_lr", "0.1")], "Unknown learning rate policy"),
        ([("lr_policy", "multistep"), ("stepvalue", "5,3")], "ascending"),
        ([("lr_policy", "step"), ("base_lr", "1")], "stepsize > 0"),
    ],
)
def test_schedule_from_options_errors(options, words):
    with pytest.raises(ConfigError) as info:
        caffe_schedule_from_options(options)
    assert any(words in d.message for d in info.value.diagnostics)
