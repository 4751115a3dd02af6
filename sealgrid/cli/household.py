"""``sealgrid household register|bid|result`` and ``sealgrid aggregates``: the market's clients."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sealgrid household`` (with its actions) and ``sealgrid aggregates``."""
    parser = sub.add_parser("household", help="a household agent: register, bid, fetch results")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", required=True, type=Path, help="from 'sealgrid init'")
        p.add_argument("--household", required=True, help="household key id, e.g. h0001")
        p.add_argument("--json", action="store_true", help="print one JSON object")

    reg = actions.add_parser("register", help="challenge–response with every server")
    common(reg)
    reg.set_defaults(func=run_register)
    bid = actions.add_parser("bid", help="send a bid or offer under a fresh pseudonym")
    common(bid)
    bid.add_argument("--side", required=True, choices=("buy", "sell"))
    bid.add_argument("--quantity", required=True, help="kWh (at most 3 decimals)")
    bid.add_argument("--price", required=True, help="currency per kWh, on the price grid")
    bid.add_argument("--period", help="trading period (ISO 8601 UTC); default: the next open")
    bid.set_defaults(func=run_bid)
    res = actions.add_parser("result", help="fetch and check this household's result")
    common(res)
    res.add_argument("--period", required=True, help="the period bid for")
    res.set_defaults(func=run_result)

    agg = sub.add_parser("aggregates", help="a supplier's totals or the region totals")
    agg.add_argument("--data-dir", required=True, type=Path)
    agg.add_argument("--role", choices=("supplier", "operator"), required=True)
    agg.add_argument("--id", required=True, help="supplier id (s1 …) or operator id (dso)")
    agg.add_argument("--period", required=True)
    agg.add_argument("--json", action="store_true")
    agg.set_defaults(func=run_aggregates)


def _emit(args: argparse.Namespace, data: dict[str, Any], lines: list[str]) -> None:
    print(json.dumps(data, sort_keys=True) if args.json else "\n".join(lines))


def _pseudonym_path(data_dir: Path, household: str, period: str) -> Path:
    return data_dir / "households" / f"{household}.pseudonyms" / (period.replace(":", "") + ".json")


def _household(args: argparse.Namespace) -> Any:
    from sealgrid.service.client import HouseholdClient
    from sealgrid.service.keys import Registry, load_signing_key

    registry = Registry.load(args.data_dir / "registry.json")
    key = load_signing_key(args.data_dir / "households" / f"{args.household}.key")
    return HouseholdClient(registry, args.data_dir / "ca.crt", args.household, key)


def _guard(coro: Any) -> Any:
    from sealgrid.cli import CliError
    from sealgrid.service.client import ServiceError
    from sealgrid.service.keys import DataDirError
    from sealgrid.service.shares import EncodingUnavailable

    try:
        return asyncio.run(coro)
    except (ServiceError, DataDirError, EncodingUnavailable) as exc:
        raise CliError(str(exc)) from exc


def run_register(args: argparse.Namespace) -> int:
    """Prove to every server that this household holds its registered key."""

    async def go() -> list[dict[str, Any]]:
        async with _household(args) as client:
            result: list[dict[str, Any]] = await client.register()
            return result

    answers = _guard(go())
    _emit(args, {"registered": answers}, [f"server {a['server']}: registered" for a in answers])
    return 0


def run_bid(args: argparse.Namespace) -> int:
    """Check, encode, sign and send one bid; keep the pseudonym key to fetch the result."""
    from sealgrid.cli import CliError
    from sealgrid.mechanism.bids import MarketRules, check_bid
    from sealgrid.mechanism.grid import PriceGrid
    from sealgrid.service.household import Pseudonym
    from sealgrid.service.keys import household_profile, write_private
    from sealgrid.service.shares import encode_payloads
    from sealgrid.service.wire import b64e

    profile = household_profile(args.data_dir, args.household)

    async def go() -> dict[str, Any]:
        async with _household(args) as client:
            info = await client.info(0)
            g = info["price_grid"]
            grid = PriceGrid.from_values(g["floor"], g["ceiling"], g["tick"])
            rules = MarketRules(grid, info["max_quantity_wh"], tuple(info["suppliers"]))
            bid, errors = check_bid(
                rules, args.household, args.side, args.quantity, args.price, profile["supplier"]
            )
            if bid is None:
                raise CliError("; ".join(str(e) for e in errors))
            period = args.period or info["first_open_period"]
            payloads = encode_payloads(
                bid, info["suppliers"], grid.levels, info["max_quantity_wh"], client.servers
            )
            pseudonym = Pseudonym.fresh(period)
            from cryptography.hazmat.primitives import serialization

            seed = pseudonym.key.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            path = _pseudonym_path(args.data_dir, args.household, period)
            saved: dict[str, Any] = {"period": period, "seed": b64e(seed), "side": bid.side.value}
            write_private(path, json.dumps(saved).encode())
            outcome = await client.bid(period, payloads, pseudonym)
            saved["issuers"] = {str(i): b64e(d) for i, d in pseudonym.issuers.items()}
            write_private(path, json.dumps(saved).encode())
            return {
                "period": period,
                "receipts": {str(i): r.seq for i, r in sorted(outcome.receipts.items())},
                "refusals": {str(i): str(e) for i, e in sorted(outcome.refusals.items())},
            }

    data = _guard(go())
    lines = [f"period {data['period']}"]
    lines += [f"server {i}: receipt #{n} (signature checked)" for i, n in data["receipts"].items()]
    lines += [f"server {i}: refused: {why}" for i, why in data["refusals"].items()]
    _emit(args, data, lines)
    return 1 if data["refusals"] else 0


