"""Messages and their wire format; assumes Ed25519 keys and nothing about transport.

Every message is a frozen dataclass. On the wire it is canonical JSON: keys sorted, no
spaces, UTF-8, ``bytes`` as standard base64 strings, plus ``"type"`` and ``"v"`` (the wire
version). A signature covers ``DOMAIN || type || "\\n" || canonical JSON without the
signature field``, so a signature of one message type can never be replayed as another.
Signatures are checked by libsodium (``crypto_sign_verify_detached``, through ``pysodium``, the
library the VOPRF tokens already use): about half the CPU of OpenSSL's Ed25519 check, and
strict (a small-order or non-canonical key or ``R``, and ``S`` not below the group order, are
refused), which a signature made by any RFC 8032 signer meets.
Nothing from the network is ever unpickled: decoding only builds the dataclasses below
from str/int/bytes/list fields and refuses anything else.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import json
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pysodium
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

WIRE_VERSION = 1
DOMAIN = b"sealgrid/v1/"


class WireError(ValueError):
    """A message from a peer could not be decoded (the peer's mistake, not ours)."""


def canonical_json(obj: Any) -> bytes:
    """Return the canonical bytes of a JSON value: sorted keys, compact, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def b64e(data: bytes) -> str:
    """Encode bytes as standard base64 text."""
    return base64.b64encode(data).decode("ascii")


def b64d(text: str) -> bytes:
    """Decode standard base64 text strictly: only its one canonical spelling.

    Base64 has more than one spelling of the same bytes (the unused low bits of the last
    character before ``=`` padding may be set), so a text is accepted only if it is exactly
    what :func:`b64e` writes for the bytes it decodes to: a key or subject then has one name,
    and no re-spelling of it can miss a lookup made under the canonical one.

    Raises:
        WireError: the text is not valid base64, or not its canonical spelling.
    """
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise WireError("invalid base64") from exc
    if b64e(data) != text:
        raise WireError("not canonical base64 (padding bits set, or not padded)")
    return data


def sha256(data: bytes) -> bytes:
    """Return the SHA-256 digest of ``data``."""
    return hashlib.sha256(data).digest()


def set_digest(pseudonyms: Sequence[bytes]) -> bytes:
    """SHA-256 of a bid set's pseudonyms, concatenated in the order given (sorted, in every
    set and statement): a statement's ``bidset_sha256`` and a :class:`BidSetDigest`'s."""
    return hashlib.sha256(b"".join(pseudonyms)).digest()


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class TokenRequest:
    """A registered household asks one server for its pseudonyms' tokens, one per period.

    ``blinded[i]`` is the household's blinded element for ``periods[i]`` (RFC 9497's
    ``Blind`` of ``token_input(periods[i], pseudonym)``, see :mod:`sealgrid.service.voprf`):
    the server learns who asks and for which periods, never which pseudonym. The periods are
    distinct; ``signature`` is by the household's long-term key over this message, including
    a fresh challenge ``nonce`` of the server. One request may fetch tokens ahead for every
    open period of the horizon.
    """

    household: str
    nonce: bytes
    periods: tuple[str, ...]
    blinded: tuple[bytes, ...]
    signature: bytes = b""


@dataclass(frozen=True)
class IssuerKey:
    """A server's issuer key for one period (its ristretto255 public key), signed by it."""

    server: int
    period: str
    public: bytes
    signature: bytes = b""


@dataclass(frozen=True)
class TokenGrant:
    """A server's evaluations of a :class:`TokenRequest`, signed by the server.

    For each requested period ``periods[i]``: ``publics[i]`` the period's issuer key,
    ``evaluated[i]`` the blinded element under it, ``proofs[i]`` RFC 9497's DLEQ proof that
    the evaluation used that key (so a server cannot evaluate one household under a key of
    its own and recognise its token later).
    """

    server: int
    periods: tuple[str, ...]
    publics: tuple[bytes, ...]
    evaluated: tuple[bytes, ...]
    proofs: tuple[bytes, ...]
    signature: bytes = b""


