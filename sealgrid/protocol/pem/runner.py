"""Run the private PEM among real parties and compare with the plaintext reference; assumes the
caller may hold every agent's data (a test or benchmark harness, not a party of the protocol).

:func:`run_pem_secure` is the entry point of ``sealgrid pem --secure``: it creates one
:class:`~sealgrid.protocol.pem.party.PemParty` per agent (own keys, own data), runs the offline
phase, then the online phase, and collects each party's own output into a ``PemOutcome``.
With ``processes > 1`` the parties live in that many OS processes talking over loopback TCP.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from sealgrid.mechanism.pem import (
    FIXED,
    Agent,
    MarketKind,
    PemInputError,
    PemMarket,
    PemOutcome,
    SellerPlan,
    Trade,
    run_pem,
)
from sealgrid.protocol.pem import dgk
from sealgrid.protocol.pem import paillier as pa
from sealgrid.protocol.pem.net import LocalRouter
from sealgrid.protocol.pem.params import DGK_U, RATIO_BITS, check_net
from sealgrid.protocol.pem.party import Directory, PartyOutput, PemParty

#: Key sizes the private PEM accepts.
KEY_SIZES = (512, 1024, 2048)


@dataclass(frozen=True)
class PemStats:
    """Cost of a private PEM run. Bytes count serialised messages (not TCP framing).

    ``bytes_per_agent`` is the mean over agents of bytes sent plus received per window;
    times are per window: ``online_seconds`` is wall time, ``offline_seconds`` the CPU time of
    all agents' offline work summed, ``offline_wall_seconds`` its wall time on this machine;
    ``setup_seconds`` is key generation (and process start), wall time, once per run.
    ``pool_misses`` counts randomizers computed online because the offline guess missed;
    ``randomizers_used`` / ``dgk_randomizers_used`` are per window, all agents: the offline
    work a long run needs per window once every pool is full (steady state).
    """

    agents: int
    key_bits: int
    windows: int
    processes: int
    bytes_per_agent: float
    max_bytes_per_agent: int
    total_bytes: int
    messages: int
    online_seconds: float
    offline_seconds: float
    offline_wall_seconds: float
    setup_seconds: float
    pool_misses: int
    randomizers_used: float
    dgk_randomizers_used: float


def make_keys(key_bits: int, rng: random.Random) -> tuple[pa.SecretKey, dgk.DgkSecretKey]:
    """Generate one agent's Paillier and DGK keys (Protocol 1, lines 1–2).

    Raises:
        PemInputError: an unsupported key size.
    """
    if key_bits < 256 or key_bits % 64:
        raise PemInputError(f"key size must be one of {KEY_SIZES} (or ≥ 256, a multiple of 64)")
    t = dgk.T_BITS if key_bits >= 512 else 40
    return pa.generate_keypair(key_bits), dgk.generate_keypair(key_bits, DGK_U, rng, t=t)


def check_windows(windows: Sequence[Sequence[Agent]]) -> list[str]:
    """Check every window has the same agent names (the parties) and inputs in range.

    Raises:
        PemInputError: names differ between windows, repeat, or a net energy is out of range.
    """
    if not windows or not windows[0]:
        raise PemInputError("no agents")
    names = [a.name for a in windows[0]]
    if len(set(names)) != len(names):
        raise PemInputError("agent names must be unique")
    for agents in windows:
        if [a.name for a in agents] != names:
            raise PemInputError("every window must list the same agents in the same order")
        for a in agents:
            check_net(a.net)
    return names


def assemble(outputs: Sequence[PartyOutput], agents: Sequence[Agent]) -> PemOutcome:
    """Collect the parties' own outputs into one outcome (order as the plaintext reference).

    ``supply`` and ``demand`` are not outputs of the private PEM (nobody learns ``E_s`` or
    ``E_b``); both fields hold the total traded energy, ``Σ e_ij``.

    Raises:
        RuntimeError: the parties disagree on the market kind or the price.
    """
    kinds = {(o.kind, o.price) for o in outputs}
    if len(kinds) != 1:
        raise RuntimeError("parties ended the window with different prices")
    ((kind, price),) = kinds
    names = [a.name for a in agents]
    trades = sorted(t for o in outputs for t in o.trades())
    traded = sum((e for _, _, e in trades), Fraction(0))
    plans = tuple(
        SellerPlan(names[o.agent], Fraction(agents[o.agent].net, FIXED), o.optimal_load)
        for o in sorted(outputs, key=lambda o: o.agent)
        if o.optimal_load is not None
    )
    return PemOutcome(
        market=kind,
        price=price,
        supply=traded,
        demand=traded,
        trades=tuple(Trade(names[s], names[b], e, price * e) for s, b, e in trades),
        sellers=plans if kind is not MarketKind.NO_SELLERS else (),
    )


def matches_plaintext(agents: Sequence[Agent], market: PemMarket, outcome: PemOutcome) -> bool:
    """Check a private outcome against :func:`run_pem`: kind, price and sellers' plans exactly,
    every amount within the Protocol 4 bound ``0 ≤ e' − e < e·s/(K − s)`` (docs/pem.md), with
    ``s`` the |sn| (fixed point) of the agent whose ratio was scaled, and payments ``p·e'``."""
    ref = run_pem(agents, market)
    if (outcome.market, outcome.price, outcome.sellers) != (ref.market, ref.price, ref.sellers):
        return False
    if [(t.seller, t.buyer) for t in outcome.trades] != [(t.seller, t.buyer) for t in ref.trades]:
        return False
    k = 1 << RATIO_BITS
    net = {a.name: abs(a.net) for a in agents}
    for got, want in zip(outcome.trades, ref.trades, strict=True):
        s = net[want.buyer] if ref.market is MarketKind.GENERAL else net[want.seller]
        if not want.energy <= got.energy < want.energy * (1 + Fraction(s, k - s)):
            return False
        if got.payment != outcome.price * got.energy:
            return False
    return True


