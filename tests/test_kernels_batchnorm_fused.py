"""darknet batch norm with the layer's activation fused in (engine.backends.cpu.batchnorm).

The fused kernels must give the bits of the separate passes darknet runs
(``forward_batchnorm_layer`` then ``activate_array``; ``gradient_array`` then
``backward_batchnorm_layer``), whatever the thread count; and ``normalize_delta_cpu``'s division
by ``m`` (a multiplication by ``1/m`` when ``m`` is a power of two) must round as the division.
"""

from __future__ import annotations

import numpy as np
import pytest

from dnupdate.engine.backends.base import Backend, DarknetBNState
from dnupdate.engine.backends.cpu import CpuBackend
from dnupdate.engine.backends.cpu import activations as act
from dnupdate.engine.backends.cpu import batchnorm as bn
from tests.numba_threads import with_threads as _with_threads
from tests.reference.batchnorm import darknet_layer_data

#: a tail only, full blocks of ``bn.LANES`` and a tail, full blocks (m a power of two), a
#: connected layer's ``(B, outputs)``
SHAPES = [(3, 5, 3, 3), (2, 19, 3, 3), (4, 16, 4, 4), (6, 11)]
CODES = [act.LEAKY, act.RELU, act.LOGISTIC, act.ELU, act.STAIR]


_data = darknet_layer_data


def _run(d, code, fused):
    """A training forward, a backward and an inference forward; activation ``code`` fused into
    the batch-norm kernels or run as darknet's separate passes."""
    channels = d["out"].shape[1]
    out = d["out"].copy()
    x, x_norm = np.empty_like(out), np.empty_like(out)
    mean, variance = np.empty(channels, np.float32), np.empty(channels, np.float32)
    rm, rv = d["rolling_mean"].copy(), d["rolling_variance"].copy()
    stats = (mean, variance, rm, rv, d["scales"], d["biases"])
    if fused:
        bn.darknet_batchnorm_forward_train(out, x, x_norm, *stats, activation=code)
    else:
        bn.darknet_batchnorm_forward_train(out, x, x_norm, *stats)
        act.activate(out, code)
    delta = d["delta"].copy()
    updates = [d["updates"].copy(), d["updates"][::-1].copy()]
    scratch = [np.empty(channels, np.float32), np.empty(channels, np.float32)]
    args = (delta, x, x_norm, mean, variance, d["scales"], *updates, *scratch)
    if fused:
        bn.darknet_batchnorm_backward(*args, output=out, activation=code)
    else:
        act.gradient(out, code, delta)
        bn.darknet_batchnorm_backward(*args)
    infer = d["out"].copy()
    rolling = (rm, rv, d["scales"], d["biases"])
    if fused:
        bn.darknet_batchnorm_forward_infer(infer, *rolling, activation=code)
    else:
        bn.darknet_batchnorm_forward_infer(infer, *rolling)
        act.activate(infer, code)
    return [out, x, x_norm, mean, variance, rm, rv, delta, *updates, *scratch, infer]


def _same_bits(ours, theirs):
    for index, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a.tobytes() == b.tobytes(), index


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("code", CODES)
def test_fused_activation_gives_the_separate_passes_bits(shape, code):
    d = _data(shape, code)
    _same_bits(_run(d, code, fused=True), _run(d, code, fused=False))


@pytest.mark.parametrize("shape", SHAPES)
def test_fused_activation_does_not_depend_on_threads(shape):
    d = _data(shape, 7)
    one = _with_threads(1, lambda: _run(d, act.LEAKY, fused=True))
    _same_bits(_with_threads(2, lambda: _run(d, act.LEAKY, fused=True)), one)


def _normalize_delta_by_division(delta, x, mean, variance, scales, mean_delta, variance_delta):
    """darknet ``normalize_delta_cpu`` transcribed in NumPy (double, rounded to float32), on
    the delta after ``scale_bias``: ``δ/sqrt(v) + variance_delta·2·(x − mean)/m + mean_delta/m``
    with the division by ``m`` written as a division."""
    b, c = delta.shape[:2]
    delta3, x3 = delta.reshape(b, c, -1), x.reshape(b, c, -1)
    m = b * delta3.shape[2]
    column = (1, c, 1)
    var_eps = (variance + np.float32(0.00001)).astype(np.float64).reshape(column)
    centered = (x3 - mean.reshape(column)).astype(np.float64)
    mean_term = (mean_delta / np.float32(m)).astype(np.float64).reshape(column)
    variance_scale = variance_delta.astype(np.float64).reshape(column) * 2.0
    scaled = (delta3 * scales.reshape(column)).astype(np.float64)
    result = scaled * (1.0 / np.sqrt(var_eps)) + variance_scale * centered / m + mean_term
    return result.astype(np.float32).reshape(delta.shape)


