"""What operators watch: /metrics, /healthz, the status page and JSON logs.

One server on a fake clock shows that request counts are held until the period boundary and
then match what was sent; three servers in this process (TLS, SQLite, the real clearing and
settlement) trade a period, and their metrics, health and status page (rendered in headless
Chromium) match what happened.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from sealgrid.mechanism.bids import Bid, check_bid
from sealgrid.mechanism.market import DEFAULT_GRID, Market
from sealgrid.service import metrics, status
from sealgrid.service.agent import outcome_of
from sealgrid.service.api import build_app
from sealgrid.service.config import load_server_config
from sealgrid.service.local import free_port_range
from sealgrid.service.openapi import OPENAPI_PATHS
from sealgrid.service.server import Server
from sealgrid.service.setup import init_data_dir

from .cluster import Cluster, free_base_port

CHROMIUM = "/usr/bin/chromium"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, by name and sorted labels."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def value(found: dict, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist (yet)."""
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


# -- one server on a fake clock


class FakeClock:
    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def one_server(tmp_path: Path) -> Iterator[tuple[Server, FakeClock, web.Application]]:
    init_data_dir(tmp_path / "d", households=2, base_port=free_base_port())
    clock = FakeClock(dt.datetime(2031, 5, 6, 7, 8, 1, tzinfo=dt.UTC))
    server = Server(load_server_config(tmp_path / "d" / "server-0" / "server.toml"), clock)
    app = build_app(server)
    metrics.install(app, server, probe_seconds=0.1)
    yield server, clock, app
    server.store.close()  # closing twice is harmless


def test_request_counts_are_held_until_the_period_boundary_then_match(one_server) -> None:
    server, clock, app = one_server

    async def scenario() -> None:
        await server.start()
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            for body in (b"not json", b"{}", b'{"type": "Submission"}'):
                resp = await client.post("/v1/bids", data=body)
                assert resp.status == 400 and (await resp.json())["error"] == "malformed"
            resp = await client.post("/v1/hello", data=b"[]")
            assert resp.status == 400
            for _ in range(2):
                assert (await client.get("/v1/info")).status == 200
            assert (await client.get("/no/such/route")).status == 404
            assert (await client.request("PROPFIND", "/v1/info")).status == 405
            unfinished = server.schedule.period_id(server.schedule.start_of(clock.now))
            assert (await client.get(f"/v1/periods/{unfinished}")).status == 404

            first = samples(await (await client.get("/metrics")).text())
            # nothing of this window is published yet: no counter moves while households bid
            assert value(first, "sealgrid_bids_received_total") == 0
            assert value(first, "sealgrid_bids_refused_total", reason="malformed") == 0
            assert value(first, "sealgrid_http_requests_total", route="/v1/info",
                         method="GET", code="200") == 0
            assert value(first, "sealgrid_server_info", party="0", servers="3") == 1
            assert value(first, "sealgrid_database_up") == 1
            assert value(first, "sealgrid_periods", status="cleared") == 0

            clock.now += dt.timedelta(seconds=server.schedule.period_seconds)
            text = await (await client.get("/metrics")).text()
            found = samples(text)
            assert value(found, "sealgrid_bids_received_total") == 3
            assert value(found, "sealgrid_bids_accepted_total") == 0
            assert value(found, "sealgrid_bids_refused_total", reason="malformed") == 3
            assert value(found, "sealgrid_http_requests_total", route="/v1/bids",
                         method="POST", code="400") == 3
            assert value(found, "sealgrid_refusals_total", route="/v1/hello",
                         reason="malformed") == 1
            assert value(found, "sealgrid_http_requests_total", route="/v1/info",
                         method="GET", code="200") == 2
            assert value(found, "sealgrid_http_requests_total", route="unmatched",
                         method="GET", code="404") == 1
            assert value(found, "sealgrid_refusals_total", route="/v1/periods/{period}",
                         reason="not_finished") == 1
            # the first scrape was in the window that ended; this one is held
            assert value(found, "sealgrid_http_requests_total", route="/metrics",
                         method="GET", code="200") == 1
            # never a raw path, never a household
            assert value(found, "sealgrid_http_requests_total", route="unmatched",
                         method="other", code="405") == 1
            assert "/no/such/route" not in text and unfinished not in text
            assert "PROPFIND" not in text  # methods, too, are a closed set of labels
            boundary = server.schedule.start_of(clock.now).timestamp()
            assert value(found, "sealgrid_counts_published_until_timestamp_seconds") == boundary

            page = await (await client.get("/status")).text()
            assert "<td>malformed</td>" in page and "sealgrid server 0" in page
            assert "No period's gate has closed yet." in page

            # the peers are not running: the probes see them down
            await asyncio.sleep(0.5)
            resp = await client.get("/healthz")
            health = await resp.json()
            assert resp.status == 200 and health["status"] == "ok"
            assert health["party"] == 0 and health["database"] is True
            assert set(health["peers"]) == {"1", "2"}
            assert not any(p["up"] for p in health["peers"].values())
            found = samples(await (await client.get("/metrics")).text())
            assert value(found, "sealgrid_peer_up", peer="1") == 0
            assert ("sealgrid_peer_heartbeat_up", (("peer", "1"),)) in found
            assert value(found, "sealgrid_peer_heartbeat_up", peer="1") == 0
            assert ("sealgrid_peer_up", (("peer", "2"),)) in found

            # a long write holds the database thread (a period's seal: 22 s at 100,000
            # bids): the health check and the metrics read on a connection of their own
            held, release = threading.Event(), threading.Event()

            def seal_like() -> None:
                server.store._conn.execute("BEGIN IMMEDIATE")
                server.store._conn.execute("DELETE FROM used_challenges")
                held.set()
                release.wait(30)
                server.store._conn.execute("ROLLBACK")

            writing = asyncio.ensure_future(server.db(seal_like))
            await asyncio.get_running_loop().run_in_executor(None, held.wait, 10)
            try:
                metrics.monitor_of(server).forget()
                t0 = time.monotonic()
                resp = await client.get("/healthz")
                assert resp.status == 200 and (await resp.json())["database"] is True
                found = samples(await (await client.get("/metrics")).text())
                assert value(found, "sealgrid_database_up") == 1
                assert time.monotonic() - t0 < metrics.DB_TIMEOUT_SECONDS
            finally:
                release.set()
                await writing

            # the database goes away: 503, and the metrics say so instead of failing
            server.store._conn.close()
            if server._reader is not None:
                server._reader._conn.close()
            metrics.monitor_of(server).forget()
            resp = await client.get("/healthz")
            assert resp.status == 503
            assert (await resp.json())["database"] is False
            resp = await client.get("/metrics")
            assert resp.status == 200
            found = samples(await resp.text())
            assert value(found, "sealgrid_database_up") == 0
            assert ("sealgrid_periods", (("status", "cleared"),)) not in found
            page = await (await client.get("/status")).text()
            assert "The database could not be read." in page
        finally:
            await client.close()
            await server.stop()

    asyncio.run(scenario())


