"""Convolution and connected kernels (through the layers) against the NumPy reference."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from dnupdate.engine.backends.cpu import CpuBackend, conv_images
from dnupdate.engine.model.network import Network
from dnupdate.engine.spec import ConnectedSpec, ConvSpec, InputSpec, NetSpec
from tests.reference.connected import connected_backward, connected_forward
from tests.reference.conv import conv_backward, conv_forward, darknet_1x1_shortcut_forward

BACKEND = CpuBackend()


class BatchedConvBackend(CpuBackend):
    """The CPU backend with the per-image convolution turned off: the whole-batch im2col +
    matmul strategy (the CUDA backend's, and the fallback without OpenBLAS)."""

    def conv_image_chunks(self, batch, chunk_floats):
        return 0


class OneChunkBackend(CpuBackend):
    """Per-image convolution with the whole batch in one chunk (one partial weight sum)."""

    IMAGE_CHUNKS = 1


BACKENDS = {"per-image": BACKEND, "one-chunk": OneChunkBackend(), "batched": BatchedConvBackend()}

# (batch, C, H, W, filters, k, stride, pad, groups, dilation)
CASES = [
    (1, 1, 5, 5, 1, 3, 1, 0, 1, 1),
    (2, 3, 7, 6, 4, 3, 1, 1, 1, 1),
    (3, 4, 9, 9, 6, 3, 2, 1, 2, 1),
    (2, 2, 8, 7, 2, 5, 3, 2, 1, 1),
    (1, 6, 5, 5, 6, 1, 1, 0, 3, 1),
    (2, 3, 6, 6, 4, 1, 2, 0, 1, 1),
    (2, 2, 9, 8, 3, 3, 1, 2, 1, 2),
    (2, 4, 4, 4, 4, 2, 2, 0, 4, 1),
]


def conv_net(case, order="caffe", bias=True):
    _batch, c, h, w, f, k, s, p, g, d = case
    layer = ConvSpec(
        name="conv",
        filters=f,
        kernel_h=k,
        kernel_w=k,
        stride_h=s,
        stride_w=s,
        pad_h=p,
        pad_w=p,
        groups=g,
        dilation=d,
        bias=bias,
        param_order=order,
    )
    return NetSpec("n", InputSpec(c, h, w), (head_for(c), layer))


def head_for(c):
    """A 1×1 identity conv in front, so the conv under test receives ``dx``."""
    return ConvSpec(name="identity", filters=c, kernel_h=1, kernel_w=1, bias=False)


def build(case, order="caffe", bias=True, backend=BACKEND):
    batch = case[0]
    spec = conv_net(case, order, bias)
    net = Network(spec, backend, batch=batch, semantics="caffe")
    rng = np.random.default_rng(sum(case))
    net.blob("identity", 0)[...] = np.eye(case[1], dtype=np.float32)[:, :, None, None]
    for key, view in net.named_blobs():
        if not key.startswith("identity"):
            view[...] = rng.standard_normal(view.shape).astype(np.float32)
    x = rng.standard_normal((batch, case[1], case[2], case[3])).astype(np.float32)
    return net, x, rng


@pytest.mark.parametrize("strategy", list(BACKENDS))
@pytest.mark.parametrize("case", CASES)
def test_conv_forward_and_backward_match_reference(case, strategy):
    _, _, _, _, _, _, s, p, g, d = case
    net, x, rng = build(case, backend=BACKENDS[strategy])
    w, b = net.blob("conv", 0), net.blob("conv", 1)
    y = net.forward(x, train=True)
    want = conv_forward(x, w, b, (s, s), (p, p), g, d)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)

    dy = rng.standard_normal(y.shape).astype(np.float32)
    net.layers[-1].delta[...] = dy
    net.backward()
    dx, dw, db = conv_backward(x, w, dy, (s, s), (p, p), g, d)
    np.testing.assert_allclose(net.grad("conv", 0), dw, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(net.grad("conv", 1), db, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(net.layers[0].delta, dx, rtol=1e-4, atol=1e-4)


def test_strategies_pick_as_documented():
    case = (4, 3, 8, 8, 5, 3, 1, 1, 1, 1)
    assert build(case, backend=BACKENDS["batched"])[0].layers[-1].chunks == 0
    assert build(case, backend=BACKENDS["one-chunk"])[0].layers[-1].chunks == 1
    assert build(case)[0].layers[-1].chunks in (0, 4)  # 0 only without OpenBLAS


@pytest.mark.parametrize("activation", ["leaky", "relu", "logistic", "elu", "linear"])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_bias_and_activation_match_the_layer_epilogue(activation, bias):
    """Per image, the darknet tail (``+ bias``, activation; backward: gradient from the output,
    bias sums) rides along the GEMMs; the whole-batch path runs it as separate passes."""
    case = (5, 3, 7, 7, 4, 3, 1, 1, 1, 1)
    spec = conv_net(case, order="darknet", bias=bias)
    conv = replace(spec.layers[-1], activation=activation)
    spec = replace(spec, layers=(spec.layers[0], conv))
    results = []
    for strategy in ("per-image", "batched"):
        net = Network(spec, BACKENDS[strategy], batch=5, semantics="darknet")
        assert net.layers[-1].fused_tail == (strategy == "per-image")
        rng = np.random.default_rng(11)
        net.blob("identity", 0)[...] = np.eye(3, dtype=np.float32)[:, :, None, None]
        for key, view in net.named_blobs():
            if not key.startswith("identity"):
                view[...] = rng.standard_normal(view.shape).astype(np.float32)
        x = rng.standard_normal((5, 3, 7, 7)).astype(np.float32)
        y = net.forward(x, train=True).copy()
        net.layers[-1].delta[...] = rng.standard_normal(y.shape).astype(np.float32)
        net.backward()
        results.append((y, net.layers[-1].delta.copy(), net.grads.copy(), net.layers[0].delta))
    for fused, separate in zip(*results, strict=True):
        np.testing.assert_allclose(fused, separate, rtol=2e-5, atol=2e-5)


def test_per_image_results_do_not_depend_on_the_thread_count():
    """Chunks are fixed by the shapes; each chunk's images are summed in order, then the chunk
    partial sums in chunk order: 1 and 2 threads give the same bits."""
    case = (12, 6, 10, 10, 8, 3, 1, 1, 2, 1)
    results = []
    for count in (1, 2):
        net, x, rng = build(case, backend=CpuBackend(threads=count))
        y = net.forward(x, train=True).copy()
        net.layers[-1].delta[...] = rng.standard_normal(y.shape).astype(np.float32)
        net.backward()
        results.append((y, net.grads.copy(), net.layers[0].delta.copy()))
    for first, second in zip(*results, strict=True):
        assert np.array_equal(first, second)


def test_darknet_order_and_sign_convention():
    """darknet blob order (biases first) and grads = −Σ(delta ⊗ input) under darknet semantics
    for a Caffe-delta net means alpha = −1."""
    case = (2, 3, 6, 6, 4, 3, 1, 1, 1, 1)
    spec = conv_net(case, order="darknet")
    net = Network(spec, BACKEND, batch=2, semantics="darknet")
    assert [s.name for s in net.segments if s.layer == "conv"] == ["biases", "weights"]
    rng = np.random.default_rng(3)
    net.blob("identity", 0)[...] = np.eye(3, dtype=np.float32)[:, :, None, None]
    net.blob("conv", 1)[...] = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    net.forward(x, train=True)
    dy = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    net.layers[-1].delta[...] = dy
    net.backward()
    _, dw, db = conv_backward(x, net.blob("conv", 1), dy, (1, 1), (1, 1))
    # the net has darknet-ordered layers → deltas are darknet's (−grad): alpha = +1
    assert net.grad_sign == -1 and net.delta_sign == -1
    np.testing.assert_allclose(net.grad("conv", 1), dw, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(net.grad("conv", 0), db, rtol=1e-5, atol=1e-4)


def test_gradients_accumulate_until_zeroed():
    case = (2, 2, 5, 5, 2, 3, 1, 1, 1, 1)
    net, x, rng = build(case)
    net.forward(x, train=True)
    dy = rng.standard_normal(net.layers[-1].delta.shape).astype(np.float32)
    net.layers[-1].delta[...] = dy
    net.backward()
    once = net.grads.copy()
    net.forward(x, train=True)
    net.layers[-1].delta[...] = dy
    net.backward()
    np.testing.assert_allclose(net.grads, 2 * once, rtol=1e-6)
    net.zero_grads()
    assert not net.grads.any()


@pytest.mark.parametrize("stride,pad", [(2, 0), (1, 1), (3, 0)])
def test_darknet_1x1_shortcut_quirk(stride, pad):
    """darknet's CPU 1×1 path ignores stride and padding; ``darknet_1x1_shortcut`` keeps it."""
    batch, c, h, w, f = 2, 4, 6, 6, 3
    layer = ConvSpec(
        name="c",
        filters=f,
        kernel_h=1,
        kernel_w=1,
        stride_h=stride,
        stride_w=stride,
        pad_h=pad,
        pad_w=pad,
        bias=False,
        darknet_1x1_shortcut=True,
    )
    net = Network(NetSpec("n", InputSpec(c, h, w), (layer,)), BACKEND, batch, "caffe")
    rng = np.random.default_rng(7)
    net.blob("c", 0)[...] = rng.standard_normal((f, c, 1, 1)).astype(np.float32)
    x = rng.standard_normal((batch, c, h, w)).astype(np.float32)
    y = net.forward(x, train=False)
    want = darknet_1x1_shortcut_forward(x, net.blob("c", 0), y.shape[2:])
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch,shape,outputs", [(1, (5, 1, 1), 3), (3, (2, 3, 3), 7)])
@pytest.mark.parametrize("order", ["caffe", "darknet"])
def test_connected_matches_reference(batch, shape, outputs, order):
    c, h, w = shape
    spec = NetSpec(
        "n",
        InputSpec(c, h, w),
        (
            head_for(c),
            ConnectedSpec(name="fc", outputs=outputs, param_order=order),
        ),
    )
    net = Network(spec, BACKEND, batch, "caffe")
    rng = np.random.default_rng(batch + outputs)
    net.blob("identity", 0)[...] = np.eye(c, dtype=np.float32)[:, :, None, None]
    wi, bi = (0, 1) if order == "caffe" else (1, 0)
    net.blob("fc", wi)[...] = rng.standard_normal((outputs, c * h * w)).astype(np.float32)
    net.blob("fc", bi)[...] = rng.standard_normal(outputs).astype(np.float32)
    x = rng.standard_normal((batch, c, h, w)).astype(np.float32)
    y = net.forward(x, train=True)
    want = connected_forward(x, net.blob("fc", wi), net.blob("fc", bi))
    np.testing.assert_allclose(y.reshape(batch, -1), want, rtol=1e-5, atol=1e-5)
    dy = rng.standard_normal((batch, outputs, 1, 1)).astype(np.float32)
    net.layers[-1].delta[...] = dy
    net.backward()
    dx, dw, db = connected_backward(x, net.blob("fc", wi), dy)
    sign = net.grad_alpha  # ±1, and 1/batch for a darknet-ordered net under Caffe rules
    np.testing.assert_allclose(net.grad("fc", wi), sign * dw, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(net.grad("fc", bi), sign * db, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(net.layers[0].delta, dx, rtol=1e-5, atol=1e-5)


def _chunk_sums_numpy(partial, out, alpha, layout, kernel):
    """The reference: NumPy's sum over the chunks (in order), reordered, then added."""
    total = partial[0] if partial.shape[0] == 1 else np.sum(partial, axis=0)
    if layout in ("strip", "rows"):
        groups, m = out.shape[0], out.shape[1]
        if layout == "strip":
            total = total.reshape(groups, kernel[0], m, kernel[1], -1).transpose(0, 2, 4, 1, 3)
        else:
            total = total.reshape(groups, m, kernel[0], kernel[1], -1).transpose(0, 1, 4, 2, 3)
    elif layout == "transposed":
        total = total.swapaxes(-1, -2)
    total = total.reshape(out.shape)
    if alpha == 1.0:
        return out + total
    if alpha == -1.0:
        return out - total
    return out + np.float32(alpha) * total


@pytest.mark.parametrize("layout", ["plain", "transposed", "strip", "rows"])
@pytest.mark.parametrize("alpha", [1.0, -1.0, 0.37])
@pytest.mark.parametrize("chunks", [1, 3, 8])
def test_the_chunk_sums_are_numpy_s_in_order(layout, alpha, chunks):
    """The weight-gradient partial sums of the chunks, added in chunk order per element,
    reordered from each kernel path's layout and added to the gradient with ``alpha``: the
    bits of NumPy's sum over the leading axis, reorder and add (2 groups, 5 outputs, 3
    channels, a 3×2 kernel; and a bias vector)."""
    rng = np.random.default_rng(chunks)
    groups, m, channels, kernel = 2, 5, 3, (3, 2)
    depth = channels * kernel[0] * kernel[1]
    shape = (chunks, groups, depth, m) if layout == "transposed" else (chunks, groups, m, depth)
    partial = rng.standard_normal(shape).astype(np.float32)
    out = rng.standard_normal((groups, m, depth)).astype(np.float32)
    want = _chunk_sums_numpy(partial.copy(), out, alpha, layout, kernel)
    conv_images._add_chunk_sums(partial, out, alpha, layout, kernel)
    assert out.tobytes() == want.tobytes()
    bias_partial = rng.standard_normal((chunks, 7)).astype(np.float32)
    bias = rng.standard_normal(7).astype(np.float32)
    want = _chunk_sums_numpy(bias_partial.copy(), bias, alpha, "plain", None)
    conv_images._add_chunk_sums(bias_partial, bias, alpha, "plain")
    assert bias.tobytes() == want.tobytes()