def run_result(args: argparse.Namespace) -> int:
    """Fetch every server's share of this household's result, rebuild and check it."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from sealgrid.cli import CliError
    from sealgrid.service.household import Pseudonym
    from sealgrid.service.shares import reconstruct, traded_wh
    from sealgrid.service.wire import b64d

    path = _pseudonym_path(args.data_dir, args.household, args.period)
    try:
        saved = json.loads(path.read_text())
    except OSError as exc:
        raise CliError(f"no bid of {args.household} for {args.period} on record here") from exc
    key = Ed25519PrivateKey.from_private_bytes(b64d(saved["seed"]))
    pseudonym = Pseudonym(args.period, key)
    pseudonym.issuers = {int(i): b64d(d) for i, d in saved.get("issuers", {}).items()}

    async def go() -> dict[str, Any]:
        async with _household(args) as client:
            shares = await client.result(pseudonym)
            issuers_ok = await client.issuers_match(pseudonym)
        statuses = sorted({s.status for s in shares})
        data: dict[str, Any] = {"period": args.period, "status": "/".join(statuses)}
        data["public"] = json.loads(shares[0].public) if shares[0].public else None
        data["issuer_keys_match"] = issuers_ok
        if issuers_ok is False:
            raise CliError("a server issued this pseudonym under a key it did not publish")
        if statuses == ["cleared"]:
            try:
                (accepted_q,) = reconstruct([s.shares for s in shares])
            except Exception as exc:  # the protocol's consistency check failed
                raise CliError(f"the servers' shares do not agree: {exc}") from exc
            traded = traded_wh(accepted_q, saved["side"] == "buy", data["public"])
            data["accepted"] = accepted_q > 0
            data["traded_wh"] = float(traded)
        return data

    data = _guard(go())
    lines = [f"period {data['period']}: {data['status']}"]
    if "traded_wh" in data:
        lines.append(f"traded {data['traded_wh'] / 1000:g} kWh (shares of all servers agree)")
    if data["issuer_keys_match"]:
        lines.append("issuer keys: the ones every server published for the period")
    if data["public"]:
        lines.append(f"public outcome: {json.dumps(data['public'], sort_keys=True)}")
    _emit(args, data, lines)
    return 0


def run_aggregates(args: argparse.Namespace) -> int:
    """Fetch a supplier's totals or the region totals, signed by every server."""
    from sealgrid.service.client import Client
    from sealgrid.service.keys import Registry, load_signing_key
    from sealgrid.service.shares import reconstruct, supplier_totals

    folder = "suppliers" if args.role == "supplier" else "operators"
    registry = Registry.load(args.data_dir / "registry.json")
    key = load_signing_key(args.data_dir / folder / f"{args.id}.key")

    async def go() -> dict[str, Any]:
        async with Client(registry, args.data_dir / "ca.crt") as client:
            shares = await client.outputs(args.role, args.id, args.period, key)
        statuses = sorted({s.status for s in shares})
        data: dict[str, Any] = {"period": args.period, "status": "/".join(statuses)}
        data["public"] = json.loads(shares[0].public) if shares[0].public else None
        if statuses == ["cleared"] and all(s.shares for s in shares):
            bought, sold = reconstruct([s.shares for s in shares])
            b, s_ = supplier_totals(bought, sold, data["public"])
            data["bought_wh"], data["sold_wh"] = float(b), float(s_)
        elif args.role == "operator" and statuses == ["cleared"]:
            volume = data["public"].get("volume", 0) if data["public"] else 0
            data["bought_wh"] = data["sold_wh"] = volume
        return data

    data = _guard(go())
    lines = [f"{args.role} {args.id}, period {data['period']}: {data['status']}"]
    if "bought_wh" in data:
        kwh = (data["bought_wh"] / 1000, data["sold_wh"] / 1000)
        lines.append(f"bought {kwh[0]:g} kWh, sold {kwh[1]:g} kWh on the market")
    _emit(args, data, lines)
    return 0
