"""Threat: eavesdropping and impersonation of a server (mustafa2016 §IV); assumes loopback.

One real server (HTTPS; its self-signed certificate pinned in the registry and in
``servers.pem``, no CA) in this process. A household's client must refuse a server that
speaks plaintext, shows any certificate but the one pinned for it (self-signed by another key,
the same key re-signed, one issued under another server's pinned key, another server's), or a
pinned one that has expired or names another host; the server must refuse a peer that speaks
plaintext or shows a certificate not pinned for HTTPS on its internal route.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from sealgrid.service.api import serve
from sealgrid.service.client import Client, ServiceError
from sealgrid.service.config import ServerConfig, load_server_config
from sealgrid.service.connector import LoopConnector
from sealgrid.service.keys import TRUST, Registry, server_tls_name
from sealgrid.service.local import free_port_range
from sealgrid.service.server import Server
from sealgrid.service.setup import init_data_dir

from .tls import leaf, new_ca, self_signed


def _free_port() -> int:
    return free_port_range(1)  # below the ephemeral range: no outgoing connection takes it


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


async def _household_can_talk(root: Path, registry: Registry, trust: Path | None = None) -> bool:
    async with Client(registry, trust or root / TRUST) as c:
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


def _pin(root: Path, cert: Path, out: Path) -> Path:
    """A copy of servers.pem with server 0's pinned certificate replaced by ``cert``."""
    pinned = (root / TRUST).read_text()
    own = (root / "server-0" / "tls.crt").read_text()
    assert pinned.count(own) == 1
    out.write_text(pinned.replace(own, cert.read_text()))
    return out


KINDS = ["control", "unpinned", "reissued", "peer_issued", "foreign_ca", "expired", "other_host"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_household_refuses_a_bad_server_certificate(
    data: tuple[Path, Registry], tmp_path: Path, kind: str
) -> None:
    """Each certificate has exactly one fault; ``control`` has none and must be accepted.

    ``control``: a self-signed certificate minted like keygen's and pinned in the client's
    trust file. Not pinned: ``unpinned`` (the same minting), ``reissued`` (server 0's own key,
    re-signed), ``peer_issued`` (issued under server 1's pinned key, which is no CA),
    ``foreign_ca``. Pinned but faulty: ``expired``, ``other_host`` (no sealgrid-server-0).
    """
    root, registry = data
    right = (server_tls_name(0), "127.0.0.1")
    out, trust = tmp_path / "leaf", root / TRUST
    if kind == "peer_issued":
        s1 = root / "server-1"
        cert, ckey = leaf(s1 / "tls.crt", s1 / "tls.key", out, cn="sealgrid server 0", hosts=right)
    elif kind == "foreign_ca":
        ca, key = new_ca(tmp_path / "evil")
        cert, ckey = leaf(ca, key, out, cn="sealgrid server 0", hosts=right)
    else:
        own = root / "server-0" / "tls.key" if kind == "reissued" else None
        hosts = ("other.invalid", "127.0.0.1") if kind == "other_host" else right
        cert, ckey = self_signed(out, cn="sealgrid server 0", hosts=hosts, key_file=own,
                                 expired=kind == "expired")
        if kind in ("control", "expired", "other_host"):
            trust = _pin(root, cert, tmp_path / "pinned.pem")

    async def body() -> None:
        assert await _household_can_talk(root, registry, trust) is (kind == "control"), kind

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
        async with Client(plain, root / TRUST) as c:
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
    peer = root / "server-1"
    names = (server_tls_name(1), "127.0.0.1")
    resigned = self_signed(tmp_path / "resigned", cn="sealgrid server 1", hosts=names,
                           key_file=peer / "tls.key")
    unpinned = self_signed(tmp_path / "unpinned", cn="sealgrid server 1", hosts=names)
    mpc = (peer / ".config" / "party_1.crt", peer / ".config" / "party_1.key")

    async def get(cert: Path | None, key_: Path | None) -> int | str:
        ctx = ssl.create_default_context(cafile=str(root / TRUST))
        if cert is not None and key_ is not None:
            ctx.load_cert_chain(cert, key_)
        async with aiohttp.ClientSession(connector=LoopConnector(ctx)) as s:  # the peers' own
            try:
                async with s.get(url) as resp:
                    return resp.status
            except aiohttp.ClientError as exc:
                return type(exc).__name__

    async def body() -> None:
        assert await get(None, None) == 403
        assert not isinstance(await get(evil_cert, evil_key), int)  # handshake refused
        for cert, key_ in (unpinned, resigned, mpc):  # not the pinned HTTPS certificate
            assert not isinstance(await get(cert, key_), int), cert
        assert await get(peer / "tls.crt", peer / "tls.key") in (200, 409)

    asyncio.run(_with_server(_cfg(root), body))
