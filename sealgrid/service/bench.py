"""Benchmark of the running service; assumes this machine runs the servers and the households.

Measures, with three local servers (TLS, SQLite) and ``N`` households bidding once each:
pseudonyms issued per second (every server's blind signature on a household's pseudonym,
done ahead of bidding), bids accepted per second (a bid counts when all three servers have
receipted their share),
the receipt latency (one share's POST until its signed receipt; and a whole bid: challenges
and shares to the three servers in parallel), and the time from gate closure until all three
servers publish their signed statements (agreement + secure clearing + storing outputs).
The household side (share encoding, pseudonym keys) is prepared before the clock starts;
signing each submission is timed. Client and servers share the
machine's cores, so the figures are a lower bound for separate machines.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from pathlib import Path
from typing import Any

from sealgrid.service import wire
from sealgrid.service.agent import HouseholdAgent, PreparedBid, outcome_of
from sealgrid.service.demo import demo_bid, gather_limited, next_period
from sealgrid.service.local import LocalMarket


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def bench_service(
    root: Path, *, households: int, concurrency: int = 64, seed: int = 0
) -> dict[str, Any]:
    """Run the benchmark in ``root`` (a new data directory); return the figures."""
    submit_estimate = 15 + households / 25  # issuance and bids; generous: a late bid spoils it
    period_seconds = max(5, int(submit_estimate / 40) + 1)
    with LocalMarket(root, households=households, period_seconds=period_seconds) as local:
        await local.wait_ready()
        session = local.session(connections=concurrency * 3)
        async with local.client() as client:
            read = await client.market()
        market = read[1]
        agents = [local.agent(h, session, read) for h in sorted(local.registry.households)]
        period = next_period(local.schedule, submit_estimate)
        prep_started = time.perf_counter()
        prepared: list[tuple[HouseholdAgent, PreparedBid]] = []
        for a in agents:
            bid = demo_bid(a.household, a.supplier, 0, seed, market)
            prepared.append((a, await a.prepare(bid, period)))
        prep_seconds = time.perf_counter() - prep_started

        share_latency: list[float] = []
        bid_latency: list[float] = []
        refused: dict[str, int] = {}
        accepted = 0
        issue_failed = 0

        async def issue(agent: HouseholdAgent, p: PreparedBid) -> None:
            nonlocal issue_failed
            issue_failed += bool(await agent.obtain(p))

        started = time.perf_counter()
        await gather_limited(concurrency, (issue(a, p) for a, p in prepared))
        issue_seconds = time.perf_counter() - started

        async def one(agent: HouseholdAgent, p: PreparedBid) -> None:
            nonlocal accepted
            t0 = time.perf_counter()
            receipts, refusals = await agent.submit(p, latency=share_latency)
            bid_latency.append(time.perf_counter() - t0)
            for why in refusals.values():
                refused[why.reason.value] = refused.get(why.reason.value, 0) + 1
            accepted += len(receipts) == local.servers

        started = time.perf_counter()
        await gather_limited(concurrency, (one(a, p) for a, p in prepared))
        submit_seconds = time.perf_counter() - started

        gate_time = local.schedule.gate_closure(local.schedule.parse_period(period)).timestamp()
        await asyncio.sleep(max(0.0, gate_time - time.time()))
        async with local.client() as client:
            statements = await client.wait_statements(period, timeout=600, poll=0.05)
        results_after_gate = time.time() - gate_time
        await session.close()
    done = [s for s in statements if s is not None]
    outcome = outcome_of(done[0].outcome) if done else None
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
        "period_outcome": (
            {k: v for k, v in wire.to_dict(outcome).items() if k not in ("type", "v")}
            if outcome else None
        ),
        "bids_cleared": done[0].bid_count if done else 0,
        "household_preparation_seconds": round(prep_seconds, 2),
        "period_seconds": period_seconds,
    }
