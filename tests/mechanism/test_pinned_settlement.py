"""Settlement pinned by worked examples computed by hand from the rule (docs/mechanism.md).

Every expected amount below was worked out on paper from the rule, never read back from the
code: a buyer pays ``p*`` per kWh bought, a seller gets ``p* − f`` per kWh sold; a buyer's
extra import is bought at ``r`` and its unused purchase sold at ``e``; a seller's extra export
is sold at ``e`` and its shortfall bought at ``r``; what a household exports or imports besides
its market side (a buyer's own export, a seller's own import) settles at ``e`` and ``r``.
The deviations are deliberately not 1 kWh, so that ``x · d`` and ``x / d`` differ.
"""

from __future__ import annotations

from fractions import Fraction as F

import pytest

from sealgrid.mechanism.bids import Side
from sealgrid.mechanism.settlement import (
    Account,
    MarketTrade,
    Meter,
    SettlementError,
    Tariff,
    household_with_market,
    household_without_market,
    settle,
)

# retail r = 0.2, feed-in e = 0.04, network fee f = 0.03; price p* = 0.11
S = Tariff(retail=F("0.2"), feed_in=F("0.04"), network_fee=F("0.03"))
T = Tariff(retail=F("0.25"), feed_in=F("0.05"), network_fee=F("0.02"))
P = F("0.11")


def with_market(side: Side, q: str, imp: str, exp: str, tariff: Tariff = S) -> F:
    meter = Meter("h", "S", F(imp), F(exp))
    return household_with_market(meter, tariff, MarketTrade("h", side, F(q)), P)


@pytest.mark.parametrize(("side", "q", "imp", "exp", "expected"), [
    # bought 2 (−0.22); imported 5: the extra 3 kWh at retail (−0.6)
    (Side.BUY, "2", "5", "0", "-0.82"),
    # bought 2 (−0.22); imported 0.5: the unused 1.5 kWh sold at feed-in (+0.06)
    (Side.BUY, "2", "0.5", "0", "-0.16"),
    # bought 2, imported 2; its own export of 3 kWh at feed-in (+0.12)
    (Side.BUY, "2", "2", "3", "-0.10"),
    # bought 2 (−0.22); imported 3.5: 1.5 extra at retail (−0.3); exported 1.25 (+0.05)
    (Side.BUY, "2", "3.5", "1.25", "-0.47"),
    # bought 2 (−0.22); imported 0.25: 1.75 unused at feed-in (+0.07); exported 0.5 (+0.02)
    (Side.BUY, "2", "0.25", "0.5", "-0.13"),
    # bought 1 kWh exactly (−0.11), imported it
    (Side.BUY, "1", "1", "0", "-0.11"),
    # bought 1 (−0.11); imported 3.25: 2.25 extra at retail (−0.45)
    (Side.BUY, "1", "3.25", "0", "-0.56"),
    # sold 2 at 0.11 − 0.03 (+0.16); exported 4.5: the extra 2.5 kWh at feed-in (+0.1)
    (Side.SELL, "2", "0", "4.5", "0.26"),
    # sold 2 (+0.16); exported 0.5: the shortfall 1.5 kWh bought at retail (−0.3)
    (Side.SELL, "2", "0", "0.5", "-0.14"),
    # sold 2, exported 2; its own import of 0.75 kWh at retail (−0.15)
    (Side.SELL, "2", "0.75", "2", "0.01"),
    # sold 2 (+0.16); exported 3.5: 1.5 extra at feed-in (+0.06); imported 2.5 (−0.5)
    (Side.SELL, "2", "2.5", "3.5", "-0.28"),
    # sold 2 (+0.16); exported 0.25: 1.75 short at retail (−0.35); imported 0.5 (−0.1)
    (Side.SELL, "2", "0.5", "0.25", "-0.29"),
    # sold 1 kWh exactly (+0.08), exported it
    (Side.SELL, "1", "0", "1", "0.08"),
    # sold 1 (+0.08); exported 4: 3 extra at feed-in (+0.12)
    (Side.SELL, "1", "0", "4", "0.20"),
])
def test_worked_examples(side: Side, q: str, imp: str, exp: str, expected: str) -> None:
    assert with_market(side, q, imp, exp) == F(expected)


def test_seller_keeps_price_less_fee_at_another_tariff() -> None:
    # r = 0.25, e = 0.05, f = 0.02: sold 1.5 at 0.09 (+0.135); exported 2: 0.5 at e (+0.025);
    # imported 0.25 at r (−0.0625)
    assert with_market(Side.SELL, "1.5", "0.25", "2", T) == F("0.0975")
    # bought 1.5 at 0.11 (−0.165); imported 2.5: 1 at r (−0.25); exported 0.5 at e (+0.025)
    assert with_market(Side.BUY, "1.5", "2.5", "0.5", T) == F("-0.39")


