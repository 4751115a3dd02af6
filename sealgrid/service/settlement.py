"""A computation server's part of the running market's settlement and billing (SPEC §7).

Pure checks and builders, and the child process that runs the MPC: the asyncio server
(:mod:`sealgrid.service.server`) only does the I/O.

* :func:`check_enrolment` / :func:`check_reading`: the rules a household's enrolment and a
  meter's reading must meet before anything is stored (each refusal names its rule).
* :func:`inputs`: this server's :class:`~sealgrid.protocol.billing.SettleInput` for a period,
  from what it stored: the bid rows and ratios the clearing left, the credentials and the
  readings every server holds (the peers' :class:`~sealgrid.service.wire.SettlementSet`\\ s
  are intersected first, so every server settles the same claims).
* :func:`run`: the MPC party in a child process (``python -m sealgrid.protocol.billing``),
  like the clearing.
* :func:`output`: the statement, bill, DSO or TSO answer for one billing cycle, from the
  stored settlements: linear sums of shares, nothing opened (:mod:`sealgrid.service.bills`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np

from sealgrid.mechanism import billing as B
from sealgrid.mechanism.bids import Reason
from sealgrid.protocol import billing as PB
from sealgrid.protocol import field as F
from sealgrid.protocol.party import SEC_PARAM, session_args
from sealgrid.service import bills
from sealgrid.service.clearing import settle_session
from sealgrid.service.config import BillingConfig
from sealgrid.service.intake import Rejected
from sealgrid.service.keys import Registry, supplier_participant
from sealgrid.service.schedule import BillingCalendar
from sealgrid.service.storage import SettlementRecord
from sealgrid.service.wire import Enrolment, MeterReading, verify

log = logging.getLogger("sealgrid.settlement")

_U64 = np.dtype("<u8")


class SettlementFailed(Exception):
    """The settlement of a period ran but did not finish (a peer hung, crashed or refused)."""


def _field_bytes(data: bytes, count: int | None, what: str) -> Rejected | None:
    if len(data) % 8 or (count is not None and len(data) != 8 * count):
        return Rejected(Reason.MALFORMED, f"{what} must be {count} field elements")
    if np.any(np.frombuffer(data, dtype=_U64) >= np.uint64(F.MODULUS)):
        return Rejected(Reason.MALFORMED, f"{what} holds a value outside the field")
    return None


def check_enrolment(msg: Enrolment, registry: Registry, party: int) -> Rejected | None:
    """Whether a bidder's enrolment (a household's, or a supplier's as ``@ID``) may be stored
    (it may repeat the same share)."""
    key = registry.participant_keys().get(msg.household)
    if key is None or not verify(msg, key):
        return Rejected(Reason.BAD_SIGNATURE, "not signed by the registered bidder's key")
    if msg.server != party:
        return Rejected(Reason.MALFORMED, f"the enrolment is for server {msg.server}")
    return _field_bytes(msg.share, 1, "the credential share")


def check_reading(msg: MeterReading, registry: Registry, calendar: BillingCalendar,
                  layout: PB.ClaimLayout, party: int, now: dt.datetime) -> Rejected | None:
    """Whether a meter's reading may be stored: signed by the household's meter, for this
    server, after its period ended and before its deadline, the claim's length and field."""
    contract = registry.contracts.get(msg.household)
    if contract is None or not verify(msg, contract.meter_key):
        return Rejected(Reason.BAD_SIGNATURE, "not signed by the household's registered meter")
    if msg.server != party:
        return Rejected(Reason.MALFORMED, f"the reading is for server {msg.server}")
    try:
        start = calendar.schedule.parse_period(msg.period)
        deadline = calendar.reading_deadline(msg.period)
    except ValueError as exc:
        return Rejected(Reason.WRONG_PERIOD, str(exc))
    if now < start + calendar.period_length:
        return Rejected(Reason.TOO_EARLY, f"the period ends at {start + calendar.period_length}")
    if now >= deadline:
        return Rejected(Reason.LATE, f"readings of this period were due by {deadline}")
    return _field_bytes(msg.shares, layout.width, "the claim's shares")


def households(registry: Registry) -> list[str]:
    """The registered households in their index order (index h is position h − 1)."""
    return [registry.household_at(i) for i in range(1, len(registry.contracts) + 1)]


def participants(registry: Registry) -> list[str]:
    """Everyone settled: the households in index order, then the suppliers bidding as
    ``@ID`` (their own positions)."""
    return list(registry.participants())


def tariffs(registry: Registry, billing: BillingConfig, names: Sequence[str]) -> np.ndarray:
    """Each household's supplier's tariff in milli-units per kWh, shape (H, 3). A supplier's
    own row is zero: it has no meter, and its position is settled at the clearing price
    alone (without a reading, the settlement's money is ``(e − p)·bought + (p − f − r)·sold``,
    so ``p·(sold − bought)``)."""
    out = np.zeros((len(names), 3), dtype=np.int64)
    for i, h in enumerate(names):
        if h not in registry.contracts:
            continue
        t = B.MilliTariff.of(billing.tariffs[registry.contracts[h].supplier])
        out[i] = (t.retail, t.feed_in, t.network_fee)
    return out