def test_the_store_is_counted_and_listed(tmp_path: Path) -> None:
    """Periods by status (a cleared period without trade counts as no_trade), settled and
    awaiting, bids of closed periods; the status page lists the newest first with prices."""
    from sealgrid.service import wire
    from sealgrid.service.storage import Store

    store = Store(str(tmp_path / "db.sqlite"))
    try:
        cleared = wire.encode(wire.Outcome("cleared", level=4, price="98.7")).decode()
        none = wire.encode(wire.Outcome("no_trade")).decode()
        failed = wire.encode(wire.Outcome("failed", reason="server 2 did not answer")).decode()
        store.set_period("2031-01-01T00:00:00Z", "cleared", outcome=cleared)
        store.set_period("2031-01-01T00:15:00Z", "cleared", outcome=none)
        store.set_period("2031-01-01T00:30:00Z", "failed", outcome=failed)
        store.set_period("2031-01-01T00:45:00Z", "closed")
        store.add_settlement("2031-01-01T00:00:00Z", ["h0001"], ["settled"], b"", 0, 1, 98700)
        view = metrics.store_view(store)
        assert view.periods == {"cleared": 1, "no_trade": 1, "failed": 1, "closed": 1}
        assert (view.settled, view.awaiting_settlement, view.bids_in_closed_periods) == (1, 2, 0)
        rows = metrics.recent_periods(store)
        assert [(r.status, r.price, r.settled) for r in rows] == [
            ("closed", None, False), ("failed", None, False), ("no_trade", None, False),
            ("cleared", "98.7", True)]
        assert rows[1].reason == "server 2 did not answer"
        assert metrics.recent_periods(store, 2)[-1].period == "2031-01-01T00:30:00Z"
        assert metrics.database_ok(store)
    finally:
        store.close()


def test_json_logs_are_one_object_per_line_in_utc(capsys) -> None:
    from sealgrid.cli import build_parser
    from sealgrid.cli.serve import configure_logging

    args = build_parser().parse_args(["serve", "--config", "x.toml", "--log-format", "json"])
    assert args.log_format == "json"
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("info", "json")
        log = logging.getLogger("sealgrid.test")
        log.info("period %s cleared:\nprice %s", "2031-01-01T00:00:00Z", "98.7")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("settling failed")
        lines = capsys.readouterr().err.strip().splitlines()
    finally:
        root.handlers[:], root.level = saved
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "period 2031-01-01T00:00:00Z cleared:\nprice 98.7"
    assert (first["level"], first["logger"]) == ("INFO", "sealgrid.test")
    assert first["time"].endswith("Z")
    when = dt.datetime.fromisoformat(first["time"].replace("Z", "+00:00"))
    assert abs((dt.datetime.now(dt.UTC) - when).total_seconds()) < 60
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exception"]


