"""``sealgrid bench billing``: time the private settlement per period and the bills per cycle.

Prints one JSON line. Each period draws a seeded random market of ``--households`` households
(``--bid-fraction`` of them bid, ``--reading-fraction`` send a reading), clears it in plaintext
and hands the servers their shares of what the secure clearing leaves behind (each bid's
identity pair and accepted quantities, the rationing ratios) and of every household's claim,
exactly as the households and the clearing would. The servers then settle the period
(``--parties`` processes over mutual TLS by default): the shuffle, the binding, the claim
checks and the money. ``settle_seconds_per_period`` is the slowest server's online time; the
cycle's bills are the sums each server forms from its stored lines, rebuilt as a supplier
would (``bill_seconds_per_cycle``). ``plaintext_*`` time the integer reference on the same
data; ``matches_reference`` compares every household's line and every bill exactly.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from sealgrid.cli.common import positive_int, servers, share
from sealgrid.mechanism import billing as B
from sealgrid.mechanism.auction import clear, rationing
from sealgrid.mechanism.bids import DEFAULT_MAX_QUANTITY_WH, Side
from sealgrid.mechanism.samples import random_book

LEVELS = 256
TARIFFS = (B.MilliTariff(120_000, 80_000, 5_000), B.MilliTariff(119_000, 81_000, 4_500),
           B.MilliTariff(121_500, 79_500, 5_500))


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sealgrid bench billing``."""
    p = sub.add_parser("billing", help="time the private settlement and the cycle's bills")
    p.add_argument("--households", type=positive_int, default=10_000,
                   help="households (default 10000)")
    p.add_argument("--periods", type=positive_int, default=2,
                   help="periods in the cycle (default 2)")
    p.add_argument("--bid-fraction", type=share, default=0.6, help="share that bids (0.6)")
    p.add_argument("--reading-fraction", type=share, default=0.99,
                   help="share that sends a reading (0.99)")
    p.add_argument("--parties", type=servers, default=3, help="MPC servers (default 3)")
    p.add_argument("--mode", choices=["processes", "inprocess"], default="processes",
                   help="real server processes over TLS (default) or in-process (tests only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    p.set_defaults(func=run)


def _period(args: argparse.Namespace, p: int, supplier: np.ndarray, kappa: np.ndarray) -> Any:
    """One period's market, its plaintext settlement and every server's inputs."""
    from sealgrid.protocol import billing
    from sealgrid.protocol import field as F
    from sealgrid.protocol.billing import Claim, ClaimLayout, SettleInput, share_claim
    from sealgrid.protocol.encoding import threshold

    rng = np.random.default_rng([args.seed, p])
    n_h, m = args.households, args.parties
    t = threshold(m)
    who = np.flatnonzero(rng.random(n_h) < args.bid_fraction)
    book = random_book(len(who), LEVELS, 1, seed=args.seed * 1_000 + p)
    c = clear(book, LEVELS)
    ratio = {True: Fraction(0), False: Fraction(0)}
    if c.level is not None:
        ratio = {True: Fraction(*rationing(c.volume_wh, c.demand_wh)),
                 False: Fraction(*rationing(c.volume_wh, c.supply_wh))}
    price = None if c.level is None else 80_000 + round(Fraction(40_000, LEVELS - 1) * c.level)
    acc = np.where(c.accepted, book.quantity_wh, 0)
    reads = rng.random(n_h) < args.reading_fraction
    imp = rng.integers(0, 6_000, n_h)
    exp = rng.integers(0, 6_000, n_h)
    lay = ClaimLayout(quantity_bits=DEFAULT_MAX_QUANTITY_WH.bit_length())
    side = np.zeros(n_h, dtype=bool)  # True: sell
    accepted = np.zeros(n_h, dtype=np.int64)
    side[who] = ~book.is_buy
    accepted[who] = acc
    # plaintext: the integer reference, timed
    start = time.perf_counter()
    ref = np.zeros((n_h, 6), dtype=object)
    for h in range(n_h):
        who_side = Side.SELL if side[h] else Side.BUY
        settled = B.settled_wh(int(accepted[h]), ratio[not side[h]]) if accepted[h] else 0
        i, e = (int(imp[h]), int(exp[h])) if reads[h] else (0, 0)
        money = B.period_money(who_side, settled, i, e, price or 0, TARIFFS[supplier[h]])
        ref[h] = [0 if side[h] else settled, settled if side[h] else 0, i, e,
                  money.with_market, money.without_market]
    plain = time.perf_counter() - start
    # what the servers hold: shares of the bid rows and ratios, and of each claim
    key = secrets.token_bytes(16)
    rows = np.zeros((4, len(who)), dtype=F.U64)
    rows[0] = F.from_int64(who + 1)
    rows[1] = kappa[who]
    rows[2] = F.from_int64(np.where(book.is_buy, acc, 0))
    rows[3] = F.from_int64(np.where(book.is_buy, 0, acc))
    ratios = np.array([billing.fraction_element(ratio[True]),
                       billing.fraction_element(ratio[False])], dtype=F.U64)
    sh_rows = F.share(rows, t, m, [F.stream(key, f"rows/{j}", rows.size).reshape(rows.shape)
                                   for j in range(t)])
    sh_ratios = F.share(ratios, t, m, [F.stream(key, f"ratios/{j}", 2) for j in range(t)])
    sh_kappa = F.share(kappa, t, m, [F.stream(key, f"kappa/{j}", n_h) for j in range(t)])
    claims: list[dict[int, np.ndarray]] = [{} for _ in range(m)]
    for h in (int(v) for v in np.flatnonzero(reads)):
        claim = Claim.of(bool(side[h]), int(accepted[h]), ratio[not side[h]], int(imp[h]),
                         int(exp[h]))
        pieces = share_claim(claim, lay, m, key + int(h).to_bytes(8, "little"))
        for i, piece in enumerate(pieces):
            claims[i][int(h) + 1] = piece
    tariffs = np.array([[TARIFFS[k].retail, TARIFFS[k].feed_in, TARIFFS[k].network_fee]
                        for k in supplier], dtype=np.int64)
    inputs = [SettleInput(sh_rows[i], sh_ratios[i], price, sh_kappa[i], tariffs, claims[i], lay)
              for i in range(m)]
    return inputs, ref, plain


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print one JSON line."""
    from sealgrid.protocol import billing
    from sealgrid.protocol import field as F
    from sealgrid.protocol.encoding import threshold

    n_h, m = args.households, args.parties
    t = threshold(m)
    rng = np.random.default_rng(args.seed)
    supplier = rng.integers(0, len(TARIFFS), n_h)
    kappa = F.stream(secrets.token_bytes(16), "kappa", n_h)
    settle_s, plain_s, sent, peak = [], [], [0] * m, 0
    phase_s: dict[str, float] = {}  # slowest server's seconds per phase, over the periods
    lines: list[list[np.ndarray]] = [[] for _ in range(m)]
    refs = []
    root = Path(tempfile.mkdtemp(prefix="sealgrid-bench-billing-"))
    try:
        for p in range(args.periods):
            inputs, ref, plain = _period(args, p, supplier, kappa)
            refs.append(ref)
            plain_s.append(plain)
            if args.mode == "inprocess":
                from sealgrid.protocol.inprocess import settle_in_process

                results = settle_in_process(inputs)
            else:
                from sealgrid.protocol.certs import make_party_certificates
                from sealgrid.protocol.clearing import run_processes

                dirs = [root / f"p{p}" / f"party{i}" for i in range(m)]
                for d, inp in zip(dirs, inputs, strict=True):
                    d.mkdir(parents=True)
                    billing.write_input(d, inp)
                make_party_certificates(dirs)
                run_processes(dirs, 600.0, settle=True)
                results = [billing.read_result(d) for d in dirs]
                peak = max(peak, *(r.peak_rss_bytes for r in results))
            settle_s.append(max(r.online_seconds for r in results))
            for r in results:
                for k, v in r.phases.items():
                    phase_s[k] = max(phase_s.get(k, 0.0), v)
            for i, r in enumerate(results):
                lines[i].append(r.lines)
                sent[i] += r.bytes_sent
        # the cycle's bills: each server sums its lines; the supplier rebuilds its customers'
        start = time.perf_counter()
        totals = [billing.cycle_totals(ls) for ls in lines]
        bills = [billing.group_totals(tot, supplier, len(TARIFFS)) for tot in totals]
        rebuilt = F.reconstruct([t[:, 4] for t in totals], t)
        per_supplier = F.reconstruct([b.reshape(-1) for b in bills], t)
        bill_s = time.perf_counter() - start
        start = time.perf_counter()
        ref_totals = np.sum(refs, axis=0) if refs else np.zeros((n_h, 6), dtype=object)
        ref_groups = [ref_totals[supplier == s].sum(axis=0) for s in range(len(TARIFFS))]
        plain_bill = time.perf_counter() - start
        signed = F.to_signed(rebuilt)
        matches = all(
            np.array_equal(F.to_signed(F.reconstruct([r[p] for r in lines], t)),
                           refs[p].astype(object)) for p in range(args.periods)
        ) and all(int(signed[h]) == ref_totals[h][4] for h in range(n_h)) and all(
            list(F.to_signed(per_supplier.reshape(len(TARIFFS), 6)[s])) == list(ref_groups[s])
            for s in range(len(TARIFFS)))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({
        "households": n_h, "periods": args.periods, "parties": m, "mode": args.mode,
        "bid_fraction": args.bid_fraction, "reading_fraction": args.reading_fraction,
        "settle_seconds_per_period": round(max(settle_s), 4),
        "settle_seconds": [round(s, 4) for s in settle_s],
        "bill_seconds_per_cycle": round(bill_s, 4),
        "bytes_per_server": sent,
        "peak_rss_bytes": peak or None,
        "plaintext_settle_seconds_per_period": round(max(plain_s), 4),
        "plaintext_bill_seconds_per_cycle": round(plain_bill, 4),
        "matches_reference": bool(matches),
        "phases": {k: round(v, 4) for k, v in phase_s.items()},
    }))
    return 0

