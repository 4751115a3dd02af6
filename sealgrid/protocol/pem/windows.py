"""The window loop of the private PEM with agents that live across windows; assumes a harness
that may hold every agent's data (as :mod:`~sealgrid.protocol.pem.harness`).

:class:`WindowRunner` drives a *backend* — the agents in this process
(:class:`~sealgrid.protocol.pem.host.LocalBackend`) or in worker processes
(:class:`~sealgrid.protocol.pem.procs.ProcessBackend`) — through a run's windows:

* **offline, once per key lifetime:** every agent makes its Paillier and DGK keys, the public keys
  are handed to all (Protocol 1, lines 1–2);
* **offline, between windows:** each host refills its agents' randomizer pools for the next
  window in a background thread, started as soon as a window's online phase ends; the next
  window first waits for it (``offline_wait_seconds``, zero when the idle time sufficed);
* **online:** the window's Protocols 1–4, timed from the start signal until the last agent has
  its output.

:class:`~sealgrid.protocol.pem.session.PemSession` is the public front of this loop; this module
only knows the backend protocol, so that :mod:`~sealgrid.protocol.pem.procs` can use it too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, Self

from sealgrid.mechanism.pem import Agent, PemInputError, PemMarket, PemOutcome
from sealgrid.protocol.pem import dgk
from sealgrid.protocol.pem import paillier as pa
from sealgrid.protocol.pem.harness import (
    PeerCounters,
    PemStats,
    Timings,
    assemble,
    check_key_bits,
    tally,
)
from sealgrid.protocol.pem.params import check_net
from sealgrid.protocol.pem.peer import Directory, PeerOutput

#: Default key lifetime in windows: one day of one-minute windows, so a day's run makes every
#: agent's keys once.
DAY_WINDOWS = 1440


@dataclass(frozen=True)
class KeyReport:
    """Keys made by all hosts in one round: the public keys by agent id and the cost.

    ``wall`` is the longest host's key generation (hosts work in parallel), ``cpu`` all hosts'
    CPU summed, ``started`` the harness's wall time from its request until every host answered
    (with process start-up on the first round).
    """

    public: Mapping[int, tuple[pa.PublicKey, dgk.DgkPublicKey]]
    wall: float
    cpu: float
    started: float


@dataclass(frozen=True)
class Offline:
    """Background pool filling for one window, over all hosts.

    ``wall``: the longest host's fill; ``cpu``: all hosts' CPU summed; ``waited``: how long the
    window's start waited for the slowest fill still running.
    """

    wall: float = 0.0
    cpu: float = 0.0
    waited: float = 0.0


@dataclass(frozen=True)
class Online:
    """A window's online phase: every agent's output, its wall time, the counters after it."""

    outputs: list[PeerOutput]
    seconds: float
    counters: Mapping[int, PeerCounters]


class Backend(Protocol):
    """Where the agents live; each method is one step of :class:`WindowRunner`'s loop."""

    processes: int

    def make_keys(self) -> KeyReport:
        """Every agent makes new keys (the first call also starts the hosts)."""

    def install(self, directory: Directory, window: int | None) -> None:
        """Hand out the public keys; start filling pools for ``window`` in the background."""

    def finish_offline(self) -> Offline:
        """Wait for the background fills (before a window's online phase)."""

    def online(self, window: int, agents: Sequence[Agent], market: PemMarket,
               prefill: int | None) -> Online:
        """Run a window's online phase; then start filling pools for ``prefill``."""

    def close(self) -> None:
        """Stop the hosts."""


@dataclass(frozen=True)
class WindowStats:
    """Cost of one window of a long-lived run; times in seconds (wall unless named CPU).

    Offline: ``keygen_seconds`` (the longest host's key generation, nonzero only in a window
    that starts a key lifetime — the first, then every ``key_lifetime`` windows —, with
    ``keys_made`` key pairs), ``pool_seconds`` (the longest host's refill of randomizer pools
    for this window, done in the background before it), ``offline_cpu_seconds`` (both, all
    hosts' CPU summed) and ``offline_wait_seconds`` (how long the window's start waited for
    pools still being filled; key generation is always waited for). Online:
    ``online_seconds``, from the start signal until the last agent has its output. Bytes count
    serialised PEM messages of this window only; ``randomizers_made`` and
    ``dgk_randomizers_made`` count the pool values made for it (``r^n mod n²`` and DGK ``h^r``),
    ``randomizers_used`` and ``dgk_randomizers_used`` those its online phase used.
    """

    window: int
    agents: int
    key_bits: int
    processes: int
    online_seconds: float
    keygen_seconds: float
    keys_made: int
    pool_seconds: float
    offline_cpu_seconds: float
    offline_wait_seconds: float
    bytes_per_agent: float
    max_bytes_per_agent: int
    total_bytes: int
    messages: int
    pool_misses: int
    randomizers_used: int
    dgk_randomizers_used: int
    randomizers_made: int
    dgk_randomizers_made: int

    @property
    def offline_seconds(self) -> float:
        """Offline wall time spent for this window: key generation plus pool filling."""
        return self.keygen_seconds + self.pool_seconds


