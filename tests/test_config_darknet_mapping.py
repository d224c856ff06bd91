"""darknet [net] and layer sections → engine.spec: defaults, mapping, diagnostics, overrides."""

from __future__ import annotations

import pytest

from dnupdate.engine.config.darknet import (
    DARKNET_SCHEDULE_KEYS,
    darknet_schedule_from_options,
    darknet_schedule_with_diagnostics,
)
from dnupdate.engine.spec import (
    DEFAULT,
    BatchNormSpec,
    ConfigError,
    ConnectedSpec,
    ConvSpec,
    CostSpec,
    DropoutSpec,
    FillerSpec,
    Origin,
    ParamMult,
    PoolSpec,
    SoftmaxSpec,
)
from tests.darknet_fixtures import cfg_errors, f32, load_cfg

IMAGE = "[net]\nheight=12\nwidth=12\nchannels=3\nmax_batches=10\n"
HEAD = "[connected]\noutput=4\nactivation=linear\n[softmax]\n"


def messages(spec) -> str:
    return "\n".join(str(d) for d in spec.diagnostics)


# -- [net] defaults -------------------------------------------------------------------------


def test_net_defaults_are_darknets():
    spec = load_cfg("[net]\nheight=12\nwidth=12\nchannels=3\n" + HEAD)
    solver, schedule = spec.solver, spec.schedule
    assert solver.semantics == "darknet" and solver.optimizer == "sgd"
    assert (solver.minibatch, solver.accumulate, solver.max_iter) == (1, 1, 0)
    assert solver.momentum == f32(0.9) and solver.decay == f32(0.0001)
    assert (solver.beta1, solver.beta2, solver.eps) == (f32(0.9), f32(0.999), f32(1e-7))
    assert solver.momentum_style == "lr_outside" and solver.grad_reduction == "sum"
    assert solver.display == 1
    assert schedule.convention == "darknet" and schedule.policy == "constant"
    assert schedule.base_lr == f32(0.001)
    assert (schedule.power, schedule.burn_in, schedule.max_iter) == (4.0, 0, 0)
    assert spec.origins["solver.momentum"] == DEFAULT
    assert spec.origins["schedule.base_lr"] == DEFAULT
    assert "trains forever" in messages(spec)


def test_net_values_and_origins():
    text = IMAGE + "batch=64\nsubdivisions=2\nmomentum=0.8\ndecay=0.0005\nlearning_rate=0.1\n"
    spec = load_cfg(text + HEAD)
    assert spec.solver.minibatch == 32 and spec.solver.accumulate == 2
    assert spec.solver.batch == 64
    assert spec.solver.momentum == f32(0.8) and spec.solver.decay == f32(0.0005)
    assert spec.schedule.base_lr == f32(0.1)
    assert spec.origins["solver.minibatch"] == Origin("t.cfg", 6)
    assert spec.origins["solver.accumulate"] == Origin("t.cfg", 7)
    assert spec.origins["schedule.base_lr"] == Origin("t.cfg", 10)
    assert spec.origins["net.input.height"] == Origin("t.cfg", 2)
    assert spec.raw["batch"] == "64" and spec.raw["learning_rate"] == "0.1"
    assert spec.net.input.channels == 3 and spec.net.name == "t"


def test_batch_division_truncates_then_multiplies_by_time_steps():
    spec = load_cfg(IMAGE + "batch=100\nsubdivisions=3\ntime_steps=2\n" + HEAD)
    assert spec.solver.minibatch == 66 and spec.solver.accumulate == 3
    assert "truncates" in messages(spec)


@pytest.mark.parametrize(
    "keys, needle",
    [
        ("batch=2\nsubdivisions=4\n", "0 images per pass"),
        ("subdivisions=0\n", "subdivisions must be >= 1"),
        ("batch=abc\n", "not an integer"),
    ],
)
def test_bad_batch_values_are_errors(keys, needle):
    errors = cfg_errors(IMAGE + keys + HEAD)
    assert any(needle in e.message for e in errors)
    assert all(e.file == "t.cfg" and e.line is not None for e in errors)


