"""Simulating a few windows: balance, savings, grid exchange, paper anchors, secure door."""

from __future__ import annotations

import sys
from fractions import Fraction
from typing import Any

import pytest

from sealgrid.mechanism.pem import FIXED
from sealgrid.protocol.pem.params import SIGMA
from sealgrid.sim import dataset
from sealgrid.sim.agents import MarketParams
from sealgrid.sim.metrics import summarise
from sealgrid.sim.run import runs_for, selected_sellers, simulate
from sealgrid.sim.window import Run, SecureUnavailable, clear_window, settle_window

PARAMS = MarketParams()
# Windows around 09:00 (a thin market), 12:30 (surplus) and 18:00 (evening) local time.
STARTS = (120, 330, 660)


@pytest.fixture(scope="module", params=STARTS)
def data(request) -> dataset.Neighbourhood:
    return dataset.load("day", homes=40, windows=3, start=request.param)


@pytest.mark.parametrize("run", runs_for("all", PARAMS), ids=lambda r: r.key)
def test_each_window_balances_and_saves(data, run):
    names = data.home_names
    for w in range(len(data.index)):
        net = data.net_mwh[w]
        result, seconds, online = clear_window(run, PARAMS, w, names, data.pv_mwh[w],
                                               data.load_mwh[w])
        assert seconds >= 0 and online is None
        assert sum(result.bought_kwh) == sum(result.sold_kwh)
        for i, v in enumerate(net):
            assert result.bought_kwh[i] == 0 or v < 0  # only buyers buy
            assert result.sold_kwh[i] == 0 or v > 0  # only sellers sell
            # Nobody trades more than its whole-Wh bid (DA) or its net energy (PEM).
            limit = Fraction((abs(int(v)) + 500) // 1000, 1000)
            assert max(result.bought_kwh[i], result.sold_kwh[i]) <= max(
                limit, Fraction(abs(int(v)), 10**6))
        money = settle_window(result, PARAMS, names, net)
        assert money.buyers_cost_with <= money.buyers_cost_without
        assert money.grid_exchange_with_kwh <= money.grid_exchange_without_kwh
        if run.mechanism == "pem":
            assert money.sellers_revenue_with >= money.sellers_revenue_without
        if result.price is not None and run.mechanism == "double-auction":
            assert PARAMS.feed_in <= result.price <= PARAMS.retail
        if run.mechanism == "none":
            assert money.traded_kwh == 0
            assert money.buyers_cost_with == money.buyers_cost_without


def test_pem_prices_follow_the_paper():
    """Retail when nobody sells (07:00); with k ≤ 40, Eq. 13 gives p̂ < p_l = 90 otherwise."""
    data = dataset.load("day", homes=60, windows=2, start=0)
    for k in (20, 40):
        result = clear_window(Run("pem", k), PARAMS, 0, data.home_names, data.pv_mwh[0],
                              data.load_mwh[0]).result
        assert result.kind == "no_sellers" and result.price == 120
    noon = dataset.load("day", homes=60, windows=1, start=360)
    result = clear_window(Run("pem", 20), PARAMS, 0, noon.home_names, noon.pv_mwh[0],
                          noon.load_mwh[0]).result
    assert result.price == 90 and result.kind in ("general", "extreme")


def test_summary_is_consistent():
    data = dataset.load("day", homes=30, windows=4, start=300)
    runs = runs_for("all", PARAMS)
    result = simulate(data, PARAMS, runs)
    assert len(result.windows) == 4 * len(runs)
    summary = summarise(result.windows, [r.key for r in runs])
    assert list(summary) == ["none", "double-auction", "pem-k20", "pem-k40"]
    assert summary["none"]["buyers_cost_vs_grid_only_pct"] == 0
    assert summary["none"]["traded_kwh"] == 0
    for key in ("double-auction", "pem-k20", "pem-k40"):
        s = summary[key]
        assert s["traded_kwh"] > 0
        assert s["buyers_cost_vs_grid_only_pct"] < 0
        assert s["grid_exchange_vs_without_market_pct"] < 0
        assert 80 <= s["mean_price_cents_per_kwh"] <= 120
        # Every traded kWh saves one import and one export.
        saved = s["grid_exchange_without_market_kwh"] - s["grid_exchange_kwh"]
        assert saved == pytest.approx(2 * s["traded_kwh"], abs=0.002 * 4 * 30)
    assert result.selected_sellers == tuple(data.home_names[i] for i in selected_sellers(data))
    assert set(result.utility["k"]) == {20, 40}
    assert (result.utility["utility_with"] >= result.utility["utility_without"] - 1e-9).all()


def test_runs_are_deterministic():
    data = dataset.load("day", homes=20, windows=3, start=400)
    runs = runs_for("all", PARAMS)
    a = simulate(data, PARAMS, runs).windows.drop(columns="clearing_seconds")
    b = simulate(data, PARAMS, runs).windows.drop(columns="clearing_seconds")
    assert a.equals(b)


def test_secure_without_protocols_says_what_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "sealgrid.protocol.clearing", None)
    monkeypatch.setitem(sys.modules, "sealgrid.protocol.pem", None)
    data = dataset.load("day", homes=5, windows=1, start=300)
    for run in (Run("double-auction"), Run("pem", 20)):
        with pytest.raises(SecureUnavailable, match=r"secure mode needs sealgrid\.protocol"):
            clear_window(run, PARAMS, 0, data.home_names, data.pv_mwh[0], data.load_mwh[0],
                         secure=True)


