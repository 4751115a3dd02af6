"""One computation server: intake, storage, gate closure, outputs; assumes one asyncio loop.

A thin shell around :class:`~sealgrid.service.intake.Intake`: it adds the clock, randomness,
durable storage (a receipt leaves only after its bid is committed), the peers, and the
secure clearing (:mod:`sealgrid.service.clearing`). The HTTP routes are in
:mod:`sealgrid.service.api`.

Gate closure of a period, on every server alike:

1. the intake closes the gate (its bid set is frozen) and the server records ``closed``;
2. it fetches each peer's signed :class:`~sealgrid.service.wire.BidSetDigest` (a peer
   answers only once its own gate has closed) and, from a peer whose digest differs from its
   own, the whole :class:`~sealgrid.service.wire.BidSet`, and takes the intersection of all
   sets: every server gets
   the same agreed set, and a bid that reached only some servers is excluded everywhere and
   its household is told so when it asks for its result; the server records ``agreed``;
3. it hands its payloads of the agreed bids, sorted by pseudonym, to the secure clearing and
   records ``cleared`` with the outputs, or ``failed`` with the reason, and a signed
   :class:`~sealgrid.service.wire.PeriodStatement`.

A restarted server reloads the intake's state and resumes every unfinished period.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import logging
import os
import shutil
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp

from sealgrid.mechanism.bids import Reason
from sealgrid.protocol.billing import ClaimLayout
from sealgrid.protocol.certs import write_party_trust
from sealgrid.service import bills, clearing, lifecycle, settlement, wire
from sealgrid.service.config import ServerConfig
from sealgrid.service.connector import LoopConnector
from sealgrid.service.intake import (
    CHALLENGE_UNKNOWN,
    ENVELOPE_BYTES,
    GATE_CLOSED,
    SAME_BID,
    Accepted,
    ChallengeIssued,
    GateClosed,
    Granted,
    Intake,
    IssueChallenge,
    IssuePseudonym,
    Rejected,
    SubmitBid,
    Tick,
    has_token,
)
from sealgrid.service.keys import (
    DEFAULT_SUPPLIERS,
    Registry,
    check_trust_file,
    load_signing_key,
    server_tls_name,
    server_trust,
)
from sealgrid.service.schedule import BillingCalendar, Clock, Schedule, iso, utc_now
from sealgrid.service.storage import SegmentRecord, StorageError, Store, Stored
from sealgrid.service.tokens import key_digest
from sealgrid.service.voprf import Issuer
from sealgrid.service.wire import (
    AuthRequest,
    BidSet,
    BidSetDigest,
    Enrolled,
    Enrolment,
    IssuerKey,
    MarketInfo,
    MeterReading,
    Outcome,
    OutputShares,
    PendingSet,
    PeriodStatement,
    PriceGridInfo,
    PseudonymousBid,
    RateLimit,
    ReadingReceipt,
    Receipt,
    SegmentPlan,
    SettlementSet,
    TokenGrant,
    TokenRequest,
)

log = logging.getLogger("sealgrid.server")

#: How often a server asks each peer for a heartbeat, and after how long without an answer
#: the peer counts as down (a dead or frozen peer is noticed within about 2 s).
HEARTBEAT_SECONDS = 0.5
PEER_DOWN_SECONDS = 1.5
#: How many of its latest statements a server answers from memory.
STATEMENTS_KEPT = 64
#: How long a finished period's seal waits before its first step: the peers are most likely
#: still storing their statements of the period then, and on shared cores the seal's steps
#: would take CPU from them (a stop seals at once)
SEAL_DELAY_SECONDS = 2.0
#: How long a worker that found no stored issuer key for a bid's open period answers the
#: next bids of that period from that finding (forged ones: one read each at most so often).
KEYLESS_SECONDS = 1.0
#: Bid sets kept in memory, the latest periods' (each lists a period's pseudonyms).
BIDSETS_KEPT = 4

ROLES = ("household", "supplier", "operator")


M = TypeVar("M")
T = TypeVar("T")


@dataclass
class PeriodOutputs:
    """What a cleared period leaves a server to serve: ``rows`` by role and subject
    (suppliers', operators', the settlement's) and ``households``, each bid slot's
    ``(pseudonym, output shares)`` in pseudonym order (stored in blocks,
    :data:`~sealgrid.service.storage.OUTPUT_BLOCK`)."""

    rows: list[tuple[str, str, bytes]] = field(default_factory=list)
    households: list[tuple[bytes, bytes]] = field(default_factory=list)


@dataclass
class OwnSet:
    """A server's bid set of a closed period (final: its gate has passed), as the gate here
    and its peers use it: the set, its signed digest, and the set signed once a peer asks."""

    bidset: BidSet  # unsigned
    digest: BidSetDigest  # signed
    #: the segments validated here, as the set lists them (their members and results)
    done: tuple[SegmentRecord, ...] = ()
    signed: BidSet | None = None
    signing: asyncio.Lock = field(default_factory=asyncio.Lock)


def https_context(cert: Path, key: Path, trust: str) -> ssl.SSLContext:
    """A server's HTTPS context: its certificate and key (PEM files); a client certificate is
    optional and must be one of ``trust`` (PEM certificates) when shown."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=trust)
    ctx.load_cert_chain(cert, key)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    # no resumption: a connection resumed would tie a household's bid to the connection that
    # fetched its tokens (docs/privacy.md), and no client of sealgrid resumes, so the two
    # tickets a TLS 1.3 handshake would make are CPU for nothing. TLS 1.3 only: TLS 1.2 would
    # resume from the server's session cache by session id
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.num_tickets = 0
    ctx.options |= ssl.OP_NO_TICKET
    return ctx


class Server:
    """Computation server ``cfg.party``: everything but the HTTP routes."""

    def __init__(self, cfg: ServerConfig, clock: Clock = utc_now, *, worker: int = 0,
                 workers: int = 1) -> None:
        self.cfg = cfg
        self.clock = clock
        #: several intake workers of this server share one PostgreSQL database; worker 0
        #: (the leader) also closes gates, clears, settles and talks to the peers
        self.worker, self.workers = worker, workers
        self.shared = workers > 1
        if self.shared and not cfg.database.startswith(("postgresql://", "postgres://")):
            raise StorageError("several workers need a PostgreSQL database (database ="
                               " 'postgresql://…' in [server]); SQLite serves one process")
        self.registry = Registry.load(cfg.registry)
        self.key = load_signing_key(cfg.signing_key)
        m = cfg.market
        self.schedule = Schedule(m.period_seconds, m.horizon_periods)
        self.market = m.market(tuple(sorted(self.registry.suppliers)) or DEFAULT_SUPPLIERS)
        self.intake = Intake(
            cfg.party,
            self.key,
            self.registry.participant_keys(),  # households, and suppliers bidding as "@ID"
            self.schedule,
            m.limits,
            clearing.payload_checker(cfg.party, self.market),
            challenge_key=_challenge_key(self.key) if self.shared else None,
        )
        self.store = Store(cfg.database)
        self.store.guard_closed = self.shared
        self._counts: dict[str, int] = self.store.closed_counts() if self.shared else {}
        bids, parts, closed = self.store.load_state()
        self.intake.restore(bids, parts, closed)
        for period, secret in self.store.issuers().items():
            self._install_issuer(period, secret)
        self._issuer_locks: dict[str, asyncio.Lock] = {}
        #: open periods for which no worker had stored a key when a bid last asked (when)
        self._keyless: dict[str, float] = {}
        self._issuer_keys: dict[str, IssuerKey] = {}
        self._db = ThreadPoolExecutor(1, thread_name_prefix=f"db{cfg.party}")
        #: reads that must not wait behind a long write (households' outputs, the health
        #: check and metrics): a connection of their own on a thread of their own, opened
        #: there on first use (:meth:`read`)
        self._reads = ThreadPoolExecutor(1, thread_name_prefix=f"dbread{cfg.party}")
        self._reader: Store | None = None
        self._queue: asyncio.Queue[
            tuple[Accepted | Granted, asyncio.Future[Rejected | None]]] = asyncio.Queue()
        self._pending = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._gate_lock = asyncio.Lock()
        self.lifecycle = lifecycle.Lifecycle(self.schedule)
        self._peer_seen: dict[int, float] = {}  # peer → loop time of its last heartbeat
        self._peer_down: set[int] = set()
        self._settle_lock = asyncio.Lock()
        b = cfg.billing
        self.calendar = BillingCalendar(m.period_seconds, b.cycle_periods,
                                        b.reading_grace_periods)
        self.claim_layout = ClaimLayout.of(self.market.max_quantity_wh)
        self._settle_tried: dict[str, float] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._sealing: set[asyncio.Task[None]] = set()  # seals of finished periods
        self._stopping = asyncio.Event()
        self._handed: set[str] = set()  # periods the leader found in the shared database
        self._taken = {"bids": 0, "token requests": 0}
        self._shared_checked = 0.0
        self._pruned_through = ""
        self._session: aiohttp.ClientSession | None = None
        #: one lock per period with segments, until its seal: its segments' validations run
        #: one at a time, and the gate's bid set waits for the one under way (they share the
        #: period's MPC ports)
        self._segment_locks: dict[str, asyncio.Lock] = {}
        #: an MPC party started ahead of the next gate or segment (the ticker refills it
        #: while no party runs and no gate is due within a second)
        self._warm = clearing.WarmParty(cfg.data_dir / "mpc" / "started-ahead.log")
        #: the statements this server stored lately, by period, as stored: answered without
        #: the database, whose one thread may be busy sealing the very period for a second
        self._statements: OrderedDict[str, PeriodStatement] = OrderedDict()
        #: periods whose readings this process closed (Store.close_readings), the latest
        self._readings_closed: OrderedDict[str, None] = OrderedDict()
        self._bidsets: OrderedDict[str, OwnSet] = OrderedDict()  # final after the gate
        self._bidset_locks: dict[str, asyncio.Lock] = {}

    # -- life cycle

    async def start(self) -> None:
        """Start the background tasks (writer, ticker) and resume unfinished periods."""
        peer_ctx = ssl.create_default_context(cadata=self._pinned_trust())
        peer_ctx.load_cert_chain(self.cfg.tls_cert, self.cfg.tls_key)
        # MPyC's links trust exactly the registry's pinned MPC certificates, too
        write_party_trust(self.cfg.data_dir, self.registry.mpc_certs)
        self._session = aiohttp.ClientSession(
            connector=LoopConnector(peer_ctx),  # each connection owned by the loop alone
            timeout=aiohttp.ClientTimeout(total=10),
        )
        self._tasks.append(asyncio.create_task(self._writer()))
        if self.worker != 0:  # an intake worker: no gates, no clearing, no peers
            self._tasks.append(asyncio.create_task(self._worker_ticker()))
            return
        self._tasks.append(asyncio.create_task(self._ticker()))
        self._tasks.append(asyncio.create_task(self._heartbeats()))
        if self.cfg.party == 0 and self.streaming:
            self._tasks.append(asyncio.create_task(self._segmenter()))
        for period in self.store.unfinished():  # resumed: retried until their deadline
            self.finish_period(period)
        for period in self.store.unsealed():  # stopped between the statement and the seal
            self._seal_soon(period)
        self._tasks.append(asyncio.create_task(self._remove_workdirs()))

    async def stop(self) -> None:
        """Stop the background tasks (a seal under way finishes first, every step of it, and
        so does one that a statement stored meanwhile starts: a database copied after a stop
        keeps no order of arrival) and close the database."""
        self._stopping.set()  # a seal waiting for its peers' statements starts now
        await asyncio.gather(*self._sealing, return_exceptions=True)
        if self.shared:  # counts only: what this worker took while it ran
            log.info("worker %d of %d stored %d bids and %d token requests", self.worker,
                     self.workers, self._taken["bids"], self._taken["token requests"])
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # a clearing that stored its statement while the seals above ran started one more
        await asyncio.gather(*self._sealing, return_exceptions=True)
        await self._warm.close()
        if self._session is not None:
            await self._session.close()
        self._db.shutdown(wait=True)
        self._reads.shutdown(wait=True)
        self.store.close()
        if self._reader is not None:
            self._reader.close()

    def tls_context(self) -> ssl.SSLContext:
        """Return the HTTPS server context: our certificate; peers may show theirs.

        A client certificate is accepted only if it is exactly one of the servers'
        certificates pinned in the registry (there is no CA); households show none.
        """
        return https_context(self.cfg.tls_cert, self.cfg.tls_key, self._pinned_trust())

    def _pinned_trust(self) -> str:
        """The servers' pinned certificates from the registry: the only TLS trust anchors.

        Raises:
            DataDirError: the registry pins none fit, or the configured trust file (``ca``,
                what this machine's clients load) holds other certificates.
        """
        trust = server_trust(self.registry)
        check_trust_file(self.registry, self.cfg.ca)
        return trust

    async def db(self, fn: Any, *args: Any) -> Any:
        """Run a storage call on the single database thread (SQLite is not shared)."""
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(store, *args)`` on the read thread, with its own connection
        (:meth:`Store.reader`): it reads what was last committed, also while the database
        thread holds a long write (a period's seal: 22 s at 100,000 bids). Only for reads
        that need no snapshot across their statements."""
        def run() -> T:
            if self._reader is None:
                self._reader = self.store.reader()
            return fn(self._reader, *args)

        return await asyncio.get_running_loop().run_in_executor(self._reads, run)

    # -- intake

    def challenge(self) -> ChallengeIssued | Rejected:
        """Issue a fresh challenge (refused while too many are outstanding)."""
        (event,) = self.intake.receive(IssueChallenge(self.clock(), os.urandom(16)))
        assert isinstance(event, ChallengeIssued | Rejected)
        return event

    async def ensure_issuer(self, period: str) -> Issuer | None:
        """Return the issuer key of an open ``period``, making and storing it on first use."""
        issuer = self.intake.issuer(period)
        if issuer is not None or self.schedule.check(period, self.clock()) is not None:
            return issuer
        lock = self._issuer_locks.setdefault(period, asyncio.Lock())
        async with lock:
            issuer = self.intake.issuer(period)
            if issuer is None:  # stored before any use; another worker's if it was first
                secret = await self.db(self.store.add_issuer, period, Issuer.generate().secret)
                issuer = self._install_issuer(period, secret)
        self._issuer_locks.pop(period, None)
        return issuer

    def _install_issuer(self, period: str, secret: bytes) -> Issuer | None:
        """Take ``period``'s stored issuer key into the intake (made here, or by another
        worker); None for one this version cannot use (an RSA key in PEM of the first token
        scheme: that period's tokens can no longer be checked)."""
        try:
            issuer = Issuer(secret)
        except ValueError as exc:
            log.warning("period %s: the stored issuer key is not a VOPRF key (%s); ignored",
                        period, exc)
            return None
        self.intake.add_issuer(period, issuer)
        return issuer

    async def issuer_key(self, period: str) -> IssuerKey | Rejected:
        """Return this server's signed issuer key for ``period``, or why it is not open."""
        why = self.schedule.check(period, self.clock())
        issuer = await self.ensure_issuer(period)
        if issuer is None or why is not None:
            return Rejected(*(why or (Reason.WRONG_PERIOD, "not taking bids")))
        cached = self._issuer_keys.get(period)
        if cached is None:
            cached = wire.sign(
                IssuerKey(self.cfg.party, period, issuer.public), self.key
            )
            self._issuer_keys[period] = cached
        return cached

    async def grant(self, raw: bytes) -> TokenGrant | Rejected:
        """Evaluate a household's blinded tokens (once per household and period), durably."""
        with contextlib.suppress(wire.WireError):  # if so, the intake refuses it with the reason
            req = wire.decode(TokenRequest, raw)
            for period in req.periods[: self.schedule.horizon]:
                await self.ensure_issuer(period)
        (event,) = self.intake.receive(IssuePseudonym(self.clock(), raw))
        if isinstance(event, Rejected):
            return event
        assert isinstance(event, Granted)
        refused = await self._store(event)
        self._taken["token requests"] += refused is None
        return refused or event.grant

    async def submit(self, raw: bytes) -> Receipt | Rejected:
        """Take one submission; return its receipt once the bid is committed, or the refusal."""
        (event,) = self.intake.receive(SubmitBid(self.clock(), raw))
        if (isinstance(event, Rejected) and event.reason is Reason.BAD_SIGNATURE and self.shared
                and await self._learn_issuer(raw)):
            (event,) = self.intake.receive(SubmitBid(self.clock(), raw))
        if isinstance(event, Rejected):
            return event
        assert isinstance(event, Accepted)
        refused = await self._store(event)
        self._taken["bids"] += refused is None
        return refused or event.receipt

    async def _learn_issuer(self, raw: bytes) -> bool:
        """Whether this worker has just taken the stored issuer key of the bid's period: another
        worker made it and issued the bid's token, and no request for the period reached this
        one before the bid (refused bids only; a single process holds every key it made)."""
        try:
            period = wire.decode(PseudonymousBid, raw).period
        except wire.WireError:
            return False
        if self.intake.issuer(period) is not None or self.schedule.check(
                period, self.clock()) is not None:  # a period not open has no key to learn
            return False
        now = time.monotonic()
        if now - self._keyless.get(period, -KEYLESS_SECONDS) < KEYLESS_SECONDS:
            return False  # looked for it just now: forged bids cost one read a second
        if await self._stored_issuer(period) is not None:
            return True
        self._keyless = {p: t for p, t in self._keyless.items()
                         if now - t < KEYLESS_SECONDS}
        self._keyless[period] = now
        return False

    async def _stored_issuer(self, period: str) -> Issuer | None:
        """Take the issuer key another worker stored for ``period`` into the intake; None if
        none is stored (only read, on the read thread: a key is made only where a token is
        asked for)."""
        secret = await self.read(lambda store, p: store.issuer(p), period)
        return None if secret is None else self._install_issuer(period, secret)

    async def _store(self, event: Accepted | Granted) -> Rejected | None:
        """Store an accepted request durably (group commit); None once committed, or why the
        database refused it (another worker stored its key first, or closed the gate)."""
        future: asyncio.Future[Rejected | None] = asyncio.get_running_loop().create_future()
        self._pending += 1
        self._drained.clear()
        await self._queue.put((event, future))
        return await future  # raises StorageError if it could not be stored

    def _until(self, expires: dt.datetime) -> str:
        """The end of the period in which a challenge expires: all a used one is kept with."""
        return self.schedule.period_id(self.schedule.start_of(expires) + self.schedule.length)

    def _stored(self, event: Accepted | Granted) -> Stored:
        if isinstance(event, Accepted):
            return Stored(bids=(event.bid,))
        if not self.shared or event.expires is None:
            return Stored(participations=event.participations)
        return Stored(participations=event.participations, nonce=event.nonce,
                      until=self._until(event.expires))

    def _conflict(self, event: Accepted | Granted, why: str) -> Rejected:
        """Why the database refused an accepted request (runs on the database thread)."""
        if isinstance(event, Accepted):
            bid = event.bid
            if why == "closed":
                return Rejected(Reason.LATE, GATE_CLOSED)
            stored = self.store.stored_bid(bid.period, bid.pseudonym)
            if stored is not None and wire.sha256(stored) == wire.sha256(bid.bid):
                return Rejected(Reason.REPLAYED, SAME_BID)
            return Rejected(Reason.DUPLICATE_PSEUDONYM)
        if event.nonce and self.store.challenge_used(event.nonce):  # the same request again
            return Rejected(Reason.REPLAYED, CHALLENGE_UNKNOWN)
        for part in event.participations:
            if self.store.participates(part.period, part.household):
                return Rejected(Reason.TOO_FREQUENT, has_token(part.period))
        return Rejected(Reason.REPLAYED, CHALLENGE_UNKNOWN)

    def _add_batch(self, events: list[Accepted | Granted]) -> list[Rejected | None]:
        """Store a batch (database thread); per event None or the refusal."""
        outcome = self.store.add_batch([self._stored(e) for e in events])
        return [None if why is None else self._conflict(e, why)
                for e, why in zip(events, outcome, strict=True)]

    async def _writer(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < 2000:
                batch.append(self._queue.get_nowait())
            events = [e for e, _ in batch]
            try:
                refusals = await loop.run_in_executor(self._db, self._add_batch, events)
            except StorageError as exc:
                log.error("storing %d records failed: %s", len(batch), exc)
                for event, future in batch:
                    self.intake.forget(event)
                    future.set_exception(exc)
            else:
                for (event, future), refusal in zip(batch, refusals, strict=True):
                    if refusal is not None:  # another worker was first: not ours to keep
                        self.intake.forget(event)
                    future.set_result(refusal)
            self._pending -= len(batch)
            if self._pending == 0:
                self._drained.set()

    async def _worker_ticker(self) -> None:
        """An intake worker's clock: forget expired challenges; refresh the public counts
        from the database (the leader closes the gates)."""
        while True:
            now = self.clock()
            self.intake.receive(Tick(now))  # gates closed here are the leader's to finish
            try:
                self._counts = await self.db(self.store.closed_counts)
            except Exception as exc:  # keep serving; the counts are a little older
                log.warning("could not read the public counts: %s", exc)
            await asyncio.sleep(min(2.0, self.schedule.period_seconds / 8))

    async def _ticker(self) -> None:
        interval = min(0.25, self.schedule.period_seconds / 8)
        while True:
            now = self.clock()
            for event in self.intake.receive(Tick(now)):
                if isinstance(event, GateClosed):
                    self.finish_period(event.period)
            if self.shared:
                await self._shared_gates(now)
            self._lifecycle_do(self.lifecycle.receive(lifecycle.Tick(now)))
            if not self._settle_lock.locked():
                self._tasks.append(asyncio.create_task(self.settle_due()))
            if not self._warm.ready and self.schedule.seconds_to_next_gate(now) > 1.0:
                try:
                    await self._warm.refill()
                except OSError as exc:  # the gate then starts its party itself
                    log.warning("could not start an MPC party ahead: %s", exc)
            # wake at the next gate itself, not up to an interval after it: every server's
            # clearing then starts at once, and the MPC links do not wait for the last one
            to_gate = self.schedule.seconds_to_next_gate(self.clock())
            await asyncio.sleep(min(interval, to_gate + 0.002))

    async def _shared_gates(self, now: dt.datetime) -> None:
        """With several workers the leader may have seen nothing of a period: finish every
        period whose gate has passed and that has an issuer key (any worker issued a token
        for it) but no record yet; once per period, forget used challenges that expired."""
        if now.timestamp() - self._shared_checked < 1.0:
            return
        self._shared_checked = now.timestamp()
        try:
            periods = await self.db(self.store.unrecorded_issuer_periods)
            self._counts = await self.db(self.store.closed_counts)
            current = self.schedule.period_id(self.schedule.start_of(now))
            if current != self._pruned_through:
                await self.db(self.store.prune_challenges, current)
                self._pruned_through = current
        except StorageError as exc:
            log.warning("could not read the workers' periods: %s", exc)
            return
        for period in periods:
            try:
                passed = self.schedule.gate_closure(self.schedule.parse_period(period)) <= now
            except ValueError:
                continue
            if passed and period not in self._handed:
                self._handed.add(period)
                self.finish_period(period)

    # -- gate closure

    async def own_set(self, period: str) -> OwnSet | None:
        """Return this server's bid set of ``period`` with its signed digest, or None before
        its gate; with it, the segments of the period validated here (after the one under
        way, if any). Made once: the gate here and each peer's ask for it at the same
        moment, and a city's set is 100,000 pseudonyms."""
        if not self.intake.close_due(period, self.clock()):
            return None
        kept = self._bidsets.get(period)
        if kept is not None:
            return kept
        lock = self._bidset_locks.setdefault(period, asyncio.Lock())
        async with lock:  # the three ask at once at the gate: one of them makes it
            kept = self._bidsets.get(period)
            if kept is not None:
                return kept
            made = await self._make_bidset(period)
        if made is not None:
            self._bidset_locks.pop(period, None)
        return made

    async def own_digest(self, period: str) -> BidSetDigest | None:
        """This server's signed :class:`BidSetDigest` of ``period`` (None before its gate)."""
        own = await self.own_set(period)
        return None if own is None else own.digest

    async def own_bidset(self, period: str) -> BidSet | None:
        """This server's signed :class:`BidSet` of ``period`` (None before its gate), signed
        when a peer first asks for it: one whose digest differs, or one that asks for no
        digest."""
        own = await self.own_set(period)
        if own is None:
            return None
        async with own.signing:  # both peers may ask at once
            if own.signed is None:
                own.signed = await asyncio.get_running_loop().run_in_executor(
                    None, wire.sign, own.bidset, self.key)  # 0.16 s at 100,000 pseudonyms
        return own.signed

    async def _make_bidset(self, period: str) -> OwnSet | None:
        """Make the bid set of ``period`` and sign its digest (:meth:`own_set`); keep them."""
        if self.shared:  # the database's set, once the leader has recorded the gate
            if await self.db(self.store.period, period) is None:
                return None
            pseudonyms = await self.db(self.store.pseudonyms, period)
        else:
            await self._drained.wait()
            pseudonyms = self.intake.pseudonyms(period)
        under_way = self._segment_locks.get(period)
        if under_way is not None:  # a validation under way ends first (none starts now)
            async with under_way:
                pass
        done = [s for s in await self.db(self.store.segments, period) if s.done]
        segments = tuple(s.index.to_bytes(4, "big") + s.digest for s in done)
        bidset = BidSet(self.cfg.party, period, pseudonyms, segments)
        digest = wire.sign(BidSetDigest(self.cfg.party, period, len(pseudonyms),
                                        wire.set_digest(pseudonyms), segments), self.key)
        # final: the gate has passed (no bid is stored), no segment starts, none is under way
        made = self._bidsets[period] = OwnSet(bidset, digest, tuple(done))
        while len(self._bidsets) > BIDSETS_KEPT:
            self._bidsets.popitem(last=False)
        return made

    # -- streaming validation: segments of a period while it is open (docs/service.md)

    @property
    def max_body_bytes(self) -> int:
        """The largest request body this server reads (its HTTP application's limit)."""
        return 2 * self.cfg.market.limits.max_payload_bytes + 2 * ENVELOPE_BYTES

    @property
    def segment_cap(self) -> int:
        """The most bids one segment holds: its plan must fit a request body, at about 48
        bytes a member (a 32-byte pseudonym as base64 in JSON); a backlog goes in several."""
        return max(1, (self.max_body_bytes - ENVELOPE_BYTES) // 48)

    @property
    def streaming(self) -> bool:
        """Whether this server validates bids in segments while their period is open (one
        process per server: with several intake workers the gate validates everything)."""
        return self.cfg.market.segment_seconds > 0 and not self.shared

    def _segment_lock(self, period: str) -> asyncio.Lock:
        return self._segment_locks.setdefault(period, asyncio.Lock())

    def _segment_margin(self) -> float:
        """Seconds before a gate after which no segment starts (one must end before it)."""
        m = self.cfg.market
        return float(min(m.peer_timeout_seconds, max(2.0, m.period_seconds / 4)))

    def _segment_open(self, period: str) -> bool:
        """Whether a segment of ``period`` may start now (its gate far enough ahead)."""
        try:
            gate = self.schedule.gate_closure(self.schedule.parse_period(period))
        except ValueError:
            return False
        return (gate - self.clock()).total_seconds() > self._segment_margin()

    async def own_pending(self, period: str) -> PendingSet | None:
        """This server's stored pseudonyms of ``period`` that no segment holds yet, signed,
        with the index of its next segment; None once the period may take no segment."""
        if not self.streaming or not self._segment_open(period):
            return None
        stored = set(await self.db(self.store.pseudonyms, period))
        segments = await self.db(self.store.segments, period)
        for s in segments:
            stored.difference_update(s.members)
        return wire.sign(PendingSet(self.cfg.party, period, len(segments),
                                    tuple(sorted(stored))), self.key)

    async def _segmenter(self) -> None:
        """The leader's clock for segments: every ``segment_seconds``, each open period with
        enough bids that every server holds and no segment has gets its next segment."""
        every = self.cfg.market.segment_seconds
        while True:
            await asyncio.sleep(every)
            try:
                periods = await self.db(self.store.open_periods)
            except StorageError as exc:
                log.warning("segments: cannot read the open periods: %s", exc)
                continue
            for period in periods:
                if self._segment_open(period) and not self._segment_lock(period).locked():
                    try:
                        await self._plan_segment(period)
                    except Exception as exc:  # the gate validates whatever is left
                        log.warning("period %s: no segment this time: %s", period, exc)

    async def _peer_internal(self, peer: int, method: str, path: str,
                             body: bytes = b"") -> tuple[int, bytes]:
        assert self._session is not None
        url = f"{self.cfg.servers[peer]}/v1/internal/{path}"
        async with self._session.request(method, url, data=body or None,
                                         server_hostname=server_tls_name(peer)) as resp:
            return resp.status, await resp.read()

    async def _plan_segment(self, period: str) -> None:
        """Fix the next segments of ``period`` with the peers and validate them (the leader):
        one after another while enough bids wait, each at most :attr:`segment_cap`."""
        while await self._plan_one_segment(period):
            pass

    async def _plan_one_segment(self, period: str) -> bool:
        """Fix and validate one segment; whether one was (and another may follow)."""
        own = await self.own_pending(period)  # None once the gate is too near
        if own is None or len(own.pseudonyms) < self.cfg.market.segment_min_bids:
            return False
        peers = [i for i in range(len(self.cfg.servers)) if i != self.cfg.party]
        answers = await asyncio.gather(*(
            self._peer_internal(j, "GET", f"periods/{period}/pending") for j in peers))
        members = set(own.pseudonyms)
        for j, (status, body) in zip(peers, answers, strict=True):
            if status != 200:
                raise clearing.ClearingFailed(f"server {j} gave no pending set (HTTP {status})")
            found = wire.decode(PendingSet, body)
            if (found.server, found.period) != (j, period) or not wire.verify(
                    found, self.registry.servers[j][1]):
                raise clearing.ClearingFailed(f"server {j}'s pending set is not its own")
            if found.next_segment != own.next_segment:
                raise clearing.ClearingFailed(
                    f"server {j} is at segment {found.next_segment}, this one at"
                    f" {own.next_segment}")
            members &= set(found.pseudonyms)
        if len(members) < self.cfg.market.segment_min_bids:
            return False
        plan = wire.sign(SegmentPlan(self.cfg.party, period, own.next_segment,
                                     tuple(sorted(members))[:self.segment_cap]), self.key)
        body = wire.encode(plan)
        answers = await asyncio.gather(*(
            self._peer_internal(j, "POST", f"periods/{period}/segments", body) for j in peers))
        refused = [f"server {j}: HTTP {s} {b[:200]!r}"
                   for j, (s, b) in zip(peers, answers, strict=True) if s != 200]
        if refused:
            raise clearing.ClearingFailed("the plan was refused (" + "; ".join(refused) + ")")
        await self.db(self.store.add_segment, period, plan.index, plan.pseudonyms)
        return await self._run_segment(period, plan.index, plan.pseudonyms)

    async def accept_segment(self, raw: bytes, period: str) -> Rejected | None:
        """A peer's side of a segment of ``period`` (the period its URL names): check the
        leader's plan against what this server holds, record it and start validating it (in
        the background); None when accepted.

        Raises:
            StorageError: the segment could not be recorded (nothing was kept).
        """
        try:
            plan = wire.decode(SegmentPlan, raw)
        except wire.WireError as exc:
            return Rejected(Reason.MALFORMED, f"not a segment plan: {exc}")
        if plan.server != 0 or not wire.verify(plan, self.registry.servers[0][1]):
            return Rejected(Reason.BAD_SIGNATURE, "a segment plan is signed by server 0")
        if plan.period != period:
            return Rejected(Reason.WRONG_PERIOD,
                            f"a plan of {plan.period} sent for the period {period}")
        own = await self.own_pending(plan.period)
        if own is None:
            return Rejected(Reason.LATE, "this period takes no segment any more here")
        if plan.index != own.next_segment:
            return Rejected(Reason.WRONG_PERIOD,
                            f"the next segment here is {own.next_segment}, not {plan.index}")
        if not plan.pseudonyms:  # a segment of nothing would only use up an index
            return Rejected(Reason.MALFORMED, "the plan holds no bid")
        if list(plan.pseudonyms) != sorted(set(plan.pseudonyms)) or not set(
                plan.pseudonyms) <= set(own.pseudonyms):
            return Rejected(Reason.MALFORMED, "the plan holds bids this server has not, or"
                            " has in a segment already, or is not sorted")
        # a StorageError (the disk, or this index recorded meanwhile) is the caller's to
        # answer: a retry is then refused as the plan deserves
        await self.db(self.store.add_segment, plan.period, plan.index, plan.pseudonyms)
        task = asyncio.create_task(self._run_segment(plan.period, plan.index, plan.pseudonyms))
        self._tasks.append(task)
        return None

    async def _run_segment(self, period: str, index: int, members: tuple[bytes, ...]) -> bool:
        """Validate one recorded segment with the peers (this server's party process) and
        store its result; whether it was. A failure leaves its bids to the gate."""
        async with self._segment_lock(period):
            t0 = asyncio.get_running_loop().time()
            found = await self.db(self.store.payloads, period, members)
            try:
                if len(found) != len(members):
                    raise clearing.ClearingFailed("bids of the segment are not stored here")
                request = clearing.SegmentRequest(
                    party=self.cfg.party, parties=len(self.cfg.servers),
                    peers=self._mpc_peers(period), period=period, index=index,
                    payloads=tuple(found[p] for p in members), market=self.market,
                    workdir=self._mpc_workdir(period) / f"segment-{index}",
                    mpc_config=self.cfg.data_dir, timeout=self._segment_margin())
                result = await self._watched(clearing.validate_segment(request, self._warm))
            except clearing.ClearingFailed as exc:
                log.warning("period %s: segment %d not validated: %s", period, index, exc)
                return False
            digest = hashlib.sha256(b"".join(members) + result.seed).digest()
            await self.db(self.store.segment_done, period, index, result.result, digest)
            log.info("period %s: segment %d of %d bids validated (%d refused) in %.2f s",
                     period, index, len(members), result.valid.count(False),
                     asyncio.get_running_loop().time() - t0)
            return True

    async def _peer_signed(self, peer: int, period: str, route: str, kind: type[M],
                           deadline: float, until: dt.datetime | None = None,
                           new: bool = False) -> M | None:
        """Fetch ``peer``'s signed ``kind`` of ``period`` from its internal ``route``, asking
        again until ``deadline`` (or the clock's ``until``) while it is not ready; a ``new``
        route the peer does not have (404: a version before it) gives None at once."""
        assert self._session is not None
        url = f"{self.cfg.servers[peer]}/v1/internal/periods/{period}/{route}"
        loop = asyncio.get_running_loop()
        last = "no answer"
        pause = 0.01  # a peer whose gate tick is a few ms behind answers soon: ask again soon
        while loop.time() < deadline and (until is None or self.clock() < until):
            try:
                async with self._session.get(url, server_hostname=server_tls_name(peer)) as resp:
                    body = await resp.read()
                    if resp.status == 200:
                        found = wire.decode(kind, body)
                        key = self.registry.servers[peer][1]
                        if found.server != peer or found.period != period:  # type: ignore[attr-defined]
                            raise clearing.ClearingFailed(f"server {peer} sent a wrong {route}")
                        if not wire.verify(found, key):
                            raise clearing.ClearingFailed(f"server {peer}'s {route} is not signed")
                        self._alive(peer)  # as a heartbeat: a restarted peer's party is not
                        return found  # killed for a heartbeat of its not seen yet
                    if resp.status == 404 and new:
                        return None
                    last = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                last = type(exc).__name__
            await asyncio.sleep(pause)
            pause = min(0.2, 2 * pause)
        raise clearing.ClearingFailed(f"server {peer} did not give its {route} ({last})")

    async def _peer_set(self, peer: int, own: OwnSet, deadline: float,
                        until: dt.datetime) -> tuple[frozenset[bytes] | None, tuple[bytes, ...]]:
        """``peer``'s bid set of ``own``'s period, as None when it equals ``own`` (the same
        count and digest), and the segments it lists: its digest first, the whole set only
        when that differs or the peer has no digest route."""
        period = own.bidset.period
        digest = await self._peer_signed(peer, period, "bidset-digest", BidSetDigest,
                                         deadline, until, new=True)
        if digest is not None and (digest.count, digest.sha256) == (
                own.digest.count, own.digest.sha256):
            return None, digest.segments
        bidset = await self._peer_signed(peer, period, "bidset", BidSet, deadline, until)
        assert bidset is not None  # asked again until the deadline, never None
        if digest is not None and (len(bidset.pseudonyms), bidset.segments,
                                   wire.set_digest(bidset.pseudonyms)) != (
                digest.count, digest.segments, digest.sha256):
            raise clearing.ClearingFailed(f"server {peer}'s bid set is not its digest's")
        return frozenset(bidset.pseudonyms), bidset.segments

    def finish_period(self, period: str) -> None:
        """The gate of ``period`` has passed (or it was found unfinished at start): hand it
        to the lifecycle, which starts the first attempt."""
        status = lifecycle.PeriodStatus.CLOSED
        try:
            record = self.store.period(period)
        except StorageError:
            record = None
        if record is not None:
            status = lifecycle.PeriodStatus(record.status)
        self._lifecycle_do(self.lifecycle.receive(
            lifecycle.GateClosed(period, self.clock(), status)))

    # -- peers' heartbeats

    async def _heartbeats(self) -> None:
        """Ask every peer for its signed market info every ``HEARTBEAT_SECONDS`` (a frozen or
        dead server does not answer); a peer silent for ``PEER_DOWN_SECONDS`` is down."""
        assert self._session is not None
        loop = asyncio.get_running_loop()
        peers = [i for i in range(len(self.cfg.servers)) if i != self.cfg.party]
        timeout = aiohttp.ClientTimeout(total=HEARTBEAT_SECONDS * 2)

        async def beat(peer: int) -> None:
            url = f"{self.cfg.servers[peer]}/v1/info"
            try:
                async with self._session.get(  # type: ignore[union-attr]
                        url, server_hostname=server_tls_name(peer), timeout=timeout) as resp:
                    await resp.read()
                    if resp.status == 200:
                        self._alive(peer)
            except (aiohttp.ClientError, TimeoutError, OSError):
                pass

        while True:
            await asyncio.gather(*(beat(j) for j in peers))
            now = loop.time()
            for j in peers:
                down = now - self._peer_seen.get(j, -1e9) > PEER_DOWN_SECONDS
                if down and j not in self._peer_down:  # back up: _alive, on its answer
                    self._peer_down.add(j)
                    log.warning("server %d stopped answering heartbeats", j)
            await asyncio.sleep(HEARTBEAT_SECONDS)

    def _alive(self, peer: int) -> None:
        """``peer`` answered just now (a heartbeat, or a signed answer at the gate)."""
        self._peer_seen[peer] = asyncio.get_running_loop().time()
        if peer in self._peer_down:
            self._peer_down.discard(peer)
            log.info("server %d answers heartbeats again", peer)

    def peers_down(self) -> list[int]:
        """The peers silent for longer than ``PEER_DOWN_SECONDS`` (as last checked)."""
        return sorted(self._peer_down)

    async def _watched(self, work: Any) -> Any:
        """Run ``work`` (a clearing or settlement attempt) while every peer answers its
        heartbeats; a peer that stops is noticed within ``PEER_DOWN_SECONDS`` and the attempt
        is given up at once (its MPC party killed), to be tried again once it is back."""
        task = asyncio.ensure_future(work)
        try:
            while not task.done():
                done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_SECONDS / 2)
                if not done and self._peer_down:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                    down = ", ".join(str(j) for j in sorted(self._peer_down))
                    raise clearing.ClearingFailed(f"server {down} stopped answering heartbeats")
            return task.result()
        finally:
            if not task.done():
                task.cancel()

    def _lifecycle_do(self, outs: list[lifecycle.Out]) -> None:
        """Perform what the lifecycle asks: start an attempt, or store a period as failed."""
        for out in outs:
            if isinstance(out, lifecycle.StartAttempt):
                self._tasks.append(asyncio.create_task(self._attempt(out)))
            else:
                self._tasks.append(asyncio.create_task(self._give_up(out.period, out.reason)))

    async def _attempt(self, start: lifecycle.StartAttempt) -> None:
        """One attempt to agree on and clear a period; a failure is told to the lifecycle,
        which tries again with backoff until the deadline."""
        period = start.period
        async with self._gate_lock:
            try:
                if self._peer_down and start.attempt > 1:  # wait for it rather than burn time
                    down = ", ".join(str(j) for j in sorted(self._peer_down))
                    raise clearing.ClearingFailed(f"server {down} does not answer heartbeats")
                status = await self._finish(period, start.deadline)
            except Exception as exc:  # keep serving; the lifecycle decides what comes next
                reason = str(exc) or type(exc).__name__
                log.warning("period %s: attempt %d failed: %s", period, start.attempt, reason)
                outs = self.lifecycle.receive(
                    lifecycle.AttemptFailed(period, reason, self.clock()))
            else:
                outs = self.lifecycle.receive(lifecycle.ClearingDone(period, status))
        self._lifecycle_do(outs)

    async def _give_up(self, period: str, reason: str) -> None:
        """Store ``period`` as failed for good, with its reason in the signed statement."""
        async with self._gate_lock:
            record = await self.db(self.store.period, period)
            if record is not None and record.status in ("cleared", "failed"):
                return
            own = await self.own_set(period)
            log.warning("period %s failed: %s", period, reason)
            await self._store_statement(period, "failed", Outcome("failed", reason=reason),
                                        own.bidset.pseudonyms if own else (), ())

    async def _finish(self, period: str, deadline: dt.datetime) -> lifecycle.PeriodStatus:
        """Agree on the bid set with the peers (waiting for them until ``deadline``), clear it
        and store the outputs; raise when this attempt does not get there."""
        loop = asyncio.get_running_loop()
        record = await self.db(self.store.period, period)
        if record is not None and record.status == "cleared":
            stored = wire.decode(Outcome, record.outcome.encode())
            return lifecycle.PeriodStatus(stored.status)
        if record is None and self.shared:  # first: no worker stores a bid of it after this
            if not self.intake.close_due(period, self.clock()):
                raise clearing.ClearingFailed("the gate has not closed here yet")
            await loop.run_in_executor(
                self._db, lambda: self.store.set_period(period, "closed", seal=False))
            record = await self.db(self.store.period, period)
        t0 = loop.time()
        own = await self.own_set(period)
        if own is None:
            raise clearing.ClearingFailed("the gate has not closed here yet")
        t_set = loop.time()
        staged = await self._stage(period, deadline) if own.bidset.pseudonyms else None
        t_staged = loop.time()
        try:
            if record is None:
                await loop.run_in_executor(  # sealed once the statement is out (_seal_soon)
                    self._db, lambda: self.store.set_period(period, "closed", seal=False))
            gate = self.schedule.gate_closure(self.schedule.parse_period(period))
            log.info("period %s: %.2f s after the gate: bid set %.2f s, party handed its"
                     " options %.2f s, gate recorded %.2f s", period,
                     (self.clock() - gate).total_seconds(), t_set - t0, t_staged - t_set,
                     loop.time() - t_staged)
            return await self._agree_and_clear(period, own, deadline, staged)
        finally:
            if staged is not None:  # not handed its batch: none agreed, or a failure
                await staged.abandon()

    async def _stage(self, period: str, deadline: dt.datetime) -> clearing.StagedParty | None:
        """Hand the party started ahead its MPC options for ``period``'s clearing now, so
        that it links to its peers while the bid sets are agreed (docs/service.md,
        "Timeline and gate closure"); None when that cannot be."""
        try:
            return await clearing.stage(
                self._warm, self.cfg.party, self._mpc_peers(period),
                self._mpc_workdir(period) / "gate", self.cfg.data_dir,
                self._party_timeout(deadline), self.market, clearing.gate_session(period))
        except OSError as exc:  # started at the gate instead
            log.warning("period %s: could not hand a party its options at the gate: %s",
                        period, exc)
            return None

    def _party_timeout(self, deadline: dt.datetime) -> float:
        """An MPC party's own timeout for a peer at the gate: the market's, at least 20 s,
        and no later than ``deadline`` (2 s at the least)."""
        left = max(2.0, (deadline - self.clock()).total_seconds())
        return min(float(max(20, self.cfg.market.peer_timeout_seconds)), left)

    async def _agree_and_clear(self, period: str, own: OwnSet, deadline: dt.datetime,
                               staged: clearing.StagedParty | None) -> lifecycle.PeriodStatus:
        """:meth:`_finish` from the agreement on: ``staged``, a party already handed its MPC
        options, clears the agreed set."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        until = t0 + max(0.5, (deadline - self.clock()).total_seconds())
        peers = [i for i in range(len(self.cfg.servers)) if i != self.cfg.party]
        sets = await asyncio.gather(*(self._peer_set(j, own, until, deadline) for j in peers))
        mine = own.bidset.pseudonyms
        differ = [found for found, _ in sets if found is not None]
        if differ:  # some bid did not reach every server
            agreed_set = set(mine).intersection(*differ)
            agreed = tuple(p for p in mine if p in agreed_set)  # sorted, as its set is
            excluded = tuple(p for p in mine if p not in agreed_set)
        else:  # as almost always: every server holds the same set
            agreed_set, agreed, excluded = set(mine), mine, ()
        self.lifecycle.receive(lifecycle.BidSetAgreed(period))
        t_agreed = loop.time()
        outputs = PeriodOutputs()
        public: Outcome
        if not agreed:
            status, public = "cleared", Outcome("no_trade")
        else:
            await loop.run_in_executor(  # the set itself is stored once, with the statement
                self._db, lambda: self.store.set_period(period, "agreed", excluded=excluded))
            segments = self._segments_agreed(
                own, [listed for _, listed in sets], agreed_set)
            if segments:
                log.info("period %s: %d bids from %d segments validated while open", period,
                         sum(len(s.members) for s in segments), len(segments))
            status, public, outputs = await self._clear(period, agreed, deadline, segments,
                                                        staged)
            if status == "failed":
                raise clearing.ClearingFailed(public.reason or "the clearing failed")
        t_cleared = loop.time()
        await self._store_statement(period, status, public, agreed, excluded, outputs)
        log.info(
            "period %s %s: %d bids, %d excluded; agreement %.2f s, clearing %.2f s,"
            " statement %.2f s",
            period, public.status, len(agreed), len(excluded),
            t_agreed - t0, t_cleared - t_agreed, loop.time() - t_cleared,
        )  # fmt: skip
        return lifecycle.PeriodStatus(public.status)

    async def _store_statement(self, period: str, status: str, public: Outcome,
                               agreed: tuple[bytes, ...], excluded: tuple[bytes, ...],
                               outputs: PeriodOutputs | None = None) -> None:
        """Sign and store a finished period's statement with its outputs, in one transaction."""
        loop = asyncio.get_running_loop()
        outcome = wire.encode(public).decode()
        start = self.schedule.parse_period(period)
        issuer_sha256 = await self.issuer_digest(period)
        statement = wire.sign(
            PeriodStatement(
                server=self.cfg.party,
                period=period,
                bid_count=len(agreed),
                bidset_sha256=wire.set_digest(agreed),
                excluded=excluded,
                status=status,
                outcome=outcome,
                gate_closure=iso(self.schedule.gate_closure(start)),
                issuer_sha256=issuer_sha256,
            ),
            self.key,
        )
        await loop.run_in_executor(
            self._db,
            lambda: self.store.set_period(
                period,
                status,
                agreed=agreed,
                excluded=excluded,
                outcome=outcome,
                statement=wire.encode(statement),
                outputs=outputs.rows if outputs else (),
                households=outputs.households if outputs else (),
            ),
        )
        self._statements[period] = statement  # committed: final from now on
        while len(self._statements) > STATEMENTS_KEPT:
            self._statements.popitem(last=False)
        self._seal_soon(period)

    def _seal_soon(self, period: str) -> None:
        """Seal a finished period's rows (storage.Store.seal) in the background: the copy of
        its bids in key order is not on the way from the gate to the results, and its steps
        take turns with the other writes. Until it is done, the rows not yet moved lie as
        arrival left them, as they did while the period was open."""

        async def seal() -> None:
            with contextlib.suppress(TimeoutError):  # the peers' statements go first
                await asyncio.wait_for(self._stopping.wait(), SEAL_DELAY_SECONDS)
            t0 = asyncio.get_running_loop().time()
            try:  # step by step: the next periods' bids wait for one step, not the seal
                for step in await self.db(self.store.seal_steps, period):
                    await self.db(step)
            except StorageError as exc:  # retried at the next start (Store.unsealed)
                log.error("period %s: sealing failed: %s", period, exc)
                return
            self._segment_locks.pop(period, None)  # its segments went with the seal
            await asyncio.get_running_loop().run_in_executor(  # and their files
                None, _erase, self._mpc_workdir(period))
            log.info("period %s sealed in %.2f s", period,
                     asyncio.get_running_loop().time() - t0)

        task = asyncio.create_task(seal())
        self._sealing.add(task)
        task.add_done_callback(self._sealing.discard)

    async def issuer_digest(self, period: str) -> bytes:
        """SHA-256 of the period's issuer public key, what households compare (empty if the
        period has none). A leader of workers may have seen no request of the period: it
        takes the key another worker stored."""
        issuer = self.intake.issuer(period)
        if issuer is None and self.shared:
            issuer = await self._stored_issuer(period)
        return b"" if issuer is None else key_digest(issuer.public)

    def _mpc_peers(self, period: str) -> tuple[str, ...]:
        """``host:port`` of every party's MPC link for ``period``'s clearing (and, before its
        gate, its segments): one of eight port slots by the period's index."""
        index = self.schedule.parse_period(period).timestamp() // self.schedule.period_seconds
        parties = len(self.cfg.servers)
        base = self.cfg.mpc_base_port + parties * int(index % 8)
        return tuple(f"{urlsplit(url).hostname}:{base + i}"
                     for i, url in enumerate(self.cfg.servers))

    def _mpc_workdir(self, period: str) -> Path:
        """The MPC working directory of ``period``: its segments' (``segment-K``) and its
        gate's (``gate``), each with its share batch; removed once the period is sealed,
        since the batches' order of rows tells which bids came in which segment."""
        return self.cfg.data_dir / "mpc" / period.replace(":", "")

    async def _remove_workdirs(self) -> None:
        """Erase the MPC working directories of sealed periods with a final status (cleared
        or failed): ones a server stopped between the seal and the erasure left behind (or a
        version before the erasure kept). Started at start, in the background: the first
        start after an upgrade may erase many."""
        root = self.cfg.data_dir / "mpc"
        entries = sorted(e for e in root.iterdir() if e.is_dir()) if root.is_dir() else []
        finished = []
        try:
            unsealed = set(await self.db(self.store.unsealed))  # erased after their seal
            for entry in entries:
                name = entry.name  # the period without its colons: 2026-01-05T101500Z
                period = f"{name[:13]}:{name[13:15]}:{name[15:]}"
                record = await self.db(self.store.period, period)
                if (period not in unsealed and record is not None
                        and record.status in ("cleared", "failed")):
                    finished.append(entry)
        except StorageError as exc:
            log.warning("could not read which periods' MPC files to erase: %s", exc)
        for entry in finished:
            await asyncio.to_thread(_erase, entry)

    def _segments_agreed(self, own: OwnSet, listed: list[tuple[bytes, ...]],
                         agreed: set[bytes]) -> list[SegmentRecord]:
        """The segments this server validated (``own``) that every peer lists alike (same
        members, same joint challenge) and whose bids are all in the agreed set, by index:
        the gate's clearing takes their results and validates only the rest."""
        if not self.streaming:
            return []
        common = set(own.bidset.segments)
        for segments in listed:  # each peer's, as its bid set lists them
            common &= set(segments)
        return [s for s in own.done
                if s.index.to_bytes(4, "big") + s.digest in common and agreed.issuperset(
                    s.members)]

    async def _clear(
        self, period: str, agreed: tuple[bytes, ...], deadline: dt.datetime,
        segments: Sequence[SegmentRecord] = (), staged: clearing.StagedParty | None = None,
    ) -> tuple[str, Outcome, PeriodOutputs]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        # the batch: the validated segments' bids first, in their order, then the rest sorted
        first = [p for s in segments for p in s.members]
        taken = set(first)
        rest = [p for p in agreed if p not in taken]
        order = first + rest
        # the segments' own share files, when intact, hold their rows: only the rest is read
        files = tuple(self._mpc_workdir(period) / f"segment-{s.index}" / "shares.bin"
                      for s in segments)
        fit = bool(segments) and await loop.run_in_executor(
            None, clearing.segment_batches_fit, files, [len(s.members) for s in segments],
            self.cfg.party, self.market)
        if fit:
            stored = await self.db(self.store.payloads, period, rest)
            payloads = tuple(stored[p] for p in rest)
        else:
            if segments:
                log.warning("period %s: the segments' share files are not intact here; the"
                            " gate reads all %d bids again", period, len(order))
            stored = await self.db(self.store.period_payloads, period)
            payloads, files = tuple(stored[p] for p in order), ()
        request = clearing.ClearingRequest(
            party=self.cfg.party,
            parties=len(self.cfg.servers),
            peers=self._mpc_peers(period),
            period=period,
            payloads=payloads,
            market=self.market,
            workdir=self._mpc_workdir(period) / "gate",
            mpc_config=self.cfg.data_dir,
            timeout=self._party_timeout(deadline),
            segments=tuple(s.result for s in segments),
            segment_batches=files,
            members=tuple(order),
        )
        t_read = loop.time()
        try:
            result = await self._watched(clearing.clear(request, self._warm, staged))
        except clearing.ClearingFailed as exc:
            return "failed", Outcome("failed", reason=str(exc)), PeriodOutputs()
        t_party = loop.time()
        result = clearing.in_order(result, order, agreed)  # slots back in pseudonym order
        level = result.public.level
        public = Outcome(
            status="cleared" if level is not None else "no_trade",
            level=level,
            price=str(self.market.grid.price(level)) if level is not None else None,
            invalid_bids=result.invalid_bids,
        )
        households = [  # a refused bid is told so; without trade nothing else is stored
            (p, s if s else b"invalid")
            for p, s in zip(agreed, result.household, strict=True)
            if level is not None or not s
        ]
        outputs = PeriodOutputs(households=households)
        if level is not None:  # V goes to the authenticated grid operators only
            outputs.rows += [("supplier", k, v) for k, v in sorted(result.suppliers.items())]
            outputs.rows += [("operator", op, result.volume)
                             for op in sorted(self.registry.operators)]
            # what the settlement needs, never served: each slot's identity pair and accepted
            # quantities, and the ratios, as this server's shares
            outputs.rows += [("settlement", "rows", result.settle_rows),
                        ("settlement", "ratios", result.ratios)]
        log.info("period %s: payloads read %.2f s, party and its result %.2f s, outputs put"
                 " in order %.2f s", period, t_read - t0, t_party - t_read,
                 loop.time() - t_party)
        return "cleared", public, outputs

    # -- settlement: enrolment, readings, the period's settlement

    async def enrol(self, raw: bytes) -> Enrolled | Rejected:
        """Store a household's credential share (once; the same share again is answered)."""
        try:
            msg = wire.decode(Enrolment, raw)
        except wire.WireError as exc:
            return Rejected(Reason.MALFORMED, str(exc))
        why = settlement.check_enrolment(msg, self.registry, self.cfg.party)
        if why is not None:
            return why
        since = self.schedule.period_id(self.schedule.start_of(self.clock()))
        stored = await self.db(self.store.enrol, msg.household, msg.share, since)
        if stored != msg.share:
            return Rejected(Reason.ALREADY_ENROLLED, "a different share is enrolled")
        return wire.sign(Enrolled(self.cfg.party, msg.household, wire.sha256(msg.share)),
                         self.key)

    async def reading(self, raw: bytes) -> ReadingReceipt | Rejected:
        """Store a meter's signed reading of an ended period, before its deadline."""
        try:
            msg = wire.decode(MeterReading, raw)
        except wire.WireError as exc:
            return Rejected(Reason.MALFORMED, str(exc))
        why = settlement.check_reading(msg, self.registry, self.calendar, self.claim_layout,
                                       self.cfg.party, self.clock())
        if why is not None:
            return why
        stored = await self.db(self.store.add_reading, msg.period, msg.household, msg.shares)
        if stored == "duplicate":
            return Rejected(Reason.DUPLICATE_READING, "a reading of this period is stored")
        if stored == "closed":  # checked before the deadline, stored after the set was read
            return Rejected(Reason.LATE, "the readings of this period are closed: its"
                            " settlement set was read")
        return wire.sign(ReadingReceipt(self.cfg.party, msg.period, msg.household,
                                        wire.sha256(msg.shares)), self.key)

    def _deadline_passed(self, period: str) -> bool:
        return self.clock() >= self.calendar.reading_deadline(period)

    async def own_settlement_set(self, period: str) -> SettlementSet | None:
        """This server's signed reading and enrolment sets of a period, once its readings
        are closed (None before): frozen from then on, so every peer sees the same."""
        try:
            if not self._deadline_passed(period):
                return None
        except ValueError:
            return None
        if period not in self._readings_closed:  # no reading is stored after this
            await self.db(self.store.close_readings, period)
            self._readings_closed[period] = None
            while len(self._readings_closed) > STATEMENTS_KEPT:
                self._readings_closed.popitem(last=False)
        readings = await self.db(self.store.readings, period)
        credentials = await self.db(self.store.credentials, self._enrol_before(period))
        return wire.sign(SettlementSet(self.cfg.party, period, tuple(sorted(readings)),
                                       tuple(sorted(credentials))), self.key)

    def _enrol_before(self, period: str) -> str:
        """Enrolments count for a period's settlement when made before its deadline."""
        deadline = self.calendar.reading_deadline(period)
        return self.schedule.period_id(self.schedule.start_of(deadline))

    async def _peer_settlement_set(self, peer: int, period: str,
                                   deadline: float) -> SettlementSet:
        assert self._session is not None
        url = f"{self.cfg.servers[peer]}/v1/internal/periods/{period}/settlement-set"
        loop = asyncio.get_running_loop()
        last = "no answer"
        while loop.time() < deadline:
            try:
                async with self._session.get(url, server_hostname=server_tls_name(peer)) as resp:
                    body = await resp.read()
                    if resp.status == 200:
                        found = wire.decode(SettlementSet, body)
                        if (found.server != peer or found.period != period
                                or not wire.verify(found, self.registry.servers[peer][1])):
                            raise settlement.SettlementFailed(
                                f"server {peer} sent a wrong settlement set")
                        return found
                    last = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError, OSError, wire.WireError) as exc:
                last = type(exc).__name__
            await asyncio.sleep(0.2)
        raise settlement.SettlementFailed(f"server {peer} did not give its settlement set "
                                          f"({last})")

    async def settle_due(self) -> None:
        """Settle every period whose readings are closed and that is not settled yet: a
        finished period with bids, or one with readings (a failed attempt waits 5 s)."""
        async with self._settle_lock:
            loop = asyncio.get_running_loop()
            periods = sorted(set(await self.db(self.store.closed_unsettled))
                             | set(await self.db(self.store.reading_periods)))
            for period in periods:
                if not self._deadline_passed(period):
                    continue
                if loop.time() < self._settle_tried.get(period, 0.0) + 5.0:
                    continue
                record = await self.db(self.store.period, period)
                if record is not None and record.status in ("closed", "agreed"):
                    continue  # its clearing has not finished
                try:
                    await self._settle(period, record)
                    self._settle_tried.pop(period, None)
                except Exception:  # keep serving; the period is tried again
                    self._settle_tried[period] = loop.time()
                    log.exception("settling period %s failed; it will be tried again", period)

    async def _settle(self, period: str, record: Any) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        own = await self.own_settlement_set(period)
        assert own is not None
        peers = [i for i in range(len(self.cfg.servers)) if i != self.cfg.party]
        deadline = t0 + self.cfg.market.peer_timeout_seconds
        sets = await asyncio.gather(*(self._peer_settlement_set(j, period, deadline)
                                      for j in peers))
        read, enrolled = set(own.readings), set(own.enrolled)
        for found in sets:
            read &= set(found.readings)
            enrolled &= set(found.enrolled)
        names = settlement.participants(self.registry)
        price = None
        rows = ratios = None
        if record is not None and record.status == "cleared" and record.outcome:
            public = wire.decode(Outcome, record.outcome.encode())
            if public.status == "cleared":
                price = settlement.price_milli(public.price)
                rows = await self.db(self.store.output, period, "settlement", "rows")
                ratios = await self.db(self.store.output, period, "settlement", "ratios")
        inputs = settlement.inputs(
            names=names, tariff_rows=settlement.tariffs(self.registry, self.cfg.billing, names),
            layout=self.claim_layout, rows=rows, ratios=ratios, price=price,
            credentials=await self.db(self.store.credentials, self._enrol_before(period)),
            readings=await self.db(self.store.readings, period), enrolled=enrolled, read=read)
        index = self.schedule.parse_period(period).timestamp() // self.schedule.period_seconds
        parties = len(self.cfg.servers)
        base = self.cfg.mpc_base_port + parties * (8 + int(index % 8))
        request = settlement.SettlementRequest(
            party=self.cfg.party,
            peers=tuple(f"{urlsplit(url).hostname}:{base + i}"
                        for i, url in enumerate(self.cfg.servers)),
            period=period, inputs=inputs,
            workdir=self.cfg.data_dir / "settle" / period.replace(":", ""),
            mpc_config=self.cfg.data_dir,
            timeout=float(max(20, self.cfg.market.peer_timeout_seconds)))
        result = await self._watched(settlement.run(request))
        await self.db(self.store.add_settlement, period, names, result.status,
                      result.lines.astype("<u8").tobytes(), result.void_rows, result.bidders,
                      inputs.price)
        log.info("period %s settled: %d households, %d bound bids, %d void, %.2f s",
                 period, len(names), result.bidders, result.void_rows, loop.time() - t0)

    def _billing_output(self, req: AuthRequest) -> OutputShares:
        """Statement, bill, DSO or TSO shares of a cycle, or a supplier's settled totals of a
        period (runs on the database thread)."""
        if req.role == "supplier_period":
            found = self.store.settlements(req.period, req.period)
            shares, public = settlement.supplier_period(found, self.registry, req.subject)
            state = bills.SETTLED if found else bills.PENDING
            return OutputShares(self.cfg.party, req.period, req.role, req.subject, state,
                                shares, public)
        cycle = req.period
        periods = self.calendar.periods(cycle)
        records = self.store.settlements(periods[0], periods[-1])
        settled = {r.period for r in records}
        waiting = [p for p in self.store.closed_unsettled() + self.store.reading_periods()
                   if p not in settled and periods[0] <= p <= periods[-1]]
        state = settlement.status(self.calendar, cycle, self.clock(), waiting)
        if req.role == "statement":
            shares, public = settlement.statement(records, req.subject, state)
        elif req.role == "bill":
            shares, public = settlement.bill(records, self.registry, self.cfg.billing,
                                             req.subject, state)
        elif req.role == "dso":
            shares, public = settlement.dso(records, self.registry, req.subject, state)
        else:
            shares, public = settlement.tso(records, self.registry, state)
        return OutputShares(self.cfg.party, cycle, req.role, req.subject, state, shares, public)

    # -- outputs

    async def statement(self, period: str) -> PeriodStatement | None:
        """Return this server's signed statement of a finished period, if any (a recent one
        from memory: the seal that follows it holds the database thread for a while)."""
        kept = self._statements.get(period)
        if kept is not None:
            return kept
        record = await self.read(Store.period, period)
        if record is None or not record.statement:
            return None
        return wire.decode(PeriodStatement, record.statement)

    async def output(self, raw: bytes) -> OutputShares | Rejected:
        """Answer a signed request for output shares (own result, supplier or region totals)."""
        try:
            req = wire.decode(AuthRequest, raw)
        except wire.WireError as exc:
            return Rejected(Reason.MALFORMED, str(exc))
        if req.role not in ROLES + bills.ROLES:
            return Rejected(Reason.MALFORMED, "role must be household, supplier, operator,"
                            " statement, bill, dso or tso")
        if req.role in bills.ROLES:
            try:
                if req.role == "supplier_period":
                    self.schedule.parse_period(req.period)
                else:
                    self.calendar.parse_cycle(req.period)
            except ValueError as exc:
                return Rejected(Reason.WRONG_PERIOD, f"not a {req.role} period: {exc}")
            reader = {"statement": self.registry.households.get(req.subject),
                      "bill": self.registry.suppliers.get(req.subject),
                      "supplier_period": self.registry.suppliers.get(req.subject),
                      "dso": self.registry.dsos.get(req.subject),
                      "tso": self.registry.tso if req.subject == "tso" else None}[req.role]
            if reader is None or not wire.verify(req, reader):
                return Rejected(Reason.BAD_SIGNATURE, f"not signed by the {req.role} key it names")
            problem = await self.use_challenge(req.nonce)
            if problem is not None:
                return Rejected(Reason.REPLAYED, problem)
            return wire.sign(await self.db(self._billing_output, req), self.key)
        if req.role == "household":
            try:
                key: bytes | None = wire.b64d(req.subject)
            except wire.WireError:
                return Rejected(Reason.MALFORMED, "subject must be the base64 pseudonym")
        elif req.role == "supplier":
            key = self.registry.suppliers.get(req.subject)
        else:
            key = self.registry.operators.get(req.subject)
        if key is None or not wire.verify(req, key):
            return Rejected(Reason.BAD_SIGNATURE, f"not signed by the {req.role} key it names")
        problem = await self.use_challenge(req.nonce)
        if problem is not None:
            return Rejected(Reason.REPLAYED, problem)
        answer = await self.read(self._output, req)
        return wire.sign(answer, self.key)

    async def use_challenge(self, nonce: bytes) -> str | None:
        """Use up a challenge of a signed request; what is wrong with it, or None. With
        several workers the use is also recorded in the database, so no other worker takes
        it again."""
        problem = self.intake.use_challenge(nonce, self.clock())
        if problem is not None or not self.shared:
            return problem
        expires = self.intake.shared_expiry(nonce)
        assert expires is not None  # the intake has just checked it
        if not await self.db(self.store.use_challenge, nonce, self._until(expires)):
            return CHALLENGE_UNKNOWN
        return None

    async def hello(self, raw: bytes) -> dict[str, Any] | Rejected:
        """Check a household's challenge–response (entity authentication with liveness)."""
        try:
            req = wire.decode(AuthRequest, raw)
        except wire.WireError as exc:
            return Rejected(Reason.MALFORMED, str(exc))
        key = self.registry.households.get(req.subject)
        if req.role != "household" or key is None or not wire.verify(req, key):
            return Rejected(Reason.BAD_SIGNATURE, "not signed by a registered household key")
        problem = await self.use_challenge(req.nonce)
        if problem is not None:
            return Rejected(Reason.REPLAYED, problem)
        return {"server": self.cfg.party, "household": req.subject, "registered": True}

    def _output(self, store: Store, req: AuthRequest) -> OutputShares:
        """Look the answer up in ``store`` (runs on the read thread: the period's record is
        read first, and its outputs are committed with its final status)."""
        record = store.period(req.period)
        public = record.outcome if record else ""

        def answer(status: str, shares: bytes = b"") -> OutputShares:
            return OutputShares(
                self.cfg.party, req.period, req.role, req.subject, status, shares, public
            )

        if req.role == "household":
            pseudonym = wire.b64d(req.subject)
            if store.receipt(req.period, pseudonym) is None:
                return answer("unknown")
            if record is None or record.status in ("closed", "agreed"):
                return answer("pending")
            if pseudonym in record.excluded:
                return answer("not_on_every_server")  # it missed a server by the gate
        elif record is None or record.status in ("closed", "agreed"):
            return answer("pending")
        if record.status == "failed":
            return answer("failed")
        shares = store.output(req.period, req.role, req.subject)
        if shares == b"invalid":
            return answer("invalid")
        return answer("cleared" if shares is not None else "no_trade", shares or b"")

    def info(self) -> MarketInfo:
        """Return this server's signed account of the market and of itself.

        ``stats`` counts only periods whose gate has closed (no live counter of an open
        period: it would time each household's requests; docs/privacy.md).
        """
        now = self.clock()
        m, limits, grid = self.market, self.cfg.market.limits, self.market.grid
        return wire.sign(
            MarketInfo(
                party=self.cfg.party,
                servers=len(self.cfg.servers),
                signing_key=wire.raw_public(self.key),
                wire_version=wire.WIRE_VERSION,
                now=iso(now),
                period_seconds=m.period_seconds,
                first_open_period=self.schedule.period_id(self.schedule.first_open(now)),
                max_payload_bytes=limits.max_payload_bytes,
                rate_limit=RateLimit(limits.rate_limit, limits.rate_window_seconds),
                suppliers=m.suppliers,
                price_grid=PriceGridInfo(str(grid.floor), str(grid.ceiling), str(grid.tick)),
                max_quantity_wh=m.max_quantity_wh,
                min_accepted_per_side=m.min_accepted_per_side,
                stats=self._counts if self.shared else self.intake.closed_counts(),
            ),
            self.key,
        )


def _erase(path: Path) -> None:
    """Overwrite every file under ``path`` with zeros, flush it, and remove the tree: the MPC
    files of a sealed period (its share batches' order of rows) held to the database's
    standard, whose deleted rows SQLite overwrites (``secure_delete``). Best effort, as there:
    a journaling file system or the disk itself may keep older copies. A failure is logged."""
    if not path.exists():
        return
    zeros = bytes(1 << 20)
    try:
        for folder, _, files in os.walk(path):
            for name in files:
                file = os.path.join(folder, name)
                if os.path.islink(file):  # removed, not followed (sealgrid makes none)
                    continue
                with open(file, "r+b") as f:
                    left = os.fstat(f.fileno()).st_size
                    while left > 0:
                        left -= f.write(zeros[:min(left, len(zeros))])
                    f.flush()
                    os.fsync(f.fileno())
        shutil.rmtree(path)
    except OSError as exc:
        log.warning("could not erase the MPC files in %s: %s", path, exc)


def _challenge_key(key: Any) -> bytes:
    """The key of a server's stateless challenges, the same in every worker (derived from its
    signing key: only its own processes can make or check them)."""
    from cryptography.hazmat.primitives import serialization

    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    return hmac.new(raw, b"sealgrid/v1/challenge-key", hashlib.sha256).digest()
