"""``sealgrid bench service``: throughput and latency of three local servers (one JSON line)."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sealgrid bench service``."""
    p = sub.add_parser("service", help="bids/s, receipt latency, gate closure to results")
    p.add_argument("--households", type=int, default=1000, help="bids, one per household")
    p.add_argument("--concurrency", type=int, default=64, help="bids in flight (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep the data directory")
    p.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark in a fresh temporary data directory and print one JSON line."""
    from sealgrid.service.bench import bench_service

    tmp = Path(tempfile.mkdtemp(prefix="sealgrid-bench-"))
    try:
        result = asyncio.run(
            bench_service(
                tmp / "data",
                households=args.households,
                concurrency=args.concurrency,
                seed=args.seed,
            )
        )
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.keep:
        result["data_dir"] = str(tmp / "data")
    print(json.dumps(result, sort_keys=True))
    return 0
