"""Oblivious clearing on secret-shared curves (MPyC); assumes a running MPyC runtime.

Input: shares of the demand ``D(k)`` and supply ``S(k)`` curves on P levels. The rule of
:mod:`sealgrid.mechanism.auction` is evaluated without opening the curves, using that D is
non-increasing and S non-decreasing, so ``D(k) ≥ S(k)`` holds up to a crossing ``j`` and
fails from there on:

* every monotone count (like ``j = #{k : D(k) ≥ S(k)}``) is found with ``2·⌈√P⌉`` secure
  comparisons: the first level of each of ``⌈√P⌉`` blocks, then, inside the block that
  holds the change (selected obliviously by a one-hot product), every level;
* ``V = min(D, S)`` is ``S`` left of ``j`` and ``D`` from ``j`` on, so
  ``max V = max(S(j−1), D(j))``;
* the levels that maximise V and then minimise ``|D − S|`` are a run ending at ``j−1``
  (where ``D − S = D(j−1) − S(j−1)``), a run starting at ``j`` (where ``S − D = S(j) − D(j)``),
  or both: two more monotone counts give their ends;
* the middle level (the lower of two) is ``start + ⌊(length − 1)/2⌋``, with one secure
  least-significant-bit extraction for the halving.

* minimum participation: with the count curves ``CD(k)`` (accepted buyers at ``k``) and
  ``CS(k)``, ``CD(k*) ≥ m`` iff ``k* < #{k : CD(k) ≥ m}`` and ``CS(k*) ≥ m`` iff
  ``k* ≥ #{k : CS(k) < m}``: two more monotone counts and two comparisons, at the secret k*.

For P = 256: five rounds of comparisons and one bit extraction, whatever the curves (two more
with the minimum participation). Opened, through the disclosure door only: whether the period
trades (``V ≥ 1`` and, when asked, at least ``m`` accepted bids on each side) and, only if it
does, ``k*``. The volume ``V`` stays secret: its shares leave with the result (for the grid
operators and for the rationing), ``D(k*)`` and ``S(k*)`` are never opened.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sealgrid.protocol.disclosure import reveal


@dataclass(frozen=True)
class Public:
    """What the clearing opens: the clearing level ``k*``, or None when nothing trades."""

    level: int | None


def _next(mpc: Any, x: Any) -> Any:
    """``x`` shifted by one to the left, ending in 0: ``x(i+1)`` with ``x(len) = 0``."""
    return mpc.np_concatenate((x[1:], x[:1] * 0)) if len(x) > 1 else x * 0


def _blocks(mpc: Any, x: Any, b: int, fill: Any) -> Any:
    """Pad ``x`` to ``b² + 1`` entries with ``fill`` and cut it into rows ``x[bB : bB + b + 1]``."""
    pad = b * b + 1 - len(x)
    xp = mpc.np_concatenate([x] + [fill] * pad)
    return mpc.np_stack([xp[i * b:i * b + b + 1] for i in range(b)])


def _coarse(blocks: Any, shift: Any) -> list[Any]:
    """The values compared first: each block's first level, shifted."""
    return [m[:, 0] + s for m, s in zip(blocks, shift, strict=True)]


async def _count(mpc: Any, blocks: Any, shift: Any, b: int,
                 coarse: Any = None) -> tuple[Any, Any, Any, Any]:
    """Count the levels where ``x(k) + shift ≥ 0`` for x non-increasing, with 2b comparisons.

    Compares the first level of each block, selects the last block that starts true (a
    one-hot ``h`` over blocks, all zero when none does) and compares inside it. Several
    counts can share the calls: ``blocks`` is a list of (b, b+1) matrices, ``shift`` a list.
    ``coarse`` may pass the first comparisons' results when they were batched elsewhere.

    Returns:
        ``(counts, h, f, g0)`` per count: the count, the block one-hot, the in-block bits,
        and whether level 0 is true.
    """
    if coarse is None:
        coarse = mpc.np_concatenate(_coarse(blocks, shift)) >= 0
    hs, selected = [], []
    for i, m in enumerate(blocks):
        g = coarse[i * b:(i + 1) * b]
        h = g - _next(mpc, g)
        hs.append((h, g))
        selected.append(h @ m)
    sel = [s_ + shift[i] * hs[i][1][0] for i, s_ in enumerate(selected)]
    fine = mpc.np_concatenate([x[:b] for x in sel]) >= 0
    out = []
    for i in range(len(blocks)):
        f = fine[i * b:(i + 1) * b]
        h, g = hs[i]
        out.append((b * (mpc.np_sum(g) - 1) + mpc.np_sum(f), h, f, g[0]))
    return tuple(zip(*out, strict=True))  # type: ignore[return-value]


