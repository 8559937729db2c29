"""Exact money: integer units of 1e-8 USD inside, Decimal outside, plain JSON numbers on the wire."""

from __future__ import annotations

import json
import re
from decimal import Decimal

# Every catalog price has at most 8 decimal places, so tokens x price is an integer number of units and
# every sum stays exact. 8 places also keep totals up to $10M within a float's 15 significant digits.
PLACES = 8
UNITS_PER_USD = 10**PLACES
_QUANTUM = Decimal(1).scaleb(-PLACES)


def price_units(price: str) -> int:
    """'0.0000025' -> units per token; refuses prices finer than the unit."""
    units = Decimal(price) * UNITS_PER_USD
    if units != units.to_integral_value():
        raise ValueError(f"price {price} has more than {PLACES} decimal places")
    return int(units)


def to_decimal(units: int) -> Decimal:
    if units % UNITS_PER_USD == 0:
        return Decimal(units // UNITS_PER_USD)  # whole dollars: "200", not normalize()'s "2E+2"
    return (Decimal(units) * _QUANTUM).normalize()


def usd_units(dollars: int | str | Decimal) -> int:
    return int(Decimal(dollars) * UNITS_PER_USD)


_MARK = "@@decimal@@"
_MARKED = re.compile(r'"' + _MARK + r'(-?[0-9.]+)"')


def _mark_decimal(value):
    if isinstance(value, Decimal):
        return _MARK + format(value, "f")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(obj) -> bytes:
    """JSON with Decimals written as bare numbers (no float rounding on the way out)."""
    text = json.dumps(obj, default=_mark_decimal, separators=(",", ":"))
    return _MARKED.sub(r"\1", text).encode()