@pytest.mark.parametrize("shape", [(4, 16, 4, 4), (8, 3, 2, 2), (4, 16, 3, 3), (6, 5)])
def test_normalize_delta_rounds_as_darknets_division_by_m(shape):
    """m = 256 and 32 (powers of two: multiplied by 1/m), 144 and 6 (divided)."""
    d = _data(shape, 11)
    channels = shape[1]
    out = d["out"].copy()
    x, x_norm = np.empty_like(out), np.empty_like(out)
    mean, variance = np.empty(channels, np.float32), np.empty(channels, np.float32)
    rolling = d["rolling_mean"].copy(), d["rolling_variance"].copy()
    bn.darknet_batchnorm_forward_train(
        out, x, x_norm, mean, variance, *rolling, d["scales"], d["biases"]
    )
    delta = d["delta"].copy()
    mean_delta, variance_delta = np.empty_like(mean), np.empty_like(mean)
    bn.darknet_batchnorm_backward(delta, x, x_norm, mean, variance, d["scales"],
                                  np.zeros_like(mean), np.zeros_like(mean), mean_delta,
                                  variance_delta)  # fmt: skip
    expected = _normalize_delta_by_division(
        d["delta"], x, mean, variance, d["scales"], mean_delta, variance_delta
    )
    assert delta.tobytes() == expected.tobytes()


def _state(d, shape):
    channels = shape[1]
    zeros = [np.zeros(channels, np.float32) for _ in range(4)]
    return DarknetBNState(
        scales=d["scales"].copy(),
        biases=d["biases"].copy(),
        rolling_mean=d["rolling_mean"].copy(),
        rolling_variance=d["rolling_variance"].copy(),
        scale_updates=d["updates"].copy(),
        bias_updates=d["updates"][::-1].copy(),
        mean=zeros[0],
        variance=zeros[1],
        mean_delta=zeros[2],
        variance_delta=zeros[3],
        x=np.zeros(shape, np.float32),
        x_norm=np.zeros(shape, np.float32),
    )


@pytest.mark.parametrize("alpha", [1.0, -1.0])
@pytest.mark.parametrize("code", [act.LEAKY, None])
def test_cpu_backend_fused_epilogue_matches_the_generic_one(code, alpha):
    """CpuBackend's fused ``darknet_bn_act_*`` against Backend's default (batch norm, then the
    activation as its own pass), as the conv and connected layers call them."""
    shape = (4, 19, 9)
    d = _data(shape, 5)
    backend = CpuBackend()
    results = []
    for cls in (CpuBackend, Backend):
        forward, backward = cls.darknet_bn_act_forward, cls.darknet_bn_act_backward
        state = _state(d, shape)
        out, delta = d["out"].copy(), d["delta"].copy()
        forward(backend, out, state, True, code)
        backward(backend, out, delta, state, alpha, code)
        infer = d["out"].copy()
        forward(backend, infer, state, False, code)
        results.append([out, delta, infer, *vars(state).values()])
    _same_bits(*results)


@pytest.mark.parametrize("code", [act.RELU, None])
def test_normalising_from_x_gives_the_copying_pass_s_bits(code):
    """CpuBackend's ``darknet_bn_act_forward_from_x`` (the layer wrote its product into the
    norm's ``x``; ``out`` only written) against Backend's default (``x`` copied into ``out``,
    then the pass in place, which copies it back): every output and statistic the same."""
    shape = (4, 19, 9)
    d = _data(shape, 6)
    backend = CpuBackend()
    results = []
    for cls in (CpuBackend, Backend):
        state = _state(d, shape)
        state.x[...] = d["out"]
        out = np.full(shape, np.nan, np.float32)
        cls.darknet_bn_act_forward_from_x(backend, out, state, code)
        results.append([out, *vars(state).values()])
    _same_bits(*results)
    assert not np.isnan(results[0][0]).any()


def _carried(cls, backend, d, shape, code, total_code, alpha, beta, add_out=False):
    """The training batch norm from ``x`` then the ``[shortcut]`` reading its output, through
    ``cls``'s :meth:`darknet_bn_act_shortcut_forward` (``add_out``: the shortcut adds its own
    chain input, ``add`` is ``out`` itself)."""
    state = _state(d, shape)
    state.x[...] = d["out"]
    out = np.full(shape, np.nan, np.float32)
    add = out if add_out else d["delta"].reshape(shape).copy()  # any values of the shape
    total = np.full(shape, np.nan, np.float32)
    cls.darknet_bn_act_shortcut_forward(backend, out, state, code, add, total, alpha, beta,
                                        total_code)  # fmt: skip
    return [out, total, add, *vars(state).values()]


