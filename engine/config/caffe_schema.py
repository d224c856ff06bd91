"""The subset of ``caffe.proto`` dnupdate reads, and typing of a parsed tree against it.

Each message is a table ``field name → FieldDef`` with the proto2 type, label and declared
default (proto2: an unset field without a declared default reads as 0, ``""`` or false).
:func:`validate` turns a schema-free :class:`~engine.config.prototxt.TextMessage` into a typed
:class:`Msg`, reporting what protobuf's parser rejects: unknown fields (with a close-match
suggestion), wrong scalar types, enum names that do not exist, and a singular field given twice
("Non-repeated field ... is specified multiple times").
"""

from __future__ import annotations

import difflib
import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from dnupdate.engine.config.prototxt import TextMessage, TextScalar
from dnupdate.engine.spec import DEFAULT, ConfigError, Diagnostic, Origin

# --------------------------------------------------------------------------------------------
# Diagnostics
# --------------------------------------------------------------------------------------------


@dataclass
class Reporter:
    """Collects diagnostics; :meth:`check` raises a ConfigError when any is an error."""

    fallback: Origin = field(default_factory=lambda: Origin("<config>"))
    items: list[Diagnostic] = field(default_factory=list)

    def _where(self, origin: Origin | None) -> Origin:
        """A default (no file) is reported against the config file itself."""
        return self.fallback if origin is None or origin.file == "default" else origin

    def error(self, origin: Origin | None, key: str | None, message: str) -> None:
        """Record an error at ``origin``."""
        where = self._where(origin)
        self.items.append(Diagnostic("error", where.file, where.line, key, message))

    def warn(self, origin: Origin | None, key: str | None, message: str) -> None:
        """Record a warning at ``origin``."""
        where = self._where(origin)
        self.items.append(Diagnostic("warning", where.file, where.line, key, message))

    @property
    def has_errors(self) -> bool:
        """Whether any recorded diagnostic is an error."""
        return any(d.severity == "error" for d in self.items)

    def check(self) -> None:
        """Raise ConfigError with every diagnostic when any is an error."""
        if self.has_errors:
            raise ConfigError(self.items)

    def warnings(self) -> tuple[Diagnostic, ...]:
        """The warnings, for ``RunSpec.diagnostics``."""
        return tuple(d for d in self.items if d.severity == "warning")


