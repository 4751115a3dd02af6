"""Household, supplier and grid-operator clients; assumes the registry and its pinned certificates.

The household sends each server its own share payload under one fresh pseudonym, checks
every receipt's signature against the registry, and later asks each server for its share of
the household's result with a request signed by the pseudonym key. Suppliers and operators
ask likewise with their own keys. Under its own name the household enrols each server's share
of its settlement credential, and its smart meter sends each server its share of the period's
claim (signed by the meter key); every acknowledgement and receipt is checked.
Reconstructing values from shares belongs to :mod:`sealgrid.protocol`; this module moves and
checks signed messages.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealgrid.mechanism.bids import BidRejected, Reason
from sealgrid.mechanism.grid import PriceGrid
from sealgrid.mechanism.market import Market
from sealgrid.service import wire
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


def open_session(ca: Path, connections: int = 100, *, fresh: bool = False
                 ) -> aiohttp.ClientSession:
    """Open an HTTPS session that trusts only the certificates in ``ca`` (to share among clients).

    ``ca`` is the servers' pinned certificates (``servers.pem``, as in the registry): each is
    self-signed and its own trust anchor, and no CA exists.
    """
    ctx = ssl.create_default_context(cafile=str(ca))
    return aiohttp.ClientSession(  # fresh: every request on a connection of its own
        connector=aiohttp.TCPConnector(ssl=ctx, limit=connections, force_close=fresh),
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
    ) -> None:
        """``fresh``: the session this client opens puts every request on a new connection."""
        self.registry = registry
        self._ca = ca
        self._connections = connections
        self._session = session
        self._owned = session is None
        self._fresh = fresh

    async def __aenter__(self) -> Client:
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
        """Send one HTTPS request to ``server``; return the status and the raw body."""
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
                return resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Unreachable(f"server {server} unreachable: {type(exc).__name__}") from exc

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
            nonce = await self.challenge(server)
            raw = auth_request(role, subject, period, nonce, key)
            status, body = await self.call(server, "POST", "/v1/outputs", raw)
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
    ) -> None:
        super().__init__(registry, ca, connections=10, session=session, fresh=fresh)
        self.household = household
        self.key = key

    def fresh(self) -> HouseholdClient:
        """A client of the same household with a session of its own, sharing no connection
        with this one and closing its own when done (use with ``async with``): what is asked
        through it cannot be paired with this client's other requests by connection. Its own
        requests to one server (an enrolment, a challenge and the token request that spends
        it, all naming the household anyway) share one connection: one TLS handshake per
        server, not one per request."""
        return HouseholdClient(self.registry, self._ca, self.household, self.key)

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
            nonce = await self.challenge(server)
            raw, blindings = token_request(missing, self.household, self.key, nonce)
            status, body = await self.call(server, "POST", "/v1/pseudonyms", raw)
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
            nonce = await self.challenge(server)
            raw = auth_request("household", self.household, "", nonce, self.key)
            status, body = await self.call(server, "POST", "/v1/hello", raw)
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
