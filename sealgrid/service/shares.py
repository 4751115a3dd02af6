"""The household's door to the secret-share encoding; assumes it lives in sealgrid.protocol.

The service moves share payloads as opaque bytes. Making them from a bid and rebuilding a
result from every server's output share is the protocol layer's job; this module only names
what the household agent calls there (``sealgrid.protocol.encoding``: ``Layout``,
``encode_bid``, ``BidShares.to_bytes``, ``OutputShare.from_bytes``, ``reconstruct``) and turns
its absence into one clear error.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from sealgrid.mechanism.bids import Bid, Side


class EncodingUnavailable(Exception):
    """sealgrid.protocol does not (yet) provide the household share encoding."""


def _encoding() -> Any:
    try:
        from sealgrid.protocol import encoding
    except ImportError as exc:
        raise EncodingUnavailable(f"sealgrid.protocol.encoding is not available: {exc}") from exc
    return encoding


def encode_payloads(
    bid: Bid, suppliers: Sequence[str], levels: int, max_quantity_wh: int, parties: int
) -> list[bytes]:
    """Split one checked bid into one share payload per server (index = server).

    Raises:
        EncodingUnavailable: the protocol layer lacks the encoding.
    """
    enc = _encoding()
    layout = enc.Layout(levels, len(suppliers), max_quantity_wh)
    shares = enc.encode_bid(
        bid.side is Side.BUY,
        bid.quantity_wh,
        bid.level,
        list(suppliers).index(bid.supplier),
        layout,
        parties=parties,
    )
    return [s.to_bytes() for s in shares]


def reconstruct(shares: Sequence[bytes]) -> list[int]:
    """Rebuild output values from every server's output share, checking they agree.

    Raises:
        EncodingUnavailable: the protocol layer lacks the encoding.
        ValueError: the shares are malformed or inconsistent (a server sent a wrong share).
    """
    enc = _encoding()
    values: list[int] = enc.reconstruct([enc.OutputShare.from_bytes(s) for s in shares])
    return values


def traded_wh(accepted_q: int, is_buy: bool, public: dict[str, Any]) -> Fraction:
    """Return what a household traded from its accepted quantity and the public outcome.

    The long side is rationed pro rata (SPEC §4): a buyer trades ``q·V/D`` when ``D > V``,
    a seller ``q·V/S`` when ``S > V``; the short side trades its whole accepted quantity.
    """
    if not accepted_q or public.get("level") is None:
        return Fraction(0)
    volume, side_total = public["volume"], public["demand" if is_buy else "supply"]
    return (
        Fraction(accepted_q * volume, side_total) if side_total > volume else Fraction(accepted_q)
    )


def supplier_totals(bought: int, sold: int, public: dict[str, Any]) -> tuple[Fraction, Fraction]:
    """Return a supplier's traded (bought, sold) Wh from its accepted totals."""
    return traded_wh(bought, True, public), traded_wh(sold, False, public)
