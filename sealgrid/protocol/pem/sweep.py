"""Paper xie2020's Fig. 5 as a sweep of the private PEM: runtime against windows, key size and
agents; assumes a harness that may hold every agent's data (random windows, as the benchmark).

One axis varies at a time around a base point (the paper's: 300 agents, 2048-bit keys). Each
point is one :class:`~sealgrid.protocol.pem.session.PemSession` — keys made once, pools refilled
between windows — over that many random windows (seeded: the windows of a point are those of
``sealgrid bench pem`` with the same agents, windows and seed), every window checked against the
plaintext PEM. Per point: the offline time of the whole run (key generation plus every window's
pool filling, wall time), the online time per window, the total per window (both together over
the windows: what Fig. 5(a) calls the average runtime for a single trading window), and the
bytes per agent per window. :data:`PAPER` holds the only numbers the paper's text gives for
these figures, cited; plotting is in :mod:`sealgrid.sim.pem_sweep` (this layer draws nothing).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sealgrid.mechanism.pem import Agent, PemInputError, PemMarket
from sealgrid.protocol.pem.harness import KEY_SIZES, PemStats, matches_plaintext
from sealgrid.protocol.pem.session import PemSession
from sealgrid.protocol.pem.windows import WindowStats

#: Default shares of sellers per window: mostly general markets (as in the paper), some extreme.
SHARES = (0.3, 0.4, 0.6)
#: The paper's prices (§VII-A): retail 120, feed-in 80, range [90, 110] ct/kWh.
MARKET = PemMarket.from_values(120, 80, 90, 110)
#: The axes of the sweep, as a point's fields.
AXES = ("agents", "key_bits", "windows")
#: The paper's base point: 300 homes (§VII-A), 2048-bit keys.
PAPER_BASE = {"agents": 300, "key_bits": 2048, "windows": 1}

#: What paper xie2020 (Proceedings of ICDCS 2020; ../shared/papers) states in its text about
#: Fig. 5 and Table I. The figures' curves are not given as numbers anywhere in the text.
PAPER: dict[str, Any] = {
    "source": "xie2020, §VII-B (Computational Performance Evaluation, Fig. 5) and §VII-D "
              "(Communication Overheads, Table I)",
    "machine": "NSF CloudLab server, eight 64-bit ARMv8 cores at 2.4 GHz, 64 GB, one Docker "
               "container per home (§VII-A)",
    "seconds_per_window": 1.0,
    "seconds_per_window_cited": "§VII-B on Fig. 5(a): 'The average runtime for each trading "
                                "window is around 1 sec' (100 to 300 agents, 512/1024/2048-bit "
                                "keys, 1 to 720 windows)",
    "fig_5a": "per-window runtime against windows (1 to 720): the text gives only 'around 1 sec'",
    "fig_5b": "total runtime against windows, 200 agents, three key sizes: no numbers in the text;"
              " it says the key size 'does not affect the runtime' (encryption and decryption "
              "run in parallel during idle time)",
    "fig_5c": "total runtime against agents: no numbers in the text; it says the runtime "
              "'increases as the number of agents increases'",
    "table_1": {
        "cited": "Table I, 'Average bandwidth (MB) over m trading windows' of all 200 smart homes"
                 " (the text does not say per home, per window or in total)",
        "homes": 200,
        "unit": "MB",
        "m": [300, 360, 420, 480, 540, 600, 660, 720],
        "512": [0.45, 0.54, 0.48, 0.52, 0.47, 0.48, 0.55, 0.46],
        "1024": [0.84, 0.88, 1.02, 0.93, 0.98, 1.06, 0.97, 0.96],
        "2048": [1.87, 2.12, 2.05, 2.11, 2.20, 2.16, 2.05, 2.01],
    },
}


def random_window(rng: random.Random, agents: int, sellers: float) -> list[Agent]:
    """One window of random agents, about ``sellers`` of them with surplus (kWh-sized values)."""
    out = []
    for i in range(agents):
        selling = rng.random() < sellers
        g = rng.uniform(0.5, 3) if selling else rng.uniform(0, 0.5)
        load = rng.uniform(0, 0.5) if selling else rng.uniform(0.5, 3)
        battery = rng.uniform(-0.3, 0.3)
        out.append(Agent.from_values(
            f"h{i:04d}", f"{g:.6f}", f"{load:.6f}", f"{battery:.6f}",
            rng.choice(("20", "40")), f"{rng.uniform(0.05, 0.95):.6f}"))
    return out


def random_windows(agents: int, windows: int, seed: int,
                   sellers: float | None = None) -> list[list[Agent]]:
    """The benchmark's windows: seeded, seller shares cycling :data:`SHARES` unless given."""
    rng = random.Random(seed)
    shares = [sellers] if sellers is not None else list(SHARES)
    return [random_window(rng, agents, shares[w % len(shares)]) for w in range(windows)]


@dataclass(frozen=True)
class Point:
    """One point of the sweep."""

    agents: int
    key_bits: int
    windows: int

    def __post_init__(self) -> None:
        if self.agents < 2:
            raise PemInputError(f"a point needs at least 2 agents, not {self.agents}")
        if self.key_bits not in KEY_SIZES:
            raise PemInputError(f"key size must be one of {KEY_SIZES}, not {self.key_bits}")
        if self.windows < 1:
            raise PemInputError(f"a point needs at least 1 window, not {self.windows}")


