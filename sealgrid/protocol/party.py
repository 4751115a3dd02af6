"""A computation server's clearing routine; assumes honest-majority, semi-honest servers.

:func:`serve_period` takes only this party's stored share batch and a :class:`Transport` (the
MPyC runtime between real processes, or an in-process hub for quick tests) and runs: public
challenge → validation of every bid (one opening) → curves → oblivious clearing → outputs.
It returns this party's output shares and the public results.

Run as a process: ``python -m sealgrid.protocol.party --data-dir DIR -M3 -I i -B PORT --ssl
-K 26`` with DIR as the working directory (MPyC reads ``.config/`` from there). It reads
``DIR/shares.bin`` and writes ``DIR/result.json``, ``DIR/households.u64`` and
``DIR/suppliers.u64``.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # one BLAS thread per server process: m servers share the cores
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import asyncio
import contextlib
import functools
import json
import resource
import secrets
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from sealgrid.protocol import field as F
from sealgrid.protocol.disclosure import reveal_shares
from sealgrid.protocol.encoding import RATIO_LIMIT, ShareBatch
from sealgrid.protocol.mpcclear import Public
from sealgrid.protocol.validation import PartyState, seed_from

#: Bit length of the servers' secure integers, and the statistical security parameter, chosen
#: so that MPyC's field is exactly GF(2^64 − 189) (see docs/privacy.md).
SECINT_BITS = 36
SEC_PARAM = 26
#: Curves and differences must stay below 2^(SECINT_BITS − 2) for the comparisons to be exact.
CURVE_LIMIT = 2 ** (SECINT_BITS - 2)


class PeerTimeout(RuntimeError):
    """A peer server did not answer in time (dead, frozen or unreachable)."""


class Transport(Protocol):
    """How one party talks to the others."""

    @property
    def pid(self) -> int: ...
    @property
    def parties(self) -> int: ...
    @property
    def threshold(self) -> int: ...
    @property
    def prss_keys(self) -> Mapping[tuple[int, ...], bytes]: ...

    async def all_to_all(self, own: np.ndarray) -> list[np.ndarray]:
        """Send ``own`` to every party; return every party's array (index = party)."""
        ...

    async def scatter(self, parts: list[np.ndarray]) -> list[np.ndarray]:
        """Send ``parts[j]`` to party ``j``; return what every party sent here (index = sender)."""
        ...

    async def clear(
        self, demand: np.ndarray, supply: np.ndarray, bound: int,
        counts: tuple[np.ndarray, np.ndarray] | None, min_per_side: int,
    ) -> tuple[Public, np.ndarray]:
        """Run the oblivious clearing on shared curves (and count curves), opening only whether
        and where the period trades; return that and this party's degree-t share of V(k*)."""
        ...

    async def floor_shift(self, values: np.ndarray, bits: int, shift: int) -> np.ndarray:
        """Degree-t shares of ``⌊x / 2^shift⌋`` for shared integers ``0 ≤ x < 2^bits``, exact
        (a secure bit decomposition); nothing is opened."""
        ...

    def bytes_sent(self) -> int:
        """Bytes this party has sent to its peers so far."""
        ...


class Laps:
    """Seconds per named phase, each from the end of the one before (``lap(name)``)."""

    def __init__(self, start: float) -> None:
        self.phases: dict[str, float] = {}
        self._mark = start

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = now - self._mark
        self._mark = now


@dataclass(frozen=True)
class PartyResult:
    """What one server ends a period with."""

    public: Public
    rejected: np.ndarray  # bid slots whose shares failed validation
    households: np.ndarray  # this party's share of accepted·q·V/L per bid slot (L: its side)
    suppliers: np.ndarray  # shares of each supplier's (Q_buy, Q_buy·V/D, Q_sell, Q_sell·V/S)
    volume: np.ndarray  # this party's share of V(k*) (0 without trade), for the grid operators
    accepted: np.ndarray  # shares of each bid's accepted buy and sell quantity, shape (2, N)
    ratios: np.ndarray  # shares of V/D(k*) and V/S(k*) (0 without trade), for the settlement
    online_seconds: float
    bytes_sent: int
    peak_rss_bytes: int
    phases: dict[str, float]