def price_milli(price: str | None) -> int | None:
    """The clearing price of a public outcome in milli-units per kWh."""
    return None if price is None else B.milli(Fraction(price), "the clearing price")


def inputs(*, names: Sequence[str], tariff_rows: np.ndarray, layout: PB.ClaimLayout,
           rows: bytes | None, ratios: bytes | None, price: int | None,
           credentials: Mapping[str, bytes], readings: Mapping[str, bytes],
           enrolled: set[str], read: set[str]) -> PB.SettleInput:
    """This server's settlement inputs: only the credentials and readings every server holds
    (``enrolled``, ``read``: the intersections of every server's sets)."""
    index = {h: i for i, h in enumerate(names)}
    cred = np.zeros(len(names), dtype=F.U64)
    for h in enrolled & set(credentials):
        if h in index:
            cred[index[h]] = np.frombuffer(credentials[h], dtype=_U64)[0]
    claims = {index[h] + 1: np.frombuffer(readings[h], dtype=_U64).astype(F.U64)
              for h in sorted(read & set(readings)) if h in index}
    bid_rows = (np.frombuffer(rows, dtype=_U64).astype(F.U64).reshape(4, -1) if rows
                else np.zeros((4, 0), dtype=F.U64))
    ratio = (np.frombuffer(ratios, dtype=_U64).astype(F.U64) if ratios
             else np.zeros(2, dtype=F.U64))
    return PB.SettleInput(bid_rows, ratio, price if len(bid_rows[0]) else None, cred,
                          tariff_rows, claims, layout)


@dataclass(frozen=True)
class SettlementRequest:
    """One server's settlement of one period: its inputs, its MPyC peers and work place."""

    party: int
    peers: tuple[str, ...]
    period: str
    inputs: PB.SettleInput
    workdir: Path
    mpc_config: Path
    timeout: float


