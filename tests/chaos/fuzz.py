"""Seeded mutation fuzzing of the decoders and the intake; assumes no network and no clock.

The long variant of tests/security/test_fuzz.py, without hypothesis (a test-only package):
random bytes, random JSON shaped like each message, and valid signed bids with bytes flipped
or one field replaced, fed to ``wire.decode`` (every message type), ``BidShares.from_bytes``
and a real :class:`~sealgrid.service.intake.Intake`. A case *escapes* when anything but the
closed set of refusals comes out (``WireError``, ``BidRejected``, a ``Rejected`` event with
a :class:`~sealgrid.mechanism.bids.Reason`), or when a changed bid is accepted.

The texts it draws include what was found by trying against running servers (issue 13): lone
surrogates (JSON's ``\\ud800`` escapes, which decode to text that is not Unicode), periods at
the ends of what can be named (year 1, year 9999) and other spellings of the same base64
(:func:`respell`); every other intake event is a signed pseudonym request for such a period.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
import time
from typing import Any

from sealgrid.mechanism.bids import BidRejected, Reason
from sealgrid.protocol.encoding import _HEADER, BidShares, Layout, encode_bid
from sealgrid.service import wire
from sealgrid.service.household import Pseudonym, make_submission, token_request
from sealgrid.service.intake import IssuePseudonym, Rejected, SubmitBid
from tests.security.helpers import MARKET, NOW, PERIOD, World

#: Periods at the ends of what :mod:`datetime` can name, and near them (some are periods
#: whose gate closure or end cannot be named; some are not periods at all).
EXTREME_PERIODS = (
    "0001-01-01T00:00:00Z", "0001-01-01T00:15:00Z", "0001-01-01T00:30:00Z",
    "0001-01-01T00:45:00Z", "9999-12-31T23:45:00Z", "9999-12-31T23:30:00Z",
    "9999-12-31T23:15:00Z", "9999-12-31T00:00:00Z", "9999-12-01T00:00:00Z",
    "1970-01-01T00:00:00Z", "0001-01-01T00:00:00+00:00", "10000-01-01T00:00:00Z",
    "0000-12-31T23:45:00Z", "9999-12-31T23:59:59.999999Z",
)
#: Texts that are not Unicode: lone surrogates, as JSON's escapes decode them.
SURROGATES = ("\ud800", "\udfff", "a\udc80b", "\ud83d", "\ud800\ud800")

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def respell(text: str, bits: int = 1) -> str:
    """Another spelling of the same bytes in base64: ``bits`` set among the unused low bits
    of the last character before the padding (the text itself if it has no padding)."""
    body = text.rstrip("=")
    pad = len(text) - len(body)
    if not pad or not body:
        return text
    unused = 0b1111 if pad == 2 else 0b11
    last = _B64.index(body[-1]) | (bits & unused or 1)
    return body[:-1] + _B64[last] + "=" * pad


def _json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**31, 2**64, -(2**70), rng.randrange(-1000, 1000)])
    if kind == 3:
        return rng.choice(["", "AAAA", "x" * rng.randrange(50), "2026-11-22T21:45:00Z", "é\x00",
                           rng.choice(SURROGATES), rng.choice(EXTREME_PERIODS),
                           respell(wire.b64e(rng.randbytes(rng.choice([1, 2, 31, 32, 64]))),
                                   rng.randrange(1, 16))])
    if kind == 4:
        return rng.random() * 1e6
    if kind == 5:
        return [_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["a", "type", "v", "server", "payload"]): _json(rng, depth + 1)
            for _ in range(rng.randrange(4))}


def _message_like(rng: random.Random, cls: type) -> bytes:
    names = [f.name for f in dataclasses.fields(cls)]
    doc = {n: _json(rng) for n in names if rng.random() < 0.8}
    doc.update(type=cls.__name__, v=rng.choice([1, 1, 2, "1"]))
    return json.dumps(doc).encode()


def _flip(rng: random.Random, raw: bytes) -> bytes:
    buf = bytearray(raw)
    for _ in range(rng.randrange(1, 5)):
        buf[rng.randrange(len(buf))] ^= rng.randrange(1, 256)
    return bytes(buf)


def fuzz(cases: int, seed: int = 0) -> dict[str, Any]:
    """Run ``cases`` cases per target; return counts and the escapes (target 0)."""
    rng = random.Random(seed)
    started = time.perf_counter()
    escapes: dict[str, int] = {}
    counted: dict[str, int] = {}
    world = World(n=1)  # three servers' intake machines checking payloads, one household
    p, _ = world.pseudonym(next(iter(world.households)))
    machine = world.machines[0]
    good = make_submission(p, 0, encode_bid(True, 500, 3, 1, Layout.of(MARKET))[0].to_bytes())
    doc = json.loads(good)

    original = wire.decode(wire.PseudonymousBid, good)
    asker = World(n=1)  # a household asking for pseudonyms of odd periods, signed properly
    hid, hkey = next(iter(asker.households.items()))
    odd = (*EXTREME_PERIODS, PERIOD, "2026-11-22T21:46:00Z", "garbage", *SURROGATES)

    def note(target: str, what: str) -> None:
        key = f"{target}: {what}"
        escapes[key] = escapes.get(key, 0) + 1

    def same_message(raw: bytes) -> bool:
        try:
            return wire.decode(wire.PseudonymousBid, raw) == original
        except wire.WireError:
            return False

    for round_ in range(cases):
        for cls in wire.MESSAGE_TYPES.values():
            raw = _message_like(rng, cls) if rng.random() < 0.6 else rng.randbytes(
                rng.randrange(300))
            counted["wire"] = counted.get("wire", 0) + 1
            try:
                wire.decode(cls, raw)
            except wire.WireError:
                pass
            except Exception as exc:
                note("wire", f"{cls.__name__} {type(exc).__name__}")
        head = _HEADER.pack(b"SGB1", rng.choice([2, 2, 1]), rng.randrange(4),
                            rng.choice([0, 1, 6, 256, 2**32 - 1]), rng.choice([0, 1, 2, 9]),
                            rng.choice([0, 1, 10_000, 2**31, 2**32 - 1]), rng.choice([0, 1, 2]))
        for raw in (rng.randbytes(rng.randrange(600)), head + rng.randbytes(8 * 37)):
            counted["shares"] = counted.get("shares", 0) + 1
            try:
                BidShares.from_bytes(raw)
            except BidRejected as exc:
                if exc.reason is not Reason.MALFORMED:
                    note("shares", f"reason {exc.reason}")
            except Exception as exc:
                note("shares", type(exc).__name__)
        if rng.random() < 0.5:
            mutated = _flip(rng, good)
        else:
            key = rng.choice(sorted(doc))
            mutated = json.dumps({**doc, key: _json(rng)}, sort_keys=True).encode()
        asking: tuple[Any, IssuePseudonym] = (machine, IssuePseudonym(NOW, mutated))
        if rng.random() < 0.5:  # a properly signed request for an odd period instead
            later = NOW + dt.timedelta(seconds=61 * round_)  # a new rate window each round
            nonce = asker.nonce(0, later)
            raw, _ = token_request([Pseudonym.fresh(PERIOD)], hid, hkey, nonce)
            signed = dataclasses.replace(wire.decode(wire.TokenRequest, raw),
                                         periods=(rng.choice(odd),))
            try:
                ask = wire.encode(wire.sign(signed, hkey))
            except UnicodeEncodeError:  # a lone surrogate: only its JSON escape can be sent
                body = {**wire.to_dict(signed), "signature": wire.b64e(hkey.sign(b"?"))}
                ask = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
            asking = (asker.machines[0], IssuePseudonym(later, ask))
        for target, event in ((machine, SubmitBid(NOW, mutated)), asking):
            counted["intake"] = counted.get("intake", 0) + 1
            try:
                (out,) = target.receive(event)
            except Exception as exc:
                note("intake", type(exc).__name__)
                continue
            if isinstance(event, SubmitBid) and not isinstance(out, Rejected):
                if same_message(mutated):  # another JSON spelling of the same signed bid
                    counted["same_bid_respelled"] = counted.get("same_bid_respelled", 0) + 1
                else:
                    note("intake", "a changed bid was accepted")
    targets = {k: v for k, v in counted.items() if k != "same_bid_respelled"}
    return {"cases": sum(targets.values()), "by_target": counted,
            "escapes": sum(escapes.values()), "escape_kinds": escapes,
            "seconds": round(time.perf_counter() - started, 2)}
