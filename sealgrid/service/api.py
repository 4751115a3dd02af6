"""The HTTP API of a computation server; assumes aiohttp and a :class:`Server` behind it.

JSON in, JSON out; every message body is the canonical wire form of
:mod:`sealgrid.service.wire`. A refusal is ``{"error": <Reason value>, "message": …}`` with
an HTTP status that fits it. The OpenAPI 3 description is :data:`OPENAPI` (served at
``/openapi.json``, kept in docs/openapi.json and explained in docs/api.md).

:func:`serve` holds the listener to the server's
:class:`~sealgrid.service.config.ConnectionLimits`: connections are counted per client
address and in all when they are accepted (one over a bound is closed before its TLS
handshake, which costs the most memory), TLS runs with its own timeouts, aiohttp closes a
connection that sends no complete request headers in the idle time, and every request's body
must arrive in its own time. A client's failures (an upload cut off, bytes that are not HTTP,
a timeout) are logged as one short line, at most one per kind every few seconds, never as a
traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import socket
import ssl
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from sealgrid.mechanism.bids import BidRejected, Reason
from sealgrid.service import metrics, status, wire
from sealgrid.service.config import ConnectionLimits
from sealgrid.service.intake import Rejected
from sealgrid.service.keys import server_common_name
from sealgrid.service.openapi import OPENAPI, REFUSAL_STATUS
from sealgrid.service.server import Server
from sealgrid.service.storage import StorageError

SERVER_KEY: web.AppKey[Server] = web.AppKey("server", Server)
log = logging.getLogger("sealgrid.http")

#: The ``Retry-After`` of a ``503 unavailable`` (the database could not store a request).
RETRY_AFTER_SECONDS = 1

#: The HTTP status of each refusal reason, as the API document states it (400 for another).
HTTP_STATUS = REFUSAL_STATUS


def refusal(rejected: Rejected) -> web.Response:
    """Return the HTTP response for a refusal."""
    text = str(BidRejected(rejected.reason, rejected.detail))
    return web.json_response(
        {"error": rejected.reason.value, "message": text, "detail": rejected.detail},
        status=HTTP_STATUS.get(rejected.reason, 400),
    )


def error(code: str, text: str, status: int) -> web.Response:
    """Return an error that is not a bid refusal (``unavailable``, ``not_finished``, …)."""
    return web.json_response({"error": code, "message": text}, status=status)


def _unavailable(text: str) -> web.Response:
    """``503 unavailable`` with ``Retry-After``: the database could not store a request (or,
    on the servers' internal routes, read what a peer asked for)."""
    busy = error("unavailable", text, 503)
    busy.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return busy


def message(msg: Any, status: int = 200) -> web.Response:
    """Return a wire message as the response body."""
    return web.Response(body=wire.encode(msg), status=status, content_type="application/json")


async def challenge(request: web.Request) -> web.Response:
    """POST /v1/challenge: a fresh nonce to sign into the next request."""
    issued = request.app[SERVER_KEY].challenge()
    if isinstance(issued, Rejected):
        return refusal(issued)
    return web.json_response({"nonce": wire.b64e(issued.nonce), "expires": wire_time(issued)})


def wire_time(issued: Any) -> str:
    """Format a challenge's expiry."""
    from sealgrid.service.schedule import iso

    return iso(issued.expires)


async def issuer(request: web.Request) -> web.Response:
    """GET /v1/periods/{period}/issuer: this server's signed issuer key for an open period."""
    found = await request.app[SERVER_KEY].issuer_key(request.match_info["period"])
    if isinstance(found, Rejected):
        return refusal(found)
    return message(found)


async def _stored(
    request: web.Request, action: Callable[[bytes], Awaitable[Any]], what: str
) -> web.Response:
    """Run a storing ``action`` on the body: 201 with its message, a refusal, or 503."""
    try:
        result = await action(await request.read())
    except StorageError:  # nothing was stored: the client may send it again, a little later
        return _unavailable(f"{what} could not be stored; retry")
    if isinstance(result, Rejected):
        return refusal(result)
    return message(result, status=201)


async def pseudonyms(request: web.Request) -> web.Response:
    """POST /v1/pseudonyms: a household's tokens (VOPRF evaluations), one per period."""
    return await _stored(request, request.app[SERVER_KEY].grant, "the token grant")


async def submit_bid(request: web.Request) -> web.Response:
    """POST /v1/bids: submit one bid share; 201 with the signed receipt once stored."""
    return await _stored(request, request.app[SERVER_KEY].submit, "the bid")


async def _answer(request: web.Request, handle: Any) -> web.Response:
    """Hand the request body to ``handle``; answer its signed message, or its refusal."""
    result = await handle(await request.read())
    if isinstance(result, Rejected):
        return refusal(result)
    return message(result)


async def outputs(request: web.Request) -> web.Response:
    """POST /v1/outputs: this server's shares of a result, for its rightful reader only."""
    return await _answer(request, request.app[SERVER_KEY].output)


async def enrol(request: web.Request) -> web.Response:
    """POST /v1/enrol: a household's share of its settlement credential (signed by it)."""
    return await _answer(request, request.app[SERVER_KEY].enrol)


async def readings(request: web.Request) -> web.Response:
    """POST /v1/readings: a smart meter's signed reading of an ended period, as shares."""
    return await _answer(request, request.app[SERVER_KEY].reading)


async def settlement_set(request: web.Request) -> web.Response:
    """GET /v1/internal/periods/{period}/settlement-set: for the other servers only."""
    server = request.app[SERVER_KEY]
    if not _from_peer(request):
        return error("forbidden", "only the other computation servers may ask", 403)
    period = request.match_info["period"]
    try:
        server.calendar.reading_deadline(period)
    except ValueError as exc:
        return refusal(Rejected(Reason.WRONG_PERIOD, f"not a trading period: {exc}"))
    try:
        found = await server.own_settlement_set(period)
    except StorageError:  # the peer asks again until its deadline
        return _unavailable("the settlement set could not be read; retry")
    if found is None:
        return error("not_closed", "the readings of this period are not closed", 409)
    return message(found)


async def hello(request: web.Request) -> web.Response:
    """POST /v1/hello: a household proves it holds its registered key, now (liveness)."""
    result = await request.app[SERVER_KEY].hello(await request.read())
    if isinstance(result, Rejected):
        return refusal(result)
    return web.json_response(result)


async def statement(request: web.Request) -> web.Response:
    """GET /v1/periods/{period}: the signed statement of a finished period (public)."""
    period = request.match_info["period"]
    server = request.app[SERVER_KEY]
    try:
        server.schedule.parse_period(period)
    except ValueError as exc:
        return refusal(Rejected(Reason.WRONG_PERIOD, f"not a trading period: {exc}"))
    found = await server.statement(period)
    if found is None:
        return error("not_finished", "this period has not been cleared yet", 404)
    return message(found)


def _from_peer(request: web.Request) -> bool:
    """Whether the client certificate (mutual TLS) is another computation server's."""
    server = request.app[SERVER_KEY]
    peercert = request.transport.get_extra_info("peercert") if request.transport else None
    names = {
        value
        for rdn in (peercert or {}).get("subject", ())
        for key, value in rdn
        if key == "commonName"
    }
    return bool(names & {server_common_name(i) for i in range(len(server.cfg.servers))})


def _peer_period(request: web.Request) -> str | web.Response:
    """The trading period an internal route names, or the answer when the caller is not
    another computation server (403) or the path names no period (422 wrong_period)."""
    if not _from_peer(request):
        return error("forbidden", "only the other computation servers may ask", 403)
    period: str = request.match_info["period"]
    why = request.app[SERVER_KEY].intake.bidset_refusal(period)
    return refusal(why) if why is not None else period


async def _own_set(request: web.Request,
                   read: Callable[[Any, str], Awaitable[Any]]) -> web.Response:
    """This server's signed bid set of the route's period, whole or as its digest
    (``read(server, period)``), for the other servers only."""
    server = request.app[SERVER_KEY]
    period = _peer_period(request)
    if isinstance(period, web.Response):
        return period
    try:
        found = await read(server, period)
    except StorageError:  # the peer asks again until its deadline
        return _unavailable("the bid set could not be read; retry")
    if found is None:
        return error("not_closed", "the gate of this period has not closed", 409)
    return message(found)


async def bidset(request: web.Request) -> web.Response:
    """GET /v1/internal/periods/{period}/bidset: for the other servers only (mutual TLS)."""
    return await _own_set(request, lambda server, period: server.own_bidset(period))


async def bidset_digest(request: web.Request) -> web.Response:
    """GET /v1/internal/periods/{period}/bidset-digest: the bid set's count and digest, for
    the other servers only (mutual TLS); a peer whose own differs asks for the whole set."""
    return await _own_set(request, lambda server, period: server.own_digest(period))


async def pending(request: web.Request) -> web.Response:
    """GET /v1/internal/periods/{period}/pending: the leader asks which stored bids of a
    period still open no segment holds yet (the other servers only, mutual TLS)."""
    server = request.app[SERVER_KEY]
    period = _peer_period(request)
    if isinstance(period, web.Response):
        return period
    try:
        found = await server.own_pending(period)
    except StorageError:  # the leader asks again at its next segment
        return _unavailable("the pending set could not be read; retry")
    if found is None:
        return error("no_segments", "this period takes no segment (closing, or streaming"
                     " validation is off here)", 409)
    return message(found)


async def segments(request: web.Request) -> web.Response:
    """POST /v1/internal/periods/{period}/segments: the leader's signed plan of a period's
    next segment; this server records it and validates it with the others."""
    server = request.app[SERVER_KEY]
    period = _peer_period(request)
    if isinstance(period, web.Response):
        return period
    try:
        why = await server.accept_segment(await request.read(), period)
    except StorageError:  # nothing was recorded: the leader may send it again
        return _unavailable("the segment could not be recorded; retry")
    if why is not None:
        return refusal(why)
    return web.json_response({"accepted": True})


async def info(request: web.Request) -> web.Response:
    """GET /v1/info: this server's signed ``MarketInfo``: the market and the server."""
    return message(request.app[SERVER_KEY].info())


async def openapi(request: web.Request) -> web.Response:
    """GET /openapi.json: the OpenAPI 3 description of this API."""
    return web.json_response(OPENAPI)


async def _anonymous(request: web.Request, response: web.StreamResponse) -> None:
    """Send no ``Server`` header (aiohttp names itself, its version and Python's)."""
    response.headers.popall("Server", None)


def build_app(server: Server) -> web.Application:
    """Return the aiohttp application for ``server``."""
    max_size = server.max_body_bytes
    body_time = server.cfg.connections.body_timeout_seconds
    app = web.Application(client_max_size=max_size, middlewares=[_body_within(body_time)])
    app[SERVER_KEY] = server
    app.on_response_prepare.append(_anonymous)
    app.router.add_post("/v1/challenge", challenge)
    app.router.add_post("/v1/pseudonyms", pseudonyms)
    app.router.add_get("/v1/periods/{period}/issuer", issuer)
    app.router.add_post("/v1/bids", submit_bid)
    app.router.add_post("/v1/outputs", outputs)
    app.router.add_post("/v1/hello", hello)
    app.router.add_post("/v1/enrol", enrol)
    app.router.add_post("/v1/readings", readings)
    app.router.add_get("/v1/periods/{period}", statement)
    app.router.add_get("/v1/internal/periods/{period}/bidset", bidset)
    app.router.add_get("/v1/internal/periods/{period}/bidset-digest", bidset_digest)
    app.router.add_get("/v1/internal/periods/{period}/settlement-set", settlement_set)
    app.router.add_get("/v1/internal/periods/{period}/pending", pending)
    app.router.add_post("/v1/internal/periods/{period}/segments", segments)
    app.router.add_get("/v1/info", info)
    app.router.add_get("/openapi.json", openapi)
    metrics.install(app, server)  # /metrics, /healthz and the counting middleware
    app.router.add_get("/status", status.page)  # the operators' read-only page
    return app


async def serve(server: Server, ready: Any = None) -> web.AppRunner:
    """Start ``server`` and its HTTPS listener; return the runner (call ``cleanup`` to stop).

    The listener keeps to ``server.cfg.connections`` (see the module's docstring).
    """
    await server.start()
    limits = server.cfg.connections
    runner = web.AppRunner(
        build_app(server),
        access_log=None,
        keepalive_timeout=limits.idle_timeout_seconds,  # also bounds slow request headers
        lingering_time=min(10.0, limits.body_timeout_seconds),
        logger=_client_errors_quiet(),
    )
    await runner.setup()
    ctx: ssl.SSLContext = server.tls_context()
    site = _GuardedSite(runner, server.cfg.listen_host, server.cfg.listen_port, ctx, limits,
                        reuse_port=server.shared)
    await site.start()
    return runner


def open_connections(runner: web.AppRunner) -> int:
    """How many connections the listeners of ``runner`` (made by :func:`serve`) hold now."""
    return sum(site.guard.open for site in runner.sites if isinstance(site, _GuardedSite))


# --------------------------------------------------------------------------- hostile clients


class _Sparse:
    """Log one line per kind of client failure at most every ``every`` seconds, with the
    number of the others left out since (a client must not be able to flood the log)."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._next: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def __call__(self, kind: str, text: str, *args: Any) -> None:
        now = time.monotonic()
        if now < self._next.get(kind, 0.0):
            self._left_out[kind] = self._left_out.get(kind, 0) + 1
            return
        self._next[kind] = now + self.every
        left_out = self._left_out.pop(kind, 0)
        more = f" (and {left_out} more since)" if left_out else ""
        log.info(text + more, *args)


_sparse = _Sparse()

#: What a client causes (not a fault of the server's): logged as one line, no traceback.
_CLIENT_FAULTS = (ConnectionError, TimeoutError, HttpProcessingError, web.RequestPayloadError)


class _QuietClientFaults(logging.Filter):
    """aiohttp logs a client's broken request with its traceback: keep one short line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, _CLIENT_FAULTS):
            return True  # a fault of the server's keeps its traceback
        _sparse(f"aiohttp {type(exc).__name__}", "a client's request failed: %s: %s",
                type(exc).__name__, str(exc)[:120])
        return False


def _client_errors_quiet() -> logging.Logger:
    """The logger aiohttp's request handlers log to, with :class:`_QuietClientFaults`."""
    server_log = logging.getLogger("sealgrid.http.aiohttp")
    if not any(isinstance(f, _QuietClientFaults) for f in server_log.filters):
        server_log.addFilter(_QuietClientFaults())
    return server_log


def _body_within(seconds: float) -> Any:
    """A middleware that reads every request's body within ``seconds`` before its handler.

    A body that takes longer ends its connection (a slow-body client holds nothing); an upload
    cut off by its client is logged as one line and answered 400 (to nobody) instead of
    reaching a handler, whose error would be logged with a traceback.
    """

    @web.middleware
    async def body_within(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.body_exists:
            try:
                async with asyncio.timeout(seconds):
                    await request.read()  # kept: the handler's own read() returns it
            except TimeoutError:
                _sparse("slow body", "closed a connection from %s: its request body took "
                        "over %g s", request.remote, seconds)
                if request.transport is not None:
                    request.transport.abort()
                raise web.HTTPRequestTimeout() from None
            except (ConnectionError, web.RequestPayloadError) as exc:
                _sparse("cut body", "a request body from %s was cut off: %s",
                        request.remote, str(exc)[:120])
                raise web.HTTPBadRequest() from None
        return await handler(request)

    return body_within


class _GuardedSite(web.BaseSite):
    """A TCP listener whose connections :class:`_Guard` admits, then hands to TLS and aiohttp.

    It accepts from its own listening sockets: a connection is counted in (or closed) with
    its client's address before anything is read from it, and TLS is then started over it
    by the event loop itself (``connect_accepted_socket``), so that no byte of the handshake
    passes through a protocol that is about to be replaced.
    """

    def __init__(self, runner: web.BaseRunner, host: str, port: int, ctx: ssl.SSLContext,
                 limits: ConnectionLimits, reuse_port: bool = False) -> None:
        super().__init__(runner, backlog=1024)
        self._host, self._port = host, port
        self._reuse_port = reuse_port  # several workers of one server share the port
        assert runner.server is not None
        self.guard = _Guard(limits, runner.server, ctx)
        self._listening: list[socket.socket] = []

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        self._listening = _listen(self._host, self._port, self._backlog, self._reuse_port)
        for sock in self._listening:
            self.guard.listen(sock)
        self.guard.start()

    async def stop(self) -> None:
        for sock in self._listening:  # no new connections
            self.guard.unlisten(sock)
            sock.close()
        self._listening = []
        await super().stop()
        self.guard.stop()


def _listen(host: str, port: int, backlog: int, reuse_port: bool) -> list[socket.socket]:
    """Listening sockets on every address ``host`` names, as ``loop.create_server`` makes
    them (an address family this host cannot open is skipped).

    Raises:
        OSError: an address could not be bound (its message names it), or none could be.
    """
    made: list[socket.socket] = []
    seen = set()
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(
                host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE):
            if (family, address) in seen:
                continue
            seen.add((family, address))
            try:
                sock = socket.socket(family, kind, proto)
            except OSError:  # IPv6 turned off on this host, say
                continue
            made.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:  # its IPv4 twin, if any, binds on its own
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot listen on {address[:2]!r}: {exc.strerror}"
                              ) from None
            sock.listen(backlog)
            sock.setblocking(False)
        if not made:
            raise OSError(f"no address of {host!s} can be listened on")
    except OSError:
        for sock in made:
            sock.close()
        raise
    return made


#: Connections taken from one listening socket each time it is ready (asyncio's figure).
ACCEPTS_PER_WAKEUP = 100
#: accept() errors that mean the process is out of a resource: the backlog waits a second.
_OUT_OF = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class _Guard:
    """Counts connections per client address and in all, and admits them within the limits.

    It accepts the connections of its listening sockets, counts each in (:meth:`admit`) or
    closes it at once, and starts TLS over the admitted ones; their protocol
    (:class:`_Connection`) stands in front of aiohttp's. A periodic reaper ends any
    connection that has received nothing for the idle and the body time together while
    aiohttp still holds it (a client that reads no answer).
    """

    def __init__(self, limits: ConnectionLimits, handlers: Callable[[], asyncio.Protocol],
                 ctx: ssl.SSLContext) -> None:
        self.limits = limits
        self.handlers = handlers
        self.ctx = ctx
        self._by_client: dict[str, int] = {}
        self._open: set[_Connection] = set()
        self._reaper: asyncio.Task[None] | None = None

    @property
    def open(self) -> int:
        """How many connections are held now (in a TLS handshake or after)."""
        return len(self._open)

    def listen(self, sock: socket.socket) -> None:
        """Accept the connections of the listening ``sock`` from now on."""
        asyncio.get_running_loop().add_reader(sock.fileno(), self._accept, sock)

    def unlisten(self, sock: socket.socket) -> None:
        """Accept no more connections of ``sock``."""
        asyncio.get_running_loop().remove_reader(sock.fileno())

    def _accept(self, listening: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                sock, address = listening.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in _OUT_OF:  # that connection failed (accept(2)): the next
                    _sparse("accept", "could not accept a connection: %s", exc)
                    continue
                _sparse("accept", "could not accept a connection: %s; trying again in 1 s",
                        exc)
                self.unlisten(listening)  # the backlog holds them meanwhile
                loop.call_later(1.0, self._relisten, listening)
                return
            sock.setblocking(False)
            conn = _Connection(self, str(address[0]) if address else "?")
            if not self.admit(conn):
                _reset(sock)
                continue
            conn.handshake = loop.create_task(self._handshake(conn, sock))
            conn.handshake.add_done_callback(functools.partial(self._shaken, conn, sock))

    def _relisten(self, sock: socket.socket) -> None:
        if sock.fileno() >= 0:  # not closed by a stop meanwhile
            self.listen(sock)

    async def _handshake(self, conn: _Connection, sock: socket.socket) -> None:
        limits = self.limits
        conn.handed = True  # from here the loop closes ``sock`` if TLS fails
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: conn, sock, ssl=self.ctx,
                ssl_handshake_timeout=limits.tls_timeout_seconds,
                ssl_shutdown_timeout=limits.tls_timeout_seconds,
            )
        except (OSError, TimeoutError):  # ssl.SSLError is an OSError; so is a reset
            return

    def _shaken(self, conn: _Connection, sock: socket.socket, task: asyncio.Task[None]) -> None:
        """The handshake task of ``conn`` ended: in TLS, or in failure (counted out)."""
        conn.handshake = None
        if not task.cancelled() and task.exception() is not None:
            _sparse("tls", "a TLS handshake failed: %r", task.exception())
        if conn.transport is None:  # no TLS: failed, timed out, or cancelled by a stop
            if not conn.handed:
                sock.close()
            self.release(conn)

    def admit(self, conn: _Connection) -> bool:
        """Count ``conn`` in if both limits allow it; return whether they did."""
        held = self._by_client.get(conn.client, 0)
        if len(self._open) >= self.limits.max_connections:
            _sparse("full", "refused a connection from %s: %d open in all (the limit)",
                    conn.client, len(self._open))
            return False
        if held >= self.limits.max_per_client:
            _sparse("client full", "refused a connection from %s: %d open from it (the limit)",
                    conn.client, held)
            return False
        self._by_client[conn.client] = held + 1
        self._open.add(conn)
        return True

    def release(self, conn: _Connection) -> None:
        """Count ``conn`` out (once)."""
        if conn not in self._open:
            return
        self._open.discard(conn)
        left = self._by_client[conn.client] - 1
        if left:
            self._by_client[conn.client] = left
        else:
            del self._by_client[conn.client]

    def start(self) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self._reap())

    def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for conn in list(self._open):
            if conn.app is None:  # still in its TLS handshake: aiohttp does not know it
                conn.abort()

    async def _reap(self) -> None:
        quiet = self.limits.idle_timeout_seconds + self.limits.body_timeout_seconds
        every = min(1.0, self.limits.idle_timeout_seconds / 4)
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            for conn in [c for c in self._open if c.app is not None and now - c.last_in > quiet]:
                _sparse("stuck", "closed a connection from %s: nothing received for %g s",
                        conn.client, quiet)
                conn.abort()


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with a reset, as ``transport.abort()`` does: no graceful close."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class _Connection(asyncio.Protocol):
    """One admitted connection: the protocol over TLS once its handshake is done, standing in
    front of aiohttp's request handler; ``connection_lost`` counts it out."""

    def __init__(self, guard: _Guard, client: str) -> None:
        self.guard = guard
        self.client = client
        self.last_in = time.monotonic()
        self.app: asyncio.Protocol | None = None  # aiohttp's handler, once TLS is up
        self.transport: asyncio.Transport | None = None
        self.handshake: asyncio.Task[None] | None = None  # until TLS is up or failed
        self.handed = False  # whether the event loop has taken the socket over

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is not None:  # a second call: never made by the loop
            return
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it
        self.last_in = time.monotonic()
        app = self.app = self.guard.handlers()
        app.connection_made(transport)

    def abort(self) -> None:
        """End the connection now (no TLS close)."""
        if self.transport is not None:
            self.transport.abort()
        elif self.handshake is not None:
            self.handshake.cancel()

    def data_received(self, data: bytes) -> None:
        self.last_in = time.monotonic()
        if self.app is not None:
            self.app.data_received(data)

    def eof_received(self) -> bool | None:
        return self.app.eof_received() if self.app is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.release(self)
        if self.app is not None:
            self.app.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.app is not None:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        if self.app is not None:
            self.app.resume_writing()


async def run_until_stopped(server: Server, stop: asyncio.Event,
                            listening: Callable[[], None] | None = None) -> None:
    """Serve until ``stop`` is set, then shut down cleanly; ``listening`` is called once the
    port is bound."""
    runner = await serve(server)
    if listening is not None:
        listening()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await server.stop()
