"""The household's side of the wire, without I/O; assumes the household holds its signing key.

Each period the household makes a fresh Ed25519 *pseudonym* key. From every server it gets a
blinded evaluation of the server's PRF on ``(period, pseudonym)`` (RFC 9497 VOPRF), asked for
under its long-term key (the server knows who asked, not what it evaluated); unblinded, that
is the pseudonym's *token* for that server. It then signs each server's bid share with the
pseudonym key and attaches the token: the bid names no household. The same pseudonym goes to
every server, so the servers can agree on the bid set; it is never reused in another period.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealgrid.service import voprf, wire
from sealgrid.service.tokens import key_digest, token_input
from sealgrid.service.wire import (
    AuthRequest,
    PseudonymousBid,
    Receipt,
    TokenGrant,
    TokenRequest,
)


class GrantError(Exception):
    """A server's grant does not verify (wrong server, periods, key or proof)."""


@dataclass
class Pseudonym:
    """A one-time pseudonym for one period: its key and, per server, its token."""

    period: str
    key: Ed25519PrivateKey
    tokens: dict[int, bytes] = field(default_factory=dict)
    issuers: dict[int, bytes] = field(default_factory=dict)  # server -> tokens.key_digest

    @property
    def public(self) -> bytes:
        """The pseudonym as sent: the 32 raw bytes of its public key."""
        return wire.raw_public(self.key)

    @classmethod
    def fresh(cls, period: str) -> Pseudonym:
        """Make a fresh pseudonym for ``period`` (no tokens yet)."""
        return cls(period, Ed25519PrivateKey.generate())


def token_request(
    pseudonyms: Sequence[Pseudonym],
    household: str,
    household_key: Ed25519PrivateKey,
    nonce: bytes,
) -> tuple[bytes, list[voprf.Blinding]]:
    """Return a signed request for the tokens of ``pseudonyms`` (one per period, distinct
    periods) from one server, and their blindings (fresh for each server)."""
    blindings = [voprf.blind(token_input(p.period, p.public)) for p in pseudonyms]
    req = TokenRequest(household, nonce, tuple(p.period for p in pseudonyms),
                       tuple(b.blinded for b in blindings))
    return wire.encode(wire.sign(req, household_key)), blindings


def accept_grant(
    pseudonyms: Sequence[Pseudonym],
    server: int,
    server_key: bytes,
    grant: TokenGrant,
    blindings: Sequence[voprf.Blinding],
) -> None:
    """Check a server's grant, finalize each evaluation and keep the tokens for that server.

    Each evaluation must come with RFC 9497's proof that it used the period key the grant
    names; the household then keeps the digest of that key, which
    :meth:`~sealgrid.service.client.HouseholdClient.issuers_match` compares with the server's
    signed period statement (docs/threat-model.md, "Issuer keys"): a server that evaluated
    this household under a key of its own is caught there.

    Raises:
        GrantError: the grant is not ``server``'s or not for these periods, a key is
            malformed, or a proof does not verify.
    """
    periods = tuple(p.period for p in pseudonyms)
    if (
        grant.server != server
        or grant.periods != periods
        or not len(grant.publics) == len(grant.evaluated) == len(grant.proofs) == len(periods)
        or not wire.verify(grant, server_key)
    ):
        raise GrantError(f"server {server}'s grant does not verify")
    tokens = []
    for p, public, element, proof, blinding in zip(
            pseudonyms, grant.publics, grant.evaluated, grant.proofs, blindings, strict=True):
        try:
            voprf.check_public(public)
            (token,) = voprf.finalize(public, [token_input(p.period, p.public)], [blinding],
                                      [element], proof)
        except voprf.MalformedElement as exc:
            raise GrantError(f"server {server}'s grant for {p.period} is malformed: {exc}"
                             ) from None
        except voprf.InvalidProof:
            raise GrantError(f"server {server}'s proof for {p.period} does not verify") from None
        tokens.append((token, key_digest(public)))
    for p, (token, digest) in zip(pseudonyms, tokens, strict=True):
        p.tokens[server] = token
        p.issuers[server] = digest


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
