"""The whole market on this machine, end to end; assumes free loopback ports and two cores.

Three servers (child processes, TLS, SQLite), ``N`` households with seeded demo bids, ``K``
periods: every household bids under a fresh pseudonym per period, the servers agree and clear
under MPC at gate closure, every household fetches and rebuilds its own result, every supplier
its totals, and the settlement (SPEC §7) is computed with meters that read exactly the bid
quantities. The settlement needs every household's own result, so this is the one place
that gathers them: the demo plays all households at once; no server ever sees them.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from sealgrid.mechanism.bids import Bid, MarketRules, Side, check_bid
from sealgrid.mechanism.grid import PriceGrid
from sealgrid.mechanism.settlement import MarketTrade, Meter, Tariff, settle
from sealgrid.service.keys import household_profile
from sealgrid.service.local import LocalMarket
from sealgrid.service.shares import encode_payloads, reconstruct, supplier_totals, traded_wh

#: Demo tariffs, cents per kWh: retail (fee included), feed-in, network fee.
TARIFF = Tariff(Fraction(120), Fraction(80), Fraction(5))

Progress = Callable[[str], None]


def demo_bid(hid: str, supplier: str, period_index: int, seed: int, grid: PriceGrid) -> Bid:
    """Return household ``hid``'s seeded demo bid for one period (about half buy, half sell)."""
    rng = random.Random(f"{seed}/{hid}/{period_index}")
    side = Side.BUY if rng.random() < 0.5 else Side.SELL
    kwh = Decimal(rng.randrange(100, 5001)) / 1000
    low, high = (
        (grid.levels // 4, grid.levels - 1) if side is Side.BUY else (0, 3 * grid.levels // 4)
    )
    price = grid.price(rng.randrange(low, high + 1))
    rules = MarketRules(grid, 10_000)
    bid, errors = check_bid(rules, hid, side.value, kwh, price, supplier)
    assert bid is not None, errors
    return bid


async def _gather_limited(limit: int, coros: list[Any]) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(c: Any) -> Any:
        async with gate:
            return await c

    return list(await asyncio.gather(*(one(c) for c in coros)))


async def run_demo(
    root: Path,
    *,
    households: int,
    periods: int,
    period_seconds: int,
    seed: int = 2016,
    progress: Progress = print,
) -> dict[str, Any]:
    """Run the demo in ``root`` (a new data directory); return every figure it printed."""
    started = time.monotonic()
    with LocalMarket(root, households=households, period_seconds=period_seconds) as market:
        progress(f"data directory {market.root}; starting 3 servers …")
        await market.wait_ready()
        async with market.client() as client:
            info = await client.info(0)
        g = info["price_grid"]
        grid = PriceGrid.from_values(g["floor"], g["ceiling"], g["tick"])
        suppliers = tuple(info["suppliers"])
        hids = sorted(market.registry.households)
        supplier_of = {h: household_profile(market.root, h)["supplier"] for h in hids}
        session = market.session()
        try:
            chosen, bids, pseudonyms = await _submit_all(
                market, session, hids, supplier_of, grid, suppliers, periods, seed, progress
            )
            report = []
            for j, period in enumerate(chosen):
                report.append(
                    await _finish(market, session, period, bids[j], pseudonyms[j], grid,
                                  suppliers, progress)
                )  # fmt: skip
        finally:
            await session.close()
    return {
        "data_dir": str(market.root),
        "households": households,
        "period_seconds": period_seconds,
        "periods": report,
        "wall_seconds": round(time.monotonic() - started, 2),
    }


async def _submit_all(
    market: LocalMarket,
    session: Any,
    hids: list[str],
    supplier_of: dict[str, str],
    grid: PriceGrid,
    suppliers: tuple[str, ...],
    periods: int,
    seed: int,
    progress: Progress,
) -> tuple[list[str], list[dict[str, Bid]], list[dict[str, Any]]]:
    schedule = market.schedule
    chosen: list[str] = []
    all_bids: list[dict[str, Bid]] = []
    all_pseudonyms: list[dict[str, Any]] = []
    for j in range(periods):
        margin = 3.0 + len(hids) / 40  # issuance and bids of every household
        now = time.time()
        start = schedule.first_open(_utc(now))
        while schedule.gate_closure(start).timestamp() < now + margin or (
            chosen and schedule.period_id(start) <= chosen[-1]
        ):
            start += schedule.length
        period = schedule.period_id(start)
        bids = {h: demo_bid(h, supplier_of[h], j, seed, grid) for h in hids}
        done = 0

        async def one(h: str, period: str = period, bids: dict[str, Bid] = bids, j: int = j) -> Any:
            nonlocal done
            payloads = encode_payloads(bids[h], suppliers, grid.levels, 10_000, 3)
            outcome = await market.household(h, session).bid(period, payloads)
            done += 1
            if done % max(1, len(hids) // 4) == 0:
                progress(f"period {j + 1}/{periods} {period}: {done}/{len(hids)} bids sent")
            return outcome

        outcomes = await _gather_limited(32, [one(h) for h in hids])
        refused = [o for o in outcomes if not o.complete]
        if refused:
            reasons = sorted({str(r.reason.value) for o in refused for r in o.refusals.values()})
            progress(f"  {len(refused)} bids refused by some server: {', '.join(reasons)}")
        chosen.append(period)
        all_bids.append(bids)
        all_pseudonyms.append({h: o.pseudonym for h, o in zip(hids, outcomes, strict=True)})
    return chosen, all_bids, all_pseudonyms


def _utc(ts: float) -> Any:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC)


async def _finish(
    market: LocalMarket,
    session: Any,
    period: str,
    bids: dict[str, Bid],
    pseudonyms: dict[str, Any],
    grid: PriceGrid,
    suppliers: tuple[str, ...],
    progress: Progress,
) -> dict[str, Any]:
    gate = market.schedule.gate_closure(market.schedule.parse_period(period)).timestamp()
    wait = gate - time.time()
    if wait > 0:
        progress(f"period {period}: gate closes in {wait:.1f} s")
    async with market.client() as client:
        while True:
            statements = [await client.statement(i, period) for i in range(market.servers)]
            if all(statements):
                break
            if time.time() > gate + 180:
                raise TimeoutError(f"period {period} was not finished by every server")
            await asyncio.sleep(0.3)
    first = statements[0]
    assert first is not None
    public = json.loads(first.outcome)
    agree = len({(s.bidset_sha256, s.outcome) for s in statements if s}) == 1
    cleared_after = time.time() - gate
    progress(
        f"period {period}: {first.status}, {first.bid_count} bids agreed, "
        f"price {public.get('price')}, servers agree: {agree}"
    )
    if first.status != "cleared":
        return {"period": period, "status": first.status, "outcome": public, "servers_agree": agree}

    async def result(h: str) -> tuple[str, Fraction | None]:
        shares = await market.household(h, session).result(pseudonyms[h])
        if {s.status for s in shares} != {"cleared"}:
            return h, None
        (accepted_q,) = reconstruct([s.shares for s in shares])
        return h, traded_wh(accepted_q, bids[h].side is Side.BUY, public)

    traded = dict(await _gather_limited(32, [result(h) for h in sorted(bids)]))
    meters = [
        Meter(
            h,
            b.supplier,
            Fraction(b.quantity_wh, 1000) if b.side is Side.BUY else Fraction(0),
            Fraction(b.quantity_wh, 1000) if b.side is Side.SELL else Fraction(0),
        )
        for h, b in sorted(bids.items())
    ]
    trades = [MarketTrade(h, bids[h].side, wh / 1000) for h, wh in traded.items() if wh is not None]
    price = None if public.get("price") is None else Fraction(Decimal(public["price"]))
    settlement = settle(meters, dict.fromkeys(suppliers, TARIFF), trades, price)
    supplier_report = {}
    async with market.client() as client:
        from sealgrid.service.keys import load_signing_key

        for sid in suppliers:
            key = load_signing_key(market.root / "suppliers" / f"{sid}.key")
            shares = await client.outputs("supplier", sid, period, key)
            bought, sold = reconstruct([s.shares for s in shares])
            b, s_ = supplier_totals(bought, sold, public)
            account = next(a for a in settlement.suppliers if a.party == sid)
            supplier_report[sid] = {
                "bought_kwh": float(b / 1000),
                "sold_kwh": float(s_ / 1000),
                "with_market": float(account.with_market),
                "without_market": float(account.without_market),
                "difference": float(account.difference),
            }
    households_better = sum(1 for a in settlement.households if a.difference > 0)
    return {
        "period": period,
        "status": first.status,
        "price": public.get("price"),
        "volume_kwh": public.get("volume", 0) / 1000,
        "bids": first.bid_count,
        "excluded": sum(len(s.excluded) for s in statements if s),
        "invalid": public.get("invalid_bids", 0),
        "accepted": sum(1 for wh in traded.values() if wh),
        "servers_agree": agree,
        "results_after_gate_seconds": round(cleared_after, 2),
        "suppliers": supplier_report,
        "households_better_off": households_better,
        "household_difference_total": float(sum(a.difference for a in settlement.households)),
        "grid_operator_fees": float(settlement.grid_operator.with_market),
    }
