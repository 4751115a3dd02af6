"""The OpenAPI document against a running server: what it documents is what the server does;
assumes one in-process server (aiohttp's test server, SQLite, a fake clock), jsonschema and
hypothesis.

* Requests made fresh by the client code (the documented examples' equivalents: a fixed
  example cannot carry a live challenge, a registered key and an open period) are taken, and
  every answer conforms to the schema the document gives its status.
* Each documented example sent as is is refused exactly as the document says.
* A body spelled by the document's canonical-JSON recipe, signed as it says, is taken; every
  other spelling of it is refused ``malformed``.
* Bodies drawn from the request schemas' patterns, alone or replacing one field of a valid
  request that is then signed again, are never answered 5xx and refused only with the
  statuses and reasons the document names for the route, in bodies that conform.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sealgrid.mechanism.bids import check_bid
from sealgrid.protocol.billing import Claim, ClaimLayout, share_claim
from sealgrid.service import api, clearing, wire
from sealgrid.service.agent import Credential, encode_payloads
from sealgrid.service.api import build_app
from sealgrid.service.config import load_server_config
from sealgrid.service.household import (
    Pseudonym,
    accept_grant,
    auth_request,
    make_submission,
    token_request,
)
from sealgrid.service.keys import load_signing_key
from sealgrid.service.openapi import EXAMPLES, OPENAPI
from sealgrid.service.server import Server
from sealgrid.service.setup import init_data_dir
from sealgrid.service.storage import StorageError, Store
from sealgrid.service.tokens import token_input
from sealgrid.service.voprf import Issuer

from .cluster import free_base_port
from .test_openapi_schemas import documented_errors, problems, response_schema

NOW = dt.datetime(2031, 5, 6, 7, 8, 1, tzinfo=dt.UTC)
SCHEMAS = OPENAPI["components"]["schemas"]
#: The request body's schema of each route that takes one.
BODIES = {path: ops["post"]["requestBody"]["content"]["application/json"]
          for path, ops in OPENAPI["paths"].items()
          if "requestBody" in ops.get("post", {})}


def at(path: str, period: object) -> str:
    """``path`` with its ``{period}`` (if it has one) filled in with ``period``."""
    return path.replace("{period}", str(period))


def body_schema(path: str) -> dict[str, Any]:
    """The schema of ``path``'s request body, ``$ref`` resolved."""
    ref = BODIES[path]["schema"]["$ref"]
    schema: dict[str, Any] = SCHEMAS[ref.rsplit("/", 1)[1]]
    return schema


class FakeClock:
    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Harness:
    """Server 0 of a three-server market in this process, on a fake clock, with 5
    households; HTTP through aiohttp's test client (no TLS: no peer certificate)."""

    def __init__(self, root: Path) -> None:
        self.root = root / "d"
        self.registry = init_data_dir(self.root, households=5, base_port=free_base_port())
        self.clock = FakeClock(NOW)
        self.server = Server(load_server_config(self.root / "server-0" / "server.toml"),
                             self.clock)
        self.loop = asyncio.new_event_loop()
        self.client: TestClient[Any, Any] = self.loop.run_until_complete(self._start())
        schedule = self.server.schedule
        self.open_periods = iter(schedule.open_periods(NOW)[::-1])  # far ones first
        self.ended = schedule.period_id(schedule.start_of(NOW) - schedule.length)

    async def _start(self) -> TestClient[Any, Any]:
        await self.server.start()
        client: TestClient[Any, Any] = TestClient(TestServer(build_app(self.server)))
        await client.start_server()
        return client

    def close(self) -> None:
        async def stop() -> None:
            await self.client.close()
            await self.server.stop()

        self.loop.run_until_complete(stop())
        self.loop.close()

    def call(self, method: str, path: str, body: bytes | None = None) -> Answer:
        async def go() -> Answer:
            resp = await self.client.request(method, path, data=body)
            return Answer(resp.status, resp.content_type, await resp.read())

        return self.loop.run_until_complete(go())

    def key(self, who: str) -> Ed25519PrivateKey:
        """A party's signing key from the data directory (``households/h0001``, …)."""
        return load_signing_key(self.root / f"{who}.key")

    def challenge(self) -> bytes:
        answer = self.checked("post", "/v1/challenge")
        assert answer.status == 200
        return wire.b64d(answer.json()["nonce"])

    def checked(self, method: str, path: str, body: bytes | None = None,
                route: str | None = None, failing_database: bool = False) -> Answer:
        """Send a request and check the answer against the document."""
        answer = self.call(method.upper(), path, body)
        conforms(method, route or path, answer, failing_database)
        return answer

    def tokens(self, household: str, pseudonyms: list[Pseudonym]) -> None:
        """Fetch server 0's tokens for ``pseudonyms`` with the client code."""
        raw, blindings = token_request(pseudonyms, household,
                                       self.key(f"households/{household}"), self.challenge())
        answer = self.checked("post", "/v1/pseudonyms", raw)
        assert answer.status == 201, answer.body
        grant = wire.decode(wire.TokenGrant, answer.body)
        accept_grant(pseudonyms, 0, self.registry.servers[0][1], grant, blindings)

    def payload(self, side: str = "buy") -> bytes:
        bid, _ = check_bid(self.server.market, "h0001", side, "1.5", "100.0", "s1")
        assert bid is not None
        return encode_payloads(bid, self.server.market, 3, (1, 12345))[0]