# -- three servers in this process, trading


SUPPLIERS = ("s1", "s2", "s3")
MARKET = Market(DEFAULT_GRID, 10_000, SUPPLIERS)
BIDS = {  # household: (side, kWh, price); suppliers round-robin as sealgrid init makes them
    "h0001": ("buy", "2.5", "110"),
    "h0002": ("buy", "1.2", "95.5"),
    "h0003": ("sell", "3", "90"),
    "h0004": ("sell", "1", "99.9"),
    "h0005": ("buy", "0.8", "85"),
}
GARBAGE = 2  # malformed submissions sent to server 0


def _bid(hid: str) -> Bid:
    side, kwh, price = BIDS[hid]
    bid, errors = check_bid(MARKET, hid, side, kwh, price, SUPPLIERS[(int(hid[1:]) - 1) % 3])
    assert bid is not None, errors
    return bid


def _free_port() -> int:
    return free_port_range(1)  # below the ephemeral range: no outgoing connection takes it


class Market3:
    """Three servers served by one event loop in a thread of its own (so that Chromium, run
    from the test, can load a page while they keep running)."""

    def __init__(self, root: Path) -> None:
        self.cluster = Cluster(root, households=6, period_seconds=4, min_per_side=1,
                               cycle_periods=1, reading_grace_periods=1)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers: list[Server] = []
        self.runners: list[web.AppRunner] = []
        self.plain_port = _free_port()
        self.period = ""
        self.price: str | None = None

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 180) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def start(self) -> None:
        for i in range(3):
            cfg = load_server_config(self.cluster.root / f"server-{i}" / "server.toml")
            server = Server(cfg)
            await server.start()
            self.servers.append(server)
            app = build_app(server)
            metrics.install(app, server, probe_seconds=0.3)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            self.runners.append(runner)
            await web.TCPSite(runner, cfg.listen_host, cfg.listen_port,
                              ssl_context=server.tls_context()).start()
            if i == 0:  # the status page over plain HTTP on loopback, for Chromium only
                await web.TCPSite(runner, "127.0.0.1", self.plain_port).start()
        async with self.cluster.client() as c:
            await c.wait_ready(range(3), 30)

    async def stop(self) -> None:
        for runner in self.runners:
            await runner.cleanup()
        for server in self.servers:
            await server.stop()

    async def trade(self) -> None:
        """Five households bid in one period, server 0 gets garbage too; wait until the period
        is cleared on every server, settled, and the bids' window published."""
        self.period = self.cluster.period_ahead(0, min_lead=3.0)
        for hid in BIDS:
            async with self.cluster.agent(hid) as agent:
                outcome = await agent.bid(_bid(hid), self.period)
            assert outcome.complete, outcome
        async with self.cluster.client() as c:
            for _ in range(GARBAGE):
                status, _ = await c.call(0, "POST", "/v1/bids", b'{"type": "nonsense"}')
                assert status == 400
        statements = await self.cluster.statements(self.period, timeout=90)
        assert {s.status for s in statements} == {"cleared"}
        public = outcome_of(statements[0].outcome)
        assert public is not None and public.status == "cleared" and public.price
        self.price = public.price
        for _ in range(240):  # the settlement runs after the reading deadline (one period)
            found = [samples(t) for t in await self.scrape_all()]
            if all(value(f, "sealgrid_periods_settled") >= 1 for f in found):
                break
            await asyncio.sleep(0.5)

    async def scrape_all(self) -> list[str]:
        async with self.cluster.client() as c:
            out = []
            for i in range(3):
                status, body = await c.call(i, "GET", "/metrics")
                assert status == 200
                out.append(body.decode())
            return out

    async def health(self, i: int) -> tuple[int, dict[str, Any]]:
        async with self.cluster.client() as c:
            status, body = await c.call(i, "GET", "/healthz")
            return status, json.loads(body)


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Iterator[Market3]:
    m = Market3(tmp_path_factory.mktemp("metrics") / "data")
    try:
        m.run(m.start())
        m.run(m.trade(), timeout=240)
        yield m
    finally:
        try:
            m.run(m.stop(), timeout=60)
        finally:
            m.loop.call_soon_threadsafe(m.loop.stop)
            m.thread.join(10)


