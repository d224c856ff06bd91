"""ctypes binding to the real darknet library, for conformance tests.

Mirrors ``/usr/lib/darknet/include/darknet.h`` (pjreddie/darknet 61c9d02e as packaged by
Debian) for the **non-GPU** build: the ``layer``, ``network``, ``update_args``, ``matrix`` and
``data`` structs with their fields in declaration order, and prototypes for the functions the
tests drive. Enums are C ``int``; function-pointer members are opaque ``c_void_p``.

Usage::

    lib = load_library()            # None where libdarknet is absent
    net = parse_cfg_text(lib, "[net]\\nbatch=1\\n...")
    set_seen(net, 10 * net.contents.batch * net.contents.subdivisions)
    lib.get_current_rate(net)
    layer_array(net, 0, "weights")  # numpy view of the layer's buffer

darknet prints to stderr while parsing, and calls ``exit()`` on some errors: feed it valid cfgs.
``srand``/``rand`` are the C library's, reached through :func:`libc`.
"""

from __future__ import annotations

import ctypes
import os
import tempfile
from ctypes import (
    POINTER,
    Structure,
    c_char_p,
    c_double,
    c_float,
    c_int,
    c_size_t,
    c_uint,
    c_void_p,
)
from functools import lru_cache

import numpy as np

LIBRARY_PATH = os.environ.get("DNUPDATE_LIBDARKNET", "/usr/lib/darknet/libdarknet.so")

# enum LAYER_TYPE (darknet.h)
LAYER_TYPES = [
    "CONVOLUTIONAL",
    "DECONVOLUTIONAL",
    "CONNECTED",
    "MAXPOOL",
    "SOFTMAX",
    "DETECTION",
    "DROPOUT",
    "CROP",
    "ROUTE",
    "COST",
    "NORMALIZATION",
    "AVGPOOL",
    "LOCAL",
    "SHORTCUT",
    "ACTIVE",
    "RNN",
    "GRU",
    "LSTM",
    "CRNN",
    "BATCHNORM",
    "NETWORK",
    "XNOR",
    "REGION",
    "YOLO",
    "ISEG",
    "REORG",
    "UPSAMPLE",
    "LOGXENT",
    "L2NORM",
    "BLANK",
]
LAYER_TYPE = {name: index for index, name in enumerate(LAYER_TYPES)}
# enum ACTIVATION
ACTIVATIONS = "LOGISTIC RELU RELIE LINEAR RAMP TANH PLSE LEAKY ELU LOGGY STAIR HARDTAN LHTAN SELU"
ACTIVATION = {name.lower(): index for index, name in enumerate(ACTIVATIONS.split())}
# enum learning_rate_policy
POLICIES = ("constant", "step", "exp", "poly", "steps", "sigmoid", "random")
POLICY = {name: index for index, name in enumerate(POLICIES)}
# enum COST_TYPE
COST_TYPES = ("sse", "masked", "L1", "seg", "smooth", "wgan")

_P = POINTER
_float_p = _P(c_float)
_int_p = _P(c_int)


class UpdateArgs(Structure):
    """``update_args``: the scalars ``update_network`` passes to each layer's update."""

    _fields_ = [
        ("batch", c_int),
        ("learning_rate", c_float),
        ("momentum", c_float),
        ("decay", c_float),
        ("adam", c_int),
        ("B1", c_float),
        ("B2", c_float),
        ("eps", c_float),
        ("t", c_int),
    ]


class Layer(Structure):
    """``struct layer`` (non-GPU build). Field order and types follow darknet.h exactly."""