@dataclass(frozen=True)
class PseudonymousBid:
    """One bid share as sent to one server, and all the server keeps of it.

    ``pseudonym`` is the raw Ed25519 public key of a fresh key for this period; ``token`` the
    server's VOPRF output on ``(period, pseudonym)``, unblinded by the household (this
    pseudonym belongs to some registered household, which one the server cannot tell; the
    server recomputes it with its period key); ``payload`` this server's
    share payload, opaque to the service (made by :mod:`sealgrid.protocol`); ``signature`` by
    the pseudonym key. No challenge is needed: a token buys one bid, so a replay can never
    count twice (it is refused as ``replayed``); the household's liveness was checked when the
    token was issued.
    """

    period: str
    server: int
    pseudonym: bytes
    token: bytes
    payload: bytes
    signature: bytes = b""


@dataclass(frozen=True)
class Receipt:
    """A server's signed statement that it has durably stored one bid share.

    It carries no time finer than ``period`` and no sequence number: nothing in it tells
    when, or in what order, the bid arrived, so it cannot be matched with the household's
    pseudonym request (docs/privacy.md, "Unlinkability").
    """

    server: int
    period: str
    pseudonym: bytes
    payload_sha256: bytes
    submission_sha256: bytes
    signature: bytes = b""


@dataclass(frozen=True)
class BidSet:
    """One server's set of accepted pseudonyms for a closed period (server to server).

    ``segments``: the segments of the period this server validated while it was open, one
    entry each, ``index (4 bytes, big-endian) || SHA-256`` of the segment's members and its
    joint challenge (docs/service.md, "Streaming"); the gate's clearing uses those every
    server lists alike.
    """

    server: int
    period: str
    pseudonyms: tuple[bytes, ...]
    segments: tuple[bytes, ...] = ()
    signature: bytes = b""


@dataclass(frozen=True)
class BidSetDigest:
    """A server's :class:`BidSet` of a closed period in a few bytes (server to server): its
    ``count`` pseudonyms, their ``sha256`` (sorted and concatenated, as a statement's
    ``bidset_sha256``) and its ``segments`` as the set lists them. A peer whose own set has
    the same count and digest holds the same set and needs no more; one whose differs fetches
    the whole set (docs/service.md, "Timeline and gate closure")."""

    server: int
    period: str
    count: int
    sha256: bytes
    segments: tuple[bytes, ...] = ()
    signature: bytes = b""


@dataclass(frozen=True)
class PendingSet:
    """One server's stored pseudonyms of a period still open that no segment holds yet, and
    the index its next segment takes (server to server, asked by the leader)."""

    server: int
    period: str
    next_segment: int
    pseudonyms: tuple[bytes, ...]
    signature: bytes = b""


@dataclass(frozen=True)
class SegmentPlan:
    """Segment ``index`` of a period still open, fixed by the leader (server 0, which signs
    it): pseudonyms every server holds and no segment has, sorted; every server checks it
    holds them all, records the segment and validates it with the others."""

    server: int
    period: str
    index: int
    pseudonyms: tuple[bytes, ...]
    signature: bytes = b""


@dataclass(frozen=True)
class PeriodStatement:
    """A server's signed account of one period: the agreed bid set and the public outcome.

    ``outcome`` is canonical JSON of the public results (price, volume) or of the reason
    the period did not clear; ``excluded`` are pseudonyms that did not reach every server;
    ``issuer_sha256`` the SHA-256 of the period's issuer key ``(n, e)``
    (:meth:`~sealgrid.service.blind.IssuerPublic.digest`; every household can check that it
    was issued under the same key as everyone else: no tagging).
    """

    server: int
    period: str
    bid_count: int
    bidset_sha256: bytes
    excluded: tuple[bytes, ...]
    status: str
    outcome: str
    gate_closure: str
    issuer_sha256: bytes
    signature: bytes = b""


