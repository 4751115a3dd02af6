"""``sealgrid simulate`` writes every file, re-runs its own scenario to the same bytes, and
refuses what it cannot do with one clear line, before the run."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest

from sealgrid.cli import main
from sealgrid.sim import dataset, report
from sealgrid.sim import run as sim_run

FIGURES = ("price", "coalitions", "utility", "buyers_cost", "grid_exchange", "supply_demand",
           "gains")
TABLES = ("windows", "households", "trades")
#: The small run most tests read: 12 homes, 3 one-minute windows from 12:30 local.
SMALL = ["--homes", "12", "--start", "330", "--windows", "3"]


def simulate(*args: str) -> tuple[int, str, str]:
    """Run ``sealgrid simulate ARGS --quiet``; return the status, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["simulate", *args, "--quiet"])
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small")
    status, stdout, err = simulate("--mechanism", "all", *SMALL, "--out", str(out))
    assert status == 0, err
    assert "report.html" in stdout and "scenario.toml" in stdout
    return out


def test_simulate_all_writes_summary_tables_figures_and_report(small):
    summary = json.loads((small / "summary.json").read_text())
    assert list(summary["mechanisms"]) == ["none", "double-auction", "pem-k20", "pem-k40"]
    assert summary["dataset"]["homes"] == 12 and summary["dataset"]["windows"] == 3
    assert summary["secure"] is False
    assert summary["units"] == {"price": "ct/kWh", "money": "ct", "energy": "kWh"}
    for m in summary["mechanisms"].values():
        for key in ("mean_price_cents_per_kwh", "traded_kwh", "buyers_cost_vs_grid_only_pct",
                    "sellers_revenue_vs_feed_in_pct", "grid_exchange_vs_without_market_pct"):
            assert key in m
    timings = json.loads((small / "timings.json").read_text())
    assert timings["wall_seconds"] >= 0 and summary["wall_seconds"] == timings["wall_seconds"]
    assert list(timings["mechanisms"]) == list(summary["mechanisms"])
    for run, t in timings["mechanisms"].items():
        assert set(t) == {"seconds_per_window", "seconds_per_window_max",
                          "online_seconds_per_window", "offline_seconds_per_window",
                          "offline_seconds"}
        # the documented fields of summary.json stay where they were, equal to timings.json
        assert {k: summary["mechanisms"][run][k] for k in t} == t
    windows = pd.read_parquet(small / "windows.parquet")
    assert len(windows) == 3 * 4
    assert str(windows["timestamp"].dt.tz) == "UTC"
    html = (small / "report.html").read_text()
    for name in FIGURES:
        png = small / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"src='{name}.png'" in html
    assert "pem-k20" in html and "<table>" in html


def test_tables_are_written_as_csv_and_parquet_with_units_in_their_names(small):
    for name in TABLES:
        csv = pd.read_csv(small / f"{name}.csv")
        parquet = pd.read_parquet(small / f"{name}.parquet")
        assert set(csv.columns) <= set(parquet.columns)
        assert len(csv) == len(parquet) > 0
        for column in csv.columns:
            if column.endswith(("_kwh", "_ct", "_ct_per_kwh")):
                assert (csv[column].to_numpy() == pytest.approx(parquet[column].to_numpy(),
                                                                 nan_ok=True))
    windows = pd.read_csv(small / "windows.csv")
    assert {"price_ct_per_kwh", "buyers_cost_with_ct", "traded_kwh"} <= set(windows.columns)
    assert "price" not in windows.columns  # the unit-less names only in the old parquet file
    assert windows["timestamp"].iloc[0] == "2021-09-20T16:30:00Z"
    old = pd.read_parquet(small / "windows.parquet")
    traded = old["kind"] == "traded"
    assert (old.loc[traded, "price"] == old.loc[traded, "price_ct_per_kwh"]).all()
    assert (old["buyers_cost_without"] == old["buyers_cost_without_ct"]).all()
    assert list(pd.read_csv(small / "households.csv").columns) == list(
        sim_run.HOUSEHOLD_COLUMNS)
    assert list(pd.read_csv(small / "trades.csv").columns) == list(sim_run.TRADE_COLUMNS)


