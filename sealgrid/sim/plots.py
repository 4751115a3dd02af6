"""The paper's figures (xie2020 Fig. 4 and 6) and the gains per household as PNG files.

Assumes matplotlib with the Agg backend. Every time series plots against the data's display
time zone (the site's local clock for the committed data); every axis names its unit; each
function writes one file and returns its path. Runs whose curves coincide exactly (PEM with
k = 20 and k = 40 set the same prices) are detected, drawn with different dashes, widths and
markers, and said so in the legend.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from sealgrid.sim.agents import MarketParams
from sealgrid.sim.dataset import SITE_TZ

COLOURS = {"none": "#555555", "double-auction": "#1f77b4", "pem-k20": "#d62728",
           "pem-k40": "#ff7f0e"}
LABELS = {"none": "grid only (no market)", "double-auction": "double auction"}
#: Line style, marker and width by a run's place among the plotted runs: wide and solid first,
#: narrower, dashed and with other markers after, so that a curve drawn over an identical one
#: still shows both.
STYLES = (("-", "o", 2.6), ("--", "s", 1.7), (":", "^", 1.3), ("-.", "D", 1.0),
          ((0, (5, 1, 1, 1)), "v", 0.9))
#: About this many markers per curve.
MARKERS_PER_LINE = 14


def _label(run: str) -> str:
    return LABELS.get(run, run.replace("pem-k", "PEM, k = "))


def coinciding(series: Mapping[str, Any]) -> list[list[str]]:
    """Groups (of two or more) of runs whose values are identical everywhere, NaN equal to NaN.

    ``series`` maps a run to its values (same length, same order of windows or households).
    """
    groups: list[list[str]] = []
    for run, values in series.items():
        a = np.asarray(values, dtype=float)
        for group in groups:
            b = np.asarray(series[group[0]], dtype=float)
            if a.shape == b.shape and np.array_equal(a, b, equal_nan=True):
                group.append(run)
                break
        else:
            groups.append([run])
    return [g for g in groups if len(g) > 1]


def _time_label(tz: str) -> str:
    return "time (UTC)" if tz == "UTC" else f"local time ({tz})"


def _axes(title: str, ylabel: str, multi_day: bool, tz: str = SITE_TZ) -> tuple[Any, Any]:
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=110)
    ax.set_title(title, fontsize=11)
    ax.set_ylabel(ylabel)
    ax.set_xlabel(_time_label(tz))
    _time_axis(ax, multi_day, tz)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _time_axis(ax: Any, multi_day: bool, tz: str = SITE_TZ) -> None:
    """Label the x axis in the display time zone: hours for a day, midnights for days."""
    if multi_day:
        ax.xaxis.set_major_locator(mdates.DayLocator(tz=tz))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%a %d", tz=tz))
    else:
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=tz))


def _save(fig: Any, path: Path, dates: bool = True) -> Path:
    if dates:
        fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _by_run(windows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {str(k): g.set_index("timestamp") for k, g in windows.groupby("run", sort=False)}


def draw_runs(ax: Any, curves: Mapping[str, tuple[Any, Any]], step: bool = False) -> None:
    """Draw each run's curve ``(x, y)`` in its own style; label the ones that coincide.

    With ``step`` (an empirical CDF: the y values are the same for every run) curves coincide
    when their x values do; else when their y values do (the x values are the same windows).
    """
    same = coinciding({run: xy[0] if step else xy[1] for run, xy in curves.items()})
    first_of = {run: g[0] for g in same for run in g[1:]}
    for pos, (run, (x, y)) in enumerate(curves.items()):
        dash, marker, width = STYLES[pos % len(STYLES)]
        every = max(1, len(y) // MARKERS_PER_LINE)
        label = _label(run)
        if run in first_of:
            label += f" (same as {_label(first_of[run])} throughout)"
        kwargs: dict[str, Any] = {
            "ls": dash, "lw": width, "marker": marker, "ms": max(7.0 - 1.4 * pos, 2.5),
            "markevery": (pos * every // max(len(curves), 1) % every, every),
            "color": COLOURS.get(run), "label": label, "fillstyle": "none" if pos else "full",
        }
        if step:
            ax.step(x, y, where="post", **kwargs)
        else:
            ax.plot(x, y, **kwargs)
    if curves:
        ax.legend(fontsize=8, loc="best",
                  title="coinciding curves: drawn over each other" if same else None,
                  title_fontsize=7)


def price(windows: pd.DataFrame, params: MarketParams, out: Path, multi_day: bool,
          tz: str = SITE_TZ) -> Path:
    """Fig. 6(a): the market price of every window (gaps: no trade)."""
    fig, ax = _axes("Market price per window (Fig. 6a)", "price (¢/kWh)", multi_day, tz)
    curves = {run: (g.index, g["price_ct_per_kwh"].to_numpy())
              for run, g in _by_run(windows).items() if run != "none"}
    draw_runs(ax, curves)
    for value, text in ((params.retail, "retail"), (params.feed_in, "feed-in"),
                        (params.pem_low, "PEM p_l"), (params.pem_high, "PEM p_h")):
        ax.axhline(float(value), color="grey", lw=0.7, ls="--")
        ax.annotate(text, (0.005, float(value)), xycoords=("axes fraction", "data"),
                    fontsize=7, color="grey", va="bottom")
    ax.set_ylim(float(params.feed_in) - 3, float(params.retail) + 3)
    return _save(fig, out / "price.png")


def coalitions(windows: pd.DataFrame, out: Path, multi_day: bool, tz: str = SITE_TZ) -> Path:
    """Fig. 4: sizes of the seller and buyer coalitions (households by net energy)."""
    fig, ax = _axes("Seller and buyer coalition sizes (Fig. 4)", "households (count)",
                    multi_day, tz)
    g = windows.drop_duplicates("window").set_index("timestamp")
    ax.plot(g.index, g["sellers"], color="#2ca02c", lw=1.2, label="sellers (g − l > 0)")
    ax.plot(g.index, g["buyers"], color="#9467bd", lw=1.2, label="buyers (g − l < 0)")
    ax.legend(fontsize=8)
    return _save(fig, out / "coalitions.png")


def utility(util: pd.DataFrame, out: Path, multi_day: bool,
            index: pd.DatetimeIndex | None = None, tz: str = SITE_TZ) -> Path:
    """Fig. 6(b): utility (Eq. 4) of the selected sellers, with PEM and with feed-in only.

    ``index`` holds every window, so windows where a seller does not sell leave a gap. The
    utility ``U = k·ln(1 + l) + money`` is in ¢: the money received, plus what consuming
    ``l`` kWh is worth to the household at its preference ``k`` (¢).
    """
    homes = sorted(util["home"].unique()) if len(util) else []
    fig, axes = plt.subplots(max(len(homes), 1), 1, figsize=(7.5, 4.2), dpi=110, sharex=True,
                             squeeze=False)
    fig.suptitle("Utility of selected sellers (Fig. 6b)", fontsize=11)
    colours = {20: "#d62728", 40: "#ff7f0e"}
    for ax, home in zip(axes[:, 0], homes, strict=False):
        for k, g in util[util["home"] == home].groupby("k", sort=True):
            g = g.set_index("timestamp")
            if index is not None:
                g = g.reindex(index)
            c = colours.get(int(k))
            ax.plot(g.index, g["utility_with"], "-", lw=1.0, color=c, label=f"k = {k}, PEM")
            ax.plot(g.index, g["utility_without"], ":", lw=1.0, color=c,
                    label=f"k = {k}, no market")
        ax.set_ylabel(f"U of {home} (¢)", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    if not homes:
        axes[0, 0].text(0.5, 0.5, "no PEM run or no seller", transform=axes[0, 0].transAxes,
                        ha="center")
        axes[0, 0].set_ylabel("U (¢)")
    last = axes[-1, 0]
    last.set_xlabel(_time_label(tz))
    _time_axis(last, multi_day, tz)
    return _save(fig, out / "utility.png")


def buyers_cost(windows: pd.DataFrame, out: Path, multi_day: bool, tz: str = SITE_TZ) -> Path:
    """Fig. 6(c): the buyers' total cost per window, each market against grid only."""
    fig, ax = _axes("Buyers' total cost per window (Fig. 6c)", "cost per window (¢)",
                    multi_day, tz)
    draw_runs(ax, {run: (g.index, g["buyers_cost_with_ct"].to_numpy())
               for run, g in _by_run(windows).items()})
    return _save(fig, out / "buyers_cost.png")


