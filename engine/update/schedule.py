"""Learning-rate policies: pure functions of the iteration, in each framework's arithmetic.

Two conventions (``ScheduleSpec.convention``):

* **darknet** (pjreddie, ``network.c:get_current_rate``): the rate is a function of the batch
  number ``b = seen / batch`` (unsigned 64-bit). ``seen`` is incremented before the update, so
  the k-th update (k = 1, 2, ...) uses ``rate(k)``. ``burn_in`` composes with every policy:
  ``lr * (b / burn_in)^power`` while ``b < burn_in``. Arithmetic follows the compiled library
  bit for bit (``spec/darknet.md`` section 3): float32 ratios, ``pow``/``exp`` in double,
  result rounded to float32, unsigned counters with their quirks.
* **caffe** (``sgd_solver.cpp:SGDSolver::GetLearningRate``): the rate is a function of ``it``,
  the number of updates already applied (0-based). ``Dtype`` is float, so the result is
  float32. Our arithmetic choice, following C++ overload resolution: ``pow(float, int)``
  (step, exp, multistep) promotes to double ``pow`` and rounds once when stored in the float
  ``rate``; ``pow(float, float)`` and ``exp(float)`` (inv, poly, sigmoid) are the float
  overloads (``powf``/``expf``), modelled as the correctly rounded float32 result, which glibc's
  ``powf``/``expf`` return in all the cases we tested; every other operation is float32.
  Judgment: the float overloads are visible to Caffe's unqualified ``pow``/``exp`` only through
  the ``#include <math.h>`` of ``mkl_alternate.hpp`` with libstdc++ >= 6 (whose ``math.h``
  does ``using std::pow``); a GCC 5 build calls ``pow(double, double)`` and rounds once.

Extras (ours, in the schedule's own convention): AlexeyAB's ``sgdr`` (darknet only,
AlexeyAB's source form with integer cycles), ``cosine`` annealing with warm restarts
(Loshchilov & Hutter 2017), and a linear ``warmup`` composed in front of any policy; batch-size
scaling (``lr_factor``, with Goyal's gradual ``lr_warmup``) multiplies the result last.

Every function returns the exact float32 value (as a Python float or a float32 array).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator

import numpy as np

from dnupdate.engine.rng import GlibcRand
from dnupdate.engine.spec import ScheduleSpec

_U64 = 1 << 64
_PI_SGDR = 3.14159265  # AlexeyAB writes pi as this double literal

DARKNET_POLICIES = ("constant", "step", "steps", "exp", "poly", "sigmoid", "random")
DARKNET_EXTRAS = ("sgdr", "cosine")
CAFFE_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")
CAFFE_EXTRAS = ("cosine",)
PIECEWISE_CONSTANT = {"constant", "fixed", "step", "steps", "multistep"}


class ScheduleError(ValueError):
    """A schedule cannot be evaluated (unknown policy, zero step, missing rand state...)."""


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def first_iteration(schedule: ScheduleSpec) -> int:
    """The iteration number the first update uses: 1 for darknet (batch number after
    ``seen`` is incremented), 0 for Caffe (updates already applied)."""
    return 1 if schedule.convention == "darknet" else 0


def convention_note(schedule: ScheduleSpec) -> str:
    """One sentence saying how iterations are counted for this schedule (and a second on the
    batch-size scaling when there is one, :func:`scaling_note`)."""
    if schedule.convention == "darknet":
        note = (
            "darknet convention: iteration = batch number b = seen/batch; the k-th update "
            "(k = 1, 2, ...) uses rate(b = k), because seen is incremented before the update."
        )
    else:
        note = (
            "Caffe convention: iteration = it, the number of updates already applied; the "
            "first update uses rate(it = 0), the last of max_iter updates rate(max_iter - 1)."
        )
    scaling = scaling_note(schedule)
    return note if scaling is None else f"{note} {scaling}"


def lr_at(
    schedule: ScheduleSpec,
    iteration: int,
    *,
    rand_state: GlibcRand | None = None,
    current_step: int | None = None,
) -> float:
    """The rate the update numbered ``iteration`` uses, in the schedule's convention.

    darknet: ``iteration`` is the batch number b (the k-th update uses b = k). The ``random``
    policy consumes one glibc ``rand()`` draw from ``rand_state`` (a :class:`GlibcRand`, or
    anything with a ``glibc`` attribute holding one) when ``b >= burn_in``, as darknet does.

    Caffe: ``iteration`` is ``it`` (0-based). ``multistep`` is stateful in Caffe (see
    :func:`caffe_multistep_step`): ``current_step`` is the solver's ``current_step_`` *before*
    this call; when omitted it is the value reached by calling every iteration from 0.

    Returns a Python float holding the exact float32 value.
    """
    _check_iteration(schedule, iteration)
    if schedule.convention == "darknet":
        draws = None
        if schedule.policy == "random" and _past_burn_in(schedule, iteration):
            draws = np.array([_glibc_of(rand_state).rand()], dtype=np.int64)
        rates = _darknet_rates(schedule, np.array([iteration], dtype=np.uint64), draws)
    else:
        steps = None
        if schedule.policy == "multistep":
            before = (
                current_step
                if current_step is not None
                else caffe_multistep_state(schedule.steps, iteration - 1)
            )
            steps = np.array([caffe_multistep_step(schedule.steps, iteration, before)])
        rates = _caffe_rates(schedule, np.array([iteration], dtype=np.int64), steps)
    return float(_apply_extras(schedule, np.array([iteration]), rates)[0])


def lr_series(
    schedule: ScheduleSpec, first: int, last: int, *, seed: int | None = None
) -> np.ndarray:
    """Rates for iterations ``first..last`` inclusive, as a float32 array.

    State is handled by walking the iterations in order: darknet ``random`` seeds a fresh
    glibc stream with ``seed`` (default ``schedule.seed``) and draws once per iteration from
    ``first`` on that is past burn-in (as a run whose first ``get_current_rate`` call is at
    ``first``); Caffe ``multistep`` starts from ``current_step = 0`` at ``it = 0``.
    """
    if last < first:
        return np.empty(0, dtype=np.float32)
    _check_iteration(schedule, first)
    iterations = np.arange(first, last + 1, dtype=np.int64)
    if schedule.convention == "darknet":
        batches = iterations.astype(np.uint64)
        draws = None
        if schedule.policy == "random":
            count = int(np.count_nonzero(_burn_in_mask(schedule, batches) == 0))
            stream = GlibcRand(schedule.seed if seed is None else seed)
            draws = stream.rand_array(count)
        rates = _darknet_rates(schedule, batches, draws)
    else:
        rates = _caffe_rates(schedule, iterations, _multistep_steps_at(schedule, iterations))
    return _apply_extras(schedule, iterations, rates)


def lr_points(schedule: ScheduleSpec, iterations: np.ndarray) -> np.ndarray:
    """Rates at the given iterations (sorted, each >= :func:`first_iteration`), as
    :func:`lr_series` would give them, without evaluating the iterations in between: memory
    and time grow with ``len(iterations)``, not with their range. Caffe ``multistep`` is the
    state reached calling every iteration from 0. darknet ``random`` depends on every earlier
    draw, so it walks the whole range (at most :data:`RANDOM_WALK_LIMIT` iterations)."""
    its = np.asarray(iterations, dtype=np.int64)
    if its.size == 0:
        return np.empty(0, dtype=np.float32)
    first = int(its[0])
    _check_iteration(schedule, first)
    if schedule.convention == "darknet" and schedule.policy == "random":
        out = np.empty(its.shape, dtype=np.float32)
        for chunk_its, rates in iter_lr_chunks(schedule, first, int(its[-1])):
            inside = (its >= chunk_its[0]) & (its <= chunk_its[-1])
            out[inside] = rates[its[inside] - chunk_its[0]]
        return out
    if schedule.convention == "darknet":
        rates = _darknet_rates(schedule, its.astype(np.uint64), None)
    else:
        rates = _caffe_rates(schedule, its, _multistep_steps_at(schedule, its))
    return _apply_extras(schedule, its, rates)


RANDOM_WALK_LIMIT = 2_000_000  # darknet 'random': draws walked to reach an iteration
CHUNK = 1 << 16  # iterations evaluated at once when streaming


def _check_random_walk(count: int) -> None:
    if count > RANDOM_WALK_LIMIT:
        raise ScheduleError(
            f"darknet's 'random' policy draws once per update, so its rate at an iteration "
            f"depends on every earlier draw: evaluating {count:,} iterations is more than the "
            f"{RANDOM_WALK_LIMIT:,} dnupdate walks; pass a smaller --iters"
        )


def iter_lr_chunks(
    schedule: ScheduleSpec, first: int, last: int, chunk: int = CHUNK
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(iterations, rates)`` for ``first..last`` in pieces of at most ``chunk`` iterations,
    equal to :func:`lr_series` over the whole range (darknet ``random`` keeps one glibc
    stream across pieces), in memory bounded by ``chunk``."""
    stream = None
    if schedule.convention == "darknet" and schedule.policy == "random":
        _check_random_walk(last - first + 1)
        stream = GlibcRand(schedule.seed)
    for start in range(first, last + 1, chunk):
        stop = min(start + chunk - 1, last)
        its = np.arange(start, stop + 1, dtype=np.int64)
        if stream is None:
            yield its, lr_points(schedule, its)
            continue
        _check_iteration(schedule, start)
        batches = its.astype(np.uint64)
        count = int(np.count_nonzero(_burn_in_mask(schedule, batches) == 0))
        rates = _darknet_rates(schedule, batches, stream.rand_array(count))
        yield its, _apply_extras(schedule, its, rates)


