"""Threats: impersonation, data manipulation (mustafa2016 §IV), malicious users (abidin2016 §3.2).

Assumes honest-majority servers and real keys. Each attack starts from what a real household
could send; each is refused with its reason by the intake, or — for shares that look fine to
one server but are not a valid bid together — flagged by the servers' joint validation. Then
the period clears on the honest bids alone, exactly as the plaintext reference would.
"""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealgrid.mechanism.auction import clear
from sealgrid.mechanism.bids import Reason
from sealgrid.protocol import field as F
from sealgrid.protocol.encoding import BidShares, Layout, ShareBatch, encode_bid, share_rows
from sealgrid.protocol.inprocess import run_in_process
from sealgrid.protocol.mpcclear import Public
from sealgrid.service import wire
from sealgrid.service.household import Pseudonym, make_submission
from sealgrid.service.intake import Event, GateClosed, Limits, Rejected, Tick
from tests.protocol.secure_helpers import bits_of, book, honest_vector

from .helpers import GATE, LEVELS, MAX_Q, OTHER, PERIOD, SUPPLIERS, World, accepted, reason

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
    spec_of = {pseudonyms[h].public: spec for h, spec in HONEST.items()}
    _assert_reference(results, [spec_of.get(pub) for pub in agreed])


def _clear_payloads(per_bid: list[list[bytes]], min_per_side: int = 1):
    batches = [
        ShareBatch.from_payloads([BidShares.from_bytes(b[i]) for b in per_bid], i, LAYOUT)
        for i in range(3)
    ]
    return run_in_process(batches, min_per_side)


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
    _assert_reference(results, [*specs[:slot], None, *specs[slot:]])


def _field(x: Fraction) -> int:
    return x.numerator * pow(x.denominator, F.MODULUS - 2, F.MODULUS) % F.MODULUS


def _reference(specs, min_per_side: int = 1):
    """The plaintext clearing of the honest bids (``None`` in ``specs``: a cheater's slot)."""
    honest = [s for s in specs if s is not None]
    is_buy, q, level, supplier = (list(x) for x in zip(*honest, strict=True))
    ref = clear(book(is_buy, q, level, supplier), LEVELS,
                min_accepted_per_side=min_per_side)
    assert ref.level is not None
    return honest, ref


def _assert_reference(results, specs, min_per_side: int = 1) -> None:
    """Every household and the grid operators rebuild exactly the plaintext reference on the
    honest bids from all three servers' shares; a cheater's slot trades nothing."""
    _, ref = _reference(specs, min_per_side)
    assert {r.public for r in results} == {Public(ref.level)}
    (volume,) = (int(v) for v in F.reconstruct([r.volume for r in results], 1))
    assert volume == ref.volume_wh
    outputs = [int(v) for v in F.reconstruct([r.households for r in results], 1)]
    honest_slot = 0
    for slot, spec in enumerate(specs):
        if spec is None:
            assert outputs[slot] == 0, "a cheater's slot traded"
            continue
        assert outputs[slot] == _field(ref.traded_wh(honest_slot, spec[0])), slot
        honest_slot += 1


def _assert_suppliers(results, specs) -> None:
    """Each supplier's rebuilt outputs (accepted totals Q and traded Q·V/L, buy then sell)
    equal the reference on the honest bids."""
    honest, ref = _reference(specs)
    got = [int(v) for v in F.reconstruct([r.suppliers for r in results], 1)]
    q = [[0] * SUPPLIERS, [0] * SUPPLIERS]  # accepted totals before rationing: buy, sell
    for (is_buy, wh, _, supplier), won in zip(honest, ref.accepted, strict=True):
        if won:
            q[0 if is_buy else 1][supplier] += wh
    want = [*q[0], *map(_field, ref.supplier_bought_wh), *q[1],
            *map(_field, ref.supplier_sold_wh)]
    assert got == want


@pytest.mark.parametrize("name", sorted(CHEATS))
def test_a_cheater_leaves_every_suppliers_outputs_exact(name: str) -> None:
    """Regression (found by this test): a refused row that is no sharing, times its slot's
    fresh sharing of 0, corrupted every supplier's totals; refused rows are now zeroed."""
    specs = list(HONEST.values())
    per_bid = [_payloads(s) for s in specs]
    per_bid.insert(2, CHEATS[name]())
    results = _clear_payloads(per_bid)
    assert [int(i) for i in results[0].rejected] == [2]
    _assert_suppliers(results, [*specs[:2], None, *specs[2:]])


