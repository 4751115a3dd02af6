"""Households as market agents: prices, bidding strategies and mechanism inputs; pure, seeded.

Prices are in ¢/kWh (cents per kWh, the paper xie2020's unit); energy arrives as integer mWh.
A window's net energy ``g − l`` decides the side: positive sells, negative buys, zero stays
off the market. Nothing here draws from a global random generator.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from decimal import Decimal
from fractions import Fraction

import numpy as np

from sealgrid.mechanism.bids import OrderBook
from sealgrid.mechanism.grid import PriceGrid
from sealgrid.mechanism.pem import FIXED, Agent, PemMarket
from sealgrid.sim.battery import BatteryModel

#: mWh in one Wh.
MWH_PER_WH = 1000


class Strategy(enum.Enum):
    """How a household prices its double-auction bid (documented in docs/simulation.md).

    ``ZI_C``: zero-intelligence with a budget constraint (Gode & Sunder 1993): every window
    each household draws its price uniformly on the grid between its reservation prices —
    a seller never asks below the feed-in tariff it would otherwise get, a buyer never bids
    above the retail price it would otherwise pay (paper mustafa2016 §III-C).
    ``RESERVATION``: bid the reservation price itself (sellers at feed-in, buyers at retail).
    """

    ZI_C = "zi-c"
    RESERVATION = "reservation"


@dataclass(frozen=True)
class MarketParams:
    """Tariffs and mechanism settings; defaults are the paper xie2020 §VII-A values."""

    retail: Decimal = Decimal(120)
    feed_in: Decimal = Decimal(80)
    pem_low: Decimal = Decimal(90)
    pem_high: Decimal = Decimal(110)
    pem_k: tuple[int, ...] = (20, 40)
    epsilon: Decimal = Decimal("0.9")
    network_fee: Decimal = Decimal(0)
    tick: Decimal = Decimal("0.1")
    strategy: Strategy = Strategy.ZI_C
    seed: int = 20210920
    #: time of use (None: flat tariffs): the retail and feed-in prices during the peak hours
    #: ``[peak_start, peak_end)`` local time (docs/simulation.md, "Batteries and time-of-use")
    retail_peak: Decimal | None = None
    feed_in_peak: Decimal | None = None
    peak_hours: tuple[int, int] = (17, 21)
    #: home batteries (None: none, the paper's evaluation data)
    batteries: BatteryModel | None = None
    grid: PriceGrid = field(init=False)

    def __post_init__(self) -> None:
        # The double auction's grid: floor = feed-in, ceiling = retail (docs/mechanism.md).
        object.__setattr__(self, "grid", PriceGrid(self.feed_in, self.retail, self.tick))
        if not self.pem_k or min(self.pem_k) <= 0:
            raise ValueError("PEM k values must be positive")
        if not 0 < self.epsilon < 1:
            raise ValueError("epsilon must lie strictly between 0 and 1")
        if self.seed < 0:
            raise ValueError("the seed must be a whole number ≥ 0")
        if self.network_fee < 0 or self.network_fee > self.feed_in:
            raise ValueError("the network fee must lie between 0 and the feed-in tariff")
        PemMarket.from_values(self.retail, self.feed_in, self.pem_low, self.pem_high)
        start, end = self.peak_hours
        if not 0 <= start < end <= 24:
            raise ValueError("peak_hours must be [start, end) with 0 ≤ start < end ≤ 24")
        if self.time_of_use:
            PemMarket.from_values(self.retail_peak or self.retail,
                                  self.feed_in_peak or self.feed_in, self.pem_low, self.pem_high)

    @property
    def time_of_use(self) -> bool:
        """Whether the tariffs change in the peak hours."""
        return self.retail_peak is not None or self.feed_in_peak is not None

    def at(self, hour: int) -> MarketParams:
        """The parameters in force at a local ``hour``: the peak tariffs inside the peak
        hours when time of use is on, else these."""
        start, end = self.peak_hours
        if not self.time_of_use or not start <= hour < end:
            return self
        return replace(self, retail=self.retail_peak or self.retail,
                       feed_in=self.feed_in_peak or self.feed_in, retail_peak=None,
                       feed_in_peak=None)

    def pem_market(self) -> PemMarket:
        """Return the PEM's prices ``ps, pb, [p_l, p_h]``."""
        return PemMarket.from_values(self.retail, self.feed_in, self.pem_low, self.pem_high)


def quantity_wh(net_mwh: np.ndarray) -> np.ndarray:
    """Round ``|net|`` to whole Wh (half up), the double auction's unit; 0 means no bid."""
    return (np.abs(net_mwh) + MWH_PER_WH // 2) // MWH_PER_WH


def bid_levels(params: MarketParams, window: int, is_buy: np.ndarray) -> np.ndarray:
    """Return each household's price level on the grid for one window.

    Draws are keyed by ``(seed, window)`` and taken for every household in order, so the
    first N households bid the same with or without the others.
    """
    levels = params.grid.levels
    if params.strategy is Strategy.RESERVATION:
        return np.where(is_buy, levels - 1, 0).astype(np.int64)
    rng = np.random.default_rng([params.seed, window])
    return rng.integers(0, levels, size=len(is_buy), dtype=np.int64)


def order_book(
    params: MarketParams, window: int, names: tuple[str, ...], net_mwh: np.ndarray
) -> tuple[OrderBook, np.ndarray]:
    """Build the window's order book; return it and the household index of every bid."""
    is_buy_all = net_mwh < 0
    q = quantity_wh(net_mwh)
    level = bid_levels(params, window, is_buy_all)
    who = np.flatnonzero(q > 0)
    book = OrderBook(
        is_buy=is_buy_all[who],
        quantity_wh=q[who].astype(np.int64),
        level=level[who],
        supplier=np.zeros(len(who), dtype=np.int64),
        suppliers=("supplier",),
        bidders=tuple(names[i] for i in who),
    )
    return book, who


def pem_agents(
    params: MarketParams, k: int, names: tuple[str, ...], pv_mwh: np.ndarray,
    load_mwh: np.ndarray, battery_mwh: np.ndarray | None = None,
    epsilon_fixed: np.ndarray | None = None,
) -> list[Agent]:
    """Build the PEM agents of one window; mWh is ×FIXED kWh. Without batteries ``b = 0``
    and every agent's ε is ``params.epsilon``; with them each home's ``b`` and, where it has a
    battery, its own ε (:mod:`sealgrid.sim.battery`)."""
    eps = int(Fraction(params.epsilon) * FIXED)
    n = len(names)
    b = battery_mwh.tolist() if battery_mwh is not None else [0] * n
    own = epsilon_fixed.tolist() if epsilon_fixed is not None else [0] * n
    return [
        Agent(name, int(g), int(ld), int(bi), k * FIXED, int(e) or eps)
        for name, g, ld, bi, e in zip(names, pv_mwh.tolist(), load_mwh.tolist(), b, own,
                                      strict=True)
    ]
