"""The market's rules pinned: the price grid, the market's settings and every refusal, whole.

Refusal texts are compared in full, so that a message with a wrong figure or a lost detail
fails; every expected text is written out here, not built by the code under test.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

from sealgrid.mechanism.bids import (
    Bid,
    BidRejected,
    MarketRules,
    OrderBook,
    Reason,
    Side,
    check_bid,
)
from sealgrid.mechanism.grid import WH_PER_KWH, PriceGrid, kwh_to_wh_exact, parse_decimal
from sealgrid.mechanism.market import (
    DEFAULT_GRID,
    DEFAULT_MAX_QUANTITY_WH,
    DEFAULT_PERIOD_SECONDS,
    PAPERS_MIN_ACCEPTED_PER_SIDE,
    Market,
)

from .test_bids import GRID, RULES

# --- parse_decimal: strings, ints, Decimals and floats ----------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    ("1.5", Decimal("1.5")),
    ("  0.125 \n", Decimal("0.125")),
    (7, Decimal(7)),
    (Decimal("2.50"), Decimal("2.50")),
    # a float goes through its shortest repr: 0.1, not 0.1000000000000000055511151231257827…
    (0.1, Decimal("0.1")),
    (1.005, Decimal("1.005")),
    (-2.0, Decimal("-2.0")),
])
def test_parse_decimal_values(value: object, expected: Decimal) -> None:
    parsed = parse_decimal(value)  # type: ignore[arg-type]
    assert isinstance(parsed, Decimal)
    assert parsed == expected
    assert str(parsed) == str(expected)  # same digits, not just the same number


def test_parse_decimal_keeps_a_decimal_as_given() -> None:
    value = Decimal("3.1400")
    assert parse_decimal(value) is value


def test_float_is_not_taken_as_its_binary_value() -> None:
    assert parse_decimal(0.1) != Decimal.from_float(0.1)
    assert Fraction(parse_decimal(0.1)) == Fraction(1, 10)


@pytest.mark.parametrize(("value", "message"), [
    ("abc", "'abc' is not a number"),
    ("", "'' is not a number"),
    ("1,5", "'1,5' is not a number"),
    ("nan", "'nan' is not a finite number"),
    ("-Infinity", "'-Infinity' is not a finite number"),
    (Decimal("NaN"), "Decimal('NaN') is not a finite number"),
    (float("inf"), "inf is not a finite number"),
    (float("nan"), "nan is not a finite number"),
])
def test_parse_decimal_refusals_whole_messages(value: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_decimal(value)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_parse_decimal_takes_numpy_float64() -> None:
    """What pandas hands out: numpy 2 reprs it as 'np.float64(0.1)'."""
    assert parse_decimal(np.float64(0.1)) == Decimal("0.1")
    assert parse_decimal(np.float64(1.013)) == Decimal("1.013")


def test_parse_decimal_takes_numpy_integers_and_float32() -> None:
    assert parse_decimal(np.int64(3)) == Decimal(3)  # type: ignore[arg-type]
    assert parse_decimal(np.float32(0.5)) == Decimal("0.5")  # type: ignore[arg-type]


def test_kwh_to_wh_is_exact() -> None:
    assert WH_PER_KWH == 1000
    assert kwh_to_wh_exact(Decimal("1.234")) == 1234
    assert kwh_to_wh_exact(Decimal("0.0005")) == Fraction(1, 2)


# --- the price grid --------------------------------------------------------------------------

@pytest.mark.parametrize(("floor", "ceiling", "tick", "message"), [
    ("0.04", "0.2", "0", "the price tick must be positive"),
    ("0.04", "0.2", "-0.001", "the price tick must be positive"),
    ("0.1", "0.05", "0.01", "the price ceiling must not be below the floor"),
    ("0.04", "0.2005", "0.001", "ceiling - floor must be a whole number of ticks"),
    # 1 / 0.4 is not whole (though (1.5 + 0.5) / 0.4 is)
    ("0.5", "1.5", "0.4", "ceiling - floor must be a whole number of ticks"),
])
def test_grid_refusals_whole_messages(floor: str, ceiling: str, tick: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        PriceGrid.from_values(floor, ceiling, tick)
    assert str(info.value) == message


def test_grid_of_one_level_and_of_uneven_sum() -> None:
    single = PriceGrid.from_values("0.1", "0.1", "0.01")  # ceiling = floor is allowed
    assert single.levels == 1 and single.price(0) == Decimal("0.1")
    # ceiling − floor = 2 = one tick, though (ceiling + floor) / tick = 1.5
    two = PriceGrid.from_values("0.5", "2.5", "2")
    assert two.levels == 2 and two.price(1) == Decimal("2.5")


def test_grid_from_floats_and_decimals() -> None:
    grid = PriceGrid.from_values(0.04, Decimal("0.2"), 0.001)
    assert (grid.floor, grid.ceiling, grid.tick) == (Decimal("0.04"), Decimal("0.2"),
                                                    Decimal("0.001"))
    assert grid.levels == 161


@pytest.mark.parametrize(("level", "message"), [
    (161, "level 161 is outside the grid 0..160"),
    (-1, "level -1 is outside the grid 0..160"),
    (1000, "level 1000 is outside the grid 0..160"),
])
def test_price_outside_grid_whole_message(level: int, message: str) -> None:
    with pytest.raises(IndexError) as info:
        GRID.price(level)
    assert str(info.value) == message


def test_grid_positions() -> None:
    assert GRID.price(83) == Decimal("0.123")
    assert GRID.level_of(Decimal("0.123")) == 83
    assert GRID.level_of(Decimal("0.1205")) == Fraction(161, 2)


# --- the market's settings -------------------------------------------------------------------

def test_market_defaults_are_the_documented_ones() -> None:
    assert DEFAULT_MAX_QUANTITY_WH == 10_000
    assert DEFAULT_PERIOD_SECONDS == 900
    assert PAPERS_MIN_ACCEPTED_PER_SIDE == 1
    assert PriceGrid(Decimal("80"), Decimal("120"), Decimal("0.1")) == DEFAULT_GRID
    assert DEFAULT_GRID.levels == 401
    market = Market(DEFAULT_GRID)
    assert (market.max_quantity_wh, market.period_seconds, market.min_accepted_per_side,
            market.suppliers) == (10_000, 900, 1, ())
    assert market.levels == 401
    assert MarketRules is Market


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_quantity_wh": 0}, "the maximum quantity must be positive"),
    ({"max_quantity_wh": -5}, "the maximum quantity must be positive"),
    ({"period_seconds": 0}, "the trading period must be positive"),
    ({"period_seconds": -900}, "the trading period must be positive"),
    ({"min_accepted_per_side": 0}, "the minimum participation per side must be at least 1"),
    ({"suppliers": ("A", "B", "A")}, "supplier ids must be distinct"),
])
def test_market_refusals_whole_messages(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as info:
        Market(GRID, **kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_market_smallest_settings_are_allowed() -> None:
    market = Market(GRID, max_quantity_wh=1, period_seconds=1, min_accepted_per_side=1)
    assert (market.max_quantity_wh, market.period_seconds) == (1, 1)
    assert Market(GRID, min_accepted_per_side=3).min_accepted_per_side == 3


def test_supplier_index() -> None:
    market = Market(GRID, suppliers=("north", "south", "east"))
    assert [market.supplier_index(s) for s in ("north", "south", "east")] == [0, 1, 2]
    with pytest.raises(ValueError) as info:
        market.supplier_index("west")
    assert str(info.value) == "'west' is not one of the market's suppliers"


# --- refusals: every reason's whole message --------------------------------------------------

ADVICE = {
    "too_early": "a meter reading is taken only after its period has ended",
    "duplicate_reading": "this household's meter already sent a reading for the period",
    "reading_out_of_range": "import and export must be whole Wh from 0 to the maximum",
    "already_enrolled": "this household enrolled another credential with this server",
    "not_enrolled": "the household has not enrolled its credential with this server",
    "malformed": "a field or the message is missing, not a number or not in its format",
    "unknown_side": "side must be 'buy' or 'sell'",
    "quantity_not_positive": "quantity must be greater than zero",
    "quantity_too_large": "quantity is above the market's per-bid maximum",
    "quantity_not_whole_wh": "quantity must be whole Wh (at most 3 decimals in kWh)",
    "price_below_floor": "price is below the market's floor price",
    "price_above_ceiling": "price is above the market's ceiling price",
    "price_off_grid": "price is not on the price grid (the floor plus whole ticks)",
    "unknown_supplier": "supplier is not one of the market's registered suppliers",
    "duplicate_pseudonym": "this pseudonym already has a bid in the period; use a fresh one",
    "wrong_period": "the request names a period this market does not take it for (not a"
    " period's start, out of range, or not open)",
    "late": "the bid arrived after gate closure for its trading period",
    "too_frequent": "over a limit on requests: the rate limit per household, or one pseudonym"
    " per household and period (the detail says which and what to do)",
    "replayed": "this exact message was already received, or its challenge is unknown, used or"
    " expired; an accepted bid needs nothing more, another request a fresh challenge",
    "unsigned": "the message carries no signature or no token; sign it before sending",
    "bad_signature": "a signature or token does not verify with the key it must be made with"
    " (the detail names the key)",
    "invalid_shares": "the secret shares do not form a valid encoding of one bid",
}


def test_the_closed_set_of_reasons() -> None:
    assert {r.value for r in Reason} == set(ADVICE)
    assert [s.value for s in Side] == ["buy", "sell"]


@pytest.mark.parametrize("value", sorted(ADVICE))
def test_every_reason_whole_message_without_detail(value: str) -> None:
    rejection = BidRejected(Reason(value))
    assert str(rejection) == f"{value}: {ADVICE[value]}"
    assert rejection.reason is Reason(value) and rejection.detail == ""


def test_message_with_detail() -> None:
    rejection = BidRejected(Reason.LATE, "period 7")
    assert str(rejection) == ("late: the bid arrived after gate closure for its trading period "
                              "(period 7)")
    assert rejection.detail == "period 7"


def messages(rules: MarketRules = RULES, **overrides: str) -> list[str]:
    fields = {"bidder": "h1", "side": "buy", "quantity_kwh": "1.5", "price": "0.12",
              "supplier": "A"} | overrides
    bid, errors = check_bid(rules, fields["bidder"], fields["side"], fields["quantity_kwh"],
                            fields["price"], fields["supplier"])
    assert (bid is None) == bool(errors)
    return [str(e) for e in errors]


@pytest.mark.parametrize(("field", "value", "message"), [
    ("side", "hold", "unknown_side: side must be 'buy' or 'sell'"),
    ("quantity_kwh", "0", "quantity_not_positive: quantity must be greater than zero"),
    ("quantity_kwh", "10.001", "quantity_too_large: quantity is above the market's per-bid "
                               "maximum (maximum 10 kWh)"),
    ("quantity_kwh", "1.0005", "quantity_not_whole_wh: quantity must be whole Wh (at most 3 "
                               "decimals in kWh)"),
    ("quantity_kwh", "lots", "malformed: a field or the message is missing, not a number or "
                             "not in its format (quantity_kwh)"),
    ("price", "0.039", "price_below_floor: price is below the market's floor price "
                       "(floor 0.04)"),
    ("price", "0.201", "price_above_ceiling: price is above the market's ceiling price "
                       "(ceiling 0.20)"),
    ("price", "0.1205", "price_off_grid: price is not on the price grid (the floor plus whole "
                        "ticks) (tick 0.001)"),
    ("price", "cheap", "malformed: a field or the message is missing, not a number or not in "
                       "its format (price)"),
    ("supplier", "C", "unknown_supplier: supplier is not one of the market's registered "
                      "suppliers"),
    ("supplier", "  ", "unknown_supplier: supplier is not one of the market's registered "
                       "suppliers (the supplier field is empty)"),
    ("bidder", "", "malformed: a field or the message is missing, not a number or not in its "
                   "format (bidder)"),
])
def test_each_refusal_whole_message(field: str, value: str, message: str) -> None:
    assert messages(RULES, **{field: value}) == [message]


@pytest.mark.parametrize(("max_wh", "shown"), [
    (1500, "1.5"), (250, "0.25"), (1, "0.001"), (20_000, "20"),
])
def test_too_large_names_the_market_maximum_in_kwh(max_wh: int, shown: str) -> None:
    rules = MarketRules(GRID, max_quantity_wh=max_wh)
    assert messages(rules, quantity_kwh="25") == [
        f"quantity_too_large: quantity is above the market's per-bid maximum (maximum {shown} kWh)"
    ]
    # exactly the maximum is allowed
    assert messages(rules, quantity_kwh=str(Decimal(max_wh) / 1000)) == []


def test_every_broken_rule_in_order() -> None:
    assert messages(side="x", quantity_kwh="-2", price="0.5", supplier="", bidder=" ") == [
        "unknown_side: side must be 'buy' or 'sell'",
        "quantity_not_positive: quantity must be greater than zero",
        "price_above_ceiling: price is above the market's ceiling price (ceiling 0.20)",
        "unknown_supplier: supplier is not one of the market's registered suppliers "
        "(the supplier field is empty)",
        "malformed: a field or the message is missing, not a number or not in its format "
        "(bidder)",
    ]


def test_edges_are_trimmed_and_normalised() -> None:
    bid, errors = check_bid(RULES, "  h7\t", "  BUY ", " 0.042 ", " 0.200 ", " B ")
    assert errors == []
    assert bid == Bid("h7", Side.BUY, 42, 160, "B")


def test_check_bid_takes_decimals() -> None:
    bid, errors = check_bid(RULES, "h", "sell", Decimal("2.5"), Decimal("0.04"), "A")
    assert errors == [] and bid == Bid("h", Side.SELL, 2500, 0, "A")


# --- the order book --------------------------------------------------------------------------

def test_order_book_columns() -> None:
    bids = [Bid("x", Side.SELL, 700, 12, "south"), Bid("y", Side.BUY, 1500, 40, "north"),
            Bid("z", Side.BUY, 1, 0, "east")]
    book = OrderBook.from_bids(bids, ("north", "south"))
    assert book.suppliers == ("north", "south", "east")
    assert book.bidders == ("x", "y", "z")
    assert len(book) == 3
    assert book.is_buy.tolist() == [False, True, True] and book.is_buy.dtype == np.bool_
    assert book.quantity_wh.tolist() == [700, 1500, 1]
    assert book.level.tolist() == [12, 40, 0]
    assert book.supplier.tolist() == [1, 0, 2]
    for column in (book.quantity_wh, book.level, book.supplier):
        assert column.dtype == np.int64


def test_empty_order_book_has_integer_columns() -> None:
    book = OrderBook.from_bids([], ("A",))
    assert len(book) == 0 and book.suppliers == ("A",) and book.bidders == ()
    assert book.is_buy.dtype == np.bool_
    for column in (book.quantity_wh, book.level, book.supplier):
        assert column.dtype == np.int64


def test_order_book_refusals_whole_messages() -> None:
    one, two = np.array([True]), np.array([True, False])
    ints = np.array([1, 2])
    with pytest.raises(ValueError) as info:
        OrderBook(two, ints, ints[:1], ints, ("A",))
    assert str(info.value) == "order book columns must have equal length"
    with pytest.raises(ValueError) as info:
        OrderBook(two, ints, ints, ints[:1], ("A",))
    assert str(info.value) == "order book columns must have equal length"
    with pytest.raises(ValueError) as info:
        OrderBook(one, ints[:1], ints[:1], ints[:1], ("A",), bidders=("a", "b"))
    assert str(info.value) == "order book bidders must match the columns"
    # no bidders at all is fine (the ids are for output only)
    assert len(OrderBook(two, ints, ints, ints, ("A",))) == 2


def test_star_import_names_exist() -> None:
    namespace: dict[str, object] = {}
    exec("from sealgrid.mechanism.bids import *", namespace)
    for name in ("Bid", "BidRejected", "Market", "MarketRules", "OrderBook", "Reason", "Side",
                 "check_bid", "duplicate_bidders", "DEFAULT_MAX_QUANTITY_WH"):
        assert name in namespace
