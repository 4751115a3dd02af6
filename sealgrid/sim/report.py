"""Write a simulation's outputs: summary.json, parquet tables, figures and a static report.html.

Assumes a writable output folder; the report is one HTML file that loads the PNG files next
to it, with no script and nothing from the network.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import pandas as pd

from sealgrid import __version__
from sealgrid.sim import metrics, plots
from sealgrid.sim.agents import MarketParams
from sealgrid.sim.dataset import SITE_TZ, Neighbourhood
from sealgrid.sim.run import SimulationResult

#: The paper's headline: the buyer coalition's cost fell by 25.3% on average (xie2020 §VII-C).
PAPER_BUYERS_COST_PCT = -25.3

ROWS = [
    ("windows_traded", "windows with trade"),
    ("mean_price_cents_per_kwh", "mean price (¢/kWh, traded windows)"),
    ("volume_weighted_price_cents_per_kwh", "volume-weighted price (¢/kWh)"),
    ("traded_kwh", "traded on the market (kWh)"),
    ("buyers_cost_vs_grid_only_pct", "buyers' cost vs grid only (%)"),
    ("buyers_cost_vs_grid_only_pct_mean_of_windows", "… mean of per-window %"),
    ("buyers_cost_vs_grid_only_pct_mean_of_traded_windows", "… mean over windows with trade"),
    ("sellers_revenue_vs_feed_in_pct", "sellers' revenue vs feed-in only (%)"),
    ("grid_exchange_vs_without_market_pct", "energy exchanged with the grid vs no market (%)"),
    ("seconds_per_window", "clearing seconds per window (mean)"),
    ("seconds_per_window_max", "clearing seconds per window (max)"),
    ("online_seconds_per_window", "online seconds per window (secure, mean)"),
]

CAPTIONS = {
    "price.png": "Market price per window. PEM: retail when nobody sells, p_l when the "
                 "Stackelberg price falls below the range or the market is extreme.",
    "coalitions.png": "Households selling (net surplus) and buying (net deficit) per window.",
    "utility.png": "Utility (Eq. 4, b = 0) of the two households that sell most often, "
                   "with PEM and selling only to the grid at feed-in.",
    "buyers_cost.png": "Total cost of the buyer coalition per window, settled by the meters.",
    "grid_exchange.png": "Energy imported from plus exported to the main grid per window.",
    "supply_demand.png": "Sellers' total surplus E_s and buyers' total deficit E_b.",
}


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return html.escape(str(value))


def _when(iso: str) -> str:
    """``2021-09-20T07:00:00-04:00`` → ``2021-09-20 07:00``."""
    return pd.Timestamp(iso).strftime("%Y-%m-%d %H:%M")


def build_summary(result: SimulationResult, data: Neighbourhood, params: MarketParams,
                  secure: bool, wall_seconds: float) -> dict[str, Any]:
    """Collect the run's parameters, per-run figures and the selected sellers' utilities."""
    keys = [r.key for r in result.runs]
    local = data.index.tz_convert(SITE_TZ)
    step = pd.Timedelta(minutes=data.window_minutes)
    return {
        "sealgrid": __version__,
        "dataset": {
            "name": data.name,
            "homes": len(data.homes),
            "homes_with_pv": int(data.homes["has_pv"].sum()),
            "windows": len(data.index),
            "window_minutes": data.window_minutes,
            "first_window_utc": data.index[0].isoformat(),
            "end_utc": (data.index[-1] + step).isoformat(),
            "first_window_local": local[0].isoformat(),
            "end_local": (local[-1] + step).isoformat(),
        },
        "secure": secure,
        "parameters": {
            "price_unit": "cents per kWh",
            "retail": float(params.retail),
            "feed_in": float(params.feed_in),
            "network_fee": float(params.network_fee),
            "pem_range": [float(params.pem_low), float(params.pem_high)],
            "pem_k": list(params.pem_k),
            "pem_epsilon": float(params.epsilon),
            "auction_grid": {"floor": float(params.grid.floor),
                             "ceiling": float(params.grid.ceiling),
                             "tick": float(params.grid.tick), "levels": params.grid.levels},
            "strategy": params.strategy.value,
            "seed": params.seed,
        },
        "mechanisms": metrics.summarise(result.windows, keys),
        "selected_sellers": metrics.utility_summary(result.utility),
        "wall_seconds": round(wall_seconds, 3),
    }


def _discussion(summary: dict[str, Any], windows: pd.DataFrame) -> list[str]:
    """Sentences that put the run next to the paper's figures."""
    p = summary["parameters"]
    retail, low = p["retail"], p["pem_range"][0]
    out = []
    for key, m in summary["mechanisms"].items():
        if key == "none" or m["buyers_cost_vs_grid_only_pct"] is None:
            continue
        out.append(
            f"{key}: buyers' cost {m['buyers_cost_vs_grid_only_pct']:+.1f}% over the run, "
            f"{_fmt(m['buyers_cost_vs_grid_only_pct_mean_of_windows'])}% as a mean of windows, "
            f"{_fmt(m['buyers_cost_vs_grid_only_pct_mean_of_traded_windows'])}% over windows "
            f"with trade; the paper reports {PAPER_BUYERS_COST_PCT}% on average."
        )
    pem = windows[windows["mechanism"] == "pem"].drop_duplicates("window")
    if len(pem):
        local = pem["timestamp"].dt.tz_convert(SITE_TZ).dt.strftime("%H:%M")
        at_retail = local[pem["price"] == retail].tolist()
        out.append(
            f"PEM price: {pem['price'].iloc[0]:.4g} in the first and {pem['price'].iloc[-1]:.4g}"
            f" ¢/kWh in the last window; at retail ({retail:g}, nobody sells) in "
            f"{len(at_retail)} of {len(pem)} windows"
            + (f" ({at_retail[0]}…, …{at_retail[-1]} local)" if at_retail else "")
            + ". The paper: retail at dawn and dusk, lower-bounded in many midday windows."
        )
        out.append(
            f"PEM cannot lower the buyers' cost by more than 1 − p_l/ps = "
            f"{100 * (1 - low / retail):.1f}% (all demand bought at p_l); with b = 0, Eq. 13 "
            f"gives p̂ ≤ √(ps·k) = {(retail * max(p['pem_k'])) ** 0.5:.1f} < p_l for "
            f"k ≤ {max(p['pem_k'])}, so the price is p_l in every window with sellers and k "
            "changes only the sellers' utility."
        )
    return out


