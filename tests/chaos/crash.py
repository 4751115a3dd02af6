"""Crash runs: SIGKILL (or SIGSTOP) one server at a seeded moment; assumes three local servers.

One run: a fresh data directory, seeded households with their tokens obtained ahead, then
submissions; at the run's moment one seeded server is killed and restarted:

* ``receiving`` — while the submissions are in flight (the server answers some, not all);
* ``writing`` — at once, while the first burst of submissions is being committed;
* ``clearing`` — while the victim's MPC party process runs (it is killed too, as on a host
  that crashes);
* ``publishing`` — as soon as the first server has published its statement.

Households resend the same bytes to a server that did not answer (it says ``replayed`` if it
had stored them). Then every receipt is accounted for in the database of the server that
signed it (a receipted bid that is not there is *lost*), the three statements must agree
(all ``cleared`` on the same bid set and outcome, or all ``failed``), every household must be
told that status, and a cleared outcome must equal the plaintext clearing of the agreed
bids — the result a crash-free run with the same seed gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sealgrid.mechanism.auction import clear
from sealgrid.mechanism.bids import OrderBook
from sealgrid.service import wire
from sealgrid.service.agent import outcome_of
from sealgrid.service.clearing import party_processes
from sealgrid.service.local import LocalMarket

from .market import (
    make_bidders,
    obtain_all,
    open_period,
    read_store,
    seconds_to_gate,
    statements,
    submit_share,
    told,
)

MOMENTS = ("none", "receiving", "writing", "clearing", "publishing")


@dataclass
class CrashRun:
    """Figures of one run."""

    seed: int
    moment: str
    victim: int
    signal: str
    households: int
    receipts: int
    lost: int
    status: list[str]
    statuses_agree: bool
    bidsets_agree: bool
    complete_bids_in_agreed_set: bool
    households_told: dict[str, int]
    matches_reference: bool | None
    outcome: dict[str, Any] | None
    gate_to_statements_seconds: float | None
    silent_peer_noticed_seconds: float | None
    heartbeat_noticed_seconds: float | None  # a frozen peer: until another logs it is down
    hit_during_mpc: bool
    seconds: float


async def crash_run(root: Path, seed: int, *, moment: str | None = None, households: int = 8,
                    period_seconds: int = 6, peer_timeout: int = 6, stop: bool = False,
                    ) -> CrashRun:
    """Run one seeded crash run in ``root`` (a new directory); return its figures."""
    started = time.monotonic()
    rng = random.Random(seed)
    moment = moment or rng.choice(MOMENTS[1:])
    victim = rng.randrange(3)
    sig = signal.SIGSTOP if stop else signal.SIGKILL
    market = LocalMarket(root, households=households, period_seconds=period_seconds,
                         market={"peer_timeout_seconds": peer_timeout,
                                 "min_accepted_per_side": 1})  # a few households still trade
    with market:
        await market.wait_ready()
        period = open_period(market, lead=4.0 + 0.15 * households)
        session = market.session(connections=64)
        rules, bidders = await make_bidders(market, period, seed, session)
        noticed: list[float] = []
        beat: list[float] = []
        in_mpc = False
        try:
            await obtain_all(bidders)

            async def hit() -> None:
                proc = market.procs[victim]
                for child in mpc_children(proc.pid):  # a crashed host loses its MPC party too
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, sig)
                proc.send_signal(sig)
                if stop:  # a silent peer: frozen, its sockets open, until the others give up
                    frozen = time.monotonic()
                    others = [i for i in range(3) if i != victim]
                    line = f"server {victim} stopped answering heartbeats"
                    logs = [market.root / f"server-{i}.log" for i in others]
                    seen = [p.read_text(errors="replace").count(line) for p in logs]
                    async with market.client() as c:
                        while time.monotonic() < frozen + 8 * peer_timeout + 60:
                            if not beat and any(
                                    p.read_text(errors="replace").count(line) > n
                                    for p, n in zip(logs, seen, strict=True)):
                                beat.append(time.monotonic() - frozen)
                            got = []
                            for i in others:
                                try:
                                    got.append(await c.statement(i, period))
                                except Exception:
                                    got.append(None)
                            if all(got) and seconds_to_gate(market, period) < 0:
                                noticed.append(time.monotonic() - frozen)
                                break
                            await asyncio.sleep(0.2)
                    proc.send_signal(signal.SIGCONT)
                    return
                await asyncio.get_running_loop().run_in_executor(None, proc.wait)
                market.procs.pop(victim)
                market.start(victim)
                await market.wait_ready()

            deadline = time.monotonic() + max(1.0, seconds_to_gate(market, period) - 0.5)
            sends = [submit_share(b, i, deadline) for b in bidders for i in range(3)]
            rng.shuffle(sends)
            if moment in ("receiving", "writing"):
                delay = 0.0 if moment == "writing" else rng.uniform(0.05, 0.6)
                tasks = [asyncio.ensure_future(s) for s in sends]
                await asyncio.sleep(delay)
                await hit()
                await asyncio.gather(*tasks)
            else:
                await asyncio.gather(*sends)
            gate_wait = max(0.0, seconds_to_gate(market, period))
            await asyncio.sleep(gate_wait)
            gate_at = time.monotonic()
            if moment == "clearing":  # as soon as the victim's MPC party process runs
                for _ in range(400):
                    if mpc_children(market.procs[victim].pid):
                        in_mpc = True
                        break
                    await asyncio.sleep(0.025)
                await asyncio.sleep(rng.uniform(0.0, 0.2))
                await hit()
            elif moment == "publishing":
                async with market.client() as c:
                    for _ in range(600):
                        found = False
                        for i in range(3):
                            with contextlib.suppress(Exception):
                                found = found or (await c.statement(i, period)) is not None
                        if found:
                            break
                        await asyncio.sleep(0.05)
                await hit()
            sts = await statements(market, period, timeout=4 * peer_timeout + 90)
            reached = time.monotonic() - gate_at if all(sts) else None
            counts = await told(bidders)
        finally:
            await session.close()
    # the servers have stopped: read what each one stored
    stores = [read_store(market.root, i, period) for i in range(3)]
    receipts = sum(len(b.receipts) for b in bidders)
    lost = sum(b.pseudonym.public not in stores[i].pseudonyms
               for b in bidders for i in b.receipts)
    done = [s for s in sts if s is not None]
    status = sorted(s.status for s in done)
    statuses_agree = len(done) == 3 and len(set(status)) == 1
    bidsets_agree = statuses_agree and (  # a failed period's reasons may differ per server
        status[0] == "failed" or len({(s.bidset_sha256, s.outcome) for s in done}) == 1)
    complete = {b.pseudonym.public for b in bidders
                if len(b.receipts) + len(b.stored_unreceipted) == 3}
    agreed = set(stores[0].agreed)
    in_set = (statuses_agree and status[0] == "failed") or complete <= agreed
    public = outcome_of(done[0].outcome) if done else None
    outcome = wire.to_dict(public) if public is not None else None
    matches: bool | None = None
    if statuses_agree and status[0] == "cleared" and public is not None:
        chosen = [b.bid for b in bidders if b.pseudonym.public in agreed]
        ref = clear(OrderBook.from_bids(sorted(chosen, key=lambda b: b.bidder), rules.suppliers),
                    rules.levels, min_accepted_per_side=rules.min_accepted_per_side)
        matches = public.level == ref.level  # the public outcome holds no quantity
        matches = matches and wire.sha256(b"".join(sorted(agreed))) == done[0].bidset_sha256
    return CrashRun(seed, moment, victim, sig.name, households, receipts, lost, status,
                    statuses_agree, bidsets_agree, bool(in_set), counts, matches, outcome,
                    None if reached is None else round(reached, 2),
                    round(noticed[0], 2) if noticed else None,
                    round(beat[0], 2) if beat else None, in_mpc,
                    round(time.monotonic() - started, 2))


def mpc_children(pid: int) -> list[int]:
    """Return the pids of ``pid``'s MPC party processes (``sealgrid.protocol.party``)."""
    return [child for child, parent, _ in party_processes() if parent == pid]


def summary(runs: list[CrashRun]) -> dict[str, Any]:
    """Aggregate figures of many runs (for the bench command's JSON line)."""
    return {
        "crash_runs": len(runs),
        "bids_lost": sum(r.lost for r in runs),
        "receipts": sum(r.receipts for r in runs),
        "by_moment": {m: sum(r.moment == m for r in runs) for m in MOMENTS},
        "clearing_hits_during_mpc": sum(r.hit_during_mpc for r in runs),
        "cleared_after_restart": sum(r.status == ["cleared"] * 3 for r in runs),
        "failed_everywhere": sum(r.status == ["failed"] * 3 for r in runs),
        "disagreements": sum(not r.bidsets_agree for r in runs),
        "reference_mismatches": sum(r.matches_reference is False for r in runs),
        "silent_peer_noticed_seconds_max": max(
            (r.silent_peer_noticed_seconds or 0.0 for r in runs), default=None),
        "frozen_peer_detected_seconds_max": max(
            (r.heartbeat_noticed_seconds for r in runs
             if r.heartbeat_noticed_seconds is not None), default=None),
        "runs": [asdict(r) for r in runs],
    }
