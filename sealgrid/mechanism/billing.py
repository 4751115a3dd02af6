"""Settlement and bills in the running market, in integers: the reference the servers match.

The running market settles every household every period from its meter reading and its own
traded energy (SPEC §7), and adds the money to its bill for the billing cycle. Under MPC all
of it must be integer arithmetic on field elements, so the rules are written here once, in
integers, and the secure protocol (:mod:`sealgrid.protocol.billing`) is tested against them:

* **Settled energy.** A bid's traded energy ``q·V/L`` is a fraction on the long side. It is
  settled in whole Wh by one rule (:func:`settled_wh`): the side's ratio ``V/L`` is cut to
  :data:`RATIO_BITS` binary digits, ``c = ⌊2^20·V/L⌋``, and the energy is ``⌊q·c / 2^20⌋``.
  The short side (ratio 1) settles its whole accepted quantity; a long-side bid settles less
  than it traded by under ``1 + q/2^20`` Wh (about 1.02 Wh at 16 kWh). That remainder is
  settled at its supplier's tariffs through the meter like any deviation.
* **Money** in micro-units (10⁻⁶ of the price unit): prices per kWh in milli-units
  (:data:`PRICE_SCALE`, so at most three decimals) times energy in Wh. Positive when the
  household receives it. :func:`period_money` equals
  :func:`sealgrid.mechanism.settlement.household_with_market` (and ``…_without_market``)
  times 10⁶ exactly, for the same settled energy.
* **Bills**: a customer's cycle ``amount`` is what it pays its supplier over the cycle
  (``−Σ money``), rounded half-even to 0.01 of the price unit only once, at the end
  (:func:`amount`).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

from sealgrid.mechanism.bids import Side
from sealgrid.mechanism.settlement import Tariff

#: Binary digits kept of the rationing ratio V/L before a bid's energy is rounded down.
RATIO_BITS = 20
#: Prices and tariffs are held in milli-units of the price unit per kWh.
PRICE_SCALE = 1000
#: Money is held in micro-units (10⁻⁶) of the price unit: milli-price × Wh.
MONEY_SCALE = 10**6
#: Bills are rounded to this fraction of the price unit.
BILL_QUANTUM = Decimal("0.01")


class BillingError(ValueError):
    """Billing inputs break a rule; the message names it."""


def milli(price: Fraction | Decimal | int, what: str = "a price") -> int:
    """A price per kWh in milli-units, exactly.

    Raises:
        BillingError: it has more than three decimals or is negative.
    """
    scaled = Fraction(price) * PRICE_SCALE
    if scaled.denominator != 1:
        raise BillingError(f"{what} needs at most three decimals, not {price}")
    if scaled < 0:
        raise BillingError(f"{what} must not be negative")
    return int(scaled)


@dataclass(frozen=True)
class MilliTariff:
    """A supplier's tariff in milli-units per kWh: retail ``r``, feed-in ``e``, fee ``f``."""

    retail: int
    feed_in: int
    network_fee: int

    @classmethod
    def of(cls, tariff: Tariff) -> MilliTariff:
        """The exact milli-unit form of ``tariff``."""
        return cls(milli(tariff.retail, "the retail price"), milli(tariff.feed_in, "the feed-in"),
                   milli(tariff.network_fee, "the network fee"))


def ratio_fixed(ratio: Fraction) -> int:
    """``⌊2^RATIO_BITS · ratio⌋`` for a rationing ratio ``0 ≤ ratio ≤ 1``."""
    if not 0 <= ratio <= 1:
        raise BillingError("a rationing ratio lies between 0 and 1")
    return (ratio.numerator << RATIO_BITS) // ratio.denominator


def settled_wh(accepted_wh: int, ratio: Fraction) -> int:
    """The settled energy of an accepted quantity on a side rationed by ``ratio`` (whole Wh)."""
    return (accepted_wh * ratio_fixed(ratio)) >> RATIO_BITS


@dataclass(frozen=True)
class PeriodMoney:
    """One household's money for one period, in micro-units; positive when it receives."""

    with_market: int
    without_market: int


def deviation(side: Side, traded_wh: int, import_wh: int, export_wh: int) -> int:
    """The energy a household settles at the tariffs: bought at ``r`` when positive, sold at
    ``e`` when negative (a buyer's import beyond its trade; a seller's sale beyond its export)."""
    return import_wh - traded_wh if side is Side.BUY else traded_wh - export_wh


def period_money(
    side: Side, traded_wh: int, import_wh: int, export_wh: int, price: int, tariff: MilliTariff,
) -> PeriodMoney:
    """SPEC §7 in integers: ``price`` and ``tariff`` in milli-units per kWh, energy in Wh.

    A household that did not trade (``traded_wh = 0``) pays ``r`` per Wh imported and gets
    ``e`` per Wh exported, whatever its side.
    """
    r, e, f = tariff.retail, tariff.feed_in, tariff.network_fee
    without = e * export_wh - r * import_wh
    u = deviation(side, traded_wh, import_wh, export_wh)
    settle_dev = -r * u if u > 0 else -e * u
    if side is Side.BUY:
        with_ = -price * traded_wh + settle_dev + e * export_wh
    else:
        with_ = (price - f) * traded_wh + settle_dev - r * import_wh
    return PeriodMoney(with_, without)


def amount(money_micro: int) -> Decimal:
    """What a household pays over a cycle (``−Σ money``), in the price unit to 0.01."""
    return (Decimal(-money_micro) / MONEY_SCALE).quantize(BILL_QUANTUM, ROUND_HALF_EVEN)


def kwh(wh: int) -> Decimal:
    """Energy in kWh, exactly (Wh / 1000)."""
    return Decimal(wh) / 1000