def write_html(summary: dict[str, Any], windows: pd.DataFrame, figures: list[Path],
               path: Path) -> Path:
    """Write the static report: parameters, the summary table, figures side by side."""
    runs = list(summary["mechanisms"])
    d, p = summary["dataset"], summary["parameters"]
    head = "".join(f"<th>{html.escape(r)}</th>" for r in runs)
    body = "".join(
        "<tr><th class='l'>" + html.escape(label) + "</th>"
        + "".join(f"<td>{_fmt(summary['mechanisms'][r][key])}</td>" for r in runs) + "</tr>"
        for key, label in ROWS
    )
    figs = "".join(
        f"<figure><img src='{html.escape(f.name)}' alt='{html.escape(f.stem)}'>"
        f"<figcaption>{html.escape(CAPTIONS.get(f.name, ''))}</figcaption></figure>"
        for f in figures
    )
    notes = "".join(f"<li>{html.escape(s)}</li>" for s in _discussion(summary, windows))
    mode = "secure" if summary["secure"] else "plaintext"
    text = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>sealgrid simulation report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1500px; }}
table {{ border-collapse: collapse; margin: 12px 0; font-size: 14px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
th.l {{ text-align: left; font-weight: normal; }}
thead th {{ background: #f0f0f0; }}
.grid {{ display: grid; grid-template-columns: repeat(2, 1fr); gap: 16px; }}
figure {{ margin: 0; border: 1px solid #ddd; padding: 6px; }}
figure img {{ width: 100%; height: auto; }}
figcaption {{ font-size: 13px; color: #555; }}
.meta {{ font-size: 14px; color: #444; }}
</style></head><body>
<h1>{"A week" if d['name'] == "week" else "A day"} of a neighbourhood — sealgrid simulation</h1>
<p class="meta">{d['homes']} homes ({d['homes_with_pv']} with rooftop PV), {d['windows']}
windows of {d['window_minutes']} min, {html.escape(_when(d['first_window_local']))} to
{html.escape(_when(d['end_local']))} local time ({html.escape(_when(d['first_window_utc']))}
to {html.escape(_when(d['end_utc']))} UTC); {mode} clearing. Retail {p['retail']:g}, feed-in
{p['feed_in']:g}, network fee {p['network_fee']:g} ¢/kWh; PEM range
[{p['pem_range'][0]:g}, {p['pem_range'][1]:g}], k = {', '.join(map(str, p['pem_k']))},
ε = {p['pem_epsilon']:g}; double auction on {p['auction_grid']['levels']} levels of
{p['auction_grid']['tick']:g} ¢, bids by the {html.escape(p['strategy'])} strategy
(seed {p['seed']}). Wall time {summary['wall_seconds']:.1f} s.</p>
<h2>Summary</h2>
<table><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>
<h2>Against the paper (Xie et al., PEM, §VII)</h2><ul>{notes}</ul>
<h2>Figures</h2><div class="grid">{figs}</div>
<p class="meta">Data: PV from pvlib's TMY3 file for Greensboro NC (NREL) with seeded
minute-scale cloud variability; household load from the CREST/richardsonpy stochastic model
(UK time-use data). See sealgrid/data/ATTRIBUTION.md and docs/simulation.md.</p>
</body></html>
"""
    path.write_text(text, encoding="utf-8")
    return path


def write_outputs(result: SimulationResult, data: Neighbourhood, params: MarketParams,
                  out: Path, secure: bool, wall_seconds: float) -> dict[str, Path]:
    """Write every output file into ``out``; return their paths by name."""
    out.mkdir(parents=True, exist_ok=True)
    summary = build_summary(result, data, params, secure, wall_seconds)
    paths = {"summary": out / "summary.json", "windows": out / "windows.parquet",
             "utility": out / "utility.parquet", "report": out / "report.html"}
    paths["summary"].write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    result.windows.to_parquet(paths["windows"], index=False)
    result.utility.to_parquet(paths["utility"], index=False)
    figures = plots.all_figures(result.windows, result.utility, params, out,
                                multi_day=data.name == "week")
    write_html(summary, result.windows, figures, paths["report"])
    for f in figures:
        paths[f.stem] = f
    return paths