async def clear_curves(
    mpc: Any, demand: Any, supply: Any, bound: int,
    counts: tuple[Any, Any] | None = None, min_per_side: int = 1,
) -> tuple[Public, Any]:
    """Find the clearing level of secret-shared curves; open only whether and where it trades.

    Args:
        mpc: the MPyC runtime.
        demand, supply: secure integer arrays of length P (D non-increasing, S non-decreasing).
        bound: a public integer above every curve value (bids × max quantity + 1).
        counts: the accepted-bid count curves ``(CD, CS)`` (needed when ``min_per_side > 1``).
        min_per_side: accepted bids each side needs for the period to trade.

    Returns:
        ``(public, volume)``: the opened outcome and the secure ``V(k*)`` (None: no trade).
    """
    del bound  # every compared value is a curve value or difference: below 2^(l−2) already
    p = len(demand)
    b = max(1, math.isqrt(p - 1) + 1) if p > 1 else 1
    zero = demand[:1] * 0
    dm = _blocks(mpc, demand, b, zero)  # D(k) = 0 beyond the grid: still non-increasing
    sm = _blocks(mpc, supply, b, supply[-1:])  # S(k) = S(P−1) beyond: still non-decreasing
    x = dm - sm
    # The crossing j = #{k : D(k) ≥ S(k)} and the curves on both sides of it.
    (j,), (h,), (f,), (g0,) = await _count(mpc, [x], [zero[0]], b)
    e = f - _next(mpc, f)  # one-hot of j − 1 inside the selected block
    sel_d, sel_s = h @ dm, h @ sm
    at = mpc.np_matmul(mpc.np_stack([sel_s[:b], sel_d[:b], sel_d[1:], sel_s[1:]]), e)
    s_left, d_left = at[0:1], at[1:2]  # S(j−1), D(j−1): 0 when j = 0
    d_right = at[2:3] + (1 - g0) * demand[0:1]  # D(j): 0 when j = P
    s_right = at[3:4] + (1 - g0) * supply[0:1]
    i_left, i_right = d_left - s_left, s_right - d_right
    u, w = s_left - d_right, i_right - i_left
    # The run ending at j − 1 starts at #{k : D − S > I(j−1)}; the run starting at j ends
    # before #{k : D − S ≥ −I(j)}. Their first comparisons share a call with four flags.
    runs, shifts = [x, x], [-(i_left[0] + 1), i_right[0]]
    if counts is not None and min_per_side > 1:
        # #{k : CD(k) ≥ m} (CD non-increasing) and #{k : CS(k) ≤ m − 1} (−CS non-increasing)
        cd, cs = counts
        runs += [_blocks(mpc, cd, b, zero), _blocks(mpc, -cs, b, -cs[-1:])]
        shifts += [zero[0] - min_per_side, zero[0] + (min_per_side - 1)]
    batch = mpc.np_concatenate([u, -u, w, -w, *_coarse(runs, shifts)]) >= 0
    has_left, has_right, le_left, le_right = batch[0], batch[1], batch[2], batch[3]
    vmax = d_right[0] + has_left * (s_left[0] - d_right[0])
    ends, _, _, _ = await _count(mpc, runs, shifts, b, coarse=batch[4:])
    start_left, end_right = ends[0], ends[1]
    run_left, run_right = j - start_left, end_right - j
    sel_left = has_left * (1 - has_right * (1 - le_left))
    sel_right = has_right * (1 - has_left * (1 - le_right))
    start = j - sel_left * run_left
    span = sel_left * run_left + sel_right * run_right - 1  # length − 1 ≥ 0 when V > 0
    odd = mpc.lsb(span)
    half = (span - odd) * _half(type(span))
    k = start + half
    conditions = [vmax - 1]  # V ≥ 1
    if len(ends) == 4:  # k* < #{CD ≥ m} and k* ≥ #{CS < m}
        conditions += [ends[2] - 1 - k, k - ends[3]]
    flags = mpc.np_fromlist(conditions) >= 0
    trade = flags[0]
    for i in range(1, len(conditions)):
        trade = trade * flags[i]
    if not int(await reveal("trade", trade, mpc.output)):
        return Public(None), None
    level = int(await reveal("clearing_level", k, mpc.output))
    return Public(level), vmax


def _half(sectype: Any) -> Any:
    """The field element 1/2 of ``sectype``'s field (exact halving of an even value)."""
    field = sectype.field
    return field((field.order + 1) // 2)
