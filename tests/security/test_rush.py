"""Threat: denial of service by a rush at gate closure; assumes three real local servers.

The CI variant: 150 households obtain their tokens ahead, then all send their shares in
the last two seconds before the gate. Nothing may be lost or left unanswered, the three
servers must agree on the same bid set, and it must be exactly the receipted one. The
10,000-household run is ``sealgrid bench chaos --rush 10000``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.chaos.rush import rush

pytestmark = pytest.mark.slow


def test_a_rush_before_the_gate_loses_nothing_and_the_servers_agree(tmp_path: Path) -> None:
    got = asyncio.run(rush(tmp_path / "d", 150, window=2.0))
    print(got)
    assert got["tokens_obtained"] == 150
    assert got["receipted_shares_lost"] == 0
    assert got["unanswered_shares"] == 0
    assert set(got["refused_shares"]) <= {"late"}  # only a share after the gate may be refused
    assert got["servers_agree"] and got["digest_matches_receipts"], got
    assert got["bid_count"] == [got["bids_with_three_receipts"]] * 3
    assert got["bids_with_three_receipts"] > 0
    assert got["bid_latency_ms"]["p99"] > 0