def test_adam_reads_betas_and_warns_about_the_cpu_path():
    spec = load_cfg(IMAGE + "adam=1\nB1=.8\nB2=.99\neps=.001\n" + HEAD)
    assert spec.solver.optimizer == "adam"
    assert (spec.solver.beta1, spec.solver.beta2, spec.solver.eps) == (
        f32(0.8),
        f32(0.99),
        f32(0.001),
    )
    assert any(d.key == "adam" and "SGD" in d.message for d in spec.diagnostics)


def test_betas_without_adam_are_reported_unread():
    spec = load_cfg(IMAGE + "B1=.5\n" + HEAD)
    assert spec.solver.beta1 == f32(0.9)
    (warning,) = [d for d in spec.diagnostics if d.key == "B1"]
    assert "adam=1" in warning.message and warning.line == 6


def test_inputs_only_gives_a_flat_input():
    spec = load_cfg("[net]\ninputs=7\nmax_batches=1\n" + HEAD)
    assert (spec.net.input.channels, spec.net.input.height, spec.net.input.width) == (7, 1, 1)
    assert spec.origins["net.input.channels"] == Origin("t.cfg", 2)


def test_inputs_only_cannot_feed_a_convolution():
    (error,) = cfg_errors("[net]\ninputs=7\n[convolutional]\n" + HEAD)
    assert error.line == 3 and "must output image" in error.message


def test_no_input_size_is_an_error():
    (error,) = cfg_errors("[net]\nbatch=1\n" + HEAD)
    assert "No input parameters supplied" in error.message


def test_unknown_net_key_is_a_warning_with_a_suggestion():
    spec = load_cfg(IMAGE + "momentun=0.5\n" + HEAD)
    (warning,) = [d for d in spec.diagnostics if d.key == "momentun"]
    assert warning.severity == "warning" and warning.line == 6 and "momentum" in warning.message


def test_augmentation_keys_are_read_but_reported():
    spec = load_cfg(IMAGE + "hue=.1\nangle=0\n" + HEAD)
    assert [d.key for d in spec.diagnostics] == ["hue"]


# -- schedule ---------------------------------------------------------------------------------


def test_steps_policy():
    spec = load_cfg(IMAGE + "policy=steps\nsteps=10,50,100\nscales=.1,.5,2\n" + HEAD)
    assert spec.schedule.policy == "steps"
    assert spec.schedule.steps == (10, 50, 100)
    assert spec.schedule.scales == (f32(0.1), f32(0.5), 2.0)
    assert spec.origins["schedule.steps"] == Origin("t.cfg", 7)


def test_steps_without_scales_is_an_error():
    (error,) = cfg_errors(IMAGE + "policy=steps\nsteps=10\n" + HEAD)
    assert error.key == "scales" and "steps and scales" in error.message


def test_fewer_scales_than_steps_is_an_error():
    (error,) = cfg_errors(IMAGE + "policy=steps\nsteps=10,20\nscales=.1\n" + HEAD)
    assert error.key == "scales" and error.line == 8


def test_negative_step_is_kept_with_the_unsigned_quirk_warning():
    spec = load_cfg(IMAGE + "policy=steps\nsteps=-1,100\nscales=.1,10\n" + HEAD)
    assert spec.schedule.steps == (-1, 100)
    assert any("unsigned" in d.message for d in spec.diagnostics if d.key == "steps")


def test_step_policy_reads_step_and_scale_only_then():
    spec = load_cfg(IMAGE + "policy=step\nstep=25\nscale=.5\ngamma=.9\n" + HEAD)
    assert (spec.schedule.step, spec.schedule.scale) == (25, 0.5)
    assert [d.key for d in spec.diagnostics] == ["gamma"]


def test_sigmoid_reads_gamma_and_step():
    spec = load_cfg(IMAGE + "policy=sigmoid\ngamma=.1\nstep=100\n" + HEAD)
    assert (spec.schedule.gamma, spec.schedule.step) == (f32(0.1), 100)


def test_unknown_policy_is_constant_with_a_warning():
    spec = load_cfg(IMAGE + "policy=cosinus\n" + HEAD)
    assert spec.schedule.policy == "constant"
    assert any(d.key == "policy" and "going with constant" in d.message for d in spec.diagnostics)


