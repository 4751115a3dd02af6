"""Bid intake and gate closure as one pure state machine; assumes nothing about I/O or clocks.

In the style of h11: the server shell feeds events (:class:`IssueChallenge`,
:class:`IssuePseudonym`, :class:`SubmitBid`, :class:`Tick`) with the current time and fresh
randomness inside them, and gets events back (:class:`ChallengeIssued`, :class:`Granted`,
:class:`Accepted`, :class:`Rejected`, :class:`GateClosed`). Tests drive it without sockets.

Two steps per household and period: a registered household gets one blinded evaluation of
its pseudonym's token (:class:`IssuePseudonym` → :class:`Granted`; one per household and
period, for many periods in one request), then bids under the pseudonym with the unblinded
token (:class:`SubmitBid` → :class:`Accepted`); the bid names no household. The shell must
store a :class:`Granted` participation and an :class:`Accepted` bid durably before it
answers; if storing fails it calls :meth:`Intake.forget`. Issuer keys (one VOPRF key per
period, :mod:`sealgrid.service.voprf`) come from the shell (:meth:`Intake.add_issuer`):
making one needs randomness (each evaluation's proof draws its own nonce). Every refusal
names one :class:`~sealgrid.mechanism.bids.Reason`.

Bids are deterministic (Ed25519 signatures are), so the journal of accepted bids replays to
the same state after a restart.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealgrid.mechanism.bids import BidRejected, Reason
from sealgrid.service import voprf, wire
from sealgrid.service.schedule import Schedule
from sealgrid.service.tokens import token_input
from sealgrid.service.voprf import Issuer
from sealgrid.service.wire import PseudonymousBid, Receipt, TokenGrant, TokenRequest

#: Bytes a submission may carry beyond its payload (base64 growth, keys, signatures).
ENVELOPE_BYTES = 4096

#: Refusal details said by the intake, and by the server when the database refuses what
#: another worker stored first (the same rule, found one step later).
CHALLENGE_UNKNOWN = "the challenge is unknown or already used; fetch a new one"
GATE_CLOSED = "the gate of this period has closed"
SAME_BID = "this exact bid was already accepted"


def has_token(period: str) -> str:
    """The detail of a second token request of one household for ``period``."""
    return (f"one pseudonym per household and period: this household has its token for"
            f" {period} already; bid under that pseudonym (asking again will not help)")


# --------------------------------------------------------------------------- events in


@dataclass(frozen=True)
class IssueChallenge:
    """Hand out a fresh challenge; ``nonce`` is fresh randomness from the shell."""

    now: dt.datetime
    nonce: bytes


@dataclass(frozen=True)
class IssuePseudonym:
    """A household asks for its pseudonyms' tokens: the raw ``TokenRequest``."""

    now: dt.datetime
    raw: bytes


@dataclass(frozen=True)
class SubmitBid:
    """A bid share arrived: the raw ``PseudonymousBid``, as received."""

    now: dt.datetime
    raw: bytes


@dataclass(frozen=True)
class Tick:
    """Time passed: close the gates that are due and forget expired challenges."""

    now: dt.datetime


# --------------------------------------------------------------------------- events out


@dataclass(frozen=True)
class ChallengeIssued:
    """A challenge to sign into the next submission, valid until ``expires``."""

    nonce: bytes
    expires: dt.datetime


@dataclass(frozen=True)
class StoredBid:
    """What a server keeps of an accepted bid: it names no household, and has no arrival
    time or sequence number (nothing that could pair it with a :class:`Participation`)."""

    period: str
    pseudonym: bytes
    bid: bytes  # wire bytes of the signed PseudonymousBid
    payload: bytes
    receipt: bytes  # wire bytes of the signed Receipt


@dataclass(frozen=True)
class Participation:
    """That ``household`` got its pseudonym signed for ``period`` (once per period)."""

    period: str
    household: str


@dataclass(frozen=True)
class Granted:
    """Tokens were evaluated: store ``participations`` (one per period), then send ``grant``.

    ``nonce`` and ``expires``: the challenge the request used (with shared challenges, the
    shell records its use in the database, where every worker sees it)."""

    participations: tuple[Participation, ...]
    grant: TokenGrant
    nonce: bytes = b""
    expires: dt.datetime | None = None


@dataclass(frozen=True)
class Accepted:
    """A bid passed every check: store ``bid``, then send ``receipt``."""

    bid: StoredBid
    receipt: Receipt