@pytest.mark.parametrize(("imp", "exp", "expected"), [
    ("3", "0", "-0.6"),      # imports at retail
    ("0", "2.5", "0.1"),     # exports at feed-in
    ("1.5", "0.5", "-0.28"),  # both: 0.02 − 0.3
])
def test_without_market_worked_examples(imp: str, exp: str, expected: str) -> None:
    meter = Meter("h", "S", F(imp), F(exp))
    assert household_without_market(meter, S) == F(expected)


@pytest.mark.parametrize("side", [Side.BUY, Side.SELL])
def test_no_trade_or_zero_trade_settles_at_the_tariffs(side: Side) -> None:
    meter = Meter("h", "S", F("1.5"), F("0.5"))
    # 0.04 · 0.5 − 0.2 · 1.5
    assert household_with_market(meter, S, None, P) == F("-0.28")
    assert household_with_market(meter, S, MarketTrade("h", side, F(0)), P) == F("-0.28")


def test_two_suppliers_worked_example() -> None:
    # price 0.12. h1 (supplier S) bought 1.5, imported 2.5, exported 0.5;
    # h2 (supplier T) sold 1.5, exported 2, imported 0.25; h3 (T) did not trade, imported 1.
    meters = [Meter("h1", "S", F("2.5"), F("0.5")), Meter("h2", "T", F("0.25"), F(2)),
              Meter("h3", "T", F(1), F(0))]
    trades = [MarketTrade("h1", Side.BUY, F("1.5")), MarketTrade("h2", Side.SELL, F("1.5"))]
    r = settle(meters, {"S": S, "T": T}, trades, F("0.12"))
    # h1: −0.18 − 0.2·1 + 0.04·0.5 = −0.36; without: 0.02 − 0.5 = −0.48
    # h2: 0.10·1.5 + 0.05·0.5 − 0.25·0.25 = 0.1125; without: 0.1 − 0.0625 = 0.0375
    # h3: −0.25 either way
    assert r.households == (
        Account("h1", F("-0.36"), F("-0.48")),
        Account("h2", F("0.1125"), F("0.0375")),
        Account("h3", F("-0.25"), F("-0.25")),
    )
    # S: collects 0.36 from h1, pays the fee 0.03·3 = 0.09, pays 0.12·1.5 = 0.18 for the
    #    local energy: 0.09; without: 0.48 − 0.09 = 0.39
    # T: pays h2 0.1125 and the fee 0.02·2.25 = 0.045, receives 0.18 for h2's sale;
    #    collects 0.25 from h3 and pays its fee 0.02: 0.2525; without: −0.0375 − 0.045 + 0.23
    assert r.suppliers == (
        Account("S", F("0.09"), F("0.39")),
        Account("T", F("0.2525"), F("0.1475")),
    )
    # fees: 0.09 + 0.045 + 0.02
    assert r.grid_operator == Account("grid_operator", F("0.155"), F("0.155"))
    assert r.households[0].difference == F("0.12")
    assert r.suppliers[1].difference == F("0.105")


def test_supplier_without_customers_has_a_zero_account() -> None:
    r = settle([Meter("a", "S", F(1), F(0))], {"S": S, "T": T})
    assert r.suppliers == (Account("S", F("0.17"), F("0.17")), Account("T", F(0), F(0)))
    assert r.households == (Account("a", F("-0.2"), F("-0.2")),)
    assert r.grid_operator == Account("grid_operator", F("0.03"), F("0.03"))


def test_settle_one_kwh_trade() -> None:
    # a trade of exactly 1 kWh is a trade: buyer −0.11 (vs −0.2), seller +0.08 (vs +0.04)
    meters = [Meter("b", "S", F(1), F(0)), Meter("s", "S", F(0), F(1))]
    trades = [MarketTrade("b", Side.BUY, F(1)), MarketTrade("s", Side.SELL, F(1))]
    r = settle(meters, {"S": S}, trades, P)
    assert r.households == (Account("b", F("-0.11"), F("-0.2")),
                            Account("s", F("0.08"), F("0.04")))
    # S: +0.11 − 0.08 − fees 0.06 − 0.11 + 0.11 = −0.03; without: 0.2 − 0.04 − 0.06 = 0.1
    assert r.suppliers == (Account("S", F("-0.03"), F("0.1")),)


