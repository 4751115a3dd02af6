"""The OpenAPI 3 description of the server's HTTP API; assumes the messages of ``wire``.

One source: the server serves it at ``/openapi.json`` and docs/openapi.json is a copy
(a test keeps them equal). Every field carries the rule the server applies to it — base64
fields their pattern and decoded length, periods their exact spelling, closed sets their
enum — so that a client generated from the document can make requests the server takes.

The examples (:data:`EXAMPLES`) are made by the client code with keys derived from public
seeds (:func:`make_examples`, a test checks they are what it makes). Regenerate:

* ``python -m sealgrid.service.openapi --examples`` rewrites :data:`EXAMPLES` in this file;
* ``python -m sealgrid.service.openapi docs/openapi.json`` writes the committed copy.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from sealgrid.mechanism.bids import Reason
from sealgrid.protocol import encoding
from sealgrid.protocol.billing import MAX_SETTLED_WH, ClaimLayout
from sealgrid.service.config import MarketConfig
from sealgrid.service.keys import DEFAULT_SUPPLIERS, ID_PATTERN, SUPPLIER_PREFIX, TSO_ID

# --------------------------------------------------------------------------- the text rules

#: The defaults that bound some fields (each server's own values are in GET /v1/info).
_DEFAULT = MarketConfig()
DEFAULT_HORIZON = _DEFAULT.horizon_periods
DEFAULT_MAX_PAYLOAD_BYTES = _DEFAULT.limits.max_payload_bytes
#: The bid payload (``protocol.encoding.BidShares``): a header, then 8 bytes per field element
#: of the market's layout (94 elements in the default market: 401 price levels, 3 suppliers,
#: 10,000 Wh; 8 in the smallest).
PAYLOAD_HEADER_BYTES = len(
    encoding.BidShares(0, encoding.Layout(1, 1, 1), np.zeros(0, dtype="<u8")).to_bytes())
MIN_PAYLOAD_ELEMENTS = encoding.Layout(1, 1, 1).width
DEFAULT_PAYLOAD_BYTES = PAYLOAD_HEADER_BYTES + 8 * encoding.Layout.of(
    _DEFAULT.market(DEFAULT_SUPPLIERS)).width
#: A meter reading: 8 bytes per element of the claim (``protocol.billing.ClaimLayout``), from
#: a 1 Wh market to the largest one the settlement takes.
CLAIM_ELEMENTS = (ClaimLayout.of(1).width, ClaimLayout.of(MAX_SETTLED_WH).width)
DEFAULT_CLAIM_ELEMENTS = ClaimLayout.of(_DEFAULT.max_quantity_wh).width

CANONICAL_JSON = (
    "Canonical JSON: every message body is sent as exactly the bytes Python's "
    "`json.dumps(message, sort_keys=True, separators=(',', ':'), ensure_ascii=False)` "
    "encodes to UTF-8: the keys of every object sorted by Unicode code point (all keys here "
    "are ASCII), no whitespace anywhere, `,` and `:` as separators, text as UTF-8 with only "
    "`\\\"`, `\\\\`, `\\b`, `\\f`, `\\n`, `\\r`, `\\t` and `\\u00xx` (lowercase hex, for the "
    "other control characters below U+0020) escaped and nothing else (no `\\u` escape of "
    "non-ASCII text, no `\\/`), integers without sign `+`, fraction or exponent, no trailing "
    "newline, every field present (none defaults), `type` the message's name and `v` the "
    "wire version 1. The server decodes the body and re-encodes it: any other spelling of "
    "the same JSON is refused 400 malformed, so one message has exactly one byte form. A "
    "generic JSON encoder puts spaces after `,` and `:`: a generated client needs a "
    "serialiser that writes this form."
)
SIGNED = (
    "Signature: Ed25519 (RFC 8032, 64 bytes) over the bytes `sealgrid/v1/` + the message's "
    "`type` + `\\n` (one line feed) + the canonical JSON of the message without its "
    "`signature` field (`type` and `v` included), so a signature on one type never passes "
    "as another."
)
BASE64 = (
    "Bytes are standard base64 (RFC 4648 §4: `A-Z a-z 0-9 + /`, `=` padding to a multiple "
    "of 4 characters, no line breaks, not the URL-safe alphabet) in their one canonical "
    "spelling: the unused low bits of the last character before `=` are zero. Each field's "
    "pattern admits exactly the canonical spellings of its lengths; its description gives "
    "the decoded length."
)
PERIODS = (
    "A period is named by its start, `YYYY-MM-DDTHH:MM:SSZ` (ISO 8601 / RFC 3339 in UTC, to "
    "the second, with `Z`; no fraction, no offset, exactly 20 characters), a whole multiple "
    "of `period_seconds` (GET /v1/info; 900 by default, so minutes 00, 15, 30 or 45 and "
    "seconds 00) since 1970-01-01T00:00:00Z, whose gate closure and end fall in years 0001 "
    "to 9999. Anything else is refused 422 wrong_period."
)

_B = "[A-Za-z0-9+/]"
#: The last character before ``==`` (1 byte left: 2 bits used) or ``=`` (2 bytes: 4 bits).
_LAST = {1: "[AQgw]", 2: "[AEIMQUYcgkosw048]"}


def b64_length(size: int) -> int:
    """Characters of the base64 text of ``size`` bytes."""
    return 4 * math.ceil(size / 3)


def _exact(size: int) -> str:
    """The canonical base64 of ``size`` bytes, unanchored."""
    free = 4 * (size // 3) + size % 3
    body = f"{_B}{{{free}}}" if free else ""
    rest = size % 3
    return body + (_LAST[rest] + "=" * (3 - rest) if rest else "")


def b64_pattern(*sizes: int, step: int | None = None, offset: int = 0) -> str:
    """The pattern of the canonical base64 text of bytes of one of ``sizes``, or (with
    ``step``) of any length ``offset + k·step`` (every length for ``step=1``)."""
    if step is None:
        alternatives = sorted({_exact(s) for s in sizes}, key=len)
        inner = alternatives[0] if len(alternatives) == 1 else f"(?:{'|'.join(alternatives)})"
        return f"^{inner}$"
    group = math.lcm(3, step)
    tails = sorted({(offset + k * step) % group for k in range(group)})
    alternatives = [_exact(r) for r in tails]
    if alternatives == [""]:
        return f"^(?:{_B}{{{4 * group // 3}}})*$"
    ending = "|".join(a for a in alternatives if a)
    optional = "?" if "" in alternatives else ""
    return f"^(?:{_B}{{{4 * group // 3}}})*(?:{ending}){optional}$"


def b64(what: str, *sizes: int, step: int | None = None, offset: int = 0,
        min_size: int | None = None, max_size: int | None = None,
        length: str | None = None) -> dict[str, Any]:
    """A base64 field: ``format: byte``, its pattern and lengths, and its decoded length
    (``length``, or said from ``sizes``) in the description."""
    high: int | None
    if sizes:
        low, high = min(sizes), max(sizes)
        said = " or ".join(f"{s} bytes ({b64_length(s)} characters)" for s in sorted(sizes))
    else:
        low, high = (min_size or 0), max_size
        said = length or "any length"
    out: dict[str, Any] = {
        "type": "string",
        "format": "byte",
        "pattern": b64_pattern(*sizes, step=step, offset=offset),
        "description": f"{what}. Canonical standard base64; decodes to {said}.",
    }
    if low:
        out["minLength"] = b64_length(low)
    if high is not None:
        out["maxLength"] = b64_length(high)
    return out


def key(what: str) -> dict[str, Any]:
    """A raw 32-byte Ed25519 public key."""
    return b64(f"{what} (raw Ed25519 public key)", 32)


def digest(what: str) -> dict[str, Any]:
    """A SHA-256 digest."""
    return b64(f"SHA-256 of {what}", 32)


def signature(by: str) -> dict[str, Any]:
    """An Ed25519 signature (see :data:`SIGNED`)."""
    return b64(f"Ed25519 signature by {by}, over `sealgrid/v1/` + type + `\\n` + the "
               "canonical JSON without this field", 64)


_YEAR = "(?:[0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)"
_DAY = f"{_YEAR}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
_CLOCK = "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
#: A period's name (the server's ``schedule.iso`` of a period boundary).
PERIOD_PATTERN = f"^{_DAY}T{_CLOCK}Z$"
#: A time the server writes (``schedule.iso``: microseconds only when there are any).
TIME_PATTERN = f"^{_DAY}T{_CLOCK}(?:\\.[0-9]{{6}})?Z$"
#: An id of the registry (made by ``sealgrid keygen``, :data:`sealgrid.service.keys.ID_PATTERN`).
ID = ID_PATTERN.pattern
#: A decimal number as Python's ``str(Decimal)`` writes a finite one.
DECIMAL_PATTERN = "^-?[0-9]+(?:\\.[0-9]+)?(?:E[+-][0-9]+)?$"

PERIOD: dict[str, Any] = {
    "type": "string",
    "pattern": PERIOD_PATTERN,
    "minLength": 20,
    "maxLength": 20,
    "description": "A trading period, named by its start. " + PERIODS,
    "example": "2026-11-22T21:45:00Z",
}
TIME: dict[str, Any] = {
    "type": "string",
    "format": "date-time",
    "pattern": TIME_PATTERN,
    "description": "A time in UTC as the server writes it: `YYYY-MM-DDTHH:MM:SS` with six "
    "digits of microseconds only when they are not zero, then `Z`.",
}
HOUSEHOLD: dict[str, Any] = {
    "type": "string",
    "pattern": f"^{ID}$",
    "description": "A household's registry id (made by `sealgrid keygen`: a letter or digit, "
    "then letters, digits, `.`, `_` or `-`, at most 64 characters, not ending in `.meter`). "
    "An id the server's registry does not hold is refused 401 bad_signature.",
    "example": "h0001",
}
BIDDER: dict[str, Any] = {
    **HOUSEHOLD,
    "pattern": f"^{re.escape(SUPPLIER_PREFIX)}?{ID}$",
    "description": "A bidder's registry id: a household id (`sealgrid keygen`: a letter or "
    "digit, then letters, digits, `.`, `_` or `-`, at most 64 characters), or `@` + a "
    "supplier id for a supplier bidding itself. An id the server's registry does not hold is "
    "refused 401 bad_signature.",
}
SUPPLIER: dict[str, Any] = {
    "type": "string",
    "pattern": f"^{ID}$",
    "description": "A supplier's registry id.",
}
NONCE = b64("A challenge from POST /v1/challenge, unused and unexpired (one-time, valid "
            "`challenge_ttl_seconds`, 60 by default): 16 bytes from a server of one process, "
            "32 from one of several workers. Any other is refused 409 replayed", 16, 32)


def server_index(request: bool) -> dict[str, Any]:
    """A computation server's index."""
    if request:
        return {"type": "integer", "minimum": 0,
                "description": "The index of the server this message is for: the `party` of "
                "its GET /v1/info. Another server's index is refused 400 malformed."}
    return {"type": "integer", "minimum": 0, "description": "The index of the server that "
            "signed this message (its `party`)."}


