"""``sealgrid bills``: a supplier's bill of one billing cycle, rebuilt from every server.

What each customer pays over the cycle (negative when it is paid), the supplier's own
positions on the market and the network fees it owes; every server's share is checked
against its signature and the servers' public parts must agree. Assumes a data directory of
``sealgrid init`` (the supplier's key is ``suppliers/ID.key``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sealgrid bills``."""
    parser = sub.add_parser("bills", help="a supplier's bill of one billing cycle: what each "
                            "customer pays, its positions and network fees")
    parser.add_argument("--data-dir", required=True, type=Path, help="from 'sealgrid init'")
    parser.add_argument("--supplier", required=True, help="supplier id, e.g. s1")
    parser.add_argument("--cycle", required=True,
                        help="the billing cycle: the start of its first period (ISO 8601 UTC)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run_bills)


def run_bills(args: argparse.Namespace) -> int:
    """Fetch, check and rebuild the supplier's bill; print it."""
    from sealgrid.cli import CliError
    from sealgrid.cli.common import print_table
    from sealgrid.cli.household import billing_doc
    from sealgrid.service.agent import AgentError, ServiceError, read_billing
    from sealgrid.service.bills import bill_doc
    from sealgrid.service.client import Client
    from sealgrid.service.keys import (
        TRUST,
        DataDirError,
        Registry,
        load_signing_key,
        private_key_path,
    )

    path = private_key_path(args.data_dir, "supplier", args.supplier)
    if not path.exists():
        raise CliError(f"no key of supplier {args.supplier!r} in {args.data_dir} "
                       f"(looked for {path})")

    async def go() -> Any:
        registry = Registry.load(args.data_dir / "registry.json")
        key = load_signing_key(path)
        async with Client(registry, args.data_dir / TRUST) as client:
            return await read_billing(client, "bill", args.supplier, args.cycle, key)

    try:
        out = asyncio.run(go())
    except (ServiceError, DataDirError, AgentError) as exc:
        raise CliError(str(exc)) from exc
    doc = billing_doc(lambda: bill_doc(args.supplier, args.cycle, out))
    if args.json:
        print(json.dumps(doc, sort_keys=True))
        return 0
    print(f"supplier {doc['supplier']}, cycle {doc['cycle']}: {doc['status']}")
    print_table(("household", "amount", "without market"),
                [(c["household"], f"{c['amount']:.2f}", f"{c['amount_without_market']:.2f}")
                 for c in doc["customers"]])
    print(f"on the market: bought {doc['bought_kwh']:g} kWh, sold {doc['sold_kwh']:g} kWh; "
          f"customers' import {doc['import_kwh']:g} kWh, export {doc['export_kwh']:g} kWh; "
          f"network fees {doc['network_fees']:.2f}")
    print("amount: what the customer pays over the cycle (negative: it is paid)")
    return 0
