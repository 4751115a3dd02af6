"""What operators watch on one computation server: Prometheus metrics, a health check, the
status page's data and one-JSON-object-per-line logs; assumes aiohttp and a running
:class:`~sealgrid.service.server.Server`.

:func:`install` adds to a server's application a middleware that counts every answer (route,
status and, for a refusal, the ``error`` of its JSON body) and three read-only routes:
``GET /metrics`` (Prometheus text format), ``GET /healthz`` (JSON; 503 when the database
cannot be read) and ``GET /status`` (HTML, :mod:`sealgrid.service.status`). Each server has
its own :class:`~prometheus_client.CollectorRegistry`, so several servers in one process keep
their numbers apart.

What the numbers may show (docs/privacy.md, "What outsiders see"): no bid data and nothing
per household; and no counter moves while households bid. Every count of requests, bids and
refusals is *held* and published in one step when the next period boundary passes (a gate
closure: the gate of period ``t_i`` is the start of ``t_{i-2}``), by everything that arrived
in the period-long window before it, so no number times one request more finely than
``GET /v1/info`` does. The writer queue is shown the same way (its peak in the last window),
live only when it has been non-empty for :data:`STALL_SECONDS`. The periods' statuses,
settlements, the clearing's and settlement's seconds and the peers are about periods and
servers, not requests, and are live.

With several intake workers (``sealgrid serve --workers N``) each worker holds its counts the
same way, then adds each ended window's to the database (``request_counts``), and the request
counters any worker publishes are every worker's, summed (:class:`_SharedCounts`).
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import logging
import re
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from sealgrid.service.keys import server_tls_name
from sealgrid.service.schedule import EPOCH
from sealgrid.service.server import Server
from sealgrid.service.storage import Store

log = logging.getLogger("sealgrid.metrics")
T = TypeVar("T")

#: Buckets (seconds) of the clearing's, finishing's and settlement's histograms.
BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
#: The writer queue is shown live once it has been non-empty this long (seconds).
STALL_SECONDS = 10.0
#: How often the writer queue is sampled and held counts are released (seconds).
SAMPLE_SECONDS = 0.25
#: How often each peer's ``/healthz`` is asked by default, and how long an answer may take.
PROBE_SECONDS = 5.0
PROBE_TIMEOUT_SECONDS = 2.0
#: A scrape or status page reads the database at most this often (seconds); in between the
#: last reading is shown, so fast polling does not load the server's database thread.
STORE_REFRESH_SECONDS = 1.0
#: How long a health check or a scrape waits for the database thread (seconds).
DB_TIMEOUT_SECONDS = 5.0
#: Periods listed on the status page.
STATUS_PERIODS = 12

#: With several intake workers, the period-long windows of request counts the database keeps
#: one by one; older ones are summed into one row (:meth:`Store.fold_request_counts`).
KEPT_WINDOWS = 4
#: With several intake workers, a window's counts are published this long after it ended
#: (at most a quarter period), when every worker has added its own: every worker then
#: publishes the same sums, and a scrape never reads less than one before it.
SETTLE_SECONDS = 5.0
#: How long a stopping worker waits for the database to store the counts of ended windows.
STOP_SAVE_SECONDS = 30.0
#: The request counters: name, help and labels, by the first item of a held count's key.
COUNTED: dict[str, tuple[str, str, list[str]]] = {
    "req": ("sealgrid_http_requests", "HTTP requests answered, by route, method and status"
            " (published at each period boundary)", ["route", "method", "code"]),
    "refused": ("sealgrid_refusals", "Requests refused, by route and the error of the answer"
                " (published at each period boundary)", ["route", "reason"]),
    "received": ("sealgrid_bids_received", "Bid submissions answered (POST /v1/bids;"
                 " published at each period boundary)", []),
    "accepted": ("sealgrid_bids_accepted", "Bids stored and receipted (published at each"
                 " period boundary)", []),
    "bid_refused": ("sealgrid_bids_refused", "Bid submissions refused, by reason (published"
                    " at each period boundary)", ["reason"]),
}

_UNFINISHED = ("closed", "agreed")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_REASON = re.compile(r"[a-z][a-z0-9_]{0,39}")
_NO_TRADE = '%"status":"no_trade"%'  # an Outcome's canonical JSON (wire.encode)


# -- storage reads (run on the server's database thread)


@dataclass(frozen=True)
class StoreView:
    """What the store says about periods, read at scrape time."""

    periods: dict[str, int]
    settled: int
    awaiting_settlement: int
    bids_in_closed_periods: int


def store_view(store: Store) -> StoreView:
    """Count the periods by status (``cleared`` split into ``cleared`` and ``no_trade`` by
    its outcome), the settled periods, those finished but not settled, and the bids of
    periods whose gate has closed (the same number as ``GET /v1/info``)."""
    periods: collections.Counter[str] = collections.Counter()
    with store.snapshot():  # the counts of one committed state, while the writer writes
        for status, no_trade, n in store._read(  # one parameter: PostgreSQL groups by it
            "SELECT status, no_trade, COUNT(*) FROM (SELECT status, CASE WHEN outcome LIKE ?"
            " THEN 1 ELSE 0 END AS no_trade FROM periods) AS p GROUP BY status, no_trade",
            (_NO_TRADE,),
        ):
            periods[_status_label(str(status), bool(no_trade))] += int(n)
        settled = int(store._read("SELECT COUNT(*) FROM settlements")[0][0])
        awaiting = int(store._read(
            "SELECT COUNT(*) FROM periods WHERE status NOT IN ('closed', 'agreed')"
            " AND period NOT IN (SELECT period FROM settlements)")[0][0])
        bids = store.closed_counts()["bids_in_closed_periods"]
    return StoreView(dict(periods), settled, awaiting, bids)


def _status_label(status: str, no_trade: bool) -> str:
    return "no_trade" if no_trade and status == "cleared" else status


@dataclass(frozen=True)
class PeriodRow:
    """One finished (or finishing) period as the status page shows it: all of it public in
    the period's signed statement (``GET /v1/periods/{period}``) but ``settled``."""

    period: str
    status: str
    price: str | None
    reason: str
    settled: bool