def buyers_cost_by_agents(coalitions: pd.DataFrame, out: Path, multi_day: bool,
                          tz: str = SITE_TZ) -> Path:
    """Fig. 6(c) as the paper draws it: the buyer coalition's total cost per window for each
    number of agents (the first N homes), each market against grid only."""
    fig, ax = _axes("Buyers' total cost per window by number of agents (Fig. 6c)",
                    "cost per window (¢)", multi_day, tz)
    curves: dict[str, tuple[Any, Any]] = {}
    for (n, run), g in coalitions.groupby(["agents", "run"], sort=True):
        g = g.set_index("timestamp")
        name = "grid only" if run == "none" else _label(str(run))
        curves[f"{name}, {int(n)} agents"] = (g.index, g["buyers_cost_with_ct"].to_numpy())
    draw_runs(ax, curves)
    return _save(fig, out / "buyers_cost_by_agents.png")


def grid_exchange(windows: pd.DataFrame, out: Path, multi_day: bool, tz: str = SITE_TZ) -> Path:
    """Fig. 6(d): energy exchanged with the main grid (imports + exports) per window."""
    fig, ax = _axes("Interaction with the main grid (Fig. 6d)",
                    "imported + exported per window (kWh)", multi_day, tz)
    draw_runs(ax, {run: (g.index, g["grid_exchange_with_kwh"].to_numpy())
               for run, g in _by_run(windows).items()})
    return _save(fig, out / "grid_exchange.png")


