"""``sealgrid bench service``: throughput, latency, CPU and memory of three local servers, the
households each over connections of their own (one JSON line)."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from sealgrid.cli.common import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sealgrid bench service``."""
    p = sub.add_parser(
        "service", help="tokens/s, bids/s, latency, server CPU and memory, gate to results")
    p.add_argument("--households", type=positive_int, default=1000,
                   help="bids, one per household (default 1000)")
    p.add_argument("--concurrency", type=positive_int, default=64,
                   help="households in flight at once, each over connections of its own"
                   " (default 64)")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="each server's 'sealgrid serve --workers' (default 1: not passed)")
    p.add_argument("--database-url", default=None, metavar="URL",
                   help="every server's database, '{party}' standing for its index, e.g."
                   " postgresql://sealgrid@127.0.0.1/sg{party} (the databases must exist;"
                   " --workers above 1 needs PostgreSQL; default each server's SQLite file)")
    p.add_argument("--lead", type=float, default=None, metavar="SECONDS",
                   help="seconds from choosing the period to its gate closure (default: an"
                   " estimate from --households, generous)")
    p.add_argument("--token-periods", type=positive_int, default=1, metavar="K",
                   help="periods each household fetches tokens for in its one request to each"
                   " server: the bid's and the K-1 after it, as 'household tokens --periods'"
                   " does (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep the data directory")
    p.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark in a fresh temporary data directory and print one JSON line."""
    from sealgrid.service import eventloop
    from sealgrid.service.bench import bench_service

    tmp = Path(tempfile.mkdtemp(prefix="sealgrid-bench-"))
    try:
        result = eventloop.run(
            bench_service(
                tmp / "data",
                households=args.households,
                concurrency=args.concurrency,
                seed=args.seed,
                workers=args.workers,
                lead=args.lead,
                database_url=args.database_url,
                token_periods=args.token_periods,
            )
        )
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.keep:
        result["data_dir"] = str(tmp / "data")
    print(json.dumps(result, sort_keys=True))
    return 0