_INT_FIELDS_1 = [
    "batch_normalize",
    "shortcut",
    "batch",
    "forced",
    "flipped",
    "inputs",
    "outputs",
    "nweights",
    "nbiases",
    "extra",
    "truths",
    "h",
    "w",
    "c",
    "out_h",
    "out_w",
    "out_c",
    "n",
    "max_boxes",
    "groups",
    "size",
    "side",
    "stride",
    "reverse",
    "flatten",
    "spatial",
    "pad",
    "sqrt",
    "flip",
    "index",
    "binary",
    "xnor",
    "steps",
    "hidden",
    "truth",
]
_FLOAT_FIELDS_1 = [
    "smooth",
    "dot",
    "angle",
    "jitter",
    "saturation",
    "exposure",
    "shift",
    "ratio",
    "learning_rate_scale",
    "clip",
]
_INT_FIELDS_2 = [
    "noloss",
    "softmax",
    "classes",
    "coords",
    "background",
    "rescore",
    "objectness",
    "joint",
    "noadjust",
    "reorg",
    "log",
    "tanh",
]
_FLOAT_BUFFERS = [
    "binary_weights",
    "biases",
    "bias_updates",
    "scales",
    "scale_updates",
    "weights",
    "weight_updates",
    "delta",
    "output",
    "loss",
    "squared",
    "norms",
    "spatial_mean",
    "mean",
    "variance",
    "mean_delta",
    "variance_delta",
    "rolling_mean",
    "rolling_variance",
    "x",
    "x_norm",
    "m",
    "v",
    "bias_m",
    "bias_v",
    "scale_m",
    "scale_v",
    "z_cpu",
    "r_cpu",
    "h_cpu",
    "prev_state_cpu",
    "temp_cpu",
    "temp2_cpu",
    "temp3_cpu",
    "dh_cpu",
    "hh_cpu",
    "prev_cell_cpu",
    "cell_cpu",
    "f_cpu",
    "i_cpu",
    "g_cpu",
    "o_cpu",
    "c_cpu",
    "dc_cpu",
    "binary_input",
]
_SUBLAYERS = [
    "input_layer",
    "self_layer",
    "output_layer",
    "reset_layer",
    "update_layer",
    "state_layer",
    "input_gate_layer",
    "state_gate_layer",
    "input_save_layer",
    "state_save_layer",
    "input_state_layer",
    "state_state_layer",
    "input_z_layer",
    "state_z_layer",
    "input_r_layer",
    "state_r_layer",
    "input_h_layer",
    "state_h_layer",
    "wz",
    "uz",
    "wr",
    "ur",
    "wh",
    "uh",
    "uo",
    "wo",
    "uf",
    "wf",
    "ui",
    "wi",
    "ug",
    "wg",
]

Layer._fields_ = [
    ("type", c_int),
    ("activation", c_int),
    ("cost_type", c_int),
    ("forward", c_void_p),
    ("backward", c_void_p),
    ("update", c_void_p),
    ("forward_gpu", c_void_p),
    ("backward_gpu", c_void_p),
    ("update_gpu", c_void_p),
    *[(name, c_int) for name in _INT_FIELDS_1],
    *[(name, c_float) for name in _FLOAT_FIELDS_1],
    *[(name, c_int) for name in _INT_FIELDS_2],
    ("mask", _int_p),
    ("total", c_int),
    ("alpha", c_float),
    ("beta", c_float),
    ("kappa", c_float),
    ("coord_scale", c_float),
    ("object_scale", c_float),
    ("noobject_scale", c_float),
    ("mask_scale", c_float),
    ("class_scale", c_float),
    ("bias_match", c_int),
    ("random", c_int),
    ("ignore_thresh", c_float),
    ("truth_thresh", c_float),
    ("thresh", c_float),
    ("focus", c_float),
    ("classfix", c_int),
    ("absolute", c_int),
    ("onlyforward", c_int),
    ("stopbackward", c_int),
    ("dontload", c_int),
    ("dontsave", c_int),
    ("dontloadscales", c_int),
    ("numload", c_int),
    ("temperature", c_float),
    ("probability", c_float),
    ("scale", c_float),
    ("cweights", c_char_p),
    ("indexes", _int_p),
    ("input_layers", _int_p),
    ("input_sizes", _int_p),
    ("map", _int_p),
    ("counts", _int_p),
    ("sums", _P(_float_p)),
    ("rand", _float_p),
    ("cost", _float_p),
    ("state", _float_p),
    ("prev_state", _float_p),
    ("forgot_state", _float_p),
    ("forgot_delta", _float_p),
    ("state_delta", _float_p),
    ("combine_cpu", _float_p),
    ("combine_delta_cpu", _float_p),
    ("concat", _float_p),
    ("concat_delta", _float_p),
    *[(name, _float_p) for name in _FLOAT_BUFFERS],
    *[(name, _P(Layer)) for name in _SUBLAYERS],
    ("softmax_tree", c_void_p),
    ("workspace_size", c_size_t),
]