@dataclass(frozen=True)
class Measurement:
    """One session over a point's windows: every window's stats and the run's totals."""

    point: Point
    processes: int
    seed: int
    markets: tuple[str, ...]
    per_window: tuple[WindowStats, ...]
    totals: PemStats
    matches_plaintext: bool
    keygen_seconds: float

    @property
    def offline_seconds(self) -> float:
        """Offline wall time of the run: key generation and every window's pool filling."""
        return self.keygen_seconds + sum(s.pool_seconds for s in self.per_window)

    @property
    def online_seconds_per_window(self) -> float:
        """Mean online wall time of a window."""
        return sum(s.online_seconds for s in self.per_window) / len(self.per_window)

    @property
    def total_seconds_per_window(self) -> float:
        """Offline and online time of the run over its windows (Fig. 5(a)'s runtime)."""
        online = sum(s.online_seconds for s in self.per_window)
        return (self.offline_seconds + online) / len(self.per_window)

    def row(self, axes: Sequence[str] = ()) -> dict[str, Any]:
        """The point as one row of ``sweep.json`` (``axes``: the axes it lies on)."""
        windows = len(self.per_window)
        return {
            "agents": self.point.agents,
            "key_bits": self.point.key_bits,
            "windows": self.point.windows,
            "offline_seconds": round(self.offline_seconds, 4),
            "online_seconds_per_window": round(self.online_seconds_per_window, 4),
            "total_seconds_per_window": round(self.total_seconds_per_window, 4),
            "bytes_per_agent_per_window": round(self.totals.bytes_per_agent),
            "matches_plaintext": self.matches_plaintext,
            "axes": list(axes),
            "keygen_seconds": round(self.keygen_seconds, 4),
            "pool_seconds_per_window": round(
                sum(s.pool_seconds for s in self.per_window) / windows, 4),
            "offline_cpu_seconds": round(sum(s.offline_cpu_seconds for s in self.per_window), 3),
            "offline_wait_seconds_per_window": round(
                sum(s.offline_wait_seconds for s in self.per_window) / windows, 4),
            "setup_seconds": round(self.totals.setup_seconds, 3),
            "pool_misses": self.totals.pool_misses,
            "markets": list(self.markets),
            "processes": self.processes,
        }


def measure(point: Point, *, processes: int, seed: int,
            sellers: float | None = None) -> Measurement:
    """Run one point: a session over ``point.windows`` random windows (see :func:`random_windows`).

    Raises:
        PemInputError: a bad point or key size.
    """
    windows = random_windows(point.agents, point.windows, seed, sellers)
    names = [a.name for a in windows[0]]
    stats: list[WindowStats] = []
    matches, markets = True, []
    with PemSession(names, key_bits=point.key_bits, processes=processes, seed=seed) as session:
        for agents in windows:
            outcome, window_stats = session.run_window(agents, MARKET)
            stats.append(window_stats)
            markets.append(outcome.market.value)
            matches = matches and matches_plaintext(agents, MARKET, outcome)
        totals = session.totals()
    return Measurement(point, session.processes, seed, tuple(markets), tuple(stats), totals,
                       matches, sum(s.keygen_seconds for s in stats))


def points(base: Point, axes: Mapping[str, Sequence[int]]) -> list[tuple[Point, tuple[str, ...]]]:
    """The sweep's distinct points, base first, each with the axes it lies on (the base lies on
    an axis whose values include its own).

    Raises:
        PemInputError: an axis that is not one of :data:`AXES`, or a bad value.
    """
    found: dict[Point, list[str]] = {base: []}
    for axis, values in axes.items():
        if axis not in AXES:
            raise PemInputError(f"a sweep axis is one of {', '.join(AXES)}, not {axis!r}")
        for value in values:
            found.setdefault(replace(base, **{axis: value}), []).append(axis)
    return [(p, tuple(dict.fromkeys(found[p]))) for p in found]


@dataclass(frozen=True)
class Sweep:
    """The sweep's points measured, base first."""

    base: Point
    axes: Mapping[str, tuple[int, ...]]
    measurements: tuple[tuple[Measurement, tuple[str, ...]], ...]

    @property
    def base_measurement(self) -> Measurement:
        """The base point's run."""
        return self.measurements[0][0]

    def rows(self) -> list[dict[str, Any]]:
        """One row per point (``sweep.json``)."""
        return [m.row(axes) for m, axes in self.measurements]


def run_sweep(base: Point, axes: Mapping[str, Sequence[int]], *, processes: int, seed: int,
              sellers: float | None = None,
              progress: Callable[[Point], None] | None = None) -> Sweep:
    """Measure every point of the sweep (:func:`points`), one session each."""
    todo = points(base, axes)
    done = []
    for point, on in todo:
        if progress is not None:
            progress(point)
        done.append((measure(point, processes=processes, seed=seed, sellers=sellers), on))
    return Sweep(base, {a: tuple(v) for a, v in axes.items()}, tuple(done))
