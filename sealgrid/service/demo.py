"""The whole market on this machine, end to end; assumes free loopback ports and two cores.

Three servers (child processes, TLS, SQLite), ``N`` households with seeded demo bids, ``K``
periods: every household's agent (:mod:`sealgrid.service.agent`) bids under a fresh pseudonym
per period, the servers agree and clear under MPC at gate closure, every household fetches
and rebuilds its own result, every supplier its totals. Then every household's smart meter
sends its reading (the bid's quantity with a seeded deviation either way), the servers settle
each household privately after the reading deadline, and each supplier reads its own bill:
one total per customer, with and without the market (a billing cycle is one period here, so
that every period is billed). The settlement figures come from the suppliers' bills and the
grid operators' totals only; nothing is gathered from the households.

The data directory holds every party's private keys, unencrypted: :class:`DemoData` removes
what the demo made of it when the demo ends (also on an error or Ctrl-C), unless asked to
keep it, and never removes what was there before.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from sealgrid.mechanism.bids import Bid, Side, check_bid
from sealgrid.mechanism.market import Market
from sealgrid.mechanism.settlement import Tariff
from sealgrid.mechanism.units import UNITS
from sealgrid.service import bills, wire
from sealgrid.service.agent import (
    HouseholdAgent,
    NotYetSettled,
    outcome_of,
    read_billing,
    read_totals,
)
from sealgrid.service.client import BidOutcome
from sealgrid.service.keys import (
    DEFAULT_OPERATOR,
    TSO_ID,
    load_signing_key,
    private_key_path,
)
from sealgrid.service.local import LocalMarket
from sealgrid.service.schedule import BillingCalendar, Schedule, utc_now
from sealgrid.service.wire import Outcome

T = TypeVar("T")

#: Demo tariffs, cents per kWh: retail (fee included), feed-in, network fee (the defaults
#: of ``sealgrid init``, which the servers bill with).
TARIFF = Tariff(Fraction(120), Fraction(80), Fraction(5))
#: Readings are due one period after their period ends.
GRACE = 1

Progress = Callable[[str], None]


class DemoData:
    """The demo's data directory, and its removal at the end; a context manager that gives
    the directory to run the demo in.

    Without ``given``, a fresh temporary directory (``sealgrid-demo-…/data``). With
    ``given``, that directory: made by the demo if it did not exist, else used as it is (the
    demo refuses one that holds a registry). On leaving, unless ``keep``: what the demo made
    is removed — the temporary directory, or ``given`` if the demo made it (and the empty
    parents it made for it), or else only the entries the demo added to ``given``; what was
    there before is never touched. :attr:`outcome` then says which.
    """

    def __init__(self, given: Path | None = None, *, keep: bool = False) -> None:
        self.keep = keep
        self._given = None if given is None else Path(given).absolute()
        self._made: list[Path] = []  # directories the demo made, outermost first
        self._before: set[str] | None = None  # the entries of a given directory that existed
        self.root = self._given or Path()
        self.outcome = ""

    def __enter__(self) -> Path:
        if self._given is None:
            made = Path(tempfile.mkdtemp(prefix="sealgrid-demo-"))
            self._made = [made]
            self.root = made / "data"
            return self.root
        self.root = self._given
        if self._given.is_dir():
            self._before = set(os.listdir(self._given))
        else:  # made by the demo (init), with any parents missing
            self._made = [p for p in (*reversed(self._given.parents), self._given)
                          if not p.exists()]
        return self.root

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.finish()

    def finish(self) -> str:
        """Remove what the demo made (unless :attr:`keep`); return and keep in
        :attr:`outcome` one line saying what was removed or where the data is."""
        if self.keep:
            self.outcome = (f"data directory kept: {self.root} (keys, databases, server logs;"
                            " the private keys are not encrypted: delete it when done)")
        elif self._before is not None:
            added = sorted(set(os.listdir(self.root)) - self._before) if self.root.is_dir() else []
            for name in added:
                _remove(self.root / name)
            self.outcome = "" if not added else (
                f"removed what the demo made in {self.root} ({', '.join(added)}); the directory"
                " existed before and stays (--keep keeps it all)")
        elif self._made:
            made = self._made[0].exists()  # not when the demo failed before making it
            if self._given is None:
                _remove(self._made[0])  # the temporary directory, whole
            else:
                _remove(self._given)
                for parent in reversed(self._made[:-1]):  # those made for it, if empty
                    with contextlib.suppress(OSError):
                        parent.rmdir()
            self.outcome = "" if not made else (
                f"data directory removed: {self.root} (keys, databases, server logs; --keep"
                " keeps it)")
        return self.outcome


def _remove(path: Path) -> None:
    """Remove a file or a whole directory tree, if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):  # never made
            path.unlink()


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


