"""C number parsing as darknet does it (``atoi``/``atof``) and float32 rounding.

darknet reads integers with ``atoi`` and floats with ``atof``: the longest numeric prefix is
used and trailing garbage is ignored (``64#x`` reads as 64). We keep that value but report the
garbage; a value with no numeric prefix at all (which C would read as 0) is an error.
"""

from __future__ import annotations

import math
import re
import struct
import unicodedata

# ASCII digits only (re.ASCII): C's atoi/strtod read 0-9, never Unicode digits such as ６ or ٣.
INT_PREFIX = re.compile(r"[+-]?\d+", re.ASCII)
FLOAT_PREFIX = re.compile(
    r"[+-]?(?:"
    r"0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?\d+)?"
    r"|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
    r"|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?"
    r"|[nN][aA][nN]"
    r")",
    re.ASCII,
)
# More digits than any C int/long has: atoi's value is out of range whatever they are (and
# Python refuses int() of more than 4300 digits).
MAX_INT_DIGITS = 20
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def float32(value: float) -> float:
    """Round a Python float to the nearest float32 (C ``(float)``), overflowing to ±inf."""
    try:
        return struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        return math.copysign(math.inf, value)


def c_atoi(text: str) -> tuple[int | None, str]:
    """``atoi``: the leading ``[+-]digits`` of ``text`` and the unread rest; None when there is
    no digit (C would return 0)."""
    match = INT_PREFIX.match(text)
    if match is None:
        return None, text
    literal = match.group()
    digits = literal.lstrip("+-").lstrip("0")
    if len(digits) > MAX_INT_DIGITS:  # out of any C range: a stand-in of the right sign
        value = 10**MAX_INT_DIGITS
        return (-value if literal.startswith("-") else value), text[match.end() :]
    return int(literal), text[match.end() :]


def c_atof(text: str) -> tuple[float | None, str]:
    """``atof`` (``strtod``): the leading decimal/hex/inf/nan number of ``text`` as a double
    and the unread rest; None when there is no number (C would return 0.0)."""
    match = FLOAT_PREFIX.match(text)
    if match is None:
        return None, text
    literal = match.group()
    body = literal.lstrip("+-")
    value = float.fromhex(literal) if body[:2].lower() == "0x" else float(literal)
    return value, text[match.end() :]


def non_ascii_digit(text: str) -> str | None:
    """The first non-ASCII digit in ``text`` (``６``, ``٣``...), or None. Python's ``int`` and
    ``float`` read them as digits; C's ``atoi``/``atof`` stop at them (reading 0)."""
    for char in text:
        if not char.isascii() and unicodedata.digit(char, None) is not None:
            return char
    return None