def recent_periods(store: Store, limit: int = STATUS_PERIODS) -> list[PeriodRow]:
    """The last ``limit`` periods whose gate has closed, newest first, from their stored
    statements (the stored outcome while a period has none yet)."""
    from sealgrid.service import wire

    rows = store._read(
        "SELECT p.period, p.status, p.outcome, p.statement,"
        " CASE WHEN s.period IS NULL THEN 0 ELSE 1 END"
        " FROM periods p LEFT JOIN settlements s ON s.period = p.period"
        " ORDER BY p.period DESC LIMIT ?",
        (limit,),
    )
    out = []
    for period, status, outcome, statement, settled in rows:
        text = outcome or ""
        if statement:
            try:
                text = wire.decode(wire.PeriodStatement, bytes(statement)).outcome
            except wire.WireError:
                log.warning("the stored statement of period %s does not decode", period)
        price, reason, shown = None, "", str(status)
        if text:
            try:
                found = wire.decode(wire.Outcome, text.encode())
            except wire.WireError:
                log.warning("the stored outcome of period %s does not decode", period)
            else:
                price, reason = found.price, found.reason
                if shown not in _UNFINISHED:
                    shown = found.status
        out.append(PeriodRow(str(period), shown, price, reason, bool(settled)))
    return out


def database_ok(store: Store) -> bool:
    """Whether the database answers a query."""
    return bool(store._read("SELECT 1")[0][0] == 1)


# -- the monitor


@dataclass
class PeerState:
    """A peer as the last probe of its ``/healthz`` saw it."""

    up: bool = False
    last_seen: float | None = None  # Unix time of the last 200
    last_error: str = "not asked yet"


@dataclass
class Window:
    """What was counted in one period-long window, held until the window has ended."""

    counts: collections.Counter[tuple[str, ...]] = field(default_factory=collections.Counter)
    queue_peak: int = 0


