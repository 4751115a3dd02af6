"""Benchmark of the running service; assumes this machine runs the servers and the households.

Measures, with three local servers (TLS, SQLite) and ``N`` households bidding once each:
pseudonyms issued per second (every server's blind signature on a household's pseudonym,
done ahead of bidding), bids accepted per second (a bid counts when all three servers have
receipted their share),
the receipt latency (one share's POST until its signed receipt; and a whole bid: challenges
and shares to the three servers in parallel), and the time from gate closure until all three
servers publish their signed statements (agreement + secure clearing + storing outputs).
The household side (share encoding, pseudonym keys) is prepared before the clock starts;
signing each submission over its fresh challenge is timed. Client and servers share the
machine's cores, so the figures are a lower bound for separate machines.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from sealgrid.mechanism.grid import PriceGrid
from sealgrid.service.client import Client, HouseholdClient
from sealgrid.service.demo import demo_bid
from sealgrid.service.household import Pseudonym, make_submission
from sealgrid.service.keys import household_profile, load_signing_key
from sealgrid.service.local import LocalMarket
from sealgrid.service.schedule import utc_now
from sealgrid.service.shares import encode_payloads


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def bench_service(
    root: Path, *, households: int, concurrency: int = 64, seed: int = 0
) -> dict[str, Any]:
    """Run the benchmark in ``root`` (a new data directory); return the figures."""
    submit_estimate = 15 + households / 25  # issuance and bids; generous: a late bid spoils it
    period_seconds = max(5, int(submit_estimate / 40) + 1)
    with LocalMarket(root, households=households, period_seconds=period_seconds) as market:
        await market.wait_ready()
        async with market.client() as client:
            info = await client.info(0)
        g = info["price_grid"]
        grid = PriceGrid.from_values(g["floor"], g["ceiling"], g["tick"])
        suppliers = tuple(info["suppliers"])
        schedule = market.schedule
        start = schedule.first_open(utc_now())
        while (schedule.gate_closure(start) - utc_now()).total_seconds() < submit_estimate:
            start += schedule.length
        period = schedule.period_id(start)
        prepared = []
        prep_started = time.perf_counter()
        for hid in sorted(market.registry.households):
            key = load_signing_key(market.root / "households" / f"{hid}.key")
            bid = demo_bid(hid, household_profile(market.root, hid)["supplier"], 0, seed, grid)
            payloads = encode_payloads(bid, suppliers, grid.levels, info["max_quantity_wh"], 3)
            prepared.append((hid, key, Pseudonym.fresh(period), payloads))
        prep_seconds = time.perf_counter() - prep_started

        share_latency: list[float] = []
        bid_latency: list[float] = []
        refused: dict[str, int] = {}
        accepted = 0
        session = market.session(connections=concurrency * 3)
        gate = asyncio.Semaphore(concurrency)
        async with Client(market.registry, market.root / "ca.crt", session=session) as c0:
            issue_failed = 0

            async def issue(hid: str, key: Any, pseudonym: Pseudonym) -> None:
                nonlocal issue_failed
                async with gate:
                    h = HouseholdClient(market.registry, market.root / "ca.crt", hid, key, session)
                    issue_failed += bool(await h.obtain(pseudonym))

            started = time.perf_counter()
            await asyncio.gather(*(issue(h, k, p) for h, k, p, _ in prepared))
            issue_seconds = time.perf_counter() - started

            async def share(pseudonym: Pseudonym, server: int, payload: bytes) -> bool:
                raw = make_submission(pseudonym, server, payload)
                t0 = time.perf_counter()
                status, body = await c0.call(server, "POST", "/v1/bids", raw)
                share_latency.append(time.perf_counter() - t0)
                if status != 201:
                    reason = body.decode(errors="replace")[:60]
                    refused[reason] = refused.get(reason, 0) + 1
                return status == 201

            async def one(pseudonym: Pseudonym, payloads: list[bytes]) -> None:
                nonlocal accepted
                async with gate:
                    t0 = time.perf_counter()
                    ok = await asyncio.gather(
                        *(share(pseudonym, i, p) for i, p in enumerate(payloads))
                    )
                    bid_latency.append(time.perf_counter() - t0)
                    accepted += all(ok)

            started = time.perf_counter()
            await asyncio.gather(*(one(p, pl) for _, _, p, pl in prepared))
            submit_seconds = time.perf_counter() - started

            gate_time = schedule.gate_closure(start).timestamp()
            await asyncio.sleep(max(0.0, gate_time - time.time()))
            while True:
                statements = [await c0.statement(i, period) for i in range(market.servers)]
                if all(statements) or time.time() > gate_time + 600:
                    break
                await asyncio.sleep(0.05)
            results_after_gate = time.time() - gate_time
        await session.close()
    done = [s for s in statements if s is not None]
    return {
        "target": "service",
        "households": households,
        "concurrency": concurrency,
        "servers": 3,
        "cpu_count": os.cpu_count(),
        "pseudonyms_issued": households - issue_failed,
        "issue_seconds": round(issue_seconds, 3),
        "pseudonyms_per_second": round((households - issue_failed) / issue_seconds, 1),
        "bids_accepted": accepted,
        "refused": refused,
        "submit_seconds": round(submit_seconds, 3),
        "bids_per_second": round(accepted / submit_seconds, 1) if submit_seconds else None,
        "receipt_latency_ms": {
            "p50": round(1000 * statistics.median(share_latency), 2) if share_latency else None,
            "p99": round(1000 * _quantile(share_latency, 0.99), 2),
            "max": round(1000 * max(share_latency, default=0.0), 2),
        },
        "bid_latency_ms": {
            "p50": round(1000 * statistics.median(bid_latency), 2) if bid_latency else None,
            "p99": round(1000 * _quantile(bid_latency, 0.99), 2),
        },
        "gate_to_results_seconds": round(results_after_gate, 3),
        "period_status": sorted({s.status for s in done}),
        "period_outcome": json.loads(done[0].outcome) if done else None,
        "bids_cleared": done[0].bid_count if done else 0,
        "household_preparation_seconds": round(prep_seconds, 2),
        "period_seconds": period_seconds,
    }
