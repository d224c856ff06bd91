"""Element-wise activations and their gradients (CPU, Numba), darknet and Caffe conventions.

darknet (``activations.c``/``activations.h``, spec/darknet.md section 7.1):

* :func:`activate` is ``activate_array``: ``x ← f(x)`` in place;
* :func:`gradient` is ``gradient_array``: ``delta ← delta · g(y)`` where **y is the activation
  output** (darknet never keeps the pre-activation value).

Every darknet activation is transcribed with C's promotion rules, because they decide the
rounding: a literal such as ``.1`` is a *double*, so ``leaky`` computes ``(float)(.1 * (double)x)``
rather than ``.1f * x``; ``logistic``, ``loggy``, ``tanh``, ``elu`` and ``selu`` call the double
``exp``; the gradients mostly stay in float32. The codes are darknet's own ``ACTIVATION`` enum
values (``darknet.h``), so they can be passed straight to ``libdarknet`` in conformance tests.

Caffe (spec/caffe.md sections 7.4, 7.5): ReLU with ``negative_slope``, Sigmoid as
``0.5·tanh(0.5·x) + 0.5`` (in double, as ``sigmoid_layer.cpp``), TanH with the float ``tanhf``.
Caffe writes into a separate top (which may alias the bottom) and computes ``dx`` from
``dy``.

The per-element math lives in small ``@njit(inline="always")`` scalar functions
(``<name>_activate``/``<name>_gradient``, one float32 in, one float32 out) so a CUDA backend can
compile the same Python functions as device functions (``cuda.jit(device=True)(f.py_func)``).
The array loops are serial ``@njit`` functions; arrays of more than one block (``BLOCK``
floats) run on the threads through ONE small ``parallel=True`` driver, ``_blocks``, whose
parallel loop over fixed blocks calls the serial loop of the requested operation (darknet
activate/gradient, Caffe ReLU/Sigmoid/TanH forward/backward) on each block's slices. The
14-way dispatch stays out of the parallel loop body (a ``parallel=True`` build of it costs
seconds), and one driver for all of them pays the parallel build once (about 1.3 s cold).
Element-wise, so results do not depend on the blocks or the thread count.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

# darknet.h: typedef enum { LOGISTIC, RELU, RELIE, LINEAR, RAMP, TANH, PLSE, LEAKY, ELU, LOGGY,
# STAIR, HARDTAN, LHTAN, SELU } ACTIVATION;
LOGISTIC, RELU, RELIE, LINEAR, RAMP, TANH, PLSE, LEAKY, ELU, LOGGY = range(10)
STAIR, HARDTAN, LHTAN, SELU = range(10, 14)

DARKNET_ACTIVATIONS: dict[str, int] = {
    "logistic": LOGISTIC,
    "relu": RELU,
    "relie": RELIE,
    "linear": LINEAR,
    "ramp": RAMP,
    "tanh": TANH,
    "plse": PLSE,
    "leaky": LEAKY,
    "elu": ELU,
    "loggy": LOGGY,
    "stair": STAIR,
    "hardtan": HARDTAN,
    "lhtan": LHTAN,
    "selu": SELU,
}


class UnknownActivationError(ValueError):
    """An activation name that darknet's ``get_activation`` does not know."""


class KernelArgumentError(ValueError):
    """An array handed to a kernel has the wrong dtype, layout or size."""


def activation_code(name: str) -> int:
    """darknet's ``ACTIVATION`` enum value for ``name`` (one of the 14 names it accepts).

    darknet itself falls back to ``relu`` with a message for an unknown name; the config layer
    decides about that, here an unknown name is an error.
    """
    try:
        return DARKNET_ACTIVATIONS[name]
    except KeyError:
        known = ", ".join(DARKNET_ACTIVATIONS)
        raise UnknownActivationError(f"unknown activation {name!r} (known: {known})") from None