@pytest.mark.parametrize("name", sorted(CHEATS))
def test_a_cheater_does_not_stop_a_period_with_a_minimum_participation(name: str) -> None:
    """The running market's rule (3 accepted bids a side): the honest bids and one more seller
    trade at level 2; one cheater's refused slot must not change that (regression: its row,
    no sharing, times a fresh sharing of 0 made every count curve noise)."""
    specs = [*HONEST.values(), (False, 1_000, 0, 0)]
    per_bid = [_payloads(s) for s in specs]
    per_bid.insert(2, CHEATS[name]())
    results = _clear_payloads(per_bid, min_per_side=3)
    assert [int(i) for i in results[0].rejected] == [2]
    _assert_reference(results, [*specs[:2], None, *specs[2:]], min_per_side=3)


def test_the_supplier_check_holds_without_a_cheater() -> None:
    specs = list(HONEST.values())
    _assert_suppliers(_clear_payloads([_payloads(s) for s in specs]), specs)


# --- refusals carry no bid value -----------------------------------------------------------

#: Two bids that differ in every field: a refusal caused by either must read the same.
BID_X = (True, 4_321, 3, 1)
BID_Y = (False, 9_876, 0, 0)
LIMIT = Limits().max_payload_bytes
_HEAD = len(BidShares(0, LAYOUT, np.zeros(LAYOUT.width, dtype=F.U64)).to_bytes()) - 8 * LAYOUT.width


def _poke(payload: bytes, at: int, data: bytes) -> bytes:
    return payload[:at] + data + payload[at + len(data):]


def _altered(p: Pseudonym, payload: bytes) -> bytes:
    """A signed submission whose payload is changed afterwards (the signature kept)."""
    bid = wire.decode(wire.PseudonymousBid, make_submission(p, 0, payload))
    return wire.encode(dataclasses.replace(bid, payload=_poke(payload, _HEAD, bytes(8))))


