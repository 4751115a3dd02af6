"""Clearing and settling one trading window, plaintext or secure; assumes exact mechanism outputs.

:func:`clear_window` is the single door to every mechanism: the same inputs and the same
:class:`WindowResult` for the plaintext reference and for the secure protocols, which it
imports lazily (``sealgrid.protocol``), so results can be compared with ``==``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from sealgrid.mechanism import auction, pem
from sealgrid.mechanism.bids import Side
from sealgrid.mechanism.settlement import MarketTrade, Meter, Tariff, settle
from sealgrid.sim.agents import MarketParams, order_book, pem_agents
from sealgrid.sim.dataset import MWH_PER_KWH

NONE = "none"
DOUBLE_AUCTION = "double-auction"
PEM = "pem"


class SecureUnavailable(RuntimeError):
    """The secure protocols could not be imported; the message says what is missing."""


@dataclass(frozen=True)
class Run:
    """One mechanism to simulate: ``none``, ``double-auction`` or ``pem`` with its ``k``."""

    mechanism: str
    k: int | None = None

    @property
    def key(self) -> str:
        """The run's name in summary.json and windows.parquet, e.g. ``pem-k20``."""
        return f"{self.mechanism}-k{self.k}" if self.mechanism == PEM else self.mechanism


@dataclass(frozen=True)
class WindowResult:
    """What a mechanism decided for one window, per household in the window's order.

    ``price`` is in cents per kWh, ``None`` when no price was set (no trade); PEM's
    no-seller windows carry the retail price, as in the paper. Energies are exact kWh.
    """

    kind: str
    price: Fraction | None
    bought_kwh: tuple[Fraction, ...]
    sold_kwh: tuple[Fraction, ...]


def _zeros(n: int) -> tuple[Fraction, ...]:
    return (Fraction(0),) * n


def _from_clearing(clearing: Any, who: np.ndarray, is_buy: np.ndarray, n: int,
                   params: MarketParams) -> WindowResult:
    """Convert an auction :class:`~sealgrid.mechanism.auction.Clearing` to a WindowResult."""
    if clearing.level is None:
        return WindowResult("no_trade", None, _zeros(n), _zeros(n))
    bought, sold = [Fraction(0)] * n, [Fraction(0)] * n
    for j, home in enumerate(who.tolist()):
        wh = clearing.traded_wh(j, bool(is_buy[j]))
        if is_buy[j]:
            bought[home] = wh / 1000
        else:
            sold[home] = wh / 1000
    price = Fraction(params.grid.price(clearing.level))
    return WindowResult("traded", price, tuple(bought), tuple(sold))


