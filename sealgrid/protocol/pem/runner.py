"""Run the private PEM among real peers and return what they computed; assumes the caller may
hold every agent's data (a test or benchmark harness, not a party of the protocol).

:func:`run_pem_secure` is the entry point of ``sealgrid pem --secure``: it creates one
:class:`~sealgrid.protocol.pem.peer.PemPeer` per agent (own keys, own data), runs the offline
phase, then the online phase, and collects each peer's own output into a ``PemOutcome``.
With ``processes > 1`` the peers live in that many OS processes talking over loopback TCP
(:mod:`~sealgrid.protocol.pem.procs`, imported only then). Keys, input checks, the outcome, the
cost figures and the comparison with the plaintext reference are in
:mod:`~sealgrid.protocol.pem.harness`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence

from sealgrid.mechanism.pem import Agent, PemMarket, PemOutcome
from sealgrid.protocol.pem import dgk
from sealgrid.protocol.pem import paillier as pa
from sealgrid.protocol.pem.harness import (
    PeerCounters,
    PemStats,
    Timings,
    assemble,
    check_windows,
    make_keys,
    tally,
)
from sealgrid.protocol.pem.net import LocalRouter
from sealgrid.protocol.pem.peer import Directory, PeerOutput, PemPeer


def run_windows_local(
    windows: Sequence[Sequence[Agent]], market: PemMarket, *, key_bits: int, seed: int = 0,
    keys: Sequence[tuple[pa.SecretKey, dgk.DgkSecretKey]] | None = None,
) -> tuple[list[PemOutcome], PemStats, list[PemPeer]]:
    """Run several windows with all peers in this process (one asyncio loop).

    ``keys`` (one pair per agent, e.g. cached by tests) skips key generation.
    """
    check_windows(windows)
    count = len(windows[0])
    rng = random.SystemRandom()
    start = time.perf_counter()
    if keys is None:
        keys = [make_keys(key_bits, rng) for _ in range(count)]
    keys = list(keys[:count])
    setup = time.perf_counter() - start
    router = LocalRouter()
    peers = [
        PemPeer(i, count, market, seed, router.add(i), sk, dsk) for i, (sk, dsk) in enumerate(keys)
    ]
    directory = Directory(
        tuple(sk.public for sk, _ in keys), tuple(dsk.public for _, dsk in keys)
    )
    for peer in peers:
        peer.directory = directory
    outcomes, offline, offline_wall, online = [], 0.0, 0.0, 0.0
    for w, agents in enumerate(windows):
        cpu, wall = time.process_time(), time.perf_counter()
        for peer in peers:
            peer.offline(w)
        offline += time.process_time() - cpu
        offline_wall += time.perf_counter() - wall
        wall = time.perf_counter()
        outputs = asyncio.run(_online(peers, w, agents))
        online += time.perf_counter() - wall
        outcomes.append(assemble(outputs, agents))
    counters = [PeerCounters.of(router.endpoints[i], peers[i]) for i in range(count)]
    stats = tally(counters, Timings(online, offline, offline_wall, setup), key_bits=key_bits,
                  windows=len(windows), processes=1)
    return outcomes, stats, peers


async def _online(
    peers: Sequence[PemPeer], w: int, agents: Sequence[Agent]
) -> list[PeerOutput]:
    pairs = zip(peers, agents, strict=True)
    return list(await asyncio.gather(*(p.run_window(w, a) for p, a in pairs)))


def run_pem_secure(
    agents: Sequence[Agent],
    market: PemMarket,
    *,
    key_bits: int = 2048,
    seed: int | None = None,
    processes: int = 1,
) -> tuple[PemOutcome, PemStats]:
    """Run one PEM window privately among the agents (Protocols 1–4 over Paillier and DGK).

    Args:
        agents: the agents of the window; each becomes a peer with its own keys.
        market: the public prices.
        key_bits: Paillier (and DGK) modulus size: 512, 1024 or 2048.
        seed: the public seed of the designated agents' draw (0 when ``None``).
        processes: run the peers in this many OS processes (1: all in this process).

    Returns:
        The outcome (price exactly the plaintext one; amounts within the bound of docs/pem.md)
        and the run's :class:`PemStats`.

    Raises:
        PemInputError: invalid agents or key size.
    """
    seed = 0 if seed is None else seed
    if processes > 1:
        from sealgrid.protocol.pem.procs import run_windows_processes

        outcomes, stats = run_windows_processes(
            [agents], market, key_bits=key_bits, seed=seed, processes=processes
        )
        return outcomes[0], stats
    outcomes, stats, _ = run_windows_local([agents], market, key_bits=key_bits, seed=seed)
    return outcomes[0], stats
