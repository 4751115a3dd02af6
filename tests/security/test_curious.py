"""Threat: privacy breach by a curious server (abidin2016 §3.2: honest-but-curious servers).

Assumes the in-process parties stand for real ones (see :mod:`tests.chaos.curious`).
Server 0's complete view of a period — its stored share rows, every array the other servers
send it (openings and reshares), its own share of every opened value and its output shares —
is collected many times for two bid sets with the same public outputs. A chi-square test of
homogeneity per position must not tell them apart; the same test on the plaintext vectors,
and on views with one planted leaky bit, must (its power, as a control). The per-position
test is blind across positions, so the views of two small books (more runs than positions,
with ``min_per_side`` 1 and 3) must also obey exactly the same linear relations over GF(p);
planted leaks that no single position shows (two positions summing to a quantity, an opening
that gives the quantity instead of a masked one) must break that. Fresh randomness each run:
the false-alarm rate of the chi-square thresholds is about 1e-4; the linear test has none
beyond about 2^-55.
"""

from __future__ import annotations

import inspect
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest

from sealgrid.mechanism.auction import clear
from sealgrid.protocol import disclosure
from sealgrid.protocol import field as F
from sealgrid.protocol.billing import OPENED as SETTLEMENT_OPENS
from sealgrid.protocol.encoding import plain_vectors
from sealgrid.protocol.mpcclear import Public
from sealgrid.protocol.party import Transport
from tests.chaos.curious import (
    BOOK_A,
    BOOK_B,
    BOOK_C,
    BOOK_D,
    LAYOUT,
    LEVELS,
    SMALL_LAYOUT,
    SMALL_LEVELS,
    Recording,
    affine_hull,
    collect,
    collect_labelled,
    homogeneity,
    record,
)

RUNS = 150


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
    views_a, pub_a = collect(BOOK_A, tmp_path, RUNS)
    views_b, pub_b = collect(BOOK_B, tmp_path, RUNS)
    assert pub_a == pub_b and len(pub_a) == 1
    z, df, bonferroni = homogeneity(views_a, views_b)
    print(f"curious-server view: {views_a.shape[1]} elements, {RUNS}+{RUNS} runs, "
          f"chi-square z = {z:.2f} on {df} df, min p × positions = {bonferroni:.3g}")
    assert abs(z) < 4.0, f"server 0's view depends on the bids (z = {z:.1f})"
    assert bonferroni > 1e-4, "one position of server 0's view depends on the bids"


def test_the_statistic_sees_a_leak_when_there_is_one(tmp_path: Path) -> None:
    """Power: the same test on the plaintext vectors (a view with no sharing) fails loudly."""
    def plain(b):
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


# --- across positions: two small books, more runs than view positions --------------------

_SMALL: dict[int, tuple[np.ndarray, np.ndarray, tuple[str, ...]]] = {}


