"""Seeded households and a server's stored state, read back; assumes SQLite data directories.

What the crash and rush drivers share: deterministic bids from a seed, households (each the
market's own :class:`~sealgrid.service.agent.HouseholdAgent`) that obtain their tokens ahead
and retry a submission against a restarting server with the same bytes (so a server that
stored it answers ``replayed``), waiting for the three period statements, and reading each
server's database after the servers have stopped.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealgrid.mechanism.bids import Bid, BidRejected, Reason
from sealgrid.mechanism.market import Market
from sealgrid.service.agent import HouseholdAgent, PreparedBid
from sealgrid.service.client import ServiceError
from sealgrid.service.demo import demo_bid, next_period
from sealgrid.service.household import Pseudonym
from sealgrid.service.local import LocalMarket
from sealgrid.service.schedule import utc_now
from sealgrid.service.wire import PeriodStatement, Receipt


def open_period(market: LocalMarket, lead: float) -> str:
    """Return the first open period whose gate is at least ``lead`` seconds away."""
    return next_period(market.schedule, lead)


def seconds_to_gate(market: LocalMarket, period: str) -> float:
    """Seconds from now until ``period``'s gate closure (negative once it has passed)."""
    gate = market.schedule.gate_closure(market.schedule.parse_period(period))
    return (gate - utc_now()).total_seconds()


@dataclass
class Bidder:
    """One household's bid in a run: its agent, prepared bid and what each server said."""

    agent: HouseholdAgent
    prepared: PreparedBid
    receipts: dict[int, Receipt] = field(default_factory=dict)
    refusals: dict[int, Reason] = field(default_factory=dict)
    stored_unreceipted: set[int] = field(default_factory=set)  # answered "replayed"
    latency: float | None = None

    @property
    def hid(self) -> str:
        return self.agent.household

    @property
    def bid(self) -> Bid:
        return self.prepared.bid

    @property
    def pseudonym(self) -> Pseudonym:
        return self.prepared.pseudonym

    @property
    def payloads(self) -> list[bytes]:
        return self.prepared.payloads


async def make_bidders(
    local: LocalMarket, period: str, seed: int, session: Any = None
) -> tuple[Market, list[Bidder]]:
    """Every household's seeded bid (the same seed, the same bids), encoded into one payload
    per server by its agent before the clock starts; and the market, as the servers publish it.
    """
    async with local.client() as client:
        read = await client.market()
    bidders = []
    for hid in sorted(local.registry.households):
        agent = local.agent(hid, session, read)
        bid = demo_bid(hid, agent.supplier, 0, seed, read[1])
        bidders.append(Bidder(agent, await agent.prepare(bid, period)))
    return read[1], bidders


async def obtain_all(bidders: Sequence[Bidder], concurrency: int = 32) -> int:
    """Get every bidder its tokens from every server; return how many got all of them."""
    gate = asyncio.Semaphore(concurrency)

    async def one(b: Bidder) -> None:
        async with gate:
            for _ in range(20):
                try:
                    await b.agent.obtain(b.prepared)
                    return
                except ServiceError:
                    await asyncio.sleep(0.3)

    await asyncio.gather(*(one(b) for b in bidders))
    return sum(len(b.pseudonym.tokens) == b.agent.client.servers for b in bidders)


async def submit_share(b: Bidder, server: int, deadline: float) -> None:
    """Send one share until it is receipted, refused, or the deadline passes (retrying errors).

    The same bytes are resent (the pseudonym's signature is deterministic), so a server that
    stored it before a crash says ``replayed``.
    """
    while time.monotonic() < deadline:
        try:
            receipts, refusals = await b.agent.submit(b.prepared, servers=[server])
        except ServiceError:  # unreachable, or busy (503): try again
            await asyncio.sleep(0.2)
            continue
        if server in receipts:
            b.receipts[server] = receipts[server]
        elif refusals[server].reason is Reason.REPLAYED:
            b.stored_unreceipted.add(server)
        else:
            b.refusals[server] = refusals[server].reason
        return


async def statements(
    market: LocalMarket, period: str, timeout: float
) -> list[PeriodStatement | None]:
    """Wait until every running server has published its statement of ``period``."""
    async with market.client() as c:
        return await c.wait_statements(period, timeout)


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
        rows = conn.execute(  # open periods' bids, and those sealed at the gate
            "SELECT pseudonym FROM bids WHERE period = ?"
            " UNION ALL SELECT pseudonym FROM closed_bids WHERE period = ?",
            (period, period)).fetchall()
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


async def told(bidders: Sequence[Bidder]) -> dict[str, int]:
    """Ask every server for every bidder's result; count the statuses the households were told."""
    counts: dict[str, int] = {}
    for b in bidders:
        try:
            shares = await b.agent.client.result(b.pseudonym)
        except (ServiceError, BidRejected):
            counts["unreachable"] = counts.get("unreachable", 0) + 1
            continue
        for s in shares:
            counts[s.status] = counts.get(s.status, 0) + 1
    return counts
