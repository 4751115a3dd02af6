"""Run mechanisms over every window of a neighbourhood; assumes a loaded data set, no I/O.

Each window is cleared (:func:`~sealgrid.sim.window.clear_window`), settled by the meters and
turned into one row per (window, run): ``windows.csv``/``.parquet``. Each market run also totals
every household over the run (``households``) and lists what each household bought or sold in
each window (``trades``); the selected sellers' utility (paper xie2020 Eq. 4, Fig. 6b) becomes
``utility.parquet``. Column names carry their units: ``_kwh``, ``_ct``, ``_ct_per_kwh``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd

from sealgrid.sim import battery
from sealgrid.sim.agents import MarketParams
from sealgrid.sim.battery import Batteries
from sealgrid.sim.dataset import MWH_PER_KWH, Neighbourhood
from sealgrid.sim.dataset import select as select_homes
from sealgrid.sim.window import (
    NONE,
    PEM,
    Run,
    WindowMoney,
    WindowResult,
    clear_window,
    pem_session,
    settle_window,
)

#: How many sellers the utility figure follows (the paper shows two).
SELECTED_SELLERS = 2


#: Decimals kept of the per-household totals (sums of exact per-window amounts as floats).
DECIMALS = 9
#: The per-household table's columns (one row per market run and household).
HOUSEHOLD_COLUMNS = (
    "run", "mechanism", "home", "has_pv", "pv_kwh", "load_kwh", "import_kwh", "export_kwh",
    "windows_buying", "windows_selling", "bought_kwh", "sold_kwh", "money_without_market_ct",
    "money_with_market_ct", "gain_ct",
)
#: The per-trade table's columns (one row per run, window and household that traded).
TRADE_COLUMNS = ("timestamp", "window", "run", "home", "side", "energy_kwh",
                 "price_ct_per_kwh", "payment_ct")


@dataclass(frozen=True)
class SimulationResult:
    """Per-window rows, the selected sellers' utilities, and the runs that made them.

    ``households``: per market run and household, energy (kWh) and money (¢) over the run with
    and without the market (:data:`HOUSEHOLD_COLUMNS`); ``trades``: per market run, window and
    household that traded, its side, energy, price and payment (:data:`TRADE_COLUMNS`).
    """

    windows: pd.DataFrame
    utility: pd.DataFrame
    runs: tuple[Run, ...]
    selected_sellers: tuple[str, ...]
    households: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=list(HOUSEHOLD_COLUMNS)))
    trades: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=list(TRADE_COLUMNS)))
    #: Fig. 6(c) for several numbers of agents in one run: the per-window rows of the same
    #: runs on the first N homes, with a column ``agents`` (empty unless asked for)
    by_agents: pd.DataFrame = field(default_factory=pd.DataFrame)


class _Totals:
    """One market run's running totals per household (¢ and kWh, as floats)."""

    def __init__(self, n: int) -> None:
        self.money_with = np.zeros(n)
        self.money_without = np.zeros(n)
        self.bought = np.zeros(n)
        self.sold = np.zeros(n)

    def add(self, money: WindowMoney, result: WindowResult) -> None:
        self.money_with += np.array([float(x) for x in money.household_with])
        self.money_without += np.array([float(x) for x in money.household_without])
        self.bought += np.array([float(x) for x in result.bought_kwh])
        self.sold += np.array([float(x) for x in result.sold_kwh])


def _trade_rows(run: Run, window: int, stamp: pd.Timestamp, names: tuple[str, ...],
                result: WindowResult) -> list[tuple[Any, ...]]:
    """One row per household that bought or sold in the window, at the window's price."""
    if result.price is None:
        return []
    price = result.price
    rows = []
    for i, (b, s) in enumerate(zip(result.bought_kwh, result.sold_kwh, strict=True)):
        if b or s:
            e = b or s
            rows.append((stamp, window, run.key, names[i], "buy" if b else "sell", float(e),
                         float(price), float(price * e)))
    return rows


def _households(data: Neighbourhood, runs: Sequence[Run],
                totals: Mapping[str, _Totals], net: np.ndarray) -> pd.DataFrame:
    """The per-household table from the runs' totals and the data's energy (``net``: what
    each home offered or asked, after its battery)."""
    names = data.home_names
    base = {
        "home": list(names),
        "has_pv": data.homes["has_pv"].astype(bool).to_numpy(),
        "pv_kwh": data.pv_mwh.sum(axis=0) / MWH_PER_KWH,
        "load_kwh": data.load_mwh.sum(axis=0) / MWH_PER_KWH,
        "import_kwh": np.clip(-net, 0, None).sum(axis=0) / MWH_PER_KWH,
        "export_kwh": np.clip(net, 0, None).sum(axis=0) / MWH_PER_KWH,
        "windows_buying": (net < 0).sum(axis=0),
        "windows_selling": (net > 0).sum(axis=0),
    }
    frames = []
    for run in runs:
        if run.key not in totals:
            continue
        t = totals[run.key]
        frames.append(pd.DataFrame({
            "run": run.key, "mechanism": run.mechanism, **base,
            "bought_kwh": t.bought.round(DECIMALS), "sold_kwh": t.sold.round(DECIMALS),
            "money_without_market_ct": t.money_without.round(DECIMALS),
            "money_with_market_ct": t.money_with.round(DECIMALS),
            "gain_ct": (t.money_with - t.money_without).round(DECIMALS),
        }))
    if not frames:
        return pd.DataFrame(columns=list(HOUSEHOLD_COLUMNS))
    return pd.concat(frames, ignore_index=True)[list(HOUSEHOLD_COLUMNS)]


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


