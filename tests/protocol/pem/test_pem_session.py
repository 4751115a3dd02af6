"""A PEM session: agents that live across windows, keys made once per key lifetime, every window
equal to the plaintext PEM (price exactly, amounts within the documented bound)."""

from __future__ import annotations

import itertools
import random

import pytest

from sealgrid.mechanism.pem import Agent, MarketKind, PemInputError, PemMarket
from sealgrid.protocol.pem import PemSession, WindowStats, wire
from sealgrid.protocol.pem.harness import matches_plaintext
from sealgrid.protocol.pem.params import PER_KEY, compare_bits
from sealgrid.protocol.pem.procs import run_windows_processes
from sealgrid.protocol.pem.runner import run_windows_local

from .test_pemsec_protocol import PAPER, assert_matches, random_agents

pytestmark = pytest.mark.timeout(120)


def windows_of(seed: int, n: int, shares: list[float]) -> list[list[Agent]]:
    rng = random.Random(seed)
    return [random_agents(rng, n, share) for share in shares]


def public_keys(session: PemSession) -> list[tuple[int, tuple[int, ...]]]:
    d = session.directory
    assert d is not None
    return [(pk.n, dpk.values()) for pk, dpk in zip(d.paillier, d.dgk, strict=True)]


def test_three_windows_one_session_keys_made_once() -> None:
    windows = windows_of(3, 7, [0.3, 0.4, 0.8])
    names = [a.name for a in windows[0]]
    with PemSession(names, key_bits=512, seed=11) as session:
        keys = public_keys(session)
        secret = [(p.sk, p.dsk) for p in session.peers]
        stats: list[WindowStats] = []
        for agents in windows:
            outcome, window_stats = session.run_window(agents, PAPER)
            assert_matches(agents, PAPER, outcome)
            assert matches_plaintext(agents, PAPER, outcome)
            stats.append(window_stats)
            assert public_keys(session) == keys  # the same keys in every window
            assert all(p.sk is sk and p.dsk is dsk
                       for p, (sk, dsk) in zip(session.peers, secret, strict=True))
        totals = session.totals()
    assert len({n for n, _ in keys}) == len({d for _, d in keys}) == len(names)  # one per agent
    assert [s.window for s in stats] == [0, 1, 2]
    assert [s.keys_made for s in stats] == [7, 0, 0]
    assert stats[0].keygen_seconds > 0 and stats[1].keygen_seconds == stats[2].keygen_seconds == 0
    assert all(s.online_seconds > 0 and s.pool_seconds > 0 and s.bytes_per_agent > 0
               for s in stats)
    # every agent is in every window's head (7 ≤ CANDIDATES): window 0 fills every Paillier
    # pool (PER_KEY per other agent's key), later windows only put back what the window before
    # used; DGK: the first agent of the order for every key, each other agent for the first
    # agent's key and its own (compare_bits each)
    assert stats[0].randomizers_made == 7 * 6 * PER_KEY
    assert stats[0].dgk_randomizers_made == (7 + 6 * 2) * compare_bits(7)
    for before, after in itertools.pairwise(stats):
        assert after.randomizers_made == before.randomizers_used > 0
        assert 0 < after.dgk_randomizers_made <= (7 + 6 * 2) * compare_bits(7)
    assert sum(s.pool_misses for s in stats) == 0
    assert totals.windows == 3 and totals.agents == 7
    assert totals.messages == sum(s.messages for s in stats)
    assert totals.bytes_per_agent == pytest.approx(sum(s.bytes_per_agent for s in stats) / 3)


def test_a_new_key_lifetime_makes_new_keys() -> None:
    windows = windows_of(5, 6, [0.4, 0.3, 0.4, 0.8])
    names = [a.name for a in windows[0]]
    seen = []
    with PemSession(names, key_bits=512, seed=2, key_lifetime=2) as session:
        for agents in windows:
            outcome, stats = session.run_window(agents, PAPER)
            assert_matches(agents, PAPER, outcome)
            seen.append((public_keys(session), stats.keys_made))
    assert [made for _, made in seen] == [6, 0, 6, 0]
    assert seen[0][0] == seen[1][0] and seen[2][0] == seen[3][0]
    assert not {n for n, _ in seen[0][0]} & {n for n, _ in seen[2][0]}  # every key replaced