@dataclass(frozen=True)
class Released:
    """The last window whose counts were published."""

    start: dt.datetime
    end: dt.datetime
    refusals: dict[str, int]
    queue_peak: int


class _StoreCollector(Collector):
    """The store's numbers, from the last reading (taken by :meth:`Monitor.refresh`)."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterable[Metric]:
        m = self.monitor
        up = GaugeMetricFamily("sealgrid_database_up",
                               "1 if the last read of this server's database succeeded")
        up.add_metric([], 1.0 if m.view is not None else 0.0)
        yield up
        down = getattr(m.server, "peers_down", None)
        if callable(down):
            beats = GaugeMetricFamily(
                "sealgrid_peer_heartbeat_up", "1 unless the peer has been silent to this"
                " server's heartbeats for longer than its limit", labels=["peer"])
            silent = set(down())
            for j in sorted(m.peers):
                beats.add_metric([str(j)], 0.0 if j in silent else 1.0)
            yield beats
        view = m.view
        if view is None:
            return
        periods = GaugeMetricFamily(
            "sealgrid_periods", "Periods whose gate has closed, by status on this server",
            labels=["status"])
        for status in sorted({"closed", "agreed", "cleared", "no_trade", "failed",
                              *view.periods}):
            periods.add_metric([status], float(view.periods.get(status, 0)))
        yield periods
        yield GaugeMetricFamily("sealgrid_periods_settled", "Periods settled on this server",
                                value=float(view.settled))
        yield GaugeMetricFamily(
            "sealgrid_periods_awaiting_settlement",
            "Finished periods not settled yet (normal until their reading deadline)",
            value=float(view.awaiting_settlement))
        yield GaugeMetricFamily(
            "sealgrid_bids_in_closed_periods",
            "Bids stored for periods whose gate has closed (as in GET /v1/info)",
            value=float(view.bids_in_closed_periods))


def _name(key: tuple[str, ...]) -> str:
    """A held count's key as the database names it (``request_counts.name``)."""
    return json.dumps(list(key), separators=(",", ":"))


def _key(name: str) -> tuple[str, ...]:
    """A stored count's key (``request_counts.name``); empty for one this sealgrid did not
    write."""
    try:
        return tuple(str(part) for part in json.loads(name))
    except (ValueError, TypeError):
        return ()