def energy(windows: pd.DataFrame, out: Path, multi_day: bool, tz: str = SITE_TZ) -> Path:
    """Context: the neighbourhood's supply (sellers' surplus) and demand per window."""
    fig, ax = _axes("Market supply E_s and demand E_b per window", "energy per window (kWh)",
                    multi_day, tz)
    g = windows.drop_duplicates("window").set_index("timestamp")
    ax.plot(g.index, g["supply_kwh"], color="#2ca02c", lw=1.2, label="supply E_s")
    ax.plot(g.index, g["demand_kwh"], color="#9467bd", lw=1.2, label="demand E_b")
    ax.legend(fontsize=8)
    return _save(fig, out / "supply_demand.png")


def gains(households: pd.DataFrame, out: Path) -> Path:
    """The distribution of gains across households: per market run, the empirical CDF of each
    household's money with the market minus without over the whole run (¢)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=110)
    ax.set_title("Gain per household over the run, market against grid only", fontsize=11)
    ax.set_xlabel("gain: money with the market − without (¢ per household)")
    ax.set_ylabel("share of households with at most this gain")
    ax.grid(True, alpha=0.3)
    curves: dict[str, tuple[Any, Any]] = {}
    for run, g in households.groupby("run", sort=False):
        x = np.sort(g["gain_ct"].to_numpy(dtype=float))
        curves[str(run)] = (x, np.arange(1, len(x) + 1) / len(x))
    if curves:
        ax.axvline(0.0, color="grey", lw=0.7, ls="--")
        draw_runs(ax, curves, step=True)
        ax.set_ylim(0, 1.02)
    else:
        ax.text(0.5, 0.5, "no market run", transform=ax.transAxes, ha="center")
    return _save(fig, out / "gains.png", dates=False)


def all_figures(windows: pd.DataFrame, util: pd.DataFrame, params: MarketParams,
                out: Path, multi_day: bool, tz: str = SITE_TZ,
                households: pd.DataFrame | None = None,
                by_agents: pd.DataFrame | None = None) -> list[Path]:
    """Write every figure into ``out``; return their paths in report order.

    ``gains.png`` is drawn when the per-household table is given,
    ``buyers_cost_by_agents.png`` when runs on several numbers of agents are.
    """
    paths = [
        price(windows, params, out, multi_day, tz),
        coalitions(windows, out, multi_day, tz),
        utility(util, out, multi_day, pd.DatetimeIndex(windows["timestamp"].unique()), tz),
        buyers_cost(windows, out, multi_day, tz),
        grid_exchange(windows, out, multi_day, tz),
        energy(windows, out, multi_day, tz),
    ]
    if households is not None:
        paths.append(gains(households, out))
    if by_agents is not None and len(by_agents):
        paths.insert(4, buyers_cost_by_agents(by_agents, out, multi_day, tz))
    return paths