def _figures(out):
    """summary.json without its wall-clock fields (listed in sim.report), as bytes; the
    fields left out must be exactly the ones timings.json holds."""
    summary = json.loads((out / "summary.json").read_text())
    timings = json.loads((out / "timings.json").read_text())
    kept = report.figures_of(summary)
    assert report.with_timings(kept, timings) == summary  # nothing else was left out
    return json.dumps(kept, indent=2).encode()


def test_a_written_scenario_reruns_to_the_same_summary_bytes(small, tmp_path):
    again = tmp_path / "again"
    status, _, err = simulate("--scenario", str(small / "scenario.toml"), "--out", str(again))
    assert status == 0, err
    assert _figures(again) == _figures(small)  # byte for byte, but the wall-clock fields
    assert (again / "scenario.toml").read_bytes() == (small / "scenario.toml").read_bytes()
    summary = json.loads((small / "summary.json").read_bytes())
    assert summary["dataset"]["first_window_utc"] == "2021-09-20T16:30:00+00:00"
    assert summary["scenario"]["start"] == "2021-09-20T16:30:00Z"
    assert summary["scenario"]["end"] == "2021-09-20T16:33:00Z"
    assert summary["scenario"]["homes"] == 12


def test_flags_override_the_scenario_file(tmp_path):
    file = tmp_path / "s.toml"
    file.write_text('homes = 6\nstart = "2021-09-20T16:30:00Z"\nwindows = 3\nseed = 7\n'
                    'mechanism = "pem"\npem_k = [20]\nretail_ct_per_kwh = 125\n')
    out = tmp_path / "out"
    status, _, err = simulate("--scenario", str(file), "--homes", "4", "--mechanism",
                              "double-auction", "--end-time", "2021-09-20T16:32:00Z",
                              "--out", str(out))
    assert status == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["dataset"]["homes"], summary["dataset"]["windows"]) == (4, 2)
    assert list(summary["mechanisms"]) == ["none", "double-auction"]
    assert summary["parameters"]["seed"] == 7 and summary["parameters"]["retail"] == 125
    written = tomllib.loads((out / "scenario.toml").read_text())
    assert (written["homes"], written["seed"], written["pem_k"]) == (4, 7, [20])
    assert written["start"] == "2021-09-20T16:30:00Z"
    assert written["end"] == "2021-09-20T16:32:00Z" and "windows" not in written


def test_start_by_index_and_by_utc_time_are_the_same_run(small, tmp_path):
    out = tmp_path / "by-time"
    status, _, err = simulate("--homes", "12", "--start-time", "2021-09-20T16:30:00Z",
                              "--end-time", "2021-09-20T16:33:00Z", "--out", str(out))
    assert status == 0, err
    assert _figures(out) == _figures(small)


def test_own_data_file_gives_the_same_market_as_the_embedded_windows(small, tmp_path):
    day = dataset.load("day", homes=12, windows=3, start=330)
    rows = [{"timestamp": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "home": int(h),
             "pv_mwh": int(day.pv_mwh[w, i]), "load_mwh": int(day.load_mwh[w, i])}
            for w, t in enumerate(day.index) for i, h in enumerate(day.homes["home"])]
    file = tmp_path / "mine.csv"
    pd.DataFrame(rows).sample(frac=1, random_state=1).to_csv(file, index=False)  # any order
    out = tmp_path / "own"
    status, _, err = simulate("--data", str(file), "--out", str(out))
    assert status == 0, err
    own = report.figures_of(json.loads((out / "summary.json").read_text()))
    embedded = report.figures_of(json.loads((small / "summary.json").read_text()))
    assert own["mechanisms"] == embedded["mechanisms"]
    assert own["dataset"]["source"] == str(file.resolve())
    assert own["dataset"]["timezone"] == "UTC"
    assert "A partial run" in (out / "report.html").read_text()  # another data set


