"""``sealgrid bench chaos``: the long runs of the reliability and security battery (one JSON line).

Parts (``--only`` picks some): ``fuzz`` (seeded mutation fuzzing, cases and escapes),
``crash`` (seeded SIGKILL runs at every moment and SIGSTOP runs: receipts, bids lost, how
periods ended, how fast a silent peer was noticed), ``rush`` (households at the gate: p99
latency, agreement), ``capture`` (a loopback capture of a whole period: hits), ``curious``
(the curious-server chi-square statistic), ``netns`` (servers in network namespaces, a link
cut mid-clearing; needs root).

The drivers (kill -9, network namespaces, raw sockets, a fuzzer) are test harness, not part of
the installed package: they live in the source checkout's ``tests/chaos/``. This command finds
that checkout beside the ``sealgrid`` package (an editable install or a run from the clone),
puts it on ``sys.path`` and imports ``tests.chaos`` only when it runs; without a checkout it
stops with a one-line error.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

import sealgrid
from sealgrid.cli import CliError

PARTS = ("fuzz", "crash", "rush", "capture", "curious", "netns")  # as tests.chaos.bench.PARTS
HARNESS = "tests.chaos.bench"


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sealgrid bench chaos``."""
    p = sub.add_parser("chaos", help="fuzzing, crash runs, gate rush, capture, curious server "
                                     "(needs a source checkout)")
    p.add_argument("--only", default=",".join(PARTS),
                   help=f"comma-separated parts to run (default all: {','.join(PARTS)})")
    p.add_argument("--fuzz-rounds", type=int, default=5000,
                   help="fuzz rounds (13 cases each; default 5000)")
    p.add_argument("--crash-runs", type=int, default=20, help="SIGKILL runs (default 20)")
    p.add_argument("--stop-runs", type=int, default=4, help="SIGSTOP runs (default 4)")
    p.add_argument("--crash-households", type=int, default=8)
    p.add_argument("--rush", type=int, default=10_000, help="households in the rush")
    p.add_argument("--rush-window", type=float, default=None,
                   help="seconds before the gate the rush starts (default: by size)")
    p.add_argument("--curious-runs", type=int, default=400, help="views per bid set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    p.set_defaults(func=run)


def checkout() -> Path | None:
    """The source checkout holding ``tests/chaos/`` beside the ``sealgrid`` package, or None."""
    root = Path(sealgrid.__file__).resolve().parents[1]
    return root if (root / "tests" / "chaos" / "__init__.py").is_file() else None


def harness() -> ModuleType:
    """Import ``tests.chaos.bench`` from the checkout; :class:`CliError` when there is none."""
    root = checkout()
    if root is None:
        raise CliError("sealgrid bench chaos needs a source checkout (its drivers live in "
                       "tests/chaos/ of the git repository, not in the installed package)")
    loaded = sys.modules.get("tests")
    if loaded is not None and (root / "tests") not in [
            Path(p).resolve() for p in getattr(loaded, "__path__", [])]:
        raise CliError(f"sealgrid bench chaos: another 'tests' package is already imported "
                       f"({getattr(loaded, '__file__', '?')}), not {root / 'tests'}")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(HARNESS)


def run(args: argparse.Namespace) -> int:
    """Run the chosen parts in a temporary directory and print one JSON line of figures."""
    parts = [p for p in args.only.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise CliError(f"unknown part(s) {sorted(unknown)}; choose from {', '.join(PARTS)}")
    out = harness().figures(
        parts, seed=args.seed, fuzz_rounds=args.fuzz_rounds, crash_runs=args.crash_runs,
        stop_runs=args.stop_runs, crash_households=args.crash_households,
        rush_households=args.rush, rush_window=args.rush_window,
        curious_runs=args.curious_runs)
    print(json.dumps(out, sort_keys=True))
    return 0