def conforms(method: str, path: str, answer: Answer, failing_database: bool = False) -> None:
    """The answer's status, content type, body and ``error`` are as the document says (no
    5xx but 503 while the database fails)."""
    assert answer.status < 500 or (failing_database and answer.status == 503), (
        f"{method} {path}: a server error {answer.status}")
    schema = response_schema(method, path, answer.status, answer.content_type)
    if answer.content_type != "application/json":
        return
    found = problems(schema, answer.json())
    assert not found, f"{method} {path} {answer.status}: the answer breaks its schema {found}"
    if answer.status >= 400:
        error = answer.json()["error"]
        assert error in documented_errors(method, path, answer.status), (
            f"{method} {path}: {answer.status} {error} is not documented")


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    found = Harness(tmp_path_factory.mktemp("openapi"))
    yield found
    found.close()


def same_shape(path: str, sent: bytes) -> None:
    """A fresh request conforms to the route's schema and has the example's fields."""
    doc = json.loads(sent)
    assert not problems(body_schema(path), doc), f"{path}: a fresh request breaks the schema"
    (example,) = BODIES[path]["examples"].values()
    assert sorted(doc) == sorted(example["value"]), f"{path}: not the example's fields"


# -- fresh requests are taken


def test_fresh_requests_are_taken_and_every_answer_conforms(harness: Harness) -> None:
    h = harness
    key = h.key("households/h0001")
    period = next(h.open_periods)
    assert h.checked("get", f"/v1/periods/{period}/issuer",
                     route="/v1/periods/{period}/issuer").status == 200

    pseudonym = Pseudonym.fresh(period)
    raw, blindings = token_request([pseudonym], "h0001", key, h.challenge())
    same_shape("/v1/pseudonyms", raw)
    answer = h.checked("post", "/v1/pseudonyms", raw)
    assert answer.status == 201, answer.body
    accept_grant([pseudonym], 0, h.registry.servers[0][1],
                 wire.decode(wire.TokenGrant, answer.body), blindings)

    bid = make_submission(pseudonym, 0, h.payload())
    same_shape("/v1/bids", bid)
    assert h.checked("post", "/v1/bids", bid).status == 201

    asked = auth_request("household", wire.b64e(pseudonym.public), period, h.challenge(),
                         pseudonym.key)
    same_shape("/v1/outputs", asked)
    answer = h.checked("post", "/v1/outputs", asked)
    assert answer.status == 200 and answer.json()["status"] == "pending"

    hello = auth_request("household", "h0001", "", h.challenge(), key)
    same_shape("/v1/hello", hello)
    assert h.checked("post", "/v1/hello", hello).json()["registered"] is True

    share = Credential.fresh(3).share_bytes(0)
    enrolment = wire.encode(wire.sign(wire.Enrolment("h0001", 0, share), key))
    same_shape("/v1/enrol", enrolment)
    assert h.checked("post", "/v1/enrol", enrolment).status == 200

    layout = ClaimLayout.of(h.server.market.max_quantity_wh)
    shares = share_claim(Claim.of(False, 0, Fraction(1), 1200, 300), layout, 3)[0]
    reading = wire.encode(wire.sign(wire.MeterReading(
        "h0001", 0, h.ended, np.asarray(shares, dtype="<u8").tobytes()),
        h.key("households/h0001.meter")))
    same_shape("/v1/readings", reading)
    assert h.checked("post", "/v1/readings", reading).status == 200


def test_a_household_reads_its_result_while_a_long_write_holds_the_database(
        harness: Harness) -> None:
    """A period's seal holds the database thread for its whole transaction (22 s at 100,000
    bids); a household's output request reads on a connection of its own meanwhile, and
    sees what was committed before the write began."""
    h = harness
    period = next(h.open_periods)
    pseudonym = Pseudonym.fresh(period)
    h.tokens("h0001", [pseudonym])
    assert h.checked("post", "/v1/bids", make_submission(pseudonym, 0, h.payload())).status == 201
    held, release = threading.Event(), threading.Event()

    def seal_like() -> None:  # on the database thread, as the seal runs
        h.server.store._conn.execute("BEGIN IMMEDIATE")
        h.server.store._conn.execute("DELETE FROM used_challenges")
        held.set()
        release.wait(10)
        h.server.store._conn.execute("ROLLBACK")

    writing = h.server._db.submit(seal_like)
    assert held.wait(10)
    try:
        t0 = time.monotonic()
        asked = auth_request("household", wire.b64e(pseudonym.public), period, h.challenge(),
                             pseudonym.key)
        answer = h.checked("post", "/v1/outputs", asked)
        elapsed = time.monotonic() - t0
    finally:
        release.set()
        writing.result(10)
    assert answer.status == 200 and answer.json()["status"] == "pending", answer.body
    assert elapsed < 5.0  # the write held on for 10 s


