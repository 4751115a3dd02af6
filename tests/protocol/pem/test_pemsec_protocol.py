"""The private PEM equals the plaintext PEM: price exactly, amounts within the documented bound.

Random windows of every market kind, at several key sizes, with real separate parties (own
keys, own data, serialised messages); one run spread over OS processes.
"""

from __future__ import annotations

import math
import random
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import pytest

from sealgrid.mechanism.pem import FIXED, Agent, MarketKind, PemInputError, PemMarket, run_pem
from sealgrid.protocol.pem import run_pem_secure
from sealgrid.protocol.pem.params import (
    CANDIDATES,
    RATIO_BITS,
    SIGMA,
    amount_bounds,
    designate,
    nonce_bits,
    ratio_width,
    window_order,
)
from sealgrid.protocol.pem.runner import run_windows_local

if TYPE_CHECKING:
    from tests.protocol.pem.conftest import KeyCache

PAPER = PemMarket.from_values(120, 80, 90, 110)
K = 1 << RATIO_BITS


def random_agents(rng: random.Random, n: int, sellers: float) -> list[Agent]:
    agents = []
    for i in range(n):
        selling = rng.random() < sellers
        g = rng.uniform(1, 4) if selling else rng.uniform(0, 0.5)
        load = rng.uniform(0, 0.5) if selling else rng.uniform(1, 4)
        b = rng.uniform(-0.3, 0.3)
        agents.append(Agent.from_values(
            f"h{i}", f"{g:.6f}", f"{load:.6f}", f"{b:.6f}", rng.choice(["20", "40"]),
            f"{rng.uniform(0.05, 0.95):.6f}"))
    return agents


def assert_matches(agents: list[Agent], market: PemMarket, secure: object) -> None:
    """Same kind, same price, same sellers' plans; each amount within the bound of docs/pem.md:
    e·(1 − (σ+1)/(s+σ)) < e' < e·(1 + s/(K − s)), s the |sn| (fixed point) whose ratio was
    scaled."""
    ref = run_pem(agents, market)
    assert secure.market is ref.market  # type: ignore[attr-defined]
    assert secure.price == ref.price  # type: ignore[attr-defined]
    assert secure.sellers == ref.sellers  # type: ignore[attr-defined]
    trades = secure.trades  # type: ignore[attr-defined]
    assert [(t.seller, t.buyer) for t in trades] == [(t.seller, t.buyer) for t in ref.trades]
    net = {a.name: abs(a.net) for a in agents}
    for got, want in zip(trades, ref.trades, strict=True):
        s = net[want.buyer] if ref.market is MarketKind.GENERAL else net[want.seller]
        low, high = amount_bounds(want.energy, s)
        assert low < got.energy < high
        assert abs(got.energy - want.energy) < Fraction(SIGMA + 1, FIXED)  # < σ+1 units per pair
        assert got.payment == ref.price * got.energy


KINDS = {"general": 0.3, "extreme": 0.8}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("bits", [512])
def test_random_windows_equal_the_plaintext_pem(keys: KeyCache, kind: str, bits: int) -> None:
    rng = random.Random(f"{kind}{bits}")
    n = 12
    windows = [random_agents(rng, n, KINDS[kind]) for _ in range(4)]
    outcomes, stats, _ = run_windows_local(windows, PAPER, key_bits=bits, seed=bits,
                                           keys=keys.get(bits, n))
    for agents, outcome in zip(windows, outcomes, strict=True):
        assert_matches(agents, PAPER, outcome)
    assert any(o.market.value == kind for o in outcomes)
    assert stats.bytes_per_agent > 0


def test_1024_bit_keys(keys: KeyCache) -> None:
    rng = random.Random(1024)
    windows = [random_agents(rng, 8, 0.4), random_agents(rng, 8, 0.9)]
    outcomes, _, _ = run_windows_local(windows, PAPER, key_bits=1024, keys=keys.get(1024, 8))
    for agents, outcome in zip(windows, outcomes, strict=True):
        assert_matches(agents, PAPER, outcome)


def test_2048_bit_keys_once(keys: KeyCache) -> None:
    rng = random.Random(2048)
    agents = random_agents(rng, 5, 0.4)
    outcomes, _, _ = run_windows_local([agents], PAPER, key_bits=2048, keys=keys.get(2048, 5))
    assert_matches(agents, PAPER, outcomes[0])