@dataclass(frozen=True)
class AuthRequest:
    """A signed request to read protected data: ``subject`` is the pseudonym or key id."""

    role: str
    subject: str
    period: str
    nonce: bytes
    signature: bytes = b""


@dataclass(frozen=True)
class OutputShares:
    """This server's share of a protected output, signed; opaque bytes from the protocol."""

    server: int
    period: str
    role: str
    subject: str
    status: str
    shares: bytes
    public: str
    signature: bytes = b""


@dataclass(frozen=True)
class Enrolment:
    """A household's share of its settlement credential κ for one server, signed by the
    household key (sent once, in a named session; the bids carry κ in their shares)."""

    household: str
    server: int
    share: bytes  # one field element, 8 bytes little-endian
    signature: bytes = b""


@dataclass(frozen=True)
class Enrolled:
    """A server's signed acknowledgement of a household's credential share."""

    server: int
    household: str
    share_sha256: bytes
    signature: bytes = b""


@dataclass(frozen=True)
class MeterReading:
    """A smart meter's reading of one period for one server, signed by the meter's key:
    this server's shares of the household's claim (``protocol.billing.ClaimLayout``: its
    import, export, settled energy and deviation split as bits), little-endian u64."""

    household: str
    server: int
    period: str
    shares: bytes
    signature: bytes = b""


@dataclass(frozen=True)
class ReadingReceipt:
    """A server's signed receipt for a stored meter reading."""

    server: int
    period: str
    household: str
    shares_sha256: bytes
    signature: bytes = b""


@dataclass(frozen=True)
class SettlementSet:
    """A server's signed list of the households whose reading of a period it holds, and of
    those enrolled with it (peers intersect them before settling the period)."""

    server: int
    period: str
    readings: tuple[str, ...]
    enrolled: tuple[str, ...]
    signature: bytes = b""


@dataclass(frozen=True)
class Outcome:
    """The public outcome of one period, the same on every server (its canonical wire bytes
    are the ``outcome`` of a :class:`PeriodStatement` and the ``public`` of
    :class:`OutputShares`).

    ``status``: ``cleared`` (a price was set), ``no_trade`` (nothing could trade) or
    ``failed`` (the period could not be cleared; ``reason`` says why). ``level`` and ``price``
    (a decimal string on the grid) are set when the period traded; ``invalid_bids`` counts
    the bids the servers' joint validation refused. No quantity is public: the volume goes
    to the grid operators, each household's amount and each supplier's totals to their owner,
    all as shares.
    """

    status: str
    level: int | None = None
    price: str | None = None
    invalid_bids: int = 0
    reason: str = ""

    @property
    def traded(self) -> bool:
        """Whether a price was set and energy changed hands."""
        return self.level is not None


@dataclass(frozen=True)
class PriceGridInfo:
    """The price grid as published: decimal strings, currency per kWh."""

    floor: str
    ceiling: str
    tick: str


@dataclass(frozen=True)
class RateLimit:
    """How many signed pseudonym requests a household may make per window."""

    requests: int
    window_seconds: int


@dataclass(frozen=True)
class MarketInfo:
    """A server's signed account of the market it serves and of itself (``GET /v1/info``).

    Every client reads the market from this one message (see
    :func:`sealgrid.service.client.Client.market_info`); the market rules in it are equal on
    every server. ``now`` is the server's clock; ``stats`` counts only periods whose gate has
    closed (nothing about an open period).
    """

    party: int
    servers: int
    signing_key: bytes
    wire_version: int
    now: str
    period_seconds: int
    first_open_period: str
    max_payload_bytes: int
    rate_limit: RateLimit
    suppliers: tuple[str, ...]
    price_grid: PriceGridInfo
    max_quantity_wh: int
    min_accepted_per_side: int
    stats: dict[str, int]
    signature: bytes = b""