def whole(description: str, minimum: int = 0, maximum: int | None = None) -> dict[str, Any]:
    """An integer in a range."""
    out: dict[str, Any] = {"type": "integer", "minimum": minimum, "description": description}
    if maximum is not None:
        out["maximum"] = maximum
    return out


def _msg(name: str, props: dict[str, Any], doc: str, *, signed: bool = True,
         request: bool = False) -> dict[str, Any]:
    """A wire message: every field required, no other field, ``type`` and ``v``."""
    rules = [CANONICAL_JSON] + ([SIGNED] if signed else [])
    if request:
        doc = f"{doc} Send it as its canonical JSON. " + " ".join(rules)
    return {
        "type": "object",
        "description": doc,
        "required": sorted(["type", "v", *props]),
        "additionalProperties": False,
        "properties": {
            "type": {"type": "string", "enum": [name], "description": "the message's name"},
            "v": {"type": "integer", "enum": [1], "description": "the wire version"},
            **props,
        },
    }


ROLES = ["household", "supplier", "operator", "statement", "bill", "dso", "tso",
         "supplier_period"]
OUTPUT_STATUSES = ["pending", "cleared", "no_trade", "excluded", "not_on_every_server",
                   "invalid", "failed", "unknown", "billed", "settled"]
#: The canonical JSON of an Outcome message (its keys in sorted order).
OUTCOME_PATTERN = (
    '^\\{"invalid_bids":[0-9]+,"level":(?:null|[0-9]+),"price":(?:null|"[-+.0-9E]+"),'
    '"reason":"(?:[^"\\\\]|\\\\.)*","status":"(?:cleared|no_trade|failed)",'
    '"type":"Outcome","v":1\\}$'
)

_CYCLE = {**PERIOD, "description": "The billing cycle, named by its first period: a period "
          "that starts a cycle of `cycle_periods` periods counted from 1970-01-01T00:00:00Z "
          "(else 422 wrong_period). " + PERIODS}
_LOOKED_UP = {"type": "string", "description": "The period. " + PERIODS + " The server looks "
              "the name up and answers a name it holds nothing of with status unknown or "
              "pending: it refuses no text here."}
#: Per role of an AuthRequest: the subject, the period and whose key signs it.
OUTPUT_ROLES: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "household": (key("The pseudonym that bid, in canonical base64 (not base64: 400 "
                      "malformed)"), _LOOKED_UP, "the pseudonym key"),
    "supplier": (SUPPLIER, _LOOKED_UP, "the supplier's key"),
    "operator": ({**SUPPLIER, "description": "A grid operator's registry id."}, _LOOKED_UP,
                 "the operator's key"),
    "statement": (HOUSEHOLD, _CYCLE, "the household's long-term key"),
    "bill": (SUPPLIER, _CYCLE, "the supplier's key"),
    "dso": ({**SUPPLIER, "description": "A region's registry id (its DSO)."}, _CYCLE,
            "the region's DSO key"),
    "tso": ({"type": "string", "enum": [TSO_ID], "description": "the TSO"}, _CYCLE,
            "the TSO's key"),
    "supplier_period": (SUPPLIER, PERIOD, "the supplier's key"),
}
_SUBJECT = {
    "type": "string",
    "pattern": f"^(?:{_exact(32)}|{ID})$",
    "description": "as asked: a base64 pseudonym (role household) or a registry id",
}


def _auth_request() -> dict[str, Any]:
    """One AuthRequest schema per role (the subject, period and signer depend on it)."""
    branches = []
    for role, (subject, period, signer) in OUTPUT_ROLES.items():
        branch = _msg("AuthRequest", {
            "role": {"type": "string", "enum": [role]},
            "subject": subject,
            "period": period,
            "nonce": NONCE,
            "signature": signature(signer),
        }, f"Role {role}.")
        branch["title"] = f"AuthRequest ({role})"
        branches.append(branch)
    return {
        "description": "A signed request for protected output: `role` says what is asked for "
        f"(one of {', '.join(OUTPUT_ROLES)}; another: 400 malformed), `subject` whose, "
        "`period` which period or billing cycle (docs/api.md, POST /v1/outputs); one schema "
        "per role. Send it as its canonical JSON. " + CANONICAL_JSON + " " + SIGNED,
        "oneOf": branches,
    }


