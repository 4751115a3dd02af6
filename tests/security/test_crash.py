"""Threat: denial of service by crashes and silent peers; assumes three real local servers.

Seeded runs (small, for CI; the long series is ``sealgrid bench chaos``): one server is
SIGKILLed and restarted at a chosen moment, or frozen with SIGSTOP. No receipted bid may be
lost; the three servers end in the same state — all cleared on the same bid set and outcome,
equal to the plaintext clearing of that set (what a crash-free run with the same seed
gives), or all failed — and every household is told that status. A frozen peer must be
noticed within seconds: the others publish a failed period instead of hanging.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.chaos.crash import CrashRun, crash_run

pytestmark = pytest.mark.slow


def _check(run: CrashRun) -> None:
    assert run.receipts > 0
    assert run.lost == 0, run
    assert run.statuses_agree and run.bidsets_agree, run
    assert run.complete_bids_in_agreed_set, run
    told = run.households_told
    # a cleared period tells each household its outcome's status (cleared or no_trade)
    want = run.outcome["status"] if run.status[0] == "cleared" and run.outcome else run.status[0]
    assert set(told) == {want} and told[want] == 3 * run.households, run
    if run.status[0] == "cleared":
        assert run.matches_reference, run


@pytest.mark.parametrize("moment,seed", [("writing", 11), ("clearing", 12)])
def test_a_killed_and_restarted_server_loses_nothing(tmp_path: Path, moment: str,
                                                     seed: int) -> None:
    run = asyncio.run(crash_run(tmp_path / "d", seed, moment=moment, households=6))
    _check(run)
    assert run.moment == moment and run.signal == "SIGKILL"


def test_a_silent_peer_is_noticed_within_seconds(tmp_path: Path) -> None:
    run = asyncio.run(crash_run(tmp_path / "d", 13, moment="clearing", households=4,
                                peer_timeout=4, stop=True))
    _check(run)
    assert run.silent_peer_noticed_seconds is not None, "the others hung on a frozen peer"
    assert run.hit_during_mpc, "the freeze missed the clearing"
    # the others know it is down within about two seconds (heartbeats), then try again until
    # the period's deadline
    assert run.heartbeat_noticed_seconds is not None and run.heartbeat_noticed_seconds < 4, run
    assert run.silent_peer_noticed_seconds < 40, run