def close_matches(word: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'a' or 'b'?"`` for the closest candidates, or ``""`` (memoised: a
    file repeating one unknown field 100,000 times must not run difflib 100,000 times)."""
    if len(word) > 100:  # no field name is that long; difflib would be slow for nothing
        return ""
    return _close_matches(word, tuple(sorted(candidates)))


@functools.lru_cache(maxsize=1024)
def _close_matches(word: str, candidates: tuple[str, ...]) -> str:
    by_lower = {c.lower(): c for c in candidates}
    found = [by_lower[f] for f in difflib.get_close_matches(word.lower(), by_lower, 3, 0.6)]
    if not found:
        return ""
    return "; did you mean " + " or ".join(repr(f) for f in found) + "?"


# --------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------

INT_RANGES = {
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
}


@dataclass(frozen=True)
class FieldDef:
    """One proto field: ``type`` is a scalar type, ``"enum"`` (names in ``enum``, numbered by
    ``numbers`` or by position) or ``"message"`` (type name in ``message``; ``"*"`` accepts
    any content unchecked)."""

    type: str
    repeated: bool = False
    default: object = None
    enum: tuple[str, ...] = ()
    numbers: tuple[int, ...] = ()
    message: str = ""


def _i(default: int = 0, kind: str = "int32") -> FieldDef:
    return FieldDef(kind, default=default)


def _f(default: float = 0.0) -> FieldDef:
    return FieldDef("float", default=default)


def _b(default: bool = False) -> FieldDef:
    return FieldDef("bool", default=default)


def _s(default: str = "") -> FieldDef:
    return FieldDef("string", default=default)


def _e(names: str, default: str | None = None) -> FieldDef:
    values = tuple(names.split())
    return FieldDef("enum", default=default or values[0], enum=values)


def _m(name: str) -> FieldDef:
    return FieldDef("message", message=name)


def _r(item: FieldDef) -> FieldDef:
    return FieldDef(item.type, True, None, item.enum, item.numbers, item.message)


ANY = "*"
PHASE = "TRAIN TEST"
ENGINE = "DEFAULT CAFFE CUDNN"

SOLVER = {
    "net": _s(),
    "net_param": _m("NetParameter"),
    "train_net": _s(),
    "test_net": _r(_s()),
    "train_net_param": _m("NetParameter"),
    "test_net_param": _r(_m("NetParameter")),
    "train_state": _m("NetState"),
    "test_state": _r(_m("NetState")),
    "test_iter": _r(_i()),
    "test_interval": _i(0),
    "test_compute_loss": _b(False),
    "test_initialization": _b(True),
    "base_lr": _f(),
    "display": _i(),
    "average_loss": _i(1),
    "max_iter": _i(),
    "iter_size": _i(1),
    "lr_policy": _s(),
    "gamma": _f(),
    "power": _f(),
    "momentum": _f(),
    "weight_decay": _f(),
    "regularization_type": _s("L2"),
    "stepsize": _i(),
    "stepvalue": _r(_i()),
    "clip_gradients": _f(-1.0),
    "snapshot": _i(0),
    "snapshot_prefix": _s(),
    "snapshot_diff": _b(False),
    "snapshot_format": _e("HDF5 BINARYPROTO", "BINARYPROTO"),
    "solver_mode": _e("CPU GPU", "GPU"),
    "device_id": _i(0),
    "random_seed": _i(-1, "int64"),
    "type": _s("SGD"),
    "delta": _f(1e-8),
    "momentum2": _f(0.999),
    "rms_decay": _f(0.99),
    "debug_info": _b(False),
    "snapshot_after_train": _b(True),
    "solver_type": _e("SGD NESTEROV ADAGRAD RMSPROP ADADELTA ADAM"),
    "layer_wise_reduce": _b(True),
    "weights": _r(_s()),
    # dnupdate extensions, simulated mixed precision (engine.config.precision types them;
    # engine.config.caffe_solver warns that BVLC Caffe has no such fields)
    "precision": FieldDef("text"),
    "loss_scale": FieldDef("text"),
    "scale_init": FieldDef("text"),
    "scale_growth": FieldDef("text"),
    "scale_backoff": FieldDef("text"),
    "scale_growth_interval": FieldDef("text"),
    "master_weights": FieldDef("text"),
}

NET = {
    "name": _s(),
    "input": _r(_s()),
    "input_shape": _r(_m("BlobShape")),
    "input_dim": _r(_i()),
    "force_backward": _b(False),
    "state": _m("NetState"),
    "debug_info": _b(False),
    "layer": _r(_m("LayerParameter")),
    "layers": _r(_m("V1LayerParameter")),
}

# Layer parameter messages of layer types Caffe has but dnupdate does not train: accepted
# unchecked so that the error is "unsupported layer type", not "unknown field".
OTHER_LAYER_PARAMS = (
    "argmax_param",
    "batch_reindex_param",
    "bias_param",
    "clip_param",
    "concat_param",
    "contrastive_loss_param",
    "crop_param",
    "dummy_data_param",
    "eltwise_param",
    "elu_param",
    "embed_param",
    "exp_param",
    "flatten_param",
    "hdf5_output_param",
    "hinge_loss_param",
    "image_data_param",
    "infogain_loss_param",
    "log_param",
    "lrn_param",
    "memory_data_param",
    "mvn_param",
    "parameter_param",
    "power_param",
    "prelu_param",
    "python_param",
    "recurrent_param",
    "reduction_param",
    "reshape_param",
    "slice_param",
    "spp_param",
    "swish_param",
    "threshold_param",
    "tile_param",
    "window_data_param",
)

LAYER = {
    "name": _s(),
    "type": _s(),
    "bottom": _r(_s()),
    "top": _r(_s()),
    "phase": _e(PHASE),
    "loss_weight": _r(_f()),
    "param": _r(_m("ParamSpec")),
    "blobs": _r(_m(ANY)),
    "propagate_down": _r(_b()),
    "include": _r(_m("NetStateRule")),
    "exclude": _r(_m("NetStateRule")),
    "transform_param": _m("TransformationParameter"),
    "loss_param": _m("LossParameter"),
    "accuracy_param": _m("AccuracyParameter"),
    "batch_norm_param": _m("BatchNormParameter"),
    "convolution_param": _m("ConvolutionParameter"),
    "data_param": _m("DataParameter"),
    "dropout_param": _m("DropoutParameter"),
    "hdf5_data_param": _m("HDF5DataParameter"),
    "inner_product_param": _m("InnerProductParameter"),
    "input_param": _m("InputParameter"),
    "pooling_param": _m("PoolingParameter"),
    "relu_param": _m("ReLUParameter"),
    "scale_param": _m("ScaleParameter"),
    "sigmoid_param": _m("EngineParameter"),
    "tanh_param": _m("EngineParameter"),
    "softmax_param": _m("SoftmaxParameter"),
    **{name: _m(ANY) for name in OTHER_LAYER_PARAMS},
    "concat_param": _m("ConcatParameter"),
    "eltwise_param": _m("EltwiseParameter"),
    "flatten_param": _m("FlattenParameter"),
    "lrn_param": _m("LRNParameter"),
    "power_param": _m("PowerParameter"),
    "reshape_param": _m("ReshapeParameter"),
}

# V1LayerParameter.LayerType (caffe.proto), name → enum number.
V1_TYPES = {
    "NONE": 0, "ABSVAL": 35, "ACCURACY": 1, "ARGMAX": 30, "BNLL": 2, "CONCAT": 3,
    "CONTRASTIVE_LOSS": 37, "CONVOLUTION": 4, "DATA": 5, "DECONVOLUTION": 39, "DROPOUT": 6,
    "DUMMY_DATA": 32, "EUCLIDEAN_LOSS": 7, "ELTWISE": 25, "EXP": 38, "FLATTEN": 8,
    "HDF5_DATA": 9, "HDF5_OUTPUT": 10, "HINGE_LOSS": 28, "IM2COL": 11, "IMAGE_DATA": 12,
    "INFOGAIN_LOSS": 13, "INNER_PRODUCT": 14, "LRN": 15, "MEMORY_DATA": 29,
    "MULTINOMIAL_LOGISTIC_LOSS": 16, "MVN": 34, "POOLING": 17, "POWER": 26, "RELU": 18,
    "SIGMOID": 19, "SIGMOID_CROSS_ENTROPY_LOSS": 27, "SILENCE": 36, "SOFTMAX": 20,
    "SOFTMAX_LOSS": 21, "SPLIT": 22, "SLICE": 33, "TANH": 23, "WINDOW_DATA": 24,
    "THRESHOLD": 31,
}  # fmt: skip

V1_LAYER = {
    "name": _s(),
    "type": FieldDef(
        "enum", default="NONE", enum=tuple(V1_TYPES), numbers=tuple(V1_TYPES.values())
    ),
    "bottom": _r(_s()),
    "top": _r(_s()),
    "include": _r(_m("NetStateRule")),
    "exclude": _r(_m("NetStateRule")),
    "blobs": _r(_m(ANY)),
    "param": _r(_s()),
    "blob_share_mode": _r(_e("STRICT PERMISSIVE")),
    "blobs_lr": _r(_f()),
    "weight_decay": _r(_f()),
    "loss_weight": _r(_f()),
    "accuracy_param": _m("AccuracyParameter"),
    "convolution_param": _m("ConvolutionParameter"),
    "data_param": _m("DataParameter"),
    "dropout_param": _m("DropoutParameter"),
    "hdf5_data_param": _m("HDF5DataParameter"),
    "inner_product_param": _m("InnerProductParameter"),
    "pooling_param": _m("PoolingParameter"),
    "relu_param": _m("ReLUParameter"),
    "sigmoid_param": _m("EngineParameter"),
    "tanh_param": _m("EngineParameter"),
    "softmax_param": _m("SoftmaxParameter"),
    "transform_param": _m("TransformationParameter"),
    "loss_param": _m("LossParameter"),
    "layer": _m(ANY),
    **{name: _m(ANY) for name in OTHER_LAYER_PARAMS},
}

FILLER = {
    "type": _s("constant"),
    "value": _f(0.0),
    "min": _f(0.0),
    "max": _f(1.0),
    "mean": _f(0.0),
    "std": _f(1.0),
    "sparse": _i(-1),
    "variance_norm": _e("FAN_IN FAN_OUT AVERAGE"),
}

MESSAGES: dict[str, dict[str, FieldDef]] = {
    "SolverParameter": SOLVER,
    "NetParameter": NET,
    "LayerParameter": LAYER,
    "V1LayerParameter": V1_LAYER,
    "NetState": {"phase": _e(PHASE, "TEST"), "level": _i(0), "stage": _r(_s())},
    "NetStateRule": {
        "phase": _e(PHASE),
        "min_level": _i(),
        "max_level": _i(),
        "stage": _r(_s()),
        "not_stage": _r(_s()),
    },
    "ParamSpec": {
        "name": _s(),
        "share_mode": _e("STRICT PERMISSIVE"),
        "lr_mult": _f(1.0),
        "decay_mult": _f(1.0),
    },
    "BlobShape": {"dim": _r(_i(0, "int64"))},
    "FillerParameter": FILLER,
    "TransformationParameter": {
        "scale": _f(1.0),
        "mirror": _b(False),
        "crop_size": _i(0, "uint32"),
        "mean_file": _s(),
        "mean_value": _r(_f()),
        "force_color": _b(False),
        "force_gray": _b(False),
    },
    "DataParameter": {
        "source": _s(),
        "batch_size": _i(0, "uint32"),
        "rand_skip": _i(0, "uint32"),
        "backend": _e("LEVELDB LMDB"),
        "scale": _f(1.0),
        "mean_file": _s(),
        "crop_size": _i(0, "uint32"),
        "mirror": _b(False),
        "force_encoded_color": _b(False),
        "prefetch": _i(4, "uint32"),
    },
    "InputParameter": {"shape": _r(_m("BlobShape"))},
    "HDF5DataParameter": {
        "source": _s(),
        "batch_size": _i(0, "uint32"),
        "shuffle": _b(False),
    },
    "ConvolutionParameter": {
        "num_output": _i(0, "uint32"),
        "bias_term": _b(True),
        "pad": _r(_i(0, "uint32")),
        "kernel_size": _r(_i(0, "uint32")),
        "stride": _r(_i(0, "uint32")),
        "dilation": _r(_i(0, "uint32")),
        "pad_h": _i(0, "uint32"),
        "pad_w": _i(0, "uint32"),
        "kernel_h": _i(0, "uint32"),
        "kernel_w": _i(0, "uint32"),
        "stride_h": _i(0, "uint32"),
        "stride_w": _i(0, "uint32"),
        "group": _i(1, "uint32"),
        "weight_filler": _m("FillerParameter"),
        "bias_filler": _m("FillerParameter"),
        "engine": _e(ENGINE),
        "axis": _i(1),
        "force_nd_im2col": _b(False),
    },
    "PoolingParameter": {
        "pool": _e("MAX AVE STOCHASTIC"),
        "pad": _i(0, "uint32"),
        "pad_h": _i(0, "uint32"),
        "pad_w": _i(0, "uint32"),
        "kernel_size": _i(0, "uint32"),
        "kernel_h": _i(0, "uint32"),
        "kernel_w": _i(0, "uint32"),
        "stride": _i(1, "uint32"),
        "stride_h": _i(0, "uint32"),
        "stride_w": _i(0, "uint32"),
        "engine": _e(ENGINE),
        "global_pooling": _b(False),
        "round_mode": _e("CEIL FLOOR"),
    },
    "InnerProductParameter": {
        "num_output": _i(0, "uint32"),
        "bias_term": _b(True),
        "weight_filler": _m("FillerParameter"),
        "bias_filler": _m("FillerParameter"),
        "axis": _i(1),
        "transpose": _b(False),
    },
    "ReLUParameter": {"negative_slope": _f(0.0), "engine": _e(ENGINE)},
    "EngineParameter": {"engine": _e(ENGINE)},
    "SoftmaxParameter": {"engine": _e(ENGINE), "axis": _i(1)},
    "DropoutParameter": {"dropout_ratio": _f(0.5), "scale_train": _b(True)},
    "BatchNormParameter": {
        "use_global_stats": _b(False),
        "moving_average_fraction": _f(0.999),
        "eps": _f(1e-5),
    },
    "ScaleParameter": {
        "axis": _i(1),
        "num_axes": _i(1),
        "filler": _m("FillerParameter"),
        "bias_term": _b(False),
        "bias_filler": _m("FillerParameter"),
    },
    "LossParameter": {
        "ignore_label": _i(),
        "normalization": _e("FULL VALID BATCH_SIZE NONE", "VALID"),
        "normalize": _b(False),
    },
    "AccuracyParameter": {"top_k": _i(1, "uint32"), "axis": _i(1), "ignore_label": _i()},
    "ConcatParameter": {"axis": _i(1), "concat_dim": _i(1, "uint32")},
    "EltwiseParameter": {
        "operation": _e("PROD SUM MAX", "SUM"),
        "coeff": _r(_f()),
        "stable_prod_grad": _b(True),
    },
    "FlattenParameter": {"axis": _i(1), "end_axis": _i(-1)},
    "LRNParameter": {
        "local_size": _i(5, "uint32"),
        "alpha": _f(1.0),
        "beta": _f(0.75),
        "norm_region": _e("ACROSS_CHANNELS WITHIN_CHANNEL"),
        "k": _f(1.0),
        "engine": _e(ENGINE),
    },
    "PowerParameter": {"power": _f(1.0), "scale": _f(1.0), "shift": _f(0.0)},
    "ReshapeParameter": {"shape": _m("BlobShape"), "axis": _i(0), "num_axes": _i(-1)},
}


# --------------------------------------------------------------------------------------------
# Typed messages
# --------------------------------------------------------------------------------------------


@dataclass
class Msg:
    """A typed message: values per field in file order, each with its Origin.

    ``get`` returns the value or the proto default, ``has`` tells whether the field was
    written, ``origin`` where (the message's own origin when unset).
    """

    type_name: str
    origin: Origin
    values: dict[str, list] = field(default_factory=dict)
    origins: dict[str, list[Origin]] = field(default_factory=dict)

    @property
    def schema(self) -> dict[str, FieldDef]:
        """This message type's field table."""
        return MESSAGES.get(self.type_name, {})

    def has(self, name: str) -> bool:
        """Whether the field was written (proto2 ``has_``)."""
        return bool(self.values.get(name))

    def get(self, name: str):
        """The value (a list for repeated fields), or the proto default when unset."""
        values = self.values.get(name)
        if values:
            return values[0] if not self.schema[name].repeated else list(values)
        definition = self.schema.get(name)
        if definition is None or definition.repeated:
            return [] if definition is not None else None
        if definition.type == "message":
            return Msg(definition.message, self.origin)
        return definition.default

    def all(self, name: str) -> list:
        """Every value written for the field, in order."""
        return list(self.values.get(name, []))

    def origin_of(self, name: str, index: int = 0) -> Origin:
        """Where the ``index``-th value of the field was written (else the message)."""
        origins = self.origins.get(name)
        if origins:
            return origins[min(index, len(origins) - 1)]
        return self.origin

    def origin_or_default(self, name: str) -> Origin:
        """Where the field was written, or ``DEFAULT`` when it is unset (a spec origin)."""
        return self.origin_of(name) if self.has(name) else DEFAULT

    def add(self, name: str, value, origin: Origin) -> None:
        """Append one value of the field."""
        self.values.setdefault(name, []).append(value)
        self.origins.setdefault(name, []).append(origin)

    def set(self, name: str, values: list, origin: Origin) -> None:
        """Replace all values of the field (``--set`` overrides)."""
        self.values[name] = list(values)
        self.origins[name] = [origin] * len(values)


Converted = tuple[object, str | None]


def _convert_int(scalar: TextScalar, kind: str) -> Converted:
    if scalar.kind != "int":
        return None, f"expected an integer, got {scalar.text!r}"
    low, high = INT_RANGES[kind]
    value = int(scalar.value)
    if not low <= value <= high:
        return None, f"{scalar.text} is out of range for {kind}"
    return value, None


def _convert_float(scalar: TextScalar) -> Converted:
    if scalar.kind in ("int", "float"):
        return float(scalar.value), None
    if scalar.kind == "ident":
        word = str(scalar.value).lower().lstrip("-")
        sign = -1.0 if str(scalar.value).startswith("-") else 1.0
        if word in ("inf", "infinity"):
            return sign * math.inf, None
        if word == "nan":
            return math.nan, None
    return None, f"expected a number, got {scalar.text!r}"


def _convert_bool(scalar: TextScalar) -> Converted:
    if scalar.kind == "ident" and scalar.value in ("true", "True", "t"):
        return True, None
    if scalar.kind == "ident" and scalar.value in ("false", "False", "f"):
        return False, None
    if scalar.kind == "int" and scalar.value in (0, 1):
        return bool(scalar.value), None
    return None, f"expected true or false, got {scalar.text!r}"


def _convert_string(scalar: TextScalar) -> Converted:
    if scalar.kind == "string":
        return str(scalar.value), None
    if scalar.loose:
        return scalar.text, None
    return None, f"expected a quoted string, got {scalar.text}"


def _convert_enum(scalar: TextScalar, definition: FieldDef) -> Converted:
    name = str(scalar.value)
    expected = ", ".join(definition.enum)
    if scalar.kind == "ident" or (scalar.kind == "string" and scalar.loose):
        if name in definition.enum:
            return name, None
        return None, f"unknown value {name!r}; expected one of {expected}"
    if scalar.kind == "int":
        numbers = definition.numbers or tuple(range(len(definition.enum)))
        if scalar.value in numbers:
            return definition.enum[numbers.index(int(scalar.value))], None
    return None, f"expected one of {expected}, got {scalar.text}"


def convert_scalar(scalar: TextScalar, definition: FieldDef) -> Converted:
    """Type one scalar for a field by protobuf's text-format rules: returns
    ``(value, None)`` or ``(None, error message)``. Integers accept only integer spellings,
    floats also ints and ``inf``/``nan``, bools ``true``/``false``/``t``/``f``/``1``/``0``,
    strings a quoted literal (any spelling when ``loose``), enums a declared name or number."""
    kind = definition.type
    if kind in INT_RANGES:
        return _convert_int(scalar, kind)
    if kind in ("float", "double"):
        return _convert_float(scalar)
    if kind == "bool":
        return _convert_bool(scalar)
    if kind == "string":
        return _convert_string(scalar)
    if kind == "text":  # any scalar, kept as written (a quoted one unquoted)
        return (str(scalar.value) if scalar.kind == "string" else scalar.text), None
    return _convert_enum(scalar, definition)


class _Validator:
    def __init__(self, file: str, reporter: Reporter):
        self.file = file
        self.reporter = reporter

    def origin(self, line: int | None) -> Origin:
        return Origin(self.file, line)

    def message(self, tree: TextMessage, type_name: str, context: str) -> Msg:
        msg = Msg(type_name, self.origin(tree.line))
        schema = MESSAGES[type_name]
        for item in tree.fields:
            where = self.origin(item.line)
            definition = schema.get(item.name)
            if definition is None:
                hint = close_matches(item.name, schema)
                self.reporter.error(
                    where, item.name, f"unknown field {item.name!r} in {context}{hint}"
                )
                continue
            if not definition.repeated and msg.has(item.name):
                self.reporter.error(
                    where,
                    item.name,
                    f"non-repeated field {item.name!r} is specified multiple times "
                    f"(first on line {msg.origin_of(item.name).line})",
                )
                continue
            value = self.value(item.name, item.value, definition, context)
            if value is not None:
                msg.add(item.name, value, where)
        return msg

    def value(self, name: str, value, definition: FieldDef, context: str):
        where = self.origin(value.line)
        if definition.type == "message":
            if not isinstance(value, TextMessage):
                self.reporter.error(
                    where,
                    name,
                    f"{name!r} in {context} is a message (a {{ ... }} block or a "
                    "YAML mapping), not a single value",
                )
                return None
            if definition.message == ANY:
                return Msg(ANY, where)
            return self.message(value, definition.message, definition.message)
        if isinstance(value, TextMessage):
            problem = "has no value" if not value.fields else "takes a value, not a { ... } block"
            self.reporter.error(where, name, f"{name!r} {problem}")
            return None
        typed, problem = convert_scalar(value, definition)
        if problem is None:
            problem = not_finite_problem(typed, definition)
            typed = None if problem else typed
        if problem is not None:
            self.reporter.error(where, name, f"bad value for {name!r} in {context}: {problem}")
        return typed


FLOAT32_MAX = 3.4028234663852886e38


def not_finite_problem(value: object, definition: FieldDef) -> str | None:
    """Why a float value is refused: NaN, ±inf, or past float32's range for a ``float`` field
    (which protobuf stores as inf). Caffe accepts them (protobuf parses ``nan``/``inf``), but
    no hyper-parameter means anything as one: a NaN ``base_lr`` makes every weight NaN at the
    first update, which would look like divergence."""
    if definition.type not in ("float", "double") or not isinstance(value, float):
        return None
    if math.isnan(value):
        return "NaN is not a finite number"
    if math.isinf(value):
        return f"{value} is not a finite number"
    if definition.type == "float" and abs(value) > FLOAT32_MAX:
        return f"{value:g} overflows float32 (the field's type) to infinity"
    return None


def validate(tree: TextMessage, type_name: str, file: str, reporter: Reporter) -> Msg:
    """Type ``tree`` as a ``type_name`` message; problems go to ``reporter`` (the returned
    Msg omits fields that had errors)."""
    return _Validator(file, reporter).message(tree, type_name, type_name)