Attack = Callable[[Pseudonym, list[bytes], tuple[bool, int, int, int]], bytes]
#: name → (the reason server 0 must give, the submission made from the bid's own payloads)
ATTACKS: dict[str, tuple[Reason, Attack]] = {
    "trailing_byte": (Reason.MALFORMED, lambda p, pl, _: make_submission(p, 0, pl[0] + b"!")),
    "truncated": (Reason.MALFORMED, lambda p, pl, _: make_submission(p, 0, pl[0][:20])),
    "word_outside_field": (Reason.MALFORMED, lambda p, pl, _: make_submission(
        p, 0, _poke(pl[0], _HEAD + 8, b"\xff" * 8))),
    "other_version": (Reason.MALFORMED, lambda p, pl, _: make_submission(
        p, 0, _poke(pl[0], 4, (99).to_bytes(2, "little")))),
    "share_of_server_1": (Reason.MALFORMED, lambda p, pl, _: make_submission(p, 0, pl[1])),
    "other_market": (Reason.MALFORMED, lambda p, _, spec: make_submission(
        p, 0, encode_bid(*spec, Layout(LEVELS, SUPPLIERS, 2 * MAX_Q))[0].to_bytes())),
    "envelope_for_server_1": (Reason.MALFORMED, lambda p, pl, _: make_submission(p, 1, pl[0])),
    "oversized": (Reason.MALFORMED, lambda p, pl, _: make_submission(
        p, 0, pl[0] * (LIMIT // len(pl[0]) + 1))),
    "altered_after_signing": (Reason.BAD_SIGNATURE, lambda p, pl, _: _altered(p, pl[0])),
}


def _bid_spellings(spec: tuple[bool, int, int, int],
                   payloads: list[bytes]) -> tuple[set[str], set[str]]:
    """The bid's values and server 0's share words as decimal numbers, and the fragments a
    detail could carry them in (hex of each, any 9 bytes of the payload in base64 or hex)."""
    _, q, level, supplier = spec
    values = {q, q - 1, MAX_Q - q, level, supplier}
    values |= {int(v) for v in BidShares.from_bytes(payloads[0]).values}
    numbers = {str(v) for v in values if v > 2}  # 0, 1, 2 also name servers and the version
    fragments = {format(v, "x") for v in values if v > 255}
    text = {base64.b64encode(payloads[0]).decode(), payloads[0].hex()}
    fragments |= {t[i:i + 12] for t in text for i in range(len(t) - 11)}
    return numbers, fragments


def _refused(event: Event, why: Reason, name: str) -> Rejected:
    assert isinstance(event, Rejected) and event.reason is why, (name, event)
    return event


def _refusals(spec: tuple[bool, int, int, int]) -> dict[str, Rejected]:
    """Each attack built from ``spec``'s payloads, sent to server 0 under a fresh pseudonym.

    Also checks that no refusal stored anything: the servers' bid sets hold the honest bid
    only; every refused pseudonym can still bid; the honest bid stays the one on record.
    """
    w = World(n=len(ATTACKS) + 2)
    honest, _ = w.pseudonym("h0000")
    payloads = _payloads(spec)
    raw0 = make_submission(honest, 0, payloads[0])
    assert accepted([w.submit(0, raw0), *(w.submit(i, make_submission(honest, i, payloads[i]))
                                          for i in (1, 2))])
    out: dict[str, Rejected] = {}
    refused = []
    for k, (name, (why, attack)) in enumerate(ATTACKS.items()):
        p, _ = w.pseudonym(f"h{k + 1:04d}")
        out[name] = _refused(w.submit(0, attack(p, payloads, spec)), why, name)
        refused.append(p)
    again = make_submission(honest, 0, _payloads(spec)[0])  # the same bid, fresh shares
    out["replayed"] = _refused(w.submit(0, raw0), Reason.REPLAYED, "replayed")
    out["other_shares"] = _refused(w.submit(0, again), Reason.DUPLICATE_PSEUDONYM, "other")
    for m in w.machines:  # nothing a refusal brought in was stored
        assert m.pseudonyms(PERIOD) == (honest.public,)
    # the bid on record is still the first: its replay is a replay, the other one a duplicate
    assert reason(w.submit(0, raw0)) is Reason.REPLAYED
    assert reason(w.submit(0, again)) is Reason.DUPLICATE_PSEUDONYM
    late, _ = w.pseudonym(f"h{len(ATTACKS) + 1:04d}")
    for p in refused:  # a refused pseudonym was not used up
        assert accepted(w.bid(p, _payloads(spec)))
    out["late"] = _refused(w.submit(0, make_submission(late, 0, payloads[0]), now=GATE),
                           Reason.LATE, "late")
    for m in w.machines:
        (closed,) = [e for e in m.receive(Tick(GATE)) if isinstance(e, GateClosed)]
        assert closed.pseudonyms == tuple(sorted([honest.public, *(p.public for p in refused)]))
    return out


def test_intake_refusals_never_repeat_bid_values_and_store_nothing() -> None:
    """Each refusal names its reason exactly, reads the same whatever the bid (every field of
    the two bids differs), and repeats no value of the bid in any spelling: quantity, q − 1,
    max − q, level, supplier, any share word (decimal or hex), any 9 bytes of the payload (in
    base64 or hex). Only 0, 1, 2 (server numbers, the version), the size limit and the
    schedule's public times appear."""
    x, y = _refusals(BID_X), _refusals(BID_Y)
    assert set(x) == set(y) == {*ATTACKS, "replayed", "other_shares", "late"}
    for name in x:
        assert dataclasses.asdict(x[name]) == dataclasses.asdict(y[name]), name
    for spec, got in ((BID_X, x), (BID_Y, y)):
        numbers, fragments = _bid_spellings(spec, _payloads(spec))
        for name, event in got.items():
            public = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "<time>", event.detail)
            found = set(re.findall(r"\d+", public))  # numbers, the schedule's times aside
            assert not found & numbers, (name, event.detail)
            assert found <= {"0", "1", "2", str(LIMIT)}, (name, event.detail)
            assert not {f for f in fragments if f in event.detail.lower()}, (name, event.detail)
