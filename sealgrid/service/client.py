"""Household, supplier and grid-operator clients; assumes the registry and its pinned certificates.

The household sends each server its own share payload under one fresh pseudonym, checks
every receipt's signature against the registry, and later asks each server for its share of
the household's result with a request signed by the pseudonym key. Suppliers and operators
ask likewise with their own keys. Under its own name the household enrols each server's share
of its settlement credential, and its smart meter sends each server its share of the period's
claim (signed by the meter key); every acknowledgement and receipt is checked.
Reconstructing values from shares belongs to :mod:`sealgrid.protocol`; this module moves and
checks signed messages.

A server answers ``503 unavailable`` when it could not store a request (its database failed;
nothing was stored, and the intake forgot it). The client tries such a request again, a few
times within a bounded time (:class:`Retry`: exponential backoff with full jitter, or the
server's ``Retry-After``), but only a request that is safe to repeat (:data:`RESENDABLE`, each
with the reason); a request signed over a challenge is repeated as a whole step, with a fresh
challenge (:meth:`Client.signed`). Then it gives up with :class:`Unreachable`, naming the
number of attempts and the rule.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import json
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from sealgrid.mechanism.bids import BidRejected, Reason
from sealgrid.mechanism.grid import PriceGrid
from sealgrid.mechanism.market import Market
from sealgrid.service import voprf, wire
from sealgrid.service.connector import LoopConnector
from sealgrid.service.household import (
    GrantError,
    Pseudonym,
    accept_grant,
    auth_request,
    check_receipt,
    make_submission,
    token_request,
)
from sealgrid.service.keys import Registry, server_tls_name
from sealgrid.service.wire import (
    Enrolled,
    Enrolment,
    MarketInfo,
    MeterReading,
    OutputShares,
    PeriodStatement,
    ReadingReceipt,
    Receipt,
    TokenGrant,
)


class ServiceError(Exception):
    """A server could not be reached or answered something that does not verify."""


class Unreachable(ServiceError):
    """A server could not be reached, or answered that it is unavailable (HTTP 503): worth
    trying again later, unlike an answer that does not verify."""


@dataclass(frozen=True)
class Retry:
    """How a client retries a server's ``503 unavailable`` (a request that is safe to repeat).

    At most ``attempts`` tries in all (the first included), and no wait that would end more
    than ``total_seconds`` after the first try began. Between tries the client waits what the
    server's ``Retry-After`` asks (whole seconds or an HTTP date) plus up to ``first_wait`` of
    jitter, else a random time up to ``first_wait · 2^(n-1)``, at most ``max_wait`` (exponential
    backoff with full jitter, so that many households do not come back at once). A
    ``Retry-After`` longer than the time left ends the tries at once.
    """

    attempts: int = 4
    total_seconds: float = 10.0
    first_wait: float = 0.25
    max_wait: float = 4.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or not self.total_seconds > 0 or self.first_wait < 0:
            raise ValueError("a retry needs at least 1 attempt, a total time above 0 and a"
                             " wait of at least 0")

    @property
    def rule(self) -> str:
        """The rule, as the error after the last try names it."""
        return (f"a 503 is tried at most {self.attempts} times within"
                f" {self.total_seconds:g} s")


#: No retries: one try, as before the client retried.
NO_RETRY = Retry(attempts=1)

#: The requests resent unchanged after a ``503``, by method and path (any ``GET``, too), and
#: why repeating each is safe:
#:
#: * ``GET`` (market info, statements, issuer keys): a read.
#: * ``POST /v1/challenge``: each answer is a fresh nonce; one that goes unused expires.
#: * ``POST /v1/bids``: a bid is keyed by its pseudonym, once per period. After a 503 nothing
#:   was stored (the server's writer failed and its intake forgot the bid), so the same bytes
#:   are taken afresh; had they been stored, the server refuses them as ``replayed`` ("this
#:   exact bid was already accepted"), and another bid under that pseudonym as
#:   ``duplicate_pseudonym``: the bid never counts twice.
#: * ``POST /v1/enrol``: the server keeps the first share a household enrols and answers the
#:   same share again with the same acknowledgement.
#: * ``POST /v1/readings``: one reading per household and period is stored; the same reading
#:   again is refused as ``duplicate_reading``, never stored twice.
#:
#: A request signed over a challenge (``/v1/pseudonyms``, ``/v1/outputs``, ``/v1/hello``) is
#: not resent as it is: the server used its challenge up, even when it answered 503. Its whole
#: step is repeated with a fresh challenge instead (:meth:`Client.signed`), which is safe for
#: the same reasons: a token request that got a 503 stored nothing (one token per household
#: and period; a second is refused as ``too_frequent``); outputs and hello only read.
RESENDABLE = frozenset({"/v1/challenge", "/v1/bids", "/v1/enrol", "/v1/readings"})


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    retry_after: float | None = None  # seconds, from a 503's Retry-After


class _Busy(Exception):
    """A 503 answer, to try again (internal to :meth:`Client._retrying`)."""

    def __init__(self, answer: _Answer) -> None:
        super().__init__(f"HTTP {answer.status}")
        self.answer = answer


class _StopBeforeDeadline(stop_base):
    """Stop when the next try would begin at or after ``deadline`` (``time.monotonic()``):
    the time limit runs from the first request, which :meth:`Client._retrying` sends before
    any retry state exists."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        return time.monotonic() + retry_state.upcoming_sleep >= self.deadline


