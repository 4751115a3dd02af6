"""Mechanism B: PEM, Stackelberg pricing among agents (paper xie2020 §II–III). Pure.

Every agent input is a fixed-point integer with :data:`FIXED` units per unit (6 decimals),
so that the private version, which aggregates integers under Paillier, computes exactly the
same price. Equations, with ``sn = g − l − b`` (Eq. 1):

* sellers ``sn > 0``, buyers ``sn < 0``; supply ``E_s``, demand ``E_b`` (Eq. 2);
* no sellers: everyone buys from the grid at the retail price;
* general market ``E_s < E_b``: ``p̂ = sqrt(ps · Σk / Σ(g + 1 + ε·b − b))`` over the sellers
  (Eq. 13), clipped to ``[p_l, p_h]`` (Eq. 14); sellers' optimal load ``l* = k·ε/p* − 1 − ε·b``
  (Eq. 15); each buyer j takes ``e_ij = sn_i · |sn_j| / E_b`` from seller i and pays ``p*·e_ij``;
* extreme market ``E_s ≥ E_b``: price ``p_l``; ``e_ij = |sn_j| · sn_i / E_s``.

``p̂`` is rounded down to :data:`PRICE_SCALE` (an integer square root), the only rounding.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from math import isqrt

import numpy as np

from sealgrid.mechanism.grid import parse_decimal

#: Fixed-point units per unit of every agent input (energy, k, ε): 6 decimals.
FIXED = 10**6
#: Resolution of the computed price ``p̂``: it is rounded down to 1/PRICE_SCALE.
PRICE_SCALE = 10**6


class MarketKind(enum.Enum):
    """Which case of the PEM a trading window falls in."""

    GENERAL = "general"
    EXTREME = "extreme"
    NO_SELLERS = "no_sellers"


class PemInputError(ValueError):
    """An agent's or the market's input broke a rule of the PEM; the message names it."""


def to_fixed(value: str | int | float | Decimal, name: str) -> int:
    """Convert an edge value to fixed point, refusing more than 6 decimals.

    Raises:
        PemInputError: not a number, or more precise than 1/FIXED.
    """
    try:
        exact = Fraction(parse_decimal(value)) * FIXED
    except ValueError:
        raise PemInputError(f"{name} is not a number") from None
    if exact.denominator != 1:
        raise PemInputError(f"{name} has more than 6 decimals")
    return int(exact)


@dataclass(frozen=True)
class Agent:
    """One agent's private data for one trading window, fixed point (×FIXED).

    ``battery > 0`` is charging (extra load), ``< 0`` discharging (extra supply).
    """

    name: str
    generation: int
    load: int
    battery: int
    k: int
    epsilon: int

    def __post_init__(self) -> None:
        if self.generation < 0:
            raise PemInputError("generation must not be negative")
        if self.load < 0:
            raise PemInputError("load must not be negative")
        if self.k <= 0:
            raise PemInputError("k (load preference) must be positive")
        if not 0 < self.epsilon < FIXED:
            raise PemInputError("epsilon (battery loss) must lie strictly between 0 and 1")

    @classmethod
    def from_values(
        cls,
        name: str,
        generation: str | float | Decimal,
        load: str | float | Decimal,
        battery: str | float | Decimal,
        k: str | float | Decimal,
        epsilon: str | float | Decimal,
    ) -> Agent:
        """Build an agent from edge values (decimal strings or numbers)."""
        if not name.strip():
            raise PemInputError("agent name is empty")
        return cls(
            name.strip(),
            to_fixed(generation, "generation"),
            to_fixed(load, "load"),
            to_fixed(battery, "battery"),
            to_fixed(k, "k"),
            to_fixed(epsilon, "epsilon"),
        )

    @property
    def net(self) -> int:
        """Net energy ``sn = g − l − b`` (Eq. 1), ×FIXED."""
        return self.generation - self.load - self.battery

    @property
    def pricing_term(self) -> int:
        """The seller's Eq. 13 denominator term ``g + 1 + ε·b − b``, ×FIXED²."""
        f = FIXED
        return self.generation * f + f * f + self.epsilon * self.battery - self.battery * f