MESSAGE_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        TokenRequest,
        IssuerKey,
        TokenGrant,
        PseudonymousBid,
        Receipt,
        BidSet,
        BidSetDigest,
        PendingSet,
        SegmentPlan,
        PeriodStatement,
        AuthRequest,
        OutputShares,
        Outcome,
        MarketInfo,
    )
}

M = TypeVar("M")


def to_dict(msg: Any) -> dict[str, Any]:
    """Return the JSON-ready dict of a message, with ``type`` and ``v``."""
    out: dict[str, Any] = {"type": type(msg).__name__, "v": WIRE_VERSION}
    for f in dataclasses.fields(msg):
        out[f.name] = _encode_value(getattr(msg, f.name))
    return out


def _encode_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return b64e(value)
    if isinstance(value, tuple):
        return [_encode_value(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _encode_value(v) for k, v in value.items()}
    return value


def encode(msg: Any) -> bytes:
    """Return the canonical wire bytes of a message."""
    return canonical_json(to_dict(msg))


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_dict(cls: type[M], data: Any) -> M:
    """Build message ``cls`` from a decoded JSON object, checking every field's type.

    Raises:
        WireError: wrong type or version, a missing or unknown field, a wrongly typed value.
    """
    if not isinstance(data, dict):
        raise WireError("a message must be a JSON object")
    if data.get("type") != cls.__name__:
        raise WireError(f"expected a {cls.__name__} message")
    if data.get("v") != WIRE_VERSION:
        raise WireError(f"unsupported wire version (this server speaks v{WIRE_VERSION})")
    return _fields(cls, {k: v for k, v in data.items() if k not in ("type", "v")})


def _fields(cls: type[M], data: dict[str, Any]) -> M:
    """Build dataclass ``cls`` from the JSON object ``data`` (no ``type``/``v``)."""
    hints = _hints(cls)  # type: ignore[arg-type]
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    extra = set(data) - names
    if extra:
        raise WireError(f"unknown field {sorted(extra)[0]!r}")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            if f.default is not dataclasses.MISSING:
                continue
            raise WireError(f"missing field {f.name!r}")
        kwargs[f.name] = _decode_value(hints[f.name], data[f.name], f.name)
    return cls(**kwargs)


def _decode_value(hint: Any, value: Any, name: str) -> Any:
    if hint is bytes:
        if not isinstance(value, str):
            raise WireError(f"field {name!r} must be base64 text")
        return b64d(value)
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise WireError(f"field {name!r} must be an integer")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise WireError(f"field {name!r} must be text")
        return _text(value, name)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is types.UnionType and len(args) == 2 and type(None) in args:
        if value is None:
            return None
        (inner,) = (a for a in args if a is not type(None))
        return _decode_value(inner, value, name)
    if origin is tuple:
        (inner, _ellipsis) = args
        if not isinstance(value, list):
            raise WireError(f"field {name!r} must be a list")
        return tuple(_decode_value(inner, v, name) for v in value)
    if origin is dict:
        key_type, inner = args
        if not isinstance(value, dict) or key_type is not str:
            raise WireError(f"field {name!r} must be an object")
        return {_text(k, name): _decode_value(inner, v, name) for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise WireError(f"field {name!r} must be an object")
        return _fields(hint, value)  # type: ignore[arg-type]
    raise WireError(f"field {name!r} has an unsupported type")  # pragma: no cover


def _text(value: str, name: str) -> str:
    """Return ``value`` if it can be written as UTF-8 (JSON's ``\\ud800`` escape decodes to a
    lone surrogate, which cannot).

    Raises:
        WireError: the text holds a lone surrogate.
    """
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise WireError(f"field {name!r} holds a lone surrogate (not Unicode text)") from None
    return value


def decode(cls: type[M], raw: bytes) -> M:
    """Decode wire bytes into message ``cls``.

    Only the canonical spelling is accepted, so one message has exactly one byte form: a
    signed message cannot be re-spelled into a second, equally valid one.

    Raises:
        WireError: not UTF-8 JSON, not a valid ``cls`` message, or not in canonical form.
    """
    return _decoded(cls, raw)[0]


def decode_signed(cls: type[M], raw: bytes) -> tuple[M, bytes]:
    """:func:`decode`, and the bytes the message's signature covers (:func:`signing_bytes`),
    both from one pass over the message: for :func:`verify_bytes` on the intake's path.

    Raises:
        WireError: as :func:`decode`.
    """
    msg, body = _decoded(cls, raw)
    return msg, _signed(cls.__name__, body)


def _decoded(cls: type[M], raw: bytes) -> tuple[M, dict[str, Any]]:
    """The message ``raw`` is, and its :func:`to_dict` (see :func:`decode`)."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError("not a JSON document") from exc
    except RecursionError:
        raise WireError("JSON nested too deeply") from None
    msg = from_dict(cls, data)
    body = to_dict(msg)
    _canonical(body, raw)
    return msg, body


def _canonical(body: dict[str, Any], raw: bytes) -> None:
    """Check that ``raw`` is the canonical spelling of the message ``body`` (:func:`to_dict`).

    Raises:
        WireError: it is not, or the message holds text that is not Unicode.
    """
    try:
        canonical = canonical_json(body)
    except UnicodeEncodeError:  # a lone surrogate anywhere (every field is checked above)
        raise WireError("text that is not Unicode (a lone surrogate)") from None
    if canonical != bytes(raw):
        raise WireError("not canonical JSON (sorted keys, no spaces, UTF-8, standard base64)")


# --------------------------------------------------------------------------- signatures


def signing_bytes(msg: Any) -> bytes:
    """Return the bytes a signature on ``msg`` covers (every field but ``signature``)."""
    return _signed(type(msg).__name__, to_dict(msg))


def _signed(name: str, body: dict[str, Any]) -> bytes:
    """The bytes a signature covers, from a message's :func:`to_dict` (left as it was)."""
    unsigned = {k: v for k, v in body.items() if k != "signature"}
    return DOMAIN + name.encode() + b"\n" + canonical_json(unsigned)


def sign(msg: M, key: Ed25519PrivateKey) -> M:
    """Return ``msg`` with its ``signature`` field set by ``key``."""
    return dataclasses.replace(msg, signature=key.sign(signing_bytes(msg)))  # type: ignore[type-var]


def sign_encoded(msg: M, key: Ed25519PrivateKey) -> tuple[M, bytes]:
    """:func:`sign`, and the signed message's :func:`encode`, both from one pass over it."""
    body = to_dict(msg)
    signature = key.sign(_signed(type(msg).__name__, body))
    body["signature"] = b64e(signature)
    signed = dataclasses.replace(msg, signature=signature)  # type: ignore[type-var]
    return signed, canonical_json(body)


def verify(msg: Any, public: bytes | Ed25519PublicKey, signature: bytes | None = None) -> bool:
    """Return whether ``signature`` (default: ``msg.signature``) verifies under ``public``."""
    sig = msg.signature if signature is None else signature
    return verify_bytes(signing_bytes(msg), sig, public)


def verify_bytes(signed: bytes, signature: bytes, public: bytes | Ed25519PublicKey) -> bool:
    """Return whether ``signature`` is ``public``'s Ed25519 signature on ``signed`` (libsodium's
    strict check: see the module's docstring)."""
    raw = public if isinstance(public, bytes) else public.public_bytes_raw()
    try:
        pysodium.crypto_sign_verify_detached(signature, signed, raw)
    except ValueError:  # a wrong signature, or a signature or key of the wrong length
        return False
    return True


def raw_public(key: Ed25519PrivateKey) -> bytes:
    """Return the 32 raw bytes of ``key``'s public key."""
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