def _sum_by(names: Sequence[str], pairs: list[tuple[str, Fraction]]) -> tuple[Fraction, ...]:
    """Sum exact fractions per name over one common denominator (fast and exact)."""
    if not pairs:
        return _zeros(len(names))
    den = 1
    for d in {e.denominator for _, e in pairs}:
        den = den * d // math.gcd(den, d)
    totals: dict[str, int] = {}
    for name, e in pairs:
        totals[name] = totals.get(name, 0) + e.numerator * (den // e.denominator)
    return tuple(Fraction(totals.get(name, 0), den) for name in names)


def _from_outcome(outcome: Any, names: Sequence[str]) -> WindowResult:
    """Convert a :class:`~sealgrid.mechanism.pem.PemOutcome` to a WindowResult."""
    kind = outcome.market.value
    if outcome.market is pem.MarketKind.NO_SELLERS:
        return WindowResult(kind, outcome.price, _zeros(len(names)), _zeros(len(names)))
    bought = _sum_by(names, [(t.buyer, t.energy) for t in outcome.trades])
    sold = _sum_by(names, [(t.seller, t.energy) for t in outcome.trades])
    return WindowResult(kind, outcome.price, bought, sold)


def pem_session(names: Sequence[str], key_bits: int, seed: int,
                processes: int | None = None) -> Any:
    """A PEM session over these homes for a secure run (not yet opened): long-lived agents,
    their work spread over ``processes`` OS processes (default: one per core, at most 2).

    Raises:
        SecureUnavailable: the protocol layer is not importable.
    """
    import os

    session_class = _secure("sealgrid.protocol.pem", "PemSession")
    count = processes or max(1, min(2, os.cpu_count() or 1))
    return session_class(list(names), key_bits=key_bits, processes=count, seed=seed)


def _secure(module: str, name: str) -> Callable[..., Any]:
    """Import a secure protocol function, or explain what is missing."""
    try:
        mod = __import__(module, fromlist=[name])
        fn: Callable[..., Any] = getattr(mod, name)
    except (ImportError, AttributeError) as exc:
        raise SecureUnavailable(
            f"secure mode needs {module}.{name}, which could not be loaded ({exc}); "
            "run without --secure for the plaintext mechanisms"
        ) from None
    return fn


def _split(raw: Any) -> tuple[Any, float | None]:
    """Split a secure entry point's answer into the outcome and its online seconds.

    Accepts ``(outcome, stats)`` or an object with ``.clearing`` and ``.stats``; the online
    time is ``stats.online_seconds`` when the protocol reports it (setup excluded).
    """
    if isinstance(raw, tuple):
        outcome, stats = raw[0], raw[1] if len(raw) > 1 else None
    elif hasattr(raw, "clearing"):
        outcome, stats = raw.clearing, getattr(raw, "stats", None)
    else:
        outcome, stats = raw, None
    online = getattr(stats, "online_seconds", None)
    return outcome, None if online is None else float(online)


class Cleared(tuple[WindowResult, float, float | None]):
    """A cleared window, the triple ``(result, seconds, online_seconds)``: the result, the
    wall seconds of the clearing call and, for secure runs whose protocol reports it, the
    online seconds (key setup and precomputation out). ``offline_seconds`` (an attribute, not
    part of the triple): for a PEM session's window, the offline work spent for it (its key
    generation when it starts a key lifetime, and its randomizer pools, filled before it)."""

    offline_seconds: float | None

    def __new__(cls, result: WindowResult, seconds: float, online_seconds: float | None = None,
                offline_seconds: float | None = None) -> Cleared:
        self = super().__new__(cls, (result, seconds, online_seconds))
        self.offline_seconds = offline_seconds
        return self

    @property
    def result(self) -> WindowResult:
        """What the mechanism decided."""
        return self[0]

    @property
    def seconds(self) -> float:
        """Wall seconds of the clearing call."""
        return self[1]

    @property
    def online_seconds(self) -> float | None:
        """The protocol's online seconds, when it reports them."""
        return self[2]


def clear_window(run: Run, params: MarketParams, window: int, names: tuple[str, ...],
                 pv_mwh: np.ndarray, load_mwh: np.ndarray, secure: bool = False,
                 secure_options: Mapping[str, Mapping[str, Any]] | None = None,
                 battery_mwh: np.ndarray | None = None,
                 epsilon_fixed: np.ndarray | None = None,
                 pem_session: Any = None) -> Cleared:
    """Clear one window with ``run``'s mechanism; return the result and its clearing time.

    Plaintext and secure take the same inputs and give the same :class:`WindowResult`.
    ``secure_options[mechanism]`` are keyword arguments for the secure entry point
    (e.g. ``{"pem": {"key_bits": 1024}}``). ``battery_mwh`` (each home's ``b``, > 0
    charging) and ``epsilon_fixed`` (each battery's ε × FIXED, 0 without one): both markets
    see the net ``g − l − b``; PEM's agents carry ``b`` and ε into Eq. 13. ``pem_session``
    (a :class:`sealgrid.protocol.pem.PemSession` over these homes, open): a secure PEM window
    is run by its long-lived agents (keys made once, pools refilled between windows) instead
    of agents made for this window alone.

    Raises:
        SecureUnavailable: ``secure`` and the protocol layer is not importable.
    """
    n = len(names)
    options = dict((secure_options or {}).get(run.mechanism, {})) if secure else {}
    if run.mechanism == NONE:
        return Cleared(WindowResult("grid_only", None, _zeros(n), _zeros(n)), 0.0)
    net = pv_mwh - load_mwh
    if battery_mwh is not None:
        net = net - battery_mwh
    if run.mechanism == DOUBLE_AUCTION:
        book, who = order_book(params, window, names, net)
        clear_fn = (_secure("sealgrid.protocol.clearing", "secure_clear") if secure
                    else auction.clear)
        start = time.perf_counter()
        clearing, online = _split(clear_fn(book, params.grid.levels, **options))
        seconds = time.perf_counter() - start
        return Cleared(_from_clearing(clearing, who, book.is_buy, n, params), seconds, online)
    if run.mechanism == PEM:
        assert run.k is not None
        agents = pem_agents(params, run.k, names, pv_mwh, load_mwh, battery_mwh,
                            epsilon_fixed)
        start = time.perf_counter()
        if secure and pem_session is not None:
            outcome, stats = pem_session.run_window(agents, params.pem_market())
            seconds = time.perf_counter() - start
            return Cleared(_from_outcome(outcome, names), seconds, float(stats.online_seconds),
                           float(stats.offline_seconds))
        pem_fn = _secure("sealgrid.protocol.pem", "run_pem_secure") if secure else pem.run_pem
        outcome, online = _split(pem_fn(agents, params.pem_market(), **options))
        seconds = time.perf_counter() - start
        return Cleared(_from_outcome(outcome, names), seconds, online)
    raise ValueError(f"unknown mechanism {run.mechanism!r}")


@dataclass(frozen=True)
class WindowMoney:
    """Settled totals of one window (¢, kWh), with and without the market.

    ``household_with`` and ``household_without`` are each household's money in ¢ (received
    minus paid: negative pays), in the window's order of households.
    """

    buyers_cost_with: Fraction
    buyers_cost_without: Fraction
    sellers_revenue_with: Fraction
    sellers_revenue_without: Fraction
    grid_exchange_with_kwh: Fraction
    grid_exchange_without_kwh: Fraction
    traded_kwh: Fraction
    household_with: tuple[Fraction, ...]
    household_without: tuple[Fraction, ...] = ()


def settle_window(result: WindowResult, params: MarketParams, names: tuple[str, ...],
                  net_mwh: np.ndarray) -> WindowMoney:
    """Settle a window by the meters (paper mustafa2016 §III-D) and total it up."""
    tariff = Tariff(Fraction(params.retail), Fraction(params.feed_in),
                    Fraction(params.network_fee))
    nets = net_mwh.tolist()
    meters = [
        Meter(name, "supplier", Fraction(max(-v, 0), MWH_PER_KWH), Fraction(max(v, 0), MWH_PER_KWH))
        for name, v in zip(names, nets, strict=True)
    ]
    trades = []
    for name, b, s in zip(names, result.bought_kwh, result.sold_kwh, strict=True):
        if b:
            trades.append(MarketTrade(name, Side.BUY, b))
        elif s:
            trades.append(MarketTrade(name, Side.SELL, s))
    price = result.price if trades else None
    accounts = settle(meters, {"supplier": tariff}, trades, price).households
    zero = Fraction(0)
    cost_with = cost_without = revenue_with = revenue_without = zero
    exchange_with = exchange_without = zero
    for v, m, acc, b, s in zip(nets, meters, accounts, result.bought_kwh, result.sold_kwh,
                               strict=True):
        if v < 0:
            cost_with -= acc.with_market
            cost_without -= acc.without_market
        elif v > 0:
            revenue_with += acc.with_market
            revenue_without += acc.without_market
        exchange_without += m.import_kwh + m.export_kwh
        exchange_with += abs(m.import_kwh - b) if v < 0 else abs(m.export_kwh - s)
    return WindowMoney(
        buyers_cost_with=cost_with,
        buyers_cost_without=cost_without,
        sellers_revenue_with=revenue_with,
        sellers_revenue_without=revenue_without,
        grid_exchange_with_kwh=exchange_with,
        grid_exchange_without_kwh=exchange_without,
        traded_kwh=sum(result.bought_kwh, zero),
        household_with=tuple(a.with_market for a in accounts),
        household_without=tuple(a.without_market for a in accounts),
    )
