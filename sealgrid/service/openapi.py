"""The OpenAPI 3 description of the server's HTTP API; assumes the messages of ``wire``.

One source: the server serves it at ``/openapi.json`` and docs/openapi.json is a copy
(a test keeps them equal).
"""

from __future__ import annotations

from typing import Any

from sealgrid.mechanism.bids import Reason

B64 = {"type": "string", "format": "byte", "description": "standard base64"}


def _msg(name: str, props: dict[str, Any], doc: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": doc,
        "required": ["type", "v", *props],
        "additionalProperties": False,
        "properties": {
            "type": {"type": "string", "enum": [name]},
            "v": {"type": "integer", "enum": [1]},
            **props,
        },
    }


SCHEMAS: dict[str, Any] = {
    "IssuerKey": _msg(
        "IssuerKey",
        {
            "server": {"type": "integer"},
            "period": {"type": "string"},
            "public": {**B64, "description": "the period's ristretto255 public key (32 bytes)"},
            "signature": {**B64, "description": "Ed25519 by the server's signing key"},
        },
        "A server's issuer key for one period (RFC 9497 VOPRF, ristretto255-SHA512).",
    ),
    "TokenRequest": _msg(
        "TokenRequest",
        {
            "household": {"type": "string", "description": "registered household key id"},
            "nonce": {**B64, "description": "a challenge from POST /v1/challenge"},
            "periods": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                        "description": "distinct open periods"},
            "blinded": {"type": "array", "items": B64, "minItems": 1,
                        "description": "per period, RFC 9497 Blind of the token input "
                                       "(a 32-byte ristretto255 element)"},
            "signature": {**B64, "description": "Ed25519 by the household's long-term key"},
        },
        "A household's request for its pseudonyms' tokens (once per household and period).",
    ),
    "TokenGrant": _msg(
        "TokenGrant",
        {
            "server": {"type": "integer"},
            "periods": {"type": "array", "items": {"type": "string"}},
            "publics": {"type": "array", "items": B64,
                        "description": "per period, the issuer public key used"},
            "evaluated": {"type": "array", "items": B64,
                          "description": "per period, the blinded element times the key"},
            "proofs": {"type": "array", "items": B64,
                       "description": "per period, the 64-byte DLEQ proof (RFC 9497)"},
            "signature": {**B64, "description": "Ed25519 by the server's signing key"},
        },
        "The evaluations, the period keys they used and their proofs.",
    ),
    "PseudonymousBid": _msg(
        "PseudonymousBid",
        {
            "period": {"type": "string", "example": "2026-11-22T21:45:00Z"},
            "server": {"type": "integer", "description": "index of the server this share is for"},
            "pseudonym": {**B64, "description": "32-byte Ed25519 public key, fresh per period"},
            "token": {
                **B64,
                "description": "the server's VOPRF output on (period, pseudonym), 64 bytes",
            },
            "payload": {**B64, "description": "this server's share payload (sealgrid.protocol)"},
            "signature": {**B64, "description": "Ed25519 by the pseudonym key"},
        },
        "One bid share for one server; names no household.",
    ),
    "Receipt": _msg(
        "Receipt",
        {
            "server": {"type": "integer"},
            "period": {"type": "string"},
            "pseudonym": B64,
            "payload_sha256": B64,
            "submission_sha256": {**B64, "description": "SHA-256 of the PseudonymousBid bytes"},
            "signature": {**B64, "description": "Ed25519 by the server's signing key"},
        },
        "The server's signed promise that it has durably stored the bid. No time finer than"
        " the period and no sequence number: nothing in it tells when or in what order the bid"
        " arrived.",
    ),
    "Enrolment": _msg(
        "Enrolment",
        {
            "household": {"type": "string"},
            "server": {"type": "integer"},
            "share": {**B64, "description": "the credential share, 8 bytes little-endian"},
            "signature": {**B64, "description": "Ed25519 by the household's key"},
        },
        "A household's share of its settlement credential for one server.",
    ),
    "Enrolled": _msg(
        "Enrolled",
        {
            "server": {"type": "integer"},
            "household": {"type": "string"},
            "share_sha256": B64,
            "signature": {**B64, "description": "Ed25519 by the server's signing key"},
        },
        "A server's acknowledgement of an enrolled credential share.",
    ),
    "MeterReading": _msg(
        "MeterReading",
        {
            "household": {"type": "string"},
            "server": {"type": "integer"},
            "period": {"type": "string"},
            "shares": {**B64, "description": "the claim's shares, little-endian u64"},
            "signature": {**B64, "description": "Ed25519 by the household's meter key"},
        },
        "A smart meter's signed reading of one ended period, as this server's shares.",
    ),
    "ReadingReceipt": _msg(
        "ReadingReceipt",
        {
            "server": {"type": "integer"},
            "period": {"type": "string"},
            "household": {"type": "string"},
            "shares_sha256": B64,
            "signature": {**B64, "description": "Ed25519 by the server's signing key"},
        },
        "A server's receipt for a stored reading.",
    ),
    "SettlementSet": _msg(
        "SettlementSet",
        {
            "server": {"type": "integer"},
            "period": {"type": "string"},
            "readings": {"type": "array", "items": {"type": "string"}},
            "enrolled": {"type": "array", "items": {"type": "string"}},
            "signature": {**B64, "description": "Ed25519 by the server's signing key"},
        },
        "A server's households with a reading of a period, and those enrolled (servers only).",
    ),
    "AuthRequest": _msg(
        "AuthRequest",
        {
            "role": {"type": "string", "enum": ["household", "supplier", "operator",
                                                "statement", "bill", "dso", "tso",
                                                "supplier_period"]},
            "subject": {
                "type": "string",
                "description": "base64 pseudonym (household), supplier id or operator id; "
                "for a cycle's statement the household id, bill the supplier id, dso the "
                "region, tso 'tso'",
            },
            "period": {"type": "string", "description": "the period, or the billing cycle"},
            "nonce": {**B64, "description": "a challenge from POST /v1/challenge"},
            "signature": {**B64, "description": "Ed25519 by the key the subject names"},
        },
        "A signed request for protected output.",
    ),
    "OutputShares": _msg(
        "OutputShares",
        {
            "server": {"type": "integer"},
            "period": {"type": "string"},
            "role": {"type": "string"},
            "subject": {"type": "string"},
            "status": {
                "type": "string",
                "enum": [
                    "pending",
                    "cleared",
                    "no_trade",
                    "excluded",
                    "not_on_every_server",
                    "invalid",
                    "failed",
                    "unknown",
                ],
            },
            "shares": {**B64, "description": "this server's share of the output"},
            "public": {"type": "string", "description": "canonical JSON of the public outcome"},
            "signature": B64,
        },
        "This server's share of one protected output, signed.",
    ),
    "BidSet": _msg(
        "BidSet",
        {
            "server": {"type": "integer"},
            "period": {"type": "string"},
            "pseudonyms": {"type": "array", "items": B64},
            "signature": B64,
        },
        "A server's accepted pseudonyms of a closed period (server to server).",
    ),
    "PeriodStatement": _msg(
        "PeriodStatement",
        {
            "server": {"type": "integer"},
            "period": {"type": "string"},
            "bid_count": {"type": "integer"},
            "bidset_sha256": {**B64, "description": "SHA-256 of the sorted agreed pseudonyms"},
            "excluded": {"type": "array", "items": B64},
            "status": {"type": "string", "enum": ["cleared", "failed"]},
            "outcome": {"type": "string",
                        "description": "canonical JSON of the public Outcome message"},
            "gate_closure": {"type": "string", "format": "date-time"},
            "issuer_sha256": {**B64, "description": "SHA-256 of the period's issuer public key"},
            "signature": B64,
        },
        "A server's signed account of one period.",
    ),
    "Outcome": _msg(
        "Outcome",
        {
            "status": {"type": "string", "enum": ["cleared", "no_trade", "failed"]},
            "level": {"type": "integer", "nullable": True,
                      "description": "clearing level k* on the price grid (null: no trade)"},
            "price": {"type": "string", "nullable": True,
                      "description": "clearing price, a decimal on the grid (null: no trade)"},
            "invalid_bids": {"type": "integer",
                             "description": "bids the servers' joint validation refused"},
            "reason": {"type": "string", "description": "why a failed period failed"},
        },
        "The public outcome of one period (no quantity: amounts leave as shares); its "
        "canonical JSON is a statement's outcome and an output's public.",
    ),
    "MarketInfo": _msg(
        "MarketInfo",
        {
            "party": {"type": "integer", "description": "this server's index"},
            "servers": {"type": "integer"},
            "signing_key": {**B64, "description": "this server's Ed25519 public key (raw)"},
            "wire_version": {"type": "integer"},
            "now": {"type": "string", "format": "date-time",
                    "description": "the server's clock"},
            "period_seconds": {"type": "integer"},
            "first_open_period": {"type": "string", "format": "date-time"},
            "max_payload_bytes": {"type": "integer"},
            "rate_limit": {
                "type": "object",
                "properties": {"requests": {"type": "integer"},
                               "window_seconds": {"type": "integer"}},
            },
            "suppliers": {"type": "array", "items": {"type": "string"}},
            "price_grid": {
                "type": "object",
                "properties": {"floor": {"type": "string"}, "ceiling": {"type": "string"},
                               "tick": {"type": "string"}},
                "description": "decimal strings, currency per kWh",
            },
            "max_quantity_wh": {"type": "integer"},
            "min_accepted_per_side": {
                "type": "integer",
                "description": "accepted bids each side needs for a period to trade",
            },
            "stats": {
                "type": "object",
                "additionalProperties": {"type": "integer"},
                "description": "counts of periods whose gate has closed only (closed_periods,"
                " bids_in_closed_periods): nothing about an open period",
            },
            "signature": {**B64, "description": "Ed25519 by the server's signing key"},
        },
        "A server's signed account of the market it serves and of itself.",
    ),
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {
                "type": "string",
                "description": "a bid refusal reason, or not_finished / not_closed / forbidden "
                "/ unavailable",
                "enum": [r.value for r in Reason]
                + ["not_finished", "not_closed", "forbidden", "unavailable"],
            },
            "message": {"type": "string"},
        },
    },
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


