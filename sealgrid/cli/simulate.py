"""``sealgrid simulate``: a day of a neighbourhood for every mechanism; thin, parses and calls.

Assumes the data set committed under ``sealgrid/data`` (no network) or a user's data file.
Settings come from ``--scenario FILE.toml`` (:mod:`sealgrid.sim.scenario`), overridden by the
flags given. Writes summary.json, timings.json, scenario.toml, tables (CSV and parquet),
PNG figures and report.html into ``--out``. Prices are in ¢/kWh.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from sealgrid.cli import CliError

#: Flag (argparse dest) → scenario key; a flag given on the command line overrides the file.
FLAG_KEYS = {
    "data": "data", "timezone": "timezone", "homes": "homes", "windows": "windows",
    "start_time": "start", "end_time": "end", "mechanism": "mechanism", "secure": "secure",
    "key_bits": "key_bits", "retail": "retail_ct_per_kwh", "feed_in": "feed_in_ct_per_kwh",
    "network_fee": "network_fee_ct_per_kwh", "pem_range": "pem_range_ct_per_kwh",
    "pem_k": "pem_k", "epsilon": "epsilon", "tick": "tick_ct_per_kwh", "strategy": "strategy",
    "seed": "seed", "retail_peak": "retail_peak_ct_per_kwh",
    "feed_in_peak": "feed_in_peak_ct_per_kwh", "peak_hours": "peak_hours",
    "batteries": "batteries", "battery_share": "battery_share", "agent_counts": "agent_counts",
}


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value.is_finite():
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _utc_time(text: str) -> Any:
    from sealgrid.sim.scenario import parse_time

    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} {exc}") from None


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sealgrid simulate``."""
    p = sub.add_parser(
        "simulate",
        help="simulate a neighbourhood's day and write a report",
        description="Clear and settle every window of a neighbourhood (the committed data "
        "set or your own file) with each mechanism; write summary.json, tables (CSV and "
        "parquet), figures, report.html and the effective scenario.toml. Prices in ¢/kWh "
        "(cents per kWh), energy in kWh, money in ¢, times in UTC. Settings come from "
        "--scenario and the defaults below; flags given override the file "
        "(docs/simulation.md).",
    )
    p.add_argument("--scenario", type=Path, metavar="FILE.toml",
                   help="read the settings from a TOML scenario file (a run's own "
                   "scenario.toml re-runs it)")
    p.add_argument("--mechanism", choices=["none", "double-auction", "pem", "all"],
                   help="which market to run (all; grid only is always the baseline)")
    p.add_argument("--secure", action=argparse.BooleanOptionalAction,
                   help="clear with the secure protocols (MPC auction, PEM over Paillier); "
                   "off by default")
    p.add_argument("--key-bits", type=int, choices=[512, 1024, 2048],
                   help="Paillier/DGK key size in bits for the secure PEM (2048)")
    p.add_argument("--data", metavar="day|week|PATH",
                   help="day: 720 one-minute windows 07:00-19:00 local (default); week: 7 days "
                   "of 15 minutes; any other value is the path of your own CSV or parquet file "
                   "(columns timestamp [UTC], home, pv_mwh, load_mwh [mWh per window])")
    p.add_argument("--timezone", metavar="TZ",
                   help="IANA time zone of the figures and report (America/New_York for the "
                   "committed data, UTC for a file)")
    p.add_argument("--homes", type=int, default=None, metavar="N",
                   help="the first N homes (count; default all)")
    end = p.add_mutually_exclusive_group()
    end.add_argument("--windows", type=int, default=None, metavar="W",
                     help="W windows (count; default all to the data's end)")
    end.add_argument("--end-time", type=_utc_time, metavar="TIME",
                     help="end of the last window, ISO 8601 UTC (e.g. 2021-09-20T12:00:00Z)")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--start", type=int, default=None, metavar="S",
                       help="first window by index (0-based count of windows; default 0)")
    start.add_argument("--start-time", type=_utc_time, metavar="TIME",
                       help="first window by its start, ISO 8601 UTC (e.g. "
                       "2021-09-20T16:30:00Z)")
    p.add_argument("--retail", type=_decimal, metavar="CT_PER_KWH",
                   help="retail price in ¢/kWh (120)")
    p.add_argument("--feed-in", type=_decimal, metavar="CT_PER_KWH",
                   help="feed-in tariff in ¢/kWh (80)")
    p.add_argument("--network-fee", type=_decimal, metavar="CT_PER_KWH",
                   help="¢/kWh the seller's supplier keeps per kWh sold locally (0)")
    p.add_argument("--pem-range", type=_decimal, nargs=2, metavar=("LOW", "HIGH"),
                   help="PEM price range [p_l, p_h] in ¢/kWh (90 110)")
    p.add_argument("--pem-k", type=int, nargs="+", metavar="K",
                   help="PEM load preference k in ¢ (per unit of ln(1 + load/kWh)), one run "
                   "each (20 40)")
    p.add_argument("--epsilon", type=_decimal,
                   help="PEM battery loss coefficient ε, no unit (0.9; no batteries in the "
                   "data)")
    p.add_argument("--tick", type=_decimal, metavar="CT_PER_KWH",
                   help="double-auction price tick in ¢/kWh (0.1)")
    p.add_argument("--strategy", choices=["zi-c", "reservation"],
                   help="double-auction bidding strategy (zi-c; docs/simulation.md)")
    p.add_argument("--seed", type=int, help="bidding strategy seed, a whole number ≥ 0 "
                   "(20210920)")
    p.add_argument("--retail-peak", type=_decimal, metavar="CT_PER_KWH",
                   help="time of use: the retail price in ¢/kWh during the peak hours "
                   "(default: flat tariffs)")
    p.add_argument("--feed-in-peak", type=_decimal, metavar="CT_PER_KWH",
                   help="time of use: the feed-in tariff in ¢/kWh during the peak hours")
    p.add_argument("--peak-hours", type=int, nargs=2, metavar=("START", "END"),
                   help="the peak [START, END) in local hours, for time of use and the "
                   "batteries (17 21)")
    p.add_argument("--batteries", action=argparse.BooleanOptionalAction,
                   help="home batteries (docs/simulation.md, Batteries): charge from surplus, "
                   "discharge in the peak hours; off by default (the paper's data have none)")
    p.add_argument("--battery-share", type=_decimal, metavar="SHARE",
                   help="share of homes with PV that have a battery (0.6)")
    p.add_argument("--agent-counts", type=int, nargs="+", metavar="N",
                   help="Fig. 6c for several numbers of agents in one run: the runs again on "
                   "the first N homes of the same windows, e.g. 100 200 (default: none)")
    p.add_argument("--pem-sweep", type=Path, metavar="DIR",
                   help="link PEM's runtime sweep (the --out folder of 'sealgrid bench pem "
                   "--sweep', paper Fig. 5) from the report: its plots and points, copied "
                   "into OUT/pem_sweep/ (not a scenario setting)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", type=Path, required=True,
                   help="output folder (created if missing; files in it are replaced)")
    p.set_defaults(func=run)


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    """The scenario settings given on the command line."""
    values: dict[str, Any] = {}
    for dest, key in FLAG_KEYS.items():
        value = getattr(args, dest)
        if value is None:
            continue
        values[key] = tuple(value) if isinstance(value, list) else value
    return values