async def run(req: SettlementRequest) -> PB.SettleResult:
    """Run this server's settlement party in a child process; return its result.

    Raises:
        SettlementFailed: the party failed or ran past ``3 × req.timeout``.
    """
    if req.workdir.exists():
        shutil.rmtree(req.workdir)
    req.workdir.mkdir(parents=True)
    os.chmod(req.workdir, 0o700)
    shutil.copytree(req.mpc_config / ".config", req.workdir / ".config")
    PB.write_input(req.workdir, req.inputs)
    cmd = [
        sys.executable, "-m", "sealgrid.protocol.billing", "--data-dir", str(req.workdir),
        "--timeout", str(req.timeout), "-I", str(req.party),
        *(arg for peer in req.peers for arg in ("-P", peer)),
        *session_args(settle_session(req.period)),  # its links refuse another run's
        "--ssl", "-K", str(SEC_PARAM), "--log-level", "warning",
    ]  # fmt: skip
    with open(req.workdir / "party.log", "wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *cmd, cwd=req.workdir, stdout=out, stderr=out,
            env={**os.environ, "PYTHONHASHSEED": "0"})
        try:
            code = await asyncio.wait_for(proc.wait(), timeout=3 * req.timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise SettlementFailed(f"no settlement within {3 * req.timeout:.0f} s") from None
        except asyncio.CancelledError:
            proc.kill()
            await asyncio.shield(proc.wait())
            raise
    if code != 0:
        tail = (req.workdir / "party.log").read_text(errors="replace").strip().splitlines()
        raise SettlementFailed(f"the settlement process exited with {code}: {(tail or [''])[-1]}")
    try:
        result = PB.read_result(req.workdir)
    except (OSError, ValueError, KeyError) as exc:
        raise SettlementFailed(f"unreadable settlement result: {exc}") from exc
    shutil.rmtree(req.workdir, ignore_errors=True)  # the inputs held every claim's shares
    return result


# --- billing outputs: sums of stored shares --------------------------------------------------


def _lines(record: SettlementRecord) -> np.ndarray:
    return np.frombuffer(record.lines, dtype=_U64).astype(F.U64).reshape(
        len(record.households), len(PB.LINE_COLUMNS))


def status(calendar: BillingCalendar, cycle: str, now: dt.datetime,
           unsettled: Sequence[str]) -> str:
    """``billed`` once the cycle's billing time has passed and none of its periods waits."""
    return bills.BILLED if now >= calendar.billing_time(cycle) and not unsettled else bills.PENDING


def _totals(records: Sequence[SettlementRecord], names: Sequence[str]) -> np.ndarray:
    """Shares of each household's cycle totals (H × 6), households in ``names`` order."""
    index = {h: i for i, h in enumerate(names)}
    total = np.zeros((len(names), len(PB.LINE_COLUMNS)), dtype=F.U64)
    for record in records:
        lines = _lines(record)
        rows = [index.get(h, -1) for h in record.households]
        keep = np.array([r >= 0 for r in rows], dtype=bool)
        if keep.any():
            target = np.array([r for r in rows if r >= 0])
            total[target] = F.add(total[target], lines[keep])
    return total


def _u64(values: np.ndarray) -> bytes:
    return np.ascontiguousarray(values, dtype=_U64).tobytes()


def statement(records: Sequence[SettlementRecord], household: str, state: str
              ) -> tuple[bytes, str]:
    """A household's statement: its line of every settled period of the cycle."""
    periods, lines = [], []
    for record in records:
        if household not in record.households:
            continue
        i = record.households.index(household)
        lines.append(_lines(record)[i])
        periods.append({"period": record.period, "status": record.status[i],
                        "price": None if record.price is None
                        else f"{Decimal(record.price) / B.PRICE_SCALE:f}"})
    shares = _u64(np.concatenate(lines)) if lines else b""
    return shares, bills.public_text({"status": state, "periods": periods})


def bill(records: Sequence[SettlementRecord], registry: Registry, billing: BillingConfig,
         supplier: str, state: str) -> tuple[bytes, str]:
    """A supplier's bill: per customer its cycle's money with and without the market, then
    bought, sold, import, export and the network fees (fee × (import + export)), then its
    own position on the market: bought, sold and its money (``p·(sold − bought)``)."""
    names = households(registry)
    customers = [h for h in names if registry.contracts[h].supplier == supplier]
    total = _totals(records, customers)
    own = _totals(records, [supplier_participant(supplier)])[0]
    cols = {c: i for i, c in enumerate(PB.LINE_COLUMNS)}
    per_customer = total[:, [cols["money_with"], cols["money_without"]]].reshape(-1)
    group = bills_sum(total)
    fee = B.MilliTariff.of(billing.tariffs[supplier]).network_fee
    fees = F.mul_small(F.add(group[cols["import_wh"]:cols["import_wh"] + 1],
                             group[cols["export_wh"]:cols["export_wh"] + 1]), fee)
    tail = np.concatenate([group[[cols["bought_wh"], cols["sold_wh"], cols["import_wh"],
                                  cols["export_wh"]]], fees,
                           own[[cols["bought_wh"], cols["sold_wh"], cols["money_with"]]]])
    return _u64(np.concatenate([per_customer, tail])), bills.public_text(
        {"status": state, "customers": customers})


def supplier_period(records: Sequence[SettlementRecord], registry: Registry, supplier: str
                    ) -> tuple[bytes, str]:
    """A supplier's customers' settled bought and sold of one period, by contract
    (``records``: that period's settlement, or none yet); no import or export (a supplier
    learns no per-period reading)."""
    if not records:
        return b"", bills.public_text({"status": bills.PENDING})
    customers = [h for h in households(registry) if registry.contracts[h].supplier == supplier]
    group = bills_sum(_totals(records, customers))
    cols = [PB.LINE_COLUMNS.index(c) for c in bills.SUPPLIER_PERIOD]
    return _u64(group[cols]), bills.public_text({"status": bills.SETTLED})


def bills_sum(total: np.ndarray) -> np.ndarray:
    """Shares of the column sums of ``total`` (one group)."""
    if not len(total):
        return np.zeros(total.shape[1], dtype=F.U64)
    return PB.group_totals(total, np.zeros(len(total), dtype=np.int64), 1)[0]


def region_pairs(records: Sequence[SettlementRecord], registry: Registry, region: str
                 ) -> tuple[list[str], np.ndarray]:
    """Per supplier with customers in ``region``: shares of their import and export."""
    names = [h for h in households(registry) if registry.contracts[h].region == region]
    suppliers = sorted({registry.contracts[h].supplier for h in names})
    total = _totals(records, names)
    cols = [PB.LINE_COLUMNS.index("import_wh"), PB.LINE_COLUMNS.index("export_wh")]
    group = np.array([suppliers.index(registry.contracts[h].supplier) for h in names],
                     dtype=np.int64)
    sums = (PB.group_totals(total[:, cols], group, len(suppliers)) if names
            else np.zeros((0, 2), dtype=F.U64))
    return suppliers, sums


def dso(records: Sequence[SettlementRecord], registry: Registry, region: str,
        state: str) -> tuple[bytes, str]:
    """A region's DSO: import and export per supplier in the region."""
    suppliers, sums = region_pairs(records, registry, region)
    return _u64(sums.reshape(-1)), bills.public_text({"status": state, "suppliers": suppliers})


def tso(records: Sequence[SettlementRecord], registry: Registry, state: str
        ) -> tuple[bytes, str]:
    """The TSO: import and export per region."""
    regions = list(registry.regions)
    rows = []
    for region in regions:
        _, sums = region_pairs(records, registry, region)
        rows.append(bills_sum(sums) if len(sums) else np.zeros(2, dtype=F.U64))
    data = np.concatenate(rows) if rows else np.zeros(0, dtype=F.U64)
    return _u64(data), bills.public_text({"status": state, "regions": regions})


def digest(data: bytes) -> bytes:
    """SHA-256, as receipts carry it."""
    return hashlib.sha256(data).digest()
