"""A raw packet capture on loopback, searched for bid values; assumes Linux and CAP_NET_RAW.

No capture tool is needed: an ``AF_PACKET`` socket bound to ``lo`` sees every frame on the
loopback interface (each packet once per direction). Only TCP segments to or from the
market's own ports are kept (a capture filter in Python), reassembled per direction by
sequence number, and searched for byte strings that would betray a bid: share payloads, their
base64 text, the plaintext bid vectors, message type names and household ids.
"""

from __future__ import annotations

import base64
import socket
import struct
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

ETH_P_ALL = 0x0003


@dataclass
class Capture:
    """Capture TCP payloads on loopback for ``ports`` while running (a context manager)."""

    ports: frozenset[int]
    segments: dict[tuple[int, int], dict[int, bytes]] = field(default_factory=dict)
    packets: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _sock: socket.socket | None = None

    def __enter__(self) -> Capture:
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self._sock.bind(("lo", 0))
        self._sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._sock is not None:
            self._sock.close()

    def _run(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                frame, addr = self._sock.recvfrom(262144)
            except TimeoutError:
                continue
            except OSError:
                return
            if addr[2] == socket.PACKET_OUTGOING:  # each loopback packet also comes back in
                continue
            self._take(frame)

    def _take(self, frame: bytes) -> None:
        if len(frame) < 14:
            return
        ethertype = struct.unpack_from("!H", frame, 12)[0]
        ip = frame[14:]
        if ethertype == 0x0800 and len(ip) >= 20 and ip[9] == 6:
            tcp = ip[(ip[0] & 0x0F) * 4:int.from_bytes(ip[2:4], "big")]
        elif ethertype == 0x86DD and len(ip) >= 40 and ip[6] == 6:
            tcp = ip[40:40 + int.from_bytes(ip[4:6], "big")]
        else:
            return
        if len(tcp) < 20:
            return
        sport, dport, seq = struct.unpack_from("!HHI", tcp)
        if sport not in self.ports and dport not in self.ports:
            return
        payload = tcp[(tcp[12] >> 4) * 4:]
        self.packets += 1
        if payload:
            self.segments.setdefault((sport, dport), {})[seq] = payload

    def streams(self) -> list[bytes]:
        """Return each direction of each connection as one byte string (in sequence order)."""
        return [b"".join(seg[s] for s in sorted(seg)) for seg in self.segments.values()]

    @property
    def bytes(self) -> int:
        """Captured TCP payload bytes."""
        return sum(len(p) for seg in self.segments.values() for p in seg.values())


def needles(payloads: Iterable[bytes], rows: Iterable[np.ndarray],
            households: Sequence[str]) -> list[bytes]:
    """Byte strings whose presence in a capture would betray a bid or a household."""
    out = [b"SGB1", b"PseudonymousBid", b"TokenRequest", b'"payload"', b"blinded"]
    for p in payloads:
        out += [p[24:56], base64.b64encode(p)[32:72]]
    for row in rows:  # the whole plaintext vector, and its quantity-weighted price part
        raw = np.asarray(row, dtype="<u8").tobytes()
        nonzero = int(np.flatnonzero(np.asarray(row))[0])
        out += [raw, raw[8 * nonzero:8 * nonzero + 8] + raw[8 * nonzero + 8:8 * nonzero + 24]]
    out += [f'"{h}"'.encode() for h in households]
    return out


def hits(capture: Capture, wanted: Iterable[bytes]) -> dict[bytes, int]:
    """Count each needle's occurrences in the captured streams; return those found."""
    streams = capture.streams()
    found: dict[bytes, int] = {}
    for n in wanted:
        k = sum(s.count(n) for s in streams)
        if k:
            found[n] = k
    return found


async def capture_period(root: object, seed: int, households: int = 6,
                         period_seconds: int = 6) -> dict[str, object]:
    """Capture one whole period of three local servers on loopback; return the figures.

    The figures: packets and bytes captured, ``hits`` (needles found: the target is 0),
    ``canary_hits`` (a marker sent in plaintext to a server port during the capture: it must
    be found, or the capture saw nothing) and the period's status on every server.
    """
    import asyncio
    import secrets
    from pathlib import Path

    from sealgrid.protocol.encoding import BidShares
    from sealgrid.service.config import load_server_config
    from sealgrid.service.local import LocalMarket

    from .market import make_bidders, open_period, seconds_to_gate, statements

    market = LocalMarket(Path(str(root)), households=households, period_seconds=period_seconds,
                         market={"peer_timeout_seconds": 10})
    with market:
        await market.wait_ready()
        mpc_base = load_server_config(market.root / "server-0" / "server.toml").mpc_base_port
        http = {int(u.rpartition(":")[2]) for u, _ in market.registry.servers}
        ports = frozenset(http | set(range(mpc_base, mpc_base + 8 * market.servers)))
        canary = b"CANARY-" + secrets.token_hex(8).encode()
        with Capture(ports) as cap:
            period = open_period(market, lead=3.0 + 0.3 * households)
            _, bidders = await make_bidders(market, period, seed)
            for b in bidders:
                async with b.agent:
                    outcome = await b.agent.send(b.prepared)
                    b.receipts = dict(outcome.receipts)
            _reader, writer = await asyncio.open_connection("127.0.0.1", min(http))
            writer.write(b"POST / HTTP/1.1\r\n\r\n" + canary)
            await writer.drain()
            writer.close()
            await asyncio.sleep(max(0.0, seconds_to_gate(market, period)))
            sts = await statements(market, period, timeout=90)
            for b in bidders:  # every household fetches and rebuilds its result
                async with b.agent:
                    await b.agent.result(period)
            await asyncio.sleep(0.3)
        rows = [_plain_row(b.payloads) for b in bidders]
        found = hits(cap, needles([p for b in bidders for p in b.payloads], rows,
                                  [b.hid for b in bidders]))
        canary_hits = hits(cap, [canary]).get(canary, 0)
    _ = BidShares
    return {
        "packets": cap.packets,
        "bytes": cap.bytes,
        "hits": sum(found.values()),
        "found": sorted(n.hex()[:32] for n in found),
        "canary_hits": canary_hits,
        "receipts": sum(len(b.receipts) for b in bidders),
        "status": sorted(s.status for s in sts if s is not None),
    }


def _plain_row(payloads: Sequence[bytes]) -> np.ndarray:
    """Rebuild a bid's plaintext vector from its shares (the eavesdropper's prize)."""
    from sealgrid.protocol import field as F
    from sealgrid.protocol.encoding import BidShares, threshold

    shares = [BidShares.from_bytes(p) for p in payloads]
    rebuilt: np.ndarray = F.reconstruct([s.values for s in shares], threshold(len(shares)))
    return rebuilt
