"""Several intake workers of one server on one PostgreSQL database (``serve --workers N``).

The attack is the worst-case order of requests: the same bid, or two bids under one pseudonym,
or two token requests of one household, sent to two workers at the same moment, many times
over; a challenge fetched at one worker and spent at the other, then spent again; a bid that
reaches a worker whose clock has not yet passed the gate after the leader recorded the gate.
Each pseudonym must count once, each household get one token per period, each challenge be
spent once, and no bid be stored after the gate's record.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import threading
from collections.abc import AsyncIterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from sealgrid.mechanism.bids import Reason, check_bid
from sealgrid.service import wire
from sealgrid.service.agent import encode_payloads
from sealgrid.service.config import load_server_config
from sealgrid.service.household import Pseudonym, accept_grant, make_submission, token_request
from sealgrid.service.intake import Rejected
from sealgrid.service.keys import load_signing_key
from sealgrid.service.server import Server
from sealgrid.service.setup import init_data_dir
from sealgrid.service.storage import StorageError
from sealgrid.service.tokens import key_digest
from sealgrid.service.wire import Receipt, TokenGrant
from tests.service.test_storage import postgres_url  # noqa: F401 (a fixture)

T0 = dt.datetime(2026, 11, 22, 21, 0, 10, tzinfo=dt.UTC)
PERIOD = "2026-11-22T21:45:00Z"  # open at T0 (its gate is 21:15)
N = 24


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def _servers(root: Path, url: str, clock: Clock,
             other: Clock | None = None) -> tuple[Server, Server]:
    """The leader and a second worker of server 0 (on ``other``'s clock, if given)."""
    init_data_dir(root, households=N, base_port=1, period_seconds=900)
    cfg = dataclasses.replace(load_server_config(root / "server-0" / "server.toml"),
                              database=url)
    return (Server(cfg, clock, worker=0, workers=2),
            Server(cfg, other or clock, worker=1, workers=2))


def _key(root: Path, i: int):
    return load_signing_key(root / "households" / f"h{i + 1:04d}.key")


async def _token(server: Server, root: Path, i: int, p: Pseudonym,
                 via: Server | None = None) -> TokenGrant | Rejected:
    """Household i asks ``server`` for p's token with a challenge fetched at ``via``."""
    nonce = (via or server).challenge().nonce  # type: ignore[union-attr]
    raw, blindings = token_request([p], f"h{i + 1:04d}", _key(root, i), nonce)
    got = await server.grant(raw)
    if isinstance(got, TokenGrant):
        accept_grant([p], 0, wire.raw_public(server.key), got, blindings)
    return got


def _bid(server: Server, i: int, quantity: str = "1.5") -> bytes:
    bid, errors = check_bid(server.market, f"h{i + 1:04d}", "buy", quantity, "100",
                            server.market.suppliers[0])
    assert bid is not None, errors
    return encode_payloads(bid, server.market, 3)[0]


def test_racing_workers_count_each_pseudonym_household_and_challenge_once(
        tmp_path: Path, postgres_url: str) -> None:  # noqa: F811
    clock = Clock(T0)
    w0, w1 = _servers(tmp_path, postgres_url, clock)

    async def scenario() -> None:
        await w0.start()
        await w1.start()
        try:
            # a challenge is good at either worker, once
            p = Pseudonym.fresh(PERIOD)
            assert isinstance(await _token(w1, tmp_path, 0, p, via=w0), TokenGrant)
            nonce = w0.challenge().nonce  # type: ignore[union-attr]
            raw, _ = token_request([Pseudonym.fresh(PERIOD)], "h0002", _key(tmp_path, 1), nonce)
            first, second = await asyncio.gather(w1.grant(raw), w0.grant(raw))
            outcomes = sorted(type(x).__name__ for x in (first, second))
            assert outcomes == ["Rejected", "TokenGrant"], (first, second)
            refused = first if isinstance(first, Rejected) else second
            assert refused.reason is Reason.REPLAYED, refused  # type: ignore[union-attr]

            receipts = 0
            for i in range(2, N):
                # two token requests of one household for one period, at once, at both workers
                a, b = Pseudonym.fresh(PERIOD), Pseudonym.fresh(PERIOD)
                got = await asyncio.gather(_token(w0, tmp_path, i, a), _token(w1, tmp_path, i, b))
                granted = [g for g in got if isinstance(g, TokenGrant)]
                assert len(granted) == 1, got
                (no,) = [g for g in got if isinstance(g, Rejected)]
                assert no.reason is Reason.TOO_FREQUENT, no
                mine = a if isinstance(got[0], TokenGrant) else b
                # w1 learns the period's key from the database, so both check the token
                if i % 2:  # the same bid to both workers at once: one receipt, one replay
                    raw = make_submission(mine, 0, _bid(w0, i))
                    out = await asyncio.gather(w0.submit(raw), w1.submit(raw))
                    why = Reason.REPLAYED
                else:  # two bids under one pseudonym: one receipt, one duplicate
                    out = await asyncio.gather(
                        w0.submit(make_submission(mine, 0, _bid(w0, i, "1.5"))),
                        w1.submit(make_submission(mine, 0, _bid(w0, i, "2.5"))))
                    why = Reason.DUPLICATE_PSEUDONYM
                assert sum(isinstance(x, Receipt) for x in out) == 1, out
                (r,) = [x for x in out if isinstance(x, Rejected)]
                assert r.reason is why, r
                receipts += 1
            stored = await w0.db(w0.store.pseudonyms, PERIOD)
            assert len(stored) == len(set(stored)) == receipts
            # the curious server reads the used challenges: no challenge (whose first bytes
            # are its expiry to the second) and no time finer than the period
            rows = await w0.db(w0.store._read, "SELECT nonce, until FROM used_challenges")
            assert len(rows) == N  # one per granted request (the replayed one kept once)
            assert nonce not in {bytes(r[0]) for r in rows}
            assert {w0.schedule.parse_period(r[1]).second for r in rows} == {0}
            assert len(await w0.db(w0.store.participants, PERIOD)) == N

            # the leader records the gate; a worker whose clock lags cannot store a bid after
            late = Pseudonym.fresh(PERIOD)
            assert isinstance(await _token(w1, tmp_path, 1, late), Rejected)  # h0002 has one
            extra = Pseudonym.fresh("2026-11-22T22:00:00Z")
            assert isinstance(await _token(w1, tmp_path, 0, extra), TokenGrant)
            # w1 made the next period's key; no request of that period reached w0 before the
            # bid under w1's token does, so w0 takes the key from the database then
            assert w0.intake.issuer(extra.period) is None
            first_seen = await w0.submit(make_submission(extra, 0, _bid(w0, 0)))
            assert isinstance(first_seen, Receipt), first_seen
            # the leader signs the digest of the key w1 made for a period it never saw
            unseen = Pseudonym.fresh("2026-11-22T22:15:00Z")
            assert isinstance(await _token(w1, tmp_path, 2, unseen), TokenGrant)
            made = w1.intake.issuer(unseen.period)
            assert made is not None and w0.intake.issuer(unseen.period) is None
            assert await w0.issuer_digest(unseen.period) == key_digest(made.public)
            # a bid under another period's token, for a period no worker made a key for, is
            # refused as forged, and looking for the key another worker might have stored
            # makes none
            keyless = Pseudonym.fresh("2026-11-22T22:30:00Z")
            keyless.tokens[0] = p.tokens[0]
            no_key = await w0.submit(make_submission(keyless, 0, _bid(w0, 3)))
            assert isinstance(no_key, Rejected) and no_key.reason is Reason.BAD_SIGNATURE
            assert await w0.db(w0.store.issuer, keyless.period) is None
            assert w0.intake.issuer(keyless.period) is None
            # nor does a stream of such bids become a stream of database reads: the finding
            # holds for a second; a period that is not open is not looked up at all
            reads: list[Any] = []
            real_read = w0.read

            async def counted(fn: Any, *args: Any) -> Any:
                reads.append(args)
                return await real_read(fn, *args)

            w0.read = counted  # type: ignore[method-assign]
            closed = Pseudonym.fresh("2026-11-22T20:00:00Z")
            closed.tokens[0] = p.tokens[0]
            for forged in (keyless, keyless, closed):
                out_forged = await w0.submit(make_submission(forged, 0, _bid(w0, 3)))
                assert isinstance(out_forged, Rejected), out_forged
            assert reads == []
            w0.read = real_read  # type: ignore[method-assign]
            await w0.db(lambda: w0.store.set_period(PERIOD, "closed", seal=False))
            ghost = make_submission(p, 0, _bid(w0, 0))  # h0001's token from the first step
            refused_late = await w1.submit(ghost)
            assert isinstance(refused_late, Rejected) and refused_late.reason is Reason.LATE
            assert await w0.db(w0.store.pseudonyms, PERIOD) == stored
        finally:
            await w1.stop()
            await w0.stop()

    asyncio.run(scenario())


def test_several_workers_need_postgresql(tmp_path: Path) -> None:
    init_data_dir(tmp_path, households=2, base_port=1, period_seconds=900)
    cfg = load_server_config(tmp_path / "server-0" / "server.toml")
    with pytest.raises(StorageError, match="several workers need a PostgreSQL database"):
        Server(cfg, worker=0, workers=2)


def test_a_server_of_three_workers_clears_with_two_single_process_peers(
        tmp_path: Path, postgres_url: str) -> None:  # noqa: F811
    """``sealgrid serve --workers 3`` on PostgreSQL as server 0, real processes over HTTPS:
    the kernel spreads the households' connections over the workers (SO_REUSEPORT), the
    leader finishes the period from the database, and the outcome equals the plaintext
    reference; at shutdown more than one worker says it stored bids."""
    import asyncio as aio

    from sealgrid.mechanism.auction import clear
    from sealgrid.mechanism.bids import OrderBook
    from sealgrid.service.agent import outcome_of
    from tests.service.cluster import Cluster

    households = 30
    c = Cluster(tmp_path / "data", households=households, period_seconds=8, min_per_side=1)
    toml = c.root / "server-0" / "server.toml"
    lines = toml.read_text().splitlines()
    toml.write_text("\n".join(f'database = "{postgres_url}"' if x.startswith("database =")
                              else x for x in lines) + "\n")
    market = load_server_config(toml).market.market(("s1", "s2", "s3"))
    bids = {}
    for i in range(households):
        hid = f"h{i + 1:04d}"
        bid, errors = check_bid(market, hid, "buy" if i % 2 else "sell", f"{1 + i % 4}",
                                str(90 + i % 20), ("s1", "s2", "s3")[i % 3])
        assert bid is not None, errors
        bids[hid] = bid

    async def scenario() -> None:
        await c.wait_ready()
        for _ in range(200):  # the leader answers first; every worker says once it listens
            if (c.root / "server-0.log").read_text().count("listening on") == 3:
                break
            await aio.sleep(0.05)
        period = c.period_ahead(0, min_lead=5.0)

        async def one(hid: str) -> None:
            async with c.agent(hid) as agent:
                outcome = await agent.bid(bids[hid], period)
            assert outcome.complete, outcome

        await aio.gather(*(one(h) for h in bids))
        assert c.seconds_to_gate(period) > 0, "the households were too slow for this test"
        statements = await c.statements(period, timeout=90)
        reference = clear(OrderBook.from_bids(bids.values(), ("s1", "s2", "s3")),
                          market.grid.levels)
        assert {s.bid_count for s in statements} == {households}
        assert len({s.bidset_sha256 for s in statements}) == 1
        assert {s.status for s in statements} == {"cleared"}
        public = outcome_of(statements[0].outcome)
        assert public is not None and public.level == reference.level

    try:
        c.start(0, "--workers", "3")
        c.start(1)
        c.start(2)
        aio.run(scenario())
    finally:
        c.stop()
    log = (c.root / "server-0.log").read_text()
    took = [int(line.split(" stored ")[1].split()[0]) for line in log.splitlines()
            if " stored " in line and "token requests" in line]
    assert len(took) == 3 and sum(took) == households, log[-3000:]
    assert sum(1 for n in took if n) >= 2, took  # the port was shared, not held by one


def test_bench_service_runs_each_server_as_two_workers_on_postgresql(
        tmp_path: Path, postgres_url: str) -> None:  # noqa: F811
    """``bench service --workers 2 --database-url …{party}``: three servers of two workers
    each, every household bidding over connections of its own; all bids cleared."""
    import asyncio as aio

    import psycopg

    from sealgrid.service.bench import bench_service

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for i in range(3):
            conn.execute(f"CREATE DATABASE sg{i}")
    template = postgres_url.rsplit("/", 1)[0] + "/sg{party}"
    got = aio.run(bench_service(tmp_path / "data", households=24, concurrency=8, workers=2,
                                database_url=template))
    assert got["workers"] == 2 and got["bids_accepted"] == got["bids_cleared"] == 24, got
    assert got["period_status"] == ["cleared"] and not got["failures"]["bids"], got
    for i in range(3):  # each server's bids are in its own database
        with psycopg.connect(template.replace("{party}", str(i))) as conn:
            (n,), = conn.execute("SELECT COUNT(*) FROM closed_bids").fetchall()
            assert n == 24


def test_a_reading_checked_before_the_deadline_is_not_stored_after_the_set_was_read(
        tmp_path: Path, postgres_url: str) -> None:  # noqa: F811
    """The reading-deadline race of two workers: the leader's clock has passed a period's
    reading deadline and it reads the period's reading set; a worker whose clock still lags
    checks a reading as on time, and then cannot store it (refused as late): what the set
    said stays the period's readings. A reading stored before the set was read is in it."""
    import numpy as np

    from sealgrid.protocol.billing import Claim, ClaimLayout, share_claim

    lead, lag = Clock(T0), Clock(T0)
    w0, w1 = _servers(tmp_path, postgres_url, lead, lag)
    ended = "2026-11-22T20:00:00Z"
    deadline = w0.calendar.reading_deadline(ended)
    layout = ClaimLayout.of(w0.market.max_quantity_wh)

    def reading(i: int) -> bytes:
        shares = share_claim(Claim.of(False, 0, Fraction(1), 5, 6), layout, 3)[0]
        meter = load_signing_key(tmp_path / "households" / f"h{i + 1:04d}.meter.key")
        return wire.encode(wire.sign(wire.MeterReading(
            f"h{i + 1:04d}", 0, ended, np.asarray(shares, dtype="<u8").tobytes()), meter))

    async def scenario() -> None:
        await w0.start()
        await w1.start()
        try:
            lag.now = lead.now = deadline - dt.timedelta(seconds=1)
            assert isinstance(await w1.reading(reading(0)), wire.ReadingReceipt)
            lead.now = deadline + dt.timedelta(seconds=1)  # the leader's clock passes it
            read = await w0.own_settlement_set(ended)
            assert read is not None and read.readings == ("h0001",)
            late = await w1.reading(reading(1))  # on time by w1's clock, after the set
            assert isinstance(late, Rejected) and late.reason is Reason.LATE, late
            assert "closed" in late.detail
            assert sorted(await w0.db(w0.store.readings, ended)) == ["h0001"]
            again = await w0.own_settlement_set(ended)
            assert again is not None and again.readings == read.readings
        finally:
            await w1.stop()
            await w0.stop()

    asyncio.run(scenario())


@contextlib.asynccontextmanager
async def _database_thread_held(server: Server) -> AsyncIterator[threading.Event]:
    """Hold ``server``'s database thread with a long write (a seal step, say) until the
    event yielded is set, or the block ends."""
    loop = asyncio.get_running_loop()
    held, release = threading.Event(), threading.Event()

    def long_write() -> None:
        held.set()
        release.wait(30)

    busy = loop.run_in_executor(server._db, long_write)
    await loop.run_in_executor(None, held.wait, 10)
    try:
        yield release
    finally:
        release.set()
        await busy


def test_any_workers_metrics_count_every_workers_requests(
        tmp_path: Path, postgres_url: str) -> None:  # noqa: F811
    """A scrape reaches one worker behind the shared port: it publishes what all the server's
    workers answered, at the same period boundary, summed in the database (and the table
    keeps a few windows one by one, the older summed)."""
    from aiohttp.test_utils import TestClient, TestServer

    from sealgrid.service import metrics
    from sealgrid.service.api import build_app
    from tests.service.test_metrics import samples, value

    clock = Clock(T0)
    w0, w1 = _servers(tmp_path, postgres_url, clock)
    period = w0.schedule.period_seconds

    async def scrape(client: TestClient, worker: Server) -> dict:
        metrics.monitor_of(worker).forget()  # not last second's reading
        return samples(await (await client.get("/metrics")).text())

    async def scenario() -> None:
        await w0.start()
        await w1.start()
        c0, c1 = TestClient(TestServer(build_app(w0))), TestClient(TestServer(build_app(w1)))
        await c0.start_server()
        await c1.start_server()
        try:
            for client, n in ((c0, 3), (c1, 2)):
                for _ in range(n):
                    assert (await client.post("/v1/bids", data=b"not json")).status == 400
            assert (await c1.get("/v1/info")).status == 200
            for client, worker in ((c0, w0), (c1, w1)):  # held until the boundary
                assert value(await scrape(client, worker), "sealgrid_bids_received_total") == 0

            boundary = w0.schedule.start_of(T0) + dt.timedelta(seconds=period)
            clock.now = boundary + dt.timedelta(seconds=1)
            await asyncio.sleep(4 * metrics.SAMPLE_SECONDS)  # each worker's sampler saves
            found = await scrape(c0, w0)  # the window has not settled: the sums before it
            assert value(found, "sealgrid_bids_received_total") == 0
            assert value(found, "sealgrid_counts_published_until_timestamp_seconds") == (
                boundary - dt.timedelta(seconds=period)).timestamp()
            clock.now = boundary + dt.timedelta(seconds=metrics.SETTLE_SECONDS + 1)
            for client, worker in ((c0, w0), (c1, w1)):
                found = await scrape(client, worker)
                assert value(found, "sealgrid_counts_published_until_timestamp_seconds") == (
                    boundary.timestamp())
                assert value(found, "sealgrid_bids_received_total") == 5, worker.worker
                assert value(found, "sealgrid_bids_accepted_total") == 0
                assert value(found, "sealgrid_bids_refused_total", reason="malformed") == 5
                assert value(found, "sealgrid_http_requests_total", route="/v1/bids",
                             method="POST", code="400") == 5
                assert value(found, "sealgrid_http_requests_total", route="/v1/info",
                             method="GET", code="200") == 1
                assert value(found, "sealgrid_refusals_total", route="/v1/bids",
                             reason="malformed") == 5
                # the scrapes before the boundary: one at each worker
                assert value(found, "sealgrid_http_requests_total", route="/metrics",
                             method="GET", code="200") == 2
            assert (await c0.get("/status")).status == 200
            monitor = metrics.monitor_of(w0)
            assert monitor.refusals_total["malformed"] == 5
            assert monitor.released is not None and monitor.released.refusals == {"malformed": 5}

            # what the database holds: the ended window's counts, by name, and no time finer
            first = w0.schedule.period_id(w0.schedule.start_of(T0))
            rows = await w0.read(lambda store: store._read(
                "SELECT period, name, count FROM request_counts"))
            assert {p for p, _, _ in rows} == {first}, rows
            assert ('["bid","received"]', 5) in {(name, n) for _, name, n in rows}

            # windows go by: the leader sums the older ones; the totals stay
            for _ in range(metrics.KEPT_WINDOWS + 1):
                clock.now += dt.timedelta(seconds=period)
                await asyncio.sleep(4 * metrics.SAMPLE_SECONDS)
            found = await scrape(c1, w1)
            assert value(found, "sealgrid_bids_received_total") == 5
            assert value(found, "sealgrid_http_requests_total", route="/metrics",
                         method="GET", code="200") == 5
            periods = {r[0] for r in await w0.read(lambda store: store._read(
                "SELECT period FROM request_counts"))}
            assert first not in periods and "" in periods, periods

            # a scrape and the status page do not wait for the database thread, which saves
            # the counts: held by a long write (a seal step), they still answer at once
            import time

            async with _database_thread_held(w0):
                clock.now += dt.timedelta(seconds=period)
                await asyncio.sleep(2 * metrics.SAMPLE_SECONDS)  # the sampler's save waits
                started = time.monotonic()
                assert (await c0.get("/metrics")).status == 200
                assert (await c0.get("/status")).status == 200
                assert time.monotonic() - started < 2.0
        finally:
            await c0.close()
            await c1.close()
            await w1.stop()
            await w0.stop()

    asyncio.run(scenario())


def test_a_stopping_worker_stores_its_ended_windows(
        tmp_path: Path, postgres_url: str) -> None:  # noqa: F811
    """A worker stopped while its database thread is held by a long write (a seal step), its
    counts of an ended window waiting behind it: the stop waits for the write and stores
    them, instead of dropping them."""
    from aiohttp.test_utils import TestClient, TestServer

    from sealgrid.service import metrics
    from sealgrid.service.api import build_app

    clock = Clock(T0)
    w0, w1 = _servers(tmp_path, postgres_url, clock)

    async def scenario() -> None:
        await w0.start()
        await w1.start()
        c1 = TestClient(TestServer(build_app(w1)))
        await c1.start_server()
        closed = False
        try:
            for _ in range(3):
                assert (await c1.post("/v1/bids", data=b"not json")).status == 400
            async with _database_thread_held(w1) as release:
                clock.now += dt.timedelta(seconds=w1.schedule.period_seconds)
                await asyncio.sleep(4 * metrics.SAMPLE_SECONDS)  # its save waits for it
                asyncio.get_running_loop().call_later(1.0, release.set)
                await c1.close()  # the stop: it waits for the save
                closed = True
            rows = await w0.read(lambda store: store._read(
                "SELECT name, count FROM request_counts"))
            assert ('["bid","received"]', 3) in rows, rows
        finally:
            if not closed:
                await c1.close()
            await w1.stop()
            await w0.stop()

    asyncio.run(scenario())
