"""Three servers on separate network hosts (Linux network namespaces); assumes root and ``ip``.

Topology (all names carry a per-run tag, all addresses in the test subnet 10.213.7.0/24 that
exists only inside these namespaces): a hub namespace with a bridge, one namespace per server
joined to the bridge by a veth pair, the server at 10.213.7.(i+1), the households' side at
10.213.7.100 in the hub. Nothing touches the host's own interfaces; :func:`teardown` deletes
every namespace (and so every veth) of a tag, also after a failure.

``python -m tests.chaos.netns drive ROOT TAG`` (from the checkout's root, which
:func:`run_in_namespaces` uses as the working directory) runs inside the hub namespace: it starts
the servers (``ip netns exec``), bids, cuts server 2's link mid-clearing if asked, restores
it and tries the next period; it prints one JSON line of figures.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parents[2]  # holds tests/ (``python -m tests.chaos.netns``)
SUBNET = "10.213.7"
HUB_ADDRESS = f"{SUBNET}.100"


def _ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=20)


def names(tag: str) -> tuple[str, list[str]]:
    """Return the hub's and the three servers' namespace names for ``tag``."""
    return f"sg{tag}h", [f"sg{tag}s{i}" for i in range(3)]


def host_link(tag: str, i: int) -> str:
    """The hub-side end of server ``i``'s veth pair (cut it to cut the server off)."""
    return f"sg{tag}v{i}h"


def setup(tag: str) -> None:
    """Create the hub, the bridge and the three server namespaces of ``tag``."""
    hub, servers = names(tag)
    _ip("netns", "add", hub)
    _ip("link", "set", "lo", "up", ns=hub)
    _ip("link", "add", "br0", "type", "bridge", ns=hub)
    _ip("addr", "add", f"{HUB_ADDRESS}/24", "dev", "br0", ns=hub)
    _ip("link", "set", "br0", "up", ns=hub)
    for i, ns in enumerate(servers):
        _ip("netns", "add", ns)
        _ip("link", "set", "lo", "up", ns=ns)
        inner, outer = f"sg{tag}v{i}s", host_link(tag, i)
        _ip("link", "add", inner, "netns", ns, "type", "veth", "peer", "name", outer,
            "netns", hub)
        _ip("addr", "add", f"{SUBNET}.{i + 1}/24", "dev", inner, ns=ns)
        _ip("link", "set", inner, "up", ns=ns)
        _ip("link", "set", outer, "master", "br0", ns=hub)
        _ip("link", "set", outer, "up", ns=hub)


def teardown(tag: str) -> None:
    """Delete every namespace of ``tag`` (their veths and bridge go with them)."""
    hub, servers = names(tag)
    for ns in [*servers, hub]:
        subprocess.run(["ip", "netns", "pids", ns], capture_output=True, timeout=10)
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                              timeout=10).stdout.split()
        for pid in pids:
            subprocess.run(["kill", "-9", pid], capture_output=True, timeout=10)
        _ip("netns", "del", ns, check=False)


def prepare(root: Path, households: int, period_seconds: int, port: int = 8443) -> None:
    """Make a data directory whose servers listen on their namespace addresses.

    Every server's keygen puts its own address in its self-signed certificate (beside
    ``sealgrid-server-N``) and its server.toml listens there; the registry pins them.
    """
    from sealgrid.service.setup import init_data_dir

    urls = [f"https://{SUBNET}.{i + 1}:{port}" for i in range(3)]
    init_data_dir(root, households=households, period_seconds=period_seconds, urls=urls,
                  extra_config={"market": {"peer_timeout_seconds": 5}})


async def _gate_party_of(data_dir: Path, within: float) -> None:
    """Wait until a server's MPC party of a gate runs (in its ``mpc/<period>/gate``
    directory; handed its options at the gate, it links while the bid sets are agreed),
    then 0.1 s more: the clearing of a few bids takes less than 0.3 s from the gate."""
    from sealgrid.service.clearing import _party_processes

    where = str(data_dir.resolve())
    t_end = time.monotonic() + within
    while time.monotonic() < t_end:
        if any(cwd.startswith(where) and cwd.endswith("/gate")
               for _, _, _, cwd in _party_processes()):
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)


