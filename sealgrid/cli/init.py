"""``sealgrid init --data-dir DIR``: the one-machine demo of the multi-party key set-up.

It runs every party's ``sealgrid keygen``, each in that party's own directory, then builds
the registry from their public parts and installs it in every server's directory, exactly as
separate parties would (``sealgrid keygen``, ``sealgrid registry build|install``). No CA.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sealgrid init``."""
    parser = sub.add_parser(
        "init",
        help="one-machine demo: every party's keygen here, then the registry from public parts",
    )
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
    from sealgrid.protocol.certs import fingerprint
    from sealgrid.service.keys import TRUST, DataDirError
    from sealgrid.service.setup import init_data_dir

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
    print(
        "one-machine demo: every party's keygen ran here, each in its own directory "
        "(server-N/, households/, suppliers/, operators/); registry.json and servers.pem were "
        "built from their public parts only. Separate parties: sealgrid keygen, then "
        "sealgrid registry build|install (docs/service.md)."
    )
    for i, ((url, _), cert) in enumerate(zip(registry.servers, registry.tls_certs, strict=True)):
        print(f"server {i}: {url}  sealgrid serve --config {root}/server-{i}/server.toml")
        print(f"  pinned HTTPS certificate SHA-256 {fingerprint(cert)}")
    print(f"trust file for clients: {root / TRUST}")
    print(f"households: {len(registry.households)}, suppliers: {', '.join(registry.suppliers)}")
    return 0
