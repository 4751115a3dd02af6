"""Message transport between PEM agents: one process, or processes linked by pinned mutual TLS.

Each agent owns an :class:`Endpoint`: ``send`` serialises a message with the versioned wire
format and hands the bytes to a router; ``recv`` waits for the message of a given window, topic
and sender (messages that arrive early wait in a mailbox). Every byte of every PEM message an
agent sends or receives is counted here; the frame header (8 bytes per message) and TLS
(handshakes, record headers and tags) are not. :class:`LocalRouter` connects endpoints in one
asyncio loop (tests; the ``sender`` field is whatever the local endpoint wrote).
:class:`TcpRouter` carries the same bytes between OS processes over loopback TCP under mutual
TLS 1.3: each process makes its own key and self-signed end-entity certificate (the key never
leaves the process), the certificates of the run are pinned (no CA store, nothing else is
trusted), a connecting process checks that the listener shows exactly the certificate pinned
for the process it meant to reach, and a listener identifies the connecting process by its
client certificate. A message received from a process must name as ``sender`` one of the
agents that process hosts (the plan's ``home`` map); any other is refused
(:class:`SenderMismatch`), not delivered, and the connection is closed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import struct
import tempfile
from collections import deque
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sealgrid.protocol.certs import key_pem, new_key, self_signed
from sealgrid.protocol.pem.wire import Message, RemoteProtocolError, Topic, decode, encode

_Key = tuple[int, Topic, int]
_log = logging.getLogger(__name__)

#: The rule a :class:`SenderMismatch` breaks.
SENDER_RULE = "sender not bound to the peer's certificate"


class SenderMismatch(RemoteProtocolError):
    """A message names as sender an agent that the authenticated peer does not host."""

    def __init__(self, sender: int) -> None:
        super().__init__(f"{SENDER_RULE}: agent {sender} is not hosted by the peer")
        self.sender = sender


class PinningError(ConnectionError):
    """The listener at a process's port did not show that process's pinned certificate."""


class Router(Protocol):
    """Delivers serialised messages to agent ``dst``."""

    def route(self, dst: int, data: bytes) -> None:
        """Deliver ``data`` to agent ``dst`` (without waiting)."""


class Endpoint:
    """One agent's connection to the others, with byte counters (PEM messages only)."""

    def __init__(self, me: int, router: Router) -> None:
        self.me = me
        self.router = router
        self.bytes_sent = 0
        self.bytes_received = 0
        self.messages_sent = 0
        self._inbox: dict[_Key, deque[Message]] = {}
        self._waiting: dict[_Key, asyncio.Future[Message]] = {}

    def send(self, dst: int, topic: Topic, window: int, values: Iterable[int]) -> None:
        """Serialise and send one message to ``dst``."""
        data = encode(Message(topic, window, self.me, tuple(values)))
        self.bytes_sent += len(data)
        self.messages_sent += 1
        self.router.route(dst, data)

    def deliver(self, data: bytes, senders: Collection[int] | None = None) -> None:
        """Accept the bytes of one message addressed to this agent.

        ``senders``: the agents the channel it came on speaks for (``None``: any, as in one
        process); a message from anyone else is refused before it reaches the mailbox.

        Raises:
            RemoteProtocolError: the bytes are not a PEM message.
            SenderMismatch: its sender is not in ``senders`` (nothing is delivered or counted).
        """
        message = decode(data)
        if senders is not None and message.sender not in senders:
            raise SenderMismatch(message.sender)
        self.bytes_received += len(data)
        key = (message.window, message.topic, message.sender)
        waiter = self._waiting.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(message)
        else:
            self._inbox.setdefault(key, deque()).append(message)

    async def recv(self, window: int, topic: Topic, sender: int) -> tuple[int, ...]:
        """Wait for the next message of ``topic`` in ``window`` from ``sender``; its values."""
        key = (window, topic, sender)
        queue = self._inbox.get(key)
        if queue:
            message = queue.popleft()
            if not queue:
                del self._inbox[key]
            return message.values
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiting[key] = future
        return (await future).values


