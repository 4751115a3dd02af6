"""Write a simulation's outputs: summary, tables, figures, a static report.html, the scenario.

Assumes a writable output folder. ``summary.json`` holds only what the scenario determines, so
a re-run writes the same figures (every field but the wall-clock times, which are also in
``timings.json``). The report is one
HTML file that loads the PNG files next to it, with no script and nothing from the network.
"""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from sealgrid import __version__
from sealgrid.sim import metrics, plots
from sealgrid.sim import scenario as scenarios
from sealgrid.sim.agents import MarketParams
from sealgrid.sim.dataset import SITE_TZ, Neighbourhood
from sealgrid.sim.run import SimulationResult

#: The paper's headline: the buyer coalition's cost fell by 25.3% on average (xie2020 §VII-C).
PAPER_BUYERS_COST_PCT = -25.3
#: What the comparison with the paper assumes: the committed day, 300 homes × 720 windows.
PAPER_DATA, PAPER_HOMES, PAPER_WINDOWS = "day", 300, 720
#: The units of every number with a unit in the outputs (as the other commands' JSON says).
UNITS = {"price": "ct/kWh", "money": "ct", "energy": "kWh"}
#: windows.parquet's older column names (no unit), kept as copies for existing readers.
LEGACY_WINDOW_COLUMNS = {
    "price": "price_ct_per_kwh",
    "buyers_cost_with": "buyers_cost_with_ct",
    "buyers_cost_without": "buyers_cost_without_ct",
    "sellers_revenue_with": "sellers_revenue_with_ct",
    "sellers_revenue_without": "sellers_revenue_without_ct",
}

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
]
TIMING_ROWS = [
    ("seconds_per_window", "clearing seconds per window (mean)"),
    ("seconds_per_window_max", "clearing seconds per window (max)"),
    ("online_seconds_per_window", "online seconds per window (secure, mean)"),
    ("offline_seconds_per_window", "offline seconds per window (secure PEM: keys, pools)"),
]