@dataclass(frozen=True)
class Segment:
    """What validating a segment of a period's bids leaves this party (nothing opened but the
    validity checks): which rows passed, and its degree-2t limb sums over the valid rows —
    ``Σ w ⊗ e`` for the curves and, when the market asks for a minimum participation,
    ``Σ w ⊗ e/q`` for the count curves. Segments validated one after another (as bids
    arrive) add up to what one validation of all of them gives."""

    valid: np.ndarray  # bool, one per row of the segment
    products: np.ndarray  # u64 limb sums (see PartyState.valid_products)
    counts: np.ndarray | None  # u64 limb sums (PartyState.count_products), or None
    seed: bytes = b""  # the segment's public challenge seed


async def _challenge(net: Transport) -> bytes:
    """A public seed drawn jointly after the inputs are fixed (every party adds randomness)."""
    own = np.frombuffer(secrets.token_bytes(32), dtype="<u8").astype(F.U64)
    return seed_from([c.tobytes() for c in await reveal_shares("challenge_seed", own,
                                                               net.all_to_all)])


async def validate_segment(batch: ShareBatch, net: Transport, min_per_side: int = 1,
                           lap: Callable[[str], None] | None = None) -> Segment:
    """Validate one segment of bids jointly (a fresh challenge, drawn after the segment is
    fixed; the validity values opened) and sum this party's shares over its valid bids.

    ``lap``, when given, is told the end of each phase.
    """
    state = PartyState(batch, net.pid, net.parties, net.threshold, net.prss_keys)
    n = len(batch)
    seed = await _challenge(net)
    tick = lap or (lambda name: None)
    tick("challenge")
    masked = state.check(seed)
    tick("validate_local")
    opened = await reveal_shares(("validity_check", "degree_check"), masked, net.all_to_all)
    valid = state.accept([o.reshape(2, n) for o in opened]).copy()
    tick("validate_open")
    counts = None
    if min_per_side > 1:  # count curves: Σ w ⊗ (e / q), i.e. one per bid at its side and level
        masked_q, masks = state.masked_quantities(seed)
        z = await reveal_shares("masked_quantities", masked_q, net.all_to_all)
        e_scaled = await reshare(net, state.scaled_fine(masks, F.combine(z, state.weights_2t)))
        counts = state.count_products(e_scaled)
    return Segment(valid, state.valid_products(), counts, seed)


