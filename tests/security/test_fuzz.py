"""Threat: bad input (mustafa2016 §IV, denial of service); assumes hypothesis and loopback.

Every decoder and every HTTP endpoint must accept or refuse each input with one reason of the
closed set — never another exception, never a hang (pytest-timeout and hypothesis deadlines),
never unbounded memory, and bodies over the limit are refused before anything parses them.
Runs are derandomised so CI sees the same cases every time; the counts are in
docs/threat-model.md. The texts drawn include what was found by trying against running
servers: lone surrogates (JSON's ``\\ud800`` escapes), periods at the ends of what can be named
(years 1 and 9999) and other spellings of the same base64 (tests/security/test_hostile.py has
one test for each).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import struct
import tracemalloc
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealgrid.mechanism.bids import BidRejected, Reason
from sealgrid.protocol.encoding import _HEADER, BidShares, Layout, encode_bid
from sealgrid.service import wire
from sealgrid.service.household import make_submission
from sealgrid.service.intake import IssuePseudonym, Rejected, SubmitBid
from tests.chaos.fuzz import EXTREME_PERIODS, SURROGATES, respell

from .helpers import LEVELS, MAX_Q, NOW, SUPPLIERS, World, reason

FUZZ = settings(
    max_examples=120,
    derandomize=True,
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
LAYOUT = Layout(LEVELS, SUPPLIERS, MAX_Q)
#: Lone surrogates among other text: what JSON's ``\\ud800`` escapes decode to.
NOT_UNICODE = st.sampled_from(SURROGATES) | st.text(
    st.characters(exclude_categories=()), min_size=1, max_size=6)
#: Periods at the ends of what can be named, and any 15-minute boundary of year 1 or 9999.
EXTREME = st.sampled_from(EXTREME_PERIODS) | st.builds(
    lambda day, q, late: (f"9999-12-{31 - day:02d}" if late else f"0001-01-{1 + day:02d}")
    + f"T{q // 4:02d}:{15 * (q % 4):02d}:00Z",
    st.integers(0, 2), st.integers(0, 95), st.booleans())
#: Base64 of bytes with padding, spelled with some unused bits set (never canonical).
RESPELLED = st.builds(lambda data, bits: respell(wire.b64e(data), bits),
                      st.binary(min_size=1, max_size=64).filter(lambda b: len(b) % 3 != 0),
                      st.integers(1, 15))
TEXT = st.text(max_size=40) | NOT_UNICODE | EXTREME | RESPELLED
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda kids: st.lists(kids, max_size=5)
    | st.dictionaries(st.text(max_size=12) | NOT_UNICODE, kids, max_size=6),
    max_leaves=30,
)


def _message_like(cls: type) -> st.SearchStrategy[bytes]:
    """JSON objects with the right ``type`` and ``v`` and randomly typed fields."""
    names = [f.name for f in dataclasses.fields(cls)] + ["extra"]
    fields = st.dictionaries(st.sampled_from(names), JSON, max_size=len(names))
    return st.builds(
        lambda d, v: json.dumps({**d, "type": cls.__name__, "v": v}).encode(),
        fields,
        st.sampled_from([1, 1, 1, 2, "1", None]),
    )


def _type_name(cls: Any) -> str:
    return str(cls.__name__)


@pytest.mark.parametrize("cls", sorted(wire.MESSAGE_TYPES.values(), key=_type_name),
                         ids=_type_name)
@FUZZ
@given(raw=st.binary(max_size=400) | JSON.map(lambda v: json.dumps(v).encode()))
def test_wire_decoder_refuses_with_wire_error_only(cls: type, raw: bytes) -> None:
    with contextlib.suppress(wire.WireError):
        wire.decode(cls, raw)


@pytest.mark.parametrize("cls", sorted(wire.MESSAGE_TYPES.values(), key=_type_name),
                         ids=_type_name)
@FUZZ
@given(data=st.data())
def test_wire_decoder_on_message_shaped_json(cls: type, data: st.DataObject) -> None:
    raw = data.draw(_message_like(cls))
    try:
        msg: Any = wire.decode(cls, raw)
    except wire.WireError:
        return
    assert wire.decode(cls, wire.encode(msg)) == msg  # what decodes re-encodes canonically


def _shaped(cls: type) -> st.SearchStrategy[bytes]:
    """Messages of ``cls`` with every field of the right type, as a client could send them:
    text from periods (extreme ones among them), roles, base64 re-spellings and lone
    surrogates; bytes as base64, now and then re-spelled; sorted keys, compact, escapes for
    anything that is not ASCII."""
    def value(name: str, hint: Any) -> st.SearchStrategy[Any]:
        if hint is str:
            roles = st.sampled_from(["household", "supplier", "operator", "statement", "bill",
                                     "dso", "tso", "supplier_period"])
            return roles | EXTREME | RESPELLED | NOT_UNICODE | st.text(max_size=20) | (
                st.just("h0001") if name in ("household", "subject") else st.just(""))
        if hint is bytes:
            return st.binary(max_size=300).map(wire.b64e) | RESPELLED
        if hint is int:
            return st.integers(-1, 3) | st.integers()
        return st.just([])  # tuples: none of the requests has one

    hints = typing.get_type_hints(cls)
    fields = {f.name: value(f.name, hints[f.name]) for f in dataclasses.fields(cls)}
    return st.fixed_dictionaries(fields).map(
        lambda doc: json.dumps({**doc, "type": cls.__name__, "v": 1}, sort_keys=True,
                               separators=(",", ":")).encode())


REQUESTS = {"/v1/pseudonyms": wire.TokenRequest, "/v1/bids": wire.PseudonymousBid,
            "/v1/outputs": wire.AuthRequest, "/v1/hello": wire.AuthRequest,
            "/v1/enrol": wire.Enrolment, "/v1/readings": wire.MeterReading}


@pytest.mark.parametrize("cls", sorted(set(REQUESTS.values()), key=_type_name),
                         ids=_type_name)
@FUZZ
@given(data=st.data())
def test_wire_decoder_on_well_typed_messages_with_hostile_text(
    cls: type, data: st.DataObject
) -> None:
    """Found by trying (issue 13): a lone surrogate in a well-typed message escaped the
    decoder as a UnicodeEncodeError (HTTP 500 on every POST route)."""
    raw = data.draw(_shaped(cls))
    try:
        msg: Any = wire.decode(cls, raw)
    except wire.WireError:
        return
    assert wire.encode(msg) == raw  # only the canonical form decodes


@FUZZ
@given(data=st.binary(min_size=1, max_size=100).filter(lambda b: len(b) % 3 != 0),
       bits=st.integers(1, 15))
def test_base64_respellings_are_refused(data: bytes, bits: int) -> None:
    """Found by trying (issue 13): another spelling of a pseudonym made the servers answer
    ``no_trade`` for a bid that cleared; base64 has one spelling now."""
    text = wire.b64e(data)
    assert wire.b64d(text) == data
    for other in (respell(text, bits), text.rstrip("=")):
        assert other != text
        with pytest.raises(wire.WireError):
            wire.b64d(other)


def test_deeply_nested_json_is_a_wire_error() -> None:
    """Found by this battery (RecursionError escaped); fixed in e4f67f4."""
    with pytest.raises(wire.WireError):
        wire.decode(wire.PseudonymousBid, b"[" * 100_000)


@FUZZ
@given(raw=st.binary(max_size=600))
def test_share_decoder_refuses_random_bytes_as_malformed(raw: bytes) -> None:
    try:
        BidShares.from_bytes(raw)
    except BidRejected as exc:
        assert exc.reason is Reason.MALFORMED


@FUZZ
@given(
    version=st.integers(0, 2**16 - 1), party=st.integers(0, 2**16 - 1),
    levels=st.integers(1, 300), suppliers=st.integers(1, 8), max_q=st.integers(1, 2**31 - 1),
    rows=st.integers(0, 3), body=st.binary(max_size=800),
    width_body=st.booleans(), word=st.integers(0, 2**64 - 1),
)
def test_share_decoder_on_headers_of_valid_layouts(
    version: int, party: int, levels: int, suppliers: int, max_q: int, rows: int,
    body: bytes, width_body: bool, word: int,
) -> None:
    if width_body:  # a body of exactly the right length: values in or out of the field
        body = struct.pack("<Q", word) * Layout(levels, suppliers, max_q).width
    raw = _HEADER.pack(b"SGB1", version, party, levels, suppliers, max_q, rows) + body
    try:
        shares = BidShares.from_bytes(raw)
    except BidRejected as exc:
        assert exc.reason is Reason.MALFORMED
    else:
        assert shares.to_bytes() == raw


BAD_LAYOUTS = [(0, 2, 10_000), (6, 0, 10_000), (6, 2, 0), (6, 2, 2**31), (6, 2, 2**32 - 1)]


@pytest.mark.parametrize("levels,suppliers,max_q", BAD_LAYOUTS)
def test_share_header_with_an_impossible_layout_is_malformed(
    levels: int, suppliers: int, max_q: int
) -> None:
    """Found by this battery (D2: Layout's ValueError escaped the decoder)."""
    with pytest.raises(BidRejected) as caught:
        BidShares.from_bytes(_HEADER.pack(b"SGB1", 2, 0, levels, suppliers, max_q, 1))
    assert caught.value.reason is Reason.MALFORMED


def test_intake_refuses_a_signed_bid_with_an_impossible_layout() -> None:
    """Found by this battery (ValueError escaped the intake: HTTP 500); fixed in e4f67f4."""
    w = World(n=1)
    p, _ = w.pseudonym("h0000")
    payload = _HEADER.pack(b"SGB1", 2, 0, 0, 2, 10_000, 1)
    assert reason(w.submit(0, make_submission(p, 0, payload))) is Reason.MALFORMED


# --------------------------------------------------------------------------- the intake


@pytest.fixture(scope="module")
def world() -> World:
    return World(n=4)


@FUZZ
@given(raw=st.binary(max_size=300) | _message_like(wire.PseudonymousBid)
       | _message_like(wire.TokenRequest))
def test_intake_refuses_garbage_with_a_reason(world: World, raw: bytes) -> None:
    for event in (SubmitBid(NOW, raw), IssuePseudonym(NOW, raw)):
        (out,) = world.machines[0].receive(event)
        assert isinstance(out, Rejected) and isinstance(out.reason, Reason)


@pytest.fixture(scope="module")
def valid_bid(world: World) -> tuple[bytes, dict[str, Any]]:
    p, _ = world.pseudonym("h0001")
    payload = encode_bid(True, 500, 3, 1, LAYOUT)[0].to_bytes()
    raw = make_submission(p, 0, payload)
    return raw, json.loads(raw)


@FUZZ
@given(data=st.data())
def test_intake_on_mutated_valid_bids(
    world: World, valid_bid: tuple[bytes, dict[str, Any]], data: st.DataObject
) -> None:
    """A valid, signed bid with one field changed, or a few bytes flipped: always refused."""
    raw, doc = valid_bid
    if data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(doc)))
        mutated = json.dumps({**doc, key: data.draw(JSON)}, sort_keys=True).encode()
    else:
        pos = data.draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=4))
        buf = bytearray(raw)
        for i in pos:
            buf[i] ^= data.draw(st.integers(1, 255))
        mutated = bytes(buf)
    if mutated == raw:
        return
    (out,) = world.machines[0].receive(SubmitBid(NOW, mutated))
    assert isinstance(out, Rejected), "a changed bid must never be accepted"
    assert isinstance(out.reason, Reason)


