"""Softmax, cost, SoftmaxWithLoss and Accuracy kernels against the float64 NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest

from dnupdate.engine.backends.cpu import softmax as sm
from dnupdate.engine.backends.cpu.activations import KernelArgumentError
from tests.reference import softmax as ref


def _close(actual, expected, rtol=2e-6, atol=2e-7):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize(
    ("shape", "groups", "temperature"),
    [
        ((1, 10), 1, 1.0),
        ((3, 12), 3, 1.0),
        ((4, 7), 1, 2.5),
        ((2, 6, 2, 2), 2, 0.5),
        ((5, 1), 1, 1),
    ],
)
def test_darknet_softmax_and_cross_entropy(shape, groups, temperature):
    rng = np.random.default_rng(sum(shape))
    x = (rng.normal(size=shape) * 3).astype(np.float32)
    p = np.empty_like(x)
    sm.darknet_softmax_forward(x, p, groups, temperature)
    _close(p, ref.darknet_softmax(x, groups, temperature))
    truth = np.zeros_like(x).reshape(shape[0], -1)
    truth[np.arange(shape[0]), rng.integers(0, truth.shape[1], shape[0])] = 1.0
    truth[0, 0] += 0.25  # soft target: counted once, unweighted
    truth = truth.reshape(shape)
    delta, loss = np.empty_like(x), np.empty_like(x)
    cost = sm.darknet_softmax_cross_entropy(p, truth, delta, loss)
    e_loss, e_delta, e_cost = ref.darknet_cross_entropy(p, truth)
    _close(loss, e_loss, 1e-6, 1e-6)
    _close(delta, e_delta, 0, 1e-7)
    assert cost == pytest.approx(e_cost, rel=1e-6)


def test_darknet_softmax_delta_ignores_temperature():
    x = np.array([[1.0, 2.0, 0.5]], np.float32)
    p = np.empty_like(x)
    sm.darknet_softmax_forward(x, p, 1, 4.0)
    truth = np.array([[0, 1, 0]], np.float32)
    delta, loss = np.empty_like(x), np.empty_like(x)
    sm.darknet_softmax_cross_entropy(p, truth, delta, loss)
    assert np.array_equal(delta, truth - p)  # t − p, no 1/T
    assert loss[0, 0] == 0 and loss[0, 1] == np.float32(-np.log(np.float64(p[0, 1])))


def test_bad_groups_are_refused():
    with pytest.raises(KernelArgumentError, match="groups"):
        sm.darknet_softmax_forward(np.zeros((2, 5), np.float32), np.zeros((2, 5), np.float32), 2)


@pytest.mark.parametrize("cost_type", ["sse", "masked", "smooth", "L1", "seg", "wgan"])
def test_darknet_cost(cost_type):
    rng = np.random.default_rng(3)
    pred = (rng.normal(size=(4, 9)) * 1.5).astype(np.float32)
    truth = (rng.normal(size=(4, 9)) * 1.5).astype(np.float32)
    truth[1, :3] = sm.SECRET_NUM
    e_error, e_delta, e_pred = ref.darknet_cost(pred, truth, cost_type)
    delta, error = np.empty_like(pred), np.empty_like(pred)
    cost = sm.darknet_cost_forward(pred, truth, delta, error, sm.cost_code(cost_type))
    _close(pred, e_pred, 0, 0)
    _close(error, e_error, 1e-6, 1e-6)
    _close(delta, e_delta, 1e-6, 1e-7)
    assert cost == pytest.approx(e_error.sum(), rel=1e-5)
    into = np.ones_like(pred)
    sm.darknet_cost_backward(delta, into, 0.5)
    _close(into, 1 + 0.5 * e_delta, 1e-6, 1e-7)


def test_smooth_l1_sign_quirk():
    pred = np.array([0.0, 0.0], np.float32)
    truth = np.array([3.0, -3.0], np.float32)
    delta, error = np.empty(2, np.float32), np.empty(2, np.float32)
    sm.darknet_cost_forward(pred, truth, delta, error, sm.SMOOTH)
    assert list(delta) == [-1.0, 1.0]  # inverted relative to d = t − p
    assert list(error) == [5.0, 5.0]


def test_softmax_followed_by_cost_doubles_the_logit_gradient():
    """[softmax] then [cost] type=sse: the cost adds t − p into the softmax delta."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 5)).astype(np.float32)
    truth = np.zeros_like(x)
    truth[:, 1] = 1
    p = np.empty_like(x)
    sm.darknet_softmax_forward(x, p)
    softmax_delta, loss = np.empty_like(x), np.empty_like(x)
    sm.darknet_softmax_cross_entropy(p, truth, softmax_delta, loss)
    cost_delta, error = np.empty_like(x), np.empty_like(x)
    sm.darknet_cost_forward(p.copy(), truth, cost_delta, error, sm.SSE)
    sm.darknet_cost_backward(cost_delta, softmax_delta, 1.0)  # cost's net.delta = softmax delta
    logits_delta = np.zeros_like(x)
    sm.darknet_softmax_backward(softmax_delta, logits_delta)
    _close(logits_delta, 2 * (truth - p), 1e-6, 1e-7)