async def serve_period(
    batch: ShareBatch, net: Transport, min_per_side: int = 1,
    segments: Sequence[Segment] = (),
) -> PartyResult:
    """Validate, aggregate and clear one period on this party's shares.

    ``min_per_side``: accepted bids each side needs for the period to trade (1: the papers').
    ``segments``: the first rows of ``batch``, already validated in that order (with
    :func:`validate_segment`, while the period was open); only the rows after them are
    validated here.
    """
    lay = batch.layout
    n = len(batch)
    bound = n * lay.max_quantity_wh + 1
    if bound >= RATIO_LIMIT:
        raise ValueError("bids × maximum quantity is too large for the exact rationing")
    done = sum(len(g.valid) for g in segments)
    if done > n or any((g.counts is None) != (min_per_side <= 1) for g in segments):
        raise ValueError("the validated segments do not fit this batch and market")
    await net.all_to_all(np.zeros(1, dtype=F.U64))  # line the parties' clocks up
    start = time.perf_counter()
    cpu_start = time.process_time()
    lap = Laps(start)
    phases = lap.phases
    rest = await validate_segment(ShareBatch(batch.party, lay, batch.rows[done:]), net,
                                  min_per_side, lap)
    parts_all = [*segments, rest]
    state = PartyState(batch, net.pid, net.parties, net.threshold, net.prss_keys)
    state.valid = np.concatenate([g.valid for g in parts_all])
    seed = rest.seed  # drawn after every input of the period was fixed
    products = _sum(g.products for g in parts_all)
    parts = [*state.cumulative(products)]
    if min_per_side > 1:
        parts += [*state.cumulative(_sum(g.counts for g in parts_all  # type: ignore[misc]
                                         ))]
    curves = (await reshare(net, np.concatenate(parts))).reshape(len(parts), -1)
    demand, supply = curves[0], curves[1]
    counts = (curves[2], curves[3]) if min_per_side > 1 else None
    lap("curves")
    public, volume = await net.clear(demand, supply, bound, counts, min_per_side)
    lap("clearing")
    sides = (await reshare(net, state.accepted(public.level).reshape(-1))).reshape(2, n)
    totals = await reshare(net, state.supplier_totals(sides))
    s_count = lay.suppliers
    ratios = np.zeros(2, dtype=F.U64)
    if public.level is None:
        households = np.zeros(n, dtype=F.U64)
        suppliers = np.zeros(4 * s_count, dtype=F.U64)
    else:
        ratios = await _ratios(net, state, seed, demand[public.level], supply[public.level],
                               volume)
        products_out = np.concatenate([
            F.add(F.mul(sides[0], ratios[0]), F.mul(sides[1], ratios[1])),
            F.mul(totals[:s_count], ratios[0]), F.mul(totals[s_count:], ratios[1]),
        ])
        fresh = await reshare(net, products_out)
        households = fresh[:n]
        suppliers = np.concatenate([totals[:s_count], fresh[n:n + s_count],
                                    totals[s_count:], fresh[n + s_count:]])
    lap("outputs")
    online = time.perf_counter() - start
    phases["cpu"] = time.process_time() - cpu_start  # this party's CPU seconds, all phases
    peak = peak_memory_bytes()
    return PartyResult(public, np.flatnonzero(~state.valid), households, suppliers,
                       np.asarray(volume, dtype=F.U64).reshape(1), sides, ratios, online,
                       net.bytes_sent(), peak, phases)


def _sum(arrays: Iterable[np.ndarray]) -> np.ndarray:
    """The sum of limb-sum matrices (uint64, wrapping exactly as one accumulation would)."""
    items = list(arrays)
    total = items[0].copy()
    for a in items[1:]:
        total += a
    return total


async def _ratios(net: Transport, state: PartyState, seed: bytes, d_k: np.uint64,
                  s_k: np.uint64, volume: np.ndarray) -> np.ndarray:
    """Degree-t shares of ``V/D(k*)`` and ``V/S(k*)`` as field elements (1 on the short side).

    Each divisor is inverted by masking: the servers open ``D·r`` for a fresh random ``r``
    (uniform on the non-zero field elements, as ``D > 0``), invert it in the clear and
    multiply back by ``r``; ``D`` itself is never opened.
    """
    masked, r = state.masked_divisors(seed, np.array([d_k, s_k], dtype=F.U64))
    opened = await reveal_shares(("masked_demand_at_clearing", "masked_supply_at_clearing"),
                                 masked, net.all_to_all)
    inverse = F.inverse(F.combine(opened, state.weights_2t))
    scaled = F.mul(F.mul(r, inverse), np.repeat(np.asarray(volume, dtype=F.U64), 2))
    return await reshare(net, scaled)