def test_rejected_input_does_not_grow_memory() -> None:
    w = World(n=2)
    p, _ = w.pseudonym("h0000")
    good = make_submission(p, 0, encode_bid(False, 10, 1, 0, LAYOUT)[0].to_bytes())

    def burst(k: int) -> None:
        for i in range(k):
            junk = good[: 50 + i % 400] + bytes([i % 256])
            w.submit(0, junk)
            w.submit(0, good.replace(b'"v":1', b'"v":%d' % (2 + i)))

    burst(500)  # warm caches
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    burst(3000)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown < 256 * 1024, f"{grown} bytes kept after 6,000 refused submissions"


# --------------------------------------------------------------------------- HTTP


class Http:
    """One in-process server (plain HTTP on loopback; TLS is tested in test_tls.py)."""

    def __init__(self, root: Path) -> None:
        from aiohttp.test_utils import TestClient, TestServer

        from sealgrid.service.api import build_app
        from sealgrid.service.config import load_server_config
        from sealgrid.service.server import Server
        from sealgrid.service.setup import init_data_dir

        init_data_dir(root, households=2, base_port=1, period_seconds=900)
        self.loop = asyncio.new_event_loop()
        self.server = Server(load_server_config(root / "server-0" / "server.toml"))
        self.calls = 0
        original = self.server.submit

        async def counting(raw: bytes) -> Any:
            self.calls += 1
            return await original(raw)

        self.server.submit = counting  # type: ignore[method-assign]
        self.client = TestClient(TestServer(build_app(self.server)), loop=self.loop)
        self.loop.run_until_complete(self.server.start())
        self.loop.run_until_complete(self.client.start_server())

    def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        async def go() -> tuple[int, bytes]:
            resp = await self.client.request(method, path, data=body)
            return resp.status, await resp.read()

        return self.loop.run_until_complete(asyncio.wait_for(go(), 10))

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.run_until_complete(self.server.stop())
        self.loop.close()


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Http]:
    h = Http(tmp_path_factory.mktemp("fuzz") / "data")
    try:
        yield h
    finally:
        h.close()


