"""The household's side of the wire, without I/O; assumes the household holds its signing key.

Each period the household makes a fresh Ed25519 *pseudonym* key. From every server it gets a
blind signature on ``FDH(period, pseudonym)``, asked for under its long-term key (the server
knows who asked, not what it signed); unblinded, that signature is the pseudonym's *token*
for that server. It then signs each server's bid share with the pseudonym key and attaches
the token: the bid names no household. The same pseudonym goes to every server, so the
servers can agree on the bid set; it is never reused in another period.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealgrid.service import wire
from sealgrid.service.blind import Blinding, IssuerPublic, MalformedIssuer, blind, fdh, unblind
from sealgrid.service.wire import (
    AuthRequest,
    IssueRequest,
    PseudonymGrant,
    PseudonymousBid,
    Receipt,
)


class GrantError(Exception):
    """A server's grant does not verify (wrong server, period, key or blind signature)."""


@dataclass
class Pseudonym:
    """A one-time pseudonym for one period: its key and, per server, its token."""

    period: str
    key: Ed25519PrivateKey
    tokens: dict[int, bytes] = field(default_factory=dict)
    issuers: dict[int, bytes] = field(default_factory=dict)  # server -> IssuerPublic.digest()

    @property
    def public(self) -> bytes:
        """The pseudonym as sent: the 32 raw bytes of its public key."""
        return wire.raw_public(self.key)

    @classmethod
    def fresh(cls, period: str) -> Pseudonym:
        """Make a fresh pseudonym for ``period`` (no tokens yet)."""
        return cls(period, Ed25519PrivateKey.generate())


def issue_request(
    pseudonym: Pseudonym,
    issuer: IssuerPublic,
    household: str,
    household_key: Ed25519PrivateKey,
    nonce: bytes,
) -> tuple[bytes, Blinding]:
    """Return a signed request for a blind signature on the pseudonym, and its blinding."""
    blinding = blind(issuer, pseudonym.period, pseudonym.public)
    req = IssueRequest(household, pseudonym.period, blinding.blinded, nonce)
    return wire.encode(wire.sign(req, household_key)), blinding


def accept_grant(
    pseudonym: Pseudonym,
    server: int,
    server_key: bytes,
    grant: PseudonymGrant,
    blinding: Blinding,
    issuer: IssuerPublic,
) -> None:
    """Check a server's grant, unblind it and keep the token for that server.

    The issuer key must be of the market's one form (``e = 65537``, see
    :meth:`~sealgrid.service.blind.IssuerPublic.check`) and ``FDH(period, pseudonym)`` a unit
    modulo ``n``; with the unblinded signature verified, the server then cannot link the
    token to this request (docs/threat-model.md, "Issuer keys"). The pseudonym records the
    digest of ``(n, e)``, which :meth:`~sealgrid.service.client.HouseholdClient.issuers_match`
    compares with the server's signed period statement.

    Raises:
        GrantError: the grant is not ``server``'s, not for this period or issuer key, the key
            is malformed, or the unblinded signature does not verify.
    """
    modulus = int.from_bytes(grant.modulus, "big")
    if (
        grant.server != server
        or grant.period != pseudonym.period
        or (modulus, grant.exponent) != (issuer.n, issuer.e)
        or not wire.verify(grant, server_key)
    ):
        raise GrantError(f"server {server}'s grant does not verify")
    try:
        issuer.check()
    except MalformedIssuer as exc:
        raise GrantError(f"server {server}'s issuer key is malformed: {exc}") from None
    if math.gcd(fdh(issuer.n, pseudonym.period, pseudonym.public), issuer.n) != 1:
        raise GrantError(f"server {server}'s issuer modulus shares a factor with the pseudonym")
    token = unblind(issuer, blinding, grant.blind_signature)
    if not issuer.verify(pseudonym.period, pseudonym.public, token):
        raise GrantError(f"server {server}'s blind signature does not verify")
    pseudonym.tokens[server] = token
    pseudonym.issuers[server] = issuer.digest()


def make_submission(pseudonym: Pseudonym, server: int, payload: bytes) -> bytes:
    """Return the wire bytes of a bid share for ``server``, signed by the pseudonym."""
    token = pseudonym.tokens.get(server, b"")
    bid = PseudonymousBid(pseudonym.period, server, pseudonym.public, token, payload)
    return wire.encode(wire.sign(bid, pseudonym.key))


def check_receipt(
    receipt: Receipt, server: int, server_key: bytes, submission: bytes, payload: bytes
) -> bool:
    """Return whether ``receipt`` is ``server``'s valid receipt for this exact submission."""
    return (
        receipt.server == server
        and receipt.submission_sha256 == wire.sha256(submission)
        and receipt.payload_sha256 == wire.sha256(payload)
        and wire.verify(receipt, server_key)
    )


def auth_request(
    role: str, subject: str, period: str, nonce: bytes, key: Ed25519PrivateKey
) -> bytes:
    """Return a signed request to read protected output (a result share or an aggregate)."""
    return wire.encode(wire.sign(AuthRequest(role, subject, period, nonce), key))