def as_flat_float32(array: np.ndarray, name: str) -> np.ndarray:
    """A 1-D view of a C-contiguous float32 array, or :class:`KernelArgumentError`.

    Kernels write through these views, so a copy (which ``ravel`` makes for a non-contiguous
    array) would silently lose the result: refuse instead.
    """
    if not isinstance(array, np.ndarray) or array.dtype != np.float32:
        raise KernelArgumentError(f"{name}: expected a float32 ndarray")
    if not array.flags.c_contiguous:
        raise KernelArgumentError(f"{name}: expected a C-contiguous array")
    return array.reshape(-1)


def check_same_size(*named: tuple[str, np.ndarray]) -> None:
    """Raise :class:`KernelArgumentError` unless every array has the first one's size."""
    first_name, first = named[0]
    for other_name, other in named[1:]:
        if other.size != first.size:
            raise KernelArgumentError(
                f"{other_name} has {other.size} elements, {first_name} has {first.size}"
            )


_F0 = np.float32(0.0)
_F1 = np.float32(1.0)
_F2 = np.float32(2.0)
_F4 = np.float32(4.0)
_SELU_LAMBDA = 1.0507  # double literals, as in activations.h
_SELU_LAMBDA_ALPHA = 1.0507 * 1.6732


# --------------------------------------------------------------------------------------------
# darknet forward, one element (x is float32; the return value is float32)
# --------------------------------------------------------------------------------------------


@njit(inline="always", cache=True)
def linear_activate(x):
    """``f(x) = x``."""
    return x


@njit(inline="always", cache=True)
def logistic_activate(x):
    """``1/(1 + exp(-x))`` evaluated in double, rounded to float32."""
    return np.float32(1.0 / (1.0 + math.exp(-np.float64(x))))


@njit(inline="always", cache=True)
def loggy_activate(x):
    """``2/(1 + exp(-x)) - 1`` in double."""
    return np.float32(2.0 / (1.0 + math.exp(-np.float64(x))) - 1.0)


@njit(inline="always", cache=True)
def relu_activate(x):
    """``x·[x > 0]`` (float32; ``-0.0`` for negative x, as C's ``x*0``)."""
    return x * (_F1 if x > 0 else _F0)


@njit(inline="always", cache=True)
def elu_activate(x):
    """``[x ≥ 0]·x + [x < 0]·(exp(x) − 1)``, the sum in double.

    darknet quirk: both terms are always evaluated, so for ``x`` above about 709.8 the double
    ``exp`` overflows and ``0·inf`` makes the result NaN (the library does the same).
    """
    expm1 = math.exp(np.float64(x)) - 1.0
    if x >= 0:
        return np.float32(np.float64(x) + 0.0 * expm1)
    return np.float32(expm1)


@njit(inline="always", cache=True)
def selu_activate(x):
    """``[x ≥ 0]·1.0507·x + [x < 0]·1.0507·1.6732·(exp(x) − 1)``, all in double.

    Same overflow quirk as :func:`elu_activate` (NaN for ``x`` above about 709.8).
    """
    expm1 = math.exp(np.float64(x)) - 1.0
    if x >= 0:
        return np.float32(_SELU_LAMBDA * np.float64(x) + 0.0 * expm1)
    return np.float32(_SELU_LAMBDA_ALPHA * expm1)


@njit(inline="always", cache=True)
def relie_activate(x):
    """``x`` if ``x > 0`` else ``.01·x`` (the ``.01`` product in double)."""
    if x > 0:
        return x
    return np.float32(0.01 * np.float64(x))


@njit(inline="always", cache=True)
def ramp_activate(x):
    """``x·[x > 0] + .1·x``: the first term in float32, the sum in double."""
    positive_part = x * (_F1 if x > 0 else _F0)  # float32, like relu_activate
    return np.float32(np.float64(positive_part) + 0.1 * np.float64(x))


@njit(inline="always", cache=True)
def leaky_activate(x):
    """``x`` if ``x > 0`` else ``.1·x`` (darknet's leaky slope is .1; product in double)."""
    if x > 0:
        return x
    return np.float32(0.1 * np.float64(x))


