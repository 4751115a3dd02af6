"""The private PEM with agents spread over several OS processes; assumes one machine (loopback).

Agents are split round-robin over ``processes`` worker processes; each worker hosts its agents'
:class:`~sealgrid.protocol.pem.peer.PemPeer` objects in one asyncio loop, and agents in
different workers exchange their wire-format messages over loopback TCP under mutual TLS
(:class:`TcpRouter`). Each worker makes its own TLS key and self-signed certificate; the key
never leaves the worker. The parent is only the harness: it hands each worker its agents' data
(JSON over a pipe), starts every phase, and reads back outputs and counters; it is not a party
and relays no protocol message. Only the public keys and the workers' certificates pass through
it, as through a key directory: it hands every worker all certificates with the plan, and each
worker pins exactly those and accepts from a worker only messages whose sender is one of that
worker's agents. Online time runs from the parent's start signal until the last party has its
output (read on the machine-wide monotonic clock), so shipping outputs back to the harness is
not counted.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import random
import time
from collections.abc import Sequence
from dataclasses import astuple
from fractions import Fraction
from multiprocessing.connection import Connection
from typing import Any

from sealgrid.mechanism.pem import Agent, MarketKind, PemMarket, PemOutcome
from sealgrid.protocol.pem import dgk
from sealgrid.protocol.pem import paillier as pa
from sealgrid.protocol.pem.harness import (
    PeerCounters,
    PemStats,
    Timings,
    assemble,
    check_windows,
    make_keys,
    tally,
)
from sealgrid.protocol.pem.net import TcpRouter
from sealgrid.protocol.pem.peer import Directory, PeerOutput, PemPeer


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


async def _worker_main(conn: Connection) -> None:
    loop = asyncio.get_running_loop()

    async def recv() -> dict[str, Any]:
        return await loop.run_in_executor(None, _recv, conn)

    init = await recv()
    me, count, ids = init["proc"], init["agents"], init["ids"]
    market = PemMarket(*(Fraction(n, d) for n, d in init["market"]))
    rng = random.SystemRandom()
    start = time.perf_counter()
    keys = {i: make_keys(init["key_bits"], rng) for i in ids}
    keygen = time.perf_counter() - start
    router = TcpRouter(me)  # makes this process's TLS key, which stays here
    port = await router.listen()
    peers = {
        i: PemPeer(i, count, market, init["seed"], router.add(i), sk, dsk)
        for i, (sk, dsk) in keys.items()
    }
    public = {i: [sk.public.n, list(dsk.public.values())] for i, (sk, dsk) in keys.items()}
    _send(conn, {"port": port, "public": public, "keygen": keygen,
                 "certificate": router.certificate.decode("ascii")})
    plan = await recv()
    directory = Directory(
        tuple(pa.PublicKey(plan["public"][str(i)][0]) for i in range(count)),
        tuple(dgk.public_from_values(tuple(plan["public"][str(i)][1])) for i in range(count)),
    )
    for peer in peers.values():
        peer.directory = directory
    home = {int(a): p for a, p in plan["home"].items()}
    certificates = {int(p): pem.encode("ascii") for p, pem in plan["certificates"].items()}
    await router.connect({int(p): port for p, port in plan["ports"].items()}, home, certificates)
    _send(conn, {"ready": True})
    while True:
        order = await recv()
        if order["op"] == "stop":
            break
        w = order["window"]
        if order["op"] == "offline":
            cpu = time.process_time()
            for peer in peers.values():
                peer.offline(w)
            _send(conn, {"cpu": time.process_time() - cpu})
            continue
        data = {int(i): Agent(*row) for i, row in order["data"].items()}
        outputs = await asyncio.gather(*(p.run_window(w, data[i]) for i, p in peers.items()))
        done = time.perf_counter()  # a system-wide monotonic clock on Linux
        await router.drain()
        _send(conn, {"outputs": [_output_doc(o) for o in outputs], "done": done})
    counters = {i: list(astuple(PeerCounters.of(router.endpoints[i], peers[i]))) for i in ids}
    _send(conn, {"counters": counters})
    await router.close()


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


def run_windows_processes(
    windows: Sequence[Sequence[Agent]], market: PemMarket, *, key_bits: int, seed: int,
    processes: int,
) -> tuple[list[PemOutcome], PemStats]:
    """Run several windows with the agents spread over ``processes`` OS processes."""
    check_windows(windows)
    count = len(windows[0])
    groups = [list(range(p, count, processes)) for p in range(processes)]
    ctx = multiprocessing.get_context("spawn")
    conns: list[Connection] = []
    procs = []
    try:
        for _ in range(processes):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(theirs,), daemon=True)
            proc.start()
            conns.append(mine)
            procs.append(proc)
        prices = [[f.numerator, f.denominator]
                  for f in (market.retail, market.feed_in, market.low, market.high)]
        start = time.perf_counter()
        for p, conn in enumerate(conns):
            _send(conn, {"proc": p, "agents": count, "ids": groups[p], "key_bits": key_bits,
                         "seed": seed, "market": prices})
        replies = [_recv(conn) for conn in conns]
        setup = time.perf_counter() - start
        public: dict[str, Any] = {}
        for reply in replies:
            public.update(reply["public"])
        plan = {"ports": {p: r["port"] for p, r in enumerate(replies)}, "public": public,
                "certificates": {p: r["certificate"] for p, r in enumerate(replies)},
                "home": {a: p for p, g in enumerate(groups) for a in g}}
        for conn in conns:
            _send(conn, plan)
        for conn in conns:
            _recv(conn)
        outcomes, offline, offline_wall, online = [], 0.0, 0.0, 0.0
        for w, agents in enumerate(windows):
            wall = time.perf_counter()
            for conn in conns:
                _send(conn, {"op": "offline", "window": w})
            offline += sum(_recv(conn)["cpu"] for conn in conns)
            offline_wall += time.perf_counter() - wall
            wall = time.perf_counter()
            for p, conn in enumerate(conns):
                rows = {i: _agent_row(agents[i]) for i in groups[p]}
                _send(conn, {"op": "online", "window": w, "data": rows})
            replies = [_recv(conn) for conn in conns]
            online += max(r["done"] for r in replies) - wall  # until the last party finished
            outputs = [_output(d) for r in replies for d in r["outputs"]]
            outcomes.append(assemble(outputs, agents))
        for conn in conns:
            _send(conn, {"op": "stop"})
        counters = [PeerCounters(*c) for conn in conns for c in _recv(conn)["counters"].values()]
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
    stats = tally(counters, Timings(online, offline, offline_wall, setup), key_bits=key_bits,
                  windows=len(windows), processes=processes)
    return outcomes, stats


def _agent_row(a: Agent) -> list[Any]:
    return [a.name, a.generation, a.load, a.battery, a.k, a.epsilon]
