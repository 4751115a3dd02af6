"""Benchmark of the running service; assumes this machine runs the servers and the households.

Measures, with three local servers (TLS, SQLite) and ``N`` households bidding once each, each
household behaving as a separate home: it enrols its settlement credential with every server,
once in its life, over fresh connections of its own (phase 0, measured on its own); it fetches
its tokens over fresh connections of its own, in one request to each server for the bid's
period and the ``token_periods - 1`` after it (phase 1, done ahead of bidding); then it sends
its bid over new connections of its own, one to each server, TLS handshake included, closed
after its receipts (phase 2); at most ``concurrency`` households are in flight at once.
Reported: enrolments per second, pseudonyms issued per second (a pseudonym of one period with
every server's token) and tokens per second (a token is one server's evaluation for one
household and period: three per pseudonym with three servers), bids
accepted per second (a bid counts when all three servers have receipted their share), the
receipt latency (one share's POST until its signed receipt; and a whole bid: connecting and
the shares to the three servers in parallel), the time from gate closure until all three
servers publish their signed statements (agreement + secure clearing + storing outputs), the
TCP/TLS connections the households opened, and each server's CPU time per token, per bid and
at gate closure and its peak memory, read from ``/proc``.

A server's CPU time is that of its whole process tree: the ``sealgrid serve`` process and its
live descendants, with the CPU time of the children they reaped (``/proc/PID/stat`` fields
``utime stime cutime cstime``), read at each phase's start and end. Its memory is sampled from
``/proc/PID/status`` (``VmHWM``) by a thread over the whole run, every 50 ms around gate
closure, since the MPC party processes exit, and every second at other times. The household
side (share encoding, pseudonym keys) is prepared before the clock starts; signing each
submission is timed. Client and servers share the machine's cores, so the figures are a
lower bound for separate machines.
"""

from __future__ import annotations

import asyncio
import os
import resource
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from sealgrid.service import connector, eventloop, wire
from sealgrid.service.agent import HouseholdAgent, PreparedBid, outcome_of
from sealgrid.service.demo import demo_bid, next_period
from sealgrid.service.household import Pseudonym
from sealgrid.service.local import LocalMarket

#: How often the memory of the servers' process trees is sampled around gate closure (the MPC
#: parties live for a fraction of a second), and at other times (only the servers' own peaks,
#: which the kernel keeps, are reported from then: a scan of /proc in the benchmark's process
#: takes its event loop's time from the households).
SAMPLE_SECONDS = 0.05
SAMPLE_SECONDS_IDLE = 1.0
_TICK = os.sysconf("SC_CLK_TCK")


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def lead_seconds(households: int, token_periods: int = 1) -> float:
    """How long ahead of the benchmark's period's gate closure its households start: 50 ms a
    household, 4 ms more a household for each period of tokens past the first, and 15 s. On a
    2-core machine one household takes about 35 ms: preparing its bid 1–4 ms (untimed; the
    more households, the longer), its enrolment and tokens 25 ms, its bid 8 ms, each further
    period's tokens about 3 ms (the one process that runs every household is the bottleneck).
    Generous, since a late bid spoils the run, and the run waits for the gate however early
    it is done."""
    return 15 + households * (0.05 + 0.004 * (token_periods - 1))


# --------------------------------------------------------------------------- /proc