class LocalRouter:
    """Routes between endpoints living in the same process (and asyncio loop)."""

    def __init__(self) -> None:
        self.endpoints: dict[int, Endpoint] = {}

    def add(self, me: int) -> Endpoint:
        """Create and register the endpoint of agent ``me``."""
        endpoint = Endpoint(me, self)
        self.endpoints[me] = endpoint
        return endpoint

    def route(self, dst: int, data: bytes) -> None:
        """Deliver to a local endpoint."""
        self.endpoints[dst].deliver(data)


_FRAME = struct.Struct(">II")  # payload length, destination agent
_HOST = "127.0.0.1"
_HANDSHAKE_SECONDS = 20.0


def host_name(proc: int) -> str:
    """The common name in the certificate of PEM process ``proc``."""
    return f"sealgrid PEM host {proc}"


@dataclass(frozen=True)
class Refusal:
    """A connection or message a :class:`TcpRouter` refused: from which process, and why."""

    peer: int | None  # the process its certificate names; None before authentication
    reason: str


def _context(purpose: int) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)  # no default (system) CA store is loaded
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class TcpRouter(LocalRouter):
    """Routes to local endpoints directly and to other processes' agents over mutual TLS.

    Made in the process it serves, for process ``proc``: it generates that process's TLS key
    and self-signed certificate (:attr:`certificate`, the only part to publish). The key is
    loaded into this router's TLS contexts from a file of mode 0600 in a private temporary
    directory, deleted at once. Refused connections and messages are logged and kept in
    :attr:`refusals`.
    """

    def __init__(self, proc: int, *, days: int = 1) -> None:
        super().__init__()
        self.proc = proc
        self.home: dict[int, int] = {}  # agent id -> process index
        self.refusals: list[Refusal] = []
        key = new_key()
        cert = self_signed(key, host_name(proc), [_HOST], days=days)
        self.certificate = cert.public_bytes(serialization.Encoding.PEM)
        self._server_ctx = _context(ssl.PROTOCOL_TLS_SERVER)
        self._client_ctx = _context(ssl.PROTOCOL_TLS_CLIENT)
        with tempfile.TemporaryDirectory(prefix="sealgrid-pem-") as tmp:  # mode 0700
            key_path, cert_path = Path(tmp) / "host.key", Path(tmp) / "host.crt"
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key_pem(key))
            cert_path.write_bytes(self.certificate)
            for ctx in (self._server_ctx, self._client_ctx):
                ctx.load_cert_chain(cert_path, key_path)
        self._pinned: dict[int, bytes] = {}  # process index -> DER of its certificate
        self._ready = asyncio.Event()  # set once the run's certificates are pinned
        self._writers: dict[int, asyncio.StreamWriter] = {}
        self._listener: socket.socket | None = None
        self._acceptor: asyncio.Task[None] | None = None
        self._readers: list[asyncio.Task[None]] = []

    async def listen(self) -> int:
        """Start listening on loopback; return the port.

        An accepted connection waits for its TLS handshake until the run's certificates are
        pinned (:meth:`pin`, done by :meth:`connect`); before that nothing is trusted.
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((_HOST, 0))
        sock.listen()
        sock.setblocking(False)
        self._listener = sock
        self._acceptor = asyncio.create_task(self._accept(sock))
        return int(sock.getsockname()[1])

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(sock)
            self._readers.append(asyncio.create_task(self._serve(conn)))

    def pin(self, certificates: Mapping[int, bytes], home: Mapping[int, int]) -> None:
        """Trust exactly ``certificates`` (PEM, by process index); ``home``: agent -> process.

        Raises:
            ValueError: an agent's process has no certificate, this process's is not its own,
                or two processes show the same certificate.
            RuntimeError: certificates were pinned already (trust is set once per run).
        """
        if self._ready.is_set():
            raise RuntimeError("the run's certificates are pinned already")
        pinned = {
            proc: x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
            for proc, pem in certificates.items()
        }
        if len(set(pinned.values())) != len(pinned):
            raise ValueError("two processes show the same certificate")
        if pinned.get(self.proc) != x509.load_pem_x509_certificate(self.certificate).public_bytes(
            serialization.Encoding.DER
        ):
            raise ValueError(f"the plan does not pin process {self.proc}'s own certificate")
        if not set(home.values()) <= set(pinned):
            raise ValueError("an agent's process has no pinned certificate")
        cadata = "".join(pem.decode("ascii") for pem in certificates.values())
        for ctx in (self._server_ctx, self._client_ctx):
            ctx.load_verify_locations(cadata=cadata)
        self._pinned = pinned
        self.home = dict(home)
        self._ready.set()

    async def connect(
        self, ports: Mapping[int, int], home: Mapping[int, int], certificates: Mapping[int, bytes]
    ) -> None:
        """Pin ``certificates`` and open one connection to every other process.

        ``ports`` and ``certificates`` by process index; ``home`` maps each agent to its process.

        Raises:
            PinningError: a listener did not show the certificate pinned for its process.
        """
        self.pin(certificates, home)
        for proc, port in ports.items():
            if proc == self.proc:
                continue
            _, writer = await asyncio.open_connection(
                _HOST, port, ssl=self._client_ctx, server_hostname=_HOST,
                ssl_handshake_timeout=_HANDSHAKE_SECONDS,
            )
            if _peer_der(writer.transport) != self._pinned[proc]:
                writer.close()
                raise PinningError(f"the listener at port {port} is not process {proc}")
            writer.transport.set_write_buffer_limits(high=1 << 24)
            self._writers[proc] = writer

    def _refuse(self, peer: int | None, reason: str) -> None:
        self.refusals.append(Refusal(peer, reason))
        _log.warning("process %d refused %s: %s", self.proc,
                     "an unauthenticated connection" if peer is None else f"process {peer}",
                     reason)

    async def _serve(self, conn: socket.socket) -> None:
        """Authenticate one accepted connection, then deliver its frames while they obey."""
        loop = asyncio.get_running_loop()
        transport: asyncio.BaseTransport | None = None
        try:
            await self._ready.wait()
            reader = asyncio.StreamReader()
            protocol = asyncio.StreamReaderProtocol(reader)
            try:  # the handshake runs here; its bytes wait in the socket until now
                transport, _ = await loop.connect_accepted_socket(
                    lambda: protocol, conn, ssl=self._server_ctx,
                    ssl_handshake_timeout=_HANDSHAKE_SECONDS,
                )
            except (ssl.SSLError, OSError, TimeoutError) as exc:
                self._refuse(None, f"TLS handshake failed: {exc}")
                return
            der = _peer_der(transport)
            peer = next((p for p, d in self._pinned.items() if d == der), None)
            if peer is None:  # cannot happen while only pinned certificates are trusted
                self._refuse(None, "client certificate not pinned")
                return
            senders = frozenset(a for a, p in self.home.items() if p == peer)
            while True:
                head = await reader.readexactly(_FRAME.size)
                size, dst = _FRAME.unpack(head)
                endpoint = self.endpoints.get(dst)
                if endpoint is None:
                    self._refuse(peer, f"agent {dst} is not hosted by process {self.proc}")
                    return
                try:
                    endpoint.deliver(await reader.readexactly(size), senders)
                except RemoteProtocolError as exc:
                    self._refuse(peer, str(exc))
                    return
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError,
                asyncio.CancelledError):
            pass
        finally:
            if transport is not None:
                transport.close()
            conn.close()

    def route(self, dst: int, data: bytes) -> None:
        """Deliver locally, or write one frame to the destination's process."""
        if dst in self.endpoints:
            self.endpoints[dst].deliver(data)
        else:
            self._writers[self.home[dst]].write(_FRAME.pack(len(data), dst) + data)

    async def drain(self) -> None:
        """Wait until every outgoing connection has handed its buffered frames to the OS."""
        for writer in self._writers.values():
            await writer.drain()

    async def close(self) -> None:
        """Close every connection and the listener."""
        for writer in self._writers.values():
            writer.close()
        for task in self._readers:
            task.cancel()
        if self._acceptor is not None:
            self._acceptor.cancel()
        if self._listener is not None:
            self._listener.close()


def _peer_der(transport: asyncio.BaseTransport) -> bytes | None:
    sslobj = transport.get_extra_info("ssl_object")
    if sslobj is None:
        return None
    der: bytes | None = sslobj.getpeercert(binary_form=True)
    return der