def retry_after_seconds(value: str | None, now: dt.datetime | None = None) -> float | None:
    """A ``Retry-After`` header's wait in seconds: whole seconds, or an HTTP date (RFC 9110);
    None for none, or one that is neither."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - (now or dt.datetime.now(dt.UTC))).total_seconds())


@dataclass(frozen=True)
class BidOutcome:
    """What each server said to one bid: a verified receipt or a refusal, by server index."""

    pseudonym: Pseudonym
    receipts: dict[int, Receipt]
    refusals: dict[int, BidRejected]
    unreachable: dict[int, str] = field(default_factory=dict)  # server → why, still missing

    @property
    def complete(self) -> bool:
        """Whether every server gave a receipt."""
        return not self.refusals and not self.unreachable


_CONTEXTS: dict[tuple[str, int, int], ssl.SSLContext] = {}


def client_context(ca: Path) -> ssl.SSLContext:
    """The TLS context that trusts only the certificates in ``ca``, made once per version of
    that file (its path, size and modification time) and shared by the sessions that open it:
    reading and parsing the certificates was a tenth of a household's CPU in a session of its
    own. A shared context resumes nothing: sealgrid's clients pass no session to resume, and
    the servers issue no tickets (server.https_context)."""
    stat = ca.stat()
    key = (str(ca.resolve()), stat.st_size, stat.st_mtime_ns)
    ctx = _CONTEXTS.get(key)
    if ctx is None:
        ctx = _CONTEXTS[key] = ssl.create_default_context(cafile=str(ca))
    return ctx


def open_session(ca: Path, connections: int = 100, *, fresh: bool = False
                 ) -> aiohttp.ClientSession:
    """Open an HTTPS session that trusts only the certificates in ``ca`` (to share among clients).

    ``ca`` is the servers' pinned certificates (``servers.pem``, as in the registry): each is
    self-signed and its own trust anchor, and no CA exists.
    """
    ctx = client_context(ca)
    return aiohttp.ClientSession(  # fresh: every request on a connection of its own
        connector=LoopConnector(ctx, limit=connections, force_close=fresh),
        timeout=aiohttp.ClientTimeout(total=120),
    )


class Client:
    """An HTTPS client of every computation server in the registry."""

    def __init__(
        self,
        registry: Registry,
        ca: Path,
        *,
        connections: int = 100,
        session: aiohttp.ClientSession | None = None,
        fresh: bool = False,
        retry: Retry = Retry(),
    ) -> None:
        """``fresh``: the session this client opens puts every request on a new connection;
        ``retry``: how a ``503`` is tried again (:class:`Retry`; :data:`NO_RETRY`: never)."""
        self.registry = registry
        self._ca = ca
        self._connections = connections
        self._session = session
        self._owned = session is None
        self._fresh = fresh
        self.retry = retry

    async def __aenter__(self) -> Self:
        if self._session is None:
            self._session = open_session(self._ca, self._connections, fresh=self._fresh)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connections (only those this client opened)."""
        if self._session is not None and self._owned:
            await self._session.close()
            self._session = None

    @property
    def servers(self) -> int:
        """Number of computation servers."""
        return len(self.registry.servers)

    async def call(
        self, server: int, method: str, path: str, body: bytes | None = None
    ) -> tuple[int, bytes]:
        """Send one HTTPS request to ``server``; return the status and the raw body.

        A ``503`` to a request that is safe to resend (a ``GET``, or a path in
        :data:`RESENDABLE`) is tried again under :attr:`retry`.

        Raises:
            Unreachable: the server could not be reached, or still answered 503 after the
                last try.
        """
        if method == "GET" or path in RESENDABLE:
            return await self._retrying(server, lambda: self._send(server, method, path, body))
        got = await self._send(server, method, path, body)
        return got.status, got.body

    async def _send(
        self, server: int, method: str, path: str, body: bytes | None = None
    ) -> _Answer:
        """Send one HTTPS request to ``server`` once."""
        if self._session is None:
            raise RuntimeError("use the client inside 'async with'")
        url = self.registry.servers[server][0] + path
        try:
            async with self._session.request(
                method,
                url,
                data=body,
                headers={"Content-Type": "application/json"},
                server_hostname=server_tls_name(server),  # only that server's certificate
            ) as resp:
                wait = (retry_after_seconds(resp.headers.get("Retry-After"))
                        if resp.status == 503 else None)
                return _Answer(resp.status, await resp.read(), wait)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Unreachable(f"server {server} unreachable: {type(exc).__name__}") from exc

    async def _retrying(
        self, server: int, attempt: Callable[[], Awaitable[_Answer]]
    ) -> tuple[int, bytes]:
        """Run ``attempt`` until it is answered with anything but ``503``, under
        :attr:`retry`; return that answer's status and body.

        Raises:
            Unreachable: still 503 after the last try (naming the tries and the rule).
        """
        started = time.monotonic()
        first = await attempt()
        if first.status != 503:  # the usual case, answered at once: no retry state to set up
            return first.status, first.body
        answers = [first]  # the retries' first try is this answer, not a second request

        async def again() -> _Answer:
            return answers.pop() if answers else await attempt()

        policy = self.retry
        backoff = wait_random_exponential(multiplier=policy.first_wait, max=policy.max_wait)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome is not None else None
            if isinstance(exc, _Busy) and exc.answer.retry_after is not None:
                return exc.answer.retry_after + random.uniform(0, policy.first_wait)
            return float(backoff(state))

        tries = 0
        try:
            async for trying in AsyncRetrying(
                stop=stop_after_attempt(policy.attempts)
                | _StopBeforeDeadline(started + policy.total_seconds),
                wait=wait,
                retry=retry_if_exception_type(_Busy),
                reraise=True,
            ):
                with trying:
                    tries += 1
                    got = await again()
                    if got.status == 503:
                        raise _Busy(got)
        except _Busy as busy:
            asked = busy.answer.retry_after
            more = "" if asked is None else f"; it asked to wait {asked:g} s"
            raise Unreachable(
                f"server {server} unavailable (HTTP 503) after {tries} attempt"
                f"{'s' if tries != 1 else ''} in {time.monotonic() - started:.1f} s"
                f" ({policy.rule}{more})") from None
        return got.status, got.body

    async def signed(
        self, server: int, path: str, sign: Callable[[bytes], bytes]
    ) -> tuple[int, bytes]:
        """``POST`` to ``path`` the request ``sign(nonce)`` makes over a fresh challenge of
        ``server``'s; return the status and the raw body.

        After a ``503`` (to the challenge or to the request) the whole step is tried again
        under :attr:`retry`, with a new challenge: the server used the old one up. ``sign`` is
        called once per try (a token request makes new blindings each time).

        Raises:
            Unreachable: unreachable, or 503 after the last try.
            ServiceError: the server gave no challenge (another status).
        """

        async def attempt() -> _Answer:
            got = await self._send(server, "POST", "/v1/challenge")
            if got.status == 503:
                return got
            if got.status != 200:
                raise ServiceError(f"server {server} gave no challenge (HTTP {got.status})")
            nonce = wire.b64d(json.loads(got.body)["nonce"])
            return await self._send(server, "POST", path, sign(nonce))

        return await self._retrying(server, attempt)

    async def challenge(self, server: int) -> bytes:
        """Fetch a fresh challenge nonce from ``server``."""
        status, body = await self.call(server, "POST", "/v1/challenge")
        if status != 200:
            raise ServiceError(f"server {server} gave no challenge (HTTP {status})")
        return wire.b64d(json.loads(body)["nonce"])

    async def statement(self, server: int, period: str) -> PeriodStatement | None:
        """Return ``server``'s verified statement of ``period``, or None if not finished."""
        status, body = await self.call(server, "GET", f"/v1/periods/{period}")
        if status == 404:
            return None
        if status != 200:
            raise ServiceError(f"server {server}: HTTP {status}")
        found = wire.decode(PeriodStatement, body)
        if found.server != server or not wire.verify(found, self.registry.servers[server][1]):
            raise ServiceError(f"server {server}'s statement does not verify")
        return found

    async def info(self, server: int) -> dict[str, Any]:
        """Return ``server``'s public info as plain JSON (see :meth:`market_info`)."""
        return wire.to_dict(await self.market_info(server))

    async def market_info(self, server: int) -> MarketInfo:
        """Return ``server``'s signed :class:`~sealgrid.service.wire.MarketInfo`, verified.

        This is how every client learns the market it bids in; :meth:`market` turns it into
        the market's rules.

        Raises:
            ServiceError: unreachable, or the message is not that server's, signed by it.
        """
        status, body = await self.call(server, "GET", "/v1/info")
        if status != 200:
            raise ServiceError(f"server {server}: HTTP {status}")
        try:
            found = wire.decode(MarketInfo, body)
        except wire.WireError as exc:
            raise ServiceError(f"server {server}'s market info is malformed: {exc}") from None
        key = self.registry.servers[server][1]
        if (
            found.party != server
            or found.signing_key != key
            or found.servers != self.servers
            or not wire.verify(found, key)
        ):
            raise ServiceError(f"server {server}'s market info does not verify")
        return found

    async def market(self, server: int = 0) -> tuple[MarketInfo, Market]:
        """Return ``server``'s verified market info and the market's rules read from it."""
        found = await self.market_info(server)
        return found, market_of(found)

    async def wait_statements(
        self,
        period: str,
        timeout: float,
        *,
        poll: float = 0.2,
        servers: Iterable[int] | None = None,
    ) -> list[PeriodStatement | None]:
        """Wait up to ``timeout`` seconds until each of ``servers`` (default: all) has published
        its statement of ``period``; by server index, None where one is still missing."""
        deadline = time.monotonic() + timeout
        wanted = set(range(self.servers) if servers is None else servers)
        got: list[PeriodStatement | None] = [None] * self.servers
        while True:
            missing = sorted(i for i in wanted if got[i] is None)
            for i, found in zip(missing, await self.statements(period, missing), strict=True):
                got[i] = found
            if all(got[i] for i in wanted) or time.monotonic() > deadline:
                return got
            await asyncio.sleep(poll)

    async def statements(
        self, period: str, servers: Iterable[int] | None = None
    ) -> list[PeriodStatement | None]:
        """Return the verified statements of ``period`` by ``servers`` (default: all), in that
        order; None where a server has none yet or cannot be reached."""

        async def one(server: int) -> PeriodStatement | None:
            try:
                return await self.statement(server, period)
            except ServiceError:
                return None

        chosen = range(self.servers) if servers is None else servers
        return list(await asyncio.gather(*(one(i) for i in chosen)))

    async def wait_ready(
        self,
        servers: Iterable[int],
        timeout: float,
        *,
        poll: float = 0.1,
        alive: Callable[[int], None] | None = None,
    ) -> None:
        """Wait until each of ``servers`` answers ``GET /v1/info``.

        ``alive(i)``, called before each try, may raise to stop waiting for a server that died.

        Raises:
            ServiceError: a server did not answer within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        for i in servers:
            while True:
                if alive is not None:
                    alive(i)
                try:
                    await self.market_info(i)
                    break
                except Exception as exc:
                    if time.monotonic() > deadline:
                        raise ServiceError(f"server {i} did not answer") from exc
                    await asyncio.sleep(poll)

    async def outputs(
        self, role: str, subject: str, period: str, key: Ed25519PrivateKey
    ) -> list[OutputShares]:
        """Fetch every server's verified share of one protected output."""

        async def one(server: int) -> OutputShares:
            status, body = await self.signed(
                server, "/v1/outputs",
                lambda nonce: auth_request(role, subject, period, nonce, key))
            if status != 200:
                raise ServiceError(f"server {server} refused: {_said(body)}")
            try:
                got = wire.decode(OutputShares, body)
            except wire.WireError as exc:
                raise ServiceError(f"server {server}'s output shares are malformed: {exc}"
                                   ) from None
            good = got.server == server and (got.role, got.subject, got.period) == (
                role,
                subject,
                period,
            )
            if not good or not wire.verify(got, self.registry.servers[server][1]):
                raise ServiceError(f"server {server}'s output shares do not verify")
            return got

        return list(await asyncio.gather(*(one(i) for i in range(self.servers))))


