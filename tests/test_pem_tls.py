"""PEM links between processes under pinned mutual TLS, with each sender bound to a certificate.

A run over worker processes equals the in-process run; a client whose certificate is not pinned
is refused at the handshake; a pinned process that names another process's agent as sender is
refused and nothing of it is delivered, while its own agents' messages are; the bytes on the
wire are not the wire encoding; a listener that is not the pinned process is refused by the
connecting side; the TLS key is written only 0600 in a private directory and deleted.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import stat
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sealgrid.protocol.certs import key_pem, new_key, self_signed
from sealgrid.protocol.pem import net
from sealgrid.protocol.pem.net import (
    SENDER_RULE,
    Endpoint,
    LocalRouter,
    PinningError,
    SenderMismatch,
    TcpRouter,
)
from sealgrid.protocol.pem.procs import run_windows_processes
from sealgrid.protocol.pem.runner import run_windows_local
from sealgrid.protocol.pem.wire import Message, Topic, encode
from tests.protocol.pem.conftest import keys_for
from tests.protocol.pem.test_pemsec_protocol import PAPER, assert_matches, random_agents

pytestmark = pytest.mark.timeout(60)

HOME = {0: 0, 3: 0, 1: 1, 4: 1, 2: 2, 5: 2}  # agent -> process, round-robin over three
CANARY = int.from_bytes(b"sealgrid-pem-canary!" * 6, "big")  # 120 bytes, one value


def test_processes_over_tls_equal_the_local_run() -> None:
    rng = random.Random(31)
    windows = [random_agents(rng, 6, 0.4), random_agents(rng, 6, 0.8)]
    local, local_stats, _ = run_windows_local(windows, PAPER, key_bits=512, seed=4,
                                              keys=keys_for(512, 6))
    remote, stats = run_windows_processes(windows, PAPER, key_bits=512, seed=4, processes=3)
    for agents, here, there in zip(windows, local, remote, strict=True):
        assert_matches(agents, PAPER, there)
        assert there.market is here.market and there.price == here.price
        assert there.sellers == here.sellers
        assert [(t.seller, t.buyer) for t in there.trades] == [
            (t.seller, t.buyer) for t in here.trades]
    assert stats.processes == 3 and stats.messages == local_stats.messages > 0
    assert stats.bytes_per_agent > 0 and stats.pool_misses == 0


# --- routers in one event loop, one per "process" --------------------------------------------


Dial = Callable[[int, dict[int, int]], Awaitable[dict[int, int]]]


async def _mesh(procs: int = 3, dial: Dial | None = None) -> tuple[list[TcpRouter], dict[int, int]]:
    """``procs`` routers hosting the agents of :data:`HOME`, connected; and their ports.

    ``dial(proc, ports)``: the ports process ``proc`` connects to (default: the real ones).
    """
    routers = [TcpRouter(p) for p in range(procs)]
    home = {a: p for a, p in HOME.items() if p < procs}
    for agent, proc in home.items():
        routers[proc].add(agent)
    real = {p: await r.listen() for p, r in enumerate(routers)}
    certs = {p: r.certificate for p, r in enumerate(routers)}
    targets = {p: await dial(p, real) if dial else real for p in range(procs)}
    await asyncio.gather(*(r.connect(targets[p], home, certs) for p, r in enumerate(routers)))
    return routers, real


async def _until(check: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


def _run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(main(), 20))


def _inbox(endpoint: Endpoint) -> dict[Any, Any]:
    return endpoint._inbox


def test_sender_of_another_process_is_refused_own_agents_are_delivered() -> None:
    async def main() -> None:
        (a, b, c), _ = await _mesh()
        target = a.endpoints[0]
        b.endpoints[1].send(0, Topic.KIND, 0, (7,))  # b's own agent: delivered
        assert await asyncio.wait_for(target.recv(0, Topic.KIND, 1), 5) == (7,)
        received = target.bytes_received
        forged = encode(Message(Topic.PRICE, 0, 2, (11, 13)))  # agent 2 lives in process c
        b.route(0, forged)
        await _until(lambda: bool(a.refusals))
        (refusal,) = a.refusals
        assert refusal.peer == 1 and SENDER_RULE in refusal.reason and "agent 2" in refusal.reason
        assert (0, Topic.PRICE, 2) not in _inbox(target) and target.bytes_received == received
        b.endpoints[4].send(0, Topic.KIND, 0, (9,))  # after the refusal: connection is closed
        c.endpoints[2].send(0, Topic.KIND, 0, (8,))  # c's link is unaffected
        assert await asyncio.wait_for(target.recv(0, Topic.KIND, 2), 5) == (8,)
        await asyncio.sleep(0.2)
        assert (0, Topic.KIND, 4) not in _inbox(target)
        assert len(a.refusals) == 1
        for r in (a, b, c):
            await r.close()

    _run(main)


def test_a_forged_sender_naming_the_receivers_own_agent_is_refused() -> None:
    async def main() -> None:
        (a, b), _ = await _mesh(2)
        b.route(0, encode(Message(Topic.KIND, 0, 3, (1,))))  # 3 is a's own agent
        await _until(lambda: bool(a.refusals))
        assert SENDER_RULE in a.refusals[0].reason and not _inbox(a.endpoints[0])
        for r in (a, b):
            await r.close()

    _run(main)


def test_deliver_checks_the_sender_and_local_router_is_unchanged() -> None:
    local = LocalRouter()
    x, y = local.add(0), local.add(1)
    x.send(1, Topic.ROLES, 0, (1, 2))
    assert _inbox(y) and y.bytes_received == x.bytes_sent > 0  # any sender in one process
    z = Endpoint(2, local)
    with pytest.raises(SenderMismatch, match=SENDER_RULE):
        z.deliver(encode(Message(Topic.ROLES, 0, 5, ())), senders={1, 4})
    assert not _inbox(z) and z.bytes_received == 0
    z.deliver(encode(Message(Topic.ROLES, 0, 4, ())), senders={1, 4})
    assert (0, Topic.ROLES, 4) in _inbox(z)


def _client_context(tmp: Path, trust: bytes, with_cert: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=trust.decode())
    if with_cert:  # a certificate with process 1's name, but not the pinned one
        key = new_key()
        cert = self_signed(key, net.host_name(1), ["127.0.0.1"], days=1)
        (tmp / "rogue.key").write_bytes(key_pem(key))
        (tmp / "rogue.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        ctx.load_cert_chain(tmp / "rogue.crt", tmp / "rogue.key")
    return ctx


@pytest.mark.parametrize("with_cert", [True, False], ids=["unpinned-cert", "no-cert"])
def test_a_client_without_a_pinned_certificate_is_refused(tmp_path: Path, with_cert: bool) -> None:
    async def main() -> None:
        (a, b), ports = await _mesh(2)
        port = ports[0]
        ctx = _client_context(tmp_path, a.certificate, with_cert)
        frame = _frame(0, encode(Message(Topic.KIND, 0, 1, (5,))))
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1")
            writer.write(frame)
            with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
                await asyncio.wait_for(reader.readexactly(1), 5)
        except (ssl.SSLError, ConnectionError):
            pass  # refused before the client finished its side of the handshake
        await _until(lambda: bool(a.refusals))
        (refusal,) = a.refusals
        assert refusal.peer is None and "handshake" in refusal.reason
        assert not _inbox(a.endpoints[0]) and a.endpoints[0].bytes_received == 0
        for r in (a, b):
            await r.close()

    _run(main)


def _frame(dst: int, data: bytes) -> bytes:
    return net._FRAME.pack(len(data), dst) + data


def test_connecting_to_a_listener_that_is_not_the_pinned_process_is_refused() -> None:
    async def main() -> None:
        routers = [TcpRouter(p) for p in range(3)]
        ports = {p: await r.listen() for p, r in enumerate(routers)}
        certs = {p: r.certificate for p, r in enumerate(routers)}
        home = {0: 0, 1: 1, 2: 2}
        for r in routers[:2]:
            r.pin(certs, home)
        with pytest.raises(PinningError, match="not process 1"):
            await routers[2].connect({0: ports[0], 1: ports[0]}, home, certs)  # 0 posing as 1
        for r in routers:
            await r.close()

    _run(main)


class _Tap:
    """A TCP proxy that forwards bytes both ways and keeps a copy of them."""

    def __init__(self) -> None:
        self.seen = bytearray()
        self.server: asyncio.Server | None = None

    async def start(self, target: int) -> int:
        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(1 << 16):
                    self.seen += data
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])


def test_the_bytes_on_the_wire_are_not_the_wire_encoding() -> None:
    async def main() -> None:
        message = Message(Topic.DIST_RATIOS, 0, 1, (CANARY, 12345))
        plain = encode(message)
        canary = CANARY.to_bytes(120, "big")
        control = _Tap()  # the tap sees plaintext when there is plaintext
        sink = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = await control.start(int(sink.sockets[0].getsockname()[1]))
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_frame(0, plain))
        await _until(lambda: plain in control.seen)
        writer.close()

        tap = _Tap()

        async def dial(proc: int, real: dict[int, int]) -> dict[int, int]:
            return {**real, 0: await tap.start(real[0])} if proc == 1 else real  # 1 -> 0 tapped

        routers, _ = await _mesh(2, dial)
        a, b = routers
        b.endpoints[1].send(0, message.topic, 0, message.values)
        assert await asyncio.wait_for(a.endpoints[0].recv(0, message.topic, 1), 5) == (
            CANARY, 12345)
        assert len(tap.seen) > len(plain)  # handshake and the record went through the tap
        assert plain not in tap.seen and canary not in tap.seen
        assert canary[:16] not in tap.seen
        assert not a.refusals and not b.refusals
        for r in routers:
            await r.close()
        sink.close()

    _run(main)


def test_the_tls_key_is_written_0600_in_a_private_directory_and_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[int, int, bytes]] = []

    class Recording(ssl.SSLContext):
        def load_cert_chain(self, certfile: Any, keyfile: Any = None, password: Any = None) -> None:
            key = Path(keyfile)
            seen.append((stat.S_IMODE(key.stat().st_mode), stat.S_IMODE(key.parent.stat().st_mode),
                         key.read_bytes()))
            super().load_cert_chain(certfile, keyfile, password)

    def context(purpose: int) -> ssl.SSLContext:
        ctx = Recording(purpose)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    monkeypatch.setattr(net, "_context", context)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    router = TcpRouter(0)
    assert len(seen) == 2 and all(m == 0o600 and d == 0o700 for m, d, _ in seen)
    assert b"PRIVATE KEY" in seen[0][2]
    assert list(tmp_path.iterdir()) == []  # nothing left on disk
    assert b"PRIVATE KEY" not in router.certificate


def test_the_certificates_are_the_processes_own() -> None:
    router = TcpRouter(2)
    cert = x509.load_pem_x509_certificate(router.certificate)
    assert cert.subject.rfc4514_string() == f"CN={net.host_name(2)}"
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    other = TcpRouter(3)
    with pytest.raises(ValueError, match="own certificate"):
        router.pin({2: other.certificate, 3: router.certificate}, {0: 2})
    with pytest.raises(ValueError, match="no pinned certificate"):
        router.pin({2: router.certificate}, {0: 2, 1: 3})
