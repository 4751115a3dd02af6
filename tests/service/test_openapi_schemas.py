"""The OpenAPI document on its own: every field has its rule, each rule is the server's, and
every example is valid; assumes jsonschema and hypothesis, and no server.

The rules are checked against the code that applies them: the base64 patterns against
``wire.b64d`` (the canonical spellings of the right lengths, no others), the period pattern
against ``Schedule.parse_period``, the time pattern against ``schedule.iso``. The examples
are what :func:`~sealgrid.service.openapi.make_examples` makes with the client code, and their
signatures and token verify under the example keys.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import jsonschema
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from sealgrid.mechanism.bids import Reason
from sealgrid.service import openapi, voprf, wire
from sealgrid.service.openapi import (
    EXAMPLES,
    OPENAPI,
    PERIOD_PATTERN,
    TIME_PATTERN,
    b64_length,
    b64_pattern,
)
from sealgrid.service.schedule import Schedule, iso
from sealgrid.service.tokens import token_input

SCHEMAS = OPENAPI["components"]["schemas"]
FAST = settings(max_examples=200, derandomize=True, deadline=None)


# -- validating with jsonschema (OpenAPI 3.0's nullable is JSON Schema's type list)


def as_json_schema(node: Any) -> Any:
    """An OpenAPI 3.0 schema as JSON Schema (draft 4): ``nullable`` becomes a type list."""
    if isinstance(node, list):
        return [as_json_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: as_json_schema(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable"):
        out["type"] = [node["type"], "null"]
    return out


_COMPONENTS = {"schemas": as_json_schema(SCHEMAS)}


def validator(schema: dict[str, Any]) -> jsonschema.Draft4Validator:
    """A validator of ``schema`` (a schema of the document, ``$ref``s resolved in it)."""
    root = {"allOf": [as_json_schema(schema)], "components": _COMPONENTS}
    return jsonschema.Draft4Validator(root)


def problems(schema: dict[str, Any], value: Any) -> list[str]:
    """Why ``value`` does not conform to ``schema`` (empty: it does)."""
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}"
            for e in validator(schema).iter_errors(value)]


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Every (method, path, operation) of the document."""
    for path, ops in OPENAPI["paths"].items():
        for method, op in ops.items():
            yield method, path, op


def response_schema(method: str, path: str, status: int, content_type: str) -> dict[str, Any]:
    """The schema the document gives an answer of ``status`` to ``method path``.

    Raises:
        AssertionError: the document does not describe that status or content type.
    """
    responses = OPENAPI["paths"][path][method]["responses"]
    assert str(status) in responses, (
        f"{method.upper()} {path}: status {status} is not documented ({sorted(responses)})")
    content = responses[str(status)].get("content", {})
    assert content_type in content, (
        f"{method.upper()} {path} {status}: content type {content_type} is not documented "
        f"({sorted(content)})")
    schema: dict[str, Any] = content[content_type]["schema"]
    return schema


def documented_errors(method: str, path: str, status: int) -> set[str]:
    """The ``error`` values the document names for ``status`` of ``method path``."""
    schema = response_schema(method, path, status, "application/json")
    codes: set[str] = set()
    for part in schema.get("allOf", []):
        codes |= set(part.get("properties", {}).get("error", {}).get("enum", []))
    return codes


# -- every example is valid


