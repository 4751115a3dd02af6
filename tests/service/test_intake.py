"""The intake state machine driven by events alone: real Ed25519 and VOPRF keys, no sockets."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealgrid.mechanism.bids import Reason
from sealgrid.service import wire
from sealgrid.service.household import (
    Pseudonym,
    accept_grant,
    check_receipt,
    make_submission,
    token_request,
)
from sealgrid.service.intake import (
    Accepted,
    ChallengeIssued,
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
from sealgrid.service.tokens import token_input
from sealgrid.service.voprf import Issuer
from sealgrid.service.wire import PseudonymousBid, TokenRequest

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
    assert isinstance(issued, ChallengeIssued), issued
    return issued.nonce


def _issue(m: Intake, hid: str, key: Ed25519PrivateKey, period: str = PERIOD, now=NOW):
    """Run the issuance step; return (event, pseudonym) with the token kept on success."""
    p = Pseudonym.fresh(period)
    raw, blindings = token_request([p], hid, key, _nonce(m, now))
    (event,) = m.receive(IssuePseudonym(now, raw))
    if isinstance(event, Granted):
        accept_grant([p], 0, wire.raw_public(SERVER_KEY), event.grant, blindings)
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
    assert isinstance(event, Granted) and event.participations[0].household == "h0"
    raw = make_submission(p, 0, b"share-bytes")
    accepted = _submit(m, raw)
    assert isinstance(accepted, Accepted)
    assert check_receipt(accepted.receipt, 0, wire.raw_public(SERVER_KEY), raw, b"share-bytes")
    assert accepted.bid.payload == b"share-bytes"
    assert "household" not in json.loads(accepted.bid.bid)  # the bid names no household
    assert m.pseudonyms(PERIOD) == (p.public,)


def test_the_server_never_sees_what_it_evaluates(world, monkeypatch) -> None:
    """A token binds its pseudonym and period, and the issuer cannot link a request to the
    token it later sees: the test attacks as the issuer would, with its private key.

    The server sees ``B = r·H(x)`` with the household's fresh random scalar ``r``; when the
    bid comes it learns ``x`` (period and pseudonym) and can compute ``H(x)``, ``k·H(x)``,
    anything. With ``r`` uniform, ``B`` is a uniform group element whatever ``x`` is, so
    every request looks alike to it: the attacker below tries, for each request it answered,
    every blinding scalar it can afford to enumerate, and it must match none; against a
    household that draws its scalar from a small range (the control) the same attacker
    matches every request. The bytes of requests for A and for B are also alike (chi-square).
    """
    import numpy as np

    from sealgrid.service import voprf

    households, machine = world
    m = machine()
    issuer = ISSUERS[PERIOD]
    # binding: a token is for its pseudonym and period and the period's key only
    p = _token(m, "h1", households["h1"])
    token = p.tokens[0]
    assert issuer.verify_token(token_input(PERIOD, p.public), token)
    assert not issuer.verify_token(token_input(PERIOD, Pseudonym.fresh(PERIOD).public), token)
    assert not issuer.verify_token(token_input(OTHER, p.public), token)
    assert not ISSUERS[OTHER].verify_token(token_input(OTHER, p.public), token)
    thief = Pseudonym.fresh(PERIOD)
    thief.tokens = {0: token}
    assert _reason(_submit(m, make_submission(thief, 0, b"x"))) is Reason.BAD_SIGNATURE

    a, b = Pseudonym.fresh(PERIOD), Pseudonym.fresh(PERIOD)

    def seen(q: Pseudonym) -> bytes:  # what the server receives: the household's request
        raw, _ = token_request([q], "h0", households["h0"], b"n")
        return wire.decode(TokenRequest, raw).blinded[0]

    small = 64  # the blinding scalars the attacker enumerates: 1 … small
    real_blind = voprf.blind

    def matched(requests: list[bytes], q: Pseudonym) -> int:
        h = voprf.hash_to_group(token_input(PERIOD, q.public))
        guesses = {real_blind(token_input(PERIOD, q.public),
                              r.to_bytes(32, "little")).blinded for r in range(1, small + 1)}
        assert h in guesses  # r = 1 gives H(x) itself: the attacker's list is the real thing
        return sum(x in guesses for x in requests)

    requests_a = [seen(a) for _ in range(40)]
    assert matched(requests_a, a) == 0
    h = [np.bincount([x[0] >> 4 for _ in range(160) for x in [seen(q)]], minlength=16)
         for q in (a, b)]
    col = (h[0] + h[1]) / 2
    stat = float((((h[0] - col) ** 2 + (h[1] - col) ** 2) / col).sum())
    assert stat < 44.3, f"the blinded elements tell A from B (chi-square {stat:.0f}, 15 df)"
    # control: a household drawing its scalar from 1 … small is matched every time
    rng = np.random.default_rng(7)
    monkeypatch.setattr(voprf, "blind", lambda data, blind=None: real_blind(
        data, int(rng.integers(1, small + 1)).to_bytes(32, "little")))
    weak = [seen(a) for _ in range(40)]
    assert matched(weak, a) == 40


def test_one_request_fetches_tokens_for_many_periods(world) -> None:
    households, machine = world
    m = machine()
    ps = [Pseudonym.fresh(PERIOD), Pseudonym.fresh(OTHER)]
    raw, blindings = token_request(ps, "h0", households["h0"], _nonce(m))
    (event,) = m.receive(IssuePseudonym(NOW, raw))
    assert isinstance(event, Granted)
    assert [(x.period, x.household) for x in event.participations] == [(PERIOD, "h0"),
                                                                       (OTHER, "h0")]
    accept_grant(ps, 0, wire.raw_public(SERVER_KEY), event.grant, blindings)
    for q in ps:  # each token is good for its own period's bid
        assert isinstance(_submit(m, make_submission(q, 0, b"x")), Accepted)
    # either period again, alone or with a new one: refused whole, naming the period
    event, _ = _issue(m, "h0", households["h0"], OTHER)
    assert _reason(event) is Reason.TOO_FREQUENT and OTHER in event.detail
    # a period named twice, a blinded element that is not a group element, counts that differ
    req = wire.decode(TokenRequest, token_request([Pseudonym.fresh(PERIOD)] * 2, "h1",
                                                  households["h1"], _nonce(m))[0])
    for bad, rule in (
        (req, "named twice"),
        (dataclasses.replace(req, periods=(PERIOD,), blinded=(b"\xff" * 32,)), "element"),
        (dataclasses.replace(req, periods=(PERIOD,)), "one blinded element per period"),
    ):
        signed = wire.sign(dataclasses.replace(bad, nonce=_nonce(m)), households["h1"])
        (event,) = m.receive(IssuePseudonym(NOW, wire.encode(signed)))
        assert _reason(event) is Reason.MALFORMED and rule in event.detail, event
    # nothing of the refused requests was granted: h1 still gets its token
    assert isinstance(_issue(m, "h1", households["h1"])[0], Granted)


def test_forged_unsigned_replayed_late_duplicate_are_refused_distinctly(world) -> None:
    households, machine = world
    m = machine()
    # forged: a token from an issuer key that is not the server's
    forged = Pseudonym.fresh(PERIOD)
    forged.tokens[0] = Issuer.generate().evaluate_input(token_input(PERIOD, forged.public))
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
    raw, _ = token_request([p], "h0", households["h0"], nonce)
    later = NOW + dt.timedelta(seconds=5)
    (event,) = m.receive(IssuePseudonym(later, raw))
    assert _reason(event) is Reason.REPLAYED
    event, q = _issue(m, "h1", households["h1"])
    assert isinstance(event, Granted)
    (event,) = m.receive(
        IssuePseudonym(
            NOW, token_request([q], "h1", households["h1"], b"used")[0]
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
    parts = [part for g in granted for part in g.participations]
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
