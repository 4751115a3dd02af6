"""Oblivious clearing on secret-shared curves (MPyC); assumes a running MPyC runtime.

Input: shares of the demand ``D(k)`` and supply ``S(k)`` curves on P levels. The rule of SPEC §4
is evaluated without opening the curves, using that D is non-increasing and S non-decreasing,
so ``c(k) = [D(k) ≥ S(k)]`` is 1 up to a crossing ``j`` and 0 from there on:

* with ``c``, four inner products give ``S(j−1), D(j−1), S(j), D(j)``; ``V = min(D, S)`` is
  ``S`` left of ``j`` and ``D`` from ``j`` on, so ``max V = max(S(j−1), D(j))``;
* the levels that maximise V and then minimise ``I = |D − S|`` are a run ending at ``j−1``
  (where ``I(k) = I(j−1)``), a run starting at ``j`` (where ``I(k) = I(j)``), or both; one
  comparison of ``I`` with a per-level threshold measures both runs;
* the middle level (the lower of two) is ``start + ⌊(length − 1)/2⌋``, with one secure
  least-significant-bit extraction for the halving.

Two vectorised comparisons of length P and a handful of scalar ones. Opened, through the
disclosure door only: the volume (0 means no trade, and then nothing else), ``k*``,
``D(k*)`` and ``S(k*)``.
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


def _shifted(mpc: Any, x: Any, fill_last: bool) -> Any:
    """Return ``x(k+1)`` for every level; the last entry is ``x(P−1)`` or 0."""
    last = x[-1:] if fill_last else x[-1:] * 0
    return mpc.np_concatenate((x[1:], last)) if len(x) > 1 else last


async def clear_curves(mpc: Any, demand: Any, supply: Any, bound: int) -> Public:
    """Find the clearing level of secret-shared curves; open only the published outputs.

    Args:
        mpc: the MPyC runtime.
        demand, supply: secure integer arrays of length P (D non-increasing, S non-decreasing).
        bound: a public integer above every curve value (bids × max quantity + 1).
    """
    del bound  # every comparison below is between values of at most the curves' size
    p = len(demand)
    c = demand >= supply
    # Inner products with c: Σ c(k)·Δ(k) telescopes to a curve value at the crossing.
    d_prev = mpc.np_concatenate((demand[:1] * 0, demand[:-1])) if p > 1 else demand * 0
    s_prev = mpc.np_concatenate((supply[:1] * 0, supply[:-1])) if p > 1 else supply * 0
    rows = mpc.np_stack([supply - s_prev, demand - d_prev,
                         _shifted(mpc, demand, False) - demand,
                         _shifted(mpc, supply, True) - supply])
    at = mpc.np_matmul(rows, c)
    # 1-element arrays: S(j−1), D(j−1) (0 when j = 0); D(j), S(j) (D = 0 when j = P)
    s_left, d_left = at[0:1], at[1:2]
    d_right, s_right = demand[0:1] + at[2:3], supply[0:1] + at[3:4]
    i_left, i_right = d_left - s_left, s_right - d_right
    u, w = s_left - d_right, i_right - i_left
    flags = mpc.np_concatenate((u, -u, w, -w)) >= 0
    has_left, has_right, le_left, le_right = flags[0], flags[1], flags[2], flags[3]
    vmax = d_right[0] + has_left * (s_left[0] - d_right[0])
    i_left, i_right = i_left[0], i_right[0]
    v = int(await reveal("volume", vmax, mpc.output))
    if v == 0:
        return Public(None, 0, 0, 0)
    e = c * (supply - demand)
    imbalance = supply - demand - 2 * e  # |D − S| at every level
    threshold = i_right + c * (i_left - i_right)
    member = imbalance <= threshold  # in the run ending at j−1 (c = 1) or starting at j
    run_left = mpc.np_matmul(c, member)
    run_right = mpc.np_sum(member) - run_left
    crossing = mpc.np_sum(c)
    sel_left = has_left * (1 - has_right * (1 - le_left))
    sel_right = has_right * (1 - has_left * (1 - le_right))
    start = crossing - sel_left * run_left
    span = sel_left * run_left + sel_right * run_right - 1  # length − 1 ≥ 0
    odd = mpc.lsb(span)
    half = (span - odd) * _half(type(span))
    k = int(await reveal("clearing_level", start + half, mpc.output))
    d = int(await reveal("demand_at_clearing", demand[k], mpc.output))
    s = int(await reveal("supply_at_clearing", supply[k], mpc.output))
    return Public(k, v, d, s)


def _half(sectype: Any) -> Any:
    """The field element 1/2 of ``sectype``'s field (exact halving of an even value)."""
    field = sectype.field
    return field((field.order + 1) // 2)
