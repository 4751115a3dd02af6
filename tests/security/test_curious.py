"""Threat: privacy breach by a curious server (abidin2016 §3.2: honest-but-curious servers).

Assumes the in-process parties of :mod:`sealgrid.protocol.inprocess` stand for real ones (the
same code and messages, without sockets). Server 0's complete view of a period — its stored
share rows and every array the other servers send it during validation, curves and outputs —
is collected many times for two bid sets with the same public outputs. A chi-square test of
homogeneity (top and bottom two bits of each field element, per position of the view) must not tell
them apart; the same test on the plaintext vectors must (its power, as a control). The
final crossing runs inside MPyC (``net.clear``), whose privacy is MPyC's own; the in-process
stand-in hands party 0 everything at that one step, so that step is left out of the view.
"""

from __future__ import annotations

import asyncio
import math
import secrets
from pathlib import Path

import numpy as np

from sealgrid.mechanism.auction import clear
from sealgrid.protocol import field as F
from sealgrid.protocol.encoding import Layout, ShareBatch, plain_vectors, write_book_shares
from sealgrid.protocol.inprocess import Hub, HubTransport
from sealgrid.protocol.party import serve_period
from tests.protocol.secure_helpers import book

LEVELS = 6
LAYOUT = Layout(LEVELS, 2, 10_000)
# the same book but for slot 5, a losing buyer: 700 Wh at level 0 in A, 9,000 Wh at level 1 in B
BASE = ([True, True, False, False, True], [4_000, 2_500, 3_000, 1_500, 800], [5, 3, 1, 2, 4],
        [0, 1, 0, 1, 1])
BOOK_A = book(BASE[0] + [True], BASE[1] + [700], BASE[2] + [0], BASE[3] + [0])
BOOK_B = book(BASE[0] + [True], BASE[1] + [9_000], BASE[2] + [1], BASE[3] + [0])
RUNS = 150
BINS = 16  # top two bits × bottom two bits of each field element


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


def server0_view(b, root: Path):  # type: ignore[no-untyped-def]
    """Run one period on ``b`` with fresh randomness; return (server 0's view, public)."""
    paths = [root / f"s{i}.bin" for i in range(3)]
    write_book_shares(b, LAYOUT, paths, key=secrets.token_bytes(16))
    batches = [ShareBatch.load(p) for p in paths]
    hub = Hub(3)
    view: list[np.ndarray] = [np.asarray(batches[0].rows).ravel().copy()]
    nets = [Recording(hub, 0, view)] + [HubTransport(hub, i) for i in (1, 2)]

    async def run():  # type: ignore[no-untyped-def]
        return await asyncio.gather(*(serve_period(bt, n) for bt, n in zip(batches, nets)))

    results = hub.mpc.run(run())
    return np.concatenate(view).astype(F.U64), results[0].public


def homogeneity(a: np.ndarray, b: np.ndarray) -> tuple[float, int, float]:
    """Chi-square homogeneity of two samples of views (rows = runs), per position, summed.

    Returns:
        (z, degrees of freedom, the smallest per-position p-value times the positions).
    """
    from math import erfc

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
            if not np.array_equal(ca, cb):  # both constant but different: a perfect leak
                return math.inf, df, 0.0
            continue
        ea = col[used] * ca.sum() / (ca.sum() + cb.sum())
        eb = col[used] * cb.sum() / (ca.sum() + cb.sum())
        stat = float((((ca[used] - ea) ** 2) / ea).sum() + (((cb[used] - eb) ** 2) / eb).sum())
        k = int(used.sum()) - 1
        total += stat
        df += k
        # Wilson–Hilferty: chi-square(k) tail as a normal tail
        zz = ((stat / k) ** (1 / 3) - (1 - 2 / (9 * k))) / math.sqrt(2 / (9 * k))
        worst = min(worst, 0.5 * erfc(zz / math.sqrt(2)))
    z = (total - df) / math.sqrt(2 * df) if df else 0.0
    return z, df, worst * a.shape[1]


def collect(b, root: Path, runs: int = RUNS):  # type: ignore[no-untyped-def]
    views, publics = [], set()
    for _ in range(runs):
        v, pub = server0_view(b, root)
        views.append(v)
        publics.add(pub)
    return np.stack(views), publics


def test_the_bid_sets_have_the_same_public_outputs() -> None:
    a, b = clear(BOOK_A, LEVELS), clear(BOOK_B, LEVELS)
    assert a.level is not None
    for field in ("level", "volume_wh", "demand_wh", "supply_wh", "supplier_bought_wh",
                  "supplier_sold_wh", "denominator_buy", "denominator_sell"):
        assert getattr(a, field) == getattr(b, field), field
    assert not a.accepted[5] and not b.accepted[5]
    assert not np.array_equal(plain_vectors(LAYOUT, BOOK_A.is_buy, BOOK_A.quantity_wh,
                                            BOOK_A.level, BOOK_A.supplier),
                              plain_vectors(LAYOUT, BOOK_B.is_buy, BOOK_B.quantity_wh,
                                            BOOK_B.level, BOOK_B.supplier))


def test_one_servers_view_has_the_same_distribution_for_both_bid_sets(tmp_path: Path) -> None:
    views_a, pub_a = collect(BOOK_A, tmp_path)
    views_b, pub_b = collect(BOOK_B, tmp_path)
    assert pub_a == pub_b and len(pub_a) == 1
    z, df, bonferroni = homogeneity(views_a, views_b)
    print(f"curious-server view: {views_a.shape[1]} elements, {RUNS}+{RUNS} runs, "
          f"chi-square z = {z:.2f} on {df} df, min p × positions = {bonferroni:.3g}")
    assert abs(z) < 4.0, f"server 0's view depends on the bids (z = {z:.1f})"
    assert bonferroni > 1e-4, "one position of server 0's view depends on the bids"


def test_the_statistic_sees_a_leak_when_there_is_one(tmp_path: Path) -> None:
    """Power: the same test on the plaintext vectors (a view with no sharing) fails loudly."""
    def plain(b):  # type: ignore[no-untyped-def]
        row = plain_vectors(LAYOUT, b.is_buy, b.quantity_wh, b.level, b.supplier).ravel()
        return np.stack([row] * 40)

    z, _, bonferroni = homogeneity(plain(BOOK_A), plain(BOOK_B))
    assert z == math.inf or z > 50
    # and a subtle leak: the real views with one element's lowest bit set by the bid set
    views_a, _ = collect(BOOK_A, tmp_path, 60)
    views_b, _ = collect(BOOK_B, tmp_path, 60)
    views_a[:, 7] = views_a[:, 7] & ~np.uint64(1)
    views_b[:, 7] = views_b[:, 7] | np.uint64(1)
    z2, _, bonferroni2 = homogeneity(views_a, views_b)
    assert bonferroni2 < 1e-4 or z2 > 4
    _ = bonferroni
