"""The intake state machine driven by events alone: real Ed25519 keys, no sockets."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealgrid.mechanism.bids import Reason
from sealgrid.service import wire
from sealgrid.service.household import Pseudonym, check_receipt, make_submission
from sealgrid.service.intake import (
    Accepted,
    GateClosed,
    Intake,
    IssueChallenge,
    Limits,
    Rejected,
    SubmitBid,
    Tick,
)
from sealgrid.service.schedule import Schedule
from sealgrid.service.wire import BidSubmission

NOW = dt.datetime(2026, 11, 22, 21, 7, tzinfo=dt.UTC)
PERIOD = "2026-11-22T21:45:00Z"  # first open period at NOW (gate 21:15)
SERVER_SEED = bytes(range(32))


@pytest.fixture
def world():
    households = {f"h{i}": Ed25519PrivateKey.generate() for i in range(4)}
    server_key = Ed25519PrivateKey.from_private_bytes(SERVER_SEED)

    def machine(**limits) -> Intake:
        return Intake(
            0,
            server_key,
            {h: wire.raw_public(k) for h, k in households.items()},
            Schedule(900),
            Limits(**limits),
        )

    return households, server_key, machine


def _nonce(m: Intake, n: int, now: dt.datetime = NOW) -> bytes:
    nonce = n.to_bytes(16, "big")
    (issued,) = m.receive(IssueChallenge(now, nonce))
    return issued.nonce


def _submit(m: Intake, raw: bytes, now: dt.datetime = NOW):
    (event,) = m.receive(SubmitBid(now, raw))
    return event


def test_a_valid_bid_is_accepted_with_a_receipt_that_verifies(world) -> None:
    households, server_key, machine = world
    m = machine()
    p = Pseudonym.fresh(PERIOD, "h0", households["h0"])
    raw = make_submission(p, 0, _nonce(m, 1), b"share-bytes")
    event = _submit(m, raw)
    assert isinstance(event, Accepted)
    assert check_receipt(event.receipt, 0, wire.raw_public(server_key), raw, b"share-bytes")
    assert event.bid.payload == b"share-bytes" and event.participation.household == "h0"
    # the stored bid does not name the household
    assert "household" not in wire.json.loads(event.bid.bid)
    assert m.pseudonyms(PERIOD) == (p.public,)


def _reason(event) -> Reason:
    assert isinstance(event, Rejected), event
    return event.reason


def test_forged_unsigned_replayed_late_duplicate_are_refused_distinctly(world) -> None:
    households, _, machine = world
    m = machine()
    # forged: the pseudonym certified by a key that is not h1's
    forged = Pseudonym.fresh(PERIOD, "h1", Ed25519PrivateKey.generate())
    assert (
        _reason(_submit(m, make_submission(forged, 0, _nonce(m, 1), b"x"))) is Reason.BAD_SIGNATURE
    )
    # unsigned: the bid's signature stripped
    p = Pseudonym.fresh(PERIOD, "h1", households["h1"])
    sub = wire.decode(BidSubmission, make_submission(p, 0, _nonce(m, 2), b"x"))
    bid = wire.decode(wire.PseudonymousBid, sub.bid)
    import dataclasses

    unsigned = dataclasses.replace(sub, bid=wire.encode(dataclasses.replace(bid, signature=b"")))
    assert _reason(_submit(m, wire.encode(unsigned))) is Reason.BAD_SIGNATURE
    # unknown household
    stranger = Pseudonym.fresh(PERIOD, "h9", households["h1"])
    assert (
        _reason(_submit(m, make_submission(stranger, 0, _nonce(m, 3), b"x")))
        is Reason.BAD_SIGNATURE
    )
    # accepted, then replayed byte for byte
    good = make_submission(p, 0, _nonce(m, 4), b"x")
    assert isinstance(_submit(m, good), Accepted)
    assert _reason(_submit(m, good)) is Reason.REPLAYED
    # a fresh message under the same pseudonym
    assert (
        _reason(_submit(m, make_submission(p, 0, _nonce(m, 5), b"y"))) is Reason.DUPLICATE_PSEUDONYM
    )
    # a second pseudonym of the same household in the same period
    p2 = Pseudonym.fresh(PERIOD, "h1", households["h1"])
    assert _reason(_submit(m, make_submission(p2, 0, _nonce(m, 6), b"y"))) is Reason.TOO_FREQUENT
    # late: after the gate of PERIOD (21:15)
    later = dt.datetime(2026, 11, 22, 21, 15, tzinfo=dt.UTC)
    p3 = Pseudonym.fresh(PERIOD, "h2", households["h2"])
    late = make_submission(p3, 0, _nonce(m, 7, later), b"x")
    assert _reason(_submit(m, late, later)) is Reason.LATE
    # a period name that is not a period
    p4 = Pseudonym.fresh("2026-11-22T21:46:00Z", "h3", households["h3"])
    assert _reason(_submit(m, make_submission(p4, 0, _nonce(m, 8), b"x"))) is Reason.WRONG_PERIOD


def test_size_server_and_rate_limits(world) -> None:
    households, _, machine = world
    m = machine(max_payload_bytes=100, rate_limit=2)
    p = Pseudonym.fresh(PERIOD, "h0", households["h0"])
    event = _submit(m, make_submission(p, 0, _nonce(m, 1), b"x" * 101))
    assert _reason(event) is Reason.MALFORMED and "larger" in event.detail
    assert _reason(_submit(m, b"x" * 10_000)) is Reason.MALFORMED
    assert _reason(_submit(m, b"{}")) is Reason.MALFORMED
    event = _submit(m, make_submission(p, 1, _nonce(m, 2), b"x"))
    assert _reason(event) is Reason.MALFORMED and "server 1" in event.detail
    # rate: the third signed submission in the window is refused before anything else
    assert _reason(_submit(m, make_submission(p, 0, _nonce(m, 3), b"x" * 101))) is Reason.MALFORMED
    q = Pseudonym.fresh("2026-11-22T22:00:00Z", "h0", households["h0"])
    assert isinstance(_submit(m, make_submission(q, 0, _nonce(m, 4), b"x")), Accepted)
    r = Pseudonym.fresh("2026-11-22T22:15:00Z", "h0", households["h0"])
    assert isinstance(_submit(m, make_submission(r, 0, _nonce(m, 5), b"x")), Accepted)
    s = Pseudonym.fresh("2026-11-22T22:30:00Z", "h0", households["h0"])
    assert _reason(_submit(m, make_submission(s, 0, _nonce(m, 6), b"x"))) is Reason.TOO_FREQUENT
    later = NOW + dt.timedelta(seconds=61)
    assert isinstance(_submit(m, make_submission(s, 0, _nonce(m, 7, later), b"x"), later), Accepted)


def test_expired_challenge_is_refused(world) -> None:
    households, _, machine = world
    m = machine(challenge_ttl_seconds=5)
    nonce = _nonce(m, 1)
    p = Pseudonym.fresh(PERIOD, "h0", households["h0"])
    later = NOW + dt.timedelta(seconds=5)
    assert _reason(_submit(m, make_submission(p, 0, nonce, b"x"), later)) is Reason.REPLAYED


def test_gate_closes_once_with_the_sorted_bid_set_and_restores(world) -> None:
    households, _, machine = world
    m = machine()
    accepted = []
    for i, h in enumerate(("h0", "h1", "h2")):
        p = Pseudonym.fresh(PERIOD, h, households[h])
        accepted.append(_submit(m, make_submission(p, 0, _nonce(m, i), b"x")))
    assert m.receive(Tick(NOW)) == []
    gate = dt.datetime(2026, 11, 22, 21, 15, tzinfo=dt.UTC)
    (closed,) = m.receive(Tick(gate))
    assert isinstance(closed, GateClosed) and closed.period == PERIOD
    assert closed.pseudonyms == tuple(sorted(a.bid.pseudonym for a in accepted))
    assert m.receive(Tick(gate)) == []
    # a fresh machine restored from the stored records has the same state
    m2 = machine()
    m2.restore([a.bid for a in accepted], [a.participation for a in accepted], {PERIOD})
    assert m2.pseudonyms(PERIOD) == closed.pseudonyms and m2.is_closed(PERIOD)
    p = Pseudonym.fresh(PERIOD, "h0", households["h0"])
    assert _reason(_submit(m2, make_submission(p, 0, _nonce(m2, 9), b"x"))) is Reason.LATE
    m3 = machine()
    m3.restore([a.bid for a in accepted], [a.participation for a in accepted], set())
    assert not m3.is_closed(PERIOD)
    assert _reason(_submit(m3, make_submission(p, 0, _nonce(m3, 9), b"x"))) is Reason.TOO_FREQUENT


def test_same_events_give_byte_identical_receipts(world) -> None:
    households, _, machine = world
    p = Pseudonym.fresh(PERIOD, "h0", households["h0"])
    outs = []
    for _ in range(2):
        m = machine()
        outs.append(_submit(m, make_submission(p, 0, _nonce(m, 1), b"x")))
    assert wire.encode(outs[0].receipt) == wire.encode(outs[1].receipt)


def test_a_peer_asking_first_does_not_swallow_the_gate_closure(world) -> None:
    households, _, machine = world
    m = machine()
    p = Pseudonym.fresh(PERIOD, "h0", households["h0"])
    assert isinstance(_submit(m, make_submission(p, 0, _nonce(m, 1), b"x")), Accepted)
    gate = dt.datetime(2026, 11, 22, 21, 15, tzinfo=dt.UTC)
    assert not m.close_due(PERIOD, gate - dt.timedelta(seconds=1))
    assert m.close_due(PERIOD, gate)  # a peer asked for our bid set: no more bids
    assert m.is_closed(PERIOD)
    (closed,) = m.receive(Tick(gate))
    assert isinstance(closed, GateClosed) and closed.pseudonyms == (p.public,)