@pytest.mark.parametrize("shape", [(4, 19, 9), (3, 5, 16), (2, 16, 12)])
@pytest.mark.parametrize(("code", "total_code"), [(None, act.RELU), (act.LEAKY, None),
                                                  (None, act.LOGISTIC)])  # fmt: skip
@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 1.0), (0.5, 1.5)])
def test_shortcut_in_the_normalising_pass_gives_the_two_passes_bits(shape, code, total_code,
                                                                    alpha, beta):  # fmt: skip
    """CpuBackend runs a ``[shortcut]`` on each plane the batch norm has just normalised
    (``darknet_bn_act_shortcut_forward``); Backend's default runs the norm, then
    ``shortcut_forward`` over the whole output: every output and statistic the same bits."""
    d = _data(shape, 7)
    backend = CpuBackend()
    fused = _carried(CpuBackend, backend, d, shape, code, total_code, alpha, beta)
    apart = _carried(Backend, backend, d, shape, code, total_code, alpha, beta)
    _same_bits(fused, apart)
    assert not np.isnan(fused[0]).any() and not np.isnan(fused[1]).any()


def test_shortcut_adding_its_own_chain_input_gives_the_two_passes_bits():
    """A ``[shortcut]`` whose ``from`` is its chain input (``add`` is ``out`` itself): each
    plane is read back after the normalising pass wrote it, as the separate pass reads it."""
    shape = (3, 9, 16)
    d = _data(shape, 10)
    backend = CpuBackend()
    args = (d, shape, None, act.LEAKY, 0.5, 2.0)
    _same_bits(_carried(CpuBackend, backend, *args, add_out=True),
               _carried(Backend, backend, *args, add_out=True))  # fmt: skip


def test_shortcut_in_the_normalising_pass_does_not_depend_on_threads():
    shape = (4, 19, 16)
    d = _data(shape, 8)
    backend = CpuBackend()

    def carried():
        return _carried(CpuBackend, backend, d, shape, None, act.RELU, 1.0, 1.0)

    one = _with_threads(1, carried)
    for threads in (2, 3):
        _same_bits(_with_threads(threads, carried), one)


def test_shortcut_of_another_shape_is_refused():
    shape = (2, 4, 9)
    d = _data(shape, 9)
    state = _state(d, shape)
    bigger = np.zeros((2, 5, 9), np.float32)
    out = np.zeros(shape, np.float32)
    with pytest.raises(bn.KernelArgumentError, match="total"):
        CpuBackend().darknet_bn_act_shortcut_forward(out, state, None, out.copy(), bigger, 1.0,
                                                     1.0, None)  # fmt: skip


_BN_NET = """[net]
batch=4
subdivisions=1
height=8
width=8
channels=3
learning_rate=0.05
momentum=0.9
decay=0.0005
max_batches=10
policy=constant

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=linear

[connected]
batch_normalize=1
output=6
activation=relu

[connected]
output=3
activation=linear

[softmax]
"""


def _trained_weights(cfg_path, reads_x: bool, monkeypatch) -> list[np.ndarray]:
    from dnupdate.engine.config import load_config
    from dnupdate.engine.training.step import Trainer

    monkeypatch.setattr(CpuBackend, "darknet_bn_reads_x", reads_x)
    trainer = Trainer(load_config(str(cfg_path)), seed=2)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[[0, 1, 2, 1]]
    for _ in range(3):
        trainer.train_iteration(lambda: (x, y))
    return [np.array(layer.output) for layer in trainer.network.layers] + [
        trainer.network.params.copy()
    ]


def test_layers_computing_into_x_train_to_the_copying_layers_bits(tmp_path, monkeypatch):
    """Conv (per-image kernels) and connected layers with batch norm write their product into
    the norm's ``x`` on the CPU backend (darknet's ``copy_cpu(output → x)`` skipped): three
    training steps give every layer output and every parameter the bits of the copying path."""
    cfg = tmp_path / "bn.cfg"
    cfg.write_text(_BN_NET)
    calls = []
    from_x = CpuBackend.darknet_bn_act_forward_from_x

    def counted(self, out, state, code):
        calls.append(out.shape)
        from_x(self, out, state, code)

    monkeypatch.setattr(CpuBackend, "darknet_bn_act_forward_from_x", counted)
    fast = _trained_weights(cfg, True, monkeypatch)
    assert sorted(set(calls)) == [(4, 6, 1), (4, 8, 16), (4, 8, 64)]
    copying = _trained_weights(cfg, False, monkeypatch)
    for a, b in zip(fast, copying, strict=True):
        assert a.tobytes() == b.tobytes()