def _check_out(out: Path) -> None:
    """Refuse an ``--out`` that names a file, before anything else."""
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out}: is a file, not a folder; give a folder (it is created "
                       "if missing)")


def _make_out(out: Path) -> None:
    """Create ``--out`` and prove it writable, before the run."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise CliError(f"--out {out}: cannot create or write the folder "
                       f"({exc.strerror or exc})") from None


def run(args: argparse.Namespace) -> int:
    """Run the simulation and write the outputs."""
    from tqdm import tqdm

    from sealgrid.mechanism.pem import PemInputError
    from sealgrid.sim import scenario as scenarios
    from sealgrid.sim.report import write_outputs
    from sealgrid.sim.run import simulate
    from sealgrid.sim.window import SecureUnavailable

    _check_out(args.out)
    if args.pem_sweep is not None:
        from sealgrid.sim.report import read_sweep

        try:
            read_sweep(args.pem_sweep)
        except ValueError as exc:
            raise CliError(f"--pem-sweep {exc}") from None
    flags = _flags(args)
    try:
        file_values = scenarios.read(args.scenario) if args.scenario is not None else {}
        if args.start is not None:
            file_values.pop("start", None)
        prepared = scenarios.prepare(scenarios.merge(file_values, flags),
                                     start_window=args.start)
    except (ValueError, PemInputError) as exc:
        raise CliError(str(exc)) from None
    _make_out(args.out)
    sc, data = prepared.scenario, prepared.data
    quiet = args.quiet or not sys.stderr.isatty()
    bar = tqdm(total=len(data.index), unit="window", file=sys.stderr, disable=quiet,
               desc=f"simulate {sc.mechanism}{' (secure)' if sc.secure else ''}")
    start = time.perf_counter()
    try:
        result = simulate(data, prepared.params, prepared.runs, secure=sc.secure,
                          progress=bar.update, secure_options={"pem": {"key_bits": sc.key_bits}},
                          agent_counts=sc.agent_counts)
    except SecureUnavailable as exc:
        raise CliError(str(exc)) from None
    except ValueError as exc:  # a number of agents above the run's homes
        raise CliError(str(exc)) from None
    finally:
        bar.close()
    wall = time.perf_counter() - start
    try:
        paths = write_outputs(result, data, prepared.params, args.out, sc.secure, wall,
                              scenario=sc, pem_sweep=args.pem_sweep)
    except OSError as exc:
        raise CliError(f"--out {args.out}: cannot write the outputs "
                       f"({exc.strerror or exc})") from None
    print(f"simulated {len(data.index)} windows × {len(data.homes)} homes in {wall:.1f} s")
    for name in ("summary", "windows", "report", "scenario"):
        print(f"{name}: {paths[name]}")
    return 0
