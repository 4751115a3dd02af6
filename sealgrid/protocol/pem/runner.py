"""Run the private PEM among real peers and return what they computed; assumes the caller may
hold every agent's data (a test or benchmark harness, not a party of the protocol).

:func:`run_pem_secure` is the entry point of ``sealgrid pem --secure``: one window of a
:class:`~sealgrid.protocol.pem.session.PemSession` — one :class:`~sealgrid.protocol.pem.peer.
PemPeer` per agent (own keys, own data), the offline phase, then the online phase, each peer's
own output collected into a ``PemOutcome``. A run of many windows should keep one session open
instead, so that keys are made once and pools refilled between windows. With ``processes > 1``
the peers live in that many OS processes talking over loopback TCP
(:mod:`~sealgrid.protocol.pem.procs`, imported only then). Keys, input checks, the outcome, the
cost figures and the comparison with the plaintext reference are in
:mod:`~sealgrid.protocol.pem.harness`.
"""

from __future__ import annotations

from collections.abc import Sequence

from sealgrid.mechanism.pem import Agent, PemMarket, PemOutcome
from sealgrid.protocol.pem.harness import PemStats, check_windows
from sealgrid.protocol.pem.host import KeyPair
from sealgrid.protocol.pem.peer import PemPeer
from sealgrid.protocol.pem.session import PemSession


def run_windows_local(
    windows: Sequence[Sequence[Agent]], market: PemMarket, *, key_bits: int, seed: int = 0,
    keys: Sequence[KeyPair] | None = None,
) -> tuple[list[PemOutcome], PemStats, list[PemPeer]]:
    """Run several windows with all peers in this process (one session, one key lifetime).

    ``keys`` (one pair per agent, e.g. cached by tests) skips key generation.
    """
    check_windows(windows)
    names = [a.name for a in windows[0]]
    with PemSession(names, key_bits=key_bits, seed=seed, keys=keys) as session:
        outcomes = [session.run_window(agents, market)[0] for agents in windows]
        return outcomes, session.totals(), session.peers


def run_pem_secure(
    agents: Sequence[Agent],
    market: PemMarket,
    *,
    key_bits: int = 2048,
    seed: int | None = None,
    processes: int = 1,
) -> tuple[PemOutcome, PemStats]:
    """Run one PEM window privately among the agents (Protocols 1–4 over Paillier and DGK).

    A one-window :class:`~sealgrid.protocol.pem.session.PemSession`: keys and pools are made for
    this window alone. For many windows keep one session open (docs/pem.md, *Sessions*).

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
    check_windows([agents])
    names = [a.name for a in agents]
    with PemSession(names, key_bits=key_bits, seed=0 if seed is None else seed,
                    processes=processes) as session:
        outcome, _ = session.run_window(agents, market)
        return outcome, session.totals()
