"""``sealgrid clear BIDS.csv``: clear one period's double auction, plaintext or secure.

BIDS.csv columns ``bidder,side,quantity_kwh,price_ct_per_kwh,supplier`` (prices in ¢/kWh, the
market's unit; the older column ``price`` in currency per kWh is accepted with a warning).
Invalid rows: every broken rule on its own line naming the row, exit status 1 (or, with
``--skip-invalid``, listed and left out). The clearing itself is :mod:`sealgrid.frames`', the
same as the Python front door's.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sealgrid.cli import CliError
from sealgrid.cli.common import RowErrors, print_json, print_table, read_rows, rows_of
from sealgrid.frames import InputError, check_bids, clear_bids, clearing_document, market
from sealgrid.mechanism.bids import Bid, MarketRules
from sealgrid.mechanism.grid import parse_decimal
from sealgrid.mechanism.units import PRICE_UNIT, deprecated, from_currency

COLUMNS = ("bidder", "side", "quantity_kwh", "supplier")
PRICE_COLUMNS = (("price_ct_per_kwh",), ("price",))


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sealgrid clear``."""
    p = sub.add_parser("clear", help="clear one period's double auction from a CSV of bids")
    p.add_argument("bids", type=Path, metavar="BIDS.csv",
                   help="columns bidder,side,quantity_kwh,price_ct_per_kwh,supplier")
    p.add_argument("--price-floor", metavar="CT", help=f"lowest price on the grid, {PRICE_UNIT}")
    p.add_argument("--price-ceiling", metavar="CT",
                   help=f"highest price on the grid, {PRICE_UNIT}")
    p.add_argument("--price-tick", metavar="CT",
                   help=f"price grid step, {PRICE_UNIT} (default 0.1)")
    for name in ("floor", "ceiling", "tick"):
        p.add_argument(f"--{name}", dest=f"old_{name}", metavar="PRICE",
                       help=f"older spelling: the grid's {name} in currency per kWh "
                            f"(accepted until the next release; use --price-{name})")
    p.add_argument("--max-quantity", default="10", metavar="KWH",
                   help="largest quantity one bid may carry, kWh (default 10)")
    p.add_argument("--suppliers", default="",
                   help="comma-separated registered supplier ids (default: any)")
    p.add_argument("--min-per-side", type=int, default=1, metavar="N",
                   help="accepted bids each side needs for the period to trade "
                        "(default 1, the papers' rule; the running market uses 3)")
    p.add_argument("--skip-invalid", action="store_true",
                   help="clear the valid rows and list the refused ones instead of failing")
    p.add_argument("--secure", action="store_true",
                   help="clear under MPC with separate server processes over TLS")
    p.add_argument("--parties", type=int, default=3, help="MPC servers with --secure (default 3)")
    p.add_argument("--json", action="store_true",
                   help="print JSON instead of a table (it feeds 'sealgrid settle --clearing')")
    p.set_defaults(func=run)


def _grid_value(args: argparse.Namespace, name: str, default: str | None) -> object:
    new, old = getattr(args, f"price_{name}"), getattr(args, f"old_{name}")
    if new is not None and old is not None:
        raise CliError(f"give --price-{name} ({PRICE_UNIT}) or --{name} (currency per kWh), "
                       "not both")
    if old is None:
        if new is None and default is None:
            raise CliError(f"--price-{name} is required ({PRICE_UNIT})")
        return new if new is not None else default
    deprecated(f"--{name}", f"--price-{name}")
    try:
        return from_currency(parse_decimal(old))
    except ValueError:
        raise CliError(f"invalid market settings: --{name} {old!r} is not a number") from None


def market_rules(args: argparse.Namespace) -> MarketRules:
    """Build the market's rules from the command line (prices in ¢/kWh).

    Raises:
        CliError: the grid or the maximum quantity is not valid.
    """
    floor = _grid_value(args, "floor", None)
    ceiling = _grid_value(args, "ceiling", None)
    tick = _grid_value(args, "tick", "0.1")  # the older spelling's default, 0.001, is 0.1 ¢
    suppliers = args.suppliers.split(",")
    try:
        return market(floor, ceiling, tick, max_quantity_kwh=args.max_quantity,
                      suppliers=suppliers, min_per_side=args.min_per_side)
    except InputError as exc:
        message = str(exc).replace("the maximum quantity", "--max-quantity")
        message = message.replace("minimum participation per side", "--min-per-side")
        raise CliError(message) from None


def load_bids(path: Path, rules: MarketRules) -> tuple[list[Bid], list[str]]:
    """Read and validate BIDS.csv; return the valid bids and one message per broken rule."""
    return check_bids(rows_of(path, read_rows(path, COLUMNS, PRICE_COLUMNS)), rules)


def run(args: argparse.Namespace) -> int:
    """Clear the bids in the CSV file and print the outcome."""
    rules = market_rules(args)
    bids, errors = load_bids(args.bids, rules)
    if errors and not args.skip_invalid:
        raise RowErrors(errors)
    book, result = clear_bids(bids, rules, secure=args.secure, parties=args.parties)
    document: dict[str, Any] = clearing_document(bids, book, result, rules.grid)
    if args.skip_invalid:
        document["rejected"] = errors
    if args.json:
        print_json(document)
        return 0
    _print_outcome(document)
    return 0


def _print_outcome(document: dict[str, Any]) -> None:
    if document["status"] == "no_trade":
        print("No trade: no grid price lets energy change hands with enough bids on each side.")
    else:
        print(f"Clearing price: {document['price_ct_per_kwh']} {PRICE_UNIT}   "
              f"volume: {document['volume_kwh']:.3f} kWh")
    print()
    print_table(
        ["bidder", "side", "accepted", "traded_kwh", "settled_kwh"],
        [[a["bidder"], a["side"], "yes" if a["accepted"] else "no", a["traded_kwh"],
          a["settled_kwh"]] for a in document["allocations"]],
    )
    print()
    print_table(
        ["supplier", "bought_kwh", "sold_kwh"],
        [[s["supplier"], s["bought_kwh"], s["sold_kwh"]] for s in document["suppliers"]],
    )
    for line in document.get("rejected", []):
        print(f"refused: {line}")
