"""``sealgrid bench TARGET``: benchmarks that print one JSON line each (never timed tests)."""

from __future__ import annotations

import argparse

from sealgrid.cli import register_bench_targets


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sealgrid bench`` and every ``bench_<target>`` module under it."""
    parser = sub.add_parser("bench", help="run a benchmark and print one JSON line")
    targets = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    register_bench_targets(targets)
