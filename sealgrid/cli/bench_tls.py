"""``sealgrid bench tls``: the HTTP stack's own CPU per new TLS connection and request, the
floor under ``bench service``'s CPU per bid (one JSON line)."""

from __future__ import annotations

import argparse
import json

from sealgrid.cli.common import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sealgrid bench tls``."""
    p = sub.add_parser("tls", help="server CPU per new TLS connection and request with a "
                                   "handler that does nothing: the floor under CPU per bid")
    p.add_argument("--requests", type=positive_int, default=2000,
                   help="requests per listener, each over a new connection (default 2000)")
    p.add_argument("--concurrency", type=positive_int, default=32,
                   help="connections in flight at once (default 32)")
    p.add_argument("--body-bytes", type=positive_int, default=1500,
                   help="bytes each request posts (default 1500, about a bid's share)")
    p.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Measure both listeners and print one JSON line."""
    from sealgrid.service.floor import bench_floor

    result = bench_floor(args.requests, concurrency=args.concurrency,
                         body_bytes=args.body_bytes)
    print(json.dumps(result, sort_keys=True))
    return 0
