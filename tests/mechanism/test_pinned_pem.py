"""PEM pinned: whole outcomes worked out by hand from paper xie2020's equations, whole messages.

Market prices as in the paper's evaluation: retail 120, feed-in 80, range [90, 110].
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal, localcontext
from fractions import Fraction as F

import pytest

from sealgrid.mechanism.pem import (
    FIXED,
    PRICE_SCALE,
    Agent,
    MarketKind,
    PemInputError,
    PemMarket,
    PemOutcome,
    SellerPlan,
    Trade,
    classify,
    market_kind,
    optimal_load,
    run_pem,
    stackelberg_price,
    to_fixed,
)

from .test_pem import PAPER, agent


def refusal(make: object) -> str:
    with pytest.raises(PemInputError) as info:
        make()  # type: ignore[operator]
    return str(info.value)


# --- fixed point and agents ------------------------------------------------------------------

def test_fixed_point_scales() -> None:
    assert FIXED == 10**6 and PRICE_SCALE == 10**6


@pytest.mark.parametrize(("value", "expected"), [
    ("1.5", 1_500_000), ("0.000001", 1), (2, 2_000_000), (0.25, 250_000),
    (Decimal("-0.5"), -500_000), (" 3 ", 3_000_000),
])
def test_to_fixed(value: object, expected: int) -> None:
    assert to_fixed(value, "x") == expected  # type: ignore[arg-type]


def test_to_fixed_refusals_whole_messages() -> None:
    assert refusal(lambda: to_fixed("abc", "load")) == "load is not a number"
    assert refusal(lambda: to_fixed("0.0000001", "k")) == "k has more than 6 decimals"
    assert refusal(lambda: to_fixed("inf", "battery")) == "battery is not a number"


FIELDS = ("generation", "load", "battery", "k", "epsilon")
GOOD = {"generation": "1", "load": "1", "battery": "0", "k": "20", "epsilon": "0.5"}


@pytest.mark.parametrize("field", FIELDS)
def test_agent_field_names_in_messages(field: str) -> None:
    def build(value: str) -> Agent:
        values = GOOD | {field: value}
        return Agent.from_values("a", *(values[f] for f in FIELDS))

    assert refusal(lambda: build("x")) == f"{field} is not a number"
    assert refusal(lambda: build("0.1234567")) == f"{field} has more than 6 decimals"


@pytest.mark.parametrize(("g", "l", "k", "eps", "message"), [
    ("-1", "1", "20", "0.5", "generation must not be negative"),
    ("1", "-0.5", "20", "0.5", "load must not be negative"),
    ("1", "1", "0", "0.5", "k (load preference) must be positive"),
    ("1", "1", "-3", "0.5", "k (load preference) must be positive"),
    ("1", "1", "20", "0", "epsilon (battery loss) must lie strictly between 0 and 1"),
    ("1", "1", "20", "1", "epsilon (battery loss) must lie strictly between 0 and 1"),
    ("1", "1", "20", "1.5", "epsilon (battery loss) must lie strictly between 0 and 1"),
    ("1", "1", "20", "-0.5", "epsilon (battery loss) must lie strictly between 0 and 1"),
])
def test_agent_refusals_whole_messages(g: str, l: str, k: str, eps: str, message: str) -> None:
    assert refusal(lambda: Agent.from_values("a", g, l, "0", k, eps)) == message


def test_agent_name_refusal_and_trimming() -> None:
    assert refusal(lambda: Agent.from_values("  ", "1", "1", "0", "20", "0.5")) == (
        "agent name is empty")
    assert Agent.from_values(" a1 ", "1", "1", "0", "20", "0.5").name == "a1"


def test_agent_limits_are_allowed() -> None:
    # zero generation and load, the smallest k, ε just inside (0, 1), a discharging battery
    a = Agent.from_values("a", "0", "0", "-0.25", "0.000001", "0.000001")
    assert (a.generation, a.load, a.battery, a.k, a.epsilon) == (0, 0, -250_000, 1, 1)
    assert Agent.from_values("b", "0", "0", "0", "1", "0.999999").epsilon == 999_999


def test_net_and_pricing_term_by_hand() -> None:
    a = agent("a", "0.5", "0.1", "0.2", k="40", eps="0.7")
    # sn = 0.5 − 0.1 − 0.2 = 0.2
    assert a.net == 200_000
    # g + 1 + ε·b − b = 0.5 + 1 + 0.14 − 0.2 = 1.44, ×FIXED²
    assert a.pricing_term == 1_440_000_000_000
    # discharging (b < 0) adds supply: 0.5 − 0.1 + 0.3 = 0.7; term 0.5 + 1 − 0.21 + 0.3 = 1.59
    d = agent("d", "0.5", "0.1", "-0.3", eps="0.7")
    assert d.net == 700_000 and d.pricing_term == 1_590_000_000_000


# --- market prices ---------------------------------------------------------------------------

def test_market_prices() -> None:
    m = PemMarket.from_values("120.5", 80, "90.000001", 110)
    assert (m.retail, m.feed_in, m.low, m.high) == (F(241, 2), F(80), F(90_000_001, 10**6),
                                                    F(110))
    # low = high is allowed (Eq. 3: p_l ≤ p_h)
    assert PemMarket.from_values(120, 80, 100, 100).low == 100


@pytest.mark.parametrize("prices", [
    (120, 80, 80, 110), (120, 80, 100, 90), (110, 80, 90, 110), (120, 95, 90, 110),
])
def test_market_refusal_whole_message(prices: tuple[int, ...]) -> None:
    assert refusal(lambda: PemMarket.from_values(*prices)) == (
        "prices must satisfy feed-in < low ≤ high < retail (paper Eq. 3)")


@pytest.mark.parametrize(("position", "name"), [(0, "retail"), (1, "feed-in"), (2, "low"),
                                                (3, "high")])
def test_market_field_names_in_messages(position: int, name: str) -> None:
    good = ["120", "80", "90", "110"]
    bad = list(good)
    bad[position] = "1.0000001"
    assert refusal(lambda: PemMarket.from_values(*bad)) == f"{name} has more than 6 decimals"
    bad[position] = "twelve"
    assert refusal(lambda: PemMarket.from_values(*bad)) == f"{name} is not a number"


# --- roles and market kind -------------------------------------------------------------------

def test_the_smallest_surplus_is_a_seller() -> None:
    tiny = agent("s", "0.000001", "0")  # sn = 1 fixed-point unit
    zero = agent("z", "1", "1")
    short = agent("b", "0", "0.000001")
    sellers, buyers = classify([tiny, zero, short])
    assert [a.name for a in sellers] == ["s"] and [a.name for a in buyers] == ["b"]


@pytest.mark.parametrize(("supply", "demand", "has_sellers", "kind"), [
    (4, 5, True, MarketKind.GENERAL),
    (5, 5, True, MarketKind.EXTREME),
    (6, 5, True, MarketKind.EXTREME),
    (0, 5, False, MarketKind.NO_SELLERS),
])
def test_market_kind(supply: int, demand: int, has_sellers: bool, kind: MarketKind) -> None:
    assert market_kind(supply, demand, has_sellers) is kind


# --- Eq. 13–14 -------------------------------------------------------------------------------

def floor_sqrt(value: Decimal) -> F:
    """An independent √ rounded down to 10⁻⁶, in decimal arithmetic."""
    with localcontext() as ctx:
        ctx.prec = 60
        root = value.sqrt().quantize(Decimal("0.000001"), rounding=ROUND_FLOOR)
    return F(root)


def test_stackelberg_price_exact() -> None:
    # ps · Σk / Σterm = 120 · 100 / 1.2 = 10000: p̂ = 100 exactly
    assert stackelberg_price(PAPER, 100 * FIXED, 1_200_000 * FIXED) == 100
    # 120 · 200 / 2.77: √8664.259927… = 93.0820064…, rounded down to 93.082006
    price = stackelberg_price(PAPER, 200 * FIXED, 2_770_000 * FIXED)
    assert price == F("93.082006") == floor_sqrt(Decimal(24000) / Decimal("2.77"))
    # 120 · 81 / 100 = 97.2: √97.2 = 9.859… is below p_l: clipped to 90
    assert stackelberg_price(PAPER, 81 * FIXED, 100 * FIXED**2) == 90
    # 120 · 200 / 1.5 = 16000: √ = 126.49… above p_h: clipped to 110
    assert stackelberg_price(PAPER, 200 * FIXED, 1_500_000 * FIXED) == 110


def test_stackelberg_price_smallest_aggregates_are_accepted() -> None:
    # Σk = 10⁻⁶ and Σterm = 10⁻¹²: 120 · 10⁶ is far above p_h
    assert stackelberg_price(PAPER, 1, 1) == 110
    # Σk = 10⁻⁶ against Σterm = 100: far below p_l
    assert stackelberg_price(PAPER, 1, 100 * FIXED**2) == 90


@pytest.mark.parametrize(("sum_k", "sum_term"), [(0, FIXED**2), (FIXED, 0), (-1, FIXED**2),
                                                 (FIXED, -5), (0, 0)])
def test_stackelberg_price_refuses_non_positive_aggregates(sum_k: int, sum_term: int) -> None:
    assert refusal(lambda: stackelberg_price(PAPER, sum_k, sum_term)) == (
        "the sellers' aggregates must be positive")


def test_optimal_load_eq_15_by_hand() -> None:
    # k·ε/p − 1 − ε·b = 40 · 0.7 / 100 − 1 − 0.7 · 0.2 = 0.28 − 1.14
    a = agent("a", "0.5", "0.1", "0.2", k="40", eps="0.7")
    assert optimal_load(a, F(100)) == F("-0.86")
    # 300 · 0.5 / 75 − 1 − 0.5 · (−1) = 2 − 1 + 0.5
    b = agent("b", "3", "0", "-1", k="300", eps="0.5")
    assert optimal_load(b, F(75)) == F("1.5")


# --- whole outcomes --------------------------------------------------------------------------

def test_general_market_whole_outcome_clipped_to_low() -> None:
    # sellers s1 (sn 1), s2 (sn 0.5); buyers b1 (2), b2 (4): E_s = 1.5 < E_b = 6, general.
    # p̂ = √(120 · 40 / (3 + 2.5)) ≈ 29.5: clipped to p_l = 90.
    agents = [agent("s1", "2", "1"), agent("s2", "1.5", "1"), agent("b1", "0", "2"),
              agent("b2", "0", "4")]
    out = run_pem(agents, PAPER)
    # e_ij = sn_i · |sn_j| / E_b; each paid at 90
    assert out == PemOutcome(
        market=MarketKind.GENERAL, price=F(90), supply=F(3, 2), demand=F(6),
        trades=(Trade("s1", "b1", F(1, 3), F(30)), Trade("s1", "b2", F(2, 3), F(60)),
                Trade("s2", "b1", F(1, 6), F(15)), Trade("s2", "b2", F(1, 3), F(30))),
        # l* = 20 · 0.9 / 90 − 1 = −0.8
        sellers=(SellerPlan("s1", F(1), F("-0.8")), SellerPlan("s2", F(1, 2), F("-0.8"))),
    )


def test_general_market_whole_outcome_inside_the_range() -> None:
    # Σk = 200, Σterm = (0.3 + 1) + (0.5 + 1 + 0.27 − 0.3) = 2.77: p̂ = 93.082006 (above)
    agents = [agent("s1", "0.3", "0.1", k="100"), agent("s2", "0.5", "0.1", "0.3", k="100"),
              agent("b1", "0", "5")]
    out = run_pem(agents, PAPER)
    p = F("93.082006")
    assert out.market is MarketKind.GENERAL and out.price == p
    assert (out.supply, out.demand) == (F("0.3"), F(5))
    # s1 sells 0.2 · 5 / 5, s2 sells 0.1 · 5 / 5
    assert out.trades == (Trade("s1", "b1", F("0.2"), F("0.2") * p),
                          Trade("s2", "b1", F("0.1"), F("0.1") * p))
    assert out.trades[0].payment == F("18.6164012")
    # l* = 100 · 0.9 / p − 1 − 0.9 · b
    assert out.sellers == (SellerPlan("s1", F("0.2"), 90 / p - 1),
                           SellerPlan("s2", F("0.1"), 90 / p - 1 - F("0.27")))


def test_extreme_market_whole_outcome() -> None:
    # E_s = 4 + 2 = 6 ≥ E_b = 3: price p_l; e_ij = |sn_j| · sn_i / E_s
    agents = [agent("s1", "5", "1"), agent("b1", "0", "2"), agent("s2", "3", "1"),
              agent("b2", "0", "1")]
    out = run_pem(agents, PAPER)
    assert out == PemOutcome(
        market=MarketKind.EXTREME, price=F(90), supply=F(6), demand=F(3),
        trades=(Trade("s1", "b1", F(4, 3), F(120)), Trade("s1", "b2", F(2, 3), F(60)),
                Trade("s2", "b1", F(2, 3), F(60)), Trade("s2", "b2", F(1, 3), F(30))),
        sellers=(SellerPlan("s1", F(4), F("-0.8")), SellerPlan("s2", F(2), F("-0.8"))),
    )


def test_extreme_market_price_is_the_low_end_not_eq_13() -> None:
    # a seller whose Eq. 13 price would be 110 (clipped): in the extreme market it is p_l = 95
    market = PemMarket.from_values(120, 80, 95, 110)
    out = run_pem([agent("s", "0.02", "0.01", k="200"), agent("b", "0", "0.005")], market)
    assert out.market is MarketKind.EXTREME and out.price == 95
    assert out.trades == (Trade("s", "b", F("0.005"), F("0.475")),)


def test_no_sellers_whole_outcome() -> None:
    # buyers need 2 and 1; c is balanced (off the market): everyone buys at retail
    out = run_pem([agent("b1", "0", "2"), agent("b2", "1", "2"), agent("c", "1", "1")], PAPER)
    assert out == PemOutcome(MarketKind.NO_SELLERS, F(120), F(0), F(3), (), ())


def test_sellers_without_buyers_whole_outcome() -> None:
    out = run_pem([agent("s", "3", "1.5")], PAPER)
    assert out == PemOutcome(MarketKind.EXTREME, F(90), F("1.5"), F(0), (),
                             (SellerPlan("s", F("1.5"), F("-0.8")),))


def test_duplicate_names_whole_message() -> None:
    assert refusal(lambda: run_pem([agent("a", "1", "0"), agent("a", "0", "1")], PAPER)) == (
        "agent names must be unique")
