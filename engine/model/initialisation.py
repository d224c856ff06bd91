"""Parameter initialisation: darknet's bit for bit, and Caffe's fillers.

Every parameter blob (keyed ``"LAYER/INDEX"`` in framework order, see
:func:`engine.model.shapes.param_blobs`) is filled by a :class:`~engine.spec.FillerSpec`:

* darknet (spec ``darknet.md`` 9.4/9.5), bit-exact with glibc ``rand()``: one
  :class:`~engine.rng.DarknetRandom` seeded like ``srand(seed)``, layers in cfg order, each
  layer's weights in memory order:

  - ``darknet_conv``: ``w[i] = scale * rand_normal()`` with
    ``scale = (float) sqrt(2. / (size*size*c/groups))`` (integer product and division, then
    the division and sqrt in double, stored as float32; the product with the float32 normal
    rounds once);
  - ``darknet_connected``: ``w[i] = scale * rand_uniform(-1, 1)``, ``scale = sqrt(2./inputs)``;
  - biases 0, batch-norm scales 1, rolling mean and variance 0; nothing else draws.

  The ``DarknetRandom`` is returned: its glibc words and the Box–Muller spare carry on into
  training (dropout masks, the ``random`` lr policy), as in one darknet process.

* Caffe (spec ``caffe.md`` 8): ``constant``, ``uniform`` (upper bound included), ``gaussian``
  (optionally ``sparse``), ``xavier`` and ``msra`` (``variance_norm``), ``positive_unitball``,
  ``bilinear``. An unset filler is Caffe's default, constant 0. Draws come from a NumPy
  ``Generator`` seeded with the run seed: seeded and reproducible, but **not** Caffe's Boost
  stream, so values differ from Caffe's own (their distributions do not).

Within a layer the weight filler runs before the bias filler (Caffe ``LayerSetUp``); the
remaining blobs (batch-norm scales and statistics) are constants.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from dnupdate.engine.model.blobs import ArraySource, as_mapping, blob_key, has_darknet_layout
from dnupdate.engine.model.shapes import BlobSpec, infer_shapes
from dnupdate.engine.rng import DarknetRandom
from dnupdate.engine.spec import (
    BatchNormSpec,
    ConfigError,
    ConnectedSpec,
    ConvSpec,
    Diagnostic,
    DropoutSpec,
    FillerSpec,
    Framework,
    LayerSpec,
    NetSpec,
    ScaleSpec,
)

DARKNET_FILLERS = frozenset({"darknet_conv", "darknet_connected"})
CAFFE_FILLERS = frozenset(
    {"constant", "uniform", "gaussian", "xavier", "msra", "positive_unitball", "bilinear"}
)

ONE = FillerSpec(type="constant", value=1.0)
ZERO = FillerSpec(type="constant", value=0.0)


@dataclass(frozen=True)
class BlobInit:
    """One blob to fill: its key, layer, shape, filler and the spec field the filler came
    from (``weight_filler``, ``bias_filler``, ``filler``, or ``fixed`` for the constants a
    framework sets itself: batch-norm scales 1, statistics 0)."""

    key: str
    layer: LayerSpec
    blob: BlobSpec
    filler: FillerSpec
    field: str


def _layer_fillers(layer: LayerSpec, blob: BlobSpec) -> tuple[FillerSpec, str]:
    """The filler of one blob of a layer, and the spec field it comes from."""
    if isinstance(layer, ConvSpec | ConnectedSpec):
        if blob.name == "weights":
            return layer.weight_filler, "weight_filler"
        if blob.name in ("biases", "bias"):
            return layer.bias_filler, "bias_filler"
        return (ONE if blob.name == "scales" else ZERO), "fixed"
    if isinstance(layer, ScaleSpec):
        if blob.name == "gamma":
            return layer.filler, "filler"
        return layer.bias_filler, "bias_filler"
    if isinstance(layer, BatchNormSpec) and blob.name == "scales":
        return ONE, "fixed"  # darknet [batchnorm]: scales start at 1
    return ZERO, "fixed"  # running statistics (darknet rolling_*, Caffe BatchNorm sums)


_FIELD_ORDER = {"weight_filler": 0, "filler": 0, "bias_filler": 1, "fixed": 2}


def init_plan(net_spec: NetSpec) -> list[BlobInit]:
    """Every parameter blob of the net with its filler, in draw order: layers in order and,
    within a layer, the weight filler, then the bias filler, then the fixed constants."""
    plan: list[BlobInit] = []
    for shape in infer_shapes(net_spec):
        entries = []
        for index, blob in enumerate(shape.blobs):
            filler, field = _layer_fillers(shape.layer, blob)
            key = blob_key(shape.layer.name, index)
            entries.append(BlobInit(key, shape.layer, blob, filler, field))
        plan.extend(sorted(entries, key=lambda e: _FIELD_ORDER[e.field]))
    return plan


def allocate_blobs(net_spec: NetSpec) -> dict[str, np.ndarray]:
    """Zeroed float32 arrays for every parameter blob, keyed ``"LAYER/INDEX"`` (framework
    order), e.g. for :func:`initialise` before a network owns the buffers."""
    return {
        blob_key(shape.layer.name, index): np.zeros(blob.shape, dtype=np.float32)
        for shape in infer_shapes(net_spec)
        for index, blob in enumerate(shape.blobs)
    }


def init_framework(net_spec: NetSpec) -> Framework:
    """Whose random stream the net's training continues on: ``"darknet"`` when any layer
    draws from glibc ``rand()`` (a ``darknet_*`` filler or darknet-style dropout) or stores
    its blobs in darknet order; ``"caffe"`` otherwise."""
    for entry in init_plan(net_spec):
        if entry.filler.type in DARKNET_FILLERS:
            return "darknet"
    for layer in net_spec.layers:
        if isinstance(layer, DropoutSpec) and layer.style == "darknet":
            return "darknet"
        if has_darknet_layout(layer):
            return "darknet"
    return "caffe"


def initialise(
    net_spec: NetSpec,
    blobs: ArraySource,
    *,
    seed: int,
    framework_rng: DarknetRandom | np.random.Generator | None = None,
) -> DarknetRandom | np.random.Generator:
    """Fill every parameter blob of ``net_spec`` in place, by its filler, in draw order.

    ``blobs``: ``{"LAYER/INDEX": float32 array}`` (e.g. :func:`allocate_blobs`), or a callable
    returning such a mapping or ``(key, array)`` pairs (``Network.named_blobs``).
    ``seed``: darknet fillers draw from ``DarknetRandom(seed)`` (= ``srand(seed)``), Caffe
    fillers from ``numpy.random.default_rng(seed mod 2^64)``. Caffe's ``random_seed: -1``
    ("pick one") must be resolved by the caller: here -1 is just another seed.
    ``framework_rng``: continue from this generator instead of seeding a new one (a
    ``DarknetRandom`` for darknet fillers, a ``Generator`` for Caffe fillers).

    Returns the generator training continues on (see :func:`init_framework`): the
    ``DarknetRandom`` for darknet nets (dropout draws come after the init draws), the NumPy
    ``Generator`` for Caffe nets.
    """
    arrays = as_mapping(blobs)
    darknet_rng = framework_rng if isinstance(framework_rng, DarknetRandom) else None
    numpy_rng = framework_rng if isinstance(framework_rng, np.random.Generator) else None
    darknet_rng = darknet_rng or DarknetRandom(seed)
    numpy_rng = numpy_rng or np.random.default_rng(seed & 0xFFFFFFFFFFFFFFFF)
    for entry in init_plan(net_spec):
        target = _target(arrays, entry)
        target[...] = fill_values(entry, darknet_rng, numpy_rng)
    return darknet_rng if init_framework(net_spec) == "darknet" else numpy_rng


def _target(arrays: Mapping[str, np.ndarray], entry: BlobInit) -> np.ndarray:
    if entry.key not in arrays:
        raise KeyError(
            f"no buffer for blob {entry.key} (layer {entry.layer.name} '{entry.blob.name}')"
        )
    target = arrays[entry.key]
    if target.shape != entry.blob.shape or target.dtype != np.float32:
        raise ValueError(
            f"buffer for blob {entry.key} is {target.dtype}{list(target.shape)}, "
            f"expected float32{list(entry.blob.shape)}"
        )
    return target


def _filler_error(entry: BlobInit, message: str) -> ConfigError:
    origin = entry.layer.origin
    return ConfigError(
        [
            Diagnostic(
                "error",
                origin.file,
                origin.line,
                entry.field,
                f"layer {entry.layer.name} blob '{entry.blob.name}' "
                f"{list(entry.blob.shape)}: {message}",
            )
        ]
    )


def fill_values(
    entry: BlobInit, darknet_rng: DarknetRandom, numpy_rng: np.random.Generator
) -> np.ndarray:
    """The values of one blob (float32, the blob's shape), drawing from the stream its
    filler belongs to. Raises :class:`ConfigError` for an unknown filler or one Caffe
    rejects (``sparse`` outside ``gaussian``, ``std <= 0``, ``min > max``, ...)."""
    filler = entry.filler
    shape = entry.blob.shape
    if filler.type in DARKNET_FILLERS:
        return darknet_fill(filler.type, shape, darknet_rng)
    if filler.type not in CAFFE_FILLERS:
        known = ", ".join(sorted(CAFFE_FILLERS | DARKNET_FILLERS))
        raise _filler_error(entry, f"unknown filler type {filler.type!r} (known: {known})")
    if filler.sparse != -1 and filler.type != "gaussian":
        raise _filler_error(entry, f"sparse is only supported by gaussian, not {filler.type}")
    try:
        return caffe_fill(filler, shape, numpy_rng)
    except ValueError as exc:
        raise _filler_error(entry, str(exc)) from None


# --------------------------------------------------------------------------------------------
# darknet
# --------------------------------------------------------------------------------------------


def darknet_scale(kind: str, shape: tuple[int, ...]) -> np.float32:
    """darknet's init scale for a weight blob, stored as float32 as darknet does.

    ``darknet_conv``: ``sqrt(2./(size*size*c/groups))``: ``size*size*c/groups`` is C integer
    arithmetic; for a weight blob ``(n, c/groups, size, size)`` it equals
    ``(c/groups)*size*size``, the blob's fan-in, because ``groups`` divides ``c``.
    ``darknet_connected``: ``sqrt(2./inputs)``, ``inputs`` = the fan-in of ``(out, in)``.
    The division and sqrt are double, then rounded to float32.
    """
    if not shape or shape[0] <= 0:
        raise ValueError(f"{kind} needs a weight blob, got shape {shape}")
    fan_in = math.prod(shape) // shape[0]
    return np.float32(math.sqrt(2.0 / fan_in))


def darknet_fill(kind: str, shape: tuple[int, ...], rng: DarknetRandom) -> np.ndarray:
    """darknet weights: ``scale * rand_normal()`` (conv) or ``scale * rand_uniform(-1, 1)``
    (connected) for every weight in memory order, each product rounded once to float32."""
    count = math.prod(shape)
    scale = darknet_scale(kind, shape)
    if kind == "darknet_conv":
        draws = rng.rand_normal_array(count)
    else:
        draws = rng.rand_uniform_array(count, -1.0, 1.0)
    return (scale * draws.astype(np.float32)).reshape(shape)


# --------------------------------------------------------------------------------------------
# Caffe
# --------------------------------------------------------------------------------------------


def caffe_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """Caffe's ``(fan_in, fan_out)``: ``count/num`` and ``count/channels`` with the legacy
    ``num = shape[0]`` and ``channels = shape[1]`` (1 for a 1-D blob, so fan_out = count)."""
    count = math.prod(shape)
    num = shape[0] if shape else 1
    channels = shape[1] if len(shape) > 1 else 1
    return count // num, count // channels


def _variance_n(filler: FillerSpec, shape: tuple[int, ...]) -> np.float32:
    """``n`` of xavier/msra in float: fan_in, fan_out, or ``(fan_in + fan_out) / 2``."""
    fan_in, fan_out = caffe_fans(shape)
    if filler.variance_norm == "average":
        return np.float32(fan_in + fan_out) / np.float32(2)
    return np.float32(fan_out if filler.variance_norm == "fan_out" else fan_in)


def caffe_uniform(rng: np.random.Generator, shape, low: float, high: float) -> np.ndarray:
    """``caffe_rng_uniform``: ``U[low, high]`` in float32, the upper bound **included**.

    Caffe quirk: Boost's ``uniform_real(low, nextafter(high))`` makes ``high`` reachable.
    Drawn here in double over ``[low, nextafter_f32(high))`` and rounded to float32; the
    rounding can reach ``nextafter_f32(high)``, which is clamped back to ``high``.
    """
    low32, high32 = np.float32(low), np.float32(high)
    if low32 > high32:
        raise ValueError(f"uniform needs min <= max, got min={low} max={high}")
    top = float(np.nextafter(high32, np.float32(np.inf)))
    values = (float(low32) + (top - float(low32)) * rng.random(shape)).astype(np.float32)
    return np.minimum(values, high32)


def caffe_gaussian(rng: np.random.Generator, shape, mean: float, std: float) -> np.ndarray:
    """``caffe_rng_gaussian``: ``N(mean, std²)`` rounded to float32; Caffe requires std > 0."""
    if not np.float32(std) > 0:
        raise ValueError(f"gaussian needs std > 0, got {std}")
    return rng.normal(float(np.float32(mean)), float(np.float32(std)), shape).astype(np.float32)


def _sparse_mask(rng: np.random.Generator, shape: tuple[int, ...], sparse: int) -> np.ndarray:
    """Caffe's sparse gaussian: keep each value with probability ``sparse / shape[0]``
    (the mean number of non-zero inputs per output), a Bernoulli mask."""
    probability = np.float32(sparse) / np.float32(shape[0])
    if probability > 1:
        raise ValueError(f"sparse = {sparse} exceeds the {shape[0]} outputs (probability > 1)")
    return (rng.random(shape) < probability).astype(np.float32)


def _bilinear(shape: tuple[int, ...]) -> np.ndarray:
    """Caffe's bilinear upsampling kernel for a square ``(n, c, k, k)`` deconvolution blob:
    ``f = ceil(k/2)``, ``c = (k - 1)/(2f)``, ``w(x, y) = (1 - |x/f - c|)(1 - |y/f - c|)``."""
    if len(shape) != 4 or shape[2] != shape[3]:
        raise ValueError(f"bilinear needs a square 4-D blob, got {shape}")
    k = shape[3]
    f = math.ceil(k / 2.0)
    centre = np.float32((k - 1) / (2.0 * f))
    pos = np.arange(k, dtype=np.float32)
    profile = np.float32(1) - np.abs(pos / np.float32(f) - centre)
    return np.broadcast_to(np.outer(profile, profile), shape).astype(np.float32)


def caffe_fill(filler: FillerSpec, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """One Caffe filler (``include/caffe/filler.hpp``), float32 arithmetic where Caffe has it:

    * ``constant``: ``value``; ``uniform``: ``U[min, max]`` (inclusive);
    * ``gaussian``: ``N(mean, std²)``, times a Bernoulli(``sparse/shape[0]``) mask when
      ``sparse >= 0``;
    * ``xavier``: ``U[-s, s]``, ``s = sqrt(3/n)``; ``msra``: ``N(0, 2/n)``; ``n`` per
      ``variance_norm`` (fan_in default);
    * ``positive_unitball``: ``U[0, 1]`` then each of the ``shape[0]`` rows divided by its
      (sequential float32) sum;
    * ``bilinear``: the deterministic upsampling kernel.
    """
    kind = filler.type
    if kind == "constant":
        return np.full(shape, np.float32(filler.value), dtype=np.float32)
    if kind == "uniform":
        return caffe_uniform(rng, shape, filler.min, filler.max)
    if kind == "gaussian":
        values = caffe_gaussian(rng, shape, filler.mean, filler.std)
        if filler.sparse < -1:
            raise ValueError(f"sparse must be >= -1, got {filler.sparse}")
        if filler.sparse >= 0:
            values *= _sparse_mask(rng, shape, filler.sparse)
        return values
    if kind == "xavier":
        scale = np.sqrt(np.float32(3) / _variance_n(filler, shape))
        return caffe_uniform(rng, shape, -float(scale), float(scale))
    if kind == "msra":
        std = np.sqrt(np.float32(2) / _variance_n(filler, shape))
        return caffe_gaussian(rng, shape, 0.0, float(std))
    if kind == "positive_unitball":
        values = caffe_uniform(rng, shape, 0.0, 1.0).reshape(shape[0], -1)
        sums = np.cumsum(values, axis=1, dtype=np.float32)[:, -1:]
        return (values / sums).reshape(shape)
    if kind == "bilinear":
        return _bilinear(shape)
    raise ValueError(f"unknown filler type {kind!r}")
