"""``sealgrid demo``: three servers and N households on this machine, K periods end to end."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
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
    parser.add_argument(
        "--data-dir", type=Path,
        help="the data directory (default: a fresh temporary one); without --keep, what the"
        " demo made there is removed at the end (a directory that existed before stays)",
    )
    parser.add_argument(
        "--keep", action="store_true",
        help="keep the data directory (keys, databases, server logs) and print where it is;"
        " by default it is removed at the end, also after an error or Ctrl-C, since it holds"
        " every party's private keys unencrypted",
    )
    parser.add_argument("--seed", type=int, default=2016, help="seed of the demo bids")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo and print each period's price, volume and settlement."""
    from sealgrid.cli import CliError
    from sealgrid.service.demo import DemoData, run_demo
    from sealgrid.service.keys import DataDirError
    from sealgrid.service.local import LocalMarketError

    if args.households < 2 or args.periods < 1:
        raise CliError("need at least 2 households and 1 period")
    seconds = args.period_seconds or max(5, args.households // 100)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def stop(signum: int, frame: object) -> None:  # SIGTERM as Ctrl-C: the clean-up runs
        raise KeyboardInterrupt

    data = DemoData(args.data_dir, keep=args.keep)
    try:
        old_term = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: SIGTERM is left as it is
        old_term = None
    finished = False
    try:
        with data as root:
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
            finished = True
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        if not finished and data.outcome:  # the error's line follows
            progress(data.outcome)
    report["data_dir_kept"] = args.keep
    if args.json:
        progress(data.outcome)
        print(json.dumps(report, sort_keys=True))
    else:
        print(_table(report, data.outcome))
    ok = all(p["status"] == "cleared" and p["servers_agree"] for p in report["periods"])
    return 0 if ok else 1


def _table(report: dict[str, Any], where: str) -> str:
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
    lines += ["", where]
    return "\n".join(lines)
