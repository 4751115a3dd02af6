"""``sealgrid settle``: bills with and without the market for one period (paper mustafa2016 §III-D).

METERS.csv ``bidder,supplier,import_kwh,export_kwh``; TARIFFS.csv
``supplier,retail_ct_per_kwh,feed_in_ct_per_kwh,network_fee_ct_per_kwh`` (the older columns
``retail,feed_in,network_fee`` in currency per kWh are accepted with a warning); then either
``--clearing OUTCOME.json`` (what ``sealgrid clear --json`` printed, unchanged) or TRADES.csv
``bidder,side,traded_kwh`` with ``--clearing-price`` (¢/kWh). Money is in cents, positive when
the party receives it. The reading and the document are :mod:`sealgrid.frames`'.
"""

from __future__ import annotations

import argparse
import json
from fractions import Fraction
from pathlib import Path
from typing import Any

from sealgrid.cli import CliError
from sealgrid.cli.common import RowErrors, print_json, print_table, read_rows, rows_of
from sealgrid.frames import (
    METER_COLUMNS,
    OLD_TARIFF_COLUMNS,
    TARIFF_COLUMNS,
    TRADE_COLUMNS,
    InputError,
    read_meters,
    read_tariffs,
    read_trades,
    settlement_document,
    trades_of_clearing,
)
from sealgrid.mechanism.grid import parse_decimal
from sealgrid.mechanism.settlement import MarketTrade, Meter, SettlementError, Tariff, settle
from sealgrid.mechanism.units import MONEY_UNIT, PRICE_UNIT, deprecated, from_currency


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sealgrid settle``."""
    p = sub.add_parser("settle", help="settle one period's bills with and without the market")
    p.add_argument("--meters", type=Path, required=True, metavar="METERS.csv",
                   help="columns bidder,supplier,import_kwh,export_kwh")
    p.add_argument("--tariffs", type=Path, required=True, metavar="TARIFFS.csv",
                   help="columns supplier,retail_ct_per_kwh,feed_in_ct_per_kwh,"
                        f"network_fee_ct_per_kwh ({PRICE_UNIT})")
    p.add_argument("--clearing", type=Path, metavar="OUTCOME.json",
                   help="the period's outcome as 'sealgrid clear --json' printed it: its price "
                        "and each accepted bid's settled_kwh")
    p.add_argument("--trades", type=Path, metavar="TRADES.csv",
                   help="columns bidder,side,traded_kwh (needs --clearing-price)")
    p.add_argument("--clearing-price", metavar="CT",
                   help=f"the period's clearing price, {PRICE_UNIT}, with --trades")
    p.add_argument("--price", metavar="PRICE",
                   help="older spelling: the clearing price in currency per kWh "
                        "(accepted until the next release; use --clearing-price)")
    p.add_argument("--json", action="store_true",
                   help=f"print JSON instead of tables (money in {MONEY_UNIT})")
    p.set_defaults(func=run)


def _rows(path: Path, columns: tuple[str, ...],
          either: tuple[tuple[str, ...], ...] = ()) -> list[tuple[str, dict[str, str]]]:
    return rows_of(path, read_rows(path, columns, either))


def load_tariffs(path: Path, old_in_currency: bool = False) -> dict[str, Tariff]:
    """Read TARIFFS.csv in ¢/kWh; its older columns are in currency per kWh for ``settle``
    (``old_in_currency``) and in ¢/kWh for ``init`` and ``keygen``. Raises RowErrors naming
    each broken row."""
    try:
        return read_tariffs(_rows(path, ("supplier",), (TARIFF_COLUMNS[1:],
                                                         OLD_TARIFF_COLUMNS[1:])),
                            old_in_currency)
    except InputError as exc:
        raise RowErrors(exc.lines) from None


def load_meters(path: Path) -> list[Meter]:
    """Read METERS.csv. Raises RowErrors naming each broken row."""
    try:
        return read_meters(_rows(path, METER_COLUMNS))
    except InputError as exc:
        raise RowErrors(exc.lines) from None


def load_trades(path: Path) -> list[MarketTrade]:
    """Read TRADES.csv. Raises RowErrors naming each broken row."""
    try:
        return read_trades(_rows(path, TRADE_COLUMNS))
    except InputError as exc:
        raise RowErrors(exc.lines) from None


def _price(args: argparse.Namespace) -> Fraction | None:
    if args.clearing_price is not None and args.price is not None:
        raise CliError("give --clearing-price (ct/kWh) or --price (currency per kWh), not both")
    text, old = (args.price, True) if args.price is not None else (args.clearing_price, False)
    if text is None:
        return None
    try:
        value = parse_decimal(text)
    except ValueError:
        flag = "--price" if old else "--clearing-price"
        raise CliError(f"{flag} is not a number: {text!r}") from None
    if old:
        deprecated("--price", "--clearing-price")
        value = from_currency(value)
    return Fraction(value)


def _clearing(path: Path) -> tuple[list[MarketTrade], Fraction | None]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CliError(f"{path}: not a JSON document ({exc})") from None
    if not isinstance(document, dict):
        raise CliError(f"{path}: not a clearing document of 'sealgrid clear --json'")
    try:
        return trades_of_clearing(document)
    except InputError as exc:
        raise CliError(f"{path}: {exc}") from None


def run(args: argparse.Namespace) -> int:
    """Settle the period and print every party's money with and without the market."""
    price = _price(args)
    if args.clearing is not None and (args.trades is not None or price is not None):
        raise CliError("give --clearing, or --trades with --clearing-price, not both")
    if (args.trades is None) != (price is None):
        raise CliError("--trades and --clearing-price go together")
    tariffs = load_tariffs(args.tariffs, old_in_currency=True)
    meters = load_meters(args.meters)
    trades = load_trades(args.trades) if args.trades else []
    if args.clearing is not None:
        trades, price = _clearing(args.clearing)
    try:
        result = settle(meters, tariffs, trades, price)
    except SettlementError as exc:
        raise CliError(str(exc)) from None
    document: dict[str, Any] = settlement_document(result)
    if args.json:
        print_json(document)
        return 0
    rows = [[f"household {d['bidder']}", d["with_market_ct"], d["without_market_ct"],
             d["difference_ct"]] for d in document["households"]]
    rows += [[f"supplier {d['supplier']}", d["with_market_ct"], d["without_market_ct"],
              d["difference_ct"]] for d in document["suppliers"]]
    g = document["grid_operator"]
    rows.append(["grid operator", g["with_market_ct"], g["without_market_ct"],
                 g["difference_ct"]])
    print(f"Money in {MONEY_UNIT}, positive when the party receives it.")
    print_table(["party", "with_market_ct", "without_market_ct", "difference_ct"], rows)
    return 0
