"""Threat: disputes (mustafa2016 §IV, non-repudiation); assumes only the servers' public keys.

A household holds a receipt from each server; a period statement is public. Both verify
offline with the registry's public keys and nothing else; any change to any field makes
them fail. Replaying the journal of accepted submissions into a fresh intake with the same
keys — in any order, at any time before the gate: a receipt carries neither a sequence
number nor a time, so it depends on the bid alone — reproduces every receipt byte for byte
and the same bid set, and clearing the journal's payloads gives the same public result.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from sealgrid.protocol.encoding import BidShares, Layout, ShareBatch, encode_bid
from sealgrid.protocol.inprocess import run_in_process
from sealgrid.service import wire
from sealgrid.service.household import check_receipt, make_submission
from sealgrid.service.intake import Accepted, Intake, SubmitBid
from sealgrid.service.schedule import Schedule
from sealgrid.service.wire import PeriodStatement, Receipt

from .helpers import GATE, LEVELS, MAX_Q, NOW, PERIOD, SUPPLIERS, World, issuers

LAYOUT = Layout(LEVELS, SUPPLIERS, MAX_Q)
SPECS = [(True, 4_000, 5, 0), (True, 2_500, 3, 1), (False, 3_000, 1, 0), (False, 1_500, 2, 1)]


def _tampered(msg: object) -> list[object]:
    """Every one-field change of a signed message (the signature kept)."""
    out = []
    for f in dataclasses.fields(msg):  # type: ignore[arg-type]
        if f.name == "signature":
            continue
        value = getattr(msg, f.name)
        if isinstance(value, bytes):
            new: object = bytes([value[0] ^ 1]) + value[1:] if value else b"\x00"
        elif isinstance(value, int):
            new = value + 1
        elif isinstance(value, str):
            new = value + " "
        else:
            new = (*value, b"\x00" * 32)
        out.append(dataclasses.replace(msg, **{f.name: new}))  # type: ignore[type-var]
    sig = msg.signature  # type: ignore[attr-defined]
    out.append(dataclasses.replace(msg, signature=bytes([sig[0] ^ 0x80]) + sig[1:]))  # type: ignore[type-var]
    return out


@pytest.fixture(scope="module")
def market() -> tuple[World, list[tuple[bytes, bytes, Accepted]]]:
    w = World(n=len(SPECS))
    journal = []
    for k, spec in enumerate(SPECS):
        p, _ = w.pseudonym(f"h{k:04d}")
        payloads = [s.to_bytes() for s in encode_bid(*spec, LAYOUT)]
        for i in range(3):
            raw = make_submission(p, i, payloads[i])
            event = w.submit(i, raw, NOW + dt.timedelta(seconds=k))
            assert isinstance(event, Accepted)
            journal.append((raw, payloads[i], event))
    return w, journal


def test_receipts_verify_offline_and_any_change_fails(market) -> None:
    w, journal = market
    for raw, payload, event in journal:
        server = event.receipt.server
        public = wire.raw_public(w.server_keys[server])  # all a judge needs: the public key
        receipt = wire.decode(Receipt, event.bid.receipt)  # as the household stored it
        assert check_receipt(receipt, server, public, raw, payload)
        for bad in _tampered(receipt):
            assert not wire.verify(bad, public), bad
        other = wire.raw_public(w.server_keys[(server + 1) % 3])
        assert not wire.verify(receipt, other)


def test_period_statements_verify_offline_and_any_change_fails(market) -> None:
    w, _ = market
    pseudonyms = w.machines[0].pseudonyms(PERIOD)
    statement = wire.sign(PeriodStatement(
        server=0, period=PERIOD, bid_count=len(pseudonyms),
        bidset_sha256=wire.sha256(b"".join(pseudonyms)), excluded=(), status="cleared",
        outcome='{"level":3}', gate_closure="2026-11-22T21:15:00Z",
        issuer_sha256=wire.sha256(b"n")), w.server_keys[0])
    decoded = wire.decode(PeriodStatement, wire.encode(statement))
    assert wire.verify(decoded, wire.raw_public(w.server_keys[0]))
    for bad in _tampered(decoded):
        assert not wire.verify(bad, wire.raw_public(w.server_keys[0])), bad
    # a signature of one message type never verifies as another
    receipt_sig = statement.signature
    assert not wire.verify(dataclasses.replace(decoded, signature=receipt_sig[::-1]),
                           wire.raw_public(w.server_keys[0]))


def test_replaying_the_journal_reproduces_receipts_and_results(market) -> None:
    w, journal = market
    for party in range(3):
        own = [e for _, _, e in journal if e.receipt.server == party][::-1]  # reversed
        fresh = Intake(party, w.server_keys[party], {}, Schedule(900))
        for period, issuer in issuers().items():
            fresh.add_issuer(period, issuer)
        for k, event in enumerate(own):
            (again,) = fresh.receive(SubmitBid(GATE - dt.timedelta(seconds=1 + 7 * k),
                                               event.bid.bid))
            assert isinstance(again, Accepted)
            assert again.bid == event.bid  # receipt and record, byte for byte
        assert fresh.pseudonyms(PERIOD) == w.machines[party].pseudonyms(PERIOD)

    def cleared() -> tuple[object, tuple[int, ...]]:
        order = w.machines[0].pseudonyms(PERIOD)
        batches = [ShareBatch.from_payloads(
            [BidShares.from_bytes(w.stored[i][p]) for p in order], i, LAYOUT) for i in range(3)]
        results = run_in_process(batches)
        return results[0].public, tuple(int(x) for x in results[0].rejected)

    first, second = cleared(), cleared()
    assert first == second
    assert wire.canonical_json(dataclasses.asdict(first[0])) == wire.canonical_json(  # type: ignore[call-overload]
        dataclasses.asdict(second[0]))  # type: ignore[call-overload]
