"""Bidding strategies and mechanism inputs: on the grid, within [feed-in, retail], seeded."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from sealgrid.mechanism.bids import MarketRules, check_bid
from sealgrid.mechanism.pem import Agent
from sealgrid.sim.agents import (
    MarketParams,
    Strategy,
    bid_levels,
    order_book,
    pem_agents,
    quantity_wh,
)


@pytest.mark.parametrize("strategy", list(Strategy))
def test_every_bid_is_a_valid_bid_between_feed_in_and_retail(strategy):
    params = MarketParams(strategy=strategy)
    rules = MarketRules(params.grid)
    rng = np.random.default_rng(1)
    net = rng.integers(-50_000, 50_000, size=200)
    names = tuple(f"h{i:03d}" for i in range(200))
    for window in range(5):
        book, who = order_book(params, window, names, net)
        assert len(book) == int((quantity_wh(net) > 0).sum())
        for j in range(len(book)):
            price = params.grid.price(int(book.level[j]))
            assert params.feed_in <= price <= params.retail
            side = "buy" if book.is_buy[j] else "sell"
            kwh = Decimal(int(book.quantity_wh[j])) / 1000
            bid, errors = check_bid(rules, book.bidders[j], side, kwh, price, "supplier")
            assert errors == [] and bid is not None
            assert book.is_buy[j] == (net[who[j]] < 0)


def test_zi_c_is_deterministic_spread_and_prefix_stable():
    params = MarketParams()
    is_buy = np.arange(300) % 2 == 0
    a = bid_levels(params, 7, is_buy)
    assert (a == bid_levels(params, 7, is_buy)).all()
    assert (a[:40] == bid_levels(params, 7, is_buy[:40])).all()
    assert not (a == bid_levels(params, 8, is_buy)).all()
    assert not (a == bid_levels(MarketParams(seed=1), 7, is_buy)).all()
    assert a.min() >= 0 and a.max() <= params.grid.levels - 1
    assert len(set(a.tolist())) > 100  # spread over the grid, not a constant


def test_reservation_strategy_bids_the_tariffs():
    params = MarketParams(strategy=Strategy.RESERVATION)
    levels = bid_levels(params, 0, np.array([True, False]))
    assert params.grid.price(int(levels[0])) == params.retail
    assert params.grid.price(int(levels[1])) == params.feed_in


def test_quantity_rounds_half_up_to_whole_wh():
    got = quantity_wh(np.array([0, 499, 500, -1499, -1500, 123_456]))
    assert got.tolist() == [0, 0, 1, 1, 2, 123]


def test_pem_agents_are_the_kwh_values_in_fixed_point():
    params = MarketParams()
    agents = pem_agents(params, 20, ("a", "b"), np.array([1_234_567, 0]), np.array([5, 42]))
    assert agents[0] == Agent.from_values("a", "1.234567", "0.000005", "0", "20", "0.9")
    assert agents[1] == Agent.from_values("b", "0", "0.000042", "0", "20", "0.9")


def test_paper_defaults_and_bad_parameters():
    p = MarketParams()
    assert (p.retail, p.feed_in, p.pem_low, p.pem_high, p.pem_k) == (120, 80, 90, 110, (20, 40))
    assert p.grid.levels == 401
    with pytest.raises(ValueError):
        MarketParams(pem_low=Decimal(70))
    with pytest.raises(ValueError):
        MarketParams(epsilon=Decimal(1))
    with pytest.raises(ValueError):
        MarketParams(tick=Decimal("0.3"))
