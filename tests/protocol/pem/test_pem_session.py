"""A PEM session: agents that live across windows, keys made once per key lifetime, every window
equal to the plaintext PEM (price exactly, amounts within the documented bound)."""

from __future__ import annotations

import random

import pytest

from sealgrid.mechanism.pem import Agent, MarketKind
from sealgrid.protocol.pem import wire
from sealgrid.protocol.pem.runner import run_windows_local

from .test_pemsec_protocol import PAPER, assert_matches, random_agents

pytestmark = pytest.mark.timeout(120)


def windows_of(seed: int, n: int, shares: list[float]) -> list[list[Agent]]:
    rng = random.Random(seed)
    return [random_agents(rng, n, share) for share in shares]


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
