"""Settlement of one trading period (paper mustafa2016 §III-C/III-D). Pure, exact.

Money is a :class:`~fractions.Fraction` in currency, positive when the party receives it.
Each supplier has a retail price ``r`` (per kWh imported, network fee included), a feed-in
tariff ``e`` (per kWh exported, fee excluded) and the network fee ``f`` it pays the grid
operator for every kWh its customers import or export.

Without the market a household pays ``r`` per kWh imported and gets ``e`` per kWh exported.
With it, a buyer pays ``p*`` per kWh bought and a seller gets ``p* − f`` per kWh sold, through
the suppliers (the seller's supplier keeps ``f``). Metered deviations settle at the tariffs:
a buyer importing more than it bought buys the rest at ``r``, less sells the surplus at ``e``;
a seller exporting more than it sold sells the rest at ``e``, less buys the shortfall at ``r``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from sealgrid.mechanism.bids import Side


class SettlementError(ValueError):
    """Settlement inputs contradict each other; the message names the rule."""


@dataclass(frozen=True)
class Tariff:
    """A supplier's prices per kWh: retail ``r``, feed-in ``e``, network fee ``f``."""

    retail: Fraction
    feed_in: Fraction
    network_fee: Fraction

    def __post_init__(self) -> None:
        if min(self.retail, self.feed_in, self.network_fee) < 0:
            raise SettlementError("tariffs must not be negative")
        if self.network_fee > self.retail:
            raise SettlementError("the network fee must not exceed the retail price")


@dataclass(frozen=True)
class Meter:
    """One household's metered energy for the period (kWh, exact) and its supplier."""

    household: str
    supplier: str
    import_kwh: Fraction
    export_kwh: Fraction

    def __post_init__(self) -> None:
        if self.import_kwh < 0 or self.export_kwh < 0:
            raise SettlementError("meter readings must not be negative")


@dataclass(frozen=True)
class MarketTrade:
    """A household's traded energy on the local market (kWh, exact)."""

    household: str
    side: Side
    traded_kwh: Fraction

    def __post_init__(self) -> None:
        if self.traded_kwh < 0:
            raise SettlementError("traded energy must not be negative")


@dataclass(frozen=True)
class Account:
    """Money for one party with and without the market; ``difference = with − without``."""

    party: str
    with_market: Fraction
    without_market: Fraction

    @property
    def difference(self) -> Fraction:
        """How much better (positive) or worse off the party is with the market."""
        return self.with_market - self.without_market


@dataclass(frozen=True)
class Settlement:
    """Accounts for every household, every supplier and the grid operator (DSO/TSO)."""

    households: tuple[Account, ...]
    suppliers: tuple[Account, ...]
    grid_operator: Account


def household_without_market(meter: Meter, tariff: Tariff) -> Fraction:
    """A household's money without the market: exports at ``e``, imports at ``r``."""
    return tariff.feed_in * meter.export_kwh - tariff.retail * meter.import_kwh


def household_with_market(
    meter: Meter, tariff: Tariff, trade: MarketTrade | None, price: Fraction
) -> Fraction:
    """A household's money with the market, deviations settled at its supplier's tariffs."""
    r, e, f = tariff.retail, tariff.feed_in, tariff.network_fee
    imp, exp = meter.import_kwh, meter.export_kwh
    if trade is None or trade.traded_kwh == 0:
        return household_without_market(meter, tariff)
    q = trade.traded_kwh
    if trade.side is Side.BUY:
        market = -price * q
        deviation = -r * (imp - q) if imp >= q else e * (q - imp)
        return market + deviation + e * exp
    market = (price - f) * q
    deviation = e * (exp - q) if exp >= q else -r * (q - exp)
    return market + deviation - r * imp


def settle(
    meters: Sequence[Meter],
    tariffs: Mapping[str, Tariff],
    trades: Sequence[MarketTrade] = (),
    price: Fraction | None = None,
) -> Settlement:
    """Settle one period for every party, with and without the market.

    Trades may be the exact amounts of the clearing (bought = sold) or the running market's
    settled whole Wh (each long-side trade rounded down: bought and sold then differ by less
    than 1 Wh per trade); anything further apart is refused.

    Raises:
        SettlementError: a supplier without a tariff, a trade without a meter, a household
            metered or traded twice, trades without a price, or bought and sold energy
            further apart than the rounding to whole Wh allows.
    """
    by_household: dict[str, Meter] = {}
    for m in meters:
        if m.household in by_household:
            raise SettlementError(f"household {m.household!r} has two meter readings")
        if m.supplier not in tariffs:
            raise SettlementError(f"supplier {m.supplier!r} has no tariff")
        by_household[m.household] = m
    traded: dict[str, MarketTrade] = {}
    for t in trades:
        if t.household not in by_household:
            raise SettlementError(f"household {t.household!r} traded but has no meter reading")
        if t.household in traded:
            raise SettlementError(f"household {t.household!r} has two trades")
        traded[t.household] = t
    if traded and price is None:
        raise SettlementError("trades need the clearing price")
    p = price if price is not None else Fraction(0)
    bought = sum((t.traded_kwh for t in trades if t.side is Side.BUY), Fraction(0))
    sold = sum((t.traded_kwh for t in trades if t.side is Side.SELL), Fraction(0))
    # The running market settles each long-side trade rounded down to whole Wh
    # (mechanism.billing.settled_wh): the totals may then differ by under 1 Wh per trade.
    if bought != sold and abs(bought - sold) >= Fraction(len(trades), 1000):
        raise SettlementError("energy bought on the market must equal energy sold")

    households = []
    supplier_with: dict[str, Fraction] = {name: Fraction(0) for name in tariffs}
    supplier_without: dict[str, Fraction] = {name: Fraction(0) for name in tariffs}
    fees = Fraction(0)
    for m in meters:
        tariff = tariffs[m.supplier]
        trade = traded.get(m.household)
        without = household_without_market(m, tariff)
        with_ = household_with_market(m, tariff, trade, p)
        households.append(Account(m.household, with_, without))
        fee = tariff.network_fee * (m.import_kwh + m.export_kwh)
        fees += fee
        # The supplier collects what its customer pays, pays what it receives, pays the fee,
        # and settles the local trades with the market: out p* per kWh its customer bought,
        # in p* per kWh its customer sold.
        flow = Fraction(0)
        if trade is not None:
            flow = p * trade.traded_kwh * (1 if trade.side is Side.SELL else -1)
        supplier_with[m.supplier] += -with_ - fee + flow
        supplier_without[m.supplier] += -without - fee
    suppliers = tuple(Account(s, supplier_with[s], supplier_without[s]) for s in tariffs)
    return Settlement(tuple(households), suppliers, Account("grid_operator", fees, fees))