def test_every_role_of_an_output_request_is_answered_as_documented(harness: Harness) -> None:
    h = harness
    cycle = h.server.calendar.cycle_of(h.ended)
    asks = {
        "supplier": ("s1", h.ended, "suppliers/s1"),
        "operator": ("dso", h.ended, "operators/dso"),
        "statement": ("h0001", cycle, "households/h0001"),
        "bill": ("s1", cycle, "suppliers/s1"),
        "dso": ("r1", cycle, "dsos/r1"),
        "tso": ("tso", cycle, "tso/tso"),
        "supplier_period": ("s1", h.ended, "suppliers/s1"),
    }
    for role, (subject, period, signer) in asks.items():
        raw = auth_request(role, subject, period, h.challenge(), h.key(signer))
        assert not problems(body_schema("/v1/outputs"), json.loads(raw)), role
        answer = h.checked("post", "/v1/outputs", raw)
        assert answer.status == 200, (role, answer.body)


def test_the_get_routes_answer_as_documented(harness: Harness) -> None:
    h = harness
    period = h.server.schedule.period_id(h.server.schedule.start_of(NOW))
    assert h.checked("get", "/v1/info").status == 200
    assert h.checked("get", f"/v1/periods/{period}", route="/v1/periods/{period}").status == 404
    for what in ("bidset", "settlement-set", "pending"):
        route = "/v1/internal/periods/{period}/" + what
        answer = h.checked("get", route.replace("{period}", h.ended), route=route)
        assert answer.status == 403
    for path in ("/openapi.json", "/metrics", "/healthz", "/status"):
        assert h.checked("get", path).status == 200
    for route in ("/v1/periods/{period}", "/v1/periods/{period}/issuer"):
        for wrong in ("2031-05-06T07:08:01Z", "2031-05-06T07:15:00+00:00", "now"):
            assert h.checked("get", route.replace("{period}", wrong), route=route).status == 422


def test_a_body_over_the_size_limit_is_answered_as_documented(harness: Harness) -> None:
    for path in BODIES:
        for peer in (False, True) if "/internal/" in path else (False,):
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(api, "_from_peer", lambda request, peer=peer: peer)
                answer = harness.checked("post", at(path, harness.ended),
                                         b"x" * (3 * 65536), route=path)
            assert answer.status == 413, (path, peer, answer.status)


# -- every documented refusal, and only those


def _documented() -> set[tuple[str, int, str]]:
    """(route, status, error) of every refusal the document names."""
    found = set()
    for method, path, op in [(m, p, o) for p, ops in OPENAPI["paths"].items()
                             for m, o in ops.items()]:
        for status, response in op["responses"].items():
            if int(status) >= 400 and "application/json" in response.get("content", {}):
                found |= {(path, int(status), e)
                          for e in documented_errors(method, path, int(status))}
    return found


