"""A rush at gate closure: many households submit in the last seconds; assumes three local servers.

Every household obtains its tokens ahead (as a real one would when the period opens); then
all of them send their three shares at once, ``window`` seconds before the gate. Measured:
receipts, refusals (a share that arrives after the gate is refused as ``late`` — its
household is told, nothing is silently dropped), the latency of a whole bid (three shares
in parallel until three receipts) and whether the three servers agree on the same bid set:
their statements' digests must be equal, and equal to the digest of the bids that got three
receipts. A receipted share missing from its server's database counts as lost.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from sealgrid.service import wire
from sealgrid.service.local import LocalMarket

from . import market as run


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def rush(root: Path, households: int, *, window: float | None = None,
               concurrency: int = 512, seed: int = 0) -> dict[str, Any]:
    """Run one rush in ``root`` (a new data directory); return the figures."""
    window = window if window is not None else max(2.0, households / 300)
    issue_estimate = 10 + households / 60  # about 100 pseudonyms/s here (docs/service.md)
    period_seconds = max(5, int((issue_estimate + window) / 40) + 1)
    market = LocalMarket(root, households=households, period_seconds=period_seconds,
                         market={"peer_timeout_seconds": 30, "rate_limit": 1000})
    with market:
        await market.wait_ready()
        period = run.open_period(market, lead=issue_estimate + window + 3)
        session = market.session(connections=concurrency)
        _, bidders = await run.make_bidders(market, period, seed, session)
        try:
            issued = await run.obtain_all(bidders, concurrency=64)
            lead = run.seconds_to_gate(market, period)
            await asyncio.sleep(max(0.0, lead - window))
            started_before_gate = run.seconds_to_gate(market, period)
            deadline = time.monotonic() + started_before_gate + 5.0

            async def one(b: Any) -> None:
                t0 = time.perf_counter()
                await asyncio.gather(*(run.submit_share(b, i, deadline) for i in range(3)))
                if len(b.receipts) == 3:
                    b.latency = time.perf_counter() - t0

            t0 = time.perf_counter()
            await asyncio.gather(*(one(b) for b in bidders if len(b.pseudonym.tokens) == 3))
            rush_seconds = time.perf_counter() - t0
            sts = await run.statements(market, period, timeout=300 + households / 20)
        finally:
            await session.close()
    stores = [run.read_store(market.root, i, period) for i in range(3)]
    lost = sum(b.pseudonym.public not in stores[i].pseudonyms
               for b in bidders for i in b.receipts)
    complete = sorted(b.pseudonym.public for b in bidders if len(b.receipts) == 3)
    digests = {s.bidset_sha256 for s in sts if s is not None}
    refused: dict[str, int] = {}
    for b in bidders:
        for r in b.refusals.values():
            refused[r.value] = refused.get(r.value, 0) + 1
    latencies = [b.latency for b in bidders if b.latency is not None]
    return {
        "households": households,
        "tokens_obtained": issued,
        "rush_started_seconds_before_gate": round(started_before_gate, 2),
        "rush_seconds": round(rush_seconds, 2),
        "bids_with_three_receipts": len(complete),
        "refused_shares": refused,
        "unanswered_shares": sum(3 - len(b.receipts) - len(b.refusals)
                                 - len(b.stored_unreceipted) for b in bidders
                                 if len(b.pseudonym.tokens) == 3),
        "receipted_shares_lost": lost,
        "servers_agree": len(digests) == 1 and all(sts),
        "digest_matches_receipts": digests == {wire.sha256(b"".join(complete))},
        "bid_count": [s.bid_count if s else None for s in sts],
        "status": [s.status if s else None for s in sts],
        "bid_latency_ms": {
            "p50": round(1000 * statistics.median(latencies), 1) if latencies else None,
            "p99": round(1000 * _quantile(latencies, 0.99), 1),
            "max": round(1000 * max(latencies, default=0.0), 1),
        },
        "period_seconds": period_seconds,
    }
