"""RSA-FDH blind signatures: what the household gets verifies, and only for its own message."""

from __future__ import annotations

import pytest

from sealgrid.service.blind import Issuer, blind, fdh, unblind

ISSUER = Issuer.generate()
PERIOD = "2026-11-22T21:45:00Z"


def test_unblinded_signature_verifies_only_for_its_period_and_pseudonym() -> None:
    pub = ISSUER.public
    b = blind(pub, PERIOD, b"p" * 32)
    sig = unblind(pub, b, ISSUER.sign_blinded(b.blinded))
    assert pub.verify(PERIOD, b"p" * 32, sig)
    assert not pub.verify("2026-11-22T22:00:00Z", b"p" * 32, sig)
    assert not pub.verify(PERIOD, b"q" * 32, sig)
    tampered = bytes([sig[0] ^ 1]) + sig[1:]
    assert not pub.verify(PERIOD, b"p" * 32, tampered)
    assert not pub.verify(PERIOD, b"p" * 32, sig[1:])
    assert not Issuer.generate().public.verify(PERIOD, b"p" * 32, sig)


def test_blinded_messages_look_unrelated_and_out_of_range_is_refused() -> None:
    pub = ISSUER.public
    m = fdh(pub.n, PERIOD, b"p" * 32)
    a, b = blind(pub, PERIOD, b"p" * 32), blind(pub, PERIOD, b"p" * 32)
    assert a.blinded != b.blinded and int.from_bytes(a.blinded, "big") != m
    with pytest.raises(ValueError):
        ISSUER.sign_blinded(pub.n.to_bytes(pub.size, "big"))
    with pytest.raises(ValueError):
        ISSUER.sign_blinded(b"\x01")
