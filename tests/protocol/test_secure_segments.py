"""Validation in segments (``party.validate_segment``), as bids arriving in batches would be:
the period's clearing over segments validated one after another equals the clearing that
validates everything at once, and the plaintext reference; a segment holding one malformed
bid refuses that bid alone, when that segment is validated."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from sealgrid.mechanism.auction import clear
from sealgrid.protocol import field as F
from sealgrid.protocol.clearing import secure_clear
from sealgrid.protocol.encoding import Layout, ShareBatch, share_rows
from sealgrid.protocol.inprocess import Hub, HubTransport
from sealgrid.protocol.party import validate_segment

from .secure_helpers import assert_equal_on, cheat, honest_vector, random_book

LEVELS = 6


@pytest.mark.parametrize("min_per_side", [1, 3])
@pytest.mark.parametrize("segments", [(15,), (7, 13, 10), (40,)])
def test_segments_give_the_same_period_as_one_validation(segments, min_per_side) -> None:
    b = random_book(np.random.default_rng(11), 40, LEVELS, 3)
    whole = secure_clear(b, LEVELS, mode="inprocess", key=b"s" * 16, min_per_side=min_per_side)
    parts = secure_clear(b, LEVELS, mode="inprocess", key=b"s" * 16, min_per_side=min_per_side,
                         segments=segments)
    ref = clear(b, LEVELS, min_accepted_per_side=min_per_side)
    for got in (whole, parts):
        c = got.clearing
        assert (c.level, c.volume_wh, c.demand_wh, c.supply_wh) == (
            ref.level, ref.volume_wh, ref.demand_wh, ref.supply_wh)
        assert np.array_equal(c.accepted, ref.accepted)
        assert np.array_equal(c.traded_numerator, ref.traded_numerator)
        assert c.supplier_bought_wh == ref.supplier_bought_wh
        assert not got.stats.rejected
    assert ref.level is not None  # a book that trades: the outputs were exercised


def _two_fine_levels(layout: Layout):
    def make(row: np.ndarray) -> None:
        row[:] = honest_vector(layout, False, 500, 1, 0)
        row[layout.e] = [1, 1, 0]  # one-hot broken: two fine levels
    return make


def test_a_segment_with_one_malformed_bid_refuses_it_alone_when_validated() -> None:
    layout = Layout(LEVELS, 3, 10_000)
    b = random_book(np.random.default_rng(5), 30, LEVELS, 3)
    slot = 4  # in the first of two segments of 10, then 10 more at the gate
    result = secure_clear(b, LEVELS, mode="inprocess", segments=(10, 10),
                          tamper=cheat(layout, slot, _two_fine_levels(layout)))
    honest = np.ones(len(b), dtype=bool)
    honest[slot] = False
    assert set(result.stats.rejected) == {slot}
    assert_equal_on(result.clearing, b, LEVELS, honest)

    # and the segment itself says so, before any later bid exists
    rows = np.stack([honest_vector(layout, bool(b.is_buy[i]), int(b.quantity_wh[i]),
                                   int(b.level[i]), int(b.supplier[i])) for i in range(10)])
    _two_fine_levels(layout)(rows[slot])
    shares = share_rows(rows, 3, b"segment-key")
    hub = Hub(3)

    async def parties():
        return await asyncio.gather(*(
            validate_segment(ShareBatch(i, layout, shares[i]), HubTransport(hub, i))
            for i in range(3)))

    got = hub.mpc.run(parties())
    for g in got:
        assert list(np.flatnonzero(~g.valid)) == [slot]
    assert len({g.seed for g in got}) == 1  # one public challenge, drawn jointly
    assert all(g.products.dtype == F.U64 for g in got)


def test_segments_that_do_not_fit_are_refused() -> None:
    b = random_book(np.random.default_rng(3), 12, LEVELS, 2)
    with pytest.raises(ValueError, match="in process only"):
        secure_clear(b, LEVELS, mode="processes", segments=(4,))
    with pytest.raises(ValueError, match="do not fit"):
        secure_clear(b, LEVELS, mode="inprocess", segments=(8, 8))
