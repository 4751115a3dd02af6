"""A party started ahead of its work (``clearing.WarmParty``): unseen while it waits, then run
with the command line, directory and log the server hands it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sealgrid.protocol.party import PACKAGE_OPTIONS
from sealgrid.service import clearing
from sealgrid.service.clearing import WarmParty, _running_parties, party_processes

#: What an MPC party is to the /proc readers: its module and ``--warm`` on the command line;
#: the process moves to the directory it is given (a work directory, or ``/`` to wait).
_LOOKS_LIKE_A_PARTY = ("import os, sys, time\nos.chdir(sys.argv[1])\nprint(flush=True)\n"
                       "time.sleep(60)\n")


def _fake_party(where: Path | str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", _LOOKS_LIKE_A_PARTY, str(where),
                             "sealgrid.protocol.party", "--warm"], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"\n"
    return proc


def test_a_party_started_ahead_counts_once_it_works_in_its_directory(tmp_path: Path) -> None:
    waiting, working = _fake_party("/"), _fake_party(tmp_path)
    try:
        listed = [pid for pid, _, _ in party_processes()]
        assert working.pid in listed and waiting.pid not in listed
        # found where it works, as a restarted server looks for a party that outlived it
        assert _running_parties(tmp_path) == [working.pid]
        assert _running_parties(tmp_path / "." / ".." / tmp_path.name) == [working.pid]
    finally:
        for proc in (waiting, working):
            proc.kill()
            proc.wait()


def test_a_party_started_ahead_waits_unseen_then_runs_the_work_it_is_handed(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        warm = WarmParty(tmp_path / "mpc" / "ahead.log")
        await warm.refill()
        assert warm.ready
        waiting = warm._proc
        assert waiting is not None
        assert waiting.pid not in [pid for pid, _, _ in party_processes()]
        await warm.refill()  # one waits already: no second
        assert warm._proc is waiting
        # one party alone: refused by the party's own check, on the log in its directory
        proc = await warm.take(["--data-dir", str(tmp_path), "-I", "0", "--ssl", "-K", "26",
                                *PACKAGE_OPTIONS], tmp_path)
        assert proc is waiting and not warm.ready
        assert await asyncio.wait_for(proc.wait(), 30) == 2
        assert "at least 3 parties" in (tmp_path / "party.log").read_text()
        await warm.refill()
        again = warm._proc
        assert again is not None and again is not waiting
        # a command line without the options the mpyc package read at the start is refused
        other = tmp_path / "other"
        other.mkdir()
        proc = await warm.take(["--data-dir", str(other), "-I", "0"], other)
        assert proc is not None and await asyncio.wait_for(proc.wait(), 30) == 2
        assert "lacks" in (other / "party.log").read_text()
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


def test_parties_that_die_waiting_are_given_up_after_three(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(clearing, "WARM", "--no-such-option")  # each dies at once (usage)

    async def scenario() -> int:
        warm = WarmParty(tmp_path / "ahead.log")
        started = 0
        for _ in range(10):
            await warm.refill()
            if warm._proc is not None and warm._proc.returncode is None:
                started += 1
                await warm._proc.wait()
            time.sleep(0.01)
        assert not warm.ready and warm._closed
        return started

    assert asyncio.run(scenario()) == WarmParty.GIVE_UP
    assert "died 3 times in a row" in caplog.text
    assert (tmp_path / "ahead.log").read_bytes()  # what they said is kept


def test_a_party_handed_its_options_at_the_gate_ends_when_its_batch_never_comes(
        tmp_path: Path) -> None:
    """Staged at the gate (``clearing.stage``), a party links to its peers while its server
    agrees; when no batch comes (no bid agreed, a failed agreement) closing its input ends it
    at once, while it still tries peers that never listen and after its links are up alike,
    and it leaves no port listening and no count of running parties behind."""
    import socket
    from decimal import Decimal

    from sealgrid.mechanism.grid import PriceGrid
    from sealgrid.mechanism.market import Market
    from sealgrid.protocol.certs import make_party_certificates

    dirs = [tmp_path / f"p{i}" for i in range(3)]
    make_party_certificates(dirs)
    market = Market(PriceGrid(Decimal("0.04"), Decimal("0.2"), Decimal("0.001")))
    ports = _free_ports(3)
    peers = [f"127.0.0.1:{port}" for port in ports]

    async def staged(i: int, where: str) -> tuple[WarmParty, clearing.StagedParty]:
        warm = WarmParty()
        await warm.refill()
        found = await clearing.stage(warm, i, peers, tmp_path / where / f"gate-{i}", dirs[i],
                                     20.0, market)
        assert found is not None and found.alive and warm.running == 1
        return warm, found

    async def ended(warm: WarmParty, party: clearing.StagedParty) -> None:
        t0 = time.monotonic()
        await party.abandon()
        log = (party.workdir / "party.log").read_text()
        assert party.proc.returncode == 4 and "gave no batch" in log, log
        assert time.monotonic() - t0 < 1.0 and not party.alive
        await warm.close()
        assert warm.running == 0

    async def scenario() -> None:
        # party 1 alone: it listens on its port and tries party 2, which never comes
        warm, alone = await staged(1, "alone")
        assert (alone.workdir / ".config" / "party_1.key").exists()
        other = WarmParty()  # a directory that exists is an earlier attempt's: none there
        await other.refill()
        assert other.ready
        assert await clearing.stage(other, 1, peers, alone.workdir, dirs[1], 20.0,
                                    market) is None
        assert other.ready and other.running == 0
        await other.close()
        await asyncio.sleep(1.5)  # its imports done, it tries its peers every 5 ms
        assert alone.proc.returncode is None
        await ended(warm, alone)
        with socket.socket() as s:  # its port is free again for the next attempt's party
            s.bind(("127.0.0.1", ports[1]))

        # all three, linked to each other, then given no batch
        three = [await staged(i, "linked") for i in range(3)]
        for _ in range(200):
            logs = [_text(p.workdir / "party.log") for _, p in three]
            if all("linked to every peer" in log for log in logs):
                break
            await asyncio.sleep(0.1)
        assert all("linked to every peer" in log for log in logs), logs
        for warm, party in three:
            await ended(warm, party)

        # one that died before its batch came is not handed it: the server starts another
        warm, dead = await staged(0, "dead")
        dead.proc.kill()
        await dead.proc.wait()
        assert not dead.alive and await dead.hand(["--segments", "0"]) is None
        assert warm.running == 0
        await warm.close()

    asyncio.run(scenario())


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:  # not opened yet
        return ""


def _free_ports(n: int) -> list[int]:
    from sealgrid.service.local import free_port_range

    base = free_port_range(n)  # below the ephemeral range: no outgoing connection takes it
    return list(range(base, base + n))
