"""Threat: a server singling one household out through its issuer key (docs/threat-model.md).

A server that evaluated one household's blinded token under a key of its own could recognise
that token when the bid arrives. Each evaluation carries RFC 9497's DLEQ proof that it used
the public key the grant names, so a server cannot claim the period's key and use another;
and the digest of the named key is what the household keeps and compares with the digest in
the server's signed period statement, so a server that names a key of its own for one
household is caught there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import types
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealgrid.service import wire
from sealgrid.service.client import HouseholdClient
from sealgrid.service.household import GrantError, Pseudonym, accept_grant, token_request
from sealgrid.service.intake import Granted, Intake, IssueChallenge, IssuePseudonym
from sealgrid.service.keys import Registry
from sealgrid.service.schedule import Schedule
from sealgrid.service.server import Server
from sealgrid.service.tokens import key_digest, token_input
from sealgrid.service.voprf import Issuer
from sealgrid.service.wire import PeriodStatement, TokenGrant

from .helpers import NOW, PERIOD, issuers


def _grant_under(issuer: Issuer) -> tuple[Pseudonym, Granted, list, Ed25519PrivateKey]:
    """One household asks one server whose intake evaluates with ``issuer``; return the answer."""
    server_key, household = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    machine = Intake(0, server_key, {"h1": wire.raw_public(household)}, Schedule(900))
    machine.add_issuer(PERIOD, issuer)
    (challenge,) = machine.receive(IssueChallenge(NOW, b"n" * 16))
    assert challenge
    p = Pseudonym.fresh(PERIOD)
    raw, blindings = token_request([p], "h1", household, b"n" * 16)
    (event,) = machine.receive(IssuePseudonym(NOW, raw))
    assert isinstance(event, Granted), event
    return p, event, blindings, server_key


def test_the_genuine_key_is_accepted_and_its_digest_recorded() -> None:
    genuine = issuers()[PERIOD]
    p, event, blindings, server_key = _grant_under(genuine)
    accept_grant([p], 0, wire.raw_public(server_key), event.grant, blindings)
    assert p.issuers[0] == key_digest(genuine.public)
    assert genuine.verify_token(token_input(PERIOD, p.public), p.tokens[0])


def test_an_evaluation_under_another_key_than_the_one_named_is_refused() -> None:
    """The server names the period's genuine key but evaluates under a key of its own: its
    own valid signature on the grant, only the proof cannot be made."""
    genuine, tagging = issuers()[PERIOD], Issuer.generate()
    p, event, blindings, server_key = _grant_under(tagging)
    lying = wire.sign(dataclasses.replace(event.grant, publics=(genuine.public,)), server_key)
    with pytest.raises(GrantError, match=r"proof for .* does not verify"):
        accept_grant([p], 0, wire.raw_public(server_key), lying, blindings)
    assert not p.tokens and not p.issuers
    # the evaluation itself is untouched, and under the key it really used it verifies
    accept_grant([p], 0, wire.raw_public(server_key), event.grant, blindings)
    assert p.issuers[0] == key_digest(tagging.public) != key_digest(genuine.public)


@pytest.mark.parametrize("public", [bytes(32), b"\xff" * 32, b"\x01" * 31])
def test_a_grant_naming_a_malformed_key_is_refused(public: bytes) -> None:
    p, event, blindings, server_key = _grant_under(issuers()[PERIOD])
    bad = wire.sign(dataclasses.replace(event.grant, publics=(public,)), server_key)
    with pytest.raises(GrantError, match="malformed"):
        accept_grant([p], 0, wire.raw_public(server_key), bad, blindings)
    assert not p.tokens


def test_a_grant_of_another_server_or_for_other_periods_is_refused() -> None:
    p, event, blindings, server_key = _grant_under(issuers()[PERIOD])
    other = wire.sign(dataclasses.replace(event.grant, periods=("2026-11-22T22:00:00Z",)),
                      server_key)
    for grant, server, key in ((event.grant, 1, server_key), (other, 0, server_key),
                               (event.grant, 0, Ed25519PrivateKey.generate())):
        with pytest.raises(GrantError, match="grant does not verify"):
            accept_grant([p], server, wire.raw_public(key), grant, blindings)
    assert not p.tokens


def test_the_server_publishes_the_digest_of_its_period_key() -> None:
    genuine = issuers()[PERIOD]
    assert key_digest(genuine.public) != wire.sha256(genuine.public)  # domain-separated
    intake = types.SimpleNamespace(issuer=lambda period: issuers()[period])
    stub = types.SimpleNamespace(intake=intake, shared=False)
    got = asyncio.run(Server.issuer_digest(stub, PERIOD))  # type: ignore[arg-type]
    assert got == key_digest(genuine.public)


class _Canned(HouseholdClient):
    """A household client whose server 0 answers from canned signed messages."""

    def __init__(self, server_key: Ed25519PrivateKey, answers: dict[str, bytes]) -> None:
        registry = Registry(
            servers=(("https://127.0.0.1:1", wire.raw_public(server_key)),),
            households={}, suppliers={}, operators={},
        )  # fmt: skip
        super().__init__(registry, Path("unused.pem"), "h1", Ed25519PrivateKey.generate())
        self.answers = answers

    async def call(
        self, server: int, method: str, path: str, body: bytes | None = None
    ) -> tuple[int, bytes]:
        found = self.answers.get(f"{method} {path}")
        return (200, found) if found is not None else (404, b'{"error":"not_finished"}')


def _statement(key: Ed25519PrivateKey, digest: bytes) -> bytes:
    return wire.encode(wire.sign(PeriodStatement(
        server=0, period=PERIOD, bid_count=1, bidset_sha256=wire.sha256(b""), excluded=(),
        status="cleared", outcome='{"status":"no_trade"}', gate_closure="2026-11-22T21:15:00Z",
        issuer_sha256=digest), key))  # fmt: skip


@pytest.mark.parametrize("published", ["same", "raw_key", "other_key"])
def test_a_statement_whose_issuer_digest_differs_is_caught(published: str) -> None:
    """The household was served a key of the server's own (its proof verified): the period
    statement names the period's real key, and the comparison catches it."""
    genuine, tagging = issuers()[PERIOD], Issuer.generate()
    key = Ed25519PrivateKey.generate()
    p, event, blindings, server_key = _grant_under(tagging)
    accept_grant([p], 0, wire.raw_public(server_key), event.grant, blindings)
    digest = {
        "same": key_digest(tagging.public),
        "raw_key": wire.sha256(tagging.public),
        "other_key": key_digest(genuine.public),
    }[published]
    client = _Canned(key, {f"GET /v1/periods/{PERIOD}": _statement(key, digest)})
    assert asyncio.run(client.issuers_match(p)) is (published == "same")


def test_a_missing_statement_is_not_yet_a_verdict() -> None:
    key = Ed25519PrivateKey.generate()
    p = Pseudonym.fresh(PERIOD)
    p.issuers[0] = key_digest(issuers()[PERIOD].public)
    assert asyncio.run(_Canned(key, {}).issuers_match(p)) is None


def test_a_token_grant_is_one_message_type() -> None:
    """A TokenGrant decodes only as itself (a signature cannot be replayed as another type)."""
    _, event, _, _ = _grant_under(issuers()[PERIOD])
    raw = wire.encode(event.grant)
    assert wire.decode(TokenGrant, raw) == event.grant
    with pytest.raises(wire.WireError):
        wire.decode(PeriodStatement, raw)
