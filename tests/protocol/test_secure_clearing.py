"""Secure clearing (in-process servers) equals the plaintext reference; cheaters are excluded."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest

from sealgrid.mechanism.auction import clear
from sealgrid.mechanism.bids import Reason
from sealgrid.protocol import disclosure
from sealgrid.protocol import field as F
from sealgrid.protocol.clearing import secure_clear
from sealgrid.protocol.encoding import Layout

from .secure_helpers import (
    assert_equal_on,
    bits_of,
    book,
    cheat,
    honest_vector,
    random_book,
)

P = F.MODULUS

EDGE_BOOKS = {
    "no_trade": (book([True, False], [500, 500], [1, 3]), 4),
    "all_buyers": (book([True, True, True], [10, 20, 30], [0, 2, 3]), 4),
    "all_sellers": (book([False, False], [10, 20], [0, 2]), 4),
    "equal_prices": (book([True, False, True, False], [300, 200, 100, 250], [2, 2, 2, 2]), 5),
    "tie_plateau": (book([True, False], [100, 100], [5, 0]), 8),
    "one_bidder": (book([False], [10_000], [0]), 3),
    "ration_buyers": (book([True, True, False], [700, 500, 400], [3, 4, 1]), 6),
    "ration_sellers": (book([True, False, False, False], [900, 500, 700, 300], [2, 0, 1, 2]), 3),
    "one_level": (book([True, False, False], [10, 4, 3], [0, 0, 0]), 1),
    "max_quantity": (book([True, False], [10_000, 10_000], [0, 0]), 2),
    "empty": (book([], [], []), 4),
}


@pytest.mark.parametrize("name", sorted(EDGE_BOOKS))
def test_edge_books_equal_the_reference(name: str) -> None:
    b, levels = EDGE_BOOKS[name]
    result = secure_clear(b, levels, mode="inprocess", key=b"e" * 16)
    assert result.stats.rejected == {}
    assert_equal_on(result.clearing, b, levels, np.ones(len(b), dtype=bool))


@pytest.mark.parametrize("seed", range(12))
def test_random_books_equal_the_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    levels = int(rng.integers(1, 20))
    max_q = int(rng.choice([1, 7, 10_000]))
    b = random_book(rng, int(rng.integers(1, 80)), levels, int(rng.integers(1, 5)), max_q)
    if seed % 3 == 0:  # many equal prices and quantities: ties everywhere
        b.level[:] = b.level % 2
    result = secure_clear(b, levels, mode="inprocess", max_quantity_wh=max_q)
    assert_equal_on(result.clearing, b, levels, np.ones(len(b), dtype=bool))


def test_five_servers_in_process() -> None:
    b = random_book(np.random.default_rng(9), 40, 6, 2)
    result = secure_clear(b, 6, parties=5, mode="inprocess")
    assert_equal_on(result.clearing, b, 6, np.ones(len(b), dtype=bool))


PER_PARTY = ("challenge_seed", "validity_check", "degree_check")  # opened by each server
RATIOS = ("masked_demand_at_clearing", "masked_supply_at_clearing")


@pytest.mark.parametrize("min_per_side, trades, opened", [
    (1, True, [*PER_PARTY, *RATIOS]),
    (3, True, [*PER_PARTY, "masked_quantities", *RATIOS]),
    (1, False, list(PER_PARTY)),
    (3, False, [*PER_PARTY, "masked_quantities"]),
])
def test_exactly_the_declared_values_are_opened_and_only_through_the_door(
    monkeypatch: pytest.MonkeyPatch, min_per_side: int, trades: bool, opened: list[str],
) -> None:
    """Every opening, counted: three servers each open their rows through the door, and the
    one-party clearing opens ``trade`` (and ``clearing_level`` only on a trade). A message a
    server sends to all outside the door carries nothing but the zeros of the clock line-up."""
    from collections import Counter

    from sealgrid.protocol.inprocess import HubTransport

    sent: list[tuple[int, int, np.ndarray]] = []
    real = HubTransport.all_to_all

    async def spy(self: HubTransport, own: np.ndarray) -> list[np.ndarray]:
        sent.append((self.pid, len(disclosure.LOG), np.array(own)))
        return await real(self, own)

    monkeypatch.setattr(HubTransport, "all_to_all", spy)
    b = random_book(np.random.default_rng(1), 30, 5, 2) if trades else book(
        [True, False, True, False], [10, 10, 5, 5], [0, 3, 1, 4])
    disclosure.LOG.clear()
    result = secure_clear(b, 5, mode="inprocess", min_per_side=min_per_side)
    assert result.clearing.traded is trades
    want = Counter({name: 3 for name in opened})
    want.update(["trade"] + (["clearing_level"] if trades else []))
    assert Counter(disclosure.LOG) == want
    for pid in range(3):
        mine = [(logged, own) for p, logged, own in sent if p == pid]
        assert not mine[0][1].any()  # the clock line-up: zeros
        for (before, _), (after, _) in itertools.pairwise(mine):
            assert after > before  # each later message follows a declared opening


# --- malicious households ---------------------------------------------------------------

LEVELS = 6
LAYOUT = Layout(LEVELS, 2, 10_000)
HONEST = book([True, True, False, False, True, False], [4_000, 2_500, 3_000, 1_500, 800, 2_200],
              [5, 3, 1, 2, 4, 0], [0, 1, 0, 1, 1, 0])
SLOT = 2  # the cheater's bid slot (its plaintext in HONEST is ignored: its shares are replaced)


def _set(row: np.ndarray, buy: bool, block: int, value: int) -> None:
    """Set the quantity-weighted coarse entry of ``block`` on one side."""
    row[(0 if buy else LAYOUT.coarse) + block] = value % P


def negative_quantity(row: np.ndarray) -> None:
    row[:] = honest_vector(LAYOUT, False, 100, 1, 0)
    _set(row, False, 0, -100)


def oversized_quantity(row: np.ndarray) -> None:
    row[:] = honest_vector(LAYOUT, False, 10_000, 1, 0)
    _set(row, False, 0, 20_000)
    row[LAYOUT.low_bits] = bits_of(19_999 % 2**14, 14)


def two_levels(row: np.ndarray) -> None:  # two price blocks; bits say q = 5,000: they hold
    row[:] = honest_vector(LAYOUT, False, 5_000, 1, 0)
    _set(row, False, 0, 3_000)
    _set(row, False, 1, 2_000)


def two_fine_levels(row: np.ndarray) -> None:  # two fine levels inside one block
    row[:] = honest_vector(LAYOUT, False, 5_000, 1, 0)
    row[LAYOUT.e] = [1, 1, 0]


def split_fine_level(row: np.ndarray) -> None:  # sums to 1, but is not one-hot
    row[:] = honest_vector(LAYOUT, False, 5_000, 1, 0)
    row[LAYOUT.e] = F.from_ints([2, 0, -1])


def weighted_fine_level(row: np.ndarray) -> None:  # fine vector carries a weight
    row[:] = honest_vector(LAYOUT, False, 5_000, 1, 0)
    row[LAYOUT.e] = [0, 5, 0]


def both_sides(row: np.ndarray) -> None:
    row[:] = honest_vector(LAYOUT, False, 5_000, 1, 0)
    _set(row, False, 0, 3_000)
    _set(row, True, 0, 2_000)


def two_suppliers(row: np.ndarray) -> None:
    row[:] = honest_vector(LAYOUT, False, 3_000, 1, 0)
    row[LAYOUT.supplier] = [1, 1]


def split_supplier(row: np.ndarray) -> None:  # sums to 1, but is not one-hot
    row[:] = honest_vector(LAYOUT, False, 3_000, 1, 0)
    row[LAYOUT.supplier] = F.from_ints([2, -1])


def non_bits(row: np.ndarray) -> None:  # q − 1 = 4 = 2·2^1: the sum holds, a "bit" is 2
    row[:] = honest_vector(LAYOUT, False, 5, 1, 0)
    row[LAYOUT.low_bits] = 0
    row[LAYOUT.low_bits.start + 1] = 2


def zero_bid(row: np.ndarray) -> None:
    row[:] = honest_vector(LAYOUT, False, 1, 1, 0)
    _set(row, False, 0, 0)


def wrong_range_bits(row: np.ndarray) -> None:  # bits of max − q do not add up
    row[:] = honest_vector(LAYOUT, False, 3_000, 1, 0)
    row[LAYOUT.high_bits] = bits_of(1, 14)


def off_polynomial(shares: list[np.ndarray]) -> None:  # server 3's share is off the line
    i = LAYOUT.coarse  # the sell entry of block 0
    shares[2][i] = F.add(shares[2][i : i + 1], F.from_ints([1]))[0]


def off_polynomial_bits(shares: list[np.ndarray]) -> None:
    i = LAYOUT.low_bits.start + 3
    shares[0][i] = F.add(shares[0][i : i + 1], F.from_ints([12345]))[0]


CHEATS: dict[str, tuple[Callable, Callable | None]] = {
    "negative_quantity": (negative_quantity, None),
    "oversized_quantity": (oversized_quantity, None),
    "two_levels": (two_levels, None),
    "two_fine_levels": (two_fine_levels, None),
    "split_fine_level": (split_fine_level, None),
    "weighted_fine_level": (weighted_fine_level, None),
    "both_sides": (both_sides, None),
    "two_suppliers": (two_suppliers, None),
    "split_supplier": (split_supplier, None),
    "non_bits": (non_bits, None),
    "zero_bid": (zero_bid, None),
    "wrong_range_bits": (wrong_range_bits, None),
    "inconsistent_shares": (lambda r: r.__setitem__(slice(None),
                                                    honest_vector(LAYOUT, False, 3_000, 1, 0)),
                            off_polynomial),
    "inconsistent_bit_shares": (lambda r: r.__setitem__(slice(None),
                                                        honest_vector(LAYOUT, False, 3_000, 1, 0)),
                                off_polynomial_bits),
}


@pytest.mark.parametrize("name", sorted(CHEATS))
def test_a_cheating_household_is_excluded_and_the_period_clears(name: str) -> None:
    make, corrupt = CHEATS[name]
    result = secure_clear(HONEST, LEVELS, mode="inprocess",
                          tamper=cheat(LAYOUT, SLOT, make, corrupt))
    assert result.stats.rejected == {SLOT: Reason.INVALID_SHARES}
    honest = np.ones(len(HONEST), dtype=bool)
    honest[SLOT] = False
    assert_equal_on(result.clearing, HONEST, LEVELS, honest)


def test_an_honest_vector_through_the_tamper_hook_is_accepted() -> None:
    """The cheat harness itself makes valid shares when the vector is honest."""
    make = lambda r: r.__setitem__(slice(None), honest_vector(LAYOUT, False, 3_000, 1, 0))  # noqa: E731
    result = secure_clear(HONEST, LEVELS, mode="inprocess", tamper=cheat(LAYOUT, SLOT, make))
    assert result.stats.rejected == {}
    assert_equal_on(result.clearing, HONEST, LEVELS, np.ones(len(HONEST), dtype=bool))


def test_every_household_cheating_means_no_trade() -> None:
    hooks = [cheat(LAYOUT, i, two_levels) for i in range(len(HONEST))]
    result = secure_clear(HONEST, LEVELS, mode="inprocess",
                          tamper=lambda paths: [h(paths) for h in hooks])
    assert set(result.stats.rejected) == set(range(len(HONEST)))
    assert result.clearing.level is None and not result.clearing.accepted.any()
    assert clear(HONEST, LEVELS).level is not None


def test_a_book_beyond_the_exact_rationing_is_refused_up_front() -> None:
    """Every side total must stay below 2^31 Wh for the readers' exact ratio V/L."""
    b = book([True, False, False], [10, 5, 3], [2, 0, 1])
    with pytest.raises(ValueError, match=r"exact rationing's range \(2\^31 Wh\)"):
        secure_clear(b, 3, mode="inprocess", max_quantity_wh=2**31 - 1)