@dataclass(frozen=True)
class PemMarket:
    """Prices of one window: retail ``ps``, feed-in ``pb`` and the range ``[p_l, p_h]`` (Eq. 3)."""

    retail: Fraction
    feed_in: Fraction
    low: Fraction
    high: Fraction

    def __post_init__(self) -> None:
        if not self.feed_in < self.low <= self.high < self.retail:
            raise PemInputError(
                "prices must satisfy feed-in < low ≤ high < retail (paper Eq. 3)"
            )

    @classmethod
    def from_values(
        cls,
        retail: str | float | Decimal,
        feed_in: str | float | Decimal,
        low: str | float | Decimal,
        high: str | float | Decimal,
    ) -> PemMarket:
        """Build the market prices from edge values (up to 6 decimals each)."""
        fields = [(retail, "retail"), (feed_in, "feed-in"), (low, "low"), (high, "high")]
        r, f, lo, hi = (Fraction(to_fixed(v, n), FIXED) for v, n in fields)
        return cls(r, f, lo, hi)


@dataclass(frozen=True)
class Trade:
    """Energy ``e_ij`` (input units, exact) from seller to buyer and its payment ``p·e_ij``."""

    seller: str
    buyer: str
    energy: Fraction
    payment: Fraction


@dataclass(frozen=True)
class SellerPlan:
    """A seller's net energy and optimal load (Eq. 15), in input units (not ×FIXED)."""

    agent: str
    net: Fraction
    optimal_load: Fraction


@dataclass(frozen=True)
class PemOutcome:
    """The result of one PEM trading window, in input units (energy) and price units."""

    market: MarketKind
    price: Fraction
    supply: Fraction
    demand: Fraction
    trades: tuple[Trade, ...]
    sellers: tuple[SellerPlan, ...]


def classify(agents: Sequence[Agent]) -> tuple[list[Agent], list[Agent]]:
    """Split agents into sellers (``sn > 0``) and buyers (``sn < 0``); ``sn = 0`` is off market."""
    sellers = [a for a in agents if a.net > 0]
    buyers = [a for a in agents if a.net < 0]
    return sellers, buyers


def market_kind(supply: int, demand: int, has_sellers: bool) -> MarketKind:
    """General when ``E_s < E_b``, extreme when ``E_s ≥ E_b``, no-sellers when nobody sells."""
    if not has_sellers:
        return MarketKind.NO_SELLERS
    return MarketKind.GENERAL if supply < demand else MarketKind.EXTREME


def stackelberg_price(market: PemMarket, sum_k: int, sum_term: int) -> Fraction:
    """Eq. 13–14 from the two aggregates: ``Σk`` (×FIXED) and ``Σ(g+1+εb−b)`` (×FIXED²).

    ``p̂`` is rounded down to 1/PRICE_SCALE, then clipped to ``[p_l, p_h]``.
    """
    if sum_k <= 0 or sum_term <= 0:
        raise PemInputError("the sellers' aggregates must be positive")
    square = market.retail * Fraction(sum_k * FIXED, sum_term)  # ps · Σk / Σterm
    p_hat = Fraction(isqrt((square * PRICE_SCALE**2).__floor__()), PRICE_SCALE)
    return min(max(p_hat, market.low), market.high)


def optimal_load(agent: Agent, price: Fraction) -> Fraction:
    """Eq. 15: the seller's utility-maximising load ``k·ε/p − 1 − ε·b``, in input units."""
    k = Fraction(agent.k, FIXED)
    eps = Fraction(agent.epsilon, FIXED)
    b = Fraction(agent.battery, FIXED)
    return k * eps / price - 1 - eps * b


def _coprime_fraction(numerator: int, denominator: int) -> Fraction:
    """``numerator/denominator`` from two coprime integers (``denominator > 0``) without the
    ``gcd`` that ``Fraction(n, d)`` would repeat: the terms go straight into its slots."""
    value = object.__new__(Fraction)
    value._numerator = numerator  # type: ignore[attr-defined]
    value._denominator = denominator  # type: ignore[attr-defined]
    return value


