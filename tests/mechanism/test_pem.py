"""PEM in plaintext, checked against the equations of paper xie2020 §II–III."""

from __future__ import annotations

import math
import random
from fractions import Fraction as F

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealgrid.mechanism.pem import (
    FIXED,
    PRICE_SCALE,
    Agent,
    MarketKind,
    PemInputError,
    PemMarket,
    classify,
    distribute,
    run_pem,
    stackelberg_price,
)

PAPER = PemMarket.from_values(120, 80, 90, 110)


def agent(name: str, g: str, l: str, b: str = "0", k: str = "20", eps: str = "0.9") -> Agent:
    return Agent.from_values(name, g, l, b, k, eps)


def test_net_energy_eq_1_and_roles() -> None:
    a = agent("a", "3", "1", "0.5")
    assert a.net == int(1.5 * FIXED)
    out = run_pem([a, agent("b", "0", "2"), agent("c", "1", "1")], PAPER)
    assert [s.agent for s in out.sellers] == ["a"]  # c has sn = 0: off market
    assert {t.buyer for t in out.trades} == {"b"}


def eq13(agents: list[Agent], retail: F) -> float:
    sellers = [a for a in agents if a.net > 0]
    k = sum(a.k / FIXED for a in sellers)
    term = sum(a.generation / FIXED + 1 + a.epsilon / FIXED * a.battery / FIXED
               - a.battery / FIXED for a in sellers)
    return math.sqrt(float(retail) * k / term)


def test_general_market_price_is_eq_13_inside_the_range() -> None:
    # Σk = 200, Σ(g + 1 + εb − b) = 1.3 + 1.47: p̂ = sqrt(120 · 200 / 2.77) ≈ 93.08
    agents = [agent("s1", "0.3", "0.1", k="100"), agent("s2", "0.5", "0.1", "0.3", k="100"),
              agent("b1", "0", "5")]
    out = run_pem(agents, PAPER)
    assert out.market is MarketKind.GENERAL
    expected = eq13(agents, PAPER.retail)
    assert 90 < expected < 110
    assert abs(float(out.price) - expected) <= 1 / PRICE_SCALE
    assert out.price <= F(expected).limit_denominator(10**12)  # rounded down
    # Eq. 12 as written holds at p̂: Σterm − ps·Σk / p̂² = 0
    sum_term = sum(a.pricing_term for a in agents[:2]) / FIXED**2
    assert abs(sum_term - 120 * 200 / expected**2) < 1e-9


def test_price_clipped_to_the_limits_eq_14() -> None:
    low = run_pem([agent("s", "3", "0", k="20"), agent("b", "0", "9")], PAPER)
    assert eq13([agent("s", "3", "0", k="20")], PAPER.retail) < 90 and low.price == 90
    high = run_pem([agent("s", "0.02", "0.01", k="200"), agent("b", "0", "9")], PAPER)
    assert eq13([agent("s", "0.02", "0.01", k="200")], PAPER.retail) > 110
    assert high.price == 110


def test_optimal_load_eq_15_satisfies_first_order_condition() -> None:
    s = agent("s", "0.5", "0.1", "0.2", k="40", eps="0.7")
    out = run_pem([s, agent("s2", "0.2", "0.1", k="40"), agent("b", "0", "5")], PAPER)
    plan = out.sellers[0]
    # Eq. 9: k·ε / (1 + l + ε·b) = p
    assert F(40) * F("0.7") / (1 + plan.optimal_load + F("0.7") * F("0.2")) == out.price


def test_general_market_distribution() -> None:
    agents = [agent("s1", "2", "1"), agent("s2", "1.5", "1"), agent("b1", "0", "2"),
              agent("b2", "0", "4")]
    out = run_pem(agents, PAPER)
    assert out.market is MarketKind.GENERAL and (out.supply, out.demand) == (F("1.5"), F(6))
    e = {(t.seller, t.buyer): t for t in out.trades}
    assert e["s1", "b2"].energy == F(1) * F(4) / F(6)  # sn_i · |sn_j| / E_b
    for s, sn in (("s1", F(1)), ("s2", F("0.5"))):
        assert sum(t.energy for t in out.trades if t.seller == s) == sn  # sellers sell all
    for t in out.trades:
        assert t.payment == out.price * t.energy


def test_extreme_market_at_the_lower_price() -> None:
    agents = [agent("s1", "5", "1"), agent("s2", "3", "1"), agent("b1", "0", "2"),
              agent("b2", "0", "1")]
    out = run_pem(agents, PAPER)
    assert out.market is MarketKind.EXTREME and out.price == 90
    for b, need in (("b1", F(2)), ("b2", F(1))):
        assert sum(t.energy for t in out.trades if t.buyer == b) == need  # buyers get all
    e = {(t.seller, t.buyer): t.energy for t in out.trades}
    assert e["s1", "b1"] == F(2) * F(4) / F(6)  # |sn_j| · sn_i / E_s


def test_equal_supply_and_demand_is_extreme() -> None:
    out = run_pem([agent("s", "3", "1"), agent("b", "0", "2")], PAPER)
    assert out.market is MarketKind.EXTREME and out.trades[0].energy == 2


