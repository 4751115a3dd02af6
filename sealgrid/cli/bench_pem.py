"""``sealgrid bench pem``: the private PEM with agents in OS processes; assumes an idle machine
(timings on a shared machine are noisy). Prints one JSON line.

Random windows (seeded) of ``--agents`` agents; by default windows cycle through seller shares
0.3, 0.4, 0.6 (two general markets, then an extreme one); every window is checked against the
plaintext PEM (``matches_plaintext``).
"""

from __future__ import annotations

import argparse
import json
import random

from sealgrid.cli import CliError
from sealgrid.cli.common import positive_int, share
from sealgrid.mechanism.pem import Agent, PemInputError, PemMarket

#: Default shares of sellers per window: mostly general markets (as in the paper), some extreme.
SHARES = (0.3, 0.4, 0.6)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sealgrid bench pem``."""
    p = sub.add_parser("pem", help="private PEM (Paillier + DGK) among agents in OS processes")
    p.add_argument("--agents", type=positive_int, default=300,
                   help="number of agents (default 300)")
    p.add_argument("--key-bits", type=int, default=2048, choices=(512, 1024, 2048))
    p.add_argument("--windows", type=positive_int, default=3, help="trading windows (default 3)")
    p.add_argument("--processes", type=positive_int, default=2, help="OS processes (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the draws")
    p.add_argument("--sellers", type=share, default=None,
                   help="share of agents with surplus (default: windows cycle 0.3, 0.4, 0.6)")
    p.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    p.set_defaults(func=run)


def random_window(rng: random.Random, agents: int, sellers: float) -> list[Agent]:
    """One window of random agents, about ``sellers`` of them with surplus (kWh-sized values)."""
    out = []
    for i in range(agents):
        selling = rng.random() < sellers
        g = rng.uniform(0.5, 3) if selling else rng.uniform(0, 0.5)
        load = rng.uniform(0, 0.5) if selling else rng.uniform(0.5, 3)
        battery = rng.uniform(-0.3, 0.3)
        out.append(Agent.from_values(
            f"h{i:04d}", f"{g:.6f}", f"{load:.6f}", f"{battery:.6f}",
            rng.choice(("20", "40")), f"{rng.uniform(0.05, 0.95):.6f}"))
    return out


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print one JSON line."""
    from sealgrid.protocol.pem.harness import matches_plaintext
    from sealgrid.protocol.pem.procs import run_windows_processes

    if args.agents < 2 or args.windows < 1 or args.processes < 1:
        raise CliError("need at least 2 agents, 1 window and 1 process")
    rng = random.Random(args.seed)
    market = PemMarket.from_values(120, 80, 90, 110)
    shares = [args.sellers] if args.sellers is not None else list(SHARES)
    windows = [random_window(rng, args.agents, shares[w % len(shares)])
               for w in range(args.windows)]
    try:
        outcomes, stats = run_windows_processes(
            windows, market, key_bits=args.key_bits, seed=args.seed, processes=args.processes)
    except PemInputError as exc:
        raise CliError(str(exc)) from None
    document = {
        "agents": args.agents,
        "key_bits": args.key_bits,
        "windows": args.windows,
        "seconds_per_window": round(stats.online_seconds + stats.offline_wall_seconds, 4),
        "online_seconds_per_window": round(stats.online_seconds, 4),
        "bytes_per_agent_per_window": round(stats.bytes_per_agent),
        "matches_plaintext": all(
            matches_plaintext(w, market, o) for w, o in zip(windows, outcomes, strict=True)),
        "offline_seconds_per_window": round(stats.offline_wall_seconds, 3),
        "offline_cpu_seconds_per_window": round(stats.offline_seconds, 3),
        "setup_seconds": round(stats.setup_seconds, 2),
        "max_bytes_per_agent_per_window": stats.max_bytes_per_agent,
        "total_bytes_per_window": stats.total_bytes // args.windows,
        "messages_per_window": stats.messages // args.windows,
        "markets": [o.market.value for o in outcomes],
        "processes": args.processes,
        "pool_misses": stats.pool_misses,
        "randomizers_used_per_window": stats.randomizers_used,
        "dgk_randomizers_used_per_window": stats.dgk_randomizers_used,
    }
    print(json.dumps(document))
    return 0
