"""The one door from the service to the secure clearing of :mod:`sealgrid.protocol`.

The service never looks inside a share payload and never computes a market result itself.
At gate closure each server hands its stored payloads, in the agreed order (sorted by
pseudonym), to the party-side clearing, run as a child process
(``python -m sealgrid.protocol.party``: MPyC keeps one runtime per process and reads its
options at start-up, and a child can be killed when a peer hangs). What this module uses
from the protocol layer, and nothing else:

* ``sealgrid.protocol.encoding``: ``Layout.of(market)``, ``BidShares.from_bytes`` (parse and
  check one payload), ``ShareBatch.from_payloads(...).save(path)``, ``OutputShare``;
* ``sealgrid.protocol.party``: the process (``--data-dir D --timeout T -I i``, then
  ``-P host:port`` once per party, ``--ssl -K SEC_PARAM``; working directory ``D`` holding
  ``.config/`` with the MPyC TLS files from ``sealgrid.protocol.certs``; input
  ``D/shares.bin``; ``--min-per-side`` from the market) and ``read_result(D)`` giving
  ``public`` (the clearing level, or none), ``rejected`` (bid slots whose shares failed the
  servers' validation), ``households`` (this party's share of ``accepted·q·V/L`` per slot),
  ``suppliers`` (shares of each supplier's accepted and rationed bought and sold totals) and
  ``volume`` (a share of ``V``, for the grid operators).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from sealgrid.mechanism.bids import BidRejected, Reason
from sealgrid.mechanism.market import Market
from sealgrid.protocol import encoding
from sealgrid.protocol.mpcclear import Public
from sealgrid.protocol.party import (
    PACKAGE_OPTIONS,
    SEC_PARAM,
    WARM,
    read_result,
    read_segment,
    session_args,
)

log = logging.getLogger("sealgrid.clearing")


class ClearingFailed(Exception):
    """The secure clearing ran but did not finish (a peer hung, crashed or refused)."""


@dataclass(frozen=True)
class ClearingRequest:
    """What one server hands the clearing for one period.

    ``peers``: ``"host:port"`` of every MPyC party by index, this one's own included (it
    listens on that port on every interface);
    ``workdir``: a private directory for this period; ``mpc_config``: the directory holding
    this party's MPyC TLS files (``.config/`` is copied from there).
    """

    party: int
    parties: int
    peers: tuple[str, ...]
    period: str
    payloads: tuple[bytes, ...]
    market: Market
    workdir: Path
    mpc_config: Path
    timeout: float
    segments: tuple[bytes, ...] = ()  # results of the batch's first bids' segments, in order
    #: the share batches those segments validated (their files), in order: the batch is then
    #: their rows followed by ``payloads``' (the rest). Empty: ``payloads`` hold every bid
    segment_batches: tuple[Path, ...] = ()
    #: the pseudonyms of the batch's rows, in order, when known: what identifies the batch
    #: (:func:`_batch_digest`) however it was built, from the segments' files or not
    members: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class SegmentRequest:
    """What one server hands the validation of one segment of a period still open: the
    segment's payloads in the agreed order (sorted by pseudonym), the rest as for a
    :class:`ClearingRequest`. The MPC ports are the period's, free until its gate."""

    party: int
    parties: int
    peers: tuple[str, ...]
    period: str
    index: int
    payloads: tuple[bytes, ...]
    market: Market
    workdir: Path
    mpc_config: Path
    timeout: float


@dataclass(frozen=True)
class SegmentResult:
    """What validating a segment left this server: which bids passed (one per payload), and
    the result file for the gate's clearing (``result``: opaque bytes of the protocol,
    ``sealgrid.protocol.party.write_segment``); ``seed`` is the segment's public challenge
    seed, the same on every server that took part."""

    valid: tuple[bool, ...]
    result: bytes
    seed: bytes


@dataclass(frozen=True)
class ClearingResult:
    """What comes back: the public outcome and this party's output shares.

    ``household[i]`` is this party's share of slot ``i``'s output (``b""`` for a slot the
    servers' joint validation refused); ``suppliers[id]`` its share of that supplier's
    (accepted bought, rationed bought, accepted sold, rationed sold) totals; ``volume`` its
    share of ``V`` for the grid operators; shares are ``OutputShare`` bytes of the protocol.
    """

    public: Public
    household: tuple[bytes, ...]
    suppliers: Mapping[str, bytes]
    volume: bytes
    settle_rows: bytes = b""  # (4, N) u64 shares: each slot's (h, κ, accepted buy, sell)
    ratios: bytes = b""  # u64 shares of V/D(k*), V/S(k*)

    @property
    def invalid_bids(self) -> int:
        """How many bids the servers' joint validation refused."""
        return sum(1 for h in self.household if not h)


