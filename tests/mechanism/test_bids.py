"""Bids, the price grid and every refusal reason (docs/mechanism.md)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealgrid.mechanism.bids import (
    Bid,
    BidRejected,
    MarketRules,
    OrderBook,
    Reason,
    Side,
    check_bid,
    duplicate_bidders,
)
from sealgrid.mechanism.grid import PriceGrid

GRID = PriceGrid.from_values("0.04", "0.20", "0.001")
RULES = MarketRules(GRID, max_quantity_wh=10_000, suppliers=("A", "B"))


def reasons(**overrides: str) -> set[Reason]:
    fields = {"bidder": "h1", "side": "buy", "quantity_kwh": "1.5", "price": "0.12",
              "supplier": "A"} | overrides
    bid, errors = check_bid(RULES, fields["bidder"], fields["side"], fields["quantity_kwh"],
                            fields["price"], fields["supplier"])
    assert (bid is None) == bool(errors)
    return {e.reason for e in errors}


def test_grid_levels_and_prices() -> None:
    assert GRID.levels == 161
    assert GRID.price(0) == Decimal("0.04") and GRID.price(160) == Decimal("0.200")
    with pytest.raises(IndexError):
        GRID.price(161)


@pytest.mark.parametrize(("floor", "ceiling", "tick"), [
    ("0.1", "0.05", "0.01"), ("0.04", "0.2", "0"), ("0.04", "0.2005", "0.001"),
])
def test_grid_refuses_bad_settings(floor: str, ceiling: str, tick: str) -> None:
    with pytest.raises(ValueError):
        PriceGrid.from_values(floor, ceiling, tick)


def test_valid_bid_is_integer_inside() -> None:
    bid, errors = check_bid(RULES, " h1 ", "Sell", "1.234", "0.123", "B")
    assert errors == []
    assert bid == Bid("h1", Side.SELL, 1234, 83, "B")


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("side", "hold", Reason.UNKNOWN_SIDE),
    ("quantity_kwh", "0", Reason.QUANTITY_NOT_POSITIVE),
    ("quantity_kwh", "-1", Reason.QUANTITY_NOT_POSITIVE),
    ("quantity_kwh", "10.001", Reason.QUANTITY_TOO_LARGE),
    ("quantity_kwh", "1.0005", Reason.QUANTITY_NOT_WHOLE_WH),
    ("quantity_kwh", "lots", Reason.MALFORMED),
    ("quantity_kwh", "nan", Reason.MALFORMED),
    ("price", "0.039", Reason.PRICE_BELOW_FLOOR),
    ("price", "0.201", Reason.PRICE_ABOVE_CEILING),
    ("price", "0.1205", Reason.PRICE_OFF_GRID),
    ("price", "", Reason.MALFORMED),
    ("supplier", "C", Reason.UNKNOWN_SUPPLIER),
    ("supplier", "", Reason.UNKNOWN_SUPPLIER),
    ("bidder", "  ", Reason.MALFORMED),
])
def test_each_rule_has_its_reason(field: str, value: str, reason: Reason) -> None:
    assert reasons(**{field: value}) == {reason}


def test_every_broken_rule_is_reported() -> None:
    assert reasons(side="x", quantity_kwh="0", price="1", supplier="Z") == {
        Reason.UNKNOWN_SIDE, Reason.QUANTITY_NOT_POSITIVE, Reason.PRICE_ABOVE_CEILING,
        Reason.UNKNOWN_SUPPLIER}


def test_limits_are_inclusive() -> None:
    assert reasons(quantity_kwh="10", price="0.04") == set()
    assert reasons(quantity_kwh="0.001", price="0.2") == set()


def test_messages_name_the_rule_and_never_the_bid_value() -> None:
    for reason in Reason:
        text = str(BidRejected(reason))
        assert text.startswith(reason.value + ": ")
    _, errors = check_bid(RULES, "h1", "buy", "1", "0.1234", "A")
    assert "0.1234" not in str(errors[0])


def test_any_supplier_when_none_registered() -> None:
    rules = MarketRules(GRID)
    bid, errors = check_bid(rules, "h", "buy", "1", "0.1", "anyone")
    assert bid is not None and not errors


@given(st.decimals(min_value=Decimal("-100"), max_value=Decimal("100"), places=4))
def test_quantity_accepted_iff_whole_wh_in_range(q: Decimal) -> None:
    ok = Decimal("0") < q <= Decimal("10") and (q * 1000) == (q * 1000).to_integral_value()
    assert (reasons(quantity_kwh=str(q)) == set()) == ok


def test_order_book_and_duplicates() -> None:
    bids = [Bid("a", Side.BUY, 5, 3, "B"), Bid("b", Side.SELL, 7, 1, "Z")]
    book = OrderBook.from_bids(bids, ("A", "B"))
    assert book.suppliers == ("A", "B", "Z")
    assert book.supplier.tolist() == [1, 2] and book.is_buy.tolist() == [True, False]
    assert duplicate_bidders(["a", "b", "a", "c", "b"]) == [2, 4]
    with pytest.raises(ValueError):
        OrderBook(book.is_buy, book.quantity_wh[:1], book.level, book.supplier, book.suppliers)