def run_windows_local(
    windows: Sequence[Sequence[Agent]], market: PemMarket, *, key_bits: int, seed: int = 0,
    keys: Sequence[tuple[pa.SecretKey, dgk.DgkSecretKey]] | None = None,
) -> tuple[list[PemOutcome], PemStats, list[PemParty]]:
    """Run several windows with all parties in this process (one asyncio loop).

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
    parties = [
        PemParty(i, count, market, seed, router.add(i), sk, dsk) for i, (sk, dsk) in enumerate(keys)
    ]
    directory = Directory(
        tuple(sk.public for sk, _ in keys), tuple(dsk.public for _, dsk in keys)
    )
    for party in parties:
        party.directory = directory
    outcomes, offline, offline_wall, online = [], 0.0, 0.0, 0.0
    for w, agents in enumerate(windows):
        cpu, wall = time.process_time(), time.perf_counter()
        for party in parties:
            party.offline(w)
        offline += time.process_time() - cpu
        offline_wall += time.perf_counter() - wall
        wall = time.perf_counter()
        outputs = asyncio.run(_online(parties, w, agents))
        online += time.perf_counter() - wall
        outcomes.append(assemble(outputs, agents))
    endpoints = [router.endpoints[i] for i in range(count)]
    traffic = [e.bytes_sent + e.bytes_received for e in endpoints]
    stats = PemStats(
        agents=count,
        key_bits=key_bits,
        windows=len(windows),
        processes=1,
        bytes_per_agent=sum(traffic) / count / len(windows),
        max_bytes_per_agent=max(traffic) // len(windows),
        total_bytes=sum(e.bytes_sent for e in endpoints),
        messages=sum(e.messages_sent for e in endpoints),
        online_seconds=online / len(windows),
        offline_seconds=offline / len(windows),
        offline_wall_seconds=offline_wall / len(windows),
        setup_seconds=setup,
        pool_misses=sum(p.pool.misses for p in parties),
        randomizers_used=sum(p.pool.used["paillier"] for p in parties) / len(windows),
        dgk_randomizers_used=sum(p.pool.used["dgk"] for p in parties) / len(windows),
    )
    return outcomes, stats, parties


async def _online(
    parties: Sequence[PemParty], w: int, agents: Sequence[Agent]
) -> list[PartyOutput]:
    pairs = zip(parties, agents, strict=True)
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
        agents: the agents of the window; each becomes a party with its own keys.
        market: the public prices.
        key_bits: Paillier (and DGK) modulus size: 512, 1024 or 2048.
        seed: the public seed of the designated agents' draw (0 when ``None``).
        processes: run the parties in this many OS processes (1: all in this process).

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