def test_sgdr_and_cosine_defaults():
    for policy in ("sgdr", "cosine"):
        spec = load_cfg(
            IMAGE.replace("max_batches=10", "max_batches=400") + f"policy={policy}\n" + HEAD
        )
        assert spec.schedule.cycle == 400 and spec.schedule.cycle_mult == 2.0
        assert spec.schedule.lr_min == f32(1e-5)


def test_warmup_and_burn_in_and_power():
    spec = load_cfg(IMAGE + "policy=poly\nburn_in=20\npower=2\nwarmup=5\n" + HEAD)
    assert (spec.schedule.burn_in, spec.schedule.power, spec.schedule.warmup) == (20, 2.0, 5)


def test_schedule_keys_cover_the_schedule_fields():
    for key in ("policy", "learning_rate", "burn_in", "power", "steps", "scales", "gamma"):
        assert key in DARKNET_SCHEDULE_KEYS
    assert {"max_batches", "sgdr_cycle", "sgdr_mult", "learning_rate_min"} <= DARKNET_SCHEDULE_KEYS


def test_schedule_from_options_alone():
    options = [
        ("policy", "steps"),
        ("learning_rate", "0.1"),
        ("steps", "100,200"),
        ("scales", ".1,.1"),
        ("max_batches", "300"),
    ]
    schedule = darknet_schedule_from_options(options)
    assert schedule.policy == "steps" and schedule.base_lr == f32(0.1)
    assert schedule.steps == (100, 200) and schedule.max_iter == 300
    assert schedule.power == 4.0


def test_schedule_from_options_diagnostics():
    with pytest.raises(ConfigError) as info:
        darknet_schedule_from_options([("policy", "steps"), ("steps", "10")])
    (error,) = info.value.diagnostics
    assert error.file == "--set" and error.key == "scales"
    with pytest.raises(ConfigError) as info:
        darknet_schedule_from_options([("momentum", "0.9")])
    assert info.value.diagnostics[0].key == "momentum"
    _, warnings = darknet_schedule_with_diagnostics([("policy", "poly"), ("gamma", ".5")])
    assert sorted(w.key for w in warnings) == ["gamma", "max_batches"]


def test_dispatcher_schedule_from_options():
    pytest.importorskip("dnupdate.engine.config.caffe")
    from dnupdate.engine.config import schedule_from_options

    schedule = schedule_from_options([("policy", "exp"), ("gamma", ".98")])
    assert schedule.convention == "darknet" and schedule.gamma == f32(0.98)


# -- layers ---------------------------------------------------------------------------------


def test_convolutional_defaults():
    spec = load_cfg(IMAGE + "[convolutional]\n" + HEAD)
    conv = spec.net.layers[0]
    assert isinstance(conv, ConvSpec)
    assert (conv.filters, conv.kernel_h, conv.kernel_w, conv.stride_h, conv.pad_h) == (
        1,
        1,
        1,
        1,
        0,
    )
    assert conv.groups == 1 and not conv.batch_normalize and conv.activation == "logistic"
    assert conv.param_order == "darknet" and conv.darknet_1x1_shortcut
    assert conv.weight_filler == FillerSpec(type="darknet_conv")
    assert conv.params == (ParamMult(1.0, 0.0), ParamMult(1.0, 1.0))
    assert conv.name == "0" and conv.origin == Origin("t.cfg", 6)
    assert spec.origins["net.layers.0.filters"] == DEFAULT


def test_convolutional_mapping_and_origins():
    text = IMAGE + (
        "[convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\nstride=2\npad=1\n"
        "groups=1\nactivation=leaky\nlearning_rate=.5\nstopbackward=1\ndontsave=1\n"
    )
    conv = load_cfg(text + HEAD).net.layers[0]
    assert (conv.filters, conv.kernel_h, conv.stride_w, conv.pad_w) == (8, 3, 2, 1)
    assert conv.batch_normalize and conv.activation == "leaky"
    assert conv.stop_backward and conv.dontsave and not conv.dontload
    half = 0.5
    assert conv.params == (
        ParamMult(half, 0.0),
        ParamMult(half, 0.0),
        ParamMult(0.0, 0.0),
        ParamMult(0.0, 0.0),
        ParamMult(half, 1.0),
    )
    assert not conv.darknet_1x1_shortcut
    spec = load_cfg(text + HEAD)
    assert spec.origins["net.layers.0.filters"] == Origin("t.cfg", 8)
    assert spec.origins["net.layers.0.pad_h"] == Origin("t.cfg", 11)