class Network(Structure):
    """``struct network`` (non-GPU build)."""

    _fields_ = [
        ("n", c_int),
        ("batch", c_int),
        ("seen", _P(c_size_t)),
        ("t", _int_p),
        ("epoch", c_float),
        ("subdivisions", c_int),
        ("layers", _P(Layer)),
        ("output", _float_p),
        ("policy", c_int),
        ("learning_rate", c_float),
        ("momentum", c_float),
        ("decay", c_float),
        ("gamma", c_float),
        ("scale", c_float),
        ("power", c_float),
        ("time_steps", c_int),
        ("step", c_int),
        ("max_batches", c_int),
        ("scales", _float_p),
        ("steps", _int_p),
        ("num_steps", c_int),
        ("burn_in", c_int),
        ("adam", c_int),
        ("B1", c_float),
        ("B2", c_float),
        ("eps", c_float),
        ("inputs", c_int),
        ("outputs", c_int),
        ("truths", c_int),
        ("notruth", c_int),
        ("h", c_int),
        ("w", c_int),
        ("c", c_int),
        ("max_crop", c_int),
        ("min_crop", c_int),
        ("max_ratio", c_float),
        ("min_ratio", c_float),
        ("center", c_int),
        ("angle", c_float),
        ("aspect", c_float),
        ("exposure", c_float),
        ("saturation", c_float),
        ("hue", c_float),
        ("random", c_int),
        ("gpu_index", c_int),
        ("hierarchy", c_void_p),
        ("input", _float_p),
        ("truth", _float_p),
        ("delta", _float_p),
        ("workspace", _float_p),
        ("train", c_int),
        ("index", c_int),
        ("cost", _float_p),
        ("clip", c_float),
    ]


class Matrix(Structure):
    """``matrix``: ``rows`` pointers to rows of ``cols`` floats."""

    _fields_ = [("rows", c_int), ("cols", c_int), ("vals", _P(_float_p))]


class Box(Structure):
    _fields_ = [("x", c_float), ("y", c_float), ("w", c_float), ("h", c_float)]


class Data(Structure):
    """``data``: inputs ``X`` and targets ``y`` as matrices (one row per image)."""

    _fields_ = [
        ("w", c_int),
        ("h", c_int),
        ("X", Matrix),
        ("y", Matrix),
        ("shallow", c_int),
        ("num_boxes", _int_p),
        ("boxes", _P(_P(Box))),
    ]


NetworkP = _P(Network)