def small_views(min_per_side: int) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Views of BOOK_C and BOOK_D (a few more runs than positions), collected once a module."""
    if min_per_side not in _SMALL:
        with tempfile.TemporaryDirectory(prefix="sealgrid-curious-") as tmp:
            root = Path(tmp)
            size = record(BOOK_C, root, SMALL_LAYOUT, min_per_side).elements.size
            a, pub_a, labels = collect_labelled(BOOK_C, root, size + 4, SMALL_LAYOUT,
                                                min_per_side)
            b, pub_b, labels_b = collect_labelled(BOOK_D, root, size + 4, SMALL_LAYOUT,
                                                  min_per_side)
        assert pub_a == pub_b == {Public(2)}, "the small books must trade alike"
        assert labels == labels_b, "server 0's messages differ in kind or size between books"
        _SMALL[min_per_side] = (a, b, labels)
    return _SMALL[min_per_side]


def test_the_small_books_trade_alike_and_differ_in_everything_the_servers_must_not_learn(
) -> None:
    for m in (1, 3):
        c, d = (clear(x, SMALL_LEVELS, min_accepted_per_side=m) for x in (BOOK_C, BOOK_D))
        assert c.level == d.level == 2
        assert (c.volume_wh, c.demand_wh, c.supply_wh) == (16, 16, 17)
        assert (d.volume_wh, d.demand_wh, d.supply_wh) == (18, 18, 18)
        for x, r in ((BOOK_C, c), (BOOK_D, d)):  # at least 3 accepted bids on each side
            assert (r.accepted & x.is_buy).sum() >= 3 and (r.accepted & ~x.is_buy).sum() >= 3
    assert (BOOK_C.is_buy != BOOK_D.is_buy).any() and BOOK_C.is_buy.sum() != BOOK_D.is_buy.sum()
    assert (BOOK_C.quantity_wh != BOOK_D.quantity_wh).all()


@pytest.mark.parametrize("min_per_side", [1, 3])
def test_the_view_holds_every_message_server_0_sends_or_receives(
    tmp_path: Path, min_per_side: int
) -> None:
    """Every data-carrying method of a transport is recorded, and every opened name is seen."""
    carrying = {n for n, f in vars(Transport).items() if inspect.iscoroutinefunction(f)}
    assert carrying == {"all_to_all", "scatter", "clear", "floor_shift"}, "a new message primitive"
    assert carrying <= set(vars(Recording)), "Recording misses a message primitive"
    before = len(disclosure.LOG)
    v = record(BOOK_C, tmp_path, SMALL_LAYOUT, min_per_side)
    opened = set(disclosure.LOG[before:])
    in_view = {n for lab in v.labels if lab.startswith("a2a ")
               for n in lab.split()[1].split(",")} - {"sync"}
    assert v.cleared == ("trade", "clearing_level")
    assert in_view | set(v.cleared) == opened
    want = set(disclosure.DISCLOSED) - {"trade", "clearing_level"} - set(SETTLEMENT_OPENS)
    if min_per_side == 1:
        want.discard("masked_quantities")
    assert in_view == want, "an opening of a traded period is missing from the view"
    for name in sorted(in_view):  # the opening is in the view from all three parties
        senders = {lab.rsplit(" ", 1)[1] for lab in v.labels if name in lab}
        assert senders == {"0", "1", "2"}, name
    scatter = {lab for lab in v.labels if lab.startswith("scatter ")}
    rounds = {lab.split()[1] for lab in scatter}
    # reshares: curves, accepted, totals, ratios, outputs (+ e/q with a minimum above 1)
    assert len(rounds) == (5 if min_per_side == 1 else 6)
    assert all(any(lab == f"scatter {r} from {j}" for lab in scatter)
               for r in rounds for j in (1, 2))
    assert {"output households", "output suppliers", "output volume"} <= set(v.labels)


@pytest.mark.parametrize("min_per_side", [1, 3])
def test_views_obey_the_same_linear_relations_for_both_books(min_per_side: int) -> None:
    a, b, _ = small_views(min_per_side)
    rank_a, rank_b, rank_ab = affine_hull(a, b)
    print(f"min_per_side={min_per_side}: {a.shape[1]} positions, {len(a)}+{len(b)} runs, "
          f"hull dimensions {rank_a}, {rank_b}, together {rank_ab}")
    assert rank_a == rank_b == rank_ab, "server 0's view obeys a relation that depends on bids"


@pytest.mark.parametrize("min_per_side", [1, 3])
def test_views_of_the_small_books_pass_the_per_position_test(min_per_side: int) -> None:
    a, b, _ = small_views(min_per_side)
    z, df, bonferroni = homogeneity(a, b)
    print(f"min_per_side={min_per_side}: chi-square z = {z:.2f} on {df} df, "
          f"min p × positions = {bonferroni:.3g}")
    assert abs(z) < 4.0 and bonferroni > 1e-4


def test_the_linear_test_sees_leaks_across_positions_that_the_per_position_test_misses(
) -> None:
    """Two planted leaks on the real views, each position still uniform on its own."""
    a, b, labels = small_views(3)
    quantity = [int(BOOK_C.quantity_wh[3]), int(BOOK_D.quantity_wh[3])]  # 9 Wh and 1 Wh
    assert quantity[0] != quantity[1]
    # 1. two stored shares whose sum is slot 3's quantity
    pa, pb = labels.index("stored rows"), labels.index("stored rows") + 5
    # 2. the masked-quantity opening of slot 3 gives q itself: server 0's own share is such
    #    that λ0·s0 + λ1·s1 + λ2·s2 = q (the mask r = 1)
    own, s1, s2 = (
        [i for i, lab in enumerate(labels) if lab == f"a2a masked_quantities from {j}"][3]
        for j in range(3))
    lam = F.lagrange_at([1, 2, 3], 0)
    inv0 = F.const(pow(lam[0], F.MODULUS - 2, F.MODULUS))
    leaks = []
    for kind in ("sum", "opening"):
        views = []
        for x, q in zip((a.copy(), b.copy()), quantity, strict=True):
            if kind == "sum":
                x[:, pb] = F.sub(F.from_ints([q] * len(x)), x[:, pa])
            else:
                rest = F.add(F.mul(x[:, s1], F.const(lam[1])), F.mul(x[:, s2], F.const(lam[2])))
                x[:, own] = F.mul(F.sub(F.from_ints([q] * len(x)), rest), inv0)
            views.append(x)
        z, _, bonferroni = homogeneity(*views)
        assert abs(z) < 4.0 and bonferroni > 1e-4, f"the per-position test saw the {kind}"
        rank_a, rank_b, rank_ab = affine_hull(*views)
        leaks.append((kind, rank_a, rank_b, rank_ab))
        assert rank_a == rank_b and rank_ab == rank_a + 1, f"the linear test missed the {kind}"
    print(leaks)
