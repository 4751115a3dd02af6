"""What a token is in this market; assumes RFC 9497's VOPRF (:mod:`sealgrid.service.voprf`).

A household's pseudonym for a period carries, for each server, a *token*: the server's PRF
output on ``token_input(period, pseudonym)`` under its issuer key for that period. The
household got it by a blinded evaluation (the server saw who asked, never the input), so the
server recognises its own PRF output when the bid arrives but cannot tell whose it is. Only
the issuing server can check a token (it recomputes the PRF with its key), which is all a
server needs: each server checks only the tokens of its own share of a bid. The DLEQ proof of
each evaluation binds it to the period's public key, and :func:`key_digest` of that key goes
into the server's signed period statement, so a server that evaluated one household under a
key of its own (to recognise its token later) is caught by comparing digests.
"""

from __future__ import annotations

import hashlib

DOMAIN = b"sealgrid/v1/token\n"
KEY_DOMAIN = b"sealgrid/v2/issuer-key\n"


def token_input(period: str, pseudonym: bytes) -> bytes:
    """The PRF input of a pseudonym's token for ``period`` (domain-separated)."""
    return DOMAIN + period.encode() + b"\n" + pseudonym


def key_digest(public: bytes) -> bytes:
    """SHA-256 of a period's issuer public key: what period statements publish."""
    return hashlib.sha256(KEY_DOMAIN + public).digest()
