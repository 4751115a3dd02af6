"""Household encoding: wire format, refusals, output reconstruction, and share privacy."""

from __future__ import annotations

import numpy as np
import pytest

from sealgrid.mechanism.bids import BidRejected, Reason
from sealgrid.protocol import field as F
from sealgrid.protocol.encoding import (
    BidShares,
    Layout,
    OutputShare,
    ShareBatch,
    encode_bid,
    join_batches,
    reconstruct,
)

LAYOUT = Layout(levels=8, suppliers=3, max_quantity_wh=10_000)


def test_layout_proves_the_exact_range() -> None:
    assert LAYOUT.bits == 14  # bits of q − 1 and of max − q: 1 ≤ q ≤ 10,000 exactly
    assert (LAYOUT.coarse, LAYOUT.fine) == (3, 3)  # 8 levels: blocks of 3
    assert LAYOUT.width == 2 * 3 + 3 + 2 * 14 + 3 + 2  # … and the identity pair (h, κ)
    assert Layout(4, 1, 16).bits == 4 and Layout(4, 1, 1).bits == 1


def test_shares_rebuild_the_encoded_bid() -> None:
    shares = encode_bid(False, 2_500, 5, 2, LAYOUT, key=b"k" * 16)
    values = F.reconstruct([s.values for s in shares], 1)
    assert int(values[LAYOUT.coarse + 1]) == 2_500  # sell, level 5 = 3·1 + 2
    assert int(values[LAYOUT.e.start + 2]) == 1 and int(values[LAYOUT.supplier.start + 2]) == 1
    assert int(np.count_nonzero(values[LAYOUT.w])) == 1
    assert int(np.count_nonzero(values[LAYOUT.e])) == 1
    low = sum(int(b) << j for j, b in enumerate(values[LAYOUT.low_bits]))
    high = sum(int(b) << j for j, b in enumerate(values[LAYOUT.high_bits]))
    assert (low, high) == (2_499, 7_500)


def test_wire_format_round_trip_and_malformed_messages() -> None:
    share = encode_bid(True, 1, 0, 0, LAYOUT)[1]
    data = share.to_bytes()
    back = BidShares.from_bytes(data)
    assert back.party == 1 and back.layout == LAYOUT and np.array_equal(back.values, share.values)
    for bad in (data[:10], b"XXXX" + data[4:], data + b"\0" * 8):
        with pytest.raises(BidRejected) as err:
            BidShares.from_bytes(bad)
        assert err.value.reason is Reason.MALFORMED
    out_of_field = bytearray(data)
    out_of_field[-8:] = (2**64 - 1).to_bytes(8, "little")
    with pytest.raises(BidRejected):
        BidShares.from_bytes(bytes(out_of_field))


@pytest.mark.parametrize(("args", "reason"), [
    ((True, 0, 1, 0), Reason.QUANTITY_NOT_POSITIVE),
    ((True, 10_001, 1, 0), Reason.QUANTITY_TOO_LARGE),
    ((True, 5, 8, 0), Reason.PRICE_OFF_GRID),
    ((True, 5, 1, 3), Reason.UNKNOWN_SUPPLIER),
])
def test_an_honest_household_refuses_to_encode_an_invalid_bid(
        args: tuple[bool, int, int, int], reason: Reason) -> None:
    with pytest.raises(BidRejected) as err:
        encode_bid(*args, LAYOUT)
    assert err.value.reason is reason


def test_batch_save_and_load(tmp_path) -> None:
    payloads = [encode_bid(i % 2 == 0, 100 + i, i % 8, i % 3, LAYOUT)[2] for i in range(5)]
    batch = ShareBatch.from_payloads(payloads, 2, LAYOUT)
    batch.save(tmp_path / "b.bin")
    loaded = ShareBatch.load(tmp_path / "b.bin")
    assert loaded.party == 2 and loaded.layout == LAYOUT
    assert np.array_equal(np.asarray(loaded.rows), batch.rows)
    with pytest.raises(ValueError):
        ShareBatch.from_payloads(payloads, 1, LAYOUT)


def test_joined_batches_are_their_rows_in_order(tmp_path) -> None:
    payloads = [encode_bid(i % 2 == 0, 100 + i, i % 8, i % 3, LAYOUT)[0] for i in range(7)]
    whole = ShareBatch.from_payloads(payloads, 0, LAYOUT)
    ShareBatch(0, LAYOUT, whole.rows[:4]).save(tmp_path / "first.bin")
    parts = [ShareBatch.load(tmp_path / "first.bin"), ShareBatch(0, LAYOUT, whole.rows[4:4]),
             ShareBatch(0, LAYOUT, whole.rows[4:])]
    assert join_batches(tmp_path / "all.bin", parts) == 7
    joined = ShareBatch.load(tmp_path / "all.bin")
    assert (joined.party, joined.layout) == (0, LAYOUT)
    assert np.array_equal(np.asarray(joined.rows), whole.rows)
    with pytest.raises(ValueError, match="different servers"):
        join_batches(tmp_path / "x.bin", [parts[0], ShareBatch(1, LAYOUT, whole.rows[4:])])
    with pytest.raises(ValueError, match="different servers"):
        join_batches(tmp_path / "x.bin", [])


