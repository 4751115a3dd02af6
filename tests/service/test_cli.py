"""The service's commands: init, household register/bid/result, aggregates, demo."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

from sealgrid.cli import main

from .cluster import Cluster

pytestmark = pytest.mark.slow


def test_init_refuses_to_overwrite(tmp_path, capsys) -> None:
    assert main(["init", "--data-dir", str(tmp_path / "d"), "--households", "2"]) == 0
    out = capsys.readouterr().out
    assert "server-2/server.toml" in out and "keep it out of version control" in out
    assert main(["init", "--data-dir", str(tmp_path / "d")]) == 1
    assert "already holds a registry" in capsys.readouterr().err


def _json(capsys, *args: str) -> dict:
    """Run ``sealgrid ARGS --json``, want exit 0, and return the one JSON object it printed."""
    assert main([*args, "--json"]) == 0
    out: dict = json.loads(capsys.readouterr().out)
    return out


def test_household_and_supplier_commands_against_real_servers(tmp_path, capsys) -> None:
    c = Cluster(tmp_path / "data", households=3, period_seconds=4)
    try:
        for i in range(3):
            c.start(i)
        asyncio.run(c.wait_ready())
        d = str(c.root)
        assert main(["household", "register", "--data-dir", d, "--household", "h0001"]) == 0
        assert capsys.readouterr().out.count("registered") == 3
        period = c.period_ahead(0, min_lead=2.5)
        for hid, side, price in (("h0001", "buy", "110"), ("h0002", "sell", "90")):
            got = _json(capsys, "household", "bid", "--data-dir", d, "--household", hid,
                        "--side", side, "--quantity", "1.5", "--price", price, "--period", period)
            assert set(got["receipts"]) == {"0", "1", "2"}
        # a bid breaking a market rule never leaves the household
        bad = ["household", "bid", "--data-dir", d, "--household", "h0003", "--side", "buy",
               "--quantity", "1", "--price", "100.05", "--period", period]
        assert main(bad) == 1
        assert "price_off_grid" in capsys.readouterr().err
        assert not (c.root / "households" / "h0003.pseudonyms").exists()
        asyncio.run(c.statements(period, timeout=90))
        got = _json(capsys, "household", "result", "--data-dir", d, "--household", "h0001",
                    "--period", period)
        assert got["status"] == "cleared" and got["traded_wh"] == 1500.0
        assert got["accepted"] is True and got["issuer_keys_match"] is True
        assert got["public"]["price"] == "100.0" and got["public"]["status"] == "cleared"
        got = _json(capsys, "aggregates", "--data-dir", d, "--role", "supplier", "--id", "s2",
                    "--period", period)
        assert (got["bought_wh"], got["sold_wh"]) == (0.0, 1500.0)
        got = _json(capsys, "aggregates", "--data-dir", d, "--role", "operator", "--id", "dso",
                    "--period", period)
        assert got["bought_wh"] == got["sold_wh"] == 1500
        # a period this household never bid in: one clear line, no traceback
        assert main(["household", "result", "--data-dir", d, "--household", "h0003",
                     "--period", period]) == 1
        assert f"no bid for {period} on record here" in capsys.readouterr().err
    finally:
        c.stop()


def test_demo_runs_end_to_end(tmp_path) -> None:
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sealgrid",
            "demo",
            "--households",
            "6",
            "--periods",
            "2",
            "--data-dir",
            str(tmp_path / "demo"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert len(report["periods"]) == 2
    for p in report["periods"]:
        assert p["status"] == "cleared" and p["servers_agree"] and p["bids"] == 6
        diffs = sum(s["difference"] for s in p["suppliers"].values())
        assert abs(diffs + p["household_difference_total"]) < 1e-6  # money is conserved
    assert report["data_dir"] == str((tmp_path / "demo").resolve())
    assert "bids sent" in proc.stderr
    assert time.monotonic() - started < 240
