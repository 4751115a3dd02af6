"""Three real server processes on loopback with TLS and SQLite, for the slow tests."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sealgrid.service.agent import HouseholdAgent
from sealgrid.service.client import Client, HouseholdClient
from sealgrid.service.keys import TRUST, Registry, load_signing_key
from sealgrid.service.local import free_port_range, stop_process
from sealgrid.service.schedule import Schedule, utc_now
from sealgrid.service.setup import init_data_dir


def free_base_port(n: int = 3) -> int:
    """Return a port p such that p .. p+n-1 are free on loopback now, below the ephemeral
    range (``local.free_port_range``): a machine busy with many outgoing connections (a
    benchmark's households) would otherwise take a server's port between this check and its
    bind."""
    return free_port_range(n)


class Cluster:
    """Data directory plus three ``sealgrid serve`` processes; kill them all with :meth:`stop`."""

    def __init__(
        self, root: Path, households: int, period_seconds: int, min_per_side: int = 3,
        **init: Any,
    ) -> None:
        self.root = root
        self.period_seconds = period_seconds
        self.registry: Registry = init_data_dir(
            root,
            households=households,
            base_port=free_base_port(),
            period_seconds=period_seconds,
            extra_config={
                "market": {"peer_timeout_seconds": 20, "min_accepted_per_side": min_per_side},
                "mpc_base_port": free_base_port(48),
            },
            **init,
        )
        self.schedule = Schedule(period_seconds)
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, i: int, *args: str) -> None:
        log = open(self.root / f"server-{i}.log", "ab")  # noqa: SIM115 - owned by the process
        self.procs[i] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sealgrid",
                "serve",
                "--config",
                str(self.root / f"server-{i}" / "server.toml"),
                *args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def kill(self, i: int) -> None:
        proc = self.procs.pop(i)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> None:
        for i in list(self.procs):
            stop_process(self.procs.pop(i), 5)

    async def wait_ready(self, servers: list[int] | None = None, timeout: float = 30) -> None:
        def alive(i: int) -> None:
            if self.procs[i].poll() is not None:
                log = (self.root / f"server-{i}.log").read_text()
                raise RuntimeError(f"server {i} exited:\n{log[-2000:]}")

        async with self.client() as c:
            await c.wait_ready(servers if servers is not None else range(3), timeout, alive=alive)

    def client(self) -> Client:
        return Client(self.registry, self.root / TRUST)

    def household(self, hid: str) -> HouseholdClient:
        key = load_signing_key(self.root / "households" / f"{hid}.key")
        return HouseholdClient(self.registry, self.root / TRUST, hid, key)

    def agent(self, hid: str) -> HouseholdAgent:
        return HouseholdAgent.from_data_dir(self.root, hid, registry=self.registry)

    def period_ahead(self, k: int, min_lead: float) -> str:
        """Return an open period whose gate is at least ``min_lead`` seconds away (k-th such)."""
        now = utc_now()
        start = self.schedule.first_open(now)
        while (self.schedule.gate_closure(start) - now).total_seconds() < min_lead:
            start += self.schedule.length
        return self.schedule.period_id(start + k * self.schedule.length)

    def seconds_to_gate(self, period: str) -> float:
        gate = self.schedule.gate_closure(self.schedule.parse_period(period))
        return (gate - dt.datetime.now(dt.UTC)).total_seconds()

    async def statements_of(self, period: str, servers: list[int], timeout: float = 60) -> list:
        """The signed statements of ``period`` from ``servers`` only (others may be down)."""
        import asyncio as _asyncio

        from sealgrid.service import wire
        from sealgrid.service.wire import PeriodStatement

        deadline = time.monotonic() + timeout
        async with self.client() as c:
            while True:
                got = []
                for i in servers:
                    status, body = await c.call(i, "GET", f"/v1/periods/{period}")
                    if status == 200:
                        got.append(wire.decode(PeriodStatement, body))
                if len(got) == len(servers) or time.monotonic() > deadline:
                    break
                await _asyncio.sleep(0.3)
        if len(got) != len(servers):
            raise TimeoutError(f"statements for {period} from {servers}: {len(got)}")
        return got

    async def statements(self, period: str, timeout: float = 60) -> list:
        async with self.client() as c:
            got = await c.wait_statements(period, timeout)
        if not all(got):
            raise TimeoutError(f"statements for {period}: {got}")
        return got
