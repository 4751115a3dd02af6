"""The double auction against its rule (docs/mechanism.md): examples, a brute force, invariants."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealgrid.mechanism.auction import Clearing, clear, clearing_level, curves, group_sum
from sealgrid.mechanism.bids import OrderBook
from sealgrid.mechanism.samples import random_book


def book_of(*bids: tuple[str, int, int, int]) -> OrderBook:
    """Build a book from (side, Wh, level, supplier) tuples."""
    return OrderBook(
        is_buy=np.array([b[0] == "buy" for b in bids], dtype=bool),
        quantity_wh=np.array([b[1] for b in bids], dtype=np.int64),
        level=np.array([b[2] for b in bids], dtype=np.int64),
        supplier=np.array([b[3] for b in bids], dtype=np.int64),
        suppliers=("s0", "s1", "s2"),
    )


def traded(result: Clearing, book: OrderBook) -> list[Fraction]:
    return [result.traded_wh(i, bool(book.is_buy[i])) for i in range(len(book))]


# --- an independent brute force, written from the rule with plain Python loops -------------

def brute_force(book: OrderBook, levels: int) -> tuple[int | None, list[Fraction]]:
    bids = list(zip(book.is_buy.tolist(), book.quantity_wh.tolist(), book.level.tolist(),
                    strict=True))
    rows = []
    for k in range(levels):
        d = sum(q for buy, q, lv in bids if buy and lv >= k)
        s = sum(q for buy, q, lv in bids if not buy and lv <= k)
        rows.append((k, d, s))
    best = max(min(d, s) for _, d, s in rows)
    if best == 0:
        return None, [Fraction(0)] * len(bids)
    at_best = [(k, d, s) for k, d, s in rows if min(d, s) == best]
    least = min(abs(d - s) for _, d, s in at_best)
    chosen = [k for k, d, s in at_best if abs(d - s) == least]
    k = chosen[(len(chosen) - 1) // 2]
    _, d, s = rows[k]
    out = []
    for buy, q, lv in bids:
        if buy and lv >= k:
            out.append(Fraction(q * best, d))
        elif not buy and lv <= k:
            out.append(Fraction(q * best, s))
        else:
            out.append(Fraction(0))
    return k, out


books = st.integers(min_value=1, max_value=12).flatmap(
    lambda levels: st.tuples(
        st.just(levels),
        st.lists(
            st.tuples(st.sampled_from(["buy", "sell"]), st.integers(1, 50),
                      st.integers(0, levels - 1), st.integers(0, 2)),
            min_size=0, max_size=25,
        ),
    )
)


@settings(max_examples=300, deadline=None)
@given(books)
def test_equals_brute_force(data: tuple[int, list[tuple[str, int, int, int]]]) -> None:
    levels, bids = data
    book = book_of(*bids)
    result = clear(book, levels)
    k, expected = brute_force(book, levels)
    assert result.level == k
    assert traded(result, book) == expected


@settings(max_examples=300, deadline=None)
@given(books)
def test_invariants(data: tuple[int, list[tuple[str, int, int, int]]]) -> None:
    levels, bids = data
    book = book_of(*bids)
    r = clear(book, levels)
    amounts = traded(r, book)
    buy = book.is_buy.tolist()
    if r.level is None:
        assert not r.accepted.any() and all(a == 0 for a in amounts)
        return
    for i, a in enumerate(amounts):
        # nobody pays above their bid or receives below their offer
        if r.accepted[i]:
            assert (book.level[i] >= r.level) if buy[i] else (book.level[i] <= r.level)
        else:
            assert a == 0
        assert 0 <= a <= book.quantity_wh[i]
    bought = sum(a for a, b in zip(amounts, buy, strict=True) if b)
    sold = sum(a for a, b in zip(amounts, buy, strict=True) if not b)
    assert bought == sold == r.volume_wh > 0
    price = Fraction(r.level)  # any price: money paid equals money received
    assert price * bought == price * sold
    # the short side trades in full, the long side pro rata at one ratio
    for side in (True, False):
        ratios = {a / int(book.quantity_wh[i]) for i, a in enumerate(amounts)
                  if r.accepted[i] and buy[i] == side}
        assert len(ratios) <= 1
    # per-supplier totals add up to the volume
    assert sum(r.supplier_bought_wh) == sum(r.supplier_sold_wh) == r.volume_wh
    for s in range(3):
        assert r.supplier_bought_wh[s] == sum(
            a for i, a in enumerate(amounts) if buy[i] and book.supplier[i] == s)


@settings(max_examples=200, deadline=None)
@given(books)
def test_no_other_grid_price_trades_more(data: tuple[int, list[tuple[str, int, int, int]]]) -> None:
    levels, bids = data
    book = book_of(*bids)
    r = clear(book, levels)
    for k in range(levels):
        d = sum(q for side, q, lv, _ in bids if side == "buy" and lv >= k)
        s = sum(q for side, q, lv, _ in bids if side == "sell" and lv <= k)
        assert min(d, s) <= r.volume_wh


@settings(max_examples=200, deadline=None)
@given(books, st.randoms(use_true_random=False))
def test_order_and_identity_do_not_matter(
    data: tuple[int, list[tuple[str, int, int, int]]], rnd: object
) -> None:
    levels, bids = data
    perm = list(range(len(bids)))
    rnd.shuffle(perm)  # type: ignore[attr-defined]
    book = book_of(*bids)
    shuffled = book_of(*[bids[i] for i in perm])
    a, b = clear(book, levels), clear(shuffled, levels)
    assert a.level == b.level and a.volume_wh == b.volume_wh
    ta, tb = traded(a, book), traded(b, shuffled)
    assert [ta[i] for i in perm] == tb
    # who submitted does not matter: renaming bidders changes nothing
    named = OrderBook(book.is_buy, book.quantity_wh, book.level, book.supplier, book.suppliers,
                      bidders=tuple(f"x{i}" for i in range(len(bids))))
    assert traded(clear(named, levels), named) == ta


def test_worked_example_rationing_sellers() -> None:
    # buyer 2 kWh at level 110; sellers 1 kWh at 10 and 2 kWh at 60 (grid 0.04 + 0.001·k)
    book = book_of(("buy", 2000, 110, 0), ("sell", 1000, 10, 0), ("sell", 2000, 60, 1))
    r = clear(book, 161)
    # V is 2000 on levels 60..110 with |D − S| = 1000 everywhere: the middle is 85
    assert r.level == 85 and r.volume_wh == 2000
    assert traded(r, book) == [2000, Fraction(2000, 3), Fraction(4000, 3)]
    assert r.supplier_sold_wh == (Fraction(2000, 3), Fraction(4000, 3), 0)


def test_worked_example_rationing_buyers_and_imbalance_rule() -> None:
    # sellers 3 at level 2; buyers 2 at 5 and 4 at 3. V(2..3) = 3, V(4..5) = 2.
    book = book_of(("sell", 3, 2, 0), ("buy", 2, 5, 0), ("buy", 4, 3, 0))
    r = clear(book, 8)
    # at levels 2 and 3 D = 6, S = 3: equal imbalance, the lower middle is 2
    assert r.level == 2
    assert traded(r, book) == [3, 1, 2]


def test_imbalance_breaks_ties_before_the_middle() -> None:
    # V = 5 on levels 1..4 (whose middle would be 2); |D − S| is 0 on 1..2 and 2 on 3..4
    book = book_of(("buy", 5, 4, 0), ("sell", 5, 1, 0), ("sell", 2, 3, 0))
    r = clear(book, 6)
    assert r.level == 1 and r.volume_wh == 5
    assert traded(r, book) == [5, 5, 0]


def test_lower_of_two_middles() -> None:
    book = book_of(("buy", 4, 5, 0), ("sell", 4, 2, 0))
    r = clear(book, 8)  # levels 2,3,4,5 tie on everything: middles 3 and 4
    assert r.level == 3


def test_no_trade_when_buyers_are_below_sellers() -> None:
    book = book_of(("buy", 4, 1, 0), ("sell", 4, 2, 1))
    r = clear(book, 8)
    assert r.level is None and not r.traded and r.volume_wh == 0
    assert not r.accepted.any()


@pytest.mark.parametrize("bids", [[], [("buy", 3, 1, 0)], [("sell", 3, 1, 0)]])
def test_no_trade_with_one_side(bids: list[tuple[str, int, int, int]]) -> None:
    assert clear(book_of(*bids), 4).level is None


def test_equal_prices_form_one_virtual_bidder() -> None:
    one = clear(book_of(("buy", 6, 3, 0), ("sell", 6, 3, 0)), 6)
    split = clear(book_of(("buy", 2, 3, 0), ("buy", 4, 3, 0), ("sell", 6, 3, 0)), 6)
    assert one.level == split.level == 3 and one.volume_wh == split.volume_wh == 6


def test_clearing_level_range_is_contiguous_on_random_books() -> None:
    for seed in range(20):
        book = random_book(300, 64, 3, seed=seed, max_quantity_wh=50)
        c = curves(book, 64)
        v = c.volume
        best = np.flatnonzero(v == v.max())
        imb = np.abs(c.demand - c.supply)[best]
        chosen = best[imb == imb.min()]
        assert np.all(np.diff(chosen) == 1)
        assert clearing_level(c.demand, c.supply) == chosen[(len(chosen) - 1) // 2]


def test_large_book_matches_brute_force_on_curves() -> None:
    book = random_book(200_000, 256, 10, seed=7)
    r = clear(book, 256)
    d = np.array([book.quantity_wh[book.is_buy & (book.level >= k)].sum() for k in range(256)])
    s = np.array([book.quantity_wh[~book.is_buy & (book.level <= k)].sum() for k in range(256)])
    assert r.level == clearing_level(d, s)
    assert r.volume_wh == min(d[r.level], s[r.level])
    assert sum(r.supplier_bought_wh) == r.volume_wh


def test_group_sum_is_exact_beyond_float53() -> None:
    values = np.array([2**52, 1, 2**52, 3], dtype=np.int64)
    out = group_sum(np.array([0, 0, 1, 1]), values, 2)
    assert out.tolist() == [2**52 + 1, 2**52 + 3]
