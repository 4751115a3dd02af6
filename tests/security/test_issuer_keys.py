"""Threat: a server singling one household out through its RSA issuer key (docs/threat-model.md).

Every issuer key has e = 65537, which the household checks when it reads the key and again on
the grant; the digest each server publishes in its signed period statement covers (n, e), so
a server that serves its real modulus with another exponent to one household is caught
either way. A modulus sharing a factor with the pseudonym's hash is refused too.
"""

from __future__ import annotations

import asyncio
import types
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealgrid.service import wire
from sealgrid.service.blind import EXPONENT, KEY_BITS, Issuer, IssuerPublic, MalformedIssuer, fdh
from sealgrid.service.client import HouseholdClient, ServiceError
from sealgrid.service.household import GrantError, Pseudonym, accept_grant, issue_request
from sealgrid.service.intake import Granted, Intake, IssueChallenge, IssuePseudonym
from sealgrid.service.keys import Registry
from sealgrid.service.schedule import Schedule
from sealgrid.service.server import Server
from sealgrid.service.wire import IssuerKey, PeriodStatement, PseudonymGrant

from .helpers import NOW, PERIOD, issuers


def _with_exponent(issuer: Issuer, e: int) -> Issuer:
    """The same modulus (same primes) under another public exponent."""
    nums = issuer.key.private_numbers()
    p, q, n = nums.p, nums.q, nums.public_numbers.n
    d = pow(e, -1, (p - 1) * (q - 1))
    key = rsa.RSAPrivateNumbers(
        p,
        q,
        d,
        rsa.rsa_crt_dmp1(d, p),
        rsa.rsa_crt_dmq1(d, q),
        rsa.rsa_crt_iqmp(p, q),
        rsa.RSAPublicNumbers(e, n),
    ).private_key()
    return Issuer(key)


@pytest.fixture(scope="module")
def twisted() -> Issuer:
    return _with_exponent(issuers()[PERIOD], 65539)


def _grant_under(issuer: Issuer) -> tuple[Pseudonym, Granted, object, bytes]:
    """One household asks one server whose intake signs with ``issuer``; return the answer."""
    server_key, household = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    machine = Intake(0, server_key, {"h1": wire.raw_public(household)}, Schedule(900))
    machine.add_issuer(PERIOD, issuer)
    (challenge,) = machine.receive(IssueChallenge(NOW, b"n" * 16))
    assert challenge
    p = Pseudonym.fresh(PERIOD)
    raw, blinding = issue_request(p, issuer.public, "h1", household, b"n" * 16)
    (event,) = machine.receive(IssuePseudonym(NOW, raw))
    assert isinstance(event, Granted), event
    return p, event, blinding, wire.raw_public(server_key)


def test_the_genuine_key_is_accepted_and_its_digest_recorded() -> None:
    genuine = issuers()[PERIOD]
    p, event, blinding, server_key = _grant_under(genuine)
    accept_grant(p, 0, server_key, event.grant, blinding, genuine.public)  # type: ignore[arg-type]
    assert p.tokens[0] and p.issuers[0] == genuine.public.digest()
    assert genuine.public.e == EXPONENT and genuine.public.n.bit_length() == KEY_BITS


def test_a_grant_under_exponent_65539_is_refused(twisted: Issuer) -> None:
    """The same modulus, the server's own valid signature: only the exponent differs."""
    assert twisted.public.n == issuers()[PERIOD].public.n
    p, event, blinding, server_key = _grant_under(twisted)
    assert event.grant.exponent == 65539 and wire.verify(event.grant, server_key)
    with pytest.raises(GrantError, match="malformed: issuer exponent 65539"):
        accept_grant(p, 0, server_key, event.grant, blinding, twisted.public)  # type: ignore[arg-type]
    assert not p.tokens and not p.issuers


@pytest.mark.parametrize(
    "public, fragment",
    [
        (lambda n: IssuerPublic(n, 3), "exponent 3"),
        (lambda n: IssuerPublic(n, 65539), "exponent 65539"),
        (lambda n: IssuerPublic(n >> 1, EXPONENT), "2048-bit"),  # 2047 bits
        (lambda n: IssuerPublic(n + 1, EXPONENT), "odd"),
    ],
)
def test_only_one_form_of_issuer_key_passes_the_check(public, fragment: str) -> None:  # type: ignore[no-untyped-def]
    n = issuers()[PERIOD].public.n
    with pytest.raises(MalformedIssuer, match=fragment):
        public(n).check()
    IssuerPublic(n, EXPONENT).check()