CAPTIONS = {
    "price.png": "Market price per window (¢/kWh). PEM: retail when nobody sells, p_l when the "
                 "Stackelberg price falls below the range or the market is extreme.",
    "coalitions.png": "Households selling (net surplus) and buying (net deficit) per window.",
    "utility.png": "Utility U = k·ln(1 + l) + money (Eq. 4, b = 0), in ¢, of the two "
                   "households that sell most often, with PEM and selling only to the grid at "
                   "feed-in: the money they receive plus what consuming l kWh is worth to them.",
    "buyers_cost.png": "Total cost of the buyer coalition per window (¢), settled by the "
                       "meters.",
    "buyers_cost_by_agents.png": "Fig. 6(c) as the paper draws it: the buyer coalition's "
                                 "total cost per window (¢) on the first N homes, for each N "
                                 "asked (agent_counts), each market and grid only; from "
                                 "by_agents.csv.",
    "grid_exchange.png": "Energy imported from plus exported to the main grid per window (kWh).",
    "supply_demand.png": "Sellers' total surplus E_s and buyers' total deficit E_b (kWh).",
    "gains.png": "Each household's gain over the run (money with the market minus without, "
                 "¢), as the share of households with at most that gain; from "
                 "households.csv.",
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


def span_text(minutes: int) -> str:
    """A span in words: ``A minute``, ``3 minutes``, ``An hour``, ``12 hours``, ``A day``,
    ``A week``, ``2 days, 6 hours``…"""
    words = {1440 * 7: "A week", 1440: "A day", 60: "An hour", 1: "A minute"}
    if minutes in words:
        return words[minutes]
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    parts = [f"{n} {unit}{'s' if n != 1 else ''}"
             for n, unit in ((days, "day"), (hours, "hour"), (mins, "minute")) if n]
    return ", ".join(parts)


def span_dates(first_local: str, end_local: str) -> str:
    """``2021-09-20 07:00–19:00`` within one date, else ``2021-09-20 00:00 – 2021-09-27 00:00``."""
    a, b = pd.Timestamp(first_local), pd.Timestamp(end_local)
    if a.date() == b.date():
        return f"{a:%Y-%m-%d %H:%M}–{b:%H:%M}"
    return f"{a:%Y-%m-%d %H:%M} – {b:%Y-%m-%d %H:%M}"


def paper_caveat(d: dict[str, Any]) -> str | None:
    """Why this run's percentages are not comparable with the paper's, or None when they are.

    ``d`` is summary.json's ``dataset``: comparable runs use the committed day, all 300 homes
    and all 720 windows.
    """
    reasons = []
    if d["source"] != PAPER_DATA:
        reasons.append(f"the data is {d['name']} ({d['windows']} windows of "
                       f"{d['window_minutes']} min), not the committed day of one-minute "
                       "windows")
    if d["homes"] < PAPER_HOMES:
        reasons.append(f"{d['homes']} of {PAPER_HOMES} homes")
    if d["source"] == PAPER_DATA and d["windows"] < PAPER_WINDOWS:
        reasons.append(f"{d['windows']} of {PAPER_WINDOWS} windows")
    if not reasons:
        return None
    return ("A partial run: " + "; ".join(reasons) + f". The paper's {PAPER_BUYERS_COST_PCT}% "
            f"averages a whole day of a {PAPER_HOMES}-home neighbourhood ({PAPER_WINDOWS} "
            "one-minute windows), so the comparison below is indicative only: a few windows "
            "or homes can save much more or much less than a day.")


def build_summary(result: SimulationResult, data: Neighbourhood, params: MarketParams,
                  secure: bool, wall_seconds: float | None = None,
                  scenario: scenarios.Scenario | None = None) -> dict[str, Any]:
    """Collect the run's parameters, per-run figures and the selected sellers' utilities.

    Deterministic: a re-run of the same scenario gives the same summary (the timings are in
    :func:`build_timings`; ``wall_seconds`` is accepted for older callers and not used).
    """
    keys = [r.key for r in result.runs]
    local = data.index.tz_convert(data.tz)
    step = data.step
    summary: dict[str, Any] = {
        "sealgrid": __version__,
        "units": dict(UNITS),
        "dataset": {
            "name": data.name,
            "source": data.source,
            "sha256": data.sha256,
            "homes": len(data.homes),
            "homes_with_pv": int(data.homes["has_pv"].sum()),
            "windows": len(data.index),
            "window_minutes": data.window_minutes,
            "span_minutes": len(data.index) * data.window_minutes,
            "timezone": data.tz,
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
    }
    summary["paper"] = {
        "buyers_cost_vs_grid_only_pct": PAPER_BUYERS_COST_PCT,
        "homes": PAPER_HOMES,
        "windows": PAPER_WINDOWS,
        "caveat": paper_caveat(summary["dataset"]),
    }
    if len(result.by_agents):
        summary["by_agents"] = {
            str(n): {run: {k: v for k, v in figures.items() if k.startswith("buyers_cost")}
                     for run, figures in metrics.summarise(
                         g, [r for r in keys if r != "none"]).items()}
            for n, g in result.by_agents.groupby("agents", sort=True)}
    if scenario is not None:
        summary["scenario"] = scenarios.as_json(scenario)
    return summary


#: The wall-clock fields of ``summary.json`` (its documented fields since the first release),
#: also in ``timings.json``: everything else in it is the same for a re-run of a scenario.
TIMING_FIELDS = ("wall_seconds",)
RUN_TIMING_FIELDS = ("seconds_per_window", "seconds_per_window_max",
                     "online_seconds_per_window", "offline_seconds_per_window",
                     "offline_seconds")


def with_timings(summary: dict[str, Any], timings: dict[str, Any]) -> dict[str, Any]:
    """``summary.json`` as written: the summary with the run's wall-clock figures where they
    have always been (``wall_seconds``; ``mechanisms.<run>.seconds_per_window`` …)."""
    out = {**summary, "wall_seconds": timings["wall_seconds"]}
    out["mechanisms"] = {run: {**m, **timings["mechanisms"].get(run, {})}
                         for run, m in summary["mechanisms"].items()}
    return out


def figures_of(summary: dict[str, Any]) -> dict[str, Any]:
    """A ``summary.json`` without its wall-clock fields: what a re-run reproduces exactly."""
    out = {k: v for k, v in summary.items() if k not in TIMING_FIELDS}
    out["mechanisms"] = {run: {k: v for k, v in m.items() if k not in RUN_TIMING_FIELDS}
                         for run, m in summary["mechanisms"].items()}
    return out


def build_timings(result: SimulationResult, wall_seconds: float) -> dict[str, Any]:
    """The wall-clock figures of a run (they differ between identical runs): ``timings.json``."""
    keys = [r.key for r in result.runs]
    return {"wall_seconds": round(wall_seconds, 3),
            "mechanisms": metrics.timings(result.windows, keys)}


def _discussion(summary: dict[str, Any], windows: pd.DataFrame) -> list[str]:
    """Sentences that put the run next to the paper's figures."""
    p = summary["parameters"]
    tz = summary["dataset"].get("timezone", SITE_TZ)
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
        prices = pem["price_ct_per_kwh"]
        local = pem["timestamp"].dt.tz_convert(tz).dt.strftime("%H:%M")
        at_retail = local[prices == retail].tolist()
        out.append(
            f"PEM price: {prices.iloc[0]:.4g} in the first and {prices.iloc[-1]:.4g}"
            f" ¢/kWh in the last window; at retail ({retail:g}, nobody sells) in "
            f"{len(at_retail)} of {len(pem)} windows"
            + (f" ({at_retail[0]}…, …{at_retail[-1]} {tz})" if at_retail else "")
            + ". The paper: retail at dawn and dusk, lower-bounded in many midday windows."
        )
        sc = summary.get("scenario", {})
        if sc.get("batteries") or sc.get("retail_peak_ct_per_kwh"):
            inside = int(((prices > p["pem_range"][0]) & (prices < p["pem_range"][1])).sum())
            out.append(
                f"With batteries and time of use, PEM's price lies strictly inside [p_l, p_h] "
                f"in {inside} of {len(pem)} windows of the first k: the interior of Eq. 13 "
                "(docs/simulation.md, Batteries and time of use)."
            )
        else:
            out.append(
                f"PEM cannot lower the buyers' cost by more than 1 − p_l/ps = "
                f"{100 * (1 - low / retail):.1f}% (all demand bought at p_l); with b = 0, "
                f"Eq. 13 gives p̂ ≤ √(ps·k) = {(retail * max(p['pem_k'])) ** 0.5:.1f} < p_l "
                f"for k ≤ {max(p['pem_k'])}, so the price is p_l in every window with sellers "
                "and k changes only the sellers' utility."
            )
    for n, runs in summary.get("by_agents", {}).items():
        said = "; ".join(f"{run} {_fmt(m['buyers_cost_vs_grid_only_pct'])}% over the run, "
                         f"{_fmt(m['buyers_cost_vs_grid_only_pct_mean_of_windows'])}% as a "
                         "mean of windows" for run, m in runs.items())
        out.append(f"Fig. 6(c), the first {n} agents: buyers' cost {said} (the paper: "
                   f"{PAPER_BUYERS_COST_PCT}% on average, for 100 and 200 agents).")
    return out


def report_title(summary: dict[str, Any]) -> str:
    """The report's heading from the run's actual span, e.g. ``An hour of a neighbourhood``."""
    d = summary["dataset"]
    minutes = d.get("span_minutes", d["windows"] * d["window_minutes"])
    return f"{span_text(minutes)} of a neighbourhood"


def sweep_section(sweep: dict[str, Any] | None) -> str:
    """The report's section on PEM's runtime (paper Fig. 5): the sweep's plots, copied next to
    the report, its points and the paper's figures as its text states them; empty without."""
    if not sweep:
        return ""
    rows = "".join(
        "<tr>" + "".join(f"<td>{_fmt(r.get(k))}</td>" for k in SWEEP_COLUMNS) + "</tr>"
        for r in sweep.get("rows", []))
    head = "".join(f"<th>{html.escape(k)}</th>" for k in SWEEP_COLUMNS)
    figs = "".join(
        f"<figure><img src='pem_sweep/{html.escape(name)}' alt='{html.escape(name)}'>"
        f"<figcaption>{html.escape(name)}</figcaption></figure>" for name in SWEEP_PLOTS)
    paper = sweep.get("paper", {})
    said = [paper.get(k) for k in ("seconds_per_window_cited", "fig_5b", "fig_5c")]
    notes = "".join(f"<li>{html.escape(str(s))}</li>" for s in said if s)
    return (f"<h2>PEM's runtime (paper Fig. 5)</h2><p class='meta'>From "
            f"<a href='pem_sweep/sweep.json'>pem_sweep/sweep.json</a> (sealgrid bench pem "
            f"--sweep; seconds are wall time on this machine). The paper, as its text states "
            f"it ({html.escape(str(paper.get('source', 'xie2020 §VII-B')))}):</p>"
            f"<ul>{notes}</ul><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody>"
            f"</table><div class='grid'>{figs}</div>")


def write_html(summary: dict[str, Any], windows: pd.DataFrame, figures: list[Path],
               path: Path, timings: dict[str, Any] | None = None,
               sweep: dict[str, Any] | None = None) -> Path:
    """Write the static report: parameters, the summary table, figures side by side (and
    PEM's runtime sweep when one is given)."""
    runs = list(summary["mechanisms"])
    d, p = summary["dataset"], summary["parameters"]
    tz = d.get("timezone", SITE_TZ)
    timed = timings["mechanisms"] if timings else {}
    head = "".join(f"<th>{html.escape(r)}</th>" for r in runs)
    rows = [(key, label, summary["mechanisms"]) for key, label in ROWS]
    if timed:
        rows += [(key, label, timed) for key, label in TIMING_ROWS]
    body = "".join(
        "<tr><th class='l'>" + html.escape(label) + "</th>"
        + "".join(f"<td>{_fmt(source.get(r, {}).get(key))}</td>" for r in runs) + "</tr>"
        for key, label, source in rows
    )
    figs = "".join(
        f"<figure><img src='{html.escape(f.name)}' alt='{html.escape(f.stem)}'>"
        f"<figcaption>{html.escape(CAPTIONS.get(f.name, ''))}</figcaption></figure>"
        for f in figures
    )
    notes = "".join(f"<li>{html.escape(s)}</li>" for s in _discussion(summary, windows))
    caveat = paper_caveat(d) if "source" in d else None
    caveat_html = f"<p class='caveat'>{html.escape(caveat)}</p>" if caveat else ""
    mode = "secure" if summary["secure"] else "plaintext"
    title = report_title(summary)
    dates = span_dates(d["first_window_local"], d["end_local"])
    wall = (f" Wall time {timings['wall_seconds']:.1f} s." if timings
            and timings.get("wall_seconds") is not None else "")
    if d.get("source") in (None, "day", "week"):
        credit = ("Data: PV from pvlib's TMY3 file for Greensboro NC (NREL) with seeded "
                  "minute-scale cloud variability; household load from the CREST/richardsonpy "
                  "stochastic model (UK time-use data). See sealgrid/data/ATTRIBUTION.md and "
                  "docs/simulation.md.")
    else:
        credit = (f"Data: {d['source']} (SHA-256 {d.get('sha256', '')}), a user's file; see "
                  "docs/simulation.md for its columns.")
    tables = " ".join(f"<a href='{n}'>{n}</a>" for n in (
        "windows.csv", "households.csv", "trades.csv", "summary.json", "scenario.toml"))
    text = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(f"sealgrid simulation: {title}, {dates} ({tz})")}</title>
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
.caveat {{ background: #fff6d5; border-left: 4px solid #e0b000; padding: 6px 10px; }}
</style></head><body>
<h1>{html.escape(title)} — sealgrid simulation</h1>
<p class="meta">{html.escape(dates)} ({html.escape(tz)}). {d['homes']} homes
({d['homes_with_pv']} with rooftop PV), {d['windows']} windows of {d['window_minutes']} min,
{html.escape(_when(d['first_window_utc']))} to {html.escape(_when(d['end_utc']))} UTC; data
{html.escape(d['name'])}; {mode} clearing. Retail {p['retail']:g}, feed-in {p['feed_in']:g},
network fee {p['network_fee']:g} ¢/kWh; PEM range
[{p['pem_range'][0]:g}, {p['pem_range'][1]:g}] ¢/kWh, k = {', '.join(map(str, p['pem_k']))},
ε = {p['pem_epsilon']:g}; double auction on {p['auction_grid']['levels']} levels of
{p['auction_grid']['tick']:g} ¢/kWh, bids by the {html.escape(p['strategy'])} strategy
(seed {p['seed']}).{wall}</p>
<h2>Summary</h2>
<table><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>
<p class="meta">Tables (CSV, and parquet of the same name): {tables}</p>
<h2>Against the paper (Xie et al., PEM, §VII)</h2>{caveat_html}<ul>{notes}</ul>
<h2>Figures</h2><div class="grid">{figs}</div>
{sweep_section(sweep)}
<p class="meta">{html.escape(credit)}</p>
</body></html>
"""
    path.write_text(text, encoding="utf-8")
    return path


def _csv(frame: pd.DataFrame, path: Path) -> None:
    """Write a table as CSV: UTC times as ISO 8601 with Z, empty cells for missing values."""
    out = frame.copy()
    for column in out.columns:
        if isinstance(out[column].dtype, pd.DatetimeTZDtype):
            out[column] = out[column].dt.tz_convert("UTC").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    out.to_csv(path, index=False, lineterminator="\n")


#: What the report shows of a PEM sweep (sealgrid bench pem --sweep --out DIR).
SWEEP_PLOTS = ("time_vs_windows.png", "time_vs_key_bits.png", "time_vs_agents.png")
SWEEP_COLUMNS = ("agents", "key_bits", "windows", "online_seconds_per_window",
                 "total_seconds_per_window", "offline_seconds", "bytes_per_agent_per_window",
                 "matches_plaintext")


def read_sweep(folder: Path) -> dict[str, Any]:
    """A PEM sweep's ``sweep.json`` (``sealgrid bench pem --sweep --out FOLDER``).

    Raises:
        ValueError: the folder holds no sweep (its path and what is missing named).
    """
    try:
        doc = json.loads((folder / "sweep.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{folder}: not the output of 'sealgrid bench pem --sweep --out' "
                         f"(sweep.json: {exc})") from None
    missing = [n for n in SWEEP_PLOTS if not (folder / n).is_file()]
    if not isinstance(doc, dict) or "rows" not in doc or missing:
        raise ValueError(f"{folder}: not the output of 'sealgrid bench pem --sweep --out' "
                         f"(missing {', '.join(missing) or 'rows in sweep.json'})")
    return doc


def write_outputs(result: SimulationResult, data: Neighbourhood, params: MarketParams,
                  out: Path, secure: bool, wall_seconds: float,
                  scenario: scenarios.Scenario | None = None,
                  pem_sweep: Path | None = None) -> dict[str, Path]:
    """Write every output file into ``out``; return their paths by name.

    ``scenario`` (the effective one) is written as ``scenario.toml`` and into the summary.
    """
    out.mkdir(parents=True, exist_ok=True)
    summary = build_summary(result, data, params, secure, scenario=scenario)
    timings = build_timings(result, wall_seconds)
    paths = {name: out / name for name in (
        "summary.json", "timings.json", "windows.parquet", "windows.csv", "households.parquet",
        "households.csv", "trades.parquet", "trades.csv", "utility.parquet", "report.html")}
    paths["summary.json"].write_text(json.dumps(with_timings(summary, timings), indent=2)
                                     + "\n", encoding="utf-8")
    paths["timings.json"].write_text(json.dumps(timings, indent=2) + "\n", encoding="utf-8")
    if scenario is not None:
        paths["scenario.toml"] = out / "scenario.toml"
        paths["scenario.toml"].write_text(scenarios.dumps(scenario), encoding="utf-8")
    windows = result.windows
    legacy = windows.assign(**{old: windows[new] for old, new in LEGACY_WINDOW_COLUMNS.items()})
    legacy.to_parquet(paths["windows.parquet"], index=False)
    _csv(windows, paths["windows.csv"])
    result.households.to_parquet(paths["households.parquet"], index=False)
    _csv(result.households, paths["households.csv"])
    result.trades.to_parquet(paths["trades.parquet"], index=False)
    _csv(result.trades, paths["trades.csv"])
    result.utility.to_parquet(paths["utility.parquet"], index=False)
    if len(result.by_agents):
        for name in ("by_agents.parquet", "by_agents.csv"):
            paths[name] = out / name
        result.by_agents.to_parquet(paths["by_agents.parquet"], index=False)
        _csv(result.by_agents, paths["by_agents.csv"])
    multi_day = data.end - data.index[0] > pd.Timedelta(days=1)
    figures = plots.all_figures(windows, result.utility, params, out, multi_day=multi_day,
                                tz=data.tz, households=result.households,
                                by_agents=result.by_agents)
    sweep = None
    if pem_sweep is not None:  # linked from the report: copied next to it
        sweep = read_sweep(pem_sweep)
        (out / "pem_sweep").mkdir(exist_ok=True)
        for name in ("sweep.json", *SWEEP_PLOTS):
            shutil.copyfile(pem_sweep / name, out / "pem_sweep" / name)
            paths[f"pem_sweep/{name}"] = out / "pem_sweep" / name
    write_html(summary, windows, figures, paths["report.html"], timings, sweep)
    named = {"summary": paths["summary.json"], "windows": paths["windows.parquet"],
             "utility": paths["utility.parquet"], "report": paths["report.html"],
             "timings": paths["timings.json"], "households": paths["households.csv"],
             "trades": paths["trades.csv"]}
    if scenario is not None:
        named["scenario"] = paths["scenario.toml"]
    for f in figures:
        named[f.stem] = f
    return {**paths, **named}