class WindowRunner:
    """Runs windows one at a time with the same agents, keys made once per key lifetime.

    Not thread-safe; one window at a time. Use :meth:`open` before the first window and
    :meth:`close` after the last (or ``with``).
    """

    def __init__(self, backend: Backend, names: Sequence[str], *, key_bits: int,
                 key_lifetime: int = DAY_WINDOWS) -> None:
        names = [str(n) for n in names]
        if len(names) < 1:
            raise PemInputError("no agents")
        if len(set(names)) != len(names):
            raise PemInputError("agent names must be unique")
        if key_lifetime < 1:
            raise PemInputError("the key lifetime must be at least one window")
        check_key_bits(key_bits)
        self.backend = backend
        self.names = tuple(names)
        self.key_bits = key_bits
        self.key_lifetime = key_lifetime
        self.directory: Directory | None = None
        self.windows_run = 0
        self.start_seconds = 0.0  # the first round: hosts started and keys made (wall)
        self.key_rounds = 0
        self._pending_keys: KeyReport | None = None
        self._counters: dict[int, PeerCounters] = {}
        self._online = self._pool_wall = self._pool_cpu = 0.0
        self._open = False
        self._closed = False

    # -- lifetime -----------------------------------------------------------------------------
    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Start the hosts, make every agent's keys, start filling pools for the first window."""
        if self._open or self._closed:
            raise RuntimeError("a session is opened once")
        self._open = True
        try:
            report = self._new_keys(0)
        except BaseException:
            self.close()
            raise
        self.start_seconds = report.started

    def close(self) -> None:
        """Stop the hosts (their keys and pools are gone). Safe to call twice."""
        if not self._closed:
            self._closed = True
            self.backend.close()

    def _new_keys(self, window: int) -> KeyReport:
        report = self.backend.make_keys()
        directory = Directory(
            tuple(report.public[i][0] for i in range(len(self.names))),
            tuple(report.public[i][1] for i in range(len(self.names))),
        )
        self.backend.install(directory, window)
        self.directory = directory
        self.key_rounds += 1
        self._pending_keys = report
        return report

    # -- one window ---------------------------------------------------------------------------
    def check(self, agents: Sequence[Agent]) -> None:
        """Refuse a window whose agents are not this run's, in order, or out of range.

        Raises:
            PemInputError: other names or order, or a net energy beyond the public bound.
        """
        if tuple(a.name for a in agents) != self.names:
            raise PemInputError(
                "every window must list the session's agents, by the same names in the same order")
        for a in agents:
            check_net(a.net)

    def run_window(self, agents: Sequence[Agent], market: PemMarket) -> tuple[PemOutcome,
                                                                            WindowStats]:
        """Run the next window among the long-lived agents; its outcome and :class:`WindowStats`.

        Raises:
            PemInputError: the agents are not the session's (see :meth:`check`).
            RuntimeError: the session is not open.
        """
        if not self._open or self._closed:
            raise RuntimeError("the session is not open (use it in a with block)")
        self.check(agents)
        w = self.windows_run
        if w and w % self.key_lifetime == 0:  # a new key lifetime: new keys for everyone
            self._new_keys(w)
        keys, self._pending_keys = self._pending_keys, None
        offline = self.backend.finish_offline()
        following = w + 1
        prefill = following if following % self.key_lifetime else None
        online = self.backend.online(w, agents, market, prefill)
        outcome = assemble(online.outputs, agents)
        stats = self._window_stats(w, online, offline, keys)
        self.windows_run += 1
        self._online += online.seconds
        self._pool_wall += offline.wall
        self._pool_cpu += offline.cpu
        return outcome, stats

    def _window_stats(self, w: int, online: Online, offline: Offline,
                      keys: KeyReport | None) -> WindowStats:
        count = len(self.names)
        zero = PeerCounters(0, 0, 0, 0, 0, 0, 0, 0)
        before = [self._counters.get(i, zero) for i in range(count)]
        after = [online.counters[i] for i in range(count)]
        self._counters = dict(enumerate(after))
        traffic = [a.bytes_sent + a.bytes_received - b.bytes_sent - b.bytes_received
                   for a, b in zip(after, before, strict=True)]

        def delta(field: str) -> int:
            return sum(getattr(a, field) - getattr(b, field)
                       for a, b in zip(after, before, strict=True))

        return WindowStats(
            window=w, agents=count, key_bits=self.key_bits, processes=self.backend.processes,
            online_seconds=online.seconds,
            keygen_seconds=keys.wall if keys else 0.0,
            keys_made=len(keys.public) if keys else 0,
            pool_seconds=offline.wall,
            offline_cpu_seconds=offline.cpu + (keys.cpu if keys else 0.0),
            offline_wait_seconds=offline.waited,
            bytes_per_agent=sum(traffic) / count,
            max_bytes_per_agent=max(traffic),
            total_bytes=delta("bytes_sent"),
            messages=delta("messages_sent"),
            pool_misses=delta("pool_misses"),
            randomizers_used=delta("paillier_used"),
            dgk_randomizers_used=delta("dgk_used"),
            randomizers_made=delta("paillier_made"),
            dgk_randomizers_made=delta("dgk_made"),
        )

    def totals(self) -> PemStats:
        """The run so far as :class:`PemStats` (per-window means; setup = the first round).

        Raises:
            RuntimeError: no window has run yet.
        """
        if not self.windows_run:
            raise RuntimeError("no window has run yet")
        counters = [self._counters[i] for i in range(len(self.names))]
        timings = Timings(self._online, self._pool_cpu, self._pool_wall, self.start_seconds)
        return tally(counters, timings, key_bits=self.key_bits, windows=self.windows_run,
                     processes=self.backend.processes)


__all__ = ["DAY_WINDOWS", "Backend", "KeyReport", "Offline", "Online",
           "WindowRunner", "WindowStats"]