def test_a_session_over_processes_keeps_its_keys() -> None:
    windows = windows_of(8, 6, [0.2, 0.9])
    names = [a.name for a in windows[0]]
    with PemSession(names, key_bits=512, seed=4, processes=2) as session:
        keys = public_keys(session)
        kinds = []
        for agents in windows:
            outcome, stats = session.run_window(agents, PAPER)
            assert_matches(agents, PAPER, outcome)
            assert public_keys(session) == keys and stats.processes == 2
            kinds.append(outcome.market)
        with pytest.raises(RuntimeError, match="worker processes"):
            _ = session.peers
    assert kinds == [MarketKind.GENERAL, MarketKind.EXTREME]
    assert len({n for n, _ in keys}) == 6


def test_windows_must_list_the_sessions_agents() -> None:
    windows = windows_of(9, 4, [0.5])
    names = [a.name for a in windows[0]]
    with PemSession(names, key_bits=512) as session:
        swapped = list(reversed(windows[0]))
        with pytest.raises(PemInputError, match="the session's agents"):
            session.run_window(swapped, PAPER)
        with pytest.raises(PemInputError, match="the session's agents"):
            session.run_window(windows[0][:3], PAPER)
        outcome, stats = session.run_window(windows[0], PAPER)  # still usable, window 0
        assert stats.window == 0
        assert_matches(windows[0], PAPER, outcome)
    with pytest.raises(RuntimeError, match="not open"):
        session.run_window(windows[0], PAPER)


@pytest.mark.parametrize(("kwargs", "rule"), [
    ({"key_bits": 500}, "key size"), ({"key_lifetime": 0}, "key lifetime"),
    ({"processes": 0}, "at least one process"),
])
def test_session_arguments_are_checked_before_anything_starts(kwargs: dict[str, int],
                                                              rule: str) -> None:
    with pytest.raises(PemInputError, match=rule):
        PemSession(["a", "b"], **{"key_bits": 512, **kwargs})  # type: ignore[arg-type]
    with pytest.raises(PemInputError, match="unique"):
        PemSession(["a", "a"], key_bits=512)


def test_market_prices_may_change_between_windows() -> None:
    windows = windows_of(12, 6, [0.8, 0.8])
    other = PemMarket.from_values(130, 70, 85, 100)
    names = [a.name for a in windows[0]]
    with PemSession(names, key_bits=512, seed=1) as session:
        first, _ = session.run_window(windows[0], PAPER)
        second, _ = session.run_window(windows[1], other)
    assert first.market is second.market is MarketKind.EXTREME
    assert (first.price, second.price) == (PAPER.low, other.low)
    assert_matches(windows[1], other, second)


def test_the_ratio_broadcast_spans_several_wire_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """More contributors than one wire value holds (300 agents at 2048 bits: about 200 buyers
    of 197 bits against 4,096 bytes): the packed ratios go as several values."""
    monkeypatch.setattr(wire, "MAX_VALUE_BYTES", 128)  # 512-bit ciphertexts fit, 5 ratios do
    windows = windows_of(21, 14, [0.25, 0.85])
    outcomes, _, _ = run_windows_local(windows, PAPER, key_bits=512, seed=3)
    for agents, outcome in zip(windows, outcomes, strict=True):
        assert_matches(agents, PAPER, outcome)
        general = outcome.market is MarketKind.GENERAL
        contributors = [a for a in agents if (a.net < 0 if general else a.net > 0)]
        assert len(contributors) > 5


def test_run_windows_processes_is_one_session() -> None:
    windows = windows_of(13, 5, [0.4, 0.4, 0.8])
    outcomes, stats = run_windows_processes(windows, PAPER, key_bits=512, seed=6, processes=2)
    for agents, outcome in zip(windows, outcomes, strict=True):
        assert_matches(agents, PAPER, outcome)
    assert stats.windows == 3 and stats.processes == 2 and stats.setup_seconds > 0