def in_order(result: ClearingResult, order: Sequence[bytes],
             wanted: Sequence[bytes]) -> ClearingResult:
    """``result``, whose slots follow ``order`` (the validated segments' bids first), with
    its per-slot outputs put in the order ``wanted`` (the same pseudonyms, sorted): nothing
    stored after the gate keeps the segments' order, which tells roughly when bids came."""
    if list(order) == list(wanted):
        return result
    index = _positions(order, wanted)
    rows = np.frombuffer(result.settle_rows, dtype="<u8").reshape(4, -1)[:, index]
    return replace(result, household=tuple(result.household[i] for i in index.tolist()),
                   settle_rows=np.ascontiguousarray(rows, dtype="<u8").tobytes())


def _positions(order: Sequence[bytes], wanted: Sequence[bytes]) -> np.ndarray:
    """``index`` with ``order[index[i]] == wanted[i]`` for every ``i``: ``wanted`` is the
    32-byte pseudonyms of ``order``, sorted (as a bid set is). Sorted in numpy (0.02 s at
    100,000 slots against 0.2 s for a dictionary of positions); a ``wanted`` that is not
    ``order`` sorted is a ``ValueError``."""
    if len(order) != len(wanted) or any(len(p) != 32 for p in order):
        raise ValueError("the slots to reorder are not 32-byte pseudonyms of the same set")
    keys = np.frombuffer(b"".join(order), dtype=">u8").reshape(-1, 4)
    target = np.frombuffer(b"".join(wanted), dtype=">u8").reshape(-1, 4)
    index = np.argsort(keys[:, 0], kind="stable")  # the first 8 bytes almost always differ
    if not np.array_equal(keys[index], target):  # else all 32, the first 8 bytes first
        index = np.lexsort(keys.T[::-1])
        if not np.array_equal(keys[index], target):
            raise ValueError("the slots to reorder are not the sorted set's")
    return index


def payload_checker(party: int, market: Market) -> Callable[[bytes], None]:
    """Return a check of one payload's format for this server and market.

    The check raises :class:`~sealgrid.mechanism.bids.BidRejected` (``MALFORMED``) for a
    payload that is not a share message for this server and market; whether the shares
    encode a valid bid is only known after the servers' joint validation at gate closure.
    """
    layout = encoding.Layout.of(market)

    def check(payload: bytes) -> None:
        shares = encoding.BidShares.from_bytes(payload)
        if shares.party != party:
            raise BidRejected(Reason.MALFORMED, f"shares made for server {shares.party}")
        if shares.layout != layout:
            raise BidRejected(Reason.MALFORMED, "shares made for another market configuration")

    return check


