"""Threats: impersonation, data manipulation (mustafa2016 §IV), malicious users (abidin2016 §3.2).

Assumes honest-majority servers and real keys. Each attack starts from what a real household
could send; each is refused with its reason by the intake, or — for shares that look fine to
one server but are not a valid bid together — flagged by the servers' joint validation. Then
the period clears on the honest bids alone, exactly as the plaintext reference would.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealgrid.mechanism.auction import clear
from sealgrid.mechanism.bids import Reason
from sealgrid.protocol import field as F
from sealgrid.protocol.encoding import BidShares, Layout, ShareBatch, encode_bid, share_rows
from sealgrid.protocol.inprocess import run_in_process
from sealgrid.service import wire
from sealgrid.service.household import Pseudonym, make_submission
from sealgrid.service.intake import Accepted, GateClosed, Rejected, Tick
from tests.protocol.secure_helpers import bits_of, book, honest_vector

from .helpers import GATE, LEVELS, MAX_Q, NOW, OTHER, SUPPLIERS, World, accepted, reason

LAYOUT = Layout(LEVELS, SUPPLIERS, MAX_Q)
# honest households: (buy, Wh, level, supplier)
HONEST = {
    "h0000": (True, 4_000, 5, 0), "h0001": (True, 2_500, 3, 1), "h0002": (False, 3_000, 1, 0),
    "h0003": (False, 1_500, 2, 1), "h0004": (True, 800, 4, 1),
}


def _payloads(spec: tuple[bool, int, int, int]) -> list[bytes]:
    return [s.to_bytes() for s in encode_bid(*spec, LAYOUT)]


def _shares_of(row: np.ndarray) -> list[np.ndarray]:
    return [s[0].copy() for s in share_rows(row[None, :].astype(F.U64), 3, b"attacker")]


def _raw_payloads(shares: list[np.ndarray]) -> list[bytes]:
    return [BidShares(i, LAYOUT, s).to_bytes() for i, s in enumerate(shares)]


def _invalid_sharing() -> list[bytes]:
    """Shares of a valid vector, but server 2's entries are off the degree-1 polynomial."""
    shares = _shares_of(honest_vector(LAYOUT, False, 2_000, 0, 0))
    shares[2] = F.add(shares[2], F.from_ints([1] * LAYOUT.width))
    return _raw_payloads(shares)


def _inconsistent_quantity() -> list[bytes]:
    """Each server's share comes from a different valid bid (consistent only pairwise)."""
    rows = [_shares_of(honest_vector(LAYOUT, i % 2 == 0, 1_000 * (i + 1), i, 0))[i]
            for i in range(3)]
    return _raw_payloads(rows)


def _out_of_range() -> list[bytes]:
    """A seller offering 3 × the maximum, with bits that pretend to fit."""
    row = honest_vector(LAYOUT, False, MAX_Q, 0, 1)
    row[LAYOUT.coarse] = 3 * MAX_Q
    row[LAYOUT.low_bits] = bits_of((3 * MAX_Q - 1) % 2**LAYOUT.bits, LAYOUT.bits)
    return _raw_payloads(_shares_of(row))