ERRORS = {
    "400": _json("Error", "malformed (also: a payload over the size limit)"),
    "401": _json("Error", "bad_signature: a signature or token that does not verify; "
                 "unsigned: no signature or no token"),
    "409": _json("Error", "replayed or duplicate_pseudonym"),
    "422": _json("Error", "late or wrong_period"),
    "429": _json("Error", "too_frequent"),
}

#: The operators' routes (:mod:`sealgrid.service.metrics`): metrics, health, status page.
OPENAPI_PATHS: dict[str, Any] = {
    "/metrics": {
        "get": {
            "summary": "This server's metrics (Prometheus text format); request counts move"
                       " only at period boundaries",
            "responses": {"200": {"description": "text/plain; version=0.0.4"}},
        }
    },
    "/healthz": {
        "get": {
            "summary": "Whether this server's database answers; its party index; the peers"
                       " as last seen",
            "responses": {
                "200": {"description": "healthy: {status, party, database, peers}"},
                "503": {"description": "the database does not answer"},
            },
        }
    },
    "/status": {
        "get": {
            "summary": "A read-only HTML page: the last periods with status and price, the"
                       " peers, refusal counts",
            "responses": {"200": {"description": "text/html"}},
        }
    },
}


OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "sealgrid computation server",
        "version": "1",
        "description": "HTTPS API of one of the market's computation servers. Every message "
        "body is canonical JSON (sorted keys, base64 bytes, a type and a version v). "
        "Signatures are Ed25519 over 'sealgrid/v1/' + type + newline + the canonical JSON "
        "without the signature field.",
    },
    "paths": {
        "/v1/challenge": {
            "post": {
                "summary": "Get a fresh challenge (liveness) to sign into the next request",
                "responses": {
                    "200": {
                        "description": "a one-time nonce",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "nonce": B64,
                                        "expires": {"type": "string", "format": "date-time"},
                                    },
                                }
                            }
                        },
                    }
                },
            }
        },
        "/v1/periods/{period}/issuer": {
            "get": {
                "summary": "This server's issuer key for an open period",
                "parameters": [
                    {"name": "period", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": _json("IssuerKey", "the signed key"), **ERRORS},
            }
        },
        "/v1/pseudonyms": {
            "post": {
                "summary": "Evaluate a household's blinded tokens (once per household and"
                           " period, many periods in one request)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("TokenRequest")}},
                },
                "responses": {
                    "201": _json("TokenGrant", "stored; the evaluations with their proofs"),
                    **ERRORS,
                    "503": _json("Error", "unavailable: could not be stored, retry"),
                },
            }
        },
        "/v1/bids": {
            "post": {
                "summary": "Submit one bid share; the receipt comes after it is stored",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("PseudonymousBid")}},
                },
                "responses": {
                    "201": _json("Receipt", "stored; the signed receipt"),
                    **ERRORS,
                    "413": {"description": "request body over the size limit"},
                    "503": _json("Error", "unavailable: could not be stored, retry"),
                },
            }
        },
        "/v1/outputs": {
            "post": {
                "summary": "Fetch this server's share of one's own result or aggregate",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("AuthRequest")}},
                },
                "responses": {
                    "200": _json("OutputShares", "the signed share (or a status)"),
                    **ERRORS,
                },
            }
        },
        "/v1/enrol": {
            "post": {
                "summary": "A household enrols its settlement credential share (once)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("Enrolment")}},
                },
                "responses": {"200": _json("Enrolled", "stored (or already the same)"),
                              **ERRORS},
            }
        },
        "/v1/readings": {
            "post": {
                "summary": "A smart meter's reading of an ended period, before its deadline",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("MeterReading")}},
                },
                "responses": {"200": _json("ReadingReceipt", "stored; the signed receipt"),
                              **ERRORS},
            }
        },
        "/v1/hello": {
            "post": {
                "summary": "Challenge–response: a household proves it holds its registered key",
                "description": "AuthRequest with role household, subject the household key id, "
                "period empty, signed by the household's long-term key.",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("AuthRequest")}},
                },
                "responses": {"200": {"description": "registered: true"}, **ERRORS},
            }
        },
        "/v1/periods/{period}": {
            "get": {
                "summary": "The signed statement of a finished period (public)",
                "parameters": [
                    {"name": "period", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": _json("PeriodStatement", "the statement"),
                    "404": _json("Error", "not_finished"),
                    "422": _json("Error", "wrong_period: not a period"),
                },
            }
        },
        "/v1/internal/periods/{period}/bidset": {
            "get": {
                "summary": "This server's bid set of a closed period (other servers only)",
                "description": "Needs a client certificate of another computation server.",
                "parameters": [
                    {"name": "period", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": _json("BidSet", "the signed bid set"),
                    "403": _json("Error", "forbidden"),
                    "409": _json("Error", "not_closed"),
                    "422": _json("Error", "wrong_period: not a period"),
                },
            }
        },
        "/v1/internal/periods/{period}/settlement-set": {
            "get": {
                "summary": "This server's reading and enrolment sets of a period (servers only)",
                "description": "Needs a client certificate of another computation server.",
                "parameters": [
                    {"name": "period", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": _json("SettlementSet", "the signed sets"),
                    "403": _json("Error", "forbidden"),
                    "409": _json("Error", "not_closed"),
                    "422": _json("Error", "wrong_period: not a period"),
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
                "responses": {"200": {"description": "OpenAPI 3"}},
            }
        },
    },
    "components": {"schemas": SCHEMAS},
}
OPENAPI["paths"].update(OPENAPI_PATHS)
