"""Bids and offers, and the closed set of reasons to refuse one. Pure, no I/O.

A bid is held in integers: quantity in Wh, price as a level on the market's
:class:`~sealgrid.mechanism.grid.PriceGrid`. Every refusal names one :class:`Reason`;
its message tells the household what to change and never repeats a value of the bid.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np

from sealgrid.mechanism.grid import kwh_to_wh_exact, parse_decimal
from sealgrid.mechanism.market import DEFAULT_MAX_QUANTITY_WH, Market

__all__ = ["DEFAULT_MAX_QUANTITY_WH", "Bid", "BidRejected", "Market", "MarketRules", "OrderBook",
           "Reason", "Side", "check_bid", "duplicate_bidders"]


class Side(enum.Enum):
    """Which side of the market a bid is on."""

    BUY = "buy"
    SELL = "sell"


class Reason(enum.Enum):
    """Why a bid was refused: the closed set, shared by the CLI, the servers and the protocols."""

    MALFORMED = "malformed"
    UNKNOWN_SIDE = "unknown_side"
    QUANTITY_NOT_POSITIVE = "quantity_not_positive"
    QUANTITY_TOO_LARGE = "quantity_too_large"
    QUANTITY_NOT_WHOLE_WH = "quantity_not_whole_wh"
    PRICE_BELOW_FLOOR = "price_below_floor"
    PRICE_ABOVE_CEILING = "price_above_ceiling"
    PRICE_OFF_GRID = "price_off_grid"
    UNKNOWN_SUPPLIER = "unknown_supplier"
    DUPLICATE_PSEUDONYM = "duplicate_pseudonym"
    WRONG_PERIOD = "wrong_period"
    LATE = "late"
    TOO_FREQUENT = "too_frequent"
    REPLAYED = "replayed"
    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad_signature"
    INVALID_SHARES = "invalid_shares"
    # meter readings and enrolment (the running market's settlement)
    TOO_EARLY = "too_early"
    DUPLICATE_READING = "duplicate_reading"
    READING_OUT_OF_RANGE = "reading_out_of_range"
    ALREADY_ENROLLED = "already_enrolled"
    NOT_ENROLLED = "not_enrolled"


_ADVICE: dict[Reason, str] = {
    Reason.MALFORMED: "a field or the message is missing, not a number or not in its format",
    Reason.UNKNOWN_SIDE: "side must be 'buy' or 'sell'",
    Reason.QUANTITY_NOT_POSITIVE: "quantity must be greater than zero",
    Reason.QUANTITY_TOO_LARGE: "quantity is above the market's per-bid maximum",
    Reason.QUANTITY_NOT_WHOLE_WH: "quantity must be whole Wh (at most 3 decimals in kWh)",
    Reason.PRICE_BELOW_FLOOR: "price is below the market's floor price",
    Reason.PRICE_ABOVE_CEILING: "price is above the market's ceiling price",
    Reason.PRICE_OFF_GRID: "price is not on the price grid (the floor plus whole ticks)",
    Reason.UNKNOWN_SUPPLIER: "supplier is not one of the market's registered suppliers",
    Reason.DUPLICATE_PSEUDONYM: "this pseudonym already has a bid in the period; use a fresh one",
    Reason.WRONG_PERIOD: "the request names a period this market does not take it for (not a "
    "period's start, out of range, or not open)",
    Reason.LATE: "the bid arrived after gate closure for its trading period",
    Reason.TOO_FREQUENT: "over a limit on requests: the rate limit per household, or one "
    "pseudonym per household and period (the detail says which and what to do)",
    Reason.REPLAYED: "this exact message was already received, or its challenge is unknown, "
    "used or expired; an accepted bid needs nothing more, another request a fresh challenge",
    Reason.UNSIGNED: "the message carries no signature or no token; sign it before sending",
    Reason.BAD_SIGNATURE: "a signature or token does not verify with the key it must be made "
    "with (the detail names the key)",
    Reason.INVALID_SHARES: "the secret shares do not form a valid encoding of one bid",
    Reason.TOO_EARLY: "a meter reading is taken only after its period has ended",
    Reason.DUPLICATE_READING: "this household's meter already sent a reading for the period",
    Reason.READING_OUT_OF_RANGE: "import and export must be whole Wh from 0 to the maximum",
    Reason.ALREADY_ENROLLED: "this household enrolled another credential with this server",
    Reason.NOT_ENROLLED: "the household has not enrolled its credential with this server",
}


class BidRejected(Exception):
    """A bid broke one market rule. ``reason`` names the rule; the message says what to do."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        text = _ADVICE[reason] + (f" ({detail})" if detail else "")
        super().__init__(f"{reason.value}: {text}")


#: The rules a bid is checked against are the market's (kept under this name for callers).
MarketRules = Market


@dataclass(frozen=True)
class Bid:
    """One valid bid (buy) or offer (sell), in integer units."""

    bidder: str
    side: Side
    quantity_wh: int
    level: int
    supplier: str


