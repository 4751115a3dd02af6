"""Threat: a curious server reading what it keeps on disk after a real multi-process period.

Assumes :func:`sealgrid.protocol.clearing.secure_clear` with ``mode="processes"`` (three
``python -m sealgrid.protocol.party`` processes over mutual TLS, ``min_per_side=3`` as the
running market) and two books with the same public outputs (``tests.chaos.curious`` BOOK_C and
BOOK_D: level 2, at least three accepted bids a side, different sides, quantities, volume,
D(k*), S(k*)). Everything server 0's directory holds after each run — its share batch, its
result files, its log, its TLS material — is read back. A handful of runs cannot feed a
per-position test, so the check is what few runs can show: no stored word equals any value a
server must not learn (bid entries, quantities, levels, curve totals and counts, V, the
ratios, the rebuilt outputs, another server's shares), the result JSON holds only the public
level beyond run metrics, the files have the same names and sizes for both books, every
share word changes from run to run, and the pooled words are uniform and alike for both
books. The same check must report each planted leak (control).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from sealgrid.mechanism.auction import clear, curves
from sealgrid.mechanism.bids import OrderBook
from sealgrid.protocol import field as F
from sealgrid.protocol.clearing import secure_clear
from sealgrid.protocol.encoding import plain_vectors
from tests.chaos.curious import BOOK_C, BOOK_D, SMALL_LAYOUT, SMALL_LEVELS

pytestmark = pytest.mark.slow  # three server processes per run

RUNS = 8  # per book: about 0.6 s a run on two cores
MIN_PER_SIDE = 3
LEVEL = 2
SHARE_FILES = ("shares.bin", "households.u64", "suppliers.u64", "volume.u64", "accepted.u64",
               "ratios.u64")
OWN_FILES = {*SHARE_FILES, "result.json", "party.log"}
RESULT_KEYS = {"version", "public", "rejected", "online_seconds", "bytes_sent",
               "peak_rss_bytes", "phases"}
PHASES = {"challenge", "validate_local", "validate_open", "curves", "clearing", "outputs", "cpu"}
#: chi-square with 15 degrees of freedom exceeds this with probability about 1e-4
CHI2_15 = 44.3


@dataclass(frozen=True)
class Run:
    """What each server's directory held after one period (party → relative path → bytes)."""

    files: tuple[dict[str, bytes], ...]

    @property
    def mine(self) -> dict[str, bytes]:
        """Server 0's files."""
        return self.files[0]


def run_once(book: OrderBook, root: Path, *, key: bytes | None = None,
             tamper: Callable[[list[Path]], None] | None = None) -> Run:
    """Clear ``book`` with three server processes; return every party's files."""
    secure_clear(book, SMALL_LEVELS, mode="processes", data_dir=root, timeout=60,
                 max_quantity_wh=SMALL_LAYOUT.max_quantity_wh, min_per_side=MIN_PER_SIDE,
                 key=key, tamper=tamper)
    return Run(tuple(
        {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}
        for d in (root / f"party{i}" for i in range(3))))


def words(files: dict[str, bytes], name: str) -> np.ndarray:
    """The 64-bit words of a share file (the batch without its header)."""
    data = files[name]
    if name == "shares.bin":
        rows = len(data) // (8 * SMALL_LAYOUT.width)
        data = data[len(data) - 8 * rows * SMALL_LAYOUT.width:]
    return np.frombuffer(data, dtype="<u8").astype(F.U64)


def header(files: dict[str, bytes]) -> bytes:
    data = files["shares.bin"]
    return data[:len(data) - len(words(files, "shares.bin")) * 8]