@njit(inline="always", cache=True)
def tanh_activate(x):
    """``(exp(2x) − 1)/(exp(2x) + 1)``: ``2x`` in float32, the rest in double.

    darknet quirk: no ``tanh`` call, so ``x`` above about 354.9 gives ``inf/inf = NaN``.
    """
    e = math.exp(np.float64(_F2 * x))
    return np.float32((e - 1.0) / (e + 1.0))


@njit(inline="always", cache=True)
def plse_activate(x):
    """Piecewise-linear squashing: ``.01·(x+4)`` below −4, ``.01·(x−4)+1`` above 4,
    ``.125·x + .5`` between (``x±4`` in float32, the rest in double)."""
    if x < -4:
        return np.float32(0.01 * np.float64(x + _F4))
    if x > 4:
        return np.float32(0.01 * np.float64(x - _F4) + 1.0)
    return np.float32(0.125 * np.float64(x) + 0.5)


@njit(inline="always", cache=True)
def hardtan_activate(x):
    """``clamp(x, −1, 1)``."""
    if x < -1:
        return -_F1
    if x > 1:
        return _F1
    return x


@njit(inline="always", cache=True)
def lhtan_activate(x):
    """``.001·x`` below 0, ``.001·(x−1) + 1`` above 1, else ``x`` (products in double)."""
    if x < 0:
        return np.float32(0.001 * np.float64(x))
    if x > 1:
        return np.float32(0.001 * np.float64(x - _F1) + 1.0)
    return x


@njit(inline="always", cache=True)
def stair_activate(x):
    """``n = floor(x)``; ``floor(x/2)`` if n is even, else ``(x − n) + floor(x/2)``.

    ``x − n`` is a float32 subtraction, ``floor(x/2.)`` and the sum are double. Evenness uses
    C's ``n % 2 == 0`` (``-3 % 2 == -1``: odd), i.e. the low bit.
    """
    half = np.floor(np.float64(x) / 2.0)
    floored = np.floor(np.float64(x))
    # darknet quirk: `int n = floor(x)` out of int range (or NaN) gives INT_MIN on x86 (even)
    n = -2147483648
    if floored >= -2147483648.0 and floored <= 2147483647.0:
        n = int(floored)
    if (n & 1) == 0:
        return np.float32(half)
    return np.float32(np.float64(x - np.float32(n)) + half)


# --------------------------------------------------------------------------------------------
# darknet gradient, one element, from the OUTPUT y (float32 in, float32 out)
# --------------------------------------------------------------------------------------------


@njit(inline="always", cache=True)
def linear_gradient(y):
    """``1``."""
    return _F1


@njit(inline="always", cache=True)
def logistic_gradient(y):
    """``(1 − y)·y`` in float32."""
    return (_F1 - y) * y


@njit(inline="always", cache=True)
def loggy_gradient(y):
    """``y' = (y + 1)/2`` (double, stored as float32), then ``2·(1 − y')·y'`` in float32."""
    half = np.float32((np.float64(y) + 1.0) / 2.0)
    return _F2 * (_F1 - half) * half


@njit(inline="always", cache=True)
def relu_gradient(y):
    """``[y > 0]``."""
    return _F1 if y > 0 else _F0


@njit(inline="always", cache=True)
def elu_gradient(y):
    """``1`` for ``y ≥ 0``, else ``y + 1`` (float32)."""
    if y >= 0:
        return _F1
    return y + _F1


@njit(inline="always", cache=True)
def selu_gradient(y):
    """``1.0507`` for ``y ≥ 0``, else ``y + 1.0507·1.6732`` (double, rounded)."""
    if y >= 0:
        return np.float32(_SELU_LAMBDA)
    return np.float32(np.float64(y) + _SELU_LAMBDA_ALPHA)


@njit(inline="always", cache=True)
def relie_gradient(y):
    """``1`` if ``y > 0`` else ``.01``."""
    return _F1 if y > 0 else np.float32(0.01)


