"""What a billing output holds, written once for the servers that build it and the parties that
read it: household statements, supplier bills, DSO and TSO totals per billing cycle.

Every output is an :class:`~sealgrid.service.wire.OutputShares` whose ``shares`` are this
server's shares (little-endian u64 field elements) of the integers below, and whose ``public``
is a JSON text every server writes identically (the reader checks they agree, then rebuilds
the integers from all servers' shares). Energy in Wh, money in micro-units of the price unit
(:data:`sealgrid.mechanism.billing.MONEY_SCALE`), positive when the household receives it.

* ``statement`` (a household, by its name; signed with its key): per settled period of the
  cycle (``public["periods"]``, each with the period's ``status`` for this household and its
  ``price``), the six values of :data:`~sealgrid.protocol.billing.LINE_COLUMNS`.
* ``bill`` (a supplier): per customer (``public["customers"]``, sorted) its cycle's money with
  and without the market; then the supplier's totals: bought, sold, import, export (Wh) and
  the network fees it owes (micro-units); then its own position when it bid in the market
  itself: bought, sold (Wh) and its money at the clearing prices (micro-units).
* ``dso`` (a region's DSO): per supplier with customers in the region
  (``public["suppliers"]``) its customers' import and export (Wh).
* ``tso``: per region (``public["regions"]``) its import and export (Wh).
* ``supplier_period`` (a supplier; ``period`` is one trading period, not a cycle): once the
  period is settled, its customers' settled bought and sold (Wh), counted by contract from
  the named side of the settlement — whatever supplier a bid named. No import or export: a
  supplier learns no per-period reading of its customers (SPEC §6).

``public["status"]`` is ``settled`` or ``pending`` for ``supplier_period``; for the others it
is ``billed`` once the cycle's billing time has passed and every period
of it is settled, ``pending`` before.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sealgrid.mechanism import billing as B
from sealgrid.mechanism.units import UNITS

BILLED = "billed"
PENDING = "pending"
SETTLED = "settled"
ROLES = ("statement", "bill", "dso", "tso", "supplier_period")
#: Values of a ``supplier_period`` output.
SUPPLIER_PERIOD = ("bought_wh", "sold_wh")
#: Values per customer in a bill, then the supplier's totals.
BILL_CUSTOMER = ("money_with", "money_without")
BILL_TOTALS = ("bought_wh", "sold_wh", "import_wh", "export_wh", "network_fees",
               "own_bought_wh", "own_sold_wh", "own_money")
PAIR = ("import_wh", "export_wh")
LINE = ("bought_wh", "sold_wh", "import_wh", "export_wh", "money_with", "money_without")


def public_text(doc: dict[str, Any]) -> str:
    """The canonical JSON text of an output's public part (identical on every server)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def _kwh(wh: int) -> float:
    return float(B.kwh(wh))


def _money(micro: int) -> float:
    """Money in the price unit, exactly to 0.01 for display (half-even)."""
    return float((Decimal(micro) / B.MONEY_SCALE).quantize(B.BILL_QUANTUM))


def _chunks(values: Sequence[int], size: int) -> list[list[int]]:
    if size < 1 or len(values) % size:
        raise ValueError("the rebuilt output has the wrong length")
    return [list(values[i:i + size]) for i in range(0, len(values), size)]


@dataclass(frozen=True)
class Rebuilt:
    """An output rebuilt from every server: its public part and its integers (signed)."""

    public: dict[str, Any]
    values: list[int]


