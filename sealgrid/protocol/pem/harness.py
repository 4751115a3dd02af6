"""What surrounds the private PEM's peers in a run: keys, input checks, outcome and cost figures.

Assumes the caller may hold every agent's data (a test, a benchmark or ``sealgrid pem
--secure``), so nothing here is a step of the protocol (docs/pem.md, *The harness*). Both ways
of running the peers use it — :mod:`~sealgrid.protocol.pem.runner` (one process) and
:mod:`~sealgrid.protocol.pem.procs` (several OS processes) — and neither imports the other at
module level. :func:`tally` is the one place a :class:`PemStats` is built.
"""

from __future__ import annotations

import random
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
from sealgrid.protocol.pem.net import Endpoint
from sealgrid.protocol.pem.params import DGK_U, MIN_KEY_BITS, amount_bounds, check_net
from sealgrid.protocol.pem.peer import PeerOutput, PemPeer

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


@dataclass(frozen=True)
class PeerCounters:
    """One peer's counters at the end of a run (plain integers: they cross process pipes)."""

    bytes_sent: int
    bytes_received: int
    messages_sent: int
    pool_misses: int
    paillier_used: int
    dgk_used: int
    paillier_made: int = 0
    dgk_made: int = 0

    @classmethod
    def of(cls, endpoint: Endpoint, peer: PemPeer) -> PeerCounters:
        """Read the counters of ``peer`` and of its ``endpoint``."""
        pool = peer.pool
        return cls(endpoint.bytes_sent, endpoint.bytes_received, endpoint.messages_sent,
                   pool.misses, pool.used["paillier"], pool.used["dgk"], pool.made["paillier"],
                   pool.made["dgk"])


@dataclass(frozen=True)
class Timings:
    """Seconds summed over a run's windows (``setup_seconds`` once per run)."""

    online: float
    offline: float
    offline_wall: float
    setup: float


def tally(counters: Sequence[PeerCounters], timings: Timings, *, key_bits: int, windows: int,
          processes: int) -> PemStats:
    """Turn every peer's counters and the run's timings into per-window :class:`PemStats`."""
    if not counters or windows < 1:
        raise ValueError("a run has at least one peer and one window")
    traffic = [c.bytes_sent + c.bytes_received for c in counters]
    return PemStats(
        agents=len(counters),
        key_bits=key_bits,
        windows=windows,
        processes=processes,
        bytes_per_agent=sum(traffic) / len(counters) / windows,
        max_bytes_per_agent=max(traffic) // windows,
        total_bytes=sum(c.bytes_sent for c in counters),
        messages=sum(c.messages_sent for c in counters),
        online_seconds=timings.online / windows,
        offline_seconds=timings.offline / windows,
        offline_wall_seconds=timings.offline_wall / windows,
        setup_seconds=timings.setup,
        pool_misses=sum(c.pool_misses for c in counters),
        randomizers_used=sum(c.paillier_used for c in counters) / windows,
        dgk_randomizers_used=sum(c.dgk_used for c in counters) / windows,
    )


def check_key_bits(key_bits: int) -> None:
    """Refuse a key size the private PEM cannot use.

    Raises:
        PemInputError: below :data:`MIN_KEY_BITS` or not a multiple of 64.
    """
    if key_bits < MIN_KEY_BITS or key_bits % 64:
        raise PemInputError(
            f"key size must be one of {KEY_SIZES} (or ≥ {MIN_KEY_BITS}, a multiple of 64: the"
            " Protocol 4 ratios with their noise need a plaintext of that size)")


def make_keys(key_bits: int, rng: random.Random) -> tuple[pa.SecretKey, dgk.DgkSecretKey]:
    """Generate one agent's Paillier and DGK keys (Protocol 1, lines 1–2).

    Raises:
        PemInputError: an unsupported key size.
    """
    check_key_bits(key_bits)
    return pa.generate_keypair(key_bits), dgk.generate_keypair(key_bits, DGK_U, rng)


def check_windows(windows: Sequence[Sequence[Agent]]) -> list[str]:
    """Check every window has the same agent names (the peers) and inputs in range.

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


def assemble(outputs: Sequence[PeerOutput], agents: Sequence[Agent]) -> PemOutcome:
    """Collect the peers' own outputs into one outcome (order as the plaintext reference).

    ``supply`` and ``demand`` are not outputs of the private PEM (nobody learns ``E_s`` or
    ``E_b``); both fields hold the total traded energy, ``Σ e_ij``.

    Raises:
        RuntimeError: the peers disagree on the market kind or the price.
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
    every amount within the Protocol 4 bound :func:`~sealgrid.protocol.pem.params.amount_bounds`
    (``e·(1 − (σ+1)/(s+σ)) < e' < e·(1 + s/(K − s))``, docs/pem.md), with ``s`` the |sn|
    (fixed point) of the agent whose ratio was scaled, and payments ``p·e'``."""
    ref = run_pem(agents, market)
    if (outcome.market, outcome.price, outcome.sellers) != (ref.market, ref.price, ref.sellers):
        return False
    if [(t.seller, t.buyer) for t in outcome.trades] != [(t.seller, t.buyer) for t in ref.trades]:
        return False
    net = {a.name: abs(a.net) for a in agents}
    for got, want in zip(outcome.trades, ref.trades, strict=True):
        s = net[want.buyer] if ref.market is MarketKind.GENERAL else net[want.seller]
        low, high = amount_bounds(want.energy, s)
        if not low < got.energy < high:
            return False
        if got.payment != outcome.price * got.energy:
            return False
    return True