SCHEMAS: dict[str, Any] = {
    "IssuerKey": _msg(
        "IssuerKey",
        {
            "server": server_index(False),
            "period": PERIOD,
            "public": b64("The period's ristretto255 public key (RFC 9497 SerializeElement)", 32),
            "signature": signature("the server's signing key"),
        },
        "A server's issuer key for one period (RFC 9497 VOPRF, ristretto255-SHA512).",
    ),
    "TokenRequest": _msg(
        "TokenRequest",
        {
            "household": BIDDER,
            "nonce": NONCE,
            "periods": {
                "type": "array", "items": PERIOD, "minItems": 1,
                "maxItems": DEFAULT_HORIZON, "uniqueItems": True,
                "description": "Distinct periods still open for bids (before their gate "
                "closure, at most `horizon_periods` ahead: 96 by default), for which this "
                "household has no token yet. A period named twice: 400 malformed; one closed: "
                "422 late; one not open: 422 wrong_period; one whose token it has: 429 "
                "too_frequent.",
            },
            "blinded": {
                "type": "array", "minItems": 1, "maxItems": DEFAULT_HORIZON,
                "items": b64("RFC 9497 Blind of the token input `sealgrid/v1/token\\n` + "
                             "period + `\\n` + the 32-byte pseudonym: a canonical ristretto255 "
                             "element other than the identity (else 400 malformed)", 32),
                "description": "One blinded element per period, in the order of `periods` "
                "(other counts: 400 malformed).",
            },
            "signature": signature("the household's long-term key (a supplier's key for "
                                   "`@` + its id)"),
        },
        "A household's request for its pseudonyms' tokens (once per household and period, "
        "all or nothing).",
        request=True,
    ),
    "TokenGrant": _msg(
        "TokenGrant",
        {
            "server": server_index(False),
            "periods": {"type": "array", "items": PERIOD, "minItems": 1, "uniqueItems": True,
                        "description": "the periods, as asked"},
            "publics": {"type": "array", "minItems": 1,
                        "items": b64("The period's issuer public key used", 32),
                        "description": "per period, the issuer public key used"},
            "evaluated": {"type": "array", "minItems": 1,
                          "items": b64("The blinded element times the period key", 32),
                          "description": "per period, the evaluated element"},
            "proofs": {"type": "array", "minItems": 1,
                       "items": b64("The DLEQ proof c || s of RFC 9497", 64),
                       "description": "per period, the proof that `evaluated` used the key in "
                       "`publics`"},
            "signature": signature("the server's signing key"),
        },
        "The evaluations, the period keys they used and their proofs.",
    ),
    "PseudonymousBid": _msg(
        "PseudonymousBid",
        {
            "period": PERIOD,
            "server": server_index(True),
            "pseudonym": key("A fresh key for this period, the same for every server"),
            "token": b64("This server's VOPRF output on the token input of (period, "
                         "pseudonym): RFC 9497 Finalize of its grant (a token that does not "
                         "verify: 401 bad_signature, an empty one 401 unsigned)", 64),
            "payload": b64(
                "This server's share payload (`sealgrid.protocol.encoding.BidShares`): a "
                f"{PAYLOAD_HEADER_BYTES}-byte header (magic, version, this server's index, the "
                "market's levels, suppliers and maximum quantity, one row), then the field "
                "elements of the market's layout, 8 bytes each, little-endian, each below "
                "2^64 − 189. A "
                "payload of another length, server or market: 400 malformed",
                step=8, offset=PAYLOAD_HEADER_BYTES,
                min_size=PAYLOAD_HEADER_BYTES + 8 * MIN_PAYLOAD_ELEMENTS,
                max_size=DEFAULT_MAX_PAYLOAD_BYTES,
                length=f"{PAYLOAD_HEADER_BYTES} + 8·width bytes ({DEFAULT_PAYLOAD_BYTES} bytes, "
                f"{b64_length(DEFAULT_PAYLOAD_BYTES)} characters, in the default market), at "
                f"most `max_payload_bytes` ({DEFAULT_MAX_PAYLOAD_BYTES} by default)",
            ),
            "signature": signature("the pseudonym key (an empty one: 401 unsigned)"),
        },
        "One bid share for one server; names no household. No challenge: its token buys one "
        "bid.",
        request=True,
    ),
    "Receipt": _msg(
        "Receipt",
        {
            "server": server_index(False),
            "period": PERIOD,
            "pseudonym": key("The bid's pseudonym"),
            "payload_sha256": digest("the bid's payload (decoded)"),
            "submission_sha256": digest("the PseudonymousBid's bytes as sent"),
            "signature": signature("the server's signing key"),
        },
        "The server's signed promise that it has durably stored the bid. No time finer than"
        " the period and no sequence number: nothing in it tells when or in what order the bid"
        " arrived.",
    ),
    "Enrolment": _msg(
        "Enrolment",
        {
            "household": BIDDER,
            "server": server_index(True),
            "share": b64("The credential share: one field element below 2^64 − 189, "
                         "little-endian (another length or value: 400 malformed)", 8),
            "signature": signature("the bidder's registered key"),
        },
        "A household's share of its settlement credential for one server.",
        request=True,
    ),
    "Enrolled": _msg(
        "Enrolled",
        {
            "server": server_index(False),
            "household": BIDDER,
            "share_sha256": digest("the enrolled share (decoded)"),
            "signature": signature("the server's signing key"),
        },
        "A server's acknowledgement of an enrolled credential share.",
    ),
    "MeterReading": _msg(
        "MeterReading",
        {
            "household": HOUSEHOLD,
            "server": server_index(True),
            "period": {**PERIOD, "description": "The period read: ended (else 400 too_early) "
                       "and before its deadline, its end + `reading_grace_periods` periods "
                       "(else 422 late). " + PERIODS},
            "shares": b64(
                "This server's shares of the household's claim "
                "(`sealgrid.protocol.billing.ClaimLayout`): field elements below 2^64 − 189, "
                "8 bytes each, little-endian, as many as the layout's width (another count or "
                "value: 400 malformed)",
                step=8, min_size=8 * CLAIM_ELEMENTS[0], max_size=8 * CLAIM_ELEMENTS[1],
                length=f"8·width bytes: {8 * DEFAULT_CLAIM_ELEMENTS} bytes "
                f"({b64_length(8 * DEFAULT_CLAIM_ELEMENTS)} characters) in the default market "
                f"of {_DEFAULT.max_quantity_wh} Wh, {8 * CLAIM_ELEMENTS[0]} to "
                f"{8 * CLAIM_ELEMENTS[1]} bytes in any market",
            ),
            "signature": signature("the household's meter key"),
        },
        "A smart meter's signed reading of one ended period, as this server's shares.",
        request=True,
    ),
    "ReadingReceipt": _msg(
        "ReadingReceipt",
        {
            "server": server_index(False),
            "period": PERIOD,
            "household": HOUSEHOLD,
            "shares_sha256": digest("the reading's shares (decoded)"),
            "signature": signature("the server's signing key"),
        },
        "A server's receipt for a stored reading.",
    ),
    "SettlementSet": _msg(
        "SettlementSet",
        {
            "server": server_index(False),
            "period": PERIOD,
            "readings": {"type": "array", "items": HOUSEHOLD, "uniqueItems": True,
                         "description": "households whose reading it holds, sorted"},
            "enrolled": {"type": "array", "items": BIDDER, "uniqueItems": True,
                         "description": "bidders enrolled before the deadline, sorted"},
            "signature": signature("the server's signing key"),
        },
        "A server's households with a reading of a period, and those enrolled (servers only).",
    ),
    "AuthRequest": _auth_request(),
    "HelloRequest": _msg(
        "AuthRequest",
        {
            "role": {"type": "string", "enum": ["household"],
                     "description": "household (another role: 401 bad_signature)"},
            "subject": HOUSEHOLD,
            "period": {"type": "string", "example": "",
                       "description": "empty by convention (signed; the server does not "
                       "read it)"},
            "nonce": NONCE,
            "signature": signature("the household's long-term key"),
        },
        "An AuthRequest proving that a household holds its registered key, now.",
        request=True,
    ),
    "Registered": {
        "type": "object",
        "description": "The answer to a household's hello (plain JSON, unsigned).",
        "required": ["household", "registered", "server"],
        "additionalProperties": False,
        "properties": {
            "server": server_index(False),
            "household": HOUSEHOLD,
            "registered": {"type": "boolean", "enum": [True]},
        },
    },
    "Challenge": {
        "type": "object",
        "description": "A fresh one-time challenge (plain JSON, unsigned).",
        "required": ["expires", "nonce"],
        "additionalProperties": False,
        "properties": {
            "nonce": b64("The challenge to sign into the next request: one-time, until "
                         "`expires`. 16 bytes from a server of one process, 32 from one of "
                         "several workers", 16, 32),
            "expires": {**TIME, "description": "When it expires. " + TIME["description"]},
        },
    },
    "OutputShares": _msg(
        "OutputShares",
        {
            "server": server_index(False),
            "period": {"type": "string", "description": "the period or cycle, as asked"},
            "role": {"type": "string", "enum": ROLES, "description": "as asked"},
            "subject": _SUBJECT,
            "status": {
                "type": "string",
                "enum": OUTPUT_STATUSES,
                "description": "a result: pending, cleared, no_trade, not_on_every_server "
                "(excluded before this release), invalid, failed, unknown; a billing output: "
                "pending, billed; a supplier_period: pending, settled",
            },
            "shares": b64("This server's share of the output: a protocol OutputShare, or raw "
                          "little-endian u64 field elements for a billing output; empty "
                          "without one", step=1),
            "public": {"type": "string", "pattern": "^(?:\\{.*\\})?$",
                       "description": "canonical JSON of the public outcome (an Outcome "
                       "message), or of a billing output's names and status; empty when there "
                       "is none yet"},
            "signature": signature("the server's signing key"),
        },
        "This server's share of one protected output, signed.",
    ),
    "BidSet": _msg(
        "BidSet",
        {
            "server": server_index(False),
            "period": PERIOD,
            "pseudonyms": {"type": "array", "items": key("An accepted pseudonym"),
                           "uniqueItems": True, "description": "sorted"},
            "segments": {"type": "array", "uniqueItems": True,
                         "items": b64("A segment validated here while the period was open: "
                                      "its index (4 bytes, big-endian) and the SHA-256 of "
                                      "its members and its challenge seed", 36),
                         "description": "by index (docs/service.md, Streaming)"},
            "signature": signature("the server's signing key"),
        },
        "A server's accepted pseudonyms of a closed period (server to server).",
    ),
    "BidSetDigest": _msg(
        "BidSetDigest",
        {
            "server": server_index(False),
            "period": PERIOD,
            "count": whole("how many pseudonyms the bid set holds"),
            "sha256": digest("the bid set's pseudonyms, sorted and concatenated"),
            "segments": {"type": "array", "uniqueItems": True,
                         "items": b64("A segment validated here while the period was open, as "
                                      "the BidSet lists it", 36),
                         "description": "by index, as in the BidSet"},
            "signature": signature("the server's signing key"),
        },
        "A server's bid set of a closed period as its count and digest (server to server): a "
        "peer whose own set has the same fetches nothing more.",
    ),
    "PendingSet": _msg(
        "PendingSet",
        {
            "server": server_index(False),
            "period": PERIOD,
            "next_segment": whole("the index this server's next segment of the period "
                                  "takes: how many it has recorded"),
            "pseudonyms": {"type": "array", "items": key("A stored pseudonym"),
                           "uniqueItems": True,
                           "description": "its bids stored here, in no segment yet; "
                           "sorted"},
            "signature": signature("the server's signing key"),
        },
        "A server's stored bids of an open period that no segment holds yet (to the leader).",
    ),
    "SegmentPlan": _msg(
        "SegmentPlan",
        {
            "server": {"type": "integer", "enum": [0], "description": "the leader, server "
                       "0, which signs it (another index: 401 bad_signature)"},
            "period": PERIOD,
            "index": whole("the segment's index in its period: the `next_segment` of every "
                           "server's pending set (another: 422 wrong_period)"),
            "pseudonyms": {"type": "array", "items": key("A member"), "uniqueItems": True,
                           "description": "bids of the period every server holds in no "
                           "segment yet, sorted (else 400 malformed)"},
            "signature": signature("server 0's signing key"),
        },
        "The leader's segment of an open period, validated jointly before its gate (server "
        "0 to the others).",
        request=True,
    ),
    "SegmentAccepted": {
        "type": "object",
        "description": "A segment plan recorded; its validation has started (plain JSON).",
        "required": ["accepted"],
        "additionalProperties": False,
        "properties": {"accepted": {"type": "boolean", "enum": [True]}},
    },
    "PeriodStatement": _msg(
        "PeriodStatement",
        {
            "server": server_index(False),
            "period": PERIOD,
            "bid_count": whole("bids in the agreed set"),
            "bidset_sha256": digest("the agreed pseudonyms, sorted and concatenated"),
            "excluded": {"type": "array", "items": key("A pseudonym that missed a server"),
                         "uniqueItems": True,
                         "description": "pseudonyms that did not reach every server"},
            "status": {"type": "string", "enum": ["cleared", "failed"]},
            "outcome": {"type": "string", "pattern": OUTCOME_PATTERN,
                        "description": "canonical JSON of the public Outcome message"},
            "gate_closure": {**PERIOD, "description": "when bidding closed: the start of "
                             "the period two before it"},
            "issuer_sha256": b64("SHA-256 of `sealgrid/v2/issuer-key\\n` + the period's "
                                 "issuer public key; empty when the server made none", 0, 32),
            "signature": signature("the server's signing key"),
        },
        "A server's signed account of one period.",
    ),
    "Outcome": _msg(
        "Outcome",
        {
            "status": {"type": "string", "enum": ["cleared", "no_trade", "failed"]},
            "level": {"type": "integer", "minimum": 0, "nullable": True,
                      "description": "clearing level k* on the price grid (null: no trade)"},
            "price": {"type": "string", "pattern": DECIMAL_PATTERN, "nullable": True,
                      "description": "clearing price, a decimal on the grid (null: no trade)"},
            "invalid_bids": whole("bids the servers' joint validation refused"),
            "reason": {"type": "string", "description": "why a failed period failed "
                       "(empty otherwise)"},
        },
        "The public outcome of one period (no quantity: amounts leave as shares); its "
        "canonical JSON is a statement's outcome and an output's public. Unsigned.",
        signed=False,
    ),
    "MarketInfo": _msg(
        "MarketInfo",
        {
            "party": whole("this server's index"),
            "servers": whole("the number of computation servers", 1),
            "signing_key": key("This server's signing key"),
            "wire_version": {"type": "integer", "enum": [1]},
            "now": {**TIME, "description": "the server's clock. " + TIME["description"]},
            "period_seconds": whole("the period length", 1),
            "first_open_period": {**PERIOD, "description": "the earliest period still open "
                                  "for bids"},
            "max_payload_bytes": whole("the largest bid payload taken", 1),
            "rate_limit": {
                "type": "object",
                "required": ["requests", "window_seconds"],
                "additionalProperties": False,
                "properties": {"requests": whole("signed token requests per household", 1),
                               "window_seconds": whole("per window of this length", 1)},
            },
            "suppliers": {"type": "array", "items": SUPPLIER, "uniqueItems": True},
            "price_grid": {
                "type": "object",
                "required": ["ceiling", "floor", "tick"],
                "additionalProperties": False,
                "properties": {"floor": {"type": "string", "pattern": DECIMAL_PATTERN},
                               "ceiling": {"type": "string", "pattern": DECIMAL_PATTERN},
                               "tick": {"type": "string", "pattern": DECIMAL_PATTERN}},
                "description": "decimal strings, currency per kWh",
            },
            "max_quantity_wh": whole("the largest bid quantity", 1, MAX_SETTLED_WH),
            "min_accepted_per_side": whole(
                "accepted bids each side needs for a period to trade", 1),
            "stats": {
                "type": "object",
                "properties": {"closed_periods": whole("periods whose gate has closed"),
                               "bids_in_closed_periods": whole("bids in them")},
                "additionalProperties": {"type": "integer", "minimum": 0},
                "description": "counts of periods whose gate has closed only (closed_periods,"
                " bids_in_closed_periods): nothing about an open period",
            },
            "signature": signature("the server's signing key"),
        },
        "A server's signed account of the market it serves and of itself.",
    ),
    "Error": {
        "type": "object",
        "description": "A refusal (plain JSON). Each route names the `error` values it answers "
        "with each status.",
        "required": ["error", "message"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "string",
                "description": "a refusal reason, or not_finished / not_closed / forbidden "
                "/ unavailable / no_segments",
                "enum": [r.value for r in Reason]
                + ["not_finished", "not_closed", "forbidden", "unavailable", "no_segments"],
            },
            "message": {"type": "string", "description": "advice for a person"},
            "detail": {"type": "string", "description": "which rule (never a bid value)"},
        },
    },
    "Health": {
        "type": "object",
        "required": ["database", "party", "peers", "status"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "unavailable"]},
            "party": whole("this server's index"),
            "database": {"type": "boolean"},
            "peers": {"type": "object", "description": "by peer index: up, last_seen, error"},
        },
    },
}