def statement_doc(household: str, cycle: str, out: Rebuilt) -> dict[str, Any]:
    """``sealgrid household statement --json``."""
    periods = out.public.get("periods", [])
    rows = _chunks(out.values, len(LINE)) if periods else []
    if len(rows) != len(periods):
        raise ValueError("the statement's periods and values differ")
    lines = []
    total_with = total_without = 0
    for info, row in zip(periods, rows, strict=True):
        line = dict(zip(LINE, row, strict=True))
        total_with += line["money_with"]
        total_without += line["money_without"]
        lines.append({
            "period": info["period"], "status": info["status"], "price": info["price"],
            "price_ct_per_kwh": info["price"],
            "traded_kwh": _kwh(line["bought_wh"] + line["sold_wh"]),
            "bought_kwh": _kwh(line["bought_wh"]), "sold_kwh": _kwh(line["sold_wh"]),
            "import_kwh": _kwh(line["import_wh"]), "export_kwh": _kwh(line["export_wh"]),
            "money": _money(line["money_with"]),
            "money_without_market": _money(line["money_without"]),
        })
    return {"units": dict(UNITS), "household": household, "cycle": cycle,
            "status": out.public.get("status"),
            "amount": float(B.amount(total_with)),
            "amount_without_market": float(B.amount(total_without)), "periods": lines}


def bill_doc(supplier: str, cycle: str, out: Rebuilt) -> dict[str, Any]:
    """``sealgrid bills --json``: what each customer pays over the cycle, the supplier's own
    positions on the market and the network fees it owes."""
    customers = out.public.get("customers", [])
    k = len(BILL_CUSTOMER)
    if len(out.values) != k * len(customers) + len(BILL_TOTALS):
        raise ValueError("the bill's customers and values differ")
    rows = _chunks(out.values[:k * len(customers)], k) if customers else []
    totals = dict(zip(BILL_TOTALS, out.values[k * len(customers):], strict=True))
    return {
        "units": dict(UNITS), "supplier": supplier, "cycle": cycle,
        "status": out.public.get("status"),
        "customers": [{"household": h, "amount": float(B.amount(row[0])),
                       "amount_without_market": float(B.amount(row[1]))}
                      for h, row in zip(customers, rows, strict=True)],
        "bought_kwh": _kwh(totals["bought_wh"]), "sold_kwh": _kwh(totals["sold_wh"]),
        "import_kwh": _kwh(totals["import_wh"]), "export_kwh": _kwh(totals["export_wh"]),
        "network_fees": _money(totals["network_fees"]),
        "own_bought_kwh": _kwh(totals["own_bought_wh"]),
        "own_sold_kwh": _kwh(totals["own_sold_wh"]),
        "own_position": _money(totals["own_money"]),
    }


def dso_doc(region: str, cycle: str, out: Rebuilt) -> dict[str, Any]:
    """``sealgrid aggregates --role dso --json``."""
    names = out.public.get("suppliers", [])
    rows = _chunks(out.values, 2) if names else []
    if len(rows) != len(names):
        raise ValueError("the region's suppliers and values differ")
    return {"units": dict(UNITS), "region": region, "cycle": cycle,
            "status": out.public.get("status"),
            "suppliers": [{"supplier": s, "import_kwh": _kwh(r[0]), "export_kwh": _kwh(r[1])}
                          for s, r in zip(names, rows, strict=True)]}


def tso_doc(cycle: str, out: Rebuilt) -> dict[str, Any]:
    """``sealgrid aggregates --role tso --json``."""
    names = out.public.get("regions", [])
    rows = _chunks(out.values, 2) if names else []
    if len(rows) != len(names):
        raise ValueError("the regions and values differ")
    return {"units": dict(UNITS), "cycle": cycle, "status": out.public.get("status"),
            "regions": [{"region": s, "import_kwh": _kwh(r[0]), "export_kwh": _kwh(r[1])}
                        for s, r in zip(names, rows, strict=True)]}


def supplier_period_doc(out: Rebuilt) -> dict[str, Any]:
    """The ``settled`` part of ``sealgrid aggregates --role supplier --settled``: a period's
    totals of the supplier's customers by contract, once the period is settled."""
    doc: dict[str, Any] = {"status": out.public.get("status")}
    if out.public.get("status") == SETTLED:
        if len(out.values) != len(SUPPLIER_PERIOD):
            raise ValueError("the settled totals have the wrong length")
        doc.update({k.replace("_wh", "_kwh"): _kwh(v)
                    for k, v in zip(SUPPLIER_PERIOD, out.values, strict=True)})
    return doc
