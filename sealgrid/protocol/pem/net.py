"""Message transport between PEM agents; assumes authenticated, private channels (paper §II-B).

Each agent owns an :class:`Endpoint`: ``send`` serialises a message with the versioned wire
format and hands the bytes to a router; ``recv`` waits for the message of a given window, topic
and sender (messages that arrive early wait in a mailbox). Every byte an agent sends or receives
is counted here. :class:`LocalRouter` connects endpoints in one asyncio loop (tests);
:class:`TcpRouter` carries the same bytes between OS processes over loopback TCP.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from collections.abc import Iterable
from typing import Protocol

from sealgrid.protocol.pem.wire import Message, Topic, decode, encode

_Key = tuple[int, Topic, int]


class Router(Protocol):
    """Delivers serialised messages to agent ``dst``."""

    def route(self, dst: int, data: bytes) -> None:
        """Deliver ``data`` to agent ``dst`` (without waiting)."""


class Endpoint:
    """One agent's connection to the others, with byte counters."""

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

    def deliver(self, data: bytes) -> None:
        """Accept the bytes of one message addressed to this agent."""
        self.bytes_received += len(data)
        message = decode(data)
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


class TcpRouter(LocalRouter):
    """Routes to local endpoints directly and to other processes' agents over TCP frames."""

    def __init__(self) -> None:
        super().__init__()
        self.home: dict[int, int] = {}  # agent id -> process index
        self._writers: dict[int, asyncio.StreamWriter] = {}
        self._server: asyncio.Server | None = None
        self._readers: list[asyncio.Task[None]] = []

    async def listen(self) -> int:
        """Start listening on loopback; return the port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def connect(self, me: int, ports: dict[int, int], home: dict[int, int]) -> None:
        """Open one connection to every other process (``ports`` by process index)."""
        self.home = home
        for proc, port in ports.items():
            if proc != me:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.transport.set_write_buffer_limits(high=1 << 24)
                self._writers[proc] = writer

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._readers.append(task)
        try:
            while True:
                head = await reader.readexactly(_FRAME.size)
                size, dst = _FRAME.unpack(head)
                self.endpoints[dst].deliver(await reader.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()

    def route(self, dst: int, data: bytes) -> None:
        """Deliver locally, or write one frame to the destination's process."""
        if dst in self.endpoints:
            self.endpoints[dst].deliver(data)
        else:
            self._writers[self.home[dst]].write(_FRAME.pack(len(data), dst) + data)

    async def close(self) -> None:
        """Close every connection and the listener."""
        for writer in self._writers.values():
            writer.close()
        for task in self._readers:
            task.cancel()
        if self._server is not None:
            self._server.close()
