"""``sealgrid bench clearing``: time the double auction on a seeded random order book.

Prints one JSON line. ``--plaintext`` times only the plaintext reference.
"""

from __future__ import annotations

import argparse
import json
import time

from sealgrid.mechanism.auction import clear
from sealgrid.mechanism.samples import random_book


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sealgrid bench clearing``."""
    p = sub.add_parser("clearing", help="time the double-auction clearing")
    p.add_argument("--bids", type=int, default=10_000, help="number of bids (default 10000)")
    p.add_argument("--levels", type=int, default=256, help="price levels P (default 256)")
    p.add_argument("--suppliers", type=int, default=10, help="number of suppliers (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=5, help="plaintext repetitions; best is kept")
    p.add_argument("--plaintext", action="store_true", help="time the plaintext reference only")
    p.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    p.set_defaults(func=run)


def plaintext_seconds(book: object, levels: int, repeat: int) -> float:
    """Return the best wall time of ``repeat`` plaintext clearings of ``book``."""
    best = float("inf")
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        clear(book, levels)  # type: ignore[arg-type]
        best = min(best, time.perf_counter() - start)
    return best


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print one JSON line."""
    book = random_book(args.bids, args.levels, args.suppliers, seed=args.seed)
    result = {
        "mode": "plaintext",
        "bids": args.bids,
        "levels": args.levels,
        "suppliers": args.suppliers,
        "plaintext_seconds": round(plaintext_seconds(book, args.levels, args.repeat), 6),
    }
    print(json.dumps(result))
    return 0