@pytest.mark.slow
def test_metrics_of_a_traded_period_match_what_happened(market: Market3) -> None:
    texts = market.run(market.scrape_all())
    for i, text in enumerate(texts):
        found = samples(text)
        # each server stored every household's bid and the period cleared and settled
        assert value(found, "sealgrid_bids_accepted_total") == len(BIDS), i
        assert value(found, "sealgrid_bids_in_closed_periods") == len(BIDS), i
        assert value(found, "sealgrid_http_requests_total", route="/v1/bids", method="POST",
                     code="201") == len(BIDS), i
        assert value(found, "sealgrid_http_requests_total", route="/v1/pseudonyms",
                     method="POST", code="201") == len(BIDS), i
        assert value(found, "sealgrid_periods", status="cleared") == 1, i
        assert value(found, "sealgrid_periods", status="failed") == 0, i
        finished = sum(value(found, "sealgrid_periods", status=s)
                       for s in ("cleared", "no_trade", "failed"))
        assert value(found, "sealgrid_clearing_seconds_count", status="cleared") == 1, i
        assert value(found, "sealgrid_period_finish_seconds_count", status="cleared") == 1, i
        assert value(found, "sealgrid_clearing_seconds_sum", status="cleared") > 0, i
        assert value(found, "sealgrid_periods_settled") == finished, i
        assert value(found, "sealgrid_periods_settled") >= 1, i
        assert value(found, "sealgrid_settlement_seconds_count", result="settled") == finished
        assert value(found, "sealgrid_periods_awaiting_settlement") == 0, i
        peers = {j for j in range(3) if j != i}
        for j in peers:
            assert value(found, "sealgrid_peer_up", peer=str(j)) == 1, (i, j)
            assert value(found, "sealgrid_peer_heartbeat_up", peer=str(j)) == 1, (i, j)
            assert value(found, "sealgrid_peer_last_seen_timestamp_seconds", peer=str(j)) > 0
        assert value(found, "sealgrid_writer_queue_stalled_seconds") == 0
        # the internal routes the peers used at gate closure and settlement: every server
        # held the same bids, so the peers compared digests and none fetched the whole set
        assert value(found, "sealgrid_http_requests_total",
                     route="/v1/internal/periods/{period}/bidset-digest", method="GET",
                     code="200") >= 2, i
        assert value(found, "sealgrid_http_requests_total",
                     route="/v1/internal/periods/{period}/bidset", method="GET",
                     code="200") == 0, i
        refused = GARBAGE if i == 0 else 0
        assert value(found, "sealgrid_bids_refused_total", reason="malformed") == refused
        assert value(found, "sealgrid_bids_received_total") == len(BIDS) + refused, i
        # no household, no pseudonym, no bid data
        assert "h000" not in text and "pseudonym=" not in text


@pytest.mark.slow
def test_health_of_running_servers(market: Market3) -> None:
    for i in range(3):
        status, body = market.run(market.health(i))
        assert status == 200 and body["status"] == "ok" and body["database"] is True
        assert body["party"] == i
        assert {j: p["up"] for j, p in body["peers"].items()} == {
            str(j): True for j in range(3) if j != i}
        for p in body["peers"].values():
            assert p["last_seen"].endswith("Z")


@pytest.mark.slow
def test_status_page_shows_the_last_price_in_headless_chromium(market: Market3,
                                                               tmp_path: Path) -> None:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing in CI (.ci/run installs Debian's chromium)")
        pytest.skip(f"{CHROMIUM} is not installed")
    url = f"http://127.0.0.1:{market.plain_port}/status"
    profile = tempfile.mkdtemp(dir=tmp_path)
    dom = market.run(_dump_dom(url, profile), timeout=120)
    assert "<h1>sealgrid server 0</h1>" in dom
    row = dom.split(f"<td>{market.period}</td>", 1)
    assert len(row) == 2, dom[-2000:]
    cells = row[1].split("</tr>", 1)[0]
    assert '<td class="ok">cleared</td>' in cells
    assert f'<td class="num price">{market.price}</td>' in cells
    assert "<td>yes</td>" in cells  # settled
    assert dom.count('<td class="ok">up</td>') == 2  # both peers


async def _dump_dom(url: str, profile: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", "--dump-dom", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 90)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


def test_the_status_page_escapes_and_the_routes_are_described(one_server) -> None:
    server, _, app = one_server
    monitor = metrics.monitor_of(server)
    rows = [metrics.PeriodRow("2031-01-01T00:00:00Z", "failed", None, "<script>x</script>",
                              False)]
    page = status.render(monitor, rows, True)
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    metrics.install(app, server, probe_seconds=7)  # again (as build_app may have): no change
    assert monitor.probe_seconds == 7 and metrics.monitor_of(server) is monitor
    routes = [r.resource.canonical for r in app.router.routes()
              if r.resource is not None and r.method == "GET"]
    assert sorted(p for p in routes if p in OPENAPI_PATHS) == [
        "/healthz", "/metrics", "/status"]
    assert len(app.middlewares) == len(set(app.middlewares))
    assert set(OPENAPI_PATHS) == {"/metrics", "/healthz", "/status"}
