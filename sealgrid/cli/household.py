"""``sealgrid household register|enrol|bid|tokens|result|statement``, ``sealgrid supplier
bid|tokens|result`` (a supplier bidding itself) and ``sealgrid aggregates``:
the market's clients."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sealgrid household`` (with its actions) and ``sealgrid aggregates``."""
    parser = sub.add_parser(
        "household", help="a household agent: register, enrol, bid, fetch results and statements")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", required=True, type=Path, help="from 'sealgrid init'")
        p.add_argument("--household", required=True, help="household key id, e.g. h0001")
        p.add_argument("--json", action="store_true", help="print one JSON object")

    reg = actions.add_parser("register", help="challenge–response with every server")
    common(reg)
    reg.set_defaults(func=run_register)
    enr = actions.add_parser("enrol", help="enrol the settlement credential's shares with "
                             "every server (done once by itself when tokens are fetched)")
    common(enr)
    enr.set_defaults(func=run_enrol)
    _bidding(actions, common, "this household's")
    stm = actions.add_parser("statement", help="this household's bill of one billing cycle, "
                             "a line per period")
    common(stm)
    stm.add_argument("--cycle", required=True,
                     help="the billing cycle: the start of its first period (ISO 8601 UTC)")
    stm.set_defaults(func=run_statement)

    sup = sub.add_parser(
        "supplier", help="a supplier bidding in the market itself, under its own key and tokens "
        "(its position is settled at the clearing price and shows in its bill)")
    sup_actions = sup.add_subparsers(dest="action", metavar="ACTION", required=True)

    def supplier_common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", required=True, type=Path, help="from 'sealgrid init'")
        p.add_argument("--supplier", required=True, dest="supplier_bidder",
                       help="the supplier's id, e.g. s1")
        p.add_argument("--json", action="store_true", help="print one JSON object")

    _bidding(sup_actions, supplier_common, "the supplier's own")

    agg = sub.add_parser("aggregates", help="a supplier's or operator's totals of a period, or "
                         "a DSO's or the TSO's totals of a billing cycle")
    agg.add_argument("--data-dir", required=True, type=Path)
    agg.add_argument("--role", choices=("supplier", "operator", "dso", "tso"), required=True)
    agg.add_argument("--id", required=True, help="supplier id (s1 …), operator id (dso), a "
                     "DSO's region (r1 …) or tso")
    agg.add_argument("--period", help="the period (roles supplier and operator)")
    agg.add_argument("--cycle", help="the billing cycle: the start of its first period "
                     "(roles dso and tso)")
    agg.add_argument("--settled", action="store_true",
                     help="role supplier: also the period's settled totals of the supplier's "
                     "customers, counted by contract (once the period is settled)")
    agg.add_argument("--json", action="store_true")
    agg.set_defaults(func=run_aggregates, parser=agg)


def _bidding(actions: Any, common: Callable[[argparse.ArgumentParser], None],
             whose: str) -> None:
    """Add ``bid``, ``tokens`` and ``result`` (a household's, or a supplier bidding itself)."""
    bid = actions.add_parser("bid", help="send a bid or offer under a fresh pseudonym")
    common(bid)
    bid.add_argument("--side", required=True, choices=("buy", "sell"))
    bid.add_argument("--quantity", required=True, help="kWh (at most 3 decimals)")
    bid.add_argument("--price", required=True, metavar="CT",
                     help="ct/kWh (the market's unit), on the market's price grid "
                          "(the running market's default: 80 to 120 in steps of 0.1)")
    bid.add_argument("--period", help="trading period (ISO 8601 UTC); default: the next open")
    bid.set_defaults(func=run_bid)
    tok = actions.add_parser("tokens", help="fetch pseudonym tokens ahead for the next periods")
    common(tok)
    tok.add_argument("--periods", type=int, default=4,
                     help="how many open periods ahead, from the first (default 4)")
    tok.set_defaults(func=run_tokens)
    res = actions.add_parser("result", help=f"fetch and check {whose} result")
    common(res)
    res.add_argument("--period", required=True, help="the period bid for")
    res.set_defaults(func=run_result)