def peak_memory_bytes() -> int:
    """This process's peak resident memory (VmHWM; it restarts at exec, unlike ru_maxrss)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def reshare(net: Transport, values: np.ndarray) -> np.ndarray:
    """Turn degree-2t shares into fresh degree-t shares of the same values (one round).

    Every party shares its value with a fresh random degree-t polynomial; each combines the
    pieces it receives with the Lagrange weights of the degree-2t sharing at 0.
    """
    m, t = net.parties, net.threshold
    key = secrets.token_bytes(16)
    coeffs = [F.stream(key, f"reshare/{j}", values.size).reshape(values.shape) for j in range(t)]
    pieces = await net.scatter(F.share(values, t, m, coeffs))
    return F.combine(pieces, F.lagrange_at(list(range(1, m + 1)), 0))


class MpycTransport:
    """The MPyC runtime as a :class:`Transport`; every wait on a peer has a timeout."""

    def __init__(self, mpc: Any, timeout: float) -> None:
        self.mpc = mpc
        self.pid = mpc.pid
        self.parties = len(mpc.parties)
        self.threshold = mpc.threshold
        self.prss_keys: dict[tuple[int, ...], bytes] = dict(mpc._prss_keys)
        self.timeout = timeout
        self.secint = mpc.SecInt(SECINT_BITS, p=F.MODULUS)

    async def _wait(self, awaitable: Any) -> Any:
        try:
            return await asyncio.wait_for(awaitable, self.timeout)
        except TimeoutError:
            raise PeerTimeout(f"no answer from a peer server within {self.timeout:g} s") from None

    async def all_to_all(self, own: np.ndarray) -> list[np.ndarray]:
        data = await self._wait(self.mpc.transfer(np.ascontiguousarray(own, "<u8").tobytes()))
        return [np.frombuffer(d, dtype="<u8").astype(F.U64) for d in data]

    async def scatter(self, parts: list[np.ndarray]) -> list[np.ndarray]:
        calls = []
        for i in range(self.parties):
            for j in range(self.parties):
                if i != j:
                    mine = (np.ascontiguousarray(parts[j], "<u8").tobytes()
                            if i == self.pid else None)
                    calls.append((i, j, self.mpc.transfer(mine, senders=[i], receivers=[j])))
        done = await self._wait(asyncio.gather(*(c for _, _, c in calls)))
        got = [parts[self.pid]] * self.parties
        for (i, j, _), data in zip(calls, done, strict=True):
            if j == self.pid:
                got[i] = np.frombuffer(data[0], dtype="<u8").astype(F.U64).reshape(parts[i].shape)
        return got

    async def clear(
        self, demand: np.ndarray, supply: np.ndarray, bound: int,
        counts: tuple[np.ndarray, np.ndarray] | None, min_per_side: int,
    ) -> tuple[Public, np.ndarray]:
        from sealgrid.protocol.mpcclear import clear_curves

        field = self.secint.field

        def wrap(v: np.ndarray) -> Any:
            return self.secint.array(field.array(np.array([int(a) for a in v], dtype=object)))

        wrapped = None if counts is None else (wrap(counts[0]), wrap(counts[1]))
        public, volume = await self._wait(
            clear_curves(self.mpc, wrap(demand), wrap(supply), bound, wrapped, min_per_side))
        if volume is None:
            return public, np.zeros(1, dtype=F.U64)
        share = await self._wait(self.mpc.gather(volume))  # this party's share, not opened
        return public, F.from_ints([int(share.value if hasattr(share, "value") else share)])

    async def floor_shift(self, values: np.ndarray, bits: int, shift: int) -> np.ndarray:
        if not len(values):
            return np.zeros(0, dtype=F.U64)
        field = self.secint.field
        x = self.secint.array(field.array(np.array([int(a) for a in values], dtype=object)))
        high = self.mpc.np_to_bits(x, l=bits)[:, shift:]
        weights = np.array([1 << i for i in range(bits - shift)], dtype=object)
        floor = high @ self.secint.field.array(weights)
        share = await self._wait(self.mpc.gather(floor))
        raw = share.value if hasattr(share, "value") else share
        return F.from_ints([int(v) for v in np.asarray(raw, dtype=object).reshape(-1)])

    def bytes_sent(self) -> int:
        return sum(p.protocol.nbytes_sent for p in self.mpc.parties if p.pid != self.pid)


def write_result(directory: Path, result: PartyResult) -> None:
    """Write a party's result files (JSON for public values, raw little-endian shares)."""
    info = {
        "version": 2,
        "public": asdict(result.public),
        "rejected": [int(i) for i in result.rejected],
        "online_seconds": result.online_seconds,
        "bytes_sent": result.bytes_sent,
        "peak_rss_bytes": result.peak_rss_bytes,
        "phases": result.phases,
    }
    (directory / "households.u64").write_bytes(result.households.astype("<u8").tobytes())
    (directory / "suppliers.u64").write_bytes(result.suppliers.astype("<u8").tobytes())
    (directory / "volume.u64").write_bytes(result.volume.astype("<u8").tobytes())
    (directory / "accepted.u64").write_bytes(result.accepted.astype("<u8").tobytes())
    (directory / "ratios.u64").write_bytes(result.ratios.astype("<u8").tobytes())
    (directory / "result.json").write_text(json.dumps(info))


