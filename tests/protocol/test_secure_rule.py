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


def run(demand: np.ndarray, supply: np.ndarray) -> Public:
    def wrap(v: np.ndarray):  # type: ignore[no-untyped-def]
        return secint.array(np.array([int(a) for a in v], dtype=object))

    async def go() -> Public:
        return await clear_curves(mpc, wrap(demand), wrap(supply), 2**33)

    result: Public = mpc.run(go())
    return result


def check(buy: list[int], sell: list[int]) -> None:
    demand = np.cumsum(np.array(buy, dtype=np.int64)[::-1])[::-1]
    supply = np.cumsum(np.array(sell, dtype=np.int64))
    want = clearing_level(demand, supply)
    got = run(demand, supply)
    assert got.level == want
    if want is None:
        assert (got.volume, got.demand, got.supply) == (0, 0, 0)
    else:
        assert (got.demand, got.supply) == (demand[want], supply[want])
        assert got.volume == min(demand[want], supply[want])


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
