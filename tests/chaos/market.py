"""Seeded households and a server's stored state, read back; assumes SQLite data directories.

What the crash and rush drivers share: deterministic bids from a seed, households that
obtain their tokens ahead and retry a submission against a restarting server with the same
bytes (so a server that stored it answers ``replayed``), waiting for the three period
statements, and reading each server's database after the servers have stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealgrid.mechanism.bids import Bid, BidRejected, Reason
from sealgrid.mechanism.grid import PriceGrid
from sealgrid.service import wire
from sealgrid.service.client import Client, ServiceError
from sealgrid.service.config import MarketConfig
from sealgrid.service.demo import demo_bid
from sealgrid.service.household import Pseudonym, check_receipt, make_submission
from sealgrid.service.keys import household_profile
from sealgrid.service.local import LocalMarket
from sealgrid.service.schedule import utc_now
from sealgrid.service.shares import encode_payloads
from sealgrid.service.wire import PeriodStatement, Receipt

GRID: PriceGrid = MarketConfig().grid


def seeded_bids(market: LocalMarket, seed: int) -> dict[str, Bid]:
    """Return every household's bid for this run (the same seed, the same bids)."""
    return {
        hid: demo_bid(hid, household_profile(market.root, hid)["supplier"], 0, seed, GRID)
        for hid in sorted(market.registry.households)
    }


def open_period(market: LocalMarket, lead: float) -> str:
    """Return the first open period whose gate is at least ``lead`` seconds away."""
    schedule = market.schedule
    start = schedule.first_open(utc_now())
    while (schedule.gate_closure(start) - utc_now()).total_seconds() < lead:
        start += schedule.length
    return schedule.period_id(start)


def seconds_to_gate(market: LocalMarket, period: str) -> float:
    """Seconds from now until ``period``'s gate closure (negative once it has passed)."""
    gate = market.schedule.gate_closure(market.schedule.parse_period(period))
    return (gate - utc_now()).total_seconds()


@dataclass
class Bidder:
    """One household's bid in a run: its pseudonym, payloads and what each server said."""

    hid: str
    bid: Bid
    pseudonym: Pseudonym
    payloads: list[bytes]
    receipts: dict[int, Receipt] = field(default_factory=dict)
    refusals: dict[int, Reason] = field(default_factory=dict)
    stored_unreceipted: set[int] = field(default_factory=set)  # answered "replayed"
    latency: float | None = None


def make_bidders(market: LocalMarket, period: str, bids: dict[str, Bid]) -> list[Bidder]:
    """Encode every bid into one payload per server (household side, before the clock)."""
    suppliers = tuple(sorted(market.registry.suppliers))
    return [
        Bidder(hid, bid, Pseudonym.fresh(period),
               encode_payloads(bid, suppliers, GRID.levels, 10_000, market.servers))
        for hid, bid in bids.items()
    ]


async def obtain_all(market: LocalMarket, bidders: Sequence[Bidder], session: Any,
                     concurrency: int = 32) -> int:
    """Get every bidder its tokens from every server; return how many got all three."""
    gate = asyncio.Semaphore(concurrency)

    async def one(b: Bidder) -> None:
        async with gate:
            h = market.household(b.hid, session)
            for _ in range(20):
                try:
                    await h.obtain(b.pseudonym)
                    return
                except ServiceError:
                    await asyncio.sleep(0.3)

    await asyncio.gather(*(one(b) for b in bidders))
    return sum(len(b.pseudonym.tokens) == market.servers for b in bidders)


async def submit_share(client: Client, b: Bidder, server: int, deadline: float) -> None:
    """Send one share until it is receipted, refused, or the deadline passes (retrying errors).

    The same bytes are resent, so a server that stored it before a crash says ``replayed``.
    """
    raw = make_submission(b.pseudonym, server, b.payloads[server])
    key = client.registry.servers[server][1]
    while time.monotonic() < deadline:
        try:
            status, body = await client.call(server, "POST", "/v1/bids", raw)
        except ServiceError:
            await asyncio.sleep(0.2)
            continue
        if status == 201:
            receipt = wire.decode(Receipt, body)
            if not check_receipt(receipt, server, key, raw, b.payloads[server]):
                raise ServiceError(f"server {server}'s receipt does not verify")
            b.receipts[server] = receipt
            return
        if status == 503:
            await asyncio.sleep(0.2)
            continue
        try:
            reason = Reason(json.loads(body)["error"])
        except (ValueError, KeyError):
            await asyncio.sleep(0.2)
            continue
        if reason is Reason.REPLAYED:
            b.stored_unreceipted.add(server)
        else:
            b.refusals[server] = reason
        return


async def statements(
    market: LocalMarket, period: str, timeout: float
) -> list[PeriodStatement | None]:
    """Wait until every running server has published its statement of ``period``."""
    deadline = time.monotonic() + timeout
    got: list[PeriodStatement | None] = [None] * market.servers
    async with market.client() as c:
        while time.monotonic() < deadline:
            for i in range(market.servers):
                if got[i] is None:
                    with contextlib.suppress(ServiceError):
                        got[i] = await c.statement(i, period)
            if all(got):
                break
            await asyncio.sleep(0.2)
    return got


@dataclass(frozen=True)
class Stored:
    """What one server's database holds about one period, read after it stopped."""

    pseudonyms: frozenset[bytes]
    status: str | None
    agreed: tuple[bytes, ...]


def _split(blob: bytes) -> tuple[bytes, ...]:
    """Undo the store's length-prefixed join (2-byte big-endian lengths)."""
    out, i = [], 0
    while i < len(blob):
        n = int.from_bytes(blob[i:i + 2], "big")
        out.append(blob[i + 2:i + 2 + n])
        i += 2 + n
    return tuple(out)


def read_store(root: Path, server: int, period: str) -> Stored:
    """Read server ``server``'s SQLite database (the servers must have stopped)."""
    path = root / f"server-{server}" / "bids.sqlite"
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT pseudonym FROM bids WHERE period = ?", (period,)).fetchall()
        rec = conn.execute("SELECT status, agreed FROM periods WHERE period = ?",
                           (period,)).fetchall()
    finally:
        conn.close()
    agreed: tuple[bytes, ...] = ()
    status = None
    if rec:
        status = rec[0][0]
        blob = bytes(rec[0][1] or b"")
        agreed = _split(blob)
    return Stored(frozenset(bytes(r[0]) for r in rows), status, agreed)


async def told(market: LocalMarket, bidders: Sequence[Bidder], session: Any) -> dict[str, int]:
    """Ask every server for every bidder's result; count the statuses the households were told."""
    counts: dict[str, int] = {}
    for b in bidders:
        h = market.household(b.hid, session)
        try:
            shares = await h.result(b.pseudonym)
        except (ServiceError, BidRejected):
            counts["unreachable"] = counts.get("unreachable", 0) + 1
            continue
        for s in shares:
            counts[s.status] = counts.get(s.status, 0) + 1
    return counts