def test_pad_overrides_padding_with_size_over_two():
    conv = load_cfg(IMAGE + "[convolutional]\nsize=5\npad=1\npadding=7\n" + HEAD)
    assert conv.net.layers[0].pad_h == 2
    assert any(d.key == "padding" for d in conv.diagnostics)
    one = load_cfg(IMAGE + "[convolutional]\nsize=1\npad=1\n" + HEAD).net.layers[0]
    assert one.pad_h == 0
    explicit = load_cfg(IMAGE + "[convolutional]\nsize=3\npadding=2\n" + HEAD).net.layers[0]
    assert explicit.pad_h == 2


def test_one_by_one_conv_with_stride_warns_about_the_shortcut_quirk():
    spec = load_cfg(IMAGE + "[convolutional]\nsize=1\nstride=2\n" + HEAD)
    assert spec.net.layers[0].darknet_1x1_shortcut
    assert any("1x1" in d.message for d in spec.diagnostics)


def test_groups_must_divide_channels():
    (error,) = cfg_errors(IMAGE + "[convolutional]\nfilters=4\ngroups=2\n" + HEAD)
    assert error.key == "groups" and error.line == 8


def test_kernel_larger_than_input_is_an_error():
    (error,) = cfg_errors(IMAGE + "[convolutional]\nsize=15\n" + HEAD)
    assert error.key == "size"


def test_binary_is_unsupported():
    (error,) = cfg_errors(IMAGE + "[convolutional]\nbinary=1\n" + HEAD)
    assert error.key == "binary"


def test_connected_defaults_and_bn_param_order():
    spec = load_cfg(IMAGE + "[connected]\n[connected]\nbatch_normalize=1\noutput=3\n[softmax]\n")
    first, second = spec.net.layers[:2]
    assert isinstance(first, ConnectedSpec)
    assert first.outputs == 1 and first.activation == "logistic" and not first.batch_normalize
    assert first.param_order == "darknet"
    assert first.weight_filler == FillerSpec(type="darknet_connected")
    assert first.params == (ParamMult(1.0, 0.0), ParamMult(1.0, 1.0))
    assert second.params == (
        ParamMult(1.0, 0.0),
        ParamMult(1.0, 1.0),
        ParamMult(1.0, 0.0),
        ParamMult(0.0, 0.0),
        ParamMult(0.0, 0.0),
    )


def test_maxpool_defaults_padding_is_size_minus_one_total():
    spec = load_cfg(IMAGE + "[maxpool]\nsize=2\nstride=2\n[maxpool]\nstride=3\n" + HEAD)
    first, second = spec.net.layers[:2]
    assert isinstance(first, PoolSpec) and first.method == "max"
    assert (first.kernel_h, first.stride_h, first.pad_h, first.size_rule) == (2, 2, 1, "darknet")
    assert (second.kernel_w, second.stride_w, second.pad_w) == (3, 3, 2)


def test_avgpool_is_global_average():
    pool = load_cfg(IMAGE + "[avgpool]\n" + HEAD).net.layers[0]
    assert pool.method == "ave" and pool.global_pooling and pool.size_rule == "floor"


