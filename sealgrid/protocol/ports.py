"""Local ports for processes that listen on loopback: the MPC parties of a clearing run on
one machine, and the servers and parties of a local market."""

from __future__ import annotations

import random
import socket
from pathlib import Path


class NoFreePorts(OSError):
    """No range of free local ports was found."""


def ephemeral_ports() -> tuple[int, int]:
    """The range the kernel picks the local ports of outgoing connections from (Linux's
    ``ip_local_port_range``; its default where that cannot be read)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port_range(count: int) -> int:
    """Return a port ``p`` with ``p … p+count-1`` free on 127.0.0.1 at this moment.

    Taken below the ephemeral range when there is room (from 20000 on): many households
    opening connections of their own would otherwise hold ports there, and a server's MPC
    ports, bound only at gate closure (or a clearing's parties, bound once started), could
    be taken by then."""
    rng = random.Random()
    low, high = ephemeral_ports()
    if low - count - 20000 >= 1000:
        lo, hi = 20000, low - count
    elif 65535 - count - high >= 1000:
        lo, hi = high + 1, 65536 - count
    else:  # an ephemeral range over nearly everything: take what the old rule took
        lo, hi = 20000, 60000 - count
    for _ in range(500):
        base = rng.randrange(lo, hi)
        taken: list[socket.socket] = []
        try:
            for i in range(count):
                s = socket.socket()
                taken.append(s)
                s.bind(("127.0.0.1", base + i))
        except OSError:
            continue
        finally:
            for s in taken:
                s.close()
        return base
    raise NoFreePorts("no free range of local ports")
