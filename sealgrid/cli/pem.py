"""``sealgrid pem AGENTS.csv``: one trading window of the PEM (paper xie2020; docs/pem.md).

AGENTS.csv columns ``agent,generation,load,battery,k,epsilon`` (kWh for the window; battery
> 0 charging, < 0 discharging). Prices in ¢/kWh, the market's unit: PEM's price scales with
the square root of the retail price, so the unit is part of the market. The reading and the
document are :mod:`sealgrid.frames`'.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sealgrid.cli import CliError
from sealgrid.cli.common import RowErrors, print_json, print_table, read_rows, rows_of
from sealgrid.frames import AGENT_COLUMNS, InputError, pem_document, pem_market, read_agents
from sealgrid.mechanism.pem import Agent, PemInputError, PemMarket, PemOutcome, run_pem
from sealgrid.mechanism.units import PRICE_UNIT

COLUMNS = AGENT_COLUMNS


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sealgrid pem``."""
    p = sub.add_parser("pem", help="price one trading window by the PEM Stackelberg game")
    p.add_argument("agents", type=Path, metavar="AGENTS.csv",
                   help="columns agent,generation,load,battery,k,epsilon (kWh for the window)")
    p.add_argument("--retail", required=True, metavar="CT",
                   help=f"main grid's retail price p_s, {PRICE_UNIT} (the paper: 120)")
    p.add_argument("--feed-in", required=True, metavar="CT",
                   help=f"main grid's feed-in price p_b, {PRICE_UNIT} (the paper: 80)")
    p.add_argument("--price-range", nargs=2, required=True, metavar=("LOW", "HIGH"),
                   help=f"the market's price range [p_l, p_h], {PRICE_UNIT} (the paper: 90 110)")
    p.add_argument("--secure", action="store_true",
                   help="run Protocols 1-4 among the agents over Paillier")
    p.add_argument("--key-bits", type=int, default=2048, help="Paillier key size with --secure")
    p.add_argument("--seed", type=int, default=None, help="seed for the designated agents")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=run)


def load_agents(path: Path) -> list[Agent]:
    """Read and validate AGENTS.csv.

    Raises:
        RowErrors: one message per broken row, naming the row and the rule.
    """
    try:
        return read_agents(rows_of(path, read_rows(path, COLUMNS)))
    except InputError as exc:
        raise RowErrors(exc.lines) from None


def run(args: argparse.Namespace) -> int:
    """Run one PEM window and print the outcome."""
    try:
        market = pem_market(args.retail, args.feed_in, *args.price_range)
    except InputError as exc:
        raise CliError(str(exc)) from None
    agents = load_agents(args.agents)
    extra: dict[str, Any] = {}
    if args.secure:
        outcome, extra = _secure(agents, market, args.key_bits, args.seed)
    else:
        try:
            outcome = run_pem(agents, market)
        except PemInputError as exc:
            raise CliError(str(exc)) from None
    document = pem_document(outcome) | extra
    if args.json:
        print_json(document)
        return 0
    print(f"Market: {document['market']}   price: {document['price']:.6f} {PRICE_UNIT}")
    print()
    print_table(["seller", "net_kwh", "optimal_load_kwh"],
                [[s["agent"], s["net"], s["optimal_load"]] for s in document["sellers"]])
    print()
    print_table(["seller", "buyer", "energy_kwh", "payment_ct"],
                [[t["seller"], t["buyer"], t["energy"], t["payment"]]
                 for t in document["trades"]])
    return 0


def _secure(
    agents: list[Agent], market: PemMarket, key_bits: int, seed: int | None
) -> tuple[PemOutcome, dict[str, Any]]:
    try:
        from sealgrid.protocol.pem import run_pem_secure
    except ImportError as exc:  # pragma: no cover - depends on the installed package
        raise CliError(f"the private PEM is not available: {exc}") from None
    try:
        outcome, stats = run_pem_secure(agents, market, key_bits=key_bits, seed=seed)
    except PemInputError as exc:
        raise CliError(f"--key-bits: {exc}") from None
    return outcome, {"bytes_per_agent": stats.bytes_per_agent}
