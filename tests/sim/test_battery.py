"""The battery scenario: batteries that keep to their physics, both markets seeing the same
homes, and PEM's price inside ``(p_l, p_h)`` — the interior of Eq. 13 — in evening windows,
checked against the equation computed here from the data."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from sealgrid.cli import main
from sealgrid.mechanism.pem import FIXED
from sealgrid.sim import dataset
from sealgrid.sim import run as sim_run
from sealgrid.sim.agents import MarketParams
from sealgrid.sim.battery import BatteryModel
from sealgrid.sim.window import DOUBLE_AUCTION, PEM, Run, clear_window

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scenarios"
PARAMS = MarketParams(retail_peak=Decimal(240), batteries=BatteryModel(), pem_k=(40,))


@pytest.fixture(scope="module")
def day() -> dataset.Neighbourhood:
    return dataset.load_source("day")


def test_batteries_keep_to_their_physics(day: dataset.Neighbourhood) -> None:
    stored = sim_run.batteries_of(day, PARAMS)
    assert stored is not None
    has_pv = day.homes["has_pv"].to_numpy(dtype=bool)
    cap, eps, b, soc = (stored.capacity_mwh, stored.epsilon_fixed, stored.action_mwh,
                        stored.soc_mwh)
    assert not cap[~has_pv].any()  # only homes with PV have one
    assert 0.4 < stored.count / has_pv.sum() < 0.8  # about the share asked for (0.6)
    assert ((eps[cap > 0] >= 0.85 * FIXED) & (eps[cap > 0] <= 0.95 * FIXED)).all()
    assert (soc >= 0).all() and (soc <= cap).all()
    hours = sim_run.local_hours(day)
    peak = (hours >= 17) & (hours < 21)
    surplus = np.clip(day.pv_mwh - day.load_mwh, 0, None)
    assert (b[peak] <= 0).all() and (b[~peak] >= 0).all()
    assert (b[~peak] <= surplus[~peak]).all()  # charged from the home's own surplus only
    assert (b[peak] < 0).any() and (b[~peak] > 0).any()
    # the state of charge follows: + ⌊ε·b⌋ charging, − |b| discharging, from 20 %
    start = (cap * 2) // 10
    gained = np.where(b > 0, (b * eps) // FIXED, b)
    assert np.array_equal(soc[-1], start + gained.sum(axis=0))
    # seeded, in home order: the first homes have the same batteries without the others
    first = dataset.select(day, homes=40)
    again = sim_run.batteries_of(first, PARAMS)
    assert again is not None and np.array_equal(again.capacity_mwh, cap[:40])


def _eq13(retail: Fraction, k: int, g: np.ndarray, b: np.ndarray,
          eps: np.ndarray) -> Fraction:
    """Eq. 13 from the sellers' own numbers (kWh, ε), rounded down to 10⁻⁶."""
    terms = sum((Fraction(int(gi), FIXED) + 1 + Fraction(int(e), FIXED) * Fraction(int(bi), FIXED)
                 - Fraction(int(bi), FIXED)) for gi, bi, e in zip(g, b, eps, strict=True))
    square = retail * k * len(g) / terms
    return Fraction(math.isqrt(math.floor(square * 10**12)), 10**6)


