"""A party started ahead of its work (``clearing.WarmParty``): unseen while it waits, then run
with the command line, directory and log the server hands it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sealgrid.service.clearing import WarmParty, _running_parties, party_processes


def test_a_party_started_ahead_waits_unseen_then_runs_the_work_it_is_handed(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        warm = WarmParty()
        await warm.refill()
        assert warm.ready
        waiting = warm._proc
        assert waiting is not None
        assert waiting.pid not in [pid for pid, _, _ in party_processes()]
        await warm.refill()  # one waits already: no second
        assert warm._proc is waiting
        # one party alone: refused by the party's own check, on the log in its directory
        proc = await warm.take(["--data-dir", str(tmp_path), "-I", "0", "--ssl", "-K", "26"],
                               tmp_path)
        assert proc is waiting and not warm.ready
        assert await asyncio.wait_for(proc.wait(), 30) == 2
        assert "at least 3 parties" in (tmp_path / "party.log").read_text()
        assert _running_parties(tmp_path) == []
        await warm.close()
        await warm.refill()  # closed: none starts
        assert not warm.ready
        assert await warm.take([], tmp_path) is None

    asyncio.run(scenario())


def test_a_waiting_party_ends_when_its_input_closes(tmp_path: Path) -> None:
    async def scenario() -> None:
        warm = WarmParty()
        await warm.refill()
        proc = warm._proc
        assert proc is not None
        await warm.close()
        assert proc.returncode == 0

    asyncio.run(scenario())