@dataclass(frozen=True)
class Rejected:
    """A submission was refused for ``reason``; ``detail`` never repeats a bid value."""

    reason: Reason
    detail: str = ""


@dataclass(frozen=True)
class GateClosed:
    """Bidding for ``period`` is over; ``pseudonyms`` (sorted) is this server's bid set."""

    period: str
    pseudonyms: tuple[bytes, ...]


Event = ChallengeIssued | Granted | Accepted | Rejected | GateClosed


# --------------------------------------------------------------------------- the machine


@dataclass
class _Period:
    bids: dict[bytes, bytes] = field(default_factory=dict)  # pseudonym -> SHA-256 of the bid
    households: set[str] = field(default_factory=set)
    closed: bool = False  # no more bids
    announced: bool = False  # GateClosed emitted (or restored as already handled)


@dataclass(frozen=True)
class Limits:
    """Intake limits (all servers must use the same ones)."""

    max_payload_bytes: int = 65536
    rate_limit: int = 20
    rate_window_seconds: int = 60
    challenge_ttl_seconds: int = 60
    max_challenges: int = 100_000  # outstanding at once; an unauthenticated flood is refused


class Intake:
    """Bid intake of computation server ``party``: pure, single-threaded, deterministic."""

    def __init__(
        self,
        party: int,
        signing_key: Ed25519PrivateKey,
        households: dict[str, bytes],
        schedule: Schedule,
        limits: Limits | None = None,
        check_payload: Callable[[bytes], None] | None = None,
        challenge_key: bytes | None = None,
    ) -> None:
        self.party = party
        #: with a key, challenges are stateless (:func:`shared_challenge`): any worker of
        #: the server that holds the key accepts them; each worker refuses a second use, and
        #: the shell records every use in the shared database (see Granted.nonce)
        self._challenge_key = challenge_key
        self._key = signing_key
        self._households = households
        self.schedule = schedule
        self.limits = limits or Limits()
        self._check_payload = check_payload
        self._challenges: dict[bytes, dt.datetime] = {}
        self._periods: dict[str, _Period] = {}
        self._closed_through: dt.datetime | None = None  # every gate up to it is closed
        self._recent: dict[str, deque[dt.datetime]] = {}
        self._issuers: dict[str, Issuer] = {}

    # -- issuer keys

    def add_issuer(self, period: str, issuer: Issuer) -> None:
        """Install the (stored) issuer key of ``period``; the first one stays."""
        self._issuers.setdefault(period, issuer)

    def issuer(self, period: str) -> Issuer | None:
        """Return the issuer key of ``period``, if there is one."""
        return self._issuers.get(period)

    # -- restart

    def restore(
        self, bids: list[StoredBid], participations: list[Participation], closed: set[str]
    ) -> None:
        """Reload stored state after a restart (before any other event)."""
        for bid in bids:
            self._period(bid.period).bids[bid.pseudonym] = wire.sha256(bid.bid)
        for part in participations:
            self._period(part.period).households.add(part.household)
        for period in closed:
            state = self._period(period)
            state.closed = state.announced = True

    def forget(self, event: Accepted | Granted) -> None:
        """Undo an :class:`Accepted` or :class:`Granted` that could not be stored."""
        if isinstance(event, Accepted):
            state = self._periods.get(event.bid.period)
            if state is not None:
                state.bids.pop(event.bid.pseudonym, None)
        else:
            for part in event.participations:
                state = self._periods.get(part.period)
                if state is not None:
                    state.households.discard(part.household)

    def pseudonyms(self, period: str) -> tuple[bytes, ...]:
        """Return this server's accepted pseudonyms for ``period``, sorted."""
        state = self._periods.get(period)
        return tuple(sorted(state.bids)) if state else ()

    def closed_counts(self) -> dict[str, int]:
        """Return the counts that may be public: periods whose gate has closed, bids in them.

        Nothing about an open period is counted, so the numbers do not move while
        households are getting pseudonyms and bidding (no live counter to time them by).
        """
        closed = [state for state in self._periods.values() if state.closed]
        return {
            "closed_periods": len(closed),
            "bids_in_closed_periods": sum(len(state.bids) for state in closed),
        }

    def is_closed(self, period: str) -> bool:
        """Return whether this machine has closed the gate of ``period``."""
        state = self._periods.get(period)
        if state is not None and state.closed:
            return True
        try:
            return self._gate_closed(self.schedule.parse_period(period))
        except ValueError:
            return False

    def _gate_closed(self, start: dt.datetime) -> bool:
        """Whether a peer was given a bid set of a period whose gate is not after ``start``'s
        (such periods have no record here: see :meth:`close_due`)."""
        through = self._closed_through
        return through is not None and self.schedule.gate_closure(start) <= through

    def take_challenge(self, nonce: bytes, now: dt.datetime) -> bool:
        """Use up a challenge for another signed request; return whether it was valid."""
        return self.use_challenge(nonce, now) is None

    def _forget_expired(self, now: dt.datetime) -> None:
        for nonce in [n for n, exp in self._challenges.items() if exp <= now]:
            del self._challenges[nonce]

    def use_challenge(self, nonce: bytes, now: dt.datetime) -> str | None:
        """Use up a challenge for a signed request; return what is wrong with it, the detail
        of a ``replayed`` refusal (``None``: it was valid)."""
        shared = self._challenge_key is not None
        if shared:  # stateless: its tag says it is ours; kept here once used, until it expires
            expires = None if nonce in self._challenges else self.shared_expiry(nonce)
        else:
            expires = self._challenges.pop(nonce, None)
        if expires is None:
            return CHALLENGE_UNKNOWN
        if expires <= now:
            return "the challenge has expired; fetch a new one"
        if shared:
            self._challenges[nonce] = expires
        return None

    def shared_expiry(self, nonce: bytes) -> dt.datetime | None:
        """The expiry of a stateless challenge made under this intake's key (None for one
        that was not, or without a key)."""
        if self._challenge_key is None:
            return None
        return challenge_expiry(self._challenge_key, nonce)

    def _open(self, period: str) -> _Period:
        """The state of a period that still takes bids (made on first use).

        Raises:
            _Refuse: its gate has closed here (``late``).
        """
        if self.is_closed(period):
            raise _Refuse(Reason.LATE, GATE_CLOSED)
        return self._period(period)

    def _period(self, period: str) -> _Period:
        state = self._periods.get(period)
        if state is None:
            state = self._periods[period] = _Period()
        return state

    # -- events

    def receive(self, event: IssueChallenge | IssuePseudonym | SubmitBid | Tick) -> list[Event]:
        """Process one event; return the events it causes."""
        if isinstance(event, IssueChallenge):
            if len(self._challenges) >= self.limits.max_challenges:
                self._forget_expired(event.now)
            if len(self._challenges) >= self.limits.max_challenges:
                return [Rejected(Reason.TOO_FREQUENT, "too many challenges outstanding on this "
                                 "server; ask again in a few seconds")]
            expires = event.now + dt.timedelta(seconds=self.limits.challenge_ttl_seconds)
            if self._challenge_key is not None:  # stateless: nothing kept until it is used
                return [ChallengeIssued(
                    shared_challenge(self._challenge_key, expires, event.nonce), expires)]
            self._challenges[event.nonce] = expires
            return [ChallengeIssued(event.nonce, expires)]
        if isinstance(event, IssuePseudonym | SubmitBid):
            try:
                return [
                    self._issue(event) if isinstance(event, IssuePseudonym) else self._submit(event)
                ]
            except _Refuse as refusal:
                return [Rejected(refusal.reason, refusal.detail)]
        if isinstance(event, Tick):
            return self._tick(event.now)
        raise TypeError(f"not an intake event: {type(event).__name__}")

    def _tick(self, now: dt.datetime) -> list[Event]:
        self._forget_expired(now)
        out: list[Event] = []
        for period in sorted(self._periods):
            state = self._periods[period]
            if state.announced:
                continue
            if self.schedule.gate_closure(self.schedule.parse_period(period)) <= now:
                state.closed = state.announced = True
                out.append(GateClosed(period, tuple(sorted(state.bids))))
        return out

    def bidset_refusal(self, period: str) -> Rejected | None:
        """Return why no peer gets a bid set of ``period`` from this machine (``None``: one
        gets it once the gate has passed, :meth:`close_due`)."""
        try:
            self.schedule.parse_period(period)
        except ValueError as exc:
            return Rejected(Reason.WRONG_PERIOD, f"not a trading period: {exc}")
        return None

    def close_due(self, period: str, now: dt.datetime) -> bool:
        """Return whether this machine gives its bid set of ``period`` at ``now`` (its gate
        has passed), closing the gate if so: no bid of the period is taken afterwards,
        whatever the clock says later.

        Asking makes no state: a period this machine holds nothing of (no bid, pseudonym or
        record) gets no record, so it is never finished here and no statement of it is made
        (its bid set is empty, which is all this machine can say of it); its gate is closed
        by remembering the latest gate so closed, so asking about any number of periods
        keeps no more than one time.
        """
        try:
            gate = self.schedule.gate_closure(self.schedule.parse_period(period))
        except ValueError:
            return False
        if gate > now:
            return False
        state = self._periods.get(period)
        if state is not None:
            state.closed = True
        elif self._closed_through is None or gate > self._closed_through:
            self._closed_through = gate
        return True

    def _issue(self, event: IssuePseudonym) -> Granted:
        if len(event.raw) > ENVELOPE_BYTES + 128 * self.schedule.horizon:
            raise _Refuse(Reason.MALFORMED, "request larger than the limit")
        try:
            req = wire.decode(TokenRequest, event.raw)
        except wire.WireError as exc:
            raise _Refuse(Reason.MALFORMED, str(exc)) from None
        household_key = self._households.get(req.household)
        if household_key is None:
            raise _Refuse(Reason.BAD_SIGNATURE, "no household key is registered under this id")
        if not wire.verify(req, household_key):
            raise _Refuse(
                Reason.BAD_SIGNATURE, "not signed by the registered key of the household it names"
            )
        problem = self.use_challenge(req.nonce, event.now)
        if problem is not None:
            raise _Refuse(Reason.REPLAYED, problem)
        self._rate(req.household, event.now)
        if not req.periods or len(req.periods) != len(req.blinded):
            raise _Refuse(Reason.MALFORMED, "one blinded element per period, at least one")
        if len(set(req.periods)) != len(req.periods):
            raise _Refuse(Reason.MALFORMED, "a period is named twice")
        issuers = []
        for period, blinded in zip(req.periods, req.blinded, strict=True):
            why = self.schedule.check(period, event.now)
            if why is not None:
                raise _Refuse(why[0], f"{period}: {why[1]}")
            if req.household in self._open(period).households:
                raise _Refuse(Reason.TOO_FREQUENT, has_token(period))
            try:
                voprf.check_element(blinded)
            except voprf.MalformedElement as exc:
                raise _Refuse(Reason.MALFORMED, f"{period}: {exc}") from None
            issuer = self._issuers.get(period)
            if issuer is None:  # the shell installs them before it feeds the request
                raise _Refuse(Reason.WRONG_PERIOD, f"no issuer key for {period} yet; retry")
            issuers.append(issuer)
        evaluated, proofs = [], []
        for issuer, blinded in zip(issuers, req.blinded, strict=True):
            (element,), proof = issuer.evaluate([blinded])
            evaluated.append(element)
            proofs.append(proof)
        for period in req.periods:
            self._period(period).households.add(req.household)
        grant = wire.sign(
            TokenGrant(
                server=self.party,
                periods=req.periods,
                publics=tuple(i.public for i in issuers),
                evaluated=tuple(evaluated),
                proofs=tuple(proofs),
            ),
            self._key,
        )
        return Granted(tuple(Participation(p, req.household) for p in req.periods), grant,
                       req.nonce, self.shared_expiry(req.nonce))

    def _submit(self, event: SubmitBid) -> Accepted:
        limit = self.limits.max_payload_bytes
        if len(event.raw) > 2 * limit + ENVELOPE_BYTES:
            raise _Refuse(
                Reason.MALFORMED, f"message larger than the limit for {limit}-byte payloads"
            )
        try:
            bid, signed = wire.decode_signed(PseudonymousBid, event.raw)
        except wire.WireError as exc:
            unsigned = _without_signature_or_token(event.raw)
            if unsigned is None:
                raise _Refuse(Reason.MALFORMED, str(exc)) from None
            bid = unsigned  # refused below as unsigned, once the rest of it has been checked
            signed = b""
        if bid.server != self.party:
            raise _Refuse(Reason.MALFORMED, f"share addressed to server {bid.server}")
        if len(bid.payload) > limit:
            raise _Refuse(Reason.MALFORMED, f"share payload larger than {limit} bytes")
        if len(bid.pseudonym) != 32:
            raise _Refuse(Reason.MALFORMED, "pseudonym must be a 32-byte Ed25519 public key")
        if not bid.signature:
            raise _Refuse(Reason.UNSIGNED, "unsigned: the bid carries no signature")
        if not bid.token:
            raise _Refuse(Reason.UNSIGNED, "unsigned: the pseudonym carries no token")
        issuer = self._issuers.get(bid.period)
        if issuer is None or not issuer.verify_token(
                token_input(bid.period, bid.pseudonym), bid.token):
            raise _Refuse(
                Reason.BAD_SIGNATURE,
                "forged: the token is not this server's evaluation of this period and pseudonym",
            )
        if not wire.verify_bytes(signed, bid.signature, bid.pseudonym):
            raise _Refuse(
                Reason.BAD_SIGNATURE,
                "forged: the signature does not verify with the pseudonym key the bid names",
            )
        digest = wire.sha256(event.raw)
        seen = self._periods.get(bid.period)
        if seen is not None and bid.pseudonym in seen.bids:
            if seen.bids[bid.pseudonym] == digest:
                raise _Refuse(Reason.REPLAYED, SAME_BID)
            raise _Refuse(Reason.DUPLICATE_PSEUDONYM)
        why = self.schedule.check(bid.period, event.now)
        if why is not None:
            raise _Refuse(*why)
        state = self._open(bid.period)
        if self._check_payload is not None:
            try:
                self._check_payload(bid.payload)
            except BidRejected as exc:
                raise _Refuse(exc.reason, exc.detail) from None
        receipt, receipt_bytes = wire.sign_encoded(  # no time, no counter: the bid's alone
            Receipt(
                server=self.party,
                period=bid.period,
                pseudonym=bid.pseudonym,
                payload_sha256=wire.sha256(bid.payload),
                submission_sha256=digest,
            ),
            self._key,
        )
        state.bids[bid.pseudonym] = digest
        stored = StoredBid(bid.period, bid.pseudonym, event.raw, bid.payload, receipt_bytes)
        return Accepted(stored, receipt)

    def _rate(self, household: str, now: dt.datetime) -> None:
        window = dt.timedelta(seconds=self.limits.rate_window_seconds)
        recent = self._recent.setdefault(household, deque())
        while recent and recent[0] <= now - window:
            recent.popleft()
        if len(recent) >= self.limits.rate_limit:
            raise _Refuse(
                Reason.TOO_FREQUENT,
                f"at most {self.limits.rate_limit} signed requests per window of "
                f"{self.limits.rate_window_seconds} s; wait for the window and retry",
            )
        recent.append(now)