def test_a_modulus_sharing_a_factor_with_the_pseudonym_hash_is_refused() -> None:
    """Such a modulus would let the blinded request reveal which small primes divide FDH."""
    server_key = Ed25519PrivateKey.generate()
    n = 3 * ((1 << 2046) + 12345)  # odd, 2048 bits, divisible by 3
    assert n.bit_length() == KEY_BITS and n % 2 == 1
    bad = IssuerPublic(n, EXPONENT)
    p = Pseudonym.fresh(PERIOD)
    while fdh(n, PERIOD, p.public) % 3:
        p = Pseudonym.fresh(PERIOD)
    _, blinding = issue_request(p, bad, "h1", Ed25519PrivateKey.generate(), b"n" * 16)
    grant = wire.sign(
        PseudonymGrant(0, PERIOD, n.to_bytes(bad.size, "big"), EXPONENT, b"\x01" * bad.size),
        server_key,
    )
    with pytest.raises(GrantError, match="shares a factor"):
        accept_grant(p, 0, wire.raw_public(server_key), grant, blinding, bad)


def test_the_issuer_digest_covers_the_exponent(twisted: Issuer) -> None:
    genuine = issuers()[PERIOD].public
    assert genuine.digest() != twisted.public.digest()
    assert genuine.digest() != wire.sha256(genuine.n_bytes)  # not the modulus alone
    # the server publishes exactly this digest in its statement
    intake = types.SimpleNamespace(issuer=lambda period: issuers()[period])
    stub = types.SimpleNamespace(intake=intake)
    assert Server._issuer_digest(stub, PERIOD) == genuine.digest()  # type: ignore[arg-type]


class _Canned(HouseholdClient):
    """A household client whose server 0 answers from canned signed messages."""

    def __init__(self, server_key: Ed25519PrivateKey, answers: dict[str, bytes]) -> None:
        registry = Registry(
            servers=(("https://127.0.0.1:1", wire.raw_public(server_key)),),
            households={}, suppliers={}, operators={},
        )  # fmt: skip
        super().__init__(registry, Path("unused.pem"), "h1", Ed25519PrivateKey.generate())
        self.answers = answers
        self.asked: list[str] = []

    async def call(
        self, server: int, method: str, path: str, body: bytes | None = None
    ) -> tuple[int, bytes]:
        self.asked.append(f"{method} {path}")
        found = self.answers.get(f"{method} {path}")
        return (200, found) if found is not None else (404, b'{"error":"not_finished"}')


def test_a_household_refuses_an_issuer_key_with_another_exponent(twisted: Issuer) -> None:
    key = Ed25519PrivateKey.generate()
    pub = twisted.public
    offered = wire.sign(IssuerKey(0, PERIOD, pub.n_bytes, pub.e), key)
    client = _Canned(key, {f"GET /v1/periods/{PERIOD}/issuer": wire.encode(offered)})
    with pytest.raises(ServiceError, match="issuer key is malformed: issuer exponent 65539"):
        asyncio.run(client.obtain(Pseudonym.fresh(PERIOD)))
    assert client.asked == [f"GET /v1/periods/{PERIOD}/issuer"]  # nothing sent under it


def _statement(key: Ed25519PrivateKey, digest: bytes) -> bytes:
    return wire.encode(wire.sign(PeriodStatement(
        server=0, period=PERIOD, bid_count=1, bidset_sha256=wire.sha256(b""), excluded=(),
        status="cleared", outcome='{"status":"no_trade"}', gate_closure="2026-11-22T21:15:00Z",
        issuer_sha256=digest), key))  # fmt: skip


@pytest.mark.parametrize("published", ["same", "other_exponent", "modulus_only", "other_key"])
def test_a_statement_whose_issuer_digest_differs_is_caught(twisted: Issuer, published: str) -> None:
    genuine = issuers()[PERIOD]
    key = Ed25519PrivateKey.generate()
    p = Pseudonym.fresh(PERIOD)
    p.issuers[0] = genuine.public.digest()  # what accept_grant recorded for this pseudonym
    digest = {
        "same": genuine.public.digest(),
        "other_exponent": twisted.public.digest(),
        "modulus_only": wire.sha256(genuine.public.n_bytes),
        "other_key": issuers()[next(k for k in issuers() if k != PERIOD)].public.digest(),
    }[published]
    client = _Canned(key, {f"GET /v1/periods/{PERIOD}": _statement(key, digest)})
    assert asyncio.run(client.issuers_match(p)) is (published == "same")


def test_a_missing_statement_is_not_yet_a_verdict() -> None:
    key = Ed25519PrivateKey.generate()
    p = Pseudonym.fresh(PERIOD)
    p.issuers[0] = issuers()[PERIOD].public.digest()
    assert asyncio.run(_Canned(key, {}).issuers_match(p)) is None