def selected_sellers(data: Neighbourhood, count: int = SELECTED_SELLERS,
                     net: np.ndarray | None = None) -> list[int]:
    """Pick the households that sell in the most windows (ties: lower index first)."""
    seller_windows = ((data.net_mwh if net is None else net) > 0).sum(axis=0)
    order = sorted(range(len(seller_windows)), key=lambda i: (-int(seller_windows[i]), i))
    return [i for i in order[:count] if seller_windows[i] > 0]


def local_hours(data: Neighbourhood) -> np.ndarray:
    """Each window's hour on the site's clock (time of use and the batteries' peak)."""
    return np.asarray(data.index.tz_convert(data.tz).hour, dtype=np.int64)


def batteries_of(data: Neighbourhood, params: MarketParams) -> Batteries | None:
    """The homes' batteries through the run (None without the battery scenario)."""
    if params.batteries is None:
        return None
    return battery.simulate(params.batteries, data.homes["has_pv"].to_numpy(dtype=bool),
                            data.pv_mwh, data.load_mwh, local_hours(data),
                            data.window_minutes)


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
    agent_counts: Sequence[int] = (),
) -> SimulationResult:
    """Clear and settle every window of ``data`` with every run.

    Args:
        progress: called with 1 after each window (a progress bar's ``update``).
        secure_options: keyword arguments per mechanism for the secure entry points.
        agent_counts: numbers of agents N (Fig. 6c for 100 and 200 agents): the runs again
            on the first N homes of the same windows (plaintext), kept in ``by_agents``.

    Raises:
        SecureUnavailable: ``secure`` and the protocol layer is not importable.
    """
    names = data.home_names
    net = data.net_mwh
    hours = local_hours(data)
    stored = batteries_of(data, params)
    if stored is not None:
        net = net - stored.action_mwh
    chosen = selected_sellers(data, net=net)
    totals = {run.key: _Totals(len(names)) for run in runs if run.mechanism != NONE}
    # a secure PEM run keeps its agents from window to window (keys once, pools refilled)
    with contextlib.ExitStack() as stack:
        session = None
        if secure and any(run.mechanism == PEM for run in runs):
            options = dict((secure_options or {}).get(PEM, {}))
            session = stack.enter_context(pem_session(  # every agent's keys, first pools
                names, int(options.get("key_bits", 2048)), params.seed,
                options.get("processes")))
        rows: list[dict[str, Any]] = []
        utility: list[dict[str, Any]] = []
        trades: list[tuple[Any, ...]] = []
        for w, stamp in enumerate(data.index):
            pv, load, nw = data.pv_mwh[w], data.load_mwh[w], net[w]
            now = params.at(int(hours[w]))  # the tariffs in force (time of use)
            feed_in = Fraction(now.feed_in)
            action = stored.action_mwh[w] if stored is not None else None
            own_eps = stored.epsilon_fixed if stored is not None else None
            sellers, buyers = int((nw > 0).sum()), int((nw < 0).sum())
            supply = int(nw[nw > 0].sum()) / MWH_PER_KWH
            demand = -int(nw[nw < 0].sum()) / MWH_PER_KWH
            for run in runs:
                cleared = clear_window(
                    run, now, w, names, pv, load, secure=secure, secure_options=secure_options,
                    battery_mwh=action, epsilon_fixed=own_eps, pem_session=session)
                result, seconds, online = cleared
                offline = cleared.offline_seconds
                money = settle_window(result, now, names, nw)
                if run.key in totals:
                    totals[run.key].add(money, result)
                    trades.extend(_trade_rows(run, w, stamp, names, result))
                rows.append({
                    "timestamp": stamp,
                    "window": w,
                    "run": run.key,
                    "mechanism": run.mechanism,
                    "kind": result.kind,
                    "price_ct_per_kwh": math.nan if result.price is None else float(result.price),
                    "sellers": sellers,
                    "buyers": buyers,
                    "supply_kwh": supply,
                    "demand_kwh": demand,
                    "traded_kwh": float(money.traded_kwh),
                    "accepted_sellers": sum(1 for s in result.sold_kwh if s),
                    "accepted_buyers": sum(1 for b in result.bought_kwh if b),
                    "buyers_cost_with_ct": float(money.buyers_cost_with),
                    "buyers_cost_without_ct": float(money.buyers_cost_without),
                    "sellers_revenue_with_ct": float(money.sellers_revenue_with),
                    "sellers_revenue_without_ct": float(money.sellers_revenue_without),
                    "grid_exchange_with_kwh": float(money.grid_exchange_with_kwh),
                    "grid_exchange_without_kwh": float(money.grid_exchange_without_kwh),
                    "clearing_seconds": seconds,
                    "online_seconds": math.nan if online is None else online,
                    "offline_seconds": math.nan if offline is None else offline,
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
    trade_table = pd.DataFrame(trades, columns=list(TRADE_COLUMNS))
    trade_table["window"] = trade_table["window"].astype(np.int64)
    subsets = []
    for n in sorted(set(agent_counts)):
        if not 0 < n <= len(names):
            raise ValueError(f"agent_counts: {n} agents, but the run has {len(names)} homes")
        part = simulate(select_homes(data, n), params, runs)
        subsets.append(part.windows.assign(agents=n))
    return SimulationResult(
        windows=pd.DataFrame(rows),
        utility=pd.DataFrame(utility, columns=columns),
        runs=tuple(runs),
        selected_sellers=tuple(names[i] for i in chosen),
        households=_households(data, runs, totals, net),
        trades=trade_table,
        by_agents=pd.concat(subsets, ignore_index=True) if subsets else pd.DataFrame(),
    )