@njit(inline="always", cache=True)
def ramp_gradient(y):
    """``[y > 0] + .1`` (so 1.1 or .1)."""
    return np.float32(1.1) if y > 0 else np.float32(0.1)


@njit(inline="always", cache=True)
def leaky_gradient(y):
    """``1`` if ``y > 0`` else ``.1``: the gradient at exactly 0 is .1."""
    return _F1 if y > 0 else np.float32(0.1)


@njit(inline="always", cache=True)
def tanh_gradient(y):
    """``1 − y²`` in float32."""
    return _F1 - y * y


@njit(inline="always", cache=True)
def plse_gradient(y):
    """``.01`` if ``y < 0`` or ``y > 1``, else ``.125``."""
    return np.float32(0.01) if (y < 0 or y > 1) else np.float32(0.125)


@njit(inline="always", cache=True)
def stair_gradient(y):
    """``0`` where ``y`` is an integer, else ``1``."""
    return _F0 if np.floor(np.float64(y)) == y else _F1


@njit(inline="always", cache=True)
def hardtan_gradient(y):
    """``1`` if ``−1 < y < 1``, else ``0``."""
    return _F1 if (y > -1 and y < 1) else _F0


@njit(inline="always", cache=True)
def lhtan_gradient(y):
    """``1`` if ``0 < y < 1``, else ``.001``."""
    return _F1 if (y > 0 and y < 1) else np.float32(0.001)


# --------------------------------------------------------------------------------------------
# darknet dispatch by code
# --------------------------------------------------------------------------------------------


@njit(inline="always", cache=True)
def darknet_activate(x, code):
    """``f(x)`` for darknet activation ``code`` (``ACTIVATION`` enum); unknown codes → x."""
    if code == LOGISTIC:
        return logistic_activate(x)
    if code == RELU:
        return relu_activate(x)
    if code == RELIE:
        return relie_activate(x)
    if code == RAMP:
        return ramp_activate(x)
    if code == TANH:
        return tanh_activate(x)
    if code == PLSE:
        return plse_activate(x)
    if code == LEAKY:
        return leaky_activate(x)
    if code == ELU:
        return elu_activate(x)
    if code == LOGGY:
        return loggy_activate(x)
    if code == STAIR:
        return stair_activate(x)
    if code == HARDTAN:
        return hardtan_activate(x)
    if code == LHTAN:
        return lhtan_activate(x)
    if code == SELU:
        return selu_activate(x)
    return linear_activate(x)


@njit(inline="always", cache=True)
def darknet_gradient(y, code):
    """``g(y)`` for darknet activation ``code``, from the output ``y``; unknown codes → 1."""
    if code == LOGISTIC:
        return logistic_gradient(y)
    if code == RELU:
        return relu_gradient(y)
    if code == RELIE:
        return relie_gradient(y)
    if code == RAMP:
        return ramp_gradient(y)
    if code == TANH:
        return tanh_gradient(y)
    if code == PLSE:
        return plse_gradient(y)
    if code == LEAKY:
        return leaky_gradient(y)
    if code == ELU:
        return elu_gradient(y)
    if code == LOGGY:
        return loggy_gradient(y)
    if code == STAIR:
        return stair_gradient(y)
    if code == HARDTAN:
        return hardtan_gradient(y)
    if code == LHTAN:
        return lhtan_gradient(y)
    if code == SELU:
        return selu_gradient(y)
    return linear_gradient(y)


# The array loops, serial; _blocks below runs them on the threads. The common activations
# (leaky, relu, logistic) get loops of their own: without the per-element switch the loop
# vectorises (leaky on 4.2M floats 28.7 -> 0.6 ms, logistic's gradient 4.8 -> 0.8 ms). The
# rare ones share the switch loop: a loop each costs compile time in every build that links
# them (about 0.7 s more for _blocks) for activations no workload uses.

