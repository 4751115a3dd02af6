"""Paper xie2020's Fig. 5 reproduced: the PEM sweep's table (``sweep.json``) and three plots.

Assumes matplotlib with the Agg backend. The points are measured by
:mod:`sealgrid.protocol.pem.sweep`; this module only writes them: one row per point, and per
axis (windows, key size, agents) a PNG of the online and the total time per window against it,
each axis naming its unit, with the only number the paper's text gives for these curves (about
1 s per window, §VII-B) drawn as a reference line and the figures it gives no numbers for said
so on the plot.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from sealgrid.protocol.pem.sweep import AXES, PAPER, Sweep

#: The files a sweep writes, by what they hold.
FILES = {"table": "sweep.json", "windows": "time_vs_windows.png",
         "key_bits": "time_vs_key_bits.png", "agents": "time_vs_agents.png"}
#: Units of the rows' fields.
UNITS = {
    "agents": "households", "key_bits": "bits", "windows": "trading windows",
    "offline_seconds": "s (wall, whole run)", "online_seconds_per_window": "s (wall)",
    "total_seconds_per_window": "s (wall)", "bytes_per_agent_per_window": "bytes",
    "keygen_seconds": "s (wall)", "pool_seconds_per_window": "s (wall)",
    "offline_cpu_seconds": "s (CPU, all processes, whole run)",
    "offline_wait_seconds_per_window": "s (wall)", "setup_seconds": "s (wall)",
}
_XLABEL = {"windows": "trading windows in the run (count)", "key_bits": "key size (bits)",
           "agents": "agents (households)"}
_NAME = {"windows": "windows", "key_bits": "key size", "agents": "agents"}
_NOTE = {
    "windows": "Paper, Fig. 5(a): per-window runtime for 1 to 720 windows; its text gives only "
               "'around 1 sec'.",
    "key_bits": "Paper, Fig. 5(b) (200 agents, total runtime by key size): no numbers in its "
                "text, only that key size 'does not affect the runtime'.",
    "agents": "Paper, Fig. 5(c) (total runtime by agents): no numbers in its text, only that it "
              "'increases as the number of agents increases'.",
}


def sweep_document(sweep: Sweep) -> dict[str, Any]:
    """``sweep.json``: the base point, the axes, one row per point, units and the paper."""
    base = sweep.base_measurement
    return {
        "base": asdict(sweep.base),
        "axes": {axis: list(values) for axis, values in sweep.axes.items()},
        "processes": base.processes,
        "seed": base.seed,
        "rows": sweep.rows(),
        "units": UNITS,
        "paper": PAPER,
    }


def write_sweep(sweep: Sweep, out: Path) -> dict[str, Path]:
    """Write ``sweep.json`` and the three plots into ``out`` (made if missing); their paths.

    Raises:
        OSError: ``out`` cannot be made or written.
    """
    out.mkdir(parents=True, exist_ok=True)
    doc = sweep_document(sweep)
    paths = {what: out / name for what, name in FILES.items()}
    paths["table"].write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    for axis in AXES:
        plot_axis(doc["rows"], doc["base"], axis, paths[axis])
    return paths


def _fixed(base: Mapping[str, int], axis: str) -> str:
    parts = {"agents": f"{base['agents']} agents", "key_bits": f"{base['key_bits']}-bit keys",
             "windows": f"{base['windows']} window{'s' if base['windows'] != 1 else ''}"}
    return ", ".join(text for name, text in parts.items() if name != axis)


def plot_axis(rows: Sequence[Mapping[str, Any]], base: Mapping[str, int], axis: str,
              path: Path) -> Path:
    """One plot: online and total seconds per window against ``axis``, the others at the base.

    Rows on the axis are those whose ``axes`` name it; with none, the base point alone.
    """
    on = sorted((r for r in rows if axis in r["axes"]), key=lambda r: r[axis])
    if not on:
        on = [r for r in rows if all(r[a] == base[a] for a in AXES)][:1]
    x = [r[axis] for r in on]
    fig, ax = plt.subplots(figsize=(7, 4.6))
    ax.plot(x, [r["online_seconds_per_window"] for r in on], marker="o", lw=2,
            label="online: the window's Protocols 1–4")
    ax.plot(x, [r["total_seconds_per_window"] for r in on], marker="s", lw=2, ls="--",
            label="total: key generation, pool filling and online, over the run's windows")
    ax.axhline(PAPER["seconds_per_window"], color="#555555", ls=":", lw=1.5,
               label="paper §VII-B (Fig. 5a): 'around 1 sec' per window")
    ax.set_yscale("log")
    if axis == "key_bits":
        ax.set_xscale("log", base=2)
    ax.set_xticks(x)
    ax.set_xticklabels([str(v) for v in x])
    ax.minorticks_off()
    ax.set_xlabel(_XLABEL[axis])
    ax.set_ylabel("seconds per window (s, log scale)")
    ax.set_title(f"Private PEM: time per window against {_NAME[axis]}\n"
                 f"({_fixed(base, axis)}; this machine)", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.text(0.01, 0.01, _NOTE[axis], fontsize=7, color="#333333")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
