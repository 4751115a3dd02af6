"""The household's side of the wire, without I/O; assumes the household holds its signing key.

Each period the household makes a fresh Ed25519 *pseudonym* key, certifies it once with its
long-term key (:class:`~sealgrid.service.wire.PseudonymCert`), and signs each server's bid
share with the pseudonym key. The same pseudonym goes to every server, so the servers can
agree on the bid set; it is never reused in another period.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealgrid.service import wire
from sealgrid.service.wire import (
    AuthRequest,
    BidSubmission,
    PseudonymCert,
    PseudonymousBid,
    Receipt,
)


@dataclass(frozen=True)
class Pseudonym:
    """A one-time pseudonym for one period: its key and the household's certificate of it."""

    period: str
    key: Ed25519PrivateKey
    household: str
    household_sig: bytes

    @property
    def public(self) -> bytes:
        """The pseudonym as sent: the 32 raw bytes of its public key."""
        return wire.raw_public(self.key)

    @classmethod
    def fresh(cls, period: str, household: str, household_key: Ed25519PrivateKey) -> Pseudonym:
        """Make a fresh pseudonym for ``period`` certified by ``household_key``."""
        key = Ed25519PrivateKey.generate()
        cert = PseudonymCert(period, wire.raw_public(key))
        return cls(period, key, household, wire.sign_detached(cert, household_key))


def make_submission(pseudonym: Pseudonym, server: int, nonce: bytes, payload: bytes) -> bytes:
    """Return the wire bytes of a bid share for ``server`` answering challenge ``nonce``."""
    bid = wire.sign(
        PseudonymousBid(pseudonym.period, server, pseudonym.public, nonce, payload),
        pseudonym.key,
    )
    sub = BidSubmission(pseudonym.household, pseudonym.household_sig, wire.encode(bid))
    return wire.encode(sub)


def check_receipt(
    receipt: Receipt, server: int, server_key: bytes, submission: bytes, payload: bytes
) -> bool:
    """Return whether ``receipt`` is ``server``'s valid receipt for this exact submission."""
    sub = wire.decode(BidSubmission, submission)
    return (
        receipt.server == server
        and receipt.submission_sha256 == wire.sha256(sub.bid)
        and receipt.payload_sha256 == wire.sha256(payload)
        and wire.verify(receipt, server_key)
    )


def auth_request(
    role: str, subject: str, period: str, nonce: bytes, key: Ed25519PrivateKey
) -> bytes:
    """Return a signed request to read protected output (a result share or an aggregate)."""
    return wire.encode(wire.sign(AuthRequest(role, subject, period, nonce), key))