def test_every_documented_refusal_is_answered_with_its_status(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """One request for each refusal the document names, answered with the status it names
    (some server states are made directly: an issuer key of a period that has since closed,
    a database that fails, a peer's certificate)."""
    h = harness
    seen: set[tuple[str, int, str]] = set()
    schedule = h.server.schedule

    def expect(route: str, status: int, error: str, body: bytes | None = None,
               path: str | None = None, method: str = "post") -> Answer:
        answer = h.checked(method, path or route, body, route=route,
                           failing_database=status == 503)
        assert (answer.status, answer.json().get("error")) == (status, error), (
            f"{route}: expected {status} {error}, got {answer.status} {answer.body!r}")
        seen.add((route, status, error))
        return answer

    def example(route: str) -> bytes:
        (shown,) = BODIES[route]["examples"].values()
        return wire.canonical_json(shown["value"])

    start = schedule.start_of(NOW)
    closed = schedule.period_id(start + schedule.length)  # its gate was before NOW
    beyond = schedule.period_id(schedule.first_open(NOW) + schedule.horizon * schedule.length)
    long_ago = schedule.period_id(start - 10 * schedule.length)  # its readings are closed
    current = schedule.period_id(start)
    still_open = schedule.period_id(schedule.first_open(NOW))
    household, key = "h0005", h.key("households/h0005")

    limits = h.server.intake.limits
    monkeypatch.setattr(h.server.intake, "limits", dataclasses.replace(limits, max_challenges=0))
    expect("/v1/challenge", 429, "too_frequent")
    monkeypatch.setattr(h.server.intake, "limits", limits)

    issuer = "/v1/periods/{period}/issuer"
    expect(issuer, 422, "late", path=issuer.replace("{period}", closed), method="get")
    expect(issuer, 422, "wrong_period", path=issuer.replace("{period}", "now"), method="get")

    def token_request_for(period: str, nonce: bytes | None = None) -> bytes:
        raw, _ = token_request([Pseudonym.fresh(period)], household, key,
                               nonce or h.challenge())
        return raw

    route = "/v1/pseudonyms"
    expect(route, 400, "malformed", b"{}")
    expect(route, 401, "bad_signature", example(route))
    first = next(h.open_periods)
    taken = token_request_for(first)
    assert h.checked("post", route, taken).status == 201
    expect(route, 409, "replayed", taken)
    expect(route, 429, "too_frequent", token_request_for(first))
    expect(route, 422, "late", token_request_for(closed))
    expect(route, 422, "wrong_period", token_request_for(beyond))

    def failing(*args: Any) -> Any:
        raise StorageError("the disk is full (a test)")

    monkeypatch.setattr(h.server.store, "add_batch", failing)
    expect(route, 503, "unavailable", token_request_for(next(h.open_periods)))

    route = "/v1/bids"
    bidding = [Pseudonym.fresh(next(h.open_periods)) for _ in range(2)]
    monkeypatch.undo()
    h.tokens(household, bidding)
    monkeypatch.setattr(h.server.store, "add_batch", failing)
    expect(route, 503, "unavailable", make_submission(bidding[1], 0, h.payload()))
    monkeypatch.undo()
    expect(route, 400, "malformed", b"{}")
    bid = make_submission(bidding[0], 0, h.payload())
    unsigned = json.loads(bid)
    del unsigned["signature"]
    expect(route, 401, "unsigned", wire.canonical_json(unsigned))
    expect(route, 401, "bad_signature", example(route))
    assert h.checked("post", route, bid).status == 201
    expect(route, 409, "replayed", bid)
    expect(route, 409, "duplicate_pseudonym", make_submission(bidding[0], 0, h.payload("sell")))
    for period, error in ((closed, "late"), (beyond, "wrong_period")):
        made = Issuer.generate()  # as if the server had issued tokens for it before
        h.server.intake.add_issuer(period, made)
        pseudonym = Pseudonym.fresh(period)
        pseudonym.tokens[0] = made.evaluate_input(token_input(period, pseudonym.public))
        expect(route, 422, error, make_submission(pseudonym, 0, h.payload()))

    route = "/v1/outputs"
    expect(route, 400, "malformed", b"{}")
    expect(route, 401, "bad_signature",
           auth_request("supplier", "s1", current, h.challenge(), h.key("suppliers/s2")))
    expect(route, 409, "replayed", example(route))
    assert h.server.calendar.cycle_of(current) != current
    expect(route, 422, "wrong_period",
           auth_request("statement", household, current, h.challenge(), key))

    route = "/v1/enrol"
    expect(route, 400, "malformed", b"{}")
    expect(route, 401, "bad_signature", example(route))
    for credential in (Credential.fresh(3), Credential.fresh(3)):
        last = h.checked("post", route, wire.encode(wire.sign(
            wire.Enrolment(household, 0, credential.share_bytes(0)), key)))
    assert (last.status, last.json()["error"]) == (400, "already_enrolled")
    seen.add((route, 400, "already_enrolled"))

    route = "/v1/readings"
    layout = ClaimLayout.of(h.server.market.max_quantity_wh)
    meter = h.key("households/h0005.meter")

    def reading(period: str) -> bytes:
        shares = share_claim(Claim.of(False, 0, Fraction(1), 5, 6), layout, 3)[0]
        return wire.encode(wire.sign(wire.MeterReading(
            household, 0, period, np.asarray(shares, dtype="<u8").tobytes()), meter))

    expect(route, 400, "malformed", b"{}")
    expect(route, 401, "bad_signature", example(route))
    expect(route, 400, "too_early", reading(current))
    expect(route, 422, "late", reading(long_ago))
    expect(route, 422, "wrong_period", reading("2031-05-06T07:08:01Z"))
    sent = reading(h.ended)
    assert h.checked("post", route, sent).status == 200
    expect(route, 400, "duplicate_reading", sent)

    route = "/v1/hello"
    expect(route, 400, "malformed", b"{}")
    expect(route, 401, "bad_signature", example(route))
    expect(route, 409, "replayed", auth_request("household", household, "", b"\0" * 16, key))

    route = "/v1/periods/{period}"
    expect(route, 404, "not_finished", path=f"/v1/periods/{current}", method="get")
    expect(route, 422, "wrong_period", path="/v1/periods/now", method="get")

    older = schedule.period_id(start - 11 * schedule.length)  # its bid set not made yet
    for route, ago in (("/v1/internal/periods/{period}/bidset", long_ago),
                       ("/v1/internal/periods/{period}/bidset-digest", older),
                       ("/v1/internal/periods/{period}/settlement-set", long_ago)):
        expect(route, 403, "forbidden", path=route.replace("{period}", ago), method="get")
        monkeypatch.setattr(api, "_from_peer", lambda request: True)  # a peer's certificate
        expect(route, 422, "wrong_period", path=route.replace("{period}", "now"), method="get")
        expect(route, 409, "not_closed", path=route.replace("{period}", still_open),
               method="get")
        with pytest.MonkeyPatch.context() as disk:  # its database cannot be read
            disk.setattr(h.server.store, "segments" if "bidset" in route else "readings",
                         failing)
            expect(route, 503, "unavailable", path=route.replace("{period}", ago),
                   method="get")
        answer = h.checked("get", route.replace("{period}", ago), route=route)
        assert answer.status == 200, answer.body
        if "bidset" in route:  # final once signed after the gate: answered from memory
            with pytest.MonkeyPatch.context() as disk:
                disk.setattr(h.server.store, "segments", failing)
                again = h.checked("get", route.replace("{period}", ago), route=route)
            assert (again.status, again.body) == (200, answer.body)
        monkeypatch.undo()

    # streaming validation, from a peer's certificate: server 0 stands for the peer here, and
    # the leader's plans it is sent are signed by its own key, as the leader's are
    pending, segments = ("/v1/internal/periods/{period}/" + what
                         for what in ("pending", "segments"))
    streaming = next(h.open_periods)
    member = Pseudonym.fresh(streaming)
    h.tokens(household, [member])
    assert h.checked("post", "/v1/bids", make_submission(member, 0, h.payload())).status == 201
    leader = h.key("server-0/signing")

    def plan(period: str, index: int, members: list[bytes]) -> bytes:
        return wire.encode(wire.sign(wire.SegmentPlan(0, period, index, tuple(members)),
                                     leader))

    expect(pending, 403, "forbidden", path=at(pending, streaming), method="get")
    expect(segments, 403, "forbidden", plan(streaming, 0, [member.public]),
           path=at(segments, streaming))
    monkeypatch.setattr(api, "_from_peer", lambda request: True)  # a peer's certificate
    validating: list[tuple[str, int]] = []

    async def validate(period: str, index: int, members: tuple[bytes, ...]) -> None:
        validating.append((period, index))  # instead of the party process

    monkeypatch.setattr(h.server, "_run_segment", validate)
    expect(pending, 422, "wrong_period", path=at(pending, "now"), method="get")
    expect(pending, 409, "no_segments", path=at(pending, closed), method="get")
    with pytest.MonkeyPatch.context() as disk:
        disk.setattr(h.server.store, "pseudonyms", failing)
        expect(pending, 503, "unavailable", path=at(pending, streaming), method="get")

    def pending_set(period: str) -> wire.PendingSet:
        answer = h.checked("get", at(pending, period), route=pending)
        assert answer.status == 200, f"a peer gets no pending set: {answer.body!r}"
        found = wire.decode(wire.PendingSet, answer.body)
        assert wire.verify(found, h.registry.servers[0][1]), "a pending set not signed"
        return found

    found = pending_set(streaming)
    assert (found.next_segment, found.pseudonyms) == (0, (member.public,)), (
        "the pending set is not the stored bid at segment 0")
    expect(segments, 400, "malformed", b"{}", path=at(segments, streaming))
    expect(segments, 401, "bad_signature", example(segments),
           path=at(segments, EXAMPLES["SegmentPlan"]["period"]))
    expect(segments, 422, "wrong_period", plan(streaming, 0, [member.public]),
           path=at(segments, "now"))
    expect(segments, 422, "wrong_period", plan(streaming, 0, [member.public]),
           path=at(segments, closed))  # a plan of another period than the path's
    expect(segments, 422, "wrong_period", plan(streaming, 1, [member.public]),
           path=at(segments, streaming))  # not the next index
    expect(segments, 422, "late", plan(closed, 0, []), path=at(segments, closed))
    expect(segments, 400, "malformed", plan(streaming, 0, [Pseudonym.fresh(streaming).public]),
           path=at(segments, streaming))  # a bid this server does not hold
    expect(segments, 400, "malformed", plan(streaming, 0, []),
           path=at(segments, streaming))  # no bid at all
    with pytest.MonkeyPatch.context() as disk:
        disk.setattr(h.server.store, "add_segment", failing)
        expect(segments, 503, "unavailable", plan(streaming, 0, [member.public]),
               path=at(segments, streaming))
    assert pending_set(streaming).next_segment == 0, "a segment the database did not record"
    answer = h.checked("post", at(segments, streaming), plan(streaming, 0, [member.public]),
                       route=segments)
    assert (answer.status, answer.json()) == (200, {"accepted": True}), (
        f"the leader's plan of the held bid is not taken: {answer.body!r}")
    h.loop.run_until_complete(asyncio.sleep(0))  # the validation's task starts
    assert validating == [(streaming, 0)], "a plan taken starts no validation of it"
    found = pending_set(streaming)
    assert (found.next_segment, found.pseudonyms) == (1, ()), (
        "a plan taken leaves its members pending, or the next index as it was")
    expect(segments, 400, "malformed", plan(streaming, 1, [member.public]),
           path=at(segments, streaming))  # in a segment already
    expect(segments, 422, "wrong_period", plan(streaming, 0, [member.public]),
           path=at(segments, streaming))  # the index is used
    monkeypatch.undo()

    untried = _documented() - seen
    assert not untried, f"documented refusals no request here gets: {sorted(untried)}"


def test_a_finished_periods_statement_conforms(harness: Harness) -> None:
    h = harness
    period = h.server.schedule.period_id(
        h.server.schedule.start_of(NOW) - 30 * h.server.schedule.length)
    h.loop.run_until_complete(h.server._store_statement(
        period, "cleared", wire.Outcome("no_trade"), (), ()))
    route = "/v1/periods/{period}"
    answer = h.checked("get", route.replace("{period}", period), route=route)
    assert answer.status == 200 and answer.json()["status"] == "cleared"

    def busy(*args: Any) -> Any:  # the database thread sealing, or the database gone
        raise StorageError("the database cannot answer now (a test)")

    with pytest.MonkeyPatch.context() as patch:  # a fresh statement comes from memory
        patch.setattr(Store, "period", busy)  # on every connection
        again = h.checked("get", route.replace("{period}", period), route=route)
    assert (again.status, again.body) == (200, answer.body)
    record = h.server.store.period(period)  # what memory answers is what was stored
    assert record is not None and record.statement == answer.body


# -- the examples as they are


@pytest.mark.parametrize("path", sorted(BODIES))
def test_each_example_sent_as_is_is_refused_as_documented(harness: Harness, path: str) -> None:
    (example,) = BODIES[path]["examples"].values()
    answer = harness.checked("post", at(path, example["value"].get("period")),
                             wire.canonical_json(example["value"]), route=path)
    expected = example["x-refused-as-is"]
    assert (answer.status, answer.json()["error"]) == (expected["status"], expected["error"]), (
        f"{path}: the example is answered {answer.status} {answer.body!r}, the document "
        f"says {expected}")


# -- the canonical-JSON rule as the document states it


def _by_the_document(body: dict[str, Any], key: Ed25519PrivateKey, **dumps: Any) -> bytes:
    """Sign and spell a message by the recipe of info.description (not wire's code)."""
    canonical: dict[str, Any] = {"sort_keys": True, "separators": (",", ":"),
                                 "ensure_ascii": False}
    signed = b"sealgrid/v1/" + body["type"].encode() + b"\n" + json.dumps(
        body, **canonical).encode()
    full = {**body, "signature": base64.b64encode(key.sign(signed)).decode()}
    return json.dumps(full, **{**canonical, **dumps}).encode()


def test_a_body_spelled_as_the_document_says_is_taken_and_no_other_spelling(
        harness: Harness) -> None:
    h = harness
    key = h.key("households/h0002")
    pseudonym = Pseudonym.fresh(next(h.open_periods))
    _, blindings = token_request([pseudonym], "h0002", key, b"")
    body = {"type": "TokenRequest", "v": 1, "household": "h0002",
            "nonce": wire.b64e(h.challenge()), "periods": [pseudonym.period],
            "blinded": [wire.b64e(blindings[0].blinded)]}
    good = _by_the_document(body, key)
    respellings = {
        "spaces": _by_the_document(body, key, separators=(", ", ": ")),
        "unsorted keys": _by_the_document(body, key, sort_keys=False),
        "indented": _by_the_document(body, key, indent=1),
        "trailing newline": good + b"\n",
        "escaped slash": good.replace(b"/", b"\\/") if b"/" in good else good + b" ",
        "1.0 for 1": good.replace(b'"v":1', b'"v":1.0'),
        "escaped letter": good.replace(b'"h0002"', b'"\\u00680002"'),
    }
    for why, raw in respellings.items():
        assert raw != good
        answer = h.checked("post", "/v1/pseudonyms", raw)
        assert (answer.status, answer.json()["error"]) == (400, "malformed"), why
    assert h.checked("post", "/v1/pseudonyms", good).status == 201


# -- bodies drawn from the schemas


_STRATEGIES: dict[int, st.SearchStrategy[Any]] = {}


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values that conform to ``schema`` (the subset of JSON Schema the document uses),
    strings drawn from their patterns (made once per schema)."""
    found = _STRATEGIES.get(id(schema))
    if found is None:
        found = _STRATEGIES[id(schema)] = _from_schema(schema)
    return found


def _from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    if "$ref" in schema:
        return from_schema(SCHEMAS[schema["$ref"].rsplit("/", 1)[1]])
    if "oneOf" in schema:
        return st.one_of([from_schema(s) for s in schema["oneOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema["type"]
    if kind == "object":
        return st.fixed_dictionaries({k: from_schema(v)
                                      for k, v in schema["properties"].items()})
    if kind == "array":
        return st.lists(from_schema(schema["items"]), min_size=schema.get("minItems", 0),
                        max_size=min(schema.get("maxItems", 3), 3),
                        unique=schema.get("uniqueItems", False))
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "boolean":
        return st.booleans()
    low, high = schema.get("minLength", 0), schema.get("maxLength", 10**6)
    if "pattern" not in schema:
        return st.text(min_size=low, max_size=min(high, 30))
    pattern = schema["pattern"]
    repeated = _REPEATED.match(pattern)
    if repeated is not None and low and int(repeated["size"]) % 4 == 0:
        # (a base64 group of 4n characters)*: as many groups as the lengths need, or up to 3
        # more, each group the base64 of 3n random bytes (any text of its characters)
        size = int(repeated["size"])
        least = max(0, (low - 32) // size)
        groups = st.integers(least, min(least + 3, high // size)).flatmap(
            lambda k: st.binary(min_size=k * size * 3 // 4, max_size=k * size * 3 // 4))
        rest = st.from_regex(f"^{repeated['rest']}", fullmatch=True)
        return st.tuples(groups.map(wire.b64e), rest).map("".join).filter(
            lambda s: low <= len(s) <= high)
    return st.from_regex(pattern, fullmatch=True).filter(lambda s: low <= len(s) <= high)


#: A pattern that starts with a repeated group of base64 characters, ``^(?:[A-Za-z0-9+/]{n})*…``.
_REPEATED = re.compile(r"^\^\(\?:\[A-Za-z0-9\+/\]\{(?P<size>[0-9]+)\}\)\*(?P<rest>.*)$")


def told(answer: Answer, field: str = "") -> None:
    """Count the answer (pytest --hypothesis-show-statistics lists them)."""
    error = answer.json().get("error", "") if answer.content_type == "application/json" else ""
    event(f"{field} drawn: {answer.status} {error}".strip())


DRAWN = settings(max_examples=40, derandomize=True, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                        HealthCheck.data_too_large])


@pytest.mark.parametrize("path", sorted(BODIES))
@DRAWN
@given(data=st.data())
def test_a_body_drawn_from_the_schema_is_answered_as_documented(
        harness: Harness, path: str, data: st.DataObject) -> None:
    body = data.draw(from_schema(body_schema(path)))
    # a route with a period in its path is sent the body's; an internal route from a peer's
    # certificate or not
    peer = path.startswith("/v1/internal/") and data.draw(st.booleans())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(api, "_from_peer", lambda request: peer)
        told(harness.checked("post", at(path, body.get("period")), wire.canonical_json(body),
                             route=path), "peer" if peer else "")


_HOUSEHOLDS = itertools.cycle(["h0002", "h0003", "h0004"])


@DRAWN
@given(data=st.data())
def test_a_token_request_with_one_drawn_field_signed_again_is_answered_as_documented(
        harness: Harness, data: st.DataObject) -> None:
    h = harness
    household = next(_HOUSEHOLDS)
    key = h.key(f"households/{household}")
    schema = body_schema("/v1/pseudonyms")
    pseudonym = Pseudonym.fresh(h.server.schedule.open_periods(NOW)[data.draw(
        st.integers(0, 5))])
    raw, _ = token_request([pseudonym], household, key, h.challenge())
    body = json.loads(raw)
    name = data.draw(st.sampled_from(["periods", "blinded", "nonce"]))
    body[name] = data.draw(from_schema(schema["properties"][name]))
    msg = wire.from_dict(wire.TokenRequest, body)
    told(h.checked("post", "/v1/pseudonyms", wire.encode(wire.sign(msg, key))), name)


@pytest.fixture(scope="module")
def bidders(harness: Harness) -> list[Pseudonym]:
    """Pseudonyms with server 0's token, one per open period (one token request)."""
    periods = harness.server.schedule.open_periods(NOW)[40:80]
    pseudonyms = [Pseudonym.fresh(p) for p in periods]
    harness.tokens("h0001", pseudonyms)
    return pseudonyms


@DRAWN
@given(data=st.data())
def test_a_bid_with_one_drawn_field_signed_again_is_answered_as_documented(
        harness: Harness, bidders: list[Pseudonym], data: st.DataObject) -> None:
    h = harness
    pseudonym = data.draw(st.sampled_from(bidders))
    body = json.loads(make_submission(pseudonym, 0, h.payload()))
    name = data.draw(st.sampled_from(["period", "payload", "token", "pseudonym", "server"]))
    body[name] = data.draw(from_schema(body_schema("/v1/bids")["properties"][name]))
    msg = wire.from_dict(wire.PseudonymousBid, body)
    told(h.checked("post", "/v1/bids", wire.encode(wire.sign(msg, pseudonym.key))), name)


@DRAWN
@given(data=st.data())
def test_an_enrolment_or_reading_with_one_drawn_field_signed_again_is_answered_as_documented(
        harness: Harness, data: st.DataObject) -> None:
    h = harness
    household = data.draw(st.sampled_from(["h0002", "h0003", "h0004"]))
    layout = ClaimLayout.of(h.server.market.max_quantity_wh)
    if data.draw(st.booleans()):
        path, signer = "/v1/enrol", f"households/{household}"
        cls: type[Any] = wire.Enrolment
        msg: Any = wire.Enrolment(household, 0, Credential.fresh(3).share_bytes(0))
        name = data.draw(st.sampled_from(["share", "server"]))
    else:
        path, cls, signer = "/v1/readings", wire.MeterReading, f"households/{household}.meter"
        shares = share_claim(Claim.of(False, 0, Fraction(1), 10, 20), layout, 3)[0]
        msg = wire.MeterReading(household, 0, h.ended,
                                np.asarray(shares, dtype="<u8").tobytes())
        name = data.draw(st.sampled_from(["shares", "period", "server"]))
    body = wire.to_dict(msg)
    body[name] = data.draw(from_schema(body_schema(path)["properties"][name]))
    drawn = wire.from_dict(cls, body)
    told(h.checked("post", path, wire.encode(wire.sign(drawn, h.key(signer)))), name)


@DRAWN
@given(data=st.data())
def test_a_segment_plan_with_one_drawn_field_signed_again_is_answered_as_documented(
        harness: Harness, data: st.DataObject) -> None:
    """The leader's plan of an open period's next segment (no member, as no bid is held
    there), one field drawn, signed by server 0 and sent from a peer's certificate for the
    plan's period or the one it was made for; a plan taken starts no party process here."""
    h = harness
    pending, segments = ("/v1/internal/periods/{period}/" + what
                         for what in ("pending", "segments"))
    period = data.draw(st.sampled_from(h.server.schedule.open_periods(NOW)[5:15]))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(api, "_from_peer", lambda request: True)

        async def validate(period: str, index: int, members: tuple[bytes, ...]) -> None:
            pass  # instead of the party process

        patch.setattr(h.server, "_run_segment", validate)
        answer = h.checked("get", at(pending, period), route=pending)
        assert answer.status == 200, f"a peer gets no pending set: {answer.body!r}"
        own = wire.decode(wire.PendingSet, answer.body)
        body = wire.to_dict(wire.SegmentPlan(0, period, own.next_segment, own.pseudonyms))
        name = data.draw(st.sampled_from(["period", "index", "pseudonyms"]))
        body[name] = data.draw(from_schema(body_schema(segments)["properties"][name]))
        msg = wire.from_dict(wire.SegmentPlan, body)
        sent_for = data.draw(st.sampled_from([period, msg.period]))
        told(h.checked("post", at(segments, sent_for),
                       wire.encode(wire.sign(msg, h.key("server-0/signing"))), route=segments),
             name)


def test_the_gate_and_the_peers_asking_at_once_get_one_bid_set_signed_once(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """At the gate a server's own attempt and both peers ask for its bid set's digest at the
    same moment: it is made and its digest signed once (a city's set is 100,000 pseudonyms),
    and all three get that one; the whole set, which a peer asks for when its digest differs,
    is signed once too."""
    from sealgrid.service import server as server_module

    h = harness
    schedule = h.server.schedule
    period = schedule.period_id(schedule.start_of(NOW) - 30 * schedule.length)  # asked by none
    signed: list[str] = []
    real = wire.sign

    def counting(message: Any, key: Any) -> Any:
        signed.append(type(message).__name__)
        return real(message, key)

    monkeypatch.setattr(server_module.wire, "sign", counting)

    async def at_once() -> list[Any]:
        own = (h.server.own_digest(period) for _ in range(3))
        return list(await asyncio.gather(*own, *(h.server.own_bidset(period) for _ in range(2))))

    found = h.loop.run_until_complete(at_once())
    digests, sets = found[:3], found[3:]
    assert signed == ["BidSetDigest", "BidSet"] and digests[0] is not None
    assert digests[1] is digests[0] and digests[2] is digests[0] and sets[1] is sets[0]
    assert sets[0].period == period and digests[0].count == len(sets[0].pseudonyms)


def test_a_peer_whose_digest_differs_or_that_has_none_is_asked_for_its_whole_set(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """At the gate a server compares its peers' signed digests with its own and fetches the
    whole set only from a peer whose digest differs, or from one that has no digest route
    (404: a version before it, during an upgrade); a whole set that is not its digest's
    fails the attempt."""
    from sealgrid.service.server import OwnSet

    h = harness
    schedule = h.server.schedule
    period = schedule.period_id(schedule.start_of(NOW) - 40 * schedule.length)
    mine = (b"\x01" * 32, b"\x02" * 32)
    segments = ((0).to_bytes(4, "big") + b"\x5e" * 32,)
    own = OwnSet(wire.BidSet(0, period, mine, segments),
                 wire.BidSetDigest(0, period, 2, wire.set_digest(mine), segments))
    theirs: dict[str, Any] = {}
    asked: list[str] = []

    async def peer_signed(peer: int, period: str, route: str, kind: type, *args: Any,
                          new: bool = False) -> Any:
        asked.append(route)
        assert new is (route == "bidset-digest")  # only the new route may be missing
        return theirs[route]

    monkeypatch.setattr(h.server, "_peer_signed", peer_signed)

    def peer_set() -> Any:
        asked.clear()
        return h.loop.run_until_complete(h.server._peer_set(
            1, own, h.loop.time() + 5, NOW + dt.timedelta(days=1)))

    same = wire.BidSetDigest(1, period, 2, wire.set_digest(mine), segments)
    theirs = {"bidset-digest": same}
    assert peer_set() == (None, segments) and asked == ["bidset-digest"]
    fewer = (mine[0],)
    theirs = {"bidset-digest": wire.BidSetDigest(1, period, 1, wire.set_digest(fewer), ()),
              "bidset": wire.BidSet(1, period, fewer, ())}
    assert peer_set() == (frozenset(fewer), ()) and asked == ["bidset-digest", "bidset"]
    theirs = {"bidset-digest": None, "bidset": wire.BidSet(1, period, mine, segments)}
    assert peer_set() == (frozenset(mine), segments) and asked == ["bidset-digest", "bidset"]
    theirs = {"bidset-digest": wire.BidSetDigest(1, period, 1, b"\0" * 32, ()),
              "bidset": wire.BidSet(1, period, mine, ())}  # two, where its digest said one
    with pytest.raises(clearing.ClearingFailed, match="not its digest's"):
        peer_set()
