"""What one process keeps of its PEM agents between windows: keys, peers, background offline work.

Assumes the process is one trust domain (docs/pem.md, *Assumptions*): an :class:`AgentHost`
holds the :class:`~sealgrid.protocol.pem.peer.PemPeer` of each agent it hosts — in a worker of
:mod:`~sealgrid.protocol.pem.procs`, or all agents in the harness's own process
(:class:`~sealgrid.protocol.pem.session.PemSession` with ``processes=1``). The peers live as
long as the host: their keys are made once per key lifetime (:meth:`AgentHost.make_keys`), and
their randomizer pools are refilled by one background thread (:class:`PoolFiller`) in the idle
time between windows, as the paper's agents encrypt "in parallel during idle time" (§VII-B).
The thread never runs during a window's online phase: :meth:`AgentHost.finish_offline` waits for
it first (and says how long it waited).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sealgrid.mechanism.pem import Agent, PemMarket
from sealgrid.protocol.pem import dgk
from sealgrid.protocol.pem import paillier as pa
from sealgrid.protocol.pem.harness import PeerCounters, make_keys
from sealgrid.protocol.pem.net import LocalRouter
from sealgrid.protocol.pem.peer import Directory, PeerOutput, PemPeer
from sealgrid.protocol.pem.windows import KeyReport, Offline, Online

KeyPair = tuple[pa.SecretKey, dgk.DgkSecretKey]


@dataclass(frozen=True)
class OfflineWork:
    """Offline work of one host: wall and CPU seconds, and how long a window waited for it."""

    wall: float = 0.0
    cpu: float = 0.0
    waited: float = 0.0


@dataclass(frozen=True)
class KeyRound:
    """One round of key generation on a host: the public keys by agent id, and its cost."""

    public: Mapping[int, tuple[pa.PublicKey, dgk.DgkPublicKey]]
    wall: float
    cpu: float


class PoolFiller:
    """Fills the pools of a host's peers for one window in a background thread."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._work = OfflineWork()
        self._error: BaseException | None = None

    def start(self, peers: Sequence[PemPeer], window: int) -> None:
        """Start filling for ``window``; the previous fill must have been finished."""
        if self._thread is not None:
            raise RuntimeError("a pool fill is still running: finish it first")
        self._error = None
        stop = self._stop = threading.Event()

        def work() -> None:
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                for peer in peers:
                    if stop.is_set():
                        break
                    peer.offline(window)
            except BaseException as exc:  # handed to the thread that waits for it
                self._error = exc
            self._work = OfflineWork(time.perf_counter() - wall, time.thread_time() - cpu)

        self._thread = threading.Thread(target=work, name=f"{self.name} pools w{window}",
                                        daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        """Stop the running fill after the peer it is at (the session ends, or keys change)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()

    def finish(self) -> OfflineWork:
        """Wait for the running fill (if any); its wall and CPU time and how long we waited.

        Raises:
            Exception: whatever the fill raised.
        """
        thread, self._thread = self._thread, None
        if thread is None:
            return OfflineWork()
        start = time.perf_counter()
        thread.join()
        waited = time.perf_counter() - start
        if self._error is not None:
            raise self._error
        return OfflineWork(self._work.wall, self._work.cpu, waited)


class AgentHost:
    """The agents one process hosts (ids ``ids`` of ``count``), alive across windows.

    ``router`` links their endpoints to the other agents (a :class:`LocalRouter` in one process,
    a :class:`~sealgrid.protocol.pem.net.TcpRouter` between processes).
    """

    def __init__(self, ids: Sequence[int], count: int, seed: int, router: LocalRouter,
                 name: str = "PEM host") -> None:
        self.ids = list(ids)
        self.count = count
        self.seed = seed
        self.router = router
        self.peers: dict[int, PemPeer] = {}
        self.filler = PoolFiller(name)

    def make_keys(self, key_bits: int, keys: Mapping[int, KeyPair] | None = None) -> KeyRound:
        """Make (or take from ``keys``) every hosted agent's Paillier and DGK keys.

        The first call creates the peers; a later one starts a new key lifetime: each peer's
        old keys and the randomizers made for any old key are dropped (:meth:`PemPeer.rekey`).
        """
        self.filler.cancel()  # a fill for the old keys is of no use now
        rng = random.SystemRandom()
        wall, cpu = time.perf_counter(), time.process_time()
        made = {i: keys[i] if keys is not None else make_keys(key_bits, rng) for i in self.ids}
        round_ = KeyRound({i: (sk.public, dsk.public) for i, (sk, dsk) in made.items()},
                          time.perf_counter() - wall, time.process_time() - cpu)
        for i, (sk, dsk) in made.items():
            peer = self.peers.get(i)
            if peer is None:
                self.peers[i] = PemPeer(i, self.count, None, self.seed, self.router.add(i),
                                        sk, dsk)
            else:
                peer.rekey(sk, dsk)
        return round_

    def install(self, directory: Directory, window: int | None) -> None:
        """Hand every peer the public keys of all agents; start filling pools for ``window``."""
        for peer in self.peers.values():
            peer.directory = directory
        if window is not None:
            self.filler.start(list(self.peers.values()), window)

    def finish_offline(self) -> OfflineWork:
        """Wait for the background fill before a window's online phase."""
        return self.filler.finish()

    async def run_window(self, window: int, agents: Mapping[int, Agent],
                         market: PemMarket) -> list[PeerOutput]:
        """Run the online phase of ``window`` for every hosted agent (data by agent id)."""
        for peer in self.peers.values():
            peer.market = market
        return list(await asyncio.gather(
            *(peer.run_window(window, agents[i]) for i, peer in self.peers.items())))

    def prefill(self, window: int) -> None:
        """Start filling pools for ``window`` in the background (after the previous window)."""
        self.filler.start(list(self.peers.values()), window)

    def counters(self) -> dict[int, PeerCounters]:
        """Every hosted agent's counters so far (bytes, messages, pool use)."""
        return {i: PeerCounters.of(self.router.endpoints[i], peer)
                for i, peer in self.peers.items()}

    def close(self) -> None:
        """Stop a running fill: no window will use it."""
        self.filler.cancel()


class LocalBackend:
    """Every agent in this process (one :class:`AgentHost`, a :class:`LocalRouter`, one asyncio
    loop per window); the pools are filled by a thread of this process between windows.

    ``keys`` (one pair per agent, e.g. cached by tests) replaces the first round of key
    generation; later key lifetimes make new keys.
    """

    processes = 1

    def __init__(self, count: int, seed: int, key_bits: int,
                 keys: Sequence[KeyPair] | None = None) -> None:
        if keys is not None and len(keys) < count:
            raise ValueError(f"{count} agents need {count} key pairs, not {len(keys)}")
        self.count = count
        self.key_bits = key_bits
        self.router = LocalRouter()
        self.host = AgentHost(range(count), count, seed, self.router, "PEM agents")
        self._given = None if keys is None else dict(enumerate(keys[:count]))

    @property
    def peers(self) -> list[PemPeer]:
        """The agents' peers by id (the harness's view, for tests)."""
        return [self.host.peers[i] for i in range(self.count)]

    def make_keys(self) -> KeyReport:
        """Make (or take the given) keys for every agent."""
        start = time.perf_counter()
        given, self._given = self._given, None
        round_ = self.host.make_keys(self.key_bits, given)
        return KeyReport(round_.public, round_.wall, round_.cpu, time.perf_counter() - start)

    def install(self, directory: Directory, window: int | None) -> None:
        """Hand out the public keys; start filling pools for ``window``."""
        self.host.install(directory, window)

    def finish_offline(self) -> Offline:
        """Wait for the background fill."""
        work = self.host.finish_offline()
        return Offline(work.wall, work.cpu, work.waited)

    def online(self, window: int, agents: Sequence[Agent], market: PemMarket,
               prefill: int | None) -> Online:
        """Run the window's online phase in one asyncio loop; then start the next fill."""
        data = dict(enumerate(agents))
        start = time.perf_counter()
        outputs = asyncio.run(self.host.run_window(window, data, market))
        seconds = time.perf_counter() - start
        counters = self.host.counters()
        if prefill is not None:
            self.host.prefill(prefill)
        return Online(outputs, seconds, counters)

    def close(self) -> None:
        """Stop a running fill; the peers go with this object."""
        self.host.close()
