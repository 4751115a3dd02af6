"""Seeded mutation fuzzing of the decoders and the intake; assumes no network and no clock.

The long variant of tests/security/test_fuzz.py, without hypothesis (a test-only package):
random bytes, random JSON shaped like each message, and valid signed bids with bytes flipped
or one field replaced, fed to ``wire.decode`` (every message type), ``BidShares.from_bytes``
and a real :class:`~sealgrid.service.intake.Intake`. A case *escapes* when anything but the
closed set of refusals comes out (``WireError``, ``BidRejected``, a ``Rejected`` event with
a :class:`~sealgrid.mechanism.bids.Reason`), or when a changed bid is accepted.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from typing import Any

from sealgrid.mechanism.bids import BidRejected, Reason
from sealgrid.protocol.encoding import _HEADER, BidShares, Layout, encode_bid
from sealgrid.service import wire
from sealgrid.service.household import make_submission
from sealgrid.service.intake import IssuePseudonym, Rejected, SubmitBid
from tests.security.helpers import MARKET, NOW, World


def _json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**31, 2**64, -(2**70), rng.randrange(-1000, 1000)])
    if kind == 3:
        return rng.choice(["", "AAAA", "x" * rng.randrange(50), "2026-11-22T21:45:00Z", "é\x00"])
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

    def note(target: str, what: str) -> None:
        key = f"{target}: {what}"
        escapes[key] = escapes.get(key, 0) + 1

    def same_message(raw: bytes) -> bool:
        try:
            return wire.decode(wire.PseudonymousBid, raw) == original
        except wire.WireError:
            return False

    for _ in range(cases):
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
        for event in (SubmitBid(NOW, mutated), IssuePseudonym(NOW, mutated)):
            counted["intake"] = counted.get("intake", 0) + 1
            try:
                (out,) = machine.receive(event)
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