_PROTOTYPES: dict[str, tuple[object, list]] = {
    "parse_network_cfg": (NetworkP, [c_char_p]),
    "load_network": (NetworkP, [c_char_p, c_char_p, c_int]),
    "load_weights": (None, [NetworkP, c_char_p]),
    "load_weights_upto": (None, [NetworkP, c_char_p, c_int, c_int]),
    "save_weights": (None, [NetworkP, c_char_p]),
    "save_weights_upto": (None, [NetworkP, c_char_p, c_int]),
    "forward_network": (None, [NetworkP]),
    "backward_network": (None, [NetworkP]),
    "update_network": (None, [NetworkP]),
    "train_network": (c_float, [NetworkP, Data]),
    "train_network_sgd": (c_float, [NetworkP, Data, c_int]),
    "train_network_datum": (c_float, [NetworkP]),
    "get_next_batch": (None, [Data, c_int, c_int, _float_p, _float_p]),
    "get_current_rate": (c_float, [NetworkP]),
    "get_current_batch": (c_size_t, [NetworkP]),
    "network_predict": (_float_p, [NetworkP, _float_p]),
    "set_batch_network": (None, [NetworkP, c_int]),
    "free_network": (None, [NetworkP]),
    "rand_uniform": (c_float, [c_float, c_float]),
    "rand_normal": (c_float, []),
    "make_matrix": (Matrix, [c_int, c_int]),
    "free_matrix": (None, [Matrix]),
    "axpy_cpu": (None, [c_int, c_float, _float_p, c_int, _float_p, c_int]),
    "softmax": (None, [_float_p, c_int, c_float, c_int, _float_p]),
}


@lru_cache(maxsize=1)
def load_library(path: str = LIBRARY_PATH) -> ctypes.CDLL | None:
    """Load libdarknet with prototypes set, or return None where it is absent."""
    if not os.path.exists(path):
        return None
    # darknet quirk: the -Ofast build links crtfastmath, whose constructor turns on
    # flush-to-zero/denormals-are-zero for the WHOLE process when the library loads; that
    # silently flushes our own subnormals (and trips Hypothesis). Restore the FP environment.
    libm = ctypes.CDLL("libm.so.6")
    saved_env = ctypes.create_string_buffer(64)  # >= sizeof(fenv_t)
    libm.fegetenv(saved_env)
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    finally:
        libm.fesetenv(saved_env)
    for name, (restype, argtypes) in _PROTOTYPES.items():
        function = getattr(lib, name, None)
        if function is None:
            continue
        function.restype = restype
        function.argtypes = argtypes
    return lib


@lru_cache(maxsize=1)
def libc() -> ctypes.CDLL:
    """The process's C library (the one libdarknet's ``rand()`` uses), with ``srand``,
    ``rand``, ``powf``, ``expf``, ``pow`` and ``exp`` prototyped."""
    lib = ctypes.CDLL(None)
    lib.srand.argtypes, lib.srand.restype = [c_uint], None
    lib.rand.argtypes, lib.rand.restype = [], c_int
    libm = ctypes.CDLL("libm.so.6")
    for name, ctype in (("powf", c_float), ("pow", c_double)):
        getattr(libm, name).argtypes = [ctype, ctype]
        getattr(libm, name).restype = ctype
    for name, ctype in (("expf", c_float), ("exp", c_double)):
        getattr(libm, name).argtypes = [ctype]
        getattr(libm, name).restype = ctype
    lib.libm = libm
    return lib


def srand(seed: int) -> None:
    """libc ``srand(seed)`` (seed taken as unsigned 32-bit)."""
    libc().srand(seed & 0xFFFFFFFF)


def parse_cfg_text(lib: ctypes.CDLL, text: str):
    """Write ``text`` to a temporary ``.cfg`` and ``parse_network_cfg`` it (a network
    pointer). Parsing consumes ``rand()`` draws for conv/connected weights."""
    handle, path = tempfile.mkstemp(suffix=".cfg", text=True)
    try:
        with os.fdopen(handle, "w") as f:
            f.write(text)
        return lib.parse_network_cfg(path.encode())
    finally:
        os.unlink(path)


def set_seen(net, n: int) -> None:
    """Set ``*net->seen`` (images seen so far; the batch number is ``seen / (batch*subdiv)``)."""
    net.contents.seen[0] = n


def get_seen(net) -> int:
    return int(net.contents.seen[0])