def test_the_battery_scenario_prices_inside_the_range_by_eq13(
        day: dataset.Neighbourhood) -> None:
    stored = sim_run.batteries_of(day, PARAMS)
    assert stored is not None
    hours = sim_run.local_hours(day)
    names = day.home_names
    eps_all = np.where(stored.epsilon_fixed > 0, stored.epsilon_fixed, int(0.9 * FIXED))
    checked = 0
    for w in range(700, 720, 4):  # 18:40–19:00 local: little sun, batteries discharging
        now = PARAMS.at(int(hours[w]))
        assert now.retail == 240  # the peak's tariff
        cleared = clear_window(Run(PEM, 40), now, w, names, day.pv_mwh[w], day.load_mwh[w],
                               battery_mwh=stored.action_mwh[w],
                               epsilon_fixed=stored.epsilon_fixed)
        price = cleared.result.price
        if cleared.result.kind != "general" or price is None or not (
                Fraction(90) < price < Fraction(110)):
            continue
        net = day.pv_mwh[w] - day.load_mwh[w] - stored.action_mwh[w]
        sellers = net > 0
        assert net[sellers].sum() < -net[net < 0].sum()  # supply below demand: general
        assert price == _eq13(Fraction(240), 40, day.pv_mwh[w][sellers],
                              stored.action_mwh[w][sellers], eps_all[sellers])
        # most sellers are batteries' homes, selling what they discharge
        assert (stored.action_mwh[w][sellers] < 0).mean() > 0.5
        # the double auction sees the same homes: as many sellers as PEM
        auction = clear_window(Run(DOUBLE_AUCTION), now, w, names, day.pv_mwh[w],
                               day.load_mwh[w], battery_mwh=stored.action_mwh[w])
        assert sum(1 for s in auction.result.sold_kwh if s) <= int(sellers.sum())
        checked += 1
    assert checked >= 3, "the battery scenario no longer reaches the interior of Eq. 13"
    # the premise: the same windows without batteries and time of use never do
    flat = MarketParams(pem_k=(40,))
    for w in range(700, 720, 4):
        plain = clear_window(Run(PEM, 40), flat, w, names, day.pv_mwh[w], day.load_mwh[w])
        assert plain.result.price is not None
        assert not Fraction(90) < plain.result.price < Fraction(110)


def test_the_battery_scenario_file_runs_and_writes_itself_back(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["simulate", "--scenario", str(EXAMPLES / "batteries.toml"), "--homes", "200",
                 "--start-time", "2021-09-20T22:40:00Z", "--windows", "2", "--quiet",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    scenario = summary["scenario"]
    assert scenario["batteries"] is True and scenario["retail_peak_ct_per_kwh"] == 240
    assert scenario["peak_hours"] == [17, 21]
    written = (out / "scenario.toml").read_text()
    assert "batteries = true" in written and "retail_peak_ct_per_kwh = 240" in written
    assert list(summary["mechanisms"]) == ["none", "double-auction", "pem-k20", "pem-k40"]
    assert sorted(summary["by_agents"]) == ["100", "200"]  # the scenario's Fig. 6c


def test_fig6c_for_several_numbers_of_agents_in_one_run(tmp_path: Path) -> None:
    """``--agent-counts 20 40``: the runs again on the first 20 and 40 homes, each equal to a
    run of its own on those homes; their buyers' cost in summary.json, a table and a figure."""
    out = tmp_path / "both"
    window = ("--start-time", "2021-09-20T16:00:00Z", "--windows", "6", "--quiet")
    assert main(["simulate", "--mechanism", "pem", "--homes", "60", "--agent-counts", "40",
                 "20", *window, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["by_agents"]) == ["20", "40"]
    for n in ("20", "40"):
        alone = tmp_path / f"alone-{n}"
        assert main(["simulate", "--mechanism", "pem", "--homes", n, *window,
                     "--out", str(alone)]) == 0
        own = json.loads((alone / "summary.json").read_text())["mechanisms"]
        for run, figures in summary["by_agents"][n].items():
            assert figures["buyers_cost_cents"] == own[run]["buyers_cost_cents"], (n, run)
            assert figures["buyers_cost_vs_grid_only_pct"] == (
                own[run]["buyers_cost_vs_grid_only_pct"])
    table = (out / "by_agents.csv").read_text().splitlines()
    assert table[0].split(",")[-1] == "agents" and len(table) == 1 + 2 * 3 * 6  # N × runs × w
    assert (out / "buyers_cost_by_agents.png").read_bytes()[:4] == b"\x89PNG"
    assert "Fig. 6(c), the first 20 agents" in (out / "report.html").read_text()
    assert main(["simulate", "--mechanism", "pem", "--homes", "10", "--agent-counts", "20",
                 *window, "--out", str(tmp_path / "too-many")]) == 1