def _fresh_workdir(workdir: Path, mpc_config: Path) -> None:
    """Make ``workdir`` afresh (mode 700) with the MPC TLS files of ``mpc_config``."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    os.chmod(workdir, 0o700)
    shutil.copytree(mpc_config / ".config", workdir / ".config")


def _prepare(req: ClearingRequest | SegmentRequest, fresh: bool = True) -> int:
    """Write ``req``'s share batch in its working directory, made afresh unless ``fresh`` is
    False (a staged party's, made at the gate); return its bids."""
    if fresh:
        _fresh_workdir(req.workdir, req.mpc_config)
    layout = encoding.Layout.of(req.market)
    rest = encoding.ShareBatch.from_messages(req.payloads, req.party, layout)
    rows = len(rest)
    if isinstance(req, ClearingRequest) and req.segment_batches:
        parts = [encoding.ShareBatch.load(f) for f in req.segment_batches]
        rows = encoding.join_batches(req.workdir / "shares.bin", [*parts, rest])
    else:
        rest.save(req.workdir / "shares.bin")
    if isinstance(req, SegmentRequest):  # on disk before its result is committed: the gate
        _sync(req.workdir / "shares.bin")  # takes these rows without reading the bids again
    if isinstance(req, ClearingRequest) and req.segments:
        (req.workdir / "segments").mkdir()
        for k, blob in enumerate(req.segments):
            (req.workdir / "segments" / f"{k}.npz").write_bytes(blob)
    return rows


class WarmParty:
    """One MPC party process started ahead of its work (``sealgrid.protocol.party --warm``):
    its imports are done when a segment or a gate needs it, which takes it with
    :meth:`take`. :meth:`refill` starts the next one, but only while no party of this server
    is running, so that its start never takes the cores from a clearing under way. Idle, it
    waits on its standard input in ``/``, which :func:`party_processes` tells apart; a server
    killed closes that input by dying, which ends it. Its output until it has work goes to
    ``log_path`` (default nowhere). One that dies while waiting is started again, up to
    :attr:`GIVE_UP` times in a row; then parties are started at the gate, as without one."""

    GIVE_UP = 3

    def __init__(self, log_path: Path | None = None) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self.running = 0  # parties of this server at work now
        self._closed = False
        self._log = log_path
        self._deaths = 0  # in a row, while waiting

    @property
    def ready(self) -> bool:
        """Whether a started party is waiting."""
        return self._proc is not None and self._proc.returncode is None

    async def refill(self) -> None:
        """Start a party ahead if none waits, none runs and this holder is not closed."""
        if self._closed or self.ready or self.running:
            return
        if self._proc is not None:  # it died waiting
            self._deaths += 1
            code, self._proc = self._proc.returncode, None
            if self._deaths >= self.GIVE_UP:
                self._closed = True
                log.warning("parties started ahead died %d times in a row while waiting (the"
                            " last with exit %s, see %s); parties now start at the gate",
                            self._deaths, code, self._log or "its output")
                return
        if self._log is None:
            proc = await _start_party([WARM, *PACKAGE_OPTIONS], "/", asyncio.subprocess.DEVNULL,
                                      stdin=asyncio.subprocess.PIPE)
        else:
            self._log.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with open(self._log, "ab") as out:
                proc = await _start_party([WARM, *PACKAGE_OPTIONS], "/", out,
                                          stdin=asyncio.subprocess.PIPE)
        if self._closed:  # closed while it started
            proc.kill()
            await proc.wait()
            return
        self._proc = proc

    async def take(self, argv: Sequence[str], workdir: Path, staged: bool = False
                   ) -> asyncio.subprocess.Process | None:
        """Hand the waiting party its command line (run in ``workdir``, its output in
        ``workdir/party.log``); None when none waits or it cannot take the work. ``staged``:
        the rest of its command line follows on its input (:class:`StagedParty`), which is
        left open."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None or proc.stdin is None:
            return None
        job: dict[str, Any] = {"argv": list(argv), "cwd": str(workdir),
                               "log": str(workdir / "party.log")}
        if staged:
            job["staged"] = True
        try:
            if not await _send(proc, job, close=not staged):  # it died: a cold start instead
                return None
        except BaseException:  # cancelled meanwhile: it is nobody's, so it ends
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            raise
        self._deaths = 0
        return proc

    async def close(self) -> None:
        """End the waiting party (it exits when its input closes) and start no other."""
        self._closed = True
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _send(proc: asyncio.subprocess.Process, line: Mapping[str, Any], close: bool) -> bool:
    """Write one JSON line to ``proc``'s input (and close it); False, with ``proc`` ended,
    when it died meanwhile."""
    assert proc.stdin is not None
    try:
        proc.stdin.write(json.dumps(line).encode() + b"\n")
        await proc.stdin.drain()
        if close:
            proc.stdin.close()
    except (OSError, RuntimeError):
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        return False
    return True


class StagedParty:
    """A party started ahead and handed its MPC options at the gate, before its server has
    agreed on the bid sets (:func:`stage`): it imports MPyC's runtime and links to its peers
    meanwhile, and :func:`clear` hands it the rest once its batch is written. Whatever else
    happens (no bid agreed, a failed agreement), :meth:`abandon` ends it."""

    def __init__(self, proc: asyncio.subprocess.Process, warm: WarmParty, workdir: Path
                 ) -> None:
        self.proc = proc
        self.workdir = workdir
        self._warm: WarmParty | None = warm  # counted as running until handed or abandoned

    @property
    def alive(self) -> bool:
        """Whether it still waits for its batch (its links may have timed out)."""
        return self._warm is not None and self.proc.returncode is None

    async def hand(self, rest: Sequence[str]) -> asyncio.subprocess.Process | None:
        """Give it the rest of its command line (its batch is written); None when it ended
        meanwhile. Its server owns it from then on."""
        if not self.alive or not await _send(self.proc, {"argv": list(rest)}, close=True):
            await self.abandon()
            return None
        self._release()
        return self.proc

    async def abandon(self) -> None:
        """End it unless it was handed its batch: its input closed, killed if it lingers."""
        if self._warm is None:
            return
        self._release()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 1.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):  # it ended at that moment
                self.proc.kill()
            await self.proc.wait()

    def _release(self) -> None:
        if self._warm is not None:
            self._warm.running -= 1
            self._warm = None


def session_of(req: ClearingRequest | SegmentRequest) -> str:
    """The name of the parties' run for ``req`` on their links (``party --session``): a
    period's gate, or one of its segments. A party of another run on the same ports (the
    period's segments and its gate share them) is refused at the link."""
    if isinstance(req, SegmentRequest):
        return f"{req.period}/segment-{req.index}"
    return gate_session(req.period)


def gate_session(period: str) -> str:
    """The name of the run of ``period``'s gate parties (every attempt's)."""
    return f"{period}/gate"


def settle_session(period: str) -> str:
    """The name of the run of the settlement parties that settle ``period``'s readings."""
    return f"{period}/settle"


async def stage(warm: WarmParty | None, party: int, peers: Sequence[str], workdir: Path,
                mpc_config: Path, timeout: float, market: Market,
                session: str | None = None) -> StagedParty | None:
    """At the gate, before the agreement: hand the party started ahead its MPC options and
    ``workdir`` (made afresh) so that it links to its peers while its server agrees; None
    when none waits, or ``workdir`` exists (an earlier attempt's: :func:`clear` looks
    there for a party that outlived its server). ``session``: the run's name on its links
    (:func:`gate_session`)."""
    if warm is None or not warm.ready or workdir.exists():
        return None
    _fresh_workdir(workdir, mpc_config)
    warm.running += 1
    proc = None
    try:
        proc = await warm.take(_argv(party, peers, workdir, timeout, market, session), workdir,
                               staged=True)
    finally:
        if proc is None:  # none took it, or cancelled meanwhile: no party left unowned
            warm.running -= 1
    return None if proc is None else StagedParty(proc, warm, workdir)


def _argv(party: int, peers: Sequence[str], workdir: Path, timeout: float, market: Market,
          session: str | None = None) -> list[str]:
    """A party's command line but for what its batch decides (:func:`_mode`)."""
    return [
        "--data-dir", str(workdir), "--timeout", str(timeout), "-I", str(party),
        "--min-per-side", str(market.min_accepted_per_side),
        *(arg for peer in peers for arg in ("-P", peer)),
        *session_args(session),
        "--ssl", "-K", str(SEC_PARAM), *PACKAGE_OPTIONS,
    ]  # fmt: skip


def _mode(req: ClearingRequest | SegmentRequest) -> list[str]:
    return (["--segment"] if isinstance(req, SegmentRequest)
            else ["--segments", str(len(req.segments))] if req.segments else [])


async def _start_party(args: Sequence[str], cwd: Path | str, out: Any, stdin: int | None = None
                       ) -> asyncio.subprocess.Process:
    """Start ``python -m sealgrid.protocol.party ARGS`` in ``cwd``, its output (standard
    output and error) to ``out``: a file, or ``asyncio.subprocess.DEVNULL``."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sealgrid.protocol.party", *args, cwd=cwd, stdin=stdin,
        stdout=out, stderr=out, env={**os.environ, "PYTHONHASHSEED": "0"})


async def _run_party(req: ClearingRequest | SegmentRequest, started: float,
                     warm: WarmParty | None = None, staged: StagedParty | None = None) -> None:
    staged = staged if staged is not None and staged.workdir == req.workdir else None
    if staged is not None and not staged.alive:  # its directory stays; its log, for why
        with contextlib.suppress(OSError):
            (req.workdir / "party.log").rename(req.workdir / "party-staged.log")
    try:
        rows = _prepare(req, fresh=staged is None)
    except (OSError, ValueError, BidRejected) as exc:
        raise ClearingFailed(f"cannot prepare the share batch: {exc}") from exc
    mode = _mode(req)
    argv = _argv(req.party, req.peers, req.workdir, req.timeout, req.market,
                 session_of(req)) + mode
    prepared = time.monotonic()
    (req.workdir / "attempt.json").write_text(json.dumps({"digest": _batch_digest(req)}))
    if warm is not None:
        warm.running += 1
    try:
        proc = await staged.hand(mode) if staged is not None else None
        ahead = " (started ahead, linked at the gate)" if proc is not None else ""
        if proc is None:
            proc = await warm.take(argv, req.workdir) if warm is not None else None
            ahead = " (started ahead)" if proc is not None else ""
        if proc is None:
            with open(req.workdir / "party.log", "wb") as out:
                proc = await _start_party(argv, req.workdir, out)
        try:
            code = await asyncio.wait_for(proc.wait(), timeout=3 * req.timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise ClearingFailed(f"no result within {3 * req.timeout:.0f} s") from None
        except asyncio.CancelledError:  # the server is stopping: leave no party behind
            proc.kill()
            await asyncio.shield(proc.wait())
            raise
    finally:
        if warm is not None:
            warm.running -= 1
    log.info(
        "period %s: share batch of %d bids written in %.2f s, MPC party ran %.2f s%s",
        req.period, rows, prepared - started, time.monotonic() - prepared, ahead,
    )  # fmt: skip
    if code != 0:
        try:  # a party started ahead that died before it opened its log left none
            tail = (req.workdir / "party.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            tail = []
        raise ClearingFailed(f"the clearing process exited with {code}: {(tail or [''])[-1]}")


def _batch_digest(req: ClearingRequest | SegmentRequest) -> str:
    """What identifies ``req``'s batch, for a restarted server to recognise the result of
    a party of its earlier attempt (:func:`_outlived`): its rows' pseudonyms when the
    request names them (a stored bid never changes), else its payloads."""
    what = f"segment {req.index}" if isinstance(req, SegmentRequest) else "clearing"
    if isinstance(req, ClearingRequest) and req.members:
        h = hashlib.sha256(f"{req.period}/{req.party}/{what}/members/{len(req.members)}"
                           .encode())
        h.update(b"".join(req.members))
        for blob in req.segments:
            h.update(hashlib.sha256(blob).digest())
        return h.hexdigest()
    h = hashlib.sha256(f"{req.period}/{req.party}/{what}/{len(req.payloads)}".encode())
    for p in req.payloads:
        h.update(hashlib.sha256(p).digest())
    for blob in req.segments if isinstance(req, ClearingRequest) else ():
        h.update(hashlib.sha256(blob).digest())  # a segment's result is its bids' alone
    for path in req.segment_batches if isinstance(req, ClearingRequest) else ():
        h.update(f"/{path.name}/{_size(path)}".encode())
    return h.hexdigest()


def _sync(path: Path) -> None:
    """Flush ``path`` and the directory that names it to the disk."""
    for target, flags in ((path, os.O_RDONLY), (path.parent, os.O_RDONLY | os.O_DIRECTORY)):
        fd = os.open(target, flags)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def segment_batches_fit(paths: Sequence[Path], sizes: Sequence[int], party: int,
                        market: Market) -> bool:
    """Whether the share batch files ``paths`` of validated segments are this party's, of
    ``market``'s layout and hold ``sizes`` rows each: the gate's clearing then takes their rows
    instead of reading those bids again (the files are kept until the period is sealed)."""
    layout = encoding.Layout.of(market)
    try:
        batches = [encoding.ShareBatch.load(p) for p in paths]
    except (OSError, ValueError):
        return False
    return len(batches) == len(sizes) and all(
        (b.party, b.layout, len(b)) == (party, layout, n)
        for b, n in zip(batches, sizes, strict=True))


def _party_processes() -> list[tuple[int, int, bytes, str]]:
    """``(pid, parent pid, command line, working directory)`` of every process running
    ``python -m sealgrid.protocol.party`` on this machine, idle ones started ahead included."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
            if b"sealgrid.protocol.party" not in cmdline:
                continue
            cwd = os.readlink(entry / "cwd")
        except OSError:  # it ended while we looked
            continue
        parent = int(stat.rpartition(")")[2].split()[1])
        found.append((int(entry.name), parent, cmdline, cwd))
    return found


def party_processes() -> list[tuple[int, int, bytes]]:
    """Return ``(pid, parent pid, command line)`` of every running MPC party process
    (``python -m sealgrid.protocol.party``) on this machine, read from ``/proc``; a party
    started ahead (:class:`WarmParty`) counts once it has its work, not while it waits."""
    warm = f"\0{WARM}".encode()
    return [(pid, parent, cmdline) for pid, parent, cmdline, cwd in _party_processes()
            if not (warm in cmdline and cwd == "/")]


def _running_parties(workdir: Path) -> list[int]:
    """Return the pids of party processes still running in ``workdir`` (any parent): named
    on their command line, or, started ahead, working there."""
    needle = str(workdir).encode()
    there = os.path.realpath(workdir)
    return [pid for pid, _, cmdline, cwd in _party_processes()
            if needle in cmdline or cwd == there]


async def _outlived(req: ClearingRequest) -> bool:
    """Whether a party of an earlier attempt on this same batch has left a complete result.

    A server killed during the clearing leaves its party process running: it may finish the
    computation with the other servers, which then publish ``cleared``. The restarted server
    must take that result rather than start a second party that no peer will ever join.
    """
    try:
        attempt = json.loads((req.workdir / "attempt.json").read_text())
    except (OSError, ValueError):
        log.debug("period %s: no earlier party attempt on record", req.period)
        return False
    if attempt.get("digest") != _batch_digest(req):
        log.info("period %s: the earlier party attempt had another batch", req.period)
        return False
    deadline = time.monotonic() + 3 * req.timeout
    waited = False
    while _running_parties(req.workdir) and time.monotonic() < deadline:
        waited = True
        await asyncio.sleep(0.2)
    done = (req.workdir / "result.json").exists()
    log.info(
        "period %s: earlier party %s; result %s",
        req.period, "waited for" if waited else "not running", "found" if done else "absent",
    )  # fmt: skip
    return done


async def validate_segment(req: SegmentRequest, warm: WarmParty | None = None
                           ) -> SegmentResult:
    """Run this party's validation of one segment in a child process (docs/service.md,
    "Streaming"): a joint challenge drawn now, after the segment was fixed, the validity
    checks opened, each valid bid's shares summed into the segment's limb sums.

    Raises:
        ClearingFailed: the validation failed or ran past ``req.timeout``.
    """
    await _run_party(req, time.monotonic(), warm)
    try:
        blob = (req.workdir / "segment.npz").read_bytes()
        segment = read_segment(req.workdir / "segment.npz")
    except (OSError, ValueError) as exc:
        raise ClearingFailed(f"unreadable segment result: {exc}") from exc
    if len(segment.valid) != len(req.payloads):
        raise ClearingFailed("the segment's validation returned the wrong size")
    return SegmentResult(tuple(bool(v) for v in segment.valid), blob, segment.seed)


async def clear(req: ClearingRequest, warm: WarmParty | None = None,
                staged: StagedParty | None = None) -> ClearingResult:
    """Run this party's part of the secure clearing in a child process: ``staged``, when it
    still waits in ``req.workdir``; else ``warm``'s, when one waits there.

    Raises:
        ClearingFailed: the clearing failed or ran past ``req.timeout``.
    """
    started = time.monotonic()
    if await _outlived(req):
        log.info("period %s: taking the result of a party that outlived its server", req.period)
    else:
        await _run_party(req, started, warm, staged)
    try:
        result = read_result(req.workdir)
    except (OSError, ValueError, KeyError) as exc:
        raise ClearingFailed(f"unreadable clearing result: {exc}") from exc
    try:
        batch = encoding.ShareBatch.load(req.workdir / "shares.bin")
    except (OSError, ValueError) as exc:
        raise ClearingFailed(f"unreadable share batch after the clearing: {exc}") from exc
    n, s = len(batch), len(req.market.suppliers)
    if len(result.households) != n:
        raise ClearingFailed("the clearing returned outputs of the wrong size")
    invalid = {int(i) for i in result.rejected}
    household = tuple(b"" if i in invalid else share for i, share in
                      enumerate(encoding.OutputShare.each(req.party, result.households)))
    if len(result.volume) != 1 or len(result.suppliers) != 4 * s:
        raise ClearingFailed("the clearing returned outputs of the wrong size")
    suppliers = {
        sid: encoding.OutputShare(
            req.party, result.suppliers[[j, s + j, 2 * s + j, 3 * s + j]]
        ).to_bytes()
        for j, sid in enumerate(req.market.suppliers)
    }
    volume = encoding.OutputShare(req.party, result.volume).to_bytes()
    try:
        rows = np.concatenate([np.asarray(batch.rows[:, batch.layout.identity]).T,
                               result.accepted])
    except ValueError as exc:
        raise ClearingFailed(f"the clearing returned outputs of the wrong size: {exc}"
                             ) from exc
    return ClearingResult(result.public, household, suppliers, volume,
                          np.ascontiguousarray(rows, dtype="<u8").tobytes(),
                          np.ascontiguousarray(result.ratios, dtype="<u8").tobytes())
