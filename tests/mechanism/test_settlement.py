"""Settlement against paper mustafa2016 §III-D (docs/mechanism.md)."""

from __future__ import annotations

from fractions import Fraction as F

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealgrid.mechanism.bids import Side
from sealgrid.mechanism.settlement import (
    MarketTrade,
    Meter,
    SettlementError,
    Tariff,
    settle,
)

S = Tariff(retail=F("0.2"), feed_in=F("0.04"), network_fee=F("0.03"))


def test_paper_worked_example_table_1() -> None:
    meters = [Meter("U1", "S", F(0), F(2)), Meter("U2", "S", F(4), F(0))]
    trades = [MarketTrade("U1", Side.SELL, F(2)), MarketTrade("U2", Side.BUY, F(2))]
    result = settle(meters, {"S": S}, trades, F("0.11"))
    u1, u2 = result.households
    (supplier,) = result.suppliers
    assert (u1.without_market, u1.with_market) == (F("0.08"), F("0.16"))
    assert (u2.without_market, u2.with_market) == (F("-0.80"), F("-0.62"))
    assert (supplier.without_market, supplier.with_market) == (F("0.54"), F("0.28"))
    assert result.grid_operator.with_market == result.grid_operator.without_market == F("0.18")
    # Table I's percentages
    assert u1.difference / abs(u1.without_market) == F(1)
    assert u2.difference / abs(u2.without_market) == F("0.225")
    assert supplier.difference / supplier.without_market == F(-26, 54)


@pytest.mark.parametrize(("imported", "expected"), [
    # bought 2 at 0.11; imported 3: the extra 1 at retail; imported 1: the surplus 1 at feed-in
    (F(3), -F("0.22") - F("0.2")),
    (F(1), -F("0.22") + F("0.04")),
    (F(2), -F("0.22")),
])
def test_buyer_deviations(imported: F, expected: F) -> None:
    meters = [Meter("b", "S", imported, F(0)), Meter("s", "S", F(0), F(2))]
    trades = [MarketTrade("b", Side.BUY, F(2)), MarketTrade("s", Side.SELL, F(2))]
    assert settle(meters, {"S": S}, trades, F("0.11")).households[0].with_market == expected


@pytest.mark.parametrize(("exported", "expected"), [
    # sold 2 at 0.11 − 0.03; exported 3: the rest at feed-in; exported 1: shortfall at retail
    (F(3), F("0.16") + F("0.04")),
    (F(1), F("0.16") - F("0.2")),
])
def test_seller_deviations(exported: F, expected: F) -> None:
    meters = [Meter("s", "S", F(0), exported), Meter("b", "S", F(2), F(0))]
    trades = [MarketTrade("s", Side.SELL, F(2)), MarketTrade("b", Side.BUY, F(2))]
    assert settle(meters, {"S": S}, trades, F("0.11")).households[0].with_market == expected


amounts = st.fractions(min_value=0, max_value=10, max_denominator=1000)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(amounts, amounts, st.sampled_from(["S", "T"])), min_size=2,
                max_size=8),
       st.fractions(min_value=F("0.04"), max_value=F("0.2"), max_denominator=1000),
       st.fractions(min_value=0, max_value=1, max_denominator=100))
def test_money_is_conserved_and_operator_unaffected(
    rows: list[tuple[F, F, str]], price: F, share: F
) -> None:
    tariffs = {"S": S, "T": Tariff(F("0.25"), F("0.05"), F("0.02"))}
    meters = [Meter(f"h{i}", sup, imp, exp) for i, (imp, exp, sup) in enumerate(rows)]
    # h0 sells, h1 buys the same amount
    q = share * 3
    trades = [MarketTrade("h0", Side.SELL, q), MarketTrade("h1", Side.BUY, q)]
    r = settle(meters, tariffs, trades, price)
    everyone = r.households + r.suppliers + (r.grid_operator,)
    assert sum(a.with_market for a in everyone) == 0
    assert sum(a.without_market for a in everyone) == 0
    assert r.grid_operator.difference == 0
    # households that did not trade are unaffected
    assert all(a.difference == 0 for a in r.households[2:])


def test_no_market_means_no_difference() -> None:
    meters = [Meter("a", "S", F(1), F(0)), Meter("b", "S", F(0), F(3))]
    r = settle(meters, {"S": S})
    assert all(a.difference == 0 for a in r.households + r.suppliers)


@pytest.mark.parametrize(("meters", "trades", "price", "rule"), [
    ([Meter("a", "X", F(1), F(0))], [], None, "no tariff"),
    ([Meter("a", "S", F(1), F(0))], [MarketTrade("z", Side.BUY, F(1))], F(1), "no meter"),
    ([Meter("a", "S", F(1), F(0)), Meter("a", "S", F(1), F(0))], [], None, "two meter"),
    ([Meter("a", "S", F(1), F(0))], [MarketTrade("a", Side.BUY, F(1))], None, "price"),
    ([Meter("a", "S", F(1), F(0))], [MarketTrade("a", Side.BUY, F(1))], F(1), "equal"),
])
def test_inconsistent_inputs_are_refused(
    meters: list[Meter], trades: list[MarketTrade], price: F | None, rule: str
) -> None:
    with pytest.raises(SettlementError, match=rule):
        settle(meters, {"S": S}, trades, price)


def test_negative_readings_and_tariffs_are_refused() -> None:
    with pytest.raises(SettlementError):
        Meter("a", "S", F(-1), F(0))
    with pytest.raises(SettlementError):
        Tariff(F("0.2"), F("-0.1"), F("0.03"))
    with pytest.raises(SettlementError):
        MarketTrade("a", Side.BUY, F(-1))


def test_local_trade_across_two_suppliers() -> None:
    # the paper's example with the seller at supplier S and the buyer at supplier T
    meters = [Meter("U1", "S", F(0), F(2)), Meter("U2", "T", F(4), F(0))]
    trades = [MarketTrade("U1", Side.SELL, F(2)), MarketTrade("U2", Side.BUY, F(2))]
    r = settle(meters, {"S": S, "T": S}, trades, F("0.11"))
    s_account, t_account = r.suppliers
    # S receives 0.22 for its customer's sale, pays it 0.16 and the fee on 2 kWh (0.06)
    assert (s_account.with_market, s_account.without_market) == (F(0), F("-0.08") - F("0.06"))
    # T receives 0.62 from its customer, pays 0.22 for the local energy and 0.12 in fees
    assert (t_account.with_market, t_account.without_market) == (F("0.28"), F("0.68"))