def _multistep_steps_at(schedule: ScheduleSpec, its: np.ndarray) -> np.ndarray | None:
    """Caffe ``multistep``'s ``current_step`` after the call at each ``it`` (called every
    iteration from 0); None for other policies."""
    if schedule.policy != "multistep":
        return None
    points = np.array(_multistep_change_points(schedule.steps), dtype=np.int64)
    return np.searchsorted(points, its, side="right").astype(np.int64)


def milestones(
    schedule: ScheduleSpec, n: int, *, limit: int | None = None
) -> list[tuple[int, float, str]]:
    """Iterations (from :func:`first_iteration` to ``n`` inclusive) where the rate changes
    character, as ``(iteration, lr, reason)`` sorted by iteration: the start, the end of
    burn-in / warm-up, every change of a piecewise-constant policy (``"step"``), SGDR/cosine
    restarts, the sigmoid midpoint, and the end.

    Found analytically (no evaluation of the whole range). With ``limit``, a policy with
    more step or restart points than ``2·limit`` keeps its first and last ``limit``; see
    :func:`milestones_with_count` for how many were left out."""
    return milestones_with_count(schedule, n, limit=limit)[0]


def milestones_with_count(
    schedule: ScheduleSpec, n: int, *, limit: int | None = None
) -> tuple[list[tuple[int, float, str]], int]:
    """:func:`milestones` and the number of step/restart points left out by ``limit``
    (whether their rate really changes is not evaluated)."""
    first = first_iteration(schedule)
    if n < first:
        return [], 0
    found: dict[int, str] = {first: "start"}
    points, omitted = _structural_points(schedule, first, n, limit)
    for iteration, reason in points:
        found.setdefault(iteration, reason)
    found.setdefault(n, "end")
    its = np.array(sorted(found), dtype=np.int64)
    rates = lr_points(schedule, its)
    return [
        (int(it), float(rate), found[int(it)]) for it, rate in zip(its, rates, strict=True)
    ], omitted