def _kind(key: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """Which counter of :data:`COUNTED` a held count's key adds to (``""``: none), and its
    label values."""
    if not key:
        return "", ()
    if key[0] == "bid":
        kind = {"received": "received", "accepted": "accepted"}.get(key[1], "bid_refused")
        return kind, key[2:]
    return key[0], key[1:]


def _refusals(counts: Iterable[tuple[tuple[str, ...], int]]) -> collections.Counter[str]:
    """Refusals by reason, from held counts' keys and numbers."""
    out: collections.Counter[str] = collections.Counter()
    for key, n in counts:
        kind, labels = _kind(key)
        if kind == "refused":
            out[labels[1]] += n
    return out


def _stored(counts: dict[str, int]) -> list[tuple[tuple[str, ...], int]]:
    """Stored counts (``request_counts``) as held counts' keys and numbers."""
    return [(_key(name), n) for name, n in counts.items()]


class _SharedCounts(Collector):
    """With several intake workers: the request counters, every worker's summed in the
    database, as last read (:meth:`Monitor.counts`)."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterable[Metric]:
        found = self.monitor.shared_counts
        if found is None:  # never read: no number rather than a zero that would fall back
            return
        total = found[0]
        values: dict[tuple[str, tuple[str, ...]], float] = {
            ("received", ()): 0.0, ("accepted", ()): 0.0}  # unlabelled: there from the start
        for key, n in _stored(total):
            kind, labels = _kind(key)
            if kind in COUNTED and len(labels) == len(COUNTED[kind][2]):
                values[kind, labels] = values.get((kind, labels), 0.0) + n
        for kind, (metric, doc, names) in COUNTED.items():
            family = CounterMetricFamily(metric, doc, labels=names)
            for (k, values_of), value in sorted(values.items()):
                if k == kind:
                    family.add_metric(list(values_of), value)
            yield family


class Monitor:
    """The metrics of one server and what its status page shows."""

    def __init__(self, server: Server, *, probe_seconds: float = PROBE_SECONDS) -> None:
        self.server = server
        self.probe_seconds = probe_seconds
        self.registry = CollectorRegistry()
        r = self.registry
        #: several intake workers of one server: the request counts are every worker's, summed
        #: in the database (:class:`_SharedCounts`), not this process's own
        self.shared = bool(getattr(server, "shared", False))
        own = None if self.shared else r
        self.requests = Counter(*COUNTED["req"], registry=own)
        self.refusals = Counter(*COUNTED["refused"], registry=own)
        self.bids_received = Counter(*COUNTED["received"], registry=own)
        self.bids_accepted = Counter(*COUNTED["accepted"], registry=own)
        self.bids_refused = Counter(*COUNTED["bid_refused"], registry=own)
        self._counters = {"req": self.requests, "refused": self.refusals,
                          "received": self.bids_received, "accepted": self.bids_accepted,
                          "bid_refused": self.bids_refused}
        self.released_at = Gauge(
            "sealgrid_counts_published_until_timestamp_seconds",
            "The period boundary up to which request counts are published", registry=r)
        self.writer_peak = Gauge(
            "sealgrid_writer_queue_peak", "Most records waiting for the database writer at"
            " once in the last published window", registry=r)
        self.writer_stalled = Gauge(
            "sealgrid_writer_queue_stalled_seconds", "How long records have been waiting for"
            f" the database writer without a pause, once over {STALL_SECONDS:g} s (else 0)",
            registry=r)
        self.finish_seconds = Histogram(
            "sealgrid_period_finish_seconds", "Finishing a closed period (agreement on the bid"
            " set, clearing, storing), by the stored status", ["status"], buckets=BUCKETS,
            registry=r)
        self.clearing_seconds = Histogram(
            "sealgrid_clearing_seconds", "The secure clearing (MPC) of a period, by outcome",
            ["status"], buckets=BUCKETS, registry=r)
        self.settlement_seconds = Histogram(
            "sealgrid_settlement_seconds", "Settling a period (MPC), by result", ["result"],
            buckets=BUCKETS, registry=r)
        self.peer_up = Gauge("sealgrid_peer_up", "1 if the peer's /healthz answered 200 at the"
                             " last probe", ["peer"], registry=r)
        self.peer_seen = Gauge("sealgrid_peer_last_seen_timestamp_seconds", "When the peer's"
                               " /healthz last answered 200", ["peer"], registry=r)
        info = Gauge("sealgrid_server_info", "This server's party index and the number of"
                     " servers", ["party", "servers"], registry=r)
        info.labels(str(server.cfg.party), str(len(server.cfg.servers))).set(1)
        r.register(_StoreCollector(self))
        if self.shared:
            r.register(_SharedCounts(self))

        self.peers = {j: PeerState() for j in range(len(server.cfg.servers))
                      if j != server.cfg.party}
        for j in self.peers:
            self.peer_up.labels(str(j)).set(0)
        self.view: StoreView | None = None
        self._cache: dict[str, tuple[float, Any]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._held: dict[int, Window] = {}
        self._published = self._window()
        #: with several workers: ended windows' counts not in the database yet, by the
        #: window's period name (:meth:`save`); every worker's sums as last read
        self._unsaved: dict[str, collections.Counter[str]] = {}
        self._folded = self._published
        self._save_failing = False
        self._saving: asyncio.Task[None] | None = None  # several workers: the save under way
        self._peaks: dict[int, int] = {}  # several workers: the writer queue's, by window
        self._counts_until = -1  # several workers: the settled window of the last reading
        self.shared_counts: tuple[dict[str, int], dict[str, int]] | None = None
        self.released: Released | None = None
        self.refusals_total: collections.Counter[str] = collections.Counter()
        self._busy_since: float | None = None
        self._wrap_server()

    # -- windows of held counts

    def _window(self, at: dt.datetime | None = None) -> int:
        seconds = self.server.schedule.period_seconds
        at = self.server.clock() if at is None else at
        return int((at - EPOCH).total_seconds() // seconds)

    def _start(self, window: int) -> dt.datetime:
        return EPOCH + dt.timedelta(seconds=window * self.server.schedule.period_seconds)

    def count(self, route: str, method: str, code: int, reason: str | None) -> None:
        """Hold one answered request until its window has ended."""
        held = self._held.setdefault(self._window(), Window()).counts
        held["req", route, method, str(code)] += 1
        if reason is not None:
            held["refused", route, reason] += 1
        if route == "/v1/bids" and method == "POST":
            held["bid", "received"] += 1
            if code in (200, 201):
                held["bid", "accepted"] += 1
            elif reason is not None:
                held["bid", "refused", reason] += 1

    def release(self) -> None:
        """Publish the counts of every window that has ended (at a period boundary)."""
        now = self._window()
        if now <= self._published:
            return
        ended = {w: self._held.pop(w) for w in sorted(self._held) if w < now}
        for w, window in ended.items():
            if self.shared:  # every worker's, summed in the database (save)
                unsaved = self._unsaved.setdefault(self._period(w), collections.Counter())
                for key, n in window.counts.items():
                    unsaved[_name(key)] += n
                continue
            for key, n in window.counts.items():
                kind, labels = _kind(key)
                counter = self._counters[kind]
                (counter.labels(*labels) if labels else counter).inc(n)
            self.refusals_total.update(_refusals(window.counts.items()))
        last = ended.get(now - 1, Window())
        self.writer_peak.set(last.queue_peak)
        if self.shared:  # several workers: published up to the settled boundary (counts)
            self._peaks = {w: p for w, p in self._peaks.items() if w >= now - KEPT_WINDOWS}
            self._peaks.update({w: window.queue_peak for w, window in ended.items()})
        else:
            self.released = Released(self._start(now - 1), self._start(now),
                                     dict(_refusals(last.counts.items())), last.queue_peak)
            self.released_at.set((self._start(now) - EPOCH).total_seconds())
        self._published = now

    def _period(self, window: int) -> str:
        """The name of the period that is ``window``."""
        return self.server.schedule.period_id(self._start(window))

    def _fold_due(self) -> bool:
        """Whether this worker is the leader and a window has ended since its last fold."""
        return self.server.worker == 0 and self._published > self._folded

    def _saving_due(self) -> bool:
        """Whether :meth:`save` has anything to do."""
        return self.shared and (bool(self._unsaved) or self._fold_due())

    async def save(self) -> None:
        """With several workers: add this worker's counts of ended windows to the database's
        (kept for the next try when it cannot be written); the leader then sums the windows
        older than :data:`KEPT_WINDOWS` into one row. Runs on the database thread, from the
        sampler only (one at a time), never in a scrape's way. Cancelled meanwhile (a stop),
        the write goes on, and its counts are kept if it fails. A write that committed but
        raised (the connection lost during the commit) would be added again: counts are sums,
        not records."""
        if not self._saving_due():
            return
        unsaved, self._unsaved = self._unsaved, {}
        if unsaved:
            counts = {period: dict(c) for period, c in unsaved.items()}
            job = asyncio.ensure_future(
                self.server.db(self.server.store.add_request_counts, counts))

            def kept(done: asyncio.Future[Any]) -> None:
                if done.cancelled() or done.exception() is not None:
                    for period, c in unsaved.items():
                        self._unsaved.setdefault(period, collections.Counter()).update(c)

            job.add_done_callback(kept)
            try:
                await asyncio.shield(job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: counted again at the next try
                self._failed("the request counts could not be stored (kept, to be tried"
                             " again)", exc)
                return
        if self._fold_due():
            try:
                await self.server.db(self.server.store.fold_request_counts,
                                     self._period(self._published - KEPT_WINDOWS))
            except Exception as exc:
                self._failed("the request counts could not be summed", exc)
                return
            self._folded = self._published
        self._save_failing = False

    def _failed(self, what: str, exc: Exception) -> None:
        """Log a failed save once until one succeeds (it is tried every sample)."""
        if not self._save_failing:
            log.warning("%s: %s", what, exc)
        self._save_failing = True

    async def counts(self) -> None:
        """With several workers: read every worker's summed counts of the windows that have
        settled (ended :data:`SETTLE_SECONDS` ago, or a quarter period) into
        :attr:`shared_counts`, :attr:`refusals_total` and :attr:`released`, on the read
        thread, at most once a second and afresh when a window settles; the last reading is
        kept when the database cannot be read."""
        if not self.shared:
            return
        settle = min(SETTLE_SECONDS, self.server.schedule.period_seconds / 4)
        settled = min(self._published,
                      self._window(self.server.clock() - dt.timedelta(seconds=settle)))
        until, window = self._period(settled), self._period(settled - 1)
        what = f"counts {until}"
        for stale in [w for w in self._cache if w.startswith("counts ") and w != what]:
            del self._cache[stale]  # an earlier window's reading (and its lock) go
            self._locks.pop(stale, None)
        found = await self._read(what, lambda store: store.request_counts(until, window))
        if found is None or settled < self._counts_until:  # none, or older than one shown
            return
        self._counts_until = settled
        self.shared_counts = found
        total, last = found
        self.refusals_total = _refusals(_stored(total))
        self.released_at.set((self._start(settled) - EPOCH).total_seconds())
        self.released = Released(self._start(settled - 1), self._start(settled),
                                 dict(_refusals(_stored(last))), self._peaks.get(settled - 1, 0))

    def sample_queue(self) -> None:
        """Note the writer queue's depth (its peak per window; how long it has been busy)."""
        pending = int(getattr(self.server, "_pending", 0))
        window = self._held.setdefault(self._window(), Window())
        window.queue_peak = max(window.queue_peak, pending)
        now = time.monotonic()
        if pending <= 0:
            self._busy_since = None
        elif self._busy_since is None:
            self._busy_since = now
        busy = 0.0 if self._busy_since is None else now - self._busy_since
        self.writer_stalled.set(busy if busy >= STALL_SECONDS else 0.0)

    # -- timing the server's work

    def _wrap_server(self) -> None:
        """Time the server's finishing, clearing and settling of periods by wrapping its
        methods on this instance (its class is untouched; a method it lacks is not timed)."""
        server = self.server

        def wrap(name: str, timed: Callable[..., Any]) -> None:
            inner = getattr(server, name, None)
            if inner is None:
                log.warning("the server has no %s: it is not timed", name)
                return

            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                return await timed(inner, *args, **kwargs)

            setattr(server, name, wrapper)

        async def stored(period: str) -> Any:
            try:
                return await server.db(server.store.period, period)
            except Exception:  # the server's own read will tell; here it is only not timed
                return None

        async def finish(inner: Callable[..., Awaitable[Any]], period: str, *args: Any,
                         **kwargs: Any) -> Any:
            before = await stored(period)
            t0 = time.monotonic()
            try:
                out = await inner(period, *args, **kwargs)
            except Exception:
                self.finish_seconds.labels("attempt_failed").observe(time.monotonic() - t0)
                raise
            seconds = time.monotonic() - t0
            if before is None or str(before.status) in _UNFINISHED:
                after = await stored(period)
                if after is not None and str(after.status) not in _UNFINISHED:
                    label = _status_label(str(after.status), '"no_trade"' in after.outcome)
                    self.finish_seconds.labels(label).observe(seconds)
            return out

        async def clear(inner: Callable[..., Awaitable[Any]], *args: Any,
                        **kwargs: Any) -> Any:
            t0 = time.monotonic()
            status = "error"
            try:
                result = await inner(*args, **kwargs)
                public = result[1] if isinstance(result, tuple) and len(result) > 1 else None
                status = str(getattr(public, "status", "unknown"))
                return result
            finally:
                self.clearing_seconds.labels(status).observe(time.monotonic() - t0)

        async def settle(inner: Callable[..., Awaitable[Any]], *args: Any,
                         **kwargs: Any) -> Any:
            t0 = time.monotonic()
            result = "error"
            try:
                out = await inner(*args, **kwargs)
                result = "settled"
                return out
            finally:
                self.settlement_seconds.labels(result).observe(time.monotonic() - t0)

        wrap("_finish", finish)
        wrap("_clear", clear)
        wrap("_settle", settle)

    # -- the store, the database and the peers

    async def _read(self, what: str, fn: Callable[[Store], T]) -> T | None:
        """``fn(store)`` on the server's read thread, at most once a second per ``what``
        (callers in between, and those waiting meanwhile, get the last result), so that
        polling these routes cannot load the database; None when the database cannot be
        read. The read thread has its own connection: a long write, such as a period's
        seal, does not make the database look unreadable."""
        async with self._locks.setdefault(what, asyncio.Lock()):
            at, found = self._cache.get(what, (-1e9, None))
            if time.monotonic() - at < STORE_REFRESH_SECONDS:
                return cast("T | None", found)
            try:
                found = await asyncio.wait_for(self.server.read(fn), DB_TIMEOUT_SECONDS)
            except Exception as exc:  # any database error, or its thread is gone
                log.warning("the database could not be read (%s): %s", what, exc)
                found = None
            self._cache[what] = (time.monotonic(), found)
            return cast("T | None", found)

    def forget(self) -> None:
        """Drop the last reads of the database (the next request reads it again)."""
        self._cache.clear()

    async def refresh(self) -> StoreView | None:
        """The store's numbers for the metrics; None, and ``sealgrid_database_up`` 0, when
        the database cannot be read."""
        self.view = await self._read("metrics", store_view)
        return self.view

    async def database_ok(self) -> bool:
        """Whether the database answers (read at most once a second)."""
        return bool(await self._read("health", database_ok))

    async def recent_periods(self) -> list[PeriodRow] | None:
        """The status page's periods, or None when the database cannot be read."""
        return await self._read("status", recent_periods)

    async def probe(self, peer: int) -> None:
        """Ask one peer's ``/healthz`` over the server's mutual-TLS session."""
        session: aiohttp.ClientSession | None = getattr(self.server, "_session", None)
        state = self.peers[peer]
        if session is None or session.closed:
            return
        url = f"{self.server.cfg.servers[peer]}/healthz"
        try:
            async with session.get(
                url, server_hostname=server_tls_name(peer),
                timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_SECONDS),
            ) as resp:
                await resp.read()
                state.up = resp.status == 200
                state.last_error = "" if state.up else f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            state.up, state.last_error = False, type(exc).__name__
        if state.up:
            state.last_seen = time.time()
            self.peer_seen.labels(str(peer)).set(state.last_seen)
        self.peer_up.labels(str(peer)).set(1 if state.up else 0)

    async def _sampler(self) -> None:
        while True:  # a save under way is left to end when this stops (background waits)
            self.sample_queue()
            self.release()
            if (self._saving is None or self._saving.done()) and self._saving_due():
                self._saving = asyncio.create_task(self.save())  # one at a time
            await asyncio.sleep(SAMPLE_SECONDS)

    async def _prober(self) -> None:
        while True:
            await asyncio.gather(*(self.probe(j) for j in self.peers))
            await asyncio.sleep(self.probe_seconds)

    async def background(self, app: web.Application) -> AsyncIterator[None]:
        """The application's cleanup context: sample the queue and probe the peers while
        the application runs."""
        tasks = [asyncio.create_task(self._sampler()), asyncio.create_task(self._prober())]
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.shared:  # the windows that have ended, not lost with this worker
            self.release()
            try:
                async with asyncio.timeout(STOP_SAVE_SECONDS):
                    if self._saving is not None:
                        await asyncio.gather(self._saving, return_exceptions=True)
                    await self.save()
            except Exception as exc:
                log.warning("the request counts of ended windows were not stored at stop: %r",
                            exc)

    # -- what a scrape, a health check and the status page read

    async def exposition(self) -> bytes:
        """The Prometheus text of this server's metrics, now."""
        self.release()
        self.sample_queue()
        await self.counts()
        await self.refresh()
        return bytes(generate_latest(self.registry))

    async def health(self) -> tuple[int, dict[str, Any]]:
        """``GET /healthz``'s status and body."""
        ok = await self.database_ok()
        body = {
            "status": "ok" if ok else "unavailable",
            "party": self.server.cfg.party,
            "database": ok,
            "peers": {str(j): self.peer_json(s) for j, s in self.peers.items()},
        }
        return (200 if ok else 503), body

    @staticmethod
    def peer_json(state: PeerState) -> dict[str, Any]:
        """A peer's state as JSON."""
        seen = state.last_seen
        return {
            "up": state.up,
            "last_seen": None if seen is None else dt.datetime.fromtimestamp(seen, dt.UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "error": state.last_error,
        }


# -- the middleware and the routes

MONITOR_KEY: web.AppKey[Monitor] = web.AppKey("monitor", Monitor)
_MONITORS: weakref.WeakKeyDictionary[Server, Monitor] = weakref.WeakKeyDictionary()


def monitor_of(server: Server) -> Monitor:
    """The one :class:`Monitor` of ``server`` (made on first use)."""
    found = _MONITORS.get(server)
    if found is None:
        found = _MONITORS[server] = Monitor(server)
    return found


def _route(request: web.Request) -> str:
    """The route's template (``/v1/periods/{period}``), never the raw path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _refusal(response: web.StreamResponse) -> str | None:
    """The ``error`` of a refusal's JSON body (``http_<status>`` when it has none)."""
    if response.status < 400:
        return None
    body = getattr(response, "body", None)
    if isinstance(body, bytes | bytearray) and response.content_type == "application/json":
        try:
            found = json.loads(body)
        except ValueError:
            found = None
        error = found.get("error") if isinstance(found, dict) else None
        if isinstance(error, str) and _REASON.fullmatch(error):
            return error
    return f"http_{response.status}"


def middleware(monitor: Monitor) -> Callable[..., Awaitable[web.StreamResponse]]:
    """An aiohttp middleware that counts every answer in ``monitor``."""

    @web.middleware
    async def count(request: web.Request, handler: Any) -> web.StreamResponse:
        route = _route(request)
        method = request.method if request.method in _METHODS else "other"
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            monitor.count(route, method, exc.status, f"http_{exc.status}"
                          if exc.status >= 400 else None)
            raise
        except asyncio.CancelledError:
            raise
        except Exception:
            monitor.count(route, method, 500, "internal_error")
            raise
        monitor.count(route, method, response.status, _refusal(response))
        return response

    return count


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: this server's metrics in the Prometheus text format."""
    body = await request.app[MONITOR_KEY].exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST,
                                            "Cache-Control": "no-store"})


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: 200 when the database answers, else 503; the peers as last seen."""
    status, body = await request.app[MONITOR_KEY].health()
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})


def install(app: web.Application, server: Server, *,
            probe_seconds: float | None = None) -> None:
    """Add the counting middleware (outermost, so it sees every other middleware's answers
    too) and ``GET /metrics`` and ``GET /healthz`` to ``server``'s app (``GET /status``,
    :mod:`sealgrid.service.status`, reads this module's monitor; ``api.build_app`` adds it).

    Installing twice changes nothing but ``probe_seconds`` (how often the peers' ``/healthz``
    is asked; :data:`PROBE_SECONDS` by default) when it is given.
    """
    monitor = monitor_of(server)
    if probe_seconds is not None:
        monitor.probe_seconds = probe_seconds
    if MONITOR_KEY in app:
        return
    app[MONITOR_KEY] = monitor
    app.middlewares.insert(0, middleware(monitor))
    app.cleanup_ctx.append(monitor.background)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)




# -- structured logs


class JsonFormatter(logging.Formatter):
    """One JSON object per log line: ``time`` (UTC, ISO 8601 with ``Z``), ``level``,
    ``logger``, ``message`` and, when there is one, ``exception``."""

    def format(self, record: logging.LogRecord) -> str:
        """Format one record as a line of JSON (newlines inside it are escaped)."""
        when = dt.datetime.fromtimestamp(record.created, dt.UTC)
        out: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out)
