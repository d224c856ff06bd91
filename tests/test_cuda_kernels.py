"""CUDA backend kernels against the CPU backend, method by method (tiny shapes: these run
under the numba-cuda simulator in CI, see ``tests/test_cuda_simulator.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from dnupdate.engine.backends.base import CaffeBNState, DarknetBNState
from dnupdate.engine.backends.cpu import update as upd
from dnupdate.engine.backends.cpu.activations import DARKNET_ACTIVATIONS
from dnupdate.engine.backends.cpu.softmax import LabelOutOfRangeError
from tests.test_cuda_support import backends, compare_backends, on_backend, requires_cuda

pytestmark = requires_cuda

RNG = np.random.default_rng(7)


def normal(*shape, scale=1.0) -> np.ndarray:
    return (RNG.normal(0, scale, shape)).astype(np.float32)


# ---- arrays and memory -----------------------------------------------------------------------


def test_device_views_behave_like_numpy_views():
    cuda = backends()["cuda"]
    host = np.arange(24, dtype=np.float32)
    flat = cuda.zeros((24,))
    flat[...] = host
    part = flat[4:16].reshape(3, 4)
    np.testing.assert_array_equal(np.asarray(part), host[4:16].reshape(3, 4))
    np.testing.assert_array_equal(np.asarray(part.T), host[4:16].reshape(3, 4).T)
    cube = flat.reshape(2, 3, 4)
    np.testing.assert_array_equal(
        np.asarray(cube.swapaxes(1, 2)), host.reshape(2, 3, 4).swapaxes(1, 2)
    )
    assert part.flags.c_contiguous and not part.T.flags.c_contiguous
    with pytest.raises(ValueError):
        part.T.reshape(12)
    out = cuda.zeros((4, 3, 2))
    cuda.permute_copy(cube, out, (2, 1, 0))
    np.testing.assert_array_equal(cuda.to_host(out), host.reshape(2, 3, 4).transpose(2, 1, 0))
    cuda.fill(part, 5.0)
    assert cuda.to_host(flat)[4:16].tolist() == [5.0] * 12
    assert cuda.to_host(flat)[:4].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_copy_accumulate_scale():
    arrays = {"src": normal(3, 4), "out": normal(3, 4)}

    def call(b, src, out):
        b.accumulate(out, src, -1.0)
        b.scale(out, 0.3)
        b.accumulate(out, src, 0.7)
        b.copy(out, src)

    compare_backends(arrays, call, rtol=1e-6, atol=1e-7)  # a GPU may fuse y + a·x (FMA)


@pytest.mark.parametrize(
    ("add_shape", "out_shape"), [((2, 6, 6), (3, 3, 3)), ((3, 2, 2), (2, 4, 4))]
)
def test_graph_kernels(add_shape, out_shape):
    arrays = {
        "add": normal(2, *add_shape),
        "out": normal(2, *out_shape),
        "route": normal(2, 3 * 4 + 5),
        "delta": normal(2, 3, 2, 2),
    }

    def call(b, add, out, route, delta):
        b.shortcut(add, out, 0.5, -1.5)
        b.shortcut(out, add, 1.0, 2.0)
        b.route_copy(delta, route, 5)
        b.route_add(route, delta, 3)
        b.route_copy(delta, route, 1, 1, 2)  # AlexeyAB's groups=2 group_id=1
        b.route_add(route, delta, 9, 0, 4)

    compare_backends(arrays, call, rtol=1e-6, atol=1e-7)


# ---- GEMM ---------------------------------------------------------------------------------


@pytest.mark.parametrize("transposed", [False, True])
def test_matmul_broadcast_and_transposed_views(transposed):
    arrays = {
        "w": normal(2, 3, 5),
        "col": normal(2, 5, 7),
        "out": normal(2, 3, 7),
        "acc": normal(2, 3, 5),
        "scratch": np.zeros((2, 3, 5), np.float32),
    }

    def call(b, w, col, out, acc, scratch):
        if transposed:
            b.matmul(w.swapaxes(1, 2).swapaxes(1, 2), col, out)
        else:
            b.matmul(w, col, out)
        b.matmul_add(out, col.swapaxes(1, 2), acc, scratch, -0.5)

    cuda_side, _ = compare_backends(arrays, call)
    expected = arrays["w"] @ arrays["col"]
    np.testing.assert_allclose(cuda_side["out"], expected, rtol=1e-5, atol=1e-6)


def test_matmul_two_dimensional_with_transposes():
    arrays = {"x": normal(4, 6), "w": normal(5, 6), "y": normal(4, 5), "dw": normal(5, 6)}
    arrays["scratch"] = np.zeros((5, 6), np.float32)

    def call(b, x, w, y, dw, scratch):
        b.matmul(x, w.T, y)
        b.matmul_add(y.T, x, dw, scratch, 2.0)

    compare_backends(arrays, call)


def test_tiled_gemm_kernel_edges_strides_and_stacks():
    """The shared-memory kernel the backend runs on a GPU (the simulator uses the direct one):
    odd sizes spanning several tiles, a broadcast stack axis, a transposed operand."""
    from numba import cuda

    from dnupdate.engine.backends.cuda import gemm

    m, k, n = gemm.TILE + 1, 2 * gemm.TILE + 1, gemm.TILE + 2
    a = normal(m, k)
    b = normal(2, n, k)  # read transposed
    c = normal(2, m, n)
    a_dev, b_dev, c_dev = (cuda.to_device(v.reshape(-1)) for v in (a, b, c))
    args = (
        a_dev, 0, 0, 0, k, 1,
        b_dev, 0, 0, n * k, 1, k,
        c_dev, 0, 0, m * n, n, 1,
        1, 2, m, n, k, np.float32(0.5), True,
    )  # fmt: skip
    gemm.gemm[gemm.launch_shape(2, m, n)](*args)
    expected = c + np.float32(0.5) * (a @ b.swapaxes(1, 2))
    np.testing.assert_allclose(
        c_dev.copy_to_host().reshape(2, m, n), expected, rtol=1e-5, atol=1e-5
    )
    c_dev2 = cuda.to_device(c.reshape(-1))
    gemm.gemm_direct[1, 8](*args[:12], c_dev2, *args[13:])
    np.testing.assert_array_equal(c_dev2.copy_to_host(), c_dev.copy_to_host())


def test_sum_leading_add():
    arrays = {
        "stack": normal(3, 2, 4),
        "out": normal(2, 4),
        "scratch": np.zeros((2, 4), np.float32),
    }
    compare_backends(
        arrays, lambda b, stack, out, scratch: b.sum_leading_add(stack, out, scratch, -1.0)
    )


# ---- convolution and pooling ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("groups", "kernel", "stride", "pad", "dilation"),
    [
        (1, (3, 3), (1, 1), (1, 1), 1),
        (2, (3, 2), (2, 1), (0, 1), 1),
        (1, (2, 2), (1, 2), (1, 0), 2),
    ],
)
def test_im2col_and_col2im(groups, kernel, stride, pad, dilation):
    batch, channels, h, w = 2, 4, 5, 6
    out_h = (h + 2 * pad[0] - dilation * (kernel[0] - 1) - 1) // stride[0] + 1
    out_w = (w + 2 * pad[1] - dilation * (kernel[1] - 1) - 1) // stride[1] + 1
    k = channels // groups * kernel[0] * kernel[1]
    arrays = {
        "x": normal(batch, channels, h, w),
        "col": np.zeros((groups, k, batch * out_h * out_w), np.float32),
        "dx": normal(batch, channels, h, w),
    }
    geometry = (kernel, stride, pad, dilation, (out_h, out_w))

    def call(b, x, col, dx):
        b.im2col(x, col, *geometry)
        b.col2im_add(col, dx, *geometry)

    compare_backends(arrays, call, rtol=0, atol=0)


def test_darknet_flat_shortcut():
    arrays = {"x": normal(2, 4, 3, 3), "col": np.zeros((2, 2, 2 * 4), np.float32)}
    arrays["dx"] = normal(2, 4, 3, 3)

    def call(b, x, col, dx):
        b.flat_as_col(x, col)
        b.flat_as_col_add(col, dx)

    compare_backends(arrays, call, rtol=0, atol=0)


def test_bias_add_and_grad():
    arrays = {"y": normal(2, 3, 5), "bias": normal(3), "grad": normal(3)}

    def call(b, y, bias, grad):
        b.bias_add(y, bias)
        b.bias_grad(y, grad, -1.0)

    compare_backends(arrays, call, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    ("kernel", "stride", "offset"), [((2, 2), (2, 2), (0, 0)), ((3, 2), (2, 1), (1, 1))]
)
def test_pooling(kernel, stride, offset):
    x = normal(2, 2, 5, 5)
    x[0, 0, 1, 1] = x[0, 0, 1, 2]  # a tie: the first maximum wins
    out_h = (5 + 2 * offset[0] - kernel[0]) // stride[0] + 1
    out_w = (5 + 2 * offset[1] - kernel[1]) // stride[1] + 1
    arrays = {
        "x": x,
        "y": np.zeros((2, 2, out_h, out_w), np.float32),
        "arg": np.zeros((2, 2, out_h, out_w), np.int32),
        "dy": normal(2, 2, out_h, out_w),
        "dx": normal(2, 2, 5, 5),
        "ya": np.zeros((2, 2, out_h, out_w), np.float32),
        "dxa": normal(2, 2, 5, 5),
    }

    def call(b, x, y, arg, dy, dx, ya, dxa):
        b.maxpool_forward(x, y, arg, kernel, stride, offset)
        b.maxpool_backward(dy, arg, dx)
        b.avepool_forward(x, ya, kernel, stride, offset)
        b.avepool_backward(dy, dxa, kernel, stride, offset)

    compare_backends(arrays, call, rtol=0, atol=0)


# ---- activations ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(DARKNET_ACTIVATIONS))
def test_darknet_activations(name):
    x = np.concatenate([normal(20, scale=3.0), np.float32([0.0, -4.0, 4.5, 1.0, -1.0, 2.5])])
    arrays = {"x": x, "delta": normal(x.size)}

    def call(b, x, delta):
        code = b.activation_code(name)
        b.activate(x, code)
        b.activation_gradient(x, code, delta)

    compare_backends(arrays, call, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["relu", "logistic", "tanh"])
def test_caffe_activations(name):
    arrays = {"x": normal(3, 7, scale=2.0), "y": np.zeros((3, 7), np.float32)}
    arrays.update(dy=normal(3, 7), dx=np.zeros((3, 7), np.float32))

    def call(b, x, y, dy, dx):
        b.caffe_activation_forward(x, y, name, 0.1)
        b.caffe_activation_backward(x, y, dy, dx, name, 0.1)

    compare_backends(arrays, call, rtol=1e-6, atol=1e-7)


# ---- normalisation ----------------------------------------------------------------------------


def _darknet_bn_arrays(batch, channels, n):
    shape = (batch, channels, n)
    return {
        "out": normal(*shape, scale=2.0),
        "delta": normal(*shape),
        "scales": normal(channels),
        "biases": normal(channels),
        "rolling_mean": normal(channels),
        "rolling_variance": np.abs(normal(channels)) + 0.5,
        "scale_updates": normal(channels),
        "bias_updates": normal(channels),
        **{k: np.zeros(channels, np.float32) for k in ("mean", "variance", "md", "vd")},
        "x": np.zeros(shape, np.float32),
        "x_norm": np.zeros(shape, np.float32),
    }


@pytest.mark.parametrize("alpha", [1.0, -0.5])
def test_darknet_batch_norm(alpha):
    def call(b, out, delta, scales, biases, rolling_mean, rolling_variance, scale_updates,
             bias_updates, mean, variance, md, vd, x, x_norm):  # fmt: skip
        state = DarknetBNState(
            scales, biases, rolling_mean, rolling_variance, scale_updates, bias_updates,
            mean, variance, md, vd, x, x_norm,
        )  # fmt: skip
        b.darknet_bn_forward(out, state, True)
        b.darknet_bn_backward(delta, state, alpha)
        b.darknet_bn_forward(out, state, False)

    compare_backends(_darknet_bn_arrays(3, 2, 4), call)


@pytest.mark.parametrize("use_global_stats", [False, True])
def test_caffe_batch_norm_and_scale(use_global_stats):
    shape = (3, 2, 4)
    arrays = {
        "x": normal(*shape), "y": np.zeros(shape, np.float32), "dy": normal(*shape),
        "dx": np.zeros(shape, np.float32), "mean_sum": normal(2),
        "variance_sum": np.abs(normal(2)) + 1, "scale_factor": np.float32([2.0]),
        "mean": np.zeros(2, np.float32), "std": np.zeros(2, np.float32),
        "gamma": normal(2), "beta": normal(2), "dgamma": normal(2), "dbeta": normal(2),
        "z": np.zeros(shape, np.float32), "dz": np.zeros(shape, np.float32),
    }  # fmt: skip

    def call(b, x, y, dy, dx, mean_sum, variance_sum, scale_factor, mean, std, gamma, beta,
             dgamma, dbeta, z, dz):  # fmt: skip
        state = CaffeBNState(mean_sum, variance_sum, scale_factor, mean, std, 0.9, 1e-5)
        b.caffe_bn_forward(x, y, state, use_global_stats)
        b.caffe_bn_backward(y, dy, dx, state, use_global_stats)
        b.scale_forward(y, z, gamma, beta)
        b.scale_backward(y, dy, dz, gamma, dgamma, dbeta, 1.0)
        b.scale_backward(y, dy, None, gamma, dgamma, None, -2.0)

    compare_backends(arrays, call)


def test_scale_batch_one_overwrite_quirk():
    arrays = {"x": normal(1, 3, 1), "dy": normal(1, 3, 1), "gamma": normal(3), "dgamma": normal(3)}

    def call(b, x, dy, gamma, dgamma):
        b.scale_backward(x, dy, None, gamma, dgamma, None, 1.0)

    cuda_side, _ = compare_backends(arrays, call, rtol=0, atol=0)
    np.testing.assert_array_equal(cuda_side["dgamma"], (arrays["dy"] * arrays["x"]).reshape(3))


# ---- dropout and losses -----------------------------------------------------------------------


@pytest.mark.parametrize("style", ["darknet", "caffe"])
def test_dropout(style):
    arrays = {
        "x": normal(12), "y": np.zeros(12, np.float32), "u": RNG.random(12, dtype=np.float32),
        "mask": np.zeros(12, np.uint32), "dy": normal(12), "dx": normal(12),
    }  # fmt: skip

    def call(b, x, y, u, mask, dy, dx):
        b.dropout_forward(x, y, u, mask, 0.4, style)
        b.dropout_backward(dy, dx, u, mask, 0.4, style)

    compare_backends(arrays, call, rtol=0, atol=0)


@pytest.mark.parametrize(("groups", "temperature"), [(1, 1.0), (2, 0.5)])
def test_darknet_softmax_and_cross_entropy(groups, temperature):
    truth = np.zeros((3, 6), np.float32)
    truth[np.arange(3), [0, 4, 5]] = 1.0
    zeros = np.zeros((3, 6), np.float32)
    arrays = {"x": normal(3, 6, scale=3.0), "y": zeros, "t": truth, "delta": zeros, "losses": zeros}

    def call(b, x, y, t, delta, losses):
        return b.darknet_softmax(x, y, t, delta, losses, groups, temperature)

    _, cost = compare_backends(arrays, call, rtol=1e-6, atol=1e-7)
    assert cost > 0


@pytest.mark.parametrize("cost_type", ["sse", "masked", "L1", "smooth"])
def test_darknet_cost(cost_type):
    truth = normal(2, 5, scale=2.0)
    truth[0, 1] = -1234.0
    arrays = {"x": normal(2, 5), "t": truth, "e": np.zeros((2, 5), np.float32),
              "d": np.zeros((2, 5), np.float32)}  # fmt: skip
    compare_backends(arrays, lambda b, x, t, e, d: b.darknet_cost(x, t, e, d, cost_type))


@pytest.mark.parametrize(
    ("normalization", "ignore"), [("valid", 2), ("full", None), ("batch_size", None), ("none", 1)]
)
def test_softmax_loss_and_accuracy(normalization, ignore):
    labels = np.int32([[0, 2], [1, 2], [2, 0]])
    arrays = {"x": normal(3, 3, 2), "labels": labels, "prob": np.zeros((3, 3, 2), np.float32),
              "dx": normal(3, 3, 2)}  # fmt: skip

    def call(b, x, labels, prob, dx):
        loss = b.softmax_loss_forward(x, labels, prob, normalization, ignore)
        b.softmax_loss_backward(prob, labels, dx, normalization, ignore, 0.5)
        return [loss, b.accuracy(x, labels, 1, ignore), b.accuracy(x, labels, 2, ignore)]

    compare_backends(arrays, call, rtol=1e-6, atol=1e-7)


def test_label_out_of_range_is_reported():
    cuda = backends()["cuda"]
    arrays = {
        "x": normal(2, 3, 1),
        "labels": np.int32([[1], [3]]),
        "prob": np.zeros((2, 3, 1), np.float32),
    }
    with pytest.raises(LabelOutOfRangeError, match="label 3 at position 1"):
        on_backend(
            cuda,
            arrays,
            lambda b, x, labels, prob: b.softmax_loss_forward(x, labels, prob, "valid", None),
        )


# ---- fused update and reductions ----------------------------------------------------------------

RULES = [
    ("darknet_sgd", upd.RULE_DARKNET_SGD, {"momentum": 0.9}),
    ("darknet_adam", upd.RULE_DARKNET_ADAM, {"momentum": 0.9, "one_minus_momentum": 0.1,
     "beta2": 0.999, "one_minus_beta2": 0.001, "eps": 1e-7, "correction1": 0.19,
     "correction2": 0.002}),
    ("caffe_sgd", upd.RULE_CAFFE_SGD, {"momentum": 0.9, "clip_on": 1, "clip_scale": 0.5}),
    ("caffe_sgd_lr_outside", upd.RULE_CAFFE_SGD_LR_OUTSIDE, {"momentum": 0.9, "l1": 1}),
    ("caffe_nesterov", upd.RULE_CAFFE_NESTEROV, {"momentum": 0.9, "one_plus_momentum": 1.9}),
    ("caffe_adagrad", upd.RULE_CAFFE_ADAGRAD, {"eps": 1e-8, "norm_on": 1, "norm_scale": 0.5}),
    ("caffe_rmsprop", upd.RULE_CAFFE_RMSPROP, {"momentum": 0.98, "one_minus_momentum": 0.02,
     "eps": 1e-8}),
    ("caffe_adadelta", upd.RULE_CAFFE_ADADELTA, {"momentum": 0.95, "one_minus_momentum": 0.05,
     "eps": 1e-6}),
    ("caffe_adam", upd.RULE_CAFFE_ADAM, {"momentum": 0.9, "one_minus_momentum": 0.1,
     "beta2": 0.999, "one_minus_beta2": 0.001, "eps": 1e-8}),
    ("caffe_adamw", upd.RULE_CAFFE_ADAMW, {"one_minus_momentum": 0.1, "beta2": 0.999,
     "one_minus_beta2": 0.001, "eps": 1e-8, "correction2": 0.0316, "clip_on": 1,
     "clip_scale": 0.5}),
    ("darknet_adamw", upd.RULE_DARKNET_ADAMW, {"one_minus_momentum": 0.6, "beta2": 0.999,
     "one_minus_beta2": 0.001, "eps": 1e-7, "correction2": 0.0316, "batch": 6}),
]  # fmt: skip
_TWO_STATES = (upd.RULE_DARKNET_ADAM, upd.RULE_CAFFE_ADADELTA, upd.RULE_CAFFE_ADAM,
               upd.RULE_CAFFE_ADAMW, upd.RULE_DARKNET_ADAMW)  # fmt: skip


@pytest.mark.parametrize(("name", "rule", "coefficients"), RULES, ids=[r[0] for r in RULES])
def test_fused_update(name, rule, coefficients):
    size = 23
    two = rule in _TWO_STATES
    one = rule != upd.RULE_DARKNET_SGD
    arrays = {
        "params": normal(size), "grads": normal(size),
        "a": np.abs(normal(size if one else 0)), "b": np.abs(normal(size if two else 0)),
    }  # fmt: skip
    offsets, sizes = np.int64([0, 5, 9, 20]), np.int64([5, 3, 11, 3])
    lr, decay = np.float32([0.1, 0.2, 0.05, 0.3]), np.float32([-0.001, 0.0, 0.002, 0.0])
    grad_on = np.int8([1, 1, 0, 1])
    coef = upd.pack_coefficients(**coefficients)
    norms = {}

    def call(b, params, grads, a, b_state):
        step_sq, weight_sq = np.zeros(4), np.zeros(4)
        for _ in range(3):
            b.fused_update(rule, params, grads, a, b_state, offsets, sizes, lr, decay,
                           grad_on, coef, step_sq, weight_sq)  # fmt: skip
        norms[b.name] = (step_sq, weight_sq)
        squares = np.zeros(4)
        b.segment_sumsq(params, offsets, sizes, grad_on, squares)
        return squares

    arrays["b_state"] = arrays.pop("b")
    compare_backends(arrays, call, rtol=1e-6, atol=1e-7)
    for cpu_norm, gpu_norm in zip(norms["cpu"], norms["cuda"], strict=True):
        np.testing.assert_allclose(gpu_norm, cpu_norm, rtol=1e-6)


@pytest.mark.parametrize(("name", "rule", "coefficients"), RULES, ids=[r[0] for r in RULES])
def test_fused_update_from_a_source_is_the_in_place_update(name, rule, coefficients):
    """``source``: the rule reads the weights there and writes ``params`` (simulated mixed
    precision's master copy), the same bits as the update in place on the device."""
    cuda = backends()["cuda"]
    size = 23
    states = 2 if rule in _TWO_STATES else int(rule != upd.RULE_DARKNET_SGD)
    master, grads = normal(size), normal(size)
    state = [np.abs(normal(size if k < states else 0)) for k in range(2)]
    offsets, sizes = np.int64([0, 5, 9, 20]), np.int64([5, 3, 11, 3])
    lr, decay = np.float32([0.1, 0.2, 0.05, 0.3]), np.float32([-0.001, 0.0, 0.002, 0.0])
    coef = upd.pack_coefficients(**coefficients)

    def device(host):
        out = cuda.zeros(host.shape)
        cuda.copy_from_host(host, out)
        return out

    working = master.copy()  # the segments rounded (a working copy), the rest as it is
    for offset, length in zip(offsets.tolist(), sizes.tolist(), strict=True):
        part = slice(offset, offset + length)
        working[part] = master[part].astype(np.float16).astype(np.float32)

    def run(from_source: bool):
        kept = device(master)
        params = device(working) if from_source else kept
        bufs = [device(grads), *(device(x) for x in state)]
        step_sq, weight_sq = np.zeros(4), np.zeros(4)
        source = kept if from_source else None
        cuda.fused_update(rule, params, *bufs, offsets, sizes, lr, decay, np.int8([1, 1, 0, 1]),
                          coef, step_sq, weight_sq, source=source)  # fmt: skip
        if from_source:
            np.testing.assert_array_equal(cuda.to_host(kept), master)
        return [cuda.to_host(x) for x in (params, *bufs)], (step_sq, weight_sq)

    (want, want_norms), (got, got_norms) = run(False), run(True)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    for g, w in zip(got_norms, want_norms, strict=True):
        np.testing.assert_array_equal(g, w)


def test_segment_norms_and_nonfinite():
    values = normal(17)
    values[12] = np.nan
    offsets, lengths = np.int64([0, 4, 10, 15]), np.int64([4, 6, 5, 2])
    found = {}
    for name, b in backends().items():
        device = b.zeros((17,))
        b.copy_from_host(values, device)
        out, flags = np.zeros(4), np.zeros(4, np.int8)
        b.segment_sum_squares(device, offsets, lengths, out)
        found[name] = (out, b.first_nonfinite_segment(device, offsets, lengths, flags), flags)
    np.testing.assert_allclose(found["cuda"][0][[0, 1, 3]], found["cpu"][0][[0, 1, 3]], rtol=1e-12)
    assert np.isnan(found["cuda"][0][2])
    assert found["cuda"][1] == found["cpu"][1] == 2
    assert found["cuda"][2].tolist() == [0, 0, 1, 0]


# ---- [reorg] and [crop] ----------------------------------------------------------------------


@pytest.mark.parametrize("forward", [False, True])
def test_reorg_kernel(forward):
    arrays = {"x": normal(2, 8, 4, 2), "out": normal(2, 8, 4, 2)}

    def call(b, x, out):
        b.reorg(x, out, 2, 4, 8, 2, forward)

    compare_backends(arrays, call, rtol=0, atol=0)


@pytest.mark.parametrize("colour", [False, True])
def test_crop_kernel(colour):
    x = np.abs(normal(2, 3, 5, 6)) % 1
    x[0, :, 1, 2] = 0.5  # grey
    factors = np.float32([[1.3, 0.8], [0.7, 1.2]]) if colour else np.zeros((0, 2), np.float32)
    arrays = {"x": x, "out": normal(2, 3, 3, 4)}

    def call(b, x, out):
        b.crop_forward(x, out, 1, 2, True, 2.0, -1.0, factors)

    compare_backends(arrays, call, rtol=1e-6, atol=1e-6)