def test_unknown_cost_type_is_refused():
    with pytest.raises(KernelArgumentError, match="huber"):
        sm.cost_code("huber")


CAFFE_CASES = [
    ((4, 10), "valid", None),
    ((3, 5, 2, 3), "full", None),
    ((3, 5, 2, 3), "valid", 2),
    ((3, 5, 4), "batch_size", 1),
    ((2, 6), "none", None),
    ((1, 3, 1), "valid", None),
]


@pytest.mark.parametrize(("shape", "mode", "ignore"), CAFFE_CASES)
@pytest.mark.parametrize("loss_weight", [1.0, 0.3])
def test_caffe_softmax_loss(shape, mode, ignore, loss_weight):
    rng = np.random.default_rng(len(shape) + shape[0])
    x = (rng.normal(size=shape) * 3).astype(np.float32)
    outer, classes = shape[0], shape[1]
    inner = int(np.prod(shape[2:], dtype=np.int64))
    labels = rng.integers(0, classes, size=(outer, inner)).astype(np.float32)
    if ignore is not None:
        labels[0, 0] = ignore
    prob = np.empty_like(x)
    top = sm.caffe_softmax_loss_forward(x, labels, prob, mode, ignore)
    x3 = x.reshape(outer, classes, inner)
    e_top, e_dx = ref.caffe_softmax_loss(x3, labels, mode, ignore, loss_weight)
    _close(prob.reshape(x3.shape), ref.caffe_softmax(x3))
    assert top == pytest.approx(e_top, rel=1e-5)
    dx = np.empty_like(x)
    sm.caffe_softmax_loss_backward(prob, labels, dx, loss_weight, mode, ignore)
    _close(dx.reshape(x3.shape), e_dx, 1e-5, 1e-7)


def test_caffe_flt_min_clamp():
    x = np.array([[0.0, 200.0]], np.float32)  # p(class 0) underflows to 0
    prob = np.empty_like(x)
    top = sm.caffe_softmax_loss_forward(x, np.array([0], np.int32), prob)
    assert top == pytest.approx(87.3365, abs=1e-4)


def test_caffe_all_ignored_normalizer_is_one():
    x = np.zeros((2, 3), np.float32)
    prob = np.empty_like(x)
    assert sm.caffe_softmax_loss_forward(x, np.array([1, 1]), prob, "valid", 1) == 0.0
    dx = np.ones_like(x)
    sm.caffe_softmax_loss_backward(prob, np.array([1, 1]), dx, 1.0, "valid", 1)
    assert np.all(dx == 0)


def test_caffe_label_out_of_range_is_a_clear_error():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(sm.LabelOutOfRangeError, match="label 3 at position 1"):
        sm.caffe_softmax_loss_forward(x, np.array([0, 3]), np.empty_like(x))


@pytest.mark.parametrize("top_k", [1, 2, 3])
@pytest.mark.parametrize(("shape", "ignore"), [((6, 5), None), ((3, 4, 2, 2), 0), ((2, 1), None)])
def test_caffe_accuracy(top_k, shape, ignore):
    rng = np.random.default_rng(top_k + shape[0])
    scores = rng.integers(-2, 3, size=shape).astype(np.float32)  # many ties
    outer, classes = shape[0], shape[1]
    inner = int(np.prod(shape[2:], dtype=np.int64))
    labels = rng.integers(0, classes, size=outer * inner).astype(np.int64)
    per_class, counts = np.empty(classes, np.float32), np.empty(classes, np.float32)
    got = sm.caffe_accuracy(scores, labels, top_k, ignore, per_class, counts)
    expected, e_per_class = ref.caffe_accuracy(
        scores.reshape(outer, classes, inner), labels, top_k, ignore
    )
    assert got == pytest.approx(expected, rel=1e-6)
    _close(per_class, e_per_class, 1e-6, 1e-7)


def test_caffe_accuracy_ties_count_against():
    scores = np.array([[1.0, 1.0, 0.0]], np.float32)
    assert sm.caffe_accuracy(scores, np.array([0])) == 0.0
    assert sm.caffe_accuracy(scores, np.array([0]), top_k=2) == 1.0


@pytest.mark.parametrize("shape", [(64, 10, 1), (3, 1000, 1), (2, 7, 5)])
def test_softmax_with_loss_runs_the_softmax_layers_arithmetic(shape):
    """Caffe's ``SoftmaxWithLoss`` runs its own ``Softmax`` layer: the probabilities of the
    loss and of the standalone layer are the same bits (float32 exp, float32 channel sum in
    channel order, float32 division)."""
    from dnupdate.engine.backends.cpu import caffe_layers

    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 8).astype(np.float32)
    from_loss, from_layer = np.empty_like(x), np.empty_like(x)
    sm.caffe_softmax_forward(x, from_loss)
    caffe_layers.caffe_softmax_forward(x, from_layer)
    np.testing.assert_array_equal(from_loss.view(np.uint32), from_layer.view(np.uint32))
    np.testing.assert_allclose(from_loss, ref.caffe_softmax(x), rtol=1e-4, atol=1e-30)
