"""End to end: three real ``sealgrid serve`` processes, HTTPS on loopback, SQLite files."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from fractions import Fraction

import pytest

from sealgrid.mechanism.auction import clear
from sealgrid.mechanism.bids import Bid, OrderBook, Reason, Side, check_bid
from sealgrid.mechanism.market import DEFAULT_GRID, Market
from sealgrid.service import wire
from sealgrid.service.agent import AgentError, encode_payloads, outcome_of, read_totals
from sealgrid.service.keys import load_signing_key
from sealgrid.service.schedule import utc_now

from .cluster import Cluster

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path / "data", households=8, period_seconds=4, min_per_side=1)
    try:
        for i in range(3):
            c.start(i)
        asyncio.run(c.wait_ready())
        yield c
    finally:
        c.stop()


GRID = DEFAULT_GRID
SUPPLIERS = ("s1", "s2", "s3")
MARKET = Market(GRID, 10_000, SUPPLIERS)


def _bid(hid: str, side: str, kwh: str, price: str, supplier: str) -> Bid:
    bid, errors = check_bid(MARKET, hid, side, kwh, price, supplier)
    assert bid is not None, errors
    return bid


def _payloads(bid: Bid) -> list[bytes]:
    return encode_payloads(bid, MARKET, 3)


def _any_payloads(i: int = 1) -> list[bytes]:
    return _payloads(_bid(f"h{i:04d}", "buy", "1", "100", "s1"))


BIDS = {  # household: (side, kWh, price) — suppliers by init: h0001 s1, h0002 s2, h0003 s3 …
    "h0001": ("buy", "2.5", "110"),
    "h0002": ("buy", "1.2", "95.5"),
    "h0003": ("sell", "3", "90"),
    "h0004": ("sell", "1", "99.9"),
    "h0005": ("buy", "0.8", "85"),
}


def test_two_periods_end_to_end_with_agreement_and_exclusion(cluster: Cluster) -> None:
    from sealgrid.service.household import Pseudonym, make_submission

    bids = {
        h: _bid(h, side, kwh, price, SUPPLIERS[(int(h[1:]) - 1) % 3])
        for h, (side, kwh, price) in BIDS.items()
    }

    async def scenario() -> None:
        p1 = cluster.period_ahead(0, min_lead=3.0)
        p2 = cluster.period_ahead(1, min_lead=3.0)
        outcomes = {}
        for hid, bid in bids.items():
            async with cluster.agent(hid) as agent:
                for p in (p1, p2):
                    outcomes[hid, p] = await agent.bid(bid, p)
        assert all(o.complete for o in outcomes.values()), outcomes
        # h0006 reaches only servers 0 and 1 in p1 (its request to server 2 is lost)
        async with cluster.household("h0006") as h:
            partial = Pseudonym.fresh(p1)
            assert await h.obtain(partial) == {}
            payloads = _payloads(_bid("h0006", "sell", "5", "80", "s3"))
            for server in (0, 1):
                raw = make_submission(partial, server, payloads[server])
                status, _ = await h.call(server, "POST", "/v1/bids", raw)
                assert status == 201
        async with cluster.client() as c:
            status, body = await c.call(0, "GET", "/openapi.json")
            assert status == 200 and json.loads(body)["openapi"].startswith("3.")
            # the internal bid-set route refuses a client without a server certificate
            for route in ("bidset", "bidset-digest"):
                status, _ = await c.call(1, "GET", f"/v1/internal/periods/{p1}/{route}")
                assert status == 403, route
        reference = clear(OrderBook.from_bids(bids.values(), SUPPLIERS), GRID.levels)
        assert reference.level is not None
        for p, extra in ((p1, 1), (p2, 0)):
            sts = await cluster.statements(p, timeout=90)
            assert {s.bid_count for s in sts} == {len(bids)}
            assert len({s.bidset_sha256 for s in sts}) == 1
            assert sum(len(s.excluded) for s in sts) == 2 * extra  # servers 0 and 1 say so
            assert {s.status for s in sts} == {"cleared"}, sts[0].outcome
            assert len({s.outcome for s in sts}) == 1
            public = outcome_of(sts[0].outcome)
            assert public is not None and public.status == "cleared"
            assert public.level == reference.level
            assert public.price == str(GRID.price(reference.level))
            assert set(json.loads(sts[0].outcome)) == {  # no quantity is public
                "type", "v", "status", "level", "price", "invalid_bids", "reason"}
        async with cluster.household("h0006") as h:
            shares = await h.result(partial)
            assert [s.status for s in shares] == ["not_on_every_server", "not_on_every_server",
                                                  "unknown"]
        book = OrderBook.from_bids(bids.values(), SUPPLIERS)
        for i, hid in enumerate(bids):
            async with cluster.agent(hid) as agent:
                got = await agent.result(p1)
            assert got.status == "cleared" and got.issuer_keys_match is True
            assert got.accepted is bool(reference.accepted[i])
            assert got.traded_wh == Fraction(
                int(reference.traded_numerator[i]),
                reference.denominator_buy if book.is_buy[i] else reference.denominator_sell,
            )
        # a supplier reads its own totals, and cannot read another's
        async with cluster.client() as c:
            key = load_signing_key(cluster.root / "suppliers" / "s1.key")
            totals = await read_totals(c, "supplier", "s1", p1, key)
            assert totals.status == "cleared"
            assert (totals.bought_wh, totals.sold_wh) == (
                reference.supplier_bought_wh[0], reference.supplier_sold_wh[0]
            )
            dso = load_signing_key(cluster.root / "operators" / "dso.key")
            region = await read_totals(c, "operator", "dso", p1, dso)
            assert region.bought_wh == region.sold_wh == reference.volume_wh
            from sealgrid.service.client import ServiceError

            with pytest.raises(ServiceError, match="bad_signature"):
                await c.outputs("supplier", "s2", p1, key)

    asyncio.run(scenario())
    # the first period's party was started ahead of its gate on every server and handed its
    # MPC options at the gate, before the agreement (the second's too when the first
    # clearing ended in time to start another), and the results are the reference's above
    for i in range(3):
        ran = [line for line in (cluster.root / f"server-{i}.log").read_text().splitlines()
               if "MPC party ran" in line]
        assert len(ran) >= 2 and "(started ahead, linked at the gate)" in ran[0], ran


def test_a_killed_server_loses_no_receipted_bid(cluster: Cluster) -> None:
    async def scenario() -> None:
        period = cluster.period_ahead(0, min_lead=5.0)
        receipted, pseudonyms = [], []
        for i in range(1, 7):
            async with cluster.household(f"h{i:04d}") as h:
                outcome = await h.bid(period, _any_payloads(i))
                assert outcome.complete
                receipted.append(outcome.pseudonym.public)
                pseudonyms.append(outcome.pseudonym)
        cluster.kill(1)  # SIGKILL: no clean shutdown
        cluster.start(1)
        await cluster.wait_ready([1])
        assert cluster.seconds_to_gate(period) > 0, "restart took too long for this test"
        # the restarted server remembers: the same household cannot bid again
        async with cluster.household("h0001") as h:
            again = await h.bid(period, _any_payloads())
            assert again.refusals[1].reason is Reason.TOO_FREQUENT
        # and a second bid under a pseudonym it receipted before it was killed
        async with cluster.household("h0002") as h:
            _, refusals = await h.submit(pseudonyms[1], _any_payloads(2))
            assert refusals[1].reason is Reason.DUPLICATE_PSEUDONYM
        sts = await cluster.statements(period, timeout=60)
        for s in sts:
            assert s.bid_count == 6 and s.excluded == ()
            assert s.bidset_sha256 == wire.sha256(b"".join(sorted(receipted)))

    asyncio.run(scenario())


def test_a_bid_reaches_a_server_that_comes_back_before_the_gate(cluster: Cluster) -> None:
    """A server is down when a household bids: the agent keeps trying it until gate closure,
    gets its token and its receipt once it is back, and the period clears with the bid on
    every server. A server that stays down past the gate leaves the bid incomplete, with the
    server named in ``unreachable``."""
    async def scenario() -> None:
        period = cluster.period_ahead(0, min_lead=7.0)
        cluster.kill(2)
        bid = _bid("h0001", "buy", "1", "110", "s1")
        async with cluster.agent("h0001") as agent:
            sending = asyncio.create_task(agent.bid(bid, period))
            await asyncio.sleep(1.5)
            assert not sending.done()  # still trying server 2
            cluster.start(2)
            await cluster.wait_ready([2])
            outcome = await sending
        assert outcome.complete and set(outcome.receipts) == {0, 1, 2}, outcome
        sts = await cluster.statements(period, timeout=60)
        assert {s.bid_count for s in sts} == {1} and all(s.excluded == () for s in sts)
        # down past the gate: the bid misses server 2, the outcome says so
        later = cluster.period_ahead(1, min_lead=3.0)
        cluster.kill(2)
        async with cluster.agent("h0002") as agent:
            missed = await agent.bid(_bid("h0002", "sell", "1", "90", "s2"), later)
        assert not missed.complete and set(missed.unreachable) == {2}
        assert set(missed.receipts) == {0, 1}
        cluster.start(2)
        await cluster.wait_ready([2])

    asyncio.run(scenario())


def test_late_bids_are_refused_by_real_servers(cluster: Cluster) -> None:
    async def scenario() -> None:
        schedule = cluster.schedule
        from sealgrid.service.schedule import utc_now

        closed = schedule.period_id(schedule.first_open(utc_now()) - schedule.length)
        async with cluster.household("h0005") as h:
            outcome = await h.bid(closed, _any_payloads())
            assert {r.reason for r in outcome.refusals.values()} == {Reason.LATE}

    asyncio.run(scenario())


def test_tokens_fetched_ahead_are_the_ones_a_later_bid_uses(cluster: Cluster) -> None:
    async def scenario() -> None:
        async with cluster.agent("h0007") as agent:
            periods = await agent.fetch_tokens(4)  # the first may close while it asks
            assert len(periods) >= 3 and periods == sorted(periods)
            periods = periods[-3:]
            kept = {p: agent.store.load(p) for p in periods}
            assert all(len(r.tokens) == 3 and r.side is None for r in kept.values())
            assert len({wire.raw_public(r.key) for r in kept.values()}) == 3  # one per period
            # fetching again asks nobody: the same pseudonyms, the same tokens
            assert set(periods) <= set(await agent.fetch_tokens(4))
            assert {p: agent.store.load(p).tokens for p in periods} == {
                p: r.tokens for p, r in kept.items()}
            period = periods[2]
            outcome = await agent.bid(_bid("h0007", "buy", "1", "100", "s1"), period)
            assert outcome.complete
            assert outcome.pseudonym.public == wire.raw_public(kept[period].key)
            assert outcome.pseudonym.tokens == kept[period].tokens
            record = agent.store.load(period)
            assert (record.side, record.quantity_wh) == (Side.BUY, 1000)
            with pytest.raises(AgentError, match="already on record"):
                await agent.bid(_bid("h0007", "sell", "1", "100", "s1"), period)

    asyncio.run(scenario())


def test_a_server_restarted_after_the_gate_still_clears_and_one_down_past_the_deadline_fails(
        tmp_path) -> None:
    """SIGKILL a server just before gate closure and start it again two seconds after: the
    period still clears on all three servers before its deadline (the end of the period
    after the gate), with one outcome and every household's exact result. A server that
    stays down past the deadline leaves the period failed for good, with a reason every
    household reads."""
    c = Cluster(tmp_path / "data", households=6, period_seconds=8, min_per_side=1)
    bids = {h: _bid(h, side, kwh, price, SUPPLIERS[(int(h[1:]) - 1) % 3])
            for h, (side, kwh, price) in BIDS.items() if int(h[1:]) <= 6}

    async def scenario() -> None:
        period = c.period_ahead(0, min_lead=5.0)
        for hid, bid in bids.items():
            async with c.agent(hid) as agent:
                assert (await agent.bid(bid, period)).complete
        await asyncio.sleep(max(0.0, c.seconds_to_gate(period) - 0.5))
        c.kill(2)
        await asyncio.sleep(max(0.0, c.seconds_to_gate(period) + 2.0))
        c.start(2)
        await c.wait_ready([2])
        sts = await c.statements(period, timeout=60)
        deadline = c.schedule.gate_closure(c.schedule.parse_period(period)) + c.schedule.length
        assert utc_now() < deadline + dt.timedelta(seconds=5)
        assert {s.status for s in sts} == {"cleared"} and len({s.outcome for s in sts}) == 1
        book = OrderBook.from_bids(bids.values(), SUPPLIERS)
        reference = clear(book, GRID.levels)
        assert reference.level is not None
        assert outcome_of(sts[0].outcome).level == reference.level  # type: ignore[union-attr]
        for i, hid in enumerate(bids):
            async with c.agent(hid) as agent:
                got = await agent.result(period)
            assert got.status == "cleared"
            assert got.traded_wh == Fraction(
                int(reference.traded_numerator[i]),
                reference.denominator_buy if book.is_buy[i] else reference.denominator_sell)
        # down past the deadline: failed for good, with its reason
        later = c.period_ahead(0, min_lead=5.0)
        for hid, bid in list(bids.items())[:2]:
            async with c.agent(hid) as agent:
                assert (await agent.bid(bid, later)).complete
        c.kill(2)
        done = await c.statements_of(later, [0, 1], timeout=60)
        for s in done:
            public = outcome_of(s.outcome)
            assert s.status == "failed" and public is not None and public.status == "failed"
            assert "not cleared by the deadline" in public.reason
        c.start(2)  # back after the deadline: it fails the period too, and says why
        await c.wait_ready([2])
        (back,) = await c.statements_of(later, [2], timeout=30)
        assert back.status == "failed"
        async with c.agent("h0001") as agent:
            got = await agent.result(later)
        assert got.status == "failed" and got.outcome is not None
        assert "deadline" in got.outcome.reason

    try:
        for i in range(3):
            c.start(i)
        asyncio.run(c.wait_ready())
        asyncio.run(scenario())
    finally:
        c.stop()


def test_a_frozen_peer_is_noticed_within_two_seconds(cluster: Cluster) -> None:
    """SIGSTOP one server: the others log that it stopped answering heartbeats within about
    two seconds (bound here 3 s for a loaded machine), and that it answers again after
    SIGCONT."""
    import signal
    import time

    log0 = cluster.root / "server-0.log"
    time.sleep(2.0)  # let the heartbeats settle after the start
    before = log0.read_text(errors="replace").count("server 2 stopped answering heartbeats")
    cluster.procs[2].send_signal(signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 10:
            text = log0.read_text(errors="replace")
            if text.count("server 2 stopped answering heartbeats") > before:
                break
            time.sleep(0.05)
        noticed = time.monotonic() - t0
    finally:
        cluster.procs[2].send_signal(signal.SIGCONT)
    print(f"frozen peer noticed after {noticed:.2f} s")
    assert noticed <= 3.0, f"noticed only after {noticed:.1f} s"
    t1 = time.monotonic()
    while "server 2 answers heartbeats again" not in log0.read_text(errors="replace"):
        assert time.monotonic() - t1 < 10
        time.sleep(0.05)
