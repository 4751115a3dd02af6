"""``sealgrid bench pem``: the private PEM with agents in OS processes; assumes an idle machine
(timings on a shared machine are noisy). Prints one JSON line.

Random windows (seeded) of ``--agents`` agents; by default windows cycle through seller shares
0.3, 0.4, 0.6 (two general markets, then an extreme one); every window is checked against the
plaintext PEM (``matches_plaintext``). The agents live across the run's windows (one
:class:`~sealgrid.protocol.pem.PemSession`): keys made once, pools refilled between windows.

``--sweep AXIS=V1,V2,… --out DIR`` reproduces paper xie2020's Fig. 5: one axis (``agents``,
``key-bits``, ``windows``) varies at a time around the base point (the other options, or
``--base agents=N,key-bits=K,windows=W``); ``DIR`` gets ``sweep.json`` (one row per point) and
three plots, and the printed line is the base point's, with a ``sweep`` entry added.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sealgrid.cli import CliError
from sealgrid.cli.common import positive_int, share
from sealgrid.mechanism.pem import PemInputError

if TYPE_CHECKING:  # the protocol layer is imported when the benchmark runs, not to parse
    from sealgrid.protocol.pem.sweep import Measurement

#: Spellings of the sweep's axes on the command line.
AXIS_NAMES = {"agents": "agents", "key-bits": "key_bits", "key_bits": "key_bits",
              "windows": "windows"}
KEY_BITS = (512, 1024, 2048)


def _axis_value(axis: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{axis}: {text!r} is not a whole number") from None
    if axis == "key_bits" and value not in KEY_BITS:
        raise argparse.ArgumentTypeError(f"key-bits must be one of {KEY_BITS}, not {value}")
    if axis == "agents" and value < 2:
        raise argparse.ArgumentTypeError(f"agents must be at least 2, not {value}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{axis} must be at least 1, not {value}")
    return value


def _axis(name: str) -> str:
    axis = AXIS_NAMES.get(name.strip())
    if axis is None:
        raise argparse.ArgumentTypeError(
            f"{name!r} is not an axis: one of agents, key-bits, windows")
    return axis


def sweep_axis(text: str) -> tuple[str, tuple[int, ...]]:
    """An argparse type: ``AXIS=V1,V2,…`` (axis agents, key-bits or windows)."""
    name, sep, values = text.partition("=")
    if not sep or not values.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not AXIS=V1,V2,… (e.g. agents=50,100)")
    axis = _axis(name)
    parsed = tuple(dict.fromkeys(_axis_value(axis, v.strip()) for v in values.split(",")))
    return axis, parsed


def base_point(text: str) -> dict[str, int]:
    """An argparse type: ``agents=N,key-bits=K,windows=W`` (any of the three)."""
    out: dict[str, int] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(
                f"{part!r} is not AXIS=VALUE (e.g. agents=50,key-bits=512,windows=1)")
        axis = _axis(name)
        out[axis] = _axis_value(axis, value.strip())
    return out


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sealgrid bench pem``."""
    p = sub.add_parser("pem", help="private PEM (Paillier + DGK) among agents in OS processes")
    p.add_argument("--agents", type=positive_int, default=300,
                   help="number of agents (default 300)")
    p.add_argument("--key-bits", type=int, default=2048, choices=KEY_BITS)
    p.add_argument("--windows", type=positive_int, default=3, help="trading windows (default 3)")
    p.add_argument("--processes", type=positive_int, default=2, help="OS processes (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the draws")
    p.add_argument("--sellers", type=share, default=None,
                   help="share of agents with surplus (default: windows cycle 0.3, 0.4, 0.6)")
    p.add_argument("--sweep", type=sweep_axis, nargs="+", default=None, metavar="AXIS=V1,V2",
                   help="paper Fig. 5: vary one axis at a time (agents, key-bits, windows) "
                        "around the base point; needs --out")
    p.add_argument("--base", type=base_point, default=None, metavar="AXIS=V,...",
                   help="the sweep's base point, e.g. agents=50,key-bits=512,windows=1 "
                        "(default: --agents, --key-bits, --windows)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="with --sweep: directory for sweep.json and the three plots")
    p.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    p.set_defaults(func=run)


def document(m: Measurement) -> dict[str, Any]:
    """The JSON line of one run (the fields before sessions first, unchanged)."""
    stats, windows = m.totals, m.point.windows
    waited = sum(s.offline_wait_seconds for s in m.per_window) / windows
    return {
        "agents": m.point.agents,
        "key_bits": m.point.key_bits,
        "windows": windows,
        "seconds_per_window": round(stats.online_seconds + stats.offline_wall_seconds, 4),
        "online_seconds_per_window": round(stats.online_seconds, 4),
        "bytes_per_agent_per_window": round(stats.bytes_per_agent),
        "matches_plaintext": m.matches_plaintext,
        "offline_seconds_per_window": round(stats.offline_wall_seconds, 3),
        "offline_cpu_seconds_per_window": round(stats.offline_seconds, 3),
        "setup_seconds": round(stats.setup_seconds, 2),
        "max_bytes_per_agent_per_window": stats.max_bytes_per_agent,
        "total_bytes_per_window": stats.total_bytes // windows,
        "messages_per_window": stats.messages // windows,
        "markets": list(m.markets),
        "processes": m.processes,
        "pool_misses": stats.pool_misses,
        "randomizers_used_per_window": stats.randomizers_used,
        "dgk_randomizers_used_per_window": stats.dgk_randomizers_used,
        "keygen_seconds": round(m.keygen_seconds, 3),
        "key_pairs_made": sum(s.keys_made for s in m.per_window),
        "offline_seconds": round(m.offline_seconds, 3),
        "offline_wait_seconds_per_window": round(waited, 4),
        "total_seconds_per_window": round(m.total_seconds_per_window, 4),
        "randomizers_made_by_window": [s.randomizers_made for s in m.per_window],
        "dgk_randomizers_made_by_window": [s.dgk_randomizers_made for s in m.per_window],
    }


def run(args: argparse.Namespace) -> int:
    """Run the benchmark (or the sweep) and print one JSON line."""
    from sealgrid.protocol.pem.sweep import Point, measure, run_sweep

    if args.agents < 2 or args.windows < 1 or args.processes < 1:
        raise CliError("need at least 2 agents, 1 window and 1 process")
    if (args.sweep is None) != (args.out is None):
        raise CliError("--sweep and --out go together: --sweep AXIS=V1,V2 ... --out DIR")
    if args.base is not None and args.sweep is None:
        raise CliError("--base is the base point of a --sweep")
    base = {"agents": args.agents, "key_bits": args.key_bits, "windows": args.windows,
            **(args.base or {})}
    try:
        point = Point(**base)
        if args.sweep is None:
            print(json.dumps(document(measure(point, processes=args.processes, seed=args.seed,
                                              sellers=args.sellers))))
            return 0
        out: Path = args.out
        if out.exists() and not out.is_dir():
            raise CliError(f"{out}: exists and is not a directory (--out is a directory)")
        try:  # before the sweep's minutes, not after
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CliError(f"{out}: cannot make the directory ({exc.strerror or exc})") from None
        axes: dict[str, tuple[int, ...]] = {}
        for axis, values in args.sweep:
            axes[axis] = tuple(dict.fromkeys(axes.get(axis, ()) + values))
        sweep = run_sweep(point, axes, processes=args.processes, seed=args.seed,
                          sellers=args.sellers)
    except PemInputError as exc:
        raise CliError(str(exc)) from None
    from sealgrid.sim.pem_sweep import write_sweep

    try:
        paths = write_sweep(sweep, out)
    except OSError as exc:
        raise CliError(f"{out}: cannot write the sweep ({exc.strerror or exc})") from None
    rows = sweep.rows()
    line = document(sweep.base_measurement)
    line["sweep"] = {
        "out": str(out),
        "points": len(rows),
        "axes": {axis: list(values) for axis, values in axes.items()},
        "all_match_plaintext": all(r["matches_plaintext"] for r in rows),
        "files": {what: str(path) for what, path in paths.items()},
    }
    print(json.dumps(line))
    return 0
