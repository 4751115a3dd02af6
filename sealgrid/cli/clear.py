"""``sealgrid clear BIDS.csv``: clear one period's double auction, plaintext or secure.

BIDS.csv columns ``bidder,side,quantity_kwh,price,supplier``. Invalid rows: every broken rule
on its own line naming the row, exit status 1 (or, with ``--skip-invalid``, listed and left out).
"""

from __future__ import annotations

import argparse
from decimal import Decimal
from pathlib import Path
from typing import Any

from sealgrid.cli import CliError
from sealgrid.cli.common import RowErrors, kwh, print_json, print_table, read_rows
from sealgrid.mechanism.auction import Clearing, clear
from sealgrid.mechanism.bids import Bid, BidRejected, MarketRules, OrderBook, Reason, check_bid
from sealgrid.mechanism.grid import PriceGrid, parse_decimal

COLUMNS = ("bidder", "side", "quantity_kwh", "price", "supplier")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sealgrid clear``."""
    p = sub.add_parser("clear", help="clear one period's double auction from a CSV of bids")
    p.add_argument("bids", type=Path, metavar="BIDS.csv",
                   help="columns bidder,side,quantity_kwh,price,supplier")
    p.add_argument("--floor", required=True, help="lowest price on the grid (per kWh)")
    p.add_argument("--ceiling", required=True, help="highest price on the grid (per kWh)")
    p.add_argument("--tick", default="0.001", help="price grid step (default 0.001)")
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
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def market_rules(args: argparse.Namespace) -> MarketRules:
    """Build the market's rules from the command line.

    Raises:
        CliError: the grid or the maximum quantity is not valid.
    """
    try:
        grid = PriceGrid.from_values(args.floor, args.ceiling, args.tick)
        max_wh = parse_decimal(args.max_quantity) * 1000
    except ValueError as exc:
        raise CliError(f"invalid market settings: {exc}") from None
    if max_wh != max_wh.to_integral_value() or max_wh <= 0:
        raise CliError("--max-quantity must be positive with at most 3 decimals")
    suppliers = tuple(s.strip() for s in args.suppliers.split(",") if s.strip())
    if args.min_per_side < 1:
        raise CliError("--min-per-side must be at least 1")
    return MarketRules(grid, int(max_wh), suppliers, min_accepted_per_side=args.min_per_side)


def load_bids(path: Path, rules: MarketRules) -> tuple[list[Bid], list[str]]:
    """Read and validate BIDS.csv; return the valid bids and one message per broken rule."""
    bids: list[Bid] = []
    errors: list[str] = []
    seen: set[str] = set()
    for row in read_rows(path, COLUMNS):
        v = row.values
        bid, rejections = check_bid(
            rules, v["bidder"], v["side"], v["quantity_kwh"], v["price"], v["supplier"]
        )
        if "__extra__" in v:
            rejections.append(BidRejected(Reason.MALFORMED, "more fields than the header"))
        if v["bidder"] in seen:
            rejections.append(BidRejected(Reason.DUPLICATE_PSEUDONYM, f"bidder {v['bidder']}"))
        seen.add(v["bidder"])
        errors += [f"{row.where(path)}: {r}" for r in rejections]
        if bid is not None and not rejections:
            bids.append(bid)
    return bids, errors


def outcome_document(
    bids: list[Bid], book: OrderBook, result: Clearing, grid: PriceGrid
) -> dict[str, Any]:
    """Build the JSON document of the CLI contract from a clearing result."""
    traded = result.traded_kwh_array(book.is_buy)
    price: Decimal | None = grid.price(result.level) if result.level is not None else None
    return {
        "status": "cleared" if result.traded else "no_trade",
        "price": float(price) if price is not None else None,
        "volume_kwh": kwh(result.volume_wh, 1000),
        "allocations": [
            {
                "bidder": b.bidder,
                "side": b.side.value,
                "accepted": bool(result.accepted[i]),
                "traded_kwh": float(traded[i]),
            }
            for i, b in enumerate(bids)
        ],
        "suppliers": [
            {
                "supplier": name,
                "bought_kwh": kwh(result.supplier_bought_wh[s], 1000),
                "sold_kwh": kwh(result.supplier_sold_wh[s], 1000),
            }
            for s, name in enumerate(book.suppliers)
        ],
    }


def run(args: argparse.Namespace) -> int:
    """Clear the bids in the CSV file and print the outcome."""
    rules = market_rules(args)
    bids, errors = load_bids(args.bids, rules)
    if errors and not args.skip_invalid:
        raise RowErrors(errors)
    book = OrderBook.from_bids(bids, rules.suppliers)
    if args.secure:
        result = _secure_clear(book, rules, args.parties)
    else:
        result = clear(book, rules.levels, min_accepted_per_side=rules.min_accepted_per_side)
    document = outcome_document(bids, book, result, rules.grid)
    if args.skip_invalid:
        document["rejected"] = errors
    if args.json:
        print_json(document)
        return 0
    _print_outcome(document)
    return 0


def _secure_clear(book: OrderBook, rules: MarketRules, parties: int) -> Clearing:
    try:
        from sealgrid.protocol.clearing import secure_clear
    except ImportError as exc:  # pragma: no cover - depends on the installed package
        raise CliError(f"secure clearing is not available: {exc}") from None
    outcome = secure_clear(book, rules.levels, parties=parties,
                           max_quantity_wh=rules.max_quantity_wh,
                           min_per_side=rules.min_accepted_per_side)
    return outcome.clearing


def _print_outcome(document: dict[str, Any]) -> None:
    if document["status"] == "no_trade":
        print("No trade: no grid price lets energy change hands with enough bids on each side.")
    else:
        print(f"Clearing price: {document['price']} per kWh   "
              f"volume: {document['volume_kwh']:.3f} kWh")
    print()
    print_table(
        ["bidder", "side", "accepted", "traded_kwh"],
        [[a["bidder"], a["side"], "yes" if a["accepted"] else "no", a["traded_kwh"]]
         for a in document["allocations"]],
    )
    print()
    print_table(
        ["supplier", "bought_kwh", "sold_kwh"],
        [[s["supplier"], s["bought_kwh"], s["sold_kwh"]] for s in document["suppliers"]],
    )
    for line in document.get("rejected", []):
        print(f"refused: {line}")
