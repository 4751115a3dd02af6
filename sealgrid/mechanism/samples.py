"""Seeded random order books for tests and benchmarks. Pure: numpy's generator, no I/O."""

from __future__ import annotations

import numpy as np

from sealgrid.mechanism.bids import DEFAULT_MAX_QUANTITY_WH, OrderBook


def random_book(
    bids: int,
    levels: int,
    suppliers: int,
    *,
    seed: int = 0,
    max_quantity_wh: int = DEFAULT_MAX_QUANTITY_WH,
    buy_fraction: float = 0.5,
) -> OrderBook:
    """Draw an order book: sides, quantities in [1, max] Wh, levels and suppliers uniform.

    Buyers' levels lean high and sellers' low (each the larger/smaller of two uniform draws)
    so that a random book usually trades, as real markets do.
    """
    rng = np.random.default_rng(seed)
    is_buy = rng.random(bids) < buy_fraction
    quantity = rng.integers(1, max_quantity_wh + 1, size=bids, dtype=np.int64)
    a = rng.integers(0, levels, size=bids, dtype=np.int64)
    b = rng.integers(0, levels, size=bids, dtype=np.int64)
    level = np.where(is_buy, np.maximum(a, b), np.minimum(a, b))
    supplier = rng.integers(0, suppliers, size=bids, dtype=np.int64)
    names = tuple(f"supplier-{i}" for i in range(suppliers))
    return OrderBook(is_buy, quantity, level, supplier, names)
