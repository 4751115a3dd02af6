"""Three servers as child processes on this machine; assumes loopback ports are free to take.

Used by ``sealgrid demo`` and ``sealgrid bench service``: makes a data directory with
``sealgrid init``'s defaults (SQLite, loopback, TLS), starts ``sealgrid serve`` three times,
waits until every server answers, and stops them all on exit (also on errors).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from sealgrid.mechanism.market import Market
from sealgrid.protocol import ports
from sealgrid.service.agent import HouseholdAgent
from sealgrid.service.client import Client, HouseholdClient, ServiceError, open_session
from sealgrid.service.keys import TRUST, Registry, load_signing_key
from sealgrid.service.schedule import Schedule
from sealgrid.service.setup import init_data_dir
from sealgrid.service.wire import MarketInfo


class LocalMarketError(Exception):
    """A local server did not start or stopped unexpectedly."""


def free_port_range(count: int) -> int:
    """:func:`sealgrid.protocol.ports.free_port_range`, refused as a local market's error."""
    try:
        return ports.free_port_range(count)
    except ports.NoFreePorts as exc:
        raise LocalMarketError(str(exc)) from exc


def stop_process(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Stop a child process: SIGTERM, then SIGKILL if it is still there after ``timeout`` s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class LocalMarket:
    """A data directory and three ``sealgrid serve`` processes; a context manager."""

    def __init__(
        self,
        root: Path,
        *,
        households: int,
        period_seconds: int,
        servers: int = 3,
        market: dict[str, Any] | None = None,
        cycle_periods: int | None = None,
        reading_grace_periods: int | None = None,
        workers: int = 1,
        database_url: str | None = None,
    ) -> None:
        """``workers``: each server's ``sealgrid serve --workers`` (passed only above 1);
        ``database_url``: every server's database, ``{party}`` standing for its index
        (several workers need PostgreSQL; default each server's own SQLite file)."""
        if workers < 1:
            raise ValueError("a server needs at least one worker")
        self.root = Path(root).resolve()
        self.servers = servers
        self.workers = workers
        self.registry: Registry = init_data_dir(
            self.root,
            households=households,
            servers=servers,
            base_port=free_port_range(servers),
            period_seconds=period_seconds,
            cycle_periods=cycle_periods,
            reading_grace_periods=reading_grace_periods,
            extra_config={
                "market": {"peer_timeout_seconds": 30, **(market or {})},
                "mpc_base_port": free_port_range(16 * servers),  # clearing and settlement
                **({"database": database_url} if database_url else {}),
            },
        )
        self.schedule = Schedule(period_seconds)
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []

    def __enter__(self) -> LocalMarket:
        for i in range(self.servers):
            self.start(i)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, i: int) -> None:
        """Start server ``i`` (its output goes to ``server-i.log`` in the data directory)."""
        log = open(self.root / f"server-{i}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        config = self.root / f"server-{i}" / "server.toml"
        workers = ["--workers", str(self.workers)] if self.workers > 1 else []
        self.procs[i] = subprocess.Popen(
            [sys.executable, "-m", "sealgrid", "serve", "--config", str(config), *workers],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def pid(self, i: int) -> int:
        """The process id of server ``i``'s ``sealgrid serve`` (started and not stopped).

        Raises:
            LocalMarketError: server ``i`` is not running here.
        """
        proc = self.procs.get(i)
        if proc is None or proc.poll() is not None:
            raise LocalMarketError(f"server {i} is not running")
        return proc.pid

    def stop(self) -> None:
        """Stop every server this object started (SIGTERM, then SIGKILL after 10 s)."""
        for i in list(self.procs):
            stop_process(self.procs.pop(i), 10)
        for log in self._logs:
            log.close()
        self._logs.clear()

    async def wait_ready(self, timeout: float = 60) -> None:
        """Wait until every server answers ``/v1/info``."""

        def alive(i: int) -> None:
            proc = self.procs.get(i)
            if proc is None or proc.poll() is not None:
                tail = (self.root / f"server-{i}.log").read_text(errors="replace")
                raise LocalMarketError(f"server {i} stopped:\n{tail[-1500:]}")

        async with self.client() as c:
            try:
                await c.wait_ready(range(self.servers), timeout, alive=alive)
            except ServiceError as exc:
                raise LocalMarketError(str(exc)) from None

    def client(self) -> Client:
        """A client of every server (use with ``async with``)."""
        return Client(self.registry, self.root / TRUST)

    def session(self, connections: int = 100) -> Any:
        """An HTTPS session to share among many household clients."""
        return open_session(self.root / TRUST, connections)

    def agent(
        self, hid: str, session: Any = None, market: tuple[MarketInfo, Market] | None = None
    ) -> HouseholdAgent:
        """The agent of household ``hid`` (its key, supplier and pseudonyms in the data dir);
        ``market``, when given, spares it reading the market from the servers. Without a
        ``session`` the agent opens connections of its own in ``async with`` and closes them
        on leaving it (what a separate home does); its tokens always come over fresh ones."""
        return HouseholdAgent.from_data_dir(
            self.root, hid, registry=self.registry, session=session, market=market
        )

    def household(self, hid: str, session: Any = None) -> HouseholdClient:
        """The client of household ``hid`` (its key from the data directory)."""
        key = load_signing_key(self.root / "households" / f"{hid}.key")
        return HouseholdClient(self.registry, self.root / TRUST, hid, key, session)
