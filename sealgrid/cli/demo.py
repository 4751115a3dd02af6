"""``sealgrid demo``: three servers and N households on this machine, K periods end to end."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sealgrid demo``."""
    parser = sub.add_parser(
        "demo", help="run the market end to end on this machine (3 servers, TLS, SQLite)"
    )
    parser.add_argument("--households", type=int, default=20, help="households (default 20)")
    parser.add_argument("--periods", type=int, default=2, help="trading periods (default 2)")
    parser.add_argument(
        "--period-seconds", type=int, default=0, help="period length (default: 5 s, more for many)"
    )
    parser.add_argument("--data-dir", type=Path, help="a new directory (default: a fresh temp)")
    parser.add_argument("--seed", type=int, default=2016, help="seed of the demo bids")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo and print each period's price, volume and settlement."""
    from sealgrid.cli import CliError
    from sealgrid.service.demo import run_demo
    from sealgrid.service.keys import DataDirError
    from sealgrid.service.local import LocalMarketError

    if args.households < 2 or args.periods < 1:
        raise CliError("need at least 2 households and 1 period")
    root = args.data_dir or Path(tempfile.mkdtemp(prefix="sealgrid-demo-")) / "data"
    seconds = args.period_seconds or max(5, args.households // 100)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        report = asyncio.run(
            run_demo(
                root,
                households=args.households,
                periods=args.periods,
                period_seconds=seconds,
                seed=args.seed,
                progress=progress,
            )
        )
    except (DataDirError, LocalMarketError, TimeoutError) as exc:
        raise CliError(str(exc)) from exc
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print(_table(report))
    ok = all(p["status"] == "cleared" and p["servers_agree"] for p in report["periods"])
    return 0 if ok else 1


def _table(report: dict[str, Any]) -> str:
    lines = [f"{report['households']} households, {len(report['periods'])} periods "
             f"of {report['period_seconds']} s, 3 servers (TLS, SQLite)", ""]  # fmt: skip
    for p in report["periods"]:
        if p["status"] != "cleared":
            lines.append(f"{p['period']}: {p['status']} ({p['outcome'].get('reason', '')})")
            continue
        price = "no trade" if p["price"] is None else f"{p['price']} ¢/kWh"
        lines.append(
            f"{p['period']}: price {price}, volume {p['volume_kwh']:g} kWh, "
            f"{p['bids']} bids, {p['accepted']} traded, results {p['results_after_gate_seconds']}"
            " s after gate closure"
        )
        lines.append(f"  {'supplier':<9}{'bought kWh':>11}{'sold kWh':>10}"
                     f"{'with market ¢':>15}{'without ¢':>12}{'difference ¢':>14}")  # fmt: skip
        for sid, s in p["suppliers"].items():
            lines.append(
                f"  {sid:<9}{s['bought_kwh']:>11.3f}{s['sold_kwh']:>10.3f}"
                f"{s['with_market']:>15.1f}{s['without_market']:>12.1f}{s['difference']:>14.1f}"
            )
        lines.append(
            f"  households better off: {p['households_better_off']}/{p['bids']}, their total "
            f"gain {p['household_difference_total']:.1f} ¢; grid operator fees "
            f"{p['grid_operator_fees']:.1f} ¢"
        )
    lines += ["", f"data directory: {report['data_dir']} (keys, databases, server logs)"]
    return "\n".join(lines)
