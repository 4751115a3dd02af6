"""The intake state machine driven by events alone: real Ed25519 and RSA keys, no sockets."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealgrid.mechanism.bids import Reason
from sealgrid.service import wire
from sealgrid.service.blind import Issuer
from sealgrid.service.household import (
    Pseudonym,
    accept_grant,
    check_receipt,
    issue_request,
    make_submission,
)
from sealgrid.service.intake import (
    Accepted,
    GateClosed,
    Granted,
    Intake,
    IssueChallenge,
    IssuePseudonym,
    Limits,
    Rejected,
    SubmitBid,
    Tick,
)
from sealgrid.service.schedule import Schedule
from sealgrid.service.wire import PseudonymousBid

NOW = dt.datetime(2026, 11, 22, 21, 7, tzinfo=dt.UTC)
PERIOD = "2026-11-22T21:45:00Z"  # first open period at NOW (gate 21:15)
OTHER = "2026-11-22T22:00:00Z"
GATE = dt.datetime(2026, 11, 22, 21, 15, tzinfo=dt.UTC)
SERVER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
ISSUERS = {PERIOD: Issuer.generate(), OTHER: Issuer.generate()}


@pytest.fixture
def world():
    households = {f"h{i}": Ed25519PrivateKey.generate() for i in range(4)}

    def machine(**limits) -> Intake:
        m = Intake(
            0,
            SERVER_KEY,
            {h: wire.raw_public(k) for h, k in households.items()},
            Schedule(900),
            Limits(**limits),
        )
        for period, issuer in ISSUERS.items():
            m.add_issuer(period, issuer)
        return m

    return households, machine


_counter = iter(range(10**6))


def _nonce(m: Intake, now: dt.datetime = NOW) -> bytes:
    (issued,) = m.receive(IssueChallenge(now, next(_counter).to_bytes(16, "big")))
    return issued.nonce


def _issue(m: Intake, hid: str, key: Ed25519PrivateKey, period: str = PERIOD, now=NOW):
    """Run the issuance step; return (event, pseudonym) with the token kept on success."""
    p = Pseudonym.fresh(period)
    issuer = ISSUERS.get(period, ISSUERS[PERIOD]).public
    raw, blinding = issue_request(p, issuer, hid, key, _nonce(m, now))
    (event,) = m.receive(IssuePseudonym(now, raw))
    if isinstance(event, Granted):
        accept_grant(p, 0, wire.raw_public(SERVER_KEY), event.grant, blinding, issuer)
    return event, p


def _token(m: Intake, hid: str, key: Ed25519PrivateKey, period: str = PERIOD) -> Pseudonym:
    event, p = _issue(m, hid, key, period)
    assert isinstance(event, Granted), event
    return p


def _submit(m: Intake, raw: bytes, now: dt.datetime = NOW):
    (event,) = m.receive(SubmitBid(now, raw))
    return event


def _reason(event) -> Reason:
    assert isinstance(event, Rejected), event
    return event.reason


def test_a_valid_bid_is_accepted_with_a_receipt_that_verifies(world) -> None:
    households, machine = world
    m = machine()
    event, p = _issue(m, "h0", households["h0"])
    assert isinstance(event, Granted) and event.participation.household == "h0"
    raw = make_submission(p, 0, b"share-bytes")
    accepted = _submit(m, raw)
    assert isinstance(accepted, Accepted)
    assert check_receipt(accepted.receipt, 0, wire.raw_public(SERVER_KEY), raw, b"share-bytes")
    assert accepted.bid.payload == b"share-bytes"
    assert "household" not in json.loads(accepted.bid.bid)  # the bid names no household
    assert m.pseudonyms(PERIOD) == (p.public,)


def test_the_server_never_sees_what_it_signs(world, monkeypatch) -> None:
    """A token binds its pseudonym and period, and the issuer's view is the same whichever
    pseudonym it signs for: the test attacks as the issuer would, with its private key.

    For a blinded message x the issuer can compute the blinding factor that would explain x
    under any guess h, ``r_h(x) = (x / FDH(period, h))^d``. For x made for pseudonym A,
    ``r_A(x)`` is the household's own random factor; for x made for B it is that factor times
    ``(FDH(B) / FDH(A))^d``. Blind signing means both are uniform, so the histogram of
    ``r_A(x)`` (top 4 bits of ``r/n``) must be alike for blinded messages of A and of B, and
    the blinded message the server signed for A must also be B's blinded message under a
    factor that unblinds to a valid token for B. A control plants a weak blinding (a 64-bit
    random factor) and the same statistic must see it.
    """
    import secrets

    import numpy as np

    from sealgrid.service import blind

    households, machine = world
    m = machine()
    issuer = ISSUERS[PERIOD]
    n = issuer.public.n
    # binding: a token is for its pseudonym and period only
    p = _token(m, "h1", households["h1"])
    token = p.tokens[0]
    assert issuer.public.verify(PERIOD, p.public, token)
    assert not issuer.public.verify(PERIOD, Pseudonym.fresh(PERIOD).public, token)
    assert not issuer.public.verify(OTHER, p.public, token)
    assert not ISSUERS[OTHER].public.verify(OTHER, p.public, token)
    thief = Pseudonym.fresh(PERIOD)
    thief.tokens = {0: token}
    assert _reason(_submit(m, make_submission(thief, 0, b"x"))) is Reason.BAD_SIGNATURE

    a, b = Pseudonym.fresh(PERIOD), Pseudonym.fresh(PERIOD)
    m_a = blind.fdh(n, PERIOD, a.public)
    m_a_inv = pow(m_a, -1, n)

    def seen(q: Pseudonym) -> int:  # what the server receives: the household's real request
        raw, _ = issue_request(q, issuer.public, "h0", households["h0"], b"n")
        return int.from_bytes(wire.decode(wire.IssueRequest, raw).blinded, "big")

    def explained_by_a(x: int) -> int:  # r_A(x), with the issuer's private key
        root = issuer.sign_blinded((x * m_a_inv % n).to_bytes(issuer.public.size, "big"))
        return int.from_bytes(root, "big")

    def chi2(runs: int) -> float:
        h = [np.bincount([16 * explained_by_a(seen(q)) // n for _ in range(runs)],
                         minlength=16) for q in (a, b)]
        col = (h[0] + h[1]) / 2
        keep = col > 0
        return float((((h[0] - col) ** 2 + (h[1] - col) ** 2)[keep] / col[keep]).sum())

    stat = chi2(160)
    assert stat < 44.3, f"the blinded messages tell A from B (chi-square {stat:.0f}, 15 df)"
    # the message signed for A is B's under another factor, which unblinds to B's token
    x = seen(a)
    blind_sig = issuer.sign_blinded(x.to_bytes(issuer.public.size, "big"))
    m_b = blind.fdh(n, PERIOD, b.public)
    r_b = int.from_bytes(issuer.sign_blinded(
        (x * pow(m_b, -1, n) % n).to_bytes(issuer.public.size, "big")), "big")
    monkeypatch.setattr(blind.secrets, "randbelow", lambda _: r_b - 2)
    as_b = blind.blind(issuer.public, PERIOD, b.public)
    assert int.from_bytes(as_b.blinded, "big") == x
    assert issuer.public.verify(PERIOD, b.public, blind.unblind(issuer.public, as_b, blind_sig))
    # control: a household drawing its factor below 2^64 is seen at once
    monkeypatch.setattr(blind.secrets, "randbelow", lambda _: secrets.randbits(64))
    assert chi2(60) > 44.3


def test_forged_unsigned_replayed_late_duplicate_are_refused_distinctly(world) -> None:
    households, machine = world
    m = machine()
    # forged: a token from an issuer key that is not the server's
    forged = Pseudonym.fresh(PERIOD)
    rogue = Issuer.generate()
    from sealgrid.service.blind import fdh

    forged.tokens[0] = rogue.sign_blinded(
        fdh(rogue.public.n, PERIOD, forged.public).to_bytes(rogue.public.size, "big")
    )
    event = _submit(m, make_submission(forged, 0, b"x"))
    assert _reason(event) is Reason.BAD_SIGNATURE and event.detail.startswith("forged: the token")
    # no token at all
    bare = Pseudonym.fresh(PERIOD)
    event = _submit(m, make_submission(bare, 0, b"x"))
    assert _reason(event) is Reason.UNSIGNED and "no token" in event.detail
    # a token of another period
    q = _token(m, "h2", households["h2"], OTHER)
    moved = dataclasses.replace(q, period=PERIOD)
    assert _reason(_submit(m, make_submission(moved, 0, b"x"))) is Reason.BAD_SIGNATURE
    # unsigned: the pseudonym's signature stripped
    p = _token(m, "h1", households["h1"])
    bid = wire.decode(PseudonymousBid, make_submission(p, 0, b"x"))
    unsigned = wire.encode(dataclasses.replace(bid, signature=b""))
    event = _submit(m, unsigned)
    assert _reason(event) is Reason.UNSIGNED and event.detail.startswith("unsigned")
    # a signature by another key
    other = wire.sign(dataclasses.replace(bid, signature=b""), Ed25519PrivateKey.generate())
    event = _submit(m, wire.encode(other))
    assert _reason(event) is Reason.BAD_SIGNATURE and "signature does not verify" in event.detail
    # issuance under a key that is not the household's, or an unknown household
    event, _ = _issue(m, "h3", households["h0"])
    assert _reason(event) is Reason.BAD_SIGNATURE
    event, _ = _issue(m, "h9", households["h0"])
    assert _reason(event) is Reason.BAD_SIGNATURE
    # accepted, then replayed byte for byte
    good = make_submission(p, 0, b"x")
    assert isinstance(_submit(m, good), Accepted)
    assert _reason(_submit(m, good)) is Reason.REPLAYED
    # a fresh message under the same pseudonym
    again = make_submission(p, 0, b"y")
    assert _reason(_submit(m, again)) is Reason.DUPLICATE_PSEUDONYM
    # a second pseudonym for the same household and period
    event, _ = _issue(m, "h1", households["h1"])
    assert _reason(event) is Reason.TOO_FREQUENT
    # late: after the gate of PERIOD, for a bid (with a good token) and for an issuance
    tardy = _token(m, "h3", households["h3"])
    assert _reason(_submit(m, make_submission(tardy, 0, b"z"), GATE)) is Reason.LATE
    event, _ = _issue(m, "h0", households["h0"], PERIOD, GATE)
    assert _reason(event) is Reason.LATE
    # a period name that is not a period
    event, _ = _issue(m, "h3", households["h3"], "2026-11-22T21:46:00Z")
    assert _reason(event) is Reason.WRONG_PERIOD


def test_size_server_and_rate_limits(world) -> None:
    households, machine = world
    m = machine(max_payload_bytes=100, rate_limit=2)
    p = _token(m, "h0", households["h0"])
    event = _submit(m, make_submission(p, 0, b"x" * 101))
    assert _reason(event) is Reason.MALFORMED and "larger" in event.detail
    assert _reason(_submit(m, b"x" * 10_000)) is Reason.MALFORMED
    assert _reason(_submit(m, b"{}")) is Reason.MALFORMED
    event = _submit(m, make_submission(p, 1, b"x"))
    assert _reason(event) is Reason.MALFORMED and "server 1" in event.detail
    assert isinstance(_submit(m, make_submission(p, 0, b"x")), Accepted)
    # rate: h0's third signed issuance request in the window is refused
    _token(m, "h0", households["h0"], OTHER)
    event, _ = _issue(m, "h0", households["h0"], "2026-11-22T22:15:00Z")
    assert _reason(event) is Reason.TOO_FREQUENT and "per window" in event.detail


def test_expired_or_reused_challenge_is_refused(world) -> None:
    households, machine = world
    m = machine(challenge_ttl_seconds=5)
    p = Pseudonym.fresh(PERIOD)
    nonce = _nonce(m)
    raw, _ = issue_request(p, ISSUERS[PERIOD].public, "h0", households["h0"], nonce)
    later = NOW + dt.timedelta(seconds=5)
    (event,) = m.receive(IssuePseudonym(later, raw))
    assert _reason(event) is Reason.REPLAYED
    event, q = _issue(m, "h1", households["h1"])
    assert isinstance(event, Granted)
    (event,) = m.receive(
        IssuePseudonym(
            NOW, issue_request(q, ISSUERS[PERIOD].public, "h1", households["h1"], b"used")[0]
        )
    )
    assert _reason(event) is Reason.REPLAYED


def test_gate_closes_once_with_the_sorted_bid_set_and_restores(world) -> None:
    households, machine = world
    m = machine()
    accepted, granted = [], []
    for h in ("h0", "h1", "h2"):
        event, p = _issue(m, h, households[h])
        granted.append(event)
        accepted.append(_submit(m, make_submission(p, 0, b"x")))
    assert m.receive(Tick(NOW)) == []
    (closed,) = m.receive(Tick(GATE))
    assert isinstance(closed, GateClosed) and closed.period == PERIOD
    assert closed.pseudonyms == tuple(sorted(a.bid.pseudonym for a in accepted))
    assert m.receive(Tick(GATE)) == []
    # a fresh machine restored from the stored records has the same state
    parts = [g.participation for g in granted]
    m2 = machine()
    m2.restore([a.bid for a in accepted], parts, {PERIOD})
    assert m2.pseudonyms(PERIOD) == closed.pseudonyms and m2.is_closed(PERIOD)
    m3 = machine()
    m3.restore([a.bid for a in accepted], parts, set())
    assert not m3.is_closed(PERIOD)
    event, _ = _issue(m3, "h0", households["h0"])
    assert _reason(event) is Reason.TOO_FREQUENT
    dup = make_submission(Pseudonym(PERIOD, Ed25519PrivateKey.generate()), 0, b"x")
    assert _reason(_submit(m3, dup)) is Reason.UNSIGNED


def test_same_events_give_byte_identical_receipts(world) -> None:
    households, machine = world
    m0 = machine()
    p = _token(m0, "h0", households["h0"])
    outs = []
    for _ in range(2):
        m = machine()
        outs.append(_submit(m, make_submission(p, 0, b"x")))
    assert wire.encode(outs[0].receipt) == wire.encode(outs[1].receipt)


def test_a_peer_asking_first_does_not_swallow_the_gate_closure(world) -> None:
    households, machine = world
    m = machine()
    p = _token(m, "h0", households["h0"])
    assert isinstance(_submit(m, make_submission(p, 0, b"x")), Accepted)
    assert not m.close_due(PERIOD, GATE - dt.timedelta(seconds=1))
    assert m.close_due(PERIOD, GATE)  # a peer asked for our bid set: no more bids
    assert m.is_closed(PERIOD)
    (closed,) = m.receive(Tick(GATE))
    assert isinstance(closed, GateClosed) and closed.pseudonyms == (p.public,)


def test_outstanding_challenges_are_bounded(world) -> None:
    """An unauthenticated flood of challenges cannot grow without bound: beyond
    max_challenges outstanding a new one is refused (too_frequent) until some expire or are
    used; using one makes room at once."""
    _, machine = world
    m = machine(challenge_ttl_seconds=5, max_challenges=3)
    nonces = [_nonce(m) for _ in range(3)]
    (event,) = m.receive(IssueChallenge(NOW, b"\x01" * 16))
    assert _reason(event) is Reason.TOO_FREQUENT and "too many challenges" in event.detail
    assert m.use_challenge(nonces[0], NOW) is None  # used: room for one more
    (event,) = m.receive(IssueChallenge(NOW, b"\x02" * 16))
    assert not isinstance(event, Rejected)
    (event,) = m.receive(IssueChallenge(NOW, b"\x03" * 16))
    assert isinstance(event, Rejected)
    later = NOW + dt.timedelta(seconds=5)  # all expired: room again
    (event,) = m.receive(IssueChallenge(later, b"\x04" * 16))
    assert not isinstance(event, Rejected)