def _fraction_maker() -> Callable[[int, int], Fraction]:
    """:func:`_coprime_fraction` where this interpreter's Fraction keeps its terms in those
    slots (CPython), else the ordinary constructor."""
    try:
        same = _coprime_fraction(-6, 35) == Fraction(-6, 35)
        if same and hash(_coprime_fraction(3, 5)) == hash(Fraction(3, 5)):
            return _coprime_fraction
    except (AttributeError, TypeError):  # pragma: no cover - another Fraction layout
        pass
    return Fraction  # pragma: no cover


_exact = _fraction_maker()


def distribute(
    sellers: Sequence[Agent], buyers: Sequence[Agent], kind: MarketKind, price: Fraction
) -> tuple[Trade, ...]:
    """Section III-D: pairwise amounts in proportion to demand (general) or supply (extreme).

    ``e_ij = sn_i·|sn_j| / (E·FIXED)`` with ``E = E_b`` (general) or ``E_s`` (extreme), and
    ``p·e_ij``, both exact and in lowest terms: every pair's numerator and denominator are
    reduced as integers, all pairs at once (numpy arrays of Python integers, so nothing
    overflows), ``gcd(sn_i·|sn_j|, M) = gcd(sn_i, M)·gcd(|sn_j|, M/gcd(sn_i, M))``.
    """
    if not sellers or not buyers:
        return ()
    total = (-sum(b.net for b in buyers) if kind is MarketKind.GENERAL
             else sum(s.net for s in sellers))
    common = total * FIXED  # every amount is (sn_i · |sn_j|) / common
    supply = np.array([s.net for s in sellers], dtype=object)[:, None]  # a column per seller
    demand = np.array([-b.net for b in buyers], dtype=object)[None, :]  # a row per buyer
    seller_gcd = np.gcd(supply, common)
    rest = common // seller_gcd  # per seller: common / gcd(sn_i, common)
    pair_gcd = np.gcd(demand, rest)
    num = (supply // seller_gcd) * (demand // pair_gcd)
    den = rest // pair_gcd
    p, q = price.numerator, price.denominator
    if p:
        p_gcd, q_gcd = np.gcd(den, p), np.gcd(num, q)
        pay_num, pay_den = (num // q_gcd) * (p // p_gcd), (den // p_gcd) * (q // q_gcd)
    else:
        pay_num, pay_den = np.zeros_like(num), np.ones_like(den)
    names = [b.name for b in buyers]
    exact = _exact
    return tuple(
        Trade(s.name, buyer, exact(en, ed), exact(pn, pd))
        for s, ens, eds, pns, pds in zip(
            sellers, num.tolist(), den.tolist(), pay_num.tolist(), pay_den.tolist(), strict=True)
        for buyer, en, ed, pn, pd in zip(names, ens, eds, pns, pds, strict=True)
    )


def run_pem(agents: Sequence[Agent], market: PemMarket) -> PemOutcome:
    """Run one trading window of the PEM in plaintext (the reference for the private version)."""
    names = [a.name for a in agents]
    if len(set(names)) != len(names):
        raise PemInputError("agent names must be unique")
    sellers, buyers = classify(agents)
    supply = sum(s.net for s in sellers)
    demand = -sum(b.net for b in buyers)
    kind = market_kind(supply, demand, bool(sellers))
    if kind is MarketKind.NO_SELLERS:
        return PemOutcome(kind, market.retail, Fraction(0), Fraction(demand, FIXED), (), ())
    if kind is MarketKind.GENERAL:
        price = stackelberg_price(
            market, sum(s.k for s in sellers), sum(s.pricing_term for s in sellers)
        )
    else:
        price = market.low
    plans = tuple(
        SellerPlan(s.name, Fraction(s.net, FIXED), optimal_load(s, price)) for s in sellers
    )
    return PemOutcome(
        market=kind,
        price=price,
        supply=Fraction(supply, FIXED),
        demand=Fraction(demand, FIXED),
        trades=distribute(sellers, buyers, kind, price),
        sellers=plans,
    )