def _negative() -> list[bytes]:
    """A 'buyer' of −5,000 Wh (a seller in disguise, p − 5000 in the field)."""
    row = honest_vector(LAYOUT, True, 5_000, 5, 0)
    row[0 + 5 // LAYOUT.fine] = (-5_000) % F.MODULUS
    return _raw_payloads(_shares_of(row))


CHEATS = {
    "invalid_sharing": _invalid_sharing,
    "inconsistent_across_servers": _inconsistent_quantity,
    "out_of_range": _out_of_range,
    "negative_quantity": _negative,
}


def test_each_attack_is_refused_with_its_reason_and_the_period_clears_on_honest_bids() -> None:
    w = World(n=len(HONEST) + 1 + len(CHEATS))
    pseudonyms: dict[str, Pseudonym] = {}
    first_payload: dict[str, bytes] = {}
    for hid, spec in HONEST.items():
        p, events = w.pseudonym(hid)
        assert all(type(e).__name__ == "Granted" for e in events)
        payloads = _payloads(spec)
        first = w.bid(p, payloads)
        assert accepted(first), first
        pseudonyms[hid], first_payload[hid] = p, payloads[0]
    h0, p0 = "h0000", pseudonyms["h0000"]
    raw0 = make_submission(p0, 0, first_payload[h0])

    # impersonation: a pseudonym for a household whose key the attacker lacks
    _, events = w.pseudonym("h0005", key=Ed25519PrivateKey.generate())
    assert {reason(e) for e in events} == {Reason.BAD_SIGNATURE}
    # a second pseudonym for the same household and period
    _, events = w.pseudonym(h0)
    assert {reason(e) for e in events} == {Reason.TOO_FREQUENT}
    # a bid signed by another key than its pseudonym's
    forged = wire.sign(wire.decode(wire.PseudonymousBid, raw0), Ed25519PrivateKey.generate())
    assert reason(w.submit(0, wire.encode(forged))) is Reason.BAD_SIGNATURE
    # a fresh key with a stolen token (the token is bound to the pseudonym)
    thief = Pseudonym.fresh(p0.period)
    thief.tokens = dict(p0.tokens)
    assert reason(w.submit(0, make_submission(thief, 0, b"x" * 8))) is Reason.BAD_SIGNATURE
    # no token at all, and a token for another period
    bare = Pseudonym.fresh(p0.period)
    assert reason(w.submit(0, make_submission(bare, 0, b"x"))) is Reason.UNSIGNED
    moved = dataclasses.replace(p0, period=OTHER)
    assert reason(w.submit(0, make_submission(moved, 0, b"x"))) is Reason.BAD_SIGNATURE
    # an exact replay, and the same pseudonym with other shares
    assert reason(w.submit(0, raw0)) is Reason.REPLAYED
    other = make_submission(p0, 0, _payloads((False, 10, 0, 0))[0])
    assert reason(w.submit(0, other)) is Reason.DUPLICATE_PSEUDONYM
    # a share meant for server 1 sent to server 0; a share whose header names server 1
    assert reason(w.submit(0, make_submission(p0, 1, b"x"))) is Reason.MALFORMED
    p5, _ = w.pseudonym("h0005")
    wrong = make_submission(p5, 0, _payloads((True, 10, 0, 0))[1])
    assert reason(w.submit(0, wrong)) is Reason.MALFORMED
    # late: after gate closure
    late = w.bid(p5, _payloads((True, 10, 0, 0)), now=GATE)
    assert {reason(e) for e in late} == {Reason.LATE}

    # malicious shares that each server alone must accept (it cannot see the bid)
    cheaters: list[bytes] = []
    for k, make in enumerate(CHEATS.values()):
        p, _ = w.pseudonym(f"h{len(HONEST) + 1 + k:04d}")
        assert accepted(w.bid(p, make()))
        cheaters.append(p.public)

    sets = []
    for m in w.machines:
        (closed,) = [e for e in m.receive(Tick(GATE)) if isinstance(e, GateClosed)]
        sets.append(closed.pseudonyms)
    assert len(set(sets)) == 1, "the servers disagree on the bid set"
    honest_set = {p.public for p in pseudonyms.values()}
    assert set(sets[0]) == honest_set | set(cheaters)
    # the joint validation then flags every cheater and the period clears on the honest bids
    agreed = sets[0]
    results = _clear_payloads([[w.stored[i][p] for i in range(3)] for p in agreed])
    assert len({(r.public, tuple(r.rejected)) for r in results}) == 1
    assert {agreed[int(i)] for i in results[0].rejected} == set(cheaters)
    _assert_reference(results[0].public, list(HONEST.values()))


def _clear_payloads(per_bid: list[list[bytes]]):  # type: ignore[no-untyped-def]
    batches = [
        ShareBatch.from_payloads([BidShares.from_bytes(b[i]) for b in per_bid], i, LAYOUT)
        for i in range(3)
    ]
    return run_in_process(batches)


@pytest.mark.parametrize("name", sorted(CHEATS))
def test_malicious_shares_are_flagged_and_the_honest_bids_clear(name: str) -> None:
    """Honest payloads plus one cheater's, through the servers' joint validation."""
    specs = list(HONEST.values())
    per_bid = [_payloads(s) for s in specs]
    slot = 2
    per_bid.insert(slot, CHEATS[name]())
    results = _clear_payloads(per_bid)
    assert len({(r.public, tuple(r.rejected)) for r in results}) == 1
    assert [int(i) for i in results[0].rejected] == [slot]
    _assert_reference(results[0].public, specs)


def _assert_reference(pub, specs) -> None:  # type: ignore[no-untyped-def]
    ref = clear(book(*(list(x) for x in zip(*specs, strict=True))), LEVELS)
    assert ref.level is not None
    assert (pub.level, pub.volume, pub.demand, pub.supply) == (
        ref.level, ref.volume_wh, ref.demand_wh, ref.supply_wh)


def test_intake_refusals_never_repeat_bid_values() -> None:
    w = World(n=2)
    p, _ = w.pseudonym("h0000")
    payload = _payloads((True, 4321, 3, 1))[0]
    assert accepted(w.bid(p, _payloads((True, 4321, 3, 1))))
    again = w.submit(0, make_submission(p, 0, payload + b"!"))
    assert isinstance(again, Rejected)
    assert "4321" not in again.detail and wire.b64e(payload)[:16] not in again.detail
    assert isinstance(w.submit(1, make_submission(p, 1, payload)), Rejected | Accepted)
    _ = NOW