BLOCK = 1 << 16  # floats per parallel block (256 KiB): 16 blocks in a 128x128x8x8 layer


@njit(cache=True)
def _activate_array(x, code):
    n = x.size
    if code == LEAKY:
        for i in range(n):
            x[i] = leaky_activate(x[i])
    elif code == RELU:
        for i in range(n):
            x[i] = relu_activate(x[i])
    elif code == LOGISTIC:
        for i in range(n):
            x[i] = logistic_activate(x[i])
    else:
        for i in range(n):
            x[i] = darknet_activate(x[i], code)


@njit(cache=True)
def _gradient_array(y, code, delta):
    n = y.size
    if code == LEAKY:
        for i in range(n):
            delta[i] = delta[i] * leaky_gradient(y[i])
    elif code == RELU:
        for i in range(n):
            delta[i] = delta[i] * relu_gradient(y[i])
    elif code == LOGISTIC:
        for i in range(n):
            delta[i] = delta[i] * logistic_gradient(y[i])
    else:
        for i in range(n):
            delta[i] = delta[i] * darknet_gradient(y[i], code)


def activate(x: np.ndarray, code: int) -> None:
    """darknet ``activate_array``: ``x[i] ← f(x[i])`` in place, any shape.

    ``code`` is darknet's ``ACTIVATION`` value (see :func:`activation_code`). ``linear`` is a
    no-op and returns at once.
    """
    flat = as_flat_float32(x, "x")
    if code == LINEAR:
        return
    _elementwise(_ACTIVATE, code, flat, flat, flat, _F0)


def gradient(y: np.ndarray, code: int, delta: np.ndarray) -> None:
    """darknet ``gradient_array``: ``delta[i] ← delta[i] · g(y[i])`` in place.

    ``y`` is the layer's **output** (after the activation), as darknet uses it; ``delta`` is
    darknet's delta (the negative gradient), though the rule is sign-agnostic.
    """
    y_flat = as_flat_float32(y, "y")
    delta_flat = as_flat_float32(delta, "delta")
    check_same_size(("y", y_flat), ("delta", delta_flat))
    if code == LINEAR:
        return
    _elementwise(_GRADIENT, code, y_flat, delta_flat, delta_flat, _F0)


# --------------------------------------------------------------------------------------------
# Caffe ReLU / Sigmoid / TanH
# --------------------------------------------------------------------------------------------


@njit(inline="always", cache=True)
def caffe_relu_activate(x, negative_slope):
    """``max(x, 0) + negative_slope·min(x, 0)`` in float32 (NaN propagates, as std::max)."""
    high = _F0 if x < 0 else x  # std::max(x, 0) = (x < 0) ? 0 : x
    low = _F0 if x > 0 else x  # std::min(x, 0) = (0 < x) ? 0 : x
    return high + negative_slope * low


@njit(inline="always", cache=True)
def caffe_relu_gradient(x, negative_slope):
    """``[x > 0] + negative_slope·[x ≤ 0]`` from the INPUT x (gradient at 0: the slope)."""
    return (_F1 if x > 0 else _F0) + negative_slope * (_F1 if x <= 0 else _F0)


@njit(inline="always", cache=True)
def caffe_sigmoid_activate(x):
    """``0.5·tanh(0.5·x) + 0.5`` in double (``sigmoid_layer.cpp``), rounded to float32."""
    return np.float32(0.5 * math.tanh(0.5 * np.float64(x)) + 0.5)


@njit(inline="always", cache=True)
def caffe_tanh_activate(x):
    """``tanhf(x)``: Caffe calls ``tanh`` on a float, which is the float overload."""
    return np.float32(math.tanh(x))


@njit(cache=True)
def _caffe_relu_forward(x, y, negative_slope):
    for i in range(x.size):
        y[i] = caffe_relu_activate(x[i], negative_slope)


@njit(cache=True)
def _caffe_relu_backward(x, dy, dx, negative_slope):
    for i in range(x.size):
        dx[i] = dy[i] * caffe_relu_gradient(x[i], negative_slope)


