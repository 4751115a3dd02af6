"""A whole billing cycle through three real servers and the CLI (SPEC §7, issue: meters and
bills): bids, meter readings that deviate both ways, households that do not bid, one that
sends no reading and one whose claim lies; every supplier's bill per customer equals the
plaintext settlement (``sealgrid settle`` on the same data, summed over the cycle) within
0.01, the DSO and TSO totals equal the plaintext sums, and the liar is refused by name while
everyone else is billed."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import json
import time
from dataclasses import replace
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from sealgrid.cli import main
from sealgrid.mechanism import billing as B
from sealgrid.mechanism.auction import clear, rationing
from sealgrid.mechanism.bids import OrderBook, check_bid
from sealgrid.mechanism.market import DEFAULT_GRID, Market
from sealgrid.protocol.billing import TRADE_MISMATCH, ClaimLayout, share_claim
from sealgrid.service.agent import HouseholdAgent
from sealgrid.service.schedule import BillingCalendar, utc_now
from tests.service.cluster import Cluster

PERIOD_S = 10
HOUSEHOLDS = [f"h{i:04d}" for i in range(1, 11)]  # suppliers s1, s2, s3 round robin; r1, r2
SUPPLIER = {h: f"s{i % 3 + 1}" for i, h in enumerate(HOUSEHOLDS)}
REGION = {h: f"r{i % 2 + 1}" for i, h in enumerate(HOUSEHOLDS)}
# (side, kWh, price) per household and period index; h0009 and h0010 never bid
BIDS = [
    {"h0001": ("buy", "1.5", "110"), "h0003": ("buy", "1", "105"), "h0005": ("buy", "0.8", "103"),
     "h0007": ("buy", "0.4", "101"), "@s2": ("buy", "0.5", "106"),
     "h0002": ("sell", "1.2", "90"), "h0004": ("sell", "1.1", "95"),
     "h0006": ("sell", "0.6", "99")},
    {"h0002": ("buy", "0.9", "108"), "h0004": ("buy", "0.7", "104"),
     "h0006": ("buy", "0.5", "103"),
     "h0001": ("sell", "0.5", "92"), "h0003": ("sell", "0.6", "96"),
     "h0005": ("sell", "0.4", "98"), "h0008": ("sell", "0.8", "100")},
]
SILENT = ("h0001", 0)  # traded in the first period and sends no reading
LIAR = ("h0002", 1)  # claims one Wh less bought than it got in the second period
MISNAMED = ("h0004", 0, "s3")  # a customer of s1 whose bid names s3
SUPPLIER["@s2"] = "s2"  # supplier s2 bids in the first period itself (its own position)


def _json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main([*args, "--json"]) == 0, capsys.readouterr().err
    out: dict = json.loads(capsys.readouterr().out)
    return out


def _readings(k: int) -> dict[str, tuple[int, int]]:
    """Meter readings (Wh) of period k: around each trade, deviating both ways."""
    rng = np.random.default_rng(100 + k)
    out = {}
    for h in HOUSEHOLDS:
        imp, exp = int(rng.integers(0, 2500)), int(rng.integers(0, 2500))
        out[h] = (imp, exp)
    return out


def _until(t: dt.datetime) -> None:
    wait = (t - utc_now()).total_seconds()
    if wait > 0:
        time.sleep(wait)


async def _bid_naming(agent: HouseholdAgent, market: Market, h: str,
                      bid: tuple[str, str, str], supplier: str, period: str) -> None:
    """Bid as household ``h`` but name ``supplier`` in the bid (not its contract's)."""
    checked, errors = check_bid(market, h, *bid, supplier)
    assert checked is not None, errors
    async with agent.client:
        outcome = await agent.bid(checked, period)
    assert outcome.complete


async def _lie(agent: HouseholdAgent, period: str, imp: int, exp: int,
               layout: ClaimLayout) -> None:
    """Send a claim of one Wh less bought than the household's own result says."""
    async with agent.client:
        claim = await agent.claim(period, imp, exp)
    assert claim.traded_wh > 0 and not claim.sell
    false = replace(claim, traded_wh=claim.traded_wh - 1)
    shares = share_claim(false, layout, 3)
    payloads = {i: np.asarray(v, dtype="<u8").tobytes() for i, v in enumerate(shares)}
    assert agent.meter_key is not None
    async with agent.client.fresh() as meter:
        receipts, refused = await meter.send_readings(period, payloads, agent.meter_key)
    assert len(receipts) == 3 and not refused


@pytest.mark.slow
def test_a_billing_cycle_through_real_servers(tmp_path: Path, capsys) -> None:
    c = Cluster(tmp_path / "data", households=len(HOUSEHOLDS), period_seconds=PERIOD_S,
                cycle_periods=2, reading_grace_periods=2)
    cal = BillingCalendar(PERIOD_S, 2, 2)
    market = Market(DEFAULT_GRID, 10_000, ("s1", "s2", "s3"), min_accepted_per_side=3)
    try:
        for i in range(3):
            c.start(i)
        asyncio.run(c.wait_ready())
        d = str(c.root)
        # the first cycle whose first gate is at least 25 s away
        start = cal.cycle_start(utc_now() + dt.timedelta(seconds=25 + 2 * PERIOD_S))
        start += cal.cycle_length
        cycle = cal.schedule.period_id(start)
        periods = cal.periods(cycle)
        for k, period in enumerate(periods):
            for h, (side, kwh, price) in BIDS[k].items():
                if h.startswith("@"):
                    got = _json(capsys, "supplier", "bid", "--data-dir", d, "--supplier", h[1:],
                                "--side", side, "--quantity", kwh, "--price", price,
                                "--period", period)
                    assert set(got["receipts"]) == {"0", "1", "2"}
                    continue
                if (h, k) == MISNAMED[:2]:
                    asyncio.run(_bid_naming(c.agent(h), market, h, BIDS[k][h], MISNAMED[2],
                                            period))
                    continue
                got = _json(capsys, "household", "bid", "--data-dir", d, "--household", h,
                            "--side", side, "--quantity", kwh, "--price", price,
                            "--period", period)
                assert set(got["receipts"]) == {"0", "1", "2"}
        assert utc_now() < cal.schedule.gate_closure(cal.schedule.parse_period(periods[0]))
        # plaintext: the clearing and the settled energy of every bidder
        settled: list[dict[str, tuple[str, int]]] = []
        prices: list[Decimal] = []
        for k in range(2):
            names = list(BIDS[k])
            bids = [check_bid(market, h, *BIDS[k][h], SUPPLIER[h])[0] for h in names]
            book = OrderBook.from_bids([b for b in bids if b is not None], market.suppliers)
            ref = clear(book, market.levels, min_accepted_per_side=3)
            assert ref.level is not None
            prices.append(market.grid.price(ref.level))
            ratio = {True: Fraction(*rationing(ref.volume_wh, ref.demand_wh)),
                     False: Fraction(*rationing(ref.volume_wh, ref.supply_wh))}
            got_k = {}
            for i, h in enumerate(names):
                buy = bool(book.is_buy[i])
                acc = int(book.quantity_wh[i]) if ref.accepted[i] else 0
                got_k[h] = ("buy" if buy else "sell", B.settled_wh(acc, ratio[buy]) if acc else 0)
            settled.append(got_k)
            assert any(r < 1 for r in ratio.values())  # a rationed side: the rounding shows
        # meter readings after each period ends, before its deadline
        layout = ClaimLayout.of(market.max_quantity_wh)
        for k, period in enumerate(periods):
            _until(cal.schedule.parse_period(period) + cal.period_length
                   + dt.timedelta(seconds=0.5))
            for h, (imp, exp) in _readings(k).items():
                if (h, k) == SILENT:
                    continue
                if (h, k) == LIAR:
                    asyncio.run(_lie(c.agent(h), period, imp, exp, layout))
                    continue
                got = _json(capsys, "meter", "read", "--data-dir", d, "--household", h,
                            "--period", period, "--import-kwh", str(Decimal(imp) / 1000),
                            "--export-kwh", str(Decimal(exp) / 1000))
                assert set(got["receipts"]) == {"0", "1", "2"} and not got.get("refused")
            assert utc_now() < cal.reading_deadline(period)
        # a second reading of a period is refused by name
        assert main(["meter", "read", "--data-dir", d, "--household", "h0009", "--period",
                     periods[0], "--import-kwh", "0", "--export-kwh", "0"]) != 0
        assert "duplicate_reading" in capsys.readouterr().out + capsys.readouterr().err
        # the bills, once the cycle is billed
        _until(cal.billing_time(cycle))
        deadline = time.monotonic() + 120
        while True:  # until every server has settled the cycle (they answer alike then)
            code = main(["bills", "--data-dir", d, "--supplier", "s1", "--cycle", cycle,
                         "--json"])
            out = capsys.readouterr()
            got = json.loads(out.out) if code == 0 else {"status": "pending"}
            if code != 0:
                assert "not all settled" in out.err, out.err
            if got["status"] == "billed" or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert got["status"] == "billed"
        # the plaintext settlement of each period with `sealgrid settle`, summed
        with open(tmp_path / "tariffs.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["supplier", "retail_ct_per_kwh", "feed_in_ct_per_kwh",
                        "network_fee_ct_per_kwh"])
            for s in ("s1", "s2", "s3"):
                w.writerow([s, "120", "80", "5"])
        expected: dict[str, Fraction] = dict.fromkeys(HOUSEHOLDS, Fraction(0))
        expected_without: dict[str, Fraction] = dict.fromkeys(HOUSEHOLDS, Fraction(0))
        io: dict[str, list[int]] = {h: [0, 0] for h in HOUSEHOLDS}
        for k in range(2):
            read = _readings(k)
            for who in (SILENT, LIAR):
                if who[1] == k:
                    read[who[0]] = (0, 0)  # billed as without a reading
            with open(tmp_path / f"meters{k}.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["bidder", "supplier", "import_kwh", "export_kwh"])
                for h in HOUSEHOLDS:
                    w.writerow([h, SUPPLIER[h], Decimal(read[h][0]) / 1000,
                                Decimal(read[h][1]) / 1000])
                    io[h][0] += read[h][0]
                    io[h][1] += read[h][1]
                w.writerow(["@s2", "s2", 0, 0])  # the supplier has no meter
            with open(tmp_path / f"trades{k}.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["bidder", "side", "traded_kwh"])
                for h, (side, wh) in settled[k].items():
                    if wh and not h.startswith("@"):
                        w.writerow([h, side, Decimal(wh) / 1000])
                own = settled[k].get("@s2", ("buy", 0))[1]
                if own:  # the supplier's purchase balances the households' sales
                    w.writerow(["@s2", "buy", Decimal(own) / 1000])
            ref_doc = _json(capsys, "settle", "--meters", str(tmp_path / f"meters{k}.csv"),
                            "--tariffs", str(tmp_path / "tariffs.csv"), "--trades",
                            str(tmp_path / f"trades{k}.csv"), "--clearing-price",
                            str(prices[k]))
            for row in ref_doc["households"]:
                if row["bidder"] not in expected:  # the supplier's own row: not a customer
                    continue
                expected[row["bidder"]] += Fraction(row["with_market_ct"])
                expected_without[row["bidder"]] += Fraction(row["without_market_ct"])
        for s in ("s1", "s2", "s3"):
            bill = _json(capsys, "bills", "--data-dir", d, "--supplier", s, "--cycle", cycle)
            assert bill["status"] == "billed"
            assert {r["household"] for r in bill["customers"]} == {
                h for h in HOUSEHOLDS if SUPPLIER[h] == s}
            for row in bill["customers"]:
                h = row["household"]
                assert abs(Fraction(row["amount"]) + expected[h]) <= Fraction(1, 100), (h, row)
            customers = [h for h in HOUSEHOLDS if SUPPLIER[h] == s]
            bought = sum(settled[k][h][1] for k in range(2) for h in customers
                         if h in settled[k] and settled[k][h][0] == "buy")
            assert bill["bought_kwh"] == float(Decimal(bought) / 1000)
            fees = sum(io[h][0] + io[h][1] for h in customers) * 5  # 5 per kWh, in ¢ per Wh/1000
            assert abs(Fraction(bill["network_fees"]) - Fraction(fees, 1000)) <= Fraction(1, 100)
            own = settled[0].get("@" + s, ("buy", 0))[1]
            assert bill["own_bought_kwh"] == float(Decimal(own) / 1000)
            assert abs(Fraction(bill["own_position"]) + Fraction(prices[0]) * own / 1000) \
                <= Fraction(1, 100)
            assert (own > 0) is (s == "s2")
        # the grid operators: per region and supplier, per region
        for region in ("r1", "r2"):
            got = _json(capsys, "aggregates", "--data-dir", d, "--role", "dso", "--id", region,
                        "--cycle", cycle)
            for row in got["suppliers"]:
                members = [h for h in HOUSEHOLDS
                           if REGION[h] == region and SUPPLIER[h] == row["supplier"]]
                assert row["import_kwh"] == float(Decimal(sum(io[h][0] for h in members)) / 1000)
                assert row["export_kwh"] == float(Decimal(sum(io[h][1] for h in members)) / 1000)
        got = _json(capsys, "aggregates", "--data-dir", d, "--role", "tso", "--id", "tso",
                    "--cycle", cycle)
        for row in got["regions"]:
            members = [h for h in HOUSEHOLDS if REGION[h] == row["region"]]
            assert row["import_kwh"] == float(Decimal(sum(io[h][0] for h in members)) / 1000)
        # per period, by contract once settled: the misnamed sale counts for s1, not s3
        for k, period in enumerate(periods):
            for s in ("s1", "s2", "s3"):
                got = _json(capsys, "aggregates", "--data-dir", d, "--role", "supplier", "--id",
                            s, "--period", period, "--settled")
                assert got["settled"]["status"] == "settled"
                customers = [h for h in HOUSEHOLDS if SUPPLIER[h] == s]
                for side, field in (("buy", "bought_kwh"), ("sell", "sold_kwh")):
                    wh = sum(settled[k][h][1] for h in customers
                             if h in settled[k] and settled[k][h][0] == side)
                    assert got["settled"][field] == float(Decimal(wh) / 1000), (s, k, field)
        h, k, _ = MISNAMED
        assert settled[k][h][0] == "sell" and settled[k][h][1] > 0 and SUPPLIER[h] == "s1"
        # the households: their own statements; the liar refused by name, the silent missing
        liar = _json(capsys, "household", "statement", "--data-dir", d, "--household", LIAR[0],
                     "--cycle", cycle)
        assert [p["status"] for p in liar["periods"]][LIAR[1]] == TRADE_MISMATCH
        silent = _json(capsys, "household", "statement", "--data-dir", d, "--household",
                       SILENT[0], "--cycle", cycle)
        assert [p["status"] for p in silent["periods"]][SILENT[1]] == "missing_reading"
        for h in HOUSEHOLDS:
            st = _json(capsys, "household", "statement", "--data-dir", d, "--household", h,
                       "--cycle", cycle)
            assert abs(Fraction(st["amount"]) + expected[h]) <= Fraction(1, 100)
            assert abs(Fraction(st["amount_without_market"]) + expected_without[h]) <= \
                Fraction(1, 100)
    finally:
        c.stop()