def test_dropout_softmax_cost_batchnorm():
    text = IMAGE + (
        "[batchnorm]\n[connected]\noutput=4\n[dropout]\nprobability=.25\n"
        "[softmax]\ngroups=2\ntemperature=2\nnoloss=1\n[cost]\ntype=smooth\nscale=.5\n"
    )
    spec = load_cfg(text)
    batchnorm, _, dropout, softmax, cost = spec.net.layers
    assert isinstance(batchnorm, BatchNormSpec) and batchnorm.style == "darknet"
    assert any("[batchnorm]" in d.message for d in spec.diagnostics)
    assert isinstance(dropout, DropoutSpec) and dropout.style == "darknet"
    assert dropout.probability == 0.25
    assert isinstance(softmax, SoftmaxSpec)
    assert (softmax.groups, softmax.temperature, softmax.noloss) == (2, 2.0, True)
    assert isinstance(cost, CostSpec) and (cost.cost_type, cost.scale) == ("smooth", 0.5)


def test_defaults_of_dropout_softmax_cost():
    spec = load_cfg(IMAGE + "[connected]\n[dropout]\n[softmax]\n[cost]\n")
    _, dropout, softmax, cost = spec.net.layers
    assert dropout.probability == 0.5
    assert any(d.key == "probability" for d in spec.diagnostics)
    assert (softmax.groups, softmax.temperature, softmax.noloss) == (1, 1.0, False)
    assert (cost.cost_type, cost.scale) == ("sse", 1.0)


def test_dropout_first_is_an_error():
    (error,) = cfg_errors(IMAGE + "[dropout]\nprobability=.5\n" + HEAD)
    assert error.line == 6


def test_softmax_groups_must_divide_inputs():
    (error,) = cfg_errors(IMAGE + "[connected]\noutput=5\n[softmax]\ngroups=2\n")
    assert error.key == "groups"


def test_softmax_tree_is_unsupported():
    (error,) = cfg_errors(IMAGE + "[connected]\n[softmax]\ntree=data/9k.tree\n")
    assert error.key == "tree" and error.line == 8


def test_unknown_activation_is_relu_with_warning():
    spec = load_cfg(IMAGE + "[connected]\nactivation=swish\n[softmax]\n")
    assert spec.net.layers[0].activation == "relu"
    (warning,) = [d for d in spec.diagnostics if d.key == "activation"]
    assert warning.line == 7 and "going with ReLU" in warning.message


def test_unknown_cost_type_is_sse_with_warning():
    spec = load_cfg(IMAGE + "[connected]\n[cost]\ntype=huber\n")
    assert spec.net.layers[1].cost_type == "sse"
    assert any(d.key == "type" for d in spec.diagnostics)


def test_section_aliases():
    spec = load_cfg(IMAGE + "[conv]\nfilters=2\n[max]\n[avg]\n[conn]\n[soft]\n")
    kinds = [layer.kind for layer in spec.net.layers]
    assert kinds == ["conv", "pool", "pool", "connected", "softmax"]


def test_unused_field_is_a_warning_with_file_line_key():
    spec = load_cfg(IMAGE + "[maxpool]\nsize=2\nfilters=3\n" + HEAD)
    (warning,) = [d for d in spec.diagnostics if d.key == "filters"]
    assert (warning.severity, warning.file, warning.line) == ("warning", "t.cfg", 8)
    assert "Unused field" in warning.message


def test_unsupported_layer_types_are_errors_naming_file_and_line():
    errors = cfg_errors(IMAGE + "[connected]\n[yolo]\nmask=0\n[upsample]\nstride=2\n[softmax]\n")
    assert [(e.file, e.line) for e in errors] == [("t.cfg", 7), ("t.cfg", 9)]
    assert "unsupported layer type [yolo]" in errors[0].message
    assert "darknet knows it" in errors[0].message
    assert "[route]" in errors[1].message


def test_unknown_section_is_an_error():
    (error,) = cfg_errors(IMAGE + "[convolution]\n" + HEAD)
    assert error.line == 6 and "unknown section" in error.message
    assert "convolutional" in error.message
    (error,) = cfg_errors(IMAGE + "[Softmax]\n")
    assert "unknown section [Softmax]" in error.message


def test_second_net_section_is_an_error():
    (error,) = cfg_errors(IMAGE + HEAD + "[net]\n")
    assert error.line == 10


def test_nothing_image_shaped_after_softmax():
    (error,) = cfg_errors(IMAGE + "[connected]\n[softmax]\n[maxpool]\n")
    assert error.line == 8 and "Layer before maxpool layer must output image" in error.message


