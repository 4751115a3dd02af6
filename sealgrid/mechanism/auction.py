"""Mechanism A: the uniform-price double auction on the price grid. Pure integers.

This file is the plaintext reference that every secure clearing is checked against.

Rule, for levels ``k`` of the grid:

* demand ``D(k)`` = total quantity of buyers with level ≥ k;
  supply ``S(k)`` = total quantity of sellers with level ≤ k; volume ``V(k) = min(D, S)``.
  Equal prices fall on the same level, so they act as one virtual bidder.
* the clearing level ``k*``: among the levels maximising ``V``, those minimising ``|D − S|``
  (a contiguous range), the middle one — the lower of two middles;
* no trade when ``max V = 0``;
* sellers at ≤ k* and buyers at ≥ k* are accepted; the short side trades its whole accepted
  quantity, the long side is rationed pro rata: ``quantity × V / L``, ``L`` its accepted total
  (:func:`rationing`, the one place this rule is written);
* minimum participation: with fewer than ``min_accepted_per_side`` accepted bids on a side,
  nothing trades (1, the papers' rule, by default).

Traded amounts are exact fractions of a Wh: numerator ``quantity × V`` over the side's ``L``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from sealgrid.mechanism.bids import OrderBook


@dataclass(frozen=True)
class Curves:
    """Aggregated demand and supply on every grid level (Wh)."""

    demand: np.ndarray
    supply: np.ndarray

    @property
    def volume(self) -> np.ndarray:
        """Tradeable volume ``min(D, S)`` at every level."""
        return np.minimum(self.demand, self.supply)


def curves(book: OrderBook, levels: int) -> Curves:
    """Aggregate the order book into the demand and supply curves on ``levels`` grid levels."""
    buy = book.is_buy
    buy_at = group_sum(book.level[buy], book.quantity_wh[buy], levels)
    sell_at = group_sum(book.level[~buy], book.quantity_wh[~buy], levels)
    demand = np.cumsum(buy_at[::-1])[::-1]
    supply = np.cumsum(sell_at)
    return Curves(demand=demand, supply=supply)


def group_sum(index: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """Sum integer ``values`` into ``size`` bins by ``index``, exactly, as int64."""
    if len(values) and int(values.sum()) >= 2**53:  # beyond float64's exact integers
        out = np.zeros(size, dtype=np.int64)
        np.add.at(out, index, values)
        return out
    return np.bincount(index, weights=values, minlength=size).astype(np.int64)


def clearing_level(demand: np.ndarray, supply: np.ndarray) -> int | None:
    """Pick ``k*`` from the curves by the rule above; ``None`` when nothing can trade.

    Returns:
        The clearing level, or ``None`` when the largest volume is 0 (no trade).
    """
    volume = np.minimum(demand, supply)
    best = int(volume.max()) if len(volume) else 0
    if best == 0:
        return None
    imbalance = np.abs(demand - supply)
    candidates = np.flatnonzero(volume == best)
    least = imbalance[candidates].min()
    chosen = candidates[imbalance[candidates] == least]
    return int(chosen[(len(chosen) - 1) // 2])


def rationing(volume: int, side_total: int) -> tuple[int, int]:
    """The pro-rata rule, the one place it is written: ``(numerator, denominator)`` per Wh.

    A side whose accepted total ``side_total`` exceeds the traded ``volume`` is the long side
    and is rationed: each accepted bid trades ``quantity × volume / side_total``. The short side
    trades its whole accepted quantity (``1/1``).
    """
    return (volume, side_total) if side_total > volume else (1, 1)


def traded_wh(accepted_wh: int, volume: int, side_total: int) -> Fraction:
    """Return what an accepted quantity (or a total of them) trades, exactly, in Wh."""
    numerator, denominator = rationing(volume, side_total)
    return Fraction(accepted_wh * numerator, denominator)


@dataclass(frozen=True)
class Clearing:
    """The outcome of one period.

    ``level`` is ``None`` for no trade. ``accepted`` is per bid. A bid's traded Wh is
    ``traded_numerator[i] / denominator_buy`` for buyers and ``… / denominator_sell`` for
    sellers (a denominator is 1 on the short side). Per-supplier totals are exact fractions.
    """

    level: int | None
    volume_wh: int
    demand_wh: int
    supply_wh: int
    accepted: np.ndarray
    traded_numerator: np.ndarray
    denominator_buy: int
    denominator_sell: int
    supplier_bought_wh: tuple[Fraction, ...]
    supplier_sold_wh: tuple[Fraction, ...]

    @property
    def traded(self) -> bool:
        """Whether the period cleared with a positive volume."""
        return self.level is not None

    def traded_wh(self, i: int, is_buy: bool) -> Fraction:
        """Return bid ``i``'s traded energy in Wh, exactly."""
        denominator = self.denominator_buy if is_buy else self.denominator_sell
        return Fraction(int(self.traded_numerator[i]), denominator)

    def traded_kwh_array(self, is_buy: np.ndarray) -> np.ndarray:
        """Every bid's traded energy in kWh as floats (for output only)."""
        den = np.where(is_buy, self.denominator_buy, self.denominator_sell).astype(np.float64)
        return self.traded_numerator.astype(np.float64) / den / 1000.0

    @classmethod
    def no_trade(cls, bids: int, suppliers: int) -> Clearing:
        """The outcome of a period in which nothing trades."""
        zeros = (Fraction(0),) * suppliers
        return cls(
            level=None,
            volume_wh=0,
            demand_wh=0,
            supply_wh=0,
            accepted=np.zeros(bids, dtype=bool),
            traded_numerator=np.zeros(bids, dtype=np.int64),
            denominator_buy=1,
            denominator_sell=1,
            supplier_bought_wh=zeros,
            supplier_sold_wh=zeros,
        )

    @classmethod
    def from_accepted(
        cls,
        level: int,
        demand_wh: int,
        supply_wh: int,
        is_buy: np.ndarray,
        accepted_wh: np.ndarray,
        bought_wh: Sequence[int] | np.ndarray,
        sold_wh: Sequence[int] | np.ndarray,
    ) -> Clearing:
        """Build a traded period's outcome from each bid's accepted quantity (0 if refused).

        The plaintext reference and the secure clearing both end here: the public figures
        (``level``, ``D(k*)``, ``S(k*)``) and the accepted quantities make every amount exact
        by :func:`rationing`. ``bought_wh``/``sold_wh``: each supplier's accepted totals.
        """
        volume = min(demand_wh, supply_wh)
        buy_num, buy_den = rationing(volume, demand_wh)
        sell_num, sell_den = rationing(volume, supply_wh)
        if len(accepted_wh) and int(accepted_wh.max()) * volume >= 2**63:
            raise OverflowError("quantity × volume exceeds 64 bits; lower the per-bid maximum")
        factor = np.where(is_buy, np.int64(buy_num), np.int64(sell_num))
        return cls(
            level=level,
            volume_wh=volume,
            demand_wh=demand_wh,
            supply_wh=supply_wh,
            accepted=accepted_wh != 0,
            traded_numerator=np.multiply(accepted_wh, factor, dtype=np.int64),
            denominator_buy=buy_den,
            denominator_sell=sell_den,
            supplier_bought_wh=tuple(traded_wh(int(b), volume, demand_wh) for b in bought_wh),
            supplier_sold_wh=tuple(traded_wh(int(x), volume, supply_wh) for x in sold_wh),
        )