@pytest.mark.parametrize(("meters", "trades", "price", "message"), [
    ([Meter("a", "X", F(1), F(0))], [], None, "supplier 'X' has no tariff"),
    ([Meter("a", "S", F(1), F(0))], [MarketTrade("z", Side.BUY, F(1))], F(1),
     "household 'z' traded but has no meter reading"),
    ([Meter("a", "S", F(1), F(0)), Meter("a", "S", F(1), F(0))], [], None,
     "household 'a' has two meter readings"),
    ([Meter("a", "S", F(1), F(0)), Meter("b", "S", F(0), F(1))],
     [MarketTrade("a", Side.BUY, F(1)), MarketTrade("a", Side.BUY, F(1))], F(1),
     "household 'a' has two trades"),
    ([Meter("a", "S", F(1), F(0))], [MarketTrade("a", Side.BUY, F(1))], None,
     "trades need the clearing price"),
    ([Meter("a", "S", F(1), F(0)), Meter("b", "S", F(0), F(1))],
     [MarketTrade("a", Side.BUY, F(1)), MarketTrade("b", Side.SELL, F("0.5"))], F(1),
     "energy bought on the market must equal energy sold"),
    ([Meter("a", "S", F(1), F(0)), Meter("b", "S", F(0), F(1))],
     [MarketTrade("a", Side.SELL, F(1))], F(1),
     "energy bought on the market must equal energy sold"),
])
def test_refusals_whole_messages(
    meters: list[Meter], trades: list[MarketTrade], price: F | None, message: str
) -> None:
    with pytest.raises(SettlementError) as info:
        settle(meters, {"S": S}, trades, price)
    assert str(info.value) == message


def test_trades_with_a_price_of_zero_are_accepted() -> None:
    # a price of 0 is a price, not a missing one
    meters = [Meter("b", "S", F(2), F(0)), Meter("s", "S", F(0), F(2))]
    trades = [MarketTrade("b", Side.BUY, F(2)), MarketTrade("s", Side.SELL, F(2))]
    r = settle(meters, {"S": S}, trades, F(0))
    # buyer pays nothing for 2 kWh; seller gets 0 − 0.03 per kWh sold
    assert [a.with_market for a in r.households] == [F(0), F("-0.06")]


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Tariff(F("-0.2"), F("0.04"), F("0.03")), "tariffs must not be negative"),
    (lambda: Tariff(F("0.2"), F("-0.04"), F("0.03")), "tariffs must not be negative"),
    (lambda: Tariff(F("0.2"), F("0.04"), F("-0.03")), "tariffs must not be negative"),
    (lambda: Tariff(F("0.2"), F("0.04"), F("0.21")),
     "the network fee must not exceed the retail price"),
    (lambda: Meter("a", "S", F(-1), F(0)), "meter readings must not be negative"),
    (lambda: Meter("a", "S", F(0), F("-0.001")), "meter readings must not be negative"),
    (lambda: MarketTrade("a", Side.BUY, F("-0.5")), "traded energy must not be negative"),
])
def test_input_refusals_whole_messages(make: object, message: str) -> None:
    with pytest.raises(SettlementError) as info:
        make()  # type: ignore[operator]
    assert str(info.value) == message


def test_input_limits_are_inclusive() -> None:
    assert Tariff(F(0), F(0), F(0)).retail == 0
    assert Tariff(F("0.2"), F("0.04"), F("0.2")).network_fee == F("0.2")  # fee = retail is fine
    assert Meter("a", "S", F(0), F(0)).import_kwh == 0
    assert MarketTrade("a", Side.SELL, F(0)).traded_kwh == 0


def test_settlement_error_is_a_value_error() -> None:
    assert issubclass(SettlementError, ValueError)


def test_trades_rounded_to_whole_wh_are_settled_and_a_wh_per_trade_is_not() -> None:
    """The running market's long side is rounded down to whole Wh: under 1 Wh per trade apart
    is settled; 1 Wh per trade apart is refused."""
    meters = [Meter("a", "S", F(1), F(0)), Meter("b", "S", F(0), F(1)),
              Meter("c", "S", F(0), F(1))]
    rounded = [MarketTrade("a", Side.BUY, F("1.000")), MarketTrade("b", Side.SELL, F("0.500")),
               MarketTrade("c", Side.SELL, F("0.499"))]  # 1 Wh short over three trades
    assert len(settle(meters, {"S": S}, rounded, F(1)).households) == 3
    apart = [MarketTrade("a", Side.BUY, F("1.000")), MarketTrade("b", Side.SELL, F("0.500")),
             MarketTrade("c", Side.SELL, F("0.497"))]  # 3 Wh: a whole Wh per trade
    with pytest.raises(SettlementError, match="must equal energy sold"):
        settle(meters, {"S": S}, apart, F(1))
