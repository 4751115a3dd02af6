"""Each server's certificate names that server alone: a client refuses another server's."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from sealgrid.service.api import serve
from sealgrid.service.client import Client, ServiceError
from sealgrid.service.config import load_server_config
from sealgrid.service.keys import TRUST
from sealgrid.service.local import free_port_range
from sealgrid.service.server import Server
from sealgrid.service.setup import init_data_dir


def _port() -> int:
    return free_port_range(1)  # below the ephemeral range: no outgoing connection takes it


@pytest.mark.parametrize("own", [True, False])
def test_a_client_accepts_only_the_server_it_addresses(tmp_path, own: bool) -> None:
    root = tmp_path / "d"
    registry = init_data_dir(root, households=1, base_port=_port())
    cfg = load_server_config(root / "server-0" / "server.toml")
    if not own:  # server 0's address, server 1's (pinned, same host) certificate
        s1 = root / "server-1"
        cfg = dataclasses.replace(cfg, tls_cert=s1 / "tls.crt", tls_key=s1 / "tls.key")

    async def main() -> None:
        server = Server(cfg)
        runner = await serve(server)
        try:
            async with Client(registry, root / TRUST) as client:
                if own:
                    assert (await client.info(0))["party"] == 0
                else:
                    with pytest.raises(ServiceError):
                        await client.info(0)
        finally:
            await runner.cleanup()
            await server.stop()

    asyncio.run(main())


def test_a_server_gives_no_session_ticket_to_resume_with(tmp_path) -> None:
    """A resumed TLS session would link a household's connections (its token fetch and its
    pseudonymous bid): the server hands out no ticket to resume from."""
    import ssl

    root = tmp_path / "d"
    init_data_dir(root, households=1, base_port=_port())
    cfg = load_server_config(root / "server-0" / "server.toml")

    async def main() -> tuple[bool, bool]:
        server = Server(cfg)
        runner = await serve(server)
        try:
            ctx = ssl.create_default_context(cafile=str(root / TRUST))
            ctx.check_hostname = False
            host, port = cfg.listen_host, cfg.listen_port
            reader, writer = await asyncio.open_connection(host, port, ssl=ctx)
            writer.write(b"GET /v1/info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            await writer.drain()
            answer = await reader.read()  # after the handshake, where tickets would come
            session = writer.get_extra_info("ssl_object").session
            writer.close()
            return answer.startswith(b"HTTP/1.1 200"), session is not None and session.has_ticket
        finally:
            await runner.cleanup()
            await server.stop()

    assert asyncio.run(main()) == (True, False)


def test_a_server_speaks_tls_1_3_only(tmp_path) -> None:
    """TLS 1.2 would resume sessions from the server's cache by session id (and linking)."""
    import ssl

    root = tmp_path / "d"
    init_data_dir(root, households=1, base_port=_port())
    cfg = load_server_config(root / "server-0" / "server.toml")

    async def handshake(version: ssl.TLSVersion) -> bool:
        ctx = ssl.create_default_context(cafile=str(root / TRUST))
        ctx.check_hostname = False
        ctx.maximum_version = version
        try:
            _, writer = await asyncio.open_connection(cfg.listen_host, cfg.listen_port, ssl=ctx)
        except (ssl.SSLError, ConnectionError):
            return False
        writer.close()
        return True

    async def main() -> tuple[bool, bool]:
        server = Server(cfg)
        runner = await serve(server)
        try:
            return (await handshake(ssl.TLSVersion.TLSv1_3),
                    await handshake(ssl.TLSVersion.TLSv1_2))
        finally:
            await runner.cleanup()
            await server.stop()

    assert asyncio.run(main()) == (True, False)


def test_sessions_share_one_client_context_per_version_of_the_trust_file(tmp_path) -> None:
    import os
    import ssl

    from sealgrid.service.client import client_context

    init_data_dir(tmp_path / "d", households=1, base_port=42050)
    ca = tmp_path / "d" / "servers.pem"
    first = client_context(ca)
    assert client_context(ca) is first and first.verify_mode == ssl.CERT_REQUIRED
    assert first.cert_store_stats()["x509"] == 3  # the three pinned servers, nothing else
    os.utime(ca, ns=(0, 0))  # another version of the file (rotated certificates)
    assert client_context(ca) is not first