def clear(book: OrderBook, levels: int, *, min_accepted_per_side: int = 1) -> Clearing:
    """Clear one period's order book on a grid of ``levels`` levels.

    ``min_accepted_per_side``: the period trades only if at least that many bids are accepted
    on each side at the clearing level (1 is the papers' rule); otherwise nothing trades.
    """
    c = curves(book, levels)
    n = len(book)
    k = clearing_level(c.demand, c.supply)
    suppliers = len(book.suppliers)
    if k is None:
        return Clearing.no_trade(n, suppliers)
    accepted = np.where(book.is_buy, book.level >= k, book.level <= k)
    won_buy, won_sell = accepted & book.is_buy, accepted & ~book.is_buy
    # V(k*) > 0 already means one accepted bid on each side: count only for a stricter rule
    if min_accepted_per_side > 1 and (
        min(int(won_buy.sum()), int(won_sell.sum())) < min_accepted_per_side
    ):
        return Clearing.no_trade(n, suppliers)
    return Clearing.from_accepted(
        level=k,
        demand_wh=int(c.demand[k]),
        supply_wh=int(c.supply[k]),
        is_buy=book.is_buy,
        accepted_wh=np.where(accepted, book.quantity_wh, 0).astype(np.int64),
        bought_wh=group_sum(book.supplier[won_buy], book.quantity_wh[won_buy], suppliers),
        sold_wh=group_sum(book.supplier[won_sell], book.quantity_wh[won_sell], suppliers),
    )