def _stat(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/PID/stat`` after the command name (``state ppid …``, so field
    ``k`` of proc(5) is at ``k - 3``), or None when the process has gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return raw.rpartition(b")")[2].split()


def _children() -> dict[int, list[int]]:
    """Every live process's children, by parent pid (one pass over ``/proc``)."""
    found: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat(int(name))
            if fields is not None:
                found.setdefault(int(fields[1]), []).append(int(name))
    return found


def _below(children: dict[int, list[int]], root: int) -> list[int]:
    """The live descendants of ``root``."""
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def tree_cpu_seconds(roots: Sequence[int]) -> list[float]:
    """CPU seconds (user and system) each root's process tree has used so far: the root, its
    live descendants, and every child any of them reaped (``cutime``, ``cstime``)."""
    children = _children()
    totals = []
    for root in roots:
        ticks = 0
        for pid in (root, *_below(children, root)):  # root first: a child reaped meanwhile
            fields = _stat(pid)  # is missed rather than counted twice
            if fields is not None:
                ticks += sum(int(v) for v in fields[11:15])
        totals.append(ticks / _TICK)
    return totals


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def exec_descendants(children: dict[int, list[int]], root: int) -> list[int]:
    """The live descendants of ``root`` that run a program of their own: a child forked and
    not (yet) exec'd, whose command line is still its parent's, is left out, since its
    memory until the exec is its parent's (its ``VmHWM`` starts at the parent's)."""
    found: list[int] = []
    todo = [(root, _cmdline(root))]
    while todo:
        parent, command = todo.pop()
        for child in children.get(parent, ()):
            own = _cmdline(child)
            if own != command:
                found.append(child)
            todo.append((child, own))
    return found


def peak_rss_kb(pid: int) -> int:
    """The peak resident memory of one process so far (``VmHWM``, kB); 0 when gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class ServerMonitor:
    """Samples the servers' process trees in a thread, every :data:`SAMPLE_SECONDS` in the
    ``gate`` phase and every :data:`SAMPLE_SECONDS_IDLE` in others (and at each change): the peak
    resident memory of each server process, and of its largest descendant in each phase
    (``phase``, set by the caller; descendants of :func:`exec_descendants`); reads their CPU
    time on demand."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self._phase = "setup"
        self._changed = threading.Event()
        self.process_kb = [0] * len(self.pids)
        self.child_kb: dict[str, list[int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="server-monitor", daemon=True)

    def start(self) -> None:
        """Take a first sample and start sampling."""
        self.sample()
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling, with a last sample (before the servers are stopped)."""
        self._stop.set()
        self._changed.set()
        if self._thread.is_alive():
            self._thread.join()
        self.sample()

    @property
    def phase(self) -> str:
        """The phase the samples from now on count for."""
        return self._phase

    @phase.setter
    def phase(self, name: str) -> None:
        self._phase = name
        self._changed.set()  # a sample now, and the phase's own pace from there

    def _run(self) -> None:
        while not self._stop.is_set():
            self._changed.wait(SAMPLE_SECONDS if self._phase == "gate" else SAMPLE_SECONDS_IDLE)
            self._changed.clear()
            self.sample()

    def sample(self) -> None:
        """Read every server's and descendant's peak memory once."""
        children = _children()
        peaks = self.child_kb.setdefault(self.phase, [0] * len(self.pids))
        for i, root in enumerate(self.pids):
            self.process_kb[i] = max(self.process_kb[i], peak_rss_kb(root))
            for child in exec_descendants(children, root):
                peaks[i] = max(peaks[i], peak_rss_kb(child))

    def cpu_seconds(self) -> list[float]:
        """Each server's process tree's CPU seconds so far (:func:`tree_cpu_seconds`)."""
        return tree_cpu_seconds(self.pids)


# --------------------------------------------------------------------------- connections


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == connector.AUDIT_EVENT:
        counting = Connections.active
        if counting is not None and args[1] in counting.ports:
            counting.count += 1


class Connections:
    """Counts the TCP connections (each a TLS connection here) this process opens to
    ``ports`` inside ``with``, from the audit event ``sealgrid.connect`` that every sealgrid
    client connection raises as it is opened (:class:`sealgrid.service.connector.LoopConnector`),
    on uvloop and on asyncio's loop alike. The audit hook, once added, stays for the life of
    the process (and does nothing outside ``with``)."""

    active: ClassVar[Connections | None] = None
    _hooked: ClassVar[bool] = False

    def __init__(self, ports: Iterable[int]) -> None:
        self.ports = frozenset(ports)
        self.count = 0

    def __enter__(self) -> Connections:
        if not Connections._hooked:
            sys.addaudithook(_audit)
            Connections._hooked = True
        Connections.active = self
        return self

    def __exit__(self, *exc: object) -> None:
        Connections.active = None


# --------------------------------------------------------------------------- the bench


async def _each_limited(
    limit: int, items: Sequence[tuple[HouseholdAgent, PreparedBid]],
    fn: Callable[[HouseholdAgent, PreparedBid], Awaitable[None]],
) -> None:
    """``fn`` on every item, in order, with at most ``limit`` running at once (``limit``
    workers over one iterator: no task per item waits in memory)."""
    pending = iter(items)

    async def worker() -> None:
        for agent, prepared in pending:
            await fn(agent, prepared)

    await asyncio.gather(*(worker() for _ in range(max(1, min(limit, len(items))))))


def _client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _per_server(values: Sequence[float | None], digits: int) -> dict[str, Any]:
    shown = [None if v is None else round(v, digits) for v in values]
    known = [v for v in shown if v is not None]
    return {"per_server": shown, "max": max(known) if known else None}


def _mb(kb: int) -> float:
    return round(kb / 1024, 1)


async def bench_service(
    root: Path,
    *,
    households: int,
    concurrency: int = 64,
    seed: int = 0,
    workers: int = 1,
    lead: float | None = None,
    database_url: str | None = None,
    token_periods: int = 1,
) -> dict[str, Any]:
    """Run the benchmark in ``root`` (a new data directory); return the figures.

    ``workers``: each server's ``sealgrid serve --workers``; ``lead``: seconds from choosing
    the period until its gate closure (default :func:`lead_seconds`); ``database_url``:
    every server's database (``{party}``: its index; default its own SQLite file);
    ``token_periods``: the periods each household fetches tokens for in its one request to
    each server, the bid's period and the ones after it (the market's horizon is widened to
    hold them).
    """
    if households < 1 or concurrency < 1 or token_periods < 1:
        raise ValueError("at least one household, one in flight and one period of tokens")
    lead = lead_seconds(households, token_periods) if lead is None else lead
    # the clearing must end within one period after the gate; bids are taken 96 periods ahead
    period_seconds = max(5, int(lead / 40) + 1)
    horizon = max(96, int(lead / period_seconds) + token_periods + 4)
    setup_started = time.perf_counter()
    with LocalMarket(root, households=households, period_seconds=period_seconds,
                     workers=workers, database_url=database_url,
                     market={"horizon_periods": horizon}) as local:
        await local.wait_ready(timeout=60 + 0.002 * households)  # each loads every key
        setup_seconds = time.perf_counter() - setup_started
        monitor = ServerMonitor([local.pid(i) for i in range(local.servers)])
        monitor.start()
        try:
            figures = await _run(local, monitor, households=households,
                                 concurrency=concurrency, seed=seed, lead=lead,
                                 token_periods=token_periods)
        finally:
            monitor.stop()
    children = monitor.child_kb.get("gate", [0] * local.servers)
    return {
        "target": "service",
        "households": households,
        "concurrency": concurrency,
        "servers": local.servers,
        "workers": workers,
        "token_periods": token_periods,
        "horizon_periods": horizon,
        "cpu_count": os.cpu_count(),
        "event_loop": eventloop.loop_name(),  # the servers' (sealgrid serve) and this one's
        **figures,
        "period_seconds": period_seconds,
        "lead_seconds": round(lead, 1),
        "setup_seconds": round(setup_seconds, 2),
        "server_peak_memory_mb": {
            "process": [_mb(kb) for kb in monitor.process_kb],
            "largest_child_at_gate": [_mb(kb) for kb in children],
            "max": {"process": _mb(max(monitor.process_kb)),
                    "largest_child_at_gate": _mb(max(children))},
        },
        "client_peak_memory_mb": _mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
    }


async def _run(
    local: LocalMarket, monitor: ServerMonitor, *, households: int, concurrency: int,
    seed: int, lead: float, token_periods: int,
) -> dict[str, Any]:
    servers = local.servers
    ports = {urlsplit(url).port or 443 for url, _ in local.registry.servers}
    async with local.client() as client:
        read = await client.market()
    market = read[1]
    # no shared session: each household opens its own in ``async with agent`` (phase 2)
    agents = [local.agent(h, None, read) for h in sorted(local.registry.households)]
    period = next_period(local.schedule, lead)
    gate_time = local.schedule.gate_closure(local.schedule.parse_period(period)).timestamp()
    prep_started = time.perf_counter()
    prepared: list[tuple[HouseholdAgent, PreparedBid]] = []
    for a in agents:
        bid = demo_bid(a.household, a.supplier, 0, seed, market)
        prepared.append((a, await a.prepare(bid, period)))
    prep_seconds = time.perf_counter() - prep_started
    del agents

    start = local.schedule.parse_period(period)
    later = [local.schedule.period_id(start + k * local.schedule.length)
             for k in range(1, token_periods)]
    failures = {"enrolment": 0, "tokens": 0, "bids": 0}
    failure_examples: list[str] = []

    def failed(phase: str, exc: Exception) -> None:
        failures[phase] += 1
        if len(failure_examples) < 3:
            failure_examples.append(f"{phase}: {type(exc).__name__}: {exc}")

    # phase 0: enrolment, once in a household's life (its credential's shares, each server
    # over a fresh connection of its own): measured apart from the tokens of every period
    enrolled = 0

    async def enrol(agent: HouseholdAgent, p: PreparedBid) -> None:
        nonlocal enrolled
        try:
            _, refusals = await agent.enrol()
        except Exception as exc:  # counted and reported: one household must not end the run
            failed("enrolment", exc)
            return
        enrolled += not refusals

    async def phase(name: str, fn: Callable[[HouseholdAgent, PreparedBid], Awaitable[None]]
                    ) -> tuple[float, int]:
        """Run ``fn`` for every household as phase ``name``: its seconds and connections."""
        monitor.phase = name
        started = time.perf_counter()
        with Connections(ports) as counted:
            await _each_limited(concurrency, prepared, fn)
        return time.perf_counter() - started, counted.count

    cpu_e, client_e = monitor.cpu_seconds(), _client_cpu()
    enrol_seconds, enrol_connections = await phase("enrolment", enrol)

    # phase 1: tokens, each household over fresh connections of its own (agent.obtain): the
    # bid's period and ``token_periods - 1`` after it, one request to each server
    tokens = [0] * servers
    issue_failed = 0

    async def issue(agent: HouseholdAgent, p: PreparedBid) -> None:
        nonlocal issue_failed
        ahead = [Pseudonym.fresh(q) for q in later]
        try:
            refusals = await agent.obtain(p, ahead=ahead)
        except Exception as exc:  # counted and reported: one household must not end the run
            issue_failed += 1
            failed("tokens", exc)
            return
        issue_failed += bool(refusals)
        for i in range(servers):
            tokens[i] += sum(i in q.tokens for q in (p.pseudonym, *ahead))

    cpu0, client0 = monitor.cpu_seconds(), _client_cpu()
    issue_seconds, token_connections = await phase("tokens", issue)
    cpu1, client1 = monitor.cpu_seconds(), _client_cpu()

    # phase 2: bids, each household over new connections of its own, closed after its bid
    share_latency: list[float] = []
    bid_latency: list[float] = []
    refused: dict[str, int] = {}
    accepted = 0

    async def one(agent: HouseholdAgent, p: PreparedBid) -> None:
        nonlocal accepted
        t0 = time.perf_counter()
        try:
            async with agent:  # its own HTTPS session: connects (TLS) to each server anew
                receipts, refusals = await agent.submit(p, latency=share_latency)
                bid_latency.append(time.perf_counter() - t0)
        except Exception as exc:  # counted and reported, as above
            failed("bids", exc)
            return
        for why in refusals.values():
            refused[why.reason.value] = refused.get(why.reason.value, 0) + 1
        accepted += len(receipts) == servers

    submit_seconds, bid_connections = await phase("bids", one)
    cpu2, client2 = monitor.cpu_seconds(), _client_cpu()
    gate_slack = gate_time - time.time()
    prepared.clear()  # the payloads: memory the servers may want at gate closure

    monitor.phase = "idle"
    await asyncio.sleep(max(0.0, gate_time - 0.25 - time.time()))
    monitor.phase = "gate"
    cpu3 = monitor.cpu_seconds()
    await asyncio.sleep(max(0.0, gate_time - time.time()))
    async with local.client() as client:
        statements = await client.wait_statements(period, timeout=600, poll=0.05)
    results_after_gate = time.time() - gate_time
    cpu4 = monitor.cpu_seconds()
    monitor.phase = "after"

    done = [s for s in statements if s is not None]
    outcome = outcome_of(done[0].outcome) if done else None
    issued = (households - issue_failed) * token_periods  # pseudonyms with every token
    enrol_cpu = [b - a for a, b in zip(cpu_e, cpu0, strict=True)]
    token_cpu = [b - a for a, b in zip(cpu0, cpu1, strict=True)]
    bid_cpu = [b - a for a, b in zip(cpu1, cpu2, strict=True)]
    gate_cpu = [b - a for a, b in zip(cpu3, cpu4, strict=True)]
    return {
        "enrolments": enrolled,
        "enrol_seconds": round(enrol_seconds, 3),
        "enrolments_per_second": round(enrolled / enrol_seconds, 1) if enrol_seconds else None,
        "server_cpu_ms_per_enrolment": _per_server(
            [1000 * c / enrolled if enrolled else None for c in enrol_cpu], 3),
        "pseudonyms_issued": issued,
        "issue_seconds": round(issue_seconds, 3),
        "pseudonyms_per_second": round(issued / issue_seconds, 1),
        "tokens_issued": sum(tokens),
        "tokens_per_second": round(sum(tokens) / issue_seconds, 1),
        "bids_accepted": accepted,
        "refused": refused,
        "failures": {**failures, "examples": failure_examples},
        "submit_seconds": round(submit_seconds, 3),
        "bids_per_second": round(accepted / submit_seconds, 1) if submit_seconds else None,
        "receipt_latency_ms": {
            "p50": round(1000 * statistics.median(share_latency), 2) if share_latency else None,
            "p99": round(1000 * _quantile(share_latency, 0.99), 2),
            "max": round(1000 * max(share_latency, default=0.0), 2),
        },
        "bid_latency_ms": {
            "p50": round(1000 * statistics.median(bid_latency), 2) if bid_latency else None,
            "p99": round(1000 * _quantile(bid_latency, 0.99), 2),
        },
        "client_connections": enrol_connections + token_connections + bid_connections,
        "client_connections_by_phase": {
            "enrolment": enrol_connections, "tokens": token_connections,
            "bids": bid_connections,
        },
        "server_cpu_seconds_tokens": _per_server(token_cpu, 3),
        "server_cpu_seconds_bids": _per_server(bid_cpu, 3),
        "server_cpu_seconds_gate": _per_server(gate_cpu, 3),
        "server_cpu_ms_per_token": _per_server(
            [1000 * c / n if n else None for c, n in zip(token_cpu, tokens, strict=True)], 3),
        "server_cpu_ms_per_bid": _per_server(
            [1000 * c / accepted if accepted else None for c in bid_cpu], 3),
        "client_cpu_seconds": {"enrolment": round(client0 - client_e, 3),
                               "tokens": round(client1 - client0, 3),
                               "bids": round(client2 - client1, 3)},
        "gate_slack_seconds": round(gate_slack, 1),
        "gate_to_results_seconds": round(results_after_gate, 3),
        "period_status": sorted({s.status for s in done}),
        "period_outcome": (
            {k: v for k, v in wire.to_dict(outcome).items() if k not in ("type", "v")}
            if outcome else None
        ),
        "bids_cleared": done[0].bid_count if done else 0,
        "household_preparation_seconds": round(prep_seconds, 2),
    }


__all__ = ["Connections", "ServerMonitor", "bench_service", "exec_descendants", "lead_seconds",
           "peak_rss_kb", "tree_cpu_seconds"]
