"""``sealgrid meter read``: a household's smart meter sends its reading of one period.

The reading travels as the household's claim for the period (its import and export, and what
it traded there from its own result), secret-shared, one share per server signed by the
meter's key; each server's receipt is checked. Assumes a data directory of ``sealgrid init``
(the meter key is ``households/ID.meter.key``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sealgrid meter`` with its action ``read``."""
    parser = sub.add_parser("meter", help="a household's smart meter: send a period's reading")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    read = actions.add_parser("read", help="send the meter's reading of one ended period to "
                              "every server as secret shares")
    read.add_argument("--data-dir", required=True, type=Path, help="from 'sealgrid init'")
    read.add_argument("--household", required=True, help="household key id, e.g. h0001")
    read.add_argument("--period", required=True, help="the period read (ISO 8601 UTC)")
    read.add_argument("--import-kwh", required=True, help="energy imported, kWh (≤ 3 decimals)")
    read.add_argument("--export-kwh", required=True, help="energy exported, kWh (≤ 3 decimals)")
    read.add_argument("--json", action="store_true", help="print one JSON object")
    read.set_defaults(func=run_read)


def run_read(args: argparse.Namespace) -> int:
    """Check the reading, build and share the claim, send it; exit 1 if a server refused."""
    from sealgrid.cli import CliError
    from sealgrid.service.agent import (
        AgentError,
        DataDirError,
        HouseholdAgent,
        ServiceError,
        reading_wh,
    )

    try:  # checked here first: nothing is sent for a reading out of range
        import_wh = reading_wh("import", args.import_kwh)
        export_wh = reading_wh("export", args.export_kwh)
    except AgentError as exc:
        raise CliError(str(exc)) from None

    async def go() -> Any:
        async with HouseholdAgent.from_data_dir(args.data_dir, args.household) as agent:
            return await agent.read_meter(args.period, import_wh, export_wh)

    try:
        got = asyncio.run(go())
    except (ServiceError, DataDirError, AgentError) as exc:
        raise CliError(str(exc)) from exc
    data = {
        "household": args.household,
        "period": got.period,
        "import_kwh": import_wh / 1000,
        "export_kwh": export_wh / 1000,
        "receipts": {str(i): r.shares_sha256.hex() for i, r in sorted(got.receipts.items())},
        "refused": {str(i): e.reason.value for i, e in sorted(got.refusals.items())},
    }
    if args.json:
        print(json.dumps(data, sort_keys=True))
    else:
        print(f"household {args.household}, period {got.period}: import {import_wh / 1000:g} "
              f"kWh, export {export_wh / 1000:g} kWh")
        for i, r in sorted(got.receipts.items()):
            print(f"server {i}: receipt for shares {r.shares_sha256.hex()[:16]}… "
                  "(signature checked)")
        for i, e in sorted(got.refusals.items()):
            print(f"server {i}: refused: {e}")
    return 1 if got.refusals else 0