def shared_challenge(key: bytes, expires: dt.datetime, randomness: bytes) -> bytes:
    """A stateless challenge: its expiry (seconds since the epoch, 8 bytes), 8 bytes of fresh
    randomness, and an HMAC-SHA-256 tag (16 bytes) under the server's challenge key."""
    body = int(expires.timestamp()).to_bytes(8, "big") + randomness[:8].ljust(8, b"\0")
    return body + hmac.new(key, body, hashlib.sha256).digest()[:16]


def challenge_expiry(key: bytes, nonce: bytes) -> dt.datetime | None:
    """The expiry of a challenge made by :func:`shared_challenge` under ``key``, or None if
    it was not (wrong length or tag)."""
    if len(nonce) != 32:
        return None
    body, tag = nonce[:16], nonce[16:]
    if not hmac.compare_digest(tag, hmac.new(key, body, hashlib.sha256).digest()[:16]):
        return None
    return dt.datetime.fromtimestamp(int.from_bytes(body[:8], "big"), dt.UTC)


def _without_signature_or_token(raw: bytes) -> PseudonymousBid | None:
    """The bid ``raw`` would be with an empty ``signature`` and ``token`` where it has none:
    ``None`` unless one of them is missing and everything else is a canonical bid."""
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or wire.canonical_json(doc) != bytes(raw):
            return None
        missing = {"signature", "token"} - doc.keys()
        if not missing:
            return None
        return wire.decode(
            PseudonymousBid, wire.canonical_json({**doc, **{k: "" for k in missing}})
        )
    except (ValueError, RecursionError, wire.WireError):  # UnicodeError is a ValueError
        return None


class _Refuse(Exception):
    def __init__(self, reason: Reason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