# --------------------------------------------------------------------------- refusals

#: The HTTP status of each refusal reason, 400 for a reason it does not name: what the
#: server answers (``sealgrid.service.api.HTTP_STATUS`` is this table) and the document says.
REFUSAL_STATUS = {
    Reason.MALFORMED: 400,
    Reason.UNSIGNED: 401,
    Reason.BAD_SIGNATURE: 401,
    Reason.REPLAYED: 409,
    Reason.DUPLICATE_PSEUDONYM: 409,
    Reason.LATE: 422,
    Reason.WRONG_PERIOD: 422,
    Reason.TOO_FREQUENT: 429,
}

_WHEN = {
    "malformed": "not the canonical JSON of a valid message of this type, or a field outside "
    "its rule (the body over the route's size limit too)",
    "unsigned": "no signature or no token",
    "bad_signature": "a signature or token that does not verify, or an id the registry does "
    "not hold",
    "replayed": "a challenge unknown, used or expired (a bid: byte for byte one already "
    "accepted)",
    "duplicate_pseudonym": "another bid under a pseudonym that has one",
    "late": "after the period's gate closure (a reading: after its deadline)",
    "wrong_period": "not a period (or cycle) this request can name",
    "too_frequent": "over the rate limit, or a period whose token the household has",
    "too_early": "a reading of a period that has not ended",
    "duplicate_reading": "a second reading of the period",
    "already_enrolled": "another share was enrolled before",
    "unavailable": "could not be stored; nothing was kept; retry",
    "not_finished": "the period is not finished",
    "not_closed": "not closed yet",
    "forbidden": "only the other computation servers (their client certificate) may ask",
    "no_segments": "the period takes no segment here: its gate is past or closer than "
    "`min(peer_timeout_seconds, max(2, period_seconds / 4))` seconds, or this server does "
    "not validate in segments (`segment_seconds = 0`, or several intake workers)",
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str, example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": _ref(name)}
    if example is not None:
        media["example"] = example
    return {"description": description, "content": {"application/json": media}}


def _error(status: int, codes: list[str], when: dict[str, str] | None = None) -> dict[str, Any]:
    """The response of one status that answers ``codes`` (``when``: what a code means on this
    route, where it means more than :data:`_WHEN` says)."""
    said = "; ".join(f"`{c}`: {(when or {}).get(c, _WHEN[c])}" for c in codes)
    schema = {"allOf": [_ref("Error"), {"properties": {"error": {"enum": codes}}}]}
    return {"description": said, "content": {"application/json": {"schema": schema}}}


TOO_LARGE = {
    "description": "the request body is over the server's size limit (2 × "
    "`max_payload_bytes` + 8192 bytes; refused before it is read)",
    "content": {"text/plain": {"schema": {"type": "string"}}},
}


def refusals(*reasons: Reason, extra: dict[int, list[str]] | None = None,
             post: bool = True, when: dict[str, str] | None = None) -> dict[str, Any]:
    """The error responses of a route: each reason under its status, and ``extra`` codes
    (``when``: what a code means on this route, where :data:`_WHEN` does not say it all)."""
    by_status: dict[int, list[str]] = {}
    for reason in reasons:
        by_status.setdefault(REFUSAL_STATUS.get(reason, 400), []).append(reason.value)
    for status, codes in (extra or {}).items():
        by_status.setdefault(status, []).extend(codes)
    out = {str(s): _error(s, codes, when) for s, codes in sorted(by_status.items())}
    if post:
        out["413"] = TOO_LARGE
    return out


# --------------------------------------------------------------------------- examples

#: The seeds of the examples' keys: SHA-256 of this prefix + a name (see :func:`make_examples`).
EXAMPLE_SEED = "sealgrid/openapi-example/"
EXAMPLE_PERIOD = "2026-11-22T21:45:00Z"
EXAMPLE_READ_PERIOD = "2026-11-22T21:00:00Z"
#: The example challenge expires a minute after it was issued, before the token request.
EXAMPLE_EXPIRES = "2026-11-22T21:08:00Z"


def example_seed(name: str) -> bytes:
    """The 32-byte seed of the example key or value ``name`` (public: anyone can remake them)."""
    return hashlib.sha256((EXAMPLE_SEED + name).encode()).digest()


def make_examples() -> dict[str, Any]:
    """Make every example with the client code and keys derived from public seeds.

    Household ``h0001``'s key, its meter key, its pseudonym key for :data:`EXAMPLE_PERIOD`
    and server 0's signing key are the Ed25519 keys whose 32-byte seeds are
    ``SHA-256("sealgrid/openapi-example/" + name)`` for the names ``household h0001``,
    ``meter h0001``, ``pseudonym`` and ``server 0``; the issuer key is RFC 9497's
    ``DeriveKeyPair`` of the seed ``issuer`` with the period as info; the blinding scalar,
    the proof nonce and the share randomness come from seeds too. Deterministic.
    """
    from fractions import Fraction

    import numpy as np
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from sealgrid.mechanism.bids import check_bid
    from sealgrid.protocol import encoding
    from sealgrid.protocol import field as F
    from sealgrid.protocol.billing import Claim, ClaimLayout, share_claim
    from sealgrid.service import voprf, wire
    from sealgrid.service.agent import Credential
    from sealgrid.service.config import MarketConfig
    from sealgrid.service.household import (
        Pseudonym,
        accept_grant,
        auth_request,
        make_submission,
    )
    from sealgrid.service.keys import DEFAULT_SUPPLIERS
    from sealgrid.service.tokens import token_input

    def signing_key(name: str) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(example_seed(name))

    def doc(raw: bytes | Any) -> Any:
        return json.loads(raw if isinstance(raw, bytes) else wire.encode(raw))

    household, server = signing_key("household h0001"), signing_key("server 0")
    pseudonym = Pseudonym(EXAMPLE_PERIOD, signing_key("pseudonym"))
    issuer = voprf.Issuer.derive(example_seed("issuer"), EXAMPLE_PERIOD.encode())
    nonce = example_seed("nonce")[:16]
    blinding = voprf.blind(token_input(EXAMPLE_PERIOD, pseudonym.public),
                           voprf.hash_to_scalar(example_seed("blind")))
    request = wire.sign(wire.TokenRequest("h0001", nonce, (EXAMPLE_PERIOD,),
                                          (blinding.blinded,)), household)
    (element,), proof = issuer.evaluate([blinding.blinded],
                                        lambda: voprf.hash_to_scalar(example_seed("proof")))
    grant = wire.sign(wire.TokenGrant(0, (EXAMPLE_PERIOD,), (issuer.public,), (element,),
                                      (proof,)), server)
    accept_grant([pseudonym], 0, wire.raw_public(server), grant, [blinding])

    market = MarketConfig().market(DEFAULT_SUPPLIERS)
    checked, _ = check_bid(market, "h0001", "buy", "1.5", "100.0", "s1")
    assert checked is not None
    kappa = 1 + int.from_bytes(example_seed("kappa")[:7], "big")
    payload = encoding.encode_bid(
        True, checked.quantity_wh, checked.level, market.supplier_index("s1"),
        encoding.Layout.of(market), parties=3, key=example_seed("bid")[:16], identity=(1, kappa),
    )[0].to_bytes()
    bid = make_submission(pseudonym, 0, payload)
    receipt = wire.sign(wire.Receipt(0, EXAMPLE_PERIOD, pseudonym.public, wire.sha256(payload),
                                     wire.sha256(bid)), server)

    coefficient = np.array([int.from_bytes(example_seed("kappa coefficient")[:7], "big")],
                           dtype=F.U64)
    shares = F.share(np.array([kappa], dtype=F.U64), 1, 3, [coefficient])
    share = Credential(kappa, tuple(int(s[0]) for s in shares)).share_bytes(0)
    enrolment = wire.sign(wire.Enrolment("h0001", 0, share), household)

    layout = ClaimLayout.of(market.max_quantity_wh)
    claim = Claim.of(False, 0, Fraction(1), 1200, 300)
    claim_shares = np.asarray(share_claim(claim, layout, 3, key=example_seed("claim")[:16])[0],
                              dtype="<u8").tobytes()
    reading = wire.sign(wire.MeterReading("h0001", 0, EXAMPLE_READ_PERIOD, claim_shares),
                        signing_key("meter h0001"))

    subject = wire.b64e(pseudonym.public)
    return {
        "Challenge": {"expires": EXAMPLE_EXPIRES, "nonce": wire.b64e(nonce)},
        "IssuerKey": doc(wire.sign(wire.IssuerKey(0, EXAMPLE_PERIOD, issuer.public), server)),
        "TokenRequest": doc(request),
        "TokenGrant": doc(grant),
        "PseudonymousBid": doc(bid),
        "Receipt": doc(receipt),
        "AuthRequest": doc(auth_request("household", subject, EXAMPLE_PERIOD,
                                        example_seed("nonce outputs")[:16], pseudonym.key)),
        "OutputShares": doc(wire.sign(wire.OutputShares(
            0, EXAMPLE_PERIOD, "household", subject, "pending", b"", ""), server)),
        "HelloRequest": doc(auth_request("household", "h0001", "", example_seed("nonce hello")[:16],
                                         household)),
        "Registered": {"household": "h0001", "registered": True, "server": 0},
        "Enrolment": doc(enrolment),
        "Enrolled": doc(wire.sign(wire.Enrolled(0, "h0001", wire.sha256(share)), server)),
        "MeterReading": doc(reading),
        "ReadingReceipt": doc(wire.sign(wire.ReadingReceipt(
            0, EXAMPLE_READ_PERIOD, "h0001", wire.sha256(claim_shares)), server)),
        "SegmentPlan": doc(wire.sign(wire.SegmentPlan(0, EXAMPLE_PERIOD, 0,
                                                      (pseudonym.public,)), server)),
    }


# -- examples begin (python -m sealgrid.service.openapi --examples)
EXAMPLES: dict[str, Any] = {
    "Challenge": {
        "expires": "2026-11-22T21:08:00Z",
        "nonce": "9QlMUgxZ+cDV2Ylji6jEEQ==",
    },
    "IssuerKey": {
        "period": "2026-11-22T21:45:00Z",
        "public": "CtgKu//77mAd0+WUSSHet5AzRj0XVm5kShvO9Zp0qhM=",
        "server": 0,
        "signature": (
            "pFUAgJJzIQ6x4m8CdVnp0AiV9kZcA7rpHL4Cgxlf7TQpCxV1yZ+KLsPeaiMVQE8dSnvf9oj2KT/EmjX6T5KB"
            "DA=="
        ),
        "type": "IssuerKey",
        "v": 1,
    },
    "TokenRequest": {
        "blinded": [
            "GosTToCaB2ssyVPD3rnErwFDi5QbntkOV7sY3ADhSRc=",
        ],
        "household": "h0001",
        "nonce": "9QlMUgxZ+cDV2Ylji6jEEQ==",
        "periods": [
            "2026-11-22T21:45:00Z",
        ],
        "signature": (
            "Jqg252wWKX5gNeKH/4RnvuDenbo7/n9wIx146CuS977bAo0TSbauvyN7t2rdggrFOty2eWJPclJxhhVkhwyt"
            "BA=="
        ),
        "type": "TokenRequest",
        "v": 1,
    },
    "TokenGrant": {
        "evaluated": [
            "kmApkrqzyw/pKnIV+kCfz6d9ULX/ArXOHUDmd71RKVw=",
        ],
        "periods": [
            "2026-11-22T21:45:00Z",
        ],
        "proofs": [
            (
                "cItBtlOW9Ag9B6hzwRsk1Chxx2NOWZLuzQZvL/YaTg4hNSwwqEZxOrQrE10y5ZXgvLL1kBIK1bgF4UBL"
                "+pALDQ=="
            ),
        ],
        "publics": [
            "CtgKu//77mAd0+WUSSHet5AzRj0XVm5kShvO9Zp0qhM=",
        ],
        "server": 0,
        "signature": (
            "/g7xMhxxzogApau4oURd1hLdpqyK7ETr0wOnltxXMQWY445f54TpOQMM1soP/UXDwwa+n7/I3wLL5BDzFi7g"
            "Dg=="
        ),
        "type": "TokenGrant",
        "v": 1,
    },
    "PseudonymousBid": {
        "payload": (
            "U0dCMQMAAACRAQAAAwAAABAnAAABAAAAAAAAAPFdY9JRiRsBkAMCA+Le2DYFVCKvbvg+jVtUK0cq/XaMfUU6"
            "/reWCkVWdXNPZQni1DaoYO685DVTuS6nt5FHWY9nbKlMlDW4PKCG21Eb40xXH7Zrh+8TFZKC9cfP4ZZ5RURs"
            "SsUPnxE3D1tz75QKyW2jZFMrhvG7RZ7rAY5PHN2y2RKNqEC9WP/x1veNDpGBRrHDe4UBHsuQDnggWtfjs3F/"
            "tfIpkEhhddpxAH8NCpszX/13RDJNcQdUXs3S6VbH10wJrrjSUjA37B8u6V51aiZpjAJQU+V0XkvXrcNwwYS+"
            "3LdQGxZ8wR/ypk9goRyF9Waqq20HHbHxjpQ9Y2Q7t5mP0BLa8NXuWn3TmwwTfjxoUMO1eqsCgAT6UbM5TH9c"
            "8lW3kpS/aNX87YgzpkWJ44tQnMQ1JdRJmKvJsCWE5DMAw4mufnhuB4VfkJ7FIXll7rODCjKbbd15qvITJIWT"
            "+Y7ffy18HiNcNQVtFddo2TvPmxQ7IpDSMlm9m78qgJeCina0Yn1zdlDT1EZwgq3M9FjLwbeHIuNDIAtJHEaz"
            "mfHJvzsqIUBs39XL9YIUgh6JV6N8mlrWvzfzHhLFa8KqjnqrEFLgTFi1ykGfG/stayd+tuLRs/pbm4De4YjM"
            "qfMoEdK02SjD0bH1cbfz2CTN7XdQgRQO2OlKsl/9vCEQCjRACPneN0xqw5C9zpGXCDAwEsbtyaWKnzZqgkdi"
            "C02BordrgEGB3PgR7tFXcInV2ddWqgy7Fw9c9bqahM5qhCseGbz7WKniGvgR9cn3M7HZHhM9fby3w0Ecb0j4"
            "CfCBDiYmIKAdanDF41GdG3c04RcZMoQzi8rD4ibotdE08ShidMATShaESernE4IkkbUGUXwa+r2eOz0c+/y5"
            "r45XRM9aJS5yaZf8FfayfKT99zncXH2HF55OG+B1ZOpTO6/mgvS23PhGKCQpaCmqEmJF6ByhMUpk6LfJ66zn"
            "4opfq1c2IoXPDPe6cJD/bEJtxP1o2rc8"
        ),
        "period": "2026-11-22T21:45:00Z",
        "pseudonym": "0TfdYONQmCHW5ysGL/NQUY+shfWw9R+8DCzKx7yiPnU=",
        "server": 0,
        "signature": (
            "H/JhXgbPOa9myMEl/dpRMeux6HyYUBB9plxLm8xTIb89KL9Llcefvzuljo7XDO2abc2mRRaG48f61RLKxVQ0"
            "Aw=="
        ),
        "token": (
            "Ma4WGvx5d/FKjN2fK3LWCuh8fdlDXszJTu+Vn6tFVtNsCDTTdfR6urfEN9Zd+pSV+Lw2LcN9UZ6C16bFXGVu"
            "4g=="
        ),
        "type": "PseudonymousBid",
        "v": 1,
    },
    "Receipt": {
        "payload_sha256": "uhRceT0nAHVeYeU94HGY/Vjjm4BedpOY3wkzNW56Ono=",
        "period": "2026-11-22T21:45:00Z",
        "pseudonym": "0TfdYONQmCHW5ysGL/NQUY+shfWw9R+8DCzKx7yiPnU=",
        "server": 0,
        "signature": (
            "38wey23+LgEBsSPwEFxQee7Xc/SU+p04fPQT6hmHTn2cbazUAHxWkS5wBWN5vjNXjW8FG+1xIxjOZQbdf08B"
            "AA=="
        ),
        "submission_sha256": "LbCeskkfUPl5Pi/ayyofZ9oUeitzBWabbkofBIpp/YU=",
        "type": "Receipt",
        "v": 1,
    },
    "AuthRequest": {
        "nonce": "1Bx6+opgHHDvsHCwLH3k3A==",
        "period": "2026-11-22T21:45:00Z",
        "role": "household",
        "signature": (
            "YY3WDO9lhPmNP9G8SA/uT3opXaUcKdG5y1p1IFWq9IWe7TwLL8kcIATWKBAFACy8PUYOfpro5lPJ6sA/SQIj"
            "Cg=="
        ),
        "subject": "0TfdYONQmCHW5ysGL/NQUY+shfWw9R+8DCzKx7yiPnU=",
        "type": "AuthRequest",
        "v": 1,
    },
    "OutputShares": {
        "period": "2026-11-22T21:45:00Z",
        "public": "",
        "role": "household",
        "server": 0,
        "shares": "",
        "signature": (
            "Au1cQC61Idowkeqb6rdQ5efRNgiRx7tRSu2T6GJw82nv5CchOYL2qmcC0Llwr7OJzlXAgKjiKjU7T0lik1m9"
            "BA=="
        ),
        "status": "pending",
        "subject": "0TfdYONQmCHW5ysGL/NQUY+shfWw9R+8DCzKx7yiPnU=",
        "type": "OutputShares",
        "v": 1,
    },
    "HelloRequest": {
        "nonce": "qjWOMNgRd3YBvJyzghTAnQ==",
        "period": "",
        "role": "household",
        "signature": (
            "uohiBbAPo0gjA7OINnefvupG0t4Lxl3U9RWrUPpWGY+Gx9Vr/I3IBl1rLtRz3tTQGOkxDC/oGUjM9EJ+OU1d"
            "DQ=="
        ),
        "subject": "h0001",
        "type": "AuthRequest",
        "v": 1,
    },
    "Registered": {
        "household": "h0001",
        "registered": True,
        "server": 0,
    },
    "Enrolment": {
        "household": "h0001",
        "server": 0,
        "share": "N2L/XkmbqAE=",
        "signature": (
            "ljAZiaW2omIBTbYYdv1vUM6sGZp0JNTnDOggD+IQp5Hc07kyZLSjMQS/Af9IyL7uHk2VgpD41RRp0joji0D/"
            "Cw=="
        ),
        "type": "Enrolment",
        "v": 1,
    },
    "Enrolled": {
        "household": "h0001",
        "server": 0,
        "share_sha256": "/eqdVgckfqzmyKPIbxf4eTTU6jaNHUENNFcerTm0FiE=",
        "signature": (
            "bSXH62Axa2rCigrTPjB4DJmDckUlwopyb1o7+uiqyXWlTJobKIlI2ectsKjYrNOmnxRhQU1xuMuW4yRvDeFY"
            "BA=="
        ),
        "type": "Enrolled",
        "v": 1,
    },
    "MeterReading": {
        "household": "h0001",
        "period": "2026-11-22T21:00:00Z",
        "server": 0,
        "shares": (
            "OpU9H3i43wH/HSGMtufJ9hYNFP3YjeHKxNW1jdap+yE+xMbog5q9IitzbqtWHZx99MCchyx7bcGibMIGP1Uj"
            "SdiDinyA9VnI3Cb8PCxQbHXmSDVmE4TL8nrzrnPt4/KTGe6I3V8Zu/TPcVlPwID3LJ3zY18H9t5ujMotUwFN"
            "oXJJDSwsN/MbJTEx2JiY+LC4/4hkaL1FRhoo/Nz/fdYNbmKH62856t1u6EevZ1IxoZ79LAWp4RIPWNzedxpw"
            "Olh1J6NxKeutKvdrX+pA7f8ZTqYkYEc8XOlNf/Pi6kd+Ku1i42/IxVnvDQxulvrCrqE1LEgWsvDEOPTlnIkj"
            "ZzwOMcO1IioZmjllKzlD68DN/on9zG9RDPpvUp6EXkygI1AtBsW0i/klbgWhD4r3EHhtbhjDrJZcLF/H9r9S"
            "KEgjBUOvtinz2V5jE9qtWh5dy0D9pX9cRw+Ccl4ixr+YVKmNcrtkwyLWLtSGaq68l9KfuQ0m17osBCevjM79"
            "UXmAJolz7L5OVTj5m7BbtLBXviDMIewxJNpST4KVVgH1NaWk2lwB5avwrKwsXnriv2XUw155bI7BnPsIVT0q"
            "2EAp7LhLrWwSlCYSjas0C0L6mN9oJl6UxXdzu6rlQtkU7NnvOOwHmoqBSAHkob+6i80FxbMpiITVeCIcaf5H"
            "UUyNDwO901ZkTyrzADEEUU0d3ldL/L9Xe9Ng7xcmAyHB3AWpeOvBGE29adjpxGw4yzUCdaGmqmuf5O1we+S0"
            "HvHQwjFLYaliiRJZ4/xk7y+626kn0UGGiXm6wWq6zIb6qz5vh/1S2Gg2p5yaz26uIZ5Q7fks3uaS/7I4SbGF"
            "Xquvfkgc+qv7MWTeX9JhmBCZzeMU/LBnwC0sVDtyzm4O91USuDZNM5Qry0ZWmW/18UFCXMp9rosU2AFgwthP"
            "z76XtdQnfUXwUbeK6Z104bSiW9zMyoKjvvZMiNBg0lCQhbd+m366AA1twy/k/2xYGT9JETLvyaqQl0VBk9vx"
            "ANXIxWuHYy8f214DDgiyg3vR521jf00AaGmRlLoa5DHCLTPczsTQhufUR+Pz1dbzLxWXfsxkXrA2kpmHjicT"
            "MN1PzE93d6ByYew1gkItMiGwaCZLwaEzDmuYatFZcZSd50m7w7bwlqaRHnf2VtvFYHAK3zAc0JuKRc06v3qO"
            "RQ3wa/W/IuO4VMErN8D5UWLo6ciuZMKf+OdP/TRwpALo8eOqyA2pyPvQol9R1kFJR1sCuMNf"
        ),
        "signature": (
            "hkn+r/mJ+yDUYm/QnhBxZPgemoaUeswAQYNGkXKZ7PDAboFBAWLJlSItmrT9v9XqvRSrgOZYf++MA+4TM0l6"
            "BA=="
        ),
        "type": "MeterReading",
        "v": 1,
    },
    "ReadingReceipt": {
        "household": "h0001",
        "period": "2026-11-22T21:00:00Z",
        "server": 0,
        "shares_sha256": "f/ZsbITGpvRXjpPNlQnnt495FFeU/O937ye8ypY+svo=",
        "signature": (
            "oww1swJwnYObXAYlY1/8LkGSZMxqm3Bzg6mU9FKYL++VmW49P2l1+VN/D+eRiSjMwPN5CfWIQDkP6vWWWX/W"
            "Bw=="
        ),
        "type": "ReadingReceipt",
        "v": 1,
    },
    "SegmentPlan": {
        "index": 0,
        "period": "2026-11-22T21:45:00Z",
        "pseudonyms": [
            "0TfdYONQmCHW5ysGL/NQUY+shfWw9R+8DCzKx7yiPnU=",
        ],
        "server": 0,
        "signature": (
            "l90VKBIQc8H9cu+CdJC8g8lS8JmfcPl4nCFHfcq8LQqBjHEKw3Aot+jaqave54UMO7MP8cCk8ivg3Zigd7Af"
            "Ag=="
        ),
        "type": "SegmentPlan",
        "v": 1,
    },
}
# -- examples end

#: Why each request example is refused when sent as is to a real server, and with what.
STALE: dict[str, tuple[int, str, str]] = {
    "TokenRequest": (401, "bad_signature", "it is signed by the example key of `h0001`, "
                     "which no registry holds (and its nonce was never issued by your server, "
                     "its period is past)"),
    "PseudonymousBid": (401, "bad_signature", "its token is the example issuer key's, which "
                        "no server holds, and its period is past (sent to a server other than "
                        "0 it is refused 400 malformed first: it is addressed to server 0)"),
    "AuthRequest": (409, "replayed", "its nonce was never issued by your server (a challenge "
                    "is one-time and expires in 60 s); the pseudonym's signature itself "
                    "verifies"),
    "HelloRequest": (401, "bad_signature", "it is signed by the example key of `h0001`, "
                     "which no registry holds (and its nonce was never issued)"),
    "Enrolment": (401, "bad_signature", "it is signed by the example key of `h0001`, which "
                  "no registry holds"),
    "MeterReading": (401, "bad_signature", "it is signed by the example meter key of `h0001`, "
                     "which no registry holds (and its period's deadline is past)"),
    "SegmentPlan": (403, "forbidden", "only the other computation servers may send it (their "
                    "client certificate, pinned in the registry), and it is signed by the "
                    "example key of server 0, which no registry holds"),
}


def _request(name: str, summary: str) -> dict[str, Any]:
    """A request body of schema ``name`` with its example and why the example is stale."""
    status, code, why = STALE[name]
    media: dict[str, Any] = {"schema": _ref(name)}
    if name in EXAMPLES:
        media["examples"] = {
            "shape": {
                "summary": summary,
                "description": f"Shows the shape only: made by the client code (signatures "
                f"and all valid under the example keys, {EXAMPLE_SEED}…), it is refused "
                f"{status} {code} if sent as is, because {why}. Make a fresh one: a new "
                "challenge, your own registered key, an open period.",
                "value": EXAMPLES[name],
                "x-refused-as-is": {"status": status, "error": code},
            }
        }
    return {
        "required": True,
        "description": SCHEMAS[name]["description"],
        "content": {"application/json": media},
    }


def _period_parameter(description: str = "the period's name") -> list[dict[str, Any]]:
    return [{"name": "period", "in": "path", "required": True, "schema": PERIOD,
             "description": description}]


#: What the refusals of POST /v1/internal/periods/{period}/segments mean there
#: (``Server.accept_segment``).
_SEGMENT_REFUSALS = {
    "malformed": "not the canonical JSON of a SegmentPlan, or a field outside its rule; or "
    "it has no members, or they are not sorted, or one is no bid this server holds of the "
    "period, or one is in a segment already",
    "bad_signature": "not signed by server 0's key (or `server` is not 0)",
    "late": "the period takes no segment here any more: its gate is past or too close, or "
    "this server does not validate in segments (as GET .../pending answers 409 "
    "no_segments)",
    "wrong_period": "the path names no period, the plan is of another period than the "
    "path's, or its `index` is not the one this server's next segment of the period takes "
    "(the `next_segment` of its pending set)",
    "unavailable": "the segment could not be recorded; nothing was kept (a retry is "
    "answered as the plan deserves then)",
}


OPENAPI_PATHS: dict[str, Any] = {
    "/metrics": {
        "get": {
            "summary": "This server's metrics (Prometheus text format); request counts move"
                       " only at period boundaries",
            "responses": {"200": {
                "description": "Prometheus text exposition, version 0.0.4",
                "content": {"text/plain": {"schema": {"type": "string"}}}}},
        }
    },
    "/healthz": {
        "get": {
            "summary": "Whether this server's database answers; its party index; the peers"
                       " as last seen",
            "responses": {
                "200": _json("Health", "healthy"),
                "503": _json("Health", "the database does not answer"),
            },
        }
    },
    "/status": {
        "get": {
            "summary": "A read-only HTML page: the last periods with status and price, the"
                       " peers, refusal counts",
            "responses": {"200": {"description": "the page",
                                  "content": {"text/html": {"schema": {"type": "string"}}}}},
        }
    },
}
"""The operators' routes (:mod:`sealgrid.service.metrics`): metrics, health, status page."""

_R = Reason

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "sealgrid computation server",
        "version": "1",
        "description": "HTTPS API of one of the market's computation servers (docs/api.md). "
        + CANONICAL_JSON + " " + SIGNED + " " + BASE64 + " " + PERIODS + " Examples: every "
        "request example is made by the client code and signed by keys derived from public "
        f"seeds (the Ed25519 key whose seed is SHA-256 of `{EXAMPLE_SEED}` + `household "
        "h0001`, `meter h0001`, `pseudonym` or `server 0`), which no registry holds; with a "
        "one-time nonce and a past period it shows the shape only, and each says what a "
        "server answers to it as is.",
    },
    "paths": {
        "/v1/challenge": {
            "post": {
                "summary": "Get a fresh challenge (liveness) to sign into the next request",
                "description": "No body is read.",
                "responses": {
                    "200": _json("Challenge", "a one-time nonce", EXAMPLES.get("Challenge")),
                    **refusals(_R.TOO_FREQUENT, post=False),
                },
            }
        },
        "/v1/periods/{period}/issuer": {
            "get": {
                "summary": "This server's issuer key for an open period",
                "parameters": _period_parameter(),
                "responses": {"200": _json("IssuerKey", "the signed key",
                                           EXAMPLES.get("IssuerKey")),
                              **refusals(_R.LATE, _R.WRONG_PERIOD, post=False)},
            }
        },
        "/v1/pseudonyms": {
            "post": {
                "summary": "Evaluate a household's blinded tokens (once per household and"
                           " period, many periods in one request)",
                "requestBody": _request("TokenRequest", "a token request for one period"),
                "responses": {
                    "201": _json("TokenGrant", "stored; the evaluations with their proofs",
                                 EXAMPLES.get("TokenGrant")),
                    **refusals(_R.MALFORMED, _R.BAD_SIGNATURE, _R.REPLAYED, _R.LATE,
                               _R.WRONG_PERIOD, _R.TOO_FREQUENT, extra={503: ["unavailable"]}),
                },
            }
        },
        "/v1/bids": {
            "post": {
                "summary": "Submit one bid share; the receipt comes after it is stored",
                "requestBody": _request("PseudonymousBid", "a buy bid's share for server 0"),
                "responses": {
                    "201": _json("Receipt", "stored; the signed receipt",
                                 EXAMPLES.get("Receipt")),
                    **refusals(_R.MALFORMED, _R.UNSIGNED, _R.BAD_SIGNATURE, _R.REPLAYED,
                               _R.DUPLICATE_PSEUDONYM, _R.LATE, _R.WRONG_PERIOD,
                               extra={503: ["unavailable"]}),
                },
            }
        },
        "/v1/outputs": {
            "post": {
                "summary": "Fetch this server's share of one's own result or aggregate",
                "requestBody": _request("AuthRequest", "a household's result, by its "
                                        "pseudonym"),
                "responses": {
                    "200": _json("OutputShares", "the signed share (or a status)",
                                 EXAMPLES.get("OutputShares")),
                    **refusals(_R.MALFORMED, _R.BAD_SIGNATURE, _R.REPLAYED, _R.WRONG_PERIOD),
                },
            }
        },
        "/v1/enrol": {
            "post": {
                "summary": "A household enrols its settlement credential share (once)",
                "requestBody": _request("Enrolment", "h0001's share for server 0"),
                "responses": {"200": _json("Enrolled", "stored (or already the same)",
                                           EXAMPLES.get("Enrolled")),
                              **refusals(_R.MALFORMED, _R.ALREADY_ENROLLED, _R.BAD_SIGNATURE)},
            }
        },
        "/v1/readings": {
            "post": {
                "summary": "A smart meter's reading of an ended period, before its deadline",
                "requestBody": _request("MeterReading", "h0001's reading, shares for server "
                                        "0"),
                "responses": {"200": _json("ReadingReceipt", "stored; the signed receipt",
                                           EXAMPLES.get("ReadingReceipt")),
                              **refusals(_R.MALFORMED, _R.TOO_EARLY, _R.DUPLICATE_READING,
                                         _R.BAD_SIGNATURE, _R.LATE, _R.WRONG_PERIOD)},
            }
        },
        "/v1/hello": {
            "post": {
                "summary": "Challenge–response: a household proves it holds its registered key",
                "description": "AuthRequest with role household, subject the household key id, "
                "period empty, signed by the household's long-term key.",
                "requestBody": _request("HelloRequest", "h0001's hello"),
                "responses": {"200": _json("Registered", "registered: true",
                                           EXAMPLES.get("Registered")),
                              **refusals(_R.MALFORMED, _R.BAD_SIGNATURE, _R.REPLAYED)},
            }
        },
        "/v1/periods/{period}": {
            "get": {
                "summary": "The signed statement of a finished period (public)",
                "parameters": _period_parameter(),
                "responses": {
                    "200": _json("PeriodStatement", "the statement"),
                    **refusals(_R.WRONG_PERIOD, extra={404: ["not_finished"]}, post=False),
                },
            }
        },
        "/v1/internal/periods/{period}/bidset": {
            "get": {
                "summary": "This server's bid set of a closed period (other servers only)",
                "description": "Needs a client certificate of another computation server.",
                "parameters": _period_parameter(),
                "responses": {
                    "200": _json("BidSet", "the signed bid set"),
                    **refusals(_R.WRONG_PERIOD, extra={403: ["forbidden"], 409: ["not_closed"],
                                                       503: ["unavailable"]}, post=False),
                },
            }
        },
        "/v1/internal/periods/{period}/bidset-digest": {
            "get": {
                "summary": "This server's bid set of a closed period as its count and digest "
                "(other servers only)",
                "description": "Needs a client certificate of another computation server. A "
                "server whose own set has the same count and digest holds the same set; one "
                "whose differs asks for the whole set.",
                "parameters": _period_parameter(),
                "responses": {
                    "200": _json("BidSetDigest", "the signed digest"),
                    **refusals(_R.WRONG_PERIOD, extra={403: ["forbidden"], 409: ["not_closed"],
                                                       503: ["unavailable"]}, post=False),
                },
            }
        },
        "/v1/internal/periods/{period}/pending": {
            "get": {
                "summary": "This server's stored bids of an open period in no segment yet "
                "(servers only)",
                "description": "Needs a client certificate of another computation server; "
                "asked by the leader, server 0 (docs/service.md, Streaming). Asking changes "
                "nothing. A period this server holds no bid of, however far ahead, is "
                "answered with its empty set and `next_segment` 0.",
                "parameters": _period_parameter(),
                "responses": {
                    "200": _json("PendingSet", "the signed pending set"),
                    **refusals(_R.WRONG_PERIOD, extra={403: ["forbidden"],
                                                       409: ["no_segments"],
                                                       503: ["unavailable"]}, post=False),
                },
            }
        },
        "/v1/internal/periods/{period}/segments": {
            "post": {
                "summary": "The leader's next segment of an open period (servers only)",
                "description": "Needs a client certificate of another computation server. "
                "The server checks the plan against its own pending set (GET "
                ".../pending), records it and starts validating it with the others in the "
                "background: the answer does not wait for the validation.",
                "parameters": _period_parameter(
                    "the period's name, the plan's `period` (a plan of another period: 422 "
                    "wrong_period)"),
                "requestBody": _request("SegmentPlan", "segment 0 of one member, from the "
                                        "example server 0"),
                "responses": {
                    "200": _json("SegmentAccepted", "recorded; its validation started"),
                    **refusals(_R.MALFORMED, _R.BAD_SIGNATURE, _R.LATE, _R.WRONG_PERIOD,
                               extra={403: ["forbidden"], 503: ["unavailable"]},
                               when=_SEGMENT_REFUSALS),
                },
            }
        },
        "/v1/internal/periods/{period}/settlement-set": {
            "get": {
                "summary": "This server's reading and enrolment sets of a period (servers only)",
                "description": "Needs a client certificate of another computation server.",
                "parameters": _period_parameter(),
                "responses": {
                    "200": _json("SettlementSet", "the signed sets"),
                    **refusals(_R.WRONG_PERIOD, extra={403: ["forbidden"], 409: ["not_closed"],
                                                       503: ["unavailable"]}, post=False),
                },
            }
        },
        "/v1/info": {
            "get": {
                "summary": "The market's rules and this server's facts, signed",
                "responses": {"200": _json("MarketInfo", "the signed market info")},
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.0",
                                      "content": {"application/json": {
                                          "schema": {"type": "object"}}}}},
            }
        },
    },
    "components": {"schemas": SCHEMAS},
}
OPENAPI["paths"].update(OPENAPI_PATHS)