def policy_names(convention: str) -> tuple[str, ...]:
    """Every policy name accepted for a convention (framework policies, then extras)."""
    if convention == "darknet":
        return DARKNET_POLICIES + DARKNET_EXTRAS
    return CAFFE_POLICIES + CAFFE_EXTRAS


# --------------------------------------------------------------------------------------------
# Caffe multistep state
# --------------------------------------------------------------------------------------------


def caffe_multistep_step(stepvalues: tuple[int, ...], it: int, current_step: int) -> int:
    """One Caffe ``multistep`` call: returns ``current_step`` after the call at ``it``.

    Caffe quirk: ``if (current_step < n && it >= stepvalue[current_step]) current_step++`` —
    an ``if``, not a loop, so at most one step per call. Called every iteration from 0 this
    counts the stepvalues ``<= it``; with duplicated stepvalues, or after resuming past several
    stepvalues, it lags by one step per skipped value and catches up one call at a time.
    """
    if current_step < len(stepvalues) and it >= stepvalues[current_step]:
        return current_step + 1
    return current_step


def _multistep_change_points(stepvalues: tuple[int, ...]) -> list[int]:
    """The iterations at which successive ``current_step`` increments happen when called
    every iteration from 0: ``t_0 = max(v_0, 0)``, ``t_j = max(v_j, t_{j-1} + 1)``."""
    points: list[int] = []
    previous = -1
    for value in stepvalues:
        previous = max(int(value), previous + 1)
        points.append(previous)
    return points


def caffe_multistep_sequence(stepvalues: tuple[int, ...], last: int) -> np.ndarray:
    """``current_step`` after each call at ``it = 0..last`` (called every iteration)."""
    points = np.array(_multistep_change_points(stepvalues), dtype=np.int64)
    its = np.arange(0, max(last + 1, 0), dtype=np.int64)
    return np.searchsorted(points, its, side="right").astype(np.int64)


def caffe_multistep_state(stepvalues: tuple[int, ...], it: int) -> int:
    """``current_step`` after the calls at ``0..it`` (0 when ``it < 0``)."""
    if it < 0:
        return 0
    return bisect.bisect_right(_multistep_change_points(stepvalues), it)


def multistep_trace(stepvalues: tuple[int, ...], first: int, last: int) -> Iterator[int]:
    """Yield ``current_step`` as each call at ``it = first..last`` leaves it, starting from 0
    at ``it = 0`` and stepping with :func:`caffe_multistep_step` every iteration."""
    current = 0
    for it in range(0, last + 1):
        current = caffe_multistep_step(stepvalues, it, current)
        if it >= first:
            yield current


# --------------------------------------------------------------------------------------------
# C arithmetic helpers
# --------------------------------------------------------------------------------------------


def _f32(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).astype(np.float32)


def _c_pow(x: float, y: float) -> float:
    """C ``pow(double, double)``: like ``math.pow`` but returning inf/NaN where C does instead
    of raising."""
    try:
        return math.pow(x, y)
    except OverflowError:
        odd = float(y).is_integer() and int(y) % 2 == 1
        return -math.inf if (x < 0 and odd) else math.inf
    except ValueError:
        if x == 0.0:
            odd = float(y).is_integer() and int(y) % 2 == 1
            return math.copysign(math.inf, x) if odd else math.inf
        return math.nan


