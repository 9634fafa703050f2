"""Human units for counts: ``5GFLOPs``, ``4.1G``, ``30M``, ``1.5e9``, ``800K params``; and the one way every table
the command line prints shows params and MACs (:func:`params_cell`, :func:`gmacs_cell`).

Magnitudes are decimal (K=1e3, M=1e6, G=1e9, T=1e12), as papers use them. A FLOP here is a MAC
(see docs/flop-conventions.md), so ``5GFLOPs`` and ``5GMACs`` both mean 5e9 multiply-accumulates.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

_SCALE = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_UNIT_WORDS = ("flops", "flop", "macs", "mac", "params", "param", "parameters")
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmgt]?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_count(value: str | int | float) -> int:
    """Parse a count with an optional K/M/G/T suffix and unit word into an exact integer.

    >>> parse_count("5GFLOPs"), parse_count("4.1G"), parse_count("30M"), parse_count(1200)
    (5000000000, 4100000000, 30000000, 1200)
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a count such as 5G or 30M, got {value!r}")
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"a count must be a finite number, got {value!r}")
        number = Decimal(repr(value))
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if not match or (match.group(3) and match.group(3).lower() not in _UNIT_WORDS):
            raise ValueError(
                f"cannot read {value!r} as a count: use a number with an optional K/M/G/T suffix "
                "and unit (FLOPs, MACs, params), e.g. 5GFLOPs, 4.1G, 30M"
            )
        try:
            number = Decimal(match.group(1)) * _SCALE[match.group(2).lower()]
        except (InvalidOperation, ArithmeticError) as exc:  # 1e999999999 overflows the decimal context
            raise ValueError(f"cannot read {_shown(value)} as a count: it is out of range") from exc
    else:
        raise ValueError(f"expected a count such as 5G or 30M, got {type(value).__name__}")
    if number < 0:
        raise ValueError(f"a count must be non-negative, got {_shown(value)}")
    if number >= MAX_COUNT:
        raise ValueError(f"{_shown(value)} is out of range: counts here are below 10^18")
    return int(number.to_integral_value())


MAX_COUNT = Decimal(10) ** 18  # a quintillion MACs or parameters: far beyond any model, far below overflow


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:30] + "..."


def format_count(n: float, unit: str = "", digits: int = 2) -> str:
    """``4_106_941_440`` -> ``4.11G``: the largest decimal magnitude, ``digits`` decimals."""
    for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.{digits}f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


# Every table the command line prints (build, list, sweep, the search summary, profile) shows a count the same way:
# parameters exact, as the presets are checked against the papers to the unit; MACs in a column headed GMACS_HEADER
# with three decimals, so a column never mixes 4.34 with 4.363, nor prints 0G.
GMACS_HEADER = "GMACs"
FFT_GMACS_HEADER = "FFT GMACs"


def params_cell(n: float) -> str:
    """``26341656`` -> ``26,341,656``."""
    return f"{round(n):,}"


def gmacs_cell(n: float, sign: bool = False) -> str:
    """``4_106_941_440`` -> ``4.107`` (GMACs, three decimals); ``sign`` for a difference such as budget slack."""
    return f"{n / 1e9:{'+' if sign else ''}.3f}"


def value_cell(value: float) -> str:
    """An objective's value (a proxy score, an accuracy, ms): four significant digits, trailing zeros kept, so a
    column shows ``218.0`` beside ``218.2``, never ``218``."""
    return f"{value:#.4g}"