# --------------------------------------------------------------------------- regenerating


def document_text() -> str:
    """The document as docs/openapi.json holds it."""
    return json.dumps(OPENAPI, indent=1, sort_keys=True, ensure_ascii=False)


def _literal(value: Any, indent: int) -> str:
    """``value`` as Python source at ``indent``; long text split into pieces."""
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f'{pad}    {json.dumps(k)}: {_literal(v, indent + 4)},' for k, v in value.items()]
        return "{\n" + "\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list):
        items = [f"{pad}    {_literal(v, indent + 4)}," for v in value]
        return "[\n" + "\n".join(items) + f"\n{pad}]"
    if isinstance(value, str) and len(value) > 60:
        width = 96 - indent - 4
        pieces = [value[i:i + width] for i in range(0, len(value), width)]
        return "(\n" + "\n".join(f"{pad}    {json.dumps(p)}" for p in pieces) + f"\n{pad})"
    return repr(value) if isinstance(value, bool) or value is None else json.dumps(value)


def examples_source(examples: dict[str, Any]) -> str:
    """The source of :data:`EXAMPLES` holding ``examples``."""
    return f"EXAMPLES: dict[str, Any] = {_literal(examples, 0)}\n"


def write_examples(path: Path = Path(__file__)) -> None:
    """Rewrite the :data:`EXAMPLES` block of this module from :func:`make_examples`."""
    text = path.read_text()
    begin = text.index("# -- examples begin")
    begin = text.index("\n", begin) + 1
    end = text.index("# -- examples end")
    path.write_text(text[:begin] + examples_source(make_examples()) + text[end:])


def main(argv: list[str] | None = None) -> int:
    """``--examples`` rewrites :data:`EXAMPLES` in this file; a path writes the document."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--examples"]:
        write_examples()
        return 0
    if len(args) == 1 and not args[0].startswith("-"):
        Path(args[0]).write_text(document_text())
        return 0
    print("usage: python -m sealgrid.service.openapi (--examples | docs/openapi.json)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
