"""The market's price grid and units: pure integer arithmetic, no I/O, no cryptography.

Energy is held as integer watt-hours (Wh) and prices as integer ticks on the grid
``floor, floor + tick, …, ceiling`` (docs/mechanism.md). Decimal values appear only at the edges,
where a household writes kWh and currency per kWh.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction

WH_PER_KWH = 1000


def parse_decimal(text: str | int | float | Decimal) -> Decimal:
    """Parse a decimal number exactly (floats go through their shortest repr).

    Raises:
        ValueError: the text is not a finite decimal number.
    """
    if isinstance(text, Decimal):
        value = text
    elif isinstance(text, float):  # numpy's float64 too, whose repr names its type
        value = Decimal(repr(float(text)))
    else:
        try:
            value = Decimal(str(text).strip())
        except InvalidOperation:
            raise ValueError(f"{text!r} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"{text!r} is not a finite number")
    return value


def kwh_to_wh_exact(kwh: Decimal) -> Fraction:
    """Return the exact energy in Wh (a Fraction: whole only if the kWh had ≤ 3 decimals)."""
    return Fraction(kwh) * WH_PER_KWH


@dataclass(frozen=True)
class PriceGrid:
    """The uniform price grid ``floor, floor + tick, …, ceiling`` (currency per kWh).

    Levels are numbered ``0 … levels - 1``; level ``k`` is the price ``floor + k·tick``.
    """

    floor: Decimal
    ceiling: Decimal
    tick: Decimal

    def __post_init__(self) -> None:
        if self.tick <= 0:
            raise ValueError("the price tick must be positive")
        if self.ceiling < self.floor:
            raise ValueError("the price ceiling must not be below the floor")
        span = (self.ceiling - self.floor) / self.tick
        if span != span.to_integral_value():
            raise ValueError("ceiling - floor must be a whole number of ticks")

    @classmethod
    def from_values(
        cls,
        floor: str | float | Decimal,
        ceiling: str | float | Decimal,
        tick: str | float | Decimal,
    ) -> PriceGrid:
        """Build a grid from decimal strings or numbers (floats through their repr)."""
        return cls(parse_decimal(floor), parse_decimal(ceiling), parse_decimal(tick))

    @property
    def levels(self) -> int:
        """Number of price levels on the grid."""
        return int((self.ceiling - self.floor) / self.tick) + 1

    def price(self, level: int) -> Decimal:
        """Return the price (currency per kWh) of grid level ``level``."""
        if not 0 <= level < self.levels:
            raise IndexError(f"level {level} is outside the grid 0..{self.levels - 1}")
        return self.floor + self.tick * level

    def level_of(self, price: Decimal) -> Fraction:
        """Return the exact (possibly fractional) grid position of ``price``."""
        return Fraction(price - self.floor) / Fraction(self.tick)