def test_messages_stack_at_once_as_one_by_one_and_a_bad_one_is_named(
        monkeypatch: pytest.MonkeyPatch) -> None:
    shares = [encode_bid(i % 2 == 0, 100 + i, i % 8, i % 3, LAYOUT)[1] for i in range(40)]
    messages = [s.to_bytes() for s in shares]
    with monkeypatch.context() as patch:  # good messages never take the one-by-one path
        patch.setattr(BidShares, "from_bytes", None)
        batch = ShareBatch.from_messages(messages, 1, LAYOUT)
    assert batch.rows.dtype == F.U64
    assert np.array_equal(batch.rows, ShareBatch.from_payloads(shares, 1, LAYOUT).rows)
    assert len(ShareBatch.from_messages([], 1, LAYOUT)) == 0
    outside = [*messages[:7], messages[7][:-8] + (2 ** 64 - 1).to_bytes(8, "little")]
    with pytest.raises(BidRejected, match="outside the field"):
        ShareBatch.from_messages(outside, 1, LAYOUT)
    with pytest.raises(BidRejected, match="wrong length"):
        ShareBatch.from_messages([*messages[:3], messages[3] + b"\x00" * 8], 1, LAYOUT)
    with pytest.raises(ValueError, match="another server"):  # server 1's, read as server 2's
        ShareBatch.from_messages(messages, 2, LAYOUT)


def test_output_shares_made_at_once_are_those_made_one_by_one() -> None:
    values = np.array([0, 1, 2**63, int(F.MODULUS) - 1], dtype=F.U64)
    assert OutputShare.each(2, values) == [
        OutputShare(2, values[i : i + 1]).to_bytes() for i in range(len(values))]
    assert OutputShare.each(0, np.zeros(0, dtype=F.U64)) == []


def test_output_reconstruction_detects_a_wrong_share() -> None:
    values = F.from_ints([0, 4_000, 17])
    coeffs = [F.stream(b"x" * 16, "o", 3)]
    shares = [OutputShare(i, s) for i, s in enumerate(F.share(values, 1, 3, coeffs))]
    wire = [OutputShare.from_bytes(s.to_bytes()) for s in shares]
    assert reconstruct(wire) == [0, 4_000, 17]
    bad = OutputShare(1, F.add(shares[1].values, F.from_ints([0, 1, 0])))
    with pytest.raises(F.InconsistentShares):
        reconstruct([shares[0], bad, shares[2]])


# --- one server's shares of two different bids are indistinguishable ------------------

def _buckets(values: np.ndarray, shift: int) -> np.ndarray:
    return np.bincount(((values >> np.uint64(shift)) & np.uint64(15)).astype(np.int64),
                       minlength=16)


def _chi2(counts: np.ndarray) -> float:
    expected = counts.sum() / len(counts)
    return float(((counts - expected) ** 2 / expected).sum())


def _indistinguishable(a: np.ndarray, b: np.ndarray) -> bool:
    """Chi-square tests (16 buckets of the top, middle and low 4 bits; df = 15, critical value
    at p = 0.001 is 37.7): each sample uniform, and the two samples alike."""
    for shift in (60, 30, 0):
        ca, cb = _buckets(a, shift), _buckets(b, shift)
        if _chi2(ca) > 37.7 or _chi2(cb) > 37.7:
            return False
        pooled = (ca + cb) / 2
        two_sample = float((((ca - pooled) ** 2 + (cb - pooled) ** 2) / pooled).sum())
        if two_sample > 37.7:
            return False
    return True


def _server_view(bid: tuple, samples: int, sharer) -> np.ndarray:
    return np.concatenate([sharer(bid, k)[0] for k in range(samples)])


def _real(bid: tuple[bool, int, int, int], k: int) -> list[np.ndarray]:
    return [s.values for s in encode_bid(*bid, LAYOUT, key=k.to_bytes(16, "little"))]


def _broken(bid: tuple, k: int) -> list[np.ndarray]:
    """A deliberately broken sharer: polynomial coefficients drawn from [0, 2^40)."""
    row = F.reconstruct(_real(bid, k), 1)
    small = F.stream(k.to_bytes(16, "little"), "broken", len(row)) >> np.uint64(24)
    return F.share(row, 1, 3, [small])


def test_one_servers_shares_of_two_different_bids_are_indistinguishable() -> None:
    a, b = (True, 1, 0, 0), (False, 10_000, 7, 2)
    for server in range(3):
        view_a = np.concatenate([_real(a, k)[server] for k in range(150)])
        view_b = np.concatenate([_real(b, 10_000 + k)[server] for k in range(150)])
        assert _indistinguishable(view_a, view_b)


def test_the_indistinguishability_test_catches_a_broken_sharer() -> None:
    a, b = (True, 1, 0, 0), (False, 10_000, 7, 2)
    view_a = np.concatenate([_broken(a, k)[0] for k in range(150)])
    view_b = np.concatenate([_broken(b, 10_000 + k)[0] for k in range(150)])
    assert not _indistinguishable(view_a, view_b)
