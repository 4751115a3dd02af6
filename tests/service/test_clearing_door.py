"""The door to the secure clearing fails loudly: no made-up result, a clear reason."""

from __future__ import annotations

import asyncio

import pytest

from sealgrid.mechanism.bids import BidRejected, Reason, check_bid
from sealgrid.mechanism.market import DEFAULT_GRID, Market
from sealgrid.service.agent import encode_payloads
from sealgrid.service.clearing import ClearingFailed, ClearingRequest, clear, payload_checker

GRID = DEFAULT_GRID
SUPPLIERS = ("s1", "s2", "s3")
MARKET = Market(GRID, 10_000, SUPPLIERS)


def _payloads() -> list[bytes]:
    bid, _ = check_bid(MARKET, "h", "buy", "1", "100", "s1")
    assert bid is not None
    return encode_payloads(bid, MARKET, 3)


def _request(tmp_path) -> ClearingRequest:
    """A request to clear one bid, on a machine without the MPC certificates."""
    return ClearingRequest(
        party=0, parties=3, peers=("127.0.0.1:1",) * 3, period="2026-11-22T21:45:00Z",
        payloads=(_payloads()[0],), market=MARKET, workdir=tmp_path / "work",
        mpc_config=tmp_path / "none", timeout=5.0,
    )  # fmt: skip


def test_payload_checker_refuses_another_servers_or_markets_shares() -> None:
    check = payload_checker(0, MARKET)
    shares = _payloads()
    check(shares[0])
    for bad, words in ((shares[1], "server 1"), (b"junk", "too short")):
        with pytest.raises(BidRejected) as err:
            check(bad)
        assert err.value.reason is Reason.MALFORMED and words in str(err.value)
    other = payload_checker(0, Market(GRID, 10_000, (*SUPPLIERS, "s4")))
    with pytest.raises(BidRejected, match="another market"):
        other(shares[0])


def test_clearing_without_mpc_certificates_fails_with_a_reason(tmp_path) -> None:
    req = _request(tmp_path)
    with pytest.raises(ClearingFailed, match="cannot prepare"):
        asyncio.run(clear(req))


def test_a_share_header_with_an_impossible_layout_is_malformed() -> None:
    from sealgrid.protocol import encoding

    check = payload_checker(0, MARKET)
    version = encoding.WIRE_VERSION
    header = encoding._HEADER.pack(b"SGB1", version, 0, 0, 3, 10_000, 1)  # zero price levels
    with pytest.raises(BidRejected) as err:
        check(header)
    assert err.value.reason is Reason.MALFORMED and "layout" in err.value.detail


def test_a_result_left_by_a_party_that_outlived_its_server_is_taken(tmp_path) -> None:
    from sealgrid.service import clearing

    req = _request(tmp_path)
    req.workdir.mkdir()
    assert not asyncio.run(clearing._outlived(req))  # nothing on record
    (req.workdir / "attempt.json").write_text('{"digest": "another batch"}')
    (req.workdir / "result.json").write_text("{}")
    assert not asyncio.run(clearing._outlived(req))
    (req.workdir / "attempt.json").write_text(f'{{"digest": "{clearing._batch_digest(req)}"}}')
    assert asyncio.run(clearing._outlived(req))
    (req.workdir / "result.json").unlink()
    assert not asyncio.run(clearing._outlived(req))  # the earlier party failed


