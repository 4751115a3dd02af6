"""The HTTP API of a computation server; assumes aiohttp and a :class:`Server` behind it.

JSON in, JSON out; every message body is the canonical wire form of
:mod:`sealgrid.service.wire`. A refusal is ``{"error": <Reason value>, "message": …}`` with
an HTTP status that fits it. The OpenAPI 3 description is :data:`OPENAPI` (served at
``/openapi.json``, kept in docs/openapi.json and explained in docs/api.md).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from sealgrid.mechanism.bids import BidRejected, Reason
from sealgrid.service import wire
from sealgrid.service.intake import ENVELOPE_BYTES, Rejected
from sealgrid.service.keys import server_common_name
from sealgrid.service.openapi import OPENAPI
from sealgrid.service.server import Server
from sealgrid.service.storage import StorageError

SERVER_KEY: web.AppKey[Server] = web.AppKey("server", Server)

HTTP_STATUS = {
    Reason.MALFORMED: 400,
    Reason.UNSIGNED: 401,
    Reason.BAD_SIGNATURE: 401,
    Reason.REPLAYED: 409,
    Reason.DUPLICATE_PSEUDONYM: 409,
    Reason.LATE: 422,
    Reason.WRONG_PERIOD: 422,
    Reason.TOO_FREQUENT: 429,
}


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


def message(msg: Any, status: int = 200) -> web.Response:
    """Return a wire message as the response body."""
    return web.Response(body=wire.encode(msg), status=status, content_type="application/json")


async def challenge(request: web.Request) -> web.Response:
    """POST /v1/challenge: a fresh nonce to sign into the next request."""
    issued = request.app[SERVER_KEY].challenge()
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
    except StorageError:
        return error("unavailable", f"{what} could not be stored; retry", 503)
    if isinstance(result, Rejected):
        return refusal(result)
    return message(result, status=201)


async def pseudonyms(request: web.Request) -> web.Response:
    """POST /v1/pseudonyms: a blind signature on a household's pseudonym for one period."""
    return await _stored(request, request.app[SERVER_KEY].grant, "the pseudonym grant")


async def submit_bid(request: web.Request) -> web.Response:
    """POST /v1/bids: submit one bid share; 201 with the signed receipt once stored."""
    return await _stored(request, request.app[SERVER_KEY].submit, "the bid")


async def outputs(request: web.Request) -> web.Response:
    """POST /v1/outputs: this server's shares of a result, for its rightful reader only."""
    result = await request.app[SERVER_KEY].output(await request.read())
    if isinstance(result, Rejected):
        return refusal(result)
    return message(result)


async def enrol(request: web.Request) -> web.Response:
    """POST /v1/enrol: a household's share of its settlement credential (signed by it)."""
    result = await request.app[SERVER_KEY].enrol(await request.read())
    if isinstance(result, Rejected):
        return refusal(result)
    return message(result)


async def readings(request: web.Request) -> web.Response:
    """POST /v1/readings: a smart meter's signed reading of an ended period, as shares."""
    result = await request.app[SERVER_KEY].reading(await request.read())
    if isinstance(result, Rejected):
        return refusal(result)
    return message(result)


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
    found = await server.own_settlement_set(period)
    if found is None:
        return error("not_closed", "the readings of this period are not closed", 409)
    return message(found)


async def hello(request: web.Request) -> web.Response:
    """POST /v1/hello: a household proves it holds its registered key, now (liveness)."""
    result = request.app[SERVER_KEY].hello(await request.read())
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


async def bidset(request: web.Request) -> web.Response:
    """GET /v1/internal/periods/{period}/bidset: for the other servers only (mutual TLS)."""
    server = request.app[SERVER_KEY]
    if not _from_peer(request):
        return error("forbidden", "only the other computation servers may ask", 403)
    period = request.match_info["period"]
    why = server.intake.bidset_refusal(period)
    if why is not None:  # not a period
        return refusal(why)
    found = await server.own_bidset(period)
    if found is None:
        return error("not_closed", "the gate of this period has not closed", 409)
    return message(found)


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
    max_size = 2 * server.cfg.market.limits.max_payload_bytes + 2 * ENVELOPE_BYTES
    app = web.Application(client_max_size=max_size)
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
    app.router.add_get("/v1/internal/periods/{period}/settlement-set", settlement_set)
    app.router.add_get("/v1/info", info)
    app.router.add_get("/openapi.json", openapi)
    return app


async def serve(server: Server, ready: Any = None) -> web.AppRunner:
    """Start ``server`` and its HTTPS listener; return the runner (call ``cleanup`` to stop)."""
    await server.start()
    runner = web.AppRunner(build_app(server), access_log=None)
    await runner.setup()
    ctx: ssl.SSLContext = server.tls_context()
    site = web.TCPSite(
        runner, server.cfg.listen_host, server.cfg.listen_port, ssl_context=ctx, backlog=1024
    )
    await site.start()
    return runner


async def run_until_stopped(server: Server, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set, then shut down cleanly."""
    runner = await serve(server)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await server.stop()
