"""Oblivious clearing on secret-shared curves (MPyC); assumes a running MPyC runtime.

Input: shares of the demand ``D(k)`` and supply ``S(k)`` curves on P levels. The rule of SPEC §4
is evaluated without opening the curves, using that D is non-increasing and S non-decreasing:

* ``V = min(D, S)`` is unimodal, so ``max V = V(0) + Σ max(0, V(k+1) − V(k))``;
* the levels with ``V = max V`` are contiguous; on them ``|D − S|`` is unimodal (``D − S`` is
  monotone), so with the other levels set to a public bound its minimum is
  ``I(0) + Σ min(0, I(k+1) − I(k))``;
* the minimising levels are contiguous; with ``c(k)`` their running count and ``C`` the total,
  the middle (lower of two) is ``k* = #{k : 2·c(k) < C}``.

Five vectorised comparisons of length P. Opened, through the disclosure door only: the
volume (0 means no trade, and then nothing else), ``k*``, ``D(k*)`` and ``S(k*)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sealgrid.protocol.disclosure import reveal


@dataclass(frozen=True)
class Public:
    """The public outputs of one period."""

    level: int | None
    volume: int
    demand: int
    supply: int


async def clear_curves(mpc: Any, demand: Any, supply: Any, bound: int) -> Public:
    """Find the clearing level of secret-shared curves; open only the published outputs.

    Args:
        mpc: the MPyC runtime.
        demand, supply: secure integer arrays of length P.
        bound: a public integer above every |D − S| (e.g. bids × max quantity + 1).
    """
    e = mpc.np_multiply(demand >= supply, supply - demand)  # (D ≥ S)·(S − D)
    volume = demand + e  # min(D, S)
    imbalance = supply - demand - 2 * e  # |D − S|
    if len(volume) > 1:
        step = volume[1:] - volume[:-1]
        vmax = volume[0] + mpc.np_sum(mpc.np_multiply(step > 0, step))
    else:
        vmax = volume[0]
    v = int(await reveal("volume", vmax, mpc.output))
    if v == 0:
        return Public(None, 0, 0, 0)
    on_top = volume >= v
    masked = bound + mpc.np_multiply(on_top, imbalance - bound)
    if len(masked) > 1:
        step = masked[1:] - masked[:-1]
        imin = masked[0] + mpc.np_sum(mpc.np_multiply(step < 0, step))
    else:
        imin = masked[0]
    best = masked <= imin
    count = mpc.np_cumsum(best)
    total = count[-1]
    k = int(await reveal("clearing_level", mpc.np_sum(2 * count < total), mpc.output))
    d = int(await reveal("demand_at_clearing", demand[k], mpc.output))
    s = int(await reveal("supply_at_clearing", supply[k], mpc.output))
    return Public(k, v, d, s)
