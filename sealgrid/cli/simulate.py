"""``sealgrid simulate``: a day of a neighbourhood for every mechanism; thin, parses and calls.

Assumes the data set committed under ``sealgrid/data`` (no network). Writes summary.json,
windows.parquet, utility.parquet, PNG figures and report.html into ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path

from sealgrid.cli import CliError


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value.is_finite():
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sealgrid simulate``."""
    p = sub.add_parser(
        "simulate",
        help="simulate a neighbourhood's day and write a report",
        description="Clear and settle every window of the committed neighbourhood data set "
        "with each mechanism; write summary.json, windows.parquet, figures and report.html.",
    )
    p.add_argument("--mechanism", choices=["none", "double-auction", "pem", "all"],
                   default="all", help="which market to run (grid only is always the baseline)")
    p.add_argument("--secure", action="store_true",
                   help="clear with the secure protocols (MPC auction, PEM over Paillier)")
    p.add_argument("--key-bits", type=int, choices=[512, 1024, 2048], default=2048,
                   help="Paillier/DGK key size for the secure PEM (2048)")
    p.add_argument("--data", choices=["day", "week"], default="day",
                   help="day: 720 one-minute windows 07:00-19:00; week: 7 days of 15 minutes")
    p.add_argument("--homes", type=int, default=None, help="first N homes (default all 300)")
    p.add_argument("--windows", type=int, default=None, help="W windows (default all)")
    p.add_argument("--start", type=int, default=0, help="first window index (default 0)")
    p.add_argument("--retail", type=_decimal, default=Decimal(120), help="¢/kWh (120)")
    p.add_argument("--feed-in", type=_decimal, default=Decimal(80), help="¢/kWh (80)")
    p.add_argument("--network-fee", type=_decimal, default=Decimal(0),
                   help="¢/kWh the seller's supplier keeps per kWh sold locally (0)")
    p.add_argument("--pem-range", type=_decimal, nargs=2, default=[Decimal(90), Decimal(110)],
                   metavar=("LOW", "HIGH"), help="PEM price range [p_l, p_h] (90 110)")
    p.add_argument("--pem-k", type=int, nargs="+", default=[20, 40],
                   help="PEM load preference k, one run each (20 40)")
    p.add_argument("--epsilon", type=_decimal, default=Decimal("0.9"),
                   help="PEM battery loss coefficient ε (0.9; no batteries in the data)")
    p.add_argument("--tick", type=_decimal, default=Decimal("0.1"),
                   help="double-auction price tick in ¢/kWh (0.1)")
    p.add_argument("--strategy", choices=["zi-c", "reservation"], default="zi-c",
                   help="double-auction bidding strategy (docs/simulation.md)")
    p.add_argument("--seed", type=int, default=20210920, help="bidding strategy seed")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the simulation and write the outputs."""
    from tqdm import tqdm

    from sealgrid.mechanism.pem import PemInputError
    from sealgrid.sim import dataset
    from sealgrid.sim.agents import MarketParams, Strategy
    from sealgrid.sim.report import write_outputs
    from sealgrid.sim.run import runs_for, simulate
    from sealgrid.sim.window import SecureUnavailable

    try:
        params = MarketParams(
            retail=args.retail, feed_in=args.feed_in, pem_low=args.pem_range[0],
            pem_high=args.pem_range[1], pem_k=tuple(args.pem_k), epsilon=args.epsilon,
            network_fee=args.network_fee, tick=args.tick, strategy=Strategy(args.strategy),
            seed=args.seed,
        )
        data = dataset.load(args.data, homes=args.homes, windows=args.windows,
                            start=args.start)
    except (ValueError, PemInputError) as exc:
        raise CliError(str(exc)) from None
    runs = runs_for(args.mechanism, params)
    quiet = args.quiet or not sys.stderr.isatty()
    bar = tqdm(total=len(data.index), unit="window", file=sys.stderr, disable=quiet,
               desc=f"simulate {args.mechanism}{' (secure)' if args.secure else ''}")
    start = time.perf_counter()
    try:
        result = simulate(data, params, runs, secure=args.secure, progress=bar.update,
                          secure_options={"pem": {"key_bits": args.key_bits}})
    except SecureUnavailable as exc:
        raise CliError(str(exc)) from None
    finally:
        bar.close()
    wall = time.perf_counter() - start
    paths = write_outputs(result, data, params, args.out, args.secure, wall)
    print(f"simulated {len(data.index)} windows × {len(data.homes)} homes in {wall:.1f} s")
    for name in ("summary", "windows", "report"):
        print(f"{name}: {paths[name]}")
    return 0
