"""Streaming validation in the running market: three real servers validate a period's bids in
segments while it is open, the gate's clearing takes those results and validates the rest, and
the period comes out as the plaintext reference on the valid bids; a bid whose shares are not
a valid bid together is refused by its own segment, alone. After the seal nothing of the
segments is stored (which segment a bid was in tells roughly when it arrived)."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from sealgrid.mechanism.auction import clear
from sealgrid.mechanism.bids import OrderBook, check_bid
from sealgrid.protocol import field as F
from sealgrid.protocol.encoding import BidShares
from sealgrid.service.agent import outcome_of
from sealgrid.service.config import load_server_config
from tests.service.cluster import Cluster

SUPPLIERS = ("s1", "s2", "s3")


def _broken(payload: bytes) -> bytes:
    """Server 2's share moved off the sharing polynomial: each server alone sees a share in
    the field of the right format; together they are not a bid."""
    shares = BidShares.from_bytes(payload)
    moved = F.add(shares.values, np.ones_like(shares.values))
    return BidShares(shares.party, shares.layout, moved).to_bytes()


def test_segments_validated_while_open_give_the_reference(tmp_path: Path) -> None:
    households = 14
    c = Cluster(tmp_path / "data", households=households, period_seconds=12, min_per_side=1)
    for i in range(3):  # a segment every second once 4 bids wait
        toml = c.root / f"server-{i}" / "server.toml"
        toml.write_text(toml.read_text().replace(
            "[market]\n", "[market]\nsegment_seconds = 1\nsegment_min_bids = 4\n"))
    market = load_server_config(c.root / "server-0" / "server.toml").market.market(SUPPLIERS)
    bids = {}
    for i in range(households):
        hid = f"h{i + 1:04d}"
        bid, errors = check_bid(market, hid, "buy" if i % 2 else "sell", f"{1 + i % 4}",
                                str(90 + (i * 7) % 20), SUPPLIERS[i % 3])
        assert bid is not None, errors
        bids[hid] = bid
    cheater = "h0003"  # in the first segment

    def segment_lines(i: int) -> list[str]:
        text = (c.root / f"server-{i}.log").read_text()
        return re.findall(r"segment \d+ of \d+ bids validated \(\d+ refused\)", text)

    async def send(hid: str, period: str) -> None:
        async with c.agent(hid) as agent:
            prepared = await agent.prepare(bids[hid], period)
            if hid == cheater:
                prepared.payloads[2] = _broken(prepared.payloads[2])
            outcome = await agent.send(prepared)
        assert outcome.complete, outcome

    async def scenario() -> list:
        await c.wait_ready()
        period = c.period_ahead(3, min_lead=25.0)
        first = sorted(bids)[:7]
        await asyncio.gather(*(send(h, period) for h in first))
        for _ in range(200):  # the first segment, validated at every server
            if all(segment_lines(i) for i in range(3)):
                break
            await asyncio.sleep(0.1)
        assert all(segment_lines(i) for i in range(3)), [segment_lines(i) for i in range(3)]
        # server 1 loses its first segment's share file: its gate reads those bids again
        (workdir(1, period) / "segment-0" / "shares.bin").unlink()
        await asyncio.gather(*(send(h, period) for h in sorted(bids)[7:11]))
        for _ in range(200):  # a second segment; the last three bids are too few for one
            if all(len(segment_lines(i)) > 1 for i in range(3)):
                break
            await asyncio.sleep(0.1)
        assert all(len(segment_lines(i)) == 2 for i in range(3)), segment_lines(0)
        await asyncio.gather(*(send(h, period) for h in sorted(bids)[11:]))
        assert c.seconds_to_gate(period) > 0, "the households were too slow for this test"
        statements = await c.statements(period, timeout=120)
        results = {}
        for hid in honest:
            async with c.agent(hid) as agent:
                results[hid] = await agent.result(period)
        return [period, statements, results]

    def workdir(i: int, period: str) -> Path:
        return c.root / f"server-{i}" / "mpc" / period.replace(":", "")

    honest = [h for h in bids if h != cheater]
    try:
        for i in range(3):
            c.start(i)
        period, statements, results = asyncio.run(scenario())
    finally:
        c.stop()
    assert {s.bid_count for s in statements} == {households}
    assert {s.status for s in statements} == {"cleared"}
    public = outcome_of(statements[0].outcome)
    book = OrderBook.from_bids([bids[h] for h in honest], SUPPLIERS)
    reference = clear(book, market.grid.levels)
    assert public is not None and public.invalid_bids == 1
    assert public.level == reference.level and reference.level is not None
    # every household's result is its own: the gate's batch (the segments' share files, or
    # on server 1 the bids read again) kept each bid in its slot
    for i, hid in enumerate(honest):
        got = results[hid]
        assert got.status == "cleared" and got.accepted is bool(reference.accepted[i]), hid
        assert got.traded_wh == Fraction(
            int(reference.traded_numerator[i]),
            reference.denominator_buy if book.is_buy[i] else reference.denominator_sell), hid
    for i in range(3):
        lines = segment_lines(i)
        # the cheater was refused by the first segment, when it was validated
        assert lines[0].endswith("(1 refused)"), lines
        log = (c.root / f"server-{i}.log").read_text()
        used = re.search(r"period \S+: (\d+) bids from (\d+) segments validated while open",
                         log)
        assert used is not None and used.groups() == ("11", "2"), log  # and 3 at the gate
        # only server 1 read its segment's bids again
        assert ("share files are not intact" in log) is (i == 1)
        # sealed: no row of the period's segments is left in the database, and no file: the
        # working directories held the share batches in segment order
        assert not workdir(i, period).exists(), list(workdir(i, period).rglob("*"))
        db = sqlite3.connect(c.root / f"server-{i}" / "bids.sqlite")
        try:
            assert db.execute("SELECT COUNT(*) FROM segments WHERE period = ?",
                              (period,)).fetchone() == (0,)
        finally:
            db.close()


def test_a_segment_plan_at_its_cap_fits_a_request_body(tmp_path: Path) -> None:
    """A backlog goes in segments of at most ``segment_cap`` bids, so that the leader's signed
    plan fits the peers' request body limit (a plan of every waiting bid of a city does not:
    it was refused 413 and the period got no segment)."""
    import secrets

    from sealgrid.service import wire
    from sealgrid.service.server import Server
    from sealgrid.service.setup import init_data_dir

    init_data_dir(tmp_path / "d", households=3, base_port=41800)
    server = Server(load_server_config(tmp_path / "d" / "server-0" / "server.toml"))
    try:
        def plan(members: int) -> bytes:
            names = tuple(sorted(secrets.token_bytes(32) for _ in range(members)))
            period = "2026-11-29T12:00:00Z"
            return wire.encode(wire.sign(wire.SegmentPlan(0, period, 12345, names),
                                         server.key))

        cap = server.segment_cap
        assert cap > 1000 and len(plan(cap)) <= server.max_body_bytes
        assert len(plan(2 * cap)) > server.max_body_bytes  # why there is a cap
    finally:
        server.store.close()


def test_a_restarted_server_removes_the_files_of_finished_periods(tmp_path: Path) -> None:
    """A server stopped between a period's seal and the removal of its MPC working directory
    (or one from before the removal existed) removes it at its next start, but not that of a
    period still being cleared, nor one whose seal is still to come."""
    from sealgrid.service.intake import Participation
    from sealgrid.service.server import Server
    from sealgrid.service.setup import init_data_dir

    init_data_dir(tmp_path / "d", households=3, base_port=41900)
    server = Server(load_server_config(tmp_path / "d" / "server-0" / "server.toml"))
    periods = {"cleared": "2026-11-29T12:00:00Z", "failed": "2026-11-29T12:15:00Z",
               "agreed": "2026-11-29T12:30:00Z", "unsealed": "2026-11-29T12:45:00Z",
               "unknown": "2026-11-29T13:00:00Z"}
    kept = []
    try:
        for status, period in periods.items():
            if status in ("cleared", "failed", "agreed"):
                server.store.set_period(period, status, seal=False)
            if status == "unsealed":  # its statement is stored, its rows are not sealed yet
                server.store.add(participations=[Participation(period, "h0001")])
                server.store.set_period(period, "cleared", seal=False)
            batch = server._mpc_workdir(period) / "gate" / "shares.bin"
            batch.parent.mkdir(parents=True)
            batch.write_bytes(b"rows")
            os.link(batch, tmp_path / f"{status}.bin")  # the same file, seen from outside
            kept.append(tmp_path / f"{status}.bin")
        (tmp_path / "d" / "server-0" / "mpc" / "started-ahead.log").write_text("")
        assert server.store.unsealed() == [periods["unsealed"]]
        asyncio.run(server._remove_workdirs())
        left = {s for s, p in periods.items() if server._mpc_workdir(p).exists()}
        assert left == {"agreed", "unsealed", "unknown"}
        assert (tmp_path / "d" / "server-0" / "mpc" / "started-ahead.log").exists()
        # what was erased was overwritten first, not only unlinked
        assert {p.stem for p in kept if p.read_bytes() == b"\0" * 4} == {"cleared", "failed"}
    finally:
        server.store.close()


def test_a_server_stopped_during_a_seal_finishes_it_first(tmp_path: Path) -> None:
    """The seal runs in steps, but ``stop()`` waits for all of them: a database copied after
    a stop (a backup) keeps no period's rows as arrival left them. A server that dies part
    way finishes the seal at its next start (``tests/service/test_storage.py``)."""
    from sealgrid.service.intake import Participation
    from sealgrid.service.server import Server
    from sealgrid.service.setup import init_data_dir

    init_data_dir(tmp_path / "d", households=3, base_port=41920)
    cfg = load_server_config(tmp_path / "d" / "server-0" / "server.toml")
    period = "2026-11-29T12:45:00Z"
    households = [f"h{i:05d}" for i in range(3500)]  # four steps of 1,000
    server = Server(cfg)
    server.store.add(participations=[Participation(period, h) for h in households])
    server.store.set_period(period, "cleared", seal=False)  # stopped before its seal

    async def start_and_stop() -> None:
        await server.start()  # the seal starts in the background ...
        await server.stop()  # ... and stop waits for every step of it

    asyncio.run(start_and_stop())
    after = Server(cfg)
    try:
        assert after.store.unsealed() == []
        assert after.store.participants(period) == tuple(households)
        assert after.store._read("SELECT COUNT(*) FROM participations") == [(0,)]
    finally:
        after.store.close()


def test_a_statement_stored_while_the_server_stops_is_sealed_before_the_stop_ends(
        tmp_path: Path) -> None:
    """A clearing may store its statement while ``stop()`` waits for the seals under way:
    the seal that statement starts is waited for too, not left to the next start."""
    from sealgrid.service.intake import Participation
    from sealgrid.service.server import Server
    from sealgrid.service.setup import init_data_dir

    init_data_dir(tmp_path / "d", households=3, base_port=41940)
    cfg = load_server_config(tmp_path / "d" / "server-0" / "server.toml")
    first, second = "2026-11-29T12:45:00Z", "2026-11-29T13:00:00Z"
    households = {first: [f"h{i:05d}" for i in range(500)],  # one step
                  second: [f"h{i:05d}" for i in range(3500)]}  # four steps of 1,000
    server = Server(cfg)
    for period, them in households.items():
        server.store.add(participations=[Participation(period, h) for h in them])
    server.store.set_period(first, "cleared", seal=False)  # its seal starts with the server
    steps_of = server.store.seal_steps

    def slow(period: str, rows: int | None = None) -> list[Any]:
        steps = steps_of(period, rows)
        if period == second:  # a seal that outlasts the rest of the stop (a large period)
            steps.insert(1, lambda: time.sleep(1.0))
        return steps

    server.store.seal_steps = slow  # type: ignore[method-assign]

    async def start_and_stop() -> None:
        await server.start()
        stopping = asyncio.create_task(server.stop())
        await asyncio.sleep(0)  # stop() now waits for the first period's seal, a short one
        assert server._stopping.is_set()
        await server.db(lambda: server.store.set_period(second, "cleared", seal=False))
        server._seal_soon(second)  # what storing a statement does
        await stopping

    asyncio.run(start_and_stop())
    after = Server(cfg)
    try:
        assert after.store.unsealed() == []
        assert after.store._read("SELECT COUNT(*) FROM participations") == [(0,)]
        for period, them in households.items():
            assert after.store.participants(period) == tuple(them)
    finally:
        after.store.close()