def test_no_sellers_everyone_buys_at_retail() -> None:
    out = run_pem([agent("b1", "0", "2"), agent("b2", "1", "2")], PAPER)
    assert out.market is MarketKind.NO_SELLERS and out.price == 120
    assert out.trades == () and out.sellers == ()


def test_sellers_without_buyers_trade_nothing() -> None:
    out = run_pem([agent("s", "3", "1")], PAPER)
    assert out.market is MarketKind.EXTREME and out.trades == ()


@pytest.mark.parametrize("kwargs", [
    {"k": "0"}, {"eps": "0"}, {"eps": "1"}, {"g": "-1"}, {"l": "-0.5"}, {"g": "0.0000001"},
    {"g": "abc"},
])
def test_agent_inputs_are_checked(kwargs: dict[str, str]) -> None:
    fields = {"g": "1", "l": "1", "b": "0", "k": "20", "eps": "0.5"} | kwargs
    with pytest.raises(PemInputError):
        agent("a", fields["g"], fields["l"], fields["b"], fields["k"], fields["eps"])


@pytest.mark.parametrize("prices", [(120, 80, 80, 110), (120, 80, 100, 90), (110, 80, 90, 110)])
def test_market_range_must_satisfy_eq_3(prices: tuple[int, int, int, int]) -> None:
    with pytest.raises(PemInputError):
        PemMarket.from_values(*prices)


def test_duplicate_agent_names_refused() -> None:
    with pytest.raises(PemInputError):
        run_pem([agent("a", "1", "0"), agent("a", "0", "1")], PAPER)


energy = st.decimals(min_value=0, max_value=5, places=3)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(energy, energy, st.sampled_from(["20", "40"])), min_size=1,
                max_size=12))
def test_random_windows_conserve_energy_and_respect_the_range(
    rows: list[tuple[object, object, str]]
) -> None:
    agents = [agent(f"h{i}", str(g), str(l), k=k) for i, (g, l, k) in enumerate(rows)]
    out = run_pem(agents, PAPER)
    assert PAPER.low <= out.price <= PAPER.high or out.market is MarketKind.NO_SELLERS
    traded = sum(t.energy for t in out.trades)
    if out.trades:
        assert traded == min(out.supply, out.demand)
    assert stackelberg_price(PAPER, 20 * FIXED, FIXED**2) >= PAPER.low


# --- distribute: the vectorised amounts equal the pairwise formula ---------------------------

def distribute_pair_by_pair(sellers: list[Agent], buyers: list[Agent], kind: MarketKind,
                            price: F) -> list[tuple[str, str, F, F]]:
    """The formula of §III-D one pair at a time with Fraction (``distribute`` before numpy)."""
    supply = sum(s.net for s in sellers)
    demand = -sum(b.net for b in buyers)
    out = []
    for s in sellers:
        for b in buyers:
            if kind is MarketKind.GENERAL:
                e = F(s.net * -b.net, demand * FIXED)
            else:
                e = F(-b.net * s.net, supply * FIXED)
            out.append((s.name, b.name, e, price * e))
    return out


def net_agent(name: str, net: int) -> Agent:
    """An agent whose net energy is exactly ``net`` fixed-point units."""
    return Agent(name, max(net, 0), max(-net, 0), 0, FIXED, FIXED // 2)


# nets from one unit to far beyond int64 products (2^90 units), so no fixed width would do
nets = st.one_of(st.integers(1, 10**7), st.integers(1, 2**90))
prices = st.one_of(
    st.fractions(min_value=-200, max_value=200, max_denominator=10**6),
    st.fractions(min_value=-(2**70), max_value=2**70, max_denominator=2**40),
    st.just(F(0)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(nets, min_size=0, max_size=7), st.lists(nets, min_size=0, max_size=7),
       st.sampled_from([MarketKind.GENERAL, MarketKind.EXTREME]), prices)
def test_distribute_equals_the_pairwise_formula(
    supplies: list[int], demands: list[int], kind: MarketKind, price: F
) -> None:
    sellers = [net_agent(f"s{i}", n) for i, n in enumerate(supplies)]
    buyers = [net_agent(f"b{j}", -n) for j, n in enumerate(demands)]
    got = distribute(sellers, buyers, kind, price)
    want = distribute_pair_by_pair(sellers, buyers, kind, price)
    assert [(t.seller, t.buyer, t.energy, t.payment) for t in got] == want
    for t, (_, _, e, pay) in zip(got, want, strict=True):
        for value, exact in ((t.energy, e), (t.payment, pay)):
            assert type(value) is F and hash(value) == hash(exact)
            assert (value.numerator, value.denominator) == (exact.numerator, exact.denominator)
            assert value.denominator > 0 and math.gcd(value.numerator, value.denominator) == 1


def test_distribute_on_a_neighbourhood_equals_the_pairwise_formula() -> None:
    rng = random.Random(5)
    agents = [net_agent(f"h{i}", rng.choice((1, -1)) * rng.randrange(1, 4 * FIXED))
              for i in range(120)]
    sellers, buyers = classify(agents)
    for kind, price in ((MarketKind.GENERAL, F("93.082006")), (MarketKind.EXTREME, F(90))):
        got = distribute(sellers, buyers, kind, price)
        assert len(got) == len(sellers) * len(buyers) > 1000
        assert [(t.seller, t.buyer, t.energy, t.payment) for t in got] == (
            distribute_pair_by_pair(sellers, buyers, kind, price))