def forbidden(book: OrderBook, runs: list[Run]) -> set[int]:
    """Every value of ``book``'s period a server must not hold in the clear, and the other
    servers' share words of every run (with its own, any one of them rebuilds a value)."""
    lay = SMALL_LAYOUT
    out = {int(x) for x in plain_vectors(lay, book.is_buy, book.quantity_wh, book.level,
                                         book.supplier).ravel()}
    total = int(book.quantity_wh.sum())  # curves, counts, V, D(k*), S(k*), supplier totals
    out |= set(range(total + 1)) | {F.MODULUS - x for x in range(1, total + 1)}
    ref = clear(book, SMALL_LEVELS, min_accepted_per_side=MIN_PER_SIDE)
    c = curves(book, SMALL_LEVELS)
    for side in (int(c.demand[LEVEL]), int(c.supply[LEVEL])):  # the ratios V/D, V/S
        out.add(ref.volume_wh * pow(side, F.MODULUS - 2, F.MODULUS) % F.MODULUS)
    for run in runs:
        for name in SHARE_FILES[1:]:  # the outputs, rebuilt from servers 1 and 2
            shares = [words(run.files[i], name) for i in (1, 2)]
            out |= {int(v) for v in F.combine(shares, F.lagrange_at([2, 3], 0))}
        for i in (1, 2):
            for name in SHARE_FILES:
                out |= {int(v) for v in words(run.files[i], name)}
    return out


def top_nibbles(runs: list[Run]) -> np.ndarray:
    """Counts of the top four bits of every share word server 0 kept, all runs pooled."""
    pooled = np.concatenate([words(r.mine, n) for r in runs for n in SHARE_FILES])
    return np.bincount((pooled >> np.uint64(60)).astype(np.int64), minlength=16)


def chi2(observed: np.ndarray, expected: np.ndarray) -> float:
    keep = expected > 0
    return float((((observed - expected) ** 2)[keep] / expected[keep]).sum())


def findings(books: dict[str, OrderBook], runs: dict[str, list[Run]]) -> list[str]:
    """Everything in server 0's directories that could tell the books apart or leaks a value."""
    out: list[str] = []
    names, sizes, heads = set(), set(), set()
    sent = []
    for label, book in books.items():
        secret = forbidden(book, runs[label])
        for k, run in enumerate(runs[label]):
            mine = run.mine
            where = f"{label} run {k}"
            names.add(frozenset(mine))
            sizes.add(tuple(len(mine[n]) for n in SHARE_FILES))
            heads.add(header(mine))
            extra = {n for n in mine if not n.startswith(".config/")} - OWN_FILES
            if extra:
                out.append(f"{where}: unexpected files {sorted(extra)}")
            for n in mine:
                if n.startswith(".config/") and not mine[n].startswith(b"-----BEGIN "):
                    out.append(f"{where}: {n} is not PEM TLS material")
            if mine.get("party.log", b""):
                out.append(f"{where}: the server logged during a clean run")
            info = json.loads(mine["result.json"])
            if set(info) != RESULT_KEYS:
                out.append(f"{where}: result.json keys {sorted(info)}")
            if info.get("public") != {"level": LEVEL}:
                out.append(f"{where}: public result {info.get('public')}")
            if info.get("version") != 2 or info.get("rejected") != []:
                out.append(f"{where}: result.json version or rejected slots changed")
            if set(info.get("phases", {})) != PHASES:
                out.append(f"{where}: phases {sorted(info.get('phases', {}))}")
            sent.append(int(info.get("bytes_sent", 0)))
            for n in SHARE_FILES:
                hits = [int(v) for v in words(mine, n) if int(v) in secret]
                if hits:
                    out.append(f"{where}: {n} holds {len(hits)} secret values, e.g. {hits[:3]}")
        for n in SHARE_FILES:  # fresh randomness: no word repeats at its place between runs
            stack = np.stack([words(r.mine, n) for r in runs[label]])
            same = [(i, j) for i in range(len(stack)) for j in range(i)
                    if (stack[i] == stack[j]).any()]
            if same:
                out.append(f"{label}: {n} repeats words between runs {same[:3]}")
    if len(names) != 1:
        out.append("server 0 keeps different files for the two books")
    if len(sizes) != 1:
        out.append(f"share files differ in size: {sorted(sizes)}")
    if len(heads) != 1:
        out.append("the share batch headers differ")
    if sent and max(sent) - min(sent) > 0.01 * min(sent):
        out.append(f"bytes sent vary beyond pickling noise: {min(sent)}..{max(sent)}")
    counts = {label: top_nibbles(r) for label, r in runs.items()}
    for label, c in counts.items():  # uniform words
        stat = chi2(c, np.full(16, c.sum() / 16))
        if stat > CHI2_15:
            out.append(f"{label}: top bits of the words are not uniform (chi2 {stat:.0f})")
    if len(counts) == 2:  # and alike for both books
        a, b = counts.values()
        col = a + b
        stat = chi2(a, col * a.sum() / col.sum()) + chi2(b, col * b.sum() / col.sum())
        if stat > CHI2_15:
            out.append(f"the books' words differ in distribution (chi2 {stat:.0f})")
    return out