class HouseholdClient(Client):
    """A household agent: bids under a fresh pseudonym and fetches its own result."""

    def __init__(
        self,
        registry: Registry,
        ca: Path,
        household: str,
        key: Ed25519PrivateKey,
        session: aiohttp.ClientSession | None = None,
        *,
        fresh: bool = False,
        retry: Retry = Retry(),
    ) -> None:
        super().__init__(registry, ca, connections=10, session=session, fresh=fresh,
                         retry=retry)
        self.household = household
        self.key = key

    def fresh(self) -> HouseholdClient:
        """A client of the same household with a session of its own, sharing no connection
        with this one and closing its own when done (use with ``async with``): what is asked
        through it cannot be paired with this client's other requests by connection. Its own
        requests to one server (an enrolment, a challenge and the token request that spends
        it, all naming the household anyway) share one connection: one TLS handshake per
        server, not one per request."""
        return HouseholdClient(self.registry, self._ca, self.household, self.key,
                               retry=self.retry)

    async def _refusal(self, server: int, status: int, body: bytes) -> BidRejected:
        if status == 503:
            raise Unreachable(f"server {server} unavailable (HTTP 503)")
        try:
            error = json.loads(body)
            return BidRejected(Reason(error["error"]), error.get("detail", ""))
        except (ValueError, KeyError):
            raise ServiceError(f"server {server}: HTTP {status}") from None

    async def obtain(self, pseudonym: Pseudonym, unreachable: dict[int, str] | None = None
                     ) -> dict[int, BidRejected]:
        """Get every server's token for the pseudonym; return refusals (see
        :meth:`obtain_many`)."""
        return await self.obtain_many([pseudonym], unreachable)

    async def obtain_many(self, pseudonyms: Sequence[Pseudonym],
                          unreachable: dict[int, str] | None = None) -> dict[int, BidRejected]:
        """Get every server's tokens for ``pseudonyms`` (distinct periods): one challenge and
        one request per server, for every period that lacks its token. Return refusals.

        ``unreachable``, when given, collects the servers that could not be reached (their
        tokens are still missing) instead of raising :class:`Unreachable`.
        """
        refusals: dict[int, BidRejected] = {}

        async def one(server: int) -> None:
            try:
                await tokens(server)
            except Unreachable as exc:
                if unreachable is None:
                    raise
                unreachable[server] = str(exc)

        async def tokens(server: int) -> None:
            server_key = self.registry.servers[server][1]
            missing = [p for p in pseudonyms if server not in p.tokens]
            blindings: list[voprf.Blinding] = []

            def request(nonce: bytes) -> bytes:  # new blindings for each try
                raw, made = token_request(missing, self.household, self.key, nonce)
                blindings[:] = made
                return raw

            status, body = await self.signed(server, "/v1/pseudonyms", request)
            if status != 201:
                refusals[server] = await self._refusal(server, status, body)
                return
            grant = wire.decode(TokenGrant, body)
            try:
                accept_grant(missing, server, server_key, grant, blindings)
            except GrantError as exc:
                raise ServiceError(str(exc)) from exc

        await asyncio.gather(*(one(i) for i in range(self.servers)
                               if any(i not in p.tokens for p in pseudonyms)))
        return refusals

    async def submit(
        self,
        pseudonym: Pseudonym,
        payloads: Sequence[bytes],
        *,
        servers: Iterable[int] | None = None,
        latency: list[float] | None = None,
        unreachable: dict[int, str] | None = None,
    ) -> tuple[dict[int, Receipt], dict[int, BidRejected]]:
        """Send ``payloads[i]`` to every server ``i`` the pseudonym has a token for.

        ``servers`` limits the sending to those (default: all with a token); ``latency``, when
        given, collects each share's seconds from sending until the server's answer;
        ``unreachable``, when given, collects the servers that could not be reached (raising
        :class:`Unreachable` otherwise).
        """
        receipts: dict[int, Receipt] = {}
        refusals: dict[int, BidRejected] = {}

        async def one(server: int) -> None:
            raw = make_submission(pseudonym, server, payloads[server])
            t0 = time.perf_counter()
            status, body = await self.call(server, "POST", "/v1/bids", raw)
            if latency is not None:
                latency.append(time.perf_counter() - t0)
            if status != 201:
                refusals[server] = await self._refusal(server, status, body)
                return
            receipt = wire.decode(Receipt, body)
            key = self.registry.servers[server][1]
            if not check_receipt(receipt, server, key, raw, payloads[server]):
                raise ServiceError(f"server {server}'s receipt does not verify")
            receipts[server] = receipt

        async def guarded(server: int) -> None:
            try:
                await one(server)
            except Unreachable as exc:
                if unreachable is None:
                    raise
                unreachable[server] = str(exc)

        wanted = set(range(self.servers) if servers is None else servers)
        chosen = sorted(wanted & set(pseudonym.tokens))
        await asyncio.gather(*(guarded(i) for i in chosen))
        return receipts, refusals

    async def bid(
        self, period: str, payloads: Sequence[bytes], pseudonym: Pseudonym | None = None
    ) -> BidOutcome:
        """Bid ``payloads[i]`` to server ``i`` under one fresh pseudonym; check every receipt."""
        if len(payloads) != self.servers:
            raise ValueError(f"one payload per server ({self.servers}) is needed")
        pseudonym = pseudonym or Pseudonym.fresh(period)
        refusals = await self.obtain(pseudonym)
        receipts, more = await self.submit(pseudonym, payloads)
        return BidOutcome(pseudonym, receipts, {**refusals, **more})

    async def register(self) -> list[dict[str, Any]]:
        """Prove to every server that this household holds its registered key (liveness)."""

        async def one(server: int) -> dict[str, Any]:
            status, body = await self.signed(
                server, "/v1/hello",
                lambda nonce: auth_request("household", self.household, "", nonce, self.key))
            if status != 200:
                raise ServiceError(f"server {server} refused: {body.decode(errors='replace')}")
            data: dict[str, Any] = json.loads(body)
            return data

        return list(await asyncio.gather(*(one(i) for i in range(self.servers))))

    async def enrol(
        self, shares: Mapping[int, bytes], *, quiet_unreachable: bool = False
    ) -> tuple[dict[int, Enrolled], dict[int, BidRejected]]:
        """Send each server ``i`` in ``shares`` its share of the household's credential
        (``POST /v1/enrol``, signed by the household key); return the verified
        acknowledgements and the refusals, by server. With ``quiet_unreachable`` a server
        that cannot be reached is left out of both (it stays unacknowledged).

        Raises:
            ServiceError: unreachable, or an acknowledgement that is not that server's,
                signed by it, for this household and exactly the share sent.
        """
        acks: dict[int, Enrolled] = {}
        refusals: dict[int, BidRejected] = {}

        async def one(server: int) -> None:
            try:
                await enrol(server)
            except Unreachable:  # not acknowledged: the next named session enrols again
                if not quiet_unreachable:
                    raise

        async def enrol(server: int) -> None:
            share = shares[server]
            msg = wire.sign(Enrolment(self.household, server, share), self.key)
            status, body = await self.call(server, "POST", "/v1/enrol", wire.encode(msg))
            if status not in (200, 201):
                refusals[server] = await self._refusal(server, status, body)
                return
            try:
                got = wire.decode(Enrolled, body)
            except wire.WireError as exc:
                raise ServiceError(f"server {server}'s enrolment answer is malformed: {exc}"
                                   ) from None
            good = (got.server, got.household, got.share_sha256) == (
                server, self.household, wire.sha256(share))
            if not good or not wire.verify(got, self.registry.servers[server][1]):
                raise ServiceError(f"server {server}'s enrolment answer does not verify")
            acks[server] = got

        await asyncio.gather(*(one(i) for i in sorted(shares)))
        return acks, refusals

    async def send_readings(
        self, period: str, payloads: Mapping[int, bytes], meter_key: Ed25519PrivateKey
    ) -> tuple[dict[int, ReadingReceipt], dict[int, BidRejected]]:
        """Send each server ``i`` in ``payloads`` the meter's reading of ``period`` (its share
        of the household's claim, signed by the meter key; ``POST /v1/readings``); return the
        verified receipts and the refusals, by server.

        Raises:
            ServiceError: unreachable, or a receipt that is not that server's, signed by it,
                for this household, this period and exactly the shares sent.
        """
        receipts: dict[int, ReadingReceipt] = {}
        refusals: dict[int, BidRejected] = {}

        async def one(server: int) -> None:
            shares = payloads[server]
            msg = wire.sign(MeterReading(self.household, server, period, shares), meter_key)
            status, body = await self.call(server, "POST", "/v1/readings", wire.encode(msg))
            if status not in (200, 201):
                refusals[server] = await self._refusal(server, status, body)
                return
            try:
                got = wire.decode(ReadingReceipt, body)
            except wire.WireError as exc:
                raise ServiceError(f"server {server}'s reading receipt is malformed: {exc}"
                                   ) from None
            good = (got.server, got.period, got.household, got.shares_sha256) == (
                server, period, self.household, wire.sha256(shares))
            if not good or not wire.verify(got, self.registry.servers[server][1]):
                raise ServiceError(f"server {server}'s reading receipt does not verify")
            receipts[server] = got

        await asyncio.gather(*(one(i) for i in sorted(payloads)))
        return receipts, refusals

    async def issuers_match(self, pseudonym: Pseudonym) -> bool | None:
        """Check the issuer keys this pseudonym was given against the servers' statements.

        Returns None while a statement is missing, else whether every server published the
        key it issued this pseudonym's token under (a mismatch means it was singled out).
        """
        for server, digest in sorted(pseudonym.issuers.items()):
            found = await self.statement(server, pseudonym.period)
            if found is None:
                return None
            if found.issuer_sha256 != digest:
                return False
        return True

    async def result(self, pseudonym: Pseudonym) -> list[OutputShares]:
        """Fetch every server's share of this household's result for the pseudonym's period."""
        return await self.outputs(
            "household", wire.b64e(pseudonym.public), pseudonym.period, pseudonym.key
        )


def _said(body: bytes) -> str:
    """A server's refusal as one line: its message when it sent one, else the raw body."""
    try:
        found = json.loads(body)
    except ValueError:
        found = None
    if isinstance(found, dict) and isinstance(found.get("message"), str):
        code = found.get("error")
        return f"{code}: {found['message']}" if code and not found["message"].startswith(
            f"{code}:") else found["message"]
    return body.decode(errors="replace")


def market_of(info: MarketInfo) -> Market:
    """The market's rules as a server publishes them: the one reading of ``MarketInfo``."""
    g = info.price_grid
    return Market(
        PriceGrid.from_values(g.floor, g.ceiling, g.tick),
        info.max_quantity_wh,
        info.suppliers,
        info.period_seconds,
        info.min_accepted_per_side,
    )