def _examples(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """(where, schema, value) for every example in ``node``: a media type's or parameter's
    against its schema, a schema's own against that schema."""
    if isinstance(node, list):
        for i, v in enumerate(node):
            yield from _examples(v, f"{where}/{i}")
        return
    if not isinstance(node, dict):
        return
    if "schema" in node:
        if "example" in node:
            yield where, node["schema"], node["example"]
        for name, ex in node.get("examples", {}).items():
            yield f"{where}/examples/{name}", node["schema"], ex["value"]
    elif "example" in node:
        yield where, node, node["example"]
    for k, v in node.items():
        if k not in ("example", "examples"):
            yield from _examples(v, f"{where}/{k}")


ALL_EXAMPLES = list(_examples(OPENAPI, "#"))


def test_every_request_body_has_an_example_that_says_why_it_is_stale() -> None:
    bodies = 0
    for method, path, op in operations():
        if "requestBody" not in op:
            continue
        bodies += 1
        media = op["requestBody"]["content"]["application/json"]
        (example,) = media.get("examples", {}).values() or [None]
        assert example is not None, f"{method} {path}: no example"
        assert "Shows the shape only" in example["description"], f"{method} {path}"
        assert set(example["x-refused-as-is"]) == {"status", "error"}, f"{method} {path}"
        where = f"#/paths/{path}/{method}/requestBody/content/application/json/examples/shape"
        assert where in {w for w, _, _ in ALL_EXAMPLES}, f"{where} is not validated"
    assert bodies == 7, f"{bodies} request bodies, not the 7 routes that take one"


@pytest.mark.parametrize(("where", "schema", "value"), ALL_EXAMPLES,
                         ids=[w for w, _, _ in ALL_EXAMPLES])
def test_every_example_validates_against_its_schema(where: str, schema: dict[str, Any],
                                                     value: Any) -> None:
    assert not problems(schema, value), f"example {where} breaks its schema"


def test_a_broken_example_is_caught() -> None:
    """The schemas are tight enough to refuse what the server refuses."""
    bid = SCHEMAS["PseudonymousBid"]
    good = EXAMPLES["PseudonymousBid"]
    assert not problems(bid, good)
    respelled = good["pseudonym"][:-2] + chr(ord(good["pseudonym"][-2]) + 1) + "="
    with pytest.raises(wire.WireError):  # what the server says of the respelling
        wire.b64d(respelled)
    for broken in ({**good, "pseudonym": respelled}, {**good, "token": good["pseudonym"]},
                   {**good, "period": "2026-11-22T21:45:00+00:00"}, {**good, "server": -1},
                   {**good, "extra": 1}, {k: v for k, v in good.items() if k != "token"},
                   {**good, "payload": good["payload"][4:]}):
        assert problems(bid, broken), f"the bid schema takes {broken}"


def test_the_examples_are_what_the_client_code_makes() -> None:
    assert openapi.make_examples() == EXAMPLES, (
        "the stored examples are not what make_examples() makes now: run "
        "python -m sealgrid.service.openapi --examples, then regenerate docs/openapi.json")


def _seeded(name: str) -> bytes:
    return wire.raw_public(Ed25519PrivateKey.from_private_bytes(
        openapi.example_seed(name)))


SIGNERS = {
    "TokenRequest": "household h0001", "HelloRequest": "household h0001",
    "Enrolment": "household h0001", "MeterReading": "meter h0001",
    "PseudonymousBid": "pseudonym", "AuthRequest": "pseudonym",
    "IssuerKey": "server 0", "TokenGrant": "server 0", "Receipt": "server 0",
    "OutputShares": "server 0", "Enrolled": "server 0", "ReadingReceipt": "server 0",
    "SegmentPlan": "server 0",
}


@pytest.mark.parametrize("name", sorted(SIGNERS))
def test_the_examples_are_canonical_and_signed_by_the_seeded_keys(name: str) -> None:
    example = EXAMPLES[name]
    cls = wire.MESSAGE_TYPES.get(example["type"]) or getattr(wire, example["type"])
    raw = wire.canonical_json(example)
    msg = wire.decode(cls, raw)  # refuses anything not canonical
    assert wire.verify(msg, _seeded(SIGNERS[name])), f"{name}: its signature does not verify"
    assert not wire.verify(msg, _seeded("server 1")), "verify takes any key"


def test_the_example_bid_carries_a_token_of_the_example_issuer_key() -> None:
    bid = wire.decode(wire.PseudonymousBid, wire.canonical_json(EXAMPLES["PseudonymousBid"]))
    issuer = voprf.Issuer.derive(openapi.example_seed("issuer"), bid.period.encode())
    assert issuer.verify_token(token_input(bid.period, bid.pseudonym), bid.token)
    assert wire.b64e(issuer.public) == EXAMPLES["TokenGrant"]["publics"][0]
    assert EXAMPLES["AuthRequest"]["subject"] == EXAMPLES["PseudonymousBid"]["pseudonym"]


# -- every field has its rule

#: Text fields the server takes or writes as any text: they have no pattern.
FREE_TEXT = {"message", "detail", "reason", "period (any text)"}


def _fields(schema: Any, where: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(where, name, schema) of every property and array item below ``schema``."""
    if not isinstance(schema, dict):
        return
    for name, prop in schema.get("properties", {}).items():
        yield f"{where}.{name}", name, prop
        yield from _fields(prop, f"{where}.{name}")
    if "items" in schema:
        yield f"{where}[]", "item", schema["items"]
        yield from _fields(schema["items"], f"{where}[]")
    for key in ("oneOf", "allOf"):
        for i, part in enumerate(schema.get(key, [])):
            yield from _fields(part, f"{where}/{key}{i}")


def _free(name: str, prop: dict[str, Any]) -> bool:
    text = prop.get("description", "")
    return name in FREE_TEXT or (name == "period" and (
        "refuses no text here" in text or "does not read it" in text or "as asked" in text))


ALL_FIELDS = [f for n, s in sorted(SCHEMAS.items()) for f in _fields(s, n)]


@pytest.mark.parametrize(("where", "name", "prop"), ALL_FIELDS, ids=[w for w, _, _ in ALL_FIELDS])
def test_every_field_has_its_rule(where: str, name: str, prop: dict[str, Any]) -> None:
    kind = prop.get("type")
    if kind == "string" and not _free(name, prop):
        assert "pattern" in prop or "enum" in prop, f"{where}: a string without a pattern"
    if kind == "integer":
        assert "minimum" in prop or "enum" in prop, f"{where}: an integer without a range"
    if prop.get("format") == "byte":
        assert "decodes to" in prop["description"], f"{where}: no decoded length said"
        assert "maxLength" in prop or "any length" in prop["description"], (
            f"{where}: no maximum length")
    if kind == "array":
        assert "items" in prop, f"{where}: an array of anything"


def test_every_message_refuses_unknown_fields() -> None:
    open_ = {"Health"}
    for name, schema in SCHEMAS.items():
        for part in schema.get("oneOf", [schema]):
            assert part.get("additionalProperties") is False or name in open_, name


def test_every_message_schema_has_the_fields_of_its_wire_message() -> None:
    import dataclasses

    for name, schema in SCHEMAS.items():
        for part in schema.get("oneOf", [schema]):
            kind = part.get("properties", {}).get("type", {}).get("enum", [None])[0]
            if kind is None:
                continue
            fields = {f.name for f in dataclasses.fields(getattr(wire, kind))}
            assert set(part["properties"]) == fields | {"type", "v"}, name


def test_the_canonical_json_rule_is_where_a_generator_sees_it() -> None:
    info = OPENAPI["info"]["description"]
    assert openapi.CANONICAL_JSON in info and openapi.SIGNED in info
    signed_bodies = 0
    for method, path, op in operations():
        body = op.get("requestBody")
        if body is None:
            continue
        signed_bodies += 1
        for text in (body["description"],
                     SCHEMAS[body["content"]["application/json"]["schema"]["$ref"]
                             .rsplit("/", 1)[1]]["description"]):
            assert openapi.CANONICAL_JSON in text, f"{method} {path}: no canonical JSON rule"
            assert openapi.SIGNED in text, f"{method} {path}: no signing rule"
    assert signed_bodies == 7, f"{signed_bodies} signed request bodies, not 7"


def test_every_documented_refusal_is_under_its_status() -> None:
    for method, path, op in operations():
        for status, response in op["responses"].items():
            if "application/json" not in response.get("content", {}) or status.startswith("2"):
                continue
            for code in documented_errors(method, path, int(status)):
                if code in {r.value for r in Reason}:
                    assert openapi.REFUSAL_STATUS.get(Reason(code), 400) == int(status), (
                        f"{method} {path}: {code} under {status}")


# -- the patterns are the server's rules

_SIZES = sorted({32, 64, 16, 8, 0, 1, 2, 3, 4, 5, 31, 33, 94})


@FAST
@given(data=st.binary(max_size=100), size=st.sampled_from(_SIZES))
def test_a_base64_pattern_takes_exactly_the_canonical_text_of_its_length(
        data: bytes, size: int) -> None:
    pattern = re.compile(b64_pattern(size))
    text = wire.b64e(data)
    assert bool(pattern.fullmatch(text)) == (len(data) == size), (size, text)
    assert len(text) == b64_length(len(data))


@FAST
@given(size=st.sampled_from(_SIZES), data=st.data())
def test_text_a_base64_pattern_takes_is_what_the_server_decodes(size: int,
                                                                 data: st.DataObject) -> None:
    text = data.draw(st.from_regex(b64_pattern(size), fullmatch=True))
    assert len(wire.b64d(text)) == size  # raises for a spelling that is not canonical


@FAST
@given(data=st.binary(max_size=300), bits=st.integers(1, 15))
def test_a_respelled_base64_text_matches_no_pattern(data: bytes, bits: int) -> None:
    """Setting the unused low bits of the last character: the server refuses it, and so
    does every pattern."""
    text = wire.b64e(data)
    if not text.endswith("="):
        return
    body = text.rstrip("=")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    unused = 0b1111 if text.endswith("==") else 0b11
    last = alphabet[alphabet.index(body[-1]) | (bits & unused)]
    if last == body[-1]:
        return
    respelled = body[:-1] + last + text[len(body):]
    with pytest.raises(wire.WireError):
        wire.b64d(respelled)
    for pattern in (b64_pattern(len(data)), b64_pattern(step=1), b64_pattern(step=8),
                    b64_pattern(step=8, offset=28)):
        assert not re.fullmatch(pattern, respelled), pattern


@FAST
@given(data=st.binary(max_size=200), step=st.sampled_from([1, 8]),
       offset=st.sampled_from([0, 4, 28]))
def test_a_step_pattern_takes_the_lengths_of_its_progression(data: bytes, step: int,
                                                             offset: int) -> None:
    matched = bool(re.fullmatch(b64_pattern(step=step, offset=offset), wire.b64e(data)))
    assert matched == ((len(data) - offset) % step == 0), (len(data), step, offset)


_SCHEDULES = st.sampled_from([Schedule(900), Schedule(1), Schedule(3600), Schedule(7)])


@FAST
@given(schedule=_SCHEDULES, seconds=st.integers(-62_135_596_800 + 3 * 3600,
                                                253_402_300_799 - 2 * 3600))
def test_every_period_a_server_names_matches_the_period_pattern(schedule: Schedule,
                                                                seconds: int) -> None:
    t = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=seconds)
    name = schedule.period_id(schedule.start_of(t))
    assert re.fullmatch(PERIOD_PATTERN, name), name
    assert schedule.parse_period(name)  # it is a period


@FAST
@given(text=st.from_regex(PERIOD_PATTERN, fullmatch=True))
def test_text_the_period_pattern_takes_is_a_time_or_refused_wrong_period(text: str) -> None:
    """What matches is a period's name, or a date that does not exist (day 31 of April…), or
    one whose gate closure or end cannot be named (in years 1 and 9999): all refused
    wrong_period like any other name that is not a period."""
    schedule = Schedule(1)
    try:
        start = schedule.parse_period(text)
    except ValueError:
        try:
            t = dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
        except ValueError:
            return  # not a date
        assert t.year in (1, 9999), f"{text} is refused, but is a period"
        return
    assert iso(start) == text


@FAST
@given(t=st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31),
                      timezones=st.just(dt.UTC)))
def test_every_time_a_server_writes_matches_the_time_pattern(t: dt.datetime) -> None:
    assert re.fullmatch(TIME_PATTERN, iso(t)), iso(t)


@FAST
@given(status=st.sampled_from(["cleared", "no_trade", "failed"]),
       level=st.none() | st.integers(0, 10**6), reason=st.text(max_size=30),
       invalid=st.integers(0, 10**6),
       price=st.none() | st.decimals(allow_nan=False, allow_infinity=False, places=3))
def test_every_outcome_matches_the_outcome_and_decimal_patterns(
        status: str, level: int | None, reason: str, invalid: int, price: Decimal | None
) -> None:
    try:
        text = wire.encode(wire.Outcome(status, level, None if price is None else str(price),
                                        invalid, reason)).decode()
    except UnicodeEncodeError:  # a lone surrogate: never made by the server
        return
    assert re.fullmatch(openapi.OUTCOME_PATTERN, text), text
    if price is not None:
        assert re.fullmatch(openapi.DECIMAL_PATTERN, str(price)), str(price)
    outcome = SCHEMAS["PeriodStatement"]["properties"]["outcome"]
    assert not problems(outcome, text)
    assert not problems(SCHEMAS["Outcome"], json.loads(text))


def test_the_id_patterns_are_the_registrys() -> None:
    from sealgrid.service.keys import id_problem

    for good in ("h0001", "a", "x" * 64, "A.b_c-9", "tso"):
        assert id_problem(good) is None
        assert re.fullmatch(openapi.HOUSEHOLD["pattern"], good)
    for bad in ("", "-a", "x" * 65, "a b", "é", "@s1"):
        assert id_problem(bad) is not None
        assert not re.fullmatch(openapi.HOUSEHOLD["pattern"], bad)
    assert re.fullmatch(openapi.BIDDER["pattern"], "@s1")
