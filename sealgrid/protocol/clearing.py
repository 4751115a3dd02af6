"""Secure double-auction clearing end to end; assumes the servers are this machine's processes.

:func:`secure_clear` plays every role of one period: it encodes each bid as its household
would, starts the ``m`` servers (separate processes over mutual TLS, or in-process for quick
tests), collects their outputs, and reconstructs every household's and supplier's result as
they would — checking that all shares lie on one degree-t polynomial. The result is the
plaintext reference's :class:`~sealgrid.mechanism.auction.Clearing`, plus statistics.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np

from sealgrid.mechanism.auction import Clearing
from sealgrid.mechanism.bids import DEFAULT_MAX_QUANTITY_WH, OrderBook, Reason
from sealgrid.protocol import field as F
from sealgrid.protocol import ports
from sealgrid.protocol.certs import make_party_certificates
from sealgrid.protocol.encoding import (
    RATIO_LIMIT,
    Layout,
    ShareBatch,
    field_ratio,
    payload_size,
    side_ratio,
    threshold,
    write_book_shares,
)
from sealgrid.protocol.mpcclear import Public
from sealgrid.protocol.party import (
    CURVE_LIMIT,
    SEC_PARAM,
    PartyResult,
    read_result,
    session_args,
)


class SecureClearingError(RuntimeError):
    """The servers did not complete the period (a server failed, timed out or disagreed)."""


@dataclass(frozen=True)
class SecureStats:
    """How a secure clearing went."""

    parties: int
    online_seconds: float  # server side, slowest party, validation included
    bytes_per_party: tuple[int, ...]
    peak_rss_bytes: tuple[int, ...]
    share_seconds: float  # households' share generation, all bids
    upload_bytes_per_bid: int  # one household's upload to one server
    rejected: dict[int, Reason] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)  # slowest party's seconds per phase


@dataclass(frozen=True)
class SecureClearing:
    """The reference-shaped outcome and the statistics of one secure period."""

    clearing: Clearing
    stats: SecureStats


def _free_base_port(count: int) -> int:
    """A free range of ``count`` local ports below the ephemeral range (:mod:`ports`): a port
    picked there could be taken by an outgoing connection before its party binds it."""
    try:
        return ports.free_port_range(count)
    except ports.NoFreePorts as exc:
        raise SecureClearingError(str(exc)) from exc


def run_processes(dirs: Sequence[Path], timeout: float, min_per_side: int = 1,
                  settle: bool = False, sessions: Sequence[str | None] | None = None
                  ) -> list[PartyResult]:
    """Start one server process per directory (mutual TLS), wait, and read their results.

    ``settle``: run the settlement (``python -m sealgrid.protocol.billing``) instead; the
    caller reads its results with :func:`sealgrid.protocol.billing.read_result` (the list
    returned is then empty). ``sessions``: each clearing party's run name on its links
    (``party --session``; None: a party that names none; default one name for all):
    parties of different runs never link.
    """
    m = len(dirs)
    base = _free_base_port(m)
    procs = []
    for i, d in enumerate(dirs):
        module = "sealgrid.protocol.billing" if settle else "sealgrid.protocol.party"
        extra = [] if settle else ["--min-per-side", str(min_per_side), *session_args(
            "clearing" if sessions is None else sessions[i])]
        cmd = [sys.executable, "-m", module, "--data-dir", str(d),
               "--timeout", str(timeout), "-M", str(m), "-I", str(i), "-B", str(base), *extra,
               "--ssl", "-K", str(SEC_PARAM), "--log-level", "warning"]
        with open(d / "party.log", "wb") as log:
            procs.append(subprocess.Popen(cmd, cwd=d, stdout=log, stderr=subprocess.STDOUT,
                                          env={**os.environ, "PYTHONHASHSEED": "0",
                                               "OPENBLAS_NUM_THREADS": "1"}))
    deadline = time.monotonic() + 3 * timeout
    failed = []
    try:
        for i, p in enumerate(procs):
            try:
                code = p.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                code = None
            if code != 0:
                failed.append(i)
                break
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if failed:
        tail = (dirs[failed[0]] / "party.log").read_text(errors="replace")[-2000:]
        raise SecureClearingError(f"server {failed[0]} failed:\n{tail}")
    return [] if settle else [read_result(d) for d in dirs]


def assemble(book: OrderBook, results: Sequence[PartyResult]) -> tuple[Clearing, np.ndarray]:
    """Build the reference-shaped :class:`Clearing` from the servers' outputs.

    Plays every reader at once, as a test harness: each household's output ``q·V/L`` (with its
    own ``q``), each supplier's totals and the operators' ``V``, all rebuilt from every
    server's shares. ``D(k*)`` and ``S(k*)`` are never opened; they follow here from ``V``
    and the ratios, and every output must agree with them exactly.

    Returns:
        ``(clearing, rejected)``, ``rejected`` the bid slots the servers refused.
    """
    first = results[0]
    for r in results[1:]:
        if r.public != first.public or not np.array_equal(r.rejected, first.rejected):
            raise SecureClearingError("the servers disagree on the public results")
    pub: Public = first.public
    t = threshold(len(results))
    n, s = len(book), len(book.suppliers)
    rebuilt = [F.reconstruct([getattr(r, name) for r in results], t)
               for name in ("households", "suppliers", "volume")]
    if not all(F.consistent([getattr(r, name) for r in results], t).all()
               for name in ("households", "suppliers", "volume")):
        raise SecureClearingError("the servers' output shares do not lie on one polynomial")
    outputs, totals, (volume,) = ([int(v) for v in x] for x in rebuilt)
    rejected = first.rejected
    if pub.level is None:
        if any(outputs) or any(totals) or volume:
            raise SecureClearingError("a period without trade has non-zero outputs")
        return Clearing.no_trade(n, s), rejected
    ratio: dict[bool, Fraction] = {}
    in_field: dict[bool, int] = {}
    accepted = np.zeros(n, dtype=np.int64)
    for i, y in enumerate(outputs):
        if y:
            q = int(book.quantity_wh[i])
            side = bool(book.is_buy[i])
            if side not in ratio:  # every other bid of the side must then be q·(the same c)
                ratio[side] = side_ratio(y, q)
                in_field[side] = field_ratio(y, q)
            elif y != q * in_field[side] % F.MODULUS:
                raise SecureClearingError("two bids of one side were rationed differently")
            accepted[i] = q
    if set(ratio) != {True, False}:
        raise SecureClearingError("a traded period without an accepted bid on each side")
    demand, supply = (Fraction(volume) / ratio[side] for side in (True, False))
    if demand.denominator != 1 or supply.denominator != 1:
        raise SecureClearingError("the ratios do not divide the volume")
    clearing = Clearing.from_accepted(
        level=pub.level, demand_wh=int(demand), supply_wh=int(supply), is_buy=book.is_buy,
        accepted_wh=accepted, bought_wh=totals[:s], sold_wh=totals[2 * s:3 * s],
    )
    for j in range(s):  # each supplier's traded totals, as it reads them
        for col, side in ((j, True), (2 * s + j, False)):
            want = Fraction(totals[col]) * ratio[side]
            if totals[col] and side_ratio(totals[col + s], totals[col]) * totals[col] != want:
                raise SecureClearingError("a supplier's traded total disagrees with the ratio")
    return clearing, rejected


def secure_clear(
    book: OrderBook, levels: int, *, parties: int = 3,
    mode: Literal["processes", "inprocess"] = "processes", data_dir: Path | None = None,
    max_quantity_wh: int = DEFAULT_MAX_QUANTITY_WH, timeout: float = 120.0,
    key: bytes | None = None, tamper: object | None = None, min_per_side: int = 1,
    segments: Sequence[int] = (),
) -> SecureClearing:
    """Clear ``book`` on ``levels`` price levels with ``parties`` MPC servers.

    Args:
        book: the period's bids (households encode them; the servers never see them).
        levels: number of levels of the price grid.
        parties: number of servers (odd, ≥ 3; threshold ⌊(m − 1)/2⌋).
        mode: ``"processes"`` (one process per server, mutual TLS) or ``"inprocess"``
            (quick tests only: one process holds every share).
        data_dir: where certificates, share batches and outputs go (a fresh temporary
            directory, removed afterwards, when not given).
        max_quantity_wh: the market's per-bid maximum, proven by every household.
        timeout: seconds any server waits for a peer before failing cleanly.
        key: seed for the households' share randomness (tests only; default fresh).
        tamper: test hook ``tamper(paths)`` called after the shares are written.
        min_per_side: accepted bids each side needs for the period to trade (1: the papers').
        segments: in-process only: sizes of leading segments of the book validated one
            after another before the period's clearing (as bids arriving in batches).

    Returns:
        The reference-shaped clearing (rejected bids count as not accepted) and statistics.

    Raises:
        SecureClearingError: a server failed, timed out or the servers disagreed.
    """
    threshold(parties)
    if len(book) and int(book.quantity_wh.max()) > max_quantity_wh:
        raise ValueError("a bid exceeds the maximum quantity")
    layout = Layout(levels, max(1, len(book.suppliers)), max_quantity_wh)
    if len(book) * max_quantity_wh + 1 >= min(CURVE_LIMIT, RATIO_LIMIT):
        raise ValueError("bids × maximum quantity exceeds the exact rationing's range (2^31 Wh)")
    own_dir = data_dir is None
    root = Path(tempfile.mkdtemp(prefix="sealgrid-")) if data_dir is None else Path(data_dir)
    try:
        dirs = [root / f"party{i}" for i in range(parties)]
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o700)
        started = time.perf_counter()
        write_book_shares(book, layout, [d / "shares.bin" for d in dirs],
                          key=key if key is not None else secrets.token_bytes(16))
        share_seconds = time.perf_counter() - started
        if callable(tamper):
            tamper([d / "shares.bin" for d in dirs])
        if segments and mode != "inprocess":
            raise ValueError("segments are validated in process only")
        if mode == "processes":
            make_party_certificates(dirs)
            results = run_processes(dirs, timeout, min_per_side)
        elif mode == "inprocess":
            from sealgrid.protocol.inprocess import run_in_process

            results = run_in_process([ShareBatch.load(d / "shares.bin") for d in dirs],
                                     min_per_side, segments)
        else:
            raise ValueError(f"unknown mode {mode!r}")
        clearing, rejected = assemble(book, results)
    finally:
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)
    stats = SecureStats(
        parties=parties,
        online_seconds=max(r.online_seconds for r in results),
        bytes_per_party=tuple(r.bytes_sent for r in results),
        peak_rss_bytes=tuple(r.peak_rss_bytes for r in results),
        share_seconds=share_seconds,
        upload_bytes_per_bid=payload_size(layout),
        rejected={int(i): Reason.INVALID_SHARES for i in rejected},
        phases={k: max(r.phases.get(k, 0.0) for r in results) for k in results[0].phases},
    )
    return SecureClearing(clearing, stats)
