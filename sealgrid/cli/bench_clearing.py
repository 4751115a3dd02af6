"""``sealgrid bench clearing``: time the double auction on a seeded random order book.

Prints one JSON line. By default it runs the secure clearing with ``--parties`` server
processes over mutual TLS (validation included; ``seconds`` is the slowest server's online
time) and the plaintext reference on the same book; ``--plaintext`` times only the reference.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from sealgrid.cli import CliError
from sealgrid.cli.common import positive_int, servers
from sealgrid.mechanism.auction import Clearing, clear
from sealgrid.mechanism.market import DEFAULT_MAX_QUANTITY_WH
from sealgrid.mechanism.samples import random_book
from sealgrid.protocol.encoding import RATIO_LIMIT


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sealgrid bench clearing``."""
    p = sub.add_parser("clearing", help="time the double-auction clearing")
    p.add_argument("--bids", type=positive_int, default=10_000,
                   help="number of bids (default 10000)")
    p.add_argument("--levels", type=positive_int, default=256, help="price levels P (default 256)")
    p.add_argument("--suppliers", type=positive_int, default=10,
                   help="number of suppliers (default 10)")
    p.add_argument("--parties", type=servers, default=3, help="MPC servers (default 3)")
    p.add_argument("--mode", choices=["processes", "inprocess"], default="processes",
                   help="real server processes over TLS (default) or in-process (tests only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-per-side", type=int, default=1, metavar="N",
                   help="accepted bids each side needs to trade (default 1; the service: 3)")
    p.add_argument("--max-quantity-wh", type=int, default=None, metavar="WH",
                   help="the market's largest bid, Wh (default 10000, or less where bids ×"
                   " it would pass the exact rationing's 2^31 Wh a side: about 2147 Wh at a"
                   " million bids)")
    p.add_argument("--repeat", type=positive_int, default=5,
                   help="plaintext repetitions; best is kept")
    p.add_argument("--plaintext", action="store_true", help="time the plaintext reference only")
    p.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    p.set_defaults(func=run)


def plaintext_seconds(book: object, levels: int, repeat: int, min_per_side: int = 1) -> float:
    """Return the best wall time of ``repeat`` plaintext clearings of ``book``."""
    best = float("inf")
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        clear(book, levels, min_accepted_per_side=min_per_side)  # type: ignore[arg-type]
        best = min(best, time.perf_counter() - start)
    return best


def same_clearing(a: Clearing, b: Clearing) -> bool:
    """Whether two clearings are equal in every field (exact)."""
    return (
        (a.level, a.volume_wh, a.demand_wh, a.supply_wh) == (b.level, b.volume_wh, b.demand_wh,
                                                              b.supply_wh)
        and np.array_equal(a.accepted, b.accepted)
        and np.array_equal(a.traded_numerator, b.traded_numerator)
        and (a.denominator_buy, a.denominator_sell) == (b.denominator_buy, b.denominator_sell)
        and a.supplier_bought_wh == b.supplier_bought_wh
        and a.supplier_sold_wh == b.supplier_sold_wh
    )


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print one JSON line."""
    max_q = args.max_quantity_wh
    if max_q is None:  # the default market, narrowed to what the exact rationing can carry
        max_q = min(DEFAULT_MAX_QUANTITY_WH, (RATIO_LIMIT - 2) // max(1, args.bids))
    if max_q < 1:
        raise CliError("--max-quantity-wh must be at least 1 Wh")
    book = random_book(args.bids, args.levels, args.suppliers, seed=args.seed,
                       max_quantity_wh=max_q)
    plain = round(plaintext_seconds(book, args.levels, args.repeat, args.min_per_side), 6)
    if args.plaintext:
        print(json.dumps({"mode": "plaintext", "bids": args.bids, "levels": args.levels,
                          "suppliers": args.suppliers, "plaintext_seconds": plain}))
        return 0
    from sealgrid.protocol.clearing import secure_clear

    try:
        outcome = secure_clear(book, args.levels, parties=args.parties, mode=args.mode,
                               min_per_side=args.min_per_side, max_quantity_wh=max_q)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    reference = clear(book, args.levels, min_accepted_per_side=args.min_per_side)
    stats = outcome.stats
    result: dict[str, Any] = {
        "bids": args.bids,
        "parties": args.parties,
        "levels": args.levels,
        "seconds": round(stats.online_seconds, 4),
        "plaintext_seconds": plain,
        "bytes_per_party": list(stats.bytes_per_party),
        "matches_plaintext": same_clearing(outcome.clearing, reference),
        "min_per_side": args.min_per_side,
        "max_quantity_wh": max_q,
        "suppliers": args.suppliers,
        "mode": args.mode,
        "ratio_to_plaintext": round(stats.online_seconds / plain, 1) if plain else None,
        "phases": {k: round(v, 4) for k, v in stats.phases.items()},
        "household_share_seconds": round(stats.share_seconds, 4),
        "upload_bytes_per_bid_per_server": stats.upload_bytes_per_bid,
        "peak_rss_bytes": list(stats.peak_rss_bytes),
    }
    print(json.dumps(result))
    return 0