def _emit(args: argparse.Namespace, data: dict[str, Any], lines: list[str]) -> None:
    from sealgrid.mechanism.units import UNITS

    print(json.dumps({"units": UNITS, **data}, sort_keys=True) if args.json
          else "\n".join(lines))


def _run(args: argparse.Namespace, work: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run ``work(agent)`` with this household's agent; service errors become one line."""
    from sealgrid.cli import CliError
    from sealgrid.service.agent import AgentError, DataDirError, HouseholdAgent, ServiceError

    async def go() -> Any:
        bidder = getattr(args, "supplier_bidder", None)
        agent = (HouseholdAgent.for_supplier(args.data_dir, bidder) if bidder
                 else HouseholdAgent.from_data_dir(args.data_dir, args.household))
        async with agent:
            return await work(agent)

    try:
        return asyncio.run(go())
    except (ServiceError, DataDirError, AgentError) as exc:
        raise CliError(str(exc)) from exc


def _public(outcome: Any) -> dict[str, Any] | None:
    """The public outcome as printed: its wire fields, without the message's type and version."""
    if outcome is None:
        return None
    from sealgrid.service.wire import to_dict

    return {k: v for k, v in to_dict(outcome).items() if k not in ("type", "v")}


def run_enrol(args: argparse.Namespace) -> int:
    """Send every server its share of this household's credential; check each answer."""

    async def work(agent: Any) -> tuple[dict[int, bytes], dict[int, Any]]:
        got: tuple[dict[int, bytes], dict[int, Any]] = await agent.enrol(again=True)
        return got

    enrolled, refused = _run(args, work)
    data = {
        "household": args.household,
        "enrolled": {str(i): d.hex() for i, d in sorted(enrolled.items())},
        "refused": {str(i): e.reason.value for i, e in sorted(refused.items())},
    }
    lines = [f"server {i}: credential share enrolled (sha256 {d[:16]}…, signature checked)"
             for i, d in data["enrolled"].items()]
    lines += [f"server {i}: refused: {e}" for i, e in sorted(refused.items())]
    _emit(args, data, lines)
    return 1 if refused else 0


def run_register(args: argparse.Namespace) -> int:
    """Prove to every server that this household holds its registered key."""

    async def work(agent: Any) -> list[dict[str, Any]]:
        answers: list[dict[str, Any]] = await agent.client.register()
        return answers

    answers = _run(args, work)
    _emit(args, {"registered": answers}, [f"server {a['server']}: registered" for a in answers])
    return 0


def receipt_id(receipt: Any) -> str:
    """A short opaque name of a receipt: the first 16 hex digits of SHA-256 of its signature.

    Receipts carry no number (a number would tell the order of arrival); this names one
    without telling anything but which receipt it is.
    """
    return hashlib.sha256(receipt.signature).hexdigest()[:16]


def run_bid(args: argparse.Namespace) -> int:
    """Check, encode, sign and send one bid; the agent keeps the pseudonym for the result."""

    from sealgrid.service import wire

    async def work(agent: Any) -> dict[str, Any]:
        bid = await agent.check(args.side, args.quantity, args.price)
        prepared = await agent.prepare(bid, args.period)
        outcome = await agent.send(prepared)
        return {
            "period": prepared.pseudonym.period,
            "pseudonym": wire.b64e(prepared.pseudonym.public),  # the household's own data
            "receipts": {str(i): receipt_id(r) for i, r in sorted(outcome.receipts.items())},
            "refusals": {str(i): str(e) for i, e in sorted(outcome.refusals.items())},
            "unreachable": {str(i): why for i, why in sorted(outcome.unreachable.items())},
        }

    data = _run(args, work)
    lines = [f"period {data['period']}"]
    lines += [f"server {i}: receipt {n} (signature checked)" for i, n in data["receipts"].items()]
    lines += [f"server {i}: refused: {why}" for i, why in data["refusals"].items()]
    lines += [f"server {i}: not reached before gate closure ({why}); the bid will be left out "
              "as not_on_every_server" for i, why in data["unreachable"].items()]
    _emit(args, data, lines)
    return 1 if data["refusals"] or data["unreachable"] else 0


def run_tokens(args: argparse.Namespace) -> int:
    """Fetch and keep every server's token for the next open periods (one pseudonym each), so
    that a bid later sits apart from its issuance in time and connection."""
    from sealgrid.cli import CliError

    if not 1 <= args.periods <= 96:
        raise CliError("--periods must be between 1 and 96 (the servers' horizon)")

    async def work(agent: Any) -> tuple[list[str], dict[int, Any]]:
        periods: list[str] = await agent.fetch_tokens(args.periods)
        return periods, dict(agent.enrolment_refusals)  # the enrolment done on the way

    periods, refused = _run(args, work)
    lines = [f"tokens kept for {p}" for p in periods] or ["no tokens could be fetched"]
    lines += [f"server {i}: credential enrolment refused: {e}" for i, e in sorted(refused.items())]
    data: dict[str, Any] = {"periods": periods}
    if refused:
        data["enrolment_refused"] = {str(i): e.reason.value for i, e in sorted(refused.items())}
    _emit(args, data, lines)
    return 0 if periods and not refused else 1


def run_result(args: argparse.Namespace) -> int:
    """Fetch every server's share of this household's result, rebuild and check it."""

    async def work(agent: Any) -> Any:
        return await agent.result(args.period)

    got = _run(args, work)
    data: dict[str, Any] = {
        "period": got.period,
        "status": got.status,
        "public": _public(got.outcome),
        "issuer_keys_match": got.issuer_keys_match,
    }
    if got.traded_wh is not None:
        data["accepted"] = got.accepted
        data["traded_wh"] = float(got.traded_wh)  # the older field, Wh
        data["traded_kwh"] = float(got.traded_wh / 1000)
    if got.outcome is not None and got.outcome.price is not None:
        data["price_ct_per_kwh"] = got.outcome.price
    lines = [f"period {data['period']}: {data['status']}"]
    if "traded_wh" in data:
        lines.append(f"traded {data['traded_wh'] / 1000:g} kWh (shares of all servers agree)")
    if data["issuer_keys_match"]:
        lines.append("issuer keys: the ones every server published for the period")
    if data["public"]:
        lines.append(f"public outcome: {json.dumps(data['public'], sort_keys=True)}")
    _emit(args, data, lines)
    return 0


def run_statement(args: argparse.Namespace) -> int:
    """Fetch this household's statement of a billing cycle from every server and rebuild it."""
    from sealgrid.service.bills import statement_doc

    async def work(agent: Any) -> Any:
        return await agent.statement(args.cycle)

    out = _run(args, work)
    doc = billing_doc(lambda: statement_doc(args.household, args.cycle, out))
    if args.json:
        _emit(args, doc, [])
        return 0
    from sealgrid.cli.common import print_table

    print(f"household {doc['household']}, cycle {doc['cycle']}: {doc['status']}")
    print_table(
        ("period", "status", "price ct/kWh", "traded kWh", "import kWh", "export kWh",
         "money ct", "without market ct"),
        [(p["period"], p["status"], p["price"], f"{p['traded_kwh']:.3f}",
          f"{p['import_kwh']:.3f}", f"{p['export_kwh']:.3f}", f"{p['money']:.2f}",
          f"{p['money_without_market']:.2f}") for p in doc["periods"]],
    )
    print(f"amount to pay: {doc['amount']:.2f} ct (without the market: "
          f"{doc['amount_without_market']:.2f} ct); money is positive when received")
    return 0


def billing_doc(make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``make`` (fetch, rebuild, read a billing output); a rebuilt output whose parts do
    not fit its kind becomes one line, like the service's errors."""
    from sealgrid.cli import CliError

    try:
        return make()
    except (ValueError, KeyError, TypeError) as exc:
        raise CliError(f"the servers' billing output does not read as one: {exc}") from exc


def run_aggregates(args: argparse.Namespace) -> int:
    """Fetch a supplier's or operator's totals of a period, or a DSO's or the TSO's totals of
    a billing cycle, signed by every server."""
    from sealgrid.cli import CliError
    from sealgrid.service.agent import AgentError, ServiceError, read_billing, read_totals
    from sealgrid.service.bills import supplier_period_doc
    from sealgrid.service.client import Client
    from sealgrid.service.keys import TRUST, DataDirError, Registry, load_signing_key

    if args.role in ("dso", "tso"):
        if args.cycle is None or args.period is not None:
            args.parser.error(f"--role {args.role} takes --cycle (not --period)")
        return run_cycle_totals(args)
    if args.period is None or args.cycle is not None:
        args.parser.error(f"--role {args.role} takes --period (not --cycle)")
    folder = "suppliers" if args.role == "supplier" else "operators"

    if args.settled and args.role != "supplier":
        args.parser.error("--settled goes with --role supplier")

    async def go() -> Any:
        registry = Registry.load(args.data_dir / "registry.json")
        key = load_signing_key(args.data_dir / folder / f"{args.id}.key")
        async with Client(registry, args.data_dir / TRUST) as client:
            totals = await read_totals(client, args.role, args.id, args.period, key)
            settled = (await read_billing(client, "supplier_period", args.id, args.period, key)
                       if args.settled else None)
            return totals, settled

    try:
        got, settled = asyncio.run(go())
    except (ServiceError, DataDirError, AgentError) as exc:
        raise CliError(str(exc)) from exc
    data: dict[str, Any] = {
        "period": got.period,
        "status": got.status,
        "public": _public(got.outcome),
    }
    if got.bought_wh is not None and got.sold_wh is not None:
        data["bought_wh"], data["sold_wh"] = float(got.bought_wh), float(got.sold_wh)
        data["bought_kwh"] = float(got.bought_wh / 1000)
        data["sold_kwh"] = float(got.sold_wh / 1000)
    lines = [f"{args.role} {args.id}, period {data['period']}: {data['status']}"]
    if "bought_wh" in data:
        kwh = (data["bought_wh"] / 1000, data["sold_wh"] / 1000)
        lines.append(f"bought {kwh[0]:g} kWh, sold {kwh[1]:g} kWh on the market")
    if settled is not None:
        data["settled"] = supplier_period_doc(settled)
        s = data["settled"]
        lines.append(f"settled by contract: {s['status']}" + (
            f", bought {s['bought_kwh']:g} kWh, sold {s['sold_kwh']:g} kWh"
            if s["status"] == "settled" else ""))
    _emit(args, data, lines)
    return 0


def run_cycle_totals(args: argparse.Namespace) -> int:
    """A DSO's region totals per supplier, or the TSO's totals per region, of one cycle."""
    from sealgrid.cli import CliError
    from sealgrid.cli.common import print_table
    from sealgrid.service.agent import AgentError, ServiceError, read_billing
    from sealgrid.service.bills import dso_doc, tso_doc
    from sealgrid.service.client import Client
    from sealgrid.service.keys import (
        TRUST,
        DataDirError,
        Registry,
        load_signing_key,
        private_key_path,
    )

    async def go() -> Any:
        registry = Registry.load(args.data_dir / "registry.json")
        key = load_key(private_key_path(args.data_dir, args.role, args.id))
        async with Client(registry, args.data_dir / TRUST) as client:
            return await read_billing(client, args.role, args.id, args.cycle, key)

    def load_key(path: Path) -> Any:
        if not path.exists():
            what = f"the DSO of region {args.id!r}" if args.role == "dso" else "the TSO"
            raise CliError(f"no key of {what} in {args.data_dir} (looked for {path})")
        return load_signing_key(path)

    try:
        out = asyncio.run(go())
    except (ServiceError, DataDirError, AgentError) as exc:
        raise CliError(str(exc)) from exc
    if args.role == "dso":
        doc = billing_doc(lambda: dso_doc(args.id, args.cycle, out))
        rows = [(s["supplier"], f"{s['import_kwh']:.3f}", f"{s['export_kwh']:.3f}")
                for s in doc["suppliers"]]
        head = ("supplier", "import kWh", "export kWh")
        title = f"DSO of region {args.id}, cycle {args.cycle}: {doc['status']}"
    else:
        doc = billing_doc(lambda: tso_doc(args.cycle, out))
        rows = [(r["region"], f"{r['import_kwh']:.3f}", f"{r['export_kwh']:.3f}")
                for r in doc["regions"]]
        head = ("region", "import kWh", "export kWh")
        title = f"TSO, cycle {args.cycle}: {doc['status']}"
    if args.json:
        print(json.dumps(doc, sort_keys=True))
    else:
        print(title)
        print_table(head, rows)
    return 0
