"""The service's commands: init, household register/bid/result, aggregates, demo."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

from sealgrid.cli import main
from sealgrid.mechanism.auction import clear
from sealgrid.mechanism.bids import OrderBook, check_bid
from sealgrid.mechanism.market import DEFAULT_GRID, Market
from sealgrid.service import wire
from sealgrid.service.agent import PseudonymStore

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


THIN = {"h0001": ("buy", "0.7", "110"), "h0002": ("sell", "0.3", "90")}
THREE_A_SIDE = {  # suppliers by init: h0001 s1, h0002 s2, h0003 s3, h0004 s1, …
    "h0001": ("buy", "1.5", "110"), "h0003": ("buy", "1", "105"), "h0005": ("buy", "0.5", "100"),
    "h0002": ("sell", "1.5", "90"), "h0004": ("sell", "1.2", "95"), "h0006": ("sell", "0.6", "99"),
}
NO_QUANTITY = {"type", "v", "status", "level", "price", "invalid_bids", "reason"}


def test_household_and_supplier_commands_against_real_servers(tmp_path, capsys) -> None:
    """A thin period publishes no_trade and no quantity; a period with three accepted bids a
    side publishes its price and no quantity, and every reader rebuilds its exact amount."""
    c = Cluster(tmp_path / "data", households=6, period_seconds=4)  # the default: 3 a side
    try:
        for i in range(3):
            c.start(i)
        asyncio.run(c.wait_ready())
        d = str(c.root)
        assert main(["household", "register", "--data-dir", d, "--household", "h0001"]) == 0
        assert capsys.readouterr().out.count("registered") == 3
        thin, full = c.period_ahead(0, min_lead=9.0), c.period_ahead(1, min_lead=9.0)
        # h0001 fetches its tokens ahead; its bid then goes out under the kept pseudonym
        got = _json(capsys, "household", "tokens", "--data-dir", d, "--household", "h0001",
                    "--periods", "8")
        assert full in got["periods"]
        kept = PseudonymStore.of(c.root, "h0001").load(full)
        assert len(kept.tokens) == 3 and kept.side is None
        for period, bids in ((thin, THIN), (full, THREE_A_SIDE)):
            for hid, (side, kwh, price) in bids.items():
                got = _json(capsys, "household", "bid", "--data-dir", d, "--household", hid,
                            "--side", side, "--quantity", kwh, "--price", price,
                            "--period", period)
                assert set(got["receipts"]) == {"0", "1", "2"}
                if (hid, period) == ("h0001", full):
                    assert got["pseudonym"] == wire.b64e(wire.raw_public(kept.key))
        # a bid breaking a market rule never leaves the household
        bad = ["household", "bid", "--data-dir", d, "--household", "h0003", "--side", "buy",
               "--quantity", "1", "--price", "100.05", "--period", thin]
        assert main(bad) == 1
        assert "price_off_grid" in capsys.readouterr().err
        assert not (c.root / "households" / "h0003.pseudonyms" / thin.replace(":", "")).exists()
        for period in (thin, full):
            statements = asyncio.run(c.statements(period, timeout=90))
            assert all(set(json.loads(s.outcome)) == NO_QUANTITY for s in statements)
        # the thin period: nobody trades, nobody learns a quantity
        thin_public = json.loads(asyncio.run(c.statements(thin, timeout=5))[0].outcome)
        assert (thin_public["status"], thin_public["price"]) == ("no_trade", None)
        got = _json(capsys, "household", "result", "--data-dir", d, "--household", "h0001",
                    "--period", thin)
        assert got["status"] == "no_trade" and "traded_wh" not in got
        # the full period: every household's exact amount, as the plaintext rule gives it
        market = Market(DEFAULT_GRID, 10_000, ("s1", "s2", "s3"), min_accepted_per_side=3)
        checked = [check_bid(market, h, *THREE_A_SIDE[h], f"s{(int(h[1:]) - 1) % 3 + 1}")[0]
                   for h in THREE_A_SIDE]
        book = OrderBook.from_bids([b for b in checked if b is not None], market.suppliers)
        ref = clear(book, market.levels, min_accepted_per_side=3)
        assert ref.level is not None and ref.denominator_buy * ref.denominator_sell > 1
        for i, hid in enumerate(THREE_A_SIDE):
            got = _json(capsys, "household", "result", "--data-dir", d, "--household", hid,
                        "--period", full)
            assert got["status"] == "cleared" and got["issuer_keys_match"] is True
            assert got["public"]["price"] == str(market.grid.price(ref.level))
            assert got["accepted"] is bool(ref.accepted[i])
            assert got["traded_wh"] == float(ref.traded_wh(i, bool(book.is_buy[i])))
            assert got["traded_kwh"] == float(ref.traded_wh(i, bool(book.is_buy[i])) / 1000)
            assert got["price_ct_per_kwh"] == got["public"]["price"]
            assert got["units"] == {"price": "ct/kWh", "money": "ct", "energy": "kWh"}
        for j, sid in enumerate(market.suppliers):
            got = _json(capsys, "aggregates", "--data-dir", d, "--role", "supplier", "--id",
                        sid, "--period", full)
            assert (got["bought_wh"], got["sold_wh"]) == (
                float(ref.supplier_bought_wh[j]), float(ref.supplier_sold_wh[j]))
            assert (got["bought_kwh"], got["sold_kwh"]) == (
                float(ref.supplier_bought_wh[j] / 1000), float(ref.supplier_sold_wh[j] / 1000))
            assert set(got["public"]) == NO_QUANTITY - {"type", "v"}
        got = _json(capsys, "aggregates", "--data-dir", d, "--role", "operator", "--id", "dso",
                    "--period", full)
        assert got["bought_wh"] == got["sold_wh"] == ref.volume_wh
        # a period this household never bid in: one clear line, no traceback
        assert main(["household", "result", "--data-dir", d, "--household", "h0006",
                     "--period", thin]) == 1
        assert f"no bid for {thin} on record here" in capsys.readouterr().err
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
        # money is conserved, up to each bill's rounding to 0.01 and the long side's
        # rounding to whole Wh (under 1 Wh per bid, at most 120 ¢/kWh)
        assert abs(diffs + p["household_difference_total"]) <= 6 * 0.01 + 6 * 0.12
        assert sum(s["billed_customers"] for s in p["suppliers"].values()) == 6
    assert report["data_dir"] == str((tmp_path / "demo").resolve())
    assert "bids sent" in proc.stderr
    assert time.monotonic() - started < 240
