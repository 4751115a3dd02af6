"""``sealgrid init --data-dir DIR``: make a demo CA, server certificates and every party's keys."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sealgrid init``."""
    parser = sub.add_parser("init", help="create a demo data directory: CA, certificates, keys")
    parser.add_argument("--data-dir", required=True, type=Path, help="an empty directory")
    parser.add_argument("--households", type=int, default=10, help="households (default 10)")
    parser.add_argument("--base-port", type=int, default=8440, help="server 0's HTTPS port")
    parser.add_argument(
        "--period-seconds", type=int, default=900, help="trading period length (default 900)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Create the data directory and say where everything is."""
    from sealgrid.cli import CliError
    from sealgrid.service.keys import DataDirError, init_data_dir

    try:
        registry = init_data_dir(
            args.data_dir,
            households=args.households,
            base_port=args.base_port,
            period_seconds=args.period_seconds,
        )
    except DataDirError as exc:
        raise CliError(str(exc)) from exc
    root = args.data_dir.resolve()
    print(f"data directory: {root} (private keys inside; keep it out of version control)")
    for i, (url, _) in enumerate(registry.servers):
        print(f"server {i}: {url}  sealgrid serve --config {root}/server-{i}/server.toml")
    print(f"households: {len(registry.households)}, suppliers: {', '.join(registry.suppliers)}")
    return 0
