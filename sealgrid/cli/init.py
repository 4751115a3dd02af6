"""``sealgrid init --data-dir DIR``: the one-machine demo of the multi-party key set-up.

It runs every party's ``sealgrid keygen``, each in that party's own directory, then builds
the registry from their public parts and installs it in every server's directory, exactly as
separate parties would (``sealgrid keygen``, ``sealgrid registry build|install``). No CA.

Households belong to a supplier and a region (``--households-csv``, else round-robin over the
default suppliers and regions); every household's smart meter, one DSO per region and the TSO
get their keys too. ``--tariffs``, ``--cycle-periods`` and ``--reading-grace-periods`` go into
every server's ``[billing]`` table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sealgrid.cli.keygen import add_billing_arguments, billing_from_args


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sealgrid init``."""
    parser = sub.add_parser(
        "init",
        help="one-machine demo: every party's keygen here, then the registry from public parts",
    )
    parser.add_argument("--data-dir", required=True, type=Path, help="an empty directory")
    parser.add_argument(
        "--households",
        type=int,
        default=None,
        help="households h0001 …, round-robin over the default suppliers and regions "
        "(default 10; not with --households-csv)",
    )
    parser.add_argument(
        "--households-csv",
        type=Path,
        default=None,
        metavar="FILE",
        help="columns household,supplier,region (header required): each household's supplier "
        "and region; the suppliers and regions are those it names",
    )
    parser.add_argument("--base-port", type=int, default=8440, help="server 0's HTTPS port")
    parser.add_argument(
        "--period-seconds", type=int, default=900, help="trading period length (default 900)"
    )
    add_billing_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Create the data directory and say where everything is."""
    from sealgrid.cli import CliError
    from sealgrid.protocol.certs import fingerprint
    from sealgrid.service.contracts import read_households_csv
    from sealgrid.service.keys import TRUST, DataDirError
    from sealgrid.service.setup import init_data_dir

    if args.households is not None and args.households_csv is not None:
        raise CliError("--households and --households-csv go separately: choose one")
    if args.households is not None and args.households < 0:
        raise CliError("--households must not be negative")
    if args.period_seconds < 1:
        raise CliError("--period-seconds must be at least 1")
    tariffs, cycle, grace = billing_from_args(args)
    try:
        contracts = (
            read_households_csv(args.households_csv) if args.households_csv is not None else None
        )
        registry = init_data_dir(
            args.data_dir,
            households=10 if args.households is None else args.households,
            contracts=contracts,
            tariffs=tariffs,
            cycle_periods=cycle,
            reading_grace_periods=grace,
            base_port=args.base_port,
            period_seconds=args.period_seconds,
        )
    except DataDirError as exc:
        raise CliError(str(exc)) from exc
    root = args.data_dir.resolve()
    print(f"data directory: {root} (private keys inside; keep it out of version control)")
    print(
        "one-machine demo: every party's keygen ran here, each in its own directory "
        "(server-N/, households/ with the meters' keys, suppliers/, operators/, dsos/, tso/); "
        "registry.json and servers.pem were "
        "built from their public parts only. Separate parties: sealgrid keygen, then "
        "sealgrid registry build|install (docs/service.md)."
    )
    for i, ((url, _), cert) in enumerate(zip(registry.servers, registry.tls_certs, strict=True)):
        print(f"server {i}: {url}  sealgrid serve --config {root}/server-{i}/server.toml")
        print(f"  pinned HTTPS certificate SHA-256 {fingerprint(cert)}")
    print(f"trust file for clients: {root / TRUST}")
    print(f"households: {len(registry.households)}, suppliers: {', '.join(registry.suppliers)}")
    print(f"regions (one DSO each): {', '.join(registry.regions)}; TSO: tso")
    from sealgrid.service.config import load_server_config

    cfg = load_server_config(root / "server-0" / "server.toml")
    print(
        f"billing: cycles of {cfg.billing.cycle_periods} periods, meter readings due "
        f"{cfg.billing.reading_grace_periods} periods after a period ends; tariffs in "
        "server-N/server.toml [billing]"
    )
    return 0