ERRORS = {r.value for r in Reason} | {"not_finished", "forbidden", "not_closed", "unavailable"}
POSTS = ["/v1/challenge", "/v1/pseudonyms", "/v1/bids", "/v1/outputs", "/v1/hello",
         "/v1/enrol", "/v1/readings"]
GETS = ["/v1/periods/{}/issuer", "/v1/periods/{}", "/v1/internal/periods/{}/bidset"]


def _check_answer(status: int, body: bytes) -> None:
    assert status < 500, body[:200]
    if status >= 400 and status not in (404, 405, 413):
        assert json.loads(body)["error"] in ERRORS


@FUZZ
@given(path=st.sampled_from(POSTS),
       body=st.binary(max_size=300) | JSON.map(lambda v: json.dumps(v).encode())
       | _message_like(wire.PseudonymousBid) | _message_like(wire.AuthRequest)
       | _message_like(wire.TokenRequest))
def test_post_endpoints_answer_every_body_with_a_closed_reason(
    http: Http, path: str, body: bytes
) -> None:
    _check_answer(*http.request("POST", path, body))


@FUZZ
@given(data=st.data(), path=st.sampled_from(sorted(REQUESTS)))
def test_post_endpoints_answer_well_typed_hostile_messages_with_a_closed_reason(
    http: Http, data: st.DataObject, path: str
) -> None:
    """Messages of each route's type with extreme periods, lone surrogates and re-spelled
    base64 in their fields: a closed reason, never a server error."""
    _check_answer(*http.request("POST", path, data.draw(_shaped(REQUESTS[path]))))


@FUZZ
@given(route=st.sampled_from(GETS),
       period=st.text(st.characters(blacklist_categories=("Cs",),  # type: ignore[arg-type]
                                    blacklist_characters="/?#%"),
                      min_size=1, max_size=40)
       | st.datetimes().map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")) | EXTREME)
def test_get_endpoints_answer_every_period_with_a_closed_reason(
    http: Http, route: str, period: str
) -> None:
    _check_answer(*http.request("GET", route.format(period)))


def test_oversized_bodies_are_refused_before_parsing(http: Http) -> None:
    limit = 2 * http.server.cfg.market.limits.max_payload_bytes + 2 * 4096
    before = http.calls
    for size in (limit + 1, 4 * limit):
        status, _ = http.request("POST", "/v1/bids", b"{" * size)
        assert status == 413
    assert http.calls == before, "an oversized body reached the bid parser"


def test_deeply_nested_body_is_refused_not_a_server_error(http: Http) -> None:
    """Found by this battery (HTTP 500); fixed in e4f67f4."""
    status, body = http.request("POST", "/v1/bids", b"[" * 100_000)
    assert status == 400 and json.loads(body)["error"] == "malformed"
