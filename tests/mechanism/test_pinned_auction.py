"""The double auction pinned: every field of a clearing, worked out by hand from the rule.

Covers the pro-rata rule (``rationing``/``traded_wh``), the no-trade outcome, the outcome built
from accepted quantities, the minimum participation per side, the exactness guards (sums at
or beyond 2^53, products at 2^63) and the seeded sample books.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from sealgrid.mechanism.auction import (
    Clearing,
    clear,
    clearing_level,
    curves,
    group_sum,
    rationing,
    traded_wh,
)
from sealgrid.mechanism.bids import OrderBook
from sealgrid.mechanism.samples import random_book


def book_of(*bids: tuple[str, int, int, int], suppliers: int = 3) -> OrderBook:
    """Build a book from (side, Wh, level, supplier) tuples."""
    return OrderBook(
        is_buy=np.array([b[0] == "buy" for b in bids], dtype=bool),
        quantity_wh=np.array([b[1] for b in bids], dtype=np.int64),
        level=np.array([b[2] for b in bids], dtype=np.int64),
        supplier=np.array([b[3] for b in bids], dtype=np.int64),
        suppliers=tuple(f"s{i}" for i in range(suppliers)),
    )


def assert_no_trade(r: Clearing, bids: int, suppliers: int) -> None:
    assert r.level is None and not r.traded
    assert (r.volume_wh, r.demand_wh, r.supply_wh) == (0, 0, 0)
    assert (r.denominator_buy, r.denominator_sell) == (1, 1)
    assert r.accepted.tolist() == [False] * bids and r.accepted.dtype == np.bool_
    assert r.traded_numerator.tolist() == [0] * bids and r.traded_numerator.dtype == np.int64
    assert r.supplier_bought_wh == (Fraction(0),) * suppliers
    assert r.supplier_sold_wh == (Fraction(0),) * suppliers


# --- the pro-rata rule -----------------------------------------------------------------------

@pytest.mark.parametrize(("volume", "side_total", "expected"), [
    (2000, 3000, (2000, 3000)),  # long side: rationed by V / L
    (5, 6, (5, 6)),
    (5, 5, (1, 1)),              # the short side (L = V) trades in full, denominator 1
    (7, 5, (1, 1)),
    (0, 0, (1, 1)),
])
def test_rationing(volume: int, side_total: int, expected: tuple[int, int]) -> None:
    assert rationing(volume, side_total) == expected


@pytest.mark.parametrize(("accepted", "volume", "side_total", "expected"), [
    (1000, 2000, 3000, Fraction(2000, 3)),
    (3000, 2000, 3000, Fraction(2000)),
    (700, 5, 5, Fraction(700)),
    (4, 6, 10, Fraction(12, 5)),
    (0, 2, 3, Fraction(0)),
])
def test_traded_wh(accepted: int, volume: int, side_total: int, expected: Fraction) -> None:
    assert traded_wh(accepted, volume, side_total) == expected


# --- the no-trade outcome --------------------------------------------------------------------

def test_no_trade_outcome_every_field() -> None:
    assert_no_trade(Clearing.no_trade(4, 2), 4, 2)
    assert_no_trade(Clearing.no_trade(0, 0), 0, 0)


def test_no_trade_from_clear_has_every_field_zero() -> None:
    # buyers below sellers: demand and supply exist, but nothing can trade
    book = book_of(("buy", 4, 1, 0), ("sell", 4, 2, 1), ("buy", 9, 0, 2))
    assert_no_trade(clear(book, 8), 3, 3)
    assert_no_trade(clear(book_of(), 4), 0, 3)


def test_empty_grid_is_no_trade() -> None:
    empty = np.array([], dtype=np.int64)
    assert clearing_level(empty, empty) is None
    assert clearing_level(np.zeros(3, dtype=np.int64), np.array([0, 5, 9])) is None
    assert_no_trade(clear(book_of(), 0), 0, 3)


# --- the outcome from accepted quantities ----------------------------------------------------

def test_from_accepted_every_field() -> None:
    # D(k*) = 6 (buyers 2 + 4), S(k*) = 4: V = 4; buyers are long (4/6), sellers short (1/1)
    r = Clearing.from_accepted(
        level=3, demand_wh=6, supply_wh=4,
        is_buy=np.array([True, True, False, False]),
        accepted_wh=np.array([2, 4, 4, 0], dtype=np.int64),
        bought_wh=[6, 0], sold_wh=[0, 4],
    )
    assert r.level == 3 and r.traded
    assert (r.volume_wh, r.demand_wh, r.supply_wh) == (4, 6, 4)
    assert (r.denominator_buy, r.denominator_sell) == (6, 1)
    assert r.accepted.tolist() == [True, True, True, False]
    assert r.traded_numerator.tolist() == [8, 16, 4, 0]
    assert r.traded_numerator.dtype == np.int64
    assert [r.traded_wh(0, True), r.traded_wh(1, True), r.traded_wh(2, False)] == [
        Fraction(4, 3), Fraction(8, 3), Fraction(4)]
    assert r.supplier_bought_wh == (Fraction(4), Fraction(0))
    assert r.supplier_sold_wh == (Fraction(0), Fraction(4))
    kwh = r.traded_kwh_array(np.array([True, True, False, False]))
    assert kwh.dtype == np.float64
    assert kwh.tolist() == pytest.approx([4 / 3000, 8 / 3000, 0.004, 0.0], rel=1e-15)


def test_from_accepted_sellers_long() -> None:
    # D = 3, S = 10: V = 3; sellers rationed 3/10, buyers in full
    r = Clearing.from_accepted(
        level=0, demand_wh=3, supply_wh=10,
        is_buy=np.array([False, True, False]),
        accepted_wh=np.array([6, 3, 4], dtype=np.int64),
        bought_wh=[3], sold_wh=[10],
    )
    assert (r.volume_wh, r.demand_wh, r.supply_wh) == (3, 3, 10)
    assert (r.denominator_buy, r.denominator_sell) == (1, 10)
    assert r.traded_numerator.tolist() == [18, 3, 12]
    assert r.supplier_bought_wh == (Fraction(3),) and r.supplier_sold_wh == (Fraction(3),)


# --- worked examples of clear(): every field -------------------------------------------------

def test_worked_example_every_field() -> None:
    # buyer 2 kWh at level 110 (s0); sellers 1 kWh at 10 (s0) and 2 kWh at 60 (s1).
    # V = 2000 on levels 60..110, |D − S| = 1000 there: k* = 85; D(85) = 2000, S(85) = 3000
    book = book_of(("buy", 2000, 110, 0), ("sell", 1000, 10, 0), ("sell", 2000, 60, 1))
    r = clear(book, 161)
    assert (r.level, r.volume_wh, r.demand_wh, r.supply_wh) == (85, 2000, 2000, 3000)
    assert (r.denominator_buy, r.denominator_sell) == (1, 3000)
    assert r.traded_numerator.tolist() == [2000, 2_000_000, 4_000_000]
    assert r.accepted.tolist() == [True, True, True]
    assert r.supplier_bought_wh == (Fraction(2000), Fraction(0), Fraction(0))
    assert r.supplier_sold_wh == (Fraction(2000, 3), Fraction(4000, 3), Fraction(0))
    assert r.traded_kwh_array(book.is_buy).tolist() == pytest.approx([2.0, 2 / 3, 4 / 3],
                                                                    rel=1e-15)


def test_balanced_clearing_has_denominators_one() -> None:
    # D = S = 5 at the clearing level: both sides are short, nothing is rationed
    book = book_of(("buy", 3, 2, 0), ("buy", 2, 3, 1), ("sell", 5, 1, 2))
    r = clear(book, 4)
    # V = 5 at levels 1..2 with D − S = 0; the lower middle is 1
    assert (r.level, r.volume_wh, r.demand_wh, r.supply_wh) == (1, 5, 5, 5)
    assert (r.denominator_buy, r.denominator_sell) == (1, 1)
    assert r.traded_numerator.tolist() == [3, 2, 5]
    assert r.supplier_bought_wh == (3, 2, 0) and r.supplier_sold_wh == (0, 0, 5)


def test_buyers_rationed_with_suppliers() -> None:
    # sellers 3 Wh at level 2 (s2); buyers 2 at 5 (s0), 4 at 3 (s1), 1 at 1 (s0, refused).
    # D(2) = D(3) = 6, S = 3: k* = 2 (lower middle); buyers trade 3/6 of their quantity
    book = book_of(("sell", 3, 2, 2), ("buy", 2, 5, 0), ("buy", 4, 3, 1), ("buy", 1, 1, 0))
    r = clear(book, 8)
    assert (r.level, r.volume_wh, r.demand_wh, r.supply_wh) == (2, 3, 6, 3)
    assert (r.denominator_buy, r.denominator_sell) == (6, 1)
    assert r.accepted.tolist() == [True, True, True, False]
    assert r.traded_numerator.tolist() == [3, 6, 12, 0]
    assert r.supplier_bought_wh == (Fraction(1), Fraction(2), Fraction(0))
    assert r.supplier_sold_wh == (Fraction(0), Fraction(0), Fraction(3))


def test_curves_by_hand() -> None:
    book = book_of(("buy", 5, 4, 0), ("buy", 1, 0, 0), ("sell", 3, 1, 0), ("sell", 3, 2, 0))
    c = curves(book, 5)
    assert c.demand.tolist() == [6, 5, 5, 5, 5]
    assert c.supply.tolist() == [0, 3, 6, 6, 6]
    assert c.volume.tolist() == [0, 3, 5, 5, 5]
    assert c.demand.dtype == c.supply.dtype == np.int64


# --- minimum participation per side ----------------------------------------------------------

def test_min_accepted_counts_bids_accepted_at_the_clearing_level() -> None:
    # the book of test_curves_by_hand: V = 5 on levels 2..4, |D − S| = 1 there: k* = 3.
    # Accepted: one buyer (5 at 4; the buyer at 0 is below k*) and both sellers.
    book = book_of(("buy", 5, 4, 0), ("buy", 1, 0, 1), ("sell", 3, 1, 1), ("sell", 3, 2, 2))
    one = clear(book, 5)
    assert (one.level, one.volume_wh, one.demand_wh, one.supply_wh) == (3, 5, 5, 6)
    assert one.accepted.tolist() == [True, False, True, True]
    assert one.supplier_sold_wh == (Fraction(0), Fraction(5, 2), Fraction(5, 2))
    assert clear(book, 5, min_accepted_per_side=1).level == 3
    # two bids per side are required, only one buyer is accepted: nobody trades
    assert_no_trade(clear(book, 5, min_accepted_per_side=2), 4, 3)


def test_min_accepted_is_met_with_exactly_that_many() -> None:
    # two buyers and two sellers all accepted: V = 4 on level 1..2 (D = 4, S = 4), k* = 1
    book = book_of(("buy", 1, 2, 0), ("buy", 3, 2, 0), ("sell", 2, 1, 1), ("sell", 2, 0, 1))
    r = clear(book, 3, min_accepted_per_side=2)
    assert (r.level, r.volume_wh, r.demand_wh, r.supply_wh) == (1, 4, 4, 4)
    assert r.traded_numerator.tolist() == [1, 3, 2, 2]
    assert_no_trade(clear(book, 3, min_accepted_per_side=3), 4, 3)


def test_min_accepted_needs_both_sides() -> None:
    # three sellers but two buyers accepted: a minimum of 3 fails on the buyers' side only
    book = book_of(("buy", 3, 2, 0), ("buy", 3, 2, 0), ("sell", 2, 0, 0), ("sell", 2, 1, 0),
                   ("sell", 2, 2, 0))
    assert clear(book, 3, min_accepted_per_side=2).level == 2
    assert_no_trade(clear(book, 3, min_accepted_per_side=3), 5, 3)


# --- exactness guards ------------------------------------------------------------------------

def test_group_sum_small() -> None:
    out = group_sum(np.array([2, 0, 2]), np.array([5, 1, 7], dtype=np.int64), 4)
    assert out.tolist() == [1, 0, 12, 0] and out.dtype == np.int64
    empty = group_sum(np.array([], dtype=np.int64), np.array([], dtype=np.int64), 3)
    assert empty.tolist() == [0, 0, 0] and empty.dtype == np.int64


def test_group_sum_beyond_2_53_is_exact() -> None:
    # 2^53 + 1 is not a float64: summing in floats would give 2^53
    out = group_sum(np.array([0, 0, 1]), np.array([2**53, 1, 3], dtype=np.int64), 2)
    assert out.tolist() == [2**53 + 1, 3] and out.dtype == np.int64
    # the largest int64: in floats 2^62 + (2^62 − 1) rounds to 2^63, which int64 cannot hold
    big = group_sum(np.array([1, 1]), np.array([2**62, 2**62 - 1], dtype=np.int64), 3)
    assert big.tolist() == [0, 2**63 - 1, 0]


def test_group_sum_at_exactly_2_53_is_exact() -> None:
    # the sum is 2^53 exactly; in floats 2^53 + 1 rounds to 2^53 and the −1 then gives 2^53 − 1
    out = group_sum(np.array([0, 0]), np.array([2**53 + 1, -1], dtype=np.int64), 1)
    assert out.tolist() == [2**53]


def test_clear_with_quantities_near_64_bits_is_exact() -> None:
    # buyer 2^31 − 1 Wh at level 1, seller 2^32 − 1 Wh at level 0: V = 2^31 − 1 on both levels,
    # |D − S| equal: k* = 0. The seller is rationed: numerator (2^32 − 1)(2^31 − 1), a 63-bit
    # number that float64 cannot hold, over 2^32 − 1.
    book = book_of(("buy", 2**31 - 1, 1, 0), ("sell", 2**32 - 1, 0, 1))
    r = clear(book, 2)
    assert (r.level, r.volume_wh, r.demand_wh, r.supply_wh) == (
        0, 2**31 - 1, 2**31 - 1, 2**32 - 1)
    assert (r.denominator_buy, r.denominator_sell) == (1, 2**32 - 1)
    assert r.traded_numerator.tolist() == [2**31 - 1, (2**32 - 1) * (2**31 - 1)]
    assert r.traded_wh(1, False) == 2**31 - 1
    assert r.supplier_sold_wh == (Fraction(0), Fraction(2**31 - 1), Fraction(0))


def test_from_accepted_is_exact_for_unsigned_accepted_quantities() -> None:
    # the secure clearing reconstructs quantities as uint64: the numerators must still be
    # exact int64, (2^32 − 1)(2^31 − 1) included (float64 cannot hold it)
    r = Clearing.from_accepted(
        level=0, demand_wh=2**31 - 1, supply_wh=2**32 - 1,
        is_buy=np.array([True, False]),
        accepted_wh=np.array([2**31 - 1, 2**32 - 1], dtype=np.uint64),
        bought_wh=[2**31 - 1], sold_wh=[2**32 - 1],
    )
    assert r.traded_numerator.dtype == np.int64
    assert r.traded_numerator.tolist() == [2**31 - 1, (2**32 - 1) * (2**31 - 1)]
    assert r.traded_wh(1, False) == 2**31 - 1


def test_clear_refuses_a_product_of_2_63() -> None:
    # seller 2^32 Wh, buyer 2^31 Wh: quantity × V = 2^32 · 2^31 = 2^63 does not fit in int64
    book = book_of(("buy", 2**31, 1, 0), ("sell", 2**32, 0, 1))
    with pytest.raises(OverflowError) as info:
        clear(book, 2)
    assert str(info.value) == "quantity × volume exceeds 64 bits; lower the per-bid maximum"


def test_from_accepted_overflow_boundary() -> None:
    def build(seller_wh: int) -> Clearing:
        return Clearing.from_accepted(
            level=0, demand_wh=2**31, supply_wh=seller_wh,
            is_buy=np.array([True, False]),
            accepted_wh=np.array([2**31, seller_wh], dtype=np.int64),
            bought_wh=[2**31], sold_wh=[seller_wh],
        )

    # (2^32 − 1) · 2^31 = 2^63 − 2^31 still fits
    r = build(2**32 - 1)
    assert r.traded_numerator.tolist() == [2**31, (2**32 - 1) * 2**31]
    assert r.supplier_sold_wh == (Fraction(2**31),)
    # 2^32 · 2^31 = 2^63 does not
    with pytest.raises(OverflowError) as info:
        build(2**32)
    assert str(info.value) == "quantity × volume exceeds 64 bits; lower the per-bid maximum"


# --- seeded sample books ---------------------------------------------------------------------

def test_random_book_is_seeded() -> None:
    a, b = random_book(50, 10, 3, seed=4), random_book(50, 10, 3, seed=4)
    for x, y in ((a.is_buy, b.is_buy), (a.quantity_wh, b.quantity_wh), (a.level, b.level),
                 (a.supplier, b.supplier)):
        assert x.tolist() == y.tolist()
    c = random_book(50, 10, 3, seed=5)
    assert c.quantity_wh.tolist() != a.quantity_wh.tolist()
    # the default seed is 0
    d, e = random_book(50, 10, 3), random_book(50, 10, 3, seed=0)
    assert d.quantity_wh.tolist() == e.quantity_wh.tolist()
    assert d.level.tolist() == e.level.tolist()


def test_random_book_ranges_are_inclusive() -> None:
    book = random_book(3000, 4, 3, seed=1, max_quantity_wh=3)
    assert len(book) == 3000
    assert set(book.quantity_wh.tolist()) == {1, 2, 3}
    assert set(book.supplier.tolist()) == {0, 1, 2}
    assert book.suppliers == ("supplier-0", "supplier-1", "supplier-2")
    buy = book.is_buy
    # every level is reached by both sides (so the two draws are per bid)
    assert set(book.level[buy].tolist()) == set(book.level[~buy].tolist()) == {0, 1, 2, 3}
    for column in (book.quantity_wh, book.level, book.supplier):
        assert column.dtype == np.int64


def test_random_book_default_quantity_and_buy_fraction() -> None:
    book = random_book(4000, 64, 2, seed=3)
    assert book.quantity_wh.min() >= 1 and book.quantity_wh.max() <= 10_000
    assert book.quantity_wh.max() > 9_000  # the default maximum is 10 kWh
    assert 0.45 < book.is_buy.mean() < 0.55  # half buyers by default
    # buyers lean high (larger of two draws, mean ≈ 42), sellers low (smaller, mean ≈ 21)
    assert book.level[book.is_buy].mean() > 36 > 27 > book.level[~book.is_buy].mean()


def test_random_book_buy_fraction() -> None:
    assert random_book(200, 8, 1, buy_fraction=1.0).is_buy.all()
    assert not random_book(200, 8, 1, buy_fraction=0.0).is_buy.any()
    assert 0.15 < random_book(4000, 8, 1, buy_fraction=0.2).is_buy.mean() < 0.25