@njit(cache=True)
def _caffe_sigmoid_forward(x, y):
    for i in range(x.size):
        y[i] = caffe_sigmoid_activate(x[i])


@njit(cache=True)
def _caffe_sigmoid_backward(y, dy, dx):
    for i in range(y.size):
        # sigmoid_layer.cpp: top_diff * sigmoid_x (float) * (1. - sigmoid_x) (double)
        dx[i] = np.float32(np.float64(dy[i] * y[i]) * (1.0 - np.float64(y[i])))


@njit(cache=True)
def _caffe_tanh_forward(x, y):
    for i in range(x.size):
        y[i] = caffe_tanh_activate(x[i])


@njit(cache=True)
def _caffe_tanh_backward(y, dy, dx):
    for i in range(y.size):
        dx[i] = dy[i] * (_F1 - y[i] * y[i])


# --------------------------------------------------------------------------------------------
# One block-parallel driver for every array loop above
# --------------------------------------------------------------------------------------------

# the array loops, by number (arguments: code, a, b, c, slope; unused arrays repeat one)
_ACTIVATE, _GRADIENT, _RELU_FORWARD, _RELU_BACKWARD = range(4)
_SIGMOID_FORWARD, _SIGMOID_BACKWARD, _TANH_FORWARD, _TANH_BACKWARD = range(4, 8)