def test_a_segment_file_that_is_not_intact_is_not_taken(tmp_path) -> None:
    """The gate takes a validated segment's rows from its share file only when the file is
    this server's, of this market and holds the segment's bids; anything else (a lost, empty,
    cut or foreign file: a crash before the disk had it) sends the gate back to the stored
    bids, so a segment's result is never paired with other rows."""
    from sealgrid.protocol.encoding import Layout, ShareBatch
    from sealgrid.service.clearing import segment_batches_fit

    payloads = [_payloads()[0] for _ in range(3)]
    good = tmp_path / "good.bin"
    ShareBatch.from_messages(payloads, 0, Layout.of(MARKET)).save(good)
    assert segment_batches_fit([good], [3], 0, MARKET)
    empty, cut, foreign = tmp_path / "empty.bin", tmp_path / "cut.bin", tmp_path / "other.bin"
    empty.write_bytes(b"")
    cut.write_bytes(good.read_bytes()[:-8])
    bid = check_bid(MARKET, "h", "buy", "1", "100", "s1")[0]
    assert bid is not None
    ShareBatch.from_messages([encode_payloads(bid, MARKET, 3)[1]], 1,
                             Layout.of(MARKET)).save(foreign)
    for paths, sizes in (([good], [2]), ([good], [4]), ([tmp_path / "lost.bin"], [3]),
                         ([empty], [3]), ([cut], [3]), ([foreign], [1]), ([good, good], [3])):
        assert not segment_batches_fit(paths, sizes, 0, MARKET), (paths, sizes)
    other = Market(GRID, 10_000, (*SUPPLIERS, "s4"))
    assert not segment_batches_fit([good], [3], 0, other)


def test_a_batch_is_identified_alike_from_the_segments_files_or_from_the_database(
        tmp_path) -> None:
    """A restarted server builds the gate's batch from the segments' share files when they
    are intact and from the stored bids when not; a party of its earlier attempt is
    recognised either way, by the batch's pseudonyms in row order (and only by those)."""
    from dataclasses import replace

    from sealgrid.service import clearing

    req = _request(tmp_path)
    payloads = req.payloads * 2
    members = (b"\x01" * 32, b"\x02" * 32)
    stored = replace(req, payloads=payloads, members=members, segments=(b"seg",))
    from_files = replace(stored, payloads=payloads[1:],
                         segment_batches=(tmp_path / "segment-0" / "shares.bin",))
    assert clearing._batch_digest(stored) == clearing._batch_digest(from_files)
    reordered = replace(stored, members=members[::-1])
    other_result = replace(stored, segments=(b"other",))
    for changed in (reordered, other_result):
        assert clearing._batch_digest(changed) != clearing._batch_digest(stored)


def test_outputs_are_put_back_in_pseudonym_order_slot_for_slot() -> None:
    """The gate's slots follow the segments' order; ``in_order`` puts every slot's output and
    settlement row back under its pseudonym, sorted, as a position lookup would (pseudonyms
    sharing their first 8 or 24 bytes included); a set that is not the slots' is refused."""
    import os
    import random

    import numpy as np

    from sealgrid.protocol.mpcclear import Public
    from sealgrid.service.clearing import ClearingResult, in_order

    rng = random.Random(7)
    prefix = os.urandom(24)
    order = [os.urandom(32) for _ in range(300)] + [os.urandom(8) + os.urandom(24)
                                                     for _ in range(3)]
    order += [prefix + os.urandom(8) for _ in range(5)] + [order[0][:8] + os.urandom(24)]
    rng.shuffle(order)
    household = tuple(os.urandom(18) if i % 7 else b"" for i in range(len(order)))
    rows = np.arange(4 * len(order), dtype="<u8").reshape(4, -1)
    result = ClearingResult(Public(3), household, {}, b"", rows.tobytes())
    wanted = sorted(order)
    got = in_order(result, order, wanted)
    at = {p: i for i, p in enumerate(order)}  # the reference: each pseudonym's slot
    assert got.household == tuple(household[at[p]] for p in wanted)
    back = np.frombuffer(got.settle_rows, dtype="<u8").reshape(4, -1)
    assert (back == rows[:, [at[p] for p in wanted]]).all()
    assert in_order(result, wanted, wanted) is result  # already in order: nothing to do
    with pytest.raises(ValueError, match="not the sorted set"):
        in_order(result, order, [*wanted[:-1], os.urandom(32)])
