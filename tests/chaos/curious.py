"""What one curious server sees, and tests that it does not depend on the bids.

Assumes the in-process parties of :mod:`sealgrid.protocol.inprocess` stand for real ones (the
same code and messages, without sockets). Server 0's view of a period is its stored share
rows, every array the other servers send it (``all_to_all`` openings and ``scatter``
reshares), its own share of every value it opens (so that each opened value is a linear
combination of three view positions) and its output shares. The final crossing runs inside
MPyC (``net.clear``), whose privacy is MPyC's own; the in-process stand-in hands party 0
everything at that one step, so that step is left out of the view (its opened ``trade`` and
``clearing_level`` are the public outputs).

Two statistics compare samples of views for two bid sets:

* :func:`homogeneity`, a chi-square test of homogeneity per position of the view, on the top
  two and bottom two bits of each field element (16 cells), summed into one z statistic. It
  sees a position whose distribution depends on the bids, and nothing across positions.
* :func:`affine_hull`, exact linear algebra over GF(p): with more views than positions, the
  affine hull of one bid set's views is the set of every linear relation ``Σ c_i·x_i = d``
  that its views obey. Two bid sets whose views obey different relations (two positions
  whose sum is a bid value, an opened value that is the bid instead of a masked one) have
  different hulls, however uniform each position is on its own. Random projections with
  fresh coefficients cannot see such a leak (``c_a·x_a + c_b·x_b`` with ``x_a + x_b = v`` is
  uniform unless ``c_a = c_b``), which is why the hull is computed instead.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sealgrid.mechanism.bids import OrderBook
from sealgrid.protocol import disclosure
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

# Small books for the affine-hull test (it needs more views than positions): 4 levels, 12 Wh
# at most, 7 bids. Both clear at level 2 with at least 3 accepted bids a side, so they trade
# under min_per_side=3 too; everything the servers must not learn differs: the side of each
# slot, the number of buyers (4 and 3), every quantity, the volume (16 and 18 Wh), D(k*) and
# S(k*), the suppliers' totals.
SMALL_LEVELS = 4
SMALL_LAYOUT = Layout(SMALL_LEVELS, 2, 12)
BOOK_C = make_book([True, True, True, True, False, False, False], [5, 7, 4, 9, 6, 3, 8],
                   [3, 2, 2, 0, 0, 1, 2], [0, 1, 0, 1, 0, 1, 0])
BOOK_D = make_book([True, False, True, False, True, False, False], [11, 12, 2, 1, 5, 5, 10],
                   [3, 0, 2, 2, 3, 1, 3], [1, 1, 0, 0, 0, 1, 0])


class Recording(HubTransport):
    """Party 0's transport, keeping everything it sends in openings and receives.

    ``labels`` names each kept array: ``"a2a <names> from <party>"`` for an opening (the names
    the disclosure door admitted for it; ``from 0`` is party 0's own share), ``"scatter <round>
    from <party>"`` for a reshare piece. ``cleared`` holds the names opened inside ``clear``
    (MPyC's step, outside the view: its openings are the public outputs).
    """

    def __init__(self, hub: Hub, pid: int, view: list[np.ndarray], labels: list[str]) -> None:
        super().__init__(hub, pid)
        self.view = view
        self.labels = labels
        self.cleared: list[str] = []
        self._logged = len(disclosure.LOG)
        self._seen: set[str] = set()

    def _new_names(self) -> list[str]:
        """Names admitted since the last call (every party logs them; each name once)."""
        fresh = [n for n in dict.fromkeys(disclosure.LOG[self._logged:]) if n not in self._seen]
        self._logged = len(disclosure.LOG)
        self._seen.update(fresh)
        return fresh

    async def all_to_all(self, own: np.ndarray) -> list[np.ndarray]:
        names = ",".join(self._new_names()) or "sync"
        got = await super().all_to_all(own)
        for i, g in enumerate(got):  # its own share too: an opened value is Σ λ_i·share_i
            self.view.append(np.asarray(g).ravel())
            self.labels.append(f"a2a {names} from {i}")
        return got

    async def scatter(self, parts: list[np.ndarray]) -> list[np.ndarray]:
        got = await super().scatter(parts)
        for i, g in enumerate(got):
            if i != self.pid:
                self.view.append(np.asarray(g).ravel())
                self.labels.append(f"scatter {self.round} from {i}")
        return got

    async def clear(
        self, demand: np.ndarray, supply: np.ndarray, bound: int,
        counts: tuple[np.ndarray, np.ndarray] | None, min_per_side: int,
    ) -> tuple[Any, np.ndarray]:
        self._new_names()  # names opened before the clearing already label their message
        out = await super().clear(demand, supply, bound, counts, min_per_side)
        self.cleared += self._new_names()
        return out

    async def floor_shift(self, values: np.ndarray, bits: int, shift: int) -> np.ndarray:
        """MPyC's exact truncation (the settlement's, for households without a reading):
        like ``clear``, MPyC's own step; its result shares are kept in the view."""
        out = await super().floor_shift(values, bits, shift)
        self.view.append(np.asarray(out).ravel())
        self.labels.append("floor_shift result")
        return out


@dataclass(frozen=True)
class View:
    """One run's view of server 0: the elements, a label per element, the public outputs."""

    elements: np.ndarray
    labels: tuple[str, ...]
    public: Any
    cleared: tuple[str, ...]  # names opened inside the MPyC clearing (the public outputs)


def record(book: OrderBook, root: Path, layout: Layout = LAYOUT,
           min_per_side: int = 1) -> View:
    """Run one period on ``book`` with fresh randomness; return server 0's labelled view."""
    paths = [root / f"s{i}.bin" for i in range(3)]
    write_book_shares(book, layout, paths, key=secrets.token_bytes(16))
    batches = [ShareBatch.load(p) for p in paths]
    hub = Hub(3)
    view: list[np.ndarray] = [np.asarray(batches[0].rows).ravel().copy()]
    labels = ["stored rows"]
    recording = Recording(hub, 0, view, labels)
    nets = [recording, HubTransport(hub, 1), HubTransport(hub, 2)]

    async def run() -> list[Any]:
        return list(await asyncio.gather(
            *(serve_period(b, n, min_per_side) for b, n in zip(batches, nets, strict=True))))

    results = hub.mpc.run(run())
    mine = results[0]
    for name in ("households", "suppliers", "volume"):  # what it keeps for the readers
        view.append(np.asarray(getattr(mine, name)).ravel())
        labels.append(f"output {name}")
    expanded = tuple(lab for v, lab in zip(view, labels, strict=True) for _ in range(v.size))
    return View(F.reduce(np.concatenate(view).astype(F.U64)), expanded, mine.public,
                tuple(recording.cleared))


def server0_view(book: OrderBook, root: Path, layout: Layout = LAYOUT,
                 min_per_side: int = 1) -> tuple[np.ndarray, Any]:
    """Run one period on ``book`` with fresh randomness; return (server 0's view, public)."""
    v = record(book, root, layout, min_per_side)
    return v.elements, v.public


def collect_labelled(book: OrderBook, root: Path, runs: int, layout: Layout = LAYOUT,
                     min_per_side: int = 1) -> tuple[np.ndarray, set[Any], tuple[str, ...]]:
    """Return ``runs`` views of server 0 (rows), the public outputs seen and the labels.

    Raises:
        AssertionError: the kinds or sizes of server 0's messages changed between runs.
    """
    views, publics, shapes = [], set(), set()
    for _ in range(runs):
        v = record(book, root, layout, min_per_side)
        views.append(v.elements)
        publics.add(v.public)
        shapes.add(v.labels)
    if len(shapes) != 1:
        raise AssertionError("server 0's messages differ in kind or size from run to run")
    return np.stack(views), publics, shapes.pop()


def collect(book: OrderBook, root: Path, runs: int, layout: Layout = LAYOUT,
            min_per_side: int = 1) -> tuple[np.ndarray, set[Any]]:
    """Return ``runs`` views of server 0 (rows) and the set of public outputs seen."""
    views, publics, _ = collect_labelled(book, root, runs, layout, min_per_side)
    return views, publics


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


def rank_mod_p(rows: np.ndarray) -> int:
    """The rank over GF(p) of a matrix of field elements (Gaussian elimination, exact)."""
    m = F.reduce(np.asarray(rows, dtype=F.U64))
    n, d = m.shape
    r = 0
    for col in range(d):
        if r == n:
            break
        nz = np.flatnonzero(m[r:, col])
        if nz.size == 0:
            continue
        pivot = r + int(nz[0])
        if pivot != r:
            m[[r, pivot]] = m[[pivot, r]]
        inv = pow(int(m[r, col]), F.MODULUS - 2, F.MODULUS)
        m[r, col:] = F.mul(m[r, col:], F.const(inv))
        below = r + 1 + np.flatnonzero(m[r + 1:, col])
        if below.size:
            factor = m[below, col][:, None]
            m[below, col:] = F.sub(m[below, col:], F.mul(factor, m[r, col:][None, :]))
        r += 1
    return r


def affine_hull(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int]:
    """Compare the affine hulls of two samples of views (rows = runs) over GF(p).

    Returns:
        ``(rank_a, rank_b, rank_ab)``: the dimensions of the hull of ``a``, of ``b`` and of
        both together. The views of the two bid sets obey the same linear relations exactly
        when the three are equal; with more runs than positions each hull is the whole
        support's (a sample of a uniform distribution on an affine space of dimension r
        spans it after r + 1 runs except with probability about r/p).
    """
    origin = F.reduce(a[:1])
    ca = F.sub(F.reduce(a), origin)
    cb = F.sub(F.reduce(b), origin)
    rank_a = rank_mod_p(ca)
    rank_b = rank_mod_p(F.sub(cb, cb[:1]))
    return rank_a, rank_b, rank_mod_p(np.concatenate([ca, cb]))


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