@njit(parallel=True, cache=True)
def _blocks(op, code, a, b, c, slope):
    """Array loop ``op`` over fixed blocks of ``BLOCK`` elements, the blocks in parallel."""
    n = a.size
    for block in prange((n + BLOCK - 1) // BLOCK):
        start = block * BLOCK
        stop = min(start + BLOCK, n)
        a_part, b_part, c_part = a[start:stop], b[start:stop], c[start:stop]
        if op == _ACTIVATE:
            _activate_array(a_part, code)
        elif op == _GRADIENT:
            _gradient_array(a_part, code, b_part)
        elif op == _RELU_FORWARD:
            _caffe_relu_forward(a_part, b_part, slope)
        elif op == _RELU_BACKWARD:
            _caffe_relu_backward(a_part, b_part, c_part, slope)
        elif op == _SIGMOID_FORWARD:
            _caffe_sigmoid_forward(a_part, b_part)
        elif op == _SIGMOID_BACKWARD:
            _caffe_sigmoid_backward(a_part, b_part, c_part)
        elif op == _TANH_FORWARD:
            _caffe_tanh_forward(a_part, b_part)
        elif op == _TANH_BACKWARD:
            _caffe_tanh_backward(a_part, b_part, c_part)


#: the loops worth the threads: transcendental math per element. leaky, relu and linear are
#: memory-bound (one core already moves ~60 GB/s through them; two threads measured 5–10%
#: slower), so they never pay for compiling :func:`_blocks` (~1.4 s cold)
_COMPUTE_BOUND_OPS = (_SIGMOID_FORWARD, _SIGMOID_BACKWARD, _TANH_FORWARD, _TANH_BACKWARD)
_MEMORY_BOUND_CODES = (LEAKY, RELU, LINEAR)


def _worth_threads(op: int, code: int) -> bool:
    if op in (_ACTIVATE, _GRADIENT):
        return code not in _MEMORY_BOUND_CODES
    return op in _COMPUTE_BOUND_OPS


#: the serial loop of each operation, as ``(code, a, b, c, slope)`` callables
_SERIAL = {
    _ACTIVATE: lambda code, a, b, c, slope: _activate_array(a, code),
    _GRADIENT: lambda code, a, b, c, slope: _gradient_array(a, code, b),
    _RELU_FORWARD: lambda code, a, b, c, slope: _caffe_relu_forward(a, b, slope),
    _RELU_BACKWARD: lambda code, a, b, c, slope: _caffe_relu_backward(a, b, c, slope),
    _SIGMOID_FORWARD: lambda code, a, b, c, slope: _caffe_sigmoid_forward(a, b),
    _SIGMOID_BACKWARD: lambda code, a, b, c, slope: _caffe_sigmoid_backward(a, b, c),
    _TANH_FORWARD: lambda code, a, b, c, slope: _caffe_tanh_forward(a, b),
    _TANH_BACKWARD: lambda code, a, b, c, slope: _caffe_tanh_backward(a, b, c),
}


def _elementwise(op: int, code: int, a, b, c, slope) -> None:
    """Run array loop ``op``: on the threads in blocks when the loop is compute-bound, the
    arrays span more than one block and more than one thread is set, else the serial loop
    itself (no parallel launch)."""
    if a.size > BLOCK and numba.get_num_threads() > 1 and _worth_threads(op, code):
        _blocks(op, code, a, b, c, slope)
    else:
        _SERIAL[op](code, a, b, c, slope)


def _pair(a: np.ndarray, a_name: str, b: np.ndarray, b_name: str):
    a_flat = as_flat_float32(a, a_name)
    b_flat = as_flat_float32(b, b_name)
    check_same_size((a_name, a_flat), (b_name, b_flat))
    return a_flat, b_flat


def caffe_relu_forward(x: np.ndarray, y: np.ndarray, negative_slope: float = 0.0) -> None:
    """Caffe ReLU: ``y = max(x, 0) + negative_slope·min(x, 0)`` (float32); ``y`` may be ``x``."""
    x_flat, y_flat = _pair(x, "x", y, "y")
    _elementwise(_RELU_FORWARD, 0, x_flat, y_flat, y_flat, np.float32(negative_slope))


def caffe_relu_backward(
    x: np.ndarray, dy: np.ndarray, dx: np.ndarray, negative_slope: float = 0.0
) -> None:
    """Caffe ReLU backward: ``dx = dy·([x > 0] + negative_slope·[x ≤ 0])``, overwriting ``dx``.

    ``x`` is the bottom data; when the layer ran in place it is the top data, which has the
    same sign pattern (Caffe does the same). ``dx`` may alias ``dy``.
    """
    x_flat, dy_flat = _pair(x, "x", dy, "dy")
    _, dx_flat = _pair(x, "x", dx, "dx")
    _elementwise(_RELU_BACKWARD, 0, x_flat, dy_flat, dx_flat, np.float32(negative_slope))


def caffe_sigmoid_forward(x: np.ndarray, y: np.ndarray) -> None:
    """Caffe Sigmoid: ``y = 0.5·tanh(0.5·x) + 0.5`` (double, rounded); ``y`` may be ``x``."""
    x_flat, y_flat = _pair(x, "x", y, "y")
    _elementwise(_SIGMOID_FORWARD, 0, x_flat, y_flat, y_flat, _F0)


def caffe_sigmoid_backward(y: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> None:
    """Caffe Sigmoid backward from the output: ``dx = dy·y·(1 − y)``, overwriting ``dx``."""
    y_flat, dy_flat = _pair(y, "y", dy, "dy")
    _, dx_flat = _pair(y, "y", dx, "dx")
    _elementwise(_SIGMOID_BACKWARD, 0, y_flat, dy_flat, dx_flat, _F0)


def caffe_tanh_forward(x: np.ndarray, y: np.ndarray) -> None:
    """Caffe TanH: ``y = tanhf(x)``; ``y`` may be ``x``."""
    x_flat, y_flat = _pair(x, "x", y, "y")
    _elementwise(_TANH_FORWARD, 0, x_flat, y_flat, y_flat, _F0)


def caffe_tanh_backward(y: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> None:
    """Caffe TanH backward from the output: ``dx = dy·(1 − y²)`` (float32), overwriting ``dx``."""
    y_flat, dy_flat = _pair(y, "y", dy, "dy")
    _, dx_flat = _pair(y, "y", dx, "dx")
    _elementwise(_TANH_BACKWARD, 0, y_flat, dy_flat, dx_flat, _F0)
