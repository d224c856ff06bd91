"""C number parsing as darknet does it (``atoi``/``atof``) and float32 rounding.

darknet reads integers with ``atoi`` and floats with ``atof``: the longest numeric prefix is
used and trailing garbage is ignored (``64#x`` reads as 64). We keep that value but report the
garbage; a value with no numeric prefix at all (which C would read as 0) is an error.
"""

from __future__ import annotations

import math
import re
import struct

INT_PREFIX = re.compile(r"[+-]?\d+")
FLOAT_PREFIX = re.compile(
    r"[+-]?(?:"
    r"0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?\d+)?"
    r"|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
    r"|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?"
    r"|[nN][aA][nN]"
    r")"
)
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
    return int(match.group()), text[match.end() :]


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