def test_connected_makes_a_one_by_one_image():
    spec = load_cfg(IMAGE + "[connected]\noutput=4\n[convolutional]\nfilters=2\n[softmax]\n")
    assert spec.net.layers[1].filters == 2


def test_no_layers_is_an_error():
    (error,) = cfg_errors(IMAGE)
    assert "no layers" in error.message


def test_every_error_is_collected():
    errors = cfg_errors(IMAGE + "momentum=x\n[convolutional]\nsize=0\n[upsample]\n")
    assert {e.key for e in errors} == {"momentum", "size", "upsample"}


# -- overrides ------------------------------------------------------------------------------


def test_overrides_take_precedence_with_set_origin():
    text = IMAGE + "learning_rate=0.5\nbatch=64\n" + HEAD
    spec = load_cfg(text, [("learning_rate", "0.01"), ("batch", "32")])
    assert spec.schedule.base_lr == f32(0.01) and spec.solver.minibatch == 32
    assert spec.origins["schedule.base_lr"] == Origin("--set")
    assert spec.raw["learning_rate"] == "0.01"
    assert not [d for d in spec.diagnostics if d.key == "learning_rate"]


def test_override_can_switch_policy():
    spec = load_cfg(IMAGE + "steps=10\nscales=.1\n" + HEAD, [("policy", "steps")])
    assert spec.schedule.policy == "steps" and spec.schedule.steps == (10,)


def test_unknown_override_key_lists_close_matches():
    with pytest.raises(ConfigError) as info:
        load_cfg(IMAGE + HEAD, [("learning_rat", "0.1")])
    (error,) = info.value.diagnostics
    assert error.file == "--set" and error.key == "learning_rat"
    assert "learning_rate" in error.message


@pytest.mark.parametrize("value", ["abc", "12x", ""])
def test_bad_override_value_is_an_error(value):
    with pytest.raises(ConfigError) as info:
        load_cfg(IMAGE + HEAD, [("batch", value)])
    assert info.value.diagnostics[0].key == "batch"
    assert info.value.diagnostics[0].file == "--set"


# -- data -----------------------------------------------------------------------------------


def test_data_dataset_name():
    spec = load_cfg(IMAGE + "batch=8\ndata=mnist\n" + HEAD)
    train, test = spec.data.train, spec.data.test
    assert (train.source, test.source, spec.data.classes) == ("mnist", "mnist", 10)
    assert train.shuffle and not test.shuffle
    assert train.batch_size == 8 and train.scale == f32(1 / 255.0)
    assert spec.origins["data.train.source"] == Origin("t.cfg", 7)


def test_no_data_key_leaves_sources_unresolved():
    spec = load_cfg(IMAGE + HEAD)
    assert spec.data.train.source is None and spec.data.classes == 0


def test_darknet_data_file_is_read_with_the_same_grammar(tmp_path):
    (tmp_path / "digits.data").write_text(
        "classes = 3\ntrain = train.list\nvalid=valid.list\n# comment\nnames=x.names\nfoo=1\n"
    )
    (tmp_path / "train.list").write_text("a.png\n")
    cfg = tmp_path / "net.cfg"
    spec = load_cfg(IMAGE + "data=digits.data\n" + HEAD, path=str(cfg))
    assert spec.data.classes == 3
    assert spec.data.train.source == str(tmp_path / "train.list")
    assert spec.data.test.source == "valid.list"
    (warning,) = [d for d in spec.diagnostics if d.key == "foo"]
    assert warning.file == str(tmp_path / "digits.data") and warning.line == 6


def test_missing_data_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_cfg(IMAGE + "data=nowhere.data\n" + HEAD, path=str(tmp_path / "n.cfg"))
    (error,) = info.value.diagnostics
    assert error.key == "data" and error.line == 6


def test_npz_path_is_resolved_next_to_the_cfg(tmp_path):
    (tmp_path / "set.npz").write_bytes(b"")
    spec = load_cfg(IMAGE + "data=set.npz\n" + HEAD, path=str(tmp_path / "n.cfg"))
    assert spec.data.train.source == str(tmp_path / "set.npz")