@pytest.mark.parametrize("max_q", [2**20, (2**31 - 2) // 3])
def test_large_quantity_limits(max_q: int) -> None:
    b = book([True, False, False], [max_q, max_q // 2, 3], [2, 0, 1])
    result = secure_clear(b, 3, mode="inprocess", max_quantity_wh=max_q)
    assert_equal_on(result.clearing, b, 3, np.ones(3, dtype=bool))
    layout = Layout(3, 2, max_q)
    over = cheat(layout, 2, lambda r: (r.__setitem__(slice(None),
                                                     honest_vector(layout, False, 3, 1, 0)),
                                       r.__setitem__(layout.coarse, max_q + 1)))
    result = secure_clear(b, 3, mode="inprocess", max_quantity_wh=max_q, tamper=over)
    assert result.stats.rejected == {2: Reason.INVALID_SHARES}


def test_a_level_beyond_the_grid_is_refused() -> None:
    """With 5 levels the blocks are 3 wide: block 1, fine level 2 would be level 5."""
    levels = 5
    layout = Layout(levels, 2, 10_000)
    assert (layout.coarse, layout.fine) == (2, 3)
    b = book([True, False, True], [300, 200, 100], [4, 0, 3])

    def off(row: np.ndarray) -> None:
        row[:] = honest_vector(layout, True, 300, 4, 0)
        row[layout.e] = [0, 0, 1]  # hi = 1, lo = 2: level 5

    result = secure_clear(b, levels, mode="inprocess", tamper=cheat(layout, 0, off))
    assert result.stats.rejected == {0: Reason.INVALID_SHARES}
    assert_equal_on(result.clearing, b, levels, np.array([False, True, True]))


def test_the_degree_check_refuses_shares_off_a_line() -> None:
    """accept(): a zero validity value does not save a slot whose combination is off-degree."""
    from sealgrid.protocol.encoding import ShareBatch
    from sealgrid.protocol.validation import PartyState

    layout = Layout(4, 1, 10)
    state = PartyState(ShareBatch(0, layout, np.zeros((3, layout.width), dtype=F.U64)),
                       0, 3, 1, {})
    zero_deg2 = [F.from_ints([u * (5 - u) * 7] * 3) for u in (1, 2, 3)]  # a sharing of 0
    line = [F.from_ints([10 + 4 * u, 3 * u, 99]) for u in (1, 2, 3)]  # slots 0, 1 on a line
    line[2] = F.add(line[2], F.from_ints([0, 0, 1]))  # slot 2's third share is off it
    valid = state.accept([np.stack([zero_deg2[u], line[u]]) for u in range(3)])
    assert list(valid) == [True, True, False]
    not_zero = [F.add(z, F.from_ints([0, 1, 0])) if u == 0 else z
                for u, z in enumerate(zero_deg2)]
    line[2] = F.sub(line[2], F.from_ints([0, 0, 1]))
    valid = state.accept([np.stack([not_zero[u], line[u]]) for u in range(3)])
    assert list(valid) == [True, False, True]
