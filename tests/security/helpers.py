"""Shared helpers of the security battery; assumes real keys, a fixed clock and no sockets.

A small world for the intake state machine (three servers' machines on one schedule, real
Ed25519 and VOPRF keys) and a household that goes through issuance and submission exactly
as :mod:`sealgrid.service.household` does, so every attack starts from a valid message.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealgrid.mechanism.bids import Reason
from sealgrid.mechanism.grid import PriceGrid
from sealgrid.mechanism.market import Market
from sealgrid.service import wire
from sealgrid.service.clearing import payload_checker
from sealgrid.service.household import Pseudonym, accept_grant, make_submission, token_request
from sealgrid.service.intake import (
    Accepted,
    Event,
    Granted,
    Intake,
    IssueChallenge,
    IssuePseudonym,
    Rejected,
    SubmitBid,
)
from sealgrid.service.schedule import Schedule
from sealgrid.service.voprf import Issuer

NOW = dt.datetime(2026, 11, 22, 21, 7, tzinfo=dt.UTC)
PERIOD = "2026-11-22T21:45:00Z"  # the first open period at NOW (gate 21:15)
OTHER = "2026-11-22T22:00:00Z"
GATE = dt.datetime(2026, 11, 22, 21, 15, tzinfo=dt.UTC)
LEVELS, SUPPLIERS, MAX_Q = 6, 2, 10_000
#: The small market of these tests: 6 price levels, 2 suppliers, 10 kWh per bid.
MARKET = Market(PriceGrid.from_values("0", "5", "1"), MAX_Q, ("s1", "s2"))
_ISSUERS: dict[str, Issuer] = {}


def issuers() -> dict[str, Issuer]:
    """Return the two periods' issuer keys (made once per test process)."""
    if not _ISSUERS:
        _ISSUERS.update({PERIOD: Issuer.generate(), OTHER: Issuer.generate()})
    return _ISSUERS


@dataclass
class World:
    """Three servers' intake machines and ``n`` registered households."""

    n: int = 4
    check_payloads: bool = True
    households: dict[str, Ed25519PrivateKey] = field(default_factory=dict)
    server_keys: list[Ed25519PrivateKey] = field(default_factory=list)
    machines: list[Intake] = field(default_factory=list)
    stored: list[dict[bytes, bytes]] = field(default_factory=lambda: [{}, {}, {}])
    _nonces: itertools.count = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.households = {f"h{i:04d}": Ed25519PrivateKey.generate() for i in range(self.n)}
        registry = {h: wire.raw_public(k) for h, k in self.households.items()}
        for party in range(3):
            key = Ed25519PrivateKey.generate()
            check = (
                payload_checker(party, MARKET) if self.check_payloads else None
            )
            m = Intake(party, key, registry, Schedule(900), check_payload=check)
            for period, issuer in issuers().items():
                m.add_issuer(period, issuer)
            self.server_keys.append(key)
            self.machines.append(m)

    def nonce(self, party: int, now: dt.datetime = NOW) -> bytes:
        """Fetch a fresh challenge from server ``party``."""
        nonce = next(self._nonces).to_bytes(16, "big")
        (issued,) = self.machines[party].receive(IssueChallenge(now, nonce))
        return nonce if issued else b""

    def pseudonym(
        self,
        hid: str,
        period: str = PERIOD,
        now: dt.datetime = NOW,
        key: Ed25519PrivateKey | None = None,
    ) -> tuple[Pseudonym, list[Event]]:
        """Get ``hid`` a pseudonym with a token from every server; return it and the events."""
        p = Pseudonym.fresh(period)
        events: list[Event] = []
        for party, m in enumerate(self.machines):
            raw, blindings = token_request(
                [p], hid, key or self.households[hid], self.nonce(party, now)
            )
            (event,) = m.receive(IssuePseudonym(now, raw))
            events.append(event)
            if isinstance(event, Granted):
                server_key = wire.raw_public(self.server_keys[party])
                accept_grant([p], party, server_key, event.grant, blindings)
        return p, events

    def submit(self, party: int, raw: bytes, now: dt.datetime = NOW) -> Event:
        """Feed one raw submission to server ``party``; return its single answer."""
        (event,) = self.machines[party].receive(SubmitBid(now, raw))
        if isinstance(event, Accepted):  # what the shell would store durably
            self.stored[party][event.bid.pseudonym] = event.bid.payload
        return event

    def bid(self, p: Pseudonym, payloads: list[bytes], now: dt.datetime = NOW) -> list[Event]:
        """Send each server its payload under pseudonym ``p``."""
        return [self.submit(i, make_submission(p, i, payloads[i]), now) for i in range(3)]


def reason(event: Event) -> Reason:
    """Return the refusal reason of ``event`` (fails the test if it was not refused)."""
    assert isinstance(event, Rejected), event
    return event.reason


def accepted(events: list[Event]) -> bool:
    """Return whether every server accepted."""
    return all(isinstance(e, Accepted) for e in events)
