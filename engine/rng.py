"""Bit-exact emulation of glibc ``rand()`` and darknet's ``rand_uniform``/``rand_normal``.

darknet draws every random number it needs (weight initialisation, dropout masks, the
``random`` learning-rate policy) from the C library's ``rand()``. On Linux that is glibc's
TYPE_3 additive lagged-Fibonacci generator (degree 31, separation 3, ``RAND_MAX = 2^31 - 1``),
which :class:`GlibcRand` reproduces exactly, one draw at a time or in NumPy bulk; the bulk path
is bit-identical to the scalar path. :class:`DarknetRandom` adds darknet's
``utils.c:rand_uniform`` and ``utils.c:rand_normal`` (Box–Muller with a static spare) on top of
one ``GlibcRand`` stream. See ``spec/darknet.md`` sections 9.1–9.3.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

RAND_MAX = 2147483647
_MASK32 = 0xFFFFFFFF
_DEGREE = 31  # glibc TYPE_3: r[i] = r[i-31] + r[i-3] (mod 2^32)
_SEPARATION = 3
_DISCARD = 310  # glibc throws away the first 310 sums after seeding
_BLOCK = 4096  # outputs produced per matrix product in the bulk path

# darknet's -Ofast build turns `rand() / (double)RAND_MAX` into a reciprocal multiplication
# (spec 9.3); TWO_PI is the *float* literal 6.2831855f.
_INV_RAND_MAX = 4.656612875245797e-10
_TWO_PI_OVER_RAND_MAX = 2.9258362413155767e-09
_RAND1_AT_ZERO = -2.0 * math.log(1e-100)


class RandomStateError(ValueError):
    """A state given to ``set_state`` does not describe a generator."""


def _seed_table(seed: int) -> list[int]:
    """glibc ``srandom_r``: the 31-word table after seeding, before the discarded sums.

    ``r[0] = seed`` (as a signed 32-bit word; 0 becomes 1), then
    ``r[i] = 16807 * r[i-1] mod (2^31 - 1)`` by Schrage's method, stored as 32-bit words.
    """
    word = seed & _MASK32
    word = word - (1 << 32) if word >= 1 << 31 else word
    if word == 0:
        word = 1
    table = [word & _MASK32]
    previous = word
    for _ in range(1, _DEGREE):
        hi = abs(previous) // 127773 * (1 if previous >= 0 else -1)  # C truncating division
        lo = previous - hi * 127773
        previous = 16807 * lo - 2836 * hi
        if previous < 0:
            previous += 2147483647
        table.append(previous & _MASK32)
    return table


@lru_cache(maxsize=4)
def _block_matrix(length: int) -> np.ndarray:
    """Coefficients (mod 2^32, as uint64) expressing the next ``length`` words of the
    recurrence ``r[i] = r[i-31] + r[i-3]`` as linear combinations of the last 31 words.

    Row ``j`` gives ``r[n+j]`` from ``(r[n-31], ..., r[n-1])``. Products wrap modulo 2^64 in
    uint64, which keeps every sum correct modulo 2^32.
    """
    rows = [np.eye(_DEGREE, dtype=np.uint64)[k] for k in range(_DEGREE)]
    for j in range(length):
        n = _DEGREE + j
        rows.append((rows[n - _DEGREE] + rows[n - _SEPARATION]) & np.uint64(_MASK32))
    return np.stack(rows[_DEGREE:])


class GlibcRand:
    """glibc ``srand(seed)`` / ``rand()``, exactly (spec 9.1).

    The state is the last 31 words ``r[n-31..n-1]`` of the sequence
    ``r[i] = (r[i-31] + r[i-3]) mod 2^32``; ``rand()`` returns ``r[n] >> 1`` and advances.
    A fresh generator behaves as glibc does before any ``srand`` call (seed 1).
    """

    def __init__(self, seed: int = 1) -> None:
        self._words: list[int] = []
        self.seed(seed)

    def seed(self, seed: int) -> None:
        """glibc ``srand(seed)``: seed taken as a 32-bit word; then 310 sums are discarded."""
        words = _seed_table(seed)
        words += words[:_SEPARATION]  # r[31..33] = r[0..2]
        for _ in range(_DISCARD):
            words.append((words[-_DEGREE] + words[-_SEPARATION]) & _MASK32)
        self._words = words[-_DEGREE:]

    def rand(self) -> int:
        """One ``rand()`` draw, an int in ``[0, RAND_MAX]``."""
        words = self._words
        word = (words[0] + words[_DEGREE - _SEPARATION]) & _MASK32
        del words[0]
        words.append(word)
        return word >> 1

    def rand_array(self, n: int) -> np.ndarray:
        """The next ``n`` ``rand()`` draws as int64, identical to ``n`` calls of :meth:`rand`."""
        if n < 0:
            raise ValueError(f"cannot draw a negative number of values ({n})")
        if n < 64:
            return np.array([self.rand() for _ in range(n)], dtype=np.int64)
        matrix = _block_matrix(_BLOCK)
        words = np.empty(_DEGREE + n, dtype=np.uint64)  # the last 31 state words, then outputs
        words[:_DEGREE] = self._words
        mask = np.uint64(_MASK32)
        for start in range(0, n, _BLOCK):
            count = min(_BLOCK, n - start)
            block = (matrix[:count] @ words[start : start + _DEGREE]) & mask
            words[_DEGREE + start : _DEGREE + start + count] = block
        self._words = [int(w) for w in words[-_DEGREE:]]
        out = words[_DEGREE:]
        return (out >> np.uint64(1)).astype(np.int64)

    def get_state(self) -> tuple[int, ...]:
        """The generator state: the last 31 32-bit words, oldest first (JSON-serialisable)."""
        return tuple(self._words)

    def set_state(self, state) -> None:
        """Restore a state from :meth:`get_state`."""
        words = [int(w) for w in state]
        if len(words) != _DEGREE or any(w < 0 or w > _MASK32 for w in words):
            raise RandomStateError("a glibc rand() state is 31 unsigned 32-bit words")
        self._words = words

    def copy(self) -> GlibcRand:
        """An independent generator in the same state."""
        clone = GlibcRand.__new__(GlibcRand)
        clone._words = list(self._words)
        return clone


def _uniform_from_draws(draws: np.ndarray, low: float, high: float) -> np.ndarray:
    """darknet ``rand_uniform`` on given ``rand()`` draws, all in float32:
    ``float(r) / float(RAND_MAX)`` (``float(RAND_MAX)`` is exactly 2^31) times
    ``(high - low)``, plus ``low``; every operation rounded to float32."""
    if high < low:
        low, high = high, low
    low32, high32 = np.float32(low), np.float32(high)
    unit = draws.astype(np.float32) / np.float32(2147483648.0)
    return (unit * (high32 - low32)) + low32


class DarknetRandom:
    """darknet's random helpers on one glibc stream, holding ``rand_normal``'s static spare.

    In darknet the spare is one static variable shared by every caller; keep one
    ``DarknetRandom`` per emulated process to reproduce the order of draws (spec 9.5).
    """

    def __init__(self, seed: int = 1, *, glibc: GlibcRand | None = None) -> None:
        self.glibc = glibc if glibc is not None else GlibcRand(seed)
        self._spare: tuple[float, float] | None = None  # (rand1, rand2) when pending

    def srand(self, seed: int) -> None:
        """libc ``srand(seed)``. Like the C library, this does not clear the normal spare."""
        self.glibc.seed(seed)

    def rand_uniform(self, low: float, high: float) -> float:
        """``utils.c:rand_uniform``: one ``rand()`` draw, float32 arithmetic (spec 9.2)."""
        draw = np.array([self.glibc.rand()], dtype=np.int64)
        return float(_uniform_from_draws(draw, low, high)[0])

    def rand_uniform_array(self, n: int, low: float, high: float) -> np.ndarray:
        """``n`` calls of :meth:`rand_uniform` as a float32 array, bit-identical."""
        return _uniform_from_draws(self.glibc.rand_array(n), low, high)

    def rand_normal(self) -> float:
        """``utils.c:rand_normal``: Box–Muller in double, rounded to float32 (spec 9.3).

        Without a spare: ``u1 = r1 / RAND_MAX`` (at least 1e-100), ``rand1 = -2 ln u1``,
        ``rand2 = r2 / RAND_MAX * TWO_PI`` with float ``TWO_PI``; return
        ``sqrt(rand1) cos(rand2)`` and keep the spare ``sqrt(rand1) sin(rand2)``.
        darknet quirk: the spare is static, shared by every call site.
        """
        if self._spare is not None:
            rand1, rand2 = self._spare
            self._spare = None
            return float(np.float32(math.sqrt(rand1) * math.sin(rand2)))
        rand1, rand2 = _box_muller_pair(self.glibc.rand(), self.glibc.rand())
        self._spare = (rand1, rand2)
        return float(np.float32(math.sqrt(rand1) * math.cos(rand2)))

    def rand_normal_array(self, n: int) -> np.ndarray:
        """``n`` calls of :meth:`rand_normal` as a float32 array, bit-identical (spare
        included). Uses the C library's ``log``/``sqrt``/``sin``/``cos`` through ``math``,
        never NumPy's vectorised kernels, which may round differently."""
        out = np.empty(n, dtype=np.float64)
        pos = 0
        if n and self._spare is not None:
            out[0] = self.rand_normal()
            pos = 1
        pairs = (n - pos) // 2
        draws = self.glibc.rand_array(2 * pairs).tolist()
        sqrt, log, cos, sin = math.sqrt, math.log, math.cos, math.sin
        values = out[pos : pos + 2 * pairs]
        flat: list[float] = []
        for r1, r2 in zip(draws[0::2], draws[1::2], strict=True):
            radius = sqrt(-2.0 * log(r1 * _INV_RAND_MAX) if r1 else _RAND1_AT_ZERO)
            angle = r2 * _TWO_PI_OVER_RAND_MAX
            flat.append(radius * cos(angle))
            flat.append(radius * sin(angle))
        values[:] = flat
        if pos + 2 * pairs < n:
            out[n - 1] = self.rand_normal()
        return out.astype(np.float32)

    def get_state(self) -> dict:
        """JSON-serialisable state: the glibc words and the pending spare (or None)."""
        spare = None if self._spare is None else list(self._spare)
        return {"glibc": list(self.glibc.get_state()), "normal_spare": spare}

    def set_state(self, state: dict) -> None:
        """Restore a state from :meth:`get_state`."""
        try:
            self.glibc.set_state(state["glibc"])
            spare = state["normal_spare"]
            self._spare = None if spare is None else (float(spare[0]), float(spare[1]))
        except (KeyError, TypeError, IndexError) as exc:
            raise RandomStateError(f"not a DarknetRandom state: {exc}") from None


def _box_muller_pair(r1: int, r2: int) -> tuple[float, float]:
    """``(rand1, rand2)`` of darknet's Box–Muller from two draws, as the -Ofast binary does:
    ``u1 = r1 * (1/RAND_MAX)`` clamped to 1e-100, ``rand1 = -2 ln u1``,
    ``rand2 = r2 * (TWO_PI/RAND_MAX)``."""
    u1 = r1 * _INV_RAND_MAX
    if u1 < 1e-100:
        u1 = 1e-100
    return -2.0 * math.log(u1), r2 * _TWO_PI_OVER_RAND_MAX