def _c_exp(x: float) -> float:
    """C ``exp(double)``: inf on overflow instead of raising."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def _pow_array(bases: np.ndarray, exponent) -> np.ndarray:
    """Element-wise C ``pow`` in double with the C library (``math.pow``), never NumPy's
    SIMD kernels, which may round differently. ``exponent`` is a scalar or an array."""
    xs = np.asarray(bases, dtype=np.float64).tolist()
    if np.ndim(exponent) == 0:
        y = float(exponent)
        return np.array([_c_pow(x, y) for x in xs], dtype=np.float64)
    ys = np.asarray(exponent, dtype=np.float64).tolist()
    return np.array([_c_pow(x, y) for x, y in zip(xs, ys, strict=True)], dtype=np.float64)


def _exp_array(values: np.ndarray) -> np.ndarray:
    return np.array([_c_exp(x) for x in np.asarray(values, np.float64).tolist()], np.float64)


def _unsigned(value: int) -> np.uint64:
    """A C ``int`` converted to ``size_t`` (negative values wrap to huge ones)."""
    return np.uint64(int(value) % _U64)


def _glibc_of(rand_state) -> GlibcRand:
    if rand_state is None:
        raise ScheduleError("darknet's 'random' policy needs rand_state (an engine.rng.GlibcRand)")
    return getattr(rand_state, "glibc", rand_state)


def _check_iteration(schedule: ScheduleSpec, iteration: int) -> None:
    if iteration < 0:
        raise ScheduleError(f"iteration must be >= 0, got {iteration}")
    if schedule.convention == "darknet" and iteration >= _U64:
        raise ScheduleError(f"batch number {iteration} does not fit darknet's 64-bit counter")
    if schedule.policy not in policy_names(schedule.convention):
        raise ScheduleError(
            f"unknown {schedule.convention} policy {schedule.policy!r}; known: "
            + ", ".join(policy_names(schedule.convention))
        )


# --------------------------------------------------------------------------------------------
# darknet
# --------------------------------------------------------------------------------------------


def _burn_in_mask(schedule: ScheduleSpec, batches: np.ndarray) -> np.ndarray:
    """darknet quirk: ``b < burn_in`` compares unsigned, so a negative burn_in is huge."""
    return batches < _unsigned(schedule.burn_in)


def _past_burn_in(schedule: ScheduleSpec, batch: int) -> bool:
    return not bool(_burn_in_mask(schedule, np.array([batch], dtype=np.uint64))[0])


def _darknet_rates(
    schedule: ScheduleSpec, batches: np.ndarray, draws: np.ndarray | None
) -> np.ndarray:
    """``get_current_rate`` for each batch number (uint64 array): burn-in, else the policy.
    ``draws`` holds one glibc ``rand()`` value per batch past burn-in (``random`` only)."""
    rates = np.empty(batches.shape, dtype=np.float32)
    burning = _burn_in_mask(schedule, batches)
    if burning.any():
        rates[burning] = _darknet_burn_in(schedule, batches[burning])
    rest = ~burning
    if not rest.any():
        return rates
    if schedule.policy == "random":  # stateful: the glibc draws, not the batch numbers
        rates[rest] = _darknet_random(schedule, draws)
    else:
        rates[rest] = _DARKNET_POLICY_FUNCS[schedule.policy](schedule, batches[rest])
    return rates


def _lr32(schedule: ScheduleSpec) -> float:
    return float(np.float32(schedule.base_lr))


def _darknet_scaled_pow(schedule: ScheduleSpec, bases: np.ndarray, exponent) -> np.ndarray:
    """``float(double(lr) * pow(double(base), double(exponent)))``."""
    with np.errstate(all="ignore"):
        return _f32(_lr32(schedule) * _pow_array(bases, exponent))


def _darknet_burn_in(schedule: ScheduleSpec, batches: np.ndarray) -> np.ndarray:
    """``lr * pow((float)b / burn_in, power)``: float32 ratio, double pow, float result."""
    with np.errstate(all="ignore"):
        ratio = batches.astype(np.float32) / np.float32(schedule.burn_in)
    return _darknet_scaled_pow(schedule, ratio, np.float32(schedule.power))


def _darknet_constant(schedule: ScheduleSpec, batches: np.ndarray) -> np.ndarray:
    """``lr``."""
    return np.full(batches.shape, _lr32(schedule), dtype=np.float32)


def _darknet_step(schedule: ScheduleSpec, batches: np.ndarray) -> np.ndarray:
    """``lr * pow(scale, b / step)``, integer division on unsigned counters."""
    step = _unsigned(schedule.step)
    if step == 0:
        raise ScheduleError("darknet 'step' policy needs step != 0 (darknet divides by it)")
    exponents = (batches // step).astype(np.float64)
    scale = np.full(batches.shape, np.float32(schedule.scale))
    return _darknet_scaled_pow(schedule, scale, exponents)


def _darknet_exp(schedule: ScheduleSpec, batches: np.ndarray) -> np.ndarray:
    """``lr * pow(gamma, b)``."""
    gamma = np.full(batches.shape, np.float32(schedule.gamma))
    return _darknet_scaled_pow(schedule, gamma, batches.astype(np.float64))


def _darknet_poly(schedule: ScheduleSpec, batches: np.ndarray) -> np.ndarray:
    """``lr * pow(1 - (float)b / max_batches, power)``; the base is float32 arithmetic.

    darknet quirk: past ``max_batches`` the base is negative, so the rate rises again for
    even integer powers and is NaN for fractional ones; ``max_batches = 0`` gives inf/NaN.
    """
    with np.errstate(all="ignore"):
        fraction = batches.astype(np.float32) / np.float32(schedule.max_iter)
        base = np.float32(1.0) - fraction
    return _darknet_scaled_pow(schedule, base, np.float32(schedule.power))


def _darknet_steps(schedule: ScheduleSpec, batches: np.ndarray) -> np.ndarray:
    """``r = lr; for each i: if steps[i] > b: stop; r *= scales[i]`` in float32.

    darknet quirk: ``steps[i]`` is compared as unsigned 64-bit, so a negative entry is huge
    and stops the loop there: no later scale is ever applied.
    """
    steps, scales = schedule.steps, schedule.scales
    if len(scales) < len(steps):
        raise ScheduleError(
            f"darknet 'steps' policy needs a scale per step ({len(steps)} steps, "
            f"{len(scales)} scales)"
        )
    products = [np.float32(schedule.base_lr)]
    for scale in scales[: len(steps)]:
        products.append(np.float32(products[-1] * np.float32(scale)))
    if not steps:
        return np.full(batches.shape, products[0], dtype=np.float32)
    thresholds = np.maximum.accumulate(np.array([_unsigned(s) for s in steps], dtype=np.uint64))
    applied = np.searchsorted(thresholds, batches, side="right")
    return np.array(products, dtype=np.float32)[applied]


def _darknet_sigmoid(schedule: ScheduleSpec, batches: np.ndarray) -> np.ndarray:
    """``lr * (1 / (1 + exp(gamma * (b - step))))`` with ``b - step`` unsigned.

    darknet quirk: for ``b < step`` the difference wraps to about 1.8e19, exp overflows and
    the rate is exactly 0 until ``b == step`` (lr/2); afterwards it decays (gamma > 0).
    """
    difference = (batches - _unsigned(schedule.step)).astype(np.float32)
    with np.errstate(all="ignore"):
        exponent = np.float32(schedule.gamma) * difference
        logistic = 1.0 / (1.0 + _exp_array(exponent))
        return _f32(_lr32(schedule) * logistic)


def _darknet_random(schedule: ScheduleSpec, draws: np.ndarray | None) -> np.ndarray:
    """``lr * pow(rand_uniform(0, 1), power)``, one glibc draw per call."""
    if draws is None:
        raise ScheduleError("the darknet 'random' policy needs rand() draws")
    unit = draws.astype(np.float32) / np.float32(2147483648.0)  # rand_uniform(0, 1)
    return _darknet_scaled_pow(schedule, unit, np.float32(schedule.power))


class _Cycles:
    """Restart cycles ``(start, length)``: explicit while the length changes, then the last
    explicit cycle repeating (``int(length * mult) == length``), so that a schedule of
    2³¹ iterations with ``cycle_mult = 1`` costs one entry, not 2³¹."""

    def __init__(self, starts: list[int], lengths: list[int], periodic: bool) -> None:
        self.starts = np.array(starts, dtype=np.int64)
        self.lengths = np.array(lengths, dtype=np.int64)
        self.periodic = periodic

    @property
    def tail_start(self) -> int:
        return int(self.starts[-1])

    @property
    def tail_length(self) -> int:
        return int(self.lengths[-1])

    def locate(self, positions: np.ndarray, *, end_inclusive: bool) -> tuple[np.ndarray, ...]:
        """``(start, length)`` of the cycle holding each position: ``start <= p < end``
        (cosine) or ``start < p <= end`` (AlexeyAB's sgdr, ``end_inclusive``)."""
        positions = np.asarray(positions, dtype=np.int64)
        if end_inclusive:
            ends = self.starts + self.lengths
            index = np.searchsorted(ends, positions, side="left")
        else:
            index = np.searchsorted(self.starts, positions, side="right") - 1
        index = np.clip(index, 0, len(self.starts) - 1)
        starts, lengths = self.starts[index], self.lengths[index]
        if self.periodic:
            shift = 1 if end_inclusive else 0
            beyond = positions - shift >= self.tail_start + self.tail_length
            k = (positions - shift - self.tail_start) // self.tail_length
            starts = np.where(beyond, self.tail_start + k * self.tail_length, starts)
        return starts, lengths

    def restarts(self, last: int, limit: int | None) -> tuple[list[int], int]:
        """Starts of every cycle after the first, up to ``last``; with ``limit``, the first
        and last ``limit`` of them and the number left out."""
        explicit = [int(v) for v in self.starts[1:] if v <= last]
        tail: range = range(0)
        if self.periodic:
            begin = self.tail_start + self.tail_length
            tail = range(begin, last + 1, self.tail_length) if begin <= last else range(0)
        return _first_and_last(explicit, tail, limit)


def _first_and_last(explicit: list[int], tail: range, limit: int | None) -> tuple[list[int], int]:
    """The values of ``explicit`` then ``tail`` (a range, possibly huge): all of them, or
    with ``limit`` the first and last ``limit`` and how many were left out."""
    total = len(explicit) + len(tail)
    if limit is None or total <= 2 * limit:
        return explicit + list(tail), 0
    head = explicit[:limit] + list(tail[: max(0, limit - len(explicit))])
    if len(tail) >= limit:
        end = list(tail[len(tail) - limit :])
    else:
        end = explicit[len(explicit) - (limit - len(tail)) :] + list(tail)
    return head + end, total - 2 * limit


MAX_CYCLE = 1 << 62  # a cycle longer than any run (int(length * 1e30) fits no int64)


def _build_cycles(length: int, mult: float, last: int, *, grow_at_least_one: bool) -> _Cycles:
    """Cycles from 0 covering ``last``: ``T_{i+1} = int(T_i * mult)`` (at least 1 for
    cosine; sgdr stops with an error at 0, where AlexeyAB would loop forever)."""
    starts, lengths = [0], [length]
    while starts[-1] + lengths[-1] <= last:
        grown = min(int(lengths[-1] * mult), MAX_CYCLE)
        if grow_at_least_one:
            grown = max(grown, 1)
        elif grown <= 0:
            raise ScheduleError("'sgdr' cycle_mult makes the cycle length 0")
        if grown == lengths[-1]:
            return _Cycles(starts, lengths, periodic=True)
        starts.append(starts[-1] + lengths[-1])
        lengths.append(grown)
    return _Cycles(starts, lengths, periodic=False)


def _check_cycle_mult(schedule: ScheduleSpec) -> None:
    if not math.isfinite(schedule.cycle_mult):
        raise ScheduleError(f"'{schedule.policy}' needs a finite cycle_mult")


def _sgdr_cycles(schedule: ScheduleSpec, last: int) -> _Cycles:
    """AlexeyAB SGDR cycles covering batch numbers up to ``last``:
    ``while start + cycle < b: start += cycle; cycle *= sgdr_mult`` (integers)."""
    cycle = schedule.cycle or schedule.max_iter
    if cycle <= 0:
        raise ScheduleError("'sgdr' needs a positive cycle (sgdr_cycle or max_batches)")
    _check_cycle_mult(schedule)
    return _build_cycles(cycle, schedule.cycle_mult, last, grow_at_least_one=False)


def _darknet_sgdr(schedule: ScheduleSpec, batches: np.ndarray) -> np.ndarray:
    """AlexeyAB ``sgdr``: ``lr_min + 0.5*(lr - lr_min)*(1 + cos((b - start)*pi/cycle))``,
    where ``(start, cycle)`` is the cycle with ``start < b <= start + cycle`` (so b at a
    cycle's end gives ``lr_min`` and the next batch restarts at ``lr``)."""
    cycles = _sgdr_cycles(schedule, int(batches.max()))
    starts, lengths = cycles.locate(batches.astype(np.int64), end_inclusive=True)
    offset = (batches.astype(np.int64) - starts).astype(np.float32).astype(np.float64)
    angle = offset * _PI_SGDR / lengths.astype(np.float64)
    lr, lr_min = np.float32(schedule.base_lr), np.float32(schedule.lr_min)
    half_span = 0.5 * float(np.float32(lr - lr_min))
    cosine = np.array([math.cos(a) for a in angle.tolist()], dtype=np.float64)
    return _f32(float(lr_min) + half_span * (1.0 + cosine))


def _darknet_cosine(schedule: ScheduleSpec, batches: np.ndarray) -> np.ndarray:
    """Cosine annealing with warm restarts, counted from the first update (b = 1)."""
    return _cosine_restarts(schedule, batches.astype(np.int64) - 1 - cosine_delay(schedule))


_DARKNET_POLICY_FUNCS = {
    "constant": _darknet_constant,
    "step": _darknet_step,
    "steps": _darknet_steps,
    "exp": _darknet_exp,
    "poly": _darknet_poly,
    "sigmoid": _darknet_sigmoid,
    "sgdr": _darknet_sgdr,
    "cosine": _darknet_cosine,
}


# --------------------------------------------------------------------------------------------
# Caffe
# --------------------------------------------------------------------------------------------


def _caffe_rates(schedule: ScheduleSpec, its: np.ndarray, steps: np.ndarray | None) -> np.ndarray:
    """``GetLearningRate`` for each ``it``; ``steps`` is multistep's ``current_step`` after
    each call."""
    if schedule.policy == "multistep":
        return _caffe_gamma_pow(schedule, steps)
    return _CAFFE_POLICY_FUNCS[schedule.policy](schedule, its)


def _powf(bases: np.ndarray, exponent) -> np.ndarray:
    """C++ ``pow(float, float)`` (``powf``): the correctly rounded float32 power."""
    with np.errstate(all="ignore"):
        return _f32(_pow_array(bases, exponent))


def _caffe_gamma_pow(schedule: ScheduleSpec, exponents: np.ndarray) -> np.ndarray:
    """``base_lr * pow(gamma, n)`` with integer n: ``pow(double, double)``, float result."""
    if schedule.gamma < 0:
        raise ScheduleError(f"Caffe '{schedule.policy}' policy needs gamma >= 0")
    gamma = np.full(exponents.shape, np.float32(schedule.gamma))
    with np.errstate(all="ignore"):
        return _f32(_lr32(schedule) * _pow_array(gamma, exponents.astype(np.float64)))


def _caffe_fixed(schedule: ScheduleSpec, its: np.ndarray) -> np.ndarray:
    """``base_lr``."""
    return np.full(its.shape, _lr32(schedule), dtype=np.float32)


def _caffe_step(schedule: ScheduleSpec, its: np.ndarray) -> np.ndarray:
    """``base_lr * gamma ^ floor(it / stepsize)`` (Caffe CHECKs stepsize > 0)."""
    if schedule.step <= 0:
        raise ScheduleError("Caffe 'step' policy needs stepsize > 0")
    return _caffe_gamma_pow(schedule, its // schedule.step)


def _caffe_exp(schedule: ScheduleSpec, its: np.ndarray) -> np.ndarray:
    """``base_lr * gamma ^ it``."""
    return _caffe_gamma_pow(schedule, its)


def _caffe_inv(schedule: ScheduleSpec, its: np.ndarray) -> np.ndarray:
    """``base_lr * pow(1 + gamma * it, -power)``, all float32 (``powf``)."""
    if schedule.gamma < 0:
        raise ScheduleError("Caffe 'inv' policy needs gamma >= 0")
    base = np.float32(1.0) + np.float32(schedule.gamma) * its.astype(np.float32)
    return np.float32(schedule.base_lr) * _powf(base, -np.float32(schedule.power))


def _caffe_poly(schedule: ScheduleSpec, its: np.ndarray) -> np.ndarray:
    """``base_lr * pow(1 - float(it)/float(max_iter), power)``, all float32 (``powf``)."""
    with np.errstate(all="ignore"):
        base = np.float32(1.0) - its.astype(np.float32) / np.float32(schedule.max_iter)
        return np.float32(schedule.base_lr) * _powf(base, np.float32(schedule.power))


def _caffe_sigmoid(schedule: ScheduleSpec, its: np.ndarray) -> np.ndarray:
    """``base_lr * (1 / (1 + exp(-gamma * (float(it) - float(stepsize)))))``, float32
    (``expf``). A rise from about 0 to base_lr, crossing base_lr/2 at ``it = stepsize``."""
    if schedule.gamma < 0 or schedule.step <= 0:
        raise ScheduleError("Caffe 'sigmoid' policy needs gamma >= 0 and stepsize > 0")
    with np.errstate(all="ignore"):
        shifted = its.astype(np.float32) - np.float32(schedule.step)
        exponent = -np.float32(schedule.gamma) * shifted
        expf = _f32(_exp_array(exponent))
        return np.float32(schedule.base_lr) * (np.float32(1.0) / (np.float32(1.0) + expf))


def _caffe_cosine(schedule: ScheduleSpec, its: np.ndarray) -> np.ndarray:
    """Cosine annealing with warm restarts, counted from it = 0."""
    return _cosine_restarts(schedule, its - cosine_delay(schedule))


_CAFFE_POLICY_FUNCS = {
    "fixed": _caffe_fixed,
    "step": _caffe_step,
    "exp": _caffe_exp,
    "inv": _caffe_inv,
    "poly": _caffe_poly,
    "sigmoid": _caffe_sigmoid,
    "cosine": _caffe_cosine,
}


# --------------------------------------------------------------------------------------------
# Extras shared by both conventions
# --------------------------------------------------------------------------------------------


def cosine_delay(schedule: ScheduleSpec) -> int:
    """Updates by which ``cosine`` starts late: ``warmup - 1`` (0 without warm-up).

    Our composition (as timm's ``CosineLRScheduler`` with ``warmup_prefix=True``): warm up to
    the base rate, then start the cosine, so update ``warmup`` has exactly ``base_lr`` and
    the first cycle counts from there. (AlexeyAB's ``burn_in`` instead replaces ``sgdr``
    during burn-in and SGDR keeps counting from batch 0, like timm's default.) Other
    policies keep their own iteration numbers (steps at the iterations the config names)."""
    return max(schedule.warmup - 1, 0) if schedule.policy == "cosine" else 0


def _cosine_cycles(schedule: ScheduleSpec, last: int) -> _Cycles:
    """Cycles of cosine annealing with warm restarts covering update counts ``0..last``:
    ``T_0 = cycle`` (or ``max_iter``), ``T_{i+1} = int(T_i * cycle_mult)``."""
    length = schedule.cycle or schedule.max_iter
    if length <= 0:
        raise ScheduleError("'cosine' needs a positive cycle length (cycle or max_iter)")
    _check_cycle_mult(schedule)
    return _build_cycles(length, schedule.cycle_mult, last, grow_at_least_one=True)


def _cosine_restarts(schedule: ScheduleSpec, updates: np.ndarray) -> np.ndarray:
    """SGDR (Loshchilov & Hutter): ``lr_min + (lr - lr_min)(1 + cos(pi T_cur / T_i))/2``,
    ``T_cur`` = updates since the last restart (0 at a restart), in double, rounded to
    float32. ``updates`` counts updates already applied (negative values are clamped)."""
    updates = np.maximum(updates, 0)
    cycles = _cosine_cycles(schedule, int(updates.max()))
    starts, lengths = cycles.locate(updates, end_inclusive=False)
    t_cur = (updates - starts).astype(np.float64)
    t_len = lengths.astype(np.float64)
    cosine = np.array(
        [math.cos(math.pi * t / n) for t, n in zip(t_cur.tolist(), t_len.tolist(), strict=True)]
    )
    lr, lr_min = float(np.float32(schedule.base_lr)), float(np.float32(schedule.lr_min))
    return _f32(lr_min + 0.5 * (lr - lr_min) * (1.0 + cosine))


def _apply_extras(schedule: ScheduleSpec, iterations: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """Our warm-up, then the batch-size scaling factor."""
    return _apply_batch_scaling(schedule, iterations, _apply_warmup(schedule, iterations, rates))


def batch_scaling_factors(schedule: ScheduleSpec, iterations: np.ndarray) -> np.ndarray:
    """The batch-size factor of each iteration's update: ``lr_factor`` (B/B0 or sqrt(B/B0)),
    ramped as ``1 + (lr_factor − 1)·u/N`` for the u-th update (u = 1, 2, …) while ``u < N =
    lr_warmup`` (Goyal et al.'s gradual warm-up: from the unscaled rate to the scaled one)."""
    iterations = np.asarray(iterations, dtype=np.int64)
    factor = float(schedule.lr_factor)
    if schedule.lr_warmup <= 0:
        return np.full(iterations.shape, factor)
    updates = iterations - first_iteration(schedule) + 1
    ramp = np.clip(updates, 0, schedule.lr_warmup) / float(schedule.lr_warmup)
    return 1.0 + (factor - 1.0) * ramp


def _apply_batch_scaling(
    schedule: ScheduleSpec, iterations: np.ndarray, rates: np.ndarray
) -> np.ndarray:
    """``rate × factor`` in double, rounded to float32 once (× 1 leaves the rate bit for bit;
    × 2 and × 4 are exact)."""
    if schedule.lr_factor == 1.0:
        return rates
    factors = batch_scaling_factors(schedule, iterations)
    return _f32(rates.astype(np.float64) * factors)


def scaling_note(schedule: ScheduleSpec) -> str | None:
    """One sentence: the reference batch B0, the batch B, the factor and the warm-up;
    ``None`` when no scaling was asked for."""
    if schedule.lr_scaling == "none" and schedule.lr_warmup <= 0:
        return None
    b0, batch, k = schedule.reference_batch, schedule.scaled_batch, float(schedule.lr_factor)
    rule = {
        "none": "none (rates unchanged)",
        "linear": f"linear: × B/B0 = {batch}/{b0}",
        "sqrt": f"sqrt: × sqrt(B/B0) = sqrt({batch}/{b0})",
    }[schedule.lr_scaling]
    text = f"batch-size scaling {rule} = {k:g}; reference batch B0 = {b0}, batch B = {batch}"
    if schedule.lr_warmup > 0:
        text += (
            f"; warm-up over {schedule.lr_warmup} updates from × 1 to × {k:g} "
            "(u-th update: × 1 + (factor − 1)·u/N)"
        )
    return text + "."


def _apply_warmup(schedule: ScheduleSpec, iterations: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """Linear warm-up (ours): the u-th update (u = 1, 2, ...) uses ``rate * u / warmup`` while
    ``u < warmup``, so the first update is never 0; composed after burn-in and the policy.
    For ``cosine`` the policy starts after the warm-up (:func:`cosine_delay`), so ``rate`` is
    the base rate there and the warm-up climbs to it."""
    if schedule.warmup <= 0:
        return rates.astype(np.float32)
    updates = np.asarray(iterations, dtype=np.int64) - first_iteration(schedule) + 1
    factor = np.clip(updates, 0, schedule.warmup) / float(schedule.warmup)
    return _f32(rates.astype(np.float64) * factor)


# --------------------------------------------------------------------------------------------
# Milestones
# --------------------------------------------------------------------------------------------


def _structural_points(
    schedule: ScheduleSpec, first: int, last: int, limit: int | None
) -> tuple[list[tuple[int, str]], int]:
    """Iterations where the schedule changes character (see :func:`milestones`), found
    analytically, and how many step/restart points ``limit`` left out."""
    points: list[tuple[int, str]] = []
    if schedule.convention == "darknet" and 0 < schedule.burn_in <= last:
        points.append((max(schedule.burn_in, first), "burn-in end"))
    if schedule.warmup > 0 and first + schedule.warmup - 1 <= last:
        points.append((first + schedule.warmup - 1, "warm-up end"))
    scaling_ramp = schedule.lr_warmup > 0 and schedule.lr_factor != 1.0
    if scaling_ramp and first + schedule.lr_warmup - 1 <= last:
        points.append((first + schedule.lr_warmup - 1, "scaling warm-up end"))
    policy_start = first
    if schedule.convention == "darknet" and schedule.burn_in > 0:
        policy_start = max(first, schedule.burn_in)
    omitted = 0
    if schedule.policy in PIECEWISE_CONSTANT:
        candidates, omitted = _step_candidates(schedule, policy_start, last, limit)
        points.extend((it, "step") for it in _changed(schedule, candidates, first))
    elif schedule.policy == "sgdr":
        starts, omitted = _sgdr_cycles(schedule, last).restarts(last - 1, limit)
        points.extend((start + 1, "restart") for start in starts if policy_start < start + 1)
    elif schedule.policy == "cosine":
        delay = cosine_delay(schedule)
        span = last - first - delay
        starts, omitted = _cosine_cycles(schedule, max(span, 0)).restarts(span, limit)
        points.extend((first + delay + start, "restart") for start in starts)
    elif schedule.policy == "sigmoid" and first <= schedule.step <= last:
        points.append((schedule.step, "midpoint"))
    return points, omitted


def _step_candidates(
    schedule: ScheduleSpec, after: int, last: int, limit: int | None
) -> tuple[list[int], int]:
    """Iterations in ``(after, last]`` where a piecewise-constant rate may change: multiples
    of the step (darknet ``step``, Caffe ``step``), the ``steps`` thresholds (darknet, compared
    unsigned) or Caffe ``multistep``'s change points. With ``limit``, the first and last
    ``limit`` of them and the number left out."""
    policy = schedule.policy
    if policy == "step":
        step = int(_unsigned(schedule.step)) if schedule.convention == "darknet" else schedule.step
        if step <= 0:
            return [], 0
        multiples = range((after // step + 1) * step, last + 1, step)
        if limit is not None and len(multiples) > 2 * limit:
            return [*multiples[:limit], *multiples[-limit:]], len(multiples) - 2 * limit
        return list(multiples), 0
    if policy == "steps":
        thresholds = np.maximum.accumulate([int(_unsigned(s)) for s in schedule.steps] or [0])
        values = sorted({int(t) for t in thresholds if schedule.steps})
    elif policy == "multistep":
        values = _multistep_change_points(schedule.steps)
    else:
        return [], 0
    return [v for v in values if after < v <= last], 0


def _changed(schedule: ScheduleSpec, candidates: list[int], first: int) -> list[int]:
    """The candidates whose rate differs from the iteration before."""
    its = np.array([c for c in candidates if c > first], dtype=np.int64)
    if its.size == 0:
        return []
    before = lr_points(schedule, its - 1)
    after = lr_points(schedule, its)
    return [int(it) for it, a, b in zip(its, before, after, strict=True) if a != b]