def check_bid(
    rules: Market,
    bidder: str,
    side: str,
    quantity_kwh: str | Decimal,
    price: str | Decimal,
    supplier: str,
) -> tuple[Bid | None, list[BidRejected]]:
    """Validate one bid given at the edge (kWh, currency per kWh); return it or every broken rule.

    Returns:
        ``(bid, [])`` when the bid is valid, else ``(None, rejections)`` with one entry per rule.
    """
    errors: list[BidRejected] = []
    side_value: Side | None = None
    try:
        side_value = Side(side.strip().lower())
    except ValueError:
        errors.append(BidRejected(Reason.UNKNOWN_SIDE))

    quantity_wh: int | None = None
    try:
        wh = kwh_to_wh_exact(parse_decimal(quantity_kwh))
    except ValueError:
        errors.append(BidRejected(Reason.MALFORMED, "quantity_kwh"))
    else:
        if wh <= 0:
            errors.append(BidRejected(Reason.QUANTITY_NOT_POSITIVE))
        elif wh.denominator != 1:
            errors.append(BidRejected(Reason.QUANTITY_NOT_WHOLE_WH))
        elif wh > rules.max_quantity_wh:
            errors.append(
                BidRejected(
                    Reason.QUANTITY_TOO_LARGE, f"maximum {rules.max_quantity_wh / 1000:g} kWh"
                )
            )
        else:
            quantity_wh = int(wh)

    level: int | None = None
    grid = rules.grid
    try:
        price_value = parse_decimal(price)
    except ValueError:
        errors.append(BidRejected(Reason.MALFORMED, "price"))
    else:
        if price_value < grid.floor:
            errors.append(BidRejected(Reason.PRICE_BELOW_FLOOR, f"floor {grid.floor}"))
        elif price_value > grid.ceiling:
            errors.append(BidRejected(Reason.PRICE_ABOVE_CEILING, f"ceiling {grid.ceiling}"))
        else:
            position = grid.level_of(price_value)
            if position.denominator != 1:
                errors.append(BidRejected(Reason.PRICE_OFF_GRID, f"tick {grid.tick}"))
            else:
                level = int(position)

    supplier = supplier.strip()
    if not supplier:
        errors.append(BidRejected(Reason.UNKNOWN_SUPPLIER, "the supplier field is empty"))
    elif rules.suppliers and supplier not in rules.suppliers:
        errors.append(BidRejected(Reason.UNKNOWN_SUPPLIER))

    if not bidder.strip():
        errors.append(BidRejected(Reason.MALFORMED, "bidder"))

    if errors or side_value is None or quantity_wh is None or level is None:
        return None, errors
    return Bid(bidder.strip(), side_value, quantity_wh, level, supplier), []


@dataclass(frozen=True)
class OrderBook:
    """All valid bids of one period as column arrays, the form the clearing works on.

    ``is_buy``, ``quantity_wh``, ``level`` and ``supplier`` are aligned int/bool arrays;
    ``supplier`` indexes ``suppliers``. ``bidders`` keeps the ids for output only.
    """

    is_buy: np.ndarray
    quantity_wh: np.ndarray
    level: np.ndarray
    supplier: np.ndarray
    suppliers: tuple[str, ...]
    bidders: Sequence[str] = field(default=())

    def __post_init__(self) -> None:
        n = len(self.is_buy)
        if not (len(self.quantity_wh) == len(self.level) == len(self.supplier) == n):
            raise ValueError("order book columns must have equal length")
        if self.bidders and len(self.bidders) != n:
            raise ValueError("order book bidders must match the columns")

    def __len__(self) -> int:
        return len(self.is_buy)

    @classmethod
    def from_bids(cls, bids: Iterable[Bid], suppliers: Sequence[str] = ()) -> OrderBook:
        """Build an order book; suppliers are ``suppliers`` then any others in sorted order."""
        bid_list = list(bids)
        names = list(suppliers)
        known = set(names)
        names += sorted({b.supplier for b in bid_list} - known)
        index = {name: i for i, name in enumerate(names)}
        return cls(
            is_buy=np.array([b.side is Side.BUY for b in bid_list], dtype=bool),
            quantity_wh=np.array([b.quantity_wh for b in bid_list], dtype=np.int64),
            level=np.array([b.level for b in bid_list], dtype=np.int64),
            supplier=np.array([index[b.supplier] for b in bid_list], dtype=np.int64),
            suppliers=tuple(names),
            bidders=tuple(b.bidder for b in bid_list),
        )


def duplicate_bidders(bidders: Iterable[str]) -> list[int]:
    """Return the positions of bids whose bidder (pseudonym) already appeared earlier."""
    seen: set[str] = set()
    dupes = []
    for i, name in enumerate(bidders):
        if name in seen:
            dupes.append(i)
        seen.add(name)
    return dupes
