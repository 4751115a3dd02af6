"""Threat: privacy breach by a curious server (abidin2016 §3.2: honest-but-curious servers).

Assumes the in-process parties stand for real ones (see :mod:`tests.chaos.curious`).
Server 0's complete view of a period — its stored share rows and every array the other
servers send it — is collected many times for two bid sets with the same public outputs. A
chi-square test of homogeneity must not tell them apart; the same test on the plaintext
vectors, and on views with one planted leaky bit, must (its power, as a control). Fresh
randomness each run: the false-alarm rate of the thresholds is about 1e-4.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from sealgrid.mechanism.auction import clear
from sealgrid.protocol.encoding import plain_vectors
from tests.chaos.curious import BOOK_A, BOOK_B, LAYOUT, LEVELS, collect, homogeneity

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