async def drive(root: Path, tag: str, cut: bool, households: int) -> dict[str, Any]:
    """Run inside the hub: start the servers, bid two periods, cut server 2 in the first."""
    from sealgrid.service.agent import HouseholdAgent, outcome_of
    from sealgrid.service.client import Client
    from sealgrid.service.demo import demo_bid, next_period
    from sealgrid.service.keys import TRUST, Registry
    from sealgrid.service.local import stop_process
    from sealgrid.service.schedule import Schedule

    _, servers = names(tag)
    registry = Registry.load(root / "registry.json")
    period_seconds = int(json.loads((root / "netns.json").read_text())["period_seconds"])
    schedule = Schedule(period_seconds)
    procs = []
    for i, ns in enumerate(servers):
        log = open(root / f"server-{i}.log", "ab")  # noqa: SIM115 - closed below
        procs.append((subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "sealgrid", "serve", "--config",
             str(root / f"server-{i}" / "server.toml")], stdout=log, stderr=subprocess.STDOUT),
            log))
    figures: dict[str, Any] = {"cut": cut}
    try:
        async with Client(registry, root / TRUST) as c:
            await c.wait_ready(range(3), 40, poll=0.2)
            read = await c.market()
            market = read[1]

            async def period_run(k: int, cut_now: bool) -> dict[str, Any]:
                period = next_period(schedule, 4)
                receipts = 0
                for n in range(1, households + 1):
                    hid = f"h{n:04d}"
                    async with HouseholdAgent.from_data_dir(
                        root, hid, registry=registry, market=read
                    ) as agent:
                        bid = demo_bid(hid, agent.supplier, k, 7, market)
                        outcome = await agent.bid(bid, period)
                    receipts += len(outcome.receipts)
                gate = schedule.gate_closure(schedule.parse_period(period))
                await asyncio.sleep(max(0.0, (gate - dt.datetime.now(dt.UTC)).total_seconds()))
                if cut_now:  # during the secure clearing: once server 2's gate party is up
                    await _gate_party_of(root / "server-2", within=5.0)
                else:
                    await asyncio.sleep(0.3)
                t_cut = time.monotonic()
                if cut_now:
                    _ip("link", "set", host_link(tag, 2), "down")
                want = [0, 1] if cut_now else [0, 1, 2]
                sts = await c.wait_statements(period, 120, poll=0.3, servers=want)
                noticed = time.monotonic() - t_cut
                if cut_now:
                    _ip("link", "set", host_link(tag, 2), "up")
                    sts[2] = (await c.wait_statements(period, 60, poll=0.3, servers=[2]))[2]
                outcomes = [outcome_of(s.outcome) if s else None for s in sts]
                return {
                    "period": period, "receipts": receipts,
                    "status": [s.status if s else None for s in sts],
                    "reasons": [o.reason if o else None for o in outcomes],
                    "bid_count": [s.bid_count if s else None for s in sts],
                    "same_bidset": len({s.bidset_sha256 for s in sts if s}) == 1,
                    "seconds_to_statements": round(noticed, 2),
                }

            figures["first"] = await period_run(0, cut)
            figures["retry"] = await period_run(1, False)
    finally:
        for proc, log in procs:
            stop_process(proc, 10)
            log.close()
    return figures


def main(argv: list[str] | None = None) -> int:
    """``drive ROOT TAG [--cut] [--households N]``: print one JSON line of figures."""
    p = argparse.ArgumentParser(prog="python -m tests.chaos.netns")
    p.add_argument("action", choices=["drive"])
    p.add_argument("root", type=Path)
    p.add_argument("tag")
    p.add_argument("--cut", action="store_true")
    p.add_argument("--households", type=int, default=4)
    a = p.parse_args(argv)
    print(json.dumps(asyncio.run(drive(a.root, a.tag, a.cut, a.households))))
    return 0


def run_in_namespaces(root: Path, *, cut: bool, households: int = 4, period_seconds: int = 5,
                      timeout: float = 400) -> dict[str, Any]:
    """Set up the namespaces, prepare ``root``, drive from the hub, always tear down."""
    import secrets

    tag = secrets.token_hex(2)
    prepare(root, households, period_seconds)
    (root / "netns.json").write_text(json.dumps({"period_seconds": period_seconds}))
    hub, _ = names(tag)
    try:
        setup(tag)
        out = subprocess.run(
            ["ip", "netns", "exec", hub, sys.executable, "-m", "tests.chaos.netns", "drive",
             str(root), tag, *(["--cut"] if cut else []), "--households", str(households)],
            capture_output=True, text=True, timeout=timeout, cwd=CHECKOUT)
        if out.returncode != 0:
            raise RuntimeError(f"the drive failed: {out.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        return result
    finally:
        teardown(tag)


if __name__ == "__main__":
    sys.exit(main())
