"""``sealgrid settle``: bills with and without the market for one period (paper mustafa2016 §III-D).

METERS.csv ``bidder,supplier,import_kwh,export_kwh``; TARIFFS.csv
``supplier,retail,feed_in,network_fee``; TRADES.csv ``bidder,side,traded_kwh`` with ``--price``.
Money is positive when the party receives it.
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path
from typing import Any

from sealgrid.cli import CliError
from sealgrid.cli.common import Row, RowErrors, print_json, print_table, read_rows
from sealgrid.mechanism.bids import Side
from sealgrid.mechanism.grid import parse_decimal
from sealgrid.mechanism.settlement import (
    Account,
    MarketTrade,
    Meter,
    SettlementError,
    Tariff,
    settle,
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sealgrid settle``."""
    p = sub.add_parser("settle", help="settle one period's bills with and without the market")
    p.add_argument("--meters", type=Path, required=True, metavar="METERS.csv",
                   help="columns bidder,supplier,import_kwh,export_kwh")
    p.add_argument("--tariffs", type=Path, required=True, metavar="TARIFFS.csv",
                   help="columns supplier,retail,feed_in,network_fee")
    p.add_argument("--trades", type=Path, metavar="TRADES.csv",
                   help="columns bidder,side,traded_kwh (needs --price)")
    p.add_argument("--price", help="the period's clearing price per kWh")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=run)


def _number(row: Row, path: Path, column: str, errors: list[str]) -> Fraction | None:
    try:
        value = Fraction(parse_decimal(row.values[column]))
    except ValueError:
        errors.append(f"{row.where(path)}: malformed: {column} is missing or not a number")
        return None
    if value < 0:
        errors.append(f"{row.where(path)}: negative: {column} must not be negative")
        return None
    return value


def load_tariffs(path: Path) -> dict[str, Tariff]:
    """Read TARIFFS.csv. Raises RowErrors naming each broken row."""
    tariffs: dict[str, Tariff] = {}
    errors: list[str] = []
    for row in read_rows(path, ("supplier", "retail", "feed_in", "network_fee")):
        name = row.values["supplier"]
        r, e, f = (_number(row, path, c, errors) for c in ("retail", "feed_in", "network_fee"))
        if not name:
            errors.append(f"{row.where(path)}: malformed: supplier is empty")
        elif name in tariffs:
            errors.append(f"{row.where(path)}: duplicate: supplier {name} has two tariffs")
        elif r is not None and e is not None and f is not None:
            try:
                tariffs[name] = Tariff(r, e, f)
            except SettlementError as exc:
                errors.append(f"{row.where(path)}: {exc}")
    if errors:
        raise RowErrors(errors)
    return tariffs


def load_meters(path: Path) -> list[Meter]:
    """Read METERS.csv. Raises RowErrors naming each broken row."""
    meters: list[Meter] = []
    errors: list[str] = []
    for row in read_rows(path, ("bidder", "supplier", "import_kwh", "export_kwh")):
        v = row.values
        imp = _number(row, path, "import_kwh", errors)
        exp = _number(row, path, "export_kwh", errors)
        if not v["bidder"] or not v["supplier"]:
            errors.append(f"{row.where(path)}: malformed: bidder and supplier must not be empty")
        elif imp is not None and exp is not None:
            meters.append(Meter(v["bidder"], v["supplier"], imp, exp))
    if errors:
        raise RowErrors(errors)
    return meters


def load_trades(path: Path) -> list[MarketTrade]:
    """Read TRADES.csv. Raises RowErrors naming each broken row."""
    trades: list[MarketTrade] = []
    errors: list[str] = []
    for row in read_rows(path, ("bidder", "side", "traded_kwh")):
        v = row.values
        q = _number(row, path, "traded_kwh", errors)
        try:
            side = Side(v["side"].lower())
        except ValueError:
            errors.append(f"{row.where(path)}: unknown_side: side must be 'buy' or 'sell'")
            continue
        if q is not None:
            trades.append(MarketTrade(v["bidder"], side, q))
    if errors:
        raise RowErrors(errors)
    return trades


def _account(a: Account, key: str, name: str) -> dict[str, Any]:
    return {key: name, "with_market": float(a.with_market),
            "without_market": float(a.without_market), "difference": float(a.difference)}


def run(args: argparse.Namespace) -> int:
    """Settle the period and print every party's money with and without the market."""
    if (args.trades is None) != (args.price is None):
        raise CliError("--trades and --price go together")
    tariffs = load_tariffs(args.tariffs)
    meters = load_meters(args.meters)
    trades = load_trades(args.trades) if args.trades else []
    price = None
    if args.price is not None:
        try:
            price = Fraction(parse_decimal(args.price))
        except ValueError:
            raise CliError("--price is not a number") from None
    try:
        result = settle(meters, tariffs, trades, price)
    except SettlementError as exc:
        raise CliError(str(exc)) from None
    document: dict[str, Any] = {
        "households": [_account(a, "bidder", a.party) for a in result.households],
        "suppliers": [_account(a, "supplier", a.party) for a in result.suppliers],
        "grid_operator": {k: v for k, v in _account(result.grid_operator, "party", "").items()
                          if k != "party"},
    }
    if args.json:
        print_json(document)
        return 0
    rows = [[f"household {d['bidder']}", d["with_market"], d["without_market"], d["difference"]]
            for d in document["households"]]
    rows += [[f"supplier {d['supplier']}", d["with_market"], d["without_market"],
              d["difference"]] for d in document["suppliers"]]
    g = document["grid_operator"]
    rows.append(["grid operator", g["with_market"], g["without_market"], g["difference"]])
    print_table(["party", "with_market", "without_market", "difference"], rows)
    return 0
