"""The oblivious clearing rule (MPyC, one party) picks the reference's level on any curves."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sealgrid.mechanism.auction import clearing_level
from sealgrid.protocol import field as F
from sealgrid.protocol.inprocess import one_party_mpc
from sealgrid.protocol.mpcclear import Public, clear_curves
from sealgrid.protocol.party import SECINT_BITS

mpc = one_party_mpc()
secint = mpc.SecInt(SECINT_BITS, p=F.MODULUS)


def run(demand: np.ndarray, supply: np.ndarray,
        counts: tuple[np.ndarray, np.ndarray] | None = None, m: int = 1) -> tuple[Public, int]:
    def wrap(v: np.ndarray):
        return secint.array(np.array([int(a) for a in v], dtype=object))

    async def go() -> tuple[Public, int]:
        wrapped = None if counts is None else (wrap(counts[0]), wrap(counts[1]))
        public, volume = await clear_curves(mpc, wrap(demand), wrap(supply), 2**33, wrapped, m)
        if volume is None:
            return public, 0
        share = await mpc.gather(volume)  # one party: its share is the value
        return public, int(share.value if hasattr(share, "value") else share)

    result: tuple[Public, int] = mpc.run(go())
    return result


def check(buy: list[int], sell: list[int]) -> None:
    demand = np.cumsum(np.array(buy, dtype=np.int64)[::-1])[::-1]
    supply = np.cumsum(np.array(sell, dtype=np.int64))
    want = clearing_level(demand, supply)
    got, volume = run(demand, supply)
    assert got.level == want
    assert volume == (0 if want is None else min(demand[want], supply[want]))


def check_participation(buys: list[list[int]], sells: list[list[int]], m: int) -> None:
    """``buys[k]``: the quantities of the buy bids at level k (likewise ``sells``)."""
    demand = np.cumsum(np.array([sum(b) for b in buys], dtype=np.int64)[::-1])[::-1]
    supply = np.cumsum(np.array([sum(s) for s in sells], dtype=np.int64))
    cd = np.cumsum(np.array([len(b) for b in buys], dtype=np.int64)[::-1])[::-1]
    cs = np.cumsum(np.array([len(s) for s in sells], dtype=np.int64))
    k = clearing_level(demand, supply)
    want = k if k is not None and cd[k] >= m and cs[k] >= m else None
    got, volume = run(demand, supply, (cd, cs), m)
    assert got.level == want
    assert volume == (0 if want is None else min(demand[want], supply[want]))


levels = st.integers(1, 40)
amounts = st.sampled_from([0, 0, 0, 1, 2, 3, 5, 10_000, 2**30])


@settings(max_examples=300, deadline=None)
@given(levels.flatmap(lambda p: st.tuples(st.lists(amounts, min_size=p, max_size=p),
                                          st.lists(amounts, min_size=p, max_size=p))))
def test_matches_the_reference_rule(curves: tuple[list[int], list[int]]) -> None:
    check(*curves)


def test_grid_sizes_around_block_boundaries() -> None:
    rng = np.random.default_rng(7)
    for p in (1, 2, 3, 4, 5, 15, 16, 17, 24, 25, 26, 255, 256, 257):
        for _ in range(3):
            check(list(rng.integers(0, 3, p) * (rng.random(p) < 0.3)),
                  list(rng.integers(0, 3, p) * (rng.random(p) < 0.3)))


def test_crossing_at_the_edges() -> None:
    check([0, 0, 0, 5], [5, 0, 0, 0])  # demand only at the top, supply at the bottom
    check([5, 0, 0, 0], [0, 0, 0, 5])  # no overlap: no trade
    check([1] * 16, [1] * 16)  # a long tie in a full block
    check([0] * 15 + [7], [7] + [0] * 15)  # trades on every level: the middle


bids_at = st.lists(st.sampled_from([1, 2, 7, 500, 10_000]), max_size=3)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 20).flatmap(lambda p: st.tuples(
    st.lists(bids_at, min_size=p, max_size=p), st.lists(bids_at, min_size=p, max_size=p))),
    st.integers(2, 4))
def test_minimum_participation_matches_the_reference(
    bids: tuple[list[list[int]], list[list[int]]], m: int
) -> None:
    check_participation(*bids, m)


def test_minimum_participation_at_its_edges() -> None:
    # three buyers and three sellers meet at level 1: trades with m = 3, not with m = 4
    buys, sells = [[], [5, 5, 5], []], [[], [5, 5, 5], []]
    check_participation(buys, sells, 3)
    check_participation(buys, sells, 4)
    assert run(np.array([15, 15, 0]), np.array([0, 15, 15]),
               (np.array([3, 3, 0]), np.array([0, 3, 3])), 3)[0].level == 1
    assert run(np.array([15, 15, 0]), np.array([0, 15, 15]),
               (np.array([3, 3, 0]), np.array([0, 3, 3])), 4)[0].level is None
    # one big seller against three buyers: thin on the sell side
    check_participation([[], [], [1, 1, 1]], [[3], [], []], 2)
    check_participation([[1], [1], [1, 1]], [[1, 1], [1], [1]], 2)
