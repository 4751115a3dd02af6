"""The market's units, declared once: prices in cents per kWh, money in cents, energy in kWh.

Inside, energy is integer Wh and prices are integer ticks (:mod:`sealgrid.mechanism.grid`);
these are the units at the edges — every command's options, every CSV column and every JSON
field that carries a unit. Cents per kWh is the papers' unit (xie2020's grid prices of 80 and
120, the running market's price grid). PEM's Stackelberg price is not unit-free (it scales
with the square root of the retail price), so one unit for every command is part of the
market, not a matter of display.

Before this declaration, ``clear`` and ``settle`` read prices in currency per kWh (0.04–0.20);
:func:`from_currency` converts that older spelling, which is accepted for one release with a
warning (:func:`deprecated`).
"""

from __future__ import annotations

import warnings
from decimal import Decimal
from fractions import Fraction

#: The unit of every price at the edges.
PRICE_UNIT = "ct/kWh"
#: The unit of every amount of money at the edges.
MONEY_UNIT = "ct"
#: The unit of every amount of energy at the edges.
ENERGY_UNIT = "kWh"
#: Cents per currency unit: the older spelling of prices (currency per kWh) times this.
CENTS_PER_CURRENCY = 100
#: The ``"units"`` object of every JSON document the commands print.
UNITS: dict[str, str] = {"price": PRICE_UNIT, "money": MONEY_UNIT, "energy": ENERGY_UNIT}


class UnitWarning(UserWarning):
    """A value's unit is likely not the one meant (shown to users as one line)."""


class OldUnitWarning(UnitWarning, FutureWarning):
    """A value was given in the older spelling (currency per kWh); accepted for one release."""


#: Below this many ¢/kWh a retail price is more likely currency per kWh than cents (no
#: household tariff is that low; the papers use 120).
IMPLAUSIBLE_RETAIL_CT = 5


def check_retail(retail: Decimal | Fraction, what: str = "the retail price") -> None:
    """Warn when a retail price in ¢/kWh looks like currency per kWh (PEM's price scales
    with its square root, so the unit changes the market, not only the display)."""
    if 0 < retail < IMPLAUSIBLE_RETAIL_CT:
        warnings.warn(
            f"{what} is {exact(retail)} {PRICE_UNIT}: prices are in cents per kWh (120 for "
            "1.20 per kWh), and PEM's price depends on the unit, not only its display",
            UnitWarning,
            stacklevel=3,
        )


def from_currency(value: Decimal) -> Decimal:
    """A price (or amount) in currency units, exactly in cents."""
    return value * CENTS_PER_CURRENCY


def to_currency(cents: Fraction | Decimal | int) -> Fraction:
    """An amount in cents, exactly in currency units (for the older JSON fields)."""
    return Fraction(cents) / CENTS_PER_CURRENCY


def deprecated(old: str, new: str) -> None:
    """Warn that ``old`` (in currency per kWh) is accepted for one release; ``new`` replaces it."""
    warnings.warn(
        f"{old} is in currency per kWh, the older spelling, accepted until the next release; "
        f"use {new} in {PRICE_UNIT}",
        OldUnitWarning,
        stacklevel=3,
    )


def exact(value: Fraction | Decimal | int, places: int = 12) -> str:
    """An exact decimal string of ``value`` (``"97.826"``, ``"-3"``).

    A value whose decimal expansion does not end (a third of a Wh) is cut, half-even, to
    ``places`` decimals; every value the market settles ends well before that.
    """
    f = Fraction(value)
    d = 0
    while d < places and (f * 10**d).denominator != 1:
        d += 1
    scaled = f * 10**d
    n = scaled.numerator // scaled.denominator
    if scaled.denominator != 1:  # round half-even at the last place
        rest = scaled - n
        n += 1 if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and n % 2) else 0
    text = format(Decimal(n).scaleb(-d), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