def _buffer_length(layer: Layer, name: str) -> int:
    """Element count of a layer's float buffer, as darknet allocates it."""
    channels = layer.out_c
    batch_outputs = layer.outputs * layer.batch
    nweights, nbiases = layer.nweights, layer.nbiases
    if layer.type == LAYER_TYPE["CONNECTED"]:
        # darknet quirk: make_connected_layer leaves nweights/nbiases at 0
        nweights, nbiases = layer.inputs * layer.outputs, layer.outputs
    lengths = {
        "weights": nweights,
        "weight_updates": nweights,
        "m": nweights,
        "v": nweights,
        "biases": nbiases,
        "bias_updates": nbiases,
        "bias_m": nbiases,
        "bias_v": nbiases,
        "scales": channels,
        "scale_updates": channels,
        "scale_m": channels,
        "scale_v": channels,
        "mean": channels,
        "variance": channels,
        "mean_delta": channels,
        "variance_delta": channels,
        "rolling_mean": channels,
        "rolling_variance": channels,
        "output": batch_outputs,
        "delta": batch_outputs,
        "x": batch_outputs,
        "x_norm": batch_outputs,
        "loss": batch_outputs,
        "rand": layer.inputs * layer.batch,
        "cost": 1,
    }
    if name not in lengths:
        raise KeyError(f"no known length for layer buffer {name!r}; pass length=")
    return lengths[name]


def layer(net, i: int) -> Layer:
    """The i-th layer struct (a view into the network's array, not a copy)."""
    count = net.contents.n
    if not 0 <= i < count:
        raise IndexError(f"layer {i} out of range (network has {count})")
    return net.contents.layers[i]


def layer_array(net, i: int, name: str, length: int | None = None) -> np.ndarray:
    """A writable float32 NumPy view of layer ``i``'s buffer ``name`` (``"weights"``,
    ``"biases"``, ``"scales"``, ``"rolling_mean"``, ``"output"``, ``"delta"``, ...), with the
    length darknet allocated (or ``length``). Raises ValueError for a NULL buffer."""
    lay = layer(net, i)
    pointer = getattr(lay, name)
    if not pointer:
        raise ValueError(f"layer {i} ({LAYER_TYPES[lay.type]}) has no {name} buffer")
    count = _buffer_length(lay, name) if length is None else length
    return np.ctypeslib.as_array(pointer, shape=(count,))


def float_array(pointer, length: int) -> np.ndarray:
    """A float32 NumPy view of ``length`` floats at a ``float*`` (e.g. ``net.output``)."""
    return np.ctypeslib.as_array(pointer, shape=(length,))


def make_data(inputs: np.ndarray, targets: np.ndarray) -> tuple[Data, list]:
    """A ``data`` struct whose ``X``/``y`` rows point into float32 copies of ``inputs``
    (rows × features) and ``targets`` (rows × classes). Returns the struct and the owners
    to keep alive while darknet uses it."""
    x = np.ascontiguousarray(inputs, dtype=np.float32)
    y = np.ascontiguousarray(targets, dtype=np.float32)
    owners: list = [x, y]

    def matrix(array: np.ndarray) -> Matrix:
        rows = (_float_p * array.shape[0])(
            *[row.ctypes.data_as(_float_p) for row in array]  # one pointer per row
        )
        owners.append(rows)
        return Matrix(array.shape[0], array.shape[1], ctypes.cast(rows, _P(_float_p)))

    data = Data(w=0, h=0, X=matrix(x), y=matrix(y), shallow=1)
    return data, owners


def reset_rand_normal_spare(lib: ctypes.CDLL, seed: int = 1) -> None:
    """Clear ``rand_normal``'s static Box–Muller spare inside libdarknet.

    darknet quirk: the spare is a static that survives ``srand``. We seed, call
    ``rand_normal`` once and look at how many ``rand()`` draws it consumed: 0 means a spare
    was pending (now cleared); 2 means it started a pair (a spare is now pending, so one more
    call clears it).
    """
    srand(seed)
    expected = [libc().rand() for _ in range(3)]
    srand(seed)
    lib.rand_normal()
    following = libc().rand()
    if following == expected[2]:
        lib.rand_normal()
    elif following != expected[0]:
        raise RuntimeError("rand_normal consumed an unexpected number of rand() draws")