def test_week_and_single_mechanism(tmp_path):
    out = tmp_path / "week"
    status, _, err = simulate("--data", "week", "--mechanism", "pem", "--pem-k", "20",
                              "--homes", "8", "--start", "40", "--windows", "2",
                              "--out", str(out))
    assert status == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["mechanisms"]) == ["none", "pem-k20"]
    assert summary["dataset"]["window_minutes"] == 15


# -- refusals: one line, exit 1, nothing run


@pytest.fixture
def no_run(monkeypatch):
    """Fail the test if the simulation starts."""
    def refuse(*args, **kwargs):
        raise AssertionError("the simulation ran although the command should have failed")
    monkeypatch.setattr(sim_run, "simulate", refuse)


def one_line_error(status: int, err: str) -> str:
    assert status == 1
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sealgrid: error: "), err
    return lines[0]


def test_out_naming_a_file_fails_before_anything(tmp_path, no_run):
    file = tmp_path / "taken.txt"
    file.write_text("keep me")
    bad = tmp_path / "bad.toml"
    bad.write_text("homes = [")  # the --out check comes first
    line = one_line_error(*simulate("--scenario", str(bad), *SMALL, "--out", str(file))[::2])
    assert f"--out {file}: is a file, not a folder" in line
    assert file.read_text() == "keep me"


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux /proc")
def test_out_that_cannot_be_created_fails_before_the_run(no_run):
    line = one_line_error(*simulate(*SMALL, "--out", "/proc/nope")[::2])
    assert "--out /proc/nope: cannot create or write the folder" in line


@pytest.mark.parametrize(("text", "expected"), [
    ("homes = [", "not valid TOML"),
    ("retail = 120", "unknown key 'retail' (did you mean 'retail_ct_per_kwh'?)"),
    ('homes = "twelve"', "key 'homes' must be a whole number ≥ 1, not 'twelve'"),
    ("feed_in_ct_per_kwh = true", "key 'feed_in_ct_per_kwh' must be a number of ¢/kWh"),
    ('start = "2021-09-20T16:30:00"', "key 'start' must name its time zone"),
    ('start = "noon"', "key 'start' must be an ISO 8601 date and time"),
    ('mechanism = "pme"', "key 'mechanism' must be one of 'none', 'double-auction'"),
    ("windows = 3\nend = 2021-09-20T16:33:00Z", "keys 'end' and 'windows' both set"),
    ("[pem]\nk = 20", "unknown key 'pem'"),
])
def test_a_bad_scenario_file_names_the_file_key_and_rule(tmp_path, no_run, text, expected):
    file = tmp_path / "bad.toml"
    file.write_text(text + "\n")
    line = one_line_error(*simulate("--scenario", str(file), "--out",
                                    str(tmp_path / "o"))[::2])
    assert str(file) in line and expected in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("args", "expected"), [
    (["--homes", "301"], "--homes must lie between 1 and 300"),
    (["--start-time", "2021-09-20T16:30:30Z"], "is not the start of a window"),
    (["--start-time", "2021-09-21T16:30:00Z"], "is outside the data"),
    (["--data", "nowhere.csv"], "nowhere.csv: no such data file"),
    (["--seed", "-1"], "the seed must be a whole number ≥ 0"),
    (["--timezone", "Mars/Olympus"], "must be an IANA time zone name"),
])
def test_bad_selection_or_setting_is_a_clear_error(tmp_path, no_run, args, expected):
    line = one_line_error(*simulate(*args, "--out", str(tmp_path / "o"))[::2])
    assert expected in line


def test_secure_without_protocol_layer_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sealgrid.protocol.clearing", None)
    line = one_line_error(*simulate("--mechanism", "double-auction", "--secure", "--homes",
                                    "4", "--start", "330", "--windows", "1", "--out",
                                    str(tmp_path))[::2])
    assert "secure mode needs sealgrid.protocol.clearing" in line
