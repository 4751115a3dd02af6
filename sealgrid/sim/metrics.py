"""Summary figures per run from the per-window rows; assumes the columns of :mod:`run`.

The figures are deterministic (a re-run gives the same bytes); the wall-clock clearing times
are kept apart (:func:`timings`).

Percentages compare the market with the grid-only benchmark of paper xie2020 §VII-A
(everyone imports at retail, exports at feed-in): negative is a reduction.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd


def _pct(with_: float, without: float) -> float | None:
    """``100·(with − without)/without``, or None when there is nothing to compare."""
    if without == 0:
        return None
    return round(100.0 * (with_ - without) / without, 3)


def _num(x: float) -> float | None:
    """A JSON-safe float (None for NaN), rounded for reading."""
    return None if x is None or math.isnan(x) else round(float(x), 6)


def summarise_run(rows: pd.DataFrame) -> dict[str, Any]:
    """Summarise one run's windows (see docs/simulation.md for each figure's meaning)."""
    traded = rows[rows["traded_kwh"] > 0]
    with_buyers = rows[rows["buyers_cost_without_ct"] > 0]
    per_window = 100.0 * (
        with_buyers["buyers_cost_with_ct"] / with_buyers["buyers_cost_without_ct"] - 1.0
    )
    per_traded = per_window[with_buyers["traded_kwh"] > 0]
    volume = float(rows["traded_kwh"].sum())
    paid = float((traded["price_ct_per_kwh"] * traded["traded_kwh"]).sum())
    weighted = paid / volume if volume else math.nan
    kinds = rows["kind"].value_counts().sort_index()
    return {
        "windows": len(rows),
        "windows_traded": len(traded),
        "market_kinds": {str(k): int(v) for k, v in kinds.items()},
        "mean_price_cents_per_kwh": (
            _num(traded["price_ct_per_kwh"].mean()) if len(traded) else None
        ),
        "volume_weighted_price_cents_per_kwh": _num(weighted),
        "traded_kwh": _num(volume),
        "buyers_cost_cents": _num(rows["buyers_cost_with_ct"].sum()),
        "buyers_cost_grid_only_cents": _num(rows["buyers_cost_without_ct"].sum()),
        "buyers_cost_vs_grid_only_pct": _pct(
            rows["buyers_cost_with_ct"].sum(), rows["buyers_cost_without_ct"].sum()
        ),
        "buyers_cost_vs_grid_only_pct_mean_of_windows": (
            _num(per_window.mean()) if len(per_window) else None
        ),
        "buyers_cost_vs_grid_only_pct_mean_of_traded_windows": (
            _num(per_traded.mean()) if len(per_traded) else None
        ),
        "sellers_revenue_cents": _num(rows["sellers_revenue_with_ct"].sum()),
        "sellers_revenue_feed_in_only_cents": _num(rows["sellers_revenue_without_ct"].sum()),
        "sellers_revenue_vs_feed_in_pct": _pct(
            rows["sellers_revenue_with_ct"].sum(), rows["sellers_revenue_without_ct"].sum()
        ),
        "grid_exchange_kwh": _num(rows["grid_exchange_with_kwh"].sum()),
        "grid_exchange_without_market_kwh": _num(rows["grid_exchange_without_kwh"].sum()),
        "grid_exchange_vs_without_market_pct": _pct(
            rows["grid_exchange_with_kwh"].sum(), rows["grid_exchange_without_kwh"].sum()
        ),
    }


def timing_run(rows: pd.DataFrame) -> dict[str, Any]:
    """One run's clearing times (wall-clock: they differ from run to run, unlike the rest)."""
    return {
        "seconds_per_window": _num(rows["clearing_seconds"].mean()),
        "seconds_per_window_max": _num(rows["clearing_seconds"].max()),
        "online_seconds_per_window": (
            _num(rows["online_seconds"].mean()) if rows["online_seconds"].notna().any() else None
        ),
        "offline_seconds_per_window": (
            _num(rows["offline_seconds"].mean())
            if "offline_seconds" in rows and rows["offline_seconds"].notna().any() else None
        ),
        "offline_seconds": (
            _num(rows["offline_seconds"].sum())
            if "offline_seconds" in rows and rows["offline_seconds"].notna().any() else None
        ),
    }


def summarise(windows: pd.DataFrame, run_keys: list[str]) -> dict[str, dict[str, Any]]:
    """Summarise every run, in the given order (no timings: see :func:`timings`)."""
    return {key: summarise_run(windows[windows["run"] == key]) for key in run_keys}


def timings(windows: pd.DataFrame, run_keys: list[str]) -> dict[str, dict[str, Any]]:
    """Every run's clearing times, in the given order."""
    return {key: timing_run(windows[windows["run"] == key]) for key in run_keys}


def utility_summary(utility: pd.DataFrame) -> list[dict[str, Any]]:
    """Mean utility of each selected seller per k, with the market and with feed-in only."""
    out = []
    for (home, k), g in utility.groupby(["home", "k"], sort=True):
        out.append({
            "home": str(home),
            "k": int(k),
            "windows_as_seller": len(g),
            "mean_utility_with_market": _num(float(np.mean(g["utility_with"]))),
            "mean_utility_without_market": _num(float(np.mean(g["utility_without"]))),
        })
    return out
