"""A run of the private PEM whose agents live across windows, as the paper's households do;
assumes a harness that may hold every agent's data (a simulation, a benchmark, a test).

Each agent makes its Paillier and DGK keys once per key lifetime (default :data:`DAY_WINDOWS`
windows, so a day's run makes them once) and refills its randomizer pools in the background
between windows; a window then costs only its online phase. Use::

    from sealgrid.protocol.pem import PemSession

    names = [a.name for a in first_window]           # the same agents in every window
    with PemSession(names, key_bits=2048, processes=2, seed=0) as session:
        for agents in windows:                       # each a Sequence[mechanism.pem.Agent]
            outcome, stats = session.run_window(agents, market)
            # outcome: mechanism.pem.PemOutcome — the price exactly run_pem's, every amount
            #          within the bound of docs/pem.md (harness.matches_plaintext checks both)
            # stats:   WindowStats — stats.online_seconds (the window's protocol run) and its
            #          offline work: stats.keygen_seconds, stats.pool_seconds, stats.offline_seconds
        totals = session.totals()                    # PemStats over the windows run

Arguments of :class:`PemSession`:

* ``names`` — the agents' names; every window must list agents with exactly these names in this
  order (an agent with nothing to trade has ``sn = 0`` and stays off that window's market);
* ``key_bits`` — 512 (tests), 1024 or 2048; ``processes`` — 1: every agent in this process
  (pools filled by a thread of this process), more: agents round-robin over that many worker
  processes linked by mutual TLS (pools filled by a thread of each worker);
* ``seed`` — the public seed of the windows' orders (window ``w`` of the session is window ``w``
  of the seed); ``key_lifetime`` — windows per key lifetime; ``keys`` — ready-made key pairs,
  one per agent (``processes=1`` only; tests cache them).

``run_window`` takes the market prices of each window (they may change between windows).
Errors: :class:`~sealgrid.mechanism.pem.PemInputError` for agents that are not the session's
or out of range and for an unusable key size (raised before anything starts);
:class:`~sealgrid.protocol.pem.procs.WorkerError` when a worker process fails.
"""

from __future__ import annotations

from collections.abc import Sequence

from sealgrid.mechanism.pem import PemInputError
from sealgrid.protocol.pem.harness import check_key_bits
from sealgrid.protocol.pem.host import KeyPair, LocalBackend
from sealgrid.protocol.pem.peer import PemPeer
from sealgrid.protocol.pem.windows import DAY_WINDOWS, Backend, WindowRunner, WindowStats

__all__ = ["DAY_WINDOWS", "PemSession", "WindowStats"]


class PemSession(WindowRunner):
    """Long-lived PEM agents: keys once per key lifetime, pools refilled between windows.

    See the module docstring for the arguments and a use. ``with`` opens the session (starts
    the hosts, makes the keys, starts filling pools for the first window) and closes it.
    """

    def __init__(self, names: Sequence[str], *, key_bits: int = 2048, processes: int = 1,
                 seed: int = 0, key_lifetime: int = DAY_WINDOWS,
                 keys: Sequence[KeyPair] | None = None) -> None:
        if processes < 1:
            raise PemInputError("a session needs at least one process")
        check_key_bits(key_bits)
        backend: Backend
        if processes == 1:
            backend = LocalBackend(len(names), seed, key_bits, keys)
        else:
            if keys is not None:
                raise PemInputError("with worker processes every agent makes its keys there")
            from sealgrid.protocol.pem.procs import ProcessBackend

            backend = ProcessBackend(len(names), seed, key_bits, processes)
        super().__init__(backend, names, key_bits=key_bits, key_lifetime=key_lifetime)
        self.seed = seed

    @property
    def processes(self) -> int:
        """How many processes host the agents."""
        return self.backend.processes

    @property
    def peers(self) -> list[PemPeer]:
        """The agents' peers by position (``processes=1`` only; the harness's view for tests).

        Raises:
            RuntimeError: the peers live in worker processes.
        """
        if not isinstance(self.backend, LocalBackend):
            raise RuntimeError("the peers live in worker processes (processes > 1)")
        return self.backend.peers
