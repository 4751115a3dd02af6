"""Run mechanisms over every window of a neighbourhood; assumes a loaded data set, no I/O.

Each window is cleared (:func:`~sealgrid.sim.window.clear_window`), settled by the meters and
turned into one row per (window, run). Rows become ``windows.parquet``; the selected sellers'
utility (paper xie2020 Eq. 4, Fig. 6b) becomes ``utility.parquet``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import pandas as pd

from sealgrid.sim.agents import MarketParams
from sealgrid.sim.dataset import MWH_PER_KWH, Neighbourhood
from sealgrid.sim.window import PEM, Run, clear_window, settle_window

#: How many sellers the utility figure follows (the paper shows two).
SELECTED_SELLERS = 2


@dataclass(frozen=True)
class SimulationResult:
    """Per-window rows, the selected sellers' utilities, and the runs that made them."""

    windows: pd.DataFrame
    utility: pd.DataFrame
    runs: tuple[Run, ...]
    selected_sellers: tuple[str, ...]


def runs_for(mechanism: str, params: MarketParams) -> tuple[Run, ...]:
    """Expand ``none|double-auction|pem|all`` into runs; ``none`` is always the baseline."""
    pem_runs = tuple(Run(PEM, k) for k in params.pem_k)
    choices: dict[str, tuple[Run, ...]] = {
        "none": (Run("none"),),
        "double-auction": (Run("none"), Run("double-auction")),
        "pem": (Run("none"), *pem_runs),
        "all": (Run("none"), Run("double-auction"), *pem_runs),
    }
    if mechanism not in choices:
        raise ValueError(f"unknown mechanism {mechanism!r}; choose one of {sorted(choices)}")
    return choices[mechanism]


def selected_sellers(data: Neighbourhood, count: int = SELECTED_SELLERS) -> list[int]:
    """Pick the households that sell in the most windows (ties: lower index first)."""
    seller_windows = (data.net_mwh > 0).sum(axis=0)
    order = sorted(range(len(seller_windows)), key=lambda i: (-int(seller_windows[i]), i))
    return [i for i in order[:count] if seller_windows[i] > 0]


def _utility(k: int, load_mwh: int, money: Fraction) -> float:
    """Eq. 4 with ``b = 0``: ``k·ln(1 + l) + money`` (l in kWh, money in cents)."""
    return k * math.log1p(load_mwh / MWH_PER_KWH) + float(money)


def simulate(
    data: Neighbourhood,
    params: MarketParams,
    runs: Sequence[Run],
    secure: bool = False,
    progress: Callable[[int], Any] | None = None,
    secure_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> SimulationResult:
    """Clear and settle every window of ``data`` with every run.

    Args:
        progress: called with 1 after each window (a progress bar's ``update``).
        secure_options: keyword arguments per mechanism for the secure entry points.

    Raises:
        SecureUnavailable: ``secure`` and the protocol layer is not importable.
    """
    names = data.home_names
    net = data.net_mwh
    chosen = selected_sellers(data)
    rows: list[dict[str, Any]] = []
    utility: list[dict[str, Any]] = []
    feed_in = Fraction(params.feed_in)
    for w, stamp in enumerate(data.index):
        pv, load, nw = data.pv_mwh[w], data.load_mwh[w], net[w]
        sellers, buyers = int((nw > 0).sum()), int((nw < 0).sum())
        supply = int(nw[nw > 0].sum()) / MWH_PER_KWH
        demand = -int(nw[nw < 0].sum()) / MWH_PER_KWH
        for run in runs:
            result, seconds, online = clear_window(run, params, w, names, pv, load,
                                                   secure=secure, secure_options=secure_options)
            money = settle_window(result, params, names, nw)
            rows.append({
                "timestamp": stamp,
                "window": w,
                "run": run.key,
                "mechanism": run.mechanism,
                "kind": result.kind,
                "price": math.nan if result.price is None else float(result.price),
                "sellers": sellers,
                "buyers": buyers,
                "supply_kwh": supply,
                "demand_kwh": demand,
                "traded_kwh": float(money.traded_kwh),
                "accepted_sellers": sum(1 for s in result.sold_kwh if s),
                "accepted_buyers": sum(1 for b in result.bought_kwh if b),
                "buyers_cost_with": float(money.buyers_cost_with),
                "buyers_cost_without": float(money.buyers_cost_without),
                "sellers_revenue_with": float(money.sellers_revenue_with),
                "sellers_revenue_without": float(money.sellers_revenue_without),
                "grid_exchange_with_kwh": float(money.grid_exchange_with_kwh),
                "grid_exchange_without_kwh": float(money.grid_exchange_without_kwh),
                "clearing_seconds": seconds,
                "online_seconds": math.nan if online is None else online,
            })
            if run.mechanism != PEM or run.k is None:
                continue
            for i in chosen:
                if nw[i] <= 0:
                    continue
                utility.append({
                    "timestamp": stamp,
                    "home": names[i],
                    "k": run.k,
                    "utility_with": _utility(run.k, int(load[i]), money.household_with[i]),
                    "utility_without": _utility(
                        run.k, int(load[i]), feed_in * Fraction(int(nw[i]), MWH_PER_KWH)
                    ),
                })
        if progress is not None:
            progress(1)
    columns = ["timestamp", "home", "k", "utility_with", "utility_without"]
    return SimulationResult(
        windows=pd.DataFrame(rows),
        utility=pd.DataFrame(utility, columns=columns),
        runs=tuple(runs),
        selected_sellers=tuple(names[i] for i in chosen),
    )
