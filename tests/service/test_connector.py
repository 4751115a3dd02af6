"""The connections of sealgrid's clients (:mod:`sealgrid.service.connector`); assumes loopback.

On uvloop, aiohttp's own connector makes each socket in Python and hands it over to the loop;
when the peer resets the connection during the hand-over, the Python socket object keeps the
number of a descriptor libuv has closed, and its later close lands on whatever reuses that
number (seen here: a server's log file, then libuv's SIGABRT; ``tests/security/test_crash.py``
hit it about one run in five). sealgrid's connector has the loop make every socket itself:
no Python socket ever connects, so none can outlive its descriptor.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvloop
from aiohttp import web

from sealgrid.service.connector import AUDIT_EVENT, LoopConnector

from ..security.tls import self_signed

_seen: list[tuple[str, Any]] = []
_hooked = False


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event in ("socket.connect", AUDIT_EVENT):
        _seen.append((event, args))


def _audited() -> list[tuple[str, Any]]:
    global _hooked
    if not _hooked:  # an audit hook stays for the process's life; it only appends to a list
        sys.addaudithook(_hook)
        _hooked = True
    _seen.clear()
    return _seen


async def _with_http(body: Callable[[int], Awaitable[Any]]) -> Any:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        return await body(port)
    finally:
        await runner.cleanup()


def _connects(connector: Callable[[], aiohttp.BaseConnector], requests: int
              ) -> tuple[int, int, list[str]]:
    """On uvloop: ``requests`` requests over new connections made by ``connector()``; the
    Python sockets that connected to the server, the connections announced, the answers."""

    async def body(port: int) -> tuple[int, int, list[str]]:
        seen = _audited()
        answers = []
        async with aiohttp.ClientSession(connector=connector()) as session:
            for _ in range(requests):
                async with session.get(f"http://127.0.0.1:{port}/") as resp:
                    answers.append(await resp.text())
        python_sockets = sum(e == "socket.connect" and a[1][1] == port for e, a in seen)
        announced = sum(e == AUDIT_EVENT and a[1] == port for e, a in seen)
        return python_sockets, announced, answers

    async def main() -> tuple[int, int, list[str]]:
        result: tuple[int, int, list[str]] = await _with_http(body)
        return result

    return uvloop.run(main())


def test_no_python_socket_connects_on_uvloop() -> None:
    ctx = ssl.create_default_context()
    python_sockets, announced, answers = _connects(
        lambda: LoopConnector(ctx, force_close=True), 4)
    assert answers == ["ok"] * 4
    assert announced == 4  # one per connection: what `bench service` counts
    assert python_sockets == 0
    # what the test tells apart: aiohttp's own connector connects a Python socket each time
    assert _connects(lambda: aiohttp.TCPConnector(force_close=True), 4)[0] == 4


def test_a_pooled_connection_is_reused_and_announced_once() -> None:
    python_sockets, announced, answers = _connects(
        lambda: LoopConnector(ssl.create_default_context()), 3)
    assert answers == ["ok"] * 3 and announced == 1 and python_sockets == 0


def test_a_refused_connection_is_a_client_connector_error() -> None:
    async def main() -> BaseException:
        port = await _with_http(lambda port: asyncio.sleep(0, port))  # closed by now
        async with aiohttp.ClientSession(
                connector=LoopConnector(ssl.create_default_context())) as session:
            with pytest.raises(aiohttp.ClientConnectorError) as caught:
                await session.get(f"http://127.0.0.1:{port}/")
        return caught.value

    exc = uvloop.run(main())
    assert isinstance(exc.__cause__, ConnectionRefusedError)


def _tls_server_sees(tmp_path: Path, abort_ssl: bool | None) -> str:
    """What a TLS server reads after answering one keep-alive request, once the client's
    session is closed (``abort_ssl``: passed to the connector's close, None: its default)."""
    cert, key = self_signed(tmp_path / f"tls-{abort_ssl}", cn="server", hosts=("127.0.0.1",))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: list[str] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True, suppress_ragged_eofs=False) as tls:
            request = b""
            while b"\r\n\r\n" not in request:
                request += tls.recv(4096)
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            try:
                seen.append("close_notify" if tls.recv(1) == b"" else "data")
            except ssl.SSLEOFError:
                seen.append("aborted")  # the TCP connection ended with no close_notify

    thread = threading.Thread(target=serve)
    thread.start()

    async def main() -> None:
        connector = LoopConnector(ssl.create_default_context(cafile=str(cert)))
        session = aiohttp.ClientSession(connector=connector)
        async with session.get(f"https://127.0.0.1:{port}/") as resp:
            assert await resp.text() == "ok"
        if abort_ssl is None:
            await session.close()
        else:
            await connector.close(abort_ssl=abort_ssl)
            await session.close()

    try:
        uvloop.run(main())
    finally:
        thread.join(10)
        listener.close()
    return seen[0]


def test_a_closed_session_aborts_its_tls_connections(tmp_path: Path) -> None:
    assert _tls_server_sees(tmp_path, None) == "aborted"
    # what the test tells apart: a graceful close sends the server a close_notify
    assert _tls_server_sees(tmp_path, False) == "close_notify"
