"""``sealgrid bench service``: its figures describe what happened; assumes loopback ports and
three local server processes (the bench), a child process (the /proc readings)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sealgrid.cli import main
from sealgrid.service.bench import Connections, ServerMonitor, peak_rss_kb, tree_cpu_seconds
from sealgrid.service.connector import LoopConnector

SERVERS = 3

#: A parent that runs a child burning CPU with 64 MB, reaps it, then starts a second one that
#: burns CPU and stays (both end when their standard input closes).
_PARENT = """
import subprocess, sys
BURN = "x = 0\\nfor i in range(3 * 10**6): x += i\\n"
subprocess.run([sys.executable, "-c", "b = bytearray(64 << 20)\\n"
                "for i in range(0, len(b), 4096): b[i] = 1\\n" + BURN], check=True)
print("reaped", flush=True)
sys.stdin.readline()
live = subprocess.Popen([sys.executable, "-c", BURN + "import sys\\nprint(flush=True)\\n"
                         "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
live.stdout.readline()
print("live", flush=True)
sys.stdin.read()
"""


def _own_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_tree_cpu_counts_live_and_reaped_children_and_peak_memory_is_read() -> None:
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    assert parent.stdin is not None and parent.stdout is not None
    try:
        assert parent.stdout.readline() == b"reaped\n"
        (reaped,) = tree_cpu_seconds([parent.pid])
        assert reaped > _own_cpu_seconds(parent.pid) + 0.1  # the reaped child's CPU time
        assert 5_000 < peak_rss_kb(parent.pid) < 60_000  # the parent's own, not the child's
        parent.stdin.write(b"go\n")
        parent.stdin.flush()
        assert parent.stdout.readline() == b"live\n"
        (live,) = tree_cpu_seconds([parent.pid])
        assert live > reaped + 0.1  # the live child's
        assert peak_rss_kb(2**22 + 12345) == 0  # no such process
    finally:
        parent.stdin.close()  # the parent ends, and so does its live child
        parent.wait(timeout=30)


#: A parent of 100 MB with a forked child that never execs (its memory is the parent's) and a
#: child program of 30 MB (all end when the parent's standard input closes).
_FORKING = """
import os, subprocess, sys
b = bytearray(100 << 20)
for i in range(0, len(b), 4096): b[i] = 1
r, w = os.pipe()
if os.fork() == 0:
    os.close(w)
    os.read(r, 1)
    os._exit(0)
os.close(r)
child = subprocess.Popen([sys.executable, "-c", "import sys\\nb = bytearray(30 << 20)\\n"
                          "for i in range(0, len(b), 4096): b[i] = 1\\nprint(flush=True)\\n"
                          "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
child.stdout.readline()
print("ready", flush=True)
sys.stdin.read()
"""


def test_monitor_takes_the_peak_memory_of_child_programs_not_of_forks() -> None:
    parent = subprocess.Popen([sys.executable, "-c", _FORKING], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    assert parent.stdin is not None and parent.stdout is not None
    try:
        assert parent.stdout.readline() == b"ready\n"
        monitor = ServerMonitor([parent.pid])
        monitor.phase = "gate"
        monitor.start()
        time.sleep(0.2)
        monitor.stop()
        assert monitor.process_kb[0] > 100_000
        assert 30_000 < monitor.child_kb["gate"][0] < 90_000  # the program, not the fork
    finally:
        parent.stdin.close()
        parent.wait(timeout=30)


def test_connections_are_counted_only_inside_with_and_only_to_the_ports() -> None:
    async def run() -> tuple[int, int, bool]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        connector = LoopConnector(ssl.create_default_context(), force_close=True)

        async with server, aiohttp.ClientSession(connector=connector) as session:
            async def connect() -> None:  # a new connection, as a household's client makes
                async with session.get(f"http://127.0.0.1:{port}/") as resp:
                    assert resp.status == 200

            await connect()  # before: not counted
            with Connections([port]) as counted:
                for _ in range(3):
                    await connect()
            await connect()  # after: not counted
            with Connections([port + 1]) as other:
                await connect()
        return counted.count, other.count, Connections.active is None

    assert asyncio.run(run()) == (3, 0, True)


@pytest.mark.slow
def test_bench_service_figures(capsys: pytest.CaptureFixture[str]) -> None:
    households = 16
    started = time.monotonic()
    assert main(["bench", "service", "--households", str(households), "--concurrency", "2",
                 "--lead", "10", "--token-periods", "3", "--json"]) == 0
    took = time.monotonic() - started
    got = json.loads(capsys.readouterr().out)
    # today's fields, as before
    assert got["target"] == "service" and got["households"] == households
    assert got["concurrency"] == 2 and got["servers"] == SERVERS
    assert got["token_periods"] == 3 and got["horizon_periods"] >= 96
    assert got["pseudonyms_issued"] == 3 * households and got["bids_accepted"] == households
    assert got["refused"] == {} and got["failures"]["tokens"] == got["failures"]["bids"] == 0
    assert got["failures"]["enrolment"] == 0 and got["enrolments"] == households
    assert got["enrolments_per_second"] > 0 and got["enrol_seconds"] > 0
    assert got["period_status"] == ["cleared"] and got["bids_cleared"] == households
    assert got["receipt_latency_ms"]["p50"] > 0 and got["bid_latency_ms"]["p99"] > 0
    for key in ("issue_seconds", "submit_seconds", "pseudonyms_per_second", "bids_per_second",
                "gate_to_results_seconds", "household_preparation_seconds", "period_seconds"):
        assert got[key] > 0, key
    # tokens: one per server, household and period, three periods in one request each
    assert got["tokens_issued"] == 3 * SERVERS * households
    assert got["tokens_per_second"] == pytest.approx(
        SERVERS * got["pseudonyms_per_second"], rel=0.01)
    # each household bids over a new connection to each server (two households in flight:
    # a shared keep-alive session would have needed about 2 per server in all)
    phases = got["client_connections_by_phase"]
    assert phases["bids"] == SERVERS * households
    assert phases["tokens"] == SERVERS * households  # fresh, one for all three periods
    assert phases["enrolment"] == SERVERS * households  # once, apart from the tokens
    assert got["client_connections"] == phases["bids"] + phases["tokens"] + phases["enrolment"]
    assert got["workers"] == 1
    from sealgrid.service import eventloop

    assert got["event_loop"] == eventloop.loop_name()  # what `sealgrid serve` logs it runs
    # CPU of each server's process tree, per token, per bid and at gate closure
    for key in ("server_cpu_ms_per_token", "server_cpu_ms_per_bid", "server_cpu_seconds_gate",
                "server_cpu_ms_per_enrolment",
                "server_cpu_seconds_tokens", "server_cpu_seconds_bids"):
        per = got[key]["per_server"]
        assert len(per) == SERVERS and all(0 < v < 1000 and math.isfinite(v) for v in per), key
        assert got[key]["max"] == max(per)
    for server in range(SERVERS):  # CPU can only be spent while the phase lasts
        assert got["server_cpu_seconds_bids"]["per_server"][server] <= got["submit_seconds"]
        assert got["server_cpu_seconds_tokens"]["per_server"][server] <= got["issue_seconds"]
        ms = 1000 * got["server_cpu_seconds_bids"]["per_server"][server] / households
        assert got["server_cpu_ms_per_bid"]["per_server"][server] == pytest.approx(ms, abs=0.01)
    # the MPC party process at gate closure: its CPU (it has been reaped by then) and memory
    assert min(got["server_cpu_seconds_gate"]["per_server"]) > 0.1
    memory = got["server_peak_memory_mb"]
    assert all(20 < mb < 2000 for mb in memory["process"])
    assert all(20 < mb < 2000 for mb in memory["largest_child_at_gate"])
    assert memory["max"]["process"] == max(memory["process"])
    assert got["client_peak_memory_mb"] > 20
    assert took < 120


def test_bench_service_refuses_no_households() -> None:
    with pytest.raises(SystemExit):
        main(["bench", "service", "--households", "0", "--json"])
    with pytest.raises(SystemExit):
        main(["bench", "service", "--workers", "0", "--json"])


def test_monitor_samples_at_once_when_the_phase_changes() -> None:
    """Outside the gate the monitor samples once a second; a phase set wakes it at once, so a
    party that lives a fraction of a second after the gate is not missed."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        monitor = ServerMonitor([child.pid])
        monitor.start()  # phase "setup": its next sample is a second away
        seen: list[str] = []
        sample = monitor.sample
        def noted() -> Any:  # the phase each sample is taken in, then the sample
            seen.append(monitor.phase)
            return sample()

        monitor.sample = noted  # type: ignore[method-assign]
        monitor.phase = "gate"
        time.sleep(0.3)
        monitor.stop()
        assert seen.count("gate") >= 3, seen  # at once, then every 50 ms
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)
