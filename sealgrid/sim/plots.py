"""The paper's figures (xie2020 Fig. 4 and 6) as PNG files; assumes matplotlib, Agg backend.

Every figure plots against the site's local clock time; each function writes one file and
returns its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import pandas as pd

from sealgrid.sim.agents import MarketParams
from sealgrid.sim.dataset import SITE_TZ

COLOURS = {"none": "#555555", "double-auction": "#1f77b4", "pem-k20": "#d62728",
           "pem-k40": "#ff7f0e"}
LABELS = {"none": "grid only (no market)", "double-auction": "double auction"}


def _label(run: str) -> str:
    return LABELS.get(run, run.replace("pem-k", "PEM, k = "))


def _axes(title: str, ylabel: str, multi_day: bool) -> tuple[Any, Any]:
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=110)
    ax.set_title(title, fontsize=11)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("local time (America/New_York)")
    _time_axis(ax, multi_day)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _time_axis(ax: Any, multi_day: bool) -> None:
    """Label the x axis in the site's local time: hours for a day, local midnights for days."""
    if multi_day:
        ax.xaxis.set_major_locator(mdates.DayLocator(tz=SITE_TZ))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%a %d", tz=SITE_TZ))
    else:
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=SITE_TZ))


def _save(fig: Any, path: Path) -> Path:
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _by_run(windows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {str(k): g.set_index("timestamp") for k, g in windows.groupby("run", sort=False)}


def price(windows: pd.DataFrame, params: MarketParams, out: Path, multi_day: bool) -> Path:
    """Fig. 6(a): the market price of every window (gaps: no trade)."""
    fig, ax = _axes("Market price per window (Fig. 6a)", "cents per kWh", multi_day)
    for run, g in _by_run(windows).items():
        if run == "none":
            continue
        style = {"pem-k20": "-", "pem-k40": "--"}.get(run, ".")
        ax.plot(g.index, g["price"], style, ms=3, lw=1.4, color=COLOURS.get(run),
                label=_label(run))
    for value, text in ((params.retail, "retail"), (params.feed_in, "feed-in"),
                        (params.pem_low, "PEM p_l"), (params.pem_high, "PEM p_h")):
        ax.axhline(float(value), color="grey", lw=0.7, ls="--")
        ax.annotate(text, (0.005, float(value)), xycoords=("axes fraction", "data"),
                    fontsize=7, color="grey", va="bottom")
    ax.set_ylim(float(params.feed_in) - 3, float(params.retail) + 3)
    ax.legend(fontsize=8, loc="center right")
    return _save(fig, out / "price.png")


def coalitions(windows: pd.DataFrame, out: Path, multi_day: bool) -> Path:
    """Fig. 4: sizes of the seller and buyer coalitions (households by net energy)."""
    fig, ax = _axes("Seller and buyer coalition sizes (Fig. 4)", "households", multi_day)
    g = windows.drop_duplicates("window").set_index("timestamp")
    ax.plot(g.index, g["sellers"], color="#2ca02c", lw=1.2, label="sellers (g − l > 0)")
    ax.plot(g.index, g["buyers"], color="#9467bd", lw=1.2, label="buyers (g − l < 0)")
    ax.legend(fontsize=8)
    return _save(fig, out / "coalitions.png")


def utility(util: pd.DataFrame, out: Path, multi_day: bool,
            index: pd.DatetimeIndex | None = None) -> Path:
    """Fig. 6(b): utility (Eq. 4) of the selected sellers, with PEM and with feed-in only.

    ``index`` holds every window, so windows where a seller does not sell leave a gap.
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
        ax.set_ylabel(f"U of {home}", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    if not homes:
        axes[0, 0].text(0.5, 0.5, "no PEM run or no seller", transform=axes[0, 0].transAxes,
                        ha="center")
    last = axes[-1, 0]
    last.set_xlabel("local time (America/New_York)")
    _time_axis(last, multi_day)
    return _save(fig, out / "utility.png")


def buyers_cost(windows: pd.DataFrame, out: Path, multi_day: bool) -> Path:
    """Fig. 6(c): the buyers' total cost per window, each market against grid only."""
    fig, ax = _axes("Buyers' total cost per window (Fig. 6c)", "cents", multi_day)
    for run, g in _by_run(windows).items():
        ax.plot(g.index, g["buyers_cost_with"], lw=1.0 if run != "none" else 1.4,
                color=COLOURS.get(run), label=_label(run))
    ax.legend(fontsize=8)
    return _save(fig, out / "buyers_cost.png")


def grid_exchange(windows: pd.DataFrame, out: Path, multi_day: bool) -> Path:
    """Fig. 6(d): energy exchanged with the main grid (imports + exports) per window."""
    fig, ax = _axes("Interaction with the main grid (Fig. 6d)", "kWh imported + exported",
                    multi_day)
    for run, g in _by_run(windows).items():
        ax.plot(g.index, g["grid_exchange_with_kwh"], lw=1.0 if run != "none" else 1.4,
                color=COLOURS.get(run), label=_label(run))
    ax.legend(fontsize=8)
    return _save(fig, out / "grid_exchange.png")


def energy(windows: pd.DataFrame, out: Path, multi_day: bool) -> Path:
    """Context: the neighbourhood's supply (sellers' surplus) and demand per window."""
    fig, ax = _axes("Market supply E_s and demand E_b per window", "kWh", multi_day)
    g = windows.drop_duplicates("window").set_index("timestamp")
    ax.plot(g.index, g["supply_kwh"], color="#2ca02c", lw=1.2, label="supply E_s")
    ax.plot(g.index, g["demand_kwh"], color="#9467bd", lw=1.2, label="demand E_b")
    ax.legend(fontsize=8)
    return _save(fig, out / "supply_demand.png")


def all_figures(windows: pd.DataFrame, util: pd.DataFrame, params: MarketParams,
                out: Path, multi_day: bool) -> list[Path]:
    """Write every figure into ``out``; return their paths in report order."""
    return [
        price(windows, params, out, multi_day),
        coalitions(windows, out, multi_day),
        utility(util, out, multi_day, pd.DatetimeIndex(windows["timestamp"].unique())),
        buyers_cost(windows, out, multi_day),
        grid_exchange(windows, out, multi_day),
        energy(windows, out, multi_day),
    ]