_RUNS: dict[str, list[Run]] = {}
BOOKS = {"C": BOOK_C, "D": BOOK_D}


def real_runs(root: Path) -> dict[str, list[Run]]:
    """RUNS real periods of each book (collected once per module)."""
    if not _RUNS:
        for label, book in BOOKS.items():
            _RUNS[label] = [run_once(book, root / f"{label}{k}") for k in range(RUNS)]
    return _RUNS


def test_server_0s_directory_does_not_tell_the_books_apart(tmp_path: Path) -> None:
    runs = real_runs(tmp_path)
    assert findings(BOOKS, runs) == []
    # what was checked: per run its batch (7 bids × 18), a share per bid, 4 per supplier, V,
    # the accepted buy and sell quantity per bid and the two ratios (for the settlement)
    for label, book in BOOKS.items():
        kept = [sum(len(words(r.mine, n)) for n in SHARE_FILES) for r in runs[label]]
        assert kept == [len(book) * (SMALL_LAYOUT.width + 1 + 2) + 4 * 2 + 1 + 2] * RUNS


def _with(run: Run, **files: bytes) -> Run:
    return replace(run, files=({**run.mine, **files}, *run.files[1:]))


def test_the_same_check_reports_planted_leaks(tmp_path: Path) -> None:
    runs = real_runs(tmp_path)
    volume = clear(BOOK_C, SMALL_LEVELS, min_accepted_per_side=MIN_PER_SIDE).volume_wh
    first = runs["C"][0]
    info = json.loads(first.mine["result.json"])
    planted = [
        # server 0 writes V itself instead of its share of V
        (_with(first, **{"volume.u64": F.from_ints([volume]).tobytes()}),
         "volume.u64 holds 1 secret values"),
        # ... keeps server 1's output shares next to its own (two shares rebuild them)
        (_with(first, **{"households.u64": first.files[1]["households.u64"]}),
         f"households.u64 holds {len(BOOK_C)} secret values"),
        # ... publishes more than the level
        (_with(first, **{"result.json": json.dumps(
            {**info, "public": {"level": LEVEL, "volume": volume}}).encode()}),
         "public result"),
        # ... leaves a debug dump of its curve shares
        (_with(first, **{"curves.u64": bytes(8)}), "unexpected files ['curves.u64']"),
    ]
    for run, want in planted:
        found = findings(BOOKS, {"C": [run, *runs["C"][1:]], "D": runs["D"]})
        assert any(f.startswith(f"C run 0: {want}") for f in found), (want, found)
    # a real broken sharer: server 0's batch holds the plaintext bid vectors
    def plaintext(paths: list[Path]) -> None:
        rows = plain_vectors(SMALL_LAYOUT, BOOK_C.is_buy, BOOK_C.quantity_wh, BOOK_C.level,
                             BOOK_C.supplier)
        data = paths[0].read_bytes()
        paths[0].write_bytes(data[:len(data) - rows.size * 8] + rows.astype("<u8").tobytes())

    broken = run_once(BOOK_C, tmp_path / "plain", tamper=plaintext)
    found = findings({"C": BOOK_C}, {"C": [broken, *runs["C"][1:]]})
    assert f"C run 0: shares.bin holds {BOOK_C.quantity_wh.size * SMALL_LAYOUT.width} " \
        "secret values, e.g. [0, 5, 0]" in found, found
    assert any(f.startswith("C: top bits of the words are not uniform") for f in found), found
    # a sharer without fresh randomness: the same key each run
    fixed = [run_once(BOOK_C, tmp_path / f"fixed{k}", key=bytes(16)) for k in range(2)]
    found = findings({"C": BOOK_C}, {"C": fixed})
    assert found == ["C: shares.bin repeats words between runs [(1, 0)]"], found
