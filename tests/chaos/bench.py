"""The figures of ``sealgrid bench chaos``: run the chosen parts in a temporary directory.

Called by :mod:`sealgrid.cli.bench_chaos`, which only parses arguments and finds this
checkout; the parts are the drivers of this package (see its docstring).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

PARTS = ("fuzz", "crash", "rush", "capture", "curious", "netns")


def figures(parts: Collection[str], *, seed: int = 0, fuzz_rounds: int = 5000,
            crash_runs: int = 20, stop_runs: int = 4, crash_households: int = 8,
            rush_households: int = 10_000, rush_window: float | None = None,
            curious_runs: int = 400) -> dict[str, Any]:
    """Run ``parts`` (a subset of :data:`PARTS`) and return their figures as one dict."""
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown part(s) {sorted(unknown)}; choose from {', '.join(PARTS)}")
    out: dict[str, Any] = {"target": "chaos", "seed": seed, "cpu_count": os.cpu_count()}
    tmp = Path(tempfile.mkdtemp(prefix="sealgrid-chaos-"))
    started = time.perf_counter()
    try:
        if "fuzz" in parts:
            from .fuzz import fuzz

            out["fuzz"] = fuzz(fuzz_rounds, seed)
        if "curious" in parts:
            from .curious import curious_statistic

            out["curious"] = curious_statistic(curious_runs)
        if "crash" in parts:
            from .crash import MOMENTS, crash_run, summary

            runs = []
            for k in range(crash_runs):
                moment = MOMENTS[1 + k % (len(MOMENTS) - 1)]
                runs.append(asyncio.run(crash_run(tmp / f"crash{k}", seed * 1000 + k,
                                                  moment=moment, households=crash_households)))
            for k in range(stop_runs):
                moment = ("receiving", "clearing")[k % 2]
                runs.append(asyncio.run(crash_run(tmp / f"stop{k}", seed * 1000 + 500 + k,
                                                  moment=moment, stop=True,
                                                  households=crash_households)))
            out["crash"] = summary(runs)
        if "capture" in parts:
            from .capture import capture_period

            out["capture"] = asyncio.run(capture_period(tmp / "capture", seed))
        if "netns" in parts:
            from .netns import run_in_namespaces

            out["netns"] = run_in_namespaces(tmp / "netns", cut=True)
        if "rush" in parts:
            from .rush import rush

            out["rush"] = asyncio.run(rush(tmp / "rush", rush_households, window=rush_window,
                                           seed=seed))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out