def test_no_sellers_no_buyers_and_prices_clipped(keys: KeyCache) -> None:
    buyers_only = [Agent.from_values(f"b{i}", "0", f"{i + 1}", "0", "20", "0.5") for i in range(4)]
    sellers_only = [Agent.from_values(f"b{i}", "3", "1", "0", "20", "0.5") for i in range(4)]
    # one tiny seller against big buyers: p̂ far above p_h, clipped to p_h
    high = [Agent.from_values("s", "0.2", "0.1", "0", "200", "0.5"), *buyers_only[1:]]
    mixed = [Agent.from_values("s", "2", "0", "0", "1", "0.5"), buyers_only[1],
             Agent.from_values("z", "1", "1", "0", "20", "0.5"), buyers_only[3]]  # z: sn = 0
    windows = [buyers_only, sellers_only, high, mixed]
    names_fixed = [[Agent(f"a{i}", a.generation, a.load, a.battery, a.k, a.epsilon)
                    for i, a in enumerate(w)] for w in windows]
    outcomes, _, _ = run_windows_local(names_fixed, PAPER, key_bits=512, keys=keys.get(512, 4))
    kinds = [o.market for o in outcomes]
    assert kinds == [MarketKind.NO_SELLERS, MarketKind.EXTREME, MarketKind.GENERAL,
                     MarketKind.GENERAL]
    assert outcomes[2].price == PAPER.high and outcomes[3].price == PAPER.low
    for agents, outcome in zip(names_fixed, outcomes, strict=True):
        assert_matches(agents, PAPER, outcome)


def test_what_each_party_learns_in_clear(keys: KeyCache) -> None:
    rng = random.Random(7)
    agents = random_agents(rng, 10, 0.4)
    (outcome,), _, parties = run_windows_local([agents], PAPER, key_bits=512, seed=3,
                                               keys=keys.get(512, 10))
    assert outcome.market is MarketKind.GENERAL
    order = window_order(3, 0, len(agents))
    sellers = [i for i in order if agents[i].net > 0]
    buyers = [i for i in order if agents[i].net < 0]
    d = designate(sellers, buyers, order[:CANDIDATES])
    e_s = sum(agents[i].net for i in sellers)
    e_b = -sum(agents[i].net for i in buyers)
    r_b: Any = parties[d.r1].revealed["masked_demand"]
    r_s: Any = parties[d.r2].revealed["masked_supply"]
    assert r_b - r_s == e_b - e_s and r_b != e_b and r_s != e_s  # masked by the same nonces
    assert parties[d.pricer].revealed["sum_k"] == sum(agents[i].k for i in sellers)  # Lemma 3
    assert parties[d.pricer].revealed["sum_pricing_term"] == sum(
        agents[i].pricing_term for i in sellers)
    for i, party in enumerate(parties):
        expected = set()
        if i == d.r1:
            expected |= {"masked_demand", "market_is_general"}
        if i == d.r2:
            expected |= {"masked_supply", "market_is_general"}
        if i == d.pricer:
            expected |= {"sum_k", "sum_pricing_term"}
        if i in sellers:
            expected.add("scaled_inverse_ratios")  # Lemma 4: E_b·⌊K/|sn_j|⌋ for every buyer j
        assert set(party.revealed) == expected, i
    scaled = dict(parties[sellers[0]].revealed["scaled_inverse_ratios"])  # type: ignore[call-overload]
    assert set(scaled) == set(buyers)
    for j, value in scaled.items():  # D'_j = E_b·q'_j + η_j with the documented ranges
        s = -agents[j].net
        spread = max(1, (K * SIGMA) // (s * s))
        assert e_b * (K // s) <= value < e_b * (K // s + spread) + (1 << nonce_bits(10))
        assert value < 1 << ratio_width(10)
    # the gcd leak of the unnoised ratios (docs/pem.md) is gone: no common factor E_b
    assert math.gcd(*scaled.values()) != e_b
    assert all(value % e_b for value in scaled.values())


def test_run_pem_secure_over_processes() -> None:
    rng = random.Random(99)
    agents = random_agents(rng, 9, 0.4)
    outcome, stats = run_pem_secure(agents, PAPER, key_bits=512, seed=5, processes=2)
    assert_matches(agents, PAPER, outcome)
    assert stats.processes == 2 and stats.bytes_per_agent > 0 and stats.pool_misses == 0


def test_inputs_out_of_range_are_refused() -> None:
    big = Agent("x", 2 * 10**12, 0, 0, FIXED, FIXED // 2)
    with pytest.raises(PemInputError):
        run_pem_secure([big, Agent("y", 0, 1, 0, FIXED, FIXED // 2)], PAPER, key_bits=512)


def test_two_agents_one_seller_one_buyer(keys: KeyCache) -> None:
    first = [Agent.from_values("x", "2", "0.5", "0", "20", "0.5"),
             Agent.from_values("y", "0", "3", "0", "40", "0.5")]
    second = [Agent.from_values("x", "0", "1", "0", "20", "0.5"),  # roles swapped
              Agent.from_values("y", "4", "0.5", "0", "40", "0.5")]
    outcomes, _, _ = run_windows_local([first, second], PAPER, key_bits=512,
                                       keys=keys.get(512, 2))
    for window, outcome in zip([first, second], outcomes, strict=True):
        assert_matches(window, PAPER, outcome)
    assert [o.market for o in outcomes] == [MarketKind.GENERAL, MarketKind.EXTREME]
