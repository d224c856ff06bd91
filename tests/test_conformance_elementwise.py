"""Element-wise, normalisation and loss kernels against the real libdarknet (through ctypes).

The library exports its CPU helpers (``activate_array``, ``gradient_array``, ``mean_cpu``,
``variance_cpu``, ``normalize_cpu``, ``softmax_cpu``, ``softmax_x_ent_cpu``, ``l2_cpu`` ...), so
each kernel is compared with the very function darknet runs. Skipped where the library is
absent. Maximum differences are printed with ``-s`` for the report.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from dnupdate.engine.backends.cpu import activations as act
from dnupdate.engine.backends.cpu import batchnorm as bn
from dnupdate.engine.backends.cpu import dropout as drop
from dnupdate.engine.backends.cpu import softmax as sm
from tests.reference import batchnorm as bn_ref

pytestmark = pytest.mark.darknet

F = ctypes.POINTER(ctypes.c_float)
INT = ctypes.c_int


@pytest.fixture(scope="module")
def lib(libdarknet):
    """The shared library (loaded by ``tests.libdarknet``, which restores the FP environment
    that darknet's ``-Ofast`` constructor changes) plus prototypes of its CPU helpers."""
    library = libdarknet
    signatures = {
        "activate_array": [F, INT, INT],
        "gradient_array": [F, INT, INT, F],
        "mean_cpu": [F, INT, INT, INT, F],
        "variance_cpu": [F, F, INT, INT, INT, F],
        "normalize_cpu": [F, F, F, INT, INT, INT],
        "scale_bias": [F, F, INT, INT, INT],
        "add_bias": [F, F, INT, INT, INT],
        "backward_bias": [F, F, INT, INT, INT],
        "backward_scale_cpu": [F, F, INT, INT, INT, F],
        "mean_delta_cpu": [F, F, INT, INT, INT, F],
        "variance_delta_cpu": [F, F, F, F, INT, INT, INT, F],
        "normalize_delta_cpu": [F, F, F, F, F, INT, INT, INT, F],
        "softmax_cpu": [F, INT, INT, INT, INT, INT, INT, ctypes.c_float, F],
        "softmax_x_ent_cpu": [INT, F, F, F, F],
        "l2_cpu": [INT, F, F, F, F],
        "l1_cpu": [INT, F, F, F, F],
        "smooth_l1_cpu": [INT, F, F, F, F],
        "sum_array": [F, INT],
        "scal_cpu": [INT, ctypes.c_float, F, INT],
        "axpy_cpu": [INT, ctypes.c_float, F, INT, F, INT],
        "rand_uniform": [ctypes.c_float, ctypes.c_float],
    }
    for name, argtypes in signatures.items():
        getattr(library, name).argtypes = argtypes
    library.sum_array.restype = ctypes.c_float
    library.rand_uniform.restype = ctypes.c_float
    library.srand.argtypes = [ctypes.c_uint]
    return library


def p(array: np.ndarray):
    assert array.dtype == np.float32 and array.flags.c_contiguous
    return array.ctypes.data_as(F)


def report(op: str, ours: np.ndarray, theirs: np.ndarray) -> float:
    with np.errstate(invalid="ignore"):
        both_nan = np.isnan(ours) & np.isnan(theirs)
        diff = np.where(both_nan, 0.0, np.abs(ours.astype(np.float64) - theirs))
    worst = float(np.max(diff)) if diff.size else 0.0
    print(f"\n[darknet conformance] {op}: max |diff| = {worst:.3g}")
    return worst


def activation_inputs(seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    specials = [0, -0.0, 1, -1, 4, -4, 2, 3, -3, 0.5, -2.5, 100, -100, 400, -400, 800, -800]
    return np.concatenate(
        [rng.normal(0, 3, 3000), rng.uniform(-10, 10, 3000), np.array(specials)]
    ).astype(np.float32)


@pytest.mark.parametrize("name", sorted(act.DARKNET_ACTIVATIONS))
def test_activate_and_gradient_bit_exact(lib, name):
    code = act.activation_code(name)
    x = activation_inputs()
    ours, theirs = x.copy(), x.copy()
    with np.errstate(all="ignore"):
        act.activate(ours, code)
    lib.activate_array(p(theirs), theirs.size, code)
    assert report(f"activate {name}", ours, theirs) == 0.0
    delta = np.random.default_rng(1).normal(size=x.size).astype(np.float32)
    d_ours, d_theirs = delta.copy(), delta.copy()
    act.gradient(theirs, code, d_ours)
    lib.gradient_array(p(theirs), theirs.size, code, p(d_theirs))
    assert report(f"gradient {name}", d_ours, d_theirs) == 0.0


@pytest.mark.parametrize(("batch", "channels", "spatial"), [(4, 3, 25), (1, 5, 9), (7, 6, 1)])
def test_batchnorm_forward_train(lib, batch, channels, spatial):
    rng = np.random.default_rng(batch * 100 + spatial)
    x = (rng.normal(size=(batch, channels, spatial)) * 2 + 0.5).astype(np.float32)
    scales = rng.uniform(0.5, 1.5, channels).astype(np.float32)
    biases = rng.normal(size=channels).astype(np.float32)
    rolling_mean = rng.normal(size=channels).astype(np.float32)
    rolling_var = rng.uniform(0.5, 2, channels).astype(np.float32)

    # darknet: mean_cpu, variance_cpu, rolling update, normalize_cpu, scale_bias, add_bias
    out = x.copy()
    mean = np.zeros(channels, np.float32)
    var = np.zeros(channels, np.float32)
    rm, rv = rolling_mean.copy(), rolling_var.copy()
    lib.mean_cpu(p(out), batch, channels, spatial, p(mean))
    lib.variance_cpu(p(out), p(mean), batch, channels, spatial, p(var))
    lib.scal_cpu(channels, 0.99, p(rm), 1)
    lib.axpy_cpu(channels, 0.01, p(mean), 1, p(rm), 1)
    lib.scal_cpu(channels, 0.99, p(rv), 1)
    lib.axpy_cpu(channels, 0.01, p(var), 1, p(rv), 1)
    lib.normalize_cpu(p(out), p(mean), p(var), batch, channels, spatial)
    x_norm_theirs = out.copy()
    lib.scale_bias(p(out), p(scales), batch, channels, spatial)
    lib.add_bias(p(out), p(biases), batch, channels, spatial)

    ours = x.copy()
    x_saved = np.empty_like(x)
    x_norm = np.empty_like(x)
    our_mean = np.empty(channels, np.float32)
    our_var = np.empty(channels, np.float32)
    our_rm, our_rv = rolling_mean.copy(), rolling_var.copy()
    bn.darknet_batchnorm_forward_train(
        ours, x_saved, x_norm, our_mean, our_var, our_rm, our_rv, scales, biases
    )
    assert report("bn mean", our_mean, mean) <= 2e-7
    assert report("bn variance", our_var, var) <= 1e-6 * float(np.max(var))
    assert report("bn rolling_mean", our_rm, rm) <= 2e-7
    assert report("bn rolling_variance", our_rv, rv) <= 2e-7
    assert report("bn x_norm", x_norm, x_norm_theirs) <= 2e-6
    assert report("bn output", ours, out) <= 4e-6
    assert np.array_equal(x_saved, x)


@pytest.mark.parametrize(("batch", "channels", "spatial"), [(4, 3, 25), (2, 5, 9), (7, 6, 1)])
def test_batchnorm_backward(lib, batch, channels, spatial):
    rng = np.random.default_rng(7 + spatial)
    x = (rng.normal(size=(batch, channels, spatial)) * 2 + 0.5).astype(np.float32)
    mean = x.mean(axis=(0, 2)).astype(np.float32)
    var = x.var(axis=(0, 2), ddof=1).astype(np.float32)
    x_norm = bn_ref.darknet_normalize(x, mean, var)
    scales = rng.uniform(0.5, 1.5, channels).astype(np.float32)
    delta = rng.normal(size=x.shape).astype(np.float32)
    bias_updates = rng.normal(size=channels).astype(np.float32)
    scale_updates = rng.normal(size=channels).astype(np.float32)

    d, bu, su = delta.copy(), bias_updates.copy(), scale_updates.copy()
    mean_delta = np.zeros(channels, np.float32)
    variance_delta = np.zeros(channels, np.float32)
    lib.backward_bias(p(bu), p(d), batch, channels, spatial)
    lib.backward_scale_cpu(p(x_norm), p(d), batch, channels, spatial, p(su))
    lib.scale_bias(p(d), p(scales), batch, channels, spatial)
    lib.mean_delta_cpu(p(d), p(var), batch, channels, spatial, p(mean_delta))
    lib.variance_delta_cpu(p(x), p(d), p(mean), p(var), batch, channels, spatial, p(variance_delta))
    lib.normalize_delta_cpu(
        p(x), p(mean), p(var), p(mean_delta), p(variance_delta), batch, channels, spatial, p(d)
    )

    ours = delta.copy()
    our_bu, our_su = bias_updates.copy(), scale_updates.copy()
    our_md = np.empty(channels, np.float32)
    our_vd = np.empty(channels, np.float32)
    bn.darknet_batchnorm_backward(
        ours, x, x_norm, mean, var, scales, our_bu, our_su, our_md, our_vd
    )
    assert report("bn bias_updates", our_bu, bu) <= 1e-5
    assert report("bn scale_updates", our_su, su) <= 1e-5
    assert report("bn mean_delta", our_md, mean_delta) <= 1e-5
    assert report("bn variance_delta", our_vd, variance_delta) <= 1e-5
    assert report("bn delta", ours, d) <= 1e-5


@pytest.mark.parametrize(
    ("batch", "inputs", "groups", "temperature"),
    [(3, 10, 1, 1.0), (2, 12, 3, 1.0), (4, 7, 1, 2.5), (1, 1000, 1, 0.5)],
)
def test_softmax_and_cross_entropy(lib, batch, inputs, groups, temperature):
    rng = np.random.default_rng(inputs)
    x = (rng.normal(size=(batch, inputs)) * 3).astype(np.float32)
    truth = np.zeros_like(x)
    truth[np.arange(batch), rng.integers(0, inputs, batch)] = 1.0
    truth[0, 0] += 0.5  # a soft target: loss counts −log p once, delta keeps t − p

    theirs = np.zeros_like(x)
    n = inputs // groups
    lib.softmax_cpu(p(x), n, batch, inputs, groups, n, 1, temperature, p(theirs))
    delta_theirs = np.zeros_like(x)
    loss_theirs = np.zeros_like(x)
    lib.softmax_x_ent_cpu(x.size, p(theirs), p(truth), p(delta_theirs), p(loss_theirs))
    cost_theirs = lib.sum_array(p(loss_theirs), x.size)

    ours = np.empty_like(x)
    delta = np.empty_like(x)
    loss = np.empty_like(x)
    sm.darknet_softmax_forward(x, ours, groups, temperature)
    cost = sm.darknet_softmax_cross_entropy(ours, truth, delta, loss)
    assert report(f"softmax T={temperature} g={groups}", ours, theirs) <= 1.2e-7
    assert report("softmax delta", delta, delta_theirs) <= 1.2e-7
    assert report("softmax loss", loss, loss_theirs) <= 2e-6
    assert abs(cost - cost_theirs) <= 1e-5 * max(1.0, abs(cost_theirs))


@pytest.mark.parametrize("cost_type", ["sse", "L1", "smooth", "masked"])
def test_cost_layer_errors_and_deltas(lib, cost_type):
    rng = np.random.default_rng(11)
    pred = (rng.normal(size=(3, 40)) * 1.5).astype(np.float32)
    truth = (rng.normal(size=(3, 40)) * 1.5).astype(np.float32)
    truth[0, :5] = sm.SECRET_NUM
    fn = {"sse": lib.l2_cpu, "L1": lib.l1_cpu, "smooth": lib.smooth_l1_cpu, "masked": lib.l2_cpu}
    their_pred = pred.copy()
    if cost_type == "masked":
        their_pred[truth == sm.SECRET_NUM] = sm.SECRET_NUM
    d_theirs = np.zeros_like(pred)
    e_theirs = np.zeros_like(pred)
    fn[cost_type](pred.size, p(their_pred), p(truth), p(d_theirs), p(e_theirs))

    our_pred = pred.copy()
    delta = np.empty_like(pred)
    error = np.empty_like(pred)
    cost = sm.darknet_cost_forward(our_pred, truth, delta, error, sm.cost_code(cost_type))
    assert report(f"cost {cost_type} error", error, e_theirs) == 0.0
    assert report(f"cost {cost_type} delta", delta, d_theirs) == 0.0
    assert np.array_equal(our_pred, their_pred)
    assert abs(cost - lib.sum_array(p(e_theirs), pred.size)) <= 1e-4 * max(1.0, abs(cost))


def test_dropout_against_library_stream(lib):
    rng_module = pytest.importorskip("dnupdate.engine.rng")
    probability = 0.3
    x = np.random.default_rng(5).normal(size=(2, 50)).astype(np.float32)
    lib.srand(1234)
    theirs = x.copy()
    scale = np.float32(1.0 / (1.0 - np.float32(probability)))
    for i in range(theirs.size):  # forward_dropout_layer's loop, draw by draw
        r = lib.rand_uniform(0.0, 1.0)
        theirs.reshape(-1)[i] = (
            0.0 if r < np.float32(probability) else theirs.reshape(-1)[i] * scale
        )
    draws = rng_module.DarknetRandom(1234).rand_uniform_array(x.size, 0.0, 1.0)
    ours = x.copy()
    drop.darknet_dropout_forward(ours, draws.astype(np.float32), probability)
    assert report("dropout", ours, theirs) == 0.0


NET_CFG = """[net]
batch={batch}
subdivisions=1
height=1
width=1
channels={inputs}

[connected]
output={outputs}
batch_normalize=1
activation={activation}

[softmax]
groups={groups}
temperature={temperature}
"""


@pytest.mark.parametrize(
    ("activation", "groups", "temperature"),
    [("leaky", 1, 1.0), ("logistic", 2, 1.0), ("tanh", 1, 2.0), ("selu", 1, 1.0)],
)
def test_connected_batchnorm_softmax_layers_in_a_network(lib, activation, groups, temperature):
    """A real darknet net ``[connected] batch_normalize=1 activation=X`` + ``[softmax]``: one
    training forward/backward, then our kernels replay every step from darknet's own buffers
    (the pre-BN output ``l.x``, the softmax delta) and must reproduce the layer state."""
    from tests import libdarknet as dn

    batch, inputs, outputs = 5, 7, 6
    text = NET_CFG.format(
        batch=batch,
        inputs=inputs,
        outputs=outputs,
        activation=activation,
        groups=groups,
        temperature=temperature,
    )
    dn.srand(3)
    theirs = dn.parse_cfg_text(lib, text)
    net = theirs.contents
    rng = np.random.default_rng(13)
    x = rng.normal(size=(batch, inputs)).astype(np.float32)
    truth = np.eye(outputs, dtype=np.float32)[rng.integers(0, outputs, batch)]
    scales = dn.layer_array(theirs, 0, "scales")
    scales[:] = rng.uniform(0.5, 1.5, outputs)
    dn.layer_array(theirs, 0, "biases")[:] = rng.uniform(-0.5, 0.5, outputs)
    rolling_mean = dn.layer_array(theirs, 0, "rolling_mean").copy()
    rolling_var = dn.layer_array(theirs, 0, "rolling_variance").copy()
    saved = [ctypes.cast(q, ctypes.c_void_p).value for q in (net.input, net.truth, net.delta)]
    try:
        net.input, net.truth, net.delta, net.train = p(x), p(truth), None, 1
        lib.forward_network(theirs)
        lib.backward_network(theirs)

        def their(i, name):
            return dn.layer_array(theirs, i, name).reshape(batch, outputs).copy()

        code = act.activation_code(activation)
        out = their(0, "x")  # darknet's copy of the pre-BN connected output
        x_saved, x_norm = np.empty_like(out), np.empty_like(out)
        mean, var = np.empty(outputs, np.float32), np.empty(outputs, np.float32)
        biases = dn.layer_array(theirs, 0, "biases")
        bn.darknet_batchnorm_forward_train(
            out, x_saved, x_norm, mean, var, rolling_mean, rolling_var, scales, biases
        )
        act.activate(out, code)
        assert report(f"net {activation} output", out, their(0, "output")) <= 2e-6
        assert report("net x_norm", x_norm, their(0, "x_norm")) <= 2e-6
        assert (
            report(
                "net rolling_variance", rolling_var, dn.layer_array(theirs, 0, "rolling_variance")
            )
            <= 2e-7
        )

        probabilities = np.empty_like(out)
        sm.darknet_softmax_forward(their(0, "output"), probabilities, groups, temperature)
        assert report("net softmax", probabilities, their(1, "output")) <= 1.2e-7
        delta, loss = np.empty_like(out), np.empty_like(out)
        cost = sm.darknet_softmax_cross_entropy(their(1, "output"), truth, delta, loss)
        assert abs(cost - dn.layer_array(theirs, 1, "cost")[0]) <= 2e-6 * max(1.0, cost)

        connected_delta = np.zeros_like(out)
        sm.darknet_softmax_backward(their(1, "delta"), connected_delta)
        act.gradient(their(0, "output"), code, connected_delta)
        bias_updates = np.zeros(outputs, np.float32)
        scale_updates = np.zeros(outputs, np.float32)
        scratch = [np.empty(outputs, np.float32) for _ in range(2)]
        bn.darknet_batchnorm_backward(
            connected_delta,
            their(0, "x"),
            their(0, "x_norm"),
            dn.layer_array(theirs, 0, "mean").copy(),
            dn.layer_array(theirs, 0, "variance").copy(),
            scales,
            bias_updates,
            scale_updates,
            *scratch,
        )
        assert report("net delta", connected_delta, their(0, "delta")) <= 2e-6
        assert (
            report("net bias_updates", bias_updates, dn.layer_array(theirs, 0, "bias_updates"))
            <= 2e-6
        )
        assert (
            report("net scale_updates", scale_updates, dn.layer_array(theirs, 0, "scale_updates"))
            <= 2e-6
        )
    finally:
        net.input, net.truth, net.delta = (ctypes.cast(a, F) for a in saved)
        lib.free_network(theirs)
