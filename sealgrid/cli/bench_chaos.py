"""``sealgrid bench chaos``: the long runs of the reliability and security battery (one JSON line).

Parts (``--only`` picks some): ``fuzz`` (seeded mutation fuzzing, cases and escapes),
``crash`` (seeded SIGKILL runs at every moment and SIGSTOP runs: receipts, bids lost, how
periods ended, how fast a silent peer was noticed), ``rush`` (households at the gate: p99
latency, agreement), ``capture`` (a loopback capture of a whole period: hits), ``curious``
(the curious-server chi-square statistic), ``netns`` (servers in network namespaces, a link
cut mid-clearing; needs root). The drivers are in :mod:`sealgrid.chaos`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

PARTS = ("fuzz", "crash", "rush", "capture", "curious", "netns")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sealgrid bench chaos``."""
    p = sub.add_parser("chaos", help="fuzzing, crash runs, gate rush, capture, curious server")
    p.add_argument("--only", default=",".join(PARTS),
                   help=f"comma-separated parts to run (default all: {','.join(PARTS)})")
    p.add_argument("--fuzz-rounds", type=int, default=5000,
                   help="fuzz rounds (13 cases each; default 5000)")
    p.add_argument("--crash-runs", type=int, default=20, help="SIGKILL runs (default 20)")
    p.add_argument("--stop-runs", type=int, default=4, help="SIGSTOP runs (default 4)")
    p.add_argument("--crash-households", type=int, default=8)
    p.add_argument("--rush", type=int, default=10_000, help="households in the rush")
    p.add_argument("--rush-window", type=float, default=None,
                   help="seconds before the gate the rush starts (default: by size)")
    p.add_argument("--curious-runs", type=int, default=400, help="views per bid set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the chosen parts in a temporary directory and print one JSON line of figures."""
    parts = [p for p in args.only.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        from sealgrid.cli import CliError

        raise CliError(f"unknown part(s) {sorted(unknown)}; choose from {', '.join(PARTS)}")
    out: dict[str, Any] = {"target": "chaos", "seed": args.seed, "cpu_count": os.cpu_count()}
    tmp = Path(tempfile.mkdtemp(prefix="sealgrid-chaos-"))
    started = time.perf_counter()
    try:
        if "fuzz" in parts:
            from sealgrid.chaos.fuzz import fuzz

            out["fuzz"] = fuzz(args.fuzz_rounds, args.seed)
        if "curious" in parts:
            from sealgrid.chaos.curious import curious_statistic

            out["curious"] = curious_statistic(args.curious_runs)
        if "crash" in parts:
            from sealgrid.chaos.crash import MOMENTS, crash_run, summary

            runs = []
            for k in range(args.crash_runs):
                moment = MOMENTS[1 + k % (len(MOMENTS) - 1)]
                runs.append(asyncio.run(crash_run(tmp / f"crash{k}", args.seed * 1000 + k,
                                                  moment=moment,
                                                  households=args.crash_households)))
            for k in range(args.stop_runs):
                moment = ("receiving", "clearing")[k % 2]
                runs.append(asyncio.run(crash_run(tmp / f"stop{k}", args.seed * 1000 + 500 + k,
                                                  moment=moment, stop=True,
                                                  households=args.crash_households)))
            out["crash"] = summary(runs)
        if "capture" in parts:
            from sealgrid.chaos.capture import capture_period

            out["capture"] = asyncio.run(capture_period(tmp / "capture", args.seed))
        if "netns" in parts:
            from sealgrid.chaos.netns import run_in_namespaces

            out["netns"] = run_in_namespaces(tmp / "netns", cut=True)
        if "rush" in parts:
            from sealgrid.chaos.rush import rush

            out["rush"] = asyncio.run(rush(tmp / "rush", args.rush, window=args.rush_window,
                                           seed=args.seed))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(out, sort_keys=True))
    return 0
