"""Threat: eavesdropping and impersonation of a server (mustafa2016 §IV); assumes loopback.

One real server (HTTPS, the market's demo CA) in this process. A household's client must
refuse a server that speaks plaintext, shows a certificate from another CA, an expired one,
one for another host, or another server's certificate; the server must refuse a peer that
speaks plaintext or shows a certificate from another CA on its internal route.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from sealgrid.service.api import serve
from sealgrid.service.client import Client, ServiceError
from sealgrid.service.config import ServerConfig, load_server_config
from sealgrid.service.keys import Registry, init_data_dir, server_tls_name
from sealgrid.service.server import Server

from .tls import leaf, new_ca


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Registry]:
    root = tmp_path / "data"
    registry = init_data_dir(root, households=1, base_port=_free_port())
    return root, registry


async def _with_server(cfg: ServerConfig, body: Callable[[], object]) -> None:
    server = Server(cfg)
    runner = await serve(server)
    try:
        await body()  # type: ignore[misc]
    finally:
        await runner.cleanup()
        await server.stop()


def _cfg(root: Path, **change: object) -> ServerConfig:
    cfg = load_server_config(root / "server-0" / "server.toml")
    return dataclasses.replace(cfg, **change)  # type: ignore[arg-type]


async def _household_can_talk(root: Path, registry: Registry) -> bool:
    async with Client(registry, root / "ca.crt") as c:
        try:
            await c.info(0)
        except ServiceError:
            return False
    return True


def test_the_genuine_server_is_accepted(data: tuple[Path, Registry]) -> None:
    root, registry = data

    async def body() -> None:
        assert await _household_can_talk(root, registry)

    asyncio.run(_with_server(_cfg(root), body))


@pytest.mark.parametrize("kind", ["control", "foreign_ca", "expired", "other_host"])
def test_a_household_refuses_a_bad_server_certificate(
    data: tuple[Path, Registry], tmp_path: Path, kind: str
) -> None:
    """Each certificate has exactly one fault; ``control`` has none and must be accepted."""
    root, registry = data
    right = (server_tls_name(0), "127.0.0.1")
    if kind == "foreign_ca":
        ca, key = new_ca(tmp_path / "evil")
        cert, ckey = leaf(ca, key, tmp_path / "leaf", cn="sealgrid server 0", hosts=right)
    else:
        cert, ckey = leaf(root / "ca.crt", root / "private" / "ca.key", tmp_path / "leaf",
                          cn="sealgrid server 0", expired=kind == "expired",
                          hosts=("other.invalid", "127.0.0.1") if kind == "other_host" else right)

    async def body() -> None:
        assert await _household_can_talk(root, registry) is (kind == "control"), kind

    asyncio.run(_with_server(_cfg(root, tls_cert=cert, tls_key=ckey), body))


def test_a_household_refuses_another_servers_certificate(data: tuple[Path, Registry]) -> None:
    """Found by this battery (all servers shared one name); fixed in 86a5b45."""
    root, registry = data
    s1 = root / "server-1"

    async def body() -> None:
        assert not await _household_can_talk(root, registry)

    asyncio.run(_with_server(_cfg(root, tls_cert=s1 / "tls.crt", tls_key=s1 / "tls.key"), body))


def test_plaintext_is_refused_both_ways(data: tuple[Path, Registry]) -> None:
    root, registry = data
    cfg = _cfg(root)

    async def body() -> None:
        # a plaintext client gets no HTTP answer from the TLS port
        reader, writer = await asyncio.open_connection(cfg.listen_host, cfg.listen_port)
        writer.write(b"GET /v1/info HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), 5)
        writer.close()
        assert b"HTTP/1.1 200" not in answer and b"party" not in answer
        # a household client never falls back to plaintext: an http:// URL is not used
        plain = Registry(servers=tuple((u.replace("https://", "http://"), k)
                                       for u, k in registry.servers),
                         households=registry.households, suppliers=registry.suppliers,
                         operators=registry.operators)
        async with Client(plain, root / "ca.crt") as c:
            with pytest.raises(ServiceError):
                await c.info(0)

    asyncio.run(_with_server(cfg, body))


def test_a_plaintext_server_is_refused(data: tuple[Path, Registry]) -> None:
    root, registry = data
    port = int(registry.servers[0][0].rpartition(":")[2])

    async def fake() -> None:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await r.read(1024)
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            await w.drain()
            w.close()

        srv = await asyncio.start_server(handle, "127.0.0.1", port)
        try:
            assert not await _household_can_talk(root, registry)
        finally:
            srv.close()
            await srv.wait_closed()

    asyncio.run(fake())


def test_the_internal_route_refuses_foreign_and_missing_client_certificates(
    data: tuple[Path, Registry], tmp_path: Path
) -> None:
    root, registry = data
    url = registry.servers[0][0] + "/v1/internal/periods/2026-11-22T21:45:00Z/bidset"
    ca, key = new_ca(tmp_path / "evil")
    evil_cert, evil_key = leaf(ca, key, tmp_path / "peer", cn="sealgrid server 1")
    ok_cert, ok_key = leaf(root / "ca.crt", root / "private" / "ca.key", tmp_path / "hh",
                           cn="a household")

    async def get(cert: Path | None, key_: Path | None) -> int | str:
        ctx = ssl.create_default_context(cafile=str(root / "ca.crt"))
        if cert is not None and key_ is not None:
            ctx.load_cert_chain(cert, key_)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s:
            try:
                async with s.get(url) as resp:
                    return resp.status
            except aiohttp.ClientError as exc:
                return type(exc).__name__

    async def body() -> None:
        assert await get(None, None) == 403
        assert await get(ok_cert, ok_key) == 403  # right CA, not a server's name
        assert not isinstance(await get(evil_cert, evil_key), int)  # handshake refused
        peer = root / "server-1"
        assert await get(peer / "tls.crt", peer / "tls.key") in (200, 409)

    asyncio.run(_with_server(_cfg(root), body))
