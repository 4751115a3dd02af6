"""``sealgrid simulate`` writes every file, and refuses what it cannot do with one clear line."""

from __future__ import annotations

import json
import sys

import pandas as pd

from sealgrid.cli import main

FIGURES = ("price", "coalitions", "utility", "buyers_cost", "grid_exchange", "supply_demand")


def test_simulate_all_writes_summary_table_figures_and_report(tmp_path, capsys):
    out = tmp_path / "run"
    status = main(["simulate", "--mechanism", "all", "--homes", "12", "--start", "330",
                   "--windows", "3", "--quiet", "--out", str(out)])
    assert status == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["mechanisms"]) == ["none", "double-auction", "pem-k20", "pem-k40"]
    assert summary["dataset"]["homes"] == 12 and summary["dataset"]["windows"] == 3
    assert summary["secure"] is False
    for m in summary["mechanisms"].values():
        for key in ("mean_price_cents_per_kwh", "traded_kwh", "buyers_cost_vs_grid_only_pct",
                    "sellers_revenue_vs_feed_in_pct", "grid_exchange_vs_without_market_pct",
                    "seconds_per_window"):
            assert key in m
    windows = pd.read_parquet(out / "windows.parquet")
    assert len(windows) == 3 * 4
    assert str(windows["timestamp"].dt.tz) == "UTC"
    html = (out / "report.html").read_text()
    for name in FIGURES:
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"src='{name}.png'" in html
    assert "pem-k20" in html and "<table>" in html
    assert "report.html" in capsys.readouterr().out


def test_week_and_single_mechanism(tmp_path):
    out = tmp_path / "week"
    assert main(["simulate", "--data", "week", "--mechanism", "pem", "--pem-k", "20",
                 "--homes", "8", "--start", "40", "--windows", "2", "--quiet",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["mechanisms"]) == ["none", "pem-k20"]
    assert summary["dataset"]["window_minutes"] == 15


def test_secure_without_protocol_layer_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sealgrid.protocol.clearing", None)
    status = main(["simulate", "--mechanism", "double-auction", "--secure", "--homes", "4",
                   "--start", "330", "--windows", "1", "--quiet", "--out", str(tmp_path)])
    assert status == 1
    assert "secure mode needs sealgrid.protocol.clearing" in capsys.readouterr().err


def test_bad_selection_is_a_clear_error(tmp_path, capsys):
    assert main(["simulate", "--homes", "301", "--quiet", "--out", str(tmp_path)]) == 1
    assert "--homes must lie between 1 and 300" in capsys.readouterr().err