#: Options for the secure entry points in tests: small keys (fast), the parties in-process.
SECURE_OPTIONS = {"pem": {"key_bits": 512}}
#: The private PEM rounds and blurs amounts (docs/pem.md, "Noise on the ratios"): each pairwise
#: amount is within σ + 1 fixed-point units of the exact one, so a household's total within
#: (its partners) × (σ + 1) units; 12 homes bound the partners. Tolerance per household, kWh.
PEM_AMOUNT_TOLERANCE = Fraction(12 * (SIGMA + 1), FIXED)


@pytest.mark.slow
@pytest.mark.parametrize("run", [Run("double-auction"), Run("pem", 20)], ids=lambda r: r.key)
def test_secure_equals_plaintext_on_a_few_windows(run):
    """Secure runs of the same windows give the plaintext result (needs sealgrid.protocol)."""
    module = "sealgrid.protocol.clearing" if run.mechanism == "double-auction" else (
        "sealgrid.protocol.pem")
    pytest.importorskip(module)
    data = dataset.load("day", homes=12, windows=3, start=330)
    for w in range(3):
        args = (run, PARAMS, w, data.home_names, data.pv_mwh[w], data.load_mwh[w])
        cleared = clear_window(*args, secure=True, secure_options=SECURE_OPTIONS)
        secure, plain = cleared.result, clear_window(*args).result
        assert cleared.online_seconds is None or cleared.online_seconds <= cleared.seconds
        if run.mechanism == "double-auction":
            assert secure == plain
            continue
        assert (secure.kind, secure.price) == (plain.kind, plain.price)
        for got, want in zip(secure.bought_kwh + secure.sold_kwh,
                             plain.bought_kwh + plain.sold_kwh, strict=True):
            assert abs(got - want) <= PEM_AMOUNT_TOLERANCE


def test_households_and_trades_add_up_to_the_windows():
    data = dataset.load("day", homes=30, windows=5, start=100)
    runs = runs_for("all", PARAMS)
    result = simulate(data, PARAMS, runs)
    assert set(result.households["run"]) == {"double-auction", "pem-k20", "pem-k40"}
    for key in ("double-auction", "pem-k20", "pem-k40"):
        w = result.windows[result.windows["run"] == key]
        h = result.households[result.households["run"] == key]
        t = result.trades[result.trades["run"] == key]
        assert len(h) == 30 and h["home"].tolist() == list(data.home_names)
        # The households' gains are the buyers' savings plus the sellers' extra revenue.
        saved = (w["buyers_cost_without_ct"] - w["buyers_cost_with_ct"]).sum()
        extra = (w["sellers_revenue_with_ct"] - w["sellers_revenue_without_ct"]).sum()
        assert h["gain_ct"].sum() == pytest.approx(saved + extra, abs=1e-6)
        assert (h["gain_ct"] >= -1e-9).all()  # nobody loses against grid only (no fee)
        assert h["bought_kwh"].sum() == pytest.approx(w["traded_kwh"].sum(), abs=1e-9)
        assert h["sold_kwh"].sum() == pytest.approx(w["traded_kwh"].sum(), abs=1e-9)
        # Trades: per window one row per household that traded, buys matching sells.
        for side, column in (("buy", "bought_kwh"), ("sell", "sold_kwh")):
            per_home = t[t["side"] == side].groupby("home")["energy_kwh"].sum()
            got = h.set_index("home")[column]
            assert per_home.to_numpy() == pytest.approx(got[got > 0].to_numpy(), abs=1e-9)
        assert t["payment_ct"].to_numpy() == pytest.approx(
            (t["energy_kwh"] * t["price_ct_per_kwh"]).to_numpy())
        assert set(t["window"]) <= set(range(5))
    # Grid-only money is the tariffs on the metered energy.
    h = result.households[result.households["run"] == "pem-k20"]
    expected = 80 * h["export_kwh"] - 120 * h["import_kwh"]
    assert h["money_without_market_ct"].to_numpy() == pytest.approx(expected.to_numpy())
    net = data.net_mwh
    assert h["import_kwh"].sum() == pytest.approx(-net[net < 0].sum() / 1e6)


@pytest.mark.slow
def test_a_secure_pem_run_keeps_its_agents_across_windows(monkeypatch):
    """simulate --secure runs PEM through one session: keys made once for the run, each
    window equal to the plaintext one (price exact, amounts within the noise's bound), its
    online and offline seconds in the windows table."""
    pytest.importorskip("sealgrid.protocol.pem")
    from sealgrid.sim import window as sim_window

    made: list[tuple[Any, list[int]]] = []
    real = sim_window.pem_session

    def watched(names, key_bits, seed, processes=None):
        session = real(names, key_bits, seed, processes=1)
        keys = session.backend.make_keys
        calls: list[int] = []

        def make_keys():
            calls.append(1)
            return keys()

        session.backend.make_keys = make_keys
        made.append((session, calls))
        return session

    monkeypatch.setattr("sealgrid.sim.run.pem_session", watched)
    data = dataset.load("day", homes=12, windows=3, start=330)
    runs = (Run("none"), Run("pem", 20))
    secure = simulate(data, PARAMS, runs, secure=True, secure_options=SECURE_OPTIONS)
    plain = simulate(data, PARAMS, runs)
    ((session, calls),) = made
    assert calls == [1] and session.windows_run == 3  # one session, keys made once
    got = secure.windows[secure.windows["run"] == "pem-k20"]
    want = plain.windows[plain.windows["run"] == "pem-k20"]
    assert got["kind"].tolist() == want["kind"].tolist()
    assert got["price_ct_per_kwh"].tolist() == want["price_ct_per_kwh"].tolist()
    assert got["traded_kwh"].to_numpy() == pytest.approx(
        want["traded_kwh"].to_numpy(), abs=float(PEM_AMOUNT_TOLERANCE) * 12)
    assert got["online_seconds"].notna().all() and got["offline_seconds"].notna().all()
    assert want["offline_seconds"].isna().all()