def write_segment(path: Path, segment: Segment) -> None:
    """Write what validating one segment left this party (:func:`read_segment` reads it)."""
    valid = np.asarray(segment.valid, dtype=bool)
    products = np.asarray(segment.products, dtype="<u8")
    seed = np.frombuffer(segment.seed, dtype=np.uint8)
    with open(path, "wb") as out:
        if segment.counts is None:
            np.savez(out, valid=valid, products=products, seed=seed)
        else:
            np.savez(out, valid=valid, products=products, seed=seed,
                     counts=np.asarray(segment.counts, dtype="<u8"))


def read_segment(path: Path) -> Segment:
    """Read what :func:`write_segment` wrote.

    Raises:
        ValueError: the file is not a segment result.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            counts = data["counts"].astype(F.U64) if "counts" in data.files else None
            return Segment(data["valid"].astype(bool), data["products"].astype(F.U64), counts,
                           data["seed"].tobytes())
    except (OSError, KeyError, ValueError, EOFError) as exc:
        raise ValueError(f"{path.name}: not a segment result ({exc})") from None


def read_result(directory: Path) -> PartyResult:
    """Read what :func:`write_result` wrote."""
    info = json.loads((directory / "result.json").read_text())
    return PartyResult(
        public=Public(**info["public"]),
        rejected=np.array(info["rejected"], dtype=np.int64),
        households=np.fromfile(directory / "households.u64", dtype="<u8").astype(F.U64),
        suppliers=np.fromfile(directory / "suppliers.u64", dtype="<u8").astype(F.U64),
        volume=np.fromfile(directory / "volume.u64", dtype="<u8").astype(F.U64),
        accepted=np.fromfile(directory / "accepted.u64", dtype="<u8").astype(F.U64).reshape(2, -1),
        ratios=np.fromfile(directory / "ratios.u64", dtype="<u8").astype(F.U64),
        online_seconds=float(info["online_seconds"]),
        bytes_sent=int(info["bytes_sent"]),
        peak_rss_bytes=int(info["peak_rss_bytes"]),
        phases={k: float(v) for k, v in info["phases"].items()},
    )


#: The first argument of a party started ahead of its work (:func:`warm`).
WARM = "--warm"
#: The MPyC options every party runs with that the ``mpyc`` package itself reads, from the
#: command line, the first time any of its modules is imported (its logging level): a party
#: started ahead is started with them, so that it runs as one started with its whole command
#: line does.
PACKAGE_OPTIONS = ("--log-level", "warning")


def warm() -> int:
    """Entry point of a party started ahead of its work (``python -m sealgrid.protocol.party
    --warm`` and :data:`PACKAGE_OPTIONS`): import what the clearing needs, except
    ``mpyc.runtime``, which reads the rest of its options from the command line at import;
    then wait for one line on standard input, a JSON object ``{"argv": [...], "cwd": DIR,
    "log": FILE}``, and run :func:`main` as if started with that command line in that
    directory, its output going to that file. Standard input closed without a line (the
    server stopped or took none) ends it quietly; a command line without the options it was
    started with is refused (exit 2), since the ``mpyc`` package has read them already.

    With ``"staged": true`` in that line the work comes in two steps (:func:`run_staged`):
    the line names the MPC options and ``DIR`` but not the batch, which is not written yet;
    the party links to its peers at once and reads a second line, ``{"argv": [...]}``, the
    rest of its command line, once ``DIR/shares.bin`` is there.

    It saves the work's start the imports' time (about a quarter of a second), which at gate
    closure lies between the gate and the results.
    """
    import importlib

    started_with = sys.argv[2:]
    for name in ("configparser", "pickle", "ssl"):
        importlib.import_module(name)
    for name in ("asyncoro", "finfields", "mpctools", "sectypes", "thresha", "secgroups",
                 "random", "statistics", "seclists", "secpols"):
        importlib.import_module(f"mpyc.{name}")  # what mpyc.runtime imports, before argv

    line = sys.stdin.readline()
    if not line.strip():
        return 0
    job = json.loads(line)
    out = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    os.chdir(job["cwd"])
    argv = [str(a) for a in job["argv"]]
    window = len(started_with)
    if not any(argv[i:i + window] == started_with for i in range(len(argv) - window + 1)):
        print(f"started ahead with {' '.join(started_with)!r}, which the work's command line "
              "lacks", file=sys.stderr)
        return 2
    sys.argv = [sys.argv[0], *argv]
    return main(staged=job.get("staged") is True)


def _parser() -> Any:
    import argparse

    parser = argparse.ArgumentParser(prog="sealgrid.protocol.party")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--min-per-side", type=int, default=1,
                        help="accepted bids each side needs for the period to trade")
    parser.add_argument("--segment", action="store_true",
                        help="validate shares.bin as one segment of a period still open and "
                             "write segment.npz (no clearing)")
    parser.add_argument("--segments", type=int, default=0, metavar="K",
                        help="the first rows of shares.bin were validated in K segments, "
                             "whose results are segments/0.npz … segments/K-1.npz")
    parser.add_argument("--session", metavar="NAME",
                        help="this run of the parties (a period's gate, one of its segments): "
                             "every link carries it in TLS (ALPN), and a link of another run "
                             "on these ports is refused (with --ssl)")
    return parser


class JobRefused(Exception):
    """The work's command line or files are not this party's (exit 2, its message on
    stderr)."""


def _job(mpc: Any, args: Any) -> Callable[[MpycTransport], Coroutine[Any, Any, bool]]:
    """The work ``args`` name, its result written where the server reads it (True)."""
    batch = ShareBatch.load(args.data_dir / "shares.bin")
    if batch.party != mpc.pid:
        raise JobRefused("the share batch belongs to another party")
    if args.segment:
        async def segment(net: MpycTransport) -> bool:
            found = await validate_segment(batch, net, args.min_per_side)
            write_segment(args.data_dir / "segment.npz", found)
            return True
        return segment
    try:
        done = [read_segment(args.data_dir / "segments" / f"{k}.npz")
                for k in range(args.segments)]
    except ValueError as exc:
        raise JobRefused(str(exc)) from exc

    async def clearing(net: MpycTransport) -> bool:
        write_result(args.data_dir, await serve_period(batch, net, args.min_per_side, done))
        return True
    return clearing


def main(staged: bool = False) -> int:
    """Entry point of one server process (MPyC options on the command line); ``staged``:
    the rest of the command line comes on standard input once the batch is written
    (:func:`warm`)."""
    if sys.argv[1:2] == [WARM]:
        return warm()

    from mpyc.runtime import mpc  # parses and strips MPyC's own options from sys.argv

    parser = _parser()
    argv = sys.argv[1:]
    args = parser.parse_args(argv)
    if mpc.options.sec_param != SEC_PARAM or len(mpc.parties) < 3:
        print("run with -K 26 and at least 3 parties", file=sys.stderr)
        return 2
    try:
        if staged:
            done = run_staged(mpc, args.timeout, lambda extra: _job(
                mpc, parser.parse_args([*argv, *extra])), session=args.session)
        else:
            done = run_party(mpc, args.timeout, _job(mpc, args), session=args.session)
    except JobRefused as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except Abandoned:
        print("the server gave no batch: nothing to do", file=sys.stderr)
        return 4
    return 0 if done is not None else 3


R = TypeVar("R")

#: How soon a party tries again to reach a peer that does not listen yet. MPyC's own start
#: waits 0.1 s; the parties of a gate start within milliseconds of each other, so the first
#: one would lose most of that wait at every gate.
CONNECT_RETRY_SECONDS = 0.005


#: What every MPC link of one run of the parties names in TLS (ALPN), before the run's name.
ALPN_PREFIX = "sealgrid-mpc/"
#: Why a link is refused when its TLS names another run (or none), in ``connect``'s errors.
OTHER_RUN = "a party of another run answers on its port"


def session_protocol(session: str) -> str:
    """The ALPN name of the links of the run ``session`` (at most 255 bytes)."""
    name = ALPN_PREFIX + session
    if not 0 < len(name.encode()) <= 255:
        raise ValueError("a session name must fit in 255 bytes with its prefix")
    return name


def session_args(session: str | None) -> list[str]:
    """A party's ``--session`` option for the run ``session``; none for a party that names
    no run."""
    return [] if session is None else ["--session", session]


@functools.cache
def _link_class() -> type:
    """MPyC's message protocol on one link, taken only where the link's TLS names this run
    (made on first use: MPyC is imported inside the party only)."""
    from mpyc import asyncoro

    class Link(asyncoro.MessageExchanger):
        __slots__ = ("refused", "session")

        def __init__(self, rt: Any, peer_pid: int | None = None,
                     session: str | None = None) -> None:
            super().__init__(rt, peer_pid)
            self.session = session
            self.refused = False

        def connection_made(self, transport: Any) -> None:
            tls = transport.get_extra_info("ssl_object")
            if self.session is not None and (
                    tls is None or tls.selected_alpn_protocol() != self.session):
                self.refused = True  # a link of another run on these ports: not this one's
                transport.abort()
                return
            super().connection_made(transport)

        def data_received(self, data: bytes) -> None:
            if not self.refused:
                super().data_received(data)

        def connection_lost(self, exc: Exception | None) -> None:
            if not self.refused:  # the runtime never knew a refused link
                super().connection_lost(exc)

    return Link


async def connect(mpc: Any, errors: list[str] | None = None, session: str | None = None
                  ) -> None:
    """Open this party's links to the others as MPyC 0.11's ``mpc.start()`` does (listen for
    the parties below, connect to those above, TLS with the files in ``.config/`` when run
    with ``--ssl``, MPyC's own message protocol on every link), but retrying a peer that does
    not listen yet (connection refused) every :data:`CONNECT_RETRY_SECONDS` rather than every
    0.1 s; after any other failure (its TLS, say) it waits 0.1 s as MPyC does. Each failure
    is appended to ``errors``, for the message when the links never come up.

    ``session`` names this run of the parties (with ``--ssl``): every link offers and
    accepts only its ALPN name (:func:`session_protocol`), so that a party of another run
    on the same ports (a segment's beside the gate's, a party left from an earlier run) is
    refused on either side, and this party keeps waiting for, or retrying, its own."""
    import ssl

    if len(mpc.parties) == 1:
        mpc.start_time = time.time()
        return
    loop = asyncio.get_running_loop()
    for peer in mpc.parties:
        peer.protocol = loop.create_future() if peer.pid == mpc.pid else None
    listen = client = None
    name = None  # the run's ALPN name: only over TLS
    if mpc.options.ssl:
        files = (f".config/party_{mpc.pid}.crt", f".config/party_{mpc.pid}.key",
                 ".config/mpyc_ca.crt")
        listen = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if session is not None:
            name = session_protocol(session)
        for ctx in (listen, client):
            ctx.load_cert_chain(files[0], keyfile=files[1])
            ctx.load_verify_locations(cafile=files[2])
            if name is not None:
                ctx.set_alpn_protocols([name])
        listen.verify_mode = ssl.CERT_REQUIRED
    link = _link_class()
    server = None
    if mpc.pid:
        server = await loop.create_server(lambda: link(mpc, None, name),
                                          port=mpc.parties[mpc.pid].port, ssl=listen)
    for peer in mpc.parties[mpc.pid + 1:]:
        while True:
            try:
                _, made = await loop.create_connection(
                    lambda pid=peer.pid: link(mpc, pid, name), peer.host,
                    peer.port, ssl=client,
                    server_hostname=f"MPyC party {peer.pid}" if client else None)
            except OSError as exc:  # not listening yet (refused): again soon
                failure = f"{type(exc).__name__}: {exc}"
                wait = (CONNECT_RETRY_SECONDS if isinstance(exc, ConnectionRefusedError)
                        else 0.1)
            else:
                if not made.refused:
                    break
                failure, wait = OTHER_RUN, 0.1
            if errors is not None:
                errors.append(f"party {peer.pid}: {failure}")
                del errors[:-1]
            await asyncio.sleep(wait)
    await mpc.parties[mpc.pid].protocol  # every party below has connected here
    if server is not None:
        server.close()
    mpc.start_time = time.time()


class Abandoned(Exception):
    """A staged party's server closed its standard input without handing it its batch."""


def _next_line() -> asyncio.Future[str]:
    """The next line of standard input ('' at its end), read by a daemon thread: one
    blocked in ``readline`` must not keep the process from exiting."""
    import threading

    loop = asyncio.get_running_loop()
    line: asyncio.Future[str] = loop.create_future()

    def read() -> None:
        try:
            got = sys.stdin.readline()
        except (OSError, ValueError):
            got = ""
        def give() -> None:
            if not line.done():
                line.set_result(got)

        loop.call_soon_threadsafe(give)

    threading.Thread(target=read, daemon=True).start()
    return line


def run_staged(mpc: Any, timeout: float, job: Callable[
        [list[str]], Callable[[MpycTransport], Coroutine[Any, Any, R]]],
        session: str | None = None) -> R | None:
    """Link to the peers at once, while the server still agrees on the bid sets, and read
    the rest of the command line from standard input meanwhile (one JSON line,
    ``{"argv": [...]}``); then run ``job(rest)`` as :func:`run_party` runs its work. Raises
    :class:`Abandoned` when the input ends without that line, even before the links are
    up."""
    lines: list[asyncio.Future[str]] = []

    def first() -> asyncio.Future[str]:
        lines.append(_next_line())
        return lines[0]

    def staged(net: MpycTransport) -> Coroutine[Any, Any, R]:
        async def work() -> R:
            found = await lines[0]
            if not found.strip():
                raise Abandoned
            return await job([str(a) for a in json.loads(found)["argv"]])(net)
        return work()

    return run_party(mpc, timeout, staged, until=first, session=session)


def _close_links(mpc: Any) -> None:
    """Close this party's links to the others that are up."""
    for peer in mpc.parties:
        if peer.pid != mpc.pid and peer.protocol is not None:
            peer.protocol.close_connection()


def run_party(mpc: Any, timeout: float,
              work: Callable[[MpycTransport], Coroutine[Any, Any, R]],
              until: Callable[[], asyncio.Future[str]] | None = None,
              session: str | None = None) -> R | None:
    """Connect to the peers, run ``work`` over the MPyC transport, shut down; None (after a
    message on stderr) when a peer did not answer in time. ``until``: a future made once the
    loop runs (a staged party's next line): its end ('') while linking gives up at once, and
    the links' ``timeout`` counts from the line (the work), not from the start, since a peer
    not staged starts its party only after its own agreement. ``session``: this run's name
    on its links (:func:`connect`)."""

    async def run() -> R:
        errors: list[str] = []
        linking: asyncio.Future[None] = asyncio.ensure_future(connect(mpc, errors, session))
        line = until() if until is not None else None
        if line is not None:
            either: list[asyncio.Future[Any]] = [linking, line]
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if line.done() and not line.result().strip() and not linking.done():
                linking.cancel()
                with contextlib.suppress(BaseException):
                    await linking
                _close_links(mpc)
                raise Abandoned
        try:
            await asyncio.wait_for(linking, timeout)
        except TimeoutError:
            last = f" (the last failure: {errors[-1]})" if errors else ""
            raise PeerTimeout(f"could not connect to every peer server{last}") from None
        if line is not None and not line.done():
            print(f"party {mpc.pid}: linked to every peer, waiting for the batch",
                  file=sys.stderr, flush=True)
        try:
            result = await work(MpycTransport(mpc, timeout))
        except BaseException:
            _close_links(mpc)
            raise
        await asyncio.wait_for(mpc.shutdown(), timeout)
        return result

    try:
        out: R = mpc.run(run())
    except PeerTimeout as exc:
        print(f"party {mpc.pid}: {exc}", file=sys.stderr)
        return None
    return out


if __name__ == "__main__":
    sys.exit(main())
