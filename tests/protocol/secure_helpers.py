"""Helpers for the secure-clearing tests: books, tampering with stored shares, comparisons."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from sealgrid.mechanism.auction import Clearing, clear
from sealgrid.mechanism.bids import OrderBook
from sealgrid.protocol import field as F
from sealgrid.protocol.encoding import _HEADER, Layout, share_rows


def book(is_buy: Sequence[bool] | np.ndarray, q: Sequence[int] | np.ndarray,
         level: Sequence[int] | np.ndarray, supplier: Sequence[int] | np.ndarray | None = None,
         suppliers: int = 2) -> OrderBook:
    n = len(is_buy)
    return OrderBook(
        is_buy=np.array(is_buy, dtype=bool),
        quantity_wh=np.array(q, dtype=np.int64),
        level=np.array(level, dtype=np.int64),
        supplier=np.array(supplier if supplier is not None else [i % suppliers for i in range(n)],
                          dtype=np.int64),
        suppliers=tuple(f"s{i}" for i in range(suppliers)),
    )


def random_book(rng: np.random.Generator, n: int, levels: int, suppliers: int,
                max_q: int = 10_000) -> OrderBook:
    return book(rng.random(n) < 0.5, rng.integers(1, max_q + 1, n), rng.integers(0, levels, n),
                rng.integers(0, suppliers, n), suppliers)


def subbook(b: OrderBook, keep: np.ndarray) -> OrderBook:
    return OrderBook(b.is_buy[keep], b.quantity_wh[keep], b.level[keep], b.supplier[keep],
                     b.suppliers)


def assert_equal_on(secure: Clearing, b: OrderBook, levels: int, honest: np.ndarray) -> None:
    """The secure clearing equals the reference on the honest bids; the others got nothing."""
    ref = clear(subbook(b, honest), levels)
    assert (secure.level, secure.volume_wh, secure.demand_wh, secure.supply_wh) == (
        ref.level, ref.volume_wh, ref.demand_wh, ref.supply_wh)
    assert (secure.denominator_buy, secure.denominator_sell) == (
        ref.denominator_buy, ref.denominator_sell)
    assert np.array_equal(secure.accepted[honest], ref.accepted)
    assert np.array_equal(secure.traded_numerator[honest], ref.traded_numerator)
    assert not secure.accepted[~honest].any()
    assert not secure.traded_numerator[~honest].any()
    assert secure.supplier_bought_wh == ref.supplier_bought_wh
    assert secure.supplier_sold_wh == ref.supplier_sold_wh


def overwrite(paths: Sequence[Path], slot: int, shares: Sequence[np.ndarray]) -> None:
    """Replace slot ``slot`` of every server's stored batch with the given share rows."""
    for path, row in zip(paths, shares, strict=True):
        width = len(row)
        size = (path.stat().st_size - _HEADER.size) // 8
        data = np.memmap(path, dtype="<u8", mode="r+", offset=_HEADER.size,
                         shape=(size // width, width))
        data[slot] = row
        data.flush()
        del data


def cheat(layout: Layout, slot: int, make: Callable[[np.ndarray], object],
          corrupt: Callable[[list[np.ndarray]], None] | None = None,
          ) -> Callable[[Sequence[Path]], None]:
    """A tamper hook: household ``slot`` uploads valid-looking shares of a malicious vector.

    ``make`` edits a zero plaintext vector in place (field elements); ``corrupt`` may then
    edit the shares themselves (e.g. break their consistency).
    """

    def hook(paths: Sequence[Path]) -> None:
        row = np.zeros((1, layout.width), dtype=F.U64)
        make(row[0])
        shares = [s[0].copy() for s in share_rows(row, len(paths), b"cheater-key")]
        if corrupt is not None:
            corrupt(shares)
        overwrite(paths, slot, shares)

    return hook


def bits_of(value: int, nbits: int) -> np.ndarray:
    return np.array([(value >> j) & 1 for j in range(nbits)], dtype=F.U64)


def honest_vector(layout: Layout, buy: bool, q: int, level: int, supplier: int) -> np.ndarray:
    row = np.zeros(layout.width, dtype=F.U64)
    hi, lo = divmod(level, layout.fine)
    row[(0 if buy else layout.coarse) + hi] = q % F.MODULUS
    row[layout.e.start + lo] = 1
    row[layout.low_bits] = bits_of(q - 1, layout.bits)
    row[layout.high_bits] = bits_of(layout.max_quantity_wh - q, layout.bits)
    row[layout.supplier.start + supplier] = 1
    return row
