"""What one curious server sees, and a test that it does not depend on the bids.

Assumes the in-process parties of :mod:`sealgrid.protocol.inprocess` stand for real ones (the
same code and messages, without sockets). Server 0's view of a period is its stored share
rows and every array the other servers send it during validation, curves and outputs. The
final crossing runs inside MPyC (``net.clear``), whose privacy is MPyC's own; the in-process
stand-in hands party 0 everything at that one step, so that step is left out of the view.
:func:`homogeneity` is a chi-square test of homogeneity per position of the view, on the top
two and bottom two bits of each field element (16 cells), summed into one z statistic.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from sealgrid.mechanism.bids import OrderBook
from sealgrid.protocol import field as F
from sealgrid.protocol.encoding import Layout, ShareBatch, write_book_shares
from sealgrid.protocol.inprocess import Hub, HubTransport
from sealgrid.protocol.party import serve_period

LEVELS = 6
LAYOUT = Layout(LEVELS, 2, 10_000)
BINS = 16


def make_book(is_buy: list[bool], q: list[int], level: list[int],
              supplier: list[int]) -> OrderBook:
    """Return an order book over two suppliers ``s0``, ``s1``."""
    return OrderBook(np.array(is_buy, dtype=bool), np.array(q, dtype=np.int64),
                     np.array(level, dtype=np.int64), np.array(supplier, dtype=np.int64),
                     ("s0", "s1"))


# the same book but for slot 5, a losing buyer: 700 Wh at level 0 in A, 9,000 Wh at level 1 in B
_BASE = ([True, True, False, False, True], [4_000, 2_500, 3_000, 1_500, 800], [5, 3, 1, 2, 4],
         [0, 1, 0, 1, 1])
BOOK_A = make_book(_BASE[0] + [True], _BASE[1] + [700], _BASE[2] + [0], _BASE[3] + [0])
BOOK_B = make_book(_BASE[0] + [True], _BASE[1] + [9_000], _BASE[2] + [1], _BASE[3] + [0])


class Recording(HubTransport):
    """Party 0's transport, keeping everything it receives from the others."""

    def __init__(self, hub: Hub, pid: int, view: list[np.ndarray]) -> None:
        super().__init__(hub, pid)
        self.view = view

    async def all_to_all(self, own: np.ndarray) -> list[np.ndarray]:
        got = await super().all_to_all(own)
        self.view.extend(g.ravel() for i, g in enumerate(got) if i != self.pid)
        return got

    async def scatter(self, parts: list[np.ndarray]) -> list[np.ndarray]:
        got = await super().scatter(parts)
        self.view.extend(g.ravel() for i, g in enumerate(got) if i != self.pid)
        return got


def server0_view(book: OrderBook, root: Path) -> tuple[np.ndarray, Any]:
    """Run one period on ``book`` with fresh randomness; return (server 0's view, public)."""
    paths = [root / f"s{i}.bin" for i in range(3)]
    write_book_shares(book, LAYOUT, paths, key=secrets.token_bytes(16))
    batches = [ShareBatch.load(p) for p in paths]
    hub = Hub(3)
    view: list[np.ndarray] = [np.asarray(batches[0].rows).ravel().copy()]
    nets = [Recording(hub, 0, view), HubTransport(hub, 1), HubTransport(hub, 2)]

    async def run() -> list[Any]:
        return list(await asyncio.gather(
            *(serve_period(b, n) for b, n in zip(batches, nets, strict=True))))

    results = hub.mpc.run(run())
    return np.concatenate(view).astype(F.U64), results[0].public


def collect(book: OrderBook, root: Path, runs: int) -> tuple[np.ndarray, set[Any]]:
    """Return ``runs`` views of server 0 (rows) and the set of public outputs seen."""
    views, publics = [], set()
    for _ in range(runs):
        v, pub = server0_view(book, root)
        views.append(v)
        publics.add(pub)
    return np.stack(views), publics


def homogeneity(a: np.ndarray, b: np.ndarray) -> tuple[float, int, float]:
    """Chi-square homogeneity of two samples of views (rows = runs), per position, summed.

    Returns:
        (z of the summed statistic, its degrees of freedom, the smallest per-position
        p-value times the number of positions — Bonferroni). A position that is constant in
        both samples but different between them gives ``z = inf``.
    """
    def cells(x: np.ndarray) -> np.ndarray:
        return (((x >> np.uint64(62)) << np.uint64(2)) | (x & np.uint64(3))).astype(np.int64)

    bins_a, bins_b = cells(a), cells(b)
    total, df, worst = 0.0, 0, 1.0
    for j in range(a.shape[1]):
        ca = np.bincount(bins_a[:, j], minlength=BINS).astype(float)
        cb = np.bincount(bins_b[:, j], minlength=BINS).astype(float)
        col = ca + cb
        used = col > 0
        if used.sum() < 2:
            if not np.array_equal(ca, cb):
                return math.inf, df, 0.0
            continue
        ea = col[used] * ca.sum() / (ca.sum() + cb.sum())
        eb = col[used] * cb.sum() / (ca.sum() + cb.sum())
        stat = float((((ca[used] - ea) ** 2) / ea).sum() + (((cb[used] - eb) ** 2) / eb).sum())
        k = int(used.sum()) - 1
        total += stat
        df += k
        # Wilson–Hilferty: the chi-square(k) tail as a normal tail
        zz = ((stat / k) ** (1 / 3) - (1 - 2 / (9 * k))) / math.sqrt(2 / (9 * k))
        worst = min(worst, 0.5 * math.erfc(zz / math.sqrt(2)))
    z = (total - df) / math.sqrt(2 * df) if df else 0.0
    return z, df, worst * a.shape[1]


def curious_statistic(runs: int) -> dict[str, Any]:
    """Collect ``runs`` views for each bid set and return the test's figures."""
    with tempfile.TemporaryDirectory(prefix="sealgrid-curious-") as tmp:
        views_a, pub_a = collect(BOOK_A, Path(tmp), runs)
        views_b, pub_b = collect(BOOK_B, Path(tmp), runs)
    z, df, bonferroni = homogeneity(views_a, views_b)
    return {"runs_per_bid_set": runs, "view_elements": int(views_a.shape[1]),
            "same_public_outputs": pub_a == pub_b and len(pub_a) == 1,
            "chi_square_z": round(z, 3), "degrees_of_freedom": df,
            "min_p_times_positions": round(bonferroni, 4)}
