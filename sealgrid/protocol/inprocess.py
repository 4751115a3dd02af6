"""All servers in one process, for quick tests only: assumes nothing secret is at stake.

The parties' local share arithmetic is exactly the code the real servers run; their messages
pass through memory. The clearing step reconstructs the curves and runs the same oblivious
algorithm in a one-party MPyC runtime, so one process sees everything: never use this mode
for real bids (the real mode runs each server as its own process over mutual TLS).
"""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import Sequence
from itertools import combinations
from typing import TYPE_CHECKING, Any

import numpy as np

from sealgrid.protocol import field as F
from sealgrid.protocol.encoding import ShareBatch, threshold
from sealgrid.protocol.mpcclear import Public
from sealgrid.protocol.party import (
    SEC_PARAM,
    SECINT_BITS,
    PartyResult,
    Segment,
    serve_period,
    validate_segment,
)

if TYPE_CHECKING:
    from sealgrid.protocol.billing import SettleInput, SettleResult


def one_party_mpc() -> Any:
    """Import MPyC's runtime without letting it read this program's command line."""
    argv = sys.argv
    sys.argv = argv[:1]
    try:
        from mpyc.runtime import mpc
    finally:
        sys.argv = argv
    if len(mpc.parties) != 1:
        raise RuntimeError("the in-process mode needs MPyC's one-party runtime")
    mpc.options.sec_param = SEC_PARAM
    return mpc


class Hub:
    """Memory mailboxes shared by the in-process parties."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.t = threshold(parties)
        self.boxes: dict[tuple[str, int], list[Any]] = {}
        self.ready: dict[tuple[str, int], asyncio.Event] = {}
        self.keys = {s: secrets.token_bytes(16)
                     for s in combinations(range(parties), parties - self.t)}
        self.sent = [0] * parties
        self.mpc = one_party_mpc()

    async def meet(self, tag: str, rnd: int, pid: int, item: Any) -> list[Any]:
        key = (tag, rnd)
        box = self.boxes.setdefault(key, [None] * self.parties)
        event = self.ready.setdefault(key, asyncio.Event())
        box[pid] = item
        if all(b is not None for b in box):
            event.set()
        await event.wait()
        return box


class HubTransport:
    """One in-process party's view of the :class:`Hub`."""

    def __init__(self, hub: Hub, pid: int) -> None:
        self.hub = hub
        self.pid = pid
        self.parties = hub.parties
        self.threshold = hub.t
        self.prss_keys = {s: k for s, k in hub.keys.items() if pid in s}
        self.round = 0

    def _next(self) -> int:
        self.round += 1
        return self.round

    async def all_to_all(self, own: np.ndarray) -> list[np.ndarray]:
        self.hub.sent[self.pid] += own.nbytes * (self.parties - 1)
        return [np.asarray(x) for x in await self.hub.meet("a2a", self._next(), self.pid, own)]

    async def scatter(self, parts: list[np.ndarray]) -> list[np.ndarray]:
        self.hub.sent[self.pid] += sum(p.nbytes for i, p in enumerate(parts) if i != self.pid)
        boxes = await self.hub.meet("scatter", self._next(), self.pid, parts)
        return [np.asarray(b[self.pid]) for b in boxes]

    async def clear(
        self, demand: np.ndarray, supply: np.ndarray, bound: int,
        counts: tuple[np.ndarray, np.ndarray] | None, min_per_side: int,
    ) -> tuple[Public, np.ndarray]:
        rnd = self._next()
        boxes = await self.hub.meet("clear", rnd, self.pid, (demand, supply, counts))
        mine = await self._clear_once(boxes, bound, min_per_side) if self.pid == 0 else True
        result = await self.hub.meet("cleared", rnd, self.pid, mine)
        public, volume_shares = result[0]
        return public, volume_shares[self.pid]

    async def _clear_once(self, boxes: Sequence[Any], bound: int,
                          min_per_side: int) -> tuple[Public, list[np.ndarray]]:
        from sealgrid.protocol.mpcclear import clear_curves

        mpc = self.hub.mpc
        secint = mpc.SecInt(SECINT_BITS, p=F.MODULUS)

        def wrap(i: int, j: int | None = None) -> Any:
            parts = [b[i] if j is None else b[i][j] for b in boxes]
            v = F.reconstruct(parts, self.threshold)
            return secint.array(secint.field.array(np.array([int(a) for a in v], dtype=object)))

        counts = None if boxes[0][2] is None else (wrap(2, 0), wrap(2, 1))
        public, volume = await clear_curves(mpc, wrap(0), wrap(1), bound, counts, min_per_side)
        value = 0
        if volume is not None:  # one party holds the whole value as its "share"
            share = await mpc.gather(volume)
            value = int(share.value if hasattr(share, "value") else share)
        coeffs = [F.stream(secrets.token_bytes(16), f"volume/{j}", 1)
                  for j in range(self.threshold)]
        return public, F.share(F.from_ints([value]), self.threshold, self.parties, coeffs)

    async def floor_shift(self, values: np.ndarray, bits: int, shift: int) -> np.ndarray:
        """Reconstructs in memory (tests only), like :meth:`clear`."""
        rnd = self._next()
        boxes = await self.hub.meet("floor", rnd, self.pid, values)
        x = F.reconstruct([np.asarray(b, dtype=F.U64) for b in boxes], self.threshold)
        if np.any(x >= np.uint64(1 << bits)):
            raise ValueError("floor_shift: a value is outside its stated bits")
        coeffs = [F.stream(bytes(16) + rnd.to_bytes(4, "little"), f"floor/{j}", x.size)
                  for j in range(self.threshold)]
        return F.share(x >> np.uint64(shift), self.threshold, self.parties, coeffs)[self.pid]

    def bytes_sent(self) -> int:
        return self.hub.sent[self.pid]


def run_in_process(batches: Sequence[ShareBatch], min_per_side: int = 1,
                   segments: Sequence[int] = ()) -> list[PartyResult]:
    """Run every party's :func:`serve_period` in this process; return their results.

    ``segments``: sizes of leading segments of the batch validated one after another first
    (with :func:`~sealgrid.protocol.party.validate_segment`, as while a period is open).
    """
    if batches and sum(segments) > len(batches[0]):
        raise ValueError("the validated segments do not fit this batch")
    hub = Hub(len(batches))
    transports = [HubTransport(hub, i) for i in range(len(batches))]

    async def one(batch: ShareBatch, tr: HubTransport) -> PartyResult:
        done: list[Segment] = []
        first = 0
        for size in segments:
            part = ShareBatch(batch.party, batch.layout, batch.rows[first:first + size])
            done.append(await validate_segment(part, tr, min_per_side))
            first += size
        return await serve_period(batch, tr, min_per_side, done)

    async def all_parties() -> list[PartyResult]:
        return list(await asyncio.gather(*(one(b, tr)
                                           for b, tr in zip(batches, transports, strict=True))))

    results: list[PartyResult] = hub.mpc.run(all_parties())
    return results


def settle_in_process(inputs: Sequence[SettleInput]) -> list[SettleResult]:
    """Run every party's :func:`~sealgrid.protocol.billing.settle_period` in this process."""
    from sealgrid.protocol.billing import settle_period

    hub = Hub(len(inputs))
    transports = [HubTransport(hub, i) for i in range(len(inputs))]

    async def all_parties() -> list[SettleResult]:
        return list(await asyncio.gather(*(settle_period(tr, inp)
                                           for inp, tr in zip(inputs, transports, strict=True))))

    results: list[SettleResult] = hub.mpc.run(all_parties())
    return results