def demo_reading(bid: Bid, seed: int, period_index: int) -> tuple[int, int]:
    """Household ``bid.bidder``'s seeded meter reading (import, export in Wh): its bid's
    quantity on its side, off by up to a fifth either way."""
    rng = random.Random(f"{seed}/{bid.bidder}/{period_index}/meter")
    wh = max(0, round(bid.quantity_wh * (1 + (rng.random() - 0.5) * 0.4)))
    return (wh, 0) if bid.side is Side.BUY else (0, wh)


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
    with LocalMarket(root, households=households, period_seconds=period_seconds,
                     cycle_periods=1, reading_grace_periods=GRACE) as local:
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
            for j, (period, bids) in enumerate(zip(chosen, all_bids, strict=True)):
                await _read_meters(local, agents, period, bids, seed, j, progress)
            for entry in report:
                if entry["status"] == "cleared":
                    billed = await _bills(local, entry["period"], entry["price"], market,
                                          progress)
                    for sid, money in billed.pop("bills").items():
                        entry["suppliers"][sid].update(money)
                    entry.update(billed)
        finally:
            await session.close()
    return {
        "units": dict(UNITS),
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
    supplier_report = {}
    async with local.client() as client:
        dso = load_signing_key(local.root / "operators" / f"{DEFAULT_OPERATOR}.key")
        volume = (await read_totals(client, "operator", DEFAULT_OPERATOR, period, dso)).bought_wh
        for sid in market.suppliers:
            key = load_signing_key(local.root / "suppliers" / f"{sid}.key")
            totals = await read_totals(client, "supplier", sid, period, key)
            supplier_report[sid] = {
                "bought_kwh": float((totals.bought_wh or 0) / 1000),
                "sold_kwh": float((totals.sold_wh or 0) / 1000),
            }
    return {
        "period": period,
        "status": first.status,
        "price": public.price,
        "price_ct_per_kwh": public.price,
        "volume_kwh": float((volume or 0) / 1000),  # as the grid operator reads it
        "bids": first.bid_count,
        "excluded": sum(len(s.excluded) for s in statements if s),
        "invalid": public.invalid_bids,
        "accepted": sum(1 for wh in traded.values() if wh),
        "servers_agree": agree,
        "results_after_gate_seconds": round(cleared_after, 2),
        "suppliers": supplier_report,
    }


async def _read_meters(
    local: LocalMarket, agents: dict[str, HouseholdAgent], period: str, bids: dict[str, Bid],
    seed: int, index: int, progress: Progress,
) -> None:
    """Every household's meter sends its reading of ``period`` once the period has ended."""
    end = (local.schedule.parse_period(period) + local.schedule.length).timestamp()
    if end > time.time():
        await asyncio.sleep(end - time.time())
    readings = {h: demo_reading(bids[h], seed, index) for h in bids}

    async def one(h: str) -> bool:
        async with agents[h].client:
            got = await agents[h].read_meter(period, *readings[h])
        return not got.refusals

    sent = await gather_limited(16, (one(h) for h in sorted(bids)))
    progress(f"period {period}: {sum(sent)}/{len(sent)} meter readings taken by every server")


async def _bills(
    local: LocalMarket, period: str, public_price: str | None, market: Market,
    progress: Progress,
) -> dict[str, Any]:
    """The period's bills (its own billing cycle) as each supplier reads its own, and the
    grid operators' totals: the money with and without the market per supplier."""
    calendar = BillingCalendar(local.schedule.period_seconds, 1, GRACE)
    wait = calendar.billing_time(period).timestamp() - time.time()
    if wait > 0:
        await asyncio.sleep(wait)
    price = Fraction(Decimal(public_price)) if public_price is not None else Fraction(0)
    report: dict[str, Any] = {}
    better = 0
    total_difference = Fraction(0)
    fees = Fraction(0)
    deadline = time.monotonic() + 180
    async with local.client() as client:
        for sid in market.suppliers:
            key = load_signing_key(private_key_path(local.root, "supplier", sid))
            while True:
                try:
                    doc = bills.bill_doc(sid, period, await read_billing(client, "bill", sid,
                                                                         period, key))
                except NotYetSettled:
                    doc = {"status": bills.PENDING}
                if doc["status"] == bills.BILLED or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            if doc["status"] != bills.BILLED:
                raise TimeoutError(f"the bill of {sid} for {period} was not ready in time")
            paid = sum(Fraction(str(c["amount"])) for c in doc["customers"])
            paid_without = sum(Fraction(str(c["amount_without_market"]))
                               for c in doc["customers"])
            better += sum(1 for c in doc["customers"]
                          if c["amount"] < c["amount_without_market"])
            total_difference += paid_without - paid
            fee = Fraction(str(doc["network_fees"]))
            fees += fee
            flow = price * (Fraction(str(doc["sold_kwh"])) - Fraction(str(doc["bought_kwh"])))
            with_market = paid - fee + flow
            without = paid_without - fee
            report[sid] = {"with_market": float(with_market), "without_market": float(without),
                           "difference": float(with_market - without),
                           "billed_customers": len(doc["customers"])}
        tso = load_signing_key(private_key_path(local.root, "tso", TSO_ID))
        regions = bills.tso_doc(period, await read_billing(client, "tso", TSO_ID, period, tso))
    progress(f"period {period}: billed; {better} households better off with the market")
    return {
        "bills": report,
        "households_better_off": better,
        "household_difference_total": float(total_difference),
        "grid_operator_fees": float(fees),
        "regions": regions["regions"],
    }


def _plain(outcome: Outcome) -> dict[str, Any]:
    return {k: v for k, v in wire.to_dict(outcome).items() if k not in ("type", "v")}
