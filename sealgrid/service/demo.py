"""The whole market on this machine, end to end; assumes free loopback ports and two cores.

Three servers (child processes, TLS, SQLite), ``N`` households with seeded demo bids, ``K``
periods: every household's agent (:mod:`sealgrid.service.agent`) bids under a fresh pseudonym
per period, the servers agree and clear under MPC at gate closure, every household fetches
and rebuilds its own result, every supplier its totals, and the settlement (docs/mechanism.md)
is computed with meters that read exactly the bid quantities. The settlement needs every
household's own result, so this is the one place that gathers them: the demo plays all
households at once; no server ever sees them.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

from sealgrid.mechanism.bids import Bid, Side, check_bid
from sealgrid.mechanism.market import Market
from sealgrid.mechanism.settlement import MarketTrade, Meter, Tariff, settle
from sealgrid.service import wire
from sealgrid.service.agent import HouseholdAgent, outcome_of, read_totals
from sealgrid.service.client import BidOutcome
from sealgrid.service.keys import DEFAULT_OPERATOR, load_signing_key
from sealgrid.service.local import LocalMarket
from sealgrid.service.schedule import Schedule, utc_now
from sealgrid.service.wire import Outcome

T = TypeVar("T")

#: Demo tariffs, cents per kWh: retail (fee included), feed-in, network fee.
TARIFF = Tariff(Fraction(120), Fraction(80), Fraction(5))

Progress = Callable[[str], None]


def demo_bid(hid: str, supplier: str, period_index: int, seed: int, market: Market) -> Bid:
    """Return household ``hid``'s seeded demo bid for one period (about half buy, half sell)."""
    rng = random.Random(f"{seed}/{hid}/{period_index}")
    side = Side.BUY if rng.random() < 0.5 else Side.SELL
    kwh = Decimal(rng.randrange(100, min(5000, market.max_quantity_wh) + 1)) / 1000
    levels = market.levels
    low, high = (levels // 4, levels - 1) if side is Side.BUY else (0, 3 * levels // 4)
    price = market.grid.price(rng.randrange(low, high + 1))
    bid, errors = check_bid(market, hid, side.value, kwh, price, supplier)
    if bid is None:
        raise ValueError(f"the demo bid of {hid} breaks the market's rules: {errors}")
    return bid


async def gather_limited(limit: int, coros: Iterable[Awaitable[T]]) -> list[T]:
    """Await ``coros`` with at most ``limit`` running at once; results in order."""
    gate = asyncio.Semaphore(limit)

    async def one(c: Awaitable[T]) -> T:
        async with gate:
            return await c

    return list(await asyncio.gather(*(one(c) for c in coros)))


def next_period(schedule: Schedule, lead: float, after: str | None = None) -> str:
    """The first open period whose gate closes at least ``lead`` seconds from now (and that
    comes after the period ``after``, when given)."""
    now = utc_now()
    start = schedule.first_open(now)
    while (schedule.gate_closure(start) - now).total_seconds() < lead or (
        after is not None and schedule.period_id(start) <= after
    ):
        start += schedule.length
    return schedule.period_id(start)


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
    with LocalMarket(root, households=households, period_seconds=period_seconds) as local:
        progress(f"data directory {local.root}; starting {local.servers} servers …")
        await local.wait_ready()
        async with local.client() as client:
            read = await client.market()
        market = read[1]
        session = local.session()
        try:
            agents = {h: local.agent(h, session, read) for h in sorted(local.registry.households)}
            chosen: list[str] = []
            all_bids: list[dict[str, Bid]] = []
            for j in range(periods):
                period = next_period(
                    local.schedule, 3.0 + len(agents) / 40, chosen[-1] if chosen else None
                )
                bids = {
                    h: demo_bid(h, a.supplier, j, seed, market) for h, a in agents.items()
                }
                await _bid_all(agents, bids, period, f"period {j + 1}/{periods}", progress)
                chosen.append(period)
                all_bids.append(bids)
            report = [
                await _finish(local, agents, period, bids, market, progress)
                for period, bids in zip(chosen, all_bids, strict=True)
            ]
        finally:
            await session.close()
    return {
        "data_dir": str(local.root),
        "households": households,
        "period_seconds": period_seconds,
        "periods": report,
        "wall_seconds": round(time.monotonic() - started, 2),
    }


async def _bid_all(
    agents: dict[str, HouseholdAgent],
    bids: dict[str, Bid],
    period: str,
    label: str,
    progress: Progress,
) -> None:
    done = 0

    async def one(h: str) -> BidOutcome:
        nonlocal done
        outcome = await agents[h].bid(bids[h], period)
        done += 1
        if done % max(1, len(agents) // 4) == 0:
            progress(f"{label} {period}: {done}/{len(agents)} bids sent")
        return outcome

    outcomes = await gather_limited(32, (one(h) for h in agents))
    refused = [o for o in outcomes if not o.complete]
    if refused:
        reasons = sorted({str(r.reason.value) for o in refused for r in o.refusals.values()})
        progress(f"  {len(refused)} bids refused by some server: {', '.join(reasons)}")


async def _finish(
    local: LocalMarket,
    agents: dict[str, HouseholdAgent],
    period: str,
    bids: dict[str, Bid],
    market: Market,
    progress: Progress,
) -> dict[str, Any]:
    gate = local.schedule.gate_closure(local.schedule.parse_period(period)).timestamp()
    wait = gate - time.time()
    if wait > 0:
        progress(f"period {period}: gate closes in {wait:.1f} s")
        await asyncio.sleep(wait)
    async with local.client() as client:
        statements = await client.wait_statements(period, timeout=180, poll=0.3)
    if not all(statements):
        raise TimeoutError(f"period {period} was not finished by every server")
    first = statements[0]
    assert first is not None
    public = outcome_of(first.outcome)
    assert public is not None
    agree = len({(s.bidset_sha256, s.outcome) for s in statements if s}) == 1
    cleared_after = time.time() - gate
    progress(
        f"period {period}: {first.status}, {first.bid_count} bids agreed, "
        f"price {public.price}, servers agree: {agree}"
    )
    if first.status != "cleared":
        return {
            "period": period, "status": first.status, "outcome": _plain(public),
            "servers_agree": agree,
        }  # fmt: skip

    results = await gather_limited(32, (agents[h].result(period) for h in sorted(bids)))
    traded = {h: r.traded_wh for h, r in zip(sorted(bids), results, strict=True)}
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
    price = None if public.price is None else Fraction(Decimal(public.price))
    settlement = settle(meters, dict.fromkeys(market.suppliers, TARIFF), trades, price)
    supplier_report = {}
    async with local.client() as client:
        dso = load_signing_key(local.root / "operators" / f"{DEFAULT_OPERATOR}.key")
        volume = (await read_totals(client, "operator", DEFAULT_OPERATOR, period, dso)).bought_wh
        for sid in market.suppliers:
            key = load_signing_key(local.root / "suppliers" / f"{sid}.key")
            totals = await read_totals(client, "supplier", sid, period, key)
            account = next(a for a in settlement.suppliers if a.party == sid)
            supplier_report[sid] = {
                "bought_kwh": float((totals.bought_wh or 0) / 1000),
                "sold_kwh": float((totals.sold_wh or 0) / 1000),
                "with_market": float(account.with_market),
                "without_market": float(account.without_market),
                "difference": float(account.difference),
            }
    households_better = sum(1 for a in settlement.households if a.difference > 0)
    return {
        "period": period,
        "status": first.status,
        "price": public.price,
        "volume_kwh": float((volume or 0) / 1000),  # as the grid operator reads it
        "bids": first.bid_count,
        "excluded": sum(len(s.excluded) for s in statements if s),
        "invalid": public.invalid_bids,
        "accepted": sum(1 for wh in traded.values() if wh),
        "servers_agree": agree,
        "results_after_gate_seconds": round(cleared_after, 2),
        "suppliers": supplier_report,
        "households_better_off": households_better,
        "household_difference_total": float(sum(a.difference for a in settlement.households)),
        "grid_operator_fees": float(settlement.grid_operator.with_market),
    }


def _plain(outcome: Outcome) -> dict[str, Any]:
    return {k: v for k, v in wire.to_dict(outcome).items() if k not in ("type", "v")}
