"""The private PEM with agents spread over several OS processes; assumes one machine (loopback).

Agents are split round-robin over ``processes`` worker processes; each worker hosts its agents'
:class:`~sealgrid.protocol.pem.peer.PemPeer` objects in one asyncio loop
(:class:`~sealgrid.protocol.pem.host.AgentHost`), and agents in different workers exchange their
wire-format messages over loopback TCP under mutual TLS (:class:`TcpRouter`). Each worker makes
its own TLS key and self-signed certificate; the key never leaves the worker. Workers live as
long as the run (:class:`ProcessBackend`, driven by
:class:`~sealgrid.protocol.pem.windows.WindowRunner`): each makes its agents' keys once per key
lifetime and refills their randomizer pools in a background thread while idle between windows.
The parent is only the harness: it hands each worker its agents' data (JSON over a pipe),
starts every phase, and reads back outputs and counters; it is not a party and relays no
protocol message. Only the public keys and the workers' certificates pass through it, as
through a key directory: it hands every worker all certificates with the plan, and each worker
pins exactly those and accepts from a worker only messages whose sender is one of that worker's
agents. Online time runs from the parent's start signal until the last party has its output
(read on the machine-wide monotonic clock), so shipping outputs back to the harness is not
counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import astuple
from fractions import Fraction
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, cast

from sealgrid.mechanism.pem import Agent, MarketKind, PemMarket, PemOutcome
from sealgrid.protocol.pem import dgk
from sealgrid.protocol.pem import paillier as pa
from sealgrid.protocol.pem.harness import PeerCounters, PemStats, check_windows
from sealgrid.protocol.pem.host import AgentHost, KeyRound
from sealgrid.protocol.pem.net import TcpRouter
from sealgrid.protocol.pem.peer import Directory, PeerOutput
from sealgrid.protocol.pem.windows import KeyReport, Offline, Online, WindowRunner

#: Seconds a worker has to stop before it is terminated.
STOP_SECONDS = 10


class WorkerError(RuntimeError):
    """A worker process failed or ended without answering; the message names it and why."""


def _send(conn: Connection, doc: dict[str, Any]) -> None:
    conn.send_bytes(json.dumps(doc).encode())


def _recv(conn: Connection) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(conn.recv_bytes())
    return doc


def _worker(conn: Connection) -> None:
    """Entry point of a worker process."""
    try:
        asyncio.run(_worker_main(conn))
    finally:
        conn.close()


def _public_doc(public: dict[int, tuple[pa.PublicKey, dgk.DgkPublicKey]]) -> dict[str, Any]:
    return {str(i): [pk.n, list(dpk.values())] for i, (pk, dpk) in public.items()}


def _directory(doc: dict[str, Any], count: int) -> Directory:
    return Directory(
        tuple(pa.PublicKey(doc[str(i)][0]) for i in range(count)),
        tuple(dgk.public_from_values(tuple(doc[str(i)][1])) for i in range(count)),
    )


def _keys_doc(round_: KeyRound) -> dict[str, Any]:
    return {"public": _public_doc(dict(round_.public)), "wall": round_.wall, "cpu": round_.cpu}


def _market(doc: list[list[int]]) -> PemMarket:
    return PemMarket(*(Fraction(n, d) for n, d in doc))


async def _worker_main(conn: Connection) -> None:
    loop = asyncio.get_running_loop()

    async def recv() -> dict[str, Any]:
        return await loop.run_in_executor(None, _recv, conn)

    init = await recv()
    me, count, ids, key_bits = init["proc"], init["agents"], init["ids"], init["key_bits"]
    router = TcpRouter(me)  # makes this process's TLS key, which stays here
    host = AgentHost(ids, count, init["seed"], router, f"PEM process {me}")
    try:
        keys = host.make_keys(key_bits)
        port = await router.listen()
        _send(conn, {"port": port, **_keys_doc(keys),
                     "certificate": router.certificate.decode("ascii")})
        plan = await recv()
        home = {int(a): p for a, p in plan["home"].items()}
        certificates = {int(p): pem.encode("ascii") for p, pem in plan["certificates"].items()}
        await router.connect({int(p): port for p, port in plan["ports"].items()}, home,
                             certificates)
        host.install(_directory(plan["public"], count), plan["fill"])
        _send(conn, {"ready": True})
        while (order := await recv())["op"] != "stop":
            _send(conn, await _obey(host, router, order, key_bits, count))
            if order["op"] == "online" and order["prefill"] is not None:
                host.prefill(order["prefill"])  # idle until the next window: refill the pools
    except Exception as exc:  # the parent raises it as a WorkerError naming this process
        _send(conn, {"error": f"{type(exc).__name__}: {exc}"})
    finally:
        host.close()
        await router.close()


async def _obey(host: AgentHost, router: TcpRouter, order: dict[str, Any], key_bits: int,
                count: int) -> dict[str, Any]:
    """Carry out one order of the parent; the answer to send back."""
    op = order["op"]
    if op == "keys":
        return _keys_doc(host.make_keys(key_bits))
    if op == "install":
        host.install(_directory(order["public"], count), order["fill"])
        return {"ok": True}
    if op == "offline":
        work = host.finish_offline()
        return {"wall": work.wall, "cpu": work.cpu}
    if op == "online":
        data = {int(i): Agent(*row) for i, row in order["data"].items()}
        outputs = await host.run_window(order["window"], data, _market(order["market"]))
        done = time.perf_counter()  # a system-wide monotonic clock on Linux
        await router.drain()
        counters = {str(i): list(astuple(c)) for i, c in host.counters().items()}
        return {"outputs": [_output_doc(o) for o in outputs], "done": done, "counters": counters}
    raise ValueError(f"unknown order {op!r}")


def _output_doc(o: PeerOutput) -> list[Any]:
    load = o.optimal_load
    load_doc = None if load is None else [load.numerator, load.denominator]
    scaled = [list(pair) for pair in o.scaled]
    return [o.agent, o.kind.value, o.price.numerator, o.price.denominator, load_doc, o.amount,
            scaled]


def _output(doc: list[Any]) -> PeerOutput:
    agent, kind, pn, pd, load, amount, scaled = doc
    return PeerOutput(
        agent, MarketKind(kind), Fraction(pn, pd), None if load is None else Fraction(*load),
        amount, tuple((j, x) for j, x in scaled),
    )


def _agent_row(a: Agent) -> list[Any]:
    return [a.name, a.generation, a.load, a.battery, a.k, a.epsilon]


class ProcessBackend:
    """The agents in ``processes`` worker processes (round-robin), alive until :meth:`close`."""

    def __init__(self, count: int, seed: int, key_bits: int, processes: int) -> None:
        if processes < 1:
            raise ValueError("at least one worker process")
        self.processes = min(processes, count)
        self.count = count
        self.seed = seed
        self.key_bits = key_bits
        self.groups = [list(range(p, count, self.processes)) for p in range(self.processes)]
        self.conns: list[Connection] = []
        self.procs: list[BaseProcess] = []
        self._links: dict[str, Any] | None = None  # ports and certificates, until the plan

    def _ask(self, orders: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send each worker its order; their answers, read as they come.

        Raises:
            WorkerError: a worker answered with an error or ended without answering.
        """
        for conn, order in zip(self.conns, orders, strict=True):
            _send(conn, order)
        answers: dict[int, dict[str, Any]] = {}
        while len(answers) < len(self.conns):
            waiting = [c for p, c in enumerate(self.conns) if p not in answers]
            for ready in wait(waiting):
                conn = cast(Connection, ready)
                p = self.conns.index(conn)
                try:
                    answer = _recv(conn)
                except (EOFError, OSError):
                    raise WorkerError(f"PEM worker process {p} ended without answering") from None
                if "error" in answer:
                    raise WorkerError(f"PEM worker process {p} failed: {answer['error']}")
                answers[p] = answer
        return [answers[p] for p in range(len(self.conns))]

    def _all(self, order: dict[str, Any]) -> list[dict[str, Any]]:
        return self._ask([order] * len(self.conns))

    def make_keys(self) -> KeyReport:
        """Start the workers (first call) and have each make its agents' keys."""
        start = time.perf_counter()
        if not self.conns:
            ctx = multiprocessing.get_context("spawn")
            for _ in range(self.processes):
                mine, theirs = ctx.Pipe()
                proc = ctx.Process(target=_worker, args=(theirs,), daemon=True)
                proc.start()
                theirs.close()  # the worker's end: an ended worker is then seen as EOF here
                self.conns.append(mine)
                self.procs.append(proc)
            answers = self._ask([
                {"proc": p, "agents": self.count, "ids": self.groups[p],
                 "key_bits": self.key_bits, "seed": self.seed}
                for p in range(self.processes)])
            self._links = {
                "ports": {p: a["port"] for p, a in enumerate(answers)},
                "certificates": {p: a["certificate"] for p, a in enumerate(answers)},
                "home": {a: p for p, g in enumerate(self.groups) for a in g},
            }
        else:
            answers = self._all({"op": "keys"})
        public = _directory(
            {k: v for a in answers for k, v in a["public"].items()}, self.count)
        return KeyReport(
            {i: (public.paillier[i], public.dgk[i]) for i in range(self.count)},
            max(a["wall"] for a in answers), sum(a["cpu"] for a in answers),
            time.perf_counter() - start)

    def install(self, directory: Directory, window: int | None) -> None:
        """Hand every worker the public keys (with the plan, the first time)."""
        public = _public_doc({i: (directory.paillier[i], directory.dgk[i])
                              for i in range(self.count)})
        if self._links is not None:
            links, self._links = self._links, None
            self._all({**links, "public": public, "fill": window})
        else:
            self._all({"op": "install", "public": public, "fill": window})

    def finish_offline(self) -> Offline:
        """Wait until every worker's background fill is done."""
        start = time.perf_counter()
        answers = self._all({"op": "offline"})
        return Offline(max(a["wall"] for a in answers), sum(a["cpu"] for a in answers),
                       time.perf_counter() - start)

    def online(self, window: int, agents: Sequence[Agent], market: PemMarket,
               prefill: int | None) -> Online:
        """Run the window in the workers; online time until the last agent had its output."""
        prices = [[f.numerator, f.denominator]
                  for f in (market.retail, market.feed_in, market.low, market.high)]
        orders = [{"op": "online", "window": window, "market": prices, "prefill": prefill,
                   "data": {i: _agent_row(agents[i]) for i in self.groups[p]}}
                  for p in range(len(self.conns))]
        start = time.perf_counter()
        answers = self._ask(orders)
        seconds = max(a["done"] for a in answers) - start
        outputs = [_output(d) for a in answers for d in a["outputs"]]
        counters = {int(i): PeerCounters(*c) for a in answers for i, c in a["counters"].items()}
        return Online(outputs, seconds, counters)

    def close(self) -> None:
        """Stop every worker (terminated if it does not stop in time)."""
        for conn in self.conns:
            with contextlib.suppress(OSError):  # a worker that ended already
                _send(conn, {"op": "stop"})
        for proc in self.procs:
            proc.join(timeout=STOP_SECONDS)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=STOP_SECONDS)
        for conn in self.conns:
            conn.close()


def run_windows_processes(
    windows: Sequence[Sequence[Agent]], market: PemMarket, *, key_bits: int, seed: int,
    processes: int,
) -> tuple[list[PemOutcome], PemStats]:
    """Run several windows with the agents spread over ``processes`` OS processes (one key
    lifetime; pools refilled between windows)."""
    check_windows(windows)
    names = [a.name for a in windows[0]]
    runner = WindowRunner(ProcessBackend(len(names), seed, key_bits, processes), names,
                          key_bits=key_bits)
    with runner:
        outcomes = [runner.run_window(agents, market)[0] for agents in windows]
        return outcomes, runner.totals()
